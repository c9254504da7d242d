//! Errors of the runtime's own making (a guest's misbehaviour is an outcome, not an error).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    #[error("cannot read tool artifact {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use {dir} as the compiled-module cache: {reason}")]
    Cache { dir: PathBuf, reason: String },
    #[error("invalid tool artifact: {0}")]
    InvalidArtifact(String),
}
