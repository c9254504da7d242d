//! Usage written through the writer reads back exactly, money to the last decimal.

use chrono::{DateTime, Utc};
use isometer_core::{Money, Outcome, RunClass, TaskRecord, Usage, UsageEvent, Verdict, event_id};
use isometer_store::WriterOptions;
use std::str::FromStr;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid")
}

fn event(task: &str, tenant: &str, attempt: u16, outcome: Outcome, cost: &str) -> UsageEvent {
    UsageEvent {
        event_id: event_id(task, attempt),
        time: at(1_763_700_000_123 + i64::from(attempt)),
        tenant_id: tenant.into(),
        tier: "standard".into(),
        use_case: "summaries".into(),
        tool_id: "summarize".into(),
        task_id: task.into(),
        run_id: "run-1".into(),
        run_class: RunClass::Customer,
        attempt,
        outcome,
        exit_code: (outcome == Outcome::Success).then_some(0),
        usage: Usage {
            fuel: 123_456,
            peak_memory_bytes: 1 << 20,
            wall_time_us: 1_500,
            egress_bytes: 0,
            output_bytes: 42,
            cpu_time_us: 1_200,
            instantiate_us: 35,
            egress_requests: 0,
        },
        policy_id: "summarize/standard".into(),
        policy_version: "cd".repeat(32),
        verdict: Verdict::Allow,
        evidence_complete: true,
        confidence: Some(0.75),
        artifact_hash: "ab".repeat(32),
        rate_card_version: "standard@2026-01".into(),
        cost: Money::from_str(cost).expect("decimal"),
    }
}

fn task(id: &str, tenant: &str, events: &[UsageEvent]) -> TaskRecord {
    let last = events.last().expect("at least one attempt");
    TaskRecord {
        task_id: id.into(),
        submitted: events[0].time,
        finished: last.time,
        tenant_id: tenant.into(),
        tier: "standard".into(),
        use_case: "summaries".into(),
        tool_id: "summarize".into(),
        run_id: "run-1".into(),
        run_class: RunClass::Customer,
        outcome: last.outcome,
        attempts: events.len() as u16,
        total_cost: events.iter().map(|e| e.cost).sum(),
        compliant: true,
        control: Default::default(),
    }
}

#[tokio::test]
async fn events_and_tasks_read_back_exactly() {
    let store = isometer_testkit::database().await;
    let writer = store.writer(WriterOptions::default()).expect("writer");

    let t1 = vec![
        event("t1", "acme", 1, Outcome::Failed, "0.000000123456"),
        event("t1", "acme", 2, Outcome::Success, "0.000000200001"),
    ];
    let t2 = vec![event("t2", "acme", 1, Outcome::FuelExhausted, "1.5")];
    let t3 = vec![event("t3", "globex", 1, Outcome::Success, "0.333333333333")];
    for (id, tenant, events) in [
        ("t1", "acme", &t1),
        ("t2", "acme", &t2),
        ("t3", "globex", &t3),
    ] {
        writer
            .record(events.clone(), task(id, tenant, events))
            .await
            .expect("queued");
    }
    writer.flush().await.expect("flushed");

    assert_eq!(store.task_events("t1").await.expect("query"), t1);
    assert_eq!(store.task_events("t3").await.expect("query"), t3);

    let summaries = store.tenant_summaries().await.expect("summaries");
    assert_eq!(summaries.len(), 2);
    let acme = &summaries[0];
    assert_eq!(
        (
            acme.tenant_id.as_str(),
            acme.tasks,
            acme.successful,
            acme.attempts
        ),
        ("acme", 2, 1, 3)
    );
    assert_eq!(
        acme.cost,
        Money::from_str("1.500000323457").expect("decimal")
    );
    assert_eq!(acme.cost_per_successful_task(), Some(acme.cost));
    assert_eq!(
        summaries[1].cost,
        Money::from_str("0.333333333333").expect("decimal")
    );

    let outcomes = store.outcome_counts().await.expect("outcomes");
    let success = outcomes
        .iter()
        .find(|o| o.outcome == "success")
        .expect("success row");
    assert_eq!(success.attempts, 2);
    let totals = store.totals().await.expect("totals");
    assert_eq!(
        (totals.events, totals.tasks, totals.tenants, totals.tools),
        (4, 3, 2, 1)
    );
}

#[tokio::test]
async fn rows_wait_for_the_batch_delay_not_for_a_full_batch() {
    let store = isometer_testkit::database().await;
    let writer = store
        .writer(WriterOptions {
            batch_rows: 1_000_000,
            max_delay: std::time::Duration::from_millis(100),
            ..WriterOptions::default()
        })
        .expect("writer");
    let events = vec![event("lonely", "acme", 1, Outcome::Success, "0.01")];
    writer
        .record(events.clone(), task("lonely", "acme", &events))
        .await
        .expect("queued");
    let seen = isometer_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let rows = store.task_events("lonely").await.ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("the row arrives without a flush");
    assert_eq!(seen, events);
}

#[tokio::test]
async fn flush_ships_at_once_without_waiting_out_the_batch_delay() {
    let store = isometer_testkit::database().await;
    let writer = store
        .writer(WriterOptions {
            batch_rows: 1_000_000,
            max_delay: std::time::Duration::from_secs(600),
            ..WriterOptions::default()
        })
        .expect("writer");
    // Twice: the second flush finds the gatherer idle after the first batch went.
    for name in ["first", "second"] {
        let events = vec![event(name, "acme", 1, Outcome::Success, "0.01")];
        writer
            .record(events.clone(), task(name, "acme", &events))
            .await
            .expect("queued");
        tokio::time::timeout(std::time::Duration::from_secs(30), writer.flush())
            .await
            .expect("flush does not wait for the batch delay")
            .expect("flushed");
        assert_eq!(store.task_events(name).await.expect("events"), events);
    }
}

#[tokio::test]
async fn a_batch_the_server_refuses_is_reported_by_flush_not_retried_forever() {
    // No migrations: the tables do not exist, so every insert is refused.
    let store = isometer_testkit::empty_database().await;
    let writer = store.writer(WriterOptions::default()).expect("writer");
    let events = vec![event("refused", "acme", 1, Outcome::Success, "0.01")];
    writer
        .record(events.clone(), task("refused", "acme", &events))
        .await
        .expect("queued");
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(30), writer.flush())
        .await
        .expect("flush answers within its retry budget");
    match flushed {
        Err(isometer_store::StoreError::BatchRefused {
            table, rows, kept, ..
        }) => {
            assert_eq!((table.as_str(), rows), ("usage_events", 1));
            // The one record, as the spool holds it: a 28-byte header whose length field
            // counts the rest, and the task's rows in the payload.
            let bytes = std::fs::read(&kept).expect("the refused records are kept");
            let len = u32::from_le_bytes(bytes[..4].try_into().expect("a header"));
            assert_eq!(bytes.len(), 28 + len as usize, "one record in {kept:?}");
            assert!(bytes.windows(7).any(|w| w == b"refused"), "{kept:?}");
        }
        other => panic!("expected BatchRefused, got {other:?}"),
    }
    // The failure is reported once; the writer goes on working.
    assert!(writer.flush().await.is_ok());
}

#[tokio::test]
async fn money_beyond_the_column_is_refused_before_it_is_queued() {
    let store = isometer_testkit::database().await;
    let writer = store.writer(WriterOptions::default()).expect("writer");
    let mut events = vec![event("huge", "acme", 1, Outcome::Success, "0")];
    events[0].cost = Money::MAX;
    let err = writer
        .record(events.clone(), task("huge", "acme", &events))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, isometer_store::StoreError::MoneyOutOfRange(_)),
        "{err}"
    );
}

fn manifest(task: &str, attempt: u16, signed: &str) -> isometer_store::ManifestRecord {
    isometer_store::ManifestRecord {
        manifest_id: event_id(task, attempt),
        started: at(1_763_700_000_000 + i64::from(attempt)),
        trace_id: "trace-sealed".into(),
        task_id: task.into(),
        attempt,
        tenant_id: "acme".into(),
        tool_id: "summarize".into(),
        policy_id: "summarize/standard".into(),
        policy_version: "cd".repeat(32),
        outcome: Outcome::Success,
        verdict: Verdict::Allow,
        key_id: "k1".into(),
        digest: "ef".repeat(32),
        signed: signed.into(),
        input: b"{\"text\":\"hi\"}".to_vec(),
        output: vec![0xff, 0x00, 0x7f],
        logs: b"a log line".to_vec(),
    }
}

/// Seals leaf `l` as `,"n":CALL,"leaf":FIRST_BYTE}`: the JSON's end, naming the call.
#[derive(Debug, Default)]
struct Counting {
    calls: std::sync::atomic::AtomicUsize,
}

impl isometer_store::GroupSealer for Counting {
    fn seal(&self, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let call = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        leaves
            .iter()
            .map(|l| format!(",\"n\":{call},\"leaf\":{}}}", l[0]).into_bytes())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_manifests_are_stored_with_their_seals_also_when_shipped_after_a_restart() {
    let store = isometer_testkit::database().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let options = || WriterOptions {
        spool_dir: Some(spool.path().to_owned()),
        ..WriterOptions::default()
    };
    let sealer = std::sync::Arc::new(Counting::default());
    // Tasks of 1 to 3 attempts, recorded concurrently (groups of several), the first
    // writer stopped before its shipper ran: the records ship from the files after a
    // restart. The stored JSON is the recorded start followed by the seal.
    let record_all = |writer: std::sync::Arc<isometer_store::UsageWriter>, from: usize| {
        let sealer = sealer.clone();
        (from..from + 30)
            .map(|i| {
                let (writer, sealer) = (writer.clone(), sealer.clone());
                tokio::spawn(async move {
                    let name = format!("sealed-{i}");
                    let attempts = 1 + (i % 3) as u16;
                    let events: Vec<UsageEvent> = (1..=attempts)
                        .map(|a| event(&name, "acme", a, Outcome::Success, "0.01"))
                        .collect();
                    let manifests: Vec<_> = (1..=attempts)
                        .map(|a| manifest(&name, a, &format!("{{\"task\":\"{name}\",\"a\":{a}")))
                        .collect();
                    let leaves = (1..=attempts).map(|a| [a as u8; 32]).collect();
                    let task = task(&name, "acme", &events);
                    let seals = writer
                        .record_sealed(events, task, manifests, leaves, sealer)
                        .await
                        .expect("recorded");
                    (name, seals)
                })
            })
            .collect::<Vec<_>>()
    };
    let mut answered = Vec::new();
    {
        let writer = std::sync::Arc::new(
            store
                .writer(WriterOptions {
                    // Nothing ships from the first writer.
                    batch_rows: 1_000_000,
                    max_delay: std::time::Duration::from_secs(600),
                    ..options()
                })
                .expect("writer"),
        );
        for t in record_all(writer, 0) {
            answered.push(t.await.expect("joined"));
        }
    }
    let writer = std::sync::Arc::new(store.writer(options()).expect("reopened"));
    for t in record_all(writer.clone(), 30) {
        answered.push(t.await.expect("joined"));
    }
    writer.flush().await.expect("flushed");
    let stored = store
        .manifests_by_trace("trace-sealed")
        .await
        .expect("manifests");
    assert_eq!(stored.len(), (0..60).map(|i| 1 + i % 3).sum::<usize>());
    let calls = sealer.calls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls < 60, "{calls} seal calls for 60 tasks");
    for (name, seals) in answered {
        for (a, seal) in (1..=seals.len()).zip(&seals) {
            let row = stored
                .iter()
                .find(|m| m.manifest_id == event_id(&name, a as u16))
                .unwrap_or_else(|| panic!("{name}/{a} stored"));
            let seal = std::str::from_utf8(seal).expect("utf-8");
            assert!(seal.ends_with(&format!("\"leaf\":{a}}}")), "{seal}");
            assert_eq!(row.signed, format!("{{\"task\":\"{name}\",\"a\":{a}{seal}"));
            let json: serde_json::Value = serde_json::from_str(&row.signed).expect("json");
            assert_eq!(json["leaf"], a);
            // The columns after the sealed one are intact.
            assert_eq!(row.output, vec![0xff, 0x00, 0x7f]);
            assert_eq!(row.logs, b"a log line");
        }
    }
}
