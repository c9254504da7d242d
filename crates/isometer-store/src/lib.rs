//! Everything isometer keeps in ClickHouse: a managed local server, migrations, the usage
//! writer and the read queries.
//!
//! **Architecture Invariant:** this is the only crate that writes SQL. Other crates ask it
//! questions in Rust types and never see a query string.

mod archive;
mod cluster;
mod control;
mod error;
mod kpi;
mod managed;
mod migrate;
mod queries;
mod rowbinary;
mod rows;
mod spool;
mod synthetic;
mod writer;

pub use control::{ApiKeyRow, ApprovalRow, ConfigChangeRecord, ConfigChangeRow, StatementRow};
pub use error::StoreError;
pub use kpi::{
    AttemptDay, AttemptGroup, Bucket, CappedRun, Filter, GroupP95, Source, TaskGroup, from_picos,
    p95_of_buckets, picos, two_digits,
};
pub use managed::{ManagedClickHouse, ServerOptions};
pub use migrate::{Migration, MigrationReport};
pub use queries::{OutcomeCount, Reconciliation, TenantSummary, Totals};
pub use rows::ManifestRecord;
pub use spool::{
    GroupSealer, Spool, SpoolError, SpoolOptions, SpoolReader, SpoolRecord, SpoolStatus,
    remove_in_steps,
};
pub use synthetic::{SYNTHETIC_USE_CASES, SyntheticCounts};
pub use writer::{UsageWriter, WriterOptions, WriterStatus, spool_status};

use clickhouse::Client;
use std::sync::Arc;

/// A connection to one database of one ClickHouse server. Cheap to clone: every request
/// of the API clones one with its state.
#[derive(Clone)]
pub struct Store {
    client: Arc<Client>,
    url: Arc<str>,
    database: Arc<str>,
    /// The cluster whose shards hold the tables, when not one server.
    cluster: Option<Arc<str>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl Store {
    /// Connects to `database` on the server at `url` (nothing is sent until first use).
    pub fn new(url: &str, database: &str) -> Self {
        Store {
            client: Arc::new(client(url).with_database(database)),
            url: url.into(),
            database: database.into(),
            cluster: None,
        }
    }

    /// Targets a cluster: migrations create local tables on every shard and Distributed
    /// tables over them (`ON CLUSTER`, which needs the cluster's ZooKeeper), and inserts
    /// answer only once every shard has its rows.
    pub fn with_cluster(mut self, cluster: &str) -> Result<Self, StoreError> {
        if !is_identifier(cluster) {
            return Err(StoreError::Corrupt(format!(
                "cluster name `{cluster}` must be letters, digits and underscores"
            )));
        }
        self.client =
            Arc::new(Client::clone(&self.client).with_setting("insert_distributed_sync", "1"));
        self.cluster = Some(cluster.into());
        Ok(self)
    }

    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Creates the database if it does not exist, then connects to it.
    pub async fn open(url: &str, database: &str) -> Result<Self, StoreError> {
        if !is_identifier(database) {
            return Err(StoreError::Corrupt(format!(
                "database name `{database}` must be letters, digits and underscores"
            )));
        }
        client(url)
            .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .execute()
            .await?;
        Ok(Store::new(url, database))
    }

    /// Creates the database on every server of `cluster` if it does not exist, then
    /// connects to it through the server at `url` (see [`Store::with_cluster`]).
    pub async fn open_on_cluster(
        url: &str,
        database: &str,
        cluster: &str,
    ) -> Result<Self, StoreError> {
        if !is_identifier(database) || !is_identifier(cluster) {
            return Err(StoreError::Corrupt(format!(
                "database `{database}` and cluster `{cluster}` must be letters, digits and underscores"
            )));
        }
        client(url)
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}"
            ))
            .execute()
            .await?;
        Store::new(url, database).with_cluster(cluster)
    }

    /// Rows in one table of this database on this server (for a cluster, `NAME_local`
    /// counts this shard's part).
    pub async fn table_rows(&self, table: &str) -> Result<u64, StoreError> {
        if !is_identifier(table) {
            return Err(StoreError::Corrupt(format!(
                "`{table}` is not a table name"
            )));
        }
        Ok(self
            .client
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one()
            .await?)
    }

    /// Drops the database if it exists and creates it empty (the demo starts from nothing).
    pub async fn open_fresh(url: &str, database: &str) -> Result<Self, StoreError> {
        if is_identifier(database) {
            client(url)
                .query(&format!("DROP DATABASE IF EXISTS {database}"))
                .execute()
                .await?;
        }
        Store::open(url, database).await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The server's version string.
    pub async fn server_version(&self) -> Result<String, StoreError> {
        Ok(self
            .client
            .query("SELECT version()")
            .fetch_one::<String>()
            .await?)
    }

    /// Applies the migrations shipped with this build.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        migrate::apply(&self.client, &Migration::shipped()?, self.target()).await
    }

    /// Applies the given migrations (tests use this to show what a changed file does).
    pub async fn migrate_with(
        &self,
        migrations: &[Migration],
    ) -> Result<MigrationReport, StoreError> {
        migrate::apply(&self.client, migrations, self.target()).await
    }

    /// The cluster and database migrations are rewritten for, if any.
    fn target(&self) -> Option<(&str, &str)> {
        self.cluster.as_deref().map(|c| (c, &*self.database))
    }

    /// Opens the usage spool (replaying what an earlier process left in it) and starts
    /// the shipper that moves it into this database.
    pub fn writer(&self, options: WriterOptions) -> Result<UsageWriter, StoreError> {
        UsageWriter::spawn(self.clone(), options)
    }
}

fn client(url: &str) -> Client {
    let client = Client::default().with_url(url).with_validation(false);
    // On loopback, compressing costs CPU the server needs and saves nothing.
    if is_loopback(url) {
        client.with_compression(clickhouse::Compression::None)
    } else {
        client
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
