//! JSON endpoints.

use crate::auth::{Principal, Role};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use isometer_core::Outcome;
use isometer_gateway::TaskRequest;
use serde_json::{Value, json};

/// `GET /healthz`: 200 when ClickHouse answers, 503 otherwise.
pub(crate) async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.server_version().await {
        Ok(version) => (
            StatusCode::OK,
            Json(
                json!({ "status": "ok", "clickhouse": version, "config_version": state.gateway.config().version }),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check: ClickHouse unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "clickhouse": "unreachable" })),
            )
        }
    }
}

/// `POST /v1/tasks`: runs a task and answers its outcome, output, usage and cost.
///
/// The tenant is the API key's: a tenant key submits for its own tenant (a `tenant_id` in
/// the body must be that one); an admin key names the tenant in the body. A task refused
/// for load answers 429 with `Retry-After` (and the task's record, outcome `throttled`).
pub(crate) async fn create_task(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<TaskRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut request) =
        body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    match (principal.role, principal.tenant_id.as_deref()) {
        (Role::Tenant, Some(own)) => {
            if request.tenant_id.is_empty() {
                request.tenant_id = own.to_owned();
            } else if request.tenant_id != own {
                return Err(ApiError::Forbidden(format!(
                    "this key submits tasks for tenant `{own}` only"
                )));
            }
        }
        (Role::Admin, _) => {
            if request.tenant_id.is_empty() {
                return Err(ApiError::BadRequest(
                    "an admin key names the tenant: `tenant_id` is required".into(),
                ));
            }
        }
        _ => {
            return Err(ApiError::Forbidden(format!(
                "a {} key cannot submit tasks; use a tenant key",
                principal.role.as_str()
            )));
        }
    }
    let response = state.gateway.submit(request).await?;
    // Where the task's time went; the router's layer puts the handler's whole time first.
    let timing = [("server-timing", response.timing.server_timing())];
    Ok(match response.retry_after_s {
        Some(seconds) if response.outcome == Outcome::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            timing,
            Json(response),
        )
            .into_response(),
        _ => (timing, Json(response)).into_response(),
    })
}

/// `GET /v1/spool` (admin): the usage spool's lag (records, rows, bytes, and `lag_ms`, the age of
/// the oldest unshipped record) and the shipper's last error.
pub(crate) async fn spool(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<isometer_store::WriterStatus>, ApiError> {
    principal.require(&[Role::Admin])?;
    Ok(Json(state.gateway.usage_status()?))
}

/// What an upstream sends to check a per-task credential it was given.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntrospectRequest {
    token: String,
}

/// `POST /v1/credentials/introspect`: whether a per-task credential is live, and for which
/// tenant, task, attempt, tool and host rule (after RFC 7662; JSON in and out).
pub(crate) async fn introspect(
    State(state): State<AppState>,
    body: Result<Json<IntrospectRequest>, JsonRejection>,
) -> Result<Json<isometer_gateway::Introspection>, ApiError> {
    let Json(request) = body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    Ok(Json(state.gateway.credentials().introspect(&request.token)))
}

/// `GET /v1/admin/runs/{tenant}/{run}`: a run's loop-cap state (admin).
pub(crate) async fn run_caps(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant, run)): Path<(String, String)>,
) -> Result<Json<isometer_gateway::RunCapStatus>, ApiError> {
    principal.require(&[Role::Admin])?;
    state
        .gateway
        .run_caps(&tenant, &run)
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no run `{run}` of tenant `{tenant}` is tracked"))
        })
}

/// `POST /v1/admin/runs/{tenant}/{run}/reset`: lifts a run's loop cap (admin); answers
/// the state before the reset.
pub(crate) async fn reset_run_caps(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant, run)): Path<(String, String)>,
) -> Result<Json<isometer_gateway::RunCapStatus>, ApiError> {
    principal.require(&[Role::Admin])?;
    let before = state.gateway.reset_run_caps(&tenant, &run).ok_or_else(|| {
        ApiError::NotFound(format!("no run `{run}` of tenant `{tenant}` is tracked"))
    })?;
    tracing::info!(key = %principal.key_id, tenant, run, "run caps reset by an operator");
    Ok(Json(before))
}

/// The query of `GET /v1/kpi`: days `from` to `to` (both included, `YYYY-MM-DD`) and
/// optional filters.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KpiQuery {
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
    use_case: Option<String>,
    tool: Option<String>,
    run_class: Option<String>,
}

/// `GET /v1/kpi`: every KPI over a period, from the rollups, as `isometer kpi --json`
/// prints them. Finance, product and admin keys see any tenant; a tenant key only its own
/// (it need not name it).
pub(crate) async fn kpi(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<axum::extract::Query<KpiQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<isometer_billing::Kpis>, ApiError> {
    principal.require(&[Role::Admin, Role::Finance, Role::Pm, Role::Tenant])?;
    let axum::extract::Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let day = |name: &str, value: Option<&String>| {
        let value = value.ok_or_else(|| {
            ApiError::BadRequest(format!("`{name}` is required, a day like 2026-11-01"))
        })?;
        chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
            ApiError::BadRequest(format!("`{name}`: `{value}` is not a day like 2026-11-01"))
        })
    };
    let (from, to) = (day("from", q.from.as_ref())?, day("to", q.to.as_ref())?);
    if to < from {
        return Err(ApiError::BadRequest(format!(
            "the period starts ({from}) after it ends ({to})"
        )));
    }
    if (to - from).num_days() > 3_660 {
        return Err(ApiError::BadRequest(
            "a period spans at most ten years".into(),
        ));
    }
    let tenant = match (&principal.tenant_id, q.tenant) {
        // Another tenant's figures do not exist for this key.
        (Some(own), Some(asked)) if *own != asked => {
            return Err(ApiError::NotFound(format!("no tenant `{asked}`")));
        }
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    let config = state.gateway.config();
    if let Some(t) = &tenant
        && config.tenant(t).is_none()
    {
        return Err(ApiError::NotFound(format!("no tenant `{t}`")));
    }
    let run_class = q
        .run_class
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let filter = isometer_store::Filter {
        from,
        to,
        tenant_id: tenant,
        use_case: q.use_case,
        tool_id: q.tool,
        run_class,
    };
    isometer_billing::kpis(
        &state.store,
        &config,
        &filter,
        isometer_store::Source::Rollup,
    )
    .await
    .map(Json)
    .map_err(|e| match e {
        isometer_billing::BillingError::Store(e) => ApiError::from(e),
        other => ApiError::BadRequest(other.to_string()),
    })
}
