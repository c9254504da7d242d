//! What operators scrape and probe: `/metrics` in Prometheus' text format, `/readyz`.

use crate::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests that failed because ClickHouse did not answer.
pub(crate) static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// `GET /metrics`: tasks by tenant and outcome, task latency, the usage spool's lag and
/// ClickHouse errors. Unauthenticated, like most scrape targets: it names tenants and
/// counts, never amounts or task ids; bind the server where only operators reach it.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    state.gateway.metrics().render(&mut out);
    match state.gateway.usage_status() {
        Ok(status) => {
            let s = &status.spool;
            gauge(
                &mut out,
                "isometer_spool_lag_records",
                "Usage records in the spool not yet in ClickHouse.",
                s.lag_records,
            );
            gauge(
                &mut out,
                "isometer_spool_lag_rows",
                "Usage rows (events and task records) not yet in ClickHouse.",
                s.lag_rows,
            );
            gauge(
                &mut out,
                "isometer_spool_lag_seconds",
                "Age of the oldest record not yet in ClickHouse.",
                s.lag_ms.unwrap_or(0) as f64 / 1000.0,
            );
            gauge(
                &mut out,
                "isometer_spool_bytes",
                "Bytes the spool holds on disk.",
                s.bytes,
            );
            counter(
                &mut out,
                "isometer_usage_rejected_batches_total",
                "Usage batches ClickHouse refused.",
                status.rejected_batches,
            );
            gauge(
                &mut out,
                "isometer_usage_shipping_failing",
                "1 while the shipper's last insert into ClickHouse failed.",
                u64::from(status.last_error.is_some()),
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: the usage writer's status is unavailable"),
    }
    counter(
        &mut out,
        "isometer_clickhouse_errors_total",
        "Requests that failed because ClickHouse did not answer.",
        STORE_ERRORS.load(Ordering::Relaxed),
    );
    let config = state.gateway.config();
    let _ = writeln!(
        out,
        "# HELP isometer_config_info The active configuration version.\n\
         # TYPE isometer_config_info gauge\n\
         isometer_config_info{{version=\"{}\"}} 1",
        isometer_gateway::prometheus_label(&config.version)
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// `GET /readyz`: 200 when this server can take tasks (ClickHouse answers and the spool
/// has room), 503 with the reason otherwise. `/healthz` only says the process and
/// ClickHouse are up.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = state.store.server_version().await {
        tracing::warn!(error = %e, "readiness: ClickHouse unreachable");
        problems.push("ClickHouse does not answer".to_owned());
    }
    if !state.gateway.has_spool_room() {
        problems.push("the usage spool is full".to_owned());
    }
    if problems.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not_ready", "problems": problems })),
        )
            .into_response()
    }
}

/// The OpenAPI 3 document of every JSON route, checked against the server by schemathesis
/// in `make test`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_parses_and_every_operation_answers_something() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.contains_key("/v1/tasks") && paths.contains_key("/v1/pages/{page}"));
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("operations") {
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|code| code.starts_with('2')),
                    "{method} {path} documents no success"
                );
            }
        }
    }
}
