//! The usage writer: each task's rows are appended to the durable spool, and a shipper task
//! moves them from the spool into ClickHouse exactly once.
//!
//! - `record` returns once the task's rows are durable in the spool (group commit).
//! - The shipper gathers records into batches (at least `batch_rows`, at most
//!   `max_batch_rows` or `max_batch_bytes` in any one table, and never older than
//!   `max_delay`, or at once when someone waits in `flush`), one batch
//!   ahead of the insert in progress, inserts them in RowBinary (one insert per table), and
//!   moves its checkpoint past them once ClickHouse answered. Before sending it writes the
//!   batch's range to the checkpoint, and every row carries the batch's id.
//! - An insert that failed without a clear answer (connection cut, timeout, restart with a
//!   batch in flight) is settled before anything is sent again: the shipper waits until no
//!   insert of that batch is still running on the server, asks which of the batch's rows
//!   landed, and sends only the others. No row is lost and none lands twice.
//! - A batch the server refuses several times (its data, not an outage) is moved to
//!   `rejected/` in the spool directory, reported by `flush`, and skipped.

use crate::Store;
use crate::error::StoreError;
use crate::rowbinary::{RawRows, insert_sql};
use crate::rows::{EventRow, ManifestRecord, ManifestRow, Shipped, TaskRow, TaskRowV2, TaskRowV3};
use crate::spool::{
    GroupSealer, Spool, SpoolError, SpoolOptions, SpoolReader, SpoolRecord, SpoolStatus,
};
use clickhouse::Client;
use isometer_core::{TaskRecord, UsageEvent};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Where the spool lives and how batches are formed.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The spool directory; `None` uses a private temporary one, removed when the writer
    /// is dropped (tests, and commands that keep no data directory).
    pub spool_dir: Option<PathBuf>,
    pub spool: SpoolOptions,
    /// Ship as soon as this many rows are waiting.
    pub batch_rows: usize,
    /// Most rows in one insert: a batch ends when one of its tables has this many.
    pub max_batch_rows: usize,
    /// Most bytes in one insert, for tables of large rows (manifests carry inputs and
    /// outputs): a batch also ends when one of its tables has this many.
    pub max_batch_bytes: usize,
    /// Ship rows no later than this after the first of them was appended (`flush` ships
    /// at once). Every insert costs ClickHouse a part to write and later to merge, about
    /// the same whatever it holds, so a longer delay costs it less CPU per row; but each
    /// insert is then a larger burst of work, which tasks running beside a local server
    /// feel in their tail latency.
    pub max_delay: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            spool_dir: None,
            spool: SpoolOptions::default(),
            batch_rows: 10_000,
            max_batch_rows: 100_000,
            max_batch_bytes: 16 << 20,
            max_delay: Duration::from_millis(200),
        }
    }
}

/// Refusals of the same batch (server errors, not outages) before it is set aside.
const REFUSED_ATTEMPTS: u32 = 5;
/// Time allowed to send a batch, and to wait for the server's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const CHECKPOINT_FILE: &str = "checkpoint";
const REJECTED_DIR: &str = "rejected";

/// What the shipper has done, for `flush` and status.
#[derive(Debug, Clone, Default)]
struct ShipState {
    /// Every record below this is in ClickHouse (or set aside as rejected).
    shipped: u64,
    /// Batches set aside so far, and the last one's description.
    rejected: u64,
    last_rejected: Option<Rejected>,
    /// The last failure, while the shipper is retrying.
    last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Rejected {
    table: String,
    rows: usize,
    reason: String,
    kept: PathBuf,
}

/// Handle to the spool and its shipper; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageWriter {
    /// The database the shipper writes to; also for the few records that bypass the spool.
    store: Store,
    spool: Spool,
    state: watch::Receiver<ShipState>,
    /// Rejected batches `flush` has already reported.
    reported: Arc<AtomicU64>,
    /// Tells the gatherer that someone waits in `flush`: the batch it holds goes now.
    hurry: Arc<Notify>,
    /// Stops the shipper when the last handle goes; what it had not shipped stays in the
    /// spool for the next start.
    _shipper: Arc<StopOnDrop>,
    _temporary: Option<Arc<TemporaryDir>>,
}

#[derive(Debug)]
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A private spool directory, removed with the last writer handle.
#[derive(Debug)]
struct TemporaryDir(PathBuf);

impl Drop for TemporaryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Live figures of the writer: the spool's and the shipper's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriterStatus {
    pub spool: SpoolStatus,
    pub rejected_batches: u64,
    pub last_error: Option<String>,
}

impl UsageWriter {
    /// Opens the spool (replaying what an earlier process left) and starts the shipper.
    pub(crate) fn spawn(store: Store, options: WriterOptions) -> Result<Self, StoreError> {
        let client = Client::clone(&store.client);
        let (dir, temporary) = match &options.spool_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "isometer-spool-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                (dir.clone(), Some(Arc::new(TemporaryDir(dir))))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| SpoolError::Io {
            dir: dir.clone(),
            source,
        })?;
        let (checkpoint_file, checkpoint) = CheckpointFile::open(&dir)?;
        let spool = Spool::open(&dir, options.spool.clone(), checkpoint.shipped)?;
        let (state_tx, state) = watch::channel(ShipState {
            shipped: checkpoint.shipped,
            ..ShipState::default()
        });
        let hurry = Arc::new(Notify::new());
        let shipper = Shipper {
            client,
            hurry: hurry.clone(),
            resume: checkpoint.shipped,
            spool: spool.clone(),
            checkpoint: Arc::new(std::sync::Mutex::new(checkpoint_file)),
            dir,
            options,
            state: state_tx,
            nonce: format!(
                "{:x}{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        };
        let shipper = tokio::spawn(shipper.run(checkpoint.pending));
        let abort = shipper.abort_handle();
        Ok(UsageWriter {
            store,
            spool,
            state,
            reported: Arc::default(),
            hurry,
            _shipper: Arc::new(StopOnDrop(abort)),
            _temporary: temporary,
        })
    }

    /// Appends one task's attempts and its task record to the spool; returns once they are
    /// durable. A value that cannot be stored (money beyond the column's range) is refused
    /// before anything is written; a full spool refuses with [`StoreError::SpoolFull`].
    pub async fn record(
        &self,
        events: Vec<UsageEvent>,
        task: TaskRecord,
    ) -> Result<(), StoreError> {
        self.record_with_evidence(events, task, Vec::new()).await
    }

    /// [`UsageWriter::record`] with the attempts' signed manifests, which travel in the
    /// same spool record: a task's usage and its evidence land together.
    pub async fn record_with_evidence(
        &self,
        events: Vec<UsageEvent>,
        task: TaskRecord,
        manifests: Vec<ManifestRecord>,
    ) -> Result<(), StoreError> {
        let payload = encode_task(&events, &task, &manifests, false)?;
        let rows = u32::try_from(events.len() + 1 + manifests.len()).unwrap_or(u32::MAX);
        self.spool
            .append(payload, rows)
            .await
            .map(|_| ())
            .map_err(refused)
    }

    /// [`UsageWriter::record_with_evidence`] with the manifests' signatures made in the
    /// spool's group commit: each manifest's `signed` holds the start of its JSON, and
    /// `leaves` its leaf for `sealer`, which seals every task recorded in the same group
    /// at once. The stored JSON is that start followed by the manifest's seal. Returns the
    /// seals, one per manifest, once the record is durable.
    pub async fn record_sealed(
        &self,
        events: Vec<UsageEvent>,
        task: TaskRecord,
        manifests: Vec<ManifestRecord>,
        leaves: Vec<[u8; 32]>,
        sealer: Arc<dyn GroupSealer>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if leaves.len() != manifests.len() {
            return Err(StoreError::Corrupt(format!(
                "{} leaves for {} manifests",
                leaves.len(),
                manifests.len()
            )));
        }
        let payload = encode_task(&events, &task, &manifests, true)?;
        let rows = u32::try_from(events.len() + 1 + manifests.len()).unwrap_or(u32::MAX);
        self.spool
            .append_sealed(payload, rows, leaves, sealer)
            .await
            .map(|(_, seals)| seals)
            .map_err(refused)
    }

    /// Appends many tasks at once (bulk loads and benchmarks); one durability wait.
    pub async fn record_many(
        &self,
        tasks: &[(Vec<UsageEvent>, TaskRecord)],
    ) -> Result<(), StoreError> {
        let records = tasks
            .iter()
            .map(|(events, task)| {
                let rows = u32::try_from(events.len() + 1).unwrap_or(u32::MAX);
                encode_task(events, task, &[], false).map(|payload| (payload, rows))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.spool
            .append_many(records)
            .await
            .map(|_| ())
            .map_err(refused)
    }

    /// The database this writer ships to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a new task may start: false while the spool is full.
    pub fn has_room(&self) -> bool {
        self.spool.has_room()
    }

    /// Waits until everything recorded before this call is in ClickHouse. Fails, once per
    /// rejected batch, when a batch since the previous flush was set aside.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let target = self.spool.durable();
        if self.state.borrow().shipped < target {
            self.hurry.notify_one();
        }
        let mut state = self.state.clone();
        state
            .wait_for(|s| s.shipped >= target)
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        let state = state.borrow().clone();
        let seen = self.reported.swap(state.rejected, Ordering::Relaxed);
        match state.last_rejected {
            Some(r) if state.rejected > seen => Err(StoreError::BatchRefused {
                table: r.table,
                rows: r.rows,
                reason: r.reason,
                kept: r.kept,
            }),
            _ => Ok(()),
        }
    }

    /// The spool's figures and the shipper's last error.
    pub fn status(&self) -> Result<WriterStatus, StoreError> {
        let state = self.state.borrow().clone();
        Ok(WriterStatus {
            spool: SpoolStatus::read(self.spool.dir(), state.shipped)?,
            rejected_batches: state.rejected,
            last_error: state.last_error,
        })
    }
}

/// Why the spool did not take a record, as the writer's callers see it: a full spool is
/// [`StoreError::SpoolFull`].
fn refused(e: SpoolError) -> StoreError {
    match e {
        SpoolError::Full { .. } => StoreError::SpoolFull,
        e => e.into(),
    }
}

/// Reads a spool directory's figures without opening it (a running isometer may hold it).
pub fn spool_status(dir: &Path) -> Result<SpoolStatus, StoreError> {
    let checkpoint = Checkpoint::read(dir)?;
    Ok(SpoolStatus::read(dir, checkpoint.shipped)?)
}

/// The layout of a spool record's payload: a byte naming it, then the rows (postcard).
/// A new row layout takes a new number, so records written before it still decode.
/// Format 1: (events, task). Format 2: (events, task, manifests). Format 3: the task row
/// carries the gateway's controls (retry stop, fallback, loop cap, avoided cost). Format 4:
/// and the compliance flag. Format 5: the same rows in ClickHouse's RowBinary (see
/// [`RawRows::encode`]), so shipping copies them instead of decoding and encoding each.
/// Format 6: the same, recorded sealed ([`UsageWriter::record_sealed`]): each manifest
/// row notes where its `signed` column is, and the spool's seals follow the rows, one per
/// manifest, to be appended to that column when shipped.
const PAYLOAD_FORMAT: u8 = 5;
const SEALED_PAYLOAD_FORMAT: u8 = 6;

/// A task's rows as one spool record; `sealed`: to be sealed in the spool (format 6).
fn encode_task(
    events: &[UsageEvent],
    task: &TaskRecord,
    manifests: &[ManifestRecord],
    sealed: bool,
) -> Result<Vec<u8>, StoreError> {
    let events = events
        .iter()
        .map(EventRow::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let task = TaskRow::try_from(task)?;
    let manifests: Vec<ManifestRow> = manifests.iter().map(ManifestRow::from).collect();
    let mut rows = Batch::default();
    rows.push_typed((events, task, manifests))?;
    if sealed {
        let mut payload = vec![SEALED_PAYLOAD_FORMAT];
        rows.events.encode(&mut payload);
        rows.tasks.encode(&mut payload);
        rows.manifests.encode_sealed(&mut payload)?;
        Ok(payload)
    } else {
        let mut payload = vec![PAYLOAD_FORMAT];
        rows.events.encode(&mut payload);
        rows.tasks.encode(&mut payload);
        rows.manifests.encode(&mut payload);
        Ok(payload)
    }
}

/// The rows of one spool record written in formats 1 to 4.
type TaskRows = (Vec<EventRow>, TaskRow, Vec<ManifestRow>);

/// Decodes a record of formats 1 to 4 (postcard).
fn decode_task(record: &SpoolRecord) -> Result<TaskRows, StoreError> {
    let undecodable = |e: postcard::Error| {
        StoreError::Corrupt(format!("spool record {} does not decode: {e}", record.seq))
    };
    match record.payload.split_first() {
        Some((4, rows)) => postcard::from_bytes(rows).map_err(undecodable),
        Some((3, rows)) => postcard::from_bytes(rows)
            .map(|(events, task, manifests): (_, TaskRowV3, _)| (events, task.into(), manifests))
            .map_err(undecodable),
        Some((2, rows)) => postcard::from_bytes(rows)
            .map(|(events, task, manifests): (_, TaskRowV2, _)| (events, task.into(), manifests))
            .map_err(undecodable),
        Some((1, rows)) => postcard::from_bytes(rows)
            .map(|(events, task): (_, TaskRowV2)| (events, task.into(), Vec::new()))
            .map_err(undecodable),
        Some((format, _)) => Err(StoreError::Corrupt(format!(
            "spool record {} has payload format {format}; this isometer reads formats 1 to {SEALED_PAYLOAD_FORMAT}",
            record.seq
        ))),
        None => Err(StoreError::Corrupt(format!(
            "spool record {} is empty",
            record.seq
        ))),
    }
}

/// The shipper's progress: everything below `shipped` is in ClickHouse, and `pending`
/// names the batch being inserted, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Checkpoint {
    shipped: u64,
    pending: Option<(u64, u64)>,
}

/// The checkpoint file: two slots of [`SLOT`] bytes, written in turn in place, so that
/// moving the checkpoint is one small overwrite and one `fdatasync`: no new file, no
/// rename, no directory sync, no freed blocks. A slot is
///
/// ```text
/// "ISCP" | version u8 | 3 zero bytes | generation u64 | shipped u64 | pending u64 (0 or 1)
///        | first u64 | end u64 | crc32 u32 of the bytes before it | zeros to 64 bytes
/// ```
///
/// (little-endian). The valid slot of the highest generation is the checkpoint; a write
/// torn by a crash spoils only the slot it was writing, and the other still holds the
/// checkpoint before it, which the shipper recovers from as from any crash. Files of the
/// earlier text format (`shipped N` and `pending FIRST END` lines) are read, and replaced
/// by the slotted file on open.
#[derive(Debug)]
struct CheckpointFile {
    file: std::fs::File,
    generation: u64,
}

const SLOT: usize = 64;
const SLOT_MAGIC: &[u8; 4] = b"ISCP";
const SLOT_VERSION: u8 = 1;

impl Checkpoint {
    /// The checkpoint in `dir`; the default one when there is none.
    fn read(dir: &Path) -> Result<Self, StoreError> {
        Ok(read_checkpoint(dir)?.map_or_else(Checkpoint::default, |(c, _)| c))
    }

    fn slot(&self, generation: u64) -> [u8; SLOT] {
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(SLOT_MAGIC);
        slot[4] = SLOT_VERSION;
        let (pending, first, end) = match self.pending {
            Some((first, end)) => (1, first, end),
            None => (0, 0, 0),
        };
        for (i, word) in [generation, self.shipped, pending, first, end]
            .into_iter()
            .enumerate()
        {
            slot[8 + 8 * i..16 + 8 * i].copy_from_slice(&word.to_le_bytes());
        }
        let crc = crc32fast::hash(&slot[..48]);
        slot[48..52].copy_from_slice(&crc.to_le_bytes());
        slot
    }

    /// A slot's checkpoint and generation; `None` for a slot that is not valid.
    fn from_slot(slot: &[u8]) -> Option<(Self, u64)> {
        let word = |i: usize| {
            let at = 8 + 8 * i;
            u64::from_le_bytes(slot[at..at + 8].try_into().unwrap_or([0; 8]))
        };
        let crc = u32::from_le_bytes(slot.get(48..52)?.try_into().ok()?);
        if slot.len() != SLOT
            || &slot[..4] != SLOT_MAGIC
            || slot[4] != SLOT_VERSION
            || crc32fast::hash(&slot[..48]) != crc
        {
            return None;
        }
        let checkpoint = Checkpoint {
            shipped: word(1),
            pending: (word(2) == 1).then(|| (word(3), word(4))),
        };
        Some((checkpoint, word(0)))
    }
}

/// Reads the checkpoint file of `dir` in either format: the checkpoint, and the generation
/// of its slot (`None` for the text format). `None` when there is no file.
fn read_checkpoint(dir: &Path) -> Result<Option<(Checkpoint, Option<u64>)>, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SpoolError::Io {
                dir: dir.to_owned(),
                source,
            }
            .into());
        }
    };
    let bad = |why: &str| {
        StoreError::Corrupt(format!(
            "{} is not a shipper checkpoint: {why}",
            path.display()
        ))
    };
    if !bytes.starts_with(SLOT_MAGIC) {
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("neither slots nor text"))?;
        let mut checkpoint = Checkpoint::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |w: &str| w.parse().map_err(|_| bad(&format!("`{line}`")));
            match words.as_slice() {
                ["shipped", n] => checkpoint.shipped = number(n)?,
                ["pending", a, b] => checkpoint.pending = Some((number(a)?, number(b)?)),
                [] => {}
                _ => return Err(bad(&format!("`{line}`"))),
            }
        }
        return Ok(Some((checkpoint, None)));
    }
    // A crash while the file was first written may leave the second slot short: it is
    // then simply not valid.
    let best = bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(Checkpoint::from_slot)
        .max_by_key(|(_, generation)| *generation);
    match best {
        Some((checkpoint, generation)) => Ok(Some((checkpoint, Some(generation)))),
        None => Err(bad("neither slot is valid")),
    }
}

impl CheckpointFile {
    /// Opens the checkpoint file of `dir`, creating it (or replacing one of the text
    /// format) atomically; the checkpoint it holds.
    fn open(dir: &Path) -> Result<(Self, Checkpoint), StoreError> {
        let io = |source| SpoolError::Io {
            dir: dir.to_owned(),
            source,
        };
        let path = dir.join(CHECKPOINT_FILE);
        let (checkpoint, generation) = match read_checkpoint(dir)? {
            Some((checkpoint, Some(generation))) => (checkpoint, generation),
            found => {
                let checkpoint = found.map_or_else(Checkpoint::default, |(c, _)| c);
                let temporary = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
                {
                    use std::io::Write;
                    let mut file = std::fs::File::create(&temporary).map_err(io)?;
                    file.write_all(&checkpoint.slot(0)).map_err(io)?;
                    file.write_all(&[0u8; SLOT]).map_err(io)?;
                    file.sync_data().map_err(io)?;
                }
                std::fs::rename(&temporary, &path).map_err(io)?;
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
                (checkpoint, 0)
            }
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io)?;
        Ok((CheckpointFile { file, generation }, checkpoint))
    }

    /// Makes `checkpoint` the durable one, in the slot the last write did not use.
    fn write(&mut self, checkpoint: Checkpoint) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let generation = self.generation + 1;
        let at = (generation % 2) * SLOT as u64;
        self.file.write_all_at(&checkpoint.slot(generation), at)?;
        self.file.sync_data()?;
        self.generation = generation;
        Ok(())
    }
}

/// One batch: a range of spool records and their rows.
#[derive(Debug, Default)]
struct Batch {
    first: u64,
    end: u64,
    events: RawRows,
    tasks: RawRows,
    manifests: RawRows,
    /// Spool records in the batch (`first..end`).
    records: u64,
}

/// Batches the shipper and its gatherer pass round: one shipped, one waiting, one gathered.
const BATCHES: usize = 3;

impl Batch {
    fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Empties the batch for reuse. Each table keeps room for twice the rows it held, up
    /// to `most` bytes, so that a busy shipper does not grow its buffers (and have the
    /// kernel zero fresh pages for them) again for every batch.
    fn clear(&mut self, most: usize) {
        for table in [&mut self.events, &mut self.tasks, &mut self.manifests] {
            table.clear(most);
        }
        (self.first, self.end, self.records) = (0, 0, 0);
    }

    fn rows(&self) -> usize {
        self.events.len() + self.tasks.len() + self.manifests.len()
    }

    /// Whether one of the batch's inserts (one per table) has `max_batch_rows` rows or
    /// `max_batch_bytes` bytes.
    fn is_full(&self, options: &WriterOptions) -> bool {
        [&self.events, &self.tasks, &self.manifests]
            .iter()
            .any(|t| {
                t.len() >= options.max_batch_rows || t.bytes().len() >= options.max_batch_bytes
            })
    }

    fn add(&mut self, record: SpoolRecord) -> Result<(), StoreError> {
        match record.payload.split_first() {
            Some((&format @ (PAYLOAD_FORMAT | SEALED_PAYLOAD_FORMAT), mut rows)) => {
                let cut = |e: StoreError| {
                    StoreError::Corrupt(format!("spool record {} does not decode: {e}", record.seq))
                };
                self.events.decode_into(&mut rows).map_err(cut)?;
                self.tasks.decode_into(&mut rows).map_err(cut)?;
                if format == SEALED_PAYLOAD_FORMAT {
                    self.manifests.decode_sealed_into(&mut rows).map_err(cut)?;
                } else {
                    self.manifests.decode_into(&mut rows).map_err(cut)?;
                }
            }
            _ => self.push_typed(decode_task(&record)?)?,
        }
        if self.records == 0 {
            self.first = record.seq;
        }
        self.end = record.seq + 1;
        self.records += 1;
        Ok(())
    }

    fn push_typed(&mut self, (events, task, manifests): TaskRows) -> Result<(), StoreError> {
        events.iter().try_for_each(|r| self.events.push(r))?;
        self.tasks.push(&task)?;
        manifests.iter().try_for_each(|r| self.manifests.push(r))
    }

    fn stamp(&mut self) {
        let id = self.first;
        self.events.stamp(id);
        self.tasks.stamp(id);
        self.manifests.stamp(id);
    }
}

/// Reads and decodes batches from the spool, one ahead of the shipper: the next batch is
/// ready when the insert of the current one returns, so decoding and ClickHouse's work on
/// the insert overlap.
struct Gatherer {
    spool: Spool,
    reader: SpoolReader,
    options: WriterOptions,
    /// Batches the shipper is done with, emptied, to gather into again.
    spare: tokio::sync::mpsc::Receiver<Batch>,
    /// Someone waits in `flush`.
    hurry: Arc<Notify>,
}

/// Aborts a spawned task when dropped (the gatherer goes with its shipper).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Gatherer {
    /// Sends batches until the shipper is gone; a spool read error is sent, then ends.
    async fn run(mut self, batches: tokio::sync::mpsc::Sender<Result<Batch, StoreError>>) {
        loop {
            let next = self.gather().await;
            let failed = next.is_err();
            if batches.send(next).await.is_err() || failed {
                return;
            }
        }
    }

    /// Collects the next batch: enough rows, or rows old enough.
    async fn gather(&mut self) -> Result<Batch, StoreError> {
        // Waits for a batch the shipper is done with: the batches' buffers go round.
        let mut batch = self.spare.recv().await.unwrap_or_default();
        let mut due: Option<Instant> = None;
        // Someone waits in `flush` for what was durable when it called: once woken, the
        // next round reads all of it (the reader reads up to what is durable).
        let mut hurried = false;
        loop {
            let mut read = 0u32;
            while !batch.is_full(&self.options) {
                match self.reader.next_record()? {
                    Some(record) => batch.add(record)?,
                    None => break,
                }
                // A long backlog is read in steps: the workers also answer tasks.
                read += 1;
                if read.is_multiple_of(1_024) {
                    tokio::task::yield_now().await;
                }
            }
            if batch.rows() >= self.options.batch_rows || batch.is_full(&self.options) {
                return Ok(batch);
            }
            if !batch.is_empty() {
                let due = *due.get_or_insert_with(|| Instant::now() + self.options.max_delay);
                if hurried || Instant::now() >= due {
                    return Ok(batch);
                }
                let more = self.spool.wait_beyond(self.reader.position());
                tokio::select! {
                    () = self.hurry.notified() => hurried = true,
                    _ = tokio::time::timeout_at(due, more) => {}
                }
            } else {
                // What a `flush` waits for is in the batches before this one.
                hurried = false;
                tokio::select! {
                    () = self.hurry.notified() => hurried = true,
                    () = self.spool.wait_beyond(self.reader.position()) => {}
                }
            }
        }
    }
}

struct Shipper {
    client: Client,
    spool: Spool,
    /// Where reading resumes after the batch left in flight by an earlier process.
    resume: u64,
    checkpoint: Arc<std::sync::Mutex<CheckpointFile>>,
    dir: PathBuf,
    options: WriterOptions,
    state: watch::Sender<ShipState>,
    /// Distinguishes this process's insert query ids from an earlier one's.
    nonce: String,
    /// Handed to the gatherer.
    hurry: Arc<Notify>,
}

impl Shipper {
    async fn run(mut self, pending: Option<(u64, u64)>) {
        // A batch that was in flight when the last process stopped: settle it first.
        if let Some((first, end)) = pending {
            match self.read_batch(first, end) {
                Ok(mut batch) => self.ship(&mut batch, true).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read back the batch in flight; shipper stopped");
                    self.note_error(e.to_string());
                    return;
                }
            }
        }
        // One batch is gathered while the one before waits and the one before that is
        // shipped: three batches go round, each back to the gatherer, buffers and all,
        // once shipped.
        let (shipped, spare) = tokio::sync::mpsc::channel(BATCHES);
        for _ in 0..BATCHES {
            let _ = shipped.try_send(Batch::default());
        }
        let gatherer = Gatherer {
            spool: self.spool.clone(),
            reader: self.spool.reader(self.resume),
            options: self.options.clone(),
            spare,
            hurry: self.hurry.clone(),
        };
        let (tx, mut batches) = tokio::sync::mpsc::channel(1);
        let _gatherer = AbortOnDrop(tokio::spawn(gatherer.run(tx)));
        while let Some(next) = batches.recv().await {
            match next {
                Ok(mut batch) => {
                    self.ship(&mut batch, false).await;
                    batch.clear(self.options.max_batch_bytes);
                    let _ = shipped.try_send(batch);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool; shipper stopped");
                    self.note_error(e.to_string());
                    return;
                }
            }
        }
    }

    /// The records `first..end`, the batch an earlier process left in flight.
    fn read_batch(&mut self, first: u64, end: u64) -> Result<Batch, StoreError> {
        let mut reader = self.spool.reader(first);
        let mut batch = Batch::default();
        while reader.position() < end {
            match reader.next_record()? {
                Some(record) => batch.add(record)?,
                None => break,
            }
        }
        self.resume = end.max(first);
        Ok(batch)
    }

    /// Inserts a batch exactly once, then moves the checkpoint past it.
    async fn ship(&mut self, batch: &mut Batch, in_doubt: bool) {
        if batch.is_empty() {
            return;
        }
        batch.stamp();
        let intent = Checkpoint {
            shipped: batch.first,
            pending: Some((batch.first, batch.end)),
        };
        self.write_checkpoint(intent).await;
        // The tables at once: ClickHouse parses each insert on its own core.
        let (events, tasks, manifests) = tokio::join!(
            self.settle::<EventRow>(&mut batch.events, batch.first, in_doubt),
            self.settle::<TaskRow>(&mut batch.tasks, batch.first, in_doubt),
            self.settle::<ManifestRow>(&mut batch.manifests, batch.first, in_doubt)
        );
        let rejected = events.err().or(tasks.err()).or(manifests.err());
        if let Some(mut rejected) = rejected {
            rejected.kept = self.set_aside(batch);
            tracing::error!(
                table = %rejected.table, rows = rejected.rows, kept = %rejected.kept.display(),
                "ClickHouse keeps refusing a batch; it is set aside: {}", rejected.reason
            );
            self.state.send_modify(|s| {
                s.rejected += 1;
                s.last_rejected = Some(rejected);
            });
        }
        let done = Checkpoint {
            shipped: batch.end,
            pending: None,
        };
        self.write_checkpoint(done).await;
        let spool = self.spool.clone();
        let end = batch.end;
        match tokio::task::spawn_blocking(move || spool.release(end)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove shipped spool segments"),
            Err(e) => tracing::warn!(error = %e, "cannot remove shipped spool segments"),
        }
        self.state.send_modify(|s| {
            s.shipped = batch.end;
            s.last_error = None;
        });
    }

    /// Writes the checkpoint, retrying until the disk takes it. The syncs run on the
    /// blocking pool: a slow disk must not hold a worker that serves tasks.
    async fn write_checkpoint(&self, checkpoint: Checkpoint) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let file = self.checkpoint.clone();
            let written = tokio::task::spawn_blocking(move || {
                file.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .write(checkpoint)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let Err(e) = written else { return };
            tracing::error!(error = %e, "cannot write the shipper checkpoint");
            self.note_error(format!("checkpoint: {e}"));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn note_error(&self, error: String) {
        self.state.send_modify(|s| s.last_error = Some(error));
    }

    /// Inserts `rows` of batch `batch_id` so that each lands exactly once. `in_doubt`: an
    /// earlier insert of this batch may have landed, so first ask which rows did.
    async fn settle<T: Shipped>(
        &self,
        rows: &mut RawRows,
        batch_id: u64,
        mut in_doubt: bool,
    ) -> Result<(), Rejected> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(100);
        let mut refusals = 0;
        let mut attempt = 0u32;
        loop {
            if in_doubt {
                match self.landed::<T>(rows, batch_id).await {
                    Ok(landed) => {
                        if !landed.is_empty() {
                            tracing::info!(
                                table = T::TABLE,
                                batch_id,
                                landed = landed.len(),
                                "rows of a batch in doubt had landed; not sending them again"
                            );
                        }
                        rows.retain(|key| !landed.contains(key));
                    }
                    Err(e) => {
                        if !is_outage(&e) {
                            refusals += 1;
                            if refusals >= REFUSED_ATTEMPTS {
                                return Err(Rejected {
                                    table: T::TABLE.to_owned(),
                                    rows: rows.len(),
                                    reason: e.to_string(),
                                    kept: PathBuf::new(),
                                });
                            }
                        }
                        self.retry_later(T::TABLE, &e.to_string(), &mut backoff)
                            .await;
                        continue;
                    }
                }
            }
            if rows.is_empty() {
                return Ok(());
            }
            attempt += 1;
            let query_id = format!("isometer-{}-{batch_id}-{}-{attempt}", T::TABLE, self.nonce);
            let error = match insert::<T>(&self.client, rows, &query_id).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // Whatever the error, part of the insert may have been applied: check before
            // sending again.
            in_doubt = true;
            if !is_outage(&error) {
                refusals += 1;
                if refusals >= REFUSED_ATTEMPTS {
                    return Err(Rejected {
                        table: T::TABLE.to_owned(),
                        rows: rows.len(),
                        reason: error.to_string(),
                        kept: PathBuf::new(),
                    });
                }
            }
            self.retry_later(T::TABLE, &error.to_string(), &mut backoff)
                .await;
        }
    }

    async fn retry_later(&self, table: &str, error: &str, backoff: &mut Duration) {
        tracing::warn!(table, error, retry_in = ?backoff, "insert failed");
        self.note_error(format!("{table}: {error}"));
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }

    /// The keys of the batch's rows already in ClickHouse, once no insert of the batch is
    /// still running there.
    async fn landed<T: Shipped>(
        &self,
        rows: &RawRows,
        batch_id: u64,
    ) -> Result<HashSet<String>, clickhouse::error::Error> {
        let prefix = format!("isometer-{}-{batch_id}-%", T::TABLE);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let running: u64 = self
                .client
                .query("SELECT count() FROM system.processes WHERE query_id LIKE ?")
                .bind(&prefix)
                .fetch_one()
                .await?;
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(clickhouse::error::Error::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (low, high) = rows.days();
        let sql = format!(
            "SELECT {key} FROM {table} WHERE batch_id = ? AND {day} BETWEEN toDate(?) AND toDate(?)",
            key = T::KEY,
            table = T::TABLE,
            day = T::DAY,
        );
        let keys: Vec<String> = self
            .client
            .query(&sql)
            .bind(batch_id)
            .bind(day_text(low))
            .bind(day_text(high.max(low)))
            .fetch_all()
            .await?;
        Ok(keys.into_iter().collect())
    }

    /// Copies a rejected batch's records to `rejected/FIRST.seg`, in the spool's format.
    /// They are read back from the spool, which keeps them until the batch is released.
    fn set_aside(&self, batch: &Batch) -> PathBuf {
        let dir = self.dir.join(REJECTED_DIR);
        let path = dir.join(format!("{:020}.seg", batch.first));
        let mut bytes = Vec::new();
        let mut reader = self.spool.reader(batch.first);
        let read = loop {
            if reader.position() >= batch.end {
                break Ok(());
            }
            match reader.next_record() {
                Ok(Some(record)) => crate::spool::encode(
                    &mut bytes,
                    record.seq,
                    record.appended_ms,
                    record.rows,
                    &record.payload,
                    &[],
                ),
                Ok(None) => {
                    break Err(std::io::Error::other(format!(
                        "the spool ends at record {} of {}..{}",
                        reader.position(),
                        batch.first,
                        batch.end
                    )));
                }
                Err(e) => break Err(std::io::Error::other(e)),
            }
        };
        let written = read
            .and_then(|()| std::fs::create_dir_all(&dir))
            .and_then(|()| std::fs::write(&path, bytes));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %path.display(), "cannot keep a rejected batch");
        }
        path
    }
}

/// An error that says nothing about the data: the server is down, unreachable or slow.
fn is_outage(error: &clickhouse::error::Error) -> bool {
    matches!(
        error,
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
    )
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
fn day_text(day: u16) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_days(chrono::Days::new(u64::from(day))))
        .map_or_else(
            || "1970-01-01".to_owned(),
            |d| d.format("%Y-%m-%d").to_string(),
        )
}

/// Bytes handed to the connection at a time.
const SEND_CHUNK: usize = 1 << 20;

async fn insert<T: Shipped>(
    client: &Client,
    rows: &RawRows,
    query_id: &str,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client
        .insert_formatted_with(insert_sql::<T>())
        .with_setting("query_id", query_id)
        .with_timeouts(Some(SEND_TIMEOUT), Some(ANSWER_TIMEOUT));
    for chunk in rows.bytes().chunks(SEND_CHUNK) {
        insert.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use isometer_core::{Outcome, RunClass, Verdict};

    #[test]
    fn the_checkpoint_moves_by_overwriting_one_slot_of_a_fixed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut file, found) = CheckpointFile::open(dir.path()).expect("created");
        assert_eq!(found, Checkpoint::default());
        let path = dir.path().join(CHECKPOINT_FILE);
        let inode =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("meta"));
        let created = inode(&path);
        let mut last = Checkpoint::default();
        for i in 1..=5u64 {
            last = Checkpoint {
                shipped: i * 10,
                pending: (i % 2 == 1).then_some((i * 10, i * 10 + 7)),
            };
            file.write(last).expect("written");
            assert_eq!(Checkpoint::read(dir.path()).expect("read"), last);
        }
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            2 * SLOT as u64
        );
        assert_eq!(inode(&path), created, "the same file all along");

        // A torn write of the newest slot leaves the one before it.
        let mut bytes = std::fs::read(&path).expect("bytes");
        let newest = SLOT; // generation 5 is odd: the second slot
        bytes[newest + 20] ^= 0xff;
        std::fs::write(&path, &bytes).expect("spoiled");
        let before = Checkpoint {
            shipped: 40,
            pending: None,
        };
        assert_eq!(Checkpoint::read(dir.path()).expect("read"), before);
        // Reopened, the next write goes over the spoiled slot, not the good one.
        let (mut file, found) = CheckpointFile::open(dir.path()).expect("opened");
        assert_eq!(found, before);
        file.write(last).expect("written");
        assert_eq!(Checkpoint::read(dir.path()).expect("read"), last);

        // Both slots spoiled: an error naming the file, not a checkpoint of zero.
        std::fs::write(&path, [b'I', b'S', b'C', b'P', 0, 0, 0, 0]).expect("spoiled");
        let err = Checkpoint::read(dir.path()).expect_err("no valid slot");
        assert!(err.to_string().contains("neither slot is valid"), "{err}");
    }

    #[test]
    fn a_checkpoint_of_the_text_format_is_read_and_replaced_by_slots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CHECKPOINT_FILE);
        std::fs::write(&path, "shipped 120\npending 120 180\n").expect("written");
        let text = Checkpoint {
            shipped: 120,
            pending: Some((120, 180)),
        };
        assert_eq!(Checkpoint::read(dir.path()).expect("read"), text);
        let (mut file, found) = CheckpointFile::open(dir.path()).expect("opened");
        assert_eq!(found, text);
        assert!(std::fs::read(&path).expect("bytes").starts_with(SLOT_MAGIC));
        assert_eq!(Checkpoint::read(dir.path()).expect("read"), text);
        let next = Checkpoint {
            shipped: 180,
            pending: None,
        };
        file.write(next).expect("written");
        assert_eq!(Checkpoint::read(dir.path()).expect("read"), next);

        std::fs::write(&path, "shipped twelve\n").expect("written");
        let err = Checkpoint::read(dir.path()).expect_err("not a number");
        assert!(err.to_string().contains("`shipped twelve`"), "{err}");
    }

    fn task() -> TaskRecord {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        TaskRecord {
            task_id: "t1".into(),
            submitted: t,
            finished: t,
            tenant_id: "acme".into(),
            tier: "standard".into(),
            use_case: "u".into(),
            tool_id: "summarize".into(),
            run_id: "r".into(),
            run_class: RunClass::Customer,
            outcome: Outcome::Success,
            attempts: 1,
            total_cost: "0.5".parse().expect("decimal"),
            compliant: false,
            control: isometer_core::TaskControl::default(),
        }
    }

    fn record(payload: Vec<u8>) -> SpoolRecord {
        SpoolRecord {
            seq: 7,
            appended_ms: 0,
            rows: 1,
            payload,
        }
    }

    #[test]
    fn a_shipped_batch_is_emptied_and_gathered_into_again_without_growing() {
        let payload = |i: u64| {
            let mut t = task();
            t.task_id = format!("t{i}");
            encode_task(&[], &t, &[], false).expect("encoded")
        };
        let add = |batch: &mut Batch, from: u64, n: u64| {
            for seq in from..from + n {
                let mut r = record(payload(seq));
                r.seq = seq;
                batch.add(r).expect("decodes");
            }
        };
        // A burst: the buffer grows past the floor.
        let mut batch = Batch::default();
        add(&mut batch, 0, 5_000);
        let burst = batch.tasks.bytes().len();
        assert!(burst > crate::rowbinary::KEPT_FLOOR, "{burst} bytes");
        let grown = batch.tasks.capacity();

        batch.clear(64 << 20);
        assert!(batch.is_empty() && batch.rows() == 0 && batch.tasks.bytes().is_empty());
        assert_eq!(
            batch.tasks.capacity(),
            grown,
            "room for twice the rows is kept"
        );
        // Gathered again, it holds exactly what a fresh batch holds, in the same buffer.
        add(&mut batch, 5_000, 5_000);
        assert_eq!(
            batch.tasks.capacity(),
            grown,
            "no growth for a batch of the same size"
        );
        let mut fresh = Batch::default();
        add(&mut fresh, 5_000, 5_000);
        assert_eq!((batch.first, batch.end), (5_000, 10_000));
        assert_eq!(batch.tasks.bytes(), fresh.tasks.bytes());
        assert_eq!(batch.tasks.keys().last(), Some("t9999"));

        // Once the batches are small again, the buffer shrinks back to the floor.
        batch.clear(64 << 20);
        add(&mut batch, 10_000, 10);
        batch.clear(64 << 20);
        assert!(batch.tasks.capacity() <= crate::rowbinary::KEPT_FLOOR);
        // And never keeps more than the limit.
        add(&mut batch, 10_010, 5_000);
        batch.clear(64);
        assert!(batch.tasks.capacity() < burst);
    }

    #[test]
    fn full_batches_one_after_another_gather_into_the_same_buffer() {
        // A batch ends once a table passes `max_batch_bytes`, so its buffer last grew
        // past that size; the next full batch must find the room still there.
        let options = WriterOptions {
            max_batch_bytes: 1 << 20,
            ..WriterOptions::default()
        };
        let mut batch = Batch::default();
        let mut seq = 0;
        let mut fill = |batch: &mut Batch| {
            while !batch.is_full(&options) {
                let mut t = task();
                t.task_id = format!("t{seq}");
                let mut r = record(encode_task(&[], &t, &[], false).expect("encoded"));
                r.seq = seq;
                batch.add(r).expect("decodes");
                seq += 1;
            }
            batch.tasks.capacity()
        };
        let first = fill(&mut batch);
        assert!(first > options.max_batch_bytes, "{first} bytes");
        for round in 0..3 {
            batch.clear(options.max_batch_bytes);
            assert_eq!(
                fill(&mut batch),
                first,
                "full batch {round} grew its buffer"
            );
        }
    }

    #[test]
    fn records_of_the_previous_payload_formats_still_decode() {
        let old_row = TaskRowV2::from(&TaskRow::try_from(&task()).expect("row"));
        let mut format1 = vec![1u8];
        let rows: (Vec<EventRow>, TaskRowV2) = (Vec::new(), old_row.clone());
        postcard::to_io(&rows, &mut format1).expect("encoded");
        let (events, task_row, manifests) = decode_task(&record(format1)).expect("decodes");
        assert!(events.is_empty() && manifests.is_empty());
        assert_eq!(task_row.key(), "t1");
        let mut format2 = vec![2u8];
        let rows: (Vec<EventRow>, TaskRowV2, Vec<ManifestRow>) = (Vec::new(), old_row, Vec::new());
        postcard::to_io(&rows, &mut format2).expect("encoded");
        let (_, task_row, _) = decode_task(&record(format2)).expect("decodes");
        assert_eq!(task_row.key(), "t1");
        let mut format3 = vec![3u8];
        let v3 = TaskRowV3::from(&TaskRow::try_from(&task()).expect("row"));
        let rows: (Vec<EventRow>, TaskRowV3, Vec<ManifestRow>) = (Vec::new(), v3, Vec::new());
        postcard::to_io(&rows, &mut format3).expect("encoded");
        let (_, task_row, _) = decode_task(&record(format3)).expect("decodes");
        // A successful task written before the flag counts as compliant.
        let back = task_row.into_record().expect("record");
        assert_eq!((back.task_id.as_str(), back.compliant), ("t1", true));

        let manifest = ManifestRecord {
            manifest_id: "t1/1".into(),
            started: task().submitted,
            trace_id: "tr".into(),
            task_id: "t1".into(),
            attempt: 1,
            tenant_id: "acme".into(),
            tool_id: "summarize".into(),
            policy_id: "p".into(),
            policy_version: "v".into(),
            outcome: Outcome::Success,
            verdict: Verdict::Allow,
            key_id: "k".into(),
            digest: "d".into(),
            signed: "{}".into(),
            input: b"{}".to_vec(),
            output: vec![0xff, 0x00],
            logs: Vec::new(),
        };
        // The current format holds the rows in RowBinary, exactly as encoding them does.
        let current =
            encode_task(&[], &task(), std::slice::from_ref(&manifest), false).expect("encoded");
        let mut batch = Batch::default();
        batch.add(record(current.clone())).expect("decodes");
        let mut expected = RawRows::default();
        expected
            .push(&ManifestRow::from(&manifest))
            .expect("encoded");
        assert_eq!(batch.manifests.bytes(), expected.bytes());
        assert_eq!(batch.manifests.keys().collect::<Vec<_>>(), ["t1/1"]);
        assert_eq!(batch.tasks.keys().collect::<Vec<_>>(), ["t1"]);
        assert!(batch.events.is_empty());
        // Stamping writes the batch id at the end of the manifest row (its last column).
        batch.stamp();
        let stamped = batch.manifests.bytes();
        assert_eq!(stamped[stamped.len() - 8..], 7u64.to_le_bytes());
        // A record cut short is an error that names it, never a wrong row.
        let mut short = Batch::default();
        let err = short
            .add(record(current[..current.len() - 3].to_vec()))
            .expect_err("cut short");
        assert!(err.to_string().contains("spool record 7"), "{err}");

        let err = decode_task(&record(vec![9, 0])).expect_err("unknown format");
        assert!(err.to_string().contains("payload format 9"), "{err}");

        // Sealed (format 6): the spool's seals follow the rows, one per manifest, and each
        // is appended to its manifest's `signed` when the record is gathered.
        let sealed_manifest = |i: u16, signed: &str| ManifestRecord {
            manifest_id: format!("t1/{i}"),
            attempt: i,
            signed: signed.into(),
            ..manifest.clone()
        };
        let recorded = [
            sealed_manifest(1, "{\"m\":1"),
            sealed_manifest(2, &"x".repeat(120)),
        ];
        let seals = [b",\"s\":1}".to_vec(), vec![b'y'; 20]];
        let mut payload = encode_task(&[], &task(), &recorded, true).expect("encoded sealed");
        let unsealed_len = payload.len();
        for seal in &seals {
            payload.extend_from_slice(&(seal.len() as u32).to_le_bytes());
            payload.extend_from_slice(seal);
        }
        let mut batch = Batch::default();
        batch.add(record(payload.clone())).expect("decodes");
        let mut expected = RawRows::default();
        expected
            .push(&ManifestRow::from(&sealed_manifest(1, "{\"m\":1,\"s\":1}")))
            .expect("encoded");
        // 120 + 20 bytes: the string's length takes two bytes of LEB128 instead of one.
        expected
            .push(&ManifestRow::from(&sealed_manifest(
                2,
                &format!("{}{}", "x".repeat(120), "y".repeat(20)),
            )))
            .expect("encoded");
        assert_eq!(batch.manifests.bytes(), expected.bytes());
        assert_eq!(batch.tasks.keys().collect::<Vec<_>>(), ["t1"]);
        batch.stamp();
        let stamped = batch.manifests.bytes();
        assert_eq!(stamped[stamped.len() - 8..], 7u64.to_le_bytes());
        // A seal missing, cut short, or bytes after the seals: errors, never a wrong row.
        for broken in [
            &payload[..unsealed_len],
            &payload[..payload.len() - 1],
            &[&payload[..], b"!"].concat()[..],
        ] {
            let err = Batch::default()
                .add(record(broken.to_vec()))
                .expect_err("broken");
            assert!(err.to_string().contains("spool record 7"), "{err}");
        }
    }
}
