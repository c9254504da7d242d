//! The two facts isometer records: one usage event per attempt, one task record per task.

use crate::{Money, Outcome, Usage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Whether a run serves a customer (billable when successful) or explores (shown apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunClass {
    #[default]
    Customer,
    Exploratory,
}

impl RunClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunClass::Customer => "customer",
            RunClass::Exploratory => "exploratory",
        }
    }
}

impl fmt::Display for RunClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for RunClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(RunClass::Customer),
            "exploratory" => Ok(RunClass::Exploratory),
            other => Err(format!(
                "unknown run class `{other}` (customer, exploratory)"
            )),
        }
    }
}

/// What the policy decided for an attempt: it ran, or it was refused before or while
/// running (no policy, an egress request outside the allowlist, a full spool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Verdict::Allow),
            "deny" => Ok(Verdict::Deny),
            other => Err(format!("unknown verdict `{other}` (allow, deny)")),
        }
    }
}

/// The deterministic id of an attempt's event: the same attempt always yields the same id,
/// so a re-sent event can be recognised as a duplicate.
pub fn event_id(task_id: &str, attempt: u16) -> String {
    format!("{task_id}/{attempt}")
}

/// One attempt of one task: what ran, under which policy, what it consumed and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub event_id: String,
    pub time: DateTime<Utc>,
    pub tenant_id: String,
    pub tier: String,
    pub use_case: String,
    pub tool_id: String,
    pub task_id: String,
    pub run_id: String,
    pub run_class: RunClass,
    /// 1 for the first attempt.
    pub attempt: u16,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub usage: Usage,
    pub policy_id: String,
    /// The content hash of the configuration the policy was read from.
    pub policy_version: String,
    pub verdict: Verdict,
    /// Whether the attempt's evidence (its manifest) has every required field.
    pub evidence_complete: bool,
    /// The agent's confidence in [0, 1] when it gave one.
    pub confidence: Option<f32>,
    pub artifact_hash: String,
    pub rate_card_version: String,
    pub cost: Money,
}

/// One business task: its final outcome, how many attempts it took and what they cost together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub submitted: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub tenant_id: String,
    pub tier: String,
    pub use_case: String,
    pub tool_id: String,
    pub run_id: String,
    pub run_class: RunClass,
    pub outcome: Outcome,
    pub attempts: u16,
    pub total_cost: Money,
    /// Every attempt's verdict was allow and its evidence complete: with outcome
    /// `success`, a policy-compliant task.
    pub compliant: bool,
    /// What the gateway's controls did to the task: retries stopped, fallback, loop cap.
    pub control: TaskControl,
}

/// What the gateway's controls did to a task, beyond running it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskControl {
    /// Why no further attempt ran although the policy retries the last one's outcome.
    pub retry_stop: Option<RetryStop>,
    /// The answer is the policy's fallback, not the tool's output.
    pub fallback: bool,
    /// The loop cap that answered the task (outcome `capped`) without running it.
    pub cap: Option<LoopCap>,
    /// The spend a cap avoided: the run's recent cost per task.
    pub avoided_cost: Money,
}

/// Why a retryable attempt was the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryStop {
    /// The policy's `max_attempts` were used.
    MaxAttempts,
    /// The tenant's retry budget for the tool was spent.
    RetryBudget,
    /// After its backoff the retry found no slot: the tenant's tasks filled its
    /// concurrency and its queue, the server was full, or the usage spool was.
    NoSlot,
}

/// The loop caps of a run (configured per tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopCap {
    /// Too many consecutive tasks below the confidence threshold.
    LowConfidenceStreak,
    /// The same tool called with the same input too many times.
    RepeatedCall,
    /// The run spent over its cap while its confidence is low.
    LowConfidenceSpend,
}

macro_rules! words {
    ($ty:ty { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $word),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok(<$ty>::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` ({})",
                        stringify!($ty),
                        [$($word),+].join(", ")
                    )),
                }
            }
        }
    };
}

words!(RetryStop {
    MaxAttempts => "max_attempts",
    RetryBudget => "retry_budget",
    NoSlot => "no_slot",
});
words!(LoopCap {
    LowConfidenceStreak => "low_confidence_streak",
    RepeatedCall => "repeated_call",
    LowConfidenceSpend => "low_confidence_spend",
});
