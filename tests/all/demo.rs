//! `isometer demo --no-serve` with a managed ClickHouse: data lands, the server is gone.

use isometer_store::{ManagedClickHouse, ServerOptions, Store};

#[tokio::test]
async fn the_demo_seeds_clickhouse_and_leaves_no_server_running() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = crate::isometer()
        .arg("--config")
        .arg(crate::config_dir())
        .arg("--data-dir")
        .arg(data.path())
        .args(["demo", "--no-serve"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("demo: 1200 tasks"), "{stdout}");
    assert!(
        !crate::process_running_with(&crate::server_needle(data.path())),
        "a clickhouse-server outlived the demo"
    );

    // Start a server on the same data to look at what the demo left.
    let mut server = ManagedClickHouse::start(&ServerOptions::new(data.path().join("clickhouse")))
        .expect("restart");
    let totals = Store::new(&server.url(), "isometer_demo")
        .totals()
        .await
        .expect("totals");
    assert!(totals.events >= 1_000, "{totals:?}");
    assert_eq!(totals.events, totals.tasks, "one attempt per task so far");
    assert!(totals.tenants >= 3 && totals.tools >= 3, "{totals:?}");
    // Raw tables and rollups agree, every task once.
    let store = Store::new(&server.url(), "isometer_demo");
    let books = store.reconcile().await.expect("reconcile");
    assert_eq!(
        (books.tasks, books.distinct_tasks, books.rollup_tasks),
        (1200, 1200, 1200)
    );
    assert_eq!(books.rollup_event_cost, books.event_cost);
    server.stop();
    // The lock on its directory goes with it: `replay` starts its own server there.
    drop(server);

    // The spool it shipped from has nothing left.
    let status = crate::isometer()
        .arg("--data-dir")
        .arg(data.path())
        .args(["spool", "status", "--of", "isometer_demo", "--json"])
        .output()
        .expect("runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        (
            status["lag_records"].as_u64(),
            status["shipped_seq"].as_u64()
        ),
        (Some(0), Some(1200))
    );

    // Replay: the packages of one agent session's trace, from ClickHouse.
    let out = data.path().join("replay");
    let export = crate::isometer()
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--database",
            "isometer_demo",
            "replay",
            "acme-trace-1",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let packages: Vec<std::path::PathBuf> = std::fs::read_dir(&out)
        .expect("packages")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(packages.len() >= 10, "{packages:?}");
    // A deterministic tool's successful attempt: re-run, its output hash is the same.
    let package = packages
        .iter()
        .find(|p| {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p.join("manifest.json")).expect("manifest"))
                    .expect("json");
            m["manifest"]["outcome"] == "success" && m["manifest"]["tool_id"] == "summarize"
        })
        .expect("a successful summarize attempt in the trace");
    for file in [
        "artifact.wasm",
        "input.json",
        "output",
        "logs.txt",
        "policy/policies.toml",
    ] {
        assert!(
            package.join(file).exists(),
            "{file} missing in {}",
            package.display()
        );
    }
    let replay = |dir: &std::path::Path| {
        crate::isometer()
            .arg("--data-dir")
            .arg(data.path())
            .arg("replay")
            .arg("--run")
            .arg(dir)
            .output()
            .expect("runs")
    };
    let rerun = replay(package);
    let said = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        rerun.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert!(
        said.contains("signature verified") && said.contains("reproduced"),
        "{said}"
    );
    // A changed input is not the input that ran.
    std::fs::write(package.join("input.json"), br#"{"text":"something else"}"#).expect("edit");
    let rerun = replay(package);
    let said = String::from_utf8_lossy(&rerun.stdout);
    assert_eq!(rerun.status.code(), Some(1), "{said}");
    assert!(said.contains("not reproduced: the input hash"), "{said}");
}
