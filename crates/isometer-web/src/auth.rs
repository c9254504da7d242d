//! API keys and roles. A key is `ism_<key id>_<secret>`; only the sha256 of the secret is
//! kept (in ClickHouse, so every node and the CLI see the same keys). Requests carry
//! `Authorization: Bearer <key>`.
//!
//! The server keeps the keys in memory and reads them again at most every
//! [`REFRESH`] (a revocation takes effect within it), and at once, at most every
//! [`MISS_REFRESH`], when a request names a key id it does not know (a new key works
//! immediately).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use isometer_core::{sha256_hex, to_hex};
use isometer_store::{ApiKeyRow, Store, StoreError};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How old the key cache may get.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How often an unknown key id may cause a read.
pub const MISS_REFRESH: Duration = Duration::from_millis(250);

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
    cache: std::sync::RwLock<Cache>,
    /// One read of the keys at a time.
    reading: tokio::sync::Mutex<()>,
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
            cache: std::sync::RwLock::default(),
            reading: tokio::sync::Mutex::default(),
        }
    }

    /// The principal `key` stands for; 401 for anything but a live key.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, ApiError> {
        let invalid = || ApiError::Unauthorized("the API key is not valid".into());
        let (key_id, secret) = key
            .strip_prefix(PREFIX)
            .and_then(|k| k.split_once('_'))
            .ok_or_else(invalid)?;
        let row = match self.cached(key_id) {
            Some(answer) => answer,
            None => {
                self.read(key_id).await?;
                self.lookup(key_id)
            }
        }
        .ok_or_else(invalid)?;
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

    /// The cache's answer for `key_id` when it is fresh enough to give one: a known key
    /// for [`REFRESH`], an unknown one for [`MISS_REFRESH`].
    fn cached(&self, key_id: &str) -> Option<Option<ApiKeyRow>> {
        let cache = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let age = cache.read_at?.elapsed();
        match cache.keys.get(key_id) {
            Some(row) if age < REFRESH => Some(Some(row.clone())),
            None if age < MISS_REFRESH => Some(None),
            _ => None,
        }
    }

    fn lookup(&self, key_id: &str) -> Option<ApiKeyRow> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys
            .get(key_id)
            .cloned()
    }

    /// Reads the keys again unless another request just did.
    async fn read(&self, key_id: &str) -> Result<(), ApiError> {
        let _one = self.reading.lock().await;
        if self.cached(key_id).is_some() {
            return Ok(());
        }
        let rows = self.store.api_keys().await?;
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.keys = rows.into_iter().map(|r| (r.key_id.clone(), r)).collect();
        cache.read_at = Some(Instant::now());
        Ok(())
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
