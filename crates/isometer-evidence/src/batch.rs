//! Signing at the pace of the durable record: every manifest made durable in one group
//! commit shares one signature.
//!
//! A task's manifests are encoded once ([`Unsealed`]) and travel, unsigned, with the
//! task's rows to the usage spool. The spool's writer thread takes every record waiting,
//! and before its one `fdatasync` it seals the group ([`BatchSigner::seal`]): one ed25519
//! signature over the Merkle root of the group's manifests, and for each manifest the
//! JSON that completes it (key id, signature, batch proof), written with its record. So a
//! task waits once, for its record to be durable, and the signature costs one ed25519
//! operation per group commit (at most a thousand a second) instead of a wait, a wakeup
//! and a share of a signature of its own.

use crate::signing::{Hash, digest_of, leaf_hash, merkle_levels, path_of};
use crate::{
    BatchProof, EncodeError, EncodedManifest, EvidenceKey, Manifest, SignedManifest, TrustedKeys,
};
use isometer_core::push_hex;
use serde::Deserialize;
use std::sync::Arc;

/// Signs batches of manifests with one evidence key; cheap to clone.
#[derive(Clone)]
pub struct BatchSigner {
    key: Arc<EvidenceKey>,
    key_id: Arc<str>,
    trusted: TrustedKeys,
}

impl std::fmt::Debug for BatchSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl BatchSigner {
    pub fn new(key: EvidenceKey) -> Self {
        BatchSigner {
            key_id: key.key_id().into(),
            trusted: key.trusted(),
            key: Arc::new(key),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The keys that verify what this signer signs.
    pub fn trusted(&self) -> &TrustedKeys {
        &self.trusted
    }

    /// Signs `leaves` (each an [`Unsealed::leaf`]) with one signature over their Merkle
    /// root. Returns, for each leaf in order, its seal: the JSON that follows
    /// [`Unsealed::head`] to make the signed manifest's JSON, `,"key_id":…,"signature":…,
    /// "batch":{…}}` as `serde_json` writes those fields (every value is hex or a number:
    /// nothing to escape). The spool's writer thread calls this for a whole group commit
    /// between two syncs, so the seals are written straight from the tree's hashes.
    pub fn seal(&self, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let Ok(count) = u32::try_from(leaves.len()) else {
            return Vec::new();
        };
        let levels = merkle_levels(leaves);
        let Some(root) = levels.last().map(|top| top[0]) else {
            return Vec::new();
        };
        let signature = self.key.sign_root(count, &root);
        let depth = levels.len();
        (0..leaves.len())
            .map(|index| {
                let mut out =
                    Vec::with_capacity(self.key_id.len() + 2 * (64 + 32) + 96 + 67 * depth);
                out.extend_from_slice(b",\"key_id\":\"");
                out.extend_from_slice(self.key_id.as_bytes());
                out.extend_from_slice(b"\",\"signature\":\"");
                push_hex(&mut out, &signature);
                out.extend_from_slice(b"\",\"batch\":{\"root\":\"");
                push_hex(&mut out, &root);
                out.extend_from_slice(b"\",\"index\":");
                out.extend_from_slice(index.to_string().as_bytes());
                out.extend_from_slice(b",\"count\":");
                out.extend_from_slice(count.to_string().as_bytes());
                out.extend_from_slice(b",\"path\":[");
                for (i, hash) in path_of(&levels, index).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'"');
                    push_hex(&mut out, hash);
                    out.push(b'"');
                }
                out.extend_from_slice(b"]}}");
                out
            })
            .collect()
    }
}

/// The opening of a signed manifest's JSON, before the manifest's canonical bytes.
pub(crate) const HEAD: &str = "{\"manifest\":";

/// A manifest encoded for signing: its canonical bytes (inside the opening of the signed
/// manifest's JSON) and its leaf in a batch.
#[derive(Debug, Clone)]
pub struct Unsealed {
    manifest: Manifest,
    /// `{"manifest":` and the canonical bytes.
    head: String,
    digest: Hash,
}

/// A seal's fields, read back to give the answer a typed [`SignedManifest`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seal {
    key_id: String,
    signature: String,
    batch: BatchProof,
}

impl Unsealed {
    pub fn new(manifest: Manifest) -> Result<Self, EncodeError> {
        let canonical = manifest.canonical_bytes()?;
        let digest = digest_of(&canonical);
        let mut head = String::with_capacity(HEAD.len() + canonical.len() + 700);
        head.push_str(HEAD);
        head.push_str(std::str::from_utf8(&canonical).map_err(|e| {
            EncodeError::from(<serde_json::Error as serde::de::Error>::custom(format!(
                "the canonical bytes are not UTF-8: {e}"
            )))
        })?);
        Ok(Unsealed {
            manifest,
            head,
            digest,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signed manifest's JSON up to its seal: `{"manifest":` and the canonical bytes.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The manifest's leaf in a batch's Merkle tree.
    pub fn leaf(&self) -> [u8; 32] {
        leaf_hash(&self.digest)
    }

    /// sha256 of the canonical bytes, hex.
    pub fn digest_hex(&self) -> String {
        isometer_core::to_hex(&self.digest)
    }

    /// The signed manifest, given the seal [`BatchSigner::seal`] made for its leaf.
    pub fn sealed(self, seal: &[u8]) -> Result<EncodedManifest, EncodeError> {
        let fields: Seal = match seal.split_first() {
            Some((b',', rest)) => {
                let mut object = Vec::with_capacity(seal.len());
                object.push(b'{');
                object.extend_from_slice(rest);
                serde_json::from_slice(&object)?
            }
            _ => {
                return Err(<serde_json::Error as serde::de::Error>::custom(
                    "a manifest's seal does not continue its JSON",
                )
                .into());
            }
        };
        let mut json = self.head;
        json.push_str(std::str::from_utf8(seal).map_err(|e| {
            EncodeError::from(<serde_json::Error as serde::de::Error>::custom(format!(
                "a manifest's seal is not UTF-8: {e}"
            )))
        })?);
        let signed = SignedManifest {
            manifest: self.manifest,
            key_id: fields.key_id,
            signature: fields.signature,
            batch: fields.batch,
        };
        EncodedManifest::from_json(signed, json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsealed(i: usize) -> Unsealed {
        let mut m = crate::tests::manifest();
        m.task_id = format!("t{i}");
        Unsealed::new(m).expect("encoded")
    }

    #[test]
    fn every_manifest_of_a_sealed_batch_verifies_and_reads_back() {
        let (_dir, signer) = crate::tests::signer();
        for n in [1usize, 2, 3, 7, 64] {
            let manifests: Vec<Unsealed> = (0..n).map(unsealed).collect();
            let leaves: Vec<[u8; 32]> = manifests.iter().map(Unsealed::leaf).collect();
            let seals = signer.seal(&leaves);
            assert_eq!(seals.len(), n);
            let mut roots = std::collections::HashSet::new();
            for (i, (m, seal)) in manifests.into_iter().zip(&seals).enumerate() {
                let signed = m.sealed(seal).expect("sealed");
                signed.verify(signer.trusted()).expect("verifies");
                assert_eq!(
                    (signed.batch.index, signed.batch.count),
                    (i as u32, n as u32)
                );
                roots.insert(signed.batch.root.clone());
                let json = signed.to_json().expect("json");
                assert_eq!(json, serde_json::to_string(&*signed).expect("serde's"));
                let back: SignedManifest = serde_json::from_str(&json).expect("reads back");
                assert_eq!(back, *signed);
            }
            assert_eq!(roots.len(), 1, "one root per batch");
        }
    }

    #[test]
    fn a_seal_made_for_another_leaf_does_not_verify() {
        let (_dir, signer) = crate::tests::signer();
        let (a, b) = (unsealed(1), unsealed(2));
        let seals = signer.seal(&[a.leaf(), b.leaf()]);
        let swapped = a.sealed(&seals[1]).expect("reads");
        assert!(swapped.verify(signer.trusted()).is_err());
        assert!(b.clone().sealed(b"{}").is_err(), "not a seal");
        assert!(b.sealed(b",\"key_id\":1}").is_err(), "not a seal's fields");
    }
}
