//! `isometer verify`: a signed manifest's signature, and the files it names.

use crate::{Cli, VerifyArgs};
use anyhow::Context;
use isometer_evidence::SignedManifest;
use std::process::ExitCode;

pub(crate) fn verify(cli: &Cli, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("cannot read {}", args.manifest.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.manifest.display()))?;
    // `run --json` output carries the signed manifest under "manifest".
    let signed = match value.get("signature") {
        Some(_) => value,
        None => value.get("manifest").cloned().unwrap_or(value),
    };
    let signed: SignedManifest = serde_json::from_value(signed)
        .with_context(|| format!("{} holds no signed manifest", args.manifest.display()))?;
    let key = super::evidence_key(cli, false)?;
    let read = |path: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        path.as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()
    };
    let (artifact, input, output) = (
        read(&args.artifact)?,
        read(&args.input)?,
        read(&args.output)?,
    );
    let checked = signed.verify(&key.trusted()).and_then(|()| {
        signed.check_contents(artifact.as_deref(), input.as_deref(), output.as_deref())
    });
    match checked {
        Ok(()) => {
            let files: Vec<&str> = [
                ("artifact", &artifact),
                ("input", &input),
                ("output", &output),
            ]
            .iter()
            .filter(|(_, bytes)| bytes.is_some())
            .map(|(name, _)| *name)
            .collect();
            println!(
                "ok: task {} attempt {} signed by key {}{}",
                signed.manifest.task_id,
                signed.manifest.attempt,
                signed.key_id,
                if files.is_empty() {
                    String::new()
                } else {
                    format!("; {} match", files.join(", "))
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("not verified: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
