//! The engine shared by all attempts, loaded artifacts, and the execution of one attempt.

use crate::cache::CompiledCache;
use crate::env::AttemptEnv;
use crate::error::RuntimeError;
use crate::host::{AttemptState, DeadlineReached, EgressDenied, HostState};
use crate::limits::{Limits, MeteredLimiter};
use crate::output::{CappedOutput, OutputBudget};
use crate::report::ExecutionReport;
use isometer_core::{Outcome, Usage, sha256_hex};
use nix::time::{ClockId, clock_gettime};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolConcurrencyLimitError, PoolingAllocationConfig, Store, Trap,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

/// How often the epoch advances: the resolution of wall-time deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// A running guest yields to the async executor after this much fuel, so one busy guest
/// never holds an executor thread for long.
const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

/// Dirty bytes of a linear memory that are reset in place (memset, or copied back from
/// the module's image) between attempts rather than returned to the kernel. With
/// `PAGEMAP_SCAN` only the pages the attempt dirtied are reset, so the cost follows what
/// the guest touched; 1 MiB covers what a typical Rust tool dirties (its stack and data).
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// The same for tables and async stacks.
const KEEP_RESIDENT: usize = 64 << 10;

/// Freed slots decommitted together, in one pass. Larger batches raise throughput but the
/// attempt that pays for the batch sets p99: 8 kept p99 near 35 µs where 64 gave 58 µs.
const DECOMMIT_BATCH: usize = 8;

/// Extra time the host waits past the deadline for a guest blocked outside wasm code.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// The one engine and linker every attempt shares.
pub struct Runtime {
    engine: Engine,
    linker: Linker<AttemptState>,
    /// Advances the epoch while attempts run; stops when the runtime is dropped.
    ticker: EpochTicker,
    fuel_metering: bool,
    max_module_bytes: u64,
    /// Attempts the pool holds at once.
    max_in_flight: u32,
    /// Loaded artifacts by sha256: loading the same bytes twice compiles once.
    artifacts: Mutex<HashMap<String, Artifact>>,
    compiled: Option<CompiledCache>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// A validated, compiled tool module, ready to be instantiated many times.
#[derive(Clone)]
pub struct Artifact {
    hash: String,
    pre: InstancePre<AttemptState>,
    origin: Origin,
}

/// Where a loaded artifact's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled from the module's bytes.
    Compiled,
    /// Read from the on-disk cache of compiled code.
    DiskCache,
    /// Already loaded by this runtime.
    Loaded,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("hash", &self.hash)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Artifact {
    /// sha256 of the module's bytes, hex-encoded.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }
}

/// How the engine is built.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Count fuel (CPU metering and the fuel limit). Always on in production; off only to
    /// measure what metering itself costs.
    pub fuel_metering: bool,
    /// Attempts that may be instantiated at once: the size of the pre-allocated pool of
    /// instances, memories, tables and async stacks. One more is `throttled`.
    pub max_in_flight: u32,
    /// The largest linear memory any attempt may reach (a policy may allow less, not more).
    pub max_memory_bytes: u64,
    /// The largest module, in bytes, that may be loaded; a larger one is an invalid
    /// artifact.
    pub max_module_bytes: u64,
    /// Where compiled modules are kept across restarts; `None` compiles every start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            fuel_metering: true,
            max_in_flight: 1_000,
            max_memory_bytes: 4 << 30,
            max_module_bytes: 64 << 20,
            cache_dir: None,
        }
    }
}

impl Runtime {
    pub fn new() -> Result<Self, RuntimeError> {
        Self::with_options(RuntimeOptions::default())
    }

    pub fn with_options(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        // Instances, memories, tables and fiber stacks come from a pool reserved once, so
        // an attempt costs no mmap/munmap of its own; memories start as copy-on-write
        // images of the module's data.
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(options.max_in_flight)
            .total_memories(options.max_in_flight)
            .total_tables(options.max_in_flight)
            .total_stacks(options.max_in_flight)
            .max_memory_size(usize::try_from(options.max_memory_bytes).unwrap_or(usize::MAX))
            // Reset memory in place rather than returning it to the kernel: a decommit
            // (madvise) or a copy-on-write fault changes page tables, and in a process
            // running on every core that costs a TLB shootdown on each of them. Measured
            // on 2 cores (noop tool, 2 threads): 52k attempts/s with CoW faults and
            // madvise, 250k/s with the PAGEMAP_SCAN reset, which finds the dirty pages
            // without touching page tables. Kernels before 6.7 lack the ioctl; wasmtime
            // then falls back to resetting the first `keep_resident` bytes and
            // decommitting the rest.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .async_stack_keep_resident(KEEP_RESIDENT)
            .decommit_batch_size(DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .consume_fuel(options.fuel_metering)
            .epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut AttemptState| &mut s.wasi)
            .and_then(|_| crate::host::add_to_linker(&mut linker))
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let compiled = options
            .cache_dir
            .as_deref()
            .map(|dir| CompiledCache::open(dir, &engine))
            .transpose()?;
        Ok(Runtime {
            ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            fuel_metering: options.fuel_metering,
            max_module_bytes: options.max_module_bytes,
            max_in_flight: options.max_in_flight,
            artifacts: Mutex::default(),
            compiled,
        })
    }

    /// Attempts the pool holds at once; one more is `throttled`.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// Compiles and links a module given as wasm binary or WAT text, or finds it already
    /// loaded, or in the on-disk cache, by its sha256.
    pub fn load(&self, bytes: &[u8]) -> Result<Artifact, RuntimeError> {
        if bytes.len() as u64 > self.max_module_bytes {
            return Err(RuntimeError::InvalidArtifact(format!(
                "the module is {} bytes; modules of up to {} bytes are accepted",
                bytes.len(),
                self.max_module_bytes
            )));
        }
        let hash = sha256_hex(bytes);
        if let Some(artifact) = self.loaded().get(&hash) {
            return Ok(Artifact {
                origin: Origin::Loaded,
                ..artifact.clone()
            });
        }
        let invalid = |e: wasmtime::Error| RuntimeError::InvalidArtifact(format!("{e:#}"));
        let cached = self
            .compiled
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, &hash));
        let (module, origin) = match cached {
            Some(module) => (module, Origin::DiskCache),
            None => {
                let module = Module::new(&self.engine, bytes).map_err(invalid)?;
                (module, Origin::Compiled)
            }
        };
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(_)) => {}
            _ => {
                return Err(RuntimeError::InvalidArtifact(
                    "the module exports no `_start` function; a WASI command module is expected"
                        .into(),
                ));
            }
        }
        let pre = self.linker.instantiate_pre(&module).map_err(invalid)?;
        if let (Some(cache), Origin::Compiled) = (&self.compiled, origin) {
            cache.put(&hash, &module);
        }
        let artifact = Artifact { hash, pre, origin };
        self.loaded()
            .insert(artifact.hash.clone(), artifact.clone());
        Ok(artifact)
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Artifact>> {
        self.artifacts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and loads a `.wasm` or `.wat` file.
    pub fn load_file(&self, path: &Path) -> Result<Artifact, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Runs one attempt in a fresh instance, with no task context and no network.
    pub async fn execute(
        &self,
        artifact: &Artifact,
        input: &[u8],
        limits: &Limits,
    ) -> ExecutionReport {
        self.execute_in(artifact, input, limits, AttemptEnv::default())
            .await
    }

    /// Runs one attempt in a fresh instance, for the task in `env` and with its egress
    /// gateway. Never fails: whatever the guest does becomes the report's outcome.
    pub async fn execute_in(
        &self,
        artifact: &Artifact,
        input: &[u8],
        limits: &Limits,
        env: AttemptEnv,
    ) -> ExecutionReport {
        let started = Instant::now();
        let budget = OutputBudget::new(limits.max_output_bytes);
        let stdout = CappedOutput::new(budget.clone());
        let stderr = CappedOutput::new(budget.clone());
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let mut store = Store::new(
            &self.engine,
            AttemptState {
                wasi,
                limiter: MeteredLimiter::new(limits.memory_bytes),
                host: HostState::new(env, limits, started + limits.timeout, budget.clone()),
            },
        );
        store.limiter(|s| &mut s.limiter);
        if self.fuel_metering
            && let Err(e) = store
                .set_fuel(limits.fuel)
                .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)))
        {
            return ExecutionReport::not_run(Outcome::Trapped, format!("cannot set fuel: {e:#}"));
        }
        let _ticking = self.ticker.attempt();
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        store.epoch_deadline_trap();

        let mut instantiate = Duration::ZERO;
        let (result, cpu) = {
            let run = async {
                let t = Instant::now();
                let instance = artifact.pre.instantiate_async(&mut store).await;
                instantiate = t.elapsed();
                let instance = instance?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await
            };
            CpuMetered::new(tokio::time::timeout(limits.timeout + DEADLINE_GRACE, run)).await
        };

        let fuel_used = if self.fuel_metering {
            limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0))
        } else {
            0
        };
        let AttemptState { limiter, host, .. } = store.into_data();
        let (outcome, exit_code, detail) =
            classify(result, limiter.memory_refused, budget.exceeded());
        let stdout = stdout.take_contents();
        let stderr = stderr.take_contents();
        ExecutionReport {
            outcome,
            exit_code,
            usage: Usage {
                fuel: fuel_used,
                peak_memory_bytes: limiter.peak_memory as u64,
                wall_time_us: micros(started.elapsed()),
                cpu_time_us: micros(cpu),
                instantiate_us: micros(instantiate),
                egress_bytes: host.egress_bytes,
                egress_requests: host.egress_requests,
                output_bytes: (stdout.len() + stderr.len()) as u64 + host.log_bytes,
            },
            stdout,
            stderr,
            logs: host.logs,
            egress: host.egress,
            detail,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Adds up the CPU time of the thread that polls the inner future, over every poll: an
/// async attempt may move between executor threads and is still measured whole.
struct CpuMetered<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
}

impl<F: Future> CpuMetered<F> {
    fn new(inner: F) -> Self {
        CpuMetered {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for CpuMetered<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let before = thread_cpu_time();
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_time().saturating_sub(before);
        self.spent += spent;
        polled.map(|output| (output, self.spent))
    }
}

fn thread_cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos() / EPOCH_TICK.as_nanos();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Maps how the call ended to an outcome, from typed errors and limiter state only.
fn classify(
    result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
    memory_refused: bool,
    output_exceeded: bool,
) -> (Outcome, Option<i32>, Option<String>) {
    let error = match result {
        Err(_) => {
            return (
                Outcome::TimedOut,
                None,
                Some("wall-time deadline reached".into()),
            );
        }
        Ok(Ok(())) if output_exceeded => {
            return (
                Outcome::OutputExceeded,
                Some(0),
                Some("output limit reached".into()),
            );
        }
        Ok(Ok(())) => return (Outcome::Success, Some(0), None),
        Ok(Err(e)) => e,
    };
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
        return match (*code, output_exceeded) {
            (_, true) => (
                Outcome::OutputExceeded,
                Some(*code),
                Some("output limit reached".into()),
            ),
            (0, false) => (Outcome::Success, Some(0), None),
            (code, false) => (
                Outcome::Failed,
                Some(code),
                Some(format!("exited with code {code}")),
            ),
        };
    }
    let detail = Some(format!("{error:#}"));
    if error.downcast_ref::<DeadlineReached>().is_some() {
        return (Outcome::TimedOut, None, detail);
    }
    if error.downcast_ref::<EgressDenied>().is_some() {
        return (Outcome::EgressDenied, None, detail);
    }
    if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return (Outcome::Throttled, None, detail);
    }
    if memory_refused {
        return (Outcome::MemoryExceeded, None, detail);
    }
    if output_exceeded {
        return (Outcome::OutputExceeded, None, detail);
    }
    let outcome = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::FuelExhausted,
        Some(Trap::Interrupt) => Outcome::TimedOut,
        _ => Outcome::Trapped,
    };
    (outcome, None, detail)
}

/// Ticks the ticker waits with no attempt running before it sleeps until one starts:
/// an idle runtime wakes nobody, and a busy one never pays for a wakeup per attempt.
const IDLE_TICKS_BEFORE_PARKING: u32 = 100;

/// Advances the engine's epoch every tick on its own thread while attempts run, until
/// dropped. Deadlines count from the epoch an attempt starts at, so the ticks the
/// ticker sleeps through while nothing runs change no deadline.
struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<std::thread::Thread>,
}

#[derive(Default)]
struct TickerShared {
    stop: AtomicBool,
    /// Attempts running now.
    running: AtomicUsize,
    /// The ticker sleeps until an attempt starts (or the runtime is dropped).
    parked: AtomicBool,
}

/// An attempt running, for the ticker: it keeps ticking until the last one ends.
struct Ticking<'a>(&'a TickerShared);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let shared = Arc::new(TickerShared::default());
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("isometer-epoch".into())
            .spawn(move || {
                let mut idle = 0;
                while !state.stop.load(Ordering::SeqCst) {
                    idle = match state.running.load(Ordering::SeqCst) {
                        0 => idle + 1,
                        _ => 0,
                    };
                    if idle >= IDLE_TICKS_BEFORE_PARKING {
                        // An attempt that starts after `parked` is set sees it and wakes
                        // this thread; one that started before is seen in `running`.
                        state.parked.store(true, Ordering::SeqCst);
                        while state.running.load(Ordering::SeqCst) == 0
                            && !state.stop.load(Ordering::SeqCst)
                        {
                            std::thread::park();
                        }
                        state.parked.store(false, Ordering::SeqCst);
                        idle = 0;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map(|handle| handle.thread().clone())
            .inspect_err(|e| tracing::error!("cannot start the epoch ticker: {e}"))
            .ok();
        EpochTicker { shared, thread }
    }

    /// Counts an attempt as running until the guard is dropped, waking the ticker if it
    /// sleeps.
    fn attempt(&self) -> Ticking<'_> {
        self.shared.running.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst)
            && let Some(thread) = &self.thread
        {
            thread.unpark();
        }
        Ticking(&self.shared)
    }

    /// Whether the ticker sleeps for want of running attempts.
    #[cfg(test)]
    fn parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod ticker_tests {
    use super::*;

    /// Whether `holds` holds within `within`, looking every 2 ms.
    fn within(within: Duration, holds: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            if holds() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        holds()
    }

    #[test]
    fn the_epoch_ticker_sleeps_while_no_attempt_runs() {
        let ticker = EpochTicker::start(Engine::default());
        assert!(within(Duration::from_secs(5), || ticker.parked()));
        let attempt = ticker.attempt();
        assert!(within(Duration::from_secs(1), || !ticker.parked()));
        // However long an attempt runs, the ticker ticks for it.
        std::thread::sleep(EPOCH_TICK * (IDLE_TICKS_BEFORE_PARKING + 50));
        assert!(!ticker.parked());
        drop(attempt);
        assert!(within(Duration::from_secs(5), || ticker.parked()));
    }
}
