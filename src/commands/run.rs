//! `isometer run`: one tool, one attempt, no ClickHouse.

use crate::{Cli, RunArgs};
use anyhow::{Context, bail};
use isometer_core::{Money, Outcome, Verdict, sha256_hex};
use isometer_evidence::{MANIFEST_VERSION, Manifest};
use isometer_gateway::AllowlistEgress;
use isometer_runtime::{AttemptEnv, ExecutionReport, Limits, RuntimeError, TaskContext};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn run(cli: &Cli, args: &RunArgs) -> anyhow::Result<ExitCode> {
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
    let egress = AllowlistEgress::parse(&args.allow_host)?;
    let runtime = super::wasm_runtime(cli)?;
    let limits = Limits {
        fuel: args.fuel,
        memory_bytes: args.memory_mb.saturating_mul(1 << 20),
        timeout: Duration::from_millis(args.timeout_ms),
        max_output_bytes: args.max_output_bytes,
        max_egress_bytes: args.max_egress_bytes,
        max_egress_requests: args.max_egress_requests,
    };
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let tool_id = args
        .tool
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let env = AttemptEnv {
        context: TaskContext {
            task_id: "run".into(),
            attempt: 1,
            tool_id: tool_id.clone(),
            ..TaskContext::default()
        },
        egress: Arc::new(egress),
    };
    // A module that does not load is the guest's doing: an outcome, not an error.
    let (report, artifact_hash) = match runtime.load(&bytes) {
        Ok(artifact) => (
            runtime
                .execute_in(&artifact, input.as_bytes(), &limits, env)
                .await,
            Some(artifact.hash().to_owned()),
        ),
        Err(RuntimeError::InvalidArtifact(message)) => (
            ExecutionReport::not_run(Outcome::InvalidArtifact, message),
            None,
        ),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        // The evidence of the run: what ran, on what, with what result, signed with this
        // data directory's key (`isometer verify` checks it).
        let key = super::evidence_key(cli, true)?;
        let finished_ms = started_ms
            .saturating_add(i64::try_from(report.usage.wall_time_us / 1000).unwrap_or(i64::MAX));
        let manifest = key.sign(Manifest {
            manifest_version: MANIFEST_VERSION,
            trace_id: "run".into(),
            task_id: "run".into(),
            attempt: 1,
            run_id: "run".into(),
            tenant_id: String::new(),
            tool_id: tool_id.clone(),
            use_case: String::new(),
            policy_id: String::new(),
            policy_version: String::new(),
            artifact_hash: sha256_hex(&bytes),
            input_hash: sha256_hex(input.as_bytes()),
            output_hash: sha256_hex(&report.stdout),
            outcome: report.outcome,
            verdict: if report
                .egress
                .iter()
                .any(|e| e.verdict == isometer_runtime::Verdict::Deny)
            {
                Verdict::Deny
            } else {
                Verdict::Allow
            },
            usage: report.usage,
            egress: isometer_gateway::egress_evidence(&report.egress),
            poisoning: Vec::new(),
            approval_id: None,
            confidence: None,
            started_ms,
            finished_ms,
            rate_card_version: String::new(),
            cost: Money::ZERO,
            missing_fields: Vec::new(),
            output_withheld: false,
        })?;
        let mut json = report_json(&report, artifact_hash.as_deref());
        json["manifest"] = serde_json::to_value(&manifest)?;
        println!("{json}");
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
        "logs": report.logs,
        "egress": report.egress,
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
        "usage      fuel {} · peak memory {} bytes · wall {} µs · cpu {} µs · instantiate {} µs",
        u.fuel, u.peak_memory_bytes, u.wall_time_us, u.cpu_time_us, u.instantiate_us
    );
    println!(
        "           egress {} bytes in {} requests · output {} bytes",
        u.egress_bytes, u.egress_requests, u.output_bytes
    );
    for call in &report.egress {
        let verdict = match call.verdict {
            isometer_runtime::Verdict::Allow => "allow",
            isometer_runtime::Verdict::Deny => "deny",
        };
        let status = call
            .status
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        println!(
            "egress     {verdict} {} {} → {status} ({}){}",
            call.method,
            call.url,
            call.rule.as_deref().unwrap_or("no rule"),
            call.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    for record in &report.logs {
        println!("log        {:?} {}", record.level, record.fields);
    }
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
