//! What one attempt consumed, in integer units.

use serde::{Deserialize, Serialize};

/// Metered quantities of one attempt. Integers only: fuel units, bytes, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wasm fuel consumed (roughly one unit per instruction).
    pub fuel: u64,
    /// Largest linear memory size the guest reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time of the attempt, instantiation included, in microseconds.
    pub wall_time_us: u64,
    /// CPU time the host spent running the attempt (instantiation and guest code, across
    /// every thread it ran on), in microseconds.
    pub cpu_time_us: u64,
    /// Time to instantiate the module, in microseconds.
    pub instantiate_us: u64,
    /// Bytes sent and received through the egress gateway.
    pub egress_bytes: u64,
    /// Requests made through the egress gateway.
    pub egress_requests: u64,
    /// Bytes the guest wrote to stdout and stderr.
    pub output_bytes: u64,
}
