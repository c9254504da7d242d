//! Suite `attempt`: the cost of one tool call in a fresh isolate, beside its peer, the same
//! tool compiled natively and started as a fresh process per call (the container-era unit).
//!
//! Both sides run the `summarize` guest on the same input, sequentially, and are timed end
//! to end: isometer from instantiation to collected output, the peer from spawn to exit
//! with its stdout read. Writes `target/bench/attempt.json`.

mod common;

use isometer_runtime::{Limits, Runtime};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARMUP: usize = 50;
const ITERATIONS: usize = 1_000;
const INPUT: &[u8] = br#"{"text": "Agents call tools. Tools cost money. Finance reads the statement. Every cent must add up.", "max_sentences": 2}"#;

fn main() -> anyhow::Result<()> {
    let root = isometer_testkit::workspace_root();
    let wasm = isometer_testkit::guest("summarize");
    let native = common::build_native(&root, "summarize")?;

    let runtime = Runtime::new()?;
    let artifact = runtime.load_file(&wasm)?;
    let limits = Limits::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let isolate = measure(|| {
        let report = rt.block_on(runtime.execute(&artifact, INPUT, &limits));
        anyhow::ensure!(
            report.outcome.is_success(),
            "isolate attempt failed: {:?}",
            report.detail
        );
        Ok(report.stdout)
    })?;
    let process = measure(|| {
        let mut child = Command::new(&native)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?
            .write_all(INPUT)?;
        let output = child.wait_with_output()?;
        anyhow::ensure!(output.status.success(), "native tool failed");
        Ok(output.stdout)
    })?;

    let ratio = process.p50.as_secs_f64() / isolate.p50.as_secs_f64();
    println!("suite attempt: summarize tool, {ITERATIONS} sequential calls each");
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "", "p50 µs", "p99 µs", "calls/s"
    );
    for (name, s) in [
        ("isometer: fresh wasm isolate", &isolate),
        ("peer: fresh native process", &process),
    ] {
        println!(
            "{name:<34} {:>10.1} {:>10.1} {:>12.0}",
            micros(s.p50),
            micros(s.p99),
            s.per_second
        );
    }
    println!("ratio (peer p50 / isometer p50): {ratio:.1}x");

    let json = serde_json::json!({
        "suite": "attempt",
        "iterations": ITERATIONS,
        "isometer_attempt_p50_us": micros(isolate.p50),
        "isometer_attempt_p99_us": micros(isolate.p99),
        "isometer_attempts_per_s": isolate.per_second,
        "peer_process_p50_us": micros(process.p50),
        "peer_process_p99_us": micros(process.p99),
        "peer_processes_per_s": process.per_second,
        "ratio_p50": ratio,
    });
    common::write_json(&root, "attempt", &json)?;
    Ok(())
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn measure(mut call: impl FnMut() -> anyhow::Result<Vec<u8>>) -> anyhow::Result<Stats> {
    let mut expected = None;
    for _ in 0..WARMUP {
        expected = Some(call()?);
    }
    let mut samples = Vec::with_capacity(ITERATIONS);
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        let out = call()?;
        samples.push(t.elapsed());
        anyhow::ensure!(
            Some(&out) == expected.as_ref(),
            "output changed between calls"
        );
    }
    let total = started.elapsed();
    samples.sort();
    Ok(Stats {
        p50: samples[ITERATIONS / 2],
        p99: samples[ITERATIONS * 99 / 100],
        per_second: ITERATIONS as f64 / total.as_secs_f64(),
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
