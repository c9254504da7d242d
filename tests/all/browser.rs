//! Tests against a served demo: `isometer demo` seeds a week and serves the dashboard.
//! - Headless Chromium (driven by tests/browser/pages.mjs through playwright-core) signs
//!   in as each role, loads every page, checks its figures against the JSON API and its
//!   server time, and saves a screenshot of each under target/screenshots/.
//! - schemathesis checks every JSON route against `/openapi.json`: no 5xx, and every
//!   status, content type, header and body as documented.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM: the demo stops its managed ClickHouse on the way out.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// A demo serving on a free loopback port.
struct Served {
    _demo: Demo,
    base: String,
    keys: serde_json::Map<String, serde_json::Value>,
    tenant: String,
    _data: tempfile::TempDir,
}

fn demo(tasks: usize) -> Served {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = crate::isometer()
        .arg("--config")
        .arg(crate::config_dir())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "demo",
            "--tasks",
            &tasks.to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let stdout = child.stdout.take().expect("piped");
    let demo = Demo(child);
    let mut keys = serde_json::Map::new();
    let mut tenant = None;
    let mut base = None;
    let mut in_keys = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 line");
        if line.trim_start().starts_with("sign-in keys") {
            in_keys = true;
            continue;
        }
        if let Some(announced) = crate::announced_base(&line) {
            base = Some(announced);
            break;
        }
        if in_keys {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["tenant", t, key] => {
                    tenant = Some((*t).to_owned());
                    keys.insert("tenant".into(), (*key).into());
                }
                [role, key] => {
                    keys.insert((*role).to_owned(), (*key).into());
                }
                _ => {}
            }
        }
    }
    let base = base.expect("the demo announced the dashboard's address");
    let tenant = tenant.expect("the demo printed a tenant key");
    for role in ["admin", "finance", "pm", "approver", "tenant"] {
        assert!(
            keys.contains_key(role),
            "no {role} key in the demo's output"
        );
    }
    Served {
        _demo: demo,
        base,
        keys,
        tenant,
        _data: data,
    }
}

#[test]
fn every_page_in_chromium_matches_the_api_and_is_screenshot() {
    let root = isometer_testkit::workspace_root();
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: `make test` installs it (npm ci --prefix tests/browser)"
    );
    let served = demo(600);
    let screenshots = root.join("target/screenshots");
    let run = Command::new("node")
        .arg(browser_dir.join("pages.mjs"))
        .env("ISOMETER_URL", &served.base)
        .env(
            "ISOMETER_KEYS",
            serde_json::Value::Object(served.keys.clone()).to_string(),
        )
        .env("ISOMETER_TENANT", &served.tenant)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .expect("node runs (make test installs Node.js and Chromium)");
    drop(served);
    let report = crate::report(&run);
    assert!(run.status.success(), "{report}");
    for page in [
        "overview",
        "tenants",
        "tenant",
        "margin",
        "slo",
        "loops",
        "evidence",
        "approvals",
        "portal",
        "statement",
        "statement-printable",
        "login",
    ] {
        let png = screenshots.join(format!("{page}.png"));
        let bytes = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            bytes > 10_000,
            "{} is missing or blank: {report}",
            png.display()
        );
    }
    eprintln!("{report}");
}

#[test]
fn schemathesis_finds_every_json_route_as_documented() {
    let st = isometer_testkit::workspace_root().join("target/venv/bin/st");
    assert!(
        st.exists(),
        "schemathesis is missing: `make test` installs it into target/venv"
    );
    let served = demo(300);
    let admin = served.keys["admin"].as_str().expect("admin key").to_owned();
    let run = Command::new(&st)
        // schemathesis keeps a cache in its working directory.
        .current_dir(isometer_testkit::workspace_root().join("target"))
        .arg("run")
        .arg(format!("{}/openapi.json", served.base))
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--max-time",
            "60",
            "--workers",
            "2",
            "--seed",
            "1",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    drop(served);
    let report = crate::report(&run);
    assert!(run.status.success(), "{report}");
    let document: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            isometer_testkit::workspace_root().join("crates/isometer-web/src/openapi.json"),
        )
        .expect("the document"),
    )
    .expect("JSON");
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, serde_json::Map::len))
        .sum();
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "all {operations} operations were tested: {report}"
    );
}
