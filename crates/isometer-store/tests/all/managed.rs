//! The managed server starts on loopback, answers, and leaves no process behind.

use isometer_store::{ManagedClickHouse, ServerOptions, Store, StoreError};
use isometer_testkit::process_running_with;
use std::path::Path;

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
fn a_second_server_on_the_same_directory_is_refused_before_touching_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first =
        ManagedClickHouse::start(&ServerOptions::new(dir.path())).expect("first server starts");
    let config_before = std::fs::read_to_string(first.dir().join("config.xml")).expect("config");

    let err = ManagedClickHouse::start(&ServerOptions::new(dir.path())).expect_err("second fails");
    assert!(matches!(err, StoreError::DirInUse(_)), "{err}");
    assert!(
        err.to_string()
            .contains("in use by another isometer process"),
        "{err}"
    );
    let config_after = std::fs::read_to_string(first.dir().join("config.xml")).expect("config");
    assert_eq!(
        config_before, config_after,
        "the running server's config is untouched"
    );
    assert!(ping_ok(&first.url()), "the first server is unharmed");

    first.stop();
    drop(first);
    // Once the first owner is gone, the directory is free again.
    let mut again = ManagedClickHouse::start(&ServerOptions::new(dir.path())).expect("restarts");
    assert!(ping_ok(&again.url()));
    again.stop();
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

#[tokio::test]
async fn a_server_at_idle_priority_runs_every_thread_under_sched_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ManagedClickHouse::start(&ServerOptions {
        idle_priority: true,
        ..ServerOptions::new(dir.path())
    })
    .expect("server starts");
    let store = Store::open(&server.url(), "idle").await.expect("database");
    store.server_version().await.expect("it answers");
    // The policy is field 41 of /proc/<pid>/task/<tid>/stat; SCHED_IDLE is 5.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).expect("threads");
    let mut threads = 0;
    for task in tasks {
        let stat =
            std::fs::read_to_string(task.expect("thread").path().join("stat")).expect("stat");
        let after_name = stat.rsplit_once(')').expect("(comm)").1;
        let policy = after_name.split_whitespace().nth(41 - 3).expect("policy");
        assert_eq!(policy, "5", "a thread not under SCHED_IDLE: {stat}");
        threads += 1;
    }
    assert!(threads > 1, "{threads} threads");
    server.stop();
}
