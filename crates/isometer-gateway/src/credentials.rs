//! Per-task credentials: minted for one attempt of one task and one scope (the host rule
//! of the secret it stands in for), valid until the attempt's deadline, revoked when the
//! attempt ends. An upstream checks one at `POST /v1/credentials/introspect`.
//!
//! Only the sha256 of a token is kept: the tokens themselves exist in the requests that
//! carry them and nowhere else.

use isometer_runtime::TaskContext;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a live credential stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credential {
    pub tenant_id: String,
    pub task_id: String,
    pub attempt: u32,
    pub tool_id: String,
    /// The host rule the credential may be sent to.
    pub scope: String,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// The answer to an introspection: `active` false says nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
}

/// The live credentials of a gateway.
#[derive(Debug, Default)]
pub struct Credentials {
    /// By the sha256 of the token.
    live: Mutex<HashMap<String, Credential>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Credentials {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Credential>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new credential for this attempt and `scope`, live for `ttl` or until revoked.
    pub fn mint(&self, context: &TaskContext, scope: &str, ttl: Duration) -> String {
        let token = format!("isc_{}", isometer_core::to_hex(&rand::random::<[u8; 32]>()));
        let now = now_ms();
        let credential = Credential {
            tenant_id: context.tenant_id.clone(),
            task_id: context.task_id.clone(),
            attempt: context.attempt,
            tool_id: context.tool_id.clone(),
            scope: scope.to_owned(),
            expires_ms: now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        };
        let mut live = self.lock();
        live.retain(|_, c| c.expires_ms > now);
        live.insert(isometer_core::sha256_hex(token.as_bytes()), credential);
        token
    }

    /// Whether `token` is live, and what for.
    pub fn introspect(&self, token: &str) -> Introspection {
        let key = isometer_core::sha256_hex(token.as_bytes());
        let credential = self
            .lock()
            .get(&key)
            .filter(|c| c.expires_ms > now_ms())
            .cloned();
        Introspection {
            active: credential.is_some(),
            credential,
        }
    }

    /// Revokes every credential of one attempt; called when the attempt ends.
    pub fn revoke_attempt(&self, task_id: &str, attempt: u32) {
        self.lock()
            .retain(|_, c| !(c.task_id == task_id && c.attempt == attempt));
    }

    /// Credentials live now.
    pub fn live(&self) -> usize {
        let now = now_ms();
        self.lock().values().filter(|c| c.expires_ms > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(task: &str) -> TaskContext {
        TaskContext {
            task_id: task.into(),
            attempt: 1,
            tenant_id: "acme".into(),
            tool_id: "fetch".into(),
            ..TaskContext::default()
        }
    }

    #[test]
    fn a_credential_lives_for_its_attempt_only() {
        let credentials = Credentials::default();
        let token = credentials.mint(
            &context("t1"),
            "allow-host crm.test",
            Duration::from_secs(60),
        );
        let other = credentials.mint(
            &context("t2"),
            "allow-host crm.test",
            Duration::from_secs(60),
        );
        let seen = credentials.introspect(&token);
        assert!(seen.active);
        let c = seen.credential.expect("details");
        assert_eq!(
            (c.task_id.as_str(), c.scope.as_str()),
            ("t1", "allow-host crm.test")
        );

        credentials.revoke_attempt("t1", 1);
        assert!(
            !credentials.introspect(&token).active,
            "revoked when the task ended"
        );
        assert!(
            credentials.introspect(&other).active,
            "another task's credential lives on"
        );
        assert!(!credentials.introspect("isc_forged").active);

        let expired = credentials.mint(&context("t3"), "allow-host crm.test", Duration::ZERO);
        assert!(!credentials.introspect(&expired).active, "expired");
        // Inactive answers say nothing more.
        let text = serde_json::to_string(&credentials.introspect(&expired)).expect("json");
        assert_eq!(text, r#"{"active":false}"#);
    }
}
