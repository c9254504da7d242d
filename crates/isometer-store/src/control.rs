//! The control plane's records: configuration changes, API keys, approvals and issued
//! statements. They are few and written directly, not through the usage spool; a key or
//! an approval that changes state takes a new row with a higher version, and readers take
//! the latest.

use crate::Store;
use crate::error::StoreError;
use serde::{Deserialize, Serialize};

/// A reload or rollback of the configuration, as asked for.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ConfigChangeRow {
    /// When the change was asked for, milliseconds since the Unix epoch.
    pub requested_ms: u64,
    /// `start`, `reload` or `rollback`.
    pub kind: String,
    pub version: String,
    pub previous_version: String,
    /// Who asked: an API key id, `sighup`, or `start`.
    pub actor: String,
}

/// A configuration change and when it took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigChangeRecord {
    #[serde(flatten)]
    pub change: ConfigChangeRow,
    /// When the first task under the new version started, if one has (before the next
    /// change); the activation time is this minus `requested_ms`.
    pub first_task_ms: Option<u64>,
}

impl ConfigChangeRecord {
    /// From the request to the first task under the new version, in milliseconds.
    pub fn activation_ms(&self) -> Option<u64> {
        self.first_task_ms
            .map(|t| t.saturating_sub(self.change.requested_ms))
    }
}

/// An API key as kept: the hash of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub key_id: String,
    /// sha256 (hex) of the key's secret part.
    pub secret_sha256: String,
    pub role: String,
    /// The one tenant a `tenant` key sees; empty for other roles.
    pub tenant_id: String,
    pub created_ms: u64,
    /// When the key was revoked; 0 while it is live.
    pub revoked_ms: u64,
    pub version: u64,
}

/// One state of an approval of a destructive tool's task.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ApprovalRow {
    pub approval_id: String,
    pub tenant_id: String,
    pub tool_id: String,
    pub task_id: String,
    pub trace_id: String,
    pub run_id: String,
    pub use_case: String,
    pub run_class: String,
    /// sha256 (hex) of the task's input: the approval is good for this input only.
    pub input_sha256: String,
    /// The input itself (JSON), so that the task can be recorded when it is denied or
    /// expires.
    pub input: String,
    pub requested_ms: u64,
    pub expires_ms: u64,
    /// `pending`, `approved`, `denied`, `used` or `expired`.
    pub state: String,
    pub decided_by: String,
    pub decided_ms: u64,
    pub reason: String,
    pub version: u64,
}

/// How many changes [`Store::config_changes`] reads at most.
const CHANGES_READ: u64 = 200;

impl Store {
    pub async fn record_config_change(&self, row: &ConfigChangeRow) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<ConfigChangeRow>("config_changes")
            .await?;
        insert.write(row).await?;
        Ok(insert.end().await?)
    }

    /// The latest configuration changes, newest first, each with the first task that ran
    /// under its version before the next change.
    pub async fn config_changes(&self) -> Result<Vec<ConfigChangeRecord>, StoreError> {
        let rows: Vec<ConfigChangeRow> = self
            .client
            .query(
                "SELECT requested_ms, kind, version, previous_version, actor \
                 FROM config_changes GROUP BY requested_ms, kind, version, previous_version, actor \
                 ORDER BY requested_ms DESC LIMIT ?",
            )
            .bind(CHANGES_READ)
            .fetch_all()
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut next_ms = u64::MAX;
        for change in rows {
            let (first, count): (u64, u64) = self
                .client
                .query(
                    "SELECT min(ts_ms), count() FROM usage_events \
                     WHERE policy_version = ? AND ts_ms >= ? AND ts_ms < ?",
                )
                .bind(&change.version)
                .bind(change.requested_ms)
                .bind(next_ms)
                .fetch_one()
                .await?;
            next_ms = change.requested_ms;
            records.push(ConfigChangeRecord {
                change,
                first_task_ms: (count > 0).then_some(first),
            });
        }
        Ok(records)
    }

    pub async fn record_api_key(&self, row: &ApiKeyRow) -> Result<(), StoreError> {
        let mut insert = self.client.insert::<ApiKeyRow>("api_keys").await?;
        insert.write(row).await?;
        Ok(insert.end().await?)
    }

    /// Every key in its latest state, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT key_id, argMax(secret_sha256, version), argMax(role, version), \
                 argMax(tenant_id, version), argMax(created_ms, version), \
                 argMax(revoked_ms, version), max(version) \
                 FROM api_keys GROUP BY key_id ORDER BY argMax(created_ms, version), key_id",
            )
            .fetch_all()
            .await?)
    }

    pub async fn record_approval(&self, row: &ApprovalRow) -> Result<(), StoreError> {
        let mut insert = self.client.insert::<ApprovalRow>("approvals").await?;
        insert.write(row).await?;
        Ok(insert.end().await?)
    }

    /// Approvals in their latest state, newest first; only those still `pending` or
    /// `approved` when `open`.
    pub async fn approvals(&self, open: bool) -> Result<Vec<ApprovalRow>, StoreError> {
        let having = if open {
            "HAVING argMax(state, version) IN ('pending', 'approved')"
        } else {
            ""
        };
        Ok(self
            .client
            .query(&format!(
                "SELECT approval_id, argMax(tenant_id, version), argMax(tool_id, version), \
                 argMax(task_id, version), argMax(trace_id, version), argMax(run_id, version), \
                 argMax(use_case, version), argMax(run_class, version), \
                 argMax(input_sha256, version), argMax(input, version), \
                 argMax(requested_ms, version), \
                 argMax(expires_ms, version), argMax(state, version), \
                 argMax(decided_by, version), argMax(decided_ms, version), \
                 argMax(reason, version), max(version) \
                 FROM approvals GROUP BY approval_id {having} \
                 ORDER BY argMax(requested_ms, version) DESC, approval_id"
            ))
            .fetch_all()
            .await?)
    }
}

/// One issued version of a tenant's statement for a period (`YYYY-MM`).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct StatementRow {
    pub tenant_id: String,
    pub period: String,
    pub version: u32,
    pub issued_ms: u64,
    /// sha256 of `body`.
    pub sha256: String,
    /// What changed since the version before, one change per line.
    pub changes: String,
    /// The statement as canonical JSON.
    pub body: String,
}

impl crate::Store {
    pub async fn record_statement(&self, row: &StatementRow) -> Result<(), StoreError> {
        let mut insert = self.client.insert::<StatementRow>("statements").await?;
        insert.write(row).await?;
        Ok(insert.end().await?)
    }

    /// Every issued version of a tenant's statement for `period`, oldest first; of two
    /// rows written for one version, the earlier.
    pub async fn statement_versions(
        &self,
        tenant_id: &str,
        period: &str,
    ) -> Result<Vec<StatementRow>, StoreError> {
        let rows: Vec<StatementRow> = self
            .client
            .query(
                "SELECT ?fields FROM statements WHERE tenant_id = ? AND period = ? \
                 ORDER BY version, issued_ms, sha256",
            )
            .bind(tenant_id)
            .bind(period)
            .fetch_all()
            .await?;
        let mut versions: Vec<StatementRow> = Vec::with_capacity(rows.len());
        for row in rows {
            if versions.last().is_none_or(|v| v.version != row.version) {
                versions.push(row);
            }
        }
        Ok(versions)
    }
}
