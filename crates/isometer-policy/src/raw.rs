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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetworkRule {
    /// `HOST[:PORT]`, `*.DOMAIN[:PORT]`, `*`, or an address (which allows it even when it
    /// is loopback or private).
    pub(crate) host: Spanned<String>,
    /// HTTP methods allowed; all when absent.
    pub(crate) methods: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateCardsFile {
    /// The rate cards, one `[[rate_card]]` table per tenant tier.
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
