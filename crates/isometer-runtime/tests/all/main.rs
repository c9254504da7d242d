//! Runtime tests: hand-written WAT guests, each checked for its outcome and metering.

mod abi;
mod cache;

use isometer_core::Outcome;
use isometer_runtime::{Limits, Runtime, RuntimeOptions};
use std::time::Duration;

/// A command module that writes `msg` to stdout and exits with `code`.
fn echo_and_exit(msg: &str, code: i32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{msg}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const {code}))))"#,
        len = msg.len()
    )
}

const INFINITE_LOOP: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

const GROW_FOREVER: &str = r#"(module
  (memory 1)
  (func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l))))"#;

const UNREACHABLE: &str = r#"(module (func (export "_start") unreachable))"#;

fn limits() -> Limits {
    Limits {
        fuel: 10_000_000,
        memory_bytes: 4 << 20,
        timeout: Duration::from_secs(5),
        max_output_bytes: 1024,
        ..Limits::default()
    }
}

async fn run(wat: &str, limits: Limits) -> isometer_runtime::ExecutionReport {
    let runtime = Runtime::new().expect("runtime");
    let artifact = runtime.load(wat.as_bytes()).expect("valid module");
    runtime.execute(&artifact, b"{}", &limits).await
}

#[tokio::test]
async fn success_captures_stdout_and_meters() {
    let report = run(&echo_and_exit("hello", 0), limits()).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(report.stdout, b"hello");
    assert!(
        report.usage.fuel > 0 && report.usage.fuel < 1000,
        "{:?}",
        report.usage
    );
    assert_eq!(report.usage.peak_memory_bytes, 65536);
    assert_eq!(report.usage.output_bytes, 5);
    assert!(report.usage.instantiate_us > 0, "{:?}", report.usage);
    assert!(report.usage.instantiate_us <= report.usage.wall_time_us);
}

#[tokio::test]
async fn cpu_time_follows_a_busy_guest() {
    let report = run(
        INFINITE_LOOP,
        Limits {
            fuel: 200_000_000,
            ..limits()
        },
    )
    .await;
    assert_eq!(report.outcome, Outcome::FuelExhausted);
    let (cpu, wall) = (report.usage.cpu_time_us, report.usage.wall_time_us);
    // A guest that only computes is metered the CPU time of its work: 200 million units
    // of fuel take well over 20 ms of CPU on any machine, however busy the other cores
    // are (contention stretches the wall time, not the CPU time), and never more CPU than
    // wall time.
    assert!(
        cpu >= 20_000 && cpu <= wall + 1_000,
        "cpu {cpu} µs, wall {wall} µs"
    );
}

#[tokio::test]
async fn nonzero_exit_is_failed_with_its_code() {
    let report = run(&echo_and_exit("boom", 3), limits()).await;
    assert_eq!(
        (report.outcome, report.exit_code),
        (Outcome::Failed, Some(3))
    );
}

#[tokio::test]
async fn infinite_loop_exhausts_fuel() {
    let report = run(INFINITE_LOOP, limits()).await;
    assert_eq!(report.outcome, Outcome::FuelExhausted, "{report:?}");
    assert_eq!(report.usage.fuel, limits().fuel);
}

#[tokio::test]
async fn infinite_loop_with_ample_fuel_times_out_near_its_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(200),
        ..limits()
    };
    let report = run(INFINITE_LOOP, limits).await;
    assert_eq!(report.outcome, Outcome::TimedOut, "{report:?}");
    let wall = Duration::from_micros(report.usage.wall_time_us);
    assert!(
        wall >= Duration::from_millis(200) && wall < Duration::from_secs(2),
        "{wall:?}"
    );
}

/// Once the runtime has sat idle long enough for its epoch ticker to sleep, an attempt
/// still meets its deadline: without fuel, only the epoch stops this loop (it never
/// yields, so no timer of the executor can).
#[test]
fn a_deadline_holds_after_the_runtime_sat_idle() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("executor");
        let runtime = Runtime::with_options(RuntimeOptions {
            fuel_metering: false,
            ..RuntimeOptions::default()
        })
        .expect("runtime");
        let artifact = runtime
            .load(INFINITE_LOOP.as_bytes())
            .expect("valid module");
        // The ticker sleeps after 100 ms without an attempt.
        std::thread::sleep(Duration::from_millis(500));
        let limits = Limits {
            timeout: Duration::from_millis(100),
            ..limits()
        };
        let _ = tx.send(executor.block_on(runtime.execute(&artifact, b"{}", &limits)));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the loop ran on: the epoch did not advance");
    assert_eq!(report.outcome, Outcome::TimedOut, "{report:?}");
}

#[tokio::test]
async fn memory_growth_past_the_limit_is_memory_exceeded() {
    let report = run(GROW_FOREVER, limits()).await;
    assert_eq!(report.outcome, Outcome::MemoryExceeded, "{report:?}");
    assert!(report.usage.peak_memory_bytes <= 4 << 20);
    assert!(report.usage.peak_memory_bytes > 65536);
}

#[tokio::test]
async fn output_past_the_limit_is_output_exceeded() {
    let big = "x".repeat(2000);
    let report = run(&echo_and_exit(&big, 0), limits()).await;
    assert_eq!(report.outcome, Outcome::OutputExceeded, "{report:?}");
    assert!(report.stdout.len() <= 1024);
}

#[tokio::test]
async fn unreachable_is_trapped() {
    let report = run(UNREACHABLE, limits()).await;
    assert_eq!(report.outcome, Outcome::Trapped, "{report:?}");
}

#[test]
fn modules_that_are_not_commands_are_refused() {
    let runtime = Runtime::new().expect("runtime");
    for (bytes, expect) in [
        (&b"not wasm at all"[..], "invalid tool artifact"),
        (b"(module)", "_start"),
        (
            b"(module (import \"env\" \"nope\" (func)) (func (export \"_start\")))",
            "nope",
        ),
    ] {
        let err = runtime
            .load(bytes)
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains(expect), "{err}");
    }
}

/// Recursion without end.
const DEEP_RECURSION: &str = r#"(module
  (func $down (param i64) (result i64) (call $down (i64.add (local.get 0) (i64.const 1))))
  (func (export "_start") (drop (call $down (i64.const 0)))))"#;

/// Writes the same 8 KiB to stdout forever.
const STDOUT_FLOOD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 8192))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $l))))"#;

/// Declares 64 MiB of initial memory and a data segment at its far end.
const HUGE_INITIAL_MEMORY: &str = r#"(module
  (memory 1024)
  (data (i32.const 67108000) "far away")
  (func (export "_start")))"#;

/// Imports a host function no host provides.
const MISSING_IMPORT: &str = r#"(module
  (import "isometer" "launch_missiles" (func $nope))
  (func (export "_start") (call $nope)))"#;

/// Every hostile guest is contained with its outcome, within its limit plus a small slack,
/// and the runtime that ran it still runs a trivial task normally afterwards.
#[tokio::test]
async fn hostile_guests_are_contained_and_the_host_stays_healthy() {
    /// How far past its deadline an attempt may end: one epoch tick, the async grace and
    /// scheduling on a loaded 2-core machine.
    const SLACK: Duration = Duration::from_millis(100);
    let runtime = Runtime::new().expect("runtime");
    let trivial = runtime
        .load(echo_and_exit("ok", 0).as_bytes())
        .expect("trivial");
    let tight = Limits {
        fuel: u64::MAX / 2,
        memory_bytes: 4 << 20,
        timeout: Duration::from_millis(250),
        max_output_bytes: 64 * 1024,
        ..Limits::default()
    };
    let cases: [(&str, &str, Limits, Outcome); 7] = [
        (
            "infinite loop, fuel",
            INFINITE_LOOP,
            Limits {
                fuel: 20_000_000,
                ..tight
            },
            Outcome::FuelExhausted,
        ),
        (
            "infinite loop, deadline",
            INFINITE_LOOP,
            tight,
            Outcome::TimedOut,
        ),
        (
            "memory growth bomb",
            GROW_FOREVER,
            tight,
            Outcome::MemoryExceeded,
        ),
        (
            "huge initial memory",
            HUGE_INITIAL_MEMORY,
            tight,
            Outcome::MemoryExceeded,
        ),
        ("deep recursion", DEEP_RECURSION, tight, Outcome::Trapped),
        ("stdout flood", STDOUT_FLOOD, tight, Outcome::OutputExceeded),
        (
            "imports a function that does not exist",
            MISSING_IMPORT,
            tight,
            Outcome::InvalidArtifact,
        ),
    ];
    for (name, wat, limits, expected) in cases {
        let report = match runtime.load(wat.as_bytes()) {
            Ok(artifact) => runtime.execute(&artifact, b"", &limits).await,
            Err(e @ isometer_runtime::RuntimeError::InvalidArtifact(_)) => {
                isometer_runtime::ExecutionReport::not_run(Outcome::InvalidArtifact, e.to_string())
            }
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(report.outcome, expected, "{name}: {:?}", report.detail);
        let wall = Duration::from_micros(report.usage.wall_time_us);
        assert!(wall <= limits.timeout + SLACK, "{name} ran {wall:?}");
        assert!(
            report.usage.peak_memory_bytes <= limits.memory_bytes,
            "{name}"
        );
        assert!(
            report.usage.output_bytes <= limits.max_output_bytes,
            "{name}"
        );

        let after = runtime.execute(&trivial, b"", &limits).await;
        assert_eq!(
            (after.outcome, after.stdout.as_slice()),
            (Outcome::Success, &b"ok"[..]),
            "after {name}"
        );
    }
}

/// Sleeps 300 ms in WASI `poll_oneoff`, holding its instance slot.
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 300000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_beyond_the_pool_are_throttled_and_the_pool_recovers() {
    let runtime = std::sync::Arc::new(
        Runtime::with_options(isometer_runtime::RuntimeOptions {
            max_in_flight: 2,
            ..Default::default()
        })
        .expect("runtime"),
    );
    let sleeper = runtime.load(SLEEPER.as_bytes()).expect("sleeper");
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (runtime, sleeper) = (runtime.clone(), sleeper.clone());
            tokio::spawn(async move { runtime.execute(&sleeper, b"", &limits()).await })
        })
        .collect();
    // Both slots are taken while the sleepers sleep.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trivial = runtime
        .load(echo_and_exit("ok", 0).as_bytes())
        .expect("trivial");
    let third = runtime.execute(&trivial, b"", &limits()).await;
    assert_eq!(third.outcome, Outcome::Throttled, "{:?}", third.detail);
    for holder in holders {
        assert_eq!(holder.await.expect("joined").outcome, Outcome::Success);
    }
    let after = runtime.execute(&trivial, b"", &limits()).await;
    assert_eq!(after.outcome, Outcome::Success, "{:?}", after.detail);
}

/// Prints 8 bytes at each of three places (in the data segment, past the first 64 KiB,
/// past the first MiB), then overwrites all three with `mark`.
fn scribbler(mark: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 64)
  (data (i32.const 1024) "ORIGINAL")
  (data (i32.const 16) "{mark}")
  (func $show (param $at i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $mark (param $at i32)
    (i64.store (local.get $at) (i64.load (i32.const 16))))
  (func (export "_start")
    (call $show (i32.const 1024))
    (call $show (i32.const 70000))
    (call $show (i32.const 2097152))
    (call $mark (i32.const 1024))
    (call $mark (i32.const 70000))
    (call $mark (i32.const 2097152))))"#
    )
}

/// Nothing one attempt writes is seen by the next, whether the memory slot is reused by
/// the same module or by another one.
#[tokio::test]
async fn memory_is_reset_between_attempts() {
    let runtime = Runtime::with_options(isometer_runtime::RuntimeOptions {
        max_in_flight: 2,
        ..Default::default()
    })
    .expect("runtime");
    let first = runtime
        .load(scribbler("SECRET!!").as_bytes())
        .expect("first");
    let second = runtime
        .load(scribbler("OTHERMOD").as_bytes())
        .expect("second");
    let fresh = [&b"ORIGINAL"[..], &[0; 8], &[0; 8]].concat();
    for round in 0..50 {
        for artifact in [&first, &second] {
            let report = runtime.execute(artifact, b"", &limits()).await;
            assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
            assert_eq!(report.stdout, fresh, "round {round}");
        }
    }
}
