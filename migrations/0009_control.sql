-- The control plane's records: configuration changes (reloads and rollbacks, whose
-- activation time is the first task under the new version), API keys (hashed), and
-- approvals of destructive tools. Rows are added, never changed: a key or an approval
-- takes a new row with a higher version for each change of state.
CREATE TABLE IF NOT EXISTS config_changes
(
    requested_ms UInt64,
    kind String,
    version String,
    previous_version String,
    actor String
)
ENGINE = ReplacingMergeTree
ORDER BY (requested_ms, version);

CREATE TABLE IF NOT EXISTS api_keys
(
    key_id String,
    secret_sha256 String,
    role String,
    tenant_id String,
    created_ms UInt64,
    revoked_ms UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;

CREATE TABLE IF NOT EXISTS approvals
(
    approval_id String,
    tenant_id String,
    tool_id String,
    task_id String,
    trace_id String,
    run_id String,
    use_case String,
    run_class String,
    input_sha256 String,
    input String,
    requested_ms UInt64,
    expires_ms UInt64,
    state String,
    decided_by String,
    decided_ms UInt64,
    reason String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY approval_id;
