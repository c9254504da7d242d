//! Suite `billing`: the dashboard's KPI queries over 100 million usage events, from the
//! rollups beside the same answers from the raw tables. Writes `target/bench/billing.json`.
//!
//! A fresh local `clickhouse-server` is filled with synthetic usage made inside it (see
//! `isometer_store::synthetic`): about 90 million tasks and 100 million attempts of 20
//! tenants and six use cases over 92 days, through the same materialized views as real
//! usage. The rollups' parts are then merged (`OPTIMIZE ... FINAL`), the state background
//! merges reach some time after a bulk load; the raw tables are left as loaded. Then, all
//! tenants, the last 30 days:
//! - `overview_p95_ms`: the p95 over 20 runs of every KPI of the overview (four queries
//!   in parallel, on the rollups);
//! - `raw_overview_ms`: the same answers from `tasks` and `usage_events` (median of 3),
//!   and the ratio; the bench fails if the two answers differ;
//! - `statement_ms`: one tenant's statement for one month (median and p95 of 10).
//!
//! `ISOMETER_BENCH_EVENTS=N` fills N events instead, for a quick look.

mod common;

use chrono::NaiveDate;
use isometer_billing::statement::{Period, Statement};
use isometer_store::{
    Filter, ManagedClickHouse, SYNTHETIC_USE_CASES, ServerOptions, Source, Store,
};
use std::io::Write as _;
use std::time::Instant;

const EVENTS: u64 = 100_000_000;
/// Tasks per fill: the server makes each chunk in one INSERT ... SELECT.
const CHUNK: u64 = 5_000_000;
const TENANTS: u32 = 20;
const DAYS: u32 = 92;

fn main() -> anyhow::Result<()> {
    let root = isometer_testkit::workspace_root();
    let dir = tempfile::tempdir()?;
    let config_dir = dir.path().join("config");
    write_config(&root.join("config"), &config_dir)?;
    let config = isometer_policy::Config::load(&config_dir)
        .map_err(|e| anyhow::anyhow!("bench configuration: {e}"))?;
    let server = ManagedClickHouse::start(&ServerOptions::new(dir.path().join("clickhouse")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = rt.block_on(measure(&server, &config));
    drop(server);
    let f = figures?;

    println!(
        "suite billing: {} events, {} tasks, {TENANTS} tenants, {DAYS} days; 2 cores shared with the server",
        f.events, f.tasks
    );
    let row = |name: &str, value: String| println!("  {name:<58} {value:>12}");
    row(
        "isometer: KPI overview from the rollups, p95 (ms)",
        format!("{:.1}", f.overview_p95_ms),
    );
    row("  p50 (ms)", format!("{:.1}", f.overview_p50_ms));
    row(
        "peer: the same answers from the raw tables, median (ms)",
        format!("{:.0}", f.raw_overview_ms),
    );
    row(
        "raw / rollups",
        format!("{:.0}x", f.raw_overview_ms / f.overview_p50_ms),
    );
    row(
        "one tenant-month statement, median (ms)",
        format!("{:.1}", f.statement_ms),
    );
    row("  p95 (ms)", format!("{:.1}", f.statement_p95_ms));
    row(
        "fill: rows/s made inside ClickHouse",
        format!("{:.0}", f.fill_rows_per_s),
    );
    common::write_json(
        &root,
        "billing",
        &serde_json::json!({
            "suite": "billing",
            "events": f.events,
            "tasks": f.tasks,
            "overview_p95_ms": f.overview_p95_ms,
            "overview_p50_ms": f.overview_p50_ms,
            "raw_overview_ms": f.raw_overview_ms,
            "ratio_raw_vs_rollups": f.raw_overview_ms / f.overview_p50_ms,
            "statement_ms": f.statement_ms,
            "statement_p95_ms": f.statement_p95_ms,
            "fill_rows_per_s": f.fill_rows_per_s,
        }),
    )
}

struct Figures {
    events: u64,
    tasks: u64,
    overview_p95_ms: f64,
    overview_p50_ms: f64,
    raw_overview_ms: f64,
    statement_ms: f64,
    statement_p95_ms: f64,
    fill_rows_per_s: f64,
}

/// The shipped configuration with the synthetic tenants, each with a price plan.
fn write_config(shipped: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(shipped)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))?;
        }
    }
    let (mut tenants, mut plans) = (String::new(), String::new());
    for i in 0..TENANTS {
        let tier = ["standard", "premium", "free"][i as usize % 3];
        tenants.push_str(&format!(
            "[[tenant]]\nid = \"tenant-{i:02}\"\nname = \"Tenant {i}\"\ntier = \"{tier}\"\n\n"
        ));
        plans.push_str(&format!(
            "[[plan]]\ntenant = \"tenant-{i:02}\"\nversion = \"t{i}-2026\"\ncurrency = \"USD\"\n\
             exploratory_price_per_task = \"0.0001\"\n[plan.price_per_task]\n"
        ));
        for (j, (use_case, _)) in SYNTHETIC_USE_CASES.iter().enumerate() {
            plans.push_str(&format!("{use_case} = \"0.00{}\"\n", j + 1));
        }
        plans.push('\n');
    }
    std::fs::write(to.join("tenants.toml"), tenants)?;
    std::fs::write(to.join("plans.toml"), plans)?;
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn percentile(mut v: Vec<f64>, level: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((level * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

async fn measure(
    server: &ManagedClickHouse,
    config: &isometer_policy::Config,
) -> anyhow::Result<Figures> {
    let store = Store::open(&server.url(), "billing").await?;
    store.migrate().await?;
    let from = NaiveDate::from_ymd_opt(2026, 8, 1).unwrap_or_default();
    let (mut tasks, mut events) = (0, 0);
    let started = Instant::now();
    let target = std::env::var("ISOMETER_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS);
    while events < target {
        let chunk = CHUNK.min(target.div_ceil(10).max(1_000));
        let count = store
            .fill_synthetic(tasks, chunk, from, DAYS, TENANTS)
            .await?;
        tasks += count.tasks;
        events += count.events;
        eprint!(
            "\rfilling: {events:>11} events, {tasks:>11} tasks, {:>4.0} s",
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    let fill_rows_per_s = (tasks + events) as f64 / started.elapsed().as_secs_f64();
    let merging = Instant::now();
    store.merge_rollups().await?;
    eprintln!("rollups merged in {:.1} s", merging.elapsed().as_secs_f64());

    let last = from + chrono::Days::new(u64::from(DAYS) - 1);
    let filter = Filter::days(last - chrono::Days::new(29), last);
    // Each query of the overview alone, for the record.
    for source in [Source::Rollup, Source::Raw] {
        let t = Instant::now();
        let n = store.task_groups(&filter, source).await?.len();
        eprint!("{source:?}: task_groups {:.0} ms ({n} rows)", ms(t));
        let t = Instant::now();
        let n = store.attempt_groups(&filter, source).await?.len();
        eprint!(", attempt_groups {:.0} ms ({n})", ms(t));
        let t = Instant::now();
        let n = store.task_cost_p95(&filter, source).await?.len();
        eprint!(", task_cost_p95 {:.0} ms ({n})", ms(t));
        let t = Instant::now();
        let n = store.latency_p95(&filter, source).await?.len();
        eprintln!(", latency_p95 {:.0} ms ({n})", ms(t));
    }
    let rollup = isometer_billing::kpis(&store, config, &filter, Source::Rollup).await?;
    let raw_started = Instant::now();
    let raw = isometer_billing::kpis(&store, config, &filter, Source::Raw).await?;
    let mut raw_ms = vec![ms(raw_started)];
    anyhow::ensure!(
        rollup == raw,
        "the rollups and the raw tables disagree at scale"
    );
    anyhow::ensure!(rollup.tasks_total > 0 && !rollup.billed_total.is_zero());
    for _ in 0..2 {
        let t = Instant::now();
        isometer_billing::kpis(&store, config, &filter, Source::Raw).await?;
        raw_ms.push(ms(t));
    }
    let mut overview = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        isometer_billing::kpis(&store, config, &filter, Source::Rollup).await?;
        overview.push(ms(t));
    }
    let period = Period::of(from + chrono::Days::new(35));
    let mut statements = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let s = Statement::compute(&store, config, "tenant-03", period).await?;
        statements.push(ms(t));
        anyhow::ensure!(!s.lines.is_empty(), "an empty statement");
    }
    Ok(Figures {
        events,
        tasks,
        overview_p95_ms: percentile(overview.clone(), 0.95),
        overview_p50_ms: percentile(overview, 0.5),
        raw_overview_ms: percentile(raw_ms, 0.5),
        statement_ms: percentile(statements.clone(), 0.5),
        statement_p95_ms: percentile(statements, 0.95),
        fill_rows_per_s,
    })
}
