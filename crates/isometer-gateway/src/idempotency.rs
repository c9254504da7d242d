//! Idempotent task ids: a task id a tenant chose runs once; every later submission of it
//! gets the stored answer, and one that arrives while the first still runs waits for it.
//!
//! Answers are kept in memory, the newest `capacity` of them. Older ones, and the task ids
//! an earlier process recorded (loaded at start with [`Idempotency::remember`]), are known
//! by a 64-bit hash only; their answers are read back from ClickHouse.
//!
//! Only final answers are stored. A task waiting for an approval, or refused for load
//! (`throttled`), has not run: the same id may be submitted again.

use crate::task::TaskResponse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// Answers kept in memory unless set otherwise.
pub const DEFAULT_CAPACITY: usize = 100_000;

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
    /// Hashes of task ids recorded but not in `slots`.
    known: HashSet<u64>,
    /// `known` may miss some: every unknown id is looked up.
    look_up_all: bool,
    hasher: std::collections::hash_map::RandomState,
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
                known: HashSet::new(),
                look_up_all: false,
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
        if !looked_up && (inner.look_up_all || inner.known.contains(&inner.hash(&key))) {
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
    pub(crate) fn store(&self, tenant: &str, task_id: &str, answer: Arc<TaskResponse>) {
        let mut inner = self.lock();
        let key = (tenant.to_owned(), task_id.to_owned());
        if !inner.slots.contains_key(&key) {
            inner.keep(key, answer);
        }
    }

    /// Task ids recorded by an earlier process: their answers are in ClickHouse.
    /// `complete`: no others were recorded within the window.
    pub(crate) fn remember(
        &self,
        keys: impl IntoIterator<Item = (String, String)>,
        complete: bool,
    ) -> usize {
        let mut inner = self.lock();
        inner.look_up_all |= !complete;
        let mut n = 0;
        for key in keys {
            let hash = inner.hash(&key);
            n += usize::from(inner.known.insert(hash));
        }
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    fn keep(&mut self, key: Key, answer: Arc<TaskResponse>) {
        self.slots.insert(key.clone(), Slot::Done(answer));
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if matches!(self.slots.get(&old), Some(Slot::Done(_))) {
                self.slots.remove(&old);
                let hash = self.hash(&old);
                self.known.insert(hash);
            }
        }
    }
}

impl Claimed {
    /// Ends the claim with `answer`: stored when `is_final`, and handed to whoever waits.
    pub(crate) fn finish(mut self, answer: &TaskResponse, is_final: bool) {
        self.finished = true;
        let mut inner = self.owner.lock();
        if is_final {
            let answer = Arc::new(answer.clone());
            inner.keep(self.key.clone(), answer.clone());
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
