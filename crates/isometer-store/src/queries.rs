//! Read queries for the dashboard, the API and tests.

use crate::error::StoreError;
use crate::rows::{EventRow, money_from_i128};
use isometer_core::{Money, UsageEvent};
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

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TenantRow {
    tenant_id: String,
    tasks: u64,
    successful: u64,
    attempts: u64,
    cost: i128,
}

impl crate::Store {
    /// Per-tenant task counts and cost, from the task table.
    pub async fn tenant_summaries(&self) -> Result<Vec<TenantSummary>, StoreError> {
        let rows: Vec<TenantRow> = self
            .client
            .query(
                "SELECT tenant_id, count() AS tasks, countIf(outcome = 'success') AS successful, \
                 sum(attempts) AS attempts, sum(total_cost) AS cost \
                 FROM tasks GROUP BY tenant_id ORDER BY tenant_id",
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

    /// Attempts per outcome, most frequent first.
    pub async fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        Ok(self
            .client
            .query("SELECT outcome, count() AS attempts FROM usage_events GROUP BY outcome ORDER BY attempts DESC, outcome")
            .fetch_all()
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
