//! A signed manifest with its JSON, encoded once.
//!
//! A task's manifest goes out three ways: its canonical bytes are hashed and signed, its
//! JSON is stored with the task's rows, and the same JSON is part of the task's answer.
//! The stored and answered JSON is built around the canonical bytes the signature covers
//! ([`crate::Unsealed`] and its seal), so the manifest is encoded once, however many times
//! it is written; [`EncodedManifest`] keeps that JSON beside the typed manifest.

use crate::{EncodeError, SignedManifest};
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
    /// `signed`, whose JSON (as `serde_json` writes it) is `json`.
    pub(crate) fn from_json(signed: SignedManifest, json: String) -> Result<Self, EncodeError> {
        Ok(EncodedManifest {
            signed,
            json: Some(RawValue::from_string(json)?),
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
    use crate::{SignedManifest, Unsealed};

    #[test]
    fn the_built_json_is_what_serde_writes_and_reads_back() {
        let (_dir, signer) = crate::tests::signer();
        // A batch of several, so proofs carry paths; names that JSON must escape.
        let manifests: Vec<Unsealed> = (0..64)
            .map(|i| {
                let mut m = crate::tests::manifest();
                m.task_id = format!("t{i} \"quoted\" \\ tab\t é ✓");
                Unsealed::new(m).expect("encoded")
            })
            .collect();
        let leaves: Vec<[u8; 32]> = manifests.iter().map(Unsealed::leaf).collect();
        let seals = signer.seal(&leaves);
        for (unsealed, seal) in manifests.into_iter().zip(&seals) {
            let encoded = unsealed.sealed(seal).expect("sealed");
            assert!(!encoded.batch.path.is_empty());
            let json = encoded.to_json().expect("json");
            assert_eq!(json, serde_json::to_string(&*encoded).expect("serde's"));
            assert_eq!(
                serde_json::to_string(&encoded).expect("serialized"),
                json,
                "serializes as the built JSON"
            );
            let back: super::EncodedManifest = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, encoded);
            let signed: SignedManifest = back.into_signed();
            signed.verify(signer.trusted()).expect("verifies");
        }
    }
}
