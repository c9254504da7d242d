//! The configuration's life in a running server: each version archived (so that its runs
//! can be replayed), reloads and rollbacks applied through the gateway, and every change
//! recorded with who asked and when. Both SIGHUP and the admin API come here.

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use isometer_gateway::ConfigChange;
use isometer_policy::Config;
use isometer_store::{ConfigChangeRecord, ConfigChangeRow, Store};
use std::time::Duration;

/// Keeps `config`'s files and every tool's artifact in the archive, unless kept already.
pub async fn archive_version(store: &Store, config: &Config) -> Result<(), ApiError> {
    store.archive_config(&config.version, &config.files).await?;
    for tool in &config.tools {
        let bytes = std::fs::read(&tool.artifact).map_err(|e| ApiError::Invalid {
            message: format!("cannot read the artifact of tool `{}`", tool.id),
            problems: vec![format!("{}: {e}", tool.artifact.display())],
        })?;
        store
            .archive_artifact(&isometer_core::sha256_hex(&bytes), &bytes)
            .await?;
    }
    Ok(())
}

/// How far back a server learns the recorded task ids when it starts: a task id submitted
/// again within this window of its first submission never runs twice. At most
/// [`IDEMPOTENCY_MAX_KNOWN`] are loaded; beyond it every unknown task id is looked up in
/// ClickHouse.
pub use isometer_gateway::{IDEMPOTENCY_MAX_KNOWN, IDEMPOTENCY_WINDOW};

/// A change made active, and whether its record reached ClickHouse.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub change: ConfigChangeRow,
    /// False when the change is active but ClickHouse did not take its record.
    pub recorded: bool,
}

impl AppState {
    /// What a server does before it serves: archives the active version, records it as
    /// started, takes back the approvals an earlier process left open, and learns the task
    /// ids recorded within the idempotency window (after shipping what the spool held), so
    /// that a task submitted again is answered from ClickHouse and never runs twice.
    pub async fn start(&self) -> Result<(), ApiError> {
        let open = self.store.approvals(true).await?;
        self.gateway.restore_approvals(open);
        self.gateway.flush().await?;
        let since = self.gateway.now()
            - chrono::TimeDelta::from_std(IDEMPOTENCY_WINDOW).unwrap_or_default();
        let keys = self
            .store
            .task_keys_since(since, IDEMPOTENCY_MAX_KNOWN as u64)
            .await?;
        let complete = keys.len() < IDEMPOTENCY_MAX_KNOWN;
        let known = self.gateway.remember_recorded_tasks(keys, complete);
        tracing::debug!(known, complete, "recorded task ids loaded");
        let config = self.gateway.config();
        archive_version(&self.store, &config).await?;
        let row = ConfigChangeRow {
            requested_ms: now_ms(self),
            kind: "start".into(),
            version: config.version.clone(),
            previous_version: String::new(),
            actor: "start".into(),
        };
        self.store.record_config_change(&row).await?;
        Ok(())
    }

    /// Loads the configuration directory again and makes it active if it is valid and
    /// new; `None` when it is the active version already. Nothing changes on any error.
    pub async fn reload_config(&self, actor: &str) -> Result<Option<Applied>, ApiError> {
        let dir = self.gateway.config().dir.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&dir))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|errors| ApiError::Invalid {
                message: "the configuration is invalid; the active version stays".into(),
                problems: errors.0.iter().map(ToString::to_string).collect(),
            })?;
        self.apply_config(config, actor).await
    }

    /// Makes `config` active if it is new (archived first, the change recorded); `None`
    /// when it is the active version already. Nothing changes on any error.
    pub async fn apply_config(
        &self,
        config: Config,
        actor: &str,
    ) -> Result<Option<Applied>, ApiError> {
        if config.version == self.gateway.config().version {
            return Ok(None);
        }
        archive_version(&self.store, &config).await?;
        let gateway = self.gateway.clone();
        let change = tokio::task::spawn_blocking(move || gateway.reload(config))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Invalid {
                message: "the configuration cannot be made ready; the active version stays".into(),
                problems: vec![e.to_string()],
            })?;
        match change {
            Some(change) => Ok(Some(self.record(change, actor).await)),
            None => Ok(None),
        }
    }

    /// Restores the version active before the current one.
    pub async fn rollback_config(&self, actor: &str) -> Result<Applied, ApiError> {
        let change = self.gateway.rollback().ok_or_else(|| {
            ApiError::Conflict(
                "no earlier version to roll back to: this server has not reloaded since it \
                 started"
                    .into(),
            )
        })?;
        Ok(self.record(change, actor).await)
    }

    /// Records an applied change, retrying briefly: the change is active either way.
    async fn record(&self, change: ConfigChange, actor: &str) -> Applied {
        let row = ConfigChangeRow {
            requested_ms: u64::try_from(change.requested.timestamp_millis()).unwrap_or(0),
            kind: change.kind.as_str().into(),
            version: change.version,
            previous_version: change.previous_version,
            actor: actor.into(),
        };
        let mut recorded = false;
        for wait in [100, 400, 1600] {
            match self.store.record_config_change(&row).await {
                Ok(()) => {
                    recorded = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a configuration change; retrying");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
        if !recorded {
            tracing::error!(kind = %row.kind, version = %row.version,
                "a configuration change is active but ClickHouse did not take its record");
        }
        tracing::info!(kind = %row.kind, version = %row.version,
            previous = %row.previous_version, actor, "configuration changed");
        Applied {
            change: row,
            recorded,
        }
    }
}

fn now_ms(state: &AppState) -> u64 {
    u64::try_from(state.gateway.now().timestamp_millis()).unwrap_or(0)
}

/// What `GET /v1/admin/config` answers.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ConfigStatus {
    version: String,
    /// The versions a rollback would restore, the next one last.
    previous_versions: Vec<String>,
    /// The latest changes, newest first, with their activation times.
    changes: Vec<ChangeView>,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct ChangeView {
    #[serde(flatten)]
    record: ConfigChangeRecord,
    /// From the request to the first task under the new version, when one ran.
    activation_ms: Option<u64>,
}

/// `GET /v1/admin/config` (admin): the active version, what a rollback restores, and the
/// change history with activation times.
pub(crate) async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ConfigStatus>, ApiError> {
    principal.require(&[Role::Admin])?;
    let changes = state
        .store
        .config_changes()
        .await?
        .into_iter()
        .map(|record| ChangeView {
            activation_ms: record.activation_ms(),
            record,
        })
        .collect();
    Ok(Json(ConfigStatus {
        version: state.gateway.config().version.clone(),
        previous_versions: state.gateway.previous_versions(),
        changes,
    }))
}

/// What a reload answers.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Reloaded {
    /// Whether the active version changed.
    changed: bool,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<Applied>,
}

/// `POST /v1/admin/config/reload` (admin): loads the configuration directory again.
/// 422 with every problem when it is invalid; the active version stays.
pub(crate) async fn reload(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Reloaded>, ApiError> {
    principal.require(&[Role::Admin])?;
    let applied = state.reload_config(&principal.key_id).await?;
    Ok(Json(Reloaded {
        changed: applied.is_some(),
        version: state.gateway.config().version.clone(),
        applied,
    }))
}

/// `POST /v1/admin/config/rollback` (admin): restores the version before. 409 when there
/// is none.
pub(crate) async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Applied>, ApiError> {
    principal.require(&[Role::Admin])?;
    Ok(Json(state.rollback_config(&principal.key_id).await?))
}
