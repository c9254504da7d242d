//! JSON endpoints.

use crate::{AppState, error::ApiError};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use isometer_gateway::{TaskRequest, TaskResponse};
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
pub(crate) async fn create_task(
    State(state): State<AppState>,
    body: Result<Json<TaskRequest>, JsonRejection>,
) -> Result<Json<TaskResponse>, ApiError> {
    let Json(request) = body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    Ok(Json(state.gateway.submit(request).await?))
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
