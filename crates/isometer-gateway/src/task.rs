//! The request and the answer of one task, as the API speaks them.

use isometer_core::{LoopCap, Money, Outcome, RetryStop, RunClass, Usage};
use isometer_evidence::EncodedManifest;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A task to run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Over HTTP, the API key's tenant when absent.
    #[serde(default)]
    pub tenant_id: String,
    pub tool_id: String,
    /// The tool's input; written to its stdin as JSON.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Defaults to the tool's `default_use_case`.
    pub use_case: Option<String>,
    /// The agent session this task belongs to; defaults to the task id.
    pub run_id: Option<String>,
    #[serde(default)]
    pub run_class: RunClass,
    /// Caller-chosen id (letters, digits, `-`, `_`, `.`, `:`; at most 128); generated when absent.
    pub task_id: Option<String>,
    /// The agent's confidence in this call, in [0, 1], when it gives one.
    #[serde(default)]
    pub confidence: Option<f32>,
    /// The caller's trace id (same characters as `task_id`); the task id when absent.
    /// Manifests are found by it.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// For a destructive tool: the approval this task runs under (same task id, same
    /// input as when it was asked for).
    #[serde(default)]
    pub approval_id: Option<String>,
}

impl TaskRequest {
    /// A customer task of `tenant_id` running `tool_id` on `input`, everything else left
    /// to its default.
    pub fn new(tenant_id: &str, tool_id: &str, input: serde_json::Value) -> Self {
        TaskRequest {
            tenant_id: tenant_id.into(),
            tool_id: tool_id.into(),
            input,
            use_case: None,
            run_id: None,
            run_class: RunClass::default(),
            task_id: None,
            confidence: None,
            trace_id: None,
            approval_id: None,
        }
    }
}

/// What became of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResponse {
    pub task_id: String,
    pub trace_id: String,
    pub tenant_id: String,
    pub tool_id: String,
    pub use_case: String,
    pub run_id: String,
    pub run_class: RunClass,
    pub outcome: Outcome,
    /// The tool's stdout: parsed when it is JSON, a string otherwise, null when empty or
    /// withheld (see the attempt's manifest).
    pub output: serde_json::Value,
    pub attempts: Vec<AttemptSummary>,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_cost: Money,
    pub currency: String,
    /// For a destructive tool's task: the approval it waits for or ran under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::ApprovalTicket>,
    /// The output is the policy's fallback; the outcome stays the last attempt's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// Why no further attempt ran although the policy retries the last one's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_stop: Option<RetryStop>,
    /// For a `capped` task: the loop cap that answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<CapTicket>,
    /// For a `throttled` task: when to submit it again (the same task id may be reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// The task id was submitted before: this is its stored answer, and nothing ran now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
    /// Where this submission's time went (the `Server-Timing` header); not in the body.
    #[serde(skip)]
    pub timing: TaskTiming,
}

/// Where a submission's time went, stage by stage. What is left of the whole is the
/// gateway's own work (the plan, the caps, building the records and the answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskTiming {
    /// Waiting for an admission slot: the first attempt's and each retry's.
    pub admit: Duration,
    /// The attempts in their isolates, from instantiation to exit.
    pub run: Duration,
    /// Recording the task: until its usage and evidence are signed (with the rest of
    /// the spool's group commit) and durable in the spool.
    pub record: Duration,
}

impl TaskTiming {
    /// The stages as `Server-Timing` metrics (milliseconds), e.g.
    /// `admit;dur=0.00, run;dur=0.08, record;dur=0.95`.
    pub fn server_timing(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "admit;dur={:.2}, run;dur={:.2}, record;dur={:.2}",
            ms(self.admit),
            ms(self.run),
            ms(self.record)
        )
    }
}

/// The loop cap that answered a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapTicket {
    pub cap: LoopCap,
    /// When the run may go on (unless an operator resets it first); absent in a stored
    /// answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// What running the task would have cost: the run's recent cost per task.
    #[serde(with = "rust_decimal::serde::str")]
    pub avoided_cost: Money,
}

impl TaskResponse {
    /// Whether this answer is the task's last word: everything but a refusal for load and
    /// a wait for an approval, after which the same task id may come again.
    pub fn is_final(&self) -> bool {
        !matches!(self.outcome, Outcome::Throttled | Outcome::ApprovalRequired)
            || (self.outcome == Outcome::ApprovalRequired && !self.attempts.is_empty())
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptSummary {
    pub attempt: u16,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub usage: Usage,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Money,
    pub policy_id: String,
    /// The tool's stderr (its logs), lossily decoded.
    pub stderr: String,
    /// Why the attempt did not succeed, when it did not.
    pub detail: Option<String>,
    /// sha256 of the attempt's canonical execution manifest.
    pub manifest_digest: String,
    /// The attempt's signed execution manifest.
    pub manifest: EncodedManifest,
}
