//! The validated configuration.

use crate::host_rule::HostRule;
use chrono::NaiveDate;
use isometer_core::Outcome;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A validated configuration directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    /// sha256 over the files' names and contents: changes whenever any file does.
    pub version: String,
    pub tenants: Vec<Tenant>,
    pub tools: Vec<Tool>,
    pub policies: Vec<Policy>,
    /// Every rate card version, by tier and then effective date.
    pub rate_cards: Vec<RateCard>,
    /// Every price plan version, by tenant and then effective date.
    pub plans: Vec<PricePlan>,
    pub secret_profiles: Vec<SecretProfile>,
    /// Admission and loop caps of every tier a rate card prices (defaults for a tier
    /// `tiers.toml` does not declare).
    pub tiers: Vec<Tier>,
    /// Instruction-poisoning rules for tool descriptors and fetched content.
    pub poisoning: crate::PoisoningRules,
    /// Each file's name and text as loaded (the content `version` hashes), for archiving
    /// the version so that a run can be replayed under it. Secret values are never in them.
    pub files: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub tier: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub id: String,
    /// Absolute or configuration-relative path, resolved against the configuration directory.
    pub artifact: PathBuf,
    /// Where the tool is declared, for error messages about its artifact.
    pub declared_at: String,
    pub description: String,
    pub default_use_case: String,
    /// The sha256 (hex) the artifact is pinned to, when it is.
    pub sha256: Option<String>,
    /// Each task waits for an approver before it runs.
    pub destructive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub tool_id: String,
    pub tenant_tier: String,
    pub purpose: String,
    pub max_duration_ms: u64,
    pub max_fuel: u64,
    pub max_memory_bytes: u64,
    pub max_output_bytes: u64,
    pub max_egress_bytes: u64,
    pub max_egress_requests: u64,
    /// Hosts the tool may reach; empty means no network.
    pub network_allowlist: Vec<HostRule>,
    /// The secret profile whose secrets the egress gateway injects, by id.
    pub secret_profile: Option<String>,
    /// Manifest fields every attempt's evidence must carry (see [`OBSERVABLE_FIELDS`]).
    pub required_observability_fields: Vec<String>,
    pub retry: Retry,
    pub fallback: Fallback,
    pub on_poisoning: OnPoisoning,
}

/// What an instruction-poisoning hit in a tool's descriptor or fetched content does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnPoisoning {
    /// The content never reaches the guest; the attempt is denied, its output withheld.
    #[default]
    Deny,
    /// The hit is recorded in the manifest and the attempt goes on.
    Record,
}

/// Manifest fields a policy may require. An attempt whose manifest lacks one fails closed.
pub const OBSERVABLE_FIELDS: [&str; 17] = [
    "trace_id",
    "task_id",
    "run_id",
    "tenant_id",
    "tool_id",
    "use_case",
    "policy_id",
    "policy_version",
    "artifact_hash",
    "input_hash",
    "output_hash",
    "rate_card_version",
    "cost",
    "confidence",
    "egress",
    "started_ms",
    "finished_ms",
];

/// Required when a policy names none.
pub const DEFAULT_REQUIRED_FIELDS: [&str; 5] = [
    "trace_id",
    "policy_id",
    "artifact_hash",
    "input_hash",
    "output_hash",
];

/// How a task's failed attempts are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts at most, the first included; 1 means no retry.
    pub max_attempts: u16,
    /// Retries a tenant may spend, as a share of its first attempts over `window`.
    pub budget_ratio: f64,
    pub window: Duration,
    /// The outcomes that are retried.
    pub on: Vec<Outcome>,
    /// Wait before the first retry; doubled for each next one.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 1,
            budget_ratio: 0.1,
            window: Duration::from_secs(300),
            on: vec![Outcome::Failed, Outcome::Trapped, Outcome::TimedOut],
            backoff: Duration::from_millis(50),
        }
    }
}

/// What a task answers when its last attempt did not succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fallback {
    /// The failure is the answer.
    #[default]
    None,
    /// This JSON document is the answer (the outcome stays the failure's).
    Static(String),
}

/// Secrets the egress gateway may inject, each bound to hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProfile {
    pub id: String,
    pub secrets: Vec<Secret>,
}

/// One secret: which hosts it may go to, in which header, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub host: HostRule,
    pub header: String,
    pub prefix: String,
    pub source: SecretSource,
}

/// Where a secret's value comes from. The value itself is never part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the isometer process.
    Env(String),
    /// A file (absolute, or resolved against the configuration directory).
    File(PathBuf),
    /// A credential minted for one task and one scope, revoked when the task ends.
    TaskCredential,
}

/// How the gateway admits a tier's tenants' tasks, and how it caps their runs' loops.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub id: String,
    /// Weighted fair share between busy tenants.
    pub weight: u32,
    /// Tasks of one tenant running at once.
    pub max_concurrency: u32,
    /// Tasks of one tenant waiting for a slot; one more is refused (`throttled`).
    pub max_queue: u32,
    pub loop_caps: LoopCaps,
}

impl Tier {
    pub const DEFAULT_WEIGHT: u32 = 1;
    pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
    pub const DEFAULT_MAX_QUEUE: u32 = 256;

    /// A tier `tiers.toml` does not declare.
    pub fn default_for(id: &str) -> Tier {
        Tier {
            id: id.to_owned(),
            weight: Self::DEFAULT_WEIGHT,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
            max_queue: Self::DEFAULT_MAX_QUEUE,
            loop_caps: LoopCaps::default(),
        }
    }
}

/// Caps on one agent run's loops. A capped run answers `capped` without running anything
/// until `window` has passed or an operator resets it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopCaps {
    /// A task whose confidence is below this is low-confidence; one without a confidence
    /// is not.
    pub low_confidence: f32,
    /// Consecutive low-confidence tasks a run may run; the next one caps it.
    pub max_low_confidence_streak: Option<u32>,
    /// Times a run may call one tool with one input; the next such call caps it.
    pub max_repeats: Option<u32>,
    /// A low-confidence task of a run that has spent this much caps it.
    pub max_low_confidence_spend: Option<Decimal>,
    /// How long a cap holds, and how far back a run's calls count.
    pub window: Duration,
}

impl LoopCaps {
    pub const DEFAULT_LOW_CONFIDENCE: f32 = 0.5;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

    /// Whether any cap is set.
    pub fn any(&self) -> bool {
        self.max_low_confidence_streak.is_some()
            || self.max_repeats.is_some()
            || self.max_low_confidence_spend.is_some()
    }
}

impl Default for LoopCaps {
    fn default() -> Self {
        LoopCaps {
            low_confidence: Self::DEFAULT_LOW_CONFIDENCE,
            max_low_confidence_streak: None,
            max_repeats: None,
            max_low_confidence_spend: None,
            window: Self::DEFAULT_WINDOW,
        }
    }
}

/// What one attempt costs the operator, for a tier, from a date on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    pub tier: String,
    pub version: String,
    /// First day (UTC) the card prices attempts.
    pub effective_from: NaiveDate,
    pub currency: String,
    pub price_per_fuel_unit: Decimal,
    pub price_per_gib_second: Decimal,
    pub price_per_egress_gib: Decimal,
    pub price_per_invocation: Decimal,
}

/// What a tenant pays, from a date on: a price per successful task of each use case.
/// Retries, failures and denials are never billed; exploratory tasks cost
/// `exploratory_price_per_task`, nothing by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricePlan {
    pub tenant_id: String,
    pub version: String,
    /// First day (UTC) the plan bills tasks.
    pub effective_from: NaiveDate,
    pub currency: String,
    pub price_per_task: BTreeMap<String, Decimal>,
    pub default_price_per_task: Option<Decimal>,
    pub exploratory_price_per_task: Decimal,
}

impl PricePlan {
    /// The price of one successful customer-visible task of `use_case`; `None` when the
    /// plan names no price for it.
    pub fn price(&self, use_case: &str) -> Option<Decimal> {
        self.price_per_task
            .get(use_case)
            .copied()
            .or(self.default_price_per_task)
    }
}

impl Config {
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    pub fn tool(&self, id: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.id == id)
    }

    /// The policy that allows `tool_id` for `tier`; `None` means denied.
    pub fn policy_for(&self, tool_id: &str, tier: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.tool_id == tool_id && p.tenant_tier == tier)
    }

    /// The rate card pricing `tier`'s attempts on `day`: the latest one in effect.
    pub fn rate_card_at(&self, tier: &str, day: NaiveDate) -> Option<&RateCard> {
        self.rate_cards
            .iter()
            .filter(|r| r.tier == tier && r.effective_from <= day)
            .max_by_key(|r| r.effective_from)
    }

    /// The currency `tier` is costed in (every card of a tier uses one).
    pub fn currency_of_tier(&self, tier: &str) -> Option<&str> {
        self.rate_cards
            .iter()
            .find(|r| r.tier == tier)
            .map(|r| r.currency.as_str())
    }

    /// The rate card with this version label.
    pub fn rate_card_version(&self, version: &str) -> Option<&RateCard> {
        self.rate_cards.iter().find(|r| r.version == version)
    }

    /// The price plan billing `tenant_id`'s tasks on `day`: the latest one in effect.
    pub fn plan_at(&self, tenant_id: &str, day: NaiveDate) -> Option<&PricePlan> {
        self.plans
            .iter()
            .filter(|p| p.tenant_id == tenant_id && p.effective_from <= day)
            .max_by_key(|p| p.effective_from)
    }

    /// A tier's admission and loop caps; every tier a rate card prices has them.
    pub fn tier(&self, id: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.id == id)
    }

    pub fn secret_profile(&self, id: &str) -> Option<&SecretProfile> {
        self.secret_profiles.iter().find(|p| p.id == id)
    }
}
