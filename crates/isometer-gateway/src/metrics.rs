//! Counters and a latency histogram of the tasks this gateway answered, for `/metrics`.
//! Labels stay bounded: tenants come from the configuration (a task for an unknown
//! tenant is counted under `error`), outcomes from the fixed list.

use isometer_core::Outcome;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// What the gateway counted since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Tasks answered, by tenant and final outcome (indexed like `Outcome::ALL`).
    tasks: Mutex<HashMap<String, [u64; Outcome::ALL.len()]>>,
    /// Submissions that ended in an error instead of an answer (bad request, store down).
    errors: AtomicU64,
    /// Task latency: counts per bucket (the last one is +Inf), sum in microseconds.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub(crate) fn task(&self, tenant_id: &str, outcome: Outcome, took: Duration) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        {
            let mut tasks = self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match tasks.get_mut(tenant_id) {
                Some(counts) => counts[index] += 1,
                None => {
                    let mut counts = [0; Outcome::ALL.len()];
                    counts[index] = 1;
                    tasks.insert(tenant_id.to_owned(), counts);
                }
            }
        }
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut tenants: Vec<_> = tasks.into_iter().collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str("# HELP isometer_tasks_total Tasks answered, by tenant and final outcome.\n");
        out.push_str("# TYPE isometer_tasks_total counter\n");
        for (tenant, counts) in &tenants {
            for (outcome, n) in Outcome::ALL.iter().zip(counts) {
                if *n > 0 {
                    let _ = writeln!(
                        out,
                        "isometer_tasks_total{{tenant=\"{}\",outcome=\"{}\"}} {n}",
                        label(tenant),
                        outcome.as_str()
                    );
                }
            }
        }
        out.push_str(
            "# HELP isometer_task_errors_total Submissions answered with an error, not an outcome.\n",
        );
        out.push_str("# TYPE isometer_task_errors_total counter\n");
        let _ = writeln!(
            out,
            "isometer_task_errors_total {}",
            self.errors.load(Ordering::Relaxed)
        );
        out.push_str("# HELP isometer_task_duration_seconds Time from submission to answer.\n");
        out.push_str("# TYPE isometer_task_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "isometer_task_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "isometer_task_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "isometer_task_duration_seconds_sum {sum}");
        let _ = writeln!(out, "isometer_task_duration_seconds_count {cumulative}");
    }
}

/// A label value with Prometheus' escapes.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_are_cumulative() {
        let m = Metrics::default();
        m.task("acme", Outcome::Success, Duration::from_micros(300));
        m.task("acme", Outcome::Success, Duration::from_millis(3));
        m.task("acme", Outcome::Throttled, Duration::from_secs(10));
        m.error();
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "isometer_tasks_total{tenant=\"acme\",outcome=\"success\"} 2",
            "isometer_tasks_total{tenant=\"acme\",outcome=\"throttled\"} 1",
            "isometer_task_errors_total 1",
            "isometer_task_duration_seconds_bucket{le=\"0.0005\"} 1",
            "isometer_task_duration_seconds_bucket{le=\"0.005\"} 2",
            "isometer_task_duration_seconds_bucket{le=\"2.5\"} 2",
            "isometer_task_duration_seconds_bucket{le=\"+Inf\"} 3",
            "isometer_task_duration_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(
            !out.contains("outcome=\"failed\""),
            "zero counts are left out"
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
