//! `isometer run`: one tool, one attempt, no ClickHouse.

use crate::RunArgs;
use anyhow::{Context, bail};
use isometer_core::Outcome;
use isometer_runtime::{ExecutionReport, Limits, Runtime, RuntimeError};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

pub(crate) async fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let input = match args.input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input file {path}"))?,
        None => args.input.clone(),
    };
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&input) {
        bail!("--input is not valid JSON: {e}");
    }
    let bytes = std::fs::read(&args.tool)
        .with_context(|| format!("cannot read tool {}", args.tool.display()))?;
    let runtime = Runtime::new()?;
    let limits = Limits {
        fuel: args.fuel,
        memory_bytes: args.memory_mb.saturating_mul(1 << 20),
        timeout: Duration::from_millis(args.timeout_ms),
        max_output_bytes: args.max_output_bytes,
    };
    // A module that does not load is the guest's doing: an outcome, not an error.
    let (report, artifact_hash) = match runtime.load(&bytes) {
        Ok(artifact) => (
            runtime.execute(&artifact, input.as_bytes(), &limits).await,
            Some(artifact.hash().to_owned()),
        ),
        Err(RuntimeError::InvalidArtifact(message)) => (
            ExecutionReport::not_run(Outcome::InvalidArtifact, message),
            None,
        ),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", report_json(&report, artifact_hash.as_deref()));
    } else {
        print_text(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(report: &ExecutionReport, artifact_hash: Option<&str>) -> serde_json::Value {
    json!({
        "outcome": report.outcome,
        "exit_code": report.exit_code,
        "stdout": String::from_utf8_lossy(&report.stdout),
        "stderr": String::from_utf8_lossy(&report.stderr),
        "usage": report.usage,
        "detail": report.detail,
        "artifact_hash": artifact_hash,
    })
}

fn print_text(report: &ExecutionReport) {
    println!("outcome    {}", report.outcome);
    if let Some(code) = report.exit_code {
        println!("exit code  {code}");
    }
    if let Some(detail) = &report.detail {
        println!("detail     {detail}");
    }
    let u = &report.usage;
    println!(
        "usage      fuel {} · peak memory {} bytes · wall {} µs · output {} bytes",
        u.fuel, u.peak_memory_bytes, u.wall_time_us, u.output_bytes
    );
    if !report.stdout.is_empty() {
        println!("stdout     {}", String::from_utf8_lossy(&report.stdout));
    }
    if !report.stderr.is_empty() {
        println!(
            "stderr     {}",
            String::from_utf8_lossy(&report.stderr).trim_end()
        );
    }
}
