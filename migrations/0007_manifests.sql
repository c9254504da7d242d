-- One row per attempt: its signed execution manifest and what replaying it needs (the
-- input, the output and the logs), found by trace id.
CREATE TABLE IF NOT EXISTS manifests
(
    manifest_id String,
    manifest_date Date,
    started_ms UInt64,
    trace_id String,
    task_id String,
    attempt UInt16,
    tenant_id String,
    tool_id String,
    policy_id String,
    policy_version String,
    outcome String,
    verdict String,
    key_id String,
    digest String,
    signed String,
    input String,
    output String,
    logs String,
    batch_id UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(manifest_date)
ORDER BY (trace_id, task_id, attempt);
