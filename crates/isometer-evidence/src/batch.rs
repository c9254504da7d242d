//! Signing at the runtime's pace: many manifests under one signature.
//!
//! A manifest waiting to be signed joins the pending batch. Whoever comes to the batch when
//! no signature was made for [`SIGN_INTERVAL`] signs it, on its own thread, for everyone in
//! it: when the signer has been idle a manifest is signed at once (a batch of one); under
//! load one ed25519 signature covers every manifest of the last interval, and signing costs
//! a small, bounded share of a core. A caller that came too early waits on a timer until
//! signing is due and then takes the lead itself if no one else has: no manifest depends
//! on another caller, or on a thread of its own that a busy machine may not run in time.

use crate::signing::{Hash, digest_of, leaf_hash};
use crate::{
    BatchProof, EncodeError, EncodedManifest, EvidenceKey, Manifest, SignedManifest, TrustedKeys,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Shortest time between two signatures while manifests keep coming.
pub const SIGN_INTERVAL: Duration = Duration::from_micros(250);

struct Job {
    leaf: Hash,
    reply: oneshot::Sender<(String, BatchProof)>,
}

#[derive(Default)]
struct Pending {
    jobs: Vec<Job>,
    /// Someone is signing a batch now.
    signing: bool,
    last_signed: Option<Instant>,
}

impl Pending {
    /// When signing is next due.
    fn due(&self, now: Instant) -> Instant {
        self.last_signed.map_or(now, |t| t + SIGN_INTERVAL)
    }

    /// Whether the caller may sign the pending batch now; if so it is marked as signing.
    fn take_lead(&mut self, now: Instant) -> bool {
        let due = self
            .last_signed
            .is_none_or(|t| now.duration_since(t) >= SIGN_INTERVAL);
        let lead = due && !self.signing && !self.jobs.is_empty();
        self.signing |= lead;
        lead
    }
}

/// Why a manifest was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignerStopped {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("the evidence signer has stopped")]
    Stopped,
}

struct Inner {
    key: EvidenceKey,
    key_id: Arc<str>,
    trusted: TrustedKeys,
    pending: Mutex<Pending>,
}

/// A shared batch signer over one evidence key; cheap to clone.
#[derive(Clone)]
pub struct BatchSigner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BatchSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSigner")
            .field("key_id", &self.inner.key_id)
            .finish_non_exhaustive()
    }
}

impl BatchSigner {
    /// A signer over `key`.
    pub fn new(key: EvidenceKey) -> std::io::Result<Self> {
        Ok(BatchSigner {
            inner: Arc::new(Inner {
                key_id: key.key_id().into(),
                trusted: key.trusted(),
                key,
                pending: Mutex::default(),
            }),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// The keys that verify what this signer signs.
    pub fn trusted(&self) -> &TrustedKeys {
        &self.inner.trusted
    }

    /// Signs `manifest` in the next batch.
    pub async fn sign(&self, manifest: Manifest) -> Result<SignedManifest, SignerStopped> {
        Ok(self.sign_with_digest(manifest).await?.0.into_signed())
    }

    /// [`BatchSigner::sign`], with the manifest's digest (sha256 of its canonical bytes),
    /// and its JSON built from the same encoding. Needs a tokio runtime with its timer.
    pub async fn sign_with_digest(
        &self,
        manifest: Manifest,
    ) -> Result<(EncodedManifest, String), SignerStopped> {
        let canonical = manifest.canonical_bytes()?;
        let digest = digest_of(&canonical);
        let (reply, mut answer) = oneshot::channel();
        let (lead, mut wake) = {
            let mut pending = self.inner.lock();
            pending.jobs.push(Job {
                leaf: leaf_hash(&digest),
                reply,
            });
            let now = Instant::now();
            (pending.take_lead(now), pending.due(now))
        };
        if lead {
            self.inner.sign_pending();
        }
        let (signature, batch) = loop {
            tokio::select! {
                biased;
                signed = &mut answer => break signed.map_err(|_| SignerStopped::Stopped)?,
                () = tokio::time::sleep_until(wake.into()) => {
                    // Due, and no one has signed this batch: sign it here. Someone may be
                    // signing an earlier batch now; look again an interval later.
                    let now = Instant::now();
                    if self.inner.lock().take_lead(now) {
                        self.inner.sign_pending();
                    }
                    wake = now + SIGN_INTERVAL;
                }
            }
        };
        let signed = SignedManifest {
            manifest,
            key_id: self.inner.key_id.to_string(),
            signature,
            batch,
        };
        let encoded = EncodedManifest::new(signed, &canonical)?;
        Ok((encoded, isometer_core::to_hex(&digest)))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The state stays consistent even if a holder panicked: take it back.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signs the pending batch; the caller holds the lead.
    fn sign_pending(&self) {
        let jobs = std::mem::take(&mut self.lock().jobs);
        let leaves: Vec<Hash> = jobs.iter().map(|j| j.leaf).collect();
        let sealed = self.key.seal(&leaves);
        {
            let mut pending = self.lock();
            pending.signing = false;
            pending.last_signed = Some(Instant::now());
        }
        for (job, sealed) in jobs.into_iter().zip(sealed) {
            // A caller that went away no longer needs its signature.
            let _ = job.reply.send(sealed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_manifests_share_signatures_and_each_verifies() {
        let (_dir, signer) = crate::tests::signer();
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let signer = signer.clone();
                tokio::spawn(async move {
                    let mut m = crate::tests::manifest();
                    m.task_id = format!("t{i}");
                    signer.sign(m).await.expect("signed")
                })
            })
            .collect();
        let mut batches = std::collections::HashSet::new();
        for task in tasks {
            let signed = task.await.expect("joined");
            signed.verify(signer.trusted()).expect("verifies");
            batches.insert(signed.batch.root.clone());
        }
        assert!(
            batches.len() < 2000,
            "2000 manifests took {} signatures: no batching",
            batches.len()
        );
    }

    #[tokio::test]
    async fn a_lone_manifest_is_signed_at_once() {
        let (_dir, signer) = crate::tests::signer();
        for i in 0..3 {
            let t = Instant::now();
            // The first is signed on arrival; the next ones come within the interval and
            // wait it out on their own timer, with no other caller to lead them.
            let signed = tokio::time::timeout(
                Duration::from_secs(1),
                signer.sign(crate::tests::manifest()),
            )
            .await
            .unwrap_or_else(|_| panic!("{i}: not signed within a second"))
            .expect("signed");
            assert_eq!(signed.batch.count, 1);
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "{i}: {:?}",
                t.elapsed()
            );
            signed.verify(signer.trusted()).expect("verifies");
        }
    }
}
