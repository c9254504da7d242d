//! Row layouts of the tables, in RowBinary order, and their conversion from and to the core
//! types. Money crosses as `Decimal128(12)`: an i128 of millionths of millionths.

use crate::error::StoreError;
use chrono::{DateTime, NaiveDate, Utc};
use isometer_core::{
    Money, Outcome, RunClass, TaskControl, TaskRecord, Usage, UsageEvent, Verdict,
};
use serde::{Deserialize, Serialize};

/// Decimal places of every money column.
pub(crate) const MONEY_SCALE: u32 = 12;

/// `m` in units of 10^-12, rounded half away from zero; refused when the column cannot
/// hold it (Decimal128(12) keeps 38 digits).
pub(crate) fn money_to_i128(m: Money) -> Result<i128, StoreError> {
    let rounded = m.round_dp_with_strategy(
        MONEY_SCALE,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    10_i128
        .checked_pow(MONEY_SCALE - rounded.scale())
        .and_then(|factor| rounded.mantissa().checked_mul(factor))
        .filter(|units| units.unsigned_abs() < 10_u128.pow(38))
        .ok_or(StoreError::MoneyOutOfRange(m))
}

/// A `Decimal128(12)` value read back; one beyond `Decimal`'s 28 digits is an error,
/// never a silently wrong number.
pub(crate) fn money_from_i128(v: i128) -> Result<Money, StoreError> {
    Money::try_from_i128_with_scale(v, MONEY_SCALE).map_err(|_| {
        StoreError::Corrupt(format!(
            "a money value of {v}e-12 exceeds 28 significant digits"
        ))
    })
}

fn days_since_epoch(t: DateTime<Utc>) -> u16 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    u16::try_from((t.date_naive() - epoch).num_days()).unwrap_or(0)
}

fn epoch_seconds(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn from_millis(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct EventRow {
    event_id: String,
    event_date: u16,
    event_time: u32,
    ts_ms: u64,
    tenant_id: String,
    tier: String,
    use_case: String,
    tool_id: String,
    task_id: String,
    run_id: String,
    run_class: String,
    attempt: u16,
    outcome: String,
    exit_code: Option<i32>,
    fuel: u64,
    peak_memory_bytes: u64,
    wall_time_us: u64,
    cpu_time_us: u64,
    instantiate_us: u64,
    egress_bytes: u64,
    egress_requests: u64,
    output_bytes: u64,
    policy_id: String,
    policy_version: String,
    verdict: String,
    evidence_complete: u8,
    confidence: Option<f32>,
    artifact_hash: String,
    rate_card_version: String,
    cost: i128,
    /// Set by the shipper: the spool sequence number of the batch's first record.
    pub(crate) batch_id: u64,
}

impl TryFrom<&UsageEvent> for EventRow {
    type Error = StoreError;

    fn try_from(e: &UsageEvent) -> Result<Self, StoreError> {
        Ok(EventRow {
            event_id: e.event_id.clone(),
            event_date: days_since_epoch(e.time),
            event_time: epoch_seconds(e.time),
            ts_ms: millis(e.time),
            tenant_id: e.tenant_id.clone(),
            tier: e.tier.clone(),
            use_case: e.use_case.clone(),
            tool_id: e.tool_id.clone(),
            task_id: e.task_id.clone(),
            run_id: e.run_id.clone(),
            run_class: e.run_class.as_str().to_owned(),
            attempt: e.attempt,
            outcome: e.outcome.as_str().to_owned(),
            exit_code: e.exit_code,
            fuel: e.usage.fuel,
            peak_memory_bytes: e.usage.peak_memory_bytes,
            wall_time_us: e.usage.wall_time_us,
            cpu_time_us: e.usage.cpu_time_us,
            instantiate_us: e.usage.instantiate_us,
            egress_bytes: e.usage.egress_bytes,
            egress_requests: e.usage.egress_requests,
            output_bytes: e.usage.output_bytes,
            policy_id: e.policy_id.clone(),
            policy_version: e.policy_version.clone(),
            verdict: e.verdict.as_str().to_owned(),
            evidence_complete: u8::from(e.evidence_complete),
            confidence: e.confidence,
            artifact_hash: e.artifact_hash.clone(),
            rate_card_version: e.rate_card_version.clone(),
            cost: money_to_i128(e.cost)?,
            batch_id: 0,
        })
    }
}

impl EventRow {
    /// Back to the core type; a word the core does not know fails with the column named.
    pub(crate) fn into_event(self) -> Result<UsageEvent, StoreError> {
        let corrupt =
            |column: &str, e: String| StoreError::Corrupt(format!("usage_events.{column}: {e}"));
        Ok(UsageEvent {
            outcome: self
                .outcome
                .parse::<Outcome>()
                .map_err(|e| corrupt("outcome", e.to_string()))?,
            run_class: self
                .run_class
                .parse::<RunClass>()
                .map_err(|e| corrupt("run_class", e))?,
            event_id: self.event_id,
            time: from_millis(self.ts_ms),
            tenant_id: self.tenant_id,
            tier: self.tier,
            use_case: self.use_case,
            tool_id: self.tool_id,
            task_id: self.task_id,
            run_id: self.run_id,
            attempt: self.attempt,
            exit_code: self.exit_code,
            usage: Usage {
                fuel: self.fuel,
                peak_memory_bytes: self.peak_memory_bytes,
                wall_time_us: self.wall_time_us,
                cpu_time_us: self.cpu_time_us,
                instantiate_us: self.instantiate_us,
                egress_bytes: self.egress_bytes,
                egress_requests: self.egress_requests,
                output_bytes: self.output_bytes,
            },
            verdict: self
                .verdict
                .parse::<Verdict>()
                .map_err(|e| corrupt("verdict", e))?,
            policy_id: self.policy_id,
            policy_version: self.policy_version,
            evidence_complete: self.evidence_complete != 0,
            confidence: self.confidence,
            artifact_hash: self.artifact_hash,
            rate_card_version: self.rate_card_version,
            cost: money_from_i128(self.cost)?,
        })
    }
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct TaskRow {
    task_id: String,
    submitted_date: u16,
    submitted_ms: u64,
    finished_ms: u64,
    tenant_id: String,
    tier: String,
    use_case: String,
    tool_id: String,
    run_id: String,
    run_class: String,
    outcome: String,
    attempts: u16,
    total_cost: i128,
    /// Set by the shipper, as for events.
    pub(crate) batch_id: u64,
    retry_stop: String,
    fallback: u8,
    cap: String,
    avoided_cost: i128,
    compliant: u8,
}

/// A task row as spool payload format 3 wrote it, before the compliance flag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRowV3 {
    task_id: String,
    submitted_date: u16,
    submitted_ms: u64,
    finished_ms: u64,
    tenant_id: String,
    tier: String,
    use_case: String,
    tool_id: String,
    run_id: String,
    run_class: String,
    outcome: String,
    attempts: u16,
    total_cost: i128,
    batch_id: u64,
    retry_stop: String,
    fallback: u8,
    cap: String,
    avoided_cost: i128,
}

#[cfg(test)]
impl From<&TaskRow> for TaskRowV3 {
    fn from(r: &TaskRow) -> Self {
        TaskRowV3 {
            task_id: r.task_id.clone(),
            submitted_date: r.submitted_date,
            submitted_ms: r.submitted_ms,
            finished_ms: r.finished_ms,
            tenant_id: r.tenant_id.clone(),
            tier: r.tier.clone(),
            use_case: r.use_case.clone(),
            tool_id: r.tool_id.clone(),
            run_id: r.run_id.clone(),
            run_class: r.run_class.clone(),
            outcome: r.outcome.clone(),
            attempts: r.attempts,
            total_cost: r.total_cost,
            batch_id: r.batch_id,
            retry_stop: r.retry_stop.clone(),
            fallback: r.fallback,
            cap: r.cap.clone(),
            avoided_cost: r.avoided_cost,
        }
    }
}

/// A task row as spool payload formats 1 and 2 wrote it, before the gateway's controls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRowV2 {
    task_id: String,
    submitted_date: u16,
    submitted_ms: u64,
    finished_ms: u64,
    tenant_id: String,
    tier: String,
    use_case: String,
    tool_id: String,
    run_id: String,
    run_class: String,
    outcome: String,
    attempts: u16,
    total_cost: i128,
    batch_id: u64,
}

#[cfg(test)]
impl From<&TaskRow> for TaskRowV2 {
    fn from(r: &TaskRow) -> Self {
        TaskRowV2 {
            task_id: r.task_id.clone(),
            submitted_date: r.submitted_date,
            submitted_ms: r.submitted_ms,
            finished_ms: r.finished_ms,
            tenant_id: r.tenant_id.clone(),
            tier: r.tier.clone(),
            use_case: r.use_case.clone(),
            tool_id: r.tool_id.clone(),
            run_id: r.run_id.clone(),
            run_class: r.run_class.clone(),
            outcome: r.outcome.clone(),
            attempts: r.attempts,
            total_cost: r.total_cost,
            batch_id: r.batch_id,
        }
    }
}

impl From<TaskRowV2> for TaskRow {
    fn from(r: TaskRowV2) -> Self {
        TaskRow {
            compliant: compliant_before_format_4(&r.outcome),
            task_id: r.task_id,
            submitted_date: r.submitted_date,
            submitted_ms: r.submitted_ms,
            finished_ms: r.finished_ms,
            tenant_id: r.tenant_id,
            tier: r.tier,
            use_case: r.use_case,
            tool_id: r.tool_id,
            run_id: r.run_id,
            run_class: r.run_class,
            outcome: r.outcome,
            attempts: r.attempts,
            total_cost: r.total_cost,
            batch_id: r.batch_id,
            retry_stop: String::new(),
            fallback: 0,
            cap: String::new(),
            avoided_cost: 0,
        }
    }
}

impl From<TaskRowV3> for TaskRow {
    fn from(r: TaskRowV3) -> Self {
        TaskRow {
            compliant: compliant_before_format_4(&r.outcome),
            task_id: r.task_id,
            submitted_date: r.submitted_date,
            submitted_ms: r.submitted_ms,
            finished_ms: r.finished_ms,
            tenant_id: r.tenant_id,
            tier: r.tier,
            use_case: r.use_case,
            tool_id: r.tool_id,
            run_id: r.run_id,
            run_class: r.run_class,
            outcome: r.outcome,
            attempts: r.attempts,
            total_cost: r.total_cost,
            batch_id: r.batch_id,
            retry_stop: r.retry_stop,
            fallback: r.fallback,
            cap: r.cap,
            avoided_cost: r.avoided_cost,
        }
    }
}

/// Records written before tasks carried a compliance flag count a successful task as
/// compliant, as migration 0011 does for the rows already in ClickHouse: a successful
/// final attempt had passed the fail-closed evidence check.
fn compliant_before_format_4(outcome: &str) -> u8 {
    u8::from(outcome == "success")
}

impl TryFrom<&TaskRecord> for TaskRow {
    type Error = StoreError;

    fn try_from(t: &TaskRecord) -> Result<Self, StoreError> {
        Ok(TaskRow {
            task_id: t.task_id.clone(),
            submitted_date: days_since_epoch(t.submitted),
            submitted_ms: millis(t.submitted),
            finished_ms: millis(t.finished),
            tenant_id: t.tenant_id.clone(),
            tier: t.tier.clone(),
            use_case: t.use_case.clone(),
            tool_id: t.tool_id.clone(),
            run_id: t.run_id.clone(),
            run_class: t.run_class.as_str().to_owned(),
            outcome: t.outcome.as_str().to_owned(),
            attempts: t.attempts,
            total_cost: money_to_i128(t.total_cost)?,
            batch_id: 0,
            retry_stop: t
                .control
                .retry_stop
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            fallback: u8::from(t.control.fallback),
            cap: t
                .control
                .cap
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            avoided_cost: money_to_i128(t.control.avoided_cost)?,
            compliant: u8::from(t.compliant),
        })
    }
}

impl TaskRow {
    pub(crate) fn into_record(self) -> Result<TaskRecord, StoreError> {
        let corrupt = |column: &str, e: String| StoreError::Corrupt(format!("tasks.{column}: {e}"));
        Ok(TaskRecord {
            outcome: self
                .outcome
                .parse::<Outcome>()
                .map_err(|e| corrupt("outcome", e.to_string()))?,
            run_class: self
                .run_class
                .parse::<RunClass>()
                .map_err(|e| corrupt("run_class", e))?,
            task_id: self.task_id,
            submitted: from_millis(self.submitted_ms),
            finished: from_millis(self.finished_ms),
            tenant_id: self.tenant_id,
            tier: self.tier,
            use_case: self.use_case,
            tool_id: self.tool_id,
            run_id: self.run_id,
            attempts: self.attempts,
            total_cost: money_from_i128(self.total_cost)?,
            compliant: self.compliant != 0,
            control: TaskControl {
                retry_stop: match self.retry_stop.as_str() {
                    "" => None,
                    word => Some(word.parse().map_err(|e| corrupt("retry_stop", e))?),
                },
                fallback: self.fallback != 0,
                cap: match self.cap.as_str() {
                    "" => None,
                    word => Some(word.parse().map_err(|e| corrupt("cap", e))?),
                },
                avoided_cost: money_from_i128(self.avoided_cost)?,
            },
        })
    }
}

/// What the shipper needs of a row to settle a batch: its table, its unique key (the
/// first column, see `rowbinary`) and its day. Every such row has a `batch_id` column.
pub(crate) trait Shipped: clickhouse::RowOwned + clickhouse::RowWrite + Clone {
    /// The table, the key column and the day column.
    const TABLE: &'static str;
    const KEY: &'static str;
    const DAY: &'static str;
    fn key(&self) -> &str;
    fn day(&self) -> u16;
}

impl Shipped for EventRow {
    const TABLE: &'static str = "usage_events";
    const KEY: &'static str = "event_id";
    const DAY: &'static str = "event_date";
    fn key(&self) -> &str {
        &self.event_id
    }
    fn day(&self) -> u16 {
        self.event_date
    }
}

impl Shipped for TaskRow {
    const TABLE: &'static str = "tasks";
    const KEY: &'static str = "task_id";
    const DAY: &'static str = "submitted_date";
    fn key(&self) -> &str {
        &self.task_id
    }
    fn day(&self) -> u16 {
        self.submitted_date
    }
}

/// One attempt's signed manifest with what replaying it needs, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    /// The attempt's event id: unique per task and attempt.
    pub manifest_id: String,
    pub started: DateTime<Utc>,
    pub trace_id: String,
    pub task_id: String,
    pub attempt: u16,
    pub tenant_id: String,
    pub tool_id: String,
    pub policy_id: String,
    pub policy_version: String,
    pub outcome: Outcome,
    pub verdict: Verdict,
    pub key_id: String,
    /// sha256 of the manifest's canonical bytes.
    pub digest: String,
    /// The signed manifest, JSON. Recorded through [`crate::UsageWriter::record_sealed`],
    /// the start of it, which the spool's seal completes.
    pub signed: String,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub logs: Vec<u8>,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct ManifestRow {
    manifest_id: String,
    manifest_date: u16,
    started_ms: u64,
    trace_id: String,
    task_id: String,
    attempt: u16,
    tenant_id: String,
    tool_id: String,
    policy_id: String,
    policy_version: String,
    outcome: String,
    verdict: String,
    key_id: String,
    digest: String,
    signed: String,
    #[serde(with = "serde_bytes")]
    input: Vec<u8>,
    #[serde(with = "serde_bytes")]
    output: Vec<u8>,
    #[serde(with = "serde_bytes")]
    logs: Vec<u8>,
    pub(crate) batch_id: u64,
}

impl From<&ManifestRecord> for ManifestRow {
    fn from(m: &ManifestRecord) -> Self {
        ManifestRow {
            manifest_id: m.manifest_id.clone(),
            manifest_date: days_since_epoch(m.started),
            started_ms: millis(m.started),
            trace_id: m.trace_id.clone(),
            task_id: m.task_id.clone(),
            attempt: m.attempt,
            tenant_id: m.tenant_id.clone(),
            tool_id: m.tool_id.clone(),
            policy_id: m.policy_id.clone(),
            policy_version: m.policy_version.clone(),
            outcome: m.outcome.as_str().to_owned(),
            verdict: m.verdict.as_str().to_owned(),
            key_id: m.key_id.clone(),
            digest: m.digest.clone(),
            signed: m.signed.clone(),
            input: m.input.clone(),
            output: m.output.clone(),
            logs: m.logs.clone(),
            batch_id: 0,
        }
    }
}

impl TryFrom<ManifestRow> for ManifestRecord {
    type Error = StoreError;

    fn try_from(r: ManifestRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("manifest {}: {what}: {e}", r.manifest_id))
        };
        Ok(ManifestRecord {
            started: from_millis(r.started_ms),
            outcome: r.outcome.parse().map_err(|e| corrupt("outcome", &e))?,
            verdict: r.verdict.parse().map_err(|e| corrupt("verdict", &e))?,
            manifest_id: r.manifest_id,
            trace_id: r.trace_id,
            task_id: r.task_id,
            attempt: r.attempt,
            tenant_id: r.tenant_id,
            tool_id: r.tool_id,
            policy_id: r.policy_id,
            policy_version: r.policy_version,
            key_id: r.key_id,
            digest: r.digest,
            signed: r.signed,
            input: r.input,
            output: r.output,
            logs: r.logs,
        })
    }
}

impl Shipped for ManifestRow {
    const TABLE: &'static str = "manifests";
    const KEY: &'static str = "manifest_id";
    const DAY: &'static str = "manifest_date";
    fn key(&self) -> &str {
        &self.manifest_id
    }
    fn day(&self) -> u16 {
        self.manifest_date
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn money_crosses_at_twelve_places_rounding_half_away_from_zero() {
        let cases = [
            ("0", 0_i128),
            ("1", 1_000_000_000_000),
            ("0.000000000001", 1),
            ("0.0000000000005", 1),
            ("-0.0000000000005", -1),
            ("0.00000000000049", 0),
            ("12345.678901234567", 12_345_678_901_234_567),
            ("12345.6789012345675", 12_345_678_901_234_568),
        ];
        for (text, raw) in cases {
            let m = Money::from_str(text).expect("decimal");
            assert_eq!(money_to_i128(m).expect("in range"), raw, "{text}");
        }
        assert_eq!(
            money_from_i128(1_500_000_000_000)
                .expect("in range")
                .to_string(),
            "1.500000000000"
        );
    }

    #[test]
    fn money_out_of_range_is_refused_not_corrupted() {
        // 10^20 at 12 places needs 33 digits: the column holds it, and the conversion is
        // exact even though Decimal itself cannot carry 12 places at that size.
        let big = Money::from_str("100000000000000000000").expect("decimal");
        let units = 100_000_000_000_000_000_000_i128 * 1_000_000_000_000;
        assert_eq!(money_to_i128(big).expect("fits the column"), units);
        assert_eq!(money_to_i128(-big).expect("fits the column"), -units);
        // Money::MAX has 29 integer digits: 29 + 12 > 38.
        assert!(money_to_i128(Money::MAX).is_err());
        assert!(money_from_i128(i128::MAX).is_err());
        assert!(money_from_i128(i128::MIN).is_err());
    }

    #[test]
    fn dates_are_days_since_the_epoch() {
        let t = DateTime::from_timestamp(86_400 * 3 + 5, 0).expect("valid");
        assert_eq!((days_since_epoch(t), epoch_seconds(t)), (3, 259_205));
    }
}
