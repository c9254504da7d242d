//! Schema migrations: `migrations/NNNN_name.sql`, applied in order, recorded with a checksum.
//!
//! A re-run applies nothing. A migration whose file changed after it was applied is an
//! error that names it: the schema's history is append-only.

use crate::error::StoreError;
use clickhouse::Client;
use serde::Deserialize;

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    /// The file name, `NNNN_name.sql`.
    pub name: String,
    pub sql: String,
    /// sha256 of the file's contents.
    pub checksum: String,
}

impl Migration {
    /// Parses a file name of the form `NNNN_name.sql` and computes the checksum.
    pub fn new(file_name: &str, sql: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::MigrationName(file_name.to_owned());
        let stem = file_name.strip_suffix(".sql").ok_or_else(bad)?;
        let (number, rest) = stem.split_once('_').ok_or_else(bad)?;
        if number.len() != 4 || rest.is_empty() {
            return Err(bad());
        }
        let version = number.parse().map_err(|_| bad())?;
        Ok(Migration {
            version,
            name: file_name.to_owned(),
            sql: sql.to_owned(),
            checksum: isometer_core::sha256_hex(sql.as_bytes()),
        })
    }

    /// The migrations shipped with this build, in order.
    pub fn shipped() -> Result<Vec<Migration>, StoreError> {
        EMBEDDED
            .iter()
            .map(|(name, sql)| Migration::new(name, sql))
            .collect()
    }

    /// The statements of the file, split on `;` outside quotes and comments.
    pub fn statements(&self) -> Vec<String> {
        split_statements(&self.sql)
    }
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: usize,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
}

const HISTORY_DDL: &str = "CREATE TABLE IF NOT EXISTS isometer_migrations \
    (version UInt32, name String, checksum String, applied_at DateTime) \
    ENGINE = MergeTree ORDER BY version";

/// Applies every migration not yet recorded, in version order, after checking that every
/// recorded one is unchanged.
pub(crate) async fn apply(
    client: &Client,
    migrations: &[Migration],
    cluster: Option<(&str, &str)>,
) -> Result<MigrationReport, StoreError> {
    client.query(HISTORY_DDL).execute().await?;
    let applied: Vec<AppliedRow> = client
        .query("SELECT version, name, checksum FROM isometer_migrations ORDER BY version")
        .fetch_all()
        .await?;
    let mut sorted: Vec<&Migration> = migrations.iter().collect();
    sorted.sort_by_key(|m| m.version);

    let mut report = MigrationReport::default();
    for migration in sorted {
        if let Some(row) = applied.iter().find(|row| row.version == migration.version) {
            if row.checksum != migration.checksum {
                return Err(StoreError::MigrationChanged {
                    name: row.name.clone(),
                    applied: row.checksum.clone(),
                    now: migration.checksum.clone(),
                });
            }
            report.already_applied += 1;
            continue;
        }
        let mut statements = Vec::new();
        for statement in migration.statements() {
            match cluster {
                Some((cluster, database)) => {
                    statements.extend(crate::cluster::for_cluster(&statement, cluster, database)?)
                }
                None => statements.push(statement),
            }
        }
        for statement in statements {
            client.query(&statement).execute().await.map_err(|source| {
                StoreError::MigrationFailed {
                    name: migration.name.clone(),
                    source,
                }
            })?;
        }
        client
            .query("INSERT INTO isometer_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, now())")
            .bind(migration.version)
            .bind(&migration.name)
            .bind(&migration.checksum)
            .execute()
            .await?;
        tracing::info!(migration = %migration.name, "applied");
        report.applied.push(migration.name.clone());
    }
    Ok(report)
}

/// Splits SQL text into statements on `;`, ignoring those inside quotes and comments, and
/// drops statements that are only whitespace and comments.
pub(crate) fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut has_code = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                // Line comment: skip to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                current.push(' ');
            }
            '\'' | '"' | '`' => {
                has_code = true;
                current.push(c);
                let mut escaped = false;
                for q in chars.by_ref() {
                    current.push(q);
                    if escaped {
                        escaped = false;
                    } else if q == '\\' {
                        escaped = true;
                    } else if q == c {
                        break;
                    }
                }
            }
            ';' => {
                if has_code {
                    statements.push(current.trim().to_owned());
                }
                current.clear();
                has_code = false;
            }
            c => {
                has_code |= !c.is_whitespace();
                current.push(c);
            }
        }
    }
    if has_code {
        statements.push(current.trim().to_owned());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x String DEFAULT ';');\n\
                   /* block; */ INSERT INTO a VALUES ('it\\'s; fine');\n  \n-- trailing\n";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE TABLE a (x String DEFAULT ';')".to_owned(),
                "INSERT INTO a VALUES ('it\\'s; fine')".to_owned(),
            ]
        );
        assert!(split_statements("-- nothing\n;;\n").is_empty());
    }

    #[test]
    fn file_names_must_be_numbered() {
        let m = Migration::new("0007_add_things.sql", "SELECT 1").expect("valid");
        assert_eq!((m.version, m.name.as_str()), (7, "0007_add_things.sql"));
        for bad in [
            "7_x.sql",
            "0007.sql",
            "0007_.sql",
            "abcd_x.sql",
            "0007_x.txt",
        ] {
            assert!(Migration::new(bad, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_migrations_are_numbered_in_order_without_gaps() {
        let all = Migration::shipped().expect("valid names");
        assert!(all.len() >= 2);
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }
}
