//! Retry budgets: per tenant and tool, the retries allowed are a share (the policy's
//! `budget_ratio`) of the first attempts made over the policy's window. A retry takes from
//! the budget under one lock, so concurrent failures cannot retry past it.
//!
//! The window slides in ten steps: counts live in buckets a tenth of the window wide.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const BUCKETS: u64 = 10;

#[derive(Debug, Default)]
pub(crate) struct RetryBudgets {
    budgets: Mutex<HashMap<(String, String), Budget>>,
}

#[derive(Debug)]
struct Budget {
    width_ms: u64,
    /// (bucket number, first attempts, retries), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
}

/// What a budget holds now, for the answer and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetStatus {
    pub first_attempts: u64,
    pub retries: u64,
}

impl RetryBudgets {
    /// Counts a first attempt of `tool` for `tenant`.
    pub(crate) fn first_attempt(&self, tenant: &str, tool: &str, window: Duration, now_ms: u64) {
        self.with(tenant, tool, window, now_ms, |b, bucket| {
            b.current(bucket).1 += 1;
        });
    }

    /// Takes one retry from the budget when `ratio` of the window's first attempts allows
    /// one more; `false` leaves the budget as it was.
    pub(crate) fn try_retry(
        &self,
        tenant: &str,
        tool: &str,
        ratio: f64,
        window: Duration,
        now_ms: u64,
    ) -> bool {
        self.with(tenant, tool, window, now_ms, |b, bucket| {
            let status = b.status();
            let allowed = ratio * status.first_attempts as f64;
            if (status.retries + 1) as f64 <= allowed + 1e-9 {
                b.current(bucket).2 += 1;
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn status(
        &self,
        tenant: &str,
        tool: &str,
        window: Duration,
        now_ms: u64,
    ) -> BudgetStatus {
        self.with(tenant, tool, window, now_ms, |b, _| b.status())
    }

    fn with<T>(
        &self,
        tenant: &str,
        tool: &str,
        window: Duration,
        now_ms: u64,
        f: impl FnOnce(&mut Budget, u64) -> T,
    ) -> T {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let width_ms = (u64::try_from(window.as_millis()).unwrap_or(u64::MAX) / BUCKETS).max(1);
        let key = (tenant.to_owned(), tool.to_owned());
        let budget = budgets.entry(key).or_insert_with(|| Budget {
            width_ms,
            buckets: VecDeque::new(),
        });
        // A policy reloaded with another window starts its budget afresh.
        if budget.width_ms != width_ms {
            budget.width_ms = width_ms;
            budget.buckets.clear();
        }
        let bucket = now_ms / width_ms;
        while budget
            .buckets
            .front()
            .is_some_and(|(b, _, _)| b + BUCKETS <= bucket)
        {
            budget.buckets.pop_front();
        }
        f(budget, bucket)
    }
}

impl Budget {
    fn current(&mut self, bucket: u64) -> &mut (u64, u64, u64) {
        if self.buckets.back().is_none_or(|(b, _, _)| *b != bucket) {
            self.buckets.push_back((bucket, 0, 0));
        }
        self.buckets.back_mut().unwrap_or_else(|| unreachable!())
    }

    fn status(&self) -> BudgetStatus {
        BudgetStatus {
            first_attempts: self.buckets.iter().map(|b| b.1).sum(),
            retries: self.buckets.iter().map(|b| b.2).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_first_attempts_over_a_sliding_window() {
        let budgets = RetryBudgets::default();
        let window = Duration::from_secs(100);
        let retry = |now| budgets.try_retry("acme", "fetch", 0.2, window, now);
        assert!(!retry(0), "no first attempts, no retries");
        for _ in 0..10 {
            budgets.first_attempt("acme", "fetch", window, 0);
        }
        assert!(retry(1_000) && retry(2_000), "20% of 10");
        assert!(!retry(3_000), "the third is over budget");
        assert_eq!(
            budgets.status("acme", "fetch", window, 3_000),
            BudgetStatus {
                first_attempts: 10,
                retries: 2
            }
        );
        // Budgets are per tenant and tool.
        assert!(!budgets.try_retry("acme", "summarize", 0.2, window, 3_000));
        assert!(!budgets.try_retry("globex", "fetch", 0.2, window, 3_000));
        // Once the window has passed, the old attempts no longer count.
        for _ in 0..5 {
            budgets.first_attempt("acme", "fetch", window, 95_000);
        }
        assert!(retry(96_000), "15 firsts allow a third retry");
        assert!(!retry(96_500));
        // At 100 s the first ten and their two retries leave the window: 5 firsts and
        // one retry remain, which is the budget.
        assert!(!retry(100_000));
        for _ in 0..5 {
            budgets.first_attempt("acme", "fetch", window, 100_000);
        }
        assert!(retry(100_000), "10 firsts allow a second retry");
    }
}
