//! `Gateway::submit` with a policy that opens the network: the task's context and the
//! policy's allowlist reach the guest, and egress is metered in the recorded usage.

use isometer_core::{Outcome, SystemClock, Verdict};
use isometer_gateway::{Gateway, TaskRequest};
use isometer_policy::{Config, Policy, Tool};
use isometer_store::WriterOptions;
use isometer_testkit::upstream::Upstream;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The shipped configuration plus `send-email` for the standard tier, allowed to POST to
/// `upstream` only.
fn config(upstream: &Upstream) -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut config = Config::load(&dir).expect("shipped config");
    for tool in &mut config.tools {
        tool.artifact = isometer_testkit::guest(&tool.id);
    }
    config.tools.push(Tool {
        id: "send-email".into(),
        artifact: isometer_testkit::guest("send-email"),
        declared_at: "test".into(),
        description: "sends one email".into(),
        default_use_case: "notify".into(),
    });
    let template = config.policies[0].clone();
    config.policies.push(Policy {
        id: "send-email/standard".into(),
        tool_id: "send-email".into(),
        tenant_tier: "standard".into(),
        max_egress_requests: 1,
        network_allowlist: vec![
            upstream
                .addr
                .to_string()
                .parse::<isometer_policy::HostRule>()
                .expect("rule")
                .with_methods(vec!["POST".into()]),
        ],
        ..template
    });
    config
}

#[tokio::test]
async fn a_policy_allowlist_and_the_task_context_reach_the_tool() {
    let upstream = Upstream::start(202, r#"{"id":"m-9"}"#).await;
    let store = isometer_testkit::database().await;
    let gateway = Gateway::new(
        Arc::new(config(&upstream)),
        store.writer(WriterOptions::default()).expect("writer"),
        Arc::new(SystemClock),
    )
    .expect("gateway");
    let email = |endpoint: String| TaskRequest {
        tenant_id: "acme".into(),
        tool_id: "send-email".into(),
        input: json!({"endpoint": endpoint, "to": "ops@acme.test", "subject": "s", "body": "b"}),
        use_case: None,
        run_id: Some("run-1".into()),
        run_class: Default::default(),
        task_id: Some("task-email-1".into()),
        confidence: Some(0.8),
    };

    let response = gateway
        .submit(email(upstream.url("")))
        .await
        .expect("submitted");
    assert_eq!(
        response.outcome,
        Outcome::Success,
        "{:?}",
        response.attempts[0].detail
    );
    assert_eq!(response.output["id"], "m-9");
    let usage = &response.attempts[0].usage;
    assert_eq!(usage.egress_requests, 1);
    assert!(usage.egress_bytes > 100, "{usage:?}");
    let sent: Value = serde_json::from_slice(&upstream.received()[0].body).expect("json");
    assert_eq!(sent["task_id"], "task-email-1");

    // Another host: denied by the policy, nothing sent.
    let mut elsewhere = email("http://mail.example.test".into());
    elsewhere.task_id = Some("task-email-2".into());
    let response = gateway.submit(elsewhere).await.expect("submitted");
    assert_eq!(response.outcome, Outcome::EgressDenied);
    assert_eq!(upstream.received().len(), 1);

    // The initech tenant (free tier) has no policy for the tool at all.
    let mut free = email(upstream.url(""));
    free.tenant_id = "initech".into();
    free.task_id = Some("task-email-3".into());
    let response = gateway.submit(free).await.expect("submitted");
    assert_eq!(response.outcome, Outcome::PolicyDenied);
    assert_eq!(upstream.received().len(), 1);

    gateway.flush().await.expect("flushed");
    let events = store.task_events("task-email-1").await.expect("events");
    assert_eq!(events[0].usage.egress_requests, 1);
    assert_eq!(events[0].usage.egress_bytes, usage.egress_bytes);
    assert_eq!(events[0].policy_version, gateway.config().version);
    assert_eq!(
        (
            events[0].verdict,
            events[0].evidence_complete,
            events[0].confidence
        ),
        (Verdict::Allow, true, Some(0.8))
    );
    let denied = store.task_events("task-email-2").await.expect("events");
    assert_eq!(
        (denied[0].verdict, denied[0].outcome),
        (Verdict::Deny, Outcome::EgressDenied)
    );
}

/// With ClickHouse out of reach the spool fills; then tasks are answered `throttled`
/// without running, and the refusals are still recorded while the spool's margin lasts.
#[tokio::test]
async fn a_full_spool_throttles_new_tasks() {
    let upstream = Upstream::start(200, "{}").await;
    let unreachable = isometer_store::Store::new("http://127.0.0.1:9", "nowhere");
    let writer = unreachable
        .writer(WriterOptions {
            spool: isometer_store::SpoolOptions {
                max_bytes: 16 << 10,
                segment_bytes: 4 << 10,
                ..Default::default()
            },
            ..WriterOptions::default()
        })
        .expect("writer");
    let gateway =
        Gateway::new(Arc::new(config(&upstream)), writer, Arc::new(SystemClock)).expect("gateway");
    let summarize = || TaskRequest {
        tenant_id: "acme".into(),
        tool_id: "summarize".into(),
        input: json!({"text": "Spools fill. Tasks wait."}),
        use_case: None,
        run_id: None,
        run_class: Default::default(),
        task_id: None,
        confidence: None,
    };
    let mut ran = 0;
    let throttled = loop {
        let response = gateway.submit(summarize()).await.expect("answered");
        if response.outcome == Outcome::Throttled {
            break response;
        }
        assert_eq!(response.outcome, Outcome::Success);
        ran += 1;
        assert!(ran < 1_000, "the spool never filled");
    };
    assert!(ran > 5, "{ran} tasks ran before the spool filled");
    assert_eq!(
        throttled.attempts[0].usage,
        Default::default(),
        "nothing ran"
    );
    assert_eq!(throttled.total_cost, Default::default());
    // Past the margin, a task cannot even be recorded: an error, not a silent drop.
    let refused = loop {
        match gateway.submit(summarize()).await {
            Ok(response) => assert_eq!(response.outcome, Outcome::Throttled),
            Err(e) => break e,
        }
    };
    assert!(refused.to_string().contains("spool is full"), "{refused}");
}
