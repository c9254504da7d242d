//! Process settings from the optional `isometer.toml` in the configuration directory.

use crate::error::{ConfigError, ConfigErrors};
use serde::Deserialize;
use std::path::Path;

/// The settings file's name.
pub const SETTINGS_FILE: &str = "isometer.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    /// Where usage is stored.
    #[serde(default)]
    clickhouse: RawClickHouse,
    /// The wasm runtime's pool.
    #[serde(default)]
    runtime: RawRuntime,
    /// The evidence signing key.
    #[serde(default)]
    evidence: RawEvidence,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvidence {
    /// A directory holding `evidence.key` (a key managed outside isometer); relative to
    /// the configuration directory.
    key_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    /// Attempts instantiated at once (the pool's size); one more is `throttled`.
    max_in_flight: Option<u32>,
    /// Largest linear memory any policy may grant, in MiB.
    max_memory_mb: Option<u64>,
    /// Largest tool module accepted, in MiB.
    max_module_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClickHouse {
    /// HTTP URL of an existing server; when absent, isometer starts and manages its own.
    url: Option<String>,
    /// Database for `serve` and `migrate` (default `isometer`).
    database: Option<String>,
    /// A cluster (from the servers' `remote_servers`) to create the tables on: local
    /// tables on every shard, Distributed tables over them, `ON CLUSTER`.
    cluster: Option<String>,
}

/// Validated settings; every field may be overridden on the command line or by environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub clickhouse_url: Option<String>,
    pub database: Option<String>,
    pub cluster: Option<String>,
    pub runtime: RuntimeSettings,
    /// Where the evidence key is kept when not in the data directory: it must exist
    /// there, isometer never creates one in it. Resolved against the configuration
    /// directory.
    pub evidence_key_dir: Option<std::path::PathBuf>,
}

/// The `[runtime]` table: the pool of instances every attempt draws from. Unset fields
/// keep the runtime's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub max_in_flight: Option<u32>,
    pub max_memory_bytes: Option<u64>,
    pub max_module_bytes: Option<u64>,
}

impl Settings {
    /// Reads `dir/isometer.toml`; a missing file means defaults.
    pub fn load(dir: &Path) -> Result<Settings, ConfigErrors> {
        let path = dir.join(SETTINGS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    file: path,
                    line: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }]));
            }
        };
        let raw: RawSettings = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigErrors(vec![ConfigError {
                file: path.clone(),
                line,
                field: None,
                message: e.message().trim().to_owned(),
            }])
        })?;
        if let Some(url) = &raw.clickhouse.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigErrors(vec![ConfigError {
                file: path,
                line: None,
                field: Some("clickhouse.url".into()),
                message: format!("`{url}` is not an http:// or https:// URL"),
            }]));
        }
        let field_error = |field: &str, message: &str| {
            ConfigErrors(vec![ConfigError {
                file: path.clone(),
                line: None,
                field: Some(field.into()),
                message: message.into(),
            }])
        };
        let runtime = &raw.runtime;
        if runtime.max_in_flight == Some(0) {
            return Err(field_error(
                "runtime.max_in_flight",
                "must be greater than 0",
            ));
        }
        if runtime.max_memory_mb.is_some_and(|mb| mb == 0 || mb > 4096) {
            return Err(field_error(
                "runtime.max_memory_mb",
                "must be between 1 and 4096",
            ));
        }
        if runtime.max_module_mb == Some(0) {
            return Err(field_error(
                "runtime.max_module_mb",
                "must be greater than 0",
            ));
        }
        Ok(Settings {
            clickhouse_url: raw.clickhouse.url,
            database: raw.clickhouse.database,
            cluster: raw.clickhouse.cluster,
            runtime: RuntimeSettings {
                max_in_flight: runtime.max_in_flight,
                max_memory_bytes: runtime.max_memory_mb.map(|mb| mb << 20),
                max_module_bytes: runtime.max_module_mb.map(|mb| mb << 20),
            },
            evidence_key_dir: raw.evidence.key_dir.map(|d| dir.join(d)),
        })
    }
}
