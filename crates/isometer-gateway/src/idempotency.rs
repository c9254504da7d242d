//! Idempotent task ids: a task id a tenant chose runs once; every later submission of it
//! gets the stored answer, and one that arrives while the first still runs waits for it.
//!
//! Answers are kept in memory, the newest `capacity` of them. Older ones, and the task ids
//! an earlier process recorded (loaded at start with [`Idempotency::remember`]), are known
//! by a 64-bit hash only; their answers are read back from ClickHouse. A hash is kept for
//! [`WINDOW`], the same window a restarted server learns recorded task ids over, so memory
//! stays bounded however long the server runs; beyond [`MAX_KNOWN`] hashes, every unknown
//! task id is looked up in ClickHouse instead.
//!
//! Only final answers are stored. A task waiting for an approval, or refused for load
//! (`throttled`), has not run: the same id may be submitted again.

use crate::task::TaskResponse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// Answers kept in memory unless set otherwise.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How long a task id is known once answered (or once loaded at start): submitted again
/// within it, it never runs twice.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Task ids known by hash at most; past it, every unknown task id is looked up.
pub const MAX_KNOWN: usize = 5_000_000;

type Key = (String, String);
type Answer = Option<Arc<TaskResponse>>;

#[derive(Debug)]
pub(crate) struct Idempotency {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: HashMap<Key, Slot>,
    /// Keys of the stored answers, oldest first.
    order: VecDeque<Key>,
    capacity: usize,
    /// Task ids recorded but not in `slots`.
    known: Known,
    hasher: std::collections::hash_map::RandomState,
}

/// Hashes of recorded task ids, each for [`WINDOW`] from when it was added.
#[derive(Debug)]
struct Known {
    hashes: HashSet<u64>,
    /// (added at, ms; hash), oldest first.
    added: VecDeque<(u64, u64)>,
    window_ms: u64,
    max: usize,
    /// `hashes` may miss some: every unknown id is looked up.
    look_up_all: bool,
}

impl Known {
    fn new(window: Duration, max: usize) -> Self {
        Known {
            hashes: HashSet::new(),
            added: VecDeque::new(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            max: max.max(1),
            look_up_all: false,
        }
    }

    /// Whether `hash` may have been recorded (and must be looked up).
    fn may_hold(&self, hash: u64) -> bool {
        self.look_up_all || self.hashes.contains(&hash)
    }

    fn add(&mut self, hash: u64, now_ms: u64) {
        if self.hashes.insert(hash) {
            self.added.push_back((now_ms, hash));
        }
        self.forget(now_ms);
    }

    /// Drops the hashes older than the window; past `max`, drops the oldest and looks up
    /// every unknown id from then on, since one of them may be a dropped one.
    fn forget(&mut self, now_ms: u64) {
        while let Some(&(added, hash)) = self.added.front() {
            let expired = added.saturating_add(self.window_ms) <= now_ms;
            let over = self.added.len() > self.max;
            if !expired && !over {
                break;
            }
            self.look_up_all |= over;
            self.added.pop_front();
            self.hashes.remove(&hash);
        }
    }
}

#[derive(Debug)]
enum Slot {
    Running(watch::Sender<Answer>),
    Done(Arc<TaskResponse>),
}

/// What to do with a submitted task id.
#[derive(Debug)]
pub(crate) enum Claim {
    /// New: run it, then `finish` the claim.
    Run(Claimed),
    /// Running now: wait for its answer (`None`: it ended without a final one; claim again).
    Wait(watch::Receiver<Answer>),
    Done(Arc<TaskResponse>),
    /// Recorded before, answer not in memory: read it from ClickHouse, then claim with
    /// `looked_up`.
    LookUp,
}

/// The right to run a task id. Dropped without `finish`, the id is free again.
#[derive(Debug)]
pub(crate) struct Claimed {
    key: Key,
    sender: watch::Sender<Answer>,
    owner: Arc<Idempotency>,
    finished: bool,
}

impl Idempotency {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Idempotency {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
                known: Known::new(WINDOW, MAX_KNOWN),
                hasher: std::collections::hash_map::RandomState::new(),
            }),
        })
    }

    /// `looked_up`: ClickHouse was asked and has no answer for this id.
    pub(crate) fn claim(self: &Arc<Self>, tenant: &str, task_id: &str, looked_up: bool) -> Claim {
        let mut inner = self.lock();
        let key = (tenant.to_owned(), task_id.to_owned());
        match inner.slots.get(&key) {
            Some(Slot::Done(answer)) => return Claim::Done(answer.clone()),
            Some(Slot::Running(sender)) => return Claim::Wait(sender.subscribe()),
            None => {}
        }
        if !looked_up && inner.known.may_hold(inner.hash(&key)) {
            return Claim::LookUp;
        }
        let (sender, _) = watch::channel(None);
        inner
            .slots
            .insert(key.clone(), Slot::Running(sender.clone()));
        Claim::Run(Claimed {
            key,
            sender,
            owner: self.clone(),
            finished: false,
        })
    }

    /// Stores an answer read back from ClickHouse.
    pub(crate) fn store(
        &self,
        tenant: &str,
        task_id: &str,
        answer: Arc<TaskResponse>,
        now_ms: u64,
    ) {
        let mut inner = self.lock();
        let key = (tenant.to_owned(), task_id.to_owned());
        if !inner.slots.contains_key(&key) {
            inner.keep(key, answer, now_ms);
        }
    }

    /// Task ids recorded by an earlier process: their answers are in ClickHouse.
    /// `complete`: no others were recorded within the window.
    pub(crate) fn remember(
        &self,
        keys: impl IntoIterator<Item = (String, String)>,
        complete: bool,
        now_ms: u64,
    ) -> usize {
        let mut inner = self.lock();
        inner.known.look_up_all |= !complete;
        let before = inner.known.hashes.len();
        for key in keys {
            let hash = inner.hash(&key);
            inner.known.add(hash, now_ms);
        }
        inner.known.hashes.len().saturating_sub(before)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    fn keep(&mut self, key: Key, answer: Arc<TaskResponse>, now_ms: u64) {
        self.slots.insert(key.clone(), Slot::Done(answer));
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if matches!(self.slots.get(&old), Some(Slot::Done(_))) {
                self.slots.remove(&old);
                let hash = self.hash(&old);
                self.known.add(hash, now_ms);
            }
        }
        self.known.forget(now_ms);
    }
}

impl Claimed {
    /// Ends the claim with `answer`: stored when `is_final`, and handed to whoever waits.
    pub(crate) fn finish(mut self, answer: &TaskResponse, is_final: bool, now_ms: u64) {
        self.finished = true;
        let mut inner = self.owner.lock();
        if is_final {
            let answer = Arc::new(answer.clone());
            inner.keep(self.key.clone(), answer.clone(), now_ms);
            self.sender.send_replace(Some(answer));
        } else {
            inner.slots.remove(&self.key);
            self.sender.send_replace(None);
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if !self.finished {
            self.owner.lock().slots.remove(&self.key);
            self.sender.send_replace(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn a_known_task_id_is_forgotten_once_its_window_has_passed() {
        let mut known = Known::new(Duration::from_secs(24 * 3600), 100);
        known.add(1, 0);
        known.add(2, 12 * HOUR_MS);
        assert!(known.may_hold(1) && known.may_hold(2) && !known.may_hold(3));
        // Adding again does not restart the window.
        known.add(1, 20 * HOUR_MS);
        known.forget(24 * HOUR_MS - 1);
        assert!(known.may_hold(1));
        known.forget(24 * HOUR_MS);
        assert!(!known.may_hold(1) && known.may_hold(2));
        known.forget(36 * HOUR_MS);
        assert!(!known.may_hold(2));
        assert!(known.hashes.is_empty() && known.added.is_empty());
        assert!(!known.look_up_all);
    }

    #[test]
    fn past_its_bound_every_unknown_task_id_is_looked_up() {
        let mut known = Known::new(Duration::from_secs(24 * 3600), 3);
        for hash in 0..3 {
            known.add(hash, 0);
        }
        assert!(
            !known.may_hold(99),
            "within the bound, an unknown id is new"
        );
        known.add(3, 1);
        assert_eq!(known.hashes.len(), 3, "the oldest hash is dropped");
        assert!(
            known.may_hold(0) && known.may_hold(99),
            "a dropped id may come again: every unknown id is looked up"
        );
    }
}
