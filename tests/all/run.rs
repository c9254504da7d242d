//! `isometer run` on hand-written WAT modules.

use serde_json::Value;
use std::time::Duration;

fn run_json(wat: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("tool.wat");
    std::fs::write(&tool, wat).expect("write");
    let output = crate::isometer()
        .arg("run")
        .arg("--tool")
        .arg(&tool)
        .args(extra)
        .arg("--json")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"ok\":true}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const LOOP: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

#[test]
fn a_wat_module_runs_and_reports_its_usage() {
    let report = run_json(HELLO, &["--input", r#"{"a":1}"#]);
    assert_eq!(report["outcome"], "success");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["stdout"], r#"{"ok":true}"#);
    assert_eq!(report["stderr"], "");
    for field in ["fuel", "peak_memory_bytes", "wall_time_us"] {
        assert!(
            report["usage"][field].as_u64().is_some_and(|v| v > 0),
            "{field}: {report}"
        );
    }
}

#[test]
fn an_infinite_loop_ends_at_its_fuel_limit() {
    let report = run_json(LOOP, &["--fuel", "5000000"]);
    assert_eq!(report["outcome"], "fuel_exhausted");
    assert_eq!(report["usage"]["fuel"], 5_000_000);
}

#[test]
fn an_infinite_loop_with_ample_fuel_ends_at_its_deadline() {
    let report = run_json(LOOP, &["--fuel", "100000000000000", "--timeout-ms", "300"]);
    assert_eq!(report["outcome"], "timed_out");
    let wall = Duration::from_micros(report["usage"]["wall_time_us"].as_u64().expect("wall time"));
    assert!(
        wall >= Duration::from_millis(300) && wall < Duration::from_millis(1500),
        "{wall:?}"
    );
}

#[test]
fn a_module_that_is_not_wasm_is_an_outcome_not_an_error() {
    let report = run_json("this is not a module", &[]);
    assert_eq!(report["outcome"], "invalid_artifact");
    assert!(report["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[test]
fn bad_command_lines_and_unreadable_files_fail_with_a_message() {
    let missing = crate::isometer()
        .args(["run", "--tool", "/nonexistent/tool.wasm"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read tool /nonexistent/tool.wasm")
    );

    let bad_flag = crate::isometer()
        .args(["run", "--tool", "x.wat", "--fuel", "lots"])
        .output()
        .expect("runs");
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("--fuel"));
}
