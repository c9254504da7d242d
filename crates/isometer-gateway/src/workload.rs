//! A small but realistic multi-tenant workload, submitted through [`Gateway::submit`] — the
//! same path `POST /v1/tasks` takes — over a simulated stretch of days.
//!
//! Deterministic for a given seed: the same tenants pick the same tools with the same
//! inputs, so the demo's numbers are reproducible.

use crate::{Gateway, GatewayError, TaskRequest};
use chrono::TimeDelta;
use isometer_core::{Clock, ManualClock, Money, Outcome, RunClass};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadOptions {
    pub tasks: usize,
    pub seed: u64,
    /// Days of history the tasks are spread over, ending at the clock's start time.
    pub days: u32,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            tasks: 1_200,
            seed: 7,
            days: 7,
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

/// Submits `options.tasks` tasks, moving `clock` through the simulated days.
/// `progress(done, total)` is called after each task.
pub async fn run(
    gateway: &Gateway,
    clock: &ManualClock,
    options: WorkloadOptions,
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
    let span = TimeDelta::days(i64::from(options.days.max(1)));
    let step_ms = span.num_milliseconds() / i64::try_from(options.tasks.max(1)).unwrap_or(i64::MAX);
    clock.set(end - span);

    let mut runs: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut summary = WorkloadSummary {
        tenants: tenants.len(),
        tools: tools.len(),
        ..WorkloadSummary::default()
    };
    for done in 0..options.tasks {
        // Larger tenants submit more: weights fall with the tenant's position.
        let tenant = tenants[weighted_index(&mut rng, tenants.len())];
        let tool = tools[rng.random_range(0..tools.len())];
        // An agent session lasts 10 to 40 tasks.
        let (run_no, left) = runs.entry(tenant).or_insert((0, 0));
        if *left == 0 {
            *run_no += 1;
            *left = rng.random_range(10..40);
        }
        *left -= 1;
        let run_class = if rng.random_bool(0.15) {
            RunClass::Exploratory
        } else {
            RunClass::Customer
        };
        let request = TaskRequest {
            tenant_id: tenant.to_owned(),
            tool_id: tool.to_owned(),
            input: input_for(tool, &mut rng),
            use_case: None,
            run_id: Some(format!("{tenant}-run-{run_no}")),
            run_class,
            task_id: None,
            confidence: None,
            // The agent's session is one trace: its manifests are found together.
            trace_id: Some(format!("{tenant}-trace-{run_no}")),
            approval_id: None,
        };
        let response = gateway.submit(request).await?;
        *summary
            .outcomes
            .entry(response.outcome.as_str().to_owned())
            .or_default() += 1;
        summary.cost += response.total_cost;
        summary.tasks += 1;
        clock.advance(TimeDelta::milliseconds(
            rng.random_range(step_ms / 2..=step_ms * 3 / 2),
        ));
        progress(done + 1, options.tasks);
    }
    clock.set(end);
    Ok(summary)
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

fn input_for(tool: &str, rng: &mut StdRng) -> Value {
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
            let alloc_kib: u64 = if rng.random_bool(0.03) {
                200_000
            } else {
                rng.random_range(0..2_048)
            };
            json!({ "rounds": rounds, "alloc_kib": alloc_kib })
        }
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
