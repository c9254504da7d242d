//! Admission: which task runs now, which waits, which is refused.
//!
//! Three bounds hold at once. A tenant runs at most its tier's `max_concurrency` tasks;
//! the gateway runs at most `max_in_flight` tasks of all tenants (the runtime's pool); a
//! tenant's tasks that find no slot wait in its own queue of at most `max_queue`, and one
//! more is refused. When the gateway is full, a freed slot goes to the waiting task with
//! the smallest start tag (start-time fair queuing): a tenant's tags advance by
//! `1 / weight` per task, so busy tenants share the slots in proportion to their tiers'
//! weights whatever each of them offers.
//!
//! A refusal says when to come back: the tenant's queue ahead divided by the rate it is
//! served at, from the recent time a task holds its slot.

use isometer_policy::Tier;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The gateway's admission bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionOptions {
    /// Tasks of all tenants running at once.
    pub max_in_flight: u32,
    /// The longest a task waits in its tenant's queue before it is refused.
    pub max_wait: Duration,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        AdmissionOptions {
            max_in_flight: 1_000,
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Why a task was not admitted, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub(crate) struct Admission {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    options: AdmissionOptions,
}

#[derive(Debug, Default)]
struct State {
    in_flight: u32,
    waiting: usize,
    /// The start tag of the task admitted last: where a newly busy tenant starts.
    virtual_time: f64,
    next_waiter: u64,
    tenants: HashMap<Arc<str>, TenantState>,
    /// Recent time a task holds its slot, in microseconds (moving average).
    hold_us: f64,
}

#[derive(Debug)]
struct TenantState {
    running: u32,
    limit: u32,
    queue_cap: u32,
    weight: f64,
    /// The finish tag of this tenant's last queued task.
    last_finish: f64,
    queue: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    start: f64,
    grant: oneshot::Sender<()>,
}

/// A slot: the task runs while it is held; dropping it gives the slot to the next task.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    tenant: Arc<str>,
    since: Instant,
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionStatus {
    pub in_flight: u32,
    pub waiting: usize,
}

impl Admission {
    pub(crate) fn new(options: AdmissionOptions) -> Self {
        Admission {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    hold_us: 1_000.0,
                    ..State::default()
                }),
                options,
            }),
        }
    }

    pub(crate) fn options(&self) -> AdmissionOptions {
        self.shared.options
    }

    pub(crate) fn status(&self) -> AdmissionStatus {
        let state = self.shared.lock();
        AdmissionStatus {
            in_flight: state.in_flight,
            waiting: state.waiting,
        }
    }

    /// A slot for one task of `tenant`, at once, after a wait in the tenant's queue, or a
    /// refusal (queue full, or no slot within the longest wait).
    pub(crate) async fn admit(&self, tenant: &str, tier: &Tier) -> Result<Permit, Refusal> {
        let (id, tenant, receiver) = {
            let mut state = self.shared.lock();
            let global = self.shared.options.max_in_flight;
            let in_flight = state.in_flight;
            let key: Arc<str> = match state.tenants.get_key_value(tenant) {
                Some((key, _)) => key.clone(),
                None => Arc::from(tenant),
            };
            let virtual_time = state.virtual_time;
            let t = state
                .tenants
                .entry(key.clone())
                .or_insert_with(|| TenantState {
                    running: 0,
                    limit: 0,
                    queue_cap: 0,
                    weight: 1.0,
                    last_finish: 0.0,
                    queue: VecDeque::new(),
                });
            // The tier may have changed with a reload: its newest values apply.
            t.limit = tier.max_concurrency;
            t.queue_cap = tier.max_queue;
            t.weight = f64::from(tier.weight.max(1));
            if in_flight < global && t.running < t.limit && t.queue.is_empty() {
                t.running += 1;
                state.in_flight += 1;
                return Ok(self.permit(key));
            }
            if t.queue.len() >= t.queue_cap as usize {
                let ahead = t.queue.len() + 1;
                let limit = t.limit;
                let reason = if t.queue_cap == 0 {
                    format!("tenant `{tenant}` runs {limit} tasks at once and has no queue")
                } else {
                    format!(
                        "tenant `{tenant}` has {} tasks waiting, its tier's limit",
                        t.queue.len()
                    )
                };
                let retry_after = state.retry_after(ahead, limit);
                return Err(Refusal {
                    reason,
                    retry_after,
                });
            }
            let start = virtual_time.max(t.last_finish);
            t.last_finish = start + 1.0 / t.weight;
            let (grant, receiver) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            let t = state.tenants.get_mut(&key).map(|t| {
                t.queue.push_back(Waiter { id, start, grant });
            });
            debug_assert!(t.is_some());
            state.waiting += 1;
            state.dispatch(global);
            (id, key, receiver)
        };
        let mut wait = Wait {
            shared: &self.shared,
            tenant: &tenant,
            id,
            receiver,
            done: false,
        };
        let granted = tokio::time::timeout(self.shared.options.max_wait, &mut wait.receiver).await;
        wait.done = true;
        match granted {
            Ok(Ok(())) => Ok(self.permit(tenant.clone())),
            // Timed out: still queued means refused; gone means granted meanwhile.
            _ => {
                let mut state = self.shared.lock();
                if state.remove_waiter(&tenant, id) {
                    let limit = state.tenants.get(&tenant).map_or(1, |t| t.limit);
                    let ahead = state.tenants.get(&tenant).map_or(1, |t| t.queue.len() + 1);
                    let retry_after = state.retry_after(ahead, limit);
                    Err(Refusal {
                        reason: format!(
                            "no slot for tenant `{tenant}` within {} ms",
                            self.shared.options.max_wait.as_millis()
                        ),
                        retry_after,
                    })
                } else {
                    drop(state);
                    Ok(self.permit(tenant.clone()))
                }
            }
        }
    }

    fn permit(&self, tenant: Arc<str>) -> Permit {
        Permit {
            shared: self.shared.clone(),
            tenant,
            since: Instant::now(),
        }
    }
}

/// Takes a waiter out of its queue when the waiting task is dropped (its caller went
/// away), or gives its slot back when the grant came just before. It owns the receiver,
/// so a grant sent before this is settled under the lock always arrives.
struct Wait<'a> {
    shared: &'a Shared,
    tenant: &'a Arc<str>,
    id: u64,
    receiver: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if !state.remove_waiter(self.tenant, self.id) {
            state.release(self.tenant, self.shared.options.max_in_flight, None);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        let mut state = self.shared.lock();
        state.release(&self.tenant, self.shared.options.max_in_flight, Some(held));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn release(&mut self, tenant: &str, global: u32, held: Option<Duration>) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.running = t.running.saturating_sub(1);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(held) = held {
            let us = held.as_secs_f64() * 1e6;
            self.hold_us = 0.95 * self.hold_us + 0.05 * us;
        }
        self.dispatch(global);
    }

    /// Gives free slots to waiting tasks, smallest start tag first among the tenants
    /// below their own limit.
    fn dispatch(&mut self, global: u32) {
        while self.waiting > 0 && self.in_flight < global {
            let next = self
                .tenants
                .iter()
                .filter(|(_, t)| t.running < t.limit)
                .filter_map(|(k, t)| t.queue.front().map(|w| (w.start, k.clone())))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let Some((_, key)) = next else {
                return;
            };
            let Some(t) = self.tenants.get_mut(&key) else {
                return;
            };
            let Some(waiter) = t.queue.pop_front() else {
                return;
            };
            self.waiting -= 1;
            // The receiver lives until its `Wait` is settled under this lock, so the
            // grant always arrives.
            if waiter.grant.send(()).is_ok() {
                t.running += 1;
                self.in_flight += 1;
                self.virtual_time = self.virtual_time.max(waiter.start);
            }
        }
    }

    fn remove_waiter(&mut self, tenant: &str, id: u64) -> bool {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return false;
        };
        let Some(at) = t.queue.iter().position(|w| w.id == id) else {
            return false;
        };
        t.queue.remove(at);
        self.waiting -= 1;
        true
    }

    /// When `ahead` tasks of a tenant running `limit` at once will have been served.
    fn retry_after(&self, ahead: usize, limit: u32) -> Duration {
        let us = self.hold_us * ahead as f64 / f64::from(limit.max(1));
        Duration::from_secs_f64((us / 1e6).ceil().clamp(1.0, 60.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(weight: u32, max_concurrency: u32, max_queue: u32) -> Tier {
        Tier {
            weight,
            max_concurrency,
            max_queue,
            ..Tier::default_for("t")
        }
    }

    fn admission(max_in_flight: u32) -> Admission {
        Admission::new(AdmissionOptions {
            max_in_flight,
            max_wait: Duration::from_secs(10),
        })
    }

    #[tokio::test]
    async fn a_tenant_runs_its_limit_queues_its_queue_and_is_refused_beyond() {
        let admission = admission(100);
        let tier = tier(1, 2, 1);
        let a = admission.admit("a", &tier).await.expect("first");
        let _b = admission.admit("a", &tier).await.expect("second");
        let queued = {
            let admission = &admission;
            let tier = tier.clone();
            async move { admission.admit("a", &tier).await }
        };
        tokio::pin!(queued);
        assert!(
            futures_poll_once(queued.as_mut()).await.is_none(),
            "the third waits"
        );
        assert_eq!(admission.status().waiting, 1);
        let refused = admission.admit("a", &tier).await.expect_err("queue full");
        assert!(refused.retry_after >= Duration::from_secs(1), "{refused:?}");
        assert!(
            refused.reason.contains("1 tasks waiting"),
            "{}",
            refused.reason
        );
        // Another tenant is not held up by a's queue.
        let _other = admission.admit("b", &tier).await.expect("other tenant");
        drop(a);
        let third = queued.await.expect("granted once a slot frees");
        assert_eq!(admission.status().in_flight, 3);
        drop(third);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_no_slot_behind() {
        let admission = admission(1);
        let tier = tier(1, 8, 8);
        let first = admission.admit("a", &tier).await.expect("first");
        {
            let waiting = admission.admit("a", &tier);
            tokio::pin!(waiting);
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        }
        assert_eq!(admission.status().waiting, 0);
        drop(first);
        assert_eq!(admission.status().in_flight, 0);
        let again = admission.admit("a", &tier).await.expect("free again");
        drop(again);
    }

    #[tokio::test]
    async fn busy_tenants_share_slots_by_weight() {
        let admission = Arc::new(admission(1));
        let light = tier(1, 8, 1_000);
        let heavy = tier(3, 8, 1_000);
        let holder = admission.admit("x", &light).await.expect("hold the slot");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (tenant, tier, n) in [("light", &light, 40), ("heavy", &heavy, 120)] {
            for _ in 0..n {
                let admission = admission.clone();
                let tier = tier.clone();
                let order = order.clone();
                tasks.push(tokio::spawn(async move {
                    let permit = admission.admit(tenant, &tier).await.expect("admitted");
                    order.lock().expect("order").push(tenant);
                    tokio::task::yield_now().await;
                    drop(permit);
                }));
                tokio::task::yield_now().await;
            }
        }
        drop(holder);
        for t in tasks {
            t.await.expect("task");
        }
        let order = order.lock().expect("order");
        // While both are queued, heavy gets three slots for each of light's.
        let first: Vec<&&str> = order.iter().take(80).collect();
        let heavy_share = first.iter().filter(|t| ***t == "heavy").count();
        assert!(
            (58..=62).contains(&heavy_share),
            "heavy got {heavy_share} of 80"
        );
    }

    /// Polls a future once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
