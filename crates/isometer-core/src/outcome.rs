//! The outcome of one attempt or task: one word each, the same in the API, events, SQL and pages.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What happened to an attempt. The spelling of each variant is part of the product's
/// contract (see DESIGN.md "Outcomes"); `as_str` and `FromStr` are exact inverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed,
    Trapped,
    FuelExhausted,
    TimedOut,
    MemoryExceeded,
    OutputExceeded,
    EgressDenied,
    PolicyDenied,
    ApprovalRequired,
    Capped,
    Throttled,
    InvalidArtifact,
}

impl Outcome {
    /// Every outcome, in the order DESIGN.md lists them.
    pub const ALL: [Outcome; 13] = [
        Outcome::Success,
        Outcome::Failed,
        Outcome::Trapped,
        Outcome::FuelExhausted,
        Outcome::TimedOut,
        Outcome::MemoryExceeded,
        Outcome::OutputExceeded,
        Outcome::EgressDenied,
        Outcome::PolicyDenied,
        Outcome::ApprovalRequired,
        Outcome::Capped,
        Outcome::Throttled,
        Outcome::InvalidArtifact,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Trapped => "trapped",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::TimedOut => "timed_out",
            Outcome::MemoryExceeded => "memory_exceeded",
            Outcome::OutputExceeded => "output_exceeded",
            Outcome::EgressDenied => "egress_denied",
            Outcome::PolicyDenied => "policy_denied",
            Outcome::ApprovalRequired => "approval_required",
            Outcome::Capped => "capped",
            Outcome::Throttled => "throttled",
            Outcome::InvalidArtifact => "invalid_artifact",
        }
    }

    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    /// Whether running the same input again may end differently: a crash, a failure or a
    /// deadline can be transient; a budget, a denial or a bad artifact cannot.
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Trapped | Outcome::TimedOut)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that names no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome `{0}`")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_round_trips_through_str_and_serde() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
            let json = serde_json::to_string(&outcome).expect("serialize");
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
        assert!("Success".parse::<Outcome>().is_err());
    }
}
