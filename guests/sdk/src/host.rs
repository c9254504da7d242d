//! The task context and structured logs, as the host provides them.

use serde_json::{Value, json};

use crate::abi;

/// The task context: `{"task_id", "attempt", "tenant_id", "tool_id", "trace_id", "run_id",
/// "use_case"}`, any of them possibly empty. [`Value::Null`] outside the host.
pub fn context() -> Value {
    abi::task_context()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// Sends a structured log record to the host: conventionally an object with a `"message"`;
/// a string is sent as plain text. Does nothing outside the host.
pub fn log(level: Level, fields: Value) {
    let record = match fields {
        Value::String(text) => text.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    abi::log_record(level as u32, &record);
}

/// Logs `{"message": message}` at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, json!({ "message": message }));
}

/// Logs `{"message": message}` at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, json!({ "message": message }));
}
