//! The HTTP face of isometer: the task API, the dashboard pages and the tenant portal,
//! health, readiness and metrics.
//!
//! **Architecture Invariant:** this is the only crate that knows HTTP serving. It reaches
//! tools only through the gateway and data only through the store; it never touches
//! wasmtime and never writes SQL.

mod api;
mod approvals;
pub mod auth;
mod chart;
pub mod control;
mod error;
mod evidence;
pub mod layout;
mod ops;
mod pages;
mod portal;
pub mod session;
mod view;

pub use error::ApiError;
pub use layout::{LayoutError, Layouts};

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
    pub sessions: Arc<session::Sessions>,
    /// The dashboard pages' layouts.
    pub layouts: Arc<Layouts>,
}

impl AppState {
    /// A state with the dashboard layouts shipped with isometer.
    pub fn new(gateway: Arc<Gateway>, store: Store) -> Self {
        // The shipped layouts are checked by this crate's tests; failing here is a bug.
        let layouts = Layouts::shipped()
            .unwrap_or_else(|e| panic!("the shipped dashboard layouts are invalid: {e}"));
        AppState {
            keys: Arc::new(auth::Keys::new(store.clone())),
            sessions: Arc::default(),
            layouts: Arc::new(layouts),
            gateway,
            store,
        }
    }

    /// The same state with other dashboard layouts (`serve --dashboards DIR`).
    pub fn with_layouts(mut self, layouts: Layouts) -> Self {
        self.layouts = Arc::new(layouts);
        self
    }
}

/// All routes. Tests drive this directly, without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/tenants", get(pages::tenants))
        .route("/tenants/{id}", get(pages::tenant))
        .route("/margin", get(pages::margin))
        .route("/slo", get(pages::slo))
        .route("/loops", get(pages::loops))
        .route("/approvals", get(pages::approvals))
        .route("/approvals/{id}/{verb}", post(pages::decide))
        .route("/evidence", get(pages::evidence_page))
        .route("/portal", get(pages::portal_page))
        .route("/portal/{tenant}/{period}", get(pages::statement_page))
        .route(
            "/portal/{tenant}/{period}/{file}",
            get(pages::statement_download),
        )
        .route("/portal/{tenant}/{period}/reissue", post(pages::reissue))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/pages/{page}", get(pages::page_json))
        .route("/v1/evidence/{trace}", get(evidence::json))
        .route("/v1/statements", get(portal::list_json))
        .route("/v1/statements/{tenant}/{period}", get(portal::show_json))
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
        .layer(axum::middleware::from_fn(server_timing))
        .with_state(state)
}

/// Adds `Server-Timing: app;dur=MS` to every answer: the time the handler took, which
/// browsers show beside the network's. Metrics the handler set come after it (the task
/// API's stages: `app;dur=1.2, admit;dur=0.00, run;dur=0.08, ...`).
async fn server_timing(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let stages = response
        .headers()
        .get(SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(", {v}"))
        .unwrap_or_default();
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("app;dur={ms:.1}{stages}")) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
    response
}

const SERVER_TIMING: &str = "server-timing";

/// Connections the kernel completes and holds for the server before it accepts them.
/// The standard library's 128 overflows when a burst of clients connects while the
/// workers are busy: the kernel then drops their handshakes and each client waits a full
/// second to retry. The kernel caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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

#[cfg(test)]
mod listen_tests {
    use std::time::Duration;

    /// Connects `n` clients at once to a listener nobody accepts on; how many got through
    /// within half a second (a handshake the kernel dropped is retried after a second).
    async fn connected_at_once(listener: &tokio::net::TcpListener, n: usize) -> usize {
        let addr = listener.local_addr().expect("address");
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..n {
            clients.spawn(async move {
                tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            });
        }
        let mut streams = Vec::new();
        while let Some(joined) = clients.join_next().await {
            if let Ok(Ok(stream)) = joined.expect("joined") {
                streams.push(stream);
            }
        }
        streams.len()
    }

    #[tokio::test]
    async fn a_burst_of_connections_is_held_until_accepted() {
        let listener = super::listen("127.0.0.1:0".parse().expect("address")).expect("listens");
        assert_eq!(connected_at_once(&listener, 600).await, 600);
        // The standard library's backlog of 128 drops most of the same burst.
        let small = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listens");
        assert!(connected_at_once(&small, 600).await < 600);
    }
}
