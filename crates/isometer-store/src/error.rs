//! Errors of the store: the server, migrations and queries.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "clickhouse-server was not found on PATH (nor in /usr/sbin, /usr/bin); install it with \
         `apt-get install clickhouse-server` or set ISOMETER_CLICKHOUSE_URL"
    )]
    ServerNotFound,
    #[error("cannot prepare the ClickHouse directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is in use by another isometer process (it holds isometer.lock there); stop it or choose another --data-dir"
    )]
    DirInUse(PathBuf),
    #[error("cannot start clickhouse-server: {0}")]
    Spawn(std::io::Error),
    #[error(
        "clickhouse-server did not become ready: {reason}\n--- last lines of {log} ---\n{tail}"
    )]
    NotReady {
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("migration file name `{0}` is not NNNN_name.sql")]
    MigrationName(String),
    #[error(
        "migration {name} was applied with checksum {applied} but the file now has {now}; applied migrations must not change: add a new migration instead"
    )]
    MigrationChanged {
        name: String,
        applied: String,
        now: String,
    },
    #[error("migration {name} failed: {source}")]
    MigrationFailed {
        name: String,
        source: clickhouse::error::Error,
    },
    #[error("stored data is not understood: {0}")]
    Corrupt(String),
    #[error(
        "ClickHouse refused a batch of {rows} rows for `{table}`: {reason}; its records are kept in {kept}"
    )]
    BatchRefused {
        table: String,
        rows: usize,
        reason: String,
        kept: PathBuf,
    },
    #[error("{0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("the usage spool is full: new tasks are throttled until ClickHouse catches up")]
    SpoolFull,
    #[error("{0} is beyond what a Decimal128(12) column holds")]
    MoneyOutOfRange(isometer_core::Money),
    #[error("the usage writer has stopped")]
    WriterClosed,
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}
