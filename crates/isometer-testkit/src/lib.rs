//! Test fixtures on real parts: an ephemeral ClickHouse server shared by the tests of one
//! test binary (a fresh database per test), the guest tools built for wasm32-wasip1, and a
//! recording HTTP upstream on loopback ([`upstream`]).
//!
//! The server is started on first use, in a temporary directory, on free loopback ports.
//! It is tied to the test process: when the process ends, the kernel stops the server (see
//! `isometer_store::ManagedClickHouse`), and the next test run removes the directories
//! that dead processes left behind.

use anyhow::{Context, bail};
use isometer_store::{ManagedClickHouse, ServerOptions, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub mod upstream;
pub mod zookeeper;

const DIR_PREFIX: &str = "isometer-testkit-";

/// A port free on loopback right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

/// An evidence signer with a key of its own, in a temporary directory that lasts as long
/// as the test process.
pub fn signer() -> isometer_evidence::BatchSigner {
    static KEYS: OnceLock<tempfile::TempDir> = OnceLock::new();
    // The key is created once, before any test can read a half-written file.
    let dir = KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        isometer_evidence::EvidenceKey::load_or_create(dir.path()).expect("evidence key");
        dir
    });
    let key = isometer_evidence::EvidenceKey::load_or_create(dir.path()).expect("evidence key");
    isometer_evidence::BatchSigner::new(key)
}

/// The shared ephemeral server of this test binary.
pub fn clickhouse() -> &'static ManagedClickHouse {
    static SERVER: OnceLock<ManagedClickHouse> = OnceLock::new();
    SERVER.get_or_init(|| match start_server() {
        Ok(server) => server,
        Err(e) => panic!("the test ClickHouse server did not start: {e:#}"),
    })
}

fn start_server() -> anyhow::Result<ManagedClickHouse> {
    sweep_stale_dirs();
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
    Ok(ManagedClickHouse::start(&ServerOptions::new(dir))?)
}

/// Removes the server directories of test processes that are no longer running.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A new, migrated database on the shared server, for one test.
pub async fn database() -> Store {
    let store = empty_database().await;
    if let Err(e) = store.migrate().await {
        panic!("migrations failed on {}: {e}", store.database());
    }
    store
}

/// A new database with no tables, for tests of migrations themselves.
pub async fn empty_database() -> Store {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    match Store::open(&clickhouse().url(), &name).await {
        Ok(store) => store,
        Err(e) => panic!("cannot create test database {name}: {e}"),
    }
}

/// Path of a guest tool's `.wasm`, building the guests first if they are missing.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| build_guests().map_err(|e| format!("{e:#}")));
    match dir {
        Ok(dir) => {
            let path = dir.join(format!("{name}.wasm"));
            assert!(
                path.is_file(),
                "no guest named {name} at {}",
                path.display()
            );
            path
        }
        Err(e) => panic!("guest tools could not be built: {e}"),
    }
}

/// Where the guests are built (`make guests` builds the same place).
pub fn guest_dir() -> PathBuf {
    workspace_root().join("target/guests/wasm32-wasip1/release")
}

fn build_guests() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1"])
        .args([
            "--manifest-path",
            "guests/Cargo.toml",
            "--target-dir",
            "target/guests",
        ])
        // Settings of the cargo that runs the tests are not meant for the guests.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo to build the guests")?;
    if !status.success() {
        bail!(
            "cargo build of guests/ failed ({status}); is the wasm32-wasip1 target installed? (`rustup target add wasm32-wasip1`)"
        );
    }
    Ok(guest_dir())
}

/// Whether a live process (not a zombie waiting to be reaped) has `needle` in its command
/// line: how tests check that no server outlived its owner.
pub fn process_running_with(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
    })
}

/// Polls `probe` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
