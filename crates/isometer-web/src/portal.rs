//! The tenant portal's data: the months a tenant has statements for, one statement as
//! issued (or as a draft while its month runs), and its downloads.
//!
//! Reading a statement of a month that is over issues it if nobody has yet, exactly as
//! `isometer statement` does: the first reader fixes version 1, later readers see the
//! same bytes. A statement whose usage changed since stays as issued until finance
//! reissues it.

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use isometer_billing::statement::{Issued, Period};
use isometer_billing::{IssueOutcome, Statement, issue_statement};
use serde::Serialize;

/// Who may read statements.
const READERS: [Role; 4] = [Role::Admin, Role::Finance, Role::Pm, Role::Tenant];

/// The tenant whose statements `principal` asks for: a tenant key's own (another
/// tenant's is a 404), or the one a staff key names.
pub(crate) fn tenant_for(
    principal: &Principal,
    asked: Option<&str>,
) -> Result<Option<String>, ApiError> {
    principal.require(&READERS)?;
    let asked = asked.map(str::trim).filter(|t| !t.is_empty());
    match (&principal.tenant_id, asked) {
        (Some(own), Some(other)) if own != other => {
            Err(ApiError::NotFound(format!("no tenant `{other}`")))
        }
        (Some(own), _) => Ok(Some(own.clone())),
        (None, asked) => Ok(asked.map(str::to_owned)),
    }
}

/// One month in the statements list.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MonthEntry {
    pub(crate) period: String,
    /// `draft` (the month runs), `not_issued` (over, nobody has read it yet) or `issued`.
    pub(crate) status: String,
    pub(crate) version: Option<u32>,
    /// The issued total, with its currency.
    pub(crate) total: Option<String>,
}

/// The months `tenant_id` submitted tasks in, newest first.
pub(crate) async fn months(state: &AppState, tenant_id: &str) -> Result<Vec<MonthEntry>, ApiError> {
    known_tenant(state, tenant_id)?;
    let today = state.gateway.now().date_naive();
    let mut entries = Vec::new();
    for first in state.store.task_months(tenant_id).await? {
        let period = Period::of(first);
        let versions = state
            .store
            .statement_versions(tenant_id, &period.to_string())
            .await?;
        let latest = versions.last();
        let issued: Option<Statement> = latest.and_then(|r| serde_json::from_str(&r.body).ok());
        entries.push(MonthEntry {
            period: period.to_string(),
            status: match (latest, today < period.end()) {
                (Some(_), _) => "issued",
                (None, true) => "draft",
                (None, false) => "not_issued",
            }
            .to_owned(),
            version: latest.map(|r| r.version),
            total: issued.map(|s| format!("{} {}", s.amount(s.total), s.currency)),
        });
    }
    Ok(entries)
}

fn known_tenant(state: &AppState, tenant_id: &str) -> Result<(), ApiError> {
    if state.gateway.config().tenant(tenant_id).is_none() {
        return Err(ApiError::NotFound(format!("no tenant `{tenant_id}`")));
    }
    Ok(())
}

/// A statement and where it stands.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatementView {
    /// `draft`, `issued` or `outdated` (issued, but the recorded usage changed since).
    pub(crate) status: String,
    pub(crate) version: Option<u32>,
    pub(crate) issued_at: Option<String>,
    pub(crate) sha256: Option<String>,
    /// What changed in this version against the one before it.
    pub(crate) changes: Vec<String>,
    /// For an outdated statement: what a reissue would change.
    pub(crate) pending_changes: Vec<String>,
    pub(crate) statement: Statement,
    #[serde(skip)]
    issued: Option<Issued>,
}

impl StatementView {
    /// An amount of the statement, to its currency's minor unit.
    pub(crate) fn amount(&self, m: &isometer_core::Money) -> String {
        self.statement.amount(*m)
    }
}

/// `tenant_id`'s statement for `period` (`YYYY-MM`), issued when the month is over;
/// `reissue` issues the next version when the usage changed.
pub(crate) async fn statement(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    period: &str,
    reissue: bool,
) -> Result<StatementView, ApiError> {
    let tenant = tenant_for(principal, Some(tenant_id))?.unwrap_or_default();
    known_tenant(state, &tenant)?;
    let period: Period = period
        .parse()
        .map_err(|e: String| ApiError::NotFound(format!("no statement period `{period}`: {e}")))?;
    let config = state.gateway.config();
    let outcome = issue_statement(
        &state.store,
        &config,
        &tenant,
        period,
        state.gateway.now(),
        reissue,
    )
    .await
    .map_err(crate::view::billing_error)?;
    let (status, issued, pending) = match outcome {
        IssueOutcome::Draft(statement) => {
            return Ok(StatementView {
                status: "draft".into(),
                version: None,
                issued_at: None,
                sha256: None,
                changes: Vec::new(),
                pending_changes: Vec::new(),
                statement,
                issued: None,
            });
        }
        IssueOutcome::Issued(i) | IssueOutcome::OnRecord(i) | IssueOutcome::Reissued(i) => {
            ("issued", i, Vec::new())
        }
        IssueOutcome::Outdated { on_record, changes } => ("outdated", on_record, changes),
    };
    Ok(StatementView {
        status: status.into(),
        version: Some(issued.version),
        issued_at: Some(issued.issued_at.format("%Y-%m-%d %H:%M UTC").to_string()),
        sha256: Some(issued.sha256.clone()),
        changes: issued.changes.clone(),
        pending_changes: pending,
        statement: issued.statement.clone(),
        issued: Some(issued),
    })
}

/// A statement's file: `statement.csv` or `statement.html` (printable).
pub(crate) fn download(view: &StatementView, file: &str) -> Result<Response, ApiError> {
    let s = &view.statement;
    let name = format!("statement-{}-{}", s.tenant_id, s.period);
    let (body, content_type, ext) = match file {
        "statement.csv" => (s.to_csv(), "text/csv; charset=utf-8", "csv"),
        "statement.html" => {
            let issued = view.issued.as_ref().map(|i| (i, i.changes.as_slice()));
            let html = isometer_billing::statement::to_html(s, issued)
                .map_err(crate::view::billing_error)?;
            (html, "text/html; charset=utf-8", "html")
        }
        other => return Err(ApiError::NotFound(format!("no file `{other}`"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    tenant: Option<String>,
}

/// `GET /v1/statements?tenant=ID`: the months with statements (a tenant key: its own).
pub(crate) async fn list_json(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Vec<MonthEntry>>, ApiError> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = tenant_for(&principal, q.tenant.as_deref())?
        .ok_or_else(|| ApiError::BadRequest("`tenant` is required".into()))?;
    months(&state, &tenant).await.map(axum::Json)
}

/// `GET /v1/statements/{tenant}/{period}`: one statement as JSON, with its status.
pub(crate) async fn show_json(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    axum::extract::Path((tenant, period)): axum::extract::Path<(String, String)>,
) -> Result<axum::Json<StatementView>, ApiError> {
    statement(&state, &principal, &tenant, &period, false)
        .await
        .map(axum::Json)
}
