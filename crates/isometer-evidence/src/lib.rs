//! Evidence of what ran: an execution manifest per attempt, signed, and checked for
//! completeness against the policy's required fields.
//!
//! The canonical encoding is compact JSON with the fields in the order they are declared
//! here. Manifests are signed in batches: each is a leaf of a Merkle tree whose root is
//! signed once (ed25519), and each carries the path from its leaf to that root, so it
//! verifies on its own (see [`SignedManifest`]). A lone manifest is a tree of one.

mod batch;
mod encoded;
mod signing;

pub use batch::{BatchSigner, Unsealed};
pub use encoded::EncodedManifest;
pub use signing::{BatchProof, EvidenceKey, KeyError, SignedManifest, TrustedKeys, VerifyError};

use isometer_core::{Money, Outcome, Usage, Verdict};
use serde::{Deserialize, Serialize};

/// Version of the manifest layout; bumped whenever a field is added, removed or renamed.
pub const MANIFEST_VERSION: u32 = 3;

/// What one attempt ran, under which policy, on which input, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub manifest_version: u32,
    /// The caller's trace id, or the task id when it gave none.
    pub trace_id: String,
    pub task_id: String,
    pub attempt: u16,
    pub run_id: String,
    pub tenant_id: String,
    pub tool_id: String,
    pub use_case: String,
    /// Empty when no policy allowed the tool.
    pub policy_id: String,
    /// Content hash of the configuration the policy came from.
    pub policy_version: String,
    /// Empty when nothing ran.
    pub artifact_hash: String,
    pub input_hash: String,
    /// sha256 of what the tool wrote to stdout; empty when nothing ran. When the output
    /// was withheld this still names it, so that an auditor can tell what was held back.
    pub output_hash: String,
    pub outcome: Outcome,
    /// The policy's verdict on the attempt: deny when the policy refused it, an egress
    /// call was denied, or its evidence was incomplete.
    pub verdict: Verdict,
    pub usage: Usage,
    /// Every egress call, with the verdict and the rule that decided it.
    pub egress: Vec<EgressEntry>,
    /// Instruction-poisoning rules that matched what reached the guest.
    pub poisoning: Vec<PoisoningHit>,
    /// The approval that let a destructive tool run.
    pub approval_id: Option<String>,
    /// The agent's confidence, when it gave one.
    pub confidence: Option<f32>,
    /// Start and end of the attempt, milliseconds since the Unix epoch.
    pub started_ms: i64,
    pub finished_ms: i64,
    pub rate_card_version: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Money,
    /// Required fields the evidence lacks; when any, the output was withheld.
    pub missing_fields: Vec<String>,
    pub output_withheld: bool,
}

/// One egress call as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressEntry {
    pub method: String,
    pub url: String,
    pub verdict: Verdict,
    /// The rule that decided; none when nothing matched (deny by default).
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// An instruction-poisoning rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoisoningHit {
    pub rule: String,
    /// Where it matched: `descriptor` or the URL of fetched content.
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode the manifest: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl Manifest {
    /// The canonical bytes of the manifest.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        // Most manifests fit: one allocation instead of a series of regrowths.
        let mut out = Vec::with_capacity(1536);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }

    /// sha256 of the canonical bytes, hex-encoded.
    pub fn digest(&self) -> Result<String, EncodeError> {
        Ok(isometer_core::sha256_hex(&self.canonical_bytes()?))
    }

    /// Whether the manifest carries `field` (a name from the policy's vocabulary); `None`
    /// for a name that is not a manifest field.
    pub fn has_field(&self, field: &str) -> Option<bool> {
        let text = |s: &str| !s.is_empty();
        Some(match field {
            "trace_id" => text(&self.trace_id),
            "task_id" => text(&self.task_id),
            "run_id" => text(&self.run_id),
            "tenant_id" => text(&self.tenant_id),
            "tool_id" => text(&self.tool_id),
            "use_case" => text(&self.use_case),
            "policy_id" => text(&self.policy_id),
            "policy_version" => text(&self.policy_version),
            "artifact_hash" => text(&self.artifact_hash),
            "input_hash" => text(&self.input_hash),
            "output_hash" => text(&self.output_hash),
            "rate_card_version" => text(&self.rate_card_version),
            "confidence" => self.confidence.is_some(),
            "started_ms" => self.started_ms > 0,
            "finished_ms" => self.finished_ms >= self.started_ms && self.finished_ms > 0,
            // Always there: an empty list is the evidence that nothing went out, and a
            // cost of zero is a cost.
            "egress" | "cost" => true,
            _ => return None,
        })
    }

    /// The `required` fields this manifest lacks (a name it does not know counts as
    /// lacking: fail closed).
    pub fn missing<S: AsRef<str>>(&self, required: &[S]) -> Vec<String> {
        required
            .iter()
            .map(AsRef::as_ref)
            .filter(|f| self.has_field(f) != Some(true))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch signer over a fresh key; the key's directory lives as long as the guard.
    pub(crate) fn signer() -> (tempfile::TempDir, BatchSigner) {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = BatchSigner::new(EvidenceKey::load_or_create(dir.path()).expect("key"));
        (dir, signer)
    }

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            trace_id: "tr1".into(),
            task_id: "t1".into(),
            attempt: 1,
            run_id: "r1".into(),
            tenant_id: "acme".into(),
            tool_id: "summarize".into(),
            use_case: "support-summary".into(),
            policy_id: "summarize/standard".into(),
            policy_version: "c".into(),
            artifact_hash: "a".into(),
            input_hash: "i".into(),
            output_hash: "o".into(),
            outcome: Outcome::Success,
            verdict: Verdict::Allow,
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
            egress: vec![EgressEntry {
                method: "GET".into(),
                url: "http://quotes.example.test/q".into(),
                verdict: Verdict::Allow,
                rule: Some("allow-host quotes.example.test (GET)".into()),
                reason: None,
                status: Some(200),
                bytes_out: 60,
                bytes_in: 120,
            }],
            poisoning: Vec::new(),
            approval_id: None,
            confidence: Some(0.75),
            started_ms: 1_700_000_000_000,
            finished_ms: 1_700_000_000_001,
            rate_card_version: "2026-01".into(),
            cost: "0.000123".parse().expect("decimal"),
            missing_fields: Vec::new(),
            output_withheld: false,
        }
    }

    #[test]
    fn the_canonical_encoding_is_stable() {
        let text = String::from_utf8(manifest().canonical_bytes().expect("encode")).expect("utf-8");
        assert_eq!(
            text,
            r#"{"manifest_version":3,"trace_id":"tr1","task_id":"t1","attempt":1,"run_id":"r1","tenant_id":"acme","tool_id":"summarize","use_case":"support-summary","policy_id":"summarize/standard","policy_version":"c","artifact_hash":"a","input_hash":"i","output_hash":"o","outcome":"success","verdict":"allow","usage":{"fuel":10,"peak_memory_bytes":65536,"wall_time_us":7,"cpu_time_us":6,"instantiate_us":3,"egress_bytes":0,"egress_requests":0,"output_bytes":2},"egress":[{"method":"GET","url":"http://quotes.example.test/q","verdict":"allow","rule":"allow-host quotes.example.test (GET)","reason":null,"status":200,"bytes_out":60,"bytes_in":120}],"poisoning":[],"approval_id":null,"confidence":0.75,"started_ms":1700000000000,"finished_ms":1700000000001,"rate_card_version":"2026-01","cost":"0.000123","missing_fields":[],"output_withheld":false}"#
        );
        let back: Manifest = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back.canonical_bytes().expect("encode"), text.as_bytes());
    }

    #[test]
    fn any_change_changes_the_digest() {
        let base = manifest().digest().expect("digest");
        let mut changed = manifest();
        changed.usage.fuel += 1;
        assert_ne!(changed.digest().expect("digest"), base);
        assert_eq!(manifest().digest().expect("digest"), base);
    }

    #[test]
    fn completeness_names_what_is_missing() {
        let m = manifest();
        let required = [
            "trace_id",
            "policy_id",
            "output_hash",
            "confidence",
            "egress",
        ];
        assert!(m.missing(&required).is_empty());
        let mut lacking = manifest();
        lacking.confidence = None;
        lacking.trace_id.clear();
        assert_eq!(lacking.missing(&required), ["trace_id", "confidence"]);
        // A name the manifest does not know is missing: fail closed.
        assert_eq!(m.missing(&["colour"]), ["colour"]);
    }
}
