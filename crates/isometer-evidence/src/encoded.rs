//! A signed manifest with its JSON, encoded once.
//!
//! A task's manifest goes out three ways: its canonical bytes are hashed and signed, its
//! JSON is stored with the task's rows, and the same JSON is part of the task's answer.
//! [`EncodedManifest`] builds the stored and answered JSON around the canonical bytes the
//! signature covers, so the manifest is encoded once, however many times it is written.

use crate::{BatchProof, EncodeError, SignedManifest};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A signed manifest that serializes as the JSON built when it was signed; it
/// deserializes from any signed manifest's JSON. Reads as a [`SignedManifest`].
#[derive(Debug, Clone)]
pub struct EncodedManifest {
    signed: SignedManifest,
    /// What `serde_json` writes for `signed`; absent for one read back or built elsewhere.
    json: Option<Box<RawValue>>,
}

impl EncodedManifest {
    /// `signed`, with its JSON built around `canonical`, the manifest's canonical bytes.
    pub(crate) fn new(signed: SignedManifest, canonical: &[u8]) -> Result<Self, EncodeError> {
        let json = encode(canonical, &signed.key_id, &signed.signature, &signed.batch)?;
        let json = RawValue::from_string(json)?;
        Ok(EncodedManifest {
            signed,
            json: Some(json),
        })
    }

    /// The JSON of the signed manifest.
    pub fn to_json(&self) -> Result<String, EncodeError> {
        match &self.json {
            Some(json) => Ok(json.get().to_owned()),
            None => Ok(serde_json::to_string(&self.signed)?),
        }
    }

    pub fn into_signed(self) -> SignedManifest {
        self.signed
    }
}

/// The JSON `serde_json` writes for a [`SignedManifest`] (its fields in declaration order),
/// with `canonical` as the manifest's.
fn encode(
    canonical: &[u8],
    key_id: &str,
    signature: &str,
    batch: &BatchProof,
) -> Result<String, EncodeError> {
    let mut out = Vec::with_capacity(canonical.len() + 160 + 68 * batch.path.len());
    out.extend_from_slice(b"{\"manifest\":");
    out.extend_from_slice(canonical);
    out.extend_from_slice(b",\"key_id\":");
    serde_json::to_writer(&mut out, key_id)?;
    out.extend_from_slice(b",\"signature\":");
    serde_json::to_writer(&mut out, signature)?;
    out.extend_from_slice(b",\"batch\":");
    serde_json::to_writer(&mut out, batch)?;
    out.push(b'}');
    String::from_utf8(out).map_err(|e| {
        EncodeError::from(<serde_json::Error as serde::de::Error>::custom(format!(
            "the canonical bytes are not UTF-8: {e}"
        )))
    })
}

impl std::ops::Deref for EncodedManifest {
    type Target = SignedManifest;

    fn deref(&self) -> &SignedManifest {
        &self.signed
    }
}

impl From<SignedManifest> for EncodedManifest {
    fn from(signed: SignedManifest) -> Self {
        EncodedManifest { signed, json: None }
    }
}

impl PartialEq for EncodedManifest {
    fn eq(&self, other: &Self) -> bool {
        self.signed == other.signed
    }
}

impl Serialize for EncodedManifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.json {
            Some(json) => json.serialize(serializer),
            None => self.signed.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for EncodedManifest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SignedManifest::deserialize(deserializer).map(EncodedManifest::from)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_built_json_is_what_serde_writes_and_reads_back() {
        let (_dir, signer) = crate::tests::signer();
        // Batches of several, so proofs carry paths; names that JSON must escape.
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let signer = signer.clone();
                tokio::spawn(async move {
                    let mut m = crate::tests::manifest();
                    m.task_id = format!("t{i} \"quoted\" \\ tab\t é ✓");
                    signer.sign_with_digest(m).await.expect("signed").0
                })
            })
            .collect();
        let mut longest_path = 0;
        for task in tasks {
            let encoded = task.await.expect("joined");
            let json = encoded.to_json().expect("json");
            assert_eq!(json, serde_json::to_string(&*encoded).expect("serde's"));
            assert_eq!(
                serde_json::to_string(&encoded).expect("serialized"),
                json,
                "serializes as the built JSON"
            );
            let back: super::EncodedManifest = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, encoded);
            back.verify(signer.trusted()).expect("verifies");
            longest_path = longest_path.max(encoded.batch.path.len());
        }
        assert!(longest_path > 0, "no manifest shared a batch");
    }
}
