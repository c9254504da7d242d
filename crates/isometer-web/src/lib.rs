//! The HTTP face of isometer: the task API, health, and the dashboard pages.
//!
//! **Architecture Invariant:** this is the only crate that knows HTTP serving. It reaches
//! tools only through the gateway and data only through the store; it never touches
//! wasmtime and never writes SQL.

mod api;
mod approvals;
pub mod auth;
pub mod control;
mod error;
mod pages;

pub use error::ApiError;

use axum::Router;
use axum::routing::{get, post};
use isometer_gateway::Gateway;
use isometer_store::Store;
use std::future::Future;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub store: Store,
    pub keys: Arc<auth::Keys>,
}

impl AppState {
    pub fn new(gateway: Arc<Gateway>, store: Store) -> Self {
        AppState {
            keys: Arc::new(auth::Keys::new(store.clone())),
            gateway,
            store,
        }
    }
}

/// All routes. Tests drive this directly, without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/healthz", get(api::healthz))
        .route("/v1/tasks", post(api::create_task))
        .route("/v1/spool", get(api::spool))
        .route("/v1/kpi", get(api::kpi))
        .route("/v1/credentials/introspect", post(api::introspect))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/v1/admin/config", get(control::status))
        .route("/v1/admin/config/reload", post(control::reload))
        .route("/v1/admin/config/rollback", post(control::rollback))
        .route("/v1/admin/runs/{tenant}/{run}", get(api::run_caps))
        .route(
            "/v1/admin/runs/{tenant}/{run}/reset",
            post(api::reset_run_caps),
        )
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
