//! The egress gateway of an attempt: a host allowlist (a policy's `network_allowlist`, or
//! `isometer run --allow-host`) that resolves every name itself, refuses non-public addresses unless a rule names them, and
//! connects only to the address it checked.

use crate::credentials::Credentials;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use isometer_policy::{BadHostRule, HostRule, PoisoningRules, normalize_host};
use isometer_runtime::{
    EgressBudget, EgressError, EgressGateway, EgressRequest, EgressResponse, TaskContext,
};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why an address is not on the public internet, if it is not.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else if first == 0x0064 && v6.segments()[1] == 0xff9b {
                Some("NAT64")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_documentation() {
        Some("documentation")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else {
        None
    }
}

/// Turns a host name into addresses. The gateway resolves once per request, checks every
/// address, and connects to one it checked.
#[async_trait::async_trait]
pub trait Resolve: Send + Sync + fmt::Debug {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system's resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A secret the gateway adds to requests to the hosts it is bound to, and only to them.
#[derive(Clone)]
pub struct BoundSecret {
    pub host: HostRule,
    /// Lower-case header name.
    pub header: String,
    pub prefix: String,
    pub value: SecretValue,
}

/// A secret's value as the gateway holds it.
#[derive(Clone)]
pub enum SecretValue {
    /// Read at start from the environment or a file.
    Static(String),
    /// A credential minted per attempt (see [`Credentials`]).
    TaskCredential,
}

impl fmt::Debug for BoundSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value.
        f.debug_struct("BoundSecret")
            .field("host", &self.host.to_string())
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretValue::Static(_) => "Static(..)",
            SecretValue::TaskCredential => "TaskCredential",
        })
    }
}

/// What a guest sees in place of a secret an upstream sent back.
const REDACTED: &[u8] = b"[redacted]";

/// Allows HTTP requests to the hosts of its rules; denies everything else.
#[derive(Debug, Clone)]
pub struct AllowlistEgress {
    rules: Vec<HostRule>,
    resolver: Arc<dyn Resolve>,
    secrets: Vec<BoundSecret>,
    credentials: Arc<Credentials>,
    poisoning: Option<ContentCheck>,
}

/// Instruction-poisoning rules for fetched content, and what a hit does.
#[derive(Debug, Clone)]
struct ContentCheck {
    rules: Arc<PoisoningRules>,
    deny: bool,
}

impl Default for AllowlistEgress {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl AllowlistEgress {
    pub fn new(rules: Vec<HostRule>) -> Self {
        Self::with_resolver(rules, Arc::new(SystemResolver))
    }

    /// An allowlist that resolves names with `resolver`.
    pub fn with_resolver(rules: Vec<HostRule>, resolver: Arc<dyn Resolve>) -> Self {
        AllowlistEgress {
            rules,
            resolver,
            secrets: Vec::new(),
            credentials: Arc::default(),
            poisoning: None,
        }
    }

    /// Checks every answer's body against `rules` before the guest sees it: with `deny`,
    /// an answer that matches is withheld and the attempt ends; otherwise the hits are
    /// recorded and the answer goes through.
    pub fn with_poisoning_rules(mut self, rules: Arc<PoisoningRules>, deny: bool) -> Self {
        self.poisoning = rules
            .checks_content()
            .then_some(ContentCheck { rules, deny });
        self
    }

    /// Injects `secrets` into requests to their hosts; per-task credentials are minted in
    /// `credentials`.
    pub fn with_secrets(
        mut self,
        secrets: Vec<BoundSecret>,
        credentials: Arc<Credentials>,
    ) -> Self {
        self.secrets = secrets;
        self.credentials = credentials;
        self
    }

    /// Parses rules as written on the command line.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, BadHostRule> {
        let rules = rules
            .iter()
            .map(|r| r.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Self::new(rules))
    }

    /// The rule allowing `host:port` and the address to connect to, or why not.
    /// The first rule allowing `method` to `host:port`.
    fn rule_for(&self, method: &str, host: &str, port: u16) -> Result<&HostRule, EgressError> {
        let mut matching = self.rules.iter().filter(|r| r.matches(host, port));
        let Some(first) = matching.next() else {
            return Err(EgressError::Denied {
                reason: format!("{host}:{port} is not in the egress allowlist"),
                rule: None,
            });
        };
        std::iter::once(first)
            .chain(matching)
            .find(|r| r.allows_method(method))
            .ok_or_else(|| EgressError::Denied {
                reason: format!("{method} is not allowed to {host}:{port}"),
                rule: Some(first.to_string()),
            })
    }

    /// The rule allowing the request and the address to connect to, or why not.
    async fn decide(
        &self,
        method: &str,
        host: &str,
        port: u16,
    ) -> Result<(&HostRule, SocketAddr), EgressError> {
        let rule = self.rule_for(method, host, port)?;
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self
                .resolver
                .resolve(host, port)
                .await
                .map_err(|e| EgressError::Upstream(format!("cannot resolve {host}: {e}")))?,
        };
        // Every address the name has must be acceptable, or a resolver could steer
        // connections inward by ordering its answers.
        if !rule.allows_non_public()
            && let Some((ip, kind)) = addresses
                .iter()
                .find_map(|a| non_public(a.ip()).map(|kind| (a.ip(), kind)))
        {
            return Err(EgressError::Denied {
                reason: format!("{host} resolves to {ip}, a {kind} address, which no rule names"),
                rule: Some(rule.to_string()),
            });
        }
        let address = addresses
            .first()
            .copied()
            .ok_or_else(|| EgressError::Upstream(format!("{host} has no address")))?;
        Ok((rule, address))
    }
}

#[async_trait::async_trait]
impl EgressGateway for AllowlistEgress {
    async fn request(
        &self,
        context: &TaskContext,
        mut request: EgressRequest,
        budget: EgressBudget,
    ) -> Result<EgressResponse, EgressError> {
        let target = Target::parse(&request.url)?;
        let (rule, address) = self
            .decide(&request.method, &target.host, target.port)
            .await?;
        // Secrets bound to this host replace whatever the guest put in their headers;
        // no other host ever gets them.
        let mut injected = Vec::new();
        let mut values = Vec::new();
        for secret in self
            .secrets
            .iter()
            .filter(|s| s.host.matches(&target.host, target.port))
        {
            let value = match &secret.value {
                SecretValue::Static(value) => value.clone(),
                SecretValue::TaskCredential => {
                    self.credentials
                        .mint(context, &secret.host.to_string(), budget.timeout)
                }
            };
            request
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case(&secret.header));
            request
                .headers
                .push((secret.header.clone(), format!("{}{value}", secret.prefix)));
            injected.push(secret.header.as_str());
            values.push(value);
        }
        let exchange = send(address, &target, request, budget.max_response_bytes);
        let mut response = tokio::time::timeout(budget.timeout, exchange)
            .await
            .map_err(|_| {
                EgressError::Upstream(format!("no answer from {} in time", target.authority))
            })??;
        // An upstream that echoes a secret back does not hand it to the guest.
        for value in values.iter().filter(|v| v.len() >= 8) {
            response.body = redact(&response.body, value.as_bytes());
            for (_, header) in &mut response.headers {
                if header.contains(value.as_str()) {
                    *header = header.replace(value.as_str(), "[redacted]");
                }
            }
        }
        if let Some(check) = &self.poisoning {
            let hits = check.rules.content_hits(&response.body);
            if !hits.is_empty() && check.deny {
                return Err(EgressError::Poisoned {
                    rules: hits,
                    bytes_in: response.wire_bytes(),
                });
            }
            response.poisoning = hits;
        }
        response.rule = if injected.is_empty() {
            rule.to_string()
        } else {
            format!("{rule}; secret in {}", injected.join(", "))
        };
        Ok(response)
    }
}

/// `bytes` with every occurrence of `secret` replaced by [`REDACTED`].
fn redact(bytes: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(secret.len()).position(|w| w == secret) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(REDACTED);
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Where a URL points.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    /// `host[:port]` for the Host header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, EgressError> {
        let invalid = |why: &str| EgressError::Invalid(format!("URL `{url}`: {why}"));
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported yet; use http")),
            _ => return Err(invalid("only absolute http:// URLs are supported")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not allowed"));
        }
        let host = normalize_host(
            authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']'),
        );
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Target {
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// Headers the gateway sets itself.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
];

/// One HTTP/1.1 exchange over a fresh connection to `address`.
async fn send(
    address: SocketAddr,
    target: &Target,
    request: EgressRequest,
    max_response_bytes: u64,
) -> Result<EgressResponse, EgressError> {
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(target.path_and_query.as_str())
        .header(http::header::HOST, target.authority.as_str());
    for (name, value) in &request.headers {
        if RESERVED_HEADERS
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let outgoing = builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(|e| EgressError::Invalid(format!("{e}")))?;

    let upstream = |e: &dyn fmt::Display| EgressError::Upstream(format!("{address}: {e}"));
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| upstream(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| upstream(&e))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("egress connection ended: {e}");
        }
    });
    let result = async {
        let response = sender
            .send_request(outgoing)
            .await
            .map_err(|e| upstream(&e))?;
        let (head, body) = response.into_parts();
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut response = EgressResponse {
            status: head.status.as_u16(),
            headers,
            body: Vec::new(),
            rule: String::new(),
            poisoning: Vec::new(),
        };
        let head_bytes = response.wire_bytes();
        let too_large = EgressError::TooLarge {
            limit: max_response_bytes,
        };
        let Some(body_limit) = max_response_bytes.checked_sub(head_bytes) else {
            return Err(too_large);
        };
        let limit = usize::try_from(body_limit).unwrap_or(usize::MAX);
        let collected = Limited::new(body, limit).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large.clone()
            } else {
                upstream(&e)
            }
        })?;
        response.body = collected.to_bytes().to_vec();
        Ok(response)
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_ranges_are_named() {
        for (ip, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("fd00::1", Some("unique local")),
            ("fe80::1", Some("link-local")),
            ("93.184.216.34", None),
            ("2606:4700::1", None),
        ] {
            assert_eq!(non_public(ip.parse().expect("ip")), kind, "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        let target = Target::parse("http://API.example.test:8080/q?s=1").expect("url");
        assert_eq!(
            (
                target.host.as_str(),
                target.port,
                target.path_and_query.as_str()
            ),
            ("api.example.test", 8080, "/q?s=1")
        );
        let target = Target::parse("http://[::1]/").expect("url");
        assert_eq!((target.host.as_str(), target.port), ("::1", 80));
        for (url, why) in [
            ("https://a.test/", "https"),
            ("ftp://a.test/", "http://"),
            ("/relative", "http://"),
            ("http://user:pw@a.test/", "credentials"),
        ] {
            let err = Target::parse(url).expect_err(url).to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    /// Answers from a script, one answer per lookup, and counts lookups.
    #[derive(Debug)]
    struct Scripted {
        answers: std::sync::Mutex<Vec<Vec<IpAddr>>>,
        lookups: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Resolve for Scripted {
        async fn resolve(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut answers = self.answers.lock().expect("lock");
            let next = if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            };
            Ok(next
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect())
        }
    }

    fn scripted(answers: &[&[&str]]) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: std::sync::Mutex::new(
                answers
                    .iter()
                    .map(|a| a.iter().map(|ip| ip.parse().expect("ip")).collect())
                    .collect(),
            ),
            lookups: Default::default(),
        })
    }

    async fn get(egress: &AllowlistEgress, url: String) -> Result<EgressResponse, EgressError> {
        let request = EgressRequest {
            method: "GET".into(),
            url,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let budget = EgressBudget {
            max_response_bytes: 1 << 20,
            timeout: std::time::Duration::from_millis(300),
        };
        egress
            .request(&TaskContext::default(), request, budget)
            .await
    }

    /// A name that resolves to a public address when checked and to loopback afterwards
    /// (DNS rebinding) never reaches loopback: the gateway resolves once and connects to
    /// the address it checked. A name with a private address among its answers is denied.
    #[tokio::test]
    async fn a_rebinding_name_cannot_reach_loopback() {
        let upstream = isometer_testkit::upstream::Upstream::start(200, "{}").await;
        let port = upstream.addr.port();
        let rule: HostRule = "rebind.example.test".parse().expect("rule");

        let rebinding = scripted(&[&["93.184.216.34"], &["127.0.0.1"]]);
        let egress = AllowlistEgress::with_resolver(vec![rule.clone()], rebinding.clone());
        let url = format!("http://rebind.example.test:{port}/secret");
        let result = get(&egress, url).await;
        assert!(
            matches!(&result, Err(EgressError::Upstream(why)) if why.contains("93.184.216.34")),
            "connected somewhere other than the checked address: {result:?}"
        );
        assert_eq!(
            rebinding.lookups.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert!(upstream.received().is_empty(), "loopback was reached");

        for answer in [
            &["93.184.216.34", "127.0.0.1"][..],
            &["10.0.0.8"],
            &["169.254.169.254"],
        ] {
            let egress = AllowlistEgress::with_resolver(vec![rule.clone()], scripted(&[answer]));
            let result = get(&egress, format!("http://rebind.example.test:{port}/")).await;
            assert!(
                matches!(&result, Err(EgressError::Denied { reason, .. }) if reason.contains("which no rule names")),
                "{answer:?}: {result:?}"
            );
        }
        assert!(upstream.received().is_empty());
    }

    /// A rule's port is part of it: the same host on another port is denied.
    #[tokio::test]
    async fn ports_are_part_of_a_rule() {
        let upstream = isometer_testkit::upstream::Upstream::start(200, "{}").await;
        let port = upstream.addr.port();
        let egress = AllowlistEgress::parse(&[format!("127.0.0.1:{port}")]).expect("rule");
        get(&egress, upstream.url("/ok"))
            .await
            .expect("allowed port");
        let other = port.wrapping_add(1).max(1);
        let result = get(&egress, format!("http://127.0.0.1:{other}/")).await;
        assert!(
            matches!(&result, Err(EgressError::Denied { reason, .. }) if reason.contains("not in the egress allowlist")),
            "{result:?}"
        );
        assert_eq!(upstream.received().len(), 1);
    }
}
