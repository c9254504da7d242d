//! `isometer run --json` signs a manifest; `isometer verify` checks it and the files it
//! names, and catches every kind of tampering.

use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn verify(data: &Path, manifest: &Path, files: &[(&str, &Path)]) -> Output {
    let mut command = crate::isometer();
    command
        .arg("--data-dir")
        .arg(data)
        .arg("verify")
        .arg(manifest);
    for (flag, path) in files {
        command.arg(flag).arg(path);
    }
    command.output().expect("runs")
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_signed_run_verifies_and_tampering_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let tool = dir.path().join("hello.wat");
    let input = dir.path().join("input.json");
    std::fs::write(&tool, crate::HELLO).expect("write");
    std::fs::write(&input, r#"{"question": 42}"#).expect("write");
    let run = crate::isometer()
        .arg("--data-dir")
        .arg(&data)
        .args(["run", "--json", "--tool"])
        .arg(&tool)
        .arg("--input")
        .arg(format!("@{}", input.display()))
        .output()
        .expect("runs");
    assert!(run.status.success(), "{}", said(&run));
    let report: Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(
        report["manifest"]["manifest"]["outcome"], "success",
        "{report}"
    );
    let manifest = dir.path().join("run.json");
    std::fs::write(&manifest, &run.stdout).expect("write");
    let output = dir.path().join("output");
    std::fs::write(&output, report["stdout"].as_str().expect("stdout")).expect("write");

    let ok = verify(
        &data,
        &manifest,
        &[
            ("--artifact", &tool),
            ("--input", &input),
            ("--output", &output),
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", said(&ok));
    assert!(
        said(&ok).contains("artifact, input, output match"),
        "{}",
        said(&ok)
    );

    // Each file that is not the one that ran is named.
    let other = dir.path().join("other");
    std::fs::write(&other, "something else").expect("write");
    for (flag, what) in [
        ("--artifact", "artifact"),
        ("--input", "input"),
        ("--output", "output"),
    ] {
        let wrong = verify(&data, &manifest, &[(flag, &other)]);
        assert_eq!(wrong.status.code(), Some(1), "{flag}: {}", said(&wrong));
        assert!(
            said(&wrong).contains(&format!("the {what} hash is")),
            "{}",
            said(&wrong)
        );
    }

    // A changed manifest no longer matches its signature.
    let mut tampered = report.clone();
    tampered["manifest"]["manifest"]["usage"]["fuel"] = Value::from(1);
    let tampered_file = dir.path().join("tampered.json");
    std::fs::write(&tampered_file, tampered.to_string()).expect("write");
    let bad = verify(&data, &tampered_file, &[]);
    assert_eq!(bad.status.code(), Some(1), "{}", said(&bad));
    assert!(
        said(&bad).contains("changed after signing"),
        "{}",
        said(&bad)
    );

    // Another installation's key is not trusted.
    let stranger = dir.path().join("stranger");
    let run_elsewhere = crate::isometer()
        .arg("--data-dir")
        .arg(&stranger)
        .args(["run", "--json", "--tool"])
        .arg(&tool)
        .output()
        .expect("runs");
    assert!(run_elsewhere.status.success());
    let untrusted = verify(
        &data,
        &{
            let f = dir.path().join("elsewhere.json");
            std::fs::write(&f, &run_elsewhere.stdout).expect("write");
            f
        },
        &[],
    );
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        said(&untrusted).contains("not trusted"),
        "{}",
        said(&untrusted)
    );
}
