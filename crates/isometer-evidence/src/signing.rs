//! Signed manifests: ed25519 over the manifest's canonical bytes, under a key id.
//!
//! The signing key lives in the data directory (`keys/evidence.key`, the 32-byte seed in
//! hex, mode 0600, created on first use). Its key id is the first 16 hex digits of the
//! sha256 of the public key. Verification trusts only the keys it is given: a manifest
//! re-signed with some other key names a key id nobody trusts.

use crate::{EncodeError, Manifest};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "evidence.key";

/// A manifest with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub key_id: String,
    /// ed25519 signature of the manifest's canonical bytes, hex.
    pub signature: String,
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

    pub fn sign(&self, manifest: Manifest) -> Result<SignedManifest, EncodeError> {
        let signature = self.signing.sign(&manifest.canonical_bytes()?);
        Ok(SignedManifest {
            manifest,
            key_id: self.key_id.clone(),
            signature: hex::encode(signature.to_bytes()),
        })
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
        let message = self
            .manifest
            .canonical_bytes()
            .map_err(|e| VerifyError::Encode(e.to_string()))?;
        key.verify(&message, &Signature::from_bytes(&bytes))
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
