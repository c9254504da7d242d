//! The gateway: one object that holds the configuration, the runtime with every tool
//! loaded, the usage writer and the clock.

use crate::admission::{Admission, AdmissionOptions, AdmissionStatus, Refusal};
use crate::approvals::{
    Approval, ApprovalError, ApprovalState, ApprovalTicket, Approvals, DEFAULT_APPROVAL_TTL,
};
use crate::budget::{BudgetStatus, RetryBudgets};
use crate::caps::{CapCheck, CapInfo, CapInput, LoopCapper, RunCapStatus};
use crate::credentials::Credentials;
use crate::egress::{AllowlistEgress, BoundSecret, SecretValue};
use crate::error::GatewayError;
use crate::idempotency::{Claim, Idempotency};
use crate::metrics::Metrics;
use crate::task::{AttemptSummary, CapTicket, TaskRequest, TaskResponse, TaskTiming};
use chrono::TimeDelta;
use isometer_core::{
    Clock, Money, Outcome, RetryStop, TaskControl, TaskRecord, UsageEvent, Verdict, event_id,
    sha256_hex,
};
use isometer_evidence::{
    BatchSigner, EgressEntry, MANIFEST_VERSION, Manifest, PoisoningHit, Unsealed,
};
use isometer_policy::{
    Config, Fallback, OnPoisoning, Policy, RateCard, SecretSource, Tenant, Tier,
};
use isometer_runtime::{Artifact, AttemptEnv, ExecutionReport, Limits, Runtime, TaskContext};
use isometer_store::{GroupSealer, ManifestRecord, UsageWriter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Runs tasks under policy and records their usage.
///
/// The configuration is hot-swappable: [`Gateway::reload`] prepares a new version whole
/// (every artifact loaded, every secret read) before it replaces the active one in one
/// step, and [`Gateway::rollback`] restores the version before. A task takes the active
/// version when it starts and keeps it to its end.
#[derive(Debug)]
pub struct Gateway {
    active: RwLock<Arc<Loaded>>,
    /// Versions that were active before, oldest first; also serializes changes.
    previous: Mutex<Vec<Arc<Loaded>>>,
    runtime: Runtime,
    writer: UsageWriter,
    signer: BatchSigner,
    /// The signer, sealing each group commit of the spool.
    sealer: Arc<Sealer>,
    credentials: Arc<Credentials>,
    clock: Arc<dyn Clock>,
    approvals: Approvals,
    approval_ttl: Duration,
    admission: Admission,
    budgets: RetryBudgets,
    caps: LoopCapper,
    idempotency: Arc<Idempotency>,
    metrics: Metrics,
}

/// The evidence signer as the spool's sealer: every manifest of a group commit is signed
/// with one signature.
#[derive(Debug)]
struct Sealer(BatchSigner);

impl GroupSealer for Sealer {
    fn seal(&self, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        self.0.seal(leaves)
    }
}

/// One configuration version ready to run: every tool loaded, every egress allowlist
/// built with its secrets.
#[derive(Debug)]
struct Loaded {
    config: Arc<Config>,
    artifacts: HashMap<String, Artifact>,
    /// Tools whose artifact is not a usable module, with the reason.
    invalid: HashMap<String, String>,
    /// Each policy's egress allowlist, by policy id.
    egress: HashMap<String, Arc<AllowlistEgress>>,
    /// The instruction-poisoning rules each tool's descriptor matches, by tool id.
    descriptor_hits: HashMap<String, Vec<String>>,
}

/// How many earlier versions a gateway keeps for rollback.
const KEPT_VERSIONS: usize = 8;

/// A change of the active configuration version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigChange {
    pub kind: ChangeKind,
    /// The version active now.
    pub version: String,
    /// The version it replaced.
    pub previous_version: String,
    /// When the change was asked for, on the gateway's clock.
    pub requested: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Reload,
    Rollback,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Reload => "reload",
            ChangeKind::Rollback => "rollback",
        }
    }
}

impl Gateway {
    /// Loads every tool's artifact; a missing or invalid one is an error naming the tool
    /// and where it is declared.
    pub fn new(
        config: Arc<Config>,
        writer: UsageWriter,
        signer: BatchSigner,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        Self::with_runtime(config, Runtime::new()?, writer, signer, clock)
    }

    /// [`Gateway::new`] with a runtime of the caller's options (pool size, compiled-code
    /// cache).
    pub fn with_runtime(
        config: Arc<Config>,
        runtime: Runtime,
        writer: UsageWriter,
        signer: BatchSigner,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let credentials = Arc::new(Credentials::default());
        let loaded = Loaded::prepare(config, &runtime, &credentials)?;
        let admission = Admission::new(AdmissionOptions {
            max_in_flight: runtime.max_in_flight(),
            ..AdmissionOptions::default()
        });
        Ok(Gateway {
            admission,
            budgets: RetryBudgets::default(),
            caps: LoopCapper::default(),
            idempotency: Idempotency::new(crate::idempotency::DEFAULT_CAPACITY),
            active: RwLock::new(Arc::new(loaded)),
            previous: Mutex::new(Vec::new()),
            runtime,
            writer,
            sealer: Arc::new(Sealer(signer.clone())),
            signer,
            credentials,
            metrics: Metrics::default(),
            clock,
            approvals: Approvals::default(),
            approval_ttl: DEFAULT_APPROVAL_TTL,
        })
    }

    /// How long an approval request stays good (one hour unless set).
    pub fn with_approval_ttl(mut self, ttl: Duration) -> Self {
        self.approval_ttl = ttl;
        self
    }

    /// Admission bounds other than the defaults (all tenants' tasks in flight: the
    /// runtime's pool; the longest wait in a queue: 2 s). More in flight than the pool
    /// holds is not allowed.
    pub fn with_admission(mut self, options: AdmissionOptions) -> Self {
        self.admission = Admission::new(AdmissionOptions {
            max_in_flight: options.max_in_flight.min(self.runtime.max_in_flight()),
            ..options
        });
        self
    }

    /// Keeps the answers of the newest `capacity` tasks with a caller-chosen id in memory
    /// (100,000 unless set); older ones are read back from ClickHouse.
    pub fn with_idempotency_capacity(mut self, capacity: usize) -> Self {
        self.idempotency = Idempotency::new(capacity);
        self
    }

    /// The admission bounds in force.
    pub fn admission_options(&self) -> AdmissionOptions {
        self.admission.options()
    }

    /// Tasks running and waiting now.
    pub fn admission_status(&self) -> AdmissionStatus {
        self.admission.status()
    }

    /// A tenant's retry budget for a tool now, under the active policy's window.
    pub fn retry_budget(&self, tenant_id: &str, tool_id: &str) -> Option<BudgetStatus> {
        let loaded = self.loaded();
        let tenant = loaded.config.tenant(tenant_id)?;
        let policy = loaded.config.policy_for(tool_id, &tenant.tier)?;
        Some(
            self.budgets
                .status(tenant_id, tool_id, policy.retry.window, self.now_ms()),
        )
    }

    /// A run's loop-cap state; `None` when the gateway does not track the run.
    pub fn run_caps(&self, tenant_id: &str, run_id: &str) -> Option<RunCapStatus> {
        self.caps.status(tenant_id, run_id, self.clock.now())
    }

    /// Lifts a run's loop cap (an operator's decision); the run's counts start afresh.
    /// Returns the state before, `None` when the run is not tracked.
    pub fn reset_run_caps(&self, tenant_id: &str, run_id: &str) -> Option<RunCapStatus> {
        let before = self.caps.reset(tenant_id, run_id, self.clock.now());
        if let Some(b) = &before {
            tracing::info!(tenant = tenant_id, run = run_id, capped = ?b.capped.as_ref().map(|c| c.cap), "run caps reset");
        }
        before
    }

    /// Task ids recorded by an earlier process (tenant, task id): submitting one again
    /// answers from ClickHouse. `complete`: these are all of them within the idempotency
    /// window; otherwise every unknown task id is looked up.
    pub fn remember_recorded_tasks(
        &self,
        keys: impl IntoIterator<Item = (String, String)>,
        complete: bool,
    ) -> usize {
        self.idempotency.remember(keys, complete, self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    /// The active version, for one task from start to end.
    fn loaded(&self) -> Arc<Loaded> {
        self.active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes `config` the active version once it is wholly prepared; on any error the
    /// active version stays. Loading the same version again changes nothing (`None`).
    /// Compiles the tools: call it off the async threads.
    pub fn reload(&self, config: Config) -> Result<Option<ConfigChange>, GatewayError> {
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let requested = self.clock.now();
        if config.version == self.loaded().config.version {
            return Ok(None);
        }
        let loaded = Arc::new(Loaded::prepare(
            Arc::new(config),
            &self.runtime,
            &self.credentials,
        )?);
        let replaced = self.swap(loaded);
        let change = ConfigChange {
            kind: ChangeKind::Reload,
            version: self.loaded().config.version.clone(),
            previous_version: replaced.config.version.clone(),
            requested,
        };
        previous.push(replaced);
        if previous.len() > KEPT_VERSIONS {
            previous.remove(0);
        }
        Ok(Some(change))
    }

    /// Restores the version that was active before the current one; the current one is
    /// dropped (a second rollback goes one further back). `None` when there is none.
    pub fn rollback(&self) -> Option<ConfigChange> {
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let requested = self.clock.now();
        let restored = previous.pop()?;
        let version = restored.config.version.clone();
        let replaced = self.swap(restored);
        Some(ConfigChange {
            kind: ChangeKind::Rollback,
            version,
            previous_version: replaced.config.version.clone(),
            requested,
        })
    }

    /// The versions a rollback would restore, the next one last.
    pub fn previous_versions(&self) -> Vec<String> {
        self.previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|l| l.config.version.clone())
            .collect()
    }

    fn swap(&self, loaded: Arc<Loaded>) -> Arc<Loaded> {
        let mut active = self
            .active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *active, loaded)
    }

    /// The live per-task credentials, for introspection by upstreams.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The signer of this gateway's evidence (its key id and the keys that verify it).
    pub fn signer(&self) -> &BatchSigner {
        &self.signer
    }

    /// Now, on the gateway's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The active configuration version.
    pub fn config(&self) -> Arc<Config> {
        self.loaded().config.clone()
    }

    /// The usage spool's figures: what ClickHouse does not have yet, and the shipper's
    /// last error.
    pub fn usage_status(&self) -> Result<isometer_store::WriterStatus, GatewayError> {
        Ok(self.writer.status()?)
    }

    /// Whether the usage spool can take another task's records.
    pub fn has_spool_room(&self) -> bool {
        self.writer.has_room()
    }

    /// Waits until every task submitted so far is recorded in ClickHouse.
    pub async fn flush(&self) -> Result<(), GatewayError> {
        Ok(self.writer.flush().await?)
    }

    /// Runs one task and records it. Errors only for a request that cannot be accepted or
    /// usage that cannot be queued; whatever the tool does is the response's outcome.
    ///
    /// A task id the caller chose runs once: a repeated one answers the stored result
    /// (`repeated`), and one that is running now waits for it.
    pub async fn submit(&self, request: TaskRequest) -> Result<TaskResponse, GatewayError> {
        let started = std::time::Instant::now();
        let result = self.submit_counted(request).await;
        match &result {
            Ok(response) => {
                self.metrics
                    .task(&response.tenant_id, response.outcome, started.elapsed());
            }
            Err(_) => self.metrics.error(),
        }
        result
    }

    /// What this gateway counted, for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn submit_counted(&self, request: TaskRequest) -> Result<TaskResponse, GatewayError> {
        let approval_id = request.approval_id.clone();
        let plan = self.plan(request)?;
        if !plan.keyed {
            return self.run_task(plan, approval_id).await;
        }
        let mut looked_up = false;
        let claimed = loop {
            match self
                .idempotency
                .claim(&plan.tenant_id, &plan.task_id, looked_up)
            {
                Claim::Run(claimed) => break claimed,
                Claim::Done(answer) => return Ok(repeated(&answer)),
                Claim::Wait(mut running) => {
                    // One change comes: the running submission's answer, or `None` when
                    // it ended without a final one (then this one claims the id again).
                    let _ = running.changed().await;
                    let answer = running.borrow().clone();
                    if let Some(answer) = answer {
                        return Ok(repeated(&answer));
                    }
                }
                Claim::LookUp => {
                    if let Some(answer) = self.recorded_answer(&plan).await? {
                        let answer = Arc::new(answer);
                        self.idempotency.store(
                            &plan.tenant_id,
                            &plan.task_id,
                            answer.clone(),
                            self.now_ms(),
                        );
                        return Ok(repeated(&answer));
                    }
                    looked_up = true;
                }
            }
        };
        let response = self.run_task(plan, approval_id).await?;
        claimed.finish(&response, response.is_final(), self.now_ms());
        Ok(response)
    }

    /// A task past its idempotency check: approval, loop caps, admission, attempts.
    async fn run_task(
        &self,
        mut plan: AttemptPlan,
        approval_id: Option<String>,
    ) -> Result<TaskResponse, GatewayError> {
        // Borrowed from the task's version, not copied per task.
        let loaded = plan.loaded.clone();
        let tier = {
            let tenant = loaded.tenant(&plan.tenant_id)?;
            match loaded.config.tier(&tenant.tier) {
                Some(tier) => std::borrow::Cow::Borrowed(tier),
                None => std::borrow::Cow::Owned(Tier::default_for(&tenant.tier)),
            }
        };
        let policy = loaded.config.policy_for(&plan.tool_id, &tier.id);
        // A destructive tool runs only under an approval given for this very task.
        let destructive = plan
            .loaded
            .config
            .tool(&plan.tool_id)
            .is_some_and(|t| t.destructive);
        if destructive && policy.is_some() {
            let approval = match approval_id {
                None => self.request_approval(&plan).await?,
                Some(id) => self.claim_approval(&plan, &id).await?,
            };
            match approval.state {
                ApprovalState::Used => plan.approval_id = Some(approval.approval_id),
                _ => return Ok(waiting(&plan, &approval)),
            }
        }
        // Loop caps, decided before the task takes a slot: a capped run answers at once.
        let caps = &tier.loop_caps;
        let _gate = if LoopCapper::needs_gate(caps, plan.confidence) {
            Some(
                self.caps
                    .gate(&plan.tenant_id, &plan.run_id, self.clock.now())
                    .await,
            )
        } else {
            None
        };
        if caps.any() {
            let input_sha256 = sha256_hex(&plan.input);
            let check = self.caps.check(
                &CapInput {
                    tenant_id: &plan.tenant_id,
                    run_id: &plan.run_id,
                    tool_id: &plan.tool_id,
                    input_sha256: &input_sha256,
                    confidence: plan.confidence,
                },
                caps,
                self.clock.now(),
            );
            if let CapCheck::Capped(info) = check {
                return self.capped(plan, info).await;
            }
        }
        let waiting = Instant::now();
        let admitted = self.admission.admit(&plan.tenant_id, &tier).await;
        let mut admit = waiting.elapsed();
        let permit = match admitted {
            Ok(permit) => permit,
            Err(refusal) => return self.refuse(plan, refusal, admit).await,
        };
        // The spool is full: ClickHouse is behind. Nothing runs until it catches up; the
        // refusal itself is still recorded (the spool keeps a margin for it).
        if !self.writer.has_room() {
            drop(permit);
            let refusal = Refusal {
                reason: "usage is not reaching ClickHouse fast enough; the spool is full".into(),
                retry_after: Duration::from_secs(1),
            };
            return self.refuse(plan, refusal, admit).await;
        }
        let mut permit = Some(permit);
        let mut attempts = Vec::new();
        let mut control = TaskControl::default();
        loop {
            let sealed = self.attempt(&plan).await?;
            let outcome = sealed.report.outcome;
            let ran = sealed.ran;
            attempts.push(sealed);
            let Some(policy) = policy.filter(|_| ran) else {
                break;
            };
            let retry = &policy.retry;
            if plan.attempt == 1 {
                self.budgets.first_attempt(
                    &plan.tenant_id,
                    &plan.tool_id,
                    retry.window,
                    self.now_ms(),
                );
            }
            if outcome.is_success() || !retry.on.contains(&outcome) || retry.max_attempts <= 1 {
                break;
            }
            if plan.attempt >= retry.max_attempts {
                control.retry_stop = Some(RetryStop::MaxAttempts);
                break;
            }
            if !self.budgets.try_retry(
                &plan.tenant_id,
                &plan.tool_id,
                retry.budget_ratio,
                retry.window,
                self.now_ms(),
            ) {
                control.retry_stop = Some(RetryStop::RetryBudget);
                break;
            }
            let backoff = retry
                .backoff
                .saturating_mul(1 << u32::from(plan.attempt - 1).min(16));
            // The backoff runs nothing: its slot goes to the tenant's other tasks, and the
            // retry queues for one like any task.
            permit = None;
            tokio::time::sleep(backoff).await;
            let waiting = Instant::now();
            let admitted = self.admission.admit(&plan.tenant_id, &tier).await;
            admit += waiting.elapsed();
            permit = match admitted {
                Ok(slot) if self.writer.has_room() => Some(slot),
                Ok(_) | Err(_) => {
                    control.retry_stop = Some(RetryStop::NoSlot);
                    break;
                }
            };
            plan.attempt += 1;
        }
        drop(permit);
        let last = attempts.last().map(|a| a.report.outcome);
        let fallback = match policy.map(|p| &p.fallback) {
            Some(Fallback::Static(body)) if last.is_some_and(|o| !o.is_success()) => {
                control.fallback = true;
                Some(serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
            }
            _ => None,
        };
        let cost: Money = attempts.iter().map(|a| a.evidence.manifest().cost).sum();
        let ran = attempts.iter().any(|a| a.ran);
        self.caps.settle(&plan.tenant_id, &plan.run_id, cost, ran);
        self.finish(plan, attempts, control, fallback, admit).await
    }

    /// Records a task its run's loop cap answered, with the spend it avoided.
    async fn capped(&self, plan: AttemptPlan, info: CapInfo) -> Result<TaskResponse, GatewayError> {
        let detail = format!(
            "run `{}` is capped ({}) until {}, or until an operator resets it",
            plan.run_id,
            info.cap,
            info.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let report = ExecutionReport::not_run(Outcome::Capped, detail);
        let sealed = self.seal(&plan, report, None, self.clock.now(), Vec::new())?;
        let control = TaskControl {
            cap: Some(info.cap),
            avoided_cost: info.avoided_cost,
            ..TaskControl::default()
        };
        let mut response = self
            .finish(plan, vec![sealed], control, None, Duration::ZERO)
            .await?;
        if let Some(cap) = &mut response.cap {
            cap.until = Some(info.until);
        }
        Ok(response)
    }

    /// Records a refusal for load under an id of its own (the caller's task id stays
    /// free to be submitted again) and answers it as the caller's task, `throttled`.
    async fn refuse(
        &self,
        mut plan: AttemptPlan,
        refusal: Refusal,
        waited: Duration,
    ) -> Result<TaskResponse, GatewayError> {
        let task_id = plan.task_id.clone();
        let suffix: u32 = rand::random();
        plan.task_id = format!("{task_id}:throttled:{suffix:08x}");
        let report = ExecutionReport::not_run(Outcome::Throttled, refusal.reason);
        let sealed = self.seal(&plan, report, None, self.clock.now(), Vec::new())?;
        let mut response = self
            .finish(plan, vec![sealed], TaskControl::default(), None, waited)
            .await?;
        response.task_id = task_id;
        response.retry_after_s = Some(refusal.retry_after.as_secs().max(1));
        Ok(response)
    }

    /// The stored answer of a task recorded in ClickHouse (by this or an earlier
    /// process), rebuilt from its record and manifests.
    async fn recorded_answer(
        &self,
        plan: &AttemptPlan,
    ) -> Result<Option<TaskResponse>, GatewayError> {
        let Some((task, manifests)) = self
            .writer
            .store()
            .recorded_task(&plan.tenant_id, &plan.task_id)
            .await?
        else {
            return Ok(None);
        };
        let mut attempts = Vec::with_capacity(manifests.len());
        for m in &manifests {
            let signed: isometer_evidence::SignedManifest = serde_json::from_str(&m.signed)
                .map_err(|e| {
                    isometer_store::StoreError::Corrupt(format!("manifest {}: {e}", m.manifest_id))
                })?;
            attempts.push(AttemptSummary {
                attempt: m.attempt,
                outcome: m.outcome,
                exit_code: None,
                usage: signed.manifest.usage,
                cost: signed.manifest.cost,
                policy_id: m.policy_id.clone(),
                stderr: String::from_utf8_lossy(&m.logs).into_owned(),
                detail: None,
                manifest_digest: m.digest.clone(),
                manifest: signed.into(),
            });
        }
        let last = manifests.last();
        let output = if task.control.fallback {
            last.and_then(|m| {
                let tier = plan.loaded.config.tenant(&task.tenant_id)?.tier.clone();
                match &plan
                    .loaded
                    .config
                    .policy_for(&task.tool_id, &tier)?
                    .fallback
                {
                    Fallback::Static(body) => serde_json::from_str(body).ok(),
                    Fallback::None => None,
                }
                .filter(|_| !m.policy_id.is_empty())
            })
            .unwrap_or(serde_json::Value::Null)
        } else {
            match (last, attempts.last()) {
                (Some(m), Some(a)) if !a.manifest.manifest.output_withheld => {
                    output_value(&m.output)
                }
                _ => serde_json::Value::Null,
            }
        };
        let approval = attempts
            .last()
            .and_then(|a| a.manifest.manifest.approval_id.as_deref())
            .and_then(|id| self.approvals.get(id))
            .map(|a| ApprovalTicket::from(&a));
        Ok(Some(TaskResponse {
            trace_id: last.map_or_else(|| task.task_id.clone(), |m| m.trace_id.clone()),
            task_id: task.task_id,
            tenant_id: task.tenant_id,
            tool_id: task.tool_id,
            use_case: task.use_case,
            run_id: task.run_id,
            run_class: task.run_class,
            outcome: task.outcome,
            output,
            attempts,
            total_cost: task.total_cost,
            currency: plan.currency(),
            approval,
            fallback: task.control.fallback,
            retry_stop: task.control.retry_stop,
            cap: task.control.cap.map(|cap| CapTicket {
                cap,
                until: None,
                avoided_cost: task.control.avoided_cost,
            }),
            retry_after_s: None,
            repeated: true,
            timing: TaskTiming::default(),
        }))
    }

    /// Records a task's attempts (events, the task record, the manifests in one spool
    /// record) and answers it. `fallback`: the policy's fallback answer, when it applies.
    async fn finish(
        &self,
        plan: AttemptPlan,
        attempts: Vec<SealedAttempt>,
        control: TaskControl,
        fallback: Option<serde_json::Value>,
        admit: Duration,
    ) -> Result<TaskResponse, GatewayError> {
        // The plan's names move into the answer; its version stays alive for the lookups.
        let loaded = plan.loaded.clone();
        let tenant = loaded.tenant(&plan.tenant_id)?;
        let (Some(first), Some(last)) = (attempts.first(), attempts.last()) else {
            return Err(GatewayError::InvalidRequest(format!(
                "task `{}` ended without an attempt",
                plan.task_id
            )));
        };
        let total_cost: Money = attempts.iter().map(|a| a.evidence.manifest().cost).sum();
        let mut events = Vec::with_capacity(attempts.len());
        let mut evidence = Vec::with_capacity(attempts.len());
        let mut leaves = Vec::with_capacity(attempts.len());
        let mut digests = Vec::with_capacity(attempts.len());
        for sealed in &attempts {
            let manifest = sealed.evidence.manifest();
            let digest = sealed.evidence.digest_hex();
            let id = event_id(&plan.task_id, manifest.attempt);
            events.push(UsageEvent {
                event_id: id.clone(),
                time: sealed.started,
                tenant_id: tenant.id.clone(),
                tier: tenant.tier.clone(),
                use_case: plan.use_case.clone(),
                tool_id: plan.tool_id.clone(),
                task_id: plan.task_id.clone(),
                run_id: plan.run_id.clone(),
                run_class: plan.run_class,
                attempt: manifest.attempt,
                outcome: sealed.report.outcome,
                exit_code: sealed.report.exit_code,
                usage: sealed.report.usage,
                policy_version: plan.loaded.config.version.clone(),
                verdict: manifest.verdict,
                evidence_complete: sealed.ran && manifest.missing_fields.is_empty(),
                confidence: plan.confidence,
                policy_id: manifest.policy_id.clone(),
                artifact_hash: manifest.artifact_hash.clone(),
                rate_card_version: manifest.rate_card_version.clone(),
                cost: manifest.cost,
            });
            evidence.push(ManifestRecord {
                manifest_id: id,
                started: sealed.started,
                trace_id: plan.trace_id.clone(),
                task_id: plan.task_id.clone(),
                attempt: manifest.attempt,
                tenant_id: tenant.id.clone(),
                tool_id: plan.tool_id.clone(),
                policy_id: manifest.policy_id.clone(),
                policy_version: plan.loaded.config.version.clone(),
                outcome: manifest.outcome,
                verdict: manifest.verdict,
                key_id: self.signer.key_id().to_owned(),
                digest: digest.clone(),
                signed: sealed.evidence.head().to_owned(),
                input: plan.input.clone(),
                output: sealed.report.stdout.clone(),
                logs: sealed.report.stderr.clone(),
            });
            leaves.push(sealed.evidence.leaf());
            digests.push(digest);
        }
        let record = TaskRecord {
            task_id: plan.task_id.clone(),
            submitted: first.started,
            finished: last.finished,
            tenant_id: tenant.id.clone(),
            tier: tenant.tier.clone(),
            use_case: plan.use_case.clone(),
            tool_id: plan.tool_id.clone(),
            run_id: plan.run_id.clone(),
            run_class: plan.run_class,
            outcome: last.report.outcome,
            attempts: u16::try_from(attempts.len()).unwrap_or(u16::MAX),
            total_cost,
            compliant: events
                .iter()
                .all(|e| e.verdict == Verdict::Allow && e.evidence_complete),
            control: control.clone(),
        };
        let recording = Instant::now();
        let seals = self
            .writer
            .record_sealed(events, record, evidence, leaves, self.sealer.clone())
            .await?;
        let timing = TaskTiming {
            admit,
            run: attempts.iter().map(|a| a.timing.run).sum(),
            record: recording.elapsed(),
        };

        let outcome = last.report.outcome;
        let currency = plan.currency();
        let output = match fallback {
            Some(body) => body,
            None if last.evidence.manifest().output_withheld => serde_json::Value::Null,
            None => output_value(&last.report.stdout),
        };
        Ok(TaskResponse {
            task_id: plan.task_id,
            trace_id: plan.trace_id,
            tenant_id: tenant.id.clone(),
            tool_id: plan.tool_id,
            use_case: plan.use_case,
            run_id: plan.run_id,
            run_class: plan.run_class,
            outcome,
            output,
            attempts: attempts
                .into_iter()
                .zip(seals.iter().zip(digests))
                .map(|(sealed, (seal, digest))| {
                    let manifest = sealed.evidence.manifest();
                    Ok(AttemptSummary {
                        attempt: manifest.attempt,
                        outcome: sealed.report.outcome,
                        exit_code: sealed.report.exit_code,
                        usage: sealed.report.usage,
                        cost: manifest.cost,
                        policy_id: manifest.policy_id.clone(),
                        stderr: String::from_utf8_lossy(&sealed.report.stderr).into_owned(),
                        detail: sealed.report.detail,
                        manifest_digest: digest,
                        manifest: sealed.evidence.sealed(seal)?,
                    })
                })
                .collect::<Result<_, GatewayError>>()?,
            total_cost,
            currency,
            approval: plan
                .approval_id
                .as_deref()
                .and_then(|id| self.approvals.get(id))
                .map(|a| ApprovalTicket::from(&a)),
            fallback: control.fallback,
            retry_stop: control.retry_stop,
            cap: control.cap.map(|cap| CapTicket {
                cap,
                until: None,
                avoided_cost: control.avoided_cost,
            }),
            retry_after_s: None,
            repeated: false,
            timing,
        })
    }

    /// Checks a request and settles its names: task, run and trace ids, use case.
    /// The plan keeps the configuration version active now: the task runs under it to its
    /// end, whatever is reloaded meanwhile.
    pub fn plan(&self, request: TaskRequest) -> Result<AttemptPlan, GatewayError> {
        let loaded = self.loaded();
        if loaded.config.tenant(&request.tenant_id).is_none() {
            return Err(GatewayError::UnknownTenant(request.tenant_id));
        }
        let keyed = request.task_id.is_some();
        let task_id = match request.task_id {
            Some(id) => validated_id("task_id", id)?,
            // A random (v4) id from the thread's generator: no system call per task.
            None => uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string(),
        };
        let run_id = match request.run_id {
            Some(id) => validated_id("run_id", id)?,
            None => task_id.clone(),
        };
        // Checked even when unknown: a denied task is still recorded under this name.
        let tool_id = validated_id("tool_id", request.tool_id)?;
        let use_case = match (request.use_case, loaded.config.tool(&tool_id)) {
            (Some(u), _) => validated_id("use_case", u)?,
            (None, Some(tool)) => tool.default_use_case.clone(),
            (None, None) => tool_id.clone(),
        };
        if let Some(c) = request.confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(GatewayError::InvalidRequest(format!(
                "confidence must be between 0 and 1, not {c}"
            )));
        }
        let trace_id = match request.trace_id {
            Some(id) => validated_id("trace_id", id)?,
            None => task_id.clone(),
        };
        let input = serde_json::to_vec(&request.input)
            .map_err(|e| GatewayError::InvalidRequest(format!("input: {e}")))?;
        Ok(AttemptPlan {
            task_id,
            attempt: 1,
            trace_id,
            run_id,
            run_class: request.run_class,
            tenant_id: request.tenant_id,
            tool_id,
            use_case,
            confidence: request.confidence,
            input,
            approval_id: None,
            keyed,
            loaded,
        })
    }

    /// Runs one attempt under the tenant's policy for the tool and seals its evidence;
    /// records nothing. Deny by default: without a policy nothing runs.
    pub async fn attempt(&self, plan: &AttemptPlan) -> Result<SealedAttempt, GatewayError> {
        let tenant = plan.loaded.tenant(&plan.tenant_id)?;
        let policy = plan
            .loaded
            .config
            .tool(&plan.tool_id)
            .and_then(|_| plan.loaded.config.policy_for(&plan.tool_id, &tenant.tier));
        if let (Some(_), Some(reason)) = (policy, plan.loaded.invalid.get(&plan.tool_id)) {
            let detail = format!(
                "the artifact of tool `{}` is not usable: {reason}",
                plan.tool_id
            );
            return self.seal(
                plan,
                ExecutionReport::not_run(Outcome::InvalidArtifact, detail),
                None,
                self.clock.now(),
                Vec::new(),
            );
        }
        let Some((policy, artifact)) = policy.zip(plan.loaded.artifacts.get(&plan.tool_id)) else {
            let detail = format!(
                "no policy allows tool `{}` for tier `{}`",
                plan.tool_id, tenant.tier
            );
            return self.seal(
                plan,
                ExecutionReport::not_run(Outcome::PolicyDenied, detail),
                None,
                self.clock.now(),
                Vec::new(),
            );
        };
        // A tool whose descriptor carries instructions for the agent: recorded, and under
        // a denying policy the tool does not run.
        let descriptor: Vec<PoisoningHit> = plan
            .loaded
            .descriptor_hits
            .get(&plan.tool_id)
            .into_iter()
            .flatten()
            .map(|rule| PoisoningHit {
                rule: rule.clone(),
                location: "descriptor".into(),
            })
            .collect();
        if !descriptor.is_empty() && policy.on_poisoning == OnPoisoning::Deny {
            let rules: Vec<&str> = descriptor.iter().map(|h| h.rule.as_str()).collect();
            let detail = format!(
                "the descriptor of tool `{}` matches instruction-poisoning rules {}",
                plan.tool_id,
                rules.join(", ")
            );
            return self.seal(
                plan,
                ExecutionReport::not_run(Outcome::PolicyDenied, detail),
                None,
                self.clock.now(),
                descriptor,
            );
        }
        let limits = policy_limits(policy);
        let env = AttemptEnv {
            context: TaskContext {
                task_id: plan.task_id.clone(),
                attempt: u32::from(plan.attempt),
                tenant_id: tenant.id.clone(),
                tool_id: plan.tool_id.clone(),
                trace_id: plan.trace_id.clone(),
                run_id: plan.run_id.clone(),
                use_case: plan.use_case.clone(),
            },
            egress: plan
                .loaded
                .egress
                .get(&policy.id)
                .cloned()
                .unwrap_or_default(),
        };
        let started = self.clock.now();
        let running = Instant::now();
        let report = self
            .runtime
            .execute_in(artifact, &plan.input, &limits, env)
            .await;
        let ran_for = running.elapsed();
        // The attempt is over: its credentials are worth nothing from now on.
        self.credentials
            .revoke_attempt(&plan.task_id, u32::from(plan.attempt));
        let mut sealed = self.seal(
            plan,
            report,
            Some((policy, artifact.hash())),
            started,
            descriptor,
        )?;
        sealed.timing.run = ran_for;
        Ok(sealed)
    }

    /// The attempt's manifest, checked for completeness (failing closed) and encoded for
    /// signing (it is signed with the task's record, in the spool's group commit).
    /// `ran`: the policy and the artifact's hash, when the attempt ran. `poisoning`: the
    /// descriptor's hits; the content's are taken from the egress calls.
    fn seal(
        &self,
        plan: &AttemptPlan,
        mut report: ExecutionReport,
        ran: Option<(&Policy, &str)>,
        started: chrono::DateTime<chrono::Utc>,
        mut poisoning: Vec<PoisoningHit>,
    ) -> Result<SealedAttempt, GatewayError> {
        let tenant = plan.loaded.tenant(&plan.tenant_id)?;
        let card = plan.loaded.card(&tenant.tier, started)?;
        let finished = started
            + TimeDelta::microseconds(i64::try_from(report.usage.wall_time_us).unwrap_or(i64::MAX));
        let cost = isometer_billing::rate(&report.usage, ran.is_some(), card).total;
        let egress_denied = report
            .egress
            .iter()
            .any(|e| e.verdict == isometer_runtime::Verdict::Deny);
        let mut manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            trace_id: plan.trace_id.clone(),
            task_id: plan.task_id.clone(),
            attempt: plan.attempt,
            run_id: plan.run_id.clone(),
            tenant_id: tenant.id.clone(),
            tool_id: plan.tool_id.clone(),
            use_case: plan.use_case.clone(),
            policy_id: ran.map(|(p, _)| p.id.clone()).unwrap_or_default(),
            policy_version: plan.loaded.config.version.clone(),
            artifact_hash: ran.map(|(_, h)| h.to_owned()).unwrap_or_default(),
            input_hash: sha256_hex(&plan.input),
            output_hash: if ran.is_some() {
                sha256_hex(&report.stdout)
            } else {
                String::new()
            },
            outcome: report.outcome,
            verdict: if ran.is_some() && !egress_denied {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            usage: report.usage,
            egress: egress_evidence(&report.egress),
            poisoning: {
                poisoning.extend(report.egress.iter().flat_map(|call| {
                    call.poisoning.iter().map(|rule| PoisoningHit {
                        rule: rule.clone(),
                        location: call.url.clone(),
                    })
                }));
                poisoning
            },
            approval_id: plan.approval_id.clone(),
            confidence: plan.confidence,
            started_ms: started.timestamp_millis(),
            finished_ms: finished.timestamp_millis(),
            rate_card_version: card.version.clone(),
            cost,
            missing_fields: Vec::new(),
            output_withheld: false,
        };
        // Fail closed: an attempt whose evidence lacks a field its policy requires gives
        // no output and is denied; the manifest says what was missing.
        if let Some((policy, _)) = ran {
            manifest.missing_fields = manifest.missing(&policy.required_observability_fields);
        }
        // Content that tried to steer the agent: under a denying policy the attempt is
        // denied (the content itself never reached the guest) and gives no output.
        if let Some((policy, _)) = ran
            && policy.on_poisoning == OnPoisoning::Deny
            && !manifest.poisoning.is_empty()
        {
            let hits: Vec<String> = manifest
                .poisoning
                .iter()
                .map(|h| format!("{} in {}", h.rule, h.location))
                .collect();
            report.detail = Some(format!(
                "instruction poisoning ({}): content withheld, attempt denied",
                hits.join("; ")
            ));
            report.outcome = Outcome::PolicyDenied;
            manifest.outcome = Outcome::PolicyDenied;
            manifest.verdict = Verdict::Deny;
            manifest.output_withheld = true;
        }
        if !manifest.missing_fields.is_empty() {
            let missing = manifest.missing_fields.join(", ");
            report.detail = Some(format!(
                "evidence incomplete (missing {missing}): output withheld"
            ));
            report.outcome = Outcome::PolicyDenied;
            manifest.outcome = Outcome::PolicyDenied;
            manifest.verdict = Verdict::Deny;
            manifest.output_withheld = true;
        }
        Ok(SealedAttempt {
            report,
            ran: ran.is_some(),
            started,
            finished,
            evidence: Unsealed::new(manifest)?,
            timing: TaskTiming::default(),
        })
    }
}

/// Approvals of destructive tools' tasks (see the `approvals` module).
impl Gateway {
    /// An approval by id, in its current state.
    pub fn approval(&self, id: &str) -> Option<Approval> {
        self.approvals.get(id)
    }

    /// Approvals still waiting for a decision or a use, oldest first.
    pub fn open_approvals(&self) -> Vec<Approval> {
        self.approvals.open()
    }

    /// Takes back approvals kept by an earlier process (latest state of each).
    pub fn restore_approvals(&self, rows: Vec<isometer_store::ApprovalRow>) -> usize {
        let mut restored = 0;
        for approval in rows.into_iter().filter_map(Approval::from_row) {
            self.approvals.put(approval);
            restored += 1;
        }
        restored
    }

    /// Asks for an approval of `plan`'s task, or finds the one already asked for the same
    /// task and input.
    async fn request_approval(&self, plan: &AttemptPlan) -> Result<Approval, GatewayError> {
        if let Some(used) = self.approvals.ran_under(&plan.tenant_id, &plan.task_id) {
            return Err(ApprovalError::Refused {
                id: used,
                why: format!("was used: task `{}` ran under it already", plan.task_id),
            }
            .into());
        }
        let input_sha256 = sha256_hex(&plan.input);
        if let Some(open) = self.approvals.open().into_iter().find(|a| {
            a.tenant_id == plan.tenant_id
                && a.task_id == plan.task_id
                && a.input_sha256 == input_sha256
        }) {
            return Ok(open);
        }
        let requested = self.clock.now();
        let approval = Approval {
            approval_id: uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string(),
            tenant_id: plan.tenant_id.clone(),
            tool_id: plan.tool_id.clone(),
            task_id: plan.task_id.clone(),
            trace_id: plan.trace_id.clone(),
            run_id: plan.run_id.clone(),
            use_case: plan.use_case.clone(),
            run_class: plan.run_class,
            input_sha256,
            input: plan.input.clone(),
            requested,
            expires: requested
                + TimeDelta::from_std(self.approval_ttl).unwrap_or(TimeDelta::hours(1)),
            state: ApprovalState::Pending,
            decided_by: None,
            decided: None,
            reason: None,
            version: 1,
        };
        self.writer
            .store()
            .record_approval(&approval.to_row())
            .await?;
        self.approvals.put(approval.clone());
        Ok(approval)
    }

    /// Uses the approval `id` for `plan`'s task: `Used` when the task may run now, the
    /// approval as it stands while it still waits for a decision, an error otherwise.
    async fn claim_approval(&self, plan: &AttemptPlan, id: &str) -> Result<Approval, GatewayError> {
        self.expire_approvals().await?;
        let known = self
            .approvals
            .get(id)
            .ok_or_else(|| ApprovalError::Unknown(id.to_owned()))?;
        if known.state == ApprovalState::Pending {
            return Ok(known);
        }
        let input_sha256 = sha256_hex(&plan.input);
        let (used, before) = self.approvals.claim(id, |a| {
            if a.tenant_id != plan.tenant_id || a.tool_id != plan.tool_id {
                Err(format!(
                    "is for tool `{}` of tenant `{}`",
                    a.tool_id, a.tenant_id
                ))
            } else if a.task_id != plan.task_id {
                Err(format!("is for task `{}`", a.task_id))
            } else if a.input_sha256 != input_sha256 {
                Err(format!(
                    "was given for the input with sha256 {}, not {input_sha256}",
                    a.input_sha256
                ))
            } else {
                Ok(())
            }
        })?;
        // Kept before the task runs: a restart cannot make it usable twice.
        if let Err(e) = self.writer.store().record_approval(&used.to_row()).await {
            self.approvals.restore(before);
            return Err(e.into());
        }
        Ok(used)
    }

    /// An approver's decision on a pending approval. A denial records the task as
    /// `policy_denied`, with the approver's reason.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: Option<String>,
    ) -> Result<Approval, GatewayError> {
        self.expire_approvals().await?;
        let now = self.clock.now();
        let to = if approve {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        let (decided, before) = self.approvals.transition(
            id,
            &[ApprovalState::Pending],
            to,
            |_| Ok(()),
            |a| {
                a.decided_by = Some(by.to_owned());
                a.decided = Some(now);
                a.reason = reason;
            },
        )?;
        if let Err(e) = self.writer.store().record_approval(&decided.to_row()).await {
            self.approvals.restore(before);
            return Err(e.into());
        }
        // A task that ran under another approval already has its record.
        let ran = self
            .approvals
            .ran_under(&decided.tenant_id, &decided.task_id)
            .is_some();
        if !approve && !ran {
            let detail = format!(
                "denied by approver `{by}`{}",
                decided
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            self.record_unrun(&decided, Outcome::PolicyDenied, detail)
                .await?;
        }
        Ok(decided)
    }

    /// Ends every open approval whose time is up; each one's task is recorded as
    /// `approval_required`. Returns how many ended.
    pub async fn expire_approvals(&self) -> Result<usize, GatewayError> {
        let now = self.clock.now();
        let mut ended = 0;
        for approval in self
            .approvals
            .open()
            .into_iter()
            .filter(|a| a.expires <= now)
        {
            let Ok((expired, before)) = self.approvals.transition(
                &approval.approval_id,
                &[ApprovalState::Pending, ApprovalState::Approved],
                ApprovalState::Expired,
                |_| Ok(()),
                |_| {},
            ) else {
                continue; // decided meanwhile
            };
            if let Err(e) = self.writer.store().record_approval(&expired.to_row()).await {
                self.approvals.restore(before);
                return Err(e.into());
            }
            let detail = match before.state {
                ApprovalState::Approved => "approved, but not used before the approval expired",
                _ => "no approver decided before the approval expired",
            };
            if self
                .approvals
                .ran_under(&expired.tenant_id, &expired.task_id)
                .is_none()
            {
                self.record_unrun(&expired, Outcome::ApprovalRequired, detail.to_owned())
                    .await?;
            }
            ended += 1;
        }
        Ok(ended)
    }

    /// Records the task of an approval that will never run.
    async fn record_unrun(
        &self,
        approval: &Approval,
        outcome: Outcome,
        detail: String,
    ) -> Result<(), GatewayError> {
        let plan = AttemptPlan {
            task_id: approval.task_id.clone(),
            attempt: 1,
            trace_id: approval.trace_id.clone(),
            run_id: approval.run_id.clone(),
            run_class: approval.run_class,
            tenant_id: approval.tenant_id.clone(),
            tool_id: approval.tool_id.clone(),
            use_case: approval.use_case.clone(),
            confidence: None,
            input: approval.input.clone(),
            approval_id: Some(approval.approval_id.clone()),
            keyed: true,
            loaded: self.loaded(),
        };
        let report = ExecutionReport::not_run(outcome, detail);
        let sealed = self.seal(&plan, report, None, self.clock.now(), Vec::new())?;
        let (tenant, task) = (plan.tenant_id.clone(), plan.task_id.clone());
        let response = self
            .finish(
                plan,
                vec![sealed],
                TaskControl::default(),
                None,
                Duration::ZERO,
            )
            .await?;
        // A later submission of the task id gets this answer: the task will never run.
        self.idempotency
            .store(&tenant, &task, Arc::new(response), self.now_ms());
        Ok(())
    }
}

/// The answer to a destructive tool's task that waits for an approval.
fn waiting(plan: &AttemptPlan, approval: &Approval) -> TaskResponse {
    TaskResponse {
        task_id: plan.task_id.clone(),
        trace_id: plan.trace_id.clone(),
        tenant_id: plan.tenant_id.clone(),
        tool_id: plan.tool_id.clone(),
        use_case: plan.use_case.clone(),
        run_id: plan.run_id.clone(),
        run_class: plan.run_class,
        outcome: Outcome::ApprovalRequired,
        output: serde_json::Value::Null,
        attempts: Vec::new(),
        total_cost: isometer_core::Money::ZERO,
        currency: plan.currency(),
        approval: Some(ApprovalTicket::from(approval)),
        fallback: false,
        retry_stop: None,
        cap: None,
        retry_after_s: None,
        repeated: false,
        timing: TaskTiming::default(),
    }
}

/// A stored answer, marked as such.
fn repeated(answer: &TaskResponse) -> TaskResponse {
    TaskResponse {
        repeated: true,
        // Nothing ran for this answer.
        timing: TaskTiming::default(),
        ..answer.clone()
    }
}

/// A checked request: what one attempt of a task runs on, and under which names.
#[derive(Debug, Clone)]
pub struct AttemptPlan {
    pub task_id: String,
    pub attempt: u16,
    pub trace_id: String,
    pub run_id: String,
    pub run_class: isometer_core::RunClass,
    pub tenant_id: String,
    pub tool_id: String,
    pub use_case: String,
    pub confidence: Option<f32>,
    /// The input as written to the tool's stdin.
    pub input: Vec<u8>,
    /// The approval a destructive tool's task runs under.
    pub approval_id: Option<String>,
    /// The caller chose the task id: it runs once, whatever is submitted again.
    pub keyed: bool,
    /// The configuration version the task runs under.
    loaded: Arc<Loaded>,
}

impl AttemptPlan {
    /// The configuration version the task runs under.
    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// The currency the task is costed in; empty for an unknown tenant.
    fn currency(&self) -> String {
        self.loaded
            .tenant(&self.tenant_id)
            .ok()
            .and_then(|t| self.loaded.config.currency_of_tier(&t.tier))
            .unwrap_or_default()
            .to_owned()
    }
}

/// One attempt with its evidence, ready to be signed and recorded.
#[derive(Debug)]
pub struct SealedAttempt {
    /// What the runtime reported; after a fail-closed check, the outcome is
    /// `policy_denied` and the detail says why.
    pub report: ExecutionReport,
    /// Whether the tool ran (a policy allowed it and it was not throttled).
    pub ran: bool,
    pub started: chrono::DateTime<chrono::Utc>,
    pub finished: chrono::DateTime<chrono::Utc>,
    /// The attempt's manifest, encoded; signed when the task is recorded.
    pub evidence: Unsealed,
    /// The attempt's time in its isolate (`run`).
    pub timing: TaskTiming,
}

impl Loaded {
    fn tenant(&self, tenant_id: &str) -> Result<&Tenant, GatewayError> {
        self.config
            .tenant(tenant_id)
            .ok_or_else(|| GatewayError::UnknownTenant(tenant_id.to_owned()))
    }

    /// The rate card pricing `tier`'s attempts at `at`.
    fn card(
        &self,
        tier: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<&RateCard, GatewayError> {
        self.config
            .rate_card_at(tier, at.date_naive())
            .ok_or_else(|| GatewayError::NoRateCard(tier.to_owned()))
    }

    /// Loads every tool's artifact (checking its pin) and builds every policy's egress
    /// allowlist with its secrets read now.
    fn prepare(
        config: Arc<Config>,
        runtime: &Runtime,
        credentials: &Arc<Credentials>,
    ) -> Result<Self, GatewayError> {
        let mut artifacts = HashMap::new();
        let mut invalid = HashMap::new();
        for tool in &config.tools {
            let refuse = |message: String| GatewayError::Artifact {
                tool: tool.id.clone(),
                declared_at: tool.declared_at.clone(),
                message,
            };
            let bytes = std::fs::read(&tool.artifact).map_err(|e| {
                refuse(format!(
                    "cannot read {}: {e} (build the guest tools with `make guests`)",
                    tool.artifact.display()
                ))
            })?;
            let hash = isometer_core::sha256_hex(&bytes);
            if let Some(pin) = &tool.sha256
                && *pin != hash
            {
                return Err(refuse(format!(
                    "{} has sha256 {hash}, but the tool is pinned to {pin}",
                    tool.artifact.display(),
                )));
            }
            match runtime.load(&bytes) {
                Ok(artifact) => {
                    artifacts.insert(tool.id.clone(), artifact);
                }
                // A file that is there but is no usable module does not stop the other
                // tools: its tasks are answered `invalid_artifact`, and it is logged.
                Err(isometer_runtime::RuntimeError::InvalidArtifact(reason)) => {
                    tracing::warn!(tool = %tool.id, artifact = %tool.artifact.display(), %reason,
                        "the tool's artifact is not a usable module; its tasks will be invalid_artifact");
                    invalid.insert(tool.id.clone(), reason);
                }
                Err(e) => return Err(refuse(e.to_string())),
            }
        }
        for tenant in &config.tenants {
            if config.currency_of_tier(&tenant.tier).is_none() {
                return Err(GatewayError::NoRateCard(tenant.tier.clone()));
            }
        }
        let rules = Arc::new(config.poisoning.clone());
        let mut egress = HashMap::new();
        for p in &config.policies {
            let secrets = match &p.secret_profile {
                Some(id) => bound_secrets(&config, id)?,
                None => Vec::new(),
            };
            let allowlist = AllowlistEgress::new(p.network_allowlist.clone())
                .with_secrets(secrets, credentials.clone())
                .with_poisoning_rules(rules.clone(), p.on_poisoning == OnPoisoning::Deny);
            egress.insert(p.id.clone(), Arc::new(allowlist));
        }
        let descriptor_hits = config
            .tools
            .iter()
            .map(|t| (t.id.clone(), rules.descriptor_hits(&t.description)))
            .filter(|(_, hits)| !hits.is_empty())
            .collect();
        Ok(Loaded {
            config,
            artifacts,
            invalid,
            egress,
            descriptor_hits,
        })
    }
}

/// What one attempt under `policy` may consume.
pub fn policy_limits(policy: &Policy) -> Limits {
    Limits {
        fuel: policy.max_fuel,
        memory_bytes: policy.max_memory_bytes,
        timeout: Duration::from_millis(policy.max_duration_ms),
        max_output_bytes: policy.max_output_bytes,
        max_egress_bytes: policy.max_egress_bytes,
        max_egress_requests: policy.max_egress_requests,
    }
}

/// A secret profile's secrets with their values, read now.
fn bound_secrets(config: &Config, id: &str) -> Result<Vec<BoundSecret>, GatewayError> {
    let profile = config
        .secret_profile(id)
        .ok_or_else(|| GatewayError::Secret {
            profile: id.to_owned(),
            message: "not in secrets.toml".into(),
        })?;
    let unreadable = |message: String| GatewayError::Secret {
        profile: id.to_owned(),
        message,
    };
    profile
        .secrets
        .iter()
        .map(|secret| {
            let value = match &secret.source {
                SecretSource::TaskCredential => SecretValue::TaskCredential,
                SecretSource::Env(name) => SecretValue::Static(
                    std::env::var(name)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            unreadable(format!("environment variable `{name}` is not set"))
                        })?,
                ),
                SecretSource::File(path) => SecretValue::Static(
                    std::fs::read_to_string(path)
                        .map(|v| v.trim().to_owned())
                        .map_err(|e| unreadable(format!("{}: {e}", path.display())))?,
                ),
            };
            Ok(BoundSecret {
                host: secret.host.clone(),
                header: secret.header.clone(),
                prefix: secret.prefix.clone(),
                value,
            })
        })
        .collect()
}

/// An attempt's egress calls as evidence.
pub fn egress_evidence(calls: &[isometer_runtime::EgressRecord]) -> Vec<EgressEntry> {
    calls
        .iter()
        .map(|c| EgressEntry {
            method: c.method.clone(),
            url: c.url.clone(),
            verdict: match c.verdict {
                isometer_runtime::Verdict::Allow => Verdict::Allow,
                isometer_runtime::Verdict::Deny => Verdict::Deny,
            },
            rule: c.rule.clone(),
            reason: c.reason.clone(),
            status: c.status,
            bytes_out: c.bytes_out,
            bytes_in: c.bytes_in,
        })
        .collect()
}

fn validated_id(field: &str, id: String) -> Result<String, GatewayError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(id)
    } else {
        Err(GatewayError::InvalidRequest(format!(
            "{field} must be 1 to 128 letters, digits, `-`, `_`, `.` or `:`"
        )))
    }
}

fn output_value(stdout: &[u8]) -> serde_json::Value {
    if stdout.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(stdout)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(stdout).into_owned()))
}
