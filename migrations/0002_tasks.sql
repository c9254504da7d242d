-- One row per business task: its final outcome, how many attempts it took, their total cost.
-- Per-task quantiles read this table directly, never a GROUP BY over attempts.
CREATE TABLE IF NOT EXISTS tasks
(
    task_id String,
    submitted_date Date,
    submitted_ms UInt64,
    finished_ms UInt64,
    tenant_id String,
    tier String,
    use_case String,
    tool_id String,
    run_id String,
    run_class String,
    outcome String,
    attempts UInt16,
    total_cost Decimal128(12)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(submitted_date)
ORDER BY (tenant_id, submitted_date, task_id);
