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

/// Where a suite's ClickHouse server keeps its data, and how the suite describes it.
///
/// ClickHouse creates dozens of files per inserted part. On this kind of virtual disk
/// (ext4 without a journal) allocating inodes next to recently deleted ones costs the
/// server a fifth of the machine's CPU, which is the disk's figure, not isometer's or
/// ClickHouse's. So the server's data goes on tmpfs (`/dev/shm`) when there is one;
/// `ISOMETER_BENCH_CLICKHOUSE_DIR` names another place (a disk, to measure it there).
/// Spools stay on disk either way: their fsyncs are part of isometer's cost.
pub(crate) fn clickhouse_dir() -> anyhow::Result<(tempfile::TempDir, String)> {
    let base = match std::env::var_os("ISOMETER_BENCH_CLICKHOUSE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None if is_tmpfs(Path::new("/dev/shm")) => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    remove_left_behind(&base);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{CLICKHOUSE_PREFIX}{}-", std::process::id()))
        .tempdir_in(&base)?;
    let kind = if is_tmpfs(&base) { "tmpfs" } else { "disk" };
    Ok((
        dir,
        format!("ClickHouse data on {kind} ({})", base.display()),
    ))
}

const CLICKHOUSE_PREFIX: &str = "isometer-bench-clickhouse-";

/// Removes the ClickHouse directories of suites that were killed (a killed process does
/// not unwind, so its `TempDir` stays, and on tmpfs it holds memory): those whose name
/// carries the pid of a process that is gone.
fn remove_left_behind(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(CLICKHOUSE_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => eprintln!("removed {}, left by a killed suite", entry.path().display()),
                Err(e) => eprintln!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

fn is_tmpfs(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    // The mount with the longest path that contains `dir` decides.
    mounts
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (_, at, kind) = (words.next()?, words.next()?, words.next()?);
            dir.starts_with(at).then(|| (at.len(), kind == "tmpfs"))
        })
        .max_by_key(|(len, _)| *len)
        .is_some_and(|(_, tmpfs)| tmpfs)
}
