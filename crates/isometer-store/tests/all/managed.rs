//! The managed server starts on loopback, answers, and leaves no process behind.

use isometer_store::{ManagedClickHouse, ServerOptions, Store};
use std::path::Path;

/// Whether any process runs with `needle` in its command line.
pub(crate) fn process_running_with(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie has ended; it only waits to be reaped by its parent.
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
    })
}

#[tokio::test]
async fn a_managed_server_serves_then_stops_without_a_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server =
        ManagedClickHouse::start(&ServerOptions::new(dir.path())).expect("server starts");
    let config = dir.path().canonicalize().expect("dir").join("config.xml");
    let needle = config.to_str().expect("utf-8").to_owned();
    assert!(process_running_with(&needle));
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert!(Path::new(&format!("/proc/{}", server.pid())).exists());

    let store = Store::open(&server.url(), "lifecycle")
        .await
        .expect("database");
    let version = store.server_version().await.expect("version");
    assert!(
        version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some(),
        "{version}"
    );

    server.stop();
    assert!(
        !process_running_with(&needle),
        "clickhouse-server still runs after stop"
    );
    server.stop(); // idempotent
}

#[test]
fn a_second_server_on_the_same_directory_is_refused_with_its_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first =
        ManagedClickHouse::start(&ServerOptions::new(dir.path())).expect("first server starts");
    let err =
        ManagedClickHouse::start(&ServerOptions::new(dir.path())).expect_err("second must fail");
    let text = err.to_string();
    assert!(
        text.contains("did not become ready") && text.contains("exited during start-up"),
        "{text}"
    );
    assert!(
        text.contains("Another server instance in same directory"),
        "the log tail explains why: {text}"
    );
    assert!(ping_ok(&first.url()), "the first server is unharmed");
    first.stop();
}

fn ping_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.ends_with("Ok.\n")
}
