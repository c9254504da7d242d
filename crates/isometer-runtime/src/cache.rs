//! The on-disk cache of compiled modules, so a restart does not recompile.
//!
//! An entry is the engine's serialized module followed by the sha256 of those bytes, in a
//! file named after the artifact's sha256 and the engine's compatibility key. Loading one
//! runs machine code from disk, so the cache directory must belong to this user and be
//! writable by nobody else; entries are written to a temporary file and renamed, and any
//! entry that is truncated, damaged or from another engine is recompiled and replaced.

use crate::error::RuntimeError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::{Engine, Module};

const DIGEST_LEN: usize = 32;

#[derive(Debug)]
pub(crate) struct CompiledCache {
    dir: PathBuf,
    /// Distinguishes engines whose compiled code is not interchangeable.
    engine_key: String,
}

impl CompiledCache {
    /// Opens (creating if needed, mode 0700) a cache directory this user alone can write.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        let fail = |reason: String| RuntimeError::Cache {
            dir: dir.to_owned(),
            reason,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(format!("cannot create it: {e}")))?;
        let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
        let uid = nix::unistd::Uid::current().as_raw();
        if meta.uid() != uid {
            return Err(fail(format!(
                "it belongs to uid {}, not to this user (uid {uid})",
                meta.uid()
            )));
        }
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(fail(format!(
                "it is writable by others (mode {:o}); compiled code is only loaded from a \
                 directory this user alone can write",
                mode & 0o777
            )));
        }
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompiledCache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn entry(&self, artifact_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{artifact_hash}-{}.cwasm", self.engine_key))
    }

    /// The compiled module for `artifact_hash`, when a sound entry exists.
    pub(crate) fn get(&self, engine: &Engine, artifact_hash: &str) -> Option<Module> {
        let path = self.entry(artifact_hash);
        let bytes = std::fs::read(&path).ok()?;
        let sound = bytes.len() > DIGEST_LEN && {
            let (code, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
            Sha256::digest(code).as_slice() == digest
        };
        if !sound {
            tracing::warn!(path = %path.display(), "damaged compiled-module cache entry; recompiling");
            return None;
        }
        let code = &bytes[..bytes.len() - DIGEST_LEN];
        match deserialize(engine, code) {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(path = %path.display(), "unusable compiled-module cache entry ({e:#}); recompiling");
                None
            }
        }
    }

    /// Stores a compiled module; a failure is logged, never fatal.
    pub(crate) fn put(&self, artifact_hash: &str, module: &Module) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.entry(artifact_hash);
        let temporary = self.dir.join(format!(
            ".{artifact_hash}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = module
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|mut code| {
                let digest = Sha256::digest(&code);
                code.extend_from_slice(&digest);
                std::fs::write(&temporary, &code)
                    .and_then(|()| std::fs::rename(&temporary, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(path = %path.display(), "cannot cache a compiled module: {e}");
        }
    }
}

/// Loads compiled code written by [`CompiledCache::put`].
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` trusts its input to be wasmtime's own output. `code`
    // comes from a cache directory that `open` verified is owned by this user and writable
    // by no one else, was written whole by `put` (temporary file, then rename) and its
    // sha256 matched the digest stored after it; wasmtime itself rejects output of another
    // version or configuration.
    unsafe { Module::deserialize(engine, code) }
}
