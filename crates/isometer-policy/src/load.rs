//! Reading a configuration directory: parse each file, then check each value and every
//! reference between files, collecting all problems before giving up.

use crate::error::{ConfigError, ConfigErrors};
use crate::host_rule::HostRule;
use crate::model::{Config, Policy, RateCard, Tenant, Tool};
use crate::raw::{PoliciesFile, RateCardsFile, RawPolicy, RawRateCard, TenantsFile, ToolsFile};
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
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let [tenants_src, tools_src, policies_src, cards_src] =
            <[Source; 4]>::try_from(sources).map_err(|_| ConfigErrors(Vec::new()))?;

        let tenants: Option<TenantsFile> = tenants_src.parse().map_err(|e| errors.push(e)).ok();
        let tools: Option<ToolsFile> = tools_src.parse().map_err(|e| errors.push(e)).ok();
        let policies: Option<PoliciesFile> = policies_src.parse().map_err(|e| errors.push(e)).ok();
        let cards: Option<RateCardsFile> = cards_src.parse().map_err(|e| errors.push(e)).ok();
        let (Some(tenants), Some(tools), Some(policies), Some(cards)) =
            (tenants, tools, policies, cards)
        else {
            return Err(ConfigErrors(errors));
        };

        let rate_cards = validate_rate_cards(&cards_src, cards.rate_card, &mut errors);
        let tiers: HashSet<&str> = rate_cards.iter().map(|c| c.tier.as_str()).collect();

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
            let id = t.id.into_inner();
            valid_tools.push(Tool {
                default_use_case: t.default_use_case.unwrap_or_else(|| id.clone()),
                id,
                artifact: dir.join(t.artifact.into_inner()),
                declared_at,
                description: t.description,
            });
        }
        let tool_ids: HashSet<&str> = valid_tools.iter().map(|t| t.id.as_str()).collect();

        let mut valid_policies = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut seen_pairs = HashSet::new();
        for p in policies.policy {
            if let Some(policy) = validate_policy(
                &policies_src,
                p,
                &tool_ids,
                &tiers,
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
        for src in [&tenants_src, &tools_src, &policies_src, &cards_src] {
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
        })
    }
}

fn validate_policy(
    src: &Source,
    p: RawPolicy,
    tools: &HashSet<&str>,
    tiers: &HashSet<&str>,
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
    if !tools.contains(p.tool_id.get_ref().as_str()) {
        errors.push(src.at(
            &p.tool_id,
            "tool_id",
            format!("no tool `{}` in tools.toml", p.tool_id.get_ref()),
        ));
    }
    if !tiers.contains(p.tenant_tier.get_ref().as_str()) {
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
            Ok(parsed) => network_allowlist.push(match methods {
                Some(methods) => parsed.with_methods(methods),
                None => parsed,
            }),
            Err(e) => errors.push(src.at(&rule.host, "network_allowlist.host", e.to_string())),
        }
    }
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
    })
}

fn validate_rate_cards(
    src: &Source,
    cards: Vec<RawRateCard>,
    errors: &mut Vec<ConfigError>,
) -> Vec<RateCard> {
    let mut seen = HashSet::new();
    let mut valid = Vec::new();
    for c in cards {
        let before = errors.len();
        if !seen.insert(c.tier.get_ref().clone()) {
            errors.push(src.at(
                &c.tier,
                "tier",
                format!("tier `{}` has two rate cards", c.tier.get_ref()),
            ));
        }
        let currency = c.currency.get_ref();
        if currency.len() != 3 || !currency.chars().all(|ch| ch.is_ascii_uppercase()) {
            errors.push(src.at(
                &c.currency,
                "currency",
                format!("`{currency}` is not an ISO 4217 code like USD"),
            ));
        }
        if c.version.get_ref().trim().is_empty() {
            errors.push(src.at(&c.version, "version", "must not be empty"));
        }
        for (price, field) in [
            (&c.price_per_fuel_unit, "price_per_fuel_unit"),
            (&c.price_per_gib_second, "price_per_gib_second"),
            (&c.price_per_egress_gib, "price_per_egress_gib"),
            (&c.price_per_invocation, "price_per_invocation"),
        ] {
            if price.get_ref().is_sign_negative() {
                errors.push(src.at(price, field, "a price must not be negative"));
            }
        }
        if errors.len() == before {
            valid.push(RateCard {
                tier: c.tier.into_inner(),
                version: c.version.into_inner(),
                currency: c.currency.into_inner(),
                price_per_fuel_unit: c.price_per_fuel_unit.into_inner(),
                price_per_gib_second: c.price_per_gib_second.into_inner(),
                price_per_egress_gib: c.price_per_egress_gib.into_inner(),
                price_per_invocation: c.price_per_invocation.into_inner(),
            });
        }
    }
    valid
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
