//! Web tests: the router driven without a socket, over real wasm tools and a real
//! ClickHouse database per test.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use isometer_core::{Outcome, SystemClock};
use isometer_gateway::{Gateway, TaskResponse};
use isometer_policy::Config;
use isometer_store::{Store, WriterOptions};
use isometer_web::AppState;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

mod approvals;
mod control;
mod pages;
mod tasks;

/// The shipped configuration, with the tools pointed at the freshly built guests.
fn config() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut config = Config::load(&dir).expect("shipped config");
    for tool in &mut config.tools {
        tool.artifact = isometer_testkit::guest(&tool.id);
    }
    config
}

/// A gateway over the shipped configuration, recording into `store`.
fn gateway_over(store: &Store) -> Arc<Gateway> {
    Arc::new(
        Gateway::new(
            Arc::new(config()),
            store.writer(WriterOptions::default()).expect("writer"),
            isometer_testkit::signer(),
            Arc::new(SystemClock),
        )
        .expect("gateway"),
    )
}

async fn app() -> (Router, Store, Arc<Gateway>) {
    let store = isometer_testkit::database().await;
    let gateway = gateway_over(&store);
    let router = isometer_web::router(AppState::new(gateway.clone(), store.clone()));
    let admin = isometer_web::auth::create_key(&store, isometer_web::auth::Role::Admin, None)
        .await
        .expect("admin key")
        .key;
    (acting_as(router, admin), store, gateway)
}

/// `router`, with `key` as the API key of every request that carries none.
fn acting_as(router: Router, key: String) -> Router {
    router.layer(axum::middleware::map_request(
        move |mut request: Request<Body>| {
            let key = key.clone();
            async move {
                if !request.headers().contains_key("authorization") {
                    let value = format!("Bearer {key}").parse().expect("header value");
                    request.headers_mut().insert("authorization", value);
                }
                request
            }
        },
    ))
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = tower::ServiceExt::oneshot(router.clone(), request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn get(router: &Router, path: &str) -> (StatusCode, Vec<u8>) {
    call(
        router,
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await
}

fn post_task(body: &Value) -> Request<Body> {
    Request::post("/v1/tasks")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn post_task_as(key: &str, body: &Value) -> Request<Body> {
    Request::post("/v1/tasks")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("request")
}

#[tokio::test]
async fn a_task_runs_in_wasm_and_its_rated_usage_reads_back_from_clickhouse() {
    let (router, store, gateway) = app().await;
    let (status, body) = call(
        &router,
        post_task(&json!({
            "tenant_id": "acme",
            "tool_id": "summarize",
            "input": { "text": "Agents call tools. Tools cost money. Money matters." },
            "task_id": "task-1",
            "run_id": "run-1",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let task: TaskResponse = serde_json::from_slice(&body).expect("task response");
    assert_eq!(
        (task.outcome, task.task_id.as_str(), task.use_case.as_str()),
        (Outcome::Success, "task-1", "support-summary")
    );
    assert_eq!(task.output["sentences"], json!(3));
    let attempt = &task.attempts[0];
    assert!(
        attempt.usage.fuel > 1_000 && attempt.usage.peak_memory_bytes >= 65_536,
        "{attempt:?}"
    );
    assert!(task.total_cost > isometer_core::Money::ZERO);
    assert_eq!(attempt.manifest_digest.len(), 64);

    gateway.flush().await.expect("flush");
    let events = store.task_events("task-1").await.expect("query");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        (
            event.tenant_id.as_str(),
            event.tool_id.as_str(),
            event.outcome
        ),
        ("acme", "summarize", Outcome::Success)
    );
    assert_eq!(event.usage, attempt.usage);
    assert_eq!(event.cost, task.total_cost);
    assert_eq!(
        (event.policy_id.as_str(), event.rate_card_version.as_str()),
        ("summarize/standard", "standard-2026-01")
    );
    assert_eq!(event.event_id, "task-1/1");
}

#[tokio::test]
async fn guest_failures_are_outcomes_and_denials_are_recorded_at_no_cost() {
    let (router, store, gateway) = app().await;
    let cases = [
        (
            json!({"tenant_id": "acme", "tool_id": "summarize", "input": {"txt": "no text"}}),
            Outcome::Failed,
        ),
        (
            json!({"tenant_id": "acme", "tool_id": "busy", "input": {"rounds": 60_000_000}}),
            Outcome::FuelExhausted,
        ),
        (
            json!({"tenant_id": "acme", "tool_id": "busy", "input": {"rounds": 1, "alloc_kib": 200_000}}),
            Outcome::MemoryExceeded,
        ),
        // The free tier has no policy for the CPU-heavy tool: deny by default.
        (
            json!({"tenant_id": "initech", "tool_id": "busy", "input": {}}),
            Outcome::PolicyDenied,
        ),
        (
            json!({"tenant_id": "acme", "tool_id": "no-such-tool"}),
            Outcome::PolicyDenied,
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = call(&router, post_task(&request)).await;
        assert_eq!(status, StatusCode::OK);
        let task: TaskResponse = serde_json::from_slice(&body).expect("task response");
        assert_eq!(
            task.outcome, expected,
            "{request}: {:?}",
            task.attempts[0].detail
        );
        if expected == Outcome::PolicyDenied {
            assert_eq!(task.total_cost, isometer_core::Money::ZERO);
        }
    }
    gateway.flush().await.expect("flush");
    let outcomes = store.outcome_counts().await.expect("outcomes");
    let denied = outcomes
        .iter()
        .find(|o| o.outcome == "policy_denied")
        .map(|o| o.attempts);
    assert_eq!(denied, Some(2));
    assert_eq!(store.totals().await.expect("totals").events, 5);
}

#[tokio::test]
async fn bad_requests_get_400_with_a_reason_and_record_nothing() {
    let (router, store, gateway) = app().await;
    let cases = [
        (Body::from("{not json"), "JSON"),
        (
            Body::from(json!({"tenant_id": "nobody", "tool_id": "summarize"}).to_string()),
            "unknown tenant `nobody`",
        ),
        (
            Body::from(
                json!({"tenant_id": "acme", "tool_id": "summarize", "task_id": "a b"}).to_string(),
            ),
            "task_id",
        ),
        (
            Body::from(json!({"tenant_id": "acme", "tool": "summarize"}).to_string()),
            "unknown field",
        ),
        (
            Body::from(json!({"tenant_id": "acme", "tool_id": "<script>"}).to_string()),
            "tool_id must be",
        ),
    ];
    for (body, words) in cases {
        let request = Request::post("/v1/tasks")
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let (status, body) = call(&router, request).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(words), "{text} should mention {words}");
    }
    gateway.flush().await.expect("flush");
    assert_eq!(store.totals().await.expect("totals").events, 0);
}

#[tokio::test]
async fn the_tenants_page_shows_task_counts_and_cost_from_clickhouse() {
    let (router, _store, gateway) = app().await;
    let (status, body) = get(&router, "/tenants").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains(
            r#"data-kpi="tasks_total"><div class="label">Tasks</div><div class="value">0<"#
        ),
        "{page}"
    );

    for (tenant, seed) in [("acme", 1), ("acme", 2), ("globex", 3)] {
        let request = json!({"tenant_id": tenant, "tool_id": "flaky", "input": {"seed": seed, "fail_percent": 0}});
        let (status, _) = call(&router, post_task(&request)).await;
        assert_eq!(status, StatusCode::OK);
    }
    gateway.flush().await.expect("flush");
    let (status, body) = get(&router, "/tenants").await;
    let page = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(
            r#"data-kpi="tasks_total"><div class="label">Tasks</div><div class="value">3<"#
        ),
        "{page}"
    );
    let acme_row = page
        .split(r#"<a href="/tenants/acme">"#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("acme row");
    assert!(
        acme_row.contains(r#"<td class="num">2</td>"#) && acme_row.contains("USD"),
        "{acme_row}"
    );
    assert!(page.contains(r#"<a href="/tenants/globex">"#));
}

#[tokio::test]
async fn health_reports_the_clickhouse_version() {
    let (router, _store, _gateway) = app().await;
    let (status, body) = get(&router, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let health: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(health["status"], "ok");
    assert!(health["clickhouse"].as_str().is_some_and(|v| !v.is_empty()));
}

#[tokio::test]
async fn health_is_503_when_clickhouse_is_unreachable() {
    let gateway = Arc::new(
        Gateway::new(
            Arc::new(config()),
            isometer_testkit::database()
                .await
                .writer(WriterOptions::default())
                .expect("writer"),
            isometer_testkit::signer(),
            Arc::new(SystemClock),
        )
        .expect("gateway"),
    );
    // Port 9 on loopback: nothing listens there.
    let router = isometer_web::router(AppState::new(
        gateway,
        Store::new("http://127.0.0.1:9", "nowhere"),
    ));
    let (status, body) = get(&router, "/healthz").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let page = Request::get("/")
        .header("authorization", "Bearer ism_0000_1111")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(&router, page).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !String::from_utf8_lossy(&body).contains("127.0.0.1:9"),
        "5xx bodies are generic"
    );
}

#[tokio::test]
async fn the_spool_reports_its_lag() {
    let (router, _store, gateway) = app().await;
    let (status, _) = call(
        &router,
        post_task(
            &json!({"tenant_id": "acme", "tool_id": "summarize", "input": {"text": "One. Two."}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    gateway.flush().await.expect("flushed");
    let (status, body) = get(&router, "/v1/spool").await;
    assert_eq!(status, StatusCode::OK);
    let spool: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(spool["spool"]["shipped_seq"], 1, "{spool}");
    assert_eq!(spool["spool"]["lag_records"], 0, "{spool}");
    assert_eq!(spool["spool"]["lag_ms"], Value::Null, "{spool}");
    assert_eq!(spool["rejected_batches"], 0, "{spool}");
}

#[tokio::test]
async fn upstreams_introspect_per_task_credentials() {
    let (router, _store, gateway) = app().await;
    let introspect = |body: String| {
        Request::post("/v1/credentials/introspect")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request")
    };
    let context = isometer_gateway::TaskContext {
        task_id: "task-7".into(),
        attempt: 1,
        tenant_id: "acme".into(),
        tool_id: "fetch".into(),
        ..Default::default()
    };
    let token = gateway.credentials().mint(
        &context,
        "allow-host crm.example.test",
        std::time::Duration::from_secs(60),
    );
    let (status, body) = call(&router, introspect(json!({ "token": token }).to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let seen: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(seen["active"], true);
    assert_eq!(
        (&seen["task_id"], &seen["tenant_id"], &seen["scope"]),
        (
            &json!("task-7"),
            &json!("acme"),
            &json!("allow-host crm.example.test")
        )
    );

    gateway.credentials().revoke_attempt("task-7", 1);
    let (_, body) = call(&router, introspect(json!({ "token": token }).to_string())).await;
    assert_eq!(body, br#"{"active":false}"#);
    let (status, _) = call(&router, introspect("{\"tok\": 1}".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
