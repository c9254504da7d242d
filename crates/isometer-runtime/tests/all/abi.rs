//! The `isometer` host functions, driven by WAT guests against a scripted egress gateway
//! (real HTTP egress is tested with the gateway crate's allowlist).

use crate::limits;
use isometer_core::Outcome;
use isometer_runtime::{
    AttemptEnv, EgressBudget, EgressError, EgressGateway, EgressRequest, EgressResponse,
    ExecutionReport, Limits, LogLevel, Runtime, TaskContext, Verdict,
};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Answers every request with `answer`, remembering what it was asked.
#[derive(Debug)]
struct Scripted {
    answer: Result<EgressResponse, EgressError>,
    seen: Mutex<Vec<(TaskContext, EgressRequest, EgressBudget)>>,
}

impl Scripted {
    fn new(answer: Result<EgressResponse, EgressError>) -> Arc<Self> {
        Arc::new(Scripted {
            answer,
            seen: Mutex::default(),
        })
    }

    fn ok(body: &str) -> Arc<Self> {
        Self::new(Ok(EgressResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            rule: "test rule".into(),
            poisoning: Vec::new(),
        }))
    }
}

#[async_trait::async_trait]
impl EgressGateway for Scripted {
    async fn request(
        &self,
        context: &TaskContext,
        request: EgressRequest,
        budget: EgressBudget,
    ) -> Result<EgressResponse, EgressError> {
        self.seen
            .lock()
            .expect("lock")
            .push((context.clone(), request, budget));
        self.answer.clone()
    }
}

/// `bytes` as a WAT string literal.
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The ABI's request wire form.
fn request_wire(head: serde_json::Value, body: &[u8]) -> Vec<u8> {
    let head = head.to_string();
    let mut wire = (head.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(head.as_bytes());
    wire.extend_from_slice(body);
    wire
}

/// A guest that sends `wire` `times` times, then writes the errno of the last call (one
/// ASCII digit) and the pending message to stdout.
fn egress_guest(wire: &[u8], times: u32) -> String {
    format!(
        r#"(module
  (import "isometer" "http_request" (func $req (param i32 i32 i32) (result i32)))
  (import "isometer" "take_pending" (func $take (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "{data}")
  (func (export "_start")
    (local $i i32)
    (local $errno i32)
    (loop $again
      (local.set $errno (call $req (i32.const 1024) (i32.const {len}) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const {times}))))
    (i32.store8 (i32.const 4095) (i32.add (i32.const 48) (local.get $errno)))
    (i32.store (i32.const 16) (i32.const 4095))
    (i32.store (i32.const 20)
      (i32.add (i32.const 1) (call $take (i32.const 4096) (i32.const 60000))))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#,
        data = wat_bytes(wire),
        len = wire.len(),
    )
}

async fn run_in(wat: &str, limits: Limits, env: AttemptEnv) -> ExecutionReport {
    let runtime = Runtime::new().expect("runtime");
    let artifact = runtime.load(wat.as_bytes()).expect("valid module");
    runtime.execute_in(&artifact, b"{}", &limits, env).await
}

fn env(egress: Arc<Scripted>) -> AttemptEnv {
    AttemptEnv {
        context: TaskContext {
            task_id: "t-1".into(),
            attempt: 2,
            tenant_id: "acme".into(),
            tool_id: "fetch".into(),
            ..TaskContext::default()
        },
        egress,
    }
}

fn get(url: &str) -> Vec<u8> {
    request_wire(
        json!({"method": "get", "url": url, "headers": [["accept", "application/json"]]}),
        b"",
    )
}

#[tokio::test]
async fn context_and_logs_reach_the_guest_and_the_report() {
    let context = r#"{"task_id":"t-1","attempt":2,"tenant_id":"acme","tool_id":"fetch","trace_id":"","run_id":"","use_case":""}"#;
    let log = r#"{"message":"hello","n":1}"#;
    let wat = format!(
        r#"(module
  (import "isometer" "context" (func $context (param i32 i32) (result i32)))
  (import "isometer" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "{log}")
  (data (i32.const 900) "plain text")
  (func (export "_start")
    ;; Too small a buffer: nothing written, the length returned.
    (drop (call $context (i32.const 1024) (i32.const 4)))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (call $context (i32.const 1024) (i32.const 4096)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (call $log (i32.const 2) (i32.const 512) (i32.const {log_len}))
    (call $log (i32.const 9) (i32.const 900) (i32.const 10))))"#,
        log = log.replace('"', "\\\""),
        log_len = log.len(),
    );
    let report = run_in(&wat, limits(), env(Scripted::ok(""))).await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
    assert_eq!(String::from_utf8_lossy(&report.stdout), context);
    assert_eq!(report.logs.len(), 2);
    assert_eq!(report.logs[0].level, LogLevel::Info);
    assert_eq!(report.logs[0].fields, json!({"message": "hello", "n": 1}));
    assert_eq!(report.logs[1].level, LogLevel::Error);
    assert_eq!(report.logs[1].fields, json!({"message": "plain text"}));
    assert_eq!(
        report.usage.output_bytes,
        (context.len() + log.len() + 10) as u64
    );
}

#[tokio::test]
async fn an_allowed_request_is_answered_metered_and_recorded() {
    let gateway = Scripted::ok(r#"{"price":42}"#);
    let wire = get("http://quotes.example.test/q?s=ACME");
    let report = run_in(&egress_guest(&wire, 1), limits(), env(gateway.clone())).await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);

    let (errno, message) = report.stdout.split_first().expect("errno");
    assert_eq!(*errno, b'0');
    let head_len = u32::from_le_bytes(message[..4].try_into().expect("4 bytes")) as usize;
    let head: serde_json::Value = serde_json::from_slice(&message[4..4 + head_len]).expect("head");
    assert_eq!(
        head,
        json!({"status": 200, "headers": [["content-type", "application/json"]]})
    );
    assert_eq!(&message[4 + head_len..], br#"{"price":42}"#);

    let seen = gateway.seen.lock().expect("lock");
    let (context, request, budget) = &seen[0];
    assert_eq!((context.task_id.as_str(), context.attempt), ("t-1", 2));
    assert_eq!(request.method, "GET");
    assert_eq!(request.url, "http://quotes.example.test/q?s=ACME");
    assert!(budget.timeout <= limits().timeout && !budget.timeout.is_zero());

    let record = &report.egress[0];
    assert_eq!(record.verdict, Verdict::Allow);
    assert_eq!(record.rule.as_deref(), Some("test rule"));
    assert_eq!(record.status, Some(200));
    assert_eq!(report.usage.egress_requests, 1);
    assert_eq!(
        report.usage.egress_bytes,
        record.bytes_out + record.bytes_in
    );
    assert_eq!(
        budget.max_response_bytes,
        limits().max_egress_bytes - record.bytes_out
    );
    assert!(record.bytes_in > 12 && record.bytes_out > 35, "{record:?}");
}

#[tokio::test]
async fn a_denied_request_ends_the_attempt_as_egress_denied() {
    let gateway = Scripted::new(Err(EgressError::Denied {
        reason: "host 169.254.169.254 is link-local".into(),
        rule: Some("private ranges".into()),
    }));
    let wire = get("http://169.254.169.254/latest/meta-data/");
    let report = run_in(&egress_guest(&wire, 1), limits(), env(gateway)).await;
    assert_eq!(report.outcome, Outcome::EgressDenied, "{:?}", report.detail);
    assert!(report.stdout.is_empty(), "the guest did not go on");
    assert_eq!(report.egress[0].verdict, Verdict::Deny);
    assert_eq!(report.egress[0].rule.as_deref(), Some("private ranges"));
    assert_eq!(report.usage.egress_requests, 0);
    assert_eq!(report.usage.egress_bytes, 0);
}

#[tokio::test]
async fn no_gateway_means_no_network() {
    let report = run_in(
        &egress_guest(&get("http://example.test/"), 1),
        limits(),
        AttemptEnv::default(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::EgressDenied, "{:?}", report.detail);
}

#[tokio::test]
async fn egress_limits_deny_the_request_past_them() {
    let wire = get("http://quotes.example.test/");
    let by_count = Limits {
        max_egress_requests: 3,
        ..limits()
    };
    let report = run_in(&egress_guest(&wire, 5), by_count, env(Scripted::ok("{}"))).await;
    assert_eq!(report.outcome, Outcome::EgressDenied, "{:?}", report.detail);
    assert_eq!(report.usage.egress_requests, 3);
    let verdicts: Vec<_> = report.egress.iter().map(|r| r.verdict).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Allow,
            Verdict::Allow,
            Verdict::Allow,
            Verdict::Deny
        ]
    );

    let by_bytes = Limits {
        max_egress_bytes: 300,
        ..limits()
    };
    let report = run_in(
        &egress_guest(&wire, 100),
        by_bytes,
        env(Scripted::ok(&"x".repeat(100))),
    )
    .await;
    assert_eq!(report.outcome, Outcome::EgressDenied, "{:?}", report.detail);
    assert!(report.usage.egress_bytes <= 300, "{:?}", report.usage);
    assert!(report.usage.egress_requests >= 1, "{:?}", report.usage);

    // A gateway refusing an answer larger than the budget it was given.
    let too_large = Scripted::new(Err(EgressError::TooLarge { limit: 10 }));
    let report = run_in(&egress_guest(&wire, 1), limits(), env(too_large)).await;
    assert_eq!(report.outcome, Outcome::EgressDenied, "{:?}", report.detail);
}

#[tokio::test]
async fn invalid_requests_and_upstream_failures_are_the_guests_to_handle() {
    let bad = request_wire(json!({"method": "GET"}), b"");
    let report = run_in(&egress_guest(&bad, 1), limits(), env(Scripted::ok("{}"))).await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        text.starts_with("1") && text.contains("missing field `url`"),
        "{text}"
    );
    assert_eq!(report.usage.egress_requests, 0);

    let failing = Scripted::new(Err(EgressError::Upstream("connection refused".into())));
    let report = run_in(
        &egress_guest(&get("http://down.example.test/"), 1),
        limits(),
        env(failing),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Success, "{:?}", report.detail);
    assert_eq!(
        String::from_utf8_lossy(&report.stdout),
        "2connection refused"
    );
    assert_eq!(report.usage.egress_requests, 1);
}

#[tokio::test]
async fn pointers_outside_memory_trap() {
    let wat = r#"(module
  (import "isometer" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $log (i32.const 2) (i32.const 65530) (i32.const 100))))"#;
    let report = run_in(wat, limits(), AttemptEnv::default()).await;
    assert_eq!(report.outcome, Outcome::Trapped, "{:?}", report.detail);
    assert!(
        report.detail.as_deref().unwrap_or("").contains("outside"),
        "{:?}",
        report.detail
    );
}

#[tokio::test]
async fn logs_count_against_the_output_budget() {
    let wat = r#"(module
  (import "isometer" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (call $log (i32.const 2) (i32.const 0) (i32.const 1000)) (br $l))))"#;
    let report = run_in(wat, limits(), AttemptEnv::default()).await;
    assert_eq!(
        report.outcome,
        Outcome::OutputExceeded,
        "{:?}",
        report.detail
    );
    assert!(report.usage.output_bytes <= limits().max_output_bytes);
}
