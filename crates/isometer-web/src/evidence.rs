//! The evidence viewer's data: every manifest recorded under a trace, each checked again
//! on the server (signature, batch proof, and the stored input, output and archived
//! artifact against the hashes the manifest names).

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use isometer_evidence::SignedManifest;
use serde::Serialize;
use std::collections::HashMap;

/// A trace's evidence.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Evidence {
    pub(crate) trace_id: String,
    pub(crate) manifests: Vec<ManifestView>,
}

/// One attempt's manifest and what checking it found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ManifestView {
    pub(crate) task_id: String,
    pub(crate) attempt: u16,
    pub(crate) tenant_id: String,
    pub(crate) tool_id: String,
    pub(crate) policy_id: String,
    pub(crate) policy_version: String,
    pub(crate) outcome: String,
    pub(crate) verdict: String,
    pub(crate) started: String,
    pub(crate) key_id: String,
    pub(crate) digest: String,
    /// The signature holds and every stored content matches its hash.
    pub(crate) verified: bool,
    /// What did not hold, one sentence each.
    pub(crate) problems: Vec<String>,
    /// What was checked, one line each.
    pub(crate) checks: Vec<String>,
    /// The signed manifest, as recorded.
    pub(crate) signed: serde_json::Value,
    #[serde(skip)]
    pub(crate) pretty: String,
}

/// The manifests of `trace_id` that `principal` may read: staff read every tenant's, a
/// tenant key its own (any other trace is a 404, as if it did not exist).
pub(crate) async fn of_trace(
    state: &AppState,
    principal: &Principal,
    trace_id: &str,
) -> Result<Evidence, ApiError> {
    principal.require(&[Role::Admin, Role::Finance, Role::Pm, Role::Tenant])?;
    let records = state.store.manifests_by_trace(trace_id).await?;
    let records: Vec<_> = records
        .into_iter()
        .filter(|r| {
            principal
                .tenant_id
                .as_ref()
                .is_none_or(|own| *own == r.tenant_id)
        })
        .collect();
    if records.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no evidence for trace `{trace_id}`"
        )));
    }
    let trusted = state.gateway.signer().trusted();
    let mut artifacts: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut manifests = Vec::with_capacity(records.len());
    for r in records {
        let mut problems = Vec::new();
        let mut checks = Vec::new();
        let signed_json: serde_json::Value =
            serde_json::from_str(&r.signed).unwrap_or(serde_json::Value::Null);
        match serde_json::from_str::<SignedManifest>(&r.signed) {
            Err(e) => problems.push(format!("the recorded manifest does not parse: {e}")),
            Ok(signed) => {
                match signed.verify(trusted) {
                    Ok(()) => checks.push(format!("signature by key {} holds", signed.key_id)),
                    Err(e) => problems.push(e.to_string()),
                }
                let hash = signed.manifest.artifact_hash.clone();
                if !artifacts.contains_key(&hash) {
                    let bytes = state.store.artifact(&hash).await?;
                    artifacts.insert(hash.clone(), bytes);
                }
                let artifact = artifacts.get(&hash).and_then(|a| a.as_deref());
                if artifact.is_none() {
                    problems.push(format!("the artifact {hash} is not archived"));
                }
                match signed.check_contents(artifact, Some(&r.input), Some(&r.output)) {
                    Ok(()) => checks.push(if artifact.is_some() {
                        "artifact, input and output match their hashes".to_owned()
                    } else {
                        "input and output match their hashes".to_owned()
                    }),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        let pretty = serde_json::to_string_pretty(&signed_json).unwrap_or_default();
        manifests.push(ManifestView {
            task_id: r.task_id,
            attempt: r.attempt,
            tenant_id: r.tenant_id,
            tool_id: r.tool_id,
            policy_id: r.policy_id,
            policy_version: r.policy_version,
            outcome: r.outcome.as_str().to_owned(),
            verdict: r.verdict.as_str().to_owned(),
            started: r.started.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            key_id: r.key_id,
            digest: r.digest,
            verified: problems.is_empty(),
            problems,
            checks,
            signed: signed_json,
            pretty,
        });
    }
    Ok(Evidence {
        trace_id: trace_id.to_owned(),
        manifests,
    })
}

/// `GET /v1/evidence/{trace}`: the viewer's data as JSON.
pub(crate) async fn json(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    axum::extract::Path(trace): axum::extract::Path<String>,
) -> Result<axum::Json<Evidence>, ApiError> {
    of_trace(&state, &principal, &trace).await.map(axum::Json)
}
