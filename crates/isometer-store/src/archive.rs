//! The archive a replay draws on: tool artifacts by sha256 and configuration versions by
//! content hash. Written when a gateway starts; rows are never changed, only added.

use crate::Store;
use crate::error::StoreError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct ArtifactRow {
    sha256: String,
    archived_ms: u64,
    size: u64,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct ConfigFileRow {
    version: String,
    archived_ms: u64,
    file_name: String,
    text: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Store {
    /// Keeps `bytes` under their sha256, unless they are kept already. Refuses bytes that
    /// do not hash to `sha256`.
    pub async fn archive_artifact(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = isometer_core::sha256_hex(bytes);
        if actual != sha256 {
            return Err(StoreError::Corrupt(format!(
                "an artifact said to be {sha256} hashes to {actual}"
            )));
        }
        let kept: u64 = self
            .client
            .query("SELECT count() FROM artifacts WHERE sha256 = ?")
            .bind(sha256)
            .fetch_one()
            .await?;
        if kept > 0 {
            return Ok(());
        }
        let mut insert = self.client.insert::<ArtifactRow>("artifacts").await?;
        insert
            .write(&ArtifactRow {
                sha256: sha256.to_owned(),
                archived_ms: now_ms(),
                size: bytes.len() as u64,
                bytes: bytes.to_vec(),
            })
            .await?;
        Ok(insert.end().await?)
    }

    /// The artifact kept under `sha256`, checked against it.
    pub async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rows: Vec<ArtifactRow> = self
            .client
            .query(
                "SELECT sha256, archived_ms, size, bytes FROM artifacts WHERE sha256 = ? LIMIT 1",
            )
            .bind(sha256)
            .fetch_all()
            .await?;
        match rows.into_iter().next() {
            None => Ok(None),
            Some(row) if isometer_core::sha256_hex(&row.bytes) == sha256 => Ok(Some(row.bytes)),
            Some(_) => Err(StoreError::Corrupt(format!(
                "the archived artifact {sha256} does not hash to its name"
            ))),
        }
    }

    /// Keeps a configuration version's files, unless it is kept already.
    pub async fn archive_config(
        &self,
        version: &str,
        files: &[(String, String)],
    ) -> Result<(), StoreError> {
        let kept: u64 = self
            .client
            .query("SELECT count() FROM config_versions WHERE version = ?")
            .bind(version)
            .fetch_one()
            .await?;
        if kept > 0 {
            return Ok(());
        }
        let archived_ms = now_ms();
        let mut insert = self
            .client
            .insert::<ConfigFileRow>("config_versions")
            .await?;
        for (file_name, text) in files {
            insert
                .write(&ConfigFileRow {
                    version: version.to_owned(),
                    archived_ms,
                    file_name: file_name.clone(),
                    text: text.clone(),
                })
                .await?;
        }
        Ok(insert.end().await?)
    }

    /// The files of configuration version `version`, by name; empty when not kept.
    pub async fn config_files(&self, version: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<ConfigFileRow> = self
            .client
            .query(
                "SELECT version, any(archived_ms), file_name, any(text) FROM config_versions \
                 WHERE version = ? GROUP BY version, file_name ORDER BY file_name",
            )
            .bind(version)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|r| (r.file_name, r.text)).collect())
    }
}
