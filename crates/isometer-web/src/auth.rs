//! API keys and roles. A key is `ism_<key id>_<secret>`; only the sha256 of the secret is
//! kept (in ClickHouse, so every node and the CLI see the same keys). Requests carry
//! `Authorization: Bearer <key>`.
//!
//! The server keeps the keys in memory. Once they are [`REFRESH`] old, one request reads
//! them again while the others go on with what is known (a revocation takes effect
//! within [`REFRESH`], and no burst of requests waits on ClickHouse together). A request
//! naming a key id the server does not know reads them at once, at most every
//! [`MISS_REFRESH`], so a new key works immediately. When ClickHouse cannot be read, the
//! keys last read stay in force: the task API keeps working through an outage, as the
//! spool does, and revocations wait for ClickHouse to answer again.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use isometer_core::{sha256_hex, to_hex};
use isometer_store::{ApiKeyRow, Store, StoreError};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How old the key cache may get.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How often an unknown key id may cause a read.
pub const MISS_REFRESH: Duration = Duration::from_millis(250);
/// How long a background read of the keys may take before it is given up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

const PREFIX: &str = "ism_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operates the platform: configuration reloads and rollbacks, everything readable.
    Admin,
    Finance,
    Pm,
    /// Decides on destructive tools' tasks.
    Approver,
    /// One tenant's own data only.
    Tenant,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Finance,
        Role::Pm,
        Role::Approver,
        Role::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::Pm => "pm",
            Role::Approver => "approver",
            Role::Tenant => "tenant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`; one of admin, finance, pm, approver, tenant")
            })
    }
}

/// Who is asking: the key's id, its role and, for a tenant key, its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    pub tenant_id: Option<String>,
}

impl Principal {
    /// Refuses (403) a principal whose role is not one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "this needs the role {}; the key has `{}`",
                allowed.join(" or "),
                self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("an API key is required".into()))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <key>`".into())
            })?;
        state.keys.authenticate(key.trim()).await
    }
}

/// A key just created: the whole key is shown once and never kept.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: String,
    pub row: ApiKeyRow,
}

/// Creates a key. A `tenant` key needs its tenant; other roles take none.
pub async fn create_key(
    store: &Store,
    role: Role,
    tenant_id: Option<&str>,
) -> Result<NewKey, ApiError> {
    match (role, tenant_id) {
        (Role::Tenant, None) => {
            return Err(ApiError::BadRequest("a tenant key needs --tenant".into()));
        }
        (Role::Tenant, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "only tenant keys are bound to a tenant, not {role} keys"
            )));
        }
    }
    let key_id = to_hex(&rand::random::<[u8; 8]>());
    let secret = to_hex(&rand::random::<[u8; 32]>());
    let now = now_ms();
    let row = ApiKeyRow {
        key_id: key_id.clone(),
        secret_sha256: sha256_hex(secret.as_bytes()),
        role: role.as_str().to_owned(),
        tenant_id: tenant_id.unwrap_or_default().to_owned(),
        created_ms: now,
        revoked_ms: 0,
        version: now,
    };
    store.record_api_key(&row).await?;
    Ok(NewKey {
        key: format!("{PREFIX}{key_id}_{secret}"),
        row,
    })
}

/// Revokes a key; `false` when there is no such key or it was revoked already.
pub async fn revoke_key(store: &Store, key_id: &str) -> Result<bool, StoreError> {
    let Some(mut row) = store
        .api_keys()
        .await?
        .into_iter()
        .find(|k| k.key_id == key_id && k.revoked_ms == 0)
    else {
        return Ok(false);
    };
    let now = now_ms();
    row.revoked_ms = now;
    row.version = now.max(row.version + 1);
    store.record_api_key(&row).await?;
    Ok(true)
}

/// The keys a server accepts, cached.
#[derive(Debug)]
pub struct Keys {
    store: Store,
    cache: Arc<std::sync::RwLock<Cache>>,
    /// One read of the keys at a time.
    reading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Cache {
    keys: HashMap<String, ApiKeyRow>,
    read_at: Option<Instant>,
}

impl Keys {
    pub fn new(store: Store) -> Self {
        Keys {
            store,
            cache: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// The principal `key` stands for; 401 for anything but a live key.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, ApiError> {
        let invalid = || ApiError::Unauthorized("the API key is not valid".into());
        let (key_id, secret) = key
            .strip_prefix(PREFIX)
            .and_then(|k| k.split_once('_'))
            .ok_or_else(invalid)?;
        let row = self.row(key_id).await?.ok_or_else(invalid)?;
        let hash = sha256_hex(secret.as_bytes());
        if row.revoked_ms != 0 || !constant_time_eq(hash.as_bytes(), row.secret_sha256.as_bytes()) {
            return Err(invalid());
        }
        let role: Role = row.role.parse().map_err(|_| invalid())?;
        Ok(Principal {
            key_id: row.key_id,
            role,
            tenant_id: (role == Role::Tenant).then_some(row.tenant_id),
        })
    }

    /// The row of `key_id`, read again first when the cache is too old to answer.
    async fn row(&self, key_id: &str) -> Result<Option<ApiKeyRow>, ApiError> {
        let (row, age) = self.lookup(key_id);
        match (row, age) {
            (Some(row), Some(age)) if age < REFRESH => Ok(Some(row)),
            // A known key past its refresh answers from the cache, and the keys are read
            // again in the background: no request waits for ClickHouse, or hangs with it.
            (Some(row), _) => {
                if let Ok(one) = self.reading.clone().try_lock_owned() {
                    let (store, cache) = (self.store.clone(), self.cache.clone());
                    tokio::spawn(async move {
                        let _one = one;
                        let failed =
                            match tokio::time::timeout(READ_TIMEOUT, read(&store, &cache)).await {
                                Ok(Ok(())) => return,
                                Ok(Err(e)) => e.to_string(),
                                Err(_) => format!("no answer in {READ_TIMEOUT:?}"),
                            };
                        tracing::warn!(error = %failed, "cannot read the API keys; the keys last read stay in force");
                    });
                }
                Ok(Some(row))
            }
            (None, Some(age)) if age < MISS_REFRESH => Ok(None),
            // An unknown key, or no keys read yet: wait for a read (one at a time).
            (None, _) => {
                let _one = self.reading.lock().await;
                if self.lookup(key_id).1.is_none_or(|age| age >= MISS_REFRESH) {
                    read(&self.store, &self.cache).await?;
                }
                Ok(self.lookup(key_id).0)
            }
        }
    }

    /// The cached row of `key_id` and the cache's age (`None` before the first read).
    fn lookup(&self, key_id: &str) -> (Option<ApiKeyRow>, Option<Duration>) {
        let cache = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            cache.keys.get(key_id).cloned(),
            cache.read_at.map(|at| at.elapsed()),
        )
    }
}

/// Reads every key from ClickHouse into `cache`.
async fn read(store: &Store, cache: &std::sync::RwLock<Cache>) -> Result<(), StoreError> {
    let rows = store.api_keys().await?;
    let mut cache = cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.keys = rows.into_iter().map(|r| (r.key_id.clone(), r)).collect();
    cache.read_at = Some(Instant::now());
    Ok(())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys whose cache holds one tenant key, read `age` ago, over a store at `url`.
    fn keys_read_ago(url: &str, age: Duration) -> (Keys, String) {
        let row = ApiKeyRow {
            key_id: "00aa".into(),
            secret_sha256: sha256_hex(b"s3cret"),
            role: "tenant".into(),
            tenant_id: "acme".into(),
            created_ms: 1,
            revoked_ms: 0,
            version: 1,
        };
        let keys = Keys::new(Store::new(url, "keys"));
        {
            let mut cache = keys.cache.write().expect("not poisoned");
            cache.keys.insert(row.key_id.clone(), row);
            cache.read_at = Instant::now().checked_sub(age);
        }
        (keys, format!("{PREFIX}00aa_s3cret"))
    }

    #[tokio::test]
    async fn known_keys_stay_in_force_while_clickhouse_cannot_be_read() {
        // Nothing listens on the port: every read fails at once.
        let port = isometer_testkit::free_port().expect("a free port");
        let (keys, key) = keys_read_ago(&format!("http://127.0.0.1:{port}"), REFRESH * 5);
        let principal = keys.authenticate(&key).await.expect("the key last read");
        assert_eq!(principal.tenant_id.as_deref(), Some("acme"));
        // An unknown key cannot be told apart from a new one: not a 401.
        let unknown = keys.authenticate(&format!("{PREFIX}00bb_s3cret")).await;
        assert!(
            matches!(unknown, Err(ref e) if !matches!(e, ApiError::Unauthorized(_))),
            "{unknown:?}"
        );
        // A wrong secret is still refused.
        let wrong = keys.authenticate(&format!("{PREFIX}00aa_other")).await;
        assert!(matches!(wrong, Err(ApiError::Unauthorized(_))), "{wrong:?}");
    }

    #[tokio::test]
    async fn no_request_waits_for_a_slow_read_of_known_keys() {
        // A server that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let (keys, key) = keys_read_ago(&url, REFRESH * 2);
        // The first request past the refresh starts the read, and does not wait for it.
        for _ in 0..100 {
            let answered = tokio::time::timeout(Duration::from_millis(50), keys.authenticate(&key))
                .await
                .expect("answered from the cache while the read hangs");
            answered.expect("the key is known");
        }
        assert!(
            keys.reading.try_lock().is_err(),
            "a read should be under way, hanging"
        );
        held.abort();
    }
}
