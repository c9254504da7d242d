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
pub use event::{
    LoopCap, RetryStop, RunClass, TaskControl, TaskRecord, UsageEvent, Verdict, event_id,
};
pub use outcome::{Outcome, UnknownOutcome};
pub use usage::Usage;

/// Money is always a decimal, never a float.
pub type Money = rust_decimal::Decimal;

/// Hex-encoded sha256 of `bytes`: the one content hash used for artifacts, inputs and outputs.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    to_hex(&sha2::Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`. (Evidence hashes many small values per attempt; this is a
/// table lookup per nibble, not a `char` iterator.)
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the lower-case hex of `bytes` to `out`.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_and_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::to_hex(&[]), "");
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
