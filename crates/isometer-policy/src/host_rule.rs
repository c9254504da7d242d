//! Egress host rules: which hosts and ports a network allowlist lets a tool reach.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Which hosts a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`: any host.
    Any,
    /// `api.example.test` or an address.
    Exact(String),
    /// `*.example.test`: every subdomain of `example.test`, not the domain itself.
    Subdomains(String),
}

/// One allowlist entry: `HOST[:PORT]`, where HOST is a name, `*.domain`, `*`, an IPv4
/// address or a bracketed IPv6 address.
///
/// A rule that names an address literally allows that address even when it is loopback,
/// private or link-local; a name (or `*`) never reaches such an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    pattern: HostPattern,
    port: Option<u16>,
    allow_non_public: bool,
    /// Upper-case methods allowed; empty allows every method.
    methods: Vec<String>,
    text: String,
}

impl HostRule {
    /// Restricts the rule to these HTTP methods.
    pub fn with_methods(mut self, methods: Vec<String>) -> Self {
        self.methods = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        self
    }

    /// Whether the rule allows `method` (upper case) at all.
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// Whether the rule allows `host` (normalized) on `port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.pattern {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }
}

impl HostRule {
    /// Whether the rule names an address literally, allowing it even when it is not public.
    pub fn allows_non_public(&self) -> bool {
        self.allow_non_public
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allow-host {}", self.text)?;
        if !self.methods.is_empty() {
            write!(f, " ({})", self.methods.join(", "))?;
        }
        Ok(())
    }
}

/// A host rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{rule}` is not a host rule (HOST[:PORT], *.DOMAIN[:PORT], * or an address): {reason}")]
pub struct BadHostRule {
    rule: String,
    reason: String,
}

impl FromStr for HostRule {
    type Err = BadHostRule;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadHostRule {
            rule: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, port) = split_host_port(text).ok_or_else(|| bad("malformed port"))?;
        if host == "*." {
            return Err(bad("empty domain"));
        }
        let host = normalize_host(host);
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let (pattern, allow_non_public) = if host == "*" {
            (HostPattern::Any, false)
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !valid_name(domain) {
                return Err(bad("invalid domain"));
            }
            (HostPattern::Subdomains(domain.to_owned()), false)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            (HostPattern::Exact(ip.to_string()), true)
        } else if valid_name(&host) {
            (HostPattern::Exact(host), false)
        } else {
            return Err(bad("invalid host name"));
        };
        Ok(HostRule {
            pattern,
            port,
            allow_non_public,
            methods: Vec::new(),
            text: text.to_owned(),
        })
    }
}

/// Splits `host[:port]`, with IPv6 addresses in brackets.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => Some((text, None)), // a bare IPv6 address
        None => Some((text, None)),
    }
}

/// Lower case, without a trailing dot: the form hosts are compared in.
pub fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let rule: HostRule = "api.example.test".parse().expect("rule");
        assert!(rule.matches("api.example.test", 80));
        assert!(rule.matches("api.example.test", 8080));
        assert!(!rule.matches("evil.example.test", 80));

        let rule: HostRule = "*.example.test:8080".parse().expect("rule");
        assert!(rule.matches("a.example.test", 8080));
        assert!(rule.matches("a.b.example.test", 8080));
        assert!(!rule.matches("example.test", 8080));
        assert!(!rule.matches("evilexample.test", 8080));
        assert!(!rule.matches("a.example.test", 80));

        let rule: HostRule = "[::1]:9000".parse().expect("rule");
        assert!(rule.matches("::1", 9000) && rule.allow_non_public);
        let rule: HostRule = "127.0.0.1".parse().expect("rule");
        assert!(rule.matches("127.0.0.1", 1) && rule.allow_non_public);
        let rule: HostRule = "*".parse().expect("rule");
        assert!(rule.matches("anything.test", 1) && !rule.allow_non_public);
        let rule: HostRule = "API.Example.Test.".parse().expect("rule");
        assert!(rule.matches("api.example.test", 80));

        for bad in [
            "",
            "host:port",
            "host:70000",
            "*.",
            "a..b",
            "sp ace",
            "[::1",
        ] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad}");
        }
    }
}
