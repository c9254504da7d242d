//! Capped in-memory stdout and stderr that remember whether the guest tried to exceed them.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// One output stream of an attempt. stdout and stderr share a byte budget.
#[derive(Debug, Clone)]
pub(crate) struct CappedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    budget: Arc<OutputBudget>,
}

/// The bytes both streams may still write, and whether a write was refused.
#[derive(Debug)]
pub(crate) struct OutputBudget {
    remaining: AtomicU64,
    exceeded: AtomicBool,
}

impl OutputBudget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(OutputBudget {
            remaining: AtomicU64::new(limit),
            exceeded: AtomicBool::new(false),
        })
    }

    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes from the budget, or refuses all of them.
    pub(crate) fn take(&self, n: usize) -> bool {
        let n = n as u64;
        let taken = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            });
        if taken.is_err() {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        taken.is_ok()
    }
}

impl CappedOutput {
    pub(crate) fn new(budget: Arc<OutputBudget>) -> Self {
        CappedOutput {
            buffer: Arc::default(),
            budget,
        }
    }

    pub(crate) fn take_contents(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn append(&self, bytes: &[u8]) -> bool {
        if !self.budget.take(bytes.len()) {
            return false;
        }
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        true
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::msg(
                "output limit reached",
            )))
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Announce room for any write: the limit is enforced, and recorded, in `write`.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.append(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(std::io::Error::other("output limit reached")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
