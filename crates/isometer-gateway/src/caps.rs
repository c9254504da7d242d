//! Loop caps: per agent run (tenant and `run_id`), the tier's `LoopCaps` decide before a
//! task runs whether the run may go on.
//!
//! Every count is checked and taken under one lock, so concurrent submissions on one run
//! cannot slip past a cap. The spend cap needs the cost of the tasks before, which is
//! known only when they end: a run's low-confidence tasks under a spend cap therefore run
//! one at a time (`SpendGate`), each checking what the ones before it spent.

use chrono::{DateTime, TimeDelta, Utc};
use isometer_core::{LoopCap, Money};
use isometer_policy::LoopCaps;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// How many of a run's last tasks estimate its cost per task.
const RECENT_TASKS: usize = 10;
/// Runs tracked before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct LoopCapper {
    runs: Mutex<HashMap<RunKey, RunState>>,
}

type RunKey = (String, String);

#[derive(Debug)]
struct RunState {
    capped: Option<(LoopCap, DateTime<Utc>)>,
    /// Low-confidence tasks in a row, the last one included.
    streak: u32,
    /// Per (tool, input sha256): calls within the window and when the first was.
    calls: HashMap<(String, String), (u32, DateTime<Utc>)>,
    /// What the run's finished tasks cost.
    spent: Money,
    recent: VecDeque<Money>,
    last_seen: DateTime<Utc>,
    window: TimeDelta,
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The decision on one task of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CapCheck {
    Run,
    Capped(CapInfo),
}

/// A capped run: which cap, until when, and the spend one refused task avoided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapInfo {
    pub cap: LoopCap,
    pub until: DateTime<Utc>,
    /// The run's recent cost per task: what running this task would have cost.
    #[serde(with = "rust_decimal::serde::str")]
    pub avoided_cost: Money,
}

/// A run's cap state, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunCapStatus {
    pub tenant_id: String,
    pub run_id: String,
    pub capped: Option<CapInfo>,
    pub low_confidence_streak: u32,
    #[serde(with = "rust_decimal::serde::str")]
    pub spent: Money,
}

/// Held while a low-confidence task runs under a spend cap: the run's next such task waits.
pub(crate) type SpendGate = tokio::sync::OwnedMutexGuard<()>;

/// One task as the caps see it.
pub(crate) struct CapInput<'a> {
    pub tenant_id: &'a str,
    pub run_id: &'a str,
    pub tool_id: &'a str,
    pub input_sha256: &'a str,
    pub confidence: Option<f32>,
}

impl LoopCapper {
    /// Whether `task` is low-confidence under `caps` and a spend cap applies to it: then
    /// it must hold the run's gate (`gate`) while it is checked, runs and is settled.
    pub(crate) fn needs_gate(caps: &LoopCaps, confidence: Option<f32>) -> bool {
        caps.max_low_confidence_spend.is_some() && is_low(caps, confidence)
    }

    /// The run's spend gate.
    pub(crate) async fn gate(
        &self,
        tenant_id: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> SpendGate {
        let gate = {
            let mut runs = self.lock();
            runs.entry((tenant_id.to_owned(), run_id.to_owned()))
                .or_insert_with(|| RunState::new(now))
                .gate
                .clone()
        };
        gate.lock_owned().await
    }

    /// Checks `task` against `caps` and counts it when it may run. A task that trips a cap
    /// caps the run for the window.
    pub(crate) fn check(
        &self,
        task: &CapInput<'_>,
        caps: &LoopCaps,
        now: DateTime<Utc>,
    ) -> CapCheck {
        let mut runs = self.lock();
        if runs.len() > SWEEP_ABOVE {
            runs.retain(|_, run| run.is_live(now) || Arc::strong_count(&run.gate) > 1);
        }
        let run = runs
            .entry((task.tenant_id.to_owned(), task.run_id.to_owned()))
            .or_insert_with(|| RunState::new(now));
        run.window = TimeDelta::from_std(caps.window).unwrap_or(TimeDelta::minutes(10));
        // A run idle for the whole window starts afresh, and so does one whose cap ran out.
        if !run.is_live(now) || run.capped.is_some_and(|(_, until)| until <= now) {
            run.reset(now);
        }
        run.last_seen = now;
        if let Some((cap, until)) = run.capped {
            return CapCheck::Capped(CapInfo {
                cap,
                until,
                avoided_cost: run.cost_per_task(),
            });
        }
        let low = is_low(caps, task.confidence);
        let call = (task.tool_id.to_owned(), task.input_sha256.to_owned());
        let window = run.window;
        let repeats = match run.calls.get(&call) {
            Some((n, first)) if now - *first < window => *n,
            _ => 0,
        };
        let tripped = if low
            && caps
                .max_low_confidence_streak
                .is_some_and(|n| run.streak >= n)
        {
            Some(LoopCap::LowConfidenceStreak)
        } else if caps.max_repeats.is_some_and(|k| repeats >= k) {
            Some(LoopCap::RepeatedCall)
        } else if low
            && caps
                .max_low_confidence_spend
                .is_some_and(|cap| run.spent >= cap)
        {
            Some(LoopCap::LowConfidenceSpend)
        } else {
            None
        };
        if let Some(cap) = tripped {
            let until = now + window;
            run.capped = Some((cap, until));
            return CapCheck::Capped(CapInfo {
                cap,
                until,
                avoided_cost: run.cost_per_task(),
            });
        }
        run.streak = if low { run.streak + 1 } else { 0 };
        let entry = run.calls.entry(call).or_insert((0, now));
        if now - entry.1 >= window {
            *entry = (0, now);
        }
        entry.0 += 1;
        CapCheck::Run
    }

    /// Adds what a task of the run cost; `ran`: it executed, so its cost estimates the
    /// run's next tasks.
    pub(crate) fn settle(&self, tenant_id: &str, run_id: &str, cost: Money, ran: bool) {
        let mut runs = self.lock();
        if let Some(run) = runs.get_mut(&(tenant_id.to_owned(), run_id.to_owned())) {
            run.spent += cost;
            if ran {
                run.recent.push_back(cost);
                if run.recent.len() > RECENT_TASKS {
                    run.recent.pop_front();
                }
            }
        }
    }

    /// Lifts a run's cap and forgets its history. `None` when the run is not tracked.
    pub(crate) fn reset(
        &self,
        tenant_id: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Option<RunCapStatus> {
        let mut runs = self.lock();
        let run = runs.get_mut(&(tenant_id.to_owned(), run_id.to_owned()))?;
        let before = run.status(tenant_id, run_id, now);
        run.reset(now);
        Some(before)
    }

    pub(crate) fn status(
        &self,
        tenant_id: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Option<RunCapStatus> {
        let runs = self.lock();
        runs.get(&(tenant_id.to_owned(), run_id.to_owned()))
            .map(|run| run.status(tenant_id, run_id, now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, RunState>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn is_low(caps: &LoopCaps, confidence: Option<f32>) -> bool {
    confidence.is_some_and(|c| c < caps.low_confidence)
}

impl RunState {
    fn new(now: DateTime<Utc>) -> Self {
        RunState {
            capped: None,
            streak: 0,
            calls: HashMap::new(),
            spent: Money::ZERO,
            recent: VecDeque::new(),
            last_seen: now,
            window: TimeDelta::minutes(10),
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn is_live(&self, now: DateTime<Utc>) -> bool {
        now - self.last_seen < self.window || self.capped.is_some_and(|(_, until)| until > now)
    }

    fn reset(&mut self, now: DateTime<Utc>) {
        self.capped = None;
        self.streak = 0;
        self.calls.clear();
        self.spent = Money::ZERO;
        self.recent.clear();
        self.last_seen = now;
    }

    fn cost_per_task(&self) -> Money {
        if self.recent.is_empty() {
            return Money::ZERO;
        }
        // Rounded as rated costs are (12 places, half away from zero).
        (self.recent.iter().sum::<Money>() / Money::from(self.recent.len()))
            .round_dp_with_strategy(12, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    }

    fn status(&self, tenant_id: &str, run_id: &str, now: DateTime<Utc>) -> RunCapStatus {
        RunCapStatus {
            tenant_id: tenant_id.to_owned(),
            run_id: run_id.to_owned(),
            capped: self
                .capped
                .filter(|(_, until)| *until > now)
                .map(|(cap, until)| CapInfo {
                    cap,
                    until,
                    avoided_cost: self.cost_per_task(),
                }),
            low_confidence_streak: self.streak,
            spent: self.spent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> LoopCaps {
        LoopCaps {
            low_confidence: 0.5,
            max_low_confidence_streak: Some(3),
            max_repeats: Some(2),
            max_low_confidence_spend: Some(Money::new(10, 0)),
            window: std::time::Duration::from_secs(60),
        }
    }

    fn task<'a>(input: &'a str, confidence: Option<f32>) -> CapInput<'a> {
        CapInput {
            tenant_id: "acme",
            run_id: "r1",
            tool_id: "fetch",
            input_sha256: input,
            confidence,
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[test]
    fn a_streak_of_low_confidence_caps_the_run_until_the_window_passes() {
        let capper = LoopCapper::default();
        for (i, input) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(
                capper.check(&task(input, Some(0.1)), &caps(), t(i as i64)),
                CapCheck::Run
            );
            capper.settle("acme", "r1", Money::new(2, 0), true);
        }
        let CapCheck::Capped(info) = capper.check(&task("d", Some(0.2)), &caps(), t(3)) else {
            panic!("the fourth low-confidence task is capped");
        };
        assert_eq!(info.cap, LoopCap::LowConfidenceStreak);
        assert_eq!(info.until, t(63));
        assert_eq!(info.avoided_cost, Money::new(2, 0));
        // Capped means capped: even a confident task does not run.
        assert!(matches!(
            capper.check(&task("e", Some(0.9)), &caps(), t(10)),
            CapCheck::Capped(_)
        ));
        assert_eq!(
            capper.check(&task("e", Some(0.9)), &caps(), t(63)),
            CapCheck::Run
        );
    }

    #[test]
    fn a_confident_task_breaks_the_streak_and_repeats_are_counted_per_input() {
        let capper = LoopCapper::default();
        for (input, c) in [("a", 0.1), ("b", 0.1), ("c", 0.9), ("d", 0.1), ("e", 0.1)] {
            assert_eq!(
                capper.check(&task(input, Some(c)), &caps(), t(0)),
                CapCheck::Run
            );
        }
        assert_eq!(
            capper.check(&task("a", None), &caps(), t(1)),
            CapCheck::Run,
            "a twice"
        );
        let CapCheck::Capped(info) = capper.check(&task("a", None), &caps(), t(2)) else {
            panic!("a third time is capped");
        };
        assert_eq!(info.cap, LoopCap::RepeatedCall);
        let before = capper.reset("acme", "r1", t(3)).expect("tracked");
        assert!(before.capped.is_some());
        assert_eq!(
            capper.check(&task("a", None), &caps(), t(4)),
            CapCheck::Run,
            "reset"
        );
    }

    #[test]
    fn low_confidence_tasks_stop_once_the_run_spent_its_cap() {
        let capper = LoopCapper::default();
        let caps = LoopCaps {
            max_low_confidence_streak: None,
            ..caps()
        };
        for i in 0..4 {
            assert_eq!(
                capper.check(&task(&i.to_string(), Some(0.1)), &caps, t(i)),
                CapCheck::Run
            );
            capper.settle("acme", "r1", Money::new(3, 0), true);
        }
        // 12 spent: a confident task still runs, a low-confidence one is capped.
        assert_eq!(
            capper.check(&task("x", Some(0.8)), &caps, t(5)),
            CapCheck::Run
        );
        let CapCheck::Capped(info) = capper.check(&task("y", Some(0.1)), &caps, t(6)) else {
            panic!("over the spend cap");
        };
        assert_eq!(info.cap, LoopCap::LowConfidenceSpend);
    }
}
