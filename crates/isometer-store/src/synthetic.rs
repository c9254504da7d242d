//! Synthetic usage made inside ClickHouse, for benchmarks at a scale no workload run here
//! could reach: tasks and their attempts written by `INSERT ... SELECT` from `numbers`,
//! through the same materialized views as real usage.
//!
//! Task `n` is a pure function of `n` (`intHash64`): tenant `tenant-NN`, one of six use
//! cases (each with its tool), one task in ten exploratory, outcomes about 90% `success`,
//! 5% `failed`, 1% `timed_out`, 2% `policy_denied`, 1% `capped`, 1% `throttled`. A task
//! that ran takes 1 attempt, 2 for one in ten, 3 for one in fifty; every attempt of a task
//! costs the same (0.00000015 to 0.00000315), so the task's total is attempts x cost, and
//! attempts before the last are `failed`. Tasks spread evenly over `days` days.

use crate::error::StoreError;
use chrono::NaiveDate;

/// What a synthetic fill wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticCounts {
    pub tasks: u64,
    pub events: u64,
}

/// The use cases and tools of synthetic tasks, by index.
pub const SYNTHETIC_USE_CASES: [(&str, &str); 6] = [
    ("support-summary", "summarize"),
    ("report-rollup", "json-transform"),
    ("crm-sync", "flaky"),
    ("risk-score", "busy"),
    ("document-export", "slow"),
    ("research", "fetch"),
];

const TASK: &str = "
    SELECT
        n,
        intHash64(n) AS h,
        concat('synthetic-', toString(n)) AS task_id,
        toDate(?) + (n % ?) AS day,
        toUInt64(toUnixTimestamp(toDateTime(day))) * 1000 + (h % 86400000) AS ms,
        concat('tenant-', if(h % ? < 10, '0', ''), toString(h % ?)) AS tenant_id,
        intHash32(n) % 6 AS uc,
        arrayElement(['support-summary', 'report-rollup', 'crm-sync', 'risk-score', 'document-export', 'research'], uc + 1) AS use_case,
        arrayElement(['summarize', 'json-transform', 'flaky', 'busy', 'slow', 'fetch'], uc + 1) AS tool_id,
        concat('run-', toString(intDiv(n, 25))) AS run_id,
        if(intDiv(h, 7) % 10 = 0, 'exploratory', 'customer') AS run_class,
        intDiv(h, 256) % 100 AS r,
        multiIf(r < 90, 'success', r < 95, 'failed', r < 96, 'timed_out', r < 98, 'policy_denied', r < 99, 'capped', 'throttled') AS outcome,
        outcome IN ('success', 'failed', 'timed_out') AS ran,
        if(ran, 1 + (intDiv(h, 65536) % 10 = 0) + (intDiv(h, 65536) % 50 = 0), 1) AS attempts,
        if(ran, 150000 + intDiv(h, 16777216) % 3000000, 0) AS picos,
        if(ran, 800 + intDiv(h, 4294967296) % 20000, 0) AS wall_us
    FROM (SELECT number + ? AS n FROM numbers(?))";

impl crate::Store {
    /// Writes `count` synthetic tasks numbered from `first`, and their attempts, dated
    /// `days` days from `from` over `tenants` tenants (see the module).
    pub async fn fill_synthetic(
        &self,
        first: u64,
        count: u64,
        from: NaiveDate,
        days: u32,
        tenants: u32,
    ) -> Result<SyntheticCounts, StoreError> {
        let bind = |sql: &str| {
            self.client
                .query(sql)
                .bind(from.to_string())
                .bind(days.max(1))
                .bind(tenants.max(1))
                .bind(tenants.max(1))
                .bind(first)
                .bind(count)
        };
        let events_before: u64 = self.table_rows("usage_events").await?;
        bind(&format!(
            "INSERT INTO tasks (task_id, submitted_date, submitted_ms, finished_ms, tenant_id, \
             tier, use_case, tool_id, run_id, run_class, outcome, attempts, total_cost, \
             batch_id, retry_stop, fallback, cap, avoided_cost, compliant) \
             SELECT task_id, day, ms, ms + attempts * intDiv(wall_us, 1000), tenant_id, \
             'standard', use_case, tool_id, run_id, run_class, outcome, attempts, \
             toDecimal128(picos * attempts, 12) / 1000000000000, 0, '', 0, \
             if(outcome = 'capped', 'repeated_call', ''), \
             if(outcome = 'capped', toDecimal128(300000, 12) / 1000000000000, \
                toDecimal128(0, 12)), \
             toUInt8(ran) FROM ({TASK})"
        ))
        .execute()
        .await?;
        bind(&format!(
            "INSERT INTO usage_events (event_id, event_date, event_time, ts_ms, tenant_id, \
             tier, use_case, tool_id, task_id, run_id, run_class, attempt, outcome, \
             fuel, peak_memory_bytes, wall_time_us, policy_id, policy_version, verdict, \
             evidence_complete, artifact_hash, rate_card_version, cost) \
             SELECT concat(task_id, '/', toString(attempt)), day, \
             toDateTime(intDiv(ms, 1000)), ms, tenant_id, 'standard', use_case, tool_id, \
             task_id, run_id, run_class, attempt, \
             if(attempt < attempts, 'failed', outcome), \
             if(ran, picos * 20, 0), if(ran, 16777216, 0), wall_us, \
             if(ran, concat(tool_id, '/standard'), ''), 'synthetic', \
             if(ran, 'allow', 'deny'), toUInt8(ran), '', 'standard-2026-01', \
             toDecimal128(picos, 12) / 1000000000000 \
             FROM (SELECT *, toUInt16(a + 1) AS attempt FROM ({TASK}) ARRAY JOIN range(attempts) AS a)"
        ))
        .execute()
        .await?;
        let events_after: u64 = self.table_rows("usage_events").await?;
        Ok(SyntheticCounts {
            tasks: count,
            events: events_after - events_before,
        })
    }

    /// Merges every part of the billing rollups into one per partition: the steady state
    /// that background merges reach some time after a bulk load.
    pub async fn merge_rollups(&self) -> Result<(), StoreError> {
        for table in [
            "task_kpis_daily",
            "attempt_kpis_daily",
            "task_cost_hist_daily",
            "attempt_latency_hist_daily",
        ] {
            self.client
                .query(&format!("OPTIMIZE TABLE {table} FINAL"))
                .execute()
                .await?;
        }
        Ok(())
    }
}
