//! The durable local spool: usage is appended here, made durable with group commit, and
//! shipped to ClickHouse from here, so neither an outage nor a crash loses an event.
//!
//! The spool is a directory of append-only segments, `<first seq>.seg`, each a sequence of
//! records:
//!
//! ```text
//! len u32 LE | crc32 u32 LE | seq u64 LE | appended_ms u64 LE | rows u32 LE | payload (len bytes)
//! ```
//!
//! The CRC covers everything after it. Sequence numbers are consecutive across segments.
//! One thread writes: it takes every record waiting, writes them, and makes them durable
//! with one `fdatasync` (group commit) before any of their appenders is answered. The
//! shipper reads records back in order and releases whole segments once ClickHouse has
//! them.
//!
//! A record may be appended *sealed* ([`Spool::append_sealed`]), with leaves (hashes of
//! what it holds) and a [`GroupSealer`]: before writing a group, the writer thread hands
//! the leaves of all its sealed records to their sealer at once (one signature for the
//! whole group commit) and writes each record's seals after its payload, each as
//! `len u32 LE | bytes`; its appender gets them back with the sequence number.
//!
//! A released segment is kept as a spare (`<n>.free`, up to
//! [`SpoolOptions::spare_segments`]) and becomes a later segment: renamed, then written
//! over from its start. So under steady load the spool writes into blocks the file system
//! already holds, and frees none: a sync then has no block allocation to make durable,
//! and no discard of freed blocks runs beside it. A segment therefore holds its records
//! followed by what is left of its earlier life. Those stale records carry sequence
//! numbers below the segment's first, so a segment's records are exactly those that
//! read whole, in order, from its start: it ends at the first sequence number of the
//! segment after it, or, for the last segment, at the first record that does not read
//! whole with the next sequence number.
//!
//! On open, every segment is read back and checked. A segment that ends before the next
//! one starts is damaged: an error that names the segment and offset. In the last
//! segment, whatever follows its records is cut off (a torn record from a crash
//! mid-write, or stale records); but if a record with a later sequence number reads whole
//! after that point, records in between are lost, and that too is an error.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{oneshot, watch};

const HEADER: usize = 28;
const SEGMENT_SUFFIX: &str = ".seg";
const SPARE_SUFFIX: &str = ".free";

/// How the spool is laid out and synced.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// A new segment is started once the current one reaches this size.
    pub segment_bytes: u64,
    /// Bytes of unshipped segments beyond which new tasks are refused (`throttled`).
    pub max_bytes: u64,
    /// Least time between the starts of two syncs while appenders come concurrently
    /// (the last sync was shared by more than one): records arriving meanwhile wait and
    /// share the next one, so a busy spool makes fewer, larger syncs, each costing about
    /// the same CPU whatever it holds. A lone appender's record is synced at once. Zero
    /// syncs as soon as records wait.
    pub sync_interval: Duration,
    /// Most records made durable by one sync.
    pub sync_every: usize,
    /// Released segments kept to be written over as later segments, rather than removed
    /// (at most this many; the disk holds them beside the unshipped ones).
    pub spare_segments: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            sync_interval: Duration::from_millis(1),
            sync_every: 16_384,
            spare_segments: 2,
        }
    }
}

/// Why the spool could not take or give a record.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("spool segment {} is damaged at byte {offset}: {reason}", segment.display())]
    Damaged {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the spool holds {used} bytes not yet in ClickHouse, its limit is {limit}")]
    Full { used: u64, limit: u64 },
    #[error("the spool writer has stopped")]
    Closed,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub seq: u64,
    pub appended_ms: u64,
    /// Rows the record holds (events and task records), for lag figures.
    pub rows: u32,
    pub payload: Vec<u8>,
}

/// A segment on disk: where it starts and how big it is.
#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes of its records; set once the writer has moved on to the next segment (or on
    /// open), zero for the one being written.
    bytes: u64,
}

/// State shared by the appenders, the writer thread and the reader.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: SpoolOptions,
    /// Bytes in segments that still hold unshipped records.
    used: AtomicU64,
    segments: Mutex<VecDeque<Segment>>,
    /// Released segments waiting to be written over, and the number the next one is
    /// named by.
    spares: Mutex<Spares>,
    /// What is durable.
    durable: watch::Sender<Durable>,
}

/// Every record below `seq` is durable; the segment being written starts at record
/// `segment` and holds `len` durable bytes. A reader of that segment reads no further:
/// past them the file holds what it held before it was a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    seq: u64,
    segment: u64,
    len: u64,
}

#[derive(Debug, Default)]
struct Spares {
    files: Vec<PathBuf>,
    next_name: u64,
}

impl Spares {
    /// Renames a released segment to a spare's name, or removes it when `keep` spares
    /// are already kept. The rename needs no sync: after a crash the segment's old name
    /// is found below the shipped mark and released again.
    fn keep_or_remove(&mut self, dir: &Path, path: &Path, keep: usize) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.to_owned(),
            source,
        };
        if self.files.len() >= keep {
            return remove_in_steps(path).map(drop).map_err(io);
        }
        let spare = dir.join(format!("{:020}{SPARE_SUFFIX}", self.next_name));
        std::fs::rename(path, &spare).map_err(io)?;
        self.next_name += 1;
        self.files.push(spare);
        Ok(())
    }
}

/// Seals the sealed records of one group commit, on the spool's writer thread, before
/// they are written (see the module's documentation). Closures
/// `Fn(&[[u8; 32]]) -> Vec<Vec<u8>>` are sealers.
pub trait GroupSealer: Send + Sync {
    /// One seal per leaf, in order. Called once per group commit with the leaves of
    /// every record it seals: keep it to one signature's worth of work.
    fn seal(&self, leaves: &[[u8; 32]]) -> Vec<Vec<u8>>;
}

impl<F: Fn(&[[u8; 32]]) -> Vec<Vec<u8>> + Send + Sync> GroupSealer for F {
    fn seal(&self, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        self(leaves)
    }
}

/// A sealed record's leaves, sealer and, once the writer has sealed its group, seals.
struct Sealing {
    sealer: Arc<dyn GroupSealer>,
    leaves: Vec<[u8; 32]>,
    seals: Option<Vec<Vec<u8>>>,
}

/// What an appender is answered once its records are durable: the first one's sequence
/// number, and a sealed record's seals.
type Appended = Result<(u64, Vec<Vec<u8>>), String>;

/// Records one appender hands over together (one, when sealed), and where to send the
/// answer once they are durable.
struct Pending {
    records: Vec<(Vec<u8>, u32)>,
    appended_ms: u64,
    sealing: Option<Sealing>,
    done: oneshot::Sender<Appended>,
}

impl Pending {
    /// The seals written after the record's payload.
    fn seals(&self) -> &[Vec<u8>] {
        self.sealing
            .as_ref()
            .and_then(|s| s.seals.as_deref())
            .unwrap_or_default()
    }
}

/// The appending side of a spool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: tokio::sync::mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} records)", self.records.len())
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, checks every segment, drops those
    /// wholly below `shipped` (everything before it is in ClickHouse), and starts the
    /// writer thread.
    pub fn open(dir: &Path, options: SpoolOptions, shipped: u64) -> Result<Self, SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut segments = list_segments(dir).map_err(io)?;
        // The last segment's end: the next sequence number and the valid length.
        let mut next_seq = shipped;
        let mut tail: Option<(File, u64)> = None;
        let count = segments.len();
        for i in 0..count {
            let until = segments.get(i + 1).map(|s| s.first_seq);
            let (end_seq, valid_len) = check_segment(&segments[i], until)?;
            segments[i].bytes = valid_len;
            next_seq = next_seq.max(end_seq);
            if until.is_none() {
                let path = &segments[i].path;
                let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
                let actual = file.metadata().map_err(io)?.len();
                if actual > valid_len {
                    // Torn or stale bytes: cut off, so that no record of this process's
                    // later writes is ever followed by one a crash left half written.
                    tracing::info!(
                        segment = %path.display(),
                        cut = actual - valid_len,
                        "cutting what follows the last record off the spool's end"
                    );
                    file.set_len(valid_len).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                file.seek(SeekFrom::Start(valid_len)).map_err(io)?;
                tail = Some((file, valid_len));
            }
        }
        let mut spares = Spares::default();
        for (number, path) in list_spares(dir).map_err(io)? {
            spares.next_name = spares.next_name.max(number + 1);
            spares.files.push(path);
        }
        // Segments whose records are all shipped are not needed any more; the last one is
        // kept as the one to append to.
        while segments.len() > 1 && segments[1].first_seq <= shipped {
            if let Some(gone) = segments.pop_front() {
                spares.keep_or_remove(dir, &gone.path, options.spare_segments)?;
            }
        }
        while spares.files.len() > options.spare_segments {
            if let Some(extra) = spares.files.pop() {
                remove_in_steps(&extra).map_err(io)?;
            }
        }
        let used = segments.iter().map(|s| s.bytes).sum();
        let (tail_first, tail_len) = match (&tail, segments.back()) {
            (Some((_, len)), Some(last)) => (last.first_seq, *len),
            _ => (next_seq, 0),
        };
        let (durable, _) = watch::channel(Durable {
            seq: next_seq,
            segment: tail_first,
            len: tail_len,
        });
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            options: options.clone(),
            used: AtomicU64::new(used),
            segments: Mutex::new(segments),
            spares: Mutex::new(spares),
            durable,
        });
        let (tx, rx) = tokio::sync::mpsc::channel(options.sync_every.max(1) * 4);
        let writer = Writer {
            shared: shared.clone(),
            tail: tail.map(|(file, len)| (file, len, tail_first)),
            next_seq,
        };
        std::thread::Builder::new()
            .name("isometer-spool".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok(Spool { shared, tx })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether a new task may start: false once unshipped bytes reach the limit.
    pub fn has_room(&self) -> bool {
        self.shared.used.load(Ordering::Relaxed) < self.shared.options.max_bytes
    }

    /// Appends one record and returns its sequence number once it is durable. Refused
    /// when the spool is well past its limit (a task admitted just before the limit was
    /// reached may still record: there is a tenth of the limit of room for those).
    pub async fn append(&self, payload: Vec<u8>, rows: u32) -> Result<u64, SpoolError> {
        self.append_many(vec![(payload, rows)]).await
    }

    /// Appends records (payload, rows) together, in order; returns the first one's
    /// sequence number once all are durable.
    pub async fn append_many(&self, records: Vec<(Vec<u8>, u32)>) -> Result<u64, SpoolError> {
        Ok(self.submit(records, None).await?.0)
    }

    /// Appends one record sealed by `sealer` over `leaves` in its group commit (see the
    /// module's documentation); returns its sequence number and its seals, one per leaf,
    /// once it is durable.
    pub async fn append_sealed(
        &self,
        payload: Vec<u8>,
        rows: u32,
        leaves: Vec<[u8; 32]>,
        sealer: Arc<dyn GroupSealer>,
    ) -> Result<(u64, Vec<Vec<u8>>), SpoolError> {
        let sealing = Sealing {
            sealer,
            leaves,
            seals: None,
        };
        self.submit(vec![(payload, rows)], Some(sealing)).await
    }

    async fn submit(
        &self,
        records: Vec<(Vec<u8>, u32)>,
        sealing: Option<Sealing>,
    ) -> Result<(u64, Vec<Vec<u8>>), SpoolError> {
        let used = self.shared.used.load(Ordering::Relaxed);
        let limit = self.shared.options.max_bytes;
        if used >= limit.saturating_add(limit / 10) {
            return Err(SpoolError::Full { used, limit });
        }
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            records,
            appended_ms: now_ms(),
            sealing,
            done,
        };
        self.tx
            .send(pending)
            .await
            .map_err(|_| SpoolError::Closed)?;
        match wait.await {
            Ok(Ok(appended)) => Ok(appended),
            Ok(Err(reason)) => Err(SpoolError::Io {
                dir: self.shared.dir.clone(),
                source: std::io::Error::other(reason),
            }),
            Err(_) => Err(SpoolError::Closed),
        }
    }

    /// The first sequence number not yet durable (every record below it is).
    pub fn durable(&self) -> u64 {
        self.shared.durable.borrow().seq
    }

    /// Waits until records at or past `seq` are durable.
    pub async fn wait_beyond(&self, seq: u64) {
        let mut rx = self.shared.durable.subscribe();
        let _ = rx.wait_for(|durable| durable.seq > seq).await;
    }

    /// A reader of the durable records from `seq` on.
    pub fn reader(&self, seq: u64) -> SpoolReader {
        SpoolReader {
            shared: self.shared.clone(),
            next: seq,
            open: None,
        }
    }

    /// Forgets the segments whose records are all below `shipped`: keeps their files as
    /// spares to write over, or removes those beyond [`SpoolOptions::spare_segments`]
    /// (see [`remove_in_steps`]). Blocks for as long as that takes: call it off the async
    /// workers.
    pub fn release(&self, shipped: u64) -> Result<(), SpoolError> {
        // Taken off the list under the lock, kept or removed after it: the writer thread
        // takes the same lock to start a segment, and must not wait for the disk.
        let gone: Vec<Segment> = {
            let mut segments = self
                .shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            while segments.len() > 1 && segments[1].first_seq <= shipped {
                gone.extend(segments.pop_front());
            }
            gone
        };
        for segment in gone {
            self.shared
                .spares
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep_or_remove(
                    &self.shared.dir,
                    &segment.path,
                    self.shared.options.spare_segments,
                )?;
            self.shared.used.fetch_sub(segment.bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Released segments kept to be written over.
    pub fn spare_segments(&self) -> usize {
        self.shared
            .spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .files
            .len()
    }

    /// Bytes of segments still holding unshipped records.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used.load(Ordering::Relaxed)
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    /// The segment being written: its file, length and first sequence number.
    tail: Option<(File, u64, u64)>,
    next_seq: u64,
}

impl Writer {
    fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
        let options = self.shared.options.clone();
        let mut group: Vec<Pending> = Vec::new();
        let mut buffer = Vec::with_capacity(1 << 20);
        // When the last sync started, if it was shared: appenders are coming concurrently.
        let mut last_sync: Option<std::time::Instant> = None;
        loop {
            // After a shared sync, the interval is slept out before looking for records:
            // what arrives meanwhile queues without waking this thread, and joins one group.
            let now = std::time::Instant::now();
            if let Some(left) =
                last_sync.and_then(|at| (at + options.sync_interval).checked_duration_since(now))
            {
                std::thread::sleep(left);
            }
            let first = match rx.try_recv() {
                Ok(pending) => pending,
                Err(TryRecvError::Empty) => match rx.blocking_recv() {
                    Some(pending) => pending,
                    None => break,
                },
                Err(TryRecvError::Disconnected) => break,
            };
            let mut records = first.records.len();
            group.push(first);
            while records < options.sync_every {
                match rx.try_recv() {
                    Ok(pending) => {
                        records += pending.records.len();
                        group.push(pending);
                    }
                    Err(_) => break,
                }
            }
            seal(&mut group);
            let first_seq = self.next_seq;
            last_sync = (group.len() > 1).then(std::time::Instant::now);
            let (written, result) = self.write_group(&group, &mut buffer);
            if written > 0 {
                let (segment, len) = self
                    .tail
                    .as_ref()
                    .map_or((self.next_seq, 0), |(_, len, first)| (*first, *len));
                self.shared.durable.send_replace(Durable {
                    seq: self.next_seq,
                    segment,
                    len,
                });
            }
            let failed = result.err().map(|e| {
                tracing::error!(error = %e, "spool write failed");
                e.to_string()
            });
            let mut seq = first_seq;
            for (i, pending) in group.drain(..).enumerate() {
                if i < written {
                    let seals = pending.sealing.and_then(|s| s.seals).unwrap_or_default();
                    let _ = pending.done.send(Ok((seq, seals)));
                    seq += pending.records.len() as u64;
                } else {
                    let reason = failed.clone().unwrap_or_default();
                    let _ = pending.done.send(Err(reason));
                }
            }
        }
    }

    /// Writes a group's records and makes them durable, in one write and sync per
    /// segment they go to. An appender's records all go to one segment, so when a write
    /// or sync fails, the appenders before it are durable and none after it is. Returns
    /// how many appenders' records are durable, and the error that stopped the rest.
    fn write_group(
        &mut self,
        group: &[Pending],
        buffer: &mut Vec<u8>,
    ) -> (usize, std::io::Result<()>) {
        let roll_at = self.shared.options.segment_bytes;
        let mut start = 0;
        while start < group.len() {
            if self.tail.as_ref().is_none_or(|(_, len, _)| *len >= roll_at)
                && let Err(e) = self.roll()
            {
                return (start, Err(e));
            }
            let Some((file, len, _)) = self.tail.as_mut() else {
                return (start, Err(std::io::Error::other("no segment open")));
            };
            buffer.clear();
            let mut end = start;
            let mut seq = self.next_seq;
            // At least one appender's records, however many bytes they are.
            while end < group.len() && (end == start || *len + (buffer.len() as u64) < roll_at) {
                let pending = &group[end];
                for (payload, rows) in &pending.records {
                    encode(
                        buffer,
                        seq,
                        pending.appended_ms,
                        *rows,
                        payload,
                        pending.seals(),
                    );
                    seq += 1;
                }
                end += 1;
            }
            if let Err(e) = file.write_all(buffer).and_then(|()| file.sync_data()) {
                // Leave nothing of the failed write behind for the next one to follow.
                let _ = file.set_len(*len);
                let _ = file.seek(SeekFrom::Start(*len));
                return (start, Err(e));
            }
            *len += buffer.len() as u64;
            self.shared
                .used
                .fetch_add(buffer.len() as u64, Ordering::Relaxed);
            self.next_seq = seq;
            start = end;
        }
        (start, Ok(()))
    }

    /// Starts a new segment at the next sequence number: a spare written over from its
    /// start if there is one, else a new file.
    fn roll(&mut self) -> std::io::Result<()> {
        let path = segment_path(&self.shared.dir, self.next_seq);
        let spare = self
            .shared
            .spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .files
            .pop();
        if let Some(spare) = spare {
            std::fs::rename(&spare, &path)?;
        }
        // A spare's blocks are written over, not freed: no truncation.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        File::open(&self.shared.dir)?.sync_all()?;
        let written = self.tail.take().map_or(0, |(_, len, _)| len);
        let mut segments = self
            .shared
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(last) = segments.back_mut() {
            last.bytes = written;
        }
        segments.push_back(Segment {
            first_seq: self.next_seq,
            path,
            bytes: 0,
        });
        self.tail = Some((file, 0, self.next_seq));
        Ok(())
    }
}

/// Bytes a released segment gives back to the file system at a time.
pub(crate) const RELEASE_STEP: u64 = 4 << 20;

/// Removes a file after cutting it down [`RELEASE_STEP`] bytes at a time; returns the
/// length it had. On a disk mounted with online discard (ext4 `-o discard`), removing a
/// 64 MiB segment at once discards all its blocks in one go, and every `fdatasync` on that
/// disk meanwhile (the spool's group commits, which tasks wait for) waited 10 to 60 ms;
/// in steps of 4 MiB the removal itself stalled no sync (`make bench SUITE=gateway`
/// measures both ways).
pub fn remove_in_steps(path: &Path) -> std::io::Result<u64> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut size = len;
    while size > RELEASE_STEP {
        size -= RELEASE_STEP;
        file.set_len(size)?;
    }
    drop(file);
    std::fs::remove_file(path)?;
    Ok(len)
}

/// Seals the group's sealed records: the leaves of all those sharing a sealer in one
/// call. A sealer that gives the wrong number of seals leaves its records without them;
/// those are not written, and their appenders get an error.
fn seal(group: &mut Vec<Pending>) {
    for i in 0..group.len() {
        let Some(sealer) = group[i]
            .sealing
            .as_ref()
            .filter(|s| s.seals.is_none())
            .map(|s| s.sealer.clone())
        else {
            continue;
        };
        let sharing = |p: &Pending| {
            p.sealing
                .as_ref()
                .is_some_and(|s| s.seals.is_none() && Arc::ptr_eq(&s.sealer, &sealer))
        };
        let leaves: Vec<[u8; 32]> = group[i..]
            .iter()
            .filter(|p| sharing(p))
            .flat_map(|p| p.sealing.iter().flat_map(|s| s.leaves.iter().copied()))
            .collect();
        let mut seals = sealer.seal(&leaves);
        if seals.len() != leaves.len() {
            tracing::error!(
                leaves = leaves.len(),
                seals = seals.len(),
                "a sealer gave the wrong number of seals; its records are not written"
            );
            for p in group[i..].iter_mut().filter(|p| sharing(p)) {
                if let Some(s) = p.sealing.as_mut() {
                    s.seals = Some(Vec::new());
                }
            }
            continue;
        }
        let mut rest = seals.drain(..);
        for p in group[i..].iter_mut().filter(|p| sharing(p)) {
            if let Some(s) = p.sealing.as_mut() {
                s.seals = Some(rest.by_ref().take(s.leaves.len()).collect());
            }
        }
    }
    let unsealed = |p: &Pending| {
        p.sealing
            .as_ref()
            .is_some_and(|s| s.seals.as_ref().map(Vec::len) != Some(s.leaves.len()))
    };
    if group.iter().any(unsealed) {
        let (sealed, unsealed): (Vec<Pending>, Vec<Pending>) =
            group.drain(..).partition(|p| !unsealed(p));
        for p in unsealed {
            let _ = p
                .done
                .send(Err("the record's evidence could not be sealed".into()));
        }
        *group = sealed;
    }
}

pub(crate) fn encode(
    buffer: &mut Vec<u8>,
    seq: u64,
    appended_ms: u64,
    rows: u32,
    payload: &[u8],
    seals: &[Vec<u8>],
) {
    let start = buffer.len();
    let len = payload.len() + seals.iter().map(|s| 4 + s.len()).sum::<usize>();
    buffer.extend_from_slice(&(len as u32).to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&seq.to_le_bytes());
    buffer.extend_from_slice(&appended_ms.to_le_bytes());
    buffer.extend_from_slice(&rows.to_le_bytes());
    buffer.extend_from_slice(payload);
    for seal in seals {
        buffer.extend_from_slice(&(seal.len() as u32).to_le_bytes());
        buffer.extend_from_slice(seal);
    }
    let crc = crc32fast::hash(&buffer[start + 8..]);
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads durable records in order, across segments.
#[derive(Debug)]
pub struct SpoolReader {
    shared: Arc<Shared>,
    next: u64,
    open: Option<OpenSegment>,
}

/// The segment a reader is in.
#[derive(Debug)]
struct OpenSegment {
    first_seq: u64,
    /// The first sequence number of the segment after it, once there is one.
    until: Option<u64>,
    reader: BufReader<Bounded>,
}

/// A segment's file read no further than `limit`.
#[derive(Debug)]
struct Bounded {
    file: File,
    position: u64,
    limit: u64,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.limit.saturating_sub(self.position)).unwrap_or(usize::MAX);
        let wanted = buf.len().min(left);
        let n = self.file.read(&mut buf[..wanted])?;
        self.position += n as u64;
        Ok(n)
    }
}

impl SpoolReader {
    /// The sequence number of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next durable record, or `None` when the reader has caught up.
    pub fn next_record(&mut self) -> Result<Option<SpoolRecord>, SpoolError> {
        let durable = *self.shared.durable.borrow();
        if self.next >= durable.seq {
            return Ok(None);
        }
        let mut refreshed = false;
        loop {
            let mut segment = match self.open.take() {
                Some(segment) => segment,
                None => self.open_segment_for(self.next)?,
            };
            if segment.until.is_none() && segment.first_seq != durable.segment {
                // The writer has moved on: the segment after this one is listed.
                segment.until = following(&self.shared, segment.first_seq);
            }
            if segment.until.is_some_and(|until| self.next >= until) {
                continue;
            }
            // In the segment being written, only durable bytes are read: whatever the
            // buffer holds was final when it was read.
            segment.reader.get_mut().limit = if segment.first_seq == durable.segment {
                durable.len
            } else {
                u64::MAX
            };
            let segment = self.open.insert(segment);
            let path = segment_path(&self.shared.dir, segment.first_seq);
            let found = match read_record(&mut segment.reader, &path) {
                Ok(Some(record)) if record.seq == self.next => {
                    self.next += 1;
                    return Ok(Some(record));
                }
                // Records before the one asked for, in the same segment.
                Ok(Some(record)) if (segment.first_seq..self.next).contains(&record.seq) => {
                    continue;
                }
                Ok(Some(record)) => format!("record {}", record.seq),
                Ok(None) => "the segment's end".to_owned(),
                Err(e) => e.to_string(),
            };
            if !refreshed && segment.until.is_none() {
                // Rolled over since the durable mark was read: look again.
                segment.until = following(&self.shared, segment.first_seq);
                refreshed = true;
                if segment.until.is_some_and(|until| self.next >= until) {
                    self.open = None;
                    continue;
                }
            }
            return Err(SpoolError::Damaged {
                segment: path,
                offset: segment.reader.get_ref().position - segment.reader.buffer().len() as u64,
                reason: format!("expected record {}, found {found}", self.next),
            });
        }
    }

    fn open_segment_for(&mut self, seq: u64) -> Result<OpenSegment, SpoolError> {
        let (segment, until) = {
            let segments = self
                .shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let at = segments.iter().rposition(|s| s.first_seq <= seq);
            let until = at.and_then(|i| segments.get(i + 1)).map(|s| s.first_seq);
            (at.and_then(|i| segments.get(i)).cloned(), until)
        };
        let Some(segment) = segment else {
            return Err(SpoolError::Damaged {
                segment: self.shared.dir.clone(),
                offset: 0,
                reason: format!("no segment holds record {seq}"),
            });
        };
        let file = File::open(&segment.path).map_err(|source| SpoolError::Io {
            dir: self.shared.dir.clone(),
            source,
        })?;
        let bounded = Bounded {
            file,
            position: 0,
            limit: u64::MAX,
        };
        Ok(OpenSegment {
            first_seq: segment.first_seq,
            until,
            reader: BufReader::with_capacity(1 << 20, bounded),
        })
    }
}

/// The first sequence number of the segment after the one starting at `first_seq`.
fn following(shared: &Shared, first_seq: u64) -> Option<u64> {
    shared
        .segments
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| s.first_seq)
        .find(|&s| s > first_seq)
}

/// Reads one record; `None` at a clean end. A short or damaged record is an error.
fn read_record(reader: &mut impl Read, path: &Path) -> Result<Option<SpoolRecord>, SpoolError> {
    let damaged = |reason: String| SpoolError::Damaged {
        segment: path.to_owned(),
        offset: 0,
        reason,
    };
    let mut header = [0u8; HEADER];
    match read_full(reader, &mut header) {
        Ok(0) => return Ok(None),
        Ok(n) if n < HEADER => return Err(damaged("a record header is cut short".into())),
        Ok(_) => {}
        Err(e) => return Err(damaged(e.to_string())),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    // Grown as the bytes come: a damaged length must not allocate gigabytes.
    let mut payload = Vec::with_capacity(len.min(1 << 16));
    match reader.take(len as u64).read_to_end(&mut payload) {
        Ok(n) if n == len => {}
        Ok(_) => return Err(damaged("a record is cut short".into())),
        Err(e) => return Err(damaged(e.to_string())),
    }
    let (record, crc_ok) = decode_header(&header, payload);
    if !crc_ok {
        return Err(damaged(format!("record {} fails its checksum", record.seq)));
    }
    Ok(Some(record))
}

fn decode_header(header: &[u8; HEADER], payload: Vec<u8>) -> (SpoolRecord, bool) {
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..]);
    hasher.update(&payload);
    let record = SpoolRecord {
        seq: word(8),
        appended_ms: word(16),
        rows: u32::from_le_bytes([header[24], header[25], header[26], header[27]]),
        payload,
    };
    (record, hasher.finalize() == stored)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Checks a segment on open: returns the sequence number after its last record and the
/// length of its records. A segment followed by another must hold every record up to
/// that one's first (`until`); the last one ends at the first record that does not read
/// whole with the next sequence number, unless a later record reads whole after it.
fn check_segment(segment: &Segment, until: Option<u64>) -> Result<(u64, u64), SpoolError> {
    let bytes = std::fs::read(&segment.path).map_err(|source| SpoolError::Io {
        dir: segment.path.clone(),
        source,
    })?;
    let damaged = |offset: u64, reason: String| SpoolError::Damaged {
        segment: segment.path.clone(),
        offset,
        reason,
    };
    let mut offset = 0usize;
    let mut expected = segment.first_seq;
    loop {
        if until == Some(expected) {
            return Ok((expected, offset as u64));
        }
        let broken = match parse_record(&bytes[offset..]) {
            Parsed::Whole { seq, len } if seq == expected => {
                expected += 1;
                offset += len;
                continue;
            }
            Parsed::Whole { seq, .. } if seq >= expected => {
                format!("expected record {expected}, found {seq}")
            }
            Parsed::Whole { .. } | Parsed::End => format!("record {expected} is missing"),
            Parsed::Short => "a record is cut short".to_owned(),
            Parsed::BadChecksum { seq } => format!("record {seq} fails its checksum"),
        };
        if let Some(until) = until {
            return Err(damaged(
                offset as u64,
                format!("{broken}; the next segment starts at record {until}"),
            ));
        }
        // The end of the spool, unless a record that could only have been written after
        // this point reads whole further on.
        if let Some((at, seq)) = later_record(&bytes, offset + 1, expected) {
            return Err(damaged(
                offset as u64,
                format!("{broken}, yet record {seq} reads whole at byte {at}"),
            ));
        }
        return Ok((expected, offset as u64));
    }
}

/// What the bytes at the start of a slice hold.
enum Parsed {
    /// A record that reads whole; `len` counts its header.
    Whole {
        seq: u64,
        len: usize,
    },
    /// Nothing: the file ends here.
    End,
    /// A header or payload that runs past the file's end.
    Short,
    BadChecksum {
        seq: u64,
    },
}

fn parse_record(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::End;
    }
    let Some(header) = bytes.get(..HEADER) else {
        return Parsed::Short;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let Some(rest) = bytes.get(8..HEADER + len) else {
        return Parsed::Short;
    };
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let seq = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    if crc32fast::hash(rest) != stored {
        return Parsed::BadChecksum { seq };
    }
    Parsed::Whole {
        seq,
        len: HEADER + len,
    }
}

/// The first record at or after byte `from` that reads whole with a sequence number at
/// or past `expected` (and not absurdly far past it), with its offset.
fn later_record(bytes: &[u8], from: usize, expected: u64) -> Option<(u64, u64)> {
    let last = bytes.len().checked_sub(HEADER)?;
    (from..=last).find_map(|at| {
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().ok()?);
        if seq.wrapping_sub(expected) >= 1 << 32 {
            return None;
        }
        match parse_record(&bytes[at..]) {
            Parsed::Whole { seq, .. } => Some((at as u64, seq)),
            _ => None,
        }
    })
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// The spares in a spool directory, by the number in their names.
fn list_spares(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut spares: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_suffix(SPARE_SUFFIX)?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    spares.sort();
    Ok(spares)
}

fn list_segments(dir: &Path) -> std::io::Result<VecDeque<Segment>> {
    let mut segments: Vec<Segment> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let first_seq = name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()?;
            Some(Segment {
                first_seq,
                path: entry.path(),
                bytes: 0,
            })
        })
        .collect();
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments.into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the spool holds, for `isometer spool status` and metrics; read from the files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStatus {
    pub dir: PathBuf,
    pub segments: usize,
    /// Bytes of the segments' records (spares and stale bytes not counted).
    pub bytes: u64,
    /// Everything below this sequence number is in ClickHouse.
    pub shipped_seq: u64,
    /// The next sequence number to be appended.
    pub next_seq: u64,
    /// Records and rows (events and task records) not yet in ClickHouse.
    pub lag_records: u64,
    pub lag_rows: u64,
    /// When the oldest unshipped record was appended (ms since the epoch), if any.
    pub oldest_unshipped_ms: Option<u64>,
    /// How long ago that was, in milliseconds: the lag in time.
    pub lag_ms: Option<u64>,
}

impl SpoolStatus {
    /// Reads a spool directory without opening it for writing (a running isometer may
    /// hold it). `shipped` comes from the shipper's checkpoint.
    pub fn read(dir: &Path, shipped: u64) -> Result<Self, SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.to_owned(),
            source,
        };
        let segments = list_segments(dir).map_err(io)?;
        let mut status = SpoolStatus {
            dir: dir.to_owned(),
            segments: segments.len(),
            bytes: 0,
            shipped_seq: shipped,
            next_seq: shipped,
            lag_records: 0,
            lag_rows: 0,
            oldest_unshipped_ms: None,
            lag_ms: None,
        };
        for (i, segment) in segments.iter().enumerate() {
            let until = segments.get(i + 1).map_or(u64::MAX, |s| s.first_seq);
            let file = match File::open(&segment.path) {
                Ok(file) => file,
                // Released (kept as a spare or removed) since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            let mut reader = BufReader::with_capacity(1 << 20, file);
            // A segment's records are those that read whole in order from its start: a
            // record being written right now may be incomplete, and what follows the
            // last is stale.
            let mut expected = segment.first_seq;
            while expected < until {
                let Ok(Some(record)) = read_record(&mut reader, &segment.path) else {
                    break;
                };
                if record.seq != expected {
                    break;
                }
                expected += 1;
                status.bytes += (HEADER + record.payload.len()) as u64;
                if record.seq >= shipped {
                    status.lag_records += 1;
                    status.lag_rows += u64::from(record.rows);
                    status.oldest_unshipped_ms.get_or_insert(record.appended_ms);
                }
            }
            status.next_seq = status.next_seq.max(expected);
        }
        status.lag_ms = status
            .oldest_unshipped_ms
            .map(|t| now_ms().saturating_sub(t));
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SpoolOptions {
        SpoolOptions {
            segment_bytes: 4096,
            max_bytes: 1 << 20,
            ..SpoolOptions::default()
        }
    }

    fn drain(spool: &Spool, from: u64) -> Vec<SpoolRecord> {
        let mut reader = spool.reader(from);
        let mut records = Vec::new();
        while let Some(record) = reader.next_record().expect("reads") {
            records.push(record);
        }
        records
    }

    /// A sealer that records each call's leaves and seals leaf `l` as `call:l`.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<Vec<[u8; 32]>>>,
    }

    impl GroupSealer for Recording {
        fn seal(&self, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
            let mut calls = self.calls.lock().expect("lock");
            calls.push(leaves.to_vec());
            let call = calls.len();
            leaves
                .iter()
                .map(|l| format!("{call}:{}", l[0]).into_bytes())
                .collect()
        }
    }

    /// The seals a sealed record carries after `payload_len` bytes of payload.
    fn seals_after(record: &SpoolRecord, payload_len: usize) -> Vec<Vec<u8>> {
        let mut rest = &record.payload[payload_len..];
        let mut seals = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("len")) as usize;
            seals.push(rest[4..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        seals
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commit_seals_all_its_records_in_one_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(
            dir.path(),
            SpoolOptions {
                // Appenders pile up behind each sync: groups of several.
                sync_interval: Duration::from_millis(5),
                ..options()
            },
            0,
        )
        .expect("opens");
        let sealer = Arc::new(Recording::default());
        // Appender i seals i % 3 leaves, each named by (i, k).
        let appends: Vec<_> = (0..200u8)
            .map(|i| {
                let (spool, sealer) = (spool.clone(), sealer.clone());
                tokio::spawn(async move {
                    let leaves: Vec<[u8; 32]> = (0..i % 3)
                        .map(|k| {
                            let mut leaf = [0; 32];
                            (leaf[0], leaf[1]) = (i, k);
                            leaf
                        })
                        .collect();
                    let payload = format!("task {i}").into_bytes();
                    let (seq, seals) = spool
                        .append_sealed(payload, 1, leaves.clone(), sealer)
                        .await
                        .expect("appended");
                    (i, seq, leaves, seals)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for append in appends {
            answers.push(append.await.expect("joined"));
        }
        let calls = sealer.calls.lock().expect("lock").clone();
        assert!(
            calls.len() < 100,
            "{} seal calls for 200 appends: groups are not sealed together",
            calls.len()
        );
        let sealed: usize = calls.iter().map(Vec::len).sum();
        assert_eq!(
            sealed,
            (0..200).map(|i| i % 3).sum::<usize>(),
            "every leaf sealed once"
        );
        let records = drain(&spool, 0);
        for (i, seq, leaves, seals) in answers {
            assert_eq!(seals.len(), leaves.len(), "appender {i}");
            // Each seal came from the call that held the appender's leaves, in order.
            for (leaf, seal) in leaves.iter().zip(&seals) {
                let text = String::from_utf8(seal.clone()).expect("utf-8");
                let (call, first) = text.split_once(':').expect("call:leaf");
                let call: usize = call.parse().expect("call");
                assert!(calls[call - 1].contains(leaf), "appender {i}: {text}");
                assert_eq!(first, leaf[0].to_string());
            }
            // The record holds its payload, then its seals.
            let record = &records[seq as usize];
            let payload = format!("task {i}");
            assert!(record.payload.starts_with(payload.as_bytes()));
            assert_eq!(seals_after(record, payload.len()), seals, "appender {i}");
        }
    }

    #[tokio::test]
    async fn a_sealer_giving_the_wrong_number_of_seals_writes_nothing_of_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        let short: Arc<dyn GroupSealer> = Arc::new(|_: &[[u8; 32]]| Vec::<Vec<u8>>::new());
        let failed = spool
            .append_sealed(b"lost".to_vec(), 1, vec![[1; 32]], short)
            .await;
        assert!(
            matches!(&failed, Err(SpoolError::Io { source, .. }) if source.to_string().contains("sealed")),
            "{failed:?}"
        );
        let good: Arc<dyn GroupSealer> =
            Arc::new(|leaves: &[[u8; 32]]| leaves.iter().map(|_| b"ok".to_vec()).collect());
        let (seq, seals) = spool
            .append_sealed(b"kept".to_vec(), 1, vec![[2; 32]], good)
            .await
            .expect("appended");
        assert_eq!((seq, seals), (0, vec![b"ok".to_vec()]));
        let records = drain(&spool, 0);
        assert_eq!(records.len(), 1, "the unsealed record was not written");
        assert_eq!(seals_after(&records[0], 4), vec![b"ok".to_vec()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_survive_a_reopen_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        let mut appends = Vec::new();
        for i in 0..300u32 {
            let spool = spool.clone();
            appends.push(tokio::spawn(async move {
                spool.append(format!("record {i}").into_bytes(), 2).await
            }));
        }
        let mut seqs = Vec::new();
        for append in appends {
            seqs.push(append.await.expect("joined").expect("appended"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..300).collect::<Vec<_>>());
        assert!(list_segments(dir.path()).expect("list").len() > 2);
        let before = drain(&spool, 0);
        assert_eq!(before.len(), 300);
        drop(spool);

        let reopened = Spool::open(dir.path(), options(), 0).expect("reopens");
        assert_eq!(drain(&reopened, 0), before);
        assert_eq!(
            reopened
                .append(b"after".to_vec(), 1)
                .await
                .expect("appends"),
            300
        );
        assert_eq!(drain(&reopened, 300)[0].payload, b"after");

        // Shipped segments go; the status counts what is left.
        reopened.release(200).expect("released");
        let status = SpoolStatus::read(dir.path(), 200).expect("status");
        assert_eq!((status.lag_records, status.lag_rows), (101, 201));
        assert_eq!(status.next_seq, 301);
        assert!(status.oldest_unshipped_ms.is_some());
        assert_eq!(drain(&reopened, 200).len(), 101);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_damage_elsewhere_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        for i in 0..3u8 {
            spool.append(vec![i; 100], 1).await.expect("appends");
        }
        drop(spool);
        let segment = list_segments(dir.path()).expect("list")[0].path.clone();
        let whole = std::fs::read(&segment).expect("read");

        // A crash mid-write leaves half a record: it is cut off, the rest is kept.
        std::fs::write(&segment, &whole[..whole.len() - 40]).expect("tear");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        assert_eq!(drain(&spool, 0).len(), 2);
        assert_eq!(spool.append(vec![9; 10], 1).await.expect("appends"), 2);
        drop(spool);

        // A flipped byte in the first record is damage, not a tail.
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes[HEADER + 10] ^= 1;
        std::fs::write(&segment, &bytes).expect("damage");
        let err = Spool::open(dir.path(), options(), 0).expect_err("refused");
        assert!(
            err.to_string().contains("record 0 fails its checksum"),
            "{err}"
        );
    }

    #[test]
    fn a_segment_removed_in_steps_is_gone_and_its_length_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.seg");
        let len = 2 * RELEASE_STEP + 5;
        std::fs::write(&path, vec![7u8; len as usize]).expect("write");
        assert_eq!(remove_in_steps(&path).expect("removed"), len);
        assert!(!path.exists());
        assert!(
            remove_in_steps(&path).is_err(),
            "a missing segment is an error"
        );
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_frees_up_when_shipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tight = SpoolOptions {
            segment_bytes: 1024,
            max_bytes: 4096,
            ..SpoolOptions::default()
        };
        let spool = Spool::open(dir.path(), tight, 0).expect("opens");
        let mut appended = 0;
        while spool.has_room() {
            spool.append(vec![7; 200], 1).await.expect("appends");
            appended += 1;
        }
        assert!(appended >= 15, "{appended}");
        // Past the limit and its margin, appends are refused.
        let mut refused = None;
        for _ in 0..100 {
            if let Err(e) = spool.append(vec![7; 200], 1).await {
                refused = Some(e);
                break;
            }
        }
        assert!(
            matches!(refused, Some(SpoolError::Full { .. })),
            "{refused:?}"
        );
        spool.release(spool.durable()).expect("released");
        assert!(spool.has_room());
        assert!(spool.used_bytes() <= 1024 + 256, "{}", spool.used_bytes());
    }

    /// A lone appender's records are synced at once; appenders that come together share
    /// syncs, and the next sync after a shared one waits out the interval.
    #[tokio::test]
    async fn shared_syncs_are_spaced_and_a_lone_appender_is_not_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let interval = Duration::from_secs(2);
        let spaced = SpoolOptions {
            sync_interval: interval,
            ..options()
        };
        let spool = Spool::open(dir.path(), spaced, 0).expect("opens");
        let started = std::time::Instant::now();
        for i in 0..5u8 {
            spool.append(vec![i; 100], 1).await.expect("appends");
        }
        assert!(
            started.elapsed() < interval / 2,
            "five appends one after the other took {:?}",
            started.elapsed()
        );

        // 64 appenders at once: the writer wakes for the first and finds the others
        // waiting, so the last of their syncs is shared.
        let together = |base: u8| {
            let mut appenders = tokio::task::JoinSet::new();
            for i in 0..64u8 {
                let spool = spool.clone();
                appenders.spawn(async move { spool.append(vec![base + i; 100], 1).await });
            }
            appenders.join_all()
        };
        for appended in together(0).await {
            appended.expect("appends");
        }
        let shared_at = std::time::Instant::now();
        for appended in together(64).await {
            appended.expect("appends");
        }
        assert!(
            shared_at.elapsed() >= interval / 2,
            "appenders right after a shared sync were synced after {:?}",
            shared_at.elapsed()
        );
        assert_eq!(spool.durable(), 5 + 128);
        assert_eq!(drain(&spool, 0).len(), 5 + 128);
    }

    /// 128 bytes on disk with its header, 32 to a test segment.
    fn payload(i: u64) -> Vec<u8> {
        let mut bytes = format!("record {i:05} ").into_bytes();
        bytes.resize(100, b'.');
        bytes
    }

    async fn append_range(spool: &Spool, range: std::ops::Range<u64>) {
        for i in range {
            assert_eq!(spool.append(payload(i), 1).await.expect("appends"), i);
        }
    }

    fn assert_records(records: &[SpoolRecord], range: std::ops::Range<u64>) {
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, range.collect::<Vec<_>>());
        for record in records {
            assert_eq!(record.payload, payload(record.seq), "record {}", record.seq);
        }
    }

    fn files(dir: &Path, suffix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("lists")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(suffix))
            .collect();
        names.sort();
        names
    }

    fn inode(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("metadata"))
    }

    /// Segments 0, 32, 64 and 96 written, 0 and 32 released as spares, and segment 128
    /// started in a spare with 5 records: the rest of that file is stale records.
    async fn spool_writing_over_a_spare(dir: &Path) -> Spool {
        let spool = Spool::open(dir, options(), 0).expect("opens");
        append_range(&spool, 0..100).await;
        let released = [segment_path(dir, 0), segment_path(dir, 32)].map(|p| inode(&p));
        spool.release(64).expect("released");
        assert_eq!(files(dir, SPARE_SUFFIX).len(), 2);
        assert_eq!(spool.spare_segments(), 2);
        append_range(&spool, 100..133).await;
        let tail = segment_path(dir, 128);
        assert!(
            released.contains(&inode(&tail)),
            "segment 128 is a released segment written over"
        );
        assert_eq!(spool.spare_segments(), 1);
        let len = std::fs::metadata(&tail).expect("metadata").len();
        assert!(len > 5 * 128, "stale records follow the new ones: {len}");
        spool
    }

    #[tokio::test]
    async fn released_segments_are_written_over_and_their_stale_records_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = spool_writing_over_a_spare(dir.path()).await;
        let mut reader = spool.reader(64);
        let mut read = Vec::new();
        while let Some(record) = reader.next_record().expect("reads") {
            read.push(record);
        }
        assert_records(&read, 64..133);
        // The reader's buffer now holds the stale records after record 132; the records
        // written over them are read from the file.
        append_range(&spool, 133..140).await;
        let mut more = Vec::new();
        while let Some(record) = reader.next_record().expect("reads on") {
            more.push(record);
        }
        assert_records(&more, 133..140);
        let status = SpoolStatus::read(dir.path(), 64).expect("status");
        assert_eq!((status.next_seq, status.lag_records), (140, 76));
        assert_eq!(status.bytes, 76 * 128);
        assert_eq!(spool.used_bytes(), 76 * 128);
        drop(spool);

        // Reopened: the stale bytes are cut off the last segment and nothing else changes.
        let spool = Spool::open(dir.path(), options(), 64).expect("reopens");
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 128))
                .expect("metadata")
                .len(),
            12 * 128
        );
        assert_eq!(spool.used_bytes(), 76 * 128);
        assert_records(&drain(&spool, 64), 64..140);
        append_range(&spool, 140..141).await;
        assert_records(&drain(&spool, 64), 64..141);
    }

    #[tokio::test]
    async fn a_torn_record_before_stale_ones_ends_the_spool_and_a_whole_one_after_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(spool_writing_over_a_spare(dir.path()).await);
        let tail = segment_path(dir.path(), 128);
        let whole = std::fs::read(&tail).expect("read");

        // Record 132 (the fifth) torn by a crash, stale records after it: it is the end.
        let mut torn = whole.clone();
        torn[4 * 128 + HEADER + 50] ^= 1;
        std::fs::write(&tail, &torn).expect("tear");
        let spool = Spool::open(dir.path(), options(), 64).expect("opens");
        assert_records(&drain(&spool, 64), 64..132);
        append_range(&spool, 132..134).await;
        assert_records(&drain(&spool, 64), 64..134);
        drop(spool);

        // Record 130 damaged with records 131 to 133 whole after it: those would be lost.
        let mut damaged = std::fs::read(&tail).expect("read");
        damaged[2 * 128 + HEADER + 50] ^= 1;
        std::fs::write(&tail, &damaged).expect("damage");
        let err = Spool::open(dir.path(), options(), 64).expect_err("refused");
        assert!(
            err.to_string()
                .contains("record 130 fails its checksum, yet record 131 reads whole"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_spare_renamed_before_a_crash_is_an_empty_last_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        append_range(&spool, 0..70).await;
        spool.release(64).expect("released");
        drop(spool);
        // The writer renamed a spare to start segment 70 and wrote nothing before the crash:
        // the file holds only records 0 to 31 or 32 to 63.
        let spare = dir.path().join(&files(dir.path(), SPARE_SUFFIX)[0]);
        std::fs::rename(&spare, segment_path(dir.path(), 70)).expect("renamed");
        let spool = Spool::open(dir.path(), options(), 64).expect("opens");
        assert_eq!(spool.durable(), 70);
        assert_records(&drain(&spool, 64), 64..70);
        append_range(&spool, 70..75).await;
        assert_records(&drain(&spool, 64), 64..75);
        drop(spool);

        // A segment that ends before the next one starts is damage.
        let first = segment_path(dir.path(), 64);
        let bytes = std::fs::read(&first).expect("read");
        std::fs::write(&first, &bytes[..3 * 128]).expect("cut");
        let err = Spool::open(dir.path(), options(), 64).expect_err("refused");
        assert!(
            err.to_string()
                .contains("record 67 is missing; the next segment starts at record 70"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn shipped_segments_found_on_open_become_spares_up_to_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        append_range(&spool, 0..130).await;
        drop(spool);
        let one = SpoolOptions {
            spare_segments: 1,
            ..options()
        };
        let spool = Spool::open(dir.path(), one, 96).expect("opens");
        assert_eq!(files(dir.path(), SPARE_SUFFIX).len(), 1);
        assert_eq!(
            files(dir.path(), SEGMENT_SUFFIX),
            [96, 128].map(|s| format!("{s:020}{SEGMENT_SUFFIX}"))
        );
        assert_eq!(spool.used_bytes(), 34 * 128);
        assert_records(&drain(&spool, 96), 96..130);
        drop(spool);

        // None kept: spares left from before are removed on open.
        let none = SpoolOptions {
            spare_segments: 0,
            ..options()
        };
        let spool = Spool::open(dir.path(), none, 96).expect("opens");
        assert!(files(dir.path(), SPARE_SUFFIX).is_empty());
        append_range(&spool, 130..170).await;
        spool.release(160).expect("released");
        assert!(files(dir.path(), SPARE_SUFFIX).is_empty());
        assert_records(&drain(&spool, 160), 160..170);
    }

    /// An appender's records are durable together or not at all: they never straddle
    /// two segments, so a write that fails in the next segment leaves every appender
    /// answered as its records are on disk.
    #[tokio::test]
    async fn a_failed_write_after_a_roll_answers_each_appender_as_its_records_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), options(), 0).expect("opens");
        append_range(&spool, 0..30).await;
        // The next segment, once started, cannot be written: the disk is full.
        std::os::unix::fs::symlink("/dev/full", segment_path(dir.path(), 34)).expect("link");
        // Four records from 3,840 bytes on: past the 4,096 a segment is started at, but
        // they stay together in this one.
        let many = (30..34).map(|i| (payload(i), 1)).collect();
        assert_eq!(spool.append_many(many).await.expect("appends"), 30);
        let err = spool
            .append(payload(34), 1)
            .await
            .expect_err("the full disk refuses");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(spool.durable(), 34);
        assert_records(&drain(&spool, 0), 0..34);
        drop(spool);

        std::fs::remove_file(segment_path(dir.path(), 34)).expect("unlinked");
        let spool = Spool::open(dir.path(), options(), 0).expect("reopens");
        assert_eq!(spool.durable(), 34);
        append_range(&spool, 34..36).await;
        assert_records(&drain(&spool, 0), 0..36);
    }
}
