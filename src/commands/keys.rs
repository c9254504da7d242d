//! `isometer keys`: API keys in the configured database.

use crate::{Cli, KeysCommand};
use isometer_policy::Config;
use isometer_store::Store;
use isometer_web::auth::{self, Role};
use std::process::ExitCode;

pub(crate) async fn keys(
    cli: &Cli,
    command: &KeysCommand,
    store: &Store,
) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create { role, tenant } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            if let Some(tenant) = tenant {
                let config = Config::load(&cli.config)?;
                if config.tenant(tenant).is_none() {
                    anyhow::bail!(
                        "no tenant `{tenant}` in {}",
                        cli.config.join("tenants.toml").display()
                    );
                }
            }
            let new = auth::create_key(store, role, tenant.as_deref()).await?;
            println!(
                "created key {} (role {role}{}); it is shown once:",
                new.row.key_id,
                tenant
                    .as_deref()
                    .map(|t| format!(", tenant {t}"))
                    .unwrap_or_default()
            );
            println!("{}", new.key);
        }
        KeysCommand::List { json } => {
            let keys = store.api_keys().await?;
            if *json {
                for key in &keys {
                    println!(
                        "{}",
                        serde_json::json!({
                            "key_id": key.key_id,
                            "role": key.role,
                            "tenant_id": (!key.tenant_id.is_empty()).then_some(&key.tenant_id),
                            "created_ms": key.created_ms,
                            "revoked_ms": (key.revoked_ms != 0).then_some(key.revoked_ms),
                        })
                    );
                }
            } else {
                println!(
                    "{:<16}  {:<8}  {:<16}  {:<20}  revoked",
                    "key id", "role", "tenant", "created"
                );
                for key in &keys {
                    println!(
                        "{:<16}  {:<8}  {:<16}  {:<20}  {}",
                        key.key_id,
                        key.role,
                        key.tenant_id,
                        time(key.created_ms),
                        if key.revoked_ms == 0 {
                            "-".into()
                        } else {
                            time(key.revoked_ms)
                        }
                    );
                }
            }
        }
        KeysCommand::Revoke { key_id } => {
            if !auth::revoke_key(store, key_id).await? {
                anyhow::bail!("no live key `{key_id}`");
            }
            println!("revoked key {key_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}
