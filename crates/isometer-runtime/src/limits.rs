//! Per-attempt limits, and the resource limiter that enforces memory and records its peak.

use std::time::Duration;

/// What one attempt may consume before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel units (about one per wasm instruction).
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall time from the start of instantiation.
    pub timeout: Duration,
    /// Bytes of stdout, stderr and log records together.
    pub max_output_bytes: u64,
    /// Egress bytes, sent and received together.
    pub max_egress_bytes: u64,
    /// Egress requests.
    pub max_egress_requests: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(2),
            max_output_bytes: 1 << 20,
            max_egress_bytes: 1 << 20,
            max_egress_requests: 32,
        }
    }
}

/// The memory limit was reached: carried inside the trap so the outcome is typed.
#[derive(Debug, thiserror::Error)]
#[error("linear memory limit of {limit} bytes reached (asked for {desired})")]
pub(crate) struct MemoryLimitReached {
    pub(crate) limit: usize,
    pub(crate) desired: usize,
}

/// Enforces the memory limit and remembers the largest size granted.
#[derive(Debug)]
pub(crate) struct MeteredLimiter {
    pub(crate) memory_limit: usize,
    pub(crate) peak_memory: usize,
    pub(crate) memory_refused: bool,
}

impl MeteredLimiter {
    pub(crate) fn new(memory_limit: u64) -> Self {
        MeteredLimiter {
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            peak_memory: 0,
            memory_refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MeteredLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = true;
            return Err(wasmtime::Error::new(MemoryLimitReached {
                limit: self.memory_limit,
                desired,
            }));
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real tool.
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}
