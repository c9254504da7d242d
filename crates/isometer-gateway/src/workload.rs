//! A small but realistic multi-tenant workload, submitted through [`Gateway::submit`] — the
//! same path `POST /v1/tasks` takes — over a simulated stretch of days.
//!
//! Deterministic for a given seed: the same tenants pick the same tools with the same
//! inputs, so the demo's numbers are reproducible.
//!
//! The week has the shape of a real agent platform's: busier tenants submit more; agent
//! sessions (runs) of 10 to 40 tasks, some exploratory; in about one run in five the
//! agent's confidence drifts down until its loop cap stops it; one day brings a burst of
//! concurrent archive exports from a small tenant, more than its tier admits, so some are
//! refused (`throttled`). [`Hooks::new_day`] lets the caller act at each simulated midnight (the
//! demo changes the configuration and rolls it back mid-week).

use crate::{Gateway, GatewayError, TaskRequest};
use chrono::TimeDelta;
use isometer_core::{Clock, ManualClock, Money, Outcome, RunClass};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub tasks: usize,
    pub seed: u64,
    /// Days of history the tasks are spread over, ending at the clock's start time.
    pub days: u32,
    /// The base URL of the upstream services the network tools reach (`market-quote`,
    /// `news-digest`, `partner-sync`, `send-email`); without it, those tools get no URL.
    pub upstream: Option<String>,
}

impl WorkloadOptions {
    /// The tasks of the burst that comes on top of `tasks`: none in a single day.
    pub fn burst_tasks(&self) -> usize {
        if self.days > 1 { BURST_TASKS } else { 0 }
    }
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            tasks: 1_200,
            seed: 7,
            days: 7,
            upstream: None,
        }
    }
}

/// What the workload did.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSummary {
    pub tasks: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub cost: Money,
    pub tenants: usize,
    pub tools: usize,
    /// Runs a loop cap stopped, by tenant and run id.
    pub capped_runs: std::collections::BTreeSet<(String, String)>,
    /// Tasks submitted in the burst, and how many of them were refused for load.
    pub burst: usize,
    pub burst_throttled: usize,
    /// Destructive tasks that asked for an approval, and what the approver did.
    pub approvals: usize,
    pub approved: usize,
    pub denied: usize,
    /// Left undecided until they expired.
    pub expired: usize,
}

/// What the caller does as the simulated days go by.
pub trait Hooks {
    /// Called when the simulated clock crosses into day `day` (1-based) of the workload.
    fn new_day(&mut self, day: u32) -> impl std::future::Future<Output = ()>;
}

/// No hooks.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    async fn new_day(&mut self, _day: u32) {}
}

/// The burst: this many tasks at once from a small tenant, on the day before last.
const BURST_TASKS: usize = 400;
/// The share of runs whose agent loses confidence as it goes.
const DRIFTING_RUNS: f64 = 0.2;

/// One agent session as the workload plays it.
#[derive(Debug, Clone, Copy)]
struct Run {
    no: u32,
    left: u32,
    /// The agent's confidence in its next call; `None` when it does not say.
    confidence: Option<f64>,
    /// How much the confidence falls per task (0 when it does not drift).
    drift: f64,
}

const SENTENCES: &[&str] = &[
    "The customer cannot export the quarterly report.",
    "An agent retried the export three times before it succeeded.",
    "Billing asked whether retries are charged to the tenant.",
    "The portfolio dashboard loads slowly on Mondays.",
    "Support escalated the ticket to the platform team.",
    "A refund was issued for the duplicated invoice.",
    "The CRM sync failed because the upstream timed out.",
    "Risk scores are recomputed every night for premium accounts.",
    "The tenant wants a statement that lists every successful task.",
    "Exploratory runs should not appear on the invoice!",
    "Why did the agent call the same tool twice?",
];

const REGIONS: &[&str] = &["emea", "amer", "apac"];

const SYMBOLS: &[&str] = &["ACME", "GLBX", "INIT", "HOOL", "UMBR", "WAYN"];

/// Submits `options.tasks` tasks (and the burst), moving `clock` through the simulated
/// days. `progress(done, total)` is called after each task.
pub async fn run(
    gateway: &Arc<Gateway>,
    clock: &ManualClock,
    options: WorkloadOptions,
    hooks: &mut impl Hooks,
    mut progress: impl FnMut(usize, usize),
) -> Result<WorkloadSummary, GatewayError> {
    let config = gateway.config();
    let tenants: Vec<&str> = config.tenants.iter().map(|t| t.id.as_str()).collect();
    let tools: Vec<&str> = config.tools.iter().map(|t| t.id.as_str()).collect();
    if tenants.is_empty() || tools.is_empty() {
        return Err(GatewayError::InvalidRequest(
            "the configuration has no tenants or no tools".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(options.seed);
    let end = clock.now();
    let days = options.days.max(1);
    let span = TimeDelta::days(i64::from(days));
    let step_ms = span.num_milliseconds() / i64::try_from(options.tasks.max(1)).unwrap_or(i64::MAX);
    let start = end - span;
    clock.set(start);
    let burst_day = days.saturating_sub(1).max(1);
    let total = options.tasks + options.burst_tasks();

    let mut run_numbers: BTreeMap<&str, u32> = BTreeMap::new();
    let mut summary = WorkloadSummary {
        tenants: tenants.len(),
        tools: tools.len(),
        ..WorkloadSummary::default()
    };
    let mut day = 0;
    let mut done = 0;
    let mut submitted = 0;
    while submitted < options.tasks {
        // An agent session: 10 to 40 tasks a few seconds apart; busier tenants run more.
        let tenant = tenants[weighted_index(&mut rng, tenants.len())];
        let no = run_numbers.entry(tenant).or_default();
        *no += 1;
        let drifting = rng.random_bool(DRIFTING_RUNS);
        let mut run = Run {
            no: *no,
            left: rng
                .random_range(10..40)
                .min(u32::try_from(options.tasks - submitted).unwrap_or(u32::MAX)),
            confidence: (drifting || rng.random_bool(0.5)).then(|| rng.random_range(0.75..0.98)),
            drift: if drifting {
                rng.random_range(0.04..0.09)
            } else {
                0.0
            },
        };
        let run_class = if rng.random_bool(0.15) {
            RunClass::Exploratory
        } else {
            RunClass::Customer
        };
        let run_id = format!("{tenant}-run-{}", run.no);
        while run.left > 0 {
            let today = u32::try_from((clock.now() - start).num_days()).unwrap_or(0) + 1;
            while day < today.min(days) {
                day += 1;
                expire(gateway, &mut summary).await?;
                hooks.new_day(day).await;
                if day == burst_day && options.burst_tasks() > 0 {
                    burst(gateway, &mut rng, &mut summary).await?;
                    done += BURST_TASKS;
                    progress(done, total);
                }
            }
            run.left -= 1;
            let tool = pick_tool(&tools, &mut rng);
            let confidence = run.confidence;
            if let Some(c) = &mut run.confidence {
                *c = (*c - run.drift + rng.random_range(-0.02..0.02)).clamp(0.01, 1.0);
            }
            let request = TaskRequest {
                tenant_id: tenant.to_owned(),
                tool_id: tool.to_owned(),
                input: input_for(tool, &mut rng, options.upstream.as_deref()),
                use_case: None,
                run_id: Some(run_id.clone()),
                run_class,
                // A destructive tool's task is submitted again once approved: it needs an
                // id of its own.
                task_id: config
                    .tools
                    .iter()
                    .any(|t| t.id == tool && t.destructive)
                    .then(|| format!("{run_id}-{submitted}")),
                confidence: confidence.map(|c| c as f32),
                // The agent's session is one trace: its manifests are found together.
                trace_id: Some(format!("{tenant}-trace-{}", run.no)),
                approval_id: None,
            };
            let mut response = Some(gateway.submit(request.clone()).await?);
            if let Some(ticket) = response
                .as_ref()
                .filter(|r| r.outcome == Outcome::ApprovalRequired && r.attempts.is_empty())
                .and_then(|r| r.approval.clone())
            {
                response = approve(gateway, &mut rng, request, ticket, &mut summary).await?;
            }
            if let Some(response) = response {
                if response.outcome == Outcome::Capped {
                    summary
                        .capped_runs
                        .insert((tenant.to_owned(), run_id.clone()));
                }
                count(&mut summary, response.outcome, response.total_cost);
            }
            clock.advance(TimeDelta::milliseconds(rng.random_range(1_000..15_000)));
            submitted += 1;
            done += 1;
            progress(done, total);
        }
        // The next session starts where this share of the week has gone by.
        let due = start
            + TimeDelta::milliseconds(
                span.num_milliseconds() * i64::try_from(submitted).unwrap_or(0)
                    / i64::try_from(options.tasks.max(1)).unwrap_or(1),
            );
        if clock.now() < due {
            clock.set(due - TimeDelta::milliseconds(rng.random_range(0..=step_ms.max(1))));
        }
    }
    clock.set(end);
    expire(gateway, &mut summary).await?;
    // Every submission, those still awaiting an approver included.
    summary.tasks = total;
    Ok(summary)
}

/// Ends the approvals nobody decided in time; their tasks count as `approval_required`.
async fn expire(gateway: &Gateway, summary: &mut WorkloadSummary) -> Result<(), GatewayError> {
    for _ in 0..gateway.expire_approvals().await? {
        count(summary, Outcome::ApprovalRequired, Money::ZERO);
    }
    Ok(())
}

/// The approver's part: most destructive tasks are approved and run; some are denied
/// (the task is recorded `policy_denied`); one in ten is left until its approval expires
/// (recorded `approval_required` when the day ends). Answers the task's final outcome and
/// cost when it has one now.
async fn approve(
    gateway: &Arc<Gateway>,
    rng: &mut StdRng,
    request: TaskRequest,
    ticket: crate::ApprovalTicket,
    summary: &mut WorkloadSummary,
) -> Result<Option<crate::TaskResponse>, GatewayError> {
    summary.approvals += 1;
    let roll = rng.random_range(0..10);
    if roll == 0 {
        summary.expired += 1;
        return Ok(None);
    }
    let approve = roll > 1;
    let reason = if approve {
        "checked with the account owner"
    } else {
        "the customer did not ask for it"
    };
    gateway
        .decide(
            &ticket.approval_id,
            approve,
            "demo-approver",
            Some(reason.to_owned()),
        )
        .await?;
    if !approve {
        summary.denied += 1;
        count(summary, Outcome::PolicyDenied, Money::ZERO);
        return Ok(None);
    }
    summary.approved += 1;
    let response = gateway
        .submit(TaskRequest {
            approval_id: Some(ticket.approval_id),
            ..request
        })
        .await?;
    Ok(Some(response))
}

fn count(summary: &mut WorkloadSummary, outcome: Outcome, cost: Money) {
    *summary
        .outcomes
        .entry(outcome.as_str().to_owned())
        .or_default() += 1;
    summary.cost += cost;
    summary.tasks += 1;
}

/// The tool of the burst: an archive export (each task holds its admission slot for 50 to
/// 150 ms, waiting on the archive), so that a fan-out of them is more than a tier admits.
const BURST_TOOL: &str = "slow";

/// A burst: many tasks from one tenant at the same moment, past what its tier admits. The
/// tenant is the smallest whose tier may run [`BURST_TOOL`] (else the smallest).
async fn burst(
    gateway: &Arc<Gateway>,
    rng: &mut StdRng,
    summary: &mut WorkloadSummary,
) -> Result<(), GatewayError> {
    let config = gateway.config();
    let tenant = config
        .tenants
        .iter()
        .rev()
        .find(|t| config.policy_for(BURST_TOOL, &t.tier).is_some())
        .or(config.tenants.last())
        .map(|t| t.id.clone())
        .unwrap_or_default();
    let requests: Vec<TaskRequest> = (0..BURST_TASKS)
        .map(|i| TaskRequest {
            tenant_id: tenant.clone(),
            tool_id: BURST_TOOL.to_owned(),
            input: json!({ "export": i, "ms": rng.random_range(50..150) }),
            use_case: None,
            run_id: Some(format!("{tenant}-burst")),
            run_class: RunClass::Customer,
            task_id: Some(format!("{tenant}-burst-{i}")),
            confidence: None,
            trace_id: Some(format!("{tenant}-burst")),
            approval_id: None,
        })
        .collect();
    let mut submitted = tokio::task::JoinSet::new();
    for request in requests {
        let gateway = gateway.clone();
        submitted.spawn(async move { gateway.submit(request).await });
    }
    while let Some(answer) = submitted.join_next().await {
        let response = answer
            .map_err(|e| GatewayError::InvalidRequest(format!("a burst task panicked: {e}")))??;
        if response.outcome == Outcome::Throttled {
            summary.burst_throttled += 1;
        }
        count(summary, response.outcome, response.total_cost);
    }
    summary.burst += BURST_TASKS;
    Ok(())
}

/// Tools an agent seldom calls: one call in a hundred goes to one of them.
const RARE_TOOLS: &[&str] = &["legacy-export"];

fn pick_tool<'t>(tools: &[&'t str], rng: &mut StdRng) -> &'t str {
    let (rare, common): (Vec<&str>, Vec<&str>) = tools.iter().partition(|t| RARE_TOOLS.contains(t));
    if !rare.is_empty() && (common.is_empty() || rng.random_bool(0.01)) {
        rare[rng.random_range(0..rare.len())]
    } else {
        common[rng.random_range(0..common.len())]
    }
}

fn weighted_index(rng: &mut StdRng, n: usize) -> usize {
    // Weight of position i is n - i: the first tenant is the busiest.
    let total = n * (n + 1) / 2;
    let mut pick = rng.random_range(0..total);
    for i in 0..n {
        let w = n - i;
        if pick < w {
            return i;
        }
        pick -= w;
    }
    n - 1
}

fn input_for(tool: &str, rng: &mut StdRng, upstream: Option<&str>) -> Value {
    let base = upstream.unwrap_or("http://upstream.invalid");
    match tool {
        "summarize" if rng.random_bool(0.03) => json!({ "txt": "a malformed request" }),
        "summarize" => {
            let n = rng.random_range(3..14);
            let text: Vec<&str> = (0..n)
                .map(|_| SENTENCES[rng.random_range(0..SENTENCES.len())])
                .collect();
            json!({ "text": text.join(" "), "max_sentences": rng.random_range(1..4) })
        }
        "json-transform" => {
            // Now and then an export far larger than the policy lets a tool answer.
            if rng.random_bool(0.04) {
                let note = SENTENCES[rng.random_range(0..SENTENCES.len())].repeat(2);
                let records: Vec<Value> = (0..2_500)
                    .map(|i| json!({ "id": i, "note": note }))
                    .collect();
                return json!({ "records": records });
            }
            let n = rng.random_range(5..200);
            let records: Vec<Value> = (0..n)
                .map(|i| {
                    json!({
                        "id": i,
                        "region": REGIONS[rng.random_range(0..REGIONS.len())],
                        "amount": rng.random_range(1..10_000) as f64 / 100.0,
                    })
                })
                .collect();
            let region = REGIONS[rng.random_range(0..REGIONS.len())];
            json!({ "records": records, "fields": ["id", "amount"], "where": { "field": "region", "equals": region }, "sum": "amount" })
        }
        "flaky" => json!({ "seed": rng.random::<u32>(), "fail_percent": 20 }),
        // Mostly quick; one in twenty-five waits past the policy's 250 ms deadline.
        "slow" if rng.random_bool(0.04) => json!({ "ms": 400 }),
        "slow" => json!({ "ms": rng.random_range(1..15) }),
        "busy" => {
            let roll = rng.random_range(0..100);
            let rounds: u64 = match roll {
                0..=89 => rng.random_range(10_000..2_000_000),
                90..=96 => rng.random_range(4_000_000..9_000_000),
                _ => 60_000_000,
            };
            let alloc_kib: u64 = match rng.random_range(0..100) {
                0..=2 => 200_000,
                // Past what a 32-bit guest can even ask for: its allocator traps.
                3..=4 => 4_194_303,
                _ => rng.random_range(0..2_048),
            };
            json!({ "rounds": rounds, "alloc_kib": alloc_kib })
        }
        // One agent in twenty asks for the cloud metadata address: egress denies it.
        "market-quote" if rng.random_bool(0.05) => {
            json!({ "url": "http://169.254.169.254/latest/meta-data/iam" })
        }
        "market-quote" => {
            let symbol = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
            json!({ "url": format!("{base}/quote?symbol={symbol}") })
        }
        "news-digest" => {
            let topic = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
            json!({ "url": format!("{base}/news?topic={topic}") })
        }
        "partner-sync" => json!({ "url": format!("{base}/partner/accounts") }),
        "send-email" => json!({
            "endpoint": base,
            "to": format!("owner-{}@customer.example", rng.random_range(1..500)),
            "subject": "Your refund",
            "body": "The duplicated invoice was refunded.",
        }),
        _ => json!({}),
    }
}

/// Outcomes, for summaries: the count of each, in the order DESIGN.md lists them.
pub fn ordered_outcomes(summary: &WorkloadSummary) -> Vec<(Outcome, usize)> {
    Outcome::ALL
        .into_iter()
        .filter_map(|o| summary.outcomes.get(o.as_str()).map(|n| (o, *n)))
        .collect()
}
