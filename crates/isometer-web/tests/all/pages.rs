//! The dashboard pages, the portal, the evidence viewer and their JSON twins: every figure
//! on a page is the API's, every route refuses the wrong role and the wrong tenant, and
//! browser sessions carry CSRF tokens.

use super::call;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use isometer_gateway::TaskRequest;
use isometer_store::Store;
use isometer_web::AppState;
use isometer_web::auth::{Role, create_key};
use serde_json::{Value, json};
use std::collections::HashMap;

struct Seeded {
    router: Router,
    store: Store,
    keys: HashMap<&'static str, String>,
    /// A trace of acme's and one of globex's.
    acme_trace: String,
    globex_trace: String,
}

/// A server with a few tasks of two tenants recorded, and a key per role.
async fn seeded() -> Seeded {
    let store = isometer_testkit::database().await;
    let gateway = super::gateway_over(&store);
    let state = AppState::new(gateway.clone(), store.clone());
    state.start().await.expect("started");
    let tasks = [
        ("acme", "summarize", json!({"text": "One. Two."}), "acme-1"),
        ("acme", "summarize", json!({"txt": "fails"}), "acme-2"),
        (
            "acme",
            "flaky",
            json!({"seed": 1, "fail_percent": 0}),
            "acme-3",
        ),
        ("globex", "summarize", json!({"text": "Three."}), "globex-1"),
        ("initech", "busy", json!({}), "initech-1"),
    ];
    for (tenant, tool, input, id) in tasks {
        let request: TaskRequest = serde_json::from_value(json!({
            "tenant_id": tenant, "tool_id": tool, "input": input, "task_id": id,
        }))
        .expect("request");
        gateway.submit(request).await.expect("submitted");
    }
    gateway.flush().await.expect("flushed");
    let mut keys = HashMap::new();
    for (name, role, tenant) in [
        ("admin", Role::Admin, None),
        ("finance", Role::Finance, None),
        ("pm", Role::Pm, None),
        ("approver", Role::Approver, None),
        ("acme", Role::Tenant, Some("acme")),
        ("globex", Role::Tenant, Some("globex")),
    ] {
        let key = create_key(&store, role, tenant).await.expect("key").key;
        keys.insert(name, key);
    }
    Seeded {
        router: isometer_web::router(state),
        store,
        keys,
        acme_trace: "acme-1".into(),
        globex_trace: "globex-1".into(),
    }
}

async fn get_as(s: &Seeded, who: &str, path: &str) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(key) = s.keys.get(who) {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let (status, body) = call(&s.router, request.body(Body::empty()).expect("request")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The text of every element that carries `attribute="value"`, its tags stripped.
fn texts_in(html: &str, marker: &str) -> Vec<String> {
    html.split(marker)
        .skip(1)
        .map(|rest| {
            let inner = rest.split("</div></div>").next().unwrap_or_default();
            strip_tags(inner)
        })
        .collect()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
}

#[tokio::test]
async fn every_figure_on_a_dashboard_page_is_the_apis() {
    let s = seeded().await;
    let pages = [
        ("/", "overview", ""),
        ("/tenants", "tenants", ""),
        ("/tenants/acme", "tenant", "tenant=acme"),
        ("/margin", "margin", ""),
        ("/slo", "slo", ""),
        ("/loops", "loops", ""),
    ];
    for (path, page, query) in pages {
        let (status, html) = get_as(&s, "finance", path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        let (status, body) = get_as(&s, "finance", &format!("/v1/pages/{page}?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}: {body}");
        let view = json_of(&body);
        let panels = view["panels"].as_array().expect("panels");
        assert!(!panels.is_empty());
        for panel in panels {
            let id = panel["id"].as_str().expect("id");
            assert!(
                html.contains(&format!("data-panel=\"{id}\"")),
                "{path}: panel {id} missing"
            );
            for card in panel["cards"].as_array().into_iter().flatten() {
                let kpi = card["kpi"].as_str().expect("kpi");
                let shown = texts_in(&html, &format!("data-kpi=\"{kpi}\">"));
                let expected = format!(
                    "{}{}",
                    card["label"].as_str().expect("label"),
                    card["value"].as_str().expect("value")
                );
                assert_eq!(shown, vec![expected], "{path}: card {kpi}");
            }
            if let Some(table) = panel.get("table") {
                for row in table["rows"].as_array().expect("rows") {
                    let cells: Vec<String> = row
                        .as_array()
                        .expect("cells")
                        .iter()
                        .map(|c| c["text"].as_str().expect("text").to_owned())
                        .collect();
                    let needle = cells.join("");
                    assert!(
                        strip_tags(&html).replace('\n', "").contains(&needle),
                        "{path}: row {cells:?} not on the page"
                    );
                }
            }
            if let Some(chart) = panel.get("chart") {
                let points = chart["series"]
                    .as_array()
                    .expect("series")
                    .iter()
                    .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                    .filter(|v| !v.is_null())
                    .count();
                let section = html
                    .split(&format!("data-panel=\"{id}\""))
                    .nth(1)
                    .and_then(|r| r.split("</section>").next())
                    .expect("chart section");
                assert!(section.contains("<svg"), "{path}: {id} has no chart");
                assert_eq!(
                    section.matches("data-value=").count(),
                    points,
                    "{path}: {id} draws one mark per value"
                );
            }
        }
    }

    // The figures are the KPIs': the overview's successful tasks and cost.
    let (_, body) = get_as(&s, "finance", "/v1/pages/overview").await;
    let view = json_of(&body);
    let cards: HashMap<String, Value> = view["panels"][0]["cards"]
        .as_array()
        .expect("cards")
        .iter()
        .map(|c| (c["kpi"].as_str().expect("kpi").to_owned(), c.clone()))
        .collect();
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(29);
    let (_, body) = get_as(&s, "finance", &format!("/v1/kpi?from={from}&to={today}")).await;
    let kpi = json_of(&body);
    assert_eq!(
        cards["tasks_successful"]["raw"],
        json!(kpi["tasks_successful"].to_string())
    );
    assert_eq!(cards["cost_total"]["raw"], kpi["cost_total"]);
    assert_eq!(kpi["tasks_total"], json!(5));
}

#[tokio::test]
async fn every_route_refuses_the_wrong_role_and_the_wrong_tenant() {
    let s = seeded().await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let acme_statement = format!("/portal/acme/{month}");
    let globex_statement = format!("/portal/globex/{month}");
    let acme_evidence = format!("/evidence?trace={}", s.acme_trace);
    let globex_evidence = format!("/evidence?trace={}", s.globex_trace);
    let v1_acme_evidence = format!("/v1/evidence/{}", s.acme_trace);
    let v1_globex_evidence = format!("/v1/evidence/{}", s.globex_trace);
    let v1_acme_statement = format!("/v1/statements/acme/{month}");
    let v1_globex_statement = format!("/v1/statements/globex/{month}");
    let acme_csv = format!("{acme_statement}/statement.csv");
    let globex_csv = format!("{globex_statement}/statement.csv");
    let today = chrono::Utc::now().date_naive();
    let kpi_acme = format!("/v1/kpi?from={today}&to={today}&tenant=acme");
    let kpi_globex = format!("/v1/kpi?from={today}&to={today}&tenant=globex");
    use StatusCode as S;
    const OK: S = S::OK;
    const FORBIDDEN: S = S::FORBIDDEN;
    const NOT_FOUND: S = S::NOT_FOUND;
    const REDIRECT: S = S::SEE_OTHER;
    // (path, admin, finance, pm, approver, acme's key)
    let cases: Vec<(&str, [S; 5])> = vec![
        ("/", [OK, OK, OK, REDIRECT, REDIRECT]),
        ("/tenants", [OK, OK, OK, FORBIDDEN, FORBIDDEN]),
        ("/tenants/acme", [OK, OK, OK, FORBIDDEN, FORBIDDEN]),
        (
            "/tenants/nobody",
            [NOT_FOUND, NOT_FOUND, NOT_FOUND, FORBIDDEN, FORBIDDEN],
        ),
        ("/margin", [OK, OK, OK, FORBIDDEN, FORBIDDEN]),
        ("/slo", [OK, OK, OK, FORBIDDEN, FORBIDDEN]),
        ("/loops", [OK, OK, OK, FORBIDDEN, FORBIDDEN]),
        ("/approvals", [OK, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN]),
        ("/evidence", [OK, OK, OK, FORBIDDEN, OK]),
        (&acme_evidence, [OK, OK, OK, FORBIDDEN, OK]),
        (&globex_evidence, [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
        ("/portal", [OK, OK, OK, FORBIDDEN, OK]),
        ("/portal?tenant=globex", [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
        (&acme_statement, [OK, OK, OK, FORBIDDEN, OK]),
        (&globex_statement, [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
        (&acme_csv, [OK, OK, OK, FORBIDDEN, OK]),
        (&globex_csv, [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
        ("/v1/pages/overview", [OK, OK, OK, FORBIDDEN, FORBIDDEN]),
        (
            "/v1/pages/tenant?tenant=acme",
            [OK, OK, OK, FORBIDDEN, FORBIDDEN],
        ),
        (
            "/v1/pages/nothing",
            [NOT_FOUND, NOT_FOUND, NOT_FOUND, FORBIDDEN, FORBIDDEN],
        ),
        (&v1_acme_evidence, [OK, OK, OK, FORBIDDEN, OK]),
        (&v1_globex_evidence, [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
        ("/v1/statements?tenant=acme", [OK, OK, OK, FORBIDDEN, OK]),
        (
            "/v1/statements?tenant=globex",
            [OK, OK, OK, FORBIDDEN, NOT_FOUND],
        ),
        (&v1_acme_statement, [OK, OK, OK, FORBIDDEN, OK]),
        (&kpi_acme, [OK, OK, OK, FORBIDDEN, OK]),
        (&kpi_globex, [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
        (
            "/v1/spool",
            [OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN],
        ),
        ("/v1/approvals", [OK, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN]),
        (
            "/v1/admin/config",
            [OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN],
        ),
        (&v1_globex_statement, [OK, OK, OK, FORBIDDEN, NOT_FOUND]),
    ];
    for (path, expected) in &cases {
        for (who, status) in ["admin", "finance", "pm", "approver", "acme"]
            .into_iter()
            .zip(expected)
        {
            let (got, body) = get_as(&s, who, path).await;
            assert_eq!(got, *status, "{who} GET {path}: {body}");
        }
        // Without a key: pages send the browser to the login page, the API answers 401.
        let (got, _) = get_as(&s, "nobody", path).await;
        let anonymous = if path.starts_with("/v1/") {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::SEE_OTHER
        };
        assert_eq!(got, anonymous, "anonymous GET {path}");
    }
}

#[tokio::test]
async fn a_browser_signs_in_with_a_key_and_every_form_needs_its_csrf_token() {
    let s = seeded().await;
    let (status, _) = get_as(&s, "nobody", "/margin?from=2026-11-01").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let response = tower::ServiceExt::oneshot(
        s.router.clone(),
        Request::get("/login?next=/margin")
            .body(Body::empty())
            .expect("request"),
    )
    .await
    .expect("login page");
    let cookie = set_cookie(&response, "isometer_login").expect("login cookie");
    let (_, body) = call(
        &s.router,
        Request::get("/login").body(Body::empty()).expect("request"),
    )
    .await;
    assert!(String::from_utf8_lossy(&body).contains(r#"name="csrf""#));

    let post = |csrf: &str, key: &str, cookie: Option<&str>| {
        let mut request =
            Request::post("/login").header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            request = request.header("cookie", format!("isometer_login={c}"));
        }
        request
            .body(Body::from(format!("key={key}&csrf={csrf}&next=%2Fmargin")))
            .expect("request")
    };
    let admin = s.keys["admin"].clone();
    let (status, _) = call(&s.router, post("forged", &admin, Some(&cookie))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a forged login token");
    let (status, _) = call(&s.router, post(&cookie, &admin, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no login cookie");
    let (status, body) = call(&s.router, post(&cookie, "ism_bad_key", Some(&cookie))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("not valid"));

    let response =
        tower::ServiceExt::oneshot(s.router.clone(), post(&cookie, &admin, Some(&cookie)))
            .await
            .expect("login");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/margin");
    let session = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("isometer_session="))
        .expect("session cookie")
        .to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    let token = session
        .trim_start_matches("isometer_session=")
        .split(';')
        .next()
        .expect("token")
        .to_owned();
    let with_session = |method: &str, path: &str, form: Option<String>| {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", format!("isometer_session={token}"))
            .header("content-type", "application/x-www-form-urlencoded");
        request
            .body(form.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request")
    };
    let (status, body) = call(&s.router, with_session("GET", "/margin", None)).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&body).into_owned();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the sign-out form's token")
        .to_owned();

    // Forms posted with the session cookie need the session's token.
    for path in [
        "/logout",
        "/approvals/nothing/approve",
        &format!(
            "/portal/acme/{}/reissue",
            chrono::Utc::now().format("%Y-%m")
        ),
    ] {
        let (status, body) = call(
            &s.router,
            with_session("POST", path, Some("csrf=forged".into())),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "POST {path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(String::from_utf8_lossy(&body).contains("CSRF"), "{path}");
    }
    let (status, _) = call(
        &s.router,
        with_session("POST", "/logout", Some(format!("csrf={csrf}"))),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = call(&s.router, with_session("GET", "/margin", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session ended");

    // An open redirect is not possible through `next`.
    let (status, _) = call(&s.router, {
        let fresh = tower::ServiceExt::oneshot(
            s.router.clone(),
            Request::get("/login").body(Body::empty()).expect("request"),
        )
        .await
        .expect("login page");
        let c = set_cookie(&fresh, "isometer_login").expect("cookie");
        Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("isometer_login={c}"))
            .body(Body::from(format!(
                "key={admin}&csrf={c}&next=%2F%2Fevil.example"
            )))
            .expect("request")
    })
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

fn set_cookie(response: &axum::response::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_portal_serves_statements_and_the_evidence_viewer_verifies() {
    let s = seeded().await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let (status, body) = get_as(&s, "acme", "/v1/statements?tenant=acme").await;
    assert_eq!(status, StatusCode::OK);
    let months = json_of(&body);
    assert_eq!(months[0]["period"], json!(month));
    assert_eq!(months[0]["status"], "draft");

    let (status, body) = get_as(&s, "acme", &format!("/v1/statements/acme/{month}")).await;
    assert_eq!(status, StatusCode::OK);
    let statement = json_of(&body);
    assert_eq!(statement["status"], "draft");
    let (_, html) = get_as(&s, "acme", &format!("/portal/acme/{month}")).await;
    let total = texts_in(&html, r#"data-figure="total">"#);
    let mut exact: rust_decimal::Decimal = statement["statement"]["total"]
        .as_str()
        .expect("total")
        .parse()
        .expect("decimal");
    // The page shows the total to the currency's minor unit (cents for USD).
    exact.rescale(2);
    assert_eq!(total, vec![format!("Total{exact}")]);
    let lines = statement["statement"]["lines"].as_array().expect("lines");
    assert_eq!(
        lines.len(),
        2,
        "acme's two successful use cases are billed: {lines:?}"
    );

    let response = tower::ServiceExt::oneshot(
        s.router.clone(),
        Request::get(format!("/portal/acme/{month}/statement.csv"))
            .header("authorization", format!("Bearer {}", s.keys["acme"]))
            .body(Body::empty())
            .expect("request"),
    )
    .await
    .expect("csv");
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .expect("header")
            .contains(&format!("statement-acme-{month}.csv"))
    );
    let (status, _) = get_as(&s, "acme", &format!("/portal/acme/{month}/nothing.pdf")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_as(&s, "acme", "/portal/acme/2026-13").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = get_as(&s, "acme", &format!("/v1/evidence/{}", s.acme_trace)).await;
    assert_eq!(status, StatusCode::OK);
    let evidence = json_of(&body);
    let manifest = &evidence["manifests"][0];
    assert_eq!(manifest["verified"], json!(true), "{manifest}");
    assert_eq!(manifest["problems"], json!([]));
    let (_, html) = get_as(&s, "acme", &format!("/evidence?trace={}", s.acme_trace)).await;
    assert!(
        html.contains(r#"<span class="ok verdict">verified</span>"#),
        "{html}"
    );
    // Reissuing is finance's (or an admin's), never a tenant's or a product manager's.
    for who in ["acme", "pm", "approver"] {
        let request = Request::post(format!("/portal/acme/{month}/reissue"))
            .header("authorization", format!("Bearer {}", s.keys[who]))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("csrf="))
            .expect("request");
        let (status, _) = call(&s.router, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who} reissues");
    }
    let request = Request::post(format!("/portal/globex/{month}/reissue"))
        .header("authorization", format!("Bearer {}", s.keys["finance"]))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("csrf="))
        .expect("request");
    let (status, _) = call(&s.router, request).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "finance reissues any tenant's"
    );
    let (status, _) = get_as(&s, "acme", "/v1/evidence/no-such-trace").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let _ = &s.store;
}

#[tokio::test]
async fn metrics_and_readiness_report_what_the_server_did() {
    let s = seeded().await;
    let (status, body) = get_as(&s, "nobody", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "isometer_tasks_total{tenant=\"acme\",outcome=\"success\"} 2",
        "isometer_tasks_total{tenant=\"acme\",outcome=\"failed\"} 1",
        "isometer_tasks_total{tenant=\"initech\",outcome=\"policy_denied\"} 1",
        "isometer_task_duration_seconds_count 5",
        "isometer_spool_lag_records 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }
    let (status, body) = get_as(&s, "nobody", "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
