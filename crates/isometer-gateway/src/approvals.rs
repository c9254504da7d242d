//! Human approval of destructive tools' tasks. A task of a tool marked `destructive` does
//! not run when first submitted: it answers `approval_required` with an approval id. An
//! approver approves or denies; the caller then submits the same task (same task id, same
//! input) with the approval id, and it runs once. An approval is bound to its tenant,
//! tool, task and input hash, is used at most once, and expires.
//!
//! The live state is here; every change is also written to ClickHouse (before it takes
//! effect), so that approvals survive a restart and the dashboard can list them.

use chrono::{DateTime, Utc};
use isometer_store::ApprovalRow;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long an approval request stays good unless set otherwise.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for an approver.
    Pending,
    /// Approved; the task may run once.
    Approved,
    /// Denied by an approver; the task was recorded as `policy_denied`.
    Denied,
    /// The task ran under it.
    Used,
    /// No decision or no use in time; the task was recorded as `approval_required`.
    Expired,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Used => "used",
            ApprovalState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Denied,
            ApprovalState::Used,
            ApprovalState::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// Whether the approval can still change.
    pub fn is_open(self) -> bool {
        matches!(self, ApprovalState::Pending | ApprovalState::Approved)
    }
}

/// An approval request and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub approval_id: String,
    pub tenant_id: String,
    pub tool_id: String,
    pub task_id: String,
    pub trace_id: String,
    pub run_id: String,
    pub use_case: String,
    pub run_class: isometer_core::RunClass,
    /// sha256 (hex) of the task's input: the approval is good for this input only.
    pub input_sha256: String,
    #[serde(skip)]
    pub input: Vec<u8>,
    pub requested: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub state: ApprovalState,
    /// The key that decided, when one did.
    pub decided_by: Option<String>,
    pub decided: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// Grows with each change of state.
    #[serde(skip)]
    pub version: u64,
}

impl Approval {
    pub fn to_row(&self) -> ApprovalRow {
        ApprovalRow {
            approval_id: self.approval_id.clone(),
            tenant_id: self.tenant_id.clone(),
            tool_id: self.tool_id.clone(),
            task_id: self.task_id.clone(),
            trace_id: self.trace_id.clone(),
            run_id: self.run_id.clone(),
            use_case: self.use_case.clone(),
            run_class: self.run_class.as_str().to_owned(),
            input_sha256: self.input_sha256.clone(),
            input: String::from_utf8_lossy(&self.input).into_owned(),
            requested_ms: millis(self.requested),
            expires_ms: millis(self.expires),
            state: self.state.as_str().to_owned(),
            decided_by: self.decided_by.clone().unwrap_or_default(),
            decided_ms: self.decided.map_or(0, millis),
            reason: self.reason.clone().unwrap_or_default(),
            version: self.version,
        }
    }

    /// An approval as kept; `None` for a row this version cannot read.
    pub fn from_row(row: ApprovalRow) -> Option<Self> {
        let time = |ms: u64| DateTime::from_timestamp_millis(i64::try_from(ms).ok()?);
        Some(Approval {
            run_class: row.run_class.parse().ok()?,
            state: ApprovalState::parse(&row.state)?,
            requested: time(row.requested_ms)?,
            expires: time(row.expires_ms)?,
            decided: (row.decided_ms != 0)
                .then(|| time(row.decided_ms))
                .flatten(),
            decided_by: (!row.decided_by.is_empty()).then_some(row.decided_by),
            reason: (!row.reason.is_empty()).then_some(row.reason),
            input: row.input.into_bytes(),
            approval_id: row.approval_id,
            tenant_id: row.tenant_id,
            tool_id: row.tool_id,
            task_id: row.task_id,
            trace_id: row.trace_id,
            run_id: row.run_id,
            use_case: row.use_case,
            input_sha256: row.input_sha256,
            version: row.version,
        })
    }
}

/// What a caller needs to come back with once an approver decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalTicket {
    pub approval_id: String,
    pub state: ApprovalState,
    pub input_sha256: String,
    pub expires: DateTime<Utc>,
}

impl From<&Approval> for ApprovalTicket {
    fn from(a: &Approval) -> Self {
        ApprovalTicket {
            approval_id: a.approval_id.clone(),
            state: a.state,
            input_sha256: a.input_sha256.clone(),
            expires: a.expires,
        }
    }
}

/// Why an approval cannot be used or decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval `{0}`")]
    Unknown(String),
    #[error("approval `{id}` {why}")]
    Refused { id: String, why: String },
}

/// The live approvals of a gateway.
#[derive(Debug, Default)]
pub(crate) struct Approvals {
    by_id: Mutex<HashMap<String, Approval>>,
}

impl Approvals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Approval>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Approval> {
        self.lock().get(id).cloned()
    }

    /// Every approval still open, oldest first.
    pub(crate) fn open(&self) -> Vec<Approval> {
        let mut open: Vec<Approval> = self
            .lock()
            .values()
            .filter(|a| a.state.is_open())
            .cloned()
            .collect();
        open.sort_by_key(|a| a.requested);
        open
    }

    /// Puts `approval` in place, unless a later state of it is there already.
    pub(crate) fn put(&self, approval: Approval) {
        let mut by_id = self.lock();
        match by_id.get(&approval.approval_id) {
            Some(known) if known.version >= approval.version => {}
            _ => {
                by_id.insert(approval.approval_id.clone(), approval);
            }
        }
    }

    /// Moves an approval from one of `from` to `to` if `check` allows, returning the
    /// new state (not yet kept anywhere but here) and the one it replaces.
    pub(crate) fn transition(
        &self,
        id: &str,
        from: &[ApprovalState],
        to: ApprovalState,
        check: impl FnOnce(&Approval) -> Result<(), String>,
        change: impl FnOnce(&mut Approval),
    ) -> Result<(Approval, Approval), ApprovalError> {
        transition(&mut self.lock(), id, from, to, check, change)
    }

    /// Moves an approved approval to used if `check` allows and no other approval of the
    /// same task was used: a task runs under one approval, once.
    pub(crate) fn claim(
        &self,
        id: &str,
        check: impl FnOnce(&Approval) -> Result<(), String>,
    ) -> Result<(Approval, Approval), ApprovalError> {
        let mut by_id = self.lock();
        let approval = by_id
            .get(id)
            .ok_or_else(|| ApprovalError::Unknown(id.to_owned()))?;
        if let Some(other) = by_id.values().find(|a| {
            a.approval_id != id
                && a.tenant_id == approval.tenant_id
                && a.task_id == approval.task_id
                && a.state == ApprovalState::Used
        }) {
            return Err(ApprovalError::Refused {
                id: id.to_owned(),
                why: format!(
                    "cannot run task `{}` again: it ran under approval `{}`",
                    other.task_id, other.approval_id
                ),
            });
        }
        transition(
            &mut by_id,
            id,
            &[ApprovalState::Approved],
            ApprovalState::Used,
            check,
            |_| {},
        )
    }

    /// The approval `tenant`'s task `task_id` ran under, if it ran.
    pub(crate) fn ran_under(&self, tenant_id: &str, task_id: &str) -> Option<String> {
        self.lock()
            .values()
            .find(|a| {
                a.tenant_id == tenant_id && a.task_id == task_id && a.state == ApprovalState::Used
            })
            .map(|a| a.approval_id.clone())
    }

    /// Undoes a transition whose record could not be kept.
    pub(crate) fn restore(&self, before: Approval) {
        self.lock().insert(before.approval_id.clone(), before);
    }
}

fn transition(
    by_id: &mut HashMap<String, Approval>,
    id: &str,
    from: &[ApprovalState],
    to: ApprovalState,
    check: impl FnOnce(&Approval) -> Result<(), String>,
    change: impl FnOnce(&mut Approval),
) -> Result<(Approval, Approval), ApprovalError> {
    let approval = by_id
        .get_mut(id)
        .ok_or_else(|| ApprovalError::Unknown(id.to_owned()))?;
    let refused = |why: String| ApprovalError::Refused {
        id: id.to_owned(),
        why,
    };
    if !from.contains(&approval.state) {
        return Err(refused(format!("is {}", approval.state.as_str())));
    }
    check(approval).map_err(refused)?;
    let before = approval.clone();
    approval.state = to;
    approval.version += 1;
    change(approval);
    Ok((approval.clone(), before))
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}
