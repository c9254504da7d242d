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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClickHouse {
    /// HTTP URL of an existing server; when absent, isometer starts and manages its own.
    url: Option<String>,
    /// Database for `serve` and `migrate` (default `isometer`).
    database: Option<String>,
}

/// Validated settings; every field may be overridden on the command line or by environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub clickhouse_url: Option<String>,
    pub database: Option<String>,
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
        Ok(Settings {
            clickhouse_url: raw.clickhouse.url,
            database: raw.clickhouse.database,
        })
    }
}
