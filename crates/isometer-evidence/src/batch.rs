//! Signing at the runtime's pace: manifests queue for one signer thread, which signs
//! whatever has gathered with one signature over its Merkle root.
//!
//! Nothing waits for a batch to fill: when the signer is idle a manifest is signed at once
//! (a batch of one); while it signs, new manifests gather into the next batch. Under load
//! one ed25519 signature then covers hundreds of attempts.

use crate::signing::{Hash, leaf_hash};
use crate::{BatchProof, EncodeError, EvidenceKey, Manifest, SignedManifest, TrustedKeys};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most manifests under one signature.
const MAX_BATCH: usize = 4096;

struct Job {
    leaf: Hash,
    reply: oneshot::Sender<(String, BatchProof)>,
}

/// Why a manifest was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignerStopped {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("the evidence signer has stopped")]
    Stopped,
}

/// A shared handle to the signer thread; the thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct BatchSigner {
    jobs: mpsc::Sender<Job>,
    key_id: Arc<str>,
    trusted: TrustedKeys,
}

impl BatchSigner {
    pub fn new(key: EvidenceKey) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let key_id: Arc<str> = key.key_id().into();
        let trusted = key.trusted();
        std::thread::Builder::new()
            .name("evidence-signer".into())
            .spawn(move || run(&key, &queue))?;
        Ok(BatchSigner {
            jobs,
            key_id,
            trusted,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The keys that verify what this signer signs.
    pub fn trusted(&self) -> &TrustedKeys {
        &self.trusted
    }

    /// Signs `manifest` in the next batch.
    pub async fn sign(&self, manifest: Manifest) -> Result<SignedManifest, SignerStopped> {
        let leaf = leaf_hash(&manifest.canonical_bytes()?);
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { leaf, reply })
            .map_err(|_| SignerStopped::Stopped)?;
        let (signature, batch) = answer.await.map_err(|_| SignerStopped::Stopped)?;
        Ok(SignedManifest {
            manifest,
            key_id: self.key_id.to_string(),
            signature,
            batch,
        })
    }
}

fn run(key: &EvidenceKey, queue: &mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let leaves: Vec<Hash> = jobs.iter().map(|j| j.leaf).collect();
        for (job, sealed) in jobs.drain(..).zip(key.seal(&leaves)) {
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
}
