//! `isometer serve` over real loopback HTTP, and what happens to its ClickHouse when it
//! is stopped or killed.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

struct Served {
    child: Child,
    base: String,
    data: tempfile::TempDir,
    /// An admin API key, created before the server started.
    admin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    serve_with(&crate::config_dir())
}

fn serve_with(config: &std::path::Path) -> Served {
    let data = tempfile::tempdir().expect("tempdir");
    let created = crate::isometer()
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data.path())
        .args(["keys", "create", "--role", "admin"])
        .output()
        .expect("keys create runs");
    assert!(created.status.success(), "{created:?}");
    let admin = String::from_utf8_lossy(&created.stdout)
        .lines()
        .last()
        .expect("the key on the last line")
        .trim()
        .to_owned();
    let mut child = crate::isometer()
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().expect("piped");
    let mut base = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 line");
        if let Some(announced) = crate::announced_base(&line) {
            base = Some(announced);
            break;
        }
    }
    let base = base.expect("isometer serve announced its address");
    Served {
        child,
        base,
        data,
        admin,
    }
}

#[tokio::test]
async fn tasks_over_http_show_on_the_dashboard() {
    let served = serve();
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{}/healthz", served.base))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");

    for tenant in ["acme", "globex", "initech"] {
        let response = http
            .post(format!("{}/v1/tasks", served.base))
            .bearer_auth(&served.admin)
            .json(&json!({"tenant_id": tenant, "tool_id": "json-transform", "input": {"records": [{"a": 1}, {"a": 2}], "sum": "a"}}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
        let task: Value = response.json().await.expect("json");
        assert_eq!(task["outcome"], "success");
        assert_eq!(task["output"]["total"], 3.0);
    }
    let page = isometer_testkit::eventually(Duration::from_secs(10), || async {
        let page = http
            .get(format!("{}/tenants", served.base))
            .bearer_auth(&served.admin)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.contains(r#"<div class="label">Tasks</div><div class="value">3<"#)
            .then_some(page)
    })
    .await
    .expect("the dashboard shows the three tasks");
    for tenant in ["acme", "globex", "initech"] {
        assert!(
            page.contains(&format!(r#"<a href="/tenants/{tenant}">"#)),
            "{tenant} missing from:\n{page}"
        );
    }
}

#[test]
fn sigterm_and_ctrl_c_stop_serve_and_its_clickhouse() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut served = serve();
        let needle = crate::server_needle(served.data.path());
        assert!(crate::process_running_with(&needle));
        let pid = Pid::from_raw(i32::try_from(served.child.id()).expect("pid"));
        kill(pid, signal).expect("signal");
        let status = served.child.wait().expect("exits");
        assert!(status.success(), "{signal}: {status}");
        assert!(
            !crate::process_running_with(&needle),
            "{signal}: clickhouse-server outlived isometer"
        );
    }
}

#[test]
fn even_sigkill_leaves_no_orphan_clickhouse() {
    let mut served = serve();
    let needle = crate::server_needle(served.data.path());
    assert!(crate::process_running_with(&needle));
    served.child.kill().expect("SIGKILL");
    served.child.wait().expect("reaped");
    assert!(
        crate::wait_for(Duration::from_secs(30), || !crate::process_running_with(
            &needle
        )),
        "clickhouse-server survived its parent"
    );
}

async fn config_version(http: &reqwest::Client, base: &str) -> String {
    let health: Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    health["config_version"]
        .as_str()
        .expect("config_version")
        .to_owned()
}

#[tokio::test]
async fn sighup_reloads_the_configuration_and_keeps_it_when_the_new_one_is_invalid() {
    let config = crate::config_copy();
    let mut served = serve_with(config.path());
    let http = reqwest::Client::new();
    let first = config_version(&http, &served.base).await;
    let pid = Pid::from_raw(i32::try_from(served.child.id()).expect("pid"));

    let policies = config.path().join("policies.toml");
    let text = std::fs::read_to_string(&policies).expect("policies");
    std::fs::write(
        &policies,
        text.replace("max_fuel = 20_000_000", "max_fuel = 21_000_000"),
    )
    .expect("edited");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    let second = isometer_testkit::eventually(Duration::from_secs(20), || async {
        let version = config_version(&http, &served.base).await;
        (version != first).then_some(version)
    })
    .await
    .expect("SIGHUP made the edited configuration active");

    std::fs::write(
        &policies,
        text.replace("max_fuel = 20_000_000", "max_fuel = -1"),
    )
    .expect("broken");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        served.child.try_wait().expect("status").is_none(),
        "still serving"
    );
    assert_eq!(
        config_version(&http, &served.base).await,
        second,
        "the invalid version was refused"
    );
    let response = http
        .post(format!("{}/v1/tasks", served.base))
        .bearer_auth(&served.admin)
        .json(&json!({"tenant_id": "initech", "tool_id": "summarize", "input": {"text": "One."}}))
        .send()
        .await
        .expect("post");
    let task: Value = response.json().await.expect("json");
    assert_eq!(task["outcome"], "success");
    assert_eq!(
        task["attempts"][0]["manifest"]["manifest"]["policy_version"],
        json!(second)
    );
}
