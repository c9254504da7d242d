//! Policy as data: the tenant, tool, policy and rate card files under `config/`, parsed,
//! validated and resolved.
//!
//! Loading is two steps: raw serde structs that refuse unknown fields, then validated
//! structs. Every error names the file, the line and the field. Deny by default: a tool
//! with no policy for a tenant's tier is refused.
//!
//! **Architecture Invariant:** no IO beyond reading the configuration files.

mod error;
mod host_rule;
mod load;
mod model;
mod poisoning;
mod raw;
mod settings;

pub use error::{ConfigError, ConfigErrors};
pub use host_rule::{BadHostRule, HostRule, normalize_host};
pub use model::{
    Config, DEFAULT_REQUIRED_FIELDS, Fallback, LoopCaps, OBSERVABLE_FIELDS, OnPoisoning, Policy,
    PricePlan, RateCard, Retry, Secret, SecretProfile, SecretSource, Tenant, Tier, Tool,
};
pub use poisoning::{PoisoningRule, PoisoningRules};
pub use settings::{RuntimeSettings, SETTINGS_FILE, Settings};

/// The file names inside a configuration directory.
pub const FILES: [&str; 4] = [
    "tenants.toml",
    "tools.toml",
    "policies.toml",
    "rate_cards.toml",
];

/// Files a configuration directory may have; absent means empty.
pub const OPTIONAL_FILES: [&str; 4] =
    ["secrets.toml", "poisoning.toml", "tiers.toml", "plans.toml"];
