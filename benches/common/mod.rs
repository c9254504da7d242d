//! Helpers shared by the benchmark suites.

// Each suite uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The allocator of the `isometer` binary, so each suite measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A guest tool built for the host, as the peers run it.
pub(crate) fn build_native(root: &Path, tool: &str) -> anyhow::Result<PathBuf> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args(["build", "--quiet", "--release", "-p", tool])
        .args([
            "--manifest-path",
            "guests/Cargo.toml",
            "--target-dir",
            "target/guests-native",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "building the native {tool} failed");
    Ok(root.join("target/guests-native/release").join(tool))
}

/// Writes a suite's figures to `target/bench/<suite>.json`.
pub(crate) fn write_json(root: &Path, suite: &str, json: &serde_json::Value) -> anyhow::Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{suite}.json")),
        serde_json::to_string_pretty(json)?,
    )?;
    Ok(())
}
