//! Errors of the gateway: requests it cannot accept, and failures of its own parts.
//! What a tool does is never an error here: it is the task's outcome.

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("tool `{tool}` declared at {declared_at}: {message}")]
    Artifact {
        tool: String,
        declared_at: String,
        message: String,
    },
    #[error("secret profile `{profile}`: {message}")]
    Secret { profile: String, message: String },
    #[error(transparent)]
    Approval(#[from] crate::approvals::ApprovalError),
    #[error("no rate card prices tier `{0}` on the day of the attempt (see rate_cards.toml)")]
    NoRateCard(String),
    #[error(transparent)]
    Runtime(#[from] isometer_runtime::RuntimeError),
    #[error("cannot record usage: {0}")]
    Store(#[from] isometer_store::StoreError),
    #[error(transparent)]
    Evidence(#[from] isometer_evidence::EncodeError),
}
