//! Suite `runtime`: what an isolate costs, beside the container-like way of running the
//! same tool. Writes `target/bench/runtime.json`.
//!
//! - attempt latency and throughput of the trivial tool (`noop`), full path: fresh store
//!   and instance, fuel, deadline, memory limiter and capped output on, teardown included;
//!   throughput uses every core;
//! - the peer: the same tool compiled natively, started per call in a namespace sandbox
//!   (`bwrap --unshare-all`);
//! - fuel metering's overhead on a CPU-bound guest (`busy`), metering on vs off;
//! - process RSS with 10,000 attempts in flight, each asleep in WASI `poll_oneoff`;
//! - the same trivial tool through the gateway's attempt path with policy and evidence on:
//!   the tenant's policy resolved, its limits and allowlist applied, the manifest built,
//!   checked for completeness and signed (each round of concurrent attempts under one
//!   signature, as a group commit of the spool signs them), beside the bare attempts/s.

mod common;

use isometer_runtime::{Artifact, Limits, Runtime, RuntimeOptions};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY_CALLS: usize = 20_000;
const THROUGHPUT_CALLS_PER_CORE: usize = 50_000;
const SANDBOX_CALLS: usize = 200;
const IN_FLIGHT: usize = 10_000;
const SIGNED_CALLS: usize = 200_000;
/// Attempts each core keeps in flight in the signed run, as concurrent requests would.
const SIGNED_CONCURRENCY: usize = 32;

/// Sleeps one second in `poll_oneoff` (a relative monotonic-clock subscription).
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

fn main() -> anyhow::Result<()> {
    let root = isometer_testkit::workspace_root();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = Arc::new(Runtime::new()?);
    let noop = runtime.load_file(&isometer_testkit::guest("noop"))?;
    let limits = Limits::default();

    // Latency: one thread, one attempt after another.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples = Vec::with_capacity(LATENCY_CALLS);
    for i in 0..LATENCY_CALLS + 1_000 {
        let t = Instant::now();
        let report = rt.block_on(runtime.execute(&noop, b"", &limits));
        anyhow::ensure!(
            report.outcome.is_success(),
            "noop failed: {:?}",
            report.detail
        );
        if i >= 1_000 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];

    // Throughput: every core, each thread with its own executor, one shared runtime.
    let started = Instant::now();
    let workers: Vec<_> = (0..cores)
        .map(|_| {
            let (runtime, noop) = (runtime.clone(), noop.clone());
            std::thread::spawn(move || {
                run_many(&runtime, &noop, &limits, THROUGHPUT_CALLS_PER_CORE)
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    let attempts_per_s =
        (cores * THROUGHPUT_CALLS_PER_CORE) as f64 / started.elapsed().as_secs_f64();

    // The peer: the same tool, native, one namespace sandbox per call.
    let native = common::build_native(&root, "noop")?;
    let mut sandbox = Vec::with_capacity(SANDBOX_CALLS);
    for _ in 0..SANDBOX_CALLS {
        let t = Instant::now();
        let status = Command::new("bwrap")
            .args([
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
            ])
            .arg(&native)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| anyhow::anyhow!("bwrap: {e} (install bubblewrap: `make deps`)"))?;
        anyhow::ensure!(status.success(), "sandboxed noop failed: {status}");
        sandbox.push(t.elapsed());
    }
    sandbox.sort();
    let sandbox_p50 = sandbox[sandbox.len() / 2];

    // Fuel metering: a CPU-bound guest with and without it.
    let input = br#"{"rounds": 20000000}"#;
    let busy = |options| -> anyhow::Result<Duration> {
        let runtime = Runtime::with_options(options)?;
        let artifact = runtime.load_file(&isometer_testkit::guest("busy"))?;
        let limits = Limits {
            fuel: u64::MAX / 2,
            timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let report = rt.block_on(runtime.execute(&artifact, input, &limits));
            anyhow::ensure!(
                report.outcome.is_success(),
                "busy failed: {:?}",
                report.detail
            );
            best = best.min(t.elapsed());
        }
        Ok(best)
    };
    let metered = busy(RuntimeOptions::default())?;
    let unmetered = busy(RuntimeOptions {
        fuel_metering: false,
        ..RuntimeOptions::default()
    })?;
    let fuel_overhead_ratio = metered.as_secs_f64() / unmetered.as_secs_f64();

    // Memory: 10,000 attempts asleep at once, in a runtime whose pool holds them all.
    let wide = Arc::new(Runtime::with_options(RuntimeOptions {
        max_in_flight: u32::try_from(IN_FLIGHT)? + 16,
        ..RuntimeOptions::default()
    })?);
    let (rss_mib, in_flight_ok) = rss_with_sleepers(&wide)?;

    let attempts_per_s_signed = signed_attempts_per_s(&root, cores)?;

    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let ratio_vs_sandbox = sandbox_p50.as_secs_f64() / p50.as_secs_f64();
    println!("suite runtime: noop tool, {cores} cores");
    println!(
        "  {:<46} {:>12}",
        "attempt p50 (µs)",
        format!("{:.1}", micros(p50))
    );
    println!(
        "  {:<46} {:>12}",
        "attempt p99 (µs)",
        format!("{:.1}", micros(p99))
    );
    println!(
        "  {:<46} {:>12}",
        "attempts/s, all cores",
        format!("{attempts_per_s:.0}")
    );
    println!(
        "  {:<46} {:>12}",
        "peer: bwrap --unshare-all native, p50 (µs)",
        format!("{:.1}", micros(sandbox_p50))
    );
    println!(
        "  {:<46} {:>12}",
        "ratio (peer p50 / attempt p50)",
        format!("{ratio_vs_sandbox:.0}x")
    );
    println!(
        "  {:<46} {:>12}",
        "busy guest, fuel on / off (ms)",
        format!(
            "{:.1} / {:.1}",
            micros(metered) / 1e3,
            micros(unmetered) / 1e3
        )
    );
    println!(
        "  {:<46} {:>12}",
        "fuel overhead ratio",
        format!("{fuel_overhead_ratio:.2}")
    );
    println!(
        "  {:<46} {:>12}",
        format!("RSS, {IN_FLIGHT} attempts in flight (MiB)"),
        format!("{rss_mib:.0}")
    );
    println!(
        "  {:<46} {:>12}",
        "attempts/s with policy and signed evidence",
        format!("{attempts_per_s_signed:.0}")
    );
    println!(
        "  {:<46} {:>12}",
        "signed / bare attempts/s",
        format!("{:.2}", attempts_per_s_signed / attempts_per_s)
    );
    anyhow::ensure!(
        in_flight_ok == IN_FLIGHT,
        "only {in_flight_ok} of {IN_FLIGHT} sleepers succeeded"
    );

    let json = serde_json::json!({
        "suite": "runtime",
        "cores": cores,
        "attempt_p50_us": micros(p50),
        "attempt_p99_us": micros(p99),
        "attempts_per_s": attempts_per_s,
        "sandbox_p50_us": micros(sandbox_p50),
        "ratio_vs_sandbox": ratio_vs_sandbox,
        "fuel_overhead_ratio": fuel_overhead_ratio,
        "rss_mib_10k_inflight": rss_mib,
        "attempts_per_s_signed": attempts_per_s_signed,
    });
    common::write_json(&root, "runtime", &json)?;
    Ok(())
}

/// Attempts per second of the noop tool through `Gateway::attempt`: policy, limits,
/// egress allowlist, manifest, completeness check and batch signature; nothing recorded.
fn signed_attempts_per_s(root: &std::path::Path, cores: usize) -> anyhow::Result<f64> {
    use isometer_gateway::{Gateway, TaskRequest};
    use isometer_policy::{Config, Policy, Tool};

    let mut config = Config::load(&root.join("config"))?;
    for tool in &mut config.tools {
        tool.artifact = isometer_testkit::guest(&tool.id);
    }
    config.tools.push(Tool {
        id: "noop".into(),
        artifact: isometer_testkit::guest("noop"),
        declared_at: "bench".into(),
        description: "does nothing".into(),
        default_use_case: "noop".into(),
        sha256: None,
        destructive: false,
    });
    let template = config
        .policy_for("summarize", "standard")
        .ok_or_else(|| anyhow::anyhow!("no summarize/standard policy"))?
        .clone();
    config.policies.push(Policy {
        id: "noop/standard".into(),
        tool_id: "noop".into(),
        ..template
    });
    let keys = tempfile::tempdir()?;
    let spool = tempfile::tempdir()?;
    // The writer's shipper lives here; nothing is recorded, its server is never reached.
    let setup = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let writer = setup.block_on(async {
        isometer_store::Store::new("http://127.0.0.1:9", "bench").writer(
            isometer_store::WriterOptions {
                spool_dir: Some(spool.path().to_owned()),
                ..Default::default()
            },
        )
    })?;
    let signer = isometer_evidence::BatchSigner::new(
        isometer_evidence::EvidenceKey::load_or_create(keys.path())?,
    );
    let trusted = signer.trusted().clone();
    let gateway = Arc::new(Gateway::with_runtime(
        Arc::new(config),
        Runtime::new()?,
        writer,
        signer,
        Arc::new(isometer_core::SystemClock),
    )?);
    let request = TaskRequest {
        run_id: Some("bench-run".into()),
        confidence: Some(0.9),
        trace_id: Some("bench-trace".into()),
        ..TaskRequest::new("acme", "noop", serde_json::Value::Null)
    };
    // As for the bare figure: every core, each thread with its own executor; here each
    // runs rounds of SIGNED_CONCURRENCY attempts in flight, as concurrent requests would,
    // and signs each round's manifests with one signature, as the spool's group commit
    // signs the tasks it makes durable together.
    let rounds = SIGNED_CALLS / cores / SIGNED_CONCURRENCY;
    let started = Instant::now();
    let workers: Vec<_> = (0..cores)
        .map(|_| {
            let (gateway, request) = (gateway.clone(), request.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<_>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut last = Vec::new();
                    for _ in 0..rounds {
                        let tasks: Vec<_> = (0..SIGNED_CONCURRENCY)
                            .map(|_| {
                                let (gateway, request) = (gateway.clone(), request.clone());
                                tokio::spawn(async move {
                                    let plan = gateway.plan(request)?;
                                    let sealed = gateway.attempt(&plan).await?;
                                    anyhow::ensure!(
                                        sealed.report.outcome.is_success(),
                                        "noop failed: {:?}",
                                        sealed.report.detail
                                    );
                                    Ok(sealed.evidence)
                                })
                            })
                            .collect();
                        let mut evidence = Vec::with_capacity(tasks.len());
                        for task in tasks {
                            evidence.push(task.await??);
                        }
                        let leaves: Vec<[u8; 32]> = evidence.iter().map(|e| e.leaf()).collect();
                        let seals = gateway.signer().seal(&leaves);
                        last = evidence
                            .into_iter()
                            .zip(&seals)
                            .map(|(e, seal)| e.sealed(seal))
                            .collect::<Result<Vec<_>, _>>()?;
                    }
                    Ok(last)
                })
            })
        })
        .collect();
    let mut last = Vec::new();
    for w in workers {
        last.extend(w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??);
    }
    let rate = (rounds * SIGNED_CONCURRENCY * cores) as f64 / started.elapsed().as_secs_f64();
    // What was signed holds: every manifest of each worker's last round verifies on its own.
    for signed in &last {
        signed.verify(&trusted)?;
    }
    Ok(rate)
}

fn run_many(
    runtime: &Runtime,
    artifact: &Artifact,
    limits: &Limits,
    n: usize,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        for _ in 0..n {
            let report = runtime.execute(artifact, b"", limits).await;
            anyhow::ensure!(
                report.outcome.is_success(),
                "noop failed: {:?}",
                report.detail
            );
        }
        Ok(())
    })
}

/// Starts `IN_FLIGHT` sleeping attempts, reads the process RSS while all are asleep, then
/// waits for them; returns the RSS in MiB and how many succeeded.
fn rss_with_sleepers(runtime: &Arc<Runtime>) -> anyhow::Result<(f64, usize)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sleeper = runtime.load(SLEEPER.as_bytes())?;
    let limits = Limits {
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    rt.block_on(async {
        let tasks: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (runtime, sleeper) = (runtime.clone(), sleeper.clone());
                tokio::spawn(async move { runtime.execute(&sleeper, b"", &limits).await })
            })
            .collect();
        // All are started well within the one second they sleep.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_mib();
        let mut ok = 0;
        for task in tasks {
            if task.await.is_ok_and(|r| r.outcome.is_success()) {
                ok += 1;
            }
        }
        Ok((rss, ok))
    })
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
