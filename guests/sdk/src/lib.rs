//! The guest side of isometer's tool ABI: a tool is one function from JSON input to JSON
//! output.
//!
//! ```no_run
//! isometer_guest::run(|input| Ok(isometer_guest::json!({ "echo": input })));
//! ```
//!
//! [`run`] reads the whole input from stdin, calls the function, writes its result to
//! stdout and exits 0; an `Err` is written to stderr and the tool exits 1, which the host
//! records as outcome `failed`.

use std::io::{Read, Write};

pub use serde_json::{Map, Value, json};

/// A tool's failure, reported to the host on stderr.
#[derive(Debug)]
pub struct ToolError(pub String);

impl<E: std::fmt::Display> From<E> for ToolError {
    fn from(e: E) -> Self {
        ToolError(e.to_string())
    }
}

/// Runs `tool` on the task's input and reports its result to the host. Never returns.
pub fn run(tool: impl FnOnce(Value) -> Result<Value, ToolError>) -> ! {
    let result = read_input().and_then(tool);
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let written = serde_json::to_writer(&mut stdout, &output)
                .map_err(|e| e.to_string())
                .and_then(|()| stdout.flush().map_err(|e| e.to_string()));
            match written {
                Ok(()) => std::process::exit(0),
                Err(e) => fail(&format!("cannot write output: {e}")),
            }
        }
        Err(ToolError(message)) => fail(&message),
    }
}

fn read_input() -> Result<Value, ToolError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_str(&text)?)
}

fn fail(message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "{message}");
    std::process::exit(1)
}

/// A required string field of an object.
pub fn str_field<'a>(input: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    input
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError(format!("input field `{name}` (a string) is required")))
}

/// An optional unsigned integer field, with a default.
pub fn u64_field(input: &Value, name: &str, default: u64) -> Result<u64, ToolError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            ToolError(format!(
                "input field `{name}` must be a non-negative integer"
            ))
        }),
    }
}
