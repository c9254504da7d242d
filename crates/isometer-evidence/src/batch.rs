//! Signing at the runtime's pace: many manifests under one signature.
//!
//! A manifest waiting to be signed joins the pending batch. Whoever comes to the batch when
//! no signature was made for [`SIGN_INTERVAL`] signs it, on its own thread, for everyone in
//! it: when the signer has been idle a manifest is signed at once (a batch of one); under
//! load one ed25519 signature covers every manifest of the last interval, and signing costs
//! a small, bounded share of a core. A batch begun before signing was due is signed when it
//! falls due by a timer thread that sleeps until then (the kernel's timers are precise to
//! tens of microseconds, tokio's to a millisecond). Each caller that came too early also
//! waits on a tokio timer and signs the batch itself if it is still unsigned then: on a
//! machine too busy to run the timer thread in time, no manifest waits for it.

use crate::signing::{Hash, digest_of, leaf_hash};
use crate::{
    BatchProof, EncodeError, EncodedManifest, EvidenceKey, Manifest, SignedManifest, TrustedKeys,
};
use std::sync::{Arc, Condvar, Mutex};
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
    /// The timer thread waits for a batch to begin (not for one to fall due).
    timer_parked: bool,
    /// The last handle is gone: the timer thread ends.
    stopped: bool,
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

    /// Whether the timer thread must be woken for the pending batch: it is parked and no
    /// one is signing (a signer looks again when done). Marks it woken.
    fn wake_timer(&mut self) -> bool {
        let wake = self.timer_parked && !self.signing && !self.jobs.is_empty();
        self.timer_parked &= !wake;
        wake
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

/// What the callers and the timer thread share.
struct Shared {
    key: EvidenceKey,
    pending: Mutex<Pending>,
    /// Wakes the timer thread: a batch has begun, or a signing ended with jobs waiting.
    begun: Condvar,
}

struct Inner {
    shared: Arc<Shared>,
    key_id: Arc<str>,
    trusted: TrustedKeys,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.begun.notify_one();
    }
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
    /// A signer over `key`, with its timer thread (which ends with the last handle).
    pub fn new(key: EvidenceKey) -> std::io::Result<Self> {
        let key_id = key.key_id().into();
        let trusted = key.trusted();
        let shared = Arc::new(Shared {
            key,
            pending: Mutex::default(),
            begun: Condvar::new(),
        });
        let timer = shared.clone();
        std::thread::Builder::new()
            .name("evidence-timer".into())
            .spawn(move || timer.sign_when_due())?;
        Ok(BatchSigner {
            inner: Arc::new(Inner {
                shared,
                key_id,
                trusted,
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
        let shared = &self.inner.shared;
        let (lead, begun, mut wake) = {
            let mut pending = shared.lock();
            pending.jobs.push(Job {
                leaf: leaf_hash(&digest),
                reply,
            });
            let now = Instant::now();
            let lead = pending.take_lead(now);
            // A batch not signed at once sets the timer thread going, unless it is already
            // timing one.
            let begun = !lead && pending.wake_timer();
            (lead, begun, pending.due(now))
        };
        if lead {
            shared.sign_pending();
        } else if begun {
            shared.begun.notify_one();
        }
        let (signature, batch) = loop {
            tokio::select! {
                biased;
                signed = &mut answer => break signed.map_err(|_| SignerStopped::Stopped)?,
                () = tokio::time::sleep_until(wake.into()) => {
                    // Due, and no one has signed this batch: sign it here. Someone may be
                    // signing an earlier batch now; look again an interval later.
                    let now = Instant::now();
                    if shared.lock().take_lead(now) {
                        shared.sign_pending();
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

impl Shared {
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
        let waiting = {
            let mut pending = self.lock();
            pending.signing = false;
            pending.last_signed = Some(Instant::now());
            pending.wake_timer()
        };
        if waiting {
            // Jobs came while this batch was being signed: they are the next batch.
            self.begun.notify_one();
        }
        for (job, sealed) in jobs.into_iter().zip(sealed) {
            // A caller that went away no longer needs its signature.
            let _ = job.reply.send(sealed);
        }
    }

    /// The timer thread: signs each batch that was begun early once it falls due, unless
    /// a caller has signed it first.
    fn sign_when_due(&self) {
        let mut pending = self.lock();
        loop {
            if pending.stopped {
                return;
            }
            if pending.jobs.is_empty() || pending.signing {
                pending.timer_parked = true;
                pending = self
                    .begun
                    .wait(pending)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.timer_parked = false;
                continue;
            }
            let now = Instant::now();
            if pending.take_lead(now) {
                drop(pending);
                self.sign_pending();
                pending = self.lock();
            } else {
                let left = pending.due(now).saturating_duration_since(now);
                pending = self
                    .begun
                    .wait_timeout(pending, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
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

    #[test]
    fn a_batch_begun_early_is_signed_by_the_timer_thread_alone() {
        let (_dir, signer) = crate::tests::signer();
        let shared = signer.inner.shared.clone();
        // A batch begun right after a signature, by a caller with no runtime and no timer
        // of its own: only the timer thread can sign it.
        let (reply, mut answer) = oneshot::channel();
        {
            let mut pending = shared.lock();
            pending.last_signed = Some(Instant::now());
            pending.jobs.push(Job {
                leaf: [7; 32],
                reply,
            });
        }
        shared.begun.notify_one();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (_signature, batch) = loop {
            match answer.try_recv() {
                Ok(signed) => break signed,
                Err(oneshot::error::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "not signed within 5 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(batch.count, 1);
        assert!(shared.lock().jobs.is_empty());

        // The thread ends with the last handle and lets go of what it shared.
        drop(signer);
        while Arc::strong_count(&shared) > 1 {
            assert!(
                Instant::now() < deadline,
                "the timer thread outlived its signer"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
