//! The approvals of destructive tools' tasks: the queue for approvers, each approval's
//! state for the tenant that asked, and the decisions.

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use isometer_gateway::Approval;
use isometer_store::ApprovalRow;
use serde::{Deserialize, Serialize};

/// An approval as the API shows it: what the task would do (its input) and where the
/// approval stands.
#[derive(Debug, Serialize)]
pub(crate) struct ApprovalView {
    pub(crate) approval_id: String,
    pub(crate) tenant_id: String,
    pub(crate) tool_id: String,
    pub(crate) task_id: String,
    pub(crate) trace_id: String,
    pub(crate) run_id: String,
    pub(crate) use_case: String,
    pub(crate) run_class: String,
    input_sha256: String,
    /// The task's input, parsed when it is JSON.
    pub(crate) input: serde_json::Value,
    pub(crate) requested_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) state: String,
    pub(crate) decided_by: Option<String>,
    pub(crate) decided_ms: Option<u64>,
    pub(crate) reason: Option<String>,
}

impl From<ApprovalRow> for ApprovalView {
    fn from(row: ApprovalRow) -> Self {
        ApprovalView {
            input: serde_json::from_str(&row.input).unwrap_or(serde_json::Value::String(row.input)),
            approval_id: row.approval_id,
            tenant_id: row.tenant_id,
            tool_id: row.tool_id,
            task_id: row.task_id,
            trace_id: row.trace_id,
            run_id: row.run_id,
            use_case: row.use_case,
            run_class: row.run_class,
            input_sha256: row.input_sha256,
            requested_ms: row.requested_ms,
            expires_ms: row.expires_ms,
            state: row.state,
            decided_by: (!row.decided_by.is_empty()).then_some(row.decided_by),
            decided_ms: (row.decided_ms != 0).then_some(row.decided_ms),
            reason: (!row.reason.is_empty()).then_some(row.reason),
        }
    }
}

impl ApprovalView {
    pub(crate) fn requested(&self) -> String {
        crate::view::time_of_ms(self.requested_ms)
    }

    pub(crate) fn expires(&self) -> String {
        crate::view::time_of_ms(self.expires_ms)
    }

    pub(crate) fn state_word(&self) -> &str {
        &self.state
    }

    /// The input, shortened for a table cell.
    pub(crate) fn input_preview(&self) -> String {
        let text = self.input.to_string();
        if text.chars().count() > 120 {
            format!("{}…", text.chars().take(120).collect::<String>())
        } else {
            text
        }
    }
}

impl From<&Approval> for ApprovalView {
    fn from(approval: &Approval) -> Self {
        ApprovalView::from(approval.to_row())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// `open` (pending or approved; the default) or `all`.
    #[serde(default)]
    state: Option<String>,
}

/// `GET /v1/approvals[?state=open|all]` (approver, admin): newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    principal.require(&[Role::Approver, Role::Admin])?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let open = match query.state.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be `open` or `all`, not `{other}`"
            )));
        }
    };
    let rows = state.store.approvals(open).await?;
    Ok(Json(rows.into_iter().map(ApprovalView::from).collect()))
}

/// `GET /v1/approvals/{id}` (approver, admin, or the tenant that asked; 404 for any other
/// tenant).
pub(crate) async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no approval `{id}`"));
    let approval = state.gateway.approval(&id).ok_or_else(not_found)?;
    match principal.role {
        Role::Approver | Role::Admin => {}
        Role::Tenant if principal.tenant_id.as_deref() == Some(approval.tenant_id.as_str()) => {}
        Role::Tenant => return Err(not_found()),
        _ => principal.require(&[Role::Approver, Role::Admin, Role::Tenant])?,
    }
    Ok(Json(ApprovalView::from(&approval)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    /// Why, in the approver's words; kept with the approval.
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/approvals/{id}/approve` (approver).
pub(crate) async fn approve(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalView>, ApiError> {
    decide(state, principal, id, body, true).await
}

/// `POST /v1/approvals/{id}/deny` (approver): the task is recorded as `policy_denied`.
pub(crate) async fn deny(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalView>, ApiError> {
    decide(state, principal, id, body, false).await
}

async fn decide(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
    approve: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    principal.require(&[Role::Approver])?;
    // The body is optional: `{"reason": "..."}` or nothing.
    let decision = if body.iter().all(u8::is_ascii_whitespace) {
        Decision::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("the body must be {{\"reason\": \"...\"}}: {e}"))
        })?
    };
    let approval = state
        .gateway
        .decide(&id, approve, &principal.key_id, decision.reason)
        .await?;
    Ok(Json(ApprovalView::from(&approval)))
}
