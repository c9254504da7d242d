//! Evidence of what ran: an execution manifest per attempt and its digest.
//!
//! The canonical encoding is compact JSON with the fields in the order they are declared
//! here; the digest is the sha256 of those bytes, and the signature (ed25519, see
//! [`SignedManifest`]) is over them too.

mod signing;

pub use signing::{EvidenceKey, KeyError, SignedManifest, TrustedKeys, VerifyError};

use isometer_core::{Outcome, Usage};
use serde::{Deserialize, Serialize};

/// Version of the manifest layout; bumped whenever a field is added, removed or renamed.
pub const MANIFEST_VERSION: u32 = 2;

/// What one attempt ran, under which policy, on which input, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub task_id: String,
    pub attempt: u16,
    pub tenant_id: String,
    pub tool_id: String,
    pub policy_id: String,
    /// Content hash of the configuration the policy came from.
    pub config_version: String,
    pub artifact_hash: String,
    pub input_hash: String,
    pub output_hash: String,
    pub outcome: Outcome,
    pub usage: Usage,
    /// Start of the attempt, milliseconds since the Unix epoch.
    pub started_ms: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode the manifest: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl Manifest {
    /// The canonical bytes of the manifest.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// sha256 of the canonical bytes, hex-encoded.
    pub fn digest(&self) -> Result<String, EncodeError> {
        Ok(isometer_core::sha256_hex(&self.canonical_bytes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            task_id: "t1".into(),
            attempt: 1,
            tenant_id: "acme".into(),
            tool_id: "summarize".into(),
            policy_id: "summarize/standard".into(),
            config_version: "c".into(),
            artifact_hash: "a".into(),
            input_hash: "i".into(),
            output_hash: "o".into(),
            outcome: Outcome::Success,
            usage: Usage {
                fuel: 10,
                peak_memory_bytes: 65536,
                wall_time_us: 7,
                egress_bytes: 0,
                output_bytes: 2,
                cpu_time_us: 6,
                instantiate_us: 3,
                egress_requests: 0,
            },
            started_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn the_canonical_encoding_is_stable() {
        let text = String::from_utf8(manifest().canonical_bytes().expect("encode")).expect("utf-8");
        assert_eq!(
            text,
            r#"{"manifest_version":2,"task_id":"t1","attempt":1,"tenant_id":"acme","tool_id":"summarize","policy_id":"summarize/standard","config_version":"c","artifact_hash":"a","input_hash":"i","output_hash":"o","outcome":"success","usage":{"fuel":10,"peak_memory_bytes":65536,"wall_time_us":7,"cpu_time_us":6,"instantiate_us":3,"egress_bytes":0,"egress_requests":0,"output_bytes":2},"started_ms":1700000000000}"#
        );
    }

    #[test]
    fn any_change_changes_the_digest() {
        let base = manifest().digest().expect("digest");
        let mut changed = manifest();
        changed.usage.fuel += 1;
        assert_ne!(changed.digest().expect("digest"), base);
        assert_eq!(manifest().digest().expect("digest"), base);
    }
}
