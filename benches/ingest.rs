//! Suite `ingest`: usage from the spool into ClickHouse, beside a bare inserter (the
//! ceiling of this machine) and a hurried integration (one JSONEachRow INSERT per event).
//! Writes `target/bench/ingest.json`.
//!
//! All sides insert the same realistic rows into the same schema (migrations applied,
//! rollups included) on a fresh local `clickhouse-server`:
//! - `events_per_s`: a spool filled with 7.2 million events (6 million tasks) while
//!   ClickHouse is out of reach, then shipped: events over the time from opening the
//!   writer until all are in ClickHouse, at least 20 s (`rows_per_s` adds the task records
//!   shipped with them);
//! - `ceiling_events_per_s`: the same event rows through a bare `clickhouse` crate
//!   inserter in batches of 100,000, no spool;
//! - `naive_events_per_s`: one HTTP `INSERT ... FORMAT JSONEachRow` per event;
//! - `queryable_p99_ms`: at 20,000 events/s, the time from a task's rows being durable in
//!   the spool until a SELECT sees them.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use isometer_core::{Money, Outcome, RunClass, TaskRecord, Usage, UsageEvent, Verdict, event_id};
use isometer_store::{ManagedClickHouse, ServerOptions, SpoolOptions, Store, WriterOptions};
use std::time::{Duration, Instant};

const SUSTAIN: Duration = Duration::from_secs(20);
/// Events put in the spool for the sustained run: enough for more than `SUSTAIN`.
const SHIPPED_EVENTS: u64 = 7_200_000;
const CHUNK: u64 = 5_000;
const CEILING_EVENTS: u64 = 2_000_000;
const NAIVE_FOR: Duration = Duration::from_secs(5);
const PROBE_RATE: u64 = 20_000;
const PROBE_FOR: Duration = Duration::from_secs(10);

/// Task `i`: one attempt, two for every fifth task (1.2 events per task on average).
fn task(i: u64, run: &str) -> (Vec<UsageEvent>, TaskRecord) {
    let time: DateTime<Utc> = Utc::now();
    let task_id = format!("{run}-{i}");
    let tenant = ["acme", "globex", "initech", "umbrella", "hooli"][(i % 5) as usize];
    let attempts: u16 = if i.is_multiple_of(5) { 2 } else { 1 };
    let events: Vec<UsageEvent> = (1..=attempts)
        .map(|attempt| UsageEvent {
            event_id: event_id(&task_id, attempt),
            time: time + TimeDelta::milliseconds(i64::from(attempt)),
            tenant_id: tenant.into(),
            tier: "standard".into(),
            use_case: "support-summary".into(),
            tool_id: "summarize".into(),
            task_id: task_id.clone(),
            run_id: format!("{run}-run-{}", i / 25),
            run_class: RunClass::Customer,
            attempt,
            outcome: if attempt < attempts {
                Outcome::Failed
            } else {
                Outcome::Success
            },
            exit_code: Some(0),
            usage: Usage {
                fuel: 1_000_000 + i % 99_991,
                peak_memory_bytes: 2 << 20,
                wall_time_us: 900 + i % 1_000,
                cpu_time_us: 850,
                instantiate_us: 25,
                egress_bytes: i % 8_192,
                egress_requests: i % 3,
                output_bytes: 512,
            },
            policy_id: "summarize/standard".into(),
            policy_version: "cd".repeat(32),
            verdict: Verdict::Allow,
            evidence_complete: true,
            confidence: None,
            artifact_hash: "0123456789abcdef".repeat(4),
            rate_card_version: "standard@2026-01".into(),
            cost: Money::new(i64::try_from(i % 1_000_003).unwrap_or(0) + 12_345, 12),
        })
        .collect();
    let record = TaskRecord {
        task_id,
        submitted: time,
        finished: time + TimeDelta::milliseconds(2),
        tenant_id: tenant.into(),
        tier: "standard".into(),
        use_case: "support-summary".into(),
        tool_id: "summarize".into(),
        run_id: format!("{run}-run-{}", i / 25),
        run_class: RunClass::Customer,
        outcome: Outcome::Success,
        attempts,
        total_cost: events.iter().map(|e| e.cost).sum(),
        compliant: true,
        control: Default::default(),
    };
    (events, record)
}

fn main() -> anyhow::Result<()> {
    let root = isometer_testkit::workspace_root();
    let dir = tempfile::tempdir()?;
    let (clickhouse_dir, where_clickhouse) = common::clickhouse_dir()?;
    let server =
        ManagedClickHouse::start(&ServerOptions::new(clickhouse_dir.path().join("server")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = rt.block_on(measure(&server, dir.path()));
    drop(server);
    let f = figures?;

    println!("suite ingest: usage rows into ClickHouse, 2 cores shared with the server");
    println!("  {where_clickhouse}; spool on disk");
    let row = |name: &str, value: String| println!("  {name:<52} {value:>12}");
    row(
        "isometer: spool → ClickHouse, events/s",
        format!("{:.0}", f.events_per_s),
    );
    row(
        "  with their task records, rows/s",
        format!("{:.0}", f.rows_per_s),
    );
    row(
        "ceiling: bare inserter, events/s",
        format!("{:.0}", f.ceiling),
    );
    row(
        "peer: one JSONEachRow INSERT per event, events/s",
        format!("{:.0}", f.naive),
    );
    row(
        "isometer / ceiling",
        format!("{:.2}", f.events_per_s / f.ceiling),
    );
    row(
        "isometer / naive",
        format!("{:.0}x", f.events_per_s / f.naive),
    );
    row(
        "durable → queryable at 20k events/s, p99 (ms)",
        format!("{:.0}", f.queryable_p99_ms),
    );
    row(
        "durable → queryable at 20k events/s, p50 (ms)",
        format!("{:.0}", f.queryable_p50_ms),
    );
    common::write_json(
        &root,
        "ingest",
        &serde_json::json!({
            "suite": "ingest",
            "clickhouse_data": where_clickhouse,
            "events_per_s": f.events_per_s,
            "events": f.events,
            "rows_per_s": f.rows_per_s,
            "seconds": f.seconds,
            "ceiling_events_per_s": f.ceiling,
            "naive_events_per_s": f.naive,
            "ratio_vs_ceiling": f.events_per_s / f.ceiling,
            "queryable_p99_ms": f.queryable_p99_ms,
            "queryable_p50_ms": f.queryable_p50_ms,
        }),
    )
}

struct Figures {
    events_per_s: f64,
    rows_per_s: f64,
    events: u64,
    seconds: f64,
    ceiling: f64,
    naive: f64,
    queryable_p99_ms: f64,
    queryable_p50_ms: f64,
}

async fn measure(server: &ManagedClickHouse, dir: &std::path::Path) -> anyhow::Result<Figures> {
    let url = server.url();

    // isometer: the spool, filled while ClickHouse is out of reach (so the rows' making
    // and appending take no CPU from the shipping), then shipped to it in one go.
    let spool = WriterOptions {
        spool_dir: Some(dir.join("spool")),
        spool: SpoolOptions {
            max_bytes: 16 << 30,
            ..SpoolOptions::default()
        },
        ..WriterOptions::default()
    };
    let (mut tasks, mut events) = (0, 0);
    eprintln!("filling a spool with {SHIPPED_EVENTS} events while ClickHouse is out of reach");
    {
        let offline = Store::new("http://127.0.0.1:9", "ingest").writer(spool.clone())?;
        while events < SHIPPED_EVENTS {
            let chunk: Vec<_> = (tasks..tasks + CHUNK).map(|i| task(i, "sustain")).collect();
            events += chunk.iter().map(|(e, _)| e.len() as u64).sum::<u64>();
            offline.record_many(&chunk).await?;
            tasks += CHUNK;
        }
    }
    let store = Store::open(&url, "ingest").await?;
    store.migrate().await?;
    eprintln!("shipping them");
    let started = Instant::now();
    let writer = store.writer(spool)?;
    writer.flush().await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        seconds >= SUSTAIN.as_secs_f64(),
        "shipping took only {seconds:.1} s; raise SHIPPED_EVENTS"
    );
    let books = store.reconcile().await?;
    anyhow::ensure!(
        books.events == events && books.tasks == tasks && books.rollup_events == events,
        "ClickHouse holds {books:?}, {events} events and {tasks} tasks were recorded"
    );
    let events_per_s = events as f64 / seconds;
    let rows_per_s = (events + tasks) as f64 / seconds;
    drop(writer);

    // The ceiling: the same event rows, a bare inserter, no spool.
    eprintln!("the ceiling: {CEILING_EVENTS} events through a bare inserter");
    let ceiling_store = Store::open(&url, "ceiling").await?;
    ceiling_store.migrate().await?;
    let rows: Vec<(Vec<UsageEvent>, TaskRecord)> = (0..CEILING_EVENTS * 5 / 6)
        .map(|i| task(i, "ceiling"))
        .collect();
    let event_rows: Vec<UsageEvent> = rows.into_iter().flat_map(|(e, _)| e).collect();
    let t = Instant::now();
    ceiling_store
        .bulk_insert_events(&event_rows, 100_000)
        .await?;
    let ceiling = event_rows.len() as f64 / t.elapsed().as_secs_f64();

    // The hurried integration: one JSONEachRow INSERT per event.
    let naive_store = Store::open(&url, "naive").await?;
    naive_store.migrate().await?;
    let http = reqwest::Client::new();
    let insert_url = format!(
        "{url}/?database=naive&query={}",
        "INSERT%20INTO%20usage_events%20FORMAT%20JSONEachRow"
    );
    eprintln!("the peer: one INSERT per event for {NAIVE_FOR:?}");
    let t = Instant::now();
    let mut naive_events = 0u64;
    while t.elapsed() < NAIVE_FOR {
        let (events, _) = task(naive_events, "naive");
        for e in &events {
            let body = serde_json::json!({
                "event_id": e.event_id, "event_date": e.time.format("%Y-%m-%d").to_string(),
                "event_time": e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                "ts_ms": e.time.timestamp_millis(), "tenant_id": e.tenant_id, "tier": e.tier,
                "use_case": e.use_case, "tool_id": e.tool_id, "task_id": e.task_id,
                "run_id": e.run_id, "run_class": e.run_class.as_str(), "attempt": e.attempt,
                "outcome": e.outcome.as_str(), "exit_code": e.exit_code, "fuel": e.usage.fuel,
                "peak_memory_bytes": e.usage.peak_memory_bytes,
                "wall_time_us": e.usage.wall_time_us, "cpu_time_us": e.usage.cpu_time_us,
                "instantiate_us": e.usage.instantiate_us, "egress_bytes": e.usage.egress_bytes,
                "egress_requests": e.usage.egress_requests,
                "output_bytes": e.usage.output_bytes, "policy_id": e.policy_id,
                "artifact_hash": e.artifact_hash, "rate_card_version": e.rate_card_version,
            })
            .to_string();
            // The decimal goes in as a JSON number, exactly as written.
            let body = format!("{},\"cost\":{}}}", &body[..body.len() - 1], e.cost);
            let answer = http.post(&insert_url).body(body).send().await?;
            anyhow::ensure!(
                answer.status().is_success(),
                "naive insert: {}",
                answer.text().await?
            );
            naive_events += 1;
        }
    }
    let naive = naive_events as f64 / t.elapsed().as_secs_f64();

    // Freshness: 20k events/s through the spool; probes timed until a SELECT sees them.
    let fresh = Store::open(&url, "fresh").await?;
    fresh.migrate().await?;
    let writer = fresh.writer(WriterOptions {
        spool_dir: Some(dir.join("fresh-spool")),
        ..WriterOptions::default()
    })?;
    eprintln!("freshness: {PROBE_RATE} events/s for {PROBE_FOR:?}");
    let tick = Duration::from_millis(10);
    let per_tick = PROBE_RATE * 10 / 1_000 * 5 / 6; // tasks per tick at 1.2 events each
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let poller = {
        let fresh = fresh.clone();
        tokio::spawn(async move {
            let mut waiting: Vec<(String, Instant)> = Vec::new();
            let mut latencies = Vec::new();
            let mut open = true;
            while open || !waiting.is_empty() {
                while let Ok(probe) = probe_rx.try_recv() {
                    waiting.push(probe);
                }
                if probe_rx.is_closed() && probe_rx.is_empty() {
                    open = false;
                }
                if !waiting.is_empty() {
                    let ids: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
                    let seen = fresh.tasks_present(&ids).await?;
                    let now = Instant::now();
                    waiting.retain(|(id, at)| {
                        let found = seen.contains(id);
                        if found {
                            latencies.push(now - *at);
                        }
                        !found
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(latencies)
        })
    };
    let t = Instant::now();
    let mut next = t;
    let mut i = 0;
    while t.elapsed() < PROBE_FOR {
        let chunk: Vec<_> = (i..i + per_tick).map(|n| task(n, "fresh")).collect();
        let probe = chunk[chunk.len() - 1].1.task_id.clone();
        writer.record_many(&chunk).await?;
        if i % (per_tick * 10) == 0 {
            probe_tx.send((probe, Instant::now()))?;
        }
        i += per_tick;
        next += tick;
        tokio::time::sleep_until(next.into()).await;
    }
    drop(probe_tx);
    let mut latencies = poller.await??;
    latencies.sort();
    anyhow::ensure!(latencies.len() >= 50, "only {} probes", latencies.len());
    let pick = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    Ok(Figures {
        events_per_s,
        rows_per_s,
        events,
        seconds,
        ceiling,
        naive,
        queryable_p99_ms: pick(99).as_secs_f64() * 1e3,
        queryable_p50_ms: pick(50).as_secs_f64() * 1e3,
    })
}
