//! Sleeps, to exercise deadlines and concurrency without burning fuel.
//!
//! Input: `{"ms": 250}` (default 100). Output: `{"slept_ms": 250}`.

use std::time::Duration;

use isometer_guest::{ToolError, Value, json, u64_field};

fn main() {
    isometer_guest::run(slow);
}

fn slow(input: Value) -> Result<Value, ToolError> {
    let ms = u64_field(&input, "ms", 100)?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(json!({ "slept_ms": ms }))
}
