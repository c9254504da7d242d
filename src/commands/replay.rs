//! `isometer replay`: write an attempt's replay package from ClickHouse, or run one and
//! compare what comes out with what its manifest says came out.
//!
//! A package is a directory: `manifest.json` (the signed manifest), `input.json`,
//! `output` (stdout as it was), `logs.txt` (stderr), `artifact.wasm` and `policy/` (the
//! configuration version the attempt ran under). A trace with several attempts gives one
//! package per attempt, in `TASK-ATTEMPT/` under the output directory.

use crate::Cli;
use anyhow::{Context, bail};
use isometer_core::sha256_hex;
use isometer_evidence::{EvidenceKey, SignedManifest};
use isometer_gateway::AllowlistEgress;
use isometer_policy::Config;
use isometer_runtime::{AttemptEnv, TaskContext};
use isometer_store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const MANIFEST: &str = "manifest.json";

/// Writes the packages of every attempt of `trace_id`.
pub(crate) async fn export(store: &Store, trace_id: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let records = store.manifests_by_trace(trace_id).await?;
    if records.is_empty() {
        bail!(
            "no manifest has trace id `{trace_id}` in database {}",
            store.database()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for record in &records {
        let signed: SignedManifest = serde_json::from_str(&record.signed)
            .with_context(|| format!("manifest {} does not parse", record.manifest_id))?;
        let m = &signed.manifest;
        let dir = out.join(format!("{}-{}", m.task_id, m.attempt));
        std::fs::create_dir_all(&dir)?;
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))
        };
        write(MANIFEST, serde_json::to_string_pretty(&signed)?.as_bytes())?;
        write("input.json", &record.input)?;
        write("output", &record.output)?;
        write("logs.txt", &record.logs)?;
        let mut missing = Vec::new();
        if !m.artifact_hash.is_empty() {
            match store.artifact(&m.artifact_hash).await? {
                Some(bytes) => write("artifact.wasm", &bytes)?,
                None => missing.push(format!("artifact {}", m.artifact_hash)),
            }
        }
        let files = store.config_files(&m.policy_version).await?;
        if files.is_empty() {
            missing.push(format!("configuration version {}", m.policy_version));
        } else {
            let policy = dir.join("policy");
            std::fs::create_dir_all(&policy)?;
            for (name, text) in files {
                std::fs::write(policy.join(&name), text)?;
            }
        }
        println!(
            "{}: task {} attempt {}, {} under {}{}",
            dir.display(),
            m.task_id,
            m.attempt,
            m.outcome,
            if m.policy_id.is_empty() {
                "no policy"
            } else {
                &m.policy_id
            },
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (not archived: {})", missing.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the package in `dir` (or every package under it) and compares output hashes.
pub(crate) async fn run(cli: &Cli, dir: &Path) -> anyhow::Result<ExitCode> {
    let packages: Vec<PathBuf> = if dir.join(MANIFEST).exists() {
        vec![dir.to_owned()]
    } else {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(MANIFEST).exists())
            .collect();
        found.sort();
        found
    };
    if packages.is_empty() {
        bail!("{} holds no replay package ({MANIFEST})", dir.display());
    }
    let runtime = super::wasm_runtime(cli)?;
    let key = super::evidence_key(cli, false).ok();
    let mut all_reproduced = true;
    for package in &packages {
        let reproduced = run_one(&runtime, key.as_ref(), package).await?;
        all_reproduced &= reproduced;
    }
    Ok(if all_reproduced {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_one(
    runtime: &isometer_runtime::Runtime,
    key: Option<&EvidenceKey>,
    dir: &Path,
) -> anyhow::Result<bool> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .with_context(|| format!("cannot read {}", dir.join(name).display()))
    };
    let signed: SignedManifest = serde_json::from_slice(&read(MANIFEST)?)
        .with_context(|| format!("{} holds no signed manifest", dir.join(MANIFEST).display()))?;
    let m = &signed.manifest;
    let label = format!(
        "{} (task {} attempt {})",
        dir.display(),
        m.task_id,
        m.attempt
    );
    match key {
        Some(key) => match signed.verify(&key.trusted()) {
            Ok(()) => println!("{label}: signature verified (key {})", signed.key_id),
            Err(e) => {
                println!("{label}: not reproduced: {e}");
                return Ok(false);
            }
        },
        None => println!("{label}: signature not checked: this data directory has no evidence key"),
    }
    if m.artifact_hash.is_empty() {
        println!("{label}: nothing ran ({}); nothing to replay", m.outcome);
        return Ok(m.output_hash.is_empty());
    }
    let artifact_bytes = read("artifact.wasm")?;
    let input = read("input.json")?;
    if let Err(e) = signed.check_contents(Some(&artifact_bytes), Some(&input), None) {
        println!("{label}: not reproduced: {e}");
        return Ok(false);
    }
    let config = Config::load_archived(&dir.join("policy")).map_err(|e| {
        anyhow::anyhow!(
            "the archived configuration of {} does not load: {e}",
            dir.display()
        )
    })?;
    if config.version != m.policy_version {
        bail!(
            "{}: the archived configuration is version {}, the manifest names {}",
            dir.display(),
            config.version,
            m.policy_version
        );
    }
    let policy = config
        .policies
        .iter()
        .find(|p| p.id == m.policy_id)
        .with_context(|| {
            format!(
                "policy `{}` is not in the archived configuration",
                m.policy_id
            )
        })?;
    let limits = isometer_gateway::policy_limits(policy);
    let env = AttemptEnv {
        context: TaskContext {
            task_id: m.task_id.clone(),
            attempt: u32::from(m.attempt),
            tenant_id: m.tenant_id.clone(),
            tool_id: m.tool_id.clone(),
            trace_id: m.trace_id.clone(),
            run_id: m.run_id.clone(),
            use_case: m.use_case.clone(),
        },
        // Egress goes out again, under the same allowlist: replay reproduces a tool that
        // reads the network only when its upstreams answer as they did.
        egress: Arc::new(AllowlistEgress::new(policy.network_allowlist.clone())),
    };
    let artifact = runtime.load(&artifact_bytes)?;
    let report = runtime.execute_in(&artifact, &input, &limits, env).await;
    let output_hash = sha256_hex(&report.stdout);
    let same = output_hash == m.output_hash;
    println!(
        "{label}: {} · outcome {} (recorded {}) · output {} (recorded {})",
        if same { "reproduced" } else { "not reproduced" },
        report.outcome,
        m.outcome,
        &output_hash[..16],
        m.output_hash.get(..16).unwrap_or(&m.output_hash),
    );
    Ok(same)
}
