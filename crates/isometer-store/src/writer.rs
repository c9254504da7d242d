//! The usage writer: one background task that batches usage events and task records and
//! inserts them in RowBinary, retrying with backoff while ClickHouse is unreachable.
//!
//! Callers wait when its bounded queue is full, so an outage slows submission down instead
//! of losing rows. (A durable on-disk spool in front of it is a later step; until then, rows
//! still queued when the process is killed are lost.)

use crate::error::StoreError;
use crate::rows::{EventRow, TaskRow};
use clickhouse::Client;
use isometer_core::{TaskRecord, UsageEvent};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Batching knobs.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Insert as soon as this many rows are waiting.
    pub batch_rows: usize,
    /// Insert rows no later than this after the first of them arrived.
    pub max_delay: Duration,
    /// Records queued before callers wait.
    pub queue: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_rows: 10_000,
            max_delay: Duration::from_millis(200),
            queue: 10_000,
        }
    }
}

enum Command {
    Record(Vec<EventRow>, Box<TaskRow>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record(events, _) => write!(f, "Record({} events)", events.len()),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Attempts at a batch the server refused, before it is reported as failed.
const REFUSED_ATTEMPTS: u32 = 5;
/// Time allowed to send a batch, and to wait for the server's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

impl UsageWriter {
    pub(crate) fn spawn(client: Client, options: WriterOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        tokio::spawn(run(client, options, rx));
        UsageWriter { tx }
    }

    /// Queues one task's attempts and its task record. A value that cannot be stored
    /// (money beyond the column's range) is refused here, before anything is queued.
    pub async fn record(
        &self,
        events: Vec<UsageEvent>,
        task: TaskRecord,
    ) -> Result<(), StoreError> {
        let events = events
            .iter()
            .map(EventRow::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let task = Box::new(TaskRow::try_from(&task)?);
        self.tx
            .send(Command::Record(events, task))
            .await
            .map_err(|_| StoreError::WriterClosed)
    }

    /// Waits until everything recorded before this call is in ClickHouse. Fails when a
    /// batch since the previous flush was refused by the server and given up.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Flush(done))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        wait.await.map_err(|_| StoreError::WriterClosed)?
    }
}

/// The writer task's buffers, and the first batch it gave up since the last flush.
struct Batches {
    events: Vec<EventRow>,
    tasks: Vec<TaskRow>,
    failed: Option<StoreError>,
}

async fn run(client: Client, options: WriterOptions, mut rx: mpsc::Receiver<Command>) {
    let mut batches = Batches {
        events: Vec::new(),
        tasks: Vec::new(),
        failed: None,
    };
    let mut first_at: Option<Instant> = None;
    loop {
        let due = first_at.map(|t| t + options.max_delay);
        let command = tokio::select! {
            c = rx.recv() => c,
            () = sleep_until(due), if due.is_some() => {
                batches.insert_all(&client).await;
                first_at = None;
                continue;
            }
        };
        match command {
            Some(Command::Record(events, task)) => {
                batches.events.extend(events);
                batches.tasks.push(*task);
                first_at.get_or_insert_with(Instant::now);
                if batches.events.len() + batches.tasks.len() >= options.batch_rows {
                    batches.insert_all(&client).await;
                    first_at = None;
                }
            }
            Some(Command::Flush(done)) => {
                batches.insert_all(&client).await;
                first_at = None;
                let _ = done.send(batches.failed.take().map_or(Ok(()), Err));
            }
            None => {
                batches.insert_all(&client).await;
                return;
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

impl Batches {
    /// Inserts both buffers; events first, so a task never shows without its attempts.
    async fn insert_all(&mut self, client: &Client) {
        if !self.events.is_empty() {
            let result = insert_with_retry(client, "usage_events", &self.events).await;
            self.note(result);
            self.events.clear();
        }
        if !self.tasks.is_empty() {
            let result = insert_with_retry(client, "tasks", &self.tasks).await;
            self.note(result);
            self.tasks.clear();
        }
    }

    fn note(&mut self, result: Result<(), StoreError>) {
        if let Err(e) = result {
            tracing::error!(error = %e, "usage batch given up");
            self.failed.get_or_insert(e);
        }
    }
}

/// Retries an unreachable or slow server until it answers (an outage heals; callers wait
/// meanwhile), and a batch the server refused a few times before giving it up.
async fn insert_with_retry<T>(client: &Client, table: &str, rows: &[T]) -> Result<(), StoreError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut backoff = Duration::from_millis(100);
    let mut refused = 0;
    loop {
        let error = match insert(client, table, rows).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let outage = matches!(
            error,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        );
        if !outage {
            refused += 1;
            if refused >= REFUSED_ATTEMPTS {
                return Err(StoreError::BatchRefused {
                    table: table.to_owned(),
                    rows: rows.len(),
                    source: error,
                });
            }
        }
        tracing::warn!(table, rows = rows.len(), error = %error, retry_in = ?backoff, "insert failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn insert<T>(client: &Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_timeouts(Some(SEND_TIMEOUT), Some(ANSWER_TIMEOUT));
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
