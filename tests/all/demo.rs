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
}
