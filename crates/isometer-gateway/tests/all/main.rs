//! Egress through the allowlist gateway: real guests in wasmtime, real HTTP on loopback.

mod submit;
mod traffic;

use isometer_core::Outcome;
use isometer_gateway::AllowlistEgress;
use isometer_policy::HostRule;
use isometer_runtime::{
    AttemptEnv, ExecutionReport, Limits, Runtime, RuntimeOptions, TaskContext, Verdict,
};
use isometer_testkit::upstream::Upstream;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn allow(rules: &[&str]) -> AttemptEnv {
    AttemptEnv {
        context: TaskContext {
            task_id: "task-7".into(),
            attempt: 1,
            tenant_id: "acme".into(),
            ..TaskContext::default()
        },
        egress: Arc::new(AllowlistEgress::parse(rules).expect("rules")),
    }
}

/// Egress to `addr` for one HTTP method only.
fn only_method(addr: std::net::SocketAddr, method: &str) -> AttemptEnv {
    let rule = addr
        .to_string()
        .parse::<HostRule>()
        .expect("rule")
        .with_methods(vec![method.into()]);
    AttemptEnv {
        egress: Arc::new(AllowlistEgress::new(vec![rule])),
        ..allow(&[])
    }
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

async fn run_tool(runtime: &Runtime, tool: &str, input: Value, env: AttemptEnv) -> ExecutionReport {
    let artifact = runtime
        .load_file(&isometer_testkit::guest(tool))
        .expect("guest loads");
    let input = serde_json::to_vec(&input).expect("json");
    runtime.execute_in(&artifact, &input, &limits(), env).await
}

fn output(report: &ExecutionReport) -> Value {
    serde_json::from_slice(&report.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?} / {:?}",
            String::from_utf8_lossy(&report.stdout),
            report.detail
        )
    })
}

#[tokio::test]
async fn fetch_reads_an_allowed_upstream_and_the_call_is_metered() {
    let upstream = Upstream::start(200, r#"{"symbol":"ACME","price":"41.50"}"#).await;
    let runtime = Runtime::new().expect("runtime");
    let rule = upstream.addr.to_string();
    let report = run_tool(
        &runtime,
        "fetch",
        json!({"url": upstream.url("/quote?symbol=ACME"), "headers": {"x-trace": "t1"}}),
        allow(&[&rule]),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
    let out = output(&report);
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], json!({"symbol": "ACME", "price": "41.50"}));

    let seen = upstream.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("GET", "/quote?symbol=ACME")
    );
    assert_eq!(seen[0].header("host"), Some(rule.as_str()));
    assert_eq!(seen[0].header("x-trace"), Some("t1"));

    let record = &report.egress[0];
    assert_eq!(record.verdict, Verdict::Allow);
    assert_eq!(
        record.rule.as_deref(),
        Some(format!("allow-host {rule}").as_str())
    );
    assert_eq!(record.status, Some(200));
    assert_eq!(report.usage.egress_requests, 1);
    assert_eq!(
        report.usage.egress_bytes,
        record.bytes_out + record.bytes_in
    );
    assert!(record.bytes_in > 33, "{record:?}");
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.fields.to_string().contains("/quote")),
        "{:?}",
        report.logs
    );
}

#[tokio::test]
async fn send_email_posts_with_its_task_context_and_method_rules_hold() {
    let upstream = Upstream::start(201, r#"{"id":"msg-1"}"#).await;
    let runtime = Runtime::new().expect("runtime");
    let input = json!({
        "endpoint": upstream.url(""),
        "to": "cfo@acme.test",
        "subject": "Q3",
        "body": "numbers attached"
    });
    let post_only = only_method(upstream.addr, "POST");
    let report = run_tool(&runtime, "send-email", input.clone(), post_only).await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
    assert_eq!(
        output(&report),
        json!({"sent": true, "status": 201, "id": "msg-1"})
    );
    let seen = upstream.received();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/messages")
    );
    let sent: Value = serde_json::from_slice(&seen[0].body).expect("json body");
    assert_eq!(sent["to"], "cfo@acme.test");
    assert_eq!(sent["task_id"], "task-7");

    // The same host, allowed for reading only: the write is denied and never sent.
    let read_only = only_method(upstream.addr, "GET");
    let report = run_tool(&runtime, "send-email", input, read_only).await;
    assert_eq!(report.outcome, Outcome::EgressDenied, "{:?}", report.detail);
    assert!(
        report
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("POST is not allowed")
    );
    assert_eq!(upstream.received().len(), 1);
}

/// Hostile egress: each request is denied before any connection, the attempt ends as
/// `egress_denied` within its limit, and a trivial task runs normally afterwards.
#[tokio::test]
async fn hostile_egress_is_denied_and_the_host_stays_healthy() {
    let upstream = Upstream::start(200, "{}").await;
    let port = upstream.addr.port();
    let runtime = Runtime::new().expect("runtime");
    let cases: [(&str, &[&str], String, &str); 6] = [
        (
            "a host not allowed",
            &["api.example.test"],
            "http://evil.example.test/steal".into(),
            "not in the egress allowlist",
        ),
        (
            "the cloud metadata address",
            &["*"],
            "http://169.254.169.254/latest/meta-data/".into(),
            "link-local",
        ),
        (
            "loopback by address",
            &["*"],
            format!("http://127.0.0.1:{port}/"),
            "loopback",
        ),
        (
            "a name that resolves to loopback",
            &["*"],
            format!("http://localhost:{port}/"),
            "localhost resolves to",
        ),
        (
            "a name that resolves to loopback, allowed by name",
            &["localhost"],
            format!("http://localhost:{port}/"),
            "loopback",
        ),
        (
            "a private address",
            &["*"],
            "http://10.0.0.8/admin".into(),
            "private",
        ),
    ];
    for (name, rules, url, reason) in cases {
        let report = run_tool(&runtime, "fetch", json!({ "url": url }), allow(rules)).await;
        assert_eq!(
            report.outcome,
            Outcome::EgressDenied,
            "{name}: {:?}",
            report.detail
        );
        assert!(
            report.detail.as_deref().unwrap_or("").contains(reason),
            "{name}: {:?}",
            report.detail
        );
        assert_eq!(report.egress.len(), 1, "{name}");
        assert_eq!(report.egress[0].verdict, Verdict::Deny, "{name}");
        assert_eq!(report.usage.egress_requests, 0, "{name}");
        assert!(report.usage.wall_time_us < 2_000_000, "{name}");

        let after = run_tool(&runtime, "noop", json!({}), AttemptEnv::default()).await;
        assert_eq!(
            after.outcome,
            Outcome::Success,
            "after {name}: {:?}",
            after.detail
        );
    }
    assert!(
        upstream.received().is_empty(),
        "no denied request reached the upstream"
    );
}

/// Sends one GET to the URL in its data segment and waits for the answer.
fn waiting_guest(url: &str) -> String {
    let head = json!({"method": "GET", "url": url}).to_string();
    let mut wire = (head.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(head.as_bytes());
    let data: String = wire.iter().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "isometer" "http_request" (func $req (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{data}")
  (func (export "_start")
    (drop (call $req (i32.const 64) (i32.const {len}) (i32.const 0)))))"#,
        len = wire.len()
    )
}

/// Accepts connections and never answers, holding up to `hold` of them.
async fn silent_upstream(hold: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::with_capacity(hold);
        while held.len() < hold {
            match listener.accept().await {
                Ok((stream, _)) => held.push(stream),
                Err(_) => break,
            }
        }
        // Stop accepting; later connections wait in the backlog or in SYN retries.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop((held, listener));
    });
    addr
}

/// Raises this process's open-file limit to its hard limit.
fn raise_open_files(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard} (raise it with ulimit -Hn)"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
}

/// 10,000 attempts blocked at once on an upstream that never answers: each ends as
/// `timed_out` near its deadline, none holds a thread, and a trivial task runs meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_attempts_blocked_on_slow_egress_are_contained() {
    const ATTEMPTS: usize = 10_000;
    const TIMEOUT: Duration = Duration::from_millis(1_500);
    /// Past the deadline: the async grace, and 10,000 timers firing on 2 loaded cores.
    const SLACK: Duration = Duration::from_millis(1_000);
    raise_open_files(ATTEMPTS as u64 + 4_000);
    let upstream = silent_upstream(2_000).await;
    let runtime = Arc::new(
        Runtime::with_options(RuntimeOptions {
            max_in_flight: ATTEMPTS as u32 + 16,
            max_memory_bytes: 1 << 20,
            ..RuntimeOptions::default()
        })
        .expect("runtime"),
    );
    let waiting = runtime
        .load(waiting_guest(&format!("http://{upstream}/slow")).as_bytes())
        .expect("guest");
    let trivial = runtime
        .load(br#"(module (func (export "_start")))"#)
        .expect("trivial");
    let limits = Limits {
        timeout: TIMEOUT,
        ..Limits::default()
    };
    let env = allow(&[&upstream.to_string()]);
    let threads_before = thread_count();

    let started = Instant::now();
    let attempts: Vec<_> = (0..ATTEMPTS)
        .map(|_| {
            let (runtime, waiting, env) = (runtime.clone(), waiting.clone(), env.clone());
            tokio::spawn(async move { runtime.execute_in(&waiting, b"", &limits, env).await })
        })
        .collect();
    tokio::time::sleep(TIMEOUT / 3).await;
    let threads_during = thread_count();
    let healthy = runtime.execute(&trivial, b"", &limits).await;
    assert_eq!(healthy.outcome, Outcome::Success, "{:?}", healthy.detail);
    assert!(
        started.elapsed() < TIMEOUT,
        "the trivial task waited for the blocked ones"
    );

    let mut slowest = Duration::ZERO;
    for attempt in attempts {
        let report = attempt.await.expect("joined");
        assert_eq!(report.outcome, Outcome::TimedOut, "{:?}", report.detail);
        slowest = slowest.max(Duration::from_micros(report.usage.wall_time_us));
    }
    assert!(
        slowest <= TIMEOUT + SLACK,
        "the slowest attempt ran {slowest:?}"
    );
    assert!(
        threads_during <= threads_before + 32,
        "threads grew from {threads_before} to {threads_during}"
    );
    let after = runtime.execute(&trivial, b"", &limits).await;
    assert_eq!(after.outcome, Outcome::Success, "{:?}", after.detail);
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}
