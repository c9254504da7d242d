//! Reading a configuration directory: parse each file, then check each value and every
//! reference between files, collecting all problems before giving up.

use crate::error::{ConfigError, ConfigErrors};
use crate::host_rule::HostRule;
use crate::model::{
    Config, DEFAULT_REQUIRED_FIELDS, Fallback, LoopCaps, OBSERVABLE_FIELDS, OnPoisoning, Policy,
    PricePlan, RateCard, Retry, Secret, SecretProfile, SecretSource, Tenant, Tier, Tool,
};
use crate::poisoning::{PoisoningRule, PoisoningRules, check_pattern};
use crate::raw::{
    PlansFile, PoisoningFile, PoliciesFile, RateCardsFile, RawPlan, RawPoisoningRule, RawPolicy,
    RawRateCard, RawSecretProfile, RawTier, SecretsFile, TenantsFile, TiersFile, ToolsFile,
};
use isometer_core::Outcome;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Longest wall-time budget a policy may grant one attempt.
const MAX_DURATION_MS: u64 = 10 * 60 * 1000;

/// One file's text, for turning byte offsets into lines.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(
        &self,
        span: Option<Range<usize>>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: span.map(|s| self.line_of(s.start)),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    fn at<T>(&self, value: &Spanned<T>, field: &str, message: impl Into<String>) -> ConfigError {
        self.error(Some(value.span()), Some(field), message)
    }

    /// The key written on the line of `offset`, if that line is `key = value`.
    fn key_on_line(&self, offset: usize) -> Option<String> {
        let start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let field = e.span().and_then(|s| self.key_on_line(s.start));
            self.error(e.span(), field.as_deref(), e.message().trim().to_owned())
        })
    }
}

impl Config {
    /// Loads and validates `tenants.toml`, `tools.toml`, `policies.toml` and
    /// `rate_cards.toml` from `dir`.
    pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with(dir, SecretCheck::Present)
    }

    /// Loads an archived configuration to replay a run under it: secret references are
    /// checked for form only, since their values belong to the machine that ran it.
    pub fn load_archived(dir: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with(dir, SecretCheck::FormOnly)
    }

    fn load_with(dir: &Path, secrets_check: SecretCheck) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for name in crate::FILES {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push(Source { path, text }),
                Err(e) => errors.push(ConfigError {
                    file: path,
                    line: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        let mut optional = Vec::new();
        for name in crate::OPTIONAL_FILES {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => optional.push(Source { path, text }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => optional.push(Source {
                    path,
                    text: String::new(),
                }),
                Err(e) => errors.push(ConfigError {
                    file: path,
                    line: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let [secrets_src, poisoning_src, tiers_src, plans_src] =
            <[Source; 4]>::try_from(optional).map_err(|_| ConfigErrors(Vec::new()))?;
        let [tenants_src, tools_src, policies_src, cards_src] =
            <[Source; 4]>::try_from(sources).map_err(|_| ConfigErrors(Vec::new()))?;

        let tenants: Option<TenantsFile> = tenants_src.parse().map_err(|e| errors.push(e)).ok();
        let tools: Option<ToolsFile> = tools_src.parse().map_err(|e| errors.push(e)).ok();
        let policies: Option<PoliciesFile> = policies_src.parse().map_err(|e| errors.push(e)).ok();
        let cards: Option<RateCardsFile> = cards_src.parse().map_err(|e| errors.push(e)).ok();
        let secrets: Option<SecretsFile> = secrets_src.parse().map_err(|e| errors.push(e)).ok();
        let poisoning: Option<PoisoningFile> =
            poisoning_src.parse().map_err(|e| errors.push(e)).ok();
        let tiers_file: Option<TiersFile> = tiers_src.parse().map_err(|e| errors.push(e)).ok();
        let plans_file: Option<PlansFile> = plans_src.parse().map_err(|e| errors.push(e)).ok();
        let (
            Some(tenants),
            Some(tools),
            Some(policies),
            Some(cards),
            Some(secrets),
            Some(poisoning),
            Some(tiers_file),
            Some(plans_file),
        ) = (
            tenants, tools, policies, cards, secrets, poisoning, tiers_file, plans_file,
        )
        else {
            return Err(ConfigErrors(errors));
        };
        let poisoning = validate_poisoning(&poisoning_src, poisoning.rule, &mut errors);

        let secret_profiles = validate_secret_profiles(
            &secrets_src,
            dir,
            secrets.secret_profile,
            secrets_check,
            &mut errors,
        );
        let profile_ids: HashSet<&str> = secret_profiles.iter().map(|p| p.id.as_str()).collect();

        let rate_cards = validate_rate_cards(&cards_src, cards.rate_card, &mut errors);
        let tiers: HashSet<&str> = rate_cards.iter().map(|c| c.tier.as_str()).collect();
        let tier_limits = validate_tiers(&tiers_src, tiers_file.tier, &rate_cards, &mut errors);

        let mut seen = HashSet::new();
        let mut valid_tenants = Vec::new();
        for t in tenants.tenant {
            if !is_name(t.id.get_ref()) {
                errors.push(tenants_src.at(
                    &t.id,
                    "id",
                    "must be letters, digits, `-`, `_` or `.`",
                ));
            } else if !seen.insert(t.id.get_ref().clone()) {
                errors.push(tenants_src.at(
                    &t.id,
                    "id",
                    format!("tenant `{}` is declared twice", t.id.get_ref()),
                ));
            }
            if !tiers.contains(t.tier.get_ref().as_str()) {
                errors.push(tenants_src.at(
                    &t.tier,
                    "tier",
                    format!(
                        "no rate card prices tier `{}` (see rate_cards.toml)",
                        t.tier.get_ref()
                    ),
                ));
            }
            valid_tenants.push(Tenant {
                id: t.id.into_inner(),
                name: t.name,
                tier: t.tier.into_inner(),
            });
        }

        let mut seen = HashSet::new();
        let mut valid_tools = Vec::new();
        for t in tools.tool {
            if !is_name(t.id.get_ref()) {
                errors.push(tools_src.at(&t.id, "id", "must be letters, digits, `-`, `_` or `.`"));
            } else if !seen.insert(t.id.get_ref().clone()) {
                errors.push(tools_src.at(
                    &t.id,
                    "id",
                    format!("tool `{}` is declared twice", t.id.get_ref()),
                ));
            }
            let declared_at = format!(
                "{}:{}",
                tools_src.path.display(),
                tools_src.line_of(t.artifact.span().start)
            );
            let sha256 = t.sha256.map(|pin| {
                let hex = pin.get_ref().to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    errors.push(tools_src.at(&pin, "sha256", "must be 64 hex digits"));
                }
                hex
            });
            let id = t.id.into_inner();
            valid_tools.push(Tool {
                sha256,
                destructive: t.destructive,
                default_use_case: t.default_use_case.unwrap_or_else(|| id.clone()),
                id,
                artifact: dir.join(t.artifact.into_inner()),
                declared_at,
                description: t.description,
            });
        }
        let plans = validate_plans(
            &plans_src,
            plans_file.plan,
            &valid_tenants,
            &rate_cards,
            &mut errors,
        );
        let known = Known {
            tools: valid_tools.iter().map(|t| t.id.as_str()).collect(),
            tiers: tiers.clone(),
            profiles: profile_ids,
        };

        let mut valid_policies = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut seen_pairs = HashSet::new();
        for p in policies.policy {
            if let Some(policy) = validate_policy(
                &policies_src,
                p,
                &known,
                &mut seen_ids,
                &mut seen_pairs,
                &mut errors,
            ) {
                valid_policies.push(policy);
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut hasher = Sha256::new();
        let sources = [
            &tenants_src,
            &tools_src,
            &policies_src,
            &cards_src,
            &secrets_src,
            &poisoning_src,
            &tiers_src,
            &plans_src,
        ];
        for src in sources {
            hasher.update(
                src.path
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update([0]);
            hasher.update(src.text.as_bytes());
            hasher.update([0]);
        }
        Ok(Config {
            dir: dir.to_owned(),
            version: hex::encode(hasher.finalize()),
            tenants: valid_tenants,
            tools: valid_tools,
            policies: valid_policies,
            rate_cards,
            plans,
            secret_profiles,
            tiers: tier_limits,
            poisoning,
            files: sources
                .iter()
                .map(|src| {
                    let name = src
                        .path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    (name, src.text.clone())
                })
                .collect(),
        })
    }
}

/// The names other files declare, for checking a policy's references.
struct Known<'a> {
    tools: HashSet<&'a str>,
    tiers: HashSet<&'a str>,
    profiles: HashSet<&'a str>,
}

fn validate_policy(
    src: &Source,
    p: RawPolicy,
    known: &Known<'_>,
    seen_ids: &mut HashSet<String>,
    seen_pairs: &mut HashSet<(String, String)>,
    errors: &mut Vec<ConfigError>,
) -> Option<Policy> {
    let before = errors.len();
    if !seen_ids.insert(p.id.get_ref().clone()) {
        errors.push(src.at(
            &p.id,
            "id",
            format!("policy `{}` is declared twice", p.id.get_ref()),
        ));
    }
    if !known.tools.contains(p.tool_id.get_ref().as_str()) {
        errors.push(src.at(
            &p.tool_id,
            "tool_id",
            format!("no tool `{}` in tools.toml", p.tool_id.get_ref()),
        ));
    }
    if !known.tiers.contains(p.tenant_tier.get_ref().as_str()) {
        errors.push(src.at(
            &p.tenant_tier,
            "tenant_tier",
            format!("no rate card prices tier `{}`", p.tenant_tier.get_ref()),
        ));
    }
    if !seen_pairs.insert((p.tool_id.get_ref().clone(), p.tenant_tier.get_ref().clone())) {
        errors.push(src.at(
            &p.id,
            "id",
            format!(
                "a second policy for tool `{}` and tier `{}`",
                p.tool_id.get_ref(),
                p.tenant_tier.get_ref()
            ),
        ));
    }
    for (value, field) in [
        (&p.max_fuel, "max_fuel"),
        (&p.max_memory_mb, "max_memory_mb"),
        (&p.max_duration_ms, "max_duration_ms"),
    ] {
        if *value.get_ref() == 0 {
            errors.push(src.at(value, field, "must be greater than 0"));
        }
    }
    if *p.max_duration_ms.get_ref() > MAX_DURATION_MS {
        errors.push(src.at(
            &p.max_duration_ms,
            "max_duration_ms",
            format!("must be at most {MAX_DURATION_MS}"),
        ));
    }
    if *p.max_memory_mb.get_ref() > 4096 {
        errors.push(src.at(
            &p.max_memory_mb,
            "max_memory_mb",
            "must be at most 4096 (wasm32 addresses 4 GiB)",
        ));
    }
    if let Some(out) = &p.max_output_bytes
        && *out.get_ref() == 0
    {
        errors.push(src.at(out, "max_output_bytes", "must be greater than 0"));
    }
    for (value, field) in [
        (&p.max_egress_bytes, "max_egress_bytes"),
        (&p.max_egress_requests, "max_egress_requests"),
    ] {
        if let Some(value) = value
            && *value.get_ref() > 1 << 40
        {
            errors.push(src.at(value, field, "must be at most 2^40"));
        }
    }
    let mut network_allowlist = Vec::new();
    for rule in p.network_allowlist {
        let parsed = rule.host.get_ref().parse::<HostRule>();
        if let (Some(access), Some(_)) = (&rule.access, &rule.methods) {
            errors.push(src.at(
                access,
                "network_allowlist.access",
                "give `access` or `methods`, not both",
            ));
        }
        let intent = rule.access.and_then(|access| {
            let methods = match access.get_ref().as_str() {
                "read" => READ_METHODS.as_slice(),
                "write" => WRITE_METHODS.as_slice(),
                other => {
                    errors.push(src.at(
                        &access,
                        "network_allowlist.access",
                        format!("`{other}` is not an access: use `read` or `write`"),
                    ));
                    return None;
                }
            };
            Some(methods.iter().map(|m| (*m).to_owned()).collect())
        });
        let methods = rule.methods.map(|m| {
            let bad: Vec<_> = m
                .get_ref()
                .iter()
                .filter(|name| name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()))
                .cloned()
                .collect();
            if !bad.is_empty() {
                errors.push(src.at(
                    &m,
                    "network_allowlist.methods",
                    format!("{bad:?} are not HTTP methods"),
                ));
            }
            m.into_inner()
        });
        match parsed {
            Ok(parsed) => network_allowlist.push(match methods.or(intent) {
                Some(methods) => parsed.with_methods(methods),
                None => parsed,
            }),
            Err(e) => errors.push(src.at(&rule.host, "network_allowlist.host", e.to_string())),
        }
    }
    if let Some(profile) = &p.secret_profile
        && !known.profiles.contains(profile.get_ref().as_str())
    {
        errors.push(src.at(
            profile,
            "secret_profile",
            format!("no secret profile `{}` in secrets.toml", profile.get_ref()),
        ));
    }
    let required_observability_fields = match p.required_observability_fields {
        None => DEFAULT_REQUIRED_FIELDS.map(str::to_owned).to_vec(),
        Some(fields) => fields
            .into_inner()
            .into_iter()
            .filter_map(|field| {
                if OBSERVABLE_FIELDS.contains(&field.get_ref().as_str()) {
                    Some(field.into_inner())
                } else {
                    errors.push(src.at(
                        &field,
                        "required_observability_fields",
                        format!(
                            "`{}` is not a manifest field; known: {}",
                            field.get_ref(),
                            OBSERVABLE_FIELDS.join(", ")
                        ),
                    ));
                    None
                }
            })
            .collect(),
    };
    let retry = p
        .retry
        .map(|r| validate_retry(src, r, errors))
        .unwrap_or_default();
    let fallback = p
        .fallback
        .map(|f| validate_fallback(src, f, errors))
        .unwrap_or_default();
    let on_poisoning = match p.on_poisoning.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "deny")) => OnPoisoning::Deny,
        Some((_, "record")) => OnPoisoning::Record,
        Some((v, other)) => {
            errors.push(src.at(
                v,
                "on_poisoning",
                format!("must be `deny` or `record`, not `{other}`"),
            ));
            OnPoisoning::Deny
        }
    };
    (errors.len() == before).then(|| Policy {
        id: p.id.into_inner(),
        tool_id: p.tool_id.into_inner(),
        tenant_tier: p.tenant_tier.into_inner(),
        purpose: p.purpose,
        max_duration_ms: p.max_duration_ms.into_inner(),
        max_fuel: p.max_fuel.into_inner(),
        max_memory_bytes: p.max_memory_mb.into_inner() << 20,
        max_output_bytes: p.max_output_bytes.map_or(1 << 20, Spanned::into_inner),
        max_egress_bytes: p.max_egress_bytes.map_or(1 << 20, Spanned::into_inner),
        max_egress_requests: p.max_egress_requests.map_or(32, Spanned::into_inner),
        network_allowlist,
        secret_profile: p.secret_profile.map(Spanned::into_inner),
        required_observability_fields,
        retry,
        fallback,
        on_poisoning,
    })
}

/// Whether a secret's value must be there when the configuration loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretCheck {
    Present,
    FormOnly,
}

/// Methods of a rule with `access = "read"`: they must not change anything upstream.
const READ_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
/// Methods of a rule with `access = "write"`.
const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Longest wait before a retry a policy may ask for.
const MAX_BACKOFF_MS: u64 = 60_000;

fn validate_retry(
    src: &Source,
    raw: Spanned<crate::raw::RawRetry>,
    errors: &mut Vec<ConfigError>,
) -> Retry {
    let mut retry = Retry::default();
    let raw = raw.into_inner();
    if let Some(n) = raw.max_attempts {
        if !(1..=10).contains(n.get_ref()) {
            errors.push(src.at(&n, "retry.max_attempts", "must be between 1 and 10"));
        }
        retry.max_attempts = n.into_inner();
    }
    if let Some(ratio) = raw.budget_ratio {
        if !(0.0..=1.0).contains(ratio.get_ref()) {
            errors.push(src.at(&ratio, "retry.budget_ratio", "must be between 0 and 1"));
        }
        retry.budget_ratio = ratio.into_inner();
    }
    if let Some(window) = raw.window_s {
        if !(1..=86_400).contains(window.get_ref()) {
            errors.push(src.at(
                &window,
                "retry.window_s",
                "must be between 1 and 86400 seconds",
            ));
        }
        retry.window = std::time::Duration::from_secs(window.into_inner());
    }
    if let Some(backoff) = raw.backoff_ms {
        if *backoff.get_ref() > MAX_BACKOFF_MS {
            errors.push(src.at(
                &backoff,
                "retry.backoff_ms",
                format!("must be at most {MAX_BACKOFF_MS}"),
            ));
        }
        retry.backoff = std::time::Duration::from_millis(backoff.into_inner());
    }
    if let Some(on) = raw.on {
        retry.on = on
            .into_inner()
            .into_iter()
            .filter_map(|name| match name.get_ref().parse::<Outcome>() {
                Ok(outcome) if outcome.is_retryable() => Some(outcome),
                Ok(outcome) => {
                    errors.push(src.at(
                        &name,
                        "retry.on",
                        format!("`{outcome}` is never retried: running again cannot change it"),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(src.at(&name, "retry.on", e.to_string()));
                    None
                }
            })
            .collect();
    }
    retry
}

fn validate_fallback(
    src: &Source,
    raw: Spanned<crate::raw::RawFallback>,
    errors: &mut Vec<ConfigError>,
) -> Fallback {
    let span = raw.span();
    let raw = raw.into_inner();
    match (raw.kind.get_ref().as_str(), raw.body) {
        ("none", None) => Fallback::None,
        ("none", Some(body)) => {
            errors.push(src.at(&body, "fallback.body", "a `none` fallback has no body"));
            Fallback::None
        }
        ("static", Some(body)) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(body.get_ref()) {
                errors.push(src.at(&body, "fallback.body", format!("is not JSON: {e}")));
            }
            Fallback::Static(body.into_inner())
        }
        ("static", None) => {
            errors.push(src.error(
                Some(span),
                Some("fallback.body"),
                "a `static` fallback needs a body (JSON)",
            ));
            Fallback::None
        }
        (other, _) => {
            errors.push(src.at(
                &raw.kind,
                "fallback.kind",
                format!("`{other}` is not a fallback: use `none` or `static`"),
            ));
            Fallback::None
        }
    }
}

fn validate_secret_profiles(
    src: &Source,
    dir: &Path,
    profiles: Vec<RawSecretProfile>,
    check: SecretCheck,
    errors: &mut Vec<ConfigError>,
) -> Vec<SecretProfile> {
    let mut seen = HashSet::new();
    let mut valid = Vec::new();
    for profile in profiles {
        let before = errors.len();
        if !is_name(profile.id.get_ref()) {
            errors.push(src.at(
                &profile.id,
                "id",
                "must be letters, digits, `-`, `_` or `.`",
            ));
        } else if !seen.insert(profile.id.get_ref().clone()) {
            errors.push(src.at(
                &profile.id,
                "id",
                format!(
                    "secret profile `{}` is declared twice",
                    profile.id.get_ref()
                ),
            ));
        }
        let mut secrets = Vec::new();
        for secret in profile.secret {
            let host = secret
                .host
                .get_ref()
                .parse::<HostRule>()
                .map_err(|e| errors.push(src.at(&secret.host, "secret.host", e.to_string())))
                .ok();
            if !is_header_name(secret.header.get_ref()) {
                errors.push(src.at(
                    &secret.header,
                    "secret.header",
                    format!("`{}` is not an HTTP header name", secret.header.get_ref()),
                ));
            }
            let source = secret_source(src, dir, &secret.value, check, errors);
            if let (Some(host), Some(source)) = (host, source) {
                secrets.push(Secret {
                    host,
                    header: secret.header.into_inner().to_ascii_lowercase(),
                    prefix: secret.prefix,
                    source,
                });
            }
        }
        if errors.len() == before {
            valid.push(SecretProfile {
                id: profile.id.into_inner(),
                secrets,
            });
        }
    }
    valid
}

/// Where a secret comes from; the value must be there now, so that a task never finds
/// it missing.
fn secret_source(
    src: &Source,
    dir: &Path,
    value: &Spanned<String>,
    check: SecretCheck,
    errors: &mut Vec<ConfigError>,
) -> Option<SecretSource> {
    let text = value.get_ref();
    let present = check == SecretCheck::Present;
    let source = if text == "task-credential" {
        SecretSource::TaskCredential
    } else if let Some(name) = text.strip_prefix("env:")
        && !present
    {
        SecretSource::Env(name.to_owned())
    } else if let Some(path) = text.strip_prefix("file:")
        && !present
    {
        SecretSource::File(dir.join(path))
    } else if let Some(name) = text.strip_prefix("env:") {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => SecretSource::Env(name.to_owned()),
            _ => {
                errors.push(src.at(
                    value,
                    "secret.value",
                    format!("environment variable `{name}` is not set"),
                ));
                return None;
            }
        }
    } else if let Some(path) = text.strip_prefix("file:") {
        let path = dir.join(path);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => SecretSource::File(path),
            _ => {
                errors.push(src.at(
                    value,
                    "secret.value",
                    format!("cannot read secret file {}", path.display()),
                ));
                return None;
            }
        }
    } else {
        errors.push(src.at(
            value,
            "secret.value",
            "must be `env:NAME`, `file:PATH` or `task-credential`; a secret's value is never \
             written in the configuration",
        ));
        return None;
    };
    Some(source)
}

fn validate_rate_cards(
    src: &Source,
    cards: Vec<RawRateCard>,
    errors: &mut Vec<ConfigError>,
) -> Vec<RateCard> {
    let mut dates = HashSet::new();
    let mut versions = HashSet::new();
    let mut valid = Vec::new();
    for c in cards {
        let before = errors.len();
        let effective_from = effective_from(src, c.effective_from.as_ref(), errors);
        if !dates.insert((c.tier.get_ref().clone(), effective_from)) {
            errors.push(src.at(
                &c.tier,
                "tier",
                format!(
                    "tier `{}` has two rate cards in effect from {effective_from}",
                    c.tier.get_ref()
                ),
            ));
        }
        if c.version.get_ref().trim().is_empty() {
            errors.push(src.at(&c.version, "version", "must not be empty"));
        } else if !versions.insert(c.version.get_ref().clone()) {
            errors.push(src.at(
                &c.version,
                "version",
                format!("version `{}` names two rate cards", c.version.get_ref()),
            ));
        }
        check_currency(src, &c.currency, errors);
        for (price, field) in [
            (&c.price_per_fuel_unit, "price_per_fuel_unit"),
            (&c.price_per_gib_second, "price_per_gib_second"),
            (&c.price_per_egress_gib, "price_per_egress_gib"),
            (&c.price_per_invocation, "price_per_invocation"),
        ] {
            check_price(src, price, field, errors);
        }
        if errors.len() == before {
            valid.push(RateCard {
                tier: c.tier.into_inner(),
                version: c.version.into_inner(),
                effective_from,
                currency: c.currency.into_inner(),
                price_per_fuel_unit: c.price_per_fuel_unit.into_inner(),
                price_per_gib_second: c.price_per_gib_second.into_inner(),
                price_per_egress_gib: c.price_per_egress_gib.into_inner(),
                price_per_invocation: c.price_per_invocation.into_inner(),
            });
        }
    }
    for tier in valid
        .iter()
        .map(|c| c.tier.as_str())
        .collect::<HashSet<_>>()
    {
        let mut currencies: Vec<&str> = valid
            .iter()
            .filter(|c| c.tier == tier)
            .map(|c| c.currency.as_str())
            .collect();
        currencies.sort_unstable();
        currencies.dedup();
        if currencies.len() > 1 {
            errors.push(src.error(
                None,
                Some("currency"),
                format!(
                    "tier `{tier}` is priced in {}: every rate card of a tier uses one currency",
                    currencies.join(" and ")
                ),
            ));
        }
    }
    valid.sort_by(|a, b| (&a.tier, a.effective_from).cmp(&(&b.tier, b.effective_from)));
    valid
}

/// Price plans: each names a known tenant, bills in its tier's currency, and no two of a
/// tenant start on the same day.
fn validate_plans(
    src: &Source,
    plans: Vec<RawPlan>,
    tenants: &[Tenant],
    cards: &[RateCard],
    errors: &mut Vec<ConfigError>,
) -> Vec<PricePlan> {
    let mut dates = HashSet::new();
    let mut valid = Vec::new();
    for p in plans {
        let before = errors.len();
        let effective_from = effective_from(src, p.effective_from.as_ref(), errors);
        let tenant_id = p.tenant.get_ref();
        match tenants.iter().find(|t| &t.id == tenant_id) {
            None => errors.push(src.at(
                &p.tenant,
                "tenant",
                format!("no tenant `{tenant_id}` (see tenants.toml)"),
            )),
            Some(tenant) => {
                let card = cards.iter().find(|c| c.tier == tenant.tier);
                if let Some(card) = card.filter(|c| &c.currency != p.currency.get_ref()) {
                    errors.push(src.at(
                        &p.currency,
                        "currency",
                        format!(
                            "tenant `{tenant_id}` is costed in {} (tier `{}`); its plan must bill \
                             in the same currency",
                            card.currency, tenant.tier
                        ),
                    ));
                }
            }
        }
        if !dates.insert((tenant_id.clone(), effective_from)) {
            errors.push(src.at(
                &p.tenant,
                "tenant",
                format!("tenant `{tenant_id}` has two plans in effect from {effective_from}"),
            ));
        }
        if p.version.get_ref().trim().is_empty() {
            errors.push(src.at(&p.version, "version", "must not be empty"));
        }
        check_currency(src, &p.currency, errors);
        for (use_case, price) in &p.price_per_task {
            check_price(src, price, &format!("price_per_task.{use_case}"), errors);
        }
        for (price, field) in [
            (&p.default_price_per_task, "default_price_per_task"),
            (&p.exploratory_price_per_task, "exploratory_price_per_task"),
        ] {
            if let Some(price) = price {
                check_price(src, price, field, errors);
            }
        }
        if errors.len() == before {
            valid.push(PricePlan {
                tenant_id: p.tenant.into_inner(),
                version: p.version.into_inner(),
                effective_from,
                currency: p.currency.into_inner(),
                price_per_task: p
                    .price_per_task
                    .into_iter()
                    .map(|(k, v)| (k, v.into_inner()))
                    .collect(),
                default_price_per_task: p.default_price_per_task.map(Spanned::into_inner),
                exploratory_price_per_task: p
                    .exploratory_price_per_task
                    .map_or(rust_decimal::Decimal::ZERO, Spanned::into_inner),
            });
        }
    }
    valid.sort_by(|a, b| (&a.tenant_id, a.effective_from).cmp(&(&b.tenant_id, b.effective_from)));
    valid
}

/// An `effective_from` date; absent means from the beginning (1970-01-01).
fn effective_from(
    src: &Source,
    value: Option<&Spanned<String>>,
    errors: &mut Vec<ConfigError>,
) -> chrono::NaiveDate {
    let Some(value) = value else {
        return chrono::NaiveDate::default();
    };
    chrono::NaiveDate::parse_from_str(value.get_ref(), "%Y-%m-%d").unwrap_or_else(|_| {
        errors.push(src.at(
            value,
            "effective_from",
            format!("`{}` is not a date like 2026-01-31", value.get_ref()),
        ));
        chrono::NaiveDate::default()
    })
}

fn check_currency(src: &Source, currency: &Spanned<String>, errors: &mut Vec<ConfigError>) {
    let code = currency.get_ref();
    if code.len() != 3 || !code.chars().all(|ch| ch.is_ascii_uppercase()) {
        errors.push(src.at(
            currency,
            "currency",
            format!("`{code}` is not an ISO 4217 code like USD"),
        ));
    }
}

fn check_price(
    src: &Source,
    price: &Spanned<rust_decimal::Decimal>,
    field: &str,
    errors: &mut Vec<ConfigError>,
) {
    if price.get_ref().is_sign_negative() {
        errors.push(src.at(price, field, "a price must not be negative"));
    }
}

/// An HTTP field name: one or more token characters (RFC 9110).
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_poisoning(
    src: &Source,
    rules: Vec<RawPoisoningRule>,
    errors: &mut Vec<ConfigError>,
) -> PoisoningRules {
    let mut seen = HashSet::new();
    let mut valid = Vec::new();
    for rule in rules {
        let before = errors.len();
        if !is_name(rule.id.get_ref()) {
            errors.push(src.at(
                &rule.id,
                "rule.id",
                "must be letters, digits, `-`, `_` or `.`",
            ));
        } else if !seen.insert(rule.id.get_ref().clone()) {
            errors.push(src.at(
                &rule.id,
                "rule.id",
                format!("rule `{}` is declared twice", rule.id.get_ref()),
            ));
        }
        if let Err(message) = check_pattern(rule.pattern.get_ref()) {
            errors.push(src.at(&rule.pattern, "rule.pattern", message));
        }
        let (mut descriptor, mut content) = (true, true);
        if let Some(applies) = &rule.applies_to {
            (descriptor, content) = (false, false);
            for place in applies.get_ref() {
                match place.get_ref().as_str() {
                    "descriptor" => descriptor = true,
                    "content" => content = true,
                    other => errors.push(src.at(
                        place,
                        "rule.applies_to",
                        format!("must be `descriptor` or `content`, not `{other}`"),
                    )),
                }
            }
            if applies.get_ref().is_empty() {
                errors.push(src.at(
                    applies,
                    "rule.applies_to",
                    "names nothing; leave it out to check both descriptors and content",
                ));
            }
        }
        if errors.len() == before {
            valid.push(PoisoningRule {
                id: rule.id.into_inner(),
                pattern: rule.pattern.into_inner(),
                description: rule.description,
                descriptor,
                content,
            });
        }
    }
    // Each pattern compiled on its own above; together they compile too.
    PoisoningRules::new(valid).unwrap_or_else(|e| {
        errors.push(src.error(None, Some("rule.pattern"), e.to_string()));
        PoisoningRules::default()
    })
}

/// Every priced tier's admission and loop caps: as `tiers.toml` declares them, defaults
/// for the rest.
fn validate_tiers(
    src: &Source,
    raw: Vec<RawTier>,
    cards: &[RateCard],
    errors: &mut Vec<ConfigError>,
) -> Vec<Tier> {
    let mut declared: Vec<Tier> = Vec::new();
    for t in raw {
        let before = errors.len();
        let id = t.id.get_ref().clone();
        if !cards.iter().any(|c| c.tier == id) {
            errors.push(src.at(
                &t.id,
                "id",
                format!("no rate card prices tier `{id}` (see rate_cards.toml)"),
            ));
        } else if declared.iter().any(|d| d.id == id) {
            errors.push(src.at(&t.id, "id", format!("tier `{id}` is declared twice")));
        }
        let mut tier = Tier::default_for(&id);
        if let Some(w) = t.weight {
            if !(1..=1000).contains(w.get_ref()) {
                errors.push(src.at(&w, "weight", "must be between 1 and 1000"));
            }
            tier.weight = w.into_inner();
        }
        if let Some(c) = t.max_concurrency {
            if *c.get_ref() == 0 {
                errors.push(src.at(&c, "max_concurrency", "must be at least 1"));
            }
            tier.max_concurrency = c.into_inner();
        }
        if let Some(q) = t.max_queue {
            if *q.get_ref() > 1_000_000 {
                errors.push(src.at(&q, "max_queue", "must be at most 1000000"));
            }
            tier.max_queue = q.into_inner();
        }
        if let Some(caps) = t.loop_caps {
            tier.loop_caps = validate_loop_caps(src, caps.into_inner(), errors);
        }
        if errors.len() == before {
            declared.push(tier);
        }
    }
    let mut priced: Vec<&str> = cards.iter().map(|c| c.tier.as_str()).collect();
    priced.sort_unstable();
    priced.dedup();
    priced
        .into_iter()
        .map(|id| {
            declared
                .iter()
                .find(|t| t.id == id)
                .cloned()
                .unwrap_or_else(|| Tier::default_for(id))
        })
        .collect()
}

fn validate_loop_caps(
    src: &Source,
    raw: crate::raw::RawLoopCaps,
    errors: &mut Vec<ConfigError>,
) -> LoopCaps {
    let mut caps = LoopCaps::default();
    if let Some(c) = raw.low_confidence {
        if !(*c.get_ref() > 0.0 && *c.get_ref() <= 1.0) {
            errors.push(src.at(
                &c,
                "loop_caps.low_confidence",
                "must be above 0 and at most 1",
            ));
        }
        caps.low_confidence = c.into_inner();
    }
    for (value, field, slot) in [
        (
            raw.max_low_confidence_streak,
            "loop_caps.max_low_confidence_streak",
            &mut caps.max_low_confidence_streak,
        ),
        (
            raw.max_repeats,
            "loop_caps.max_repeats",
            &mut caps.max_repeats,
        ),
    ] {
        if let Some(n) = value {
            if *n.get_ref() == 0 {
                errors.push(src.at(&n, field, "must be at least 1"));
            }
            *slot = Some(n.into_inner());
        }
    }
    if let Some(spend) = raw.max_low_confidence_spend {
        if spend.get_ref().is_sign_negative() {
            errors.push(src.at(
                &spend,
                "loop_caps.max_low_confidence_spend",
                "must not be negative",
            ));
        }
        caps.max_low_confidence_spend = Some(spend.into_inner());
    }
    if let Some(w) = raw.window_s {
        if !(1..=86_400).contains(w.get_ref()) {
            errors.push(src.at(
                &w,
                "loop_caps.window_s",
                "must be between 1 and 86400 seconds",
            ));
        }
        caps.window = std::time::Duration::from_secs(w.into_inner());
    }
    caps
}
