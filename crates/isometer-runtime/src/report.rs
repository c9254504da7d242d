//! What one attempt did and consumed.

use crate::egress::EgressRecord;
use crate::env::LogRecord;
use isometer_core::{Outcome, Usage};

/// The result of one attempt, whatever the guest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    pub outcome: Outcome,
    /// The guest's exit code, when it exited (returning from `_start` is 0).
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub usage: Usage,
    /// Structured log records, in the order written.
    pub logs: Vec<LogRecord>,
    /// Every egress request, allowed or denied, in order.
    pub egress: Vec<EgressRecord>,
    /// Why the attempt did not succeed, in words, when it did not.
    pub detail: Option<String>,
}

impl ExecutionReport {
    /// A report for an attempt that never ran.
    pub fn not_run(outcome: Outcome, detail: impl Into<String>) -> Self {
        ExecutionReport {
            outcome,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            usage: Usage::default(),
            logs: Vec::new(),
            egress: Vec::new(),
            detail: Some(detail.into()),
        }
    }
}
