//! The gateway under traffic: idempotent task ids, retries within retry budgets and the
//! fallback after them, loop caps per run (each trigger, and 64 concurrent submissions on
//! one run), all recorded in ClickHouse.

use isometer_core::{LoopCap, Money, Outcome, RetryStop, SystemClock};
use isometer_gateway::{Gateway, TaskRequest, TaskResponse};
use isometer_policy::{Config, Fallback, LoopCaps, Retry};
use isometer_store::{Store, WriterOptions};
use isometer_testkit::upstream::Upstream;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn gateway(store: &Store, config: Config) -> Arc<Gateway> {
    Arc::new(
        Gateway::new(
            Arc::new(config),
            store.writer(WriterOptions::default()).expect("writer"),
            isometer_testkit::signer(),
            Arc::new(SystemClock),
        )
        .expect("gateway"),
    )
}

fn task(tool: &str, input: Value) -> TaskRequest {
    TaskRequest::new("acme", tool, input)
}

/// The standard tier with `caps` for its runs.
fn with_caps(mut config: Config, caps: LoopCaps) -> Config {
    for tier in &mut config.tiers {
        if tier.id == "standard" {
            tier.loop_caps = caps.clone();
        }
    }
    config
}

#[tokio::test]
async fn a_task_id_runs_once_however_often_and_however_concurrently_it_is_submitted() {
    let upstream = Upstream::start(202, r#"{"id":"m-1"}"#).await;
    let store = isometer_testkit::database().await;
    let gateway = gateway(&store, crate::submit::config(&upstream));
    let email = |task_id: &str| TaskRequest {
        task_id: Some(task_id.into()),
        run_id: Some("run-once".into()),
        ..task(
            "send-email",
            json!({"endpoint": upstream.url(""), "to": "ops@acme.test", "subject": "s", "body": "b"}),
        )
    };
    let submissions: Vec<_> = (0..32)
        .map(|_| {
            let (gateway, request) = (gateway.clone(), email("once-1"));
            tokio::spawn(async move { gateway.submit(request).await.expect("answered") })
        })
        .collect();
    let mut answers = Vec::new();
    for s in submissions {
        answers.push(s.await.expect("joined"));
    }
    assert_eq!(upstream.received().len(), 1, "the email went out once");
    assert_eq!(answers.iter().filter(|a| !a.repeated).count(), 1);
    let first = answers
        .iter()
        .find(|a| !a.repeated)
        .expect("the one that ran");
    assert_eq!(first.outcome, Outcome::Success);
    for a in &answers {
        assert_eq!(
            a.attempts[0].manifest_digest,
            first.attempts[0].manifest_digest
        );
        assert_eq!((a.total_cost, &a.output), (first.total_cost, &first.output));
    }
    // Another tenant's task of the same id is its own task.
    let globex = gateway
        .submit(TaskRequest {
            tenant_id: "globex".into(),
            task_id: Some("once-1".into()),
            ..task("summarize", json!({"text": "One."}))
        })
        .await
        .expect("answered");
    assert!(!globex.repeated);

    // After a restart, the answer comes back from ClickHouse, and still nothing runs.
    gateway.flush().await.expect("flush");
    let restarted = crate::traffic::gateway(&store, crate::submit::config(&upstream));
    let since = restarted.now() - chrono::TimeDelta::hours(24);
    let keys = store.task_keys_since(since, 1_000).await.expect("keys");
    assert_eq!(restarted.remember_recorded_tasks(keys, true), 2);
    let again = restarted.submit(email("once-1")).await.expect("answered");
    assert!(again.repeated);
    assert_eq!(again.outcome, Outcome::Success);
    assert_eq!(again.output, first.output);
    assert_eq!(again.total_cost, first.total_cost);
    assert_eq!(
        again.attempts[0].manifest_digest,
        first.attempts[0].manifest_digest
    );
    assert_eq!(
        upstream.received().len(),
        1,
        "not sent again after the restart"
    );
    // A new id on the restarted gateway runs.
    let fresh = restarted.submit(email("once-2")).await.expect("answered");
    assert!(!fresh.repeated);
    assert_eq!(upstream.received().len(), 2);
    restarted.flush().await.expect("flush");
    let events = store.task_events("once-1").await.expect("events");
    let tenants: Vec<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
    assert_eq!(tenants.len(), 2, "{tenants:?}");
    assert!(tenants.contains(&"acme") && tenants.contains(&"globex"));

    // Answers pushed out of memory are read back from ClickHouse.
    let small = gateway_with_capacity(&store, crate::submit::config(&upstream), 1);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("evicted-{i}");
        let a = small.submit(email(&id)).await.expect("answered");
        assert!(!a.repeated);
        ids.push((id, a));
    }
    small.flush().await.expect("flush");
    let sent = upstream.received().len();
    for (id, before) in &ids {
        let a = small.submit(email(id)).await.expect("answered");
        assert!(a.repeated, "{id}");
        assert_eq!(
            a.attempts[0].manifest_digest,
            before.attempts[0].manifest_digest
        );
    }
    assert_eq!(upstream.received().len(), sent);
}

fn gateway_with_capacity(store: &Store, config: Config, capacity: usize) -> Arc<Gateway> {
    Arc::new(
        Gateway::new(
            Arc::new(config),
            store.writer(WriterOptions::default()).expect("writer"),
            isometer_testkit::signer(),
            Arc::new(SystemClock),
        )
        .expect("gateway")
        .with_idempotency_capacity(capacity),
    )
}

/// The flaky tool's roll for a seed and attempt (as the guest computes it).
fn roll(seed: u64, attempt: u64) -> u64 {
    let key = if attempt <= 1 {
        seed
    } else {
        seed ^ attempt.rotate_left(32)
    };
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 100
}

#[tokio::test]
async fn retries_follow_the_policy_until_the_tenant_budget_is_spent_then_the_fallback_answers() {
    let store = isometer_testkit::database().await;
    let mut config = crate::submit::config(&Upstream::start(200, "{}").await);
    for p in &mut config.policies {
        if p.id == "flaky/standard" {
            p.retry = Retry {
                max_attempts: 3,
                budget_ratio: 0.5,
                window: Duration::from_secs(300),
                backoff: Duration::from_millis(1),
                ..Retry::default()
            };
            p.fallback = Fallback::Static(r#"{"status":"deferred"}"#.into());
        }
    }
    let gateway = gateway(&store, config);
    let flaky = |seed: u64, fail_percent: u64| {
        task("flaky", json!({"seed": seed, "fail_percent": fail_percent}))
    };
    for seed in 0..4 {
        let ok = gateway.submit(flaky(seed, 0)).await.expect("answered");
        assert_eq!((ok.outcome, ok.attempts.len()), (Outcome::Success, 1));
    }
    // A seed whose first attempt fails and whose second succeeds at 50%.
    let seed = (0..10_000)
        .find(|s| roll(*s, 1) < 50 && roll(*s, 2) >= 50)
        .expect("such a seed");
    let retried = gateway
        .submit(TaskRequest {
            task_id: Some("retried".into()),
            ..flaky(seed, 50)
        })
        .await
        .expect("answered");
    let outcomes: Vec<Outcome> = retried.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Success]);
    assert_eq!(retried.outcome, Outcome::Success);
    assert!(!retried.fallback && retried.retry_stop.is_none());
    assert_eq!(
        retried.total_cost,
        retried.attempts.iter().map(|a| a.cost).sum::<Money>()
    );
    // Budget: half of the first attempts. 5 first attempts and 1 retry so far.
    let mut failing = Vec::new();
    for id in ["fail-a", "fail-b", "fail-c"] {
        let answer = gateway
            .submit(TaskRequest {
                task_id: Some(id.into()),
                ..flaky(7, 100)
            })
            .await
            .expect("answered");
        assert_eq!(answer.outcome, Outcome::Failed);
        assert!(answer.fallback, "{id}");
        assert_eq!(answer.output, json!({"status": "deferred"}));
        failing.push((answer.attempts.len(), answer.retry_stop));
    }
    assert_eq!(
        failing,
        [
            // 6 first attempts allow 3 retries: two more, then max_attempts.
            (3, Some(RetryStop::MaxAttempts)),
            // 7 allow 3.5: none left.
            (1, Some(RetryStop::RetryBudget)),
            // 8 allow 4: one more.
            (2, Some(RetryStop::RetryBudget)),
        ]
    );
    let budget = gateway.retry_budget("acme", "flaky").expect("a budget");
    assert_eq!((budget.first_attempts, budget.retries), (8, 4));

    gateway.flush().await.expect("flush");
    let (record, manifests) = store
        .recorded_task("acme", "fail-a")
        .await
        .expect("query")
        .expect("recorded");
    assert_eq!((record.outcome, record.attempts), (Outcome::Failed, 3));
    assert_eq!(record.control.retry_stop, Some(RetryStop::MaxAttempts));
    assert!(record.control.fallback);
    let numbers: Vec<u16> = manifests.iter().map(|m| m.attempt).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let (record, _) = store
        .recorded_task("acme", "fail-b")
        .await
        .expect("query")
        .expect("recorded");
    assert_eq!(record.control.retry_stop, Some(RetryStop::RetryBudget));
    let events = store.task_events("retried").await.expect("events");
    let attempts: Vec<(u16, Outcome)> = events.iter().map(|e| (e.attempt, e.outcome)).collect();
    assert_eq!(attempts, [(1, Outcome::Failed), (2, Outcome::Success)]);
}

fn caps(streak: Option<u32>, repeats: Option<u32>, spend: Option<Money>) -> LoopCaps {
    LoopCaps {
        low_confidence: 0.5,
        max_low_confidence_streak: streak,
        max_repeats: repeats,
        max_low_confidence_spend: spend,
        window: Duration::from_secs(600),
    }
}

fn in_run(run: &str, text: &str, confidence: Option<f32>) -> TaskRequest {
    TaskRequest {
        run_id: Some(run.into()),
        confidence,
        ..task("summarize", json!({ "text": text }))
    }
}

#[tokio::test]
async fn each_loop_cap_answers_capped_without_running_and_records_the_spend_it_avoided() {
    let store = isometer_testkit::database().await;
    let config = with_caps(
        crate::submit::config(&Upstream::start(200, "{}").await),
        caps(Some(3), Some(2), None),
    );
    let gateway = gateway(&store, config);

    // Three low-confidence tasks in a row run; the fourth caps the run.
    let mut costs = Vec::new();
    for text in ["One a.", "One b.", "One c."] {
        let ran = gateway
            .submit(in_run("streak", text, Some(0.2)))
            .await
            .expect("answered");
        assert_eq!(ran.outcome, Outcome::Success);
        costs.push(ran.total_cost);
    }
    let capped = gateway
        .submit(TaskRequest {
            task_id: Some("capped-streak".into()),
            ..in_run("streak", "One d.", Some(0.2))
        })
        .await
        .expect("answered");
    assert_eq!(capped.outcome, Outcome::Capped);
    let ticket = capped.cap.clone().expect("the cap");
    assert_eq!(ticket.cap, LoopCap::LowConfidenceStreak);
    let mean = costs.iter().sum::<Money>() / Money::from(3);
    assert_eq!(
        ticket.avoided_cost,
        mean.round_dp_with_strategy(12, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    );
    assert!(ticket.until.is_some());
    assert_eq!(capped.total_cost, Money::ZERO);
    assert_eq!(capped.attempts[0].usage, Default::default(), "nothing ran");
    // A capped run stays capped, even for a confident task, until an operator resets it.
    let still = gateway
        .submit(in_run("streak", "Sure.", Some(0.9)))
        .await
        .expect("answered");
    assert_eq!(still.outcome, Outcome::Capped);
    let before = gateway.reset_run_caps("acme", "streak").expect("tracked");
    assert_eq!(
        before.capped.map(|c| c.cap),
        Some(LoopCap::LowConfidenceStreak)
    );
    let after = gateway
        .submit(in_run("streak", "Sure.", Some(0.9)))
        .await
        .expect("answered");
    assert_eq!(after.outcome, Outcome::Success);
    // Other runs of the tenant were never affected.
    let other = gateway
        .submit(in_run("other", "One d.", Some(0.2)))
        .await
        .expect("answered");
    assert_eq!(other.outcome, Outcome::Success);

    // The same call twice runs; a third time caps the run.
    for _ in 0..2 {
        let ran = gateway
            .submit(in_run("repeat", "Again.", None))
            .await
            .expect("answered");
        assert_eq!(ran.outcome, Outcome::Success);
    }
    let repeated = gateway
        .submit(in_run("repeat", "Again.", None))
        .await
        .expect("answered");
    assert_eq!(
        repeated.cap.map(|c| c.cap),
        Some(LoopCap::RepeatedCall),
        "{:?}",
        repeated.outcome
    );

    // Once the run has spent its cap, a low-confidence task caps it; a confident one ran.
    gateway.flush().await.expect("flush");
    let gateway = self::gateway(
        &store,
        with_caps(
            crate::submit::config(&Upstream::start(200, "{}").await),
            caps(None, None, Some(Money::new(1, 12))),
        ),
    );
    let first = gateway
        .submit(in_run("spend", "Cheap.", Some(0.1)))
        .await
        .expect("answered");
    assert_eq!(first.outcome, Outcome::Success);
    let confident = gateway
        .submit(in_run("spend", "Sure.", Some(0.9)))
        .await
        .expect("answered");
    assert_eq!(confident.outcome, Outcome::Success);
    let over = gateway
        .submit(TaskRequest {
            task_id: Some("capped-spend".into()),
            ..in_run("spend", "Unsure.", Some(0.1))
        })
        .await
        .expect("answered");
    assert_eq!(over.cap.map(|c| c.cap), Some(LoopCap::LowConfidenceSpend));

    gateway.flush().await.expect("flush");
    let (record, _) = store
        .recorded_task("acme", "capped-streak")
        .await
        .expect("query")
        .expect("recorded");
    assert_eq!(record.outcome, Outcome::Capped);
    assert_eq!(record.control.cap, Some(LoopCap::LowConfidenceStreak));
    assert_eq!(record.control.avoided_cost, ticket.avoided_cost);
    assert_eq!(record.total_cost, Money::ZERO);
    let (record, _) = store
        .recorded_task("acme", "capped-spend")
        .await
        .expect("query")
        .expect("recorded");
    assert_eq!(record.control.cap, Some(LoopCap::LowConfidenceSpend));
    assert!(record.control.avoided_cost > Money::ZERO);
}

/// 64 submissions on one run at once: each cap lets through exactly what it allows.
#[tokio::test]
async fn caps_hold_under_64_concurrent_submissions_on_one_run() {
    let store = isometer_testkit::database().await;
    let upstream = Upstream::start(200, "{}").await;
    let cases: [(&str, LoopCaps, usize, LoopCap); 3] = [
        (
            "streak",
            caps(Some(5), None, None),
            5,
            LoopCap::LowConfidenceStreak,
        ),
        (
            "repeat",
            caps(None, Some(3), None),
            3,
            LoopCap::RepeatedCall,
        ),
        (
            "spend",
            caps(None, None, Some(Money::new(1, 12))),
            1,
            LoopCap::LowConfidenceSpend,
        ),
    ];
    for (run, caps, allowed, cap) in cases {
        let gateway = gateway(&store, with_caps(crate::submit::config(&upstream), caps));
        let submissions: Vec<_> = (0..64)
            .map(|i| {
                let gateway = gateway.clone();
                // The repeat case calls with one input and no confidence; the others
                // with low confidence and distinct inputs.
                let request = if run == "repeat" {
                    in_run(run, "Same.", None)
                } else {
                    in_run(run, &format!("Input {i}."), Some(0.1))
                };
                tokio::spawn(async move { gateway.submit(request).await.expect("answered") })
            })
            .collect();
        let mut answers: Vec<TaskResponse> = Vec::new();
        for s in submissions {
            answers.push(s.await.expect("joined"));
        }
        let ran = answers
            .iter()
            .filter(|a| a.outcome == Outcome::Success)
            .count();
        let capped: Vec<_> = answers
            .iter()
            .filter(|a| a.outcome == Outcome::Capped)
            .collect();
        assert_eq!((run, ran, capped.len()), (run, allowed, 64 - allowed));
        assert!(
            capped
                .iter()
                .all(|a| a.cap.as_ref().map(|c| c.cap) == Some(cap))
        );
        gateway.flush().await.expect("flush");
    }
}

/// `config` with the standard tier running one task of a tenant at once and queueing at
/// most `queue`, the flaky tool retried once after `backoff`, then the fallback, and the
/// slow tool allowed 5 s (a busy test machine stretches its sleeps).
async fn one_slot(queue: u32, backoff: Duration) -> Config {
    let mut config = crate::submit::config(&Upstream::start(200, "{}").await);
    for tier in &mut config.tiers {
        if tier.id == "standard" {
            (tier.max_concurrency, tier.max_queue) = (1, queue);
        }
    }
    for p in &mut config.policies {
        if p.id == "flaky/standard" {
            p.retry = Retry {
                max_attempts: 2,
                budget_ratio: 1.0,
                window: Duration::from_secs(300),
                backoff,
                ..Retry::default()
            };
            p.fallback = Fallback::Static(r#"{"status":"deferred"}"#.into());
        }
        if p.id == "slow/standard" {
            p.max_duration_ms = 5_000;
        }
    }
    config
}

fn failing(id: &str) -> TaskRequest {
    TaskRequest {
        task_id: Some(id.into()),
        ..task("flaky", json!({"seed": 1, "fail_percent": 100}))
    }
}

/// Submits a task of the flaky tool that always fails (`id`) and, `after` that, a task of
/// the slow tool sleeping `ms`: the slow task's answer, when it came (from the first
/// submission), and the failing task's answer.
async fn beside_a_retry(
    gateway: &Arc<Gateway>,
    id: &str,
    after: Duration,
    ms: u64,
) -> (TaskResponse, Duration, TaskResponse) {
    let started = std::time::Instant::now();
    let retrying = tokio::spawn({
        let (gateway, failing) = (gateway.clone(), failing(id));
        async move { gateway.submit(failing).await }
    });
    tokio::time::sleep(after).await;
    let other = gateway
        .submit(task("slow", json!({ "ms": ms })))
        .await
        .expect("answered");
    let other_done = started.elapsed();
    let retried = retrying.await.expect("joined").expect("answered");
    (other, other_done, retried)
}

#[tokio::test]
async fn a_task_waiting_out_its_backoff_leaves_its_slot_to_the_tenants_other_tasks() {
    let store = isometer_testkit::database().await;
    let backoff = Duration::from_millis(1200);
    let gateway = gateway(&store, one_slot(4, backoff).await);
    let started = std::time::Instant::now();
    // The first attempt fails at once; its retry waits 1.2 s.
    let (other, other_done, retried) =
        beside_a_retry(&gateway, "retrying", Duration::from_millis(150), 20).await;
    assert_eq!(other.outcome, Outcome::Success);
    assert!(
        other_done < backoff / 2,
        "the tenant's one slot stayed with a task in its backoff: the other task ended after {other_done:?}"
    );
    assert!(started.elapsed() >= backoff);
    let outcomes: Vec<Outcome> = retried.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Failed]);
    assert_eq!(retried.retry_stop, Some(RetryStop::MaxAttempts));
    assert!(retried.fallback);
}

#[tokio::test]
async fn a_retry_that_finds_no_slot_after_its_backoff_ends_with_the_fallback() {
    let store = isometer_testkit::database().await;
    // One slot and no queue: while the retry waits 300 ms, a 700 ms task takes the slot.
    let gateway = gateway(&store, one_slot(0, Duration::from_millis(300)).await);
    let (holder, _, answer) =
        beside_a_retry(&gateway, "no-slot", Duration::from_millis(100), 700).await;
    assert_eq!(holder.outcome, Outcome::Success);
    assert_eq!(answer.attempts.len(), 1);
    assert_eq!(answer.retry_stop, Some(RetryStop::NoSlot));
    assert!(answer.fallback);
    assert_eq!(answer.output, json!({"status": "deferred"}));

    gateway.flush().await.expect("flush");
    let (record, _) = store
        .recorded_task("acme", "no-slot")
        .await
        .expect("query")
        .expect("recorded");
    assert_eq!((record.outcome, record.attempts), (Outcome::Failed, 1));
    assert_eq!(record.control.retry_stop, Some(RetryStop::NoSlot));
    assert!(record.control.fallback);
}
