//! The vocabulary every other crate speaks: ids, outcomes, usage, events, money and clocks.
//!
//! **Architecture Invariant:** this crate does no IO. It holds plain data and pure functions
//! so that the runtime, the store, billing and the web crate agree on one meaning for each
//! word without depending on each other.

mod clock;
mod event;
mod outcome;
mod usage;

pub use clock::{Clock, ManualClock, SystemClock};
pub use event::{RunClass, TaskRecord, UsageEvent, Verdict, event_id};
pub use outcome::{Outcome, UnknownOutcome};
pub use usage::Usage;

/// Money is always a decimal, never a float.
pub type Money = rust_decimal::Decimal;

/// Hex-encoded sha256 of `bytes`: the one content hash used for artifacts, inputs and outputs.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
