//! The task path: admit the task (idempotent task ids, loop caps, fair admission), resolve
//! the tenant's policy for the tool, run its attempts in the runtime (retries within the
//! tenant's retry budget, then the policy's fallback), rate them, write their evidence and
//! record their usage.
//!
//! `POST /v1/tasks`, the CLI and the demo workload all go through [`Gateway::submit`], so
//! there is one code path from request to recorded usage.

mod admission;
mod approvals;
mod budget;
mod caps;
mod credentials;
mod egress;
mod error;
mod gateway;
mod idempotency;
mod metrics;
mod task;
pub mod workload;

pub use admission::{AdmissionOptions, AdmissionStatus, Refusal};
pub use approvals::{Approval, ApprovalError, ApprovalState, ApprovalTicket, DEFAULT_APPROVAL_TTL};
pub use budget::BudgetStatus;
pub use caps::{CapInfo, RunCapStatus};
pub use credentials::{Credential, Credentials, Introspection};
pub use egress::{AllowlistEgress, BoundSecret, Resolve, SecretValue, SystemResolver, non_public};
pub use error::GatewayError;
pub use gateway::{
    AttemptPlan, ChangeKind, ConfigChange, Gateway, SealedAttempt, egress_evidence, policy_limits,
};
pub use idempotency::{
    DEFAULT_CAPACITY as IDEMPOTENCY_CAPACITY, MAX_KNOWN as IDEMPOTENCY_MAX_KNOWN,
    WINDOW as IDEMPOTENCY_WINDOW,
};
/// The task a credential is minted for (the runtime's view of an attempt).
pub use isometer_runtime::TaskContext;
pub use metrics::{LATENCY_BUCKETS, Metrics, label as prometheus_label};
pub use task::{AttemptSummary, CapTicket, TaskRequest, TaskResponse, TaskTiming};
