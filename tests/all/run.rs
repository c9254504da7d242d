//! `isometer run` on hand-written WAT modules.

use serde_json::Value;
use std::time::Duration;

fn run_json(wat: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("tool.wat");
    std::fs::write(&tool, wat).expect("write");
    let output = crate::isometer()
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
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

const LOOP: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

#[test]
fn a_wat_module_runs_and_reports_its_usage() {
    let report = run_json(crate::HELLO, &["--input", r#"{"a":1}"#]);
    assert_eq!(report["outcome"], "success");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["stdout"], r#"{"ok":true}"#);
    assert_eq!(report["stderr"], "");
    for field in [
        "fuel",
        "peak_memory_bytes",
        "wall_time_us",
        "instantiate_us",
        "output_bytes",
    ] {
        assert!(
            report["usage"][field].as_u64().is_some_and(|v| v > 0),
            "{field}: {report}"
        );
    }
    for field in ["cpu_time_us", "egress_bytes", "egress_requests"] {
        assert!(report["usage"][field].is_u64(), "{field}: {report}");
    }
}

/// The fetch guest through `--allow-host`, against a real loopback upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_host_opens_egress_to_that_host_only() {
    let upstream = isometer_testkit::upstream::Upstream::start(200, r#"{"price":7}"#).await;
    let fetch = isometer_testkit::guest("fetch");
    let input = serde_json::json!({ "url": upstream.url("/q") }).to_string();
    let run = move |allow: Vec<String>| {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = crate::isometer()
            .arg("run")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--tool")
            .arg(&fetch)
            .args(["--input", &input, "--json"])
            .args(allow.iter().flat_map(|a| ["--allow-host", a.as_str()]))
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("one JSON object")
    };
    let allowed = {
        let rule = upstream.addr.to_string();
        let run = run.clone();
        tokio::task::spawn_blocking(move || run(vec![rule]))
            .await
            .expect("joined")
    };
    assert_eq!(allowed["outcome"], "success", "{allowed}");
    assert_eq!(allowed["usage"]["egress_requests"], 1);
    assert!(
        allowed["usage"]["egress_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    assert_eq!(allowed["egress"][0]["verdict"], "allow");
    assert_eq!(upstream.received().len(), 1);

    let denied = tokio::task::spawn_blocking(move || run(vec!["other.example.test".into()]))
        .await
        .expect("joined");
    assert_eq!(denied["outcome"], "egress_denied", "{denied}");
    assert_eq!(denied["egress"][0]["verdict"], "deny");
    assert_eq!(upstream.received().len(), 1);
}

#[test]
fn a_bad_host_rule_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("tool.wat");
    std::fs::write(&tool, crate::HELLO).expect("write");
    let output = crate::isometer()
        .args(["run", "--allow-host", "bad host:x", "--tool"])
        .arg(&tool)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`bad host:x` is not a host rule"),
        "{stderr}"
    );
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
