//! API keys and roles, and the configuration's reload and rollback through the admin API.

use super::{call, post_task_as};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use isometer_core::SystemClock;
use isometer_gateway::{Gateway, TaskResponse};
use isometer_policy::Config;
use isometer_store::{Store, WriterOptions};
use isometer_web::AppState;
use isometer_web::auth::{self, Role};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// A copy of the shipped configuration whose tools point at the freshly built guests,
/// in a directory the test may edit.
fn config_dir() -> tempfile::TempDir {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let dir = tempfile::tempdir().expect("temporary directory");
    for entry in std::fs::read_dir(&shipped).expect("shipped config") {
        let path = entry.expect("entry").path();
        let mut text = std::fs::read_to_string(&path).expect("config file");
        if path.file_name().is_some_and(|n| n == "tools.toml") {
            text = text
                .lines()
                .map(|line| match line.strip_prefix("id = \"") {
                    Some(id) => {
                        let id = id.trim_end_matches('"');
                        let artifact = isometer_testkit::guest(id);
                        format!("{line}\nartifact = {:?}", artifact.display().to_string())
                    }
                    None if line.starts_with("artifact = ") => String::new(),
                    None => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("copy");
    }
    dir
}

async fn app(dir: &Path) -> (Router, AppState) {
    let store = isometer_testkit::database().await;
    let gateway = Gateway::new(
        Arc::new(Config::load(dir).expect("config")),
        store.writer(WriterOptions::default()).expect("writer"),
        isometer_testkit::signer(),
        Arc::new(SystemClock),
    )
    .expect("gateway");
    let state = AppState::new(Arc::new(gateway), store);
    state.start().await.expect("start recorded");
    (isometer_web::router(state.clone()), state)
}

async fn key(store: &Store, role: Role, tenant: Option<&str>) -> String {
    auth::create_key(store, role, tenant)
        .await
        .expect("key")
        .key
}

fn with_key(method: &str, path: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Body::empty()).expect("request")
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn admin_routes_need_a_live_admin_key() {
    let dir = config_dir();
    let (router, state) = app(dir.path()).await;
    let admin = key(&state.store, Role::Admin, None).await;
    let finance = key(&state.store, Role::Finance, None).await;
    let tenant = key(&state.store, Role::Tenant, Some("acme")).await;

    for path in ["/v1/admin/config/reload", "/v1/admin/config/rollback"] {
        let (status, _) = call(&router, with_key("POST", path, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a key");
        let (status, _) = call(&router, with_key("POST", path, Some("ism_nope_nope"))).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a made-up key"
        );
        let forged = format!("{}x", &admin[..admin.len() - 1]);
        let (status, _) = call(&router, with_key("POST", path, Some(&forged))).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong secret"
        );
        for other in [&finance, &tenant] {
            let (status, body) = call(&router, with_key("POST", path, Some(other))).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} with a non-admin key");
            assert!(
                json_of(&body)["error"]
                    .as_str()
                    .expect("a string")
                    .contains("admin")
            );
        }
    }
    let (status, body) = call(&router, with_key("GET", "/v1/admin/config", Some(&admin))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body)["version"].as_str(),
        Some(state.gateway.config().version.as_str())
    );

    // A revoked key stops working once the server's key cache is refreshed.
    let admin_id = admin.split('_').nth(1).expect("key id").to_owned();
    assert!(
        auth::revoke_key(&state.store, &admin_id)
            .await
            .expect("ClickHouse answers")
    );
    assert!(
        !auth::revoke_key(&state.store, &admin_id)
            .await
            .expect("ClickHouse answers")
    );
    // The request that finds the cache past its refresh is answered from it; the keys
    // are read again behind it.
    let deadline = std::time::Instant::now() + auth::REFRESH * 5;
    loop {
        let (status, _) = call(&router, with_key("GET", "/v1/admin/config", Some(&admin))).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(
            status,
            StatusCode::OK,
            "a key is either in force or revoked"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still works {:?} after its revocation",
            auth::REFRESH * 5
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Keys are kept hashed: the secret is nowhere in the table.
    let rows = state.store.api_keys().await.expect("ClickHouse answers");
    assert_eq!(rows.len(), 3);
    let secret = finance.rsplit('_').next().expect("secret");
    assert!(rows.iter().all(|r| !r.secret_sha256.contains(secret)));
    assert!(
        auth::create_key(&state.store, Role::Tenant, None)
            .await
            .is_err()
    );
    assert!(
        auth::create_key(&state.store, Role::Admin, Some("acme"))
            .await
            .is_err()
    );
}

/// The policy id each version gives summarize for standard tenants.
fn summarize_policy(response: &TaskResponse) -> (&str, &str) {
    let manifest = &response.attempts[0].manifest.manifest;
    (&manifest.policy_version, &manifest.policy_id)
}

async fn summarize(router: &Router, key: &str) -> TaskResponse {
    let (status, body) = call(
        router,
        post_task_as(
            key,
            &json!({"tenant_id": "acme", "tool_id": "summarize", "input": {"text": "One. Two."}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("task response")
}

#[tokio::test]
async fn reloads_are_whole_invalid_ones_change_nothing_and_rollback_is_timed() {
    let dir = config_dir();
    let (router, state) = app(dir.path()).await;
    let admin = key(&state.store, Role::Admin, None).await;
    let first = state.gateway.config().version.clone();
    let (status, body) = call(
        &router,
        with_key("POST", "/v1/admin/config/reload", Some(&admin)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body)["changed"],
        json!(false),
        "same files, same version"
    );

    // A new version renames the policy: every task sees one version whole, never the
    // new version with the old policy or the other way round.
    let policies = dir.path().join("policies.toml");
    let original = std::fs::read_to_string(&policies).expect("config file");
    std::fs::write(
        &policies,
        original.replace(
            "id = \"summarize/standard\"",
            "id = \"summarize/standard-v2\"",
        ),
    )
    .expect("config file");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (router, admin) = (router.clone(), admin.clone());
            tokio::spawn(async move { summarize(&router, &admin).await })
        })
        .collect();
    let (status, body) = call(
        &router,
        with_key("POST", "/v1/admin/config/reload", Some(&admin)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let reloaded = json_of(&body);
    assert_eq!(reloaded["changed"], json!(true));
    let second = reloaded["version"].as_str().expect("a string").to_owned();
    assert_ne!(second, first);
    assert_eq!(
        reloaded["applied"]["change"]["previous_version"],
        json!(first)
    );
    for task in tasks {
        let response = task.await.expect("ClickHouse answers");
        let (version, policy) = summarize_policy(&response);
        let expected = if version == first {
            "summarize/standard"
        } else {
            assert_eq!(version, second);
            "summarize/standard-v2"
        };
        assert_eq!(policy, expected, "a task ran under one version whole");
    }
    let after = summarize(&router, &admin).await;
    assert_eq!(
        summarize_policy(&after),
        (second.as_str(), "summarize/standard-v2")
    );

    // An invalid file is refused with its file, line and field; the active version stays.
    std::fs::write(
        &policies,
        original.replace("max_fuel = 50_000_000", "max_fuel = \"lots\""),
    )
    .expect("config file");
    let (status, body) = call(
        &router,
        with_key("POST", "/v1/admin/config/reload", Some(&admin)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let refused = json_of(&body);
    let problem = refused["problems"][0].as_str().expect("a string");
    assert!(
        problem.contains("policies.toml:") && problem.contains("max_fuel"),
        "{problem}"
    );
    assert_eq!(state.gateway.config().version, second);
    // So is a version whose tool cannot be loaded, caught before anything is swapped.
    std::fs::write(&policies, &original).expect("config file");
    let tools = dir.path().join("tools.toml");
    let tools_text = std::fs::read_to_string(&tools).expect("config file");
    std::fs::write(
        &tools,
        tools_text.replacen("summarize.wasm", "missing.wasm", 1),
    )
    .expect("config file");
    let (status, body) = call(
        &router,
        with_key("POST", "/v1/admin/config/reload", Some(&admin)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(state.gateway.config().version, second);
    assert_eq!(
        summarize_policy(&summarize(&router, &admin).await).1,
        "summarize/standard-v2"
    );

    // Rollback restores the first version; its activation time is recorded once a task
    // ran under it.
    let (status, body) = call(
        &router,
        with_key("POST", "/v1/admin/config/rollback", Some(&admin)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let rolled = json_of(&body);
    assert_eq!(rolled["change"]["version"], json!(first));
    assert_eq!(rolled["recorded"], json!(true));
    let back = summarize(&router, &admin).await;
    assert_eq!(
        summarize_policy(&back),
        (first.as_str(), "summarize/standard")
    );
    let (status, _) = call(
        &router,
        with_key("POST", "/v1/admin/config/rollback", Some(&admin)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing further back");

    state.gateway.flush().await.expect("ClickHouse answers");
    let (status, body) = call(&router, with_key("GET", "/v1/admin/config", Some(&admin))).await;
    assert_eq!(status, StatusCode::OK);
    let status = json_of(&body);
    let changes = status["changes"].as_array().expect("a list");
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["kind"].as_str().expect("a string"))
        .collect();
    assert_eq!(kinds, ["rollback", "reload", "start"]);
    let rollback = &changes[0];
    let requested = rollback["requested_ms"].as_u64().expect("a number");
    let first_task = rollback["first_task_ms"].as_u64().expect("a number");
    let back_started =
        u64::try_from(back.attempts[0].manifest.manifest.started_ms).expect("after 1970");
    assert_eq!(
        first_task, back_started,
        "the first task under the restored version"
    );
    assert_eq!(
        rollback["activation_ms"].as_u64(),
        Some(first_task - requested)
    );
    assert_eq!(rollback["actor"].as_str(), admin.split('_').nth(1));
    assert_eq!(changes[1]["version"], json!(second));
}
