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
//!
//! Beyond WASI, the host offers a few imports from module `isometer`, wrapped here:
//! [`context`] (the task's ids as JSON), [`log`] (structured records) and [`http::send`]
//! (HTTP through the host's egress gateway). Requests and responses cross as a u32
//! little-endian head length, a JSON head and the raw body; the host parks each reply until
//! the guest takes it into a buffer of the announced size. A request the gateway denies
//! ends the attempt with outcome `egress_denied` instead of returning.
//!
//! ```no_run
//! use isometer_guest::{ToolError, http, json, str_field};
//!
//! isometer_guest::run(|input| {
//!     let response = http::get(str_field(&input, "url")?)?;
//!     if !response.is_success() {
//!         return Err(ToolError(format!("status {}", response.status)));
//!     }
//!     isometer_guest::info("fetched");
//!     Ok(json!({ "upstream": response.json()? }))
//! });
//! ```
//!
//! Built for anything but wasm32 there is no host: [`context`] is `Null`, [`log`] does
//! nothing and every request fails with [`http::HttpError::Upstream`].

#![deny(unsafe_code)]

#[allow(
    unsafe_code,
    reason = "the host imports; each call carries its SAFETY argument"
)]
mod abi;
mod host;
pub mod http;

pub use host::{Level, context, info, log, warn};

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
