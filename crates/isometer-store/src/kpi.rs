//! The questions billing asks: tasks and attempts grouped by what KPIs and statements split
//! on, and the distributions behind the p95 figures. Each is answered from the daily
//! rollups (what the dashboard reads) or from the raw tables (the check on the rollups);
//! in a healthy database both answers are equal.
//!
//! Percentiles: the rollups keep, per day and group, how many tasks cost each amount to
//! two significant digits (and how many attempts took each wall time), so a p95 over any
//! period adds up a few hundred counts per group instead of sorting every task. The p95 is
//! the element at 0-based index `floor(0.95 * n)` of the sorted values, as ClickHouse's
//! `quantileExact` picks it; truncating to two significant digits is monotone, so the p95
//! of the truncated values is the exact p95 truncated, which is what the raw answer
//! computes. Two digits, not three: over a day's costs spread across a decade, three
//! digits keep ten times the rows and the overview no longer answers in 300 ms at 100
//! million events.

use crate::error::StoreError;
use crate::rows::money_from_i128;
use chrono::NaiveDate;
use isometer_core::{Money, RunClass};
use serde::Deserialize;

/// Where an answer is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The pre-aggregated daily tables, fed by materialized views.
    Rollup,
    /// `tasks` and `usage_events` themselves.
    Raw,
}

/// Which tasks and attempts a question covers: days `from` to `to`, both included (UTC),
/// optionally one tenant, use case, tool or run class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tenant_id: Option<String>,
    pub use_case: Option<String>,
    pub tool_id: Option<String>,
    pub run_class: Option<RunClass>,
}

impl Filter {
    /// Every task and attempt of the days `from` to `to`.
    pub fn days(from: NaiveDate, to: NaiveDate) -> Self {
        Filter {
            from,
            to,
            tenant_id: None,
            use_case: None,
            tool_id: None,
            run_class: None,
        }
    }

    /// The WHERE clause over a table whose day column is `day`, with its values in bind
    /// order.
    fn clause(&self, day: &str) -> (String, Vec<String>) {
        let mut sql = format!("{day} >= toDate(?) AND {day} <= toDate(?)");
        let mut binds = vec![self.from.to_string(), self.to.to_string()];
        for (column, value) in [
            ("tenant_id", self.tenant_id.as_deref()),
            ("use_case", self.use_case.as_deref()),
            ("tool_id", self.tool_id.as_deref()),
            ("run_class", self.run_class.map(RunClass::as_str)),
        ] {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                binds.push(value.to_owned());
            }
        }
        (sql, binds)
    }
}

/// Attempts of one day, tenant, tool and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptDay {
    pub day: NaiveDate,
    pub tenant_id: String,
    pub tool_id: String,
    pub outcome: String,
    pub attempts: u64,
}

/// A run some of whose tasks a loop cap answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedRun {
    pub tenant_id: String,
    pub run_id: String,
    /// The cap that answered (`LoopCap::as_str`).
    pub cap: String,
    pub tasks: u64,
    /// The spend the caps avoided, estimated from the run's recent cost per task.
    pub avoided_cost: Money,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// Tasks of one day, tenant, use case, run class, final outcome, compliance and cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskGroup {
    pub day: NaiveDate,
    pub tenant_id: String,
    pub use_case: String,
    pub run_class: String,
    pub outcome: String,
    /// Every attempt allowed with complete evidence.
    pub compliant: bool,
    /// The loop cap that answered these tasks, empty when none did.
    pub cap: String,
    pub tasks: u64,
    pub attempts: u64,
    /// What all their attempts cost.
    pub cost: Money,
    /// The spend their loop cap avoided.
    pub avoided_cost: Money,
}

/// Attempts of one tenant, tool, use case, run class and outcome, split by whether they
/// were retries, the verdict, whether a policy let them run and their evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptGroup {
    pub tenant_id: String,
    pub tool_id: String,
    pub use_case: String,
    pub run_class: String,
    pub outcome: String,
    /// Attempt number above 1.
    pub retry: bool,
    pub verdict: String,
    /// A policy let the attempt run.
    pub ran: bool,
    pub evidence_complete: bool,
    pub attempts: u64,
    pub cost: Money,
    pub wall_time_us: u64,
}

/// How many values of one group fell on one two-significant-digit value.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct Bucket {
    pub tenant_id: String,
    /// The use case (task costs) or the tool (attempt latencies).
    pub key: String,
    /// The value truncated to two significant digits: picos of cost, or microseconds.
    pub value: u64,
    pub count: u64,
}

/// The exact p95 of one group, from the raw table.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct GroupP95 {
    pub tenant_id: String,
    pub key: String,
    /// Picos of cost, or microseconds.
    pub p95: u64,
    pub count: u64,
}

/// `x` truncated to two significant digits, as the histogram rollups store it.
pub fn two_digits(x: u64) -> u64 {
    let digits = x.checked_ilog10().map_or(1, |d| d + 1);
    let scale = 10_u64.pow(digits.saturating_sub(2));
    x / scale * scale
}

/// The element at index `floor(0.95 n)` of the values the buckets count (sorted), per
/// (tenant, key); `n` is the group's count.
pub fn p95_of_buckets(buckets: &[Bucket]) -> Vec<GroupP95> {
    let mut sorted: Vec<&Bucket> = buckets.iter().collect();
    sorted.sort_by(|a, b| (&a.tenant_id, &a.key, a.value).cmp(&(&b.tenant_id, &b.key, b.value)));
    let mut out = Vec::new();
    for group in sorted.chunk_by(|a, b| a.tenant_id == b.tenant_id && a.key == b.key) {
        let n: u64 = group.iter().map(|b| b.count).sum();
        if n == 0 {
            continue;
        }
        let index = quantile_index(0.95, n);
        let mut seen = 0;
        for bucket in group {
            seen += bucket.count;
            if seen > index {
                out.push(GroupP95 {
                    tenant_id: bucket.tenant_id.clone(),
                    key: bucket.key.clone(),
                    p95: bucket.value,
                    count: n,
                });
                break;
            }
        }
    }
    out
}

/// ClickHouse's `quantileExact` index: `level * n` in doubles, truncated, at most n - 1.
fn quantile_index(level: f64, n: u64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = (level * n as f64) as u64;
    index.min(n.saturating_sub(1))
}

/// Picos of `m` (which has at most 12 decimal places), for histogram values.
pub fn picos(m: Money) -> u64 {
    use rust_decimal::prelude::ToPrimitive;
    (m * Money::from(1_000_000_000_000_u64))
        .trunc()
        .to_u64()
        .unwrap_or(0)
}

/// Money from picos.
pub fn from_picos(p: u64) -> Money {
    Money::from_i128_with_scale(i128::from(p), 12)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TaskGroupRow {
    day: u16,
    tenant_id: String,
    use_case: String,
    run_class: String,
    outcome: String,
    compliant: u8,
    cap: String,
    tasks: u64,
    attempts: u64,
    cost: i128,
    avoided_cost: i128,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AttemptGroupRow {
    tenant_id: String,
    tool_id: String,
    use_case: String,
    run_class: String,
    outcome: String,
    retry: u8,
    verdict: String,
    ran: u8,
    evidence_complete: u8,
    attempts: u64,
    cost: i128,
    wall_time_us: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AttemptDayRow {
    day: u16,
    tenant_id: String,
    tool_id: String,
    outcome: String,
    attempts: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CappedRunRow {
    tenant_id: String,
    run_id: String,
    cap: String,
    tasks: u64,
    avoided_cost: i128,
    first_ms: u64,
    last_ms: u64,
}

const TASK_KEYS: &str = "tenant_id, use_case, run_class, outcome, compliant, cap";
const ATTEMPT_KEYS: &str =
    "tenant_id, tool_id, use_case, run_class, outcome, retry, verdict, ran, evidence_complete";

impl crate::Store {
    /// Tasks grouped by day, tenant, use case, run class, outcome, compliance and cap.
    pub async fn task_groups(
        &self,
        filter: &Filter,
        source: Source,
    ) -> Result<Vec<TaskGroup>, StoreError> {
        let (table, aggregates) = match source {
            Source::Rollup => (
                "task_kpis_daily",
                "countMerge(tasks), sumMerge(attempts), sumMerge(total_cost), \
                 sumMerge(avoided_cost)",
            ),
            Source::Raw => (
                "tasks",
                "count(), sum(attempts), sum(total_cost), sum(avoided_cost)",
            ),
        };
        let (clause, binds) = filter.clause("submitted_date");
        let sql = format!(
            "SELECT toUInt16(submitted_date) AS day, {TASK_KEYS}, {aggregates} FROM {table} \
             WHERE {clause} GROUP BY submitted_date, {TASK_KEYS} \
             ORDER BY submitted_date, {TASK_KEYS}"
        );
        let rows: Vec<TaskGroupRow> = self.fetch_bound(&sql, binds).await?;
        rows.into_iter()
            .map(|r| {
                Ok(TaskGroup {
                    day: day_from_u16(r.day),
                    tenant_id: r.tenant_id,
                    use_case: r.use_case,
                    run_class: r.run_class,
                    outcome: r.outcome,
                    compliant: r.compliant != 0,
                    cap: r.cap,
                    tasks: r.tasks,
                    attempts: r.attempts,
                    cost: money_from_i128(r.cost)?,
                    avoided_cost: money_from_i128(r.avoided_cost)?,
                })
            })
            .collect()
    }

    /// Attempts grouped by tenant, tool, use case, run class, outcome, retry, verdict,
    /// whether they ran and their evidence.
    pub async fn attempt_groups(
        &self,
        filter: &Filter,
        source: Source,
    ) -> Result<Vec<AttemptGroup>, StoreError> {
        let (table, keys, aggregates) = match source {
            Source::Rollup => (
                "attempt_kpis_daily",
                ATTEMPT_KEYS.to_owned(),
                "countMerge(attempts), sumMerge(cost), sumMerge(wall_time_us)",
            ),
            Source::Raw => (
                "usage_events",
                "tenant_id, tool_id, use_case, run_class, outcome, \
                 toUInt8(attempt > 1) AS retry, verdict, toUInt8(policy_id != '') AS ran, \
                 evidence_complete"
                    .to_owned(),
                "count(), sum(cost), sum(wall_time_us)",
            ),
        };
        let (clause, binds) = filter.clause("event_date");
        let sql = format!(
            "SELECT {keys}, {aggregates} FROM {table} WHERE {clause} \
             GROUP BY {ATTEMPT_KEYS} ORDER BY {ATTEMPT_KEYS}"
        );
        let rows: Vec<AttemptGroupRow> = self.fetch_bound(&sql, binds).await?;
        rows.into_iter()
            .map(|r| {
                Ok(AttemptGroup {
                    tenant_id: r.tenant_id,
                    tool_id: r.tool_id,
                    use_case: r.use_case,
                    run_class: r.run_class,
                    outcome: r.outcome,
                    retry: r.retry != 0,
                    verdict: r.verdict,
                    ran: r.ran != 0,
                    evidence_complete: r.evidence_complete != 0,
                    attempts: r.attempts,
                    cost: money_from_i128(r.cost)?,
                    wall_time_us: r.wall_time_us,
                })
            })
            .collect()
    }

    /// The p95 of per-task total cost by tenant and use case, in picos truncated to two
    /// significant digits.
    pub async fn task_cost_p95(
        &self,
        filter: &Filter,
        source: Source,
    ) -> Result<Vec<GroupP95>, StoreError> {
        let (clause, binds) = filter.clause("submitted_date");
        match source {
            Source::Rollup => {
                let sql = format!(
                    "SELECT tenant_id, use_case AS key, cost_bucket AS value, \
                     sum(tasks) AS count FROM task_cost_hist_daily WHERE {clause} \
                     GROUP BY tenant_id, use_case, cost_bucket"
                );
                Ok(p95_of_buckets(&self.fetch_bound(&sql, binds).await?))
            }
            Source::Raw => {
                let sql = format!(
                    "SELECT tenant_id, use_case AS key, \
                     quantileExact(0.95)({PICOS}) AS p95, count() AS count \
                     FROM tasks WHERE {clause} GROUP BY tenant_id, use_case \
                     ORDER BY tenant_id, use_case",
                    PICOS = "toUInt64(total_cost * 1000000000000)"
                );
                let rows: Vec<GroupP95> = self.fetch_bound(&sql, binds).await?;
                Ok(truncated(rows))
            }
        }
    }

    /// The p95 wall time of attempts that ran, by tenant and tool, in microseconds
    /// truncated to two significant digits.
    pub async fn latency_p95(
        &self,
        filter: &Filter,
        source: Source,
    ) -> Result<Vec<GroupP95>, StoreError> {
        let (clause, binds) = filter.clause("event_date");
        match source {
            Source::Rollup => {
                let sql = format!(
                    "SELECT tenant_id, tool_id AS key, wall_bucket AS value, \
                     sum(attempts) AS count FROM attempt_latency_hist_daily \
                     WHERE {clause} GROUP BY tenant_id, tool_id, wall_bucket"
                );
                Ok(p95_of_buckets(&self.fetch_bound(&sql, binds).await?))
            }
            Source::Raw => {
                let sql = format!(
                    "SELECT tenant_id, tool_id AS key, quantileExact(0.95)(wall_time_us) AS p95, \
                     count() AS count FROM usage_events WHERE {clause} AND policy_id != '' \
                     GROUP BY tenant_id, tool_id ORDER BY tenant_id, tool_id"
                );
                let rows: Vec<GroupP95> = self.fetch_bound(&sql, binds).await?;
                Ok(truncated(rows))
            }
        }
    }

    /// Attempts by day, tenant, tool and outcome, from the rollup: the runbook's failing
    /// routes, timeout clusters and policy-block spikes.
    pub async fn attempt_days(&self, filter: &Filter) -> Result<Vec<AttemptDay>, StoreError> {
        let (clause, binds) = filter.clause("event_date");
        let sql = format!(
            "SELECT toUInt16(event_date) AS day, tenant_id, tool_id, outcome, \
             countMerge(attempts) AS attempts FROM attempt_kpis_daily WHERE {clause} \
             GROUP BY event_date, tenant_id, tool_id, outcome \
             ORDER BY event_date, tenant_id, tool_id, outcome"
        );
        let rows: Vec<AttemptDayRow> = self.fetch_bound(&sql, binds).await?;
        Ok(rows
            .into_iter()
            .map(|r| AttemptDay {
                day: day_from_u16(r.day),
                tenant_id: r.tenant_id,
                tool_id: r.tool_id,
                outcome: r.outcome,
                attempts: r.attempts,
            })
            .collect())
    }

    /// The runs whose tasks were capped in the period, most spend avoided first, at most
    /// `limit` of them.
    pub async fn capped_runs(
        &self,
        filter: &Filter,
        limit: u64,
    ) -> Result<Vec<CappedRun>, StoreError> {
        let (clause, binds) = filter.clause("submitted_date");
        // FINAL: a task recorded twice (a retried insert) must count once here too.
        let sql = format!(
            "SELECT tenant_id, run_id, cap, count() AS tasks, sum(avoided_cost) AS avoided_cost, \
             min(submitted_ms) AS first_ms, max(submitted_ms) AS last_ms \
             FROM tasks FINAL WHERE {clause} AND outcome = 'capped' \
             GROUP BY tenant_id, run_id, cap \
             ORDER BY avoided_cost DESC, tasks DESC, tenant_id, run_id, cap \
             LIMIT {limit}"
        );
        let rows: Vec<CappedRunRow> = self.fetch_bound(&sql, binds).await?;
        rows.into_iter()
            .map(|r| {
                Ok(CappedRun {
                    tenant_id: r.tenant_id,
                    run_id: r.run_id,
                    cap: r.cap,
                    tasks: r.tasks,
                    avoided_cost: money_from_i128(r.avoided_cost)?,
                    first_ms: r.first_ms,
                    last_ms: r.last_ms,
                })
            })
            .collect()
    }

    /// The first days of the months in which `tenant_id` submitted tasks, newest first.
    pub async fn task_months(&self, tenant_id: &str) -> Result<Vec<NaiveDate>, StoreError> {
        let sql = "SELECT DISTINCT toUInt16(toStartOfMonth(submitted_date)) AS month \
                   FROM task_kpis_daily WHERE tenant_id = ? ORDER BY month DESC";
        let rows: Vec<u16> = self.fetch_bound(sql, vec![tenant_id.to_owned()]).await?;
        Ok(rows.into_iter().map(day_from_u16).collect())
    }

    async fn fetch_bound<T>(&self, sql: &str, binds: Vec<String>) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let mut query = self.client.query(sql);
        for b in binds {
            query = query.bind(b);
        }
        Ok(query.fetch_all().await?)
    }
}

fn truncated(mut rows: Vec<GroupP95>) -> Vec<GroupP95> {
    for r in &mut rows {
        r.p95 = two_digits(r.p95);
    }
    rows
}

fn day_from_u16(days: u16) -> NaiveDate {
    NaiveDate::default() + chrono::Days::new(u64::from(days))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_digits_truncates() {
        for (x, want) in [
            (0, 0),
            (7, 7),
            (99, 99),
            (999, 990),
            (1000, 1000),
            (12_345, 12_000),
            (250_202_083, 250_000_000),
            (u64::MAX, 18_000_000_000_000_000_000),
        ] {
            assert_eq!(two_digits(x), want, "{x}");
        }
    }

    #[test]
    fn p95_walks_the_counts_like_quantile_exact() {
        let b = |value, count| Bucket {
            tenant_id: "t".into(),
            key: "k".into(),
            value,
            count,
        };
        // 20 values 1..=20: index floor(0.95 * 20) = 19, the largest.
        let ones: Vec<Bucket> = (1..=20).map(|v| b(v, 1)).collect();
        assert_eq!(p95_of_buckets(&ones)[0].p95, 20);
        // 100 values: 94 of 5, 6 of 9. Index 95 is the second 9.
        assert_eq!(p95_of_buckets(&[b(9, 6), b(5, 94)])[0].p95, 9);
        // 95 of 5 and 5 of 9: index 95 is the first 9.
        assert_eq!(p95_of_buckets(&[b(5, 95), b(9, 5)])[0].p95, 9);
        // 96 of 5: index 95 is still a 5.
        assert_eq!(p95_of_buckets(&[b(5, 96), b(9, 4)])[0].p95, 5);
        assert_eq!(p95_of_buckets(&[b(3, 1)])[0].p95, 3);
    }

    #[test]
    fn picos_round_trip() {
        let m: Money = "0.000250202083".parse().expect("decimal");
        assert_eq!(picos(m), 250_202_083);
        assert_eq!(from_picos(250_202_083), m);
        assert_eq!(picos(Money::from(2)), 2_000_000_000_000);
    }
}
