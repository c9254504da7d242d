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
    server.stop();
}
