//! Signing at the runtime's pace: many manifests under one signature.
//!
//! A manifest waiting to be signed joins the pending batch. Whoever comes to the batch when
//! no signature was made for [`SIGN_INTERVAL`] signs it, on its own thread, for everyone in
//! it: when the signer has been idle a manifest is signed at once (a batch of one); under
//! load one ed25519 signature covers every manifest of the last interval, and signing costs
//! a small, bounded share of a core. When no one comes, a sweeper thread that looks every
//! [`MAX_WAIT`] signs what is left, so no manifest waits longer than that.

use crate::signing::{Hash, digest_of, leaf_hash};
use crate::{BatchProof, EncodeError, EvidenceKey, Manifest, SignedManifest, TrustedKeys};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Shortest time between two signatures while manifests keep coming.
pub const SIGN_INTERVAL: Duration = Duration::from_micros(250);

/// How often the sweeper looks for manifests no one has signed.
pub const MAX_WAIT: Duration = Duration::from_millis(1);

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
    /// A signer over `key`, with its sweeper thread (which ends with the last handle).
    pub fn new(key: EvidenceKey) -> std::io::Result<Self> {
        let signer = BatchSigner {
            inner: Arc::new(Inner {
                key_id: key.key_id().into(),
                trusted: key.trusted(),
                key,
                pending: Mutex::default(),
            }),
        };
        let weak = Arc::downgrade(&signer.inner);
        std::thread::Builder::new()
            .name("evidence-sweeper".into())
            .spawn(move || sweep(&weak))?;
        Ok(signer)
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
        Ok(self.sign_with_digest(manifest).await?.0)
    }

    /// [`BatchSigner::sign`], with the manifest's digest (sha256 of its canonical bytes),
    /// from one encoding.
    pub async fn sign_with_digest(
        &self,
        manifest: Manifest,
    ) -> Result<(SignedManifest, String), SignerStopped> {
        let digest = digest_of(&manifest.canonical_bytes()?);
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut pending = self.inner.lock();
            pending.jobs.push(Job {
                leaf: leaf_hash(&digest),
                reply,
            });
            pending.take_lead(Instant::now())
        };
        if lead {
            self.inner.sign_pending();
        }
        let (signature, batch) = answer.await.map_err(|_| SignerStopped::Stopped)?;
        let signed = SignedManifest {
            manifest,
            key_id: self.inner.key_id.to_string(),
            signature,
            batch,
        };
        Ok((signed, isometer_core::to_hex(&digest)))
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

/// Signs what arrived while signing was not due and no one came after.
fn sweep(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(MAX_WAIT);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let lead = inner.lock().take_lead(Instant::now());
        if lead {
            inner.sign_pending();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_manifests_share_signatures_and_each_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = BatchSigner::new(EvidenceKey::load_or_create(dir.path()).expect("key"))
            .expect("signer");
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
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = BatchSigner::new(EvidenceKey::load_or_create(dir.path()).expect("key"))
            .expect("signer");
        for i in 0..3 {
            let t = Instant::now();
            let signed = signer.sign(crate::tests::manifest()).await.expect("signed");
            assert_eq!(signed.batch.count, 1);
            // The first is signed on arrival; the next ones wait out at most the interval
            // or their own deadline, never an unbounded time.
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{i}: {:?}",
                t.elapsed()
            );
            signed.verify(signer.trusted()).expect("verifies");
        }
    }
}
