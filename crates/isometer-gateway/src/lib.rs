//! The task path: resolve the tenant's policy for the tool, run the attempt in the
//! runtime, rate it, write its evidence and record its usage.
//!
//! `POST /v1/tasks`, the CLI and the demo workload all go through [`Gateway::submit`], so
//! there is one code path from request to recorded usage.

mod egress;
mod error;
mod gateway;
mod task;
pub mod workload;

pub use egress::{AllowlistEgress, Resolve, SystemResolver, non_public};
pub use error::GatewayError;
pub use gateway::{AttemptPlan, Gateway, SealedAttempt, egress_evidence};
pub use task::{AttemptSummary, TaskRequest, TaskResponse};
