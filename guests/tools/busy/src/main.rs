//! Burns CPU: iterates a hash `rounds` times, and optionally holds `alloc_kib` of memory.
//!
//! Input: `{"rounds": 100000, "alloc_kib": 0}`. Large `rounds` exhaust the fuel budget;
//! large `alloc_kib` exceed the memory limit.

use isometer_guest::{ToolError, Value, json, u64_field};

fn main() {
    isometer_guest::run(work);
}

fn work(input: Value) -> Result<Value, ToolError> {
    let rounds = u64_field(&input, "rounds", 100_000)?;
    let alloc_kib = u64_field(&input, "alloc_kib", 0)?;
    let held = vec![1u8; (alloc_kib as usize) * 1024];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for i in 0..rounds {
        h ^= i;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(json!({ "rounds": rounds, "hash": format!("{h:016x}"), "held_bytes": held.len() }))
}
