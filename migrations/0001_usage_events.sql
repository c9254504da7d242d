-- One row per attempt of a task: what ran, what it consumed, what it cost.
-- ReplacingMergeTree on a key that ends in the deterministic event_id, so a re-sent
-- attempt collapses into the original row.
CREATE TABLE IF NOT EXISTS usage_events
(
    event_id String,
    event_date Date,
    event_time DateTime,
    ts_ms UInt64,
    tenant_id String,
    tier String,
    use_case String,
    tool_id String,
    task_id String,
    run_id String,
    run_class String,
    attempt UInt16,
    outcome String,
    exit_code Nullable(Int32),
    fuel UInt64,
    peak_memory_bytes UInt64,
    wall_time_us UInt64,
    egress_bytes UInt64,
    output_bytes UInt64,
    policy_id String,
    artifact_hash String,
    rate_card_version String,
    cost Decimal128(12)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, event_date, tool_id, event_id);
