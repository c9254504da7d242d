//! What an attempt runs for and may reach, and what it logs through the host.

use crate::egress::{EgressGateway, NoEgress};
use serde::Serialize;
use std::sync::{Arc, LazyLock};

/// The task an attempt belongs to, as the guest reads it through `isometer.context`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskContext {
    pub task_id: String,
    pub attempt: u32,
    pub tenant_id: String,
    pub tool_id: String,
    pub trace_id: String,
    pub run_id: String,
    pub use_case: String,
}

/// The host side of one attempt: its context and the gateway its HTTP requests go through.
#[derive(Debug, Clone)]
pub struct AttemptEnv {
    pub context: TaskContext,
    pub egress: Arc<dyn EgressGateway>,
}

impl Default for AttemptEnv {
    /// No context and no network.
    fn default() -> Self {
        static NONE: LazyLock<Arc<dyn EgressGateway>> = LazyLock::new(|| Arc::new(NoEgress));
        AttemptEnv {
            context: TaskContext::default(),
            egress: NONE.clone(),
        }
    }
}

/// Severity of a guest's log record (the ABI's `level` argument, 0 to 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level for an ABI number; out-of-range numbers are clamped.
    pub(crate) fn from_abi(level: i32) -> Self {
        match level {
            i32::MIN..=0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }
}

/// One structured log record a guest wrote with `isometer.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRecord {
    pub level: LogLevel,
    /// A JSON object: the guest's fields, or `{"message": text}` for plain text.
    pub fields: serde_json::Value,
}
