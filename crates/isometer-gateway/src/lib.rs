//! The task path: resolve the tenant's policy for the tool, run the attempt in the
//! runtime, rate it, write its evidence and record its usage.
//!
//! `POST /v1/tasks`, the CLI and the demo workload all go through [`Gateway::submit`], so
//! there is one code path from request to recorded usage.

mod approvals;
mod credentials;
mod egress;
mod error;
mod gateway;
mod task;
pub mod workload;

pub use approvals::{Approval, ApprovalError, ApprovalState, ApprovalTicket, DEFAULT_APPROVAL_TTL};
pub use credentials::{Credential, Credentials, Introspection};
pub use egress::{AllowlistEgress, BoundSecret, Resolve, SecretValue, SystemResolver, non_public};
pub use error::GatewayError;
pub use gateway::{
    AttemptPlan, ChangeKind, ConfigChange, Gateway, SealedAttempt, egress_evidence, policy_limits,
};
/// The task a credential is minted for (the runtime's view of an attempt).
pub use isometer_runtime::TaskContext;
pub use task::{AttemptSummary, TaskRequest, TaskResponse};
