//! The files as written: serde structs that refuse unknown fields.

use rust_decimal::Decimal;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantsFile {
    /// The tenants, one `[[tenant]]` table each.
    #[serde(default)]
    pub(crate) tenant: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    /// Stable identifier used in the API, events and statements.
    pub(crate) id: Spanned<String>,
    /// Display name.
    pub(crate) name: String,
    /// Tier: selects the policies and the rate card that apply.
    pub(crate) tier: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolsFile {
    /// The tools, one `[[tool]]` table each.
    #[serde(default)]
    pub(crate) tool: Vec<RawTool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTool {
    /// Stable identifier agents call the tool by.
    pub(crate) id: Spanned<String>,
    /// Path of the `.wasm` (or `.wat`) module, relative to the configuration directory.
    pub(crate) artifact: Spanned<String>,
    /// What the tool does, for people.
    #[serde(default)]
    pub(crate) description: String,
    /// Use case a task of this tool is filed under when the request names none.
    pub(crate) default_use_case: Option<String>,
    /// sha256 (hex) the artifact must have; a different file is refused at load.
    pub(crate) sha256: Option<Spanned<String>>,
    /// The tool changes the world (sends, deletes, pays): each task waits for an approver.
    #[serde(default)]
    pub(crate) destructive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoliciesFile {
    /// The policies, one `[[policy]]` table per (tool, tenant tier).
    #[serde(default)]
    pub(crate) policy: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    /// Stable identifier, by convention `tool/tier`.
    pub(crate) id: Spanned<String>,
    /// The tool this policy allows.
    pub(crate) tool_id: Spanned<String>,
    /// The tenant tier this policy applies to.
    pub(crate) tenant_tier: Spanned<String>,
    /// The business purpose the tool may serve.
    pub(crate) purpose: String,
    /// Wall-time budget of one attempt, in milliseconds.
    pub(crate) max_duration_ms: Spanned<u64>,
    /// Fuel budget of one attempt.
    pub(crate) max_fuel: Spanned<u64>,
    /// Linear memory budget of one attempt, in MiB.
    pub(crate) max_memory_mb: Spanned<u64>,
    /// stdout plus stderr budget of one attempt, in bytes (default 1 MiB).
    pub(crate) max_output_bytes: Option<Spanned<u64>>,
    /// Egress bytes of one attempt, sent and received together (default 1 MiB).
    pub(crate) max_egress_bytes: Option<Spanned<u64>>,
    /// Egress requests of one attempt (default 32).
    pub(crate) max_egress_requests: Option<Spanned<u64>>,
    /// Hosts the tool may reach; none by default.
    #[serde(default)]
    pub(crate) network_allowlist: Vec<RawNetworkRule>,
    /// The secret profile (secrets.toml) whose secrets the egress gateway injects.
    pub(crate) secret_profile: Option<Spanned<String>>,
    /// Manifest fields an attempt's evidence must carry; without one the attempt fails
    /// closed.
    pub(crate) required_observability_fields: Option<Spanned<Vec<Spanned<String>>>>,
    /// How a failed attempt is retried.
    pub(crate) retry: Option<Spanned<RawRetry>>,
    /// What the task answers when its attempts are exhausted.
    pub(crate) fallback: Option<Spanned<RawFallback>>,
    /// `deny` (the default) or `record`: what an instruction-poisoning hit does.
    pub(crate) on_poisoning: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    /// Attempts at most, the first included (default 1: no retry).
    pub(crate) max_attempts: Option<Spanned<u16>>,
    /// Retries allowed per tenant as a share of first attempts over the window.
    pub(crate) budget_ratio: Option<Spanned<f64>>,
    /// The retry budget's window, in seconds.
    pub(crate) window_s: Option<Spanned<u64>>,
    /// Outcomes that are retried (default failed, trapped, timed_out).
    pub(crate) on: Option<Spanned<Vec<Spanned<String>>>>,
    /// Wait before the first retry, doubled for each next one, in milliseconds.
    pub(crate) backoff_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFallback {
    /// `none` (the failure is the answer) or `static` (answer `body`).
    pub(crate) kind: Spanned<String>,
    /// The JSON answered by a `static` fallback.
    pub(crate) body: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetworkRule {
    /// `HOST[:PORT]`, `*.DOMAIN[:PORT]`, `*`, or an address (which allows it even when it
    /// is loopback or private).
    pub(crate) host: Spanned<String>,
    /// HTTP methods allowed; all when absent (and no `access`).
    pub(crate) methods: Option<Spanned<Vec<String>>>,
    /// The intent allowed: `read` (GET, HEAD, OPTIONS) or `write` (POST, PUT, PATCH,
    /// DELETE); instead of `methods`.
    pub(crate) access: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretsFile {
    /// The secret profiles, one `[[secret_profile]]` table each.
    #[serde(default)]
    pub(crate) secret_profile: Vec<RawSecretProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecretProfile {
    /// Name policies refer to in `secret_profile`.
    pub(crate) id: Spanned<String>,
    /// The secrets, each bound to the hosts it may be sent to.
    #[serde(default)]
    pub(crate) secret: Vec<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    /// The host rule the secret is bound to; it is never sent anywhere else.
    pub(crate) host: Spanned<String>,
    /// The request header that carries it.
    pub(crate) header: Spanned<String>,
    /// What precedes the value in the header, e.g. `Bearer `.
    #[serde(default)]
    pub(crate) prefix: String,
    /// Where the value comes from: `env:NAME`, `file:PATH` (relative to the configuration
    /// directory) or `task-credential` (minted per task, revoked when it ends).
    pub(crate) value: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateCardsFile {
    /// The rate cards: one `[[rate_card]]` table per tenant tier and effective date.
    #[serde(default)]
    pub(crate) rate_card: Vec<RawRateCard>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateCard {
    /// The tenant tier this card prices.
    pub(crate) tier: Spanned<String>,
    /// Version label, stored with every rated event so a cost can be recomputed.
    pub(crate) version: Spanned<String>,
    /// First day (UTC, `YYYY-MM-DD`) the card prices attempts; absent means always.
    pub(crate) effective_from: Option<Spanned<String>>,
    /// ISO 4217 currency code.
    pub(crate) currency: Spanned<String>,
    /// Price of one fuel unit, as a decimal string.
    pub(crate) price_per_fuel_unit: Spanned<Decimal>,
    /// Price of one GiB of peak linear memory held for one second.
    pub(crate) price_per_gib_second: Spanned<Decimal>,
    /// Price of one GiB of egress.
    pub(crate) price_per_egress_gib: Spanned<Decimal>,
    /// Price of one attempt that ran.
    pub(crate) price_per_invocation: Spanned<Decimal>,
}

/// `plans.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlansFile {
    /// The price plans: one `[[plan]]` table per tenant and effective date.
    #[serde(default)]
    pub(crate) plan: Vec<RawPlan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    /// The tenant this plan bills.
    pub(crate) tenant: Spanned<String>,
    /// Version label, printed on statements.
    pub(crate) version: Spanned<String>,
    /// First day (UTC, `YYYY-MM-DD`) the plan bills tasks; absent means always.
    pub(crate) effective_from: Option<Spanned<String>>,
    /// ISO 4217 currency code; the same as the rate card of the tenant's tier.
    pub(crate) currency: Spanned<String>,
    /// Price of one successful customer-visible task, by use case.
    #[serde(default)]
    pub(crate) price_per_task: std::collections::BTreeMap<String, Spanned<Decimal>>,
    /// Price of a successful task of a use case `price_per_task` does not name.
    pub(crate) default_price_per_task: Option<Spanned<Decimal>>,
    /// Price of one successful exploratory task (nothing unless given).
    pub(crate) exploratory_price_per_task: Option<Spanned<Decimal>>,
}

/// `poisoning.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoisoningFile {
    /// The rules, one `[[rule]]` table each.
    #[serde(default)]
    pub(crate) rule: Vec<RawPoisoningRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoisoningRule {
    pub(crate) id: Spanned<String>,
    /// A regular expression, matched case-insensitively.
    pub(crate) pattern: Spanned<String>,
    /// `descriptor`, `content`, or both (the default).
    pub(crate) applies_to: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(crate) description: String,
}

/// `tiers.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TiersFile {
    /// Admission and loop caps per tenant tier, one `[[tier]]` table each.
    #[serde(default)]
    pub(crate) tier: Vec<RawTier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    /// The tier (one a rate card prices).
    pub(crate) id: Spanned<String>,
    /// Share of the gateway's capacity a tenant of this tier gets when all are busy,
    /// relative to other tenants' weights (default 1).
    pub(crate) weight: Option<Spanned<u32>>,
    /// Tasks of one tenant running at once (default 64).
    pub(crate) max_concurrency: Option<Spanned<u32>>,
    /// Tasks of one tenant waiting for a slot; one more is refused with 429 (default 256).
    pub(crate) max_queue: Option<Spanned<u32>>,
    /// Caps on an agent run's loops; none by default.
    pub(crate) loop_caps: Option<Spanned<RawLoopCaps>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoopCaps {
    /// A task whose confidence is below this is low-confidence (default 0.5).
    pub(crate) low_confidence: Option<Spanned<f32>>,
    /// Consecutive low-confidence tasks a run may run.
    pub(crate) max_low_confidence_streak: Option<Spanned<u32>>,
    /// Times a run may call one tool with one input.
    pub(crate) max_repeats: Option<Spanned<u32>>,
    /// What a run may spend before its low-confidence tasks are refused (decimal string).
    pub(crate) max_low_confidence_spend: Option<Spanned<Decimal>>,
    /// How long a cap holds, and how long a run's history counts (seconds, default 600).
    pub(crate) window_s: Option<Spanned<u64>>,
}
