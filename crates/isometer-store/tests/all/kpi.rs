//! Billing's questions answered from the rollups equal the answers from the raw tables,
//! including for rows recorded before the rollups existed.

use chrono::{DateTime, NaiveDate, Utc};
use isometer_core::{
    Money, Outcome, RunClass, TaskControl, TaskRecord, Usage, UsageEvent, Verdict, event_id,
};
use isometer_store::{Filter, Migration, Source, Store, WriterOptions};

fn at(day: u32, ms: i64) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 10, day)
        .expect("day")
        .and_hms_opt(12, 0, 0)
        .expect("time")
        .and_utc()
        + chrono::TimeDelta::milliseconds(ms)
}

/// A spread of tasks over three days, two tenants, two use cases, retries, denials and
/// exploratory runs; costs and wall times vary so the histograms hold many values.
fn workload(prefix: &str) -> Vec<(Vec<UsageEvent>, TaskRecord)> {
    let mut out = Vec::new();
    for i in 0..600_u32 {
        let tenant = if i % 3 == 0 { "globex" } else { "acme" };
        let use_case = if i % 5 == 0 { "research" } else { "summaries" };
        let run_class = if i % 7 == 0 {
            RunClass::Exploratory
        } else {
            RunClass::Customer
        };
        let attempts = 1 + u16::try_from(i % 4 / 3).expect("small");
        let denied = i % 11 == 0;
        let task_id = format!("{prefix}-{i}");
        let events: Vec<UsageEvent> = (1..=attempts)
            .map(|attempt| {
                let last = attempt == attempts;
                let outcome = match (denied, last) {
                    (true, _) => Outcome::PolicyDenied,
                    (false, true) => Outcome::Success,
                    (false, false) => Outcome::Failed,
                };
                UsageEvent {
                    event_id: event_id(&task_id, attempt),
                    time: at(1 + i % 3, i64::from(i)),
                    tenant_id: tenant.into(),
                    tier: "standard".into(),
                    use_case: use_case.into(),
                    tool_id: "summarize".into(),
                    task_id: task_id.clone(),
                    run_id: format!("run-{}", i % 9),
                    run_class,
                    attempt,
                    outcome,
                    exit_code: None,
                    usage: Usage {
                        fuel: 1_000 + u64::from(i) * 7_919,
                        wall_time_us: 900 + u64::from(i * i % 4_001),
                        ..Usage::default()
                    },
                    policy_id: if denied {
                        String::new()
                    } else {
                        "summarize/standard".into()
                    },
                    policy_version: "v".into(),
                    verdict: if denied {
                        Verdict::Deny
                    } else {
                        Verdict::Allow
                    },
                    evidence_complete: !denied && i % 13 != 0,
                    confidence: None,
                    artifact_hash: "ab".into(),
                    rate_card_version: "standard-2026-01".into(),
                    cost: if denied {
                        Money::ZERO
                    } else {
                        Money::new(i64::from(200_000 + i * i * 37), 12)
                    },
                }
            })
            .collect();
        let last = events.last().expect("an attempt");
        let task = TaskRecord {
            task_id: task_id.clone(),
            submitted: events[0].time,
            finished: last.time,
            tenant_id: tenant.into(),
            tier: "standard".into(),
            use_case: use_case.into(),
            tool_id: "summarize".into(),
            run_id: last.run_id.clone(),
            run_class,
            outcome: last.outcome,
            attempts,
            total_cost: events.iter().map(|e| e.cost).sum(),
            compliant: events
                .iter()
                .all(|e| e.verdict == Verdict::Allow && e.evidence_complete),
            control: TaskControl::default(),
        };
        out.push((events, task));
    }
    out
}

async fn assert_sources_agree(store: &Store, filter: &Filter) {
    let rollup = store
        .task_groups(filter, Source::Rollup)
        .await
        .expect("rollup");
    assert!(!rollup.is_empty());
    assert_eq!(
        rollup,
        store.task_groups(filter, Source::Raw).await.expect("raw")
    );
    let rollup = store
        .attempt_groups(filter, Source::Rollup)
        .await
        .expect("rollup");
    assert!(!rollup.is_empty());
    assert_eq!(
        rollup,
        store
            .attempt_groups(filter, Source::Raw)
            .await
            .expect("raw")
    );
    let mut rollup = store
        .task_cost_p95(filter, Source::Rollup)
        .await
        .expect("rollup");
    let mut raw = store.task_cost_p95(filter, Source::Raw).await.expect("raw");
    rollup.sort_by(|a, b| (&a.tenant_id, &a.key).cmp(&(&b.tenant_id, &b.key)));
    raw.sort_by(|a, b| (&a.tenant_id, &a.key).cmp(&(&b.tenant_id, &b.key)));
    assert!(!rollup.is_empty());
    assert_eq!(rollup, raw);
    let mut rollup = store
        .latency_p95(filter, Source::Rollup)
        .await
        .expect("rollup");
    let mut raw = store.latency_p95(filter, Source::Raw).await.expect("raw");
    rollup.sort_by(|a, b| (&a.tenant_id, &a.key).cmp(&(&b.tenant_id, &b.key)));
    raw.sort_by(|a, b| (&a.tenant_id, &a.key).cmp(&(&b.tenant_id, &b.key)));
    assert!(!rollup.is_empty());
    assert_eq!(rollup, raw);
}

#[tokio::test]
async fn rollups_and_raw_tables_give_the_same_answers() {
    let store = isometer_testkit::empty_database().await;
    // Attempts recorded before the billing rollups existed are filled into them.
    let before: Vec<Migration> = Migration::shipped()
        .expect("shipped")
        .into_iter()
        .filter(|m| m.version <= 10)
        .collect();
    store.migrate_with(&before).await.expect("migrated to 0010");
    let old: Vec<UsageEvent> = workload("old").into_iter().flat_map(|(e, _)| e).collect();
    store
        .bulk_insert_events(&old, 1_000)
        .await
        .expect("inserted");
    store.migrate().await.expect("migrated");
    let everything = Filter::days(
        NaiveDate::from_ymd_opt(2026, 10, 1).expect("day"),
        NaiveDate::from_ymd_opt(2026, 10, 31).expect("day"),
    );
    let attempts = store
        .attempt_groups(&everything, Source::Rollup)
        .await
        .expect("rollup");
    assert_eq!(
        attempts.iter().map(|g| g.attempts).sum::<u64>(),
        old.len() as u64
    );

    let writer = store.writer(WriterOptions::default()).expect("writer");
    for (events, task) in workload("new") {
        writer.record(events, task).await.expect("queued");
    }
    writer.flush().await.expect("flushed");
    assert_sources_agree(&store, &everything).await;

    let groups = store
        .task_groups(&everything, Source::Rollup)
        .await
        .expect("groups");
    assert_eq!(groups.iter().map(|g| g.tasks).sum::<u64>(), 600);
    let compliant: u64 = groups.iter().filter(|g| g.compliant).map(|g| g.tasks).sum();
    let expected = workload("new").iter().filter(|(_, t)| t.compliant).count() as u64;
    assert_eq!(compliant, expected);
    assert!(compliant < 600 && compliant > 400, "{compliant}");

    // Narrower filters agree too.
    let mut one = everything.clone();
    one.tenant_id = Some("acme".into());
    one.from = NaiveDate::from_ymd_opt(2026, 10, 2).expect("day");
    one.run_class = Some(RunClass::Customer);
    assert_sources_agree(&store, &one).await;
    let mut tool = everything.clone();
    tool.use_case = Some("research".into());
    tool.tool_id = Some("summarize".into());
    assert_sources_agree(&store, &tool).await;
}

#[tokio::test]
async fn synthetic_usage_is_consistent_and_reaches_the_rollups() {
    let store = isometer_testkit::database().await;
    let from = NaiveDate::from_ymd_opt(2026, 9, 1).expect("day");
    let first = store
        .fill_synthetic(0, 20_000, from, 30, 20)
        .await
        .expect("filled");
    let second = store
        .fill_synthetic(20_000, 10_000, from, 30, 20)
        .await
        .expect("filled");
    let events = first.events + second.events;
    // One in ten tasks that ran retried once, one in fifty twice.
    assert!(events > 32_000 && events < 35_000, "{events}");
    let books = store.reconcile().await.expect("reconcile");
    assert_eq!((books.tasks, books.distinct_tasks), (30_000, 30_000));
    assert_eq!((books.events, books.distinct_events), (events, events));
    assert_eq!(books.task_cost, books.event_cost);
    assert_eq!(books.rollup_task_cost, books.task_cost);
    let month = Filter::days(from, NaiveDate::from_ymd_opt(2026, 9, 30).expect("day"));
    assert_sources_agree(&store, &month).await;
    let groups = store
        .task_groups(&month, Source::Rollup)
        .await
        .expect("groups");
    let tenants: std::collections::BTreeSet<&str> =
        groups.iter().map(|g| g.tenant_id.as_str()).collect();
    assert_eq!(tenants.len(), 20);
    assert!(tenants.contains("tenant-07") && tenants.contains("tenant-19"));
    let attempts: u64 = groups.iter().map(|g| g.attempts).sum();
    assert_eq!(attempts, events);
}
