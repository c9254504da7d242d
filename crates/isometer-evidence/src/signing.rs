//! Signed manifests: ed25519 over the root of a Merkle tree of manifests, under a key id.
//!
//! A leaf is `sha256(0x00 || digest)`, where the digest is the sha256 of the manifest's
//! canonical bytes; a node is `sha256(0x01 || left || right)`; a
//! level with an odd count carries its last node up unchanged. The signature covers
//! `"isometer manifest batch v1\0" || count (u32, big-endian) || root`. Each signed manifest
//! carries its leaf index, the leaf count and the sibling hashes up to the root, so that it
//! verifies without the rest of its batch.
//!
//! The signing key lives in the data directory (`keys/evidence.key`, the 32-byte seed in
//! hex, mode 0600, created on first use). Its key id is the first 16 hex digits of the
//! sha256 of the public key. Verification trusts only the keys it is given: a manifest
//! re-signed with some other key names a key id nobody trusts.

use crate::{EncodeError, Manifest};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use isometer_core::to_hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "evidence.key";

/// Domain separation for what the evidence key signs.
const SIGNING_CONTEXT: &[u8] = b"isometer manifest batch v1\0";

/// A manifest with its signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub key_id: String,
    /// ed25519 signature of the batch's root, hex.
    pub signature: String,
    pub batch: BatchProof,
}

/// Where a manifest sits in the batch that was signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchProof {
    /// The Merkle root the signature covers, hex.
    pub root: String,
    pub index: u32,
    pub count: u32,
    /// Sibling hashes from the leaf up, hex; levels where the node had none are skipped.
    pub path: Vec<String>,
}

pub(crate) type Hash = [u8; 32];

/// The leaf of a manifest whose digest (sha256 of the canonical bytes) is `digest`.
pub(crate) fn leaf_hash(digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(digest);
    h.finalize().into()
}

pub(crate) fn digest_of(canonical: &[u8]) -> Hash {
    Sha256::digest(canonical).into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn signed_message(count: u32, root: &Hash) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + 36);
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&count.to_be_bytes());
    message.extend_from_slice(root);
    message
}

/// The levels of the Merkle tree over `leaves`: the leaves first, the root (alone) last;
/// a level with an odd count carries its last node up unchanged. No leaves: no levels.
pub(crate) fn merkle_levels(leaves: &[Hash]) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves.to_vec()];
    while let Some(level) = levels.last().filter(|l| l.len() > 1) {
        let up = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [lone] => *lone,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        levels.push(up);
    }
    if leaves.is_empty() {
        levels.clear();
    }
    levels
}

/// The sibling hashes from leaf `index` up to the root; levels where its node has no
/// sibling are skipped.
pub(crate) fn path_of(levels: &[Vec<Hash>], index: usize) -> impl Iterator<Item = &Hash> {
    levels
        .iter()
        .enumerate()
        .filter_map(move |(depth, level)| level.get((index >> depth) ^ 1))
}

/// The root of `leaves` and, for each leaf, its sibling path.
pub(crate) fn merkle(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    let levels = merkle_levels(leaves);
    let root = levels.last().map_or([0; 32], |top| top[0]);
    let paths = (0..leaves.len())
        .map(|i| path_of(&levels, i).copied().collect())
        .collect();
    (root, paths)
}

/// The root a leaf's path leads to, or `None` when the path does not fit the shape.
fn fold(leaf: Hash, index: u32, count: u32, path: &[Hash]) -> Option<Hash> {
    if index >= count {
        return None;
    }
    let (mut hash, mut index, mut count) = (leaf, index, count);
    let mut path = path.iter();
    while count > 1 {
        if index % 2 == 1 {
            hash = node_hash(path.next()?, &hash);
        } else if index + 1 < count {
            hash = node_hash(&hash, path.next()?);
        }
        index /= 2;
        count = count.div_ceil(2);
    }
    path.next().is_none().then_some(hash)
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("evidence key {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("evidence key {} is not a 32-byte hex seed", path.display())]
    Malformed { path: PathBuf },
    #[error(
        "evidence key {} can be read by others (mode {mode:o}); it must be 0600",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
}

/// Why a signed manifest does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the manifest is signed with key {0}, which is not trusted here")]
    UnknownKey(String),
    #[error("the signature is malformed")]
    MalformedSignature,
    #[error("the signature does not match the manifest: it was changed after signing")]
    BadSignature,
    #[error("the manifest's batch proof does not lead to the signed root")]
    BadProof,
    #[error("the {what} hash is {actual}, the manifest says {recorded}")]
    HashMismatch {
        what: &'static str,
        recorded: String,
        actual: String,
    },
    #[error("cannot encode the manifest: {0}")]
    Encode(String),
}

/// The key evidence is signed with.
#[derive(Debug)]
pub struct EvidenceKey {
    key_id: String,
    signing: SigningKey,
}

impl EvidenceKey {
    /// Reads `dir/evidence.key`, creating the directory (0700) and a new key (0600) the
    /// first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Exposed { path, mode });
                }
                let text = std::fs::read_to_string(&path).map_err(io)?;
                let seed: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| KeyError::Malformed { path: path.clone() })?;
                Ok(Self::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                // create_new: two processes starting at once cannot both write a key.
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut file| {
                        file.write_all(hex::encode(seed).as_bytes())?;
                        file.sync_all()
                    });
                match written {
                    Ok(()) => Ok(Self::from_seed(seed)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(dir)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Reads `dir/evidence.key`; never creates one.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            return Err(KeyError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no evidence key here: nothing was signed with this data directory",
                ),
            });
        }
        Self::load_or_create(dir)
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        EvidenceKey {
            key_id: key_id(&signing.verifying_key()),
            signing,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The keys that verify what this key signs.
    pub fn trusted(&self) -> TrustedKeys {
        let mut keys = TrustedKeys::default();
        keys.add(self.signing.verifying_key());
        keys
    }

    /// Signs one manifest: a batch of one.
    pub fn sign(&self, manifest: Manifest) -> Result<SignedManifest, EncodeError> {
        let mut signed = self.sign_batch(vec![manifest])?;
        Ok(signed.remove(0))
    }

    /// Signs `manifests` with one signature over their Merkle root.
    pub fn sign_batch(&self, manifests: Vec<Manifest>) -> Result<Vec<SignedManifest>, EncodeError> {
        let leaves = manifests
            .iter()
            .map(|m| Ok(leaf_hash(&digest_of(&m.canonical_bytes()?))))
            .collect::<Result<Vec<_>, EncodeError>>()?;
        let sealed = self.seal(&leaves);
        Ok(manifests
            .into_iter()
            .zip(sealed)
            .map(|(manifest, (signature, batch))| SignedManifest {
                manifest,
                key_id: self.key_id.clone(),
                signature,
                batch,
            })
            .collect())
    }

    /// The signature over a tree of `count` leaves with this root.
    pub(crate) fn sign_root(&self, count: u32, root: &Hash) -> [u8; 64] {
        self.signing.sign(&signed_message(count, root)).to_bytes()
    }

    /// One signature over the tree of `leaves`, and each leaf's proof.
    pub(crate) fn seal(&self, leaves: &[Hash]) -> Vec<(String, BatchProof)> {
        let count = u32::try_from(leaves.len()).expect("a batch of fewer than 2^32 manifests");
        let (root, paths) = merkle(leaves);
        let signature = to_hex(&self.sign_root(count, &root));
        let root = to_hex(&root);
        paths
            .into_iter()
            .enumerate()
            .map(|(index, path)| {
                let proof = BatchProof {
                    root: root.clone(),
                    index: index as u32,
                    count,
                    path: path.iter().map(|h| to_hex(h)).collect(),
                };
                (signature.clone(), proof)
            })
            .collect()
    }
}

fn key_id(key: &VerifyingKey) -> String {
    isometer_core::sha256_hex(key.as_bytes())[..16].to_owned()
}

/// Public keys a verifier accepts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl TrustedKeys {
    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.insert(key_id(&key), key);
    }
}

impl SignedManifest {
    /// Checks the signature against the trusted keys.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), VerifyError> {
        let key = trusted
            .keys
            .get(&self.key_id)
            .ok_or_else(|| VerifyError::UnknownKey(self.key_id.clone()))?;
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(VerifyError::MalformedSignature)?;
        let canonical = self
            .manifest
            .canonical_bytes()
            .map_err(|e| VerifyError::Encode(e.to_string()))?;
        let path = self
            .batch
            .path
            .iter()
            .map(|h| hex::decode(h).ok()?.try_into().ok())
            .collect::<Option<Vec<Hash>>>()
            .ok_or(VerifyError::BadProof)?;
        let root = fold(
            leaf_hash(&digest_of(&canonical)),
            self.batch.index,
            self.batch.count,
            &path,
        )
        .ok_or(VerifyError::BadProof)?;
        if to_hex(&root) != self.batch.root {
            // Either the manifest or its proof was changed; the signature cannot hold.
            return Err(VerifyError::BadSignature);
        }
        key.verify(
            &signed_message(self.batch.count, &root),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| VerifyError::BadSignature)
    }

    /// Checks that the given artifact, input and output are the ones the manifest names.
    pub fn check_contents(
        &self,
        artifact: Option<&[u8]>,
        input: Option<&[u8]>,
        output: Option<&[u8]>,
    ) -> Result<(), VerifyError> {
        let m = &self.manifest;
        for (what, bytes, recorded) in [
            ("artifact", artifact, &m.artifact_hash),
            ("input", input, &m.input_hash),
            ("output", output, &m.output_hash),
        ] {
            if let Some(bytes) = bytes {
                let actual = isometer_core::sha256_hex(bytes);
                if &actual != recorded {
                    return Err(VerifyError::HashMismatch {
                        what,
                        recorded: recorded.clone(),
                        actual,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_manifest_verifies_and_any_change_breaks_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = EvidenceKey::load_or_create(&dir.path().join("keys")).expect("key");
        let signed = key.sign(crate::tests::manifest()).expect("signed");
        signed.verify(&key.trusted()).expect("verifies");

        let mut tampered = signed.clone();
        tampered.manifest.usage.fuel += 1;
        assert_eq!(
            tampered.verify(&key.trusted()),
            Err(VerifyError::BadSignature)
        );

        // Re-signed by another key: that key is not trusted.
        let other = EvidenceKey::load_or_create(&dir.path().join("other")).expect("key");
        let forged = other.sign(tampered.manifest).expect("signed");
        assert!(matches!(
            forged.verify(&key.trusted()),
            Err(VerifyError::UnknownKey(_))
        ));
    }

    #[test]
    fn every_manifest_of_a_batch_verifies_on_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = EvidenceKey::load_or_create(dir.path()).expect("key");
        for n in [1usize, 2, 3, 5, 8, 13, 64, 100] {
            let manifests: Vec<Manifest> = (0..n)
                .map(|i| {
                    let mut m = crate::tests::manifest();
                    m.task_id = format!("t{i}");
                    m
                })
                .collect();
            let signed = key.sign_batch(manifests).expect("signed");
            assert_eq!(signed.len(), n);
            let roots: std::collections::HashSet<_> =
                signed.iter().map(|s| s.batch.root.clone()).collect();
            assert_eq!(roots.len(), 1, "one root per batch");
            for s in &signed {
                s.verify(&key.trusted())
                    .unwrap_or_else(|e| panic!("{n}/{}: {e}", s.batch.index));
            }
            // Swapping two manifests' proofs breaks both.
            if n > 1 {
                let mut swapped = signed[0].clone();
                swapped.batch = signed[1].batch.clone();
                assert!(swapped.verify(&key.trusted()).is_err());
                let mut short = signed[n - 1].clone();
                short.batch.path.pop();
                assert_eq!(short.verify(&key.trusted()), Err(VerifyError::BadProof));
                let mut recounted = signed[0].clone();
                recounted.batch.count += 1;
                assert!(recounted.verify(&key.trusted()).is_err());
            }
        }
    }

    #[test]
    fn the_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let first = EvidenceKey::load_or_create(&keys).expect("key");
        let again = EvidenceKey::load_or_create(&keys).expect("key");
        assert_eq!(first.key_id(), again.key_id());
        let file = keys.join(KEY_FILE);
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            EvidenceKey::load_or_create(&keys),
            Err(KeyError::Exposed { .. })
        ));
    }

    #[test]
    fn contents_are_checked_against_their_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = EvidenceKey::load_or_create(dir.path()).expect("key");
        let mut manifest = crate::tests::manifest();
        manifest.input_hash = isometer_core::sha256_hex(b"{}");
        let signed = key.sign(manifest).expect("signed");
        signed
            .check_contents(None, Some(b"{}"), None)
            .expect("input matches");
        let err = signed
            .check_contents(None, Some(b"{ }"), None)
            .expect_err("differs");
        assert!(err.to_string().starts_with("the input hash is"), "{err}");
    }
}
