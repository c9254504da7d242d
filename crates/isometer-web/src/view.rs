//! What a dashboard page shows, computed once and served twice: as JSON
//! (`GET /v1/pages/{page}`) and as HTML. Both come from the same [`PageView`], so the
//! numbers on a page are the API's numbers by construction.
//!
//! The layout names the panels; this module knows how to compute each name. Only the
//! data the layout's panels need is read: a page without runbook panels never asks for
//! attempts by day.

use crate::error::ApiError;
use crate::layout::{Kind, Layout, Panel};
use chrono::{DateTime, NaiveDate, Utc};
use isometer_billing::{BillingError, Kpis};
use isometer_core::{Money, RunClass};
use isometer_policy::Config;
use isometer_store::{AttemptDay, CappedRun, ConfigChangeRecord, Filter, Source, Store};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The most days a page covers.
pub(crate) const MAX_DAYS: i64 = 3_660;
/// Rows a ranked table shows.
const TOP: usize = 10;
/// Capped runs read for one page: enough for any period's totals.
const CAPPED_RUNS_READ: u64 = 100_000;
/// Capped runs the table lists.
const CAPPED_RUNS_SHOWN: usize = 50;

/// Attempt outcomes that count against the availability objective: the attempt ran and
/// should have succeeded. Denials, approvals, caps and refusals for load are decisions,
/// not errors.
const ERROR_OUTCOMES: [&str; 7] = [
    "failed",
    "trapped",
    "fuel_exhausted",
    "timed_out",
    "memory_exceeded",
    "output_exceeded",
    "invalid_artifact",
];
/// Outcomes of attempts that never reached the tool: not in the error rate's denominator.
const DECIDED_OUTCOMES: [&str; 4] = ["policy_denied", "approval_required", "capped", "throttled"];
const BLOCK_OUTCOMES: [&str; 2] = ["policy_denied", "egress_denied"];

/// A page's period and filters, from its query string.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) use_case: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) run_class: Option<String>,
}

impl PageQuery {
    /// The filter asked for; the last 30 days up to `today` unless a period is given.
    /// Empty fields (as a form sends them) mean no filter.
    pub(crate) fn filter(&self, today: NaiveDate) -> Result<Filter, ApiError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        let day = |name: &str, value: Option<&str>, default: NaiveDate| match value {
            None => Ok(default),
            Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                ApiError::BadRequest(format!("`{name}`: `{v}` is not a day like 2026-11-01"))
            }),
        };
        let to = day("to", given(&self.to), today)?;
        let from = day("from", given(&self.from), to - chrono::Days::new(29))?;
        if to < from {
            return Err(ApiError::BadRequest(format!(
                "the period starts ({from}) after it ends ({to})"
            )));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(ApiError::BadRequest(format!(
                "a period spans at most {MAX_DAYS} days"
            )));
        }
        let run_class = given(&self.run_class)
            .map(str::parse::<RunClass>)
            .transpose()
            .map_err(ApiError::BadRequest)?;
        Ok(Filter {
            from,
            to,
            tenant_id: given(&self.tenant).map(str::to_owned),
            use_case: given(&self.use_case).map(str::to_owned),
            tool_id: given(&self.tool).map(str::to_owned),
            run_class,
        })
    }
}

/// A whole page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PageView {
    pub(crate) page: String,
    pub(crate) title: String,
    pub(crate) from: NaiveDate,
    pub(crate) to: NaiveDate,
    pub(crate) tenant: Option<String>,
    pub(crate) use_case: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) run_class: Option<RunClass>,
    /// The currency of every amount on the page; `None` when nothing was recorded.
    pub(crate) currency: Option<String>,
    pub(crate) panels: Vec<PanelView>,
}

/// One panel: exactly one of `cards`, `chart` and `table` is present.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PanelView {
    pub(crate) id: String,
    pub(crate) kind: Kind,
    pub(crate) title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cards: Option<Vec<Card>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) chart: Option<Chart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) table: Option<Table>,
}

/// A KPI card: `value` as the page shows it, `raw` the exact figure (a decimal string),
/// `null` when the KPI has no value for the period (nothing to divide by).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Card {
    pub(crate) kpi: String,
    pub(crate) label: String,
    pub(crate) value: String,
    pub(crate) raw: Option<String>,
}

/// A chart's data: one label per point, one value per label and series (exact decimal
/// strings; `null` where there is no value).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Chart {
    pub(crate) name: String,
    pub(crate) unit: String,
    pub(crate) labels: Vec<String>,
    pub(crate) series: Vec<ChartSeries>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChartSeries {
    pub(crate) name: String,
    pub(crate) values: Vec<Option<String>>,
}

/// A table: its column headings and its rows of cells as the page shows them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Table {
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) rows: Vec<Vec<Cell>>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Column {
    pub(crate) label: String,
    pub(crate) numeric: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    pub(crate) text: String,
    /// Where the cell links to, a path on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) link: Option<String>,
}

impl Cell {
    fn text(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            link: None,
        }
    }

    fn link(text: impl Into<String>, link: String) -> Self {
        Cell {
            text: text.into(),
            link: Some(link),
        }
    }
}

/// What a page's panels are computed from.
struct Sources<'a> {
    config: &'a Config,
    kpis: Kpis,
    attempt_days: Vec<AttemptDay>,
    capped_runs: Vec<CappedRun>,
    changes: Vec<ConfigChangeRecord>,
    slo_target: f64,
}

fn needs(layout: &Layout, names: &[&str]) -> bool {
    layout
        .panels
        .iter()
        .any(|p| p.names.iter().any(|n| names.contains(&n.as_str())))
}

/// Computes `layout`'s page for `filter`.
pub(crate) async fn page(
    store: &Store,
    config: &Config,
    layout: &Layout,
    filter: &Filter,
) -> Result<PageView, ApiError> {
    let by_day = needs(
        layout,
        &[
            "error_rate",
            "error_budget_burn",
            "daily_policy_blocks",
            "daily_errors",
            "errors_by_tool",
            "failing_routes",
            "timeout_clusters",
            "policy_blocks",
        ],
    );
    let runs = needs(layout, &["capped_runs", "savings_by_tenant"]);
    let changes = needs(layout, &["rollback_activation_ms", "config_changes"]);
    let (kpis, attempt_days, capped_runs, changes) = tokio::try_join!(
        async {
            isometer_billing::kpis(store, config, filter, Source::Rollup)
                .await
                .map_err(billing_error)
        },
        async {
            if by_day {
                store.attempt_days(filter).await.map_err(ApiError::from)
            } else {
                Ok(Vec::new())
            }
        },
        async {
            if runs {
                store
                    .capped_runs(filter, CAPPED_RUNS_READ)
                    .await
                    .map_err(ApiError::from)
            } else {
                Ok(Vec::new())
            }
        },
        async {
            if changes {
                store.config_changes().await.map_err(ApiError::from)
            } else {
                Ok(Vec::new())
            }
        },
    )?;
    let sources = Sources {
        config,
        kpis,
        attempt_days,
        capped_runs,
        changes: changes
            .into_iter()
            .filter(|c| {
                let day = day_of_ms(c.change.requested_ms);
                day >= filter.from && day <= filter.to
            })
            .collect(),
        slo_target: layout.slo_target,
    };
    let panels = layout.panels.iter().map(|p| sources.panel(p)).collect();
    Ok(PageView {
        page: layout.page.clone(),
        title: layout.title.clone(),
        from: filter.from,
        to: filter.to,
        tenant: filter.tenant_id.clone(),
        use_case: filter.use_case.clone(),
        tool: filter.tool_id.clone(),
        run_class: filter.run_class,
        currency: sources.kpis.currency.clone(),
        panels,
    })
}

pub(crate) fn billing_error(e: BillingError) -> ApiError {
    match e {
        BillingError::Store(e) => ApiError::from(e),
        other => ApiError::BadRequest(other.to_string()),
    }
}

impl Sources<'_> {
    fn panel(&self, p: &Panel) -> PanelView {
        let mut view = PanelView {
            id: p.id.clone(),
            kind: p.kind,
            title: p.title.clone(),
            cards: None,
            chart: None,
            table: None,
        };
        match p.kind {
            Kind::Cards => view.cards = Some(p.names.iter().map(|n| self.card(n)).collect()),
            Kind::Line | Kind::Bar => view.chart = p.names.first().map(|n| self.chart(n)),
            Kind::Table => view.table = p.names.first().map(|n| self.table(n)),
        }
        view
    }

    fn currency(&self) -> &str {
        self.kpis.currency.as_deref().unwrap_or("")
    }

    fn money(&self, m: Money) -> String {
        with_unit(&amount(m), self.currency())
    }

    fn unit_money(&self, m: Money) -> String {
        with_unit(&unit_amount(m), self.currency())
    }

    fn card(&self, kpi: &str) -> Card {
        let k = &self.kpis;
        let money = |label: &'static str, m: Money| (label, self.money(m), Some(m.to_string()));
        let unit_money = |label: &'static str, m: Option<Money>| {
            (
                label,
                m.map_or_else(none, |m| self.unit_money(m)),
                m.map(|m| m.to_string()),
            )
        };
        let count = |label: &'static str, n: u64| (label, n.to_string(), Some(n.to_string()));
        let share = |label: &'static str, r: Option<Decimal>| {
            (
                label,
                r.map_or_else(none, percent),
                r.map(|r| r.to_string()),
            )
        };
        let (label, value, raw) = match kpi {
            "cost_total" => money("Cost", k.cost_total),
            "billed_total" => money("Billed", k.billed_total),
            "gross_margin" => money("Gross margin", k.gross_margin),
            "margin_percent" => share("Margin", margin_ratio(k.gross_margin, k.billed_total)),
            "tasks_total" => count("Tasks", k.tasks_total),
            "tasks_successful" => count("Successful tasks", k.tasks_successful),
            "tasks_compliant" => count("Compliant tasks", k.tasks_compliant),
            "cost_per_successful_task" => {
                unit_money("Cost per successful task", k.cost_per_successful_task)
            }
            "cost_per_compliant_task" => {
                unit_money("Cost per compliant task", k.cost_per_compliant_task)
            }
            "retry_cost" => money("Retry cost", k.retry_cost),
            "retry_tax_ratio" => share("Retry tax", k.retry_tax_ratio),
            "exploratory_tasks" => count("Exploratory tasks", k.exploratory_tasks),
            "exploratory_cost" => money("Exploratory cost", k.exploratory_cost),
            "capped_tasks" => count("Capped tasks", k.capped_tasks),
            "capped_runs" => count("Capped runs", self.capped_run_count()),
            "capped_savings" => money("Spend avoided by caps", k.capped_savings),
            "throttled_tasks" => count("Throttled tasks", k.throttled_tasks),
            "attempts_total" => count("Attempts", k.attempts_total),
            "policy_rejection_rate" => share("Policy rejection rate", k.policy_rejection_rate),
            "evidence_completeness_ratio" => {
                share("Evidence completeness", k.evidence_completeness_ratio)
            }
            "error_rate" => share("Error rate", self.error_rate()),
            "error_budget_burn" => {
                let burn = self.error_budget_burn();
                (
                    "Error-budget burn",
                    burn.map_or_else(none, |b| format!("{}×", b.round_dp(2))),
                    burn.map(|b| b.to_string()),
                )
            }
            "rollback_activation_ms" => {
                let ms = self.rollback_activation_ms();
                (
                    "Rollback activation",
                    ms.map_or_else(none, |ms| format!("{ms} ms")),
                    ms.map(|ms| ms.to_string()),
                )
            }
            other => (other, none(), None),
        };
        Card {
            kpi: kpi.to_owned(),
            label: label.to_owned(),
            value,
            raw,
        }
    }

    fn capped_run_count(&self) -> u64 {
        let runs: BTreeSet<(&str, &str)> = self
            .capped_runs
            .iter()
            .map(|r| (r.tenant_id.as_str(), r.run_id.as_str()))
            .collect();
        runs.len() as u64
    }

    /// Errors and attempts that reached the tool.
    fn errors(&self) -> (u64, u64) {
        let (mut errors, mut reached) = (0, 0);
        for d in &self.attempt_days {
            if ERROR_OUTCOMES.contains(&d.outcome.as_str()) {
                errors += d.attempts;
            }
            if !DECIDED_OUTCOMES.contains(&d.outcome.as_str()) {
                reached += d.attempts;
            }
        }
        (errors, reached)
    }

    fn error_rate(&self) -> Option<Decimal> {
        let (errors, reached) = self.errors();
        (reached > 0).then(|| (Decimal::from(errors) / Decimal::from(reached)).round_dp(6))
    }

    /// How fast the period spent its error budget: 1 spends it exactly over the period.
    fn error_budget_burn(&self) -> Option<Decimal> {
        let budget = Decimal::try_from(1.0 - self.slo_target).ok()?.round_dp(6);
        let rate = self.error_rate()?;
        (!budget.is_zero()).then(|| (rate / budget).round_dp(6))
    }

    /// The newest rollback's activation time in the period.
    fn rollback_activation_ms(&self) -> Option<u64> {
        self.changes
            .iter()
            .filter(|c| c.change.kind == "rollback")
            .filter_map(|c| c.activation_ms().map(|ms| (c.change.requested_ms, ms)))
            .max()
            .map(|(_, ms)| ms)
    }

    fn days(&self) -> Vec<String> {
        self.kpis.daily.iter().map(|d| d.day.to_string()).collect()
    }

    fn chart(&self, name: &str) -> Chart {
        let k = &self.kpis;
        let daily = |series: Vec<(&str, Vec<Option<Decimal>>)>, unit: &str| Chart {
            name: name.to_owned(),
            unit: unit.to_owned(),
            labels: self.days(),
            series: series
                .into_iter()
                .map(|(name, values)| ChartSeries {
                    name: name.to_owned(),
                    values: values
                        .into_iter()
                        .map(|v| v.map(|v| v.to_string()))
                        .collect(),
                })
                .collect(),
        };
        let per_day = |f: &dyn Fn(&isometer_billing::Day) -> Option<Decimal>| {
            k.daily.iter().map(f).collect::<Vec<_>>()
        };
        let currency = self.currency().to_owned();
        match name {
            "daily_cost_billed" => daily(
                vec![
                    ("cost", per_day(&|d| Some(d.cost))),
                    ("billed", per_day(&|d| Some(d.billed))),
                ],
                &currency,
            ),
            "daily_cost_per_task" => daily(
                vec![
                    (
                        "per successful task",
                        per_day(&|d| d.cost_per_successful_task()),
                    ),
                    (
                        "per compliant task",
                        per_day(&|d| d.cost_per_compliant_task()),
                    ),
                ],
                &currency,
            ),
            "daily_margin" => daily(
                vec![("margin", per_day(&|d| Some(d.billed - d.cost)))],
                &currency,
            ),
            "daily_tasks" => daily(
                vec![
                    ("tasks", per_day(&|d| Some(Decimal::from(d.tasks)))),
                    (
                        "successful",
                        per_day(&|d| Some(Decimal::from(d.successful))),
                    ),
                ],
                "tasks",
            ),
            "daily_capped_savings" => daily(
                vec![("spend avoided", per_day(&|d| Some(d.capped_savings)))],
                &currency,
            ),
            "daily_policy_blocks" => daily(
                BLOCK_OUTCOMES
                    .iter()
                    .map(|o| (*o, self.attempts_by_day(|d| d.outcome == *o)))
                    .collect(),
                "attempts",
            ),
            "daily_errors" => daily(
                vec![
                    (
                        "timed_out",
                        self.attempts_by_day(|d| d.outcome == "timed_out"),
                    ),
                    (
                        "other errors",
                        self.attempts_by_day(|d| {
                            d.outcome != "timed_out" && ERROR_OUTCOMES.contains(&d.outcome.as_str())
                        }),
                    ),
                ],
                "attempts",
            ),
            "margin_by_use_case" => bars(name, &currency, self.margin_by(|m| &m.use_case)),
            "margin_by_tenant" => bars(name, &currency, self.margin_by(|m| &m.tenant)),
            "cost_by_tenant" => bars(
                name,
                &currency,
                self.sum_by(k.margins.iter().map(|m| (m.tenant.clone(), m.cost))),
            ),
            "savings_by_tenant" => bars(
                name,
                &currency,
                self.sum_by(
                    self.capped_runs
                        .iter()
                        .map(|r| (r.tenant_id.clone(), r.avoided_cost)),
                ),
            ),
            "errors_by_tool" => bars(
                name,
                "attempts",
                self.sum_by(
                    self.attempt_days
                        .iter()
                        .filter(|d| ERROR_OUTCOMES.contains(&d.outcome.as_str()))
                        .map(|d| (d.tool_id.clone(), Decimal::from(d.attempts))),
                ),
            ),
            other => Chart {
                name: other.to_owned(),
                unit: String::new(),
                labels: Vec::new(),
                series: Vec::new(),
            },
        }
    }

    fn attempts_by_day(&self, keep: impl Fn(&AttemptDay) -> bool) -> Vec<Option<Decimal>> {
        let mut counts: BTreeMap<NaiveDate, u64> =
            self.kpis.daily.iter().map(|d| (d.day, 0)).collect();
        for d in self.attempt_days.iter().filter(|d| keep(d)) {
            *counts.entry(d.day).or_default() += d.attempts;
        }
        counts
            .into_values()
            .map(|n| Some(Decimal::from(n)))
            .collect()
    }

    fn margin_by(
        &self,
        key: impl Fn(&isometer_billing::kpi::Margin) -> &String,
    ) -> Vec<(String, Decimal)> {
        self.sum_by(self.kpis.margins.iter().map(|m| (key(m).clone(), m.margin)))
    }

    /// Sums by key, largest first.
    fn sum_by(&self, items: impl Iterator<Item = (String, Decimal)>) -> Vec<(String, Decimal)> {
        let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
        for (k, v) in items {
            *sums.entry(k).or_default() += v;
        }
        let mut sums: Vec<(String, Decimal)> = sums.into_iter().collect();
        sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sums
    }

    fn tenant_name(&self, id: &str) -> String {
        self.config
            .tenant(id)
            .map_or_else(|| id.to_owned(), |t| t.name.clone())
    }

    fn table(&self, name: &str) -> Table {
        let k = &self.kpis;
        let (columns, rows): (Vec<(&str, bool)>, Vec<Vec<Cell>>) = match name {
            "p95_cost" => (
                vec![
                    ("Tenant", false),
                    ("Use case", false),
                    ("Tasks", true),
                    ("p95 cost per task", true),
                ],
                k.p95_cost_per_task
                    .iter()
                    .map(|p| {
                        vec![
                            self.tenant_cell(&p.tenant),
                            Cell::text(&p.use_case),
                            Cell::text(p.tasks.to_string()),
                            Cell::text(self.unit_money(p.p95)),
                        ]
                    })
                    .collect(),
            ),
            "margins" => (
                margin_columns(true),
                k.margins
                    .iter()
                    .map(|m| {
                        let mut row = vec![self.tenant_cell(&m.tenant)];
                        row.extend(self.margin_cells(
                            &m.use_case,
                            m.tasks,
                            m.successful,
                            m.cost,
                            m.billed,
                        ));
                        row
                    })
                    .collect(),
            ),
            "margin_by_use_case" => {
                let mut by: BTreeMap<&str, (u64, u64, Money, Money)> = BTreeMap::new();
                for m in &k.margins {
                    let e = by.entry(&m.use_case).or_default();
                    e.0 += m.tasks;
                    e.1 += m.successful;
                    e.2 += m.cost;
                    e.3 += m.billed;
                }
                (
                    margin_columns(false),
                    by.into_iter()
                        .map(|(use_case, (t, s, c, b))| self.margin_cells(use_case, t, s, c, b))
                        .collect(),
                )
            }
            "tenants" => (
                vec![
                    ("Tenant", false),
                    ("Tier", false),
                    ("Tasks", true),
                    ("Successful", true),
                    ("Cost", true),
                    ("Billed", true),
                    ("Margin", true),
                    ("Cost per successful task", true),
                ],
                self.tenant_rows(),
            ),
            "p95_latency" => (
                vec![
                    ("Tenant", false),
                    ("Tool", false),
                    ("Attempts", true),
                    ("p95 latency", true),
                ],
                k.p95_tool_latency
                    .iter()
                    .map(|p| {
                        vec![
                            self.tenant_cell(&p.tenant),
                            Cell::text(&p.tool),
                            Cell::text(p.attempts.to_string()),
                            Cell::text(format!("{} ms", p.p95_ms)),
                        ]
                    })
                    .collect(),
            ),
            "failing_routes" => (
                vec![
                    ("Tenant", false),
                    ("Tool", false),
                    ("Outcome", false),
                    ("Attempts", true),
                    ("Share of the route's attempts", true),
                ],
                self.failing_routes(),
            ),
            "timeout_clusters" => (
                vec![
                    ("Day", false),
                    ("Tool", false),
                    ("Tenant", false),
                    ("Timeouts", true),
                ],
                self.timeout_clusters(),
            ),
            "policy_blocks" => (
                vec![
                    ("Day", false),
                    ("Tool", false),
                    ("Blocked attempts", true),
                    ("Daily mean", true),
                    ("Against the mean", true),
                ],
                self.policy_block_spikes(),
            ),
            "config_changes" => (
                vec![
                    ("Requested", false),
                    ("Change", false),
                    ("Version", false),
                    ("Previous", false),
                    ("By", false),
                    ("Activation", true),
                ],
                self.changes
                    .iter()
                    .rev()
                    .map(|c| {
                        vec![
                            Cell::text(time_of_ms(c.change.requested_ms)),
                            Cell::text(&c.change.kind),
                            Cell::text(short(&c.change.version)),
                            Cell::text(short(&c.change.previous_version)),
                            Cell::text(&c.change.actor),
                            Cell::text(
                                c.activation_ms().map_or_else(none, |ms| format!("{ms} ms")),
                            ),
                        ]
                    })
                    .collect(),
            ),
            "capped_runs" => (
                vec![
                    ("Tenant", false),
                    ("Run", false),
                    ("Cap", false),
                    ("Tasks capped", true),
                    ("Spend avoided", true),
                    ("First", false),
                    ("Last", false),
                ],
                self.capped_runs
                    .iter()
                    .take(CAPPED_RUNS_SHOWN)
                    .map(|r| {
                        vec![
                            self.tenant_cell(&r.tenant_id),
                            Cell::text(&r.run_id),
                            Cell::text(&r.cap),
                            Cell::text(r.tasks.to_string()),
                            Cell::text(self.money(r.avoided_cost)),
                            Cell::text(time_of_ms(r.first_ms)),
                            Cell::text(time_of_ms(r.last_ms)),
                        ]
                    })
                    .collect(),
            ),
            "unpriced" => (
                vec![
                    ("Tenant", false),
                    ("Use case", false),
                    ("Successful tasks", true),
                ],
                k.unpriced
                    .iter()
                    .map(|u| {
                        vec![
                            self.tenant_cell(&u.tenant),
                            Cell::text(&u.use_case),
                            Cell::text(u.tasks.to_string()),
                        ]
                    })
                    .collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        Table {
            name: name.to_owned(),
            columns: columns
                .into_iter()
                .map(|(label, numeric)| Column {
                    label: label.to_owned(),
                    numeric,
                })
                .collect(),
            rows,
        }
    }

    fn tenant_cell(&self, id: &str) -> Cell {
        Cell::link(self.tenant_name(id), format!("/tenants/{id}"))
    }

    fn margin_cells(
        &self,
        use_case: &str,
        tasks: u64,
        successful: u64,
        cost: Money,
        billed: Money,
    ) -> Vec<Cell> {
        vec![
            Cell::text(use_case),
            Cell::text(tasks.to_string()),
            Cell::text(successful.to_string()),
            Cell::text(self.money(cost)),
            Cell::text(self.money(billed)),
            Cell::text(self.money(billed - cost)),
            Cell::text(margin_ratio(billed - cost, billed).map_or_else(none, percent)),
        ]
    }

    /// Every configured tenant, with its figures for the period (tenants that appear only
    /// in the data are listed too).
    fn tenant_rows(&self) -> Vec<Vec<Cell>> {
        let mut by: BTreeMap<String, (u64, u64, Money, Money)> = self
            .config
            .tenants
            .iter()
            .filter(|t| self.kpis.tenant.as_ref().is_none_or(|only| *only == t.id))
            .map(|t| (t.id.clone(), Default::default()))
            .collect();
        for m in &self.kpis.margins {
            let e = by.entry(m.tenant.clone()).or_default();
            e.0 += m.tasks;
            e.1 += m.successful;
            e.2 += m.cost;
            e.3 += m.billed;
        }
        by.into_iter()
            .map(|(id, (tasks, successful, cost, billed))| {
                let tier = self.config.tenant(&id).map(|t| t.tier.clone());
                vec![
                    self.tenant_cell(&id),
                    Cell::text(tier.unwrap_or_default()),
                    Cell::text(tasks.to_string()),
                    Cell::text(successful.to_string()),
                    Cell::text(self.money(cost)),
                    Cell::text(self.money(billed)),
                    Cell::text(self.money(billed - cost)),
                    Cell::text(
                        (successful > 0)
                            .then(|| isometer_billing::round_money(cost / Money::from(successful)))
                            .map_or_else(none, |c| self.unit_money(c)),
                    ),
                ]
            })
            .collect()
    }

    /// The (tenant, tool, outcome) routes with the most errors, and their share of the
    /// route's attempts that reached the tool.
    fn failing_routes(&self) -> Vec<Vec<Cell>> {
        let mut reached: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut errors: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for d in &self.attempt_days {
            let route = (d.tenant_id.as_str(), d.tool_id.as_str());
            if !DECIDED_OUTCOMES.contains(&d.outcome.as_str()) {
                *reached.entry(route).or_default() += d.attempts;
            }
            if ERROR_OUTCOMES.contains(&d.outcome.as_str()) {
                *errors.entry((route.0, route.1, &d.outcome)).or_default() += d.attempts;
            }
        }
        let mut ranked: Vec<_> = errors.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(TOP)
            .map(|((tenant, tool, outcome), n)| {
                let of = reached.get(&(tenant, tool)).copied().unwrap_or(0);
                let share = (of > 0).then(|| (Decimal::from(n) / Decimal::from(of)).round_dp(6));
                vec![
                    self.tenant_cell(tenant),
                    Cell::text(tool),
                    Cell::text(outcome),
                    Cell::text(n.to_string()),
                    Cell::text(share.map_or_else(none, percent)),
                ]
            })
            .collect()
    }

    /// The (day, tool, tenant) groups with the most timeouts.
    fn timeout_clusters(&self) -> Vec<Vec<Cell>> {
        let mut ranked: Vec<&AttemptDay> = self
            .attempt_days
            .iter()
            .filter(|d| d.outcome == "timed_out")
            .collect();
        ranked.sort_by(|a, b| {
            b.attempts.cmp(&a.attempts).then_with(|| {
                (a.day, &a.tool_id, &a.tenant_id).cmp(&(b.day, &b.tool_id, &b.tenant_id))
            })
        });
        ranked
            .into_iter()
            .take(TOP)
            .map(|d| {
                vec![
                    Cell::text(d.day.to_string()),
                    Cell::text(&d.tool_id),
                    self.tenant_cell(&d.tenant_id),
                    Cell::text(d.attempts.to_string()),
                ]
            })
            .collect()
    }

    /// Days on which a tool's policy blocks stood out: blocked attempts that day against
    /// the tool's daily mean over the period, highest first.
    fn policy_block_spikes(&self) -> Vec<Vec<Cell>> {
        let days = Decimal::from(self.kpis.daily.len().max(1) as u64);
        let mut by_day: BTreeMap<(NaiveDate, &str), u64> = BTreeMap::new();
        let mut by_tool: BTreeMap<&str, u64> = BTreeMap::new();
        for d in &self.attempt_days {
            if BLOCK_OUTCOMES.contains(&d.outcome.as_str()) {
                *by_day.entry((d.day, &d.tool_id)).or_default() += d.attempts;
                *by_tool.entry(&d.tool_id).or_default() += d.attempts;
            }
        }
        let mut ranked: Vec<((NaiveDate, &str), u64, Decimal, Decimal)> = by_day
            .into_iter()
            .map(|(key, n)| {
                let mean = Decimal::from(by_tool.get(key.1).copied().unwrap_or(0)) / days;
                let ratio = if mean.is_zero() {
                    Decimal::ZERO
                } else {
                    Decimal::from(n) / mean
                };
                (key, n, mean.round_dp(2), ratio.round_dp(2))
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.3.cmp(&a.3)
                .then_with(|| b.1.cmp(&a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        ranked
            .into_iter()
            .take(TOP)
            .map(|((day, tool), n, mean, ratio)| {
                vec![
                    Cell::text(day.to_string()),
                    Cell::text(tool),
                    Cell::text(n.to_string()),
                    Cell::text(mean.to_string()),
                    Cell::text(format!("{ratio}×")),
                ]
            })
            .collect()
    }
}

fn margin_columns(with_tenant: bool) -> Vec<(&'static str, bool)> {
    let mut columns = if with_tenant {
        vec![("Tenant", false)]
    } else {
        Vec::new()
    };
    columns.extend([
        ("Use case", false),
        ("Tasks", true),
        ("Successful", true),
        ("Cost", true),
        ("Billed", true),
        ("Margin", true),
        ("Margin %", true),
    ]);
    columns
}

fn bars(name: &str, unit: &str, sums: Vec<(String, Decimal)>) -> Chart {
    let (labels, values): (Vec<String>, Vec<Option<String>>) = sums
        .into_iter()
        .map(|(label, v)| (label, Some(v.to_string())))
        .unzip();
    Chart {
        name: name.to_owned(),
        unit: unit.to_owned(),
        labels,
        series: vec![ChartSeries {
            name: name.to_owned(),
            values,
        }],
    }
}

/// Margin as a share of the billed amount; none when nothing was billed.
fn margin_ratio(margin: Money, billed: Money) -> Option<Decimal> {
    (!billed.is_zero()).then(|| (margin / billed).round_dp(6))
}

fn none() -> String {
    "—".to_owned()
}

fn with_unit(value: &str, unit: &str) -> String {
    if unit.is_empty() {
        value.to_owned()
    } else {
        format!("{value} {unit}")
    }
}

/// An amount as pages show it: to the hundredth when it is large, to 6 places otherwise
/// (the metered cost of a day's tasks is often below a cent). The JSON's `raw` is exact.
pub(crate) fn amount(m: Money) -> String {
    let places = if m.abs() >= Money::from(100) { 2 } else { 6 };
    fixed(m, places)
}

/// A per-task amount: to 8 places, since one task often costs a few millionths.
pub(crate) fn unit_amount(m: Money) -> String {
    fixed(m, 8)
}

fn fixed(m: Money, places: u32) -> String {
    let mut r =
        m.round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    r.rescale(places);
    r.to_string()
}

/// A ratio as a percentage with two decimals.
pub(crate) fn percent(r: Decimal) -> String {
    format!("{} %", fixed(r * Decimal::from(100), 2))
}

fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

fn day_of_ms(ms: u64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .date_naive()
}

pub(crate) fn time_of_ms(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_shares_are_shown_to_fixed_places() {
        assert_eq!(amount(Money::new(123_456, 3)), "123.46");
        assert_eq!(amount(Money::new(12_345_675, 8)), "0.123457");
        assert_eq!(amount(Money::new(-5, 1)), "-0.500000");
        assert_eq!(unit_amount(Money::new(35, 6)), "0.00003500");
        assert_eq!(percent(Decimal::new(123_456, 6)), "12.35 %");
    }

    #[test]
    fn a_period_defaults_to_30_days_and_is_checked() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 21).expect("day");
        let f = PageQuery::default().filter(today).expect("default");
        assert_eq!((f.from.to_string(), f.to), ("2026-10-23".to_owned(), today));
        let q = PageQuery {
            from: Some("2026-11-05".into()),
            to: Some("2026-11-01".into()),
            ..PageQuery::default()
        };
        assert!(q.filter(today).is_err());
        let q = PageQuery {
            from: Some("".into()),
            tenant: Some(" ".into()),
            run_class: Some("sideways".into()),
            ..PageQuery::default()
        };
        assert!(q.filter(today).is_err(), "an unknown run class");
        let q = PageQuery {
            from: Some("".into()),
            tenant: Some(" ".into()),
            ..PageQuery::default()
        };
        let f = q.filter(today).expect("empty fields are no filter");
        assert_eq!(f.tenant_id, None);
    }
}
