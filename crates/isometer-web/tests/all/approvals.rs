//! Destructive tools wait for an approver: an approval is single-use, bound to its task
//! and input, expires, and survives a restart.

use super::{call, config, post_task};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::TimeDelta;
use isometer_core::{Clock, ManualClock, Outcome, SystemClock};
use isometer_gateway::{Gateway, TaskResponse};
use isometer_policy::{Config, Policy, Tool};
use isometer_store::{Store, WriterOptions};
use isometer_testkit::upstream::Upstream;
use isometer_web::AppState;
use isometer_web::auth::{Role, create_key};
use serde_json::{Value, json};
use std::sync::Arc;

/// The shipped configuration plus `send-email`, destructive, for the standard tier.
fn with_email(upstream: &Upstream) -> Config {
    let mut config = config();
    config.tools.push(Tool {
        id: "send-email".into(),
        artifact: isometer_testkit::guest("send-email"),
        declared_at: "test".into(),
        description: "sends one email".into(),
        default_use_case: "notify".into(),
        sha256: None,
        destructive: true,
    });
    let template = config.policies[0].clone();
    config.policies.push(Policy {
        id: "send-email/standard".into(),
        tool_id: "send-email".into(),
        tenant_tier: "standard".into(),
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

async fn app(store: &Store, config: Config, clock: Arc<ManualClock>) -> (Router, AppState) {
    let gateway = Gateway::new(
        Arc::new(config),
        store.writer(WriterOptions::default()).expect("writer"),
        isometer_testkit::signer(),
        clock,
    )
    .expect("gateway")
    .with_approval_ttl(std::time::Duration::from_secs(600));
    let state = AppState::new(Arc::new(gateway), store.clone());
    state.start().await.expect("started");
    let acme = create_key(store, Role::Tenant, Some("acme"))
        .await
        .expect("key")
        .key;
    (
        super::acting_as(isometer_web::router(state.clone()), acme),
        state,
    )
}

fn email(upstream: &Upstream, task_id: &str, to: &str, approval: Option<&str>) -> Value {
    json!({
        "tenant_id": "acme", "tool_id": "send-email", "task_id": task_id,
        "input": {"endpoint": upstream.url(""), "to": to, "subject": "refund", "body": "done"},
        "approval_id": approval,
    })
}

async fn submit(router: &Router, body: &Value) -> (StatusCode, Value) {
    let (status, bytes) = call(router, post_task(body)).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

async fn decide(
    router: &Router,
    key: &str,
    id: &str,
    verdict: &str,
    body: &str,
) -> (StatusCode, Value) {
    let request = Request::post(format!("/v1/approvals/{id}/{verdict}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let (status, bytes) = call(router, request).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get_with(router: &Router, key: &str, path: &str) -> (StatusCode, Value) {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request");
    let (status, bytes) = call(router, request).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn destructive_tools_wait_for_a_single_use_approval_bound_to_their_input() {
    let upstream = Upstream::start(202, r#"{"id":"m-1"}"#).await;
    let store = isometer_testkit::database().await;
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let (router, state) = app(&store, with_email(&upstream), clock.clone()).await;
    let approver = create_key(&store, Role::Approver, None)
        .await
        .expect("key")
        .key;
    let finance = create_key(&store, Role::Finance, None)
        .await
        .expect("key")
        .key;
    let acme = create_key(&store, Role::Tenant, Some("acme"))
        .await
        .expect("key")
        .key;
    let globex = create_key(&store, Role::Tenant, Some("globex"))
        .await
        .expect("key")
        .key;

    // Asked: nothing runs, the task waits.
    let (status, waiting) = submit(&router, &email(&upstream, "mail-1", "a@acme.test", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(waiting["outcome"], "approval_required");
    assert_eq!(waiting["attempts"], json!([]));
    assert_eq!(waiting["approval"]["state"], "pending");
    let id = waiting["approval"]["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, again) = submit(&router, &email(&upstream, "mail-1", "a@acme.test", None)).await;
    assert_eq!(
        again["approval"]["approval_id"],
        json!(id),
        "the same request, the same approval"
    );
    let (_, early) = submit(
        &router,
        &email(&upstream, "mail-1", "a@acme.test", Some(&id)),
    )
    .await;
    assert_eq!(early["outcome"], "approval_required", "still pending");
    assert!(upstream.received().is_empty());

    // Only an approver decides; the tenant can see its own approval, no other tenant can.
    for key in [&finance, &acme] {
        let (status, _) = decide(&router, key, &id, "approve", "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, shown) = get_with(&router, &acme, &format!("/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        shown["input"]["to"], "a@acme.test",
        "the approver sees what would run"
    );
    let (status, _) = get_with(&router, &globex, &format!("/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, queue) = get_with(&router, &approver, "/v1/approvals").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(queue.as_array().map(Vec::len), Some(1));
    // The queue page shows it with its forms; the approve form decides it.
    let request = Request::get("/approvals")
        .header("authorization", format!("Bearer {approver}"))
        .body(Body::empty())
        .expect("request");
    let (status, page) = call(&router, request).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!(r#"data-approval="{id}""#))
            && page.contains(&format!(r#"action="/approvals/{id}/approve""#)),
        "{page}"
    );
    let form = |key: &str| {
        Request::post(format!("/approvals/{id}/approve"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("csrf=&reason=refund+ok"))
            .expect("request")
    };
    let (status, _) = call(&router, form(&finance)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only approvers decide, on pages too"
    );
    let (status, _) = call(&router, form(&approver)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, approved) = get_with(&router, &approver, &format!("/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(
        (approved["state"].as_str(), approved["reason"].as_str()),
        (Some("approved"), Some("refund ok"))
    );
    let (status, _) = decide(&router, &approver, &id, "deny", "").await;
    assert_eq!(status, StatusCode::CONFLICT, "decided already");

    // Bound to the task and its input.
    let (status, refused) = submit(
        &router,
        &email(&upstream, "mail-1", "b@acme.test", Some(&id)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        refused["error"].as_str().expect("error").contains("input"),
        "{refused}"
    );
    let (status, _) = submit(
        &router,
        &email(&upstream, "mail-9", "a@acme.test", Some(&id)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(upstream.received().is_empty());

    // The approved task runs once, under its approval.
    let (status, ran) = submit(
        &router,
        &email(&upstream, "mail-1", "a@acme.test", Some(&id)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ran: TaskResponse = serde_json::from_value(ran).expect("response");
    assert_eq!(
        ran.outcome,
        Outcome::Success,
        "{:?}",
        ran.attempts[0].detail
    );
    assert_eq!(
        ran.attempts[0].manifest.manifest.approval_id.as_deref(),
        Some(id.as_str())
    );
    assert_eq!(upstream.received().len(), 1);
    // The task id ran: submitting it again, with its approval or without, answers the
    // stored result, and nothing is sent again.
    for approval in [Some(id.as_str()), None] {
        let (status, again) = submit(
            &router,
            &email(&upstream, "mail-1", "a@acme.test", approval),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["repeated"], true);
        assert_eq!(again["outcome"], "success");
        assert_eq!(
            again["attempts"][0]["manifest_digest"],
            json!(ran.attempts[0].manifest_digest)
        );
    }
    assert_eq!(upstream.received().len(), 1);

    // Denied: the task is recorded as policy_denied, with the approver's reason.
    let (_, second) = submit(&router, &email(&upstream, "mail-2", "c@acme.test", None)).await;
    let denied_id = second["approval"]["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, denied) = decide(
        &router,
        &approver,
        &denied_id,
        "deny",
        r#"{"reason":"not a customer"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(denied["state"], "denied");
    // The denied task's answer is final: submitting it again answers that, runs nothing.
    let (status, again) = submit(
        &router,
        &email(&upstream, "mail-2", "c@acme.test", Some(&denied_id)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&again["outcome"], &again["repeated"]),
        (&json!("policy_denied"), &json!(true))
    );

    // Expired: no decision in time; the task is recorded as approval_required.
    let (_, third) = submit(&router, &email(&upstream, "mail-3", "d@acme.test", None)).await;
    let expired_id = third["approval"]["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    clock.advance(TimeDelta::seconds(601));
    assert_eq!(state.gateway.expire_approvals().await.expect("swept"), 1);
    let (status, _) = decide(&router, &approver, &expired_id, "approve", "").await;
    assert_eq!(status, StatusCode::CONFLICT, "too late");
    assert_eq!(
        upstream.received().len(),
        1,
        "only the approved task ever ran"
    );

    state.gateway.flush().await.expect("flushed");
    let outcome = |task: &'static str| {
        let store = store.clone();
        async move {
            let events = store.task_events(task).await.expect("events");
            assert_eq!(events.len(), 1, "{task}: one attempt recorded");
            events[0].outcome
        }
    };
    assert_eq!(outcome("mail-1").await, Outcome::Success);
    assert_eq!(outcome("mail-2").await, Outcome::PolicyDenied);
    assert_eq!(outcome("mail-3").await, Outcome::ApprovalRequired);
    let (_, all) = get_with(&router, &approver, "/v1/approvals?state=all").await;
    let mut states: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["state"].as_str().expect("state"))
        .collect();
    states.sort_unstable();
    assert_eq!(states, ["denied", "expired", "used"]);

    // A pending approval survives a restart.
    let (_, fourth) = submit(&router, &email(&upstream, "mail-4", "e@acme.test", None)).await;
    let open_id = fourth["approval"]["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (restarted, _) = app(&store, with_email(&upstream), clock.clone()).await;
    let (status, approved) = decide(&restarted, &approver, &open_id, "approve", "").await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let (status, ran) = submit(
        &restarted,
        &email(&upstream, "mail-4", "e@acme.test", Some(&open_id)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ran["outcome"], "success");
}
