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
    Ok(match response.retry_after_s {
        Some(seconds) if response.outcome == Outcome::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            Json(response),
        )
            .into_response(),
        _ => Json(response).into_response(),
    })
}

/// `GET /v1/spool`: the usage spool's lag (records, rows, bytes, and `lag_ms`, the age of
/// the oldest unshipped record) and the shipper's last error.
pub(crate) async fn spool(
    State(state): State<AppState>,
) -> Result<Json<isometer_store::WriterStatus>, ApiError> {
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
