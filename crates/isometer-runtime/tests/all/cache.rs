//! Loaded modules are kept by sha256, compiled code survives a restart on disk, and
//! oversized modules are refused.

use crate::{echo_and_exit, limits};
use isometer_core::Outcome;
use isometer_runtime::{Origin, Runtime, RuntimeError, RuntimeOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn with_cache(dir: &Path) -> Runtime {
    Runtime::with_options(RuntimeOptions {
        cache_dir: Some(dir.to_owned()),
        ..RuntimeOptions::default()
    })
    .expect("runtime")
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    entries
}

#[tokio::test]
async fn compiled_code_is_reused_in_memory_and_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("compiled");
    let module = echo_and_exit("cached", 0);

    let first = with_cache(&cache);
    let compiled = first.load(module.as_bytes()).expect("loads");
    assert_eq!(compiled.origin(), Origin::Compiled);
    assert_eq!(
        first.load(module.as_bytes()).expect("loads").origin(),
        Origin::Loaded
    );
    let files = entries(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().expect("name").to_string_lossy();
    assert!(name.starts_with(compiled.hash()), "{name}");
    let mode = std::fs::metadata(&cache).expect("dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(first);

    // A restart reads the compiled code instead of compiling, and it runs.
    let second = with_cache(&cache);
    let restored = second.load(module.as_bytes()).expect("loads");
    assert_eq!(restored.origin(), Origin::DiskCache);
    assert_eq!(restored.hash(), compiled.hash());
    let report = second.execute(&restored, b"", &limits()).await;
    assert_eq!(
        (report.outcome, report.stdout.as_slice()),
        (Outcome::Success, &b"cached"[..])
    );

    // A damaged entry is recompiled and replaced, never loaded.
    let mut bytes = std::fs::read(&files[0]).expect("entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("damage");
    let third = with_cache(&cache);
    let recompiled = third.load(module.as_bytes()).expect("loads");
    assert_eq!(recompiled.origin(), Origin::Compiled);
    let report = third.execute(&recompiled, b"", &limits()).await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
    assert_eq!(
        with_cache(&cache)
            .load(module.as_bytes())
            .expect("loads")
            .origin(),
        Origin::DiskCache
    );

    // A truncated one too.
    std::fs::write(&files[0], &bytes[..100]).expect("truncate");
    assert_eq!(
        with_cache(&cache)
            .load(module.as_bytes())
            .expect("loads")
            .origin(),
        Origin::Compiled
    );
}

#[test]
fn a_cache_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = Runtime::with_options(RuntimeOptions {
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeOptions::default()
    })
    .expect_err("refused");
    assert!(
        matches!(err, RuntimeError::Cache { .. }) && err.to_string().contains("writable by others"),
        "{err}"
    );
}

#[test]
fn an_oversized_module_is_an_invalid_artifact() {
    let runtime = Runtime::with_options(RuntimeOptions {
        max_module_bytes: 1024,
        ..RuntimeOptions::default()
    })
    .expect("runtime");
    let padding = "x".repeat(2000);
    let module = format!(r#"(module (func (export "_start")) (data "{padding}"))"#);
    let err = runtime.load(module.as_bytes()).expect_err("refused");
    assert!(
        matches!(&err, RuntimeError::InvalidArtifact(m) if m.contains("up to 1024 bytes")),
        "{err}"
    );
    assert!(runtime.load(echo_and_exit("small", 0).as_bytes()).is_ok());
}
