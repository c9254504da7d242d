//! Behaves like an unreliable upstream: fails for a configured share of seeds.
//!
//! Input: `{"seed": 42, "fail_percent": 20}`. The same seed and attempt always give the
//! same answer, so tests and the demo are reproducible; a retry (the next attempt) rolls
//! again.

use isometer_guest::{ToolError, Value, json, u64_field};

fn main() {
    isometer_guest::run(call);
}

fn call(input: Value) -> Result<Value, ToolError> {
    let seed = u64_field(&input, "seed", 0)?;
    let fail_percent = u64_field(&input, "fail_percent", 20)?;
    // Each attempt of a task rolls anew, as a retried call to a flaky upstream would.
    let attempt = isometer_guest::context()["attempt"].as_u64().unwrap_or(1);
    let key = if attempt <= 1 {
        seed
    } else {
        seed ^ attempt.rotate_left(32)
    };
    let roll = mix(key) % 100;
    if roll < fail_percent {
        return Err(ToolError(format!(
            "upstream unavailable (roll {roll} < {fail_percent})"
        )));
    }
    Ok(json!({ "status": "ok", "roll": roll }))
}

/// splitmix64: a well-spread hash of the seed.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
