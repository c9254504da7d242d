//! End-to-end tests of the `isometer` binary: real processes, real wasm, a real
//! ClickHouse server, real HTTP on loopback.

mod browser;
mod demo;
mod migrate;
mod run;
mod serve;
mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A command module that writes `{"ok":true}` to stdout.
pub(crate) const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"ok\":true}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

pub(crate) fn isometer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_isometer"));
    command
        .env_remove("ISOMETER_CLICKHOUSE_URL")
        .env_remove("ISOMETER_DATABASE");
    command
}

/// The address in a `serving the dashboard at URL …` line, without its trailing slash.
pub(crate) fn announced_base(line: &str) -> Option<String> {
    line.strip_prefix("serving the dashboard at ")?
        .split_whitespace()
        .next()
        .map(|u| u.trim_end_matches('/').to_owned())
}

/// A finished command's stdout and stderr, for an assertion's message.
pub(crate) fn report(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) fn config_dir() -> PathBuf {
    // The shipped tools point at the guests' build directory: make sure they are built.
    isometer_testkit::guest("summarize");
    isometer_testkit::workspace_root().join("config")
}

/// A copy of the shipped configuration that a test may edit, its tools' artifacts made
/// absolute.
pub(crate) fn config_copy() -> tempfile::TempDir {
    let shipped = config_dir();
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&shipped).expect("config dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("config file");
        let text = text.replace(
            "artifact = \"../",
            &format!("artifact = \"{}/", shipped.join("..").display()),
        );
        std::fs::write(copy.path().join(path.file_name().expect("name")), text).expect("copied");
    }
    copy
}

pub(crate) use isometer_testkit::process_running_with;

/// The managed server's config path for a data dir: what its command line contains.
pub(crate) fn server_needle(data_dir: &Path) -> String {
    let dir = data_dir
        .canonicalize()
        .expect("data dir exists")
        .join("clickhouse/config.xml");
    dir.to_str().expect("utf-8").to_owned()
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub(crate) fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}
