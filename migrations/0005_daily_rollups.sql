-- Pre-aggregated daily rollups for the dashboard's hot queries, fed by materialized views
-- on every insert. Each row reaches the base tables exactly once, so the rollups are exact:
-- read them with countMerge/sumMerge grouped by any of their key columns.
CREATE TABLE IF NOT EXISTS usage_daily
(
    event_date Date,
    tenant_id String,
    tier String,
    use_case String,
    tool_id String,
    run_class String,
    outcome String,
    attempts AggregateFunction(count),
    cost AggregateFunction(sum, Decimal128(12)),
    fuel AggregateFunction(sum, UInt64),
    wall_time_us AggregateFunction(sum, UInt64),
    egress_bytes AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, event_date, use_case, tool_id, run_class, outcome, tier);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    event_date, tenant_id, tier, use_case, tool_id, run_class, outcome,
    countState() AS attempts,
    sumState(cost) AS cost,
    sumState(fuel) AS fuel,
    sumState(wall_time_us) AS wall_time_us,
    sumState(egress_bytes) AS egress_bytes
FROM usage_events
GROUP BY event_date, tenant_id, tier, use_case, tool_id, run_class, outcome;

CREATE TABLE IF NOT EXISTS tasks_daily
(
    submitted_date Date,
    tenant_id String,
    tier String,
    use_case String,
    tool_id String,
    run_class String,
    outcome String,
    tasks AggregateFunction(count),
    attempts AggregateFunction(sum, UInt16),
    total_cost AggregateFunction(sum, Decimal128(12))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(submitted_date)
ORDER BY (tenant_id, submitted_date, use_case, tool_id, run_class, outcome, tier);

CREATE MATERIALIZED VIEW IF NOT EXISTS tasks_daily_mv TO tasks_daily AS
SELECT
    submitted_date, tenant_id, tier, use_case, tool_id, run_class, outcome,
    countState() AS tasks,
    sumState(attempts) AS attempts,
    sumState(total_cost) AS total_cost
FROM tasks
GROUP BY submitted_date, tenant_id, tier, use_case, tool_id, run_class, outcome;
