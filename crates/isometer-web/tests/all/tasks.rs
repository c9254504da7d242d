//! `POST /v1/tasks` as a tenant reaches it: the tenant comes from the API key, a full
//! queue answers 429 with `Retry-After` and a `throttled` record, and an operator lifts a
//! run's loop cap.

use super::{call, config, post_task_as};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use isometer_core::{LoopCap, Outcome, SystemClock};
use isometer_gateway::{Gateway, TaskResponse};
use isometer_policy::{Config, LoopCaps, Tier};
use isometer_store::{Store, WriterOptions};
use isometer_web::AppState;
use isometer_web::auth::{Role, create_key};
use serde_json::{Value, json};
use std::sync::Arc;

async fn app(store: &Store, config: Config) -> Router {
    let gateway = Gateway::new(
        Arc::new(config),
        store.writer(WriterOptions::default()).expect("writer"),
        isometer_testkit::signer(),
        Arc::new(SystemClock),
    )
    .expect("gateway");
    let state = AppState::new(Arc::new(gateway), store.clone());
    state.start().await.expect("started");
    isometer_web::router(state)
}

/// The test configuration with the standard tier (acme's) changed by `set`.
fn with_standard_tier(set: impl Fn(&mut Tier)) -> Config {
    let mut config = config();
    config
        .tiers
        .iter_mut()
        .filter(|tier| tier.id == "standard")
        .for_each(set);
    config
}

async fn key(store: &Store, role: Role, tenant: Option<&str>) -> String {
    create_key(store, role, tenant).await.expect("key").key
}

fn body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn the_tenant_is_the_api_keys() {
    let store = isometer_testkit::database().await;
    let router = app(&store, config()).await;
    let acme = key(&store, Role::Tenant, Some("acme")).await;
    let admin = key(&store, Role::Admin, None).await;
    let finance = key(&store, Role::Finance, None).await;
    let summarize = json!({"tool_id": "summarize", "input": {"text": "One. Two."}});

    let (status, bytes) = call(&router, post_task_as(&acme, &summarize)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let task: TaskResponse = serde_json::from_slice(&bytes).expect("task");
    assert_eq!(
        (task.tenant_id.as_str(), task.outcome),
        ("acme", Outcome::Success)
    );

    let cases = [
        (
            Some(acme.as_str()),
            json!({"tenant_id": "globex", "tool_id": "summarize"}),
            StatusCode::FORBIDDEN,
            "for tenant `acme` only",
        ),
        (
            Some(finance.as_str()),
            summarize.clone(),
            StatusCode::FORBIDDEN,
            "a finance key cannot submit tasks",
        ),
        (
            Some(admin.as_str()),
            summarize.clone(),
            StatusCode::BAD_REQUEST,
            "`tenant_id` is required",
        ),
        (None, summarize.clone(), StatusCode::UNAUTHORIZED, "API key"),
        (
            Some("ism_0000000000000000_nope"),
            summarize.clone(),
            StatusCode::UNAUTHORIZED,
            "",
        ),
    ];
    for (key, request, expected, words) in cases {
        let mut builder = Request::post("/v1/tasks").header("content-type", "application/json");
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        let (status, bytes) = call(
            &router,
            builder
                .body(Body::from(request.to_string()))
                .expect("request"),
        )
        .await;
        assert_eq!(status, expected, "{request}");
        let error = body(&bytes)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(words), "{error}");
    }
    // An admin names the tenant.
    let (status, bytes) = call(
        &router,
        post_task_as(
            &admin,
            &json!({"tenant_id": "globex", "tool_id": "summarize", "input": {"text": "One."}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body(&bytes)["tenant_id"], "globex");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_records_throttled() {
    let store = isometer_testkit::database().await;
    let config = with_standard_tier(|tier| {
        tier.max_concurrency = 1;
        tier.max_queue = 1;
    });
    let router = app(&store, config).await;
    let acme = key(&store, Role::Tenant, Some("acme")).await;
    let slow = |id: &str| json!({"tool_id": "slow", "task_id": id, "input": {"ms": 150}});
    let calls: Vec<_> = ["slow-1", "slow-2", "slow-3"]
        .into_iter()
        .map(|id| {
            let (router, request) = (router.clone(), post_task_as(&acme, &slow(id)));
            tokio::spawn(async move {
                let response = tower::ServiceExt::oneshot(router, request)
                    .await
                    .expect("infallible");
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().expect("ascii").to_owned());
                let status = response.status();
                let bytes = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .expect("body")
                    .to_bytes();
                (status, retry_after, body(&bytes))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.expect("joined"));
    }
    // One runs, one waits for its slot, one finds the queue full.
    let ok = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((ok, refused.len()), (2, 1), "{answers:?}");
    let (_, retry_after, refusal) = refused[0];
    let seconds: u64 = retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(seconds >= 1);
    assert_eq!(refusal["outcome"], "throttled");
    assert_eq!(refusal["retry_after_s"], json!(seconds));
    assert_eq!(refusal["total_cost"], "0");
    let refused_id = refusal["task_id"].as_str().expect("task id").to_owned();

    // The refusal is recorded, under an id of its own; the task id is free again.
    let (status, bytes) = call(&router, post_task_as(&acme, &slow(&refused_id))).await;
    assert_eq!(status, StatusCode::OK);
    let again = body(&bytes);
    assert_eq!(again["outcome"], "success");
    assert_eq!(again.get("repeated"), None);
    let writer_flushed = isometer_testkit::eventually(std::time::Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let counts = store.outcome_counts().await.ok()?;
            counts
                .iter()
                .find(|c| c.outcome == "throttled")
                .map(|c| c.attempts)
                .filter(|n| *n == 1)
        }
    })
    .await;
    assert!(writer_flushed.is_ok(), "one throttled record in ClickHouse");
    let ran = isometer_testkit::eventually(std::time::Duration::from_secs(10), || {
        let (store, id) = (store.clone(), refused_id.clone());
        async move {
            let events = store.task_events(&id).await.ok()?;
            (!events.is_empty()).then_some(events)
        }
    })
    .await
    .expect("the task's event in ClickHouse");
    assert_eq!(ran.len(), 1, "the task itself ran once");
    assert_eq!(ran[0].outcome, Outcome::Success);
}

#[tokio::test]
async fn a_tasks_server_timing_says_where_its_time_went() {
    let store = isometer_testkit::database().await;
    let config = with_standard_tier(|tier| tier.max_concurrency = 1);
    let router = app(&store, config).await;
    let acme = key(&store, Role::Tenant, Some("acme")).await;
    let slow = json!({"tool_id": "slow", "input": {"ms": 80}});
    // Two at once on one slot: both run 80 ms, and one waits for the other's slot.
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (router, request) = (router.clone(), post_task_as(&acme, &slow));
            tokio::spawn(async move {
                let response = tower::ServiceExt::oneshot(router, request)
                    .await
                    .expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
                let header = response.headers().get("server-timing").expect("header");
                header.to_str().expect("ascii").to_owned()
            })
        })
        .collect();
    let mut timings = Vec::new();
    for c in calls {
        let header = c.await.expect("joined");
        // `app;dur=MS` first, the handler's whole time; then the task's stages.
        let metrics: Vec<(String, f64)> = header
            .split(", ")
            .map(|m| {
                let (name, ms) = m.split_once(";dur=").unwrap_or_else(|| panic!("{header}"));
                (
                    name.to_owned(),
                    ms.parse().unwrap_or_else(|_| panic!("{header}")),
                )
            })
            .collect();
        let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["app", "admit", "run", "record"], "{header}");
        let ms = |name: &str| metrics.iter().find(|(n, _)| n == name).map(|m| m.1);
        let stages: f64 = metrics[1..].iter().map(|(_, ms)| ms).sum();
        assert!(
            stages <= metrics[0].1 + 0.1,
            "stages beyond the whole: {header}"
        );
        assert!(ms("run") >= Some(80.0), "the tool slept 80 ms: {header}");
        timings.push((ms("admit").unwrap_or_default(), header));
    }
    timings.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        timings[0].0 < 40.0,
        "the first was admitted at once: {timings:?}"
    );
    assert!(
        timings[1].0 >= 60.0,
        "the second waited for the slot: {timings:?}"
    );
}

#[tokio::test]
async fn an_operator_lifts_a_runs_loop_cap() {
    let store = isometer_testkit::database().await;
    let config = with_standard_tier(|tier| {
        tier.loop_caps = LoopCaps {
            max_low_confidence_streak: Some(1),
            ..LoopCaps::default()
        };
    });
    let router = app(&store, config).await;
    let acme = key(&store, Role::Tenant, Some("acme")).await;
    let admin = key(&store, Role::Admin, None).await;
    let finance = key(&store, Role::Finance, None).await;
    let low = |text: &str| json!({"tool_id": "summarize", "run_id": "loop-1", "confidence": 0.1, "input": {"text": text}});
    let (_, first) = call(&router, post_task_as(&acme, &low("One."))).await;
    assert_eq!(body(&first)["outcome"], "success");
    let (status, second) = call(&router, post_task_as(&acme, &low("Two."))).await;
    assert_eq!(status, StatusCode::OK);
    let second = body(&second);
    assert_eq!(second["outcome"], "capped");
    assert_eq!(second["cap"]["cap"], LoopCap::LowConfidenceStreak.as_str());

    let with = |method: &str, path: &str, key: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .expect("request")
    };
    let (status, bytes) = call(&router, with("GET", "/v1/admin/runs/acme/loop-1", &admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body(&bytes)["capped"]["cap"], "low_confidence_streak");
    let (status, _) = call(
        &router,
        with("POST", "/v1/admin/runs/acme/loop-1/reset", &finance),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &router,
        with("POST", "/v1/admin/runs/acme/no-such-run/reset", &admin),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, bytes) = call(
        &router,
        with("POST", "/v1/admin/runs/acme/loop-1/reset", &admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body(&bytes)["capped"]["cap"], "low_confidence_streak");
    let (_, third) = call(&router, post_task_as(&acme, &low("Three."))).await;
    assert_eq!(body(&third)["outcome"], "success");
}

fn get_as(key: &str, path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn kpis_are_read_by_role_and_a_tenant_sees_only_its_own() {
    let store = isometer_testkit::database().await;
    let router = app(&store, config()).await;
    let acme = key(&store, Role::Tenant, Some("acme")).await;
    let admin = key(&store, Role::Admin, None).await;
    let finance = key(&store, Role::Finance, None).await;
    let approver = key(&store, Role::Approver, None).await;
    let summarize = json!({"tool_id": "summarize", "input": {"text": "One. Two."}});
    for _ in 0..2 {
        let (status, _) = call(&router, post_task_as(&acme, &summarize)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut globex = summarize.clone();
    globex["tenant_id"] = json!("globex");
    let (status, _) = call(&router, post_task_as(&admin, &globex)).await;
    assert_eq!(status, StatusCode::OK);

    let today = chrono::Utc::now().date_naive();
    let path = format!("/v1/kpi?from={today}&to={today}");
    let shipped = isometer_testkit::eventually(std::time::Duration::from_secs(10), || {
        let (router, request) = (router.clone(), get_as(&finance, &path));
        async move {
            let (status, bytes) = call(&router, request).await;
            let k = (status == StatusCode::OK).then(|| body(&bytes))?;
            (k["tasks_total"] == 3).then_some(k)
        }
    })
    .await
    .expect("three tasks in the KPIs");
    assert_eq!(shipped["tasks_successful"], 3);
    assert!(shipped["cost_total"].is_string() && shipped["billed_total"].is_string());
    assert_eq!(shipped["tenant"], Value::Null);

    // A tenant key sees its own tasks only, and may not ask for another tenant's.
    let (status, bytes) = call(&router, get_as(&acme, &path)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let own = body(&bytes);
    assert_eq!(
        (own["tenant"].as_str(), own["tasks_total"].as_u64()),
        (Some("acme"), Some(2))
    );
    let (status, _) = call(&router, get_as(&acme, &format!("{path}&tenant=globex"))).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's figures do not exist for it"
    );
    let (status, _) = call(&router, get_as(&approver, &path)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, bytes) = call(
        &router,
        get_as(&finance, "/v1/kpi?from=2026-13-01&to=2026-12-01"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&bytes).contains("not a day"));
    let (status, _) = call(&router, get_as(&finance, &format!("{path}&tenant=nobody"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &router,
        get_as(&finance, "/v1/kpi?from=2026-11-02&to=2026-11-01"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
