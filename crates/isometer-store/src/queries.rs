//! Read queries for the dashboard, the API and tests.

use crate::error::StoreError;
use crate::rows::{EventRow, ManifestRecord, ManifestRow, Shipped, TaskRow, money_from_i128};
use isometer_core::{Money, TaskRecord, UsageEvent};
use serde::Deserialize;

/// Task counts and cost of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    pub tenant_id: String,
    pub tasks: u64,
    pub successful: u64,
    pub attempts: u64,
    pub cost: Money,
}

impl TenantSummary {
    /// Cost of all tasks over the successful ones; `None` when none succeeded.
    pub fn cost_per_successful_task(&self) -> Option<Money> {
        (self.successful > 0).then(|| self.cost / Money::from(self.successful))
    }
}

/// How often each outcome occurred among attempts.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct OutcomeCount {
    pub outcome: String,
    pub attempts: u64,
}

/// Counts and cost sums of the raw tables beside the rollups fed from them: in a healthy
/// database each pair is equal, and every key is counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub events: u64,
    pub distinct_events: u64,
    pub event_cost: Money,
    pub rollup_events: u64,
    pub rollup_event_cost: Money,
    pub tasks: u64,
    pub distinct_tasks: u64,
    pub task_cost: Money,
    pub rollup_tasks: u64,
    pub rollup_task_cost: Money,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CountSum {
    count: u64,
    distinct: u64,
    sum: i128,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TenantRow {
    tenant_id: String,
    tasks: u64,
    successful: u64,
    attempts: u64,
    cost: i128,
}

impl crate::Store {
    /// Per-tenant task counts and cost, from the daily task rollup.
    pub async fn tenant_summaries(&self) -> Result<Vec<TenantSummary>, StoreError> {
        let rows: Vec<TenantRow> = self
            .client
            .query(
                "SELECT tenant_id, sum(n) AS tasks, sumIf(n, outcome = 'success') AS successful, \
                 sum(a) AS attempts, sum(c) AS cost \
                 FROM (SELECT tenant_id, outcome, countMerge(tasks) AS n, \
                       sumMerge(attempts) AS a, sumMerge(total_cost) AS c \
                       FROM task_kpis_daily GROUP BY tenant_id, outcome) \
                 GROUP BY tenant_id ORDER BY tenant_id",
            )
            .fetch_all()
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(TenantSummary {
                    cost: money_from_i128(r.cost)?,
                    tenant_id: r.tenant_id,
                    tasks: r.tasks,
                    successful: r.successful,
                    attempts: r.attempts,
                })
            })
            .collect()
    }

    /// Raw counts and sums beside the rollups' (see [`Reconciliation`]). One query per
    /// table: 18.16 cannot carry Decimal results out of scalar subqueries.
    pub async fn reconcile(&self) -> Result<Reconciliation, StoreError> {
        let events: CountSum = self
            .client
            .query("SELECT count(), uniqExact(event_id), sum(cost) FROM usage_events")
            .fetch_one()
            .await?;
        let event_rollup: CountSum = self
            .client
            .query(
                "SELECT countMerge(attempts), toUInt64(0), sumMerge(cost) FROM attempt_kpis_daily",
            )
            .fetch_one()
            .await?;
        let tasks: CountSum = self
            .client
            .query("SELECT count(), uniqExact(task_id), sum(total_cost) FROM tasks")
            .fetch_one()
            .await?;
        let task_rollup: CountSum = self
            .client
            .query(
                "SELECT countMerge(tasks), toUInt64(0), sumMerge(total_cost) FROM task_kpis_daily",
            )
            .fetch_one()
            .await?;
        Ok(Reconciliation {
            events: events.count,
            distinct_events: events.distinct,
            event_cost: money_from_i128(events.sum)?,
            rollup_events: event_rollup.count,
            rollup_event_cost: money_from_i128(event_rollup.sum)?,
            tasks: tasks.count,
            distinct_tasks: tasks.distinct,
            task_cost: money_from_i128(tasks.sum)?,
            rollup_tasks: task_rollup.count,
            rollup_task_cost: money_from_i128(task_rollup.sum)?,
        })
    }

    /// Which of `task_ids` the tasks table holds (freshness probes).
    pub async fn tasks_present(
        &self,
        task_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if task_ids.is_empty() {
            return Ok(Default::default());
        }
        let found: Vec<String> = self
            .client
            .query("SELECT task_id FROM tasks WHERE has(?, task_id)")
            .bind(task_ids)
            .fetch_all()
            .await?;
        Ok(found.into_iter().collect())
    }

    /// Inserts events straight into `usage_events` in batches of `batch` rows: no spool,
    /// no batch ids, no exactly-once. For benchmarks and one-off loads only.
    pub async fn bulk_insert_events(
        &self,
        events: &[UsageEvent],
        batch: usize,
    ) -> Result<(), StoreError> {
        let rows = events
            .iter()
            .map(EventRow::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in rows.chunks(batch.max(1)) {
            let mut insert = self.client.insert::<EventRow>("usage_events").await?;
            for row in chunk {
                insert.write(row).await?;
            }
            insert.end().await?;
        }
        Ok(())
    }

    /// Every attempt's manifest recorded under `trace_id`, by task and attempt.
    pub async fn manifests_by_trace(
        &self,
        trace_id: &str,
    ) -> Result<Vec<ManifestRecord>, StoreError> {
        let rows: Vec<ManifestRow> = self
            .client
            .query(
                "SELECT manifest_id, manifest_date, started_ms, trace_id, task_id, attempt, \
                 tenant_id, tool_id, policy_id, policy_version, outcome, verdict, key_id, digest, \
                 signed, input, output, logs, batch_id \
                 FROM manifests WHERE trace_id = ? ORDER BY started_ms, task_id, attempt",
            )
            .bind(trace_id)
            .fetch_all()
            .await?;
        let mut seen = std::collections::HashSet::new();
        rows.into_iter()
            // A replacing table may hold a row twice until it merges.
            .filter(|r| seen.insert(r.key().to_owned()))
            .map(ManifestRecord::try_from)
            .collect()
    }

    /// Attempts per outcome, most frequent first.
    pub async fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        Ok(self
            .client
            .query("SELECT outcome, count() AS attempts FROM usage_events GROUP BY outcome ORDER BY attempts DESC, outcome")
            .fetch_all()
            .await?)
    }

    /// A tenant's task as recorded, with every attempt's manifest in attempt order; `None`
    /// when ClickHouse has no such task.
    pub async fn recorded_task(
        &self,
        tenant_id: &str,
        task_id: &str,
    ) -> Result<Option<(TaskRecord, Vec<ManifestRecord>)>, StoreError> {
        let task: Option<TaskRow> = self
            .client
            .query("SELECT ?fields FROM tasks WHERE tenant_id = ? AND task_id = ? LIMIT 1")
            .bind(tenant_id)
            .bind(task_id)
            .fetch_optional()
            .await?;
        let Some(task) = task else {
            return Ok(None);
        };
        let rows: Vec<ManifestRow> = self
            .client
            .query(
                "SELECT manifest_id, manifest_date, started_ms, trace_id, task_id, attempt, \
                 tenant_id, tool_id, policy_id, policy_version, outcome, verdict, key_id, digest, \
                 signed, input, output, logs, batch_id \
                 FROM manifests WHERE tenant_id = ? AND task_id = ? ORDER BY attempt",
            )
            .bind(tenant_id)
            .bind(task_id)
            .fetch_all()
            .await?;
        let mut seen = std::collections::HashSet::new();
        let manifests = rows
            .into_iter()
            .filter(|r| seen.insert(r.key().to_owned()))
            .map(ManifestRecord::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Some((task.into_record()?, manifests)))
    }

    /// The (tenant, task id) of every task submitted since `since`, at most `limit` of
    /// them, newest first.
    pub async fn task_keys_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let since_ms = u64::try_from(since.timestamp_millis()).unwrap_or(0);
        Ok(self
            .client
            .query(
                "SELECT tenant_id, task_id FROM tasks \
                 WHERE submitted_date >= toDate(toDateTime(intDiv(?, 1000))) AND submitted_ms >= ? \
                 ORDER BY submitted_ms DESC LIMIT ?",
            )
            .bind(since_ms)
            .bind(since_ms)
            .bind(limit)
            .fetch_all::<(String, String)>()
            .await?)
    }

    /// Every attempt of one task, in attempt order.
    pub async fn task_events(&self, task_id: &str) -> Result<Vec<UsageEvent>, StoreError> {
        let rows: Vec<EventRow> = self
            .client
            .query("SELECT ?fields FROM usage_events WHERE task_id = ? ORDER BY attempt")
            .bind(task_id)
            .fetch_all()
            .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// Rows in `usage_events` and in `tasks`, and the distinct tenants and tools seen.
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT (SELECT count() FROM usage_events) AS events, \
                 (SELECT count() FROM tasks) AS tasks, \
                 (SELECT uniqExact(tenant_id) FROM usage_events) AS tenants, \
                 (SELECT uniqExact(tool_id) FROM usage_events) AS tools",
            )
            .fetch_one()
            .await?)
    }
}

/// Table sizes, for status lines and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct Totals {
    pub events: u64,
    pub tasks: u64,
    pub tenants: u64,
    pub tools: u64,
}
