//! The one error type of the web layer and its mapping to HTTP.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use isometer_gateway::GatewayError;
use serde_json::json;

/// An error answered to a client. 4xx carry their message; 5xx answer a generic body and
/// log the cause, once, here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No key, or not a live one.
    #[error("{0}")]
    Unauthorized(String),
    /// A live key whose role may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the resource's state refuses it.
    #[error("{0}")]
    Conflict(String),
    /// What was asked for is invalid as a whole; each problem is listed.
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<String>,
    },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::UnknownTenant(_) | GatewayError::InvalidRequest(_) => {
                ApiError::BadRequest(e.to_string())
            }
            GatewayError::Store(_) => ApiError::Unavailable(e.to_string()),
            GatewayError::Approval(isometer_gateway::ApprovalError::Unknown(_)) => {
                ApiError::NotFound(e.to_string())
            }
            GatewayError::Approval(_) => ApiError::Conflict(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<isometer_store::StoreError> for ApiError {
    fn from(e: isometer_store::StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.as_str()),
            ApiError::Unauthorized(m) => {
                let body = Json(json!({ "error": m }));
                let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer")];
                return (StatusCode::UNAUTHORIZED, challenge, body).into_response();
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.as_str()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.as_str()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.as_str()),
            ApiError::Invalid { message, problems } => {
                let body = Json(json!({ "error": message, "problems": problems }));
                return (StatusCode::UNPROCESSABLE_ENTITY, body).into_response();
            }
            ApiError::Unavailable(cause) => {
                crate::ops::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%cause, "request failed: a dependency is unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}
