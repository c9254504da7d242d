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
    Record(Vec<UsageEvent>, Box<TaskRecord>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record(events, task) => {
                write!(f, "Record({} events, {})", events.len(), task.task_id)
            }
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl UsageWriter {
    pub(crate) fn spawn(client: Client, options: WriterOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        tokio::spawn(run(client, options, rx));
        UsageWriter { tx }
    }

    /// Queues one task's attempts and its task record.
    pub async fn record(
        &self,
        events: Vec<UsageEvent>,
        task: TaskRecord,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Command::Record(events, Box::new(task)))
            .await
            .map_err(|_| StoreError::WriterClosed)
    }

    /// Waits until everything recorded before this call is in ClickHouse.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Flush(done))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        wait.await.map_err(|_| StoreError::WriterClosed)
    }
}

async fn run(client: Client, options: WriterOptions, mut rx: mpsc::Receiver<Command>) {
    let mut events: Vec<EventRow> = Vec::new();
    let mut tasks: Vec<TaskRow> = Vec::new();
    let mut first_at: Option<Instant> = None;
    loop {
        let due = first_at.map(|t| t + options.max_delay);
        let command = tokio::select! {
            c = rx.recv() => c,
            () = sleep_until(due), if due.is_some() => {
                insert_all(&client, &mut events, &mut tasks).await;
                first_at = None;
                continue;
            }
        };
        match command {
            Some(Command::Record(new_events, task)) => {
                events.extend(new_events.iter().map(EventRow::from));
                tasks.push(TaskRow::from(&*task));
                first_at.get_or_insert_with(Instant::now);
                if events.len() + tasks.len() >= options.batch_rows {
                    insert_all(&client, &mut events, &mut tasks).await;
                    first_at = None;
                }
            }
            Some(Command::Flush(done)) => {
                insert_all(&client, &mut events, &mut tasks).await;
                first_at = None;
                let _ = done.send(());
            }
            None => {
                insert_all(&client, &mut events, &mut tasks).await;
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

/// Inserts both buffers, retrying each until it succeeds.
async fn insert_all(client: &Client, events: &mut Vec<EventRow>, tasks: &mut Vec<TaskRow>) {
    if !events.is_empty() {
        insert_with_retry(client, "usage_events", events).await;
        events.clear();
    }
    if !tasks.is_empty() {
        insert_with_retry(client, "tasks", tasks).await;
        tasks.clear();
    }
}

async fn insert_with_retry<T>(client: &Client, table: &str, rows: &[T])
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match insert(client, table, rows).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(table, rows = rows.len(), error = %e, retry_in = ?backoff, "insert failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn insert<T>(client: &Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
