-- What a replay needs beyond the manifest: each tool artifact by its sha256, and each
-- configuration version's files by their content hash.
CREATE TABLE IF NOT EXISTS artifacts
(
    sha256 String,
    archived_ms UInt64,
    size UInt64,
    bytes String
)
ENGINE = ReplacingMergeTree
ORDER BY sha256;

CREATE TABLE IF NOT EXISTS config_versions
(
    version String,
    archived_ms UInt64,
    file_name String,
    text String
)
ENGINE = ReplacingMergeTree
ORDER BY (version, file_name);
