//! The FinOps KPIs of DESIGN.md over any period, from the store's grouped answers.
//!
//! - cost per successful task: the cost of every attempt of every task (failed, denied,
//!   capped included) / tasks whose final outcome is `success`;
//! - cost per policy-compliant task: the same cost / successful tasks whose every attempt
//!   was allowed with complete evidence;
//! - retry tax ratio: cost of attempts numbered above 1 / cost of all attempts;
//! - p95 cost per task by tenant and use case (two significant digits, see
//!   `isometer_store::kpi`);
//! - billed amount: successful customer-visible tasks x the plan's price for the use case
//!   on the day the task was submitted; successful exploratory tasks x the plan's
//!   exploratory price (nothing by default); nothing else is billed;
//! - gross margin: billed amount - cost;
//! - policy rejection rate: attempts `policy_denied` or `egress_denied` / attempts that
//!   reached a policy (all but `throttled` and `capped`);
//! - evidence completeness ratio: attempts that ran with every required field / attempts
//!   that ran;
//! - p95 tool latency: attempts' wall time by tenant and tool, attempts that ran.

use crate::round_money;
use chrono::NaiveDate;
use isometer_core::{Money, RunClass};
use isometer_policy::{Config, PricePlan};
use isometer_store::{AttemptGroup, Filter, GroupP95, Source, Store, StoreError, TaskGroup};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Decimal places of the ratios.
pub const RATIO_SCALE: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the selected tasks are costed in {0}; amounts in different currencies do not add up: \
         choose one tenant"
    )]
    MixedCurrencies(String),
    #[error("{0}")]
    Invalid(String),
    #[error("statement: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Every KPI of one filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kpis {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tenant: Option<String>,
    pub use_case: Option<String>,
    pub tool: Option<String>,
    pub run_class: Option<RunClass>,
    /// The currency of every amount; `None` when nothing was recorded.
    pub currency: Option<String>,
    pub cost_total: Money,
    pub tasks_total: u64,
    pub tasks_successful: u64,
    pub tasks_compliant: u64,
    pub cost_per_successful_task: Option<Money>,
    pub cost_per_compliant_task: Option<Money>,
    /// What attempts after the first cost.
    pub retry_cost: Money,
    pub retry_tax_ratio: Option<Decimal>,
    pub billed_total: Money,
    pub gross_margin: Money,
    /// Exploratory tasks: shown apart, billed only at the plan's exploratory price.
    pub exploratory_tasks: u64,
    pub exploratory_cost: Money,
    pub exploratory_billed: Money,
    pub capped_tasks: u64,
    /// The spend loop caps avoided.
    pub capped_savings: Money,
    pub throttled_tasks: u64,
    pub attempts_total: u64,
    pub policy_rejection_rate: Option<Decimal>,
    pub evidence_completeness_ratio: Option<Decimal>,
    pub p95_cost_per_task: Vec<P95Cost>,
    pub p95_tool_latency: Vec<P95Latency>,
    /// Billed amount, cost and margin by tenant and use case.
    pub margins: Vec<Margin>,
    /// Successful customer tasks whose use case the tenant's plan does not price (billed
    /// nothing).
    pub unpriced: Vec<Unpriced>,
    /// Every day of the period, the quiet ones included, for trends.
    pub daily: Vec<Day>,
}

/// One day's figures: tasks by the day they were submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    pub day: NaiveDate,
    pub tasks: u64,
    pub successful: u64,
    pub compliant: u64,
    pub cost: Money,
    pub billed: Money,
    pub capped_tasks: u64,
    pub capped_savings: Money,
}

impl Day {
    fn quiet(day: NaiveDate) -> Self {
        Day {
            day,
            tasks: 0,
            successful: 0,
            compliant: 0,
            cost: Money::ZERO,
            billed: Money::ZERO,
            capped_tasks: 0,
            capped_savings: Money::ZERO,
        }
    }

    /// Cost per successful task that day.
    pub fn cost_per_successful_task(&self) -> Option<Money> {
        per(self.cost, self.successful)
    }

    /// Cost per compliant task that day.
    pub fn cost_per_compliant_task(&self) -> Option<Money> {
        per(self.cost, self.compliant)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct P95Cost {
    pub tenant: String,
    pub use_case: String,
    pub p95: Money,
    pub tasks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct P95Latency {
    pub tenant: String,
    pub tool: String,
    pub p95_ms: Decimal,
    pub attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Margin {
    pub tenant: String,
    pub use_case: String,
    pub tasks: u64,
    pub successful: u64,
    pub cost: Money,
    pub billed: Money,
    pub margin: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unpriced {
    pub tenant: String,
    pub use_case: String,
    pub tasks: u64,
}

/// The price of one successful task of `use_case` and `run_class` submitted on `day`, and
/// the plan in effect that day that sets it; `None` when no plan prices it.
pub(crate) fn unit_price<'c>(
    config: &'c Config,
    tenant_id: &str,
    day: NaiveDate,
    use_case: &str,
    run_class: &str,
) -> Option<(&'c PricePlan, Money)> {
    let plan = config.plan_at(tenant_id, day)?;
    let price = if run_class == RunClass::Exploratory.as_str() {
        plan.exploratory_price_per_task
    } else {
        plan.price(use_case)?
    };
    Some((plan, price))
}

/// What one group of tasks is billed: for successful tasks, their count x their unit
/// price; nothing for the rest. `None` when the tasks succeeded but no plan prices them.
pub(crate) fn billed(config: &Config, group: &TaskGroup) -> Option<Money> {
    if group.outcome != "success" {
        return Some(Money::ZERO);
    }
    let (_, price) = unit_price(
        config,
        &group.tenant_id,
        group.day,
        &group.use_case,
        &group.run_class,
    )?;
    Some(price * Money::from(group.tasks))
}

/// Computes every KPI of `filter` from `source`.
pub async fn kpis(
    store: &Store,
    config: &Config,
    filter: &Filter,
    source: Source,
) -> Result<Kpis, BillingError> {
    if filter.from > filter.to {
        return Err(BillingError::Invalid(format!(
            "the period starts ({}) after it ends ({})",
            filter.from, filter.to
        )));
    }
    let (tasks, attempts, costs, latencies) = tokio::try_join!(
        store.task_groups(filter, source),
        store.attempt_groups(filter, source),
        store.task_cost_p95(filter, source),
        store.latency_p95(filter, source),
    )?;
    compute(config, filter, &tasks, &attempts, costs, latencies)
}

fn ratio(part: Money, whole: Money) -> Option<Decimal> {
    (!whole.is_zero()).then(|| (part / whole).round_dp(RATIO_SCALE))
}

fn count_ratio(part: u64, whole: u64) -> Option<Decimal> {
    ratio(Money::from(part), Money::from(whole))
}

fn per(cost: Money, n: u64) -> Option<Money> {
    (n > 0).then(|| round_money(cost / Money::from(n)))
}

fn compute(
    config: &Config,
    filter: &Filter,
    tasks: &[TaskGroup],
    attempts: &[AttemptGroup],
    costs: Vec<GroupP95>,
    latencies: Vec<GroupP95>,
) -> Result<Kpis, BillingError> {
    let currencies: BTreeSet<&str> = tasks
        .iter()
        .map(|g| g.tenant_id.as_str())
        .chain(attempts.iter().map(|g| g.tenant_id.as_str()))
        .filter_map(|t| config.tenant(t))
        .filter_map(|t| config.currency_of_tier(&t.tier))
        .collect();
    if currencies.len() > 1 {
        return Err(BillingError::MixedCurrencies(
            currencies.into_iter().collect::<Vec<_>>().join(" and "),
        ));
    }
    let mut k = Kpis {
        from: filter.from,
        to: filter.to,
        tenant: filter.tenant_id.clone(),
        use_case: filter.use_case.clone(),
        tool: filter.tool_id.clone(),
        run_class: filter.run_class,
        currency: currencies.first().map(|c| (*c).to_owned()),
        cost_total: Money::ZERO,
        tasks_total: 0,
        tasks_successful: 0,
        tasks_compliant: 0,
        cost_per_successful_task: None,
        cost_per_compliant_task: None,
        retry_cost: Money::ZERO,
        retry_tax_ratio: None,
        billed_total: Money::ZERO,
        gross_margin: Money::ZERO,
        exploratory_tasks: 0,
        exploratory_cost: Money::ZERO,
        exploratory_billed: Money::ZERO,
        capped_tasks: 0,
        capped_savings: Money::ZERO,
        throttled_tasks: 0,
        attempts_total: 0,
        policy_rejection_rate: None,
        evidence_completeness_ratio: None,
        p95_cost_per_task: Vec::new(),
        p95_tool_latency: Vec::new(),
        margins: Vec::new(),
        unpriced: Vec::new(),
        daily: Vec::new(),
    };
    let mut daily: BTreeMap<NaiveDate, Day> = filter
        .from
        .iter_days()
        .take_while(|d| *d <= filter.to)
        .map(|d| (d, Day::quiet(d)))
        .collect();
    let mut margins: BTreeMap<(&str, &str), Margin> = BTreeMap::new();
    let mut unpriced: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for g in tasks {
        let success = g.outcome == "success";
        k.cost_total += g.cost;
        k.tasks_total += g.tasks;
        if success {
            k.tasks_successful += g.tasks;
            if g.compliant {
                k.tasks_compliant += g.tasks;
            }
        }
        match g.outcome.as_str() {
            "capped" => {
                k.capped_tasks += g.tasks;
                k.capped_savings += g.avoided_cost;
            }
            "throttled" => k.throttled_tasks += g.tasks,
            _ => {}
        }
        let amount = match billed(config, g) {
            Some(amount) => amount,
            None => {
                *unpriced.entry((&g.tenant_id, &g.use_case)).or_default() += g.tasks;
                Money::ZERO
            }
        };
        k.billed_total += amount;
        let day = daily.entry(g.day).or_insert_with(|| Day::quiet(g.day));
        day.tasks += g.tasks;
        day.cost += g.cost;
        day.billed += amount;
        if success {
            day.successful += g.tasks;
            day.compliant += if g.compliant { g.tasks } else { 0 };
        }
        if g.outcome == "capped" {
            day.capped_tasks += g.tasks;
            day.capped_savings += g.avoided_cost;
        }
        if g.run_class == RunClass::Exploratory.as_str() {
            k.exploratory_tasks += g.tasks;
            k.exploratory_cost += g.cost;
            k.exploratory_billed += amount;
        }
        let m = margins
            .entry((&g.tenant_id, &g.use_case))
            .or_insert_with(|| Margin {
                tenant: g.tenant_id.clone(),
                use_case: g.use_case.clone(),
                tasks: 0,
                successful: 0,
                cost: Money::ZERO,
                billed: Money::ZERO,
                margin: Money::ZERO,
            });
        m.tasks += g.tasks;
        m.successful += if success { g.tasks } else { 0 };
        m.cost += g.cost;
        m.billed += amount;
        m.margin = m.billed - m.cost;
    }
    k.gross_margin = k.billed_total - k.cost_total;
    k.cost_per_successful_task = per(k.cost_total, k.tasks_successful);
    k.cost_per_compliant_task = per(k.cost_total, k.tasks_compliant);
    k.margins = margins.into_values().collect();
    k.daily = daily.into_values().collect();
    k.unpriced = unpriced
        .into_iter()
        .map(|((tenant, use_case), tasks)| Unpriced {
            tenant: tenant.to_owned(),
            use_case: use_case.to_owned(),
            tasks,
        })
        .collect();

    let (mut attempt_cost, mut reached, mut rejected, mut ran, mut complete) =
        (Money::ZERO, 0, 0, 0, 0);
    for g in attempts {
        k.attempts_total += g.attempts;
        attempt_cost += g.cost;
        if g.retry {
            k.retry_cost += g.cost;
        }
        if !matches!(g.outcome.as_str(), "throttled" | "capped") {
            reached += g.attempts;
        }
        if matches!(g.outcome.as_str(), "policy_denied" | "egress_denied") {
            rejected += g.attempts;
        }
        if g.ran {
            ran += g.attempts;
            if g.evidence_complete {
                complete += g.attempts;
            }
        }
    }
    k.retry_tax_ratio = ratio(k.retry_cost, attempt_cost);
    k.policy_rejection_rate = count_ratio(rejected, reached);
    k.evidence_completeness_ratio = count_ratio(complete, ran);

    let mut costs: Vec<P95Cost> = costs
        .into_iter()
        .map(|g| P95Cost {
            tenant: g.tenant_id,
            use_case: g.key,
            p95: isometer_store::from_picos(g.p95),
            tasks: g.count,
        })
        .collect();
    costs.sort_by(|a, b| (&a.tenant, &a.use_case).cmp(&(&b.tenant, &b.use_case)));
    k.p95_cost_per_task = costs;
    let mut latencies: Vec<P95Latency> = latencies
        .into_iter()
        .map(|g| P95Latency {
            tenant: g.tenant_id,
            tool: g.key,
            p95_ms: Decimal::from(g.p95) / Decimal::from(1000),
            attempts: g.count,
        })
        .collect();
    latencies.sort_by(|a, b| (&a.tenant, &a.tool).cmp(&(&b.tenant, &b.tool)));
    k.p95_tool_latency = latencies;
    Ok(k)
}
