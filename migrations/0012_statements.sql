-- Issued tenant statements. A statement is never changed: a reissue is a new row with the
-- next version, the sha256 of its content and what changed since the version before.
-- Rows are only added; were two issuers to write the same version at once, the earlier
-- row is the statement and the later one is ignored.
CREATE TABLE IF NOT EXISTS statements
(
    tenant_id String,
    period String,
    version UInt32,
    issued_ms UInt64,
    sha256 String,
    changes String,
    body String
)
ENGINE = MergeTree
ORDER BY (tenant_id, period, version);
