//! HTTP egress as the runtime sees it: the guest asks, an [`EgressGateway`] decides and
//! performs, and every call is recorded with its verdict.

use crate::env::TaskContext;
use serde::Serialize;
use std::fmt::Debug;
use std::time::Duration;

/// One HTTP request a guest asked for, already parsed from the ABI's wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRequest {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// Absolute URL as the guest wrote it.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl EgressRequest {
    /// Bytes this request puts on the wire, as metered: request line, headers and body.
    pub fn wire_bytes(&self) -> u64 {
        let line = self.method.len() + self.url.len() + " HTTP/1.1\r\n".len() + 1;
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        (line + headers + 2 + self.body.len()) as u64
    }
}

/// What the gateway may spend on one request, from what the attempt has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressBudget {
    /// Response bytes (headers and body) the gateway may read; more is refused.
    pub max_response_bytes: u64,
    /// Time left before the attempt's deadline.
    pub timeout: Duration,
}

/// An upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The rule that allowed the request, in words (e.g. `allow-host api.example.test`).
    pub rule: String,
    /// Instruction-poisoning rules the body matched, when the policy lets it through
    /// and only records them.
    pub poisoning: Vec<String>,
}

impl EgressResponse {
    /// Bytes received, as metered: status line, headers and body.
    pub fn wire_bytes(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        ("HTTP/1.1 200 OK\r\n".len() + headers + 2 + self.body.len()) as u64
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The gateway refused the request: the attempt ends as `egress_denied`.
    #[error("egress denied: {reason}")]
    Denied {
        reason: String,
        /// The rule that decided, when one did (deny by default has none).
        rule: Option<String>,
    },
    /// The answer was larger than the budget allowed: the attempt ends as `egress_denied`.
    #[error("the response exceeds the attempt's egress budget of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The answer matched instruction-poisoning rules and the policy denies on them: the
    /// guest never sees it and the attempt ends as `egress_denied`.
    #[error("egress denied: the response matches instruction-poisoning rules {}", rules.join(", "))]
    Poisoned {
        rules: Vec<String>,
        /// Bytes of the answer that was withheld, as metered.
        bytes_in: u64,
    },
    /// The request itself is malformed (bad URL, unsupported scheme or method): the guest
    /// is told and may carry on.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request was allowed but the upstream failed: cannot connect, reset, timed out,
    /// malformed answer. The guest is told and may carry on.
    #[error("upstream failed: {0}")]
    Upstream(String),
}

/// Decides on and performs a guest's HTTP requests. The runtime calls it for every request
/// a guest makes through the `isometer` ABI, with the attempt's remaining budget.
///
/// An implementation must resolve and check the destination itself and connect only to
/// the address it checked, so that a name cannot be re-pointed between the check and the
/// connection.
#[async_trait::async_trait]
pub trait EgressGateway: Send + Sync + Debug {
    async fn request(
        &self,
        context: &TaskContext,
        request: EgressRequest,
        budget: EgressBudget,
    ) -> Result<EgressResponse, EgressError>;
}

/// The gateway of an attempt that may reach nothing: every request is denied.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEgress;

#[async_trait::async_trait]
impl EgressGateway for NoEgress {
    async fn request(
        &self,
        _context: &TaskContext,
        _request: EgressRequest,
        _budget: EgressBudget,
    ) -> Result<EgressResponse, EgressError> {
        Err(EgressError::Denied {
            reason: "this attempt has no network access".into(),
            rule: None,
        })
    }
}

/// How the gateway (or the attempt's own limits) decided on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
}

/// One egress call of an attempt, whatever became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRecord {
    pub method: String,
    pub url: String,
    pub verdict: Verdict,
    /// The rule that decided, when one did.
    pub rule: Option<String>,
    /// Why the request was denied or failed, in words.
    pub reason: Option<String>,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_us: u64,
    /// Instruction-poisoning rules the answer matched.
    pub poisoning: Vec<String>,
}
