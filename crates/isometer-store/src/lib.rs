//! Everything isometer keeps in ClickHouse: a managed local server, migrations, the usage
//! writer and the read queries.
//!
//! **Architecture Invariant:** this is the only crate that writes SQL. Other crates ask it
//! questions in Rust types and never see a query string.

mod error;
mod managed;
mod migrate;
mod queries;
mod rows;
mod spool;
mod writer;

pub use error::StoreError;
pub use managed::{ManagedClickHouse, ServerOptions};
pub use migrate::{Migration, MigrationReport};
pub use queries::{OutcomeCount, Reconciliation, TenantSummary, Totals};
pub use spool::{Spool, SpoolError, SpoolOptions, SpoolReader, SpoolRecord, SpoolStatus};
pub use writer::{UsageWriter, WriterOptions, WriterStatus, spool_status};

use clickhouse::Client;

/// A connection to one database of one ClickHouse server.
#[derive(Clone)]
pub struct Store {
    client: Client,
    url: String,
    database: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish()
    }
}

impl Store {
    /// Connects to `database` on the server at `url` (nothing is sent until first use).
    pub fn new(url: &str, database: &str) -> Self {
        Store {
            client: client(url).with_database(database),
            url: url.to_owned(),
            database: database.to_owned(),
        }
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
        migrate::apply(&self.client, &Migration::shipped()?).await
    }

    /// Applies the given migrations (tests use this to show what a changed file does).
    pub async fn migrate_with(
        &self,
        migrations: &[Migration],
    ) -> Result<MigrationReport, StoreError> {
        migrate::apply(&self.client, migrations).await
    }

    /// Opens the usage spool (replaying what an earlier process left in it) and starts
    /// the shipper that moves it into this database.
    pub fn writer(&self, options: WriterOptions) -> Result<UsageWriter, StoreError> {
        UsageWriter::spawn(self.client.clone(), options)
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
