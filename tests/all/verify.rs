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

/// `[evidence] key_dir` names a key managed outside isometer: runs are signed with it and
/// verify against it; when it is missing nothing is signed (no key is made up there).
#[test]
fn a_key_named_in_the_settings_signs_and_is_never_created() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    std::fs::write(
        config.join("isometer.toml"),
        "[evidence]\nkey_dir = \"../managed-keys\"\n",
    )
    .expect("settings");
    let tool = dir.path().join("hello.wat");
    std::fs::write(&tool, crate::HELLO).expect("write");
    let run = || {
        crate::isometer()
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["run", "--json", "--tool"])
            .arg(&tool)
            .output()
            .expect("runs")
    };
    let missing = run();
    assert!(!missing.status.success());
    assert!(
        said(&missing).contains("isometer.toml"),
        "{}",
        said(&missing)
    );
    assert!(
        !dir.path().join("managed-keys").exists(),
        "no key was made up"
    );
    assert!(
        !dir.path().join("data/keys").exists(),
        "nor one in the data directory"
    );

    let keys = dir.path().join("managed-keys");
    std::fs::create_dir(&keys).expect("keys dir");
    let key = keys.join("evidence.key");
    std::fs::write(&key, "07".repeat(32)).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("0600");
    let signed = run();
    assert!(signed.status.success(), "{}", said(&signed));
    let report: Value = serde_json::from_slice(&signed.stdout).expect("json");
    let key_id = report["manifest"]["key_id"]
        .as_str()
        .expect("key id")
        .to_owned();
    let manifest = dir.path().join("run.json");
    std::fs::write(&manifest, &signed.stdout).expect("write");
    let checked = crate::isometer()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("verify")
        .arg(&manifest)
        .output()
        .expect("runs");
    assert!(checked.status.success(), "{}", said(&checked));
    assert!(!dir.path().join("data/keys").exists());
    // Another key of its own would have another id.
    std::fs::write(&key, "08".repeat(32)).expect("key");
    let other = run();
    let other: Value = serde_json::from_slice(&other.stdout).expect("json");
    assert_ne!(other["manifest"]["key_id"].as_str(), Some(key_id.as_str()));
}
