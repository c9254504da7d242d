//! `isometer demo --no-serve` with a managed ClickHouse: data lands, the server is gone.

use isometer_store::{ManagedClickHouse, ServerOptions, Store};

#[tokio::test]
async fn the_demo_seeds_clickhouse_and_leaves_no_server_running() {
    let work = tempfile::tempdir().expect("tempdir");
    // The demo runs as `make demo` does: with a data directory relative to where it runs.
    let data_dir = work.path().join(".isometer");
    let output = crate::isometer()
        .current_dir(work.path())
        .arg("--config")
        .arg(crate::config_dir())
        .arg("--data-dir")
        .arg(".isometer")
        .args(["demo", "--no-serve"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 1,200 tasks in agent runs, and a burst of 400 on the day before last: announced at
    // the start as the progress bar counts them.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "demo: submitting 1200 tasks over 7 simulated days, and a burst of 400 on the day before last"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("1600/1600 tasks"), "{stderr}");
    assert!(stdout.contains("demo: 1600 tasks"), "{stdout}");
    for line in [
        "capped runs",
        "throttled tasks",
        "rolled back on day 4",
        "billed",
        "approvals",
    ] {
        assert!(stdout.contains(line), "{line} missing from\n{stdout}");
    }
    // The week exercises every outcome at least once.
    for outcome in isometer_core::Outcome::ALL {
        let count = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(outcome.as_str()))
            .and_then(|rest| rest.trim().parse::<u64>().ok());
        assert!(count > Some(0), "no {outcome:?} in the demo:\n{stdout}");
    }
    assert!(
        !crate::process_running_with(&crate::server_needle(data_dir.as_path())),
        "a clickhouse-server outlived the demo"
    );

    // Start a server on the same data to look at what the demo left.
    let mut server =
        ManagedClickHouse::start(&ServerOptions::new(data_dir.as_path().join("clickhouse")))
            .expect("restart");
    let totals = Store::new(&server.url(), "isometer_demo")
        .totals()
        .await
        .expect("totals");
    assert!(
        totals.events >= totals.tasks && totals.tasks == 1600,
        "a task has one attempt or more: {totals:?}"
    );
    assert!(totals.tenants >= 8 && totals.tools >= 6, "{totals:?}");
    // Raw tables and rollups agree, every task once.
    let store = Store::new(&server.url(), "isometer_demo");
    let books = store.reconcile().await.expect("reconcile");
    assert_eq!(
        (books.tasks, books.distinct_tasks, books.rollup_tasks),
        (1600, 1600, 1600)
    );
    assert_eq!(books.rollup_event_cost, books.event_cost);
    server.stop();
    // The lock on its directory goes with it: `replay` starts its own server there.
    drop(server);

    // The spool it shipped from has nothing left.
    let status = crate::isometer()
        .arg("--data-dir")
        .arg(&data_dir)
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
        (Some(0), Some(1600))
    );

    // The KPIs of the demo's days, through the binary.
    let today = chrono::Utc::now().date_naive();
    let billing = |args: &[&str]| {
        let out = crate::isometer()
            .arg("--config")
            .arg(crate::config_dir())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--database", "isometer_demo"])
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // The demo spreads its tasks over the last 7 days.
    let from = (today - chrono::Days::new(10)).to_string();
    let to = today.to_string();
    let kpi = billing(&["kpi", "--from", &from, "--to", &to, "--json"]);
    let kpi: serde_json::Value = serde_json::from_slice(&kpi.stdout).expect("json");
    assert_eq!(kpi["tasks_total"], 1600);
    assert!(
        kpi["capped_tasks"].as_u64() > Some(0),
        "agents whose confidence drifted were capped"
    );
    assert!(
        kpi["throttled_tasks"].as_u64() > Some(0),
        "the burst was throttled"
    );
    assert_eq!(kpi["currency"], "USD");
    let cost: rust_decimal::Decimal = kpi["cost_total"]
        .as_str()
        .expect("an amount is a decimal string")
        .parse()
        .expect("decimal");
    assert_eq!(cost, books.task_cost);
    for key in [
        "cost_per_successful_task",
        "cost_per_compliant_task",
        "retry_tax_ratio",
        "billed_total",
        "gross_margin",
    ] {
        assert!(kpi[key].is_string(), "{key}: {}", kpi[key]);
    }
    assert!(kpi["tasks_successful"].as_u64() > Some(0));
    assert!(
        kpi["p95_cost_per_task"]
            .as_array()
            .is_some_and(|l| l.len() >= 3)
    );
    // This month is not over: its statement is a draft, not issued.
    let period = today.format("%Y-%m").to_string();
    let statement = billing(&[
        "statement",
        "--tenant",
        "acme",
        "--period",
        &period,
        "--format",
        "json",
    ]);
    let statement: serde_json::Value = serde_json::from_slice(&statement.stdout).expect("json");
    assert_eq!(statement["draft"], true);
    assert_eq!(statement["statement"]["tenant_id"], "acme");
    let focus = data_dir.as_path().join("focus.csv");
    billing(&[
        "export",
        "focus",
        "--period",
        &period,
        "--out",
        focus.to_str().expect("utf-8"),
    ]);
    let focus = std::fs::read_to_string(&focus).expect("focus csv");
    assert!(focus.starts_with("BilledCost,BillingAccountId,"), "{focus}");
    assert!(focus.lines().count() > 3, "{focus}");

    // Replay: the packages of one agent session's trace, from ClickHouse.
    let out = data_dir.as_path().join("replay");
    let export = crate::isometer()
        .arg("--data-dir")
        .arg(&data_dir)
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
            .arg(&data_dir)
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
