-- What billing reads. Tasks say whether every attempt was allowed with complete evidence
-- (a task recorded before this column counts as compliant when it succeeded: its final
-- attempt had passed the fail-closed evidence check). Four daily rollups, fed by
-- materialized views, replace the two of 0005: task and attempt counts and sums split
-- the way KPIs and statements split them, and two histograms (task cost in picos and
-- attempt wall time in microseconds, each truncated to two significant digits) for the
-- p95 figures. Each rollup is filled from the rows already recorded when it is created.
ALTER TABLE tasks ADD COLUMN compliant UInt8 DEFAULT toUInt8(outcome = 'success');

CREATE TABLE IF NOT EXISTS task_kpis_daily
(
    submitted_date Date,
    tenant_id String,
    use_case String,
    tool_id String,
    run_class String,
    outcome String,
    compliant UInt8,
    cap String,
    tasks AggregateFunction(count),
    attempts AggregateFunction(sum, UInt16),
    total_cost AggregateFunction(sum, Decimal128(12)),
    avoided_cost AggregateFunction(sum, Decimal128(12))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(submitted_date)
ORDER BY (tenant_id, submitted_date, use_case, tool_id, run_class, outcome, compliant, cap);

CREATE MATERIALIZED VIEW IF NOT EXISTS task_kpis_daily_mv TO task_kpis_daily AS
SELECT
    submitted_date, tenant_id, use_case, tool_id, run_class, outcome, compliant, cap,
    countState() AS tasks,
    sumState(attempts) AS attempts,
    sumState(total_cost) AS total_cost,
    sumState(avoided_cost) AS avoided_cost
FROM tasks
GROUP BY submitted_date, tenant_id, use_case, tool_id, run_class, outcome, compliant, cap;

INSERT INTO task_kpis_daily
SELECT
    submitted_date, tenant_id, use_case, tool_id, run_class, outcome, compliant, cap,
    countState() AS tasks,
    sumState(attempts) AS attempts,
    sumState(total_cost) AS total_cost,
    sumState(avoided_cost) AS avoided_cost
FROM tasks
GROUP BY submitted_date, tenant_id, use_case, tool_id, run_class, outcome, compliant, cap;

CREATE TABLE IF NOT EXISTS attempt_kpis_daily
(
    event_date Date,
    tenant_id String,
    tool_id String,
    use_case String,
    run_class String,
    outcome String,
    retry UInt8,
    verdict String,
    ran UInt8,
    evidence_complete UInt8,
    attempts AggregateFunction(count),
    cost AggregateFunction(sum, Decimal128(12)),
    wall_time_us AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, event_date, tool_id, use_case, run_class, outcome, retry, verdict, ran, evidence_complete);

CREATE MATERIALIZED VIEW IF NOT EXISTS attempt_kpis_daily_mv TO attempt_kpis_daily AS
SELECT
    event_date, tenant_id, tool_id, use_case, run_class, outcome,
    toUInt8(attempt > 1) AS retry, verdict, toUInt8(policy_id != '') AS ran, evidence_complete,
    countState() AS attempts,
    sumState(cost) AS cost,
    sumState(wall_time_us) AS wall_time_us
FROM usage_events
GROUP BY event_date, tenant_id, tool_id, use_case, run_class, outcome, retry, verdict, ran, evidence_complete;

INSERT INTO attempt_kpis_daily
SELECT
    event_date, tenant_id, tool_id, use_case, run_class, outcome,
    toUInt8(attempt > 1) AS retry, verdict, toUInt8(policy_id != '') AS ran, evidence_complete,
    countState() AS attempts,
    sumState(cost) AS cost,
    sumState(wall_time_us) AS wall_time_us
FROM usage_events
GROUP BY event_date, tenant_id, tool_id, use_case, run_class, outcome, retry, verdict, ran, evidence_complete;

CREATE TABLE IF NOT EXISTS task_cost_hist_daily
(
    submitted_date Date,
    tenant_id String,
    use_case String,
    tool_id String,
    run_class String,
    cost_bucket UInt64,
    tasks UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(submitted_date)
ORDER BY (tenant_id, submitted_date, use_case, tool_id, run_class, cost_bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS task_cost_hist_daily_mv TO task_cost_hist_daily AS
SELECT
    submitted_date, tenant_id, use_case, tool_id, run_class,
    intDiv(toUInt64(total_cost * 1000000000000), intExp10(greatest(toInt64(length(toString(toUInt64(total_cost * 1000000000000)))) - 2, 0))) * intExp10(greatest(toInt64(length(toString(toUInt64(total_cost * 1000000000000)))) - 2, 0)) AS cost_bucket,
    count() AS tasks
FROM tasks
GROUP BY submitted_date, tenant_id, use_case, tool_id, run_class, cost_bucket;

INSERT INTO task_cost_hist_daily
SELECT
    submitted_date, tenant_id, use_case, tool_id, run_class,
    intDiv(toUInt64(total_cost * 1000000000000), intExp10(greatest(toInt64(length(toString(toUInt64(total_cost * 1000000000000)))) - 2, 0))) * intExp10(greatest(toInt64(length(toString(toUInt64(total_cost * 1000000000000)))) - 2, 0)) AS cost_bucket,
    count() AS tasks
FROM tasks
GROUP BY submitted_date, tenant_id, use_case, tool_id, run_class, cost_bucket;

CREATE TABLE IF NOT EXISTS attempt_latency_hist_daily
(
    event_date Date,
    tenant_id String,
    tool_id String,
    use_case String,
    run_class String,
    wall_bucket UInt64,
    attempts UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, event_date, tool_id, use_case, run_class, wall_bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS attempt_latency_hist_daily_mv TO attempt_latency_hist_daily AS
SELECT
    event_date, tenant_id, tool_id, use_case, run_class,
    intDiv(wall_time_us, intExp10(greatest(toInt64(length(toString(wall_time_us))) - 2, 0))) * intExp10(greatest(toInt64(length(toString(wall_time_us))) - 2, 0)) AS wall_bucket,
    count() AS attempts
FROM usage_events
WHERE policy_id != ''
GROUP BY event_date, tenant_id, tool_id, use_case, run_class, wall_bucket;

INSERT INTO attempt_latency_hist_daily
SELECT
    event_date, tenant_id, tool_id, use_case, run_class,
    intDiv(wall_time_us, intExp10(greatest(toInt64(length(toString(wall_time_us))) - 2, 0))) * intExp10(greatest(toInt64(length(toString(wall_time_us))) - 2, 0)) AS wall_bucket,
    count() AS attempts
FROM usage_events
WHERE policy_id != ''
GROUP BY event_date, tenant_id, tool_id, use_case, run_class, wall_bucket;

DROP TABLE IF EXISTS usage_daily_mv;
DROP TABLE IF EXISTS tasks_daily_mv;
DROP TABLE IF EXISTS usage_daily;
DROP TABLE IF EXISTS tasks_daily;
