//! Suite `gateway`: the task API under load. Writes `target/bench/gateway.json`.
//!
//! One process serves the real router (API keys, admission, evidence, the spool, a fresh
//! local `clickhouse-server`) on loopback; the load comes from the same process over
//! HTTP/1.1 keep-alive connections, so both share the machine's cores. ClickHouse runs at
//! idle priority, standing in for the server of its own that a deployment gives it: its
//! merges never preempt a task, though it still gets some of the cores the gateway wants
//! (the CPU figures say how much).
//! - `http_tasks_per_s`: saturation, the trivial tool (`noop`) with 64 requests in flight;
//!   `inprocess_tasks_per_s`: the same tasks through `Gateway::submit`, no HTTP; beside
//!   each, the CPU time per task of this process (the load generator's threads apart)
//!   and of ClickHouse; and the answers per second of a handler that only reads the
//!   request and writes a stored answer, the ceiling HTTP alone sets on these cores;
//! - `http_p50_ms`, `http_p99_ms`: open-loop load at half of saturation for 30 s, once the
//!   spool backlog of the phases before has been shipped (the time this took is printed),
//!   with the p99 of each 6 s of it (`http_p99_ms_by_window`: one slow sync of the disk
//!   decides a window's p99 alone, so the windows show how often one came), with
//!   the handler's own p50/p99 from its `Server-Timing` header (and, for its slowest 1%,
//!   the mean of each stage the header names: admission, the isolate, the spool with the
//!   signature made in its group commit) and the share of the cores' time the hypervisor
//!   gave to others meanwhile (steal: a tail no code here can shorten);
//!   beside them, the disk's own floor: `fdatasync` of 8 KiB appends alone on the spools'
//!   disk, and the share of its time spent in syncs over 5 ms; then the same beside a
//!   64 MiB segment removed every second, at once and in the spool's steps;
//! - `fair_share_error`: three tenants (weights 1, 1, 2) kept busy with a tool that holds
//!   its slot for 2 ms on a gateway of 8 slots, one of them offering ten times its share
//!   and the others four times theirs; the largest relative gap between a tenant's
//!   completed share and its weighted share;
//! - `victim_p99_ratio`: two tenants' p99 at a steady rate with the noisy tenant flooding,
//!   over their p99 alone, in five rounds of 5 s windows; the rounds' median;
//! - `overload_rss_mib`: the process's peak RSS under open-loop load at five times
//!   saturation from one tenant of the free tier (8 running, 32 queued) whose tasks hold
//!   their slot for 2 ms, so that admission refuses most of them (a `noop` task holds its
//!   slot for microseconds: the HTTP work ahead of admission bounds it, and no tier's
//!   queue fills); every refused task must have had a 429 and left a `throttled`
//!   record.

mod common;

use isometer_core::{Outcome, SystemClock};
use isometer_gateway::{AdmissionOptions, Gateway, TaskRequest};
use isometer_policy::{Config, Policy, Tenant, Tool};
use isometer_store::{ManagedClickHouse, ServerOptions, Store, WriterOptions};
use isometer_web::AppState;
use isometer_web::auth::{Role, create_key};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SATURATION_FOR: Duration = Duration::from_secs(6);
const SATURATION_CONCURRENCY: usize = 64;
const FLOOR_FOR: Duration = Duration::from_secs(3);
/// Long enough that one rare stall of the disk does not decide the p99 alone; the p99 of
/// each `WINDOW` of it is printed too.
const HALF_LOAD_FOR: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(6);
/// The disk's syncs alone.
const DISK_FOR: Duration = Duration::from_secs(6);
/// The disk's syncs beside a segment removed every second, each way.
const RELEASE_FOR: Duration = Duration::from_secs(5);
const FAIRNESS_FOR: Duration = Duration::from_secs(4);
/// Rounds of victims alone and with the noisy tenant, and each window's length: 1,000
/// tasks a window, so that a p99 is the 10th slowest of them and a stall of 50 ms (which
/// holds about ten) is 1% of a window, not the 2.5% it was of 2 s windows.
const VICTIM_ROUNDS: usize = 5;
const VICTIM_WINDOW: Duration = Duration::from_secs(5);
const OVERLOAD_FOR: Duration = Duration::from_secs(4);
/// Requests the load generator keeps outstanding at most (it sheds beyond).
const MAX_OUTSTANDING: usize = 4_096;
/// Connections the load generator opens at most, as wrk keeps a fixed number; requests
/// beyond them wait for one, and that wait counts in their latency.
const CONNECTIONS: usize = 1_024;
/// Connections open before an open-loop phase starts.
const WARM_CONNECTIONS: usize = 512;

fn main() -> anyhow::Result<()> {
    let root = isometer_testkit::workspace_root();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("server")
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .worker_threads(cores)
        .enable_all()
        .build()?;

    let config = bench_config(&root)?;
    let (clickhouse_dir, where_clickhouse) = common::clickhouse_dir()?;
    let server = ManagedClickHouse::start(&ServerOptions {
        idle_priority: true,
        ..ServerOptions::new(clickhouse_dir.path().join("server"))
    })?;
    let (store, gateway, base, keys) = server_rt.block_on(async {
        let store = Store::open(&server.url(), "gateway").await?;
        store.migrate().await?;
        let gateway = Arc::new(gateway_on(&store, config.clone(), None)?);
        let state = AppState::new(gateway.clone(), store.clone());
        state.start().await?;
        let listener = isometer_web::listen("127.0.0.1:0".parse()?)?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = isometer_web::router(state);
        tokio::spawn(isometer_web::serve(
            listener,
            router,
            std::future::pending::<()>(),
        ));
        let mut keys = std::collections::HashMap::new();
        for tenant in ["acme", "globex", "hooli", "initech"] {
            keys.insert(
                tenant,
                create_key(&store, Role::Tenant, Some(tenant)).await?.key,
            );
        }
        anyhow::Ok((store, gateway, base, keys))
    })?;
    let client = Client::new(base.trim_start_matches("http://").parse()?);

    // Saturation over HTTP, then the same path in process, with the CPU each took.
    let noop = json!({"tool_id": "noop", "input": null});
    let (saturation, http_cpu, http_tasks_per_s) = saturate(
        &client_rt,
        &client,
        (&keys["acme"], &noop),
        SATURATION_FOR,
        server.pid(),
    )?;
    let before = Cpu::now(server.pid());
    let (inprocess_tasks_per_s, inprocess_tasks) = server_rt.block_on(in_process(&gateway))?;
    let inprocess_cpu = Cpu::now(server.pid()).since(&before, inprocess_tasks);

    // Half load, open loop, once the earlier phases' backlog is in ClickHouse: the figure
    // is the steady state at half load, not half load plus catching up on 200k tasks.
    let backlog = {
        let started = Instant::now();
        server_rt.block_on(gateway.flush())?;
        started.elapsed()
    };
    // The disk alone, before the handler's phase: that phase needs no disk, and gives the
    // discards of the segments these probes remove time to end before half load starts
    // (right after them, a sync took 30 to 40 ms).
    let disk = disk_floor(DISK_FOR, Removal::None)?;
    let disk_at_once = disk_floor(RELEASE_FOR, Removal::AtOnce)?;
    let disk_in_steps = disk_floor(RELEASE_FOR, Removal::InSteps)?;
    // The same requests answered by a handler that only reads them as the task API does
    // and writes a stored answer: what HTTP, routing and JSON cost alone on these cores,
    // the ceiling of the HTTP figure. After the backlog, so shipping takes none of it.
    let answer =
        server_rt.block_on(gateway.submit(TaskRequest::new("acme", "noop", json!(null))))?;
    let floor_client =
        Client::new(server_rt.block_on(answering_server(serde_json::to_vec(&answer)?))?);
    let (_, floor_cpu, floor_tasks_per_s) = saturate(
        &client_rt,
        &floor_client,
        (&keys["acme"], &noop),
        FLOOR_FOR,
        server.pid(),
    )?;
    let steal_before = (Instant::now(), stolen_seconds());
    let half = client_rt.block_on(open_loop(
        &client,
        &keys["acme"],
        &noop,
        http_tasks_per_s / 2.0,
        HALF_LOAD_FOR,
    ))?;
    let half_steal = (stolen_seconds() - steal_before.1)
        / (steal_before.0.elapsed().as_secs_f64() * cores as f64);
    let (http_p50_ms, http_p99_ms) = (half.percentile_ms(50), half.percentile_ms(99));
    let window_p99s_ms = half.window_p99s_ms();
    let (server_p50_ms, server_p99_ms) =
        (half.server_percentile_ms(50), half.server_percentile_ms(99));
    let (slowest_ms, slowest_stages_ms) = half.slowest_stages_ms();

    // Fairness and victims, on a gateway of 8 slots and a tool that holds one for 2 ms.
    let (fair_share_error, shares, victim_p99_ratio, victims) =
        server_rt.block_on(fairness(&store, &config))?;

    // Overload at five times saturation, measuring the process's peak RSS.
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let sampler = {
        let peak = peak.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        (stop, handle)
    };
    let rss_before_mib = rss_kib() as f64 / 1024.0;
    let overload = client_rt.block_on(open_loop(
        &client,
        &keys["initech"],
        &json!({"tool_id": "slow", "input": {"ms": 2}}),
        http_tasks_per_s * 5.0,
        OVERLOAD_FOR,
    ))?;
    sampler.0.store(true, Ordering::Relaxed);
    sampler
        .1
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let overload_rss_mib = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    // Every 429 left a `throttled` record.
    let refused = saturation.refused + half.refused + overload.refused;
    server_rt.block_on(gateway.flush())?;
    let throttled = server_rt.block_on(throttled_records(&store))?;
    anyhow::ensure!(
        throttled == refused,
        "{refused} tasks got 429, but {throttled} throttled records are in ClickHouse"
    );
    for (phase, load) in [
        ("saturation", &saturation),
        ("half load", &half),
        ("overload", &overload),
    ] {
        anyhow::ensure!(
            load.failed == 0,
            "{phase}: {} requests failed otherwise, the first: {}",
            load.failed,
            load.first_failure.as_deref().unwrap_or("?")
        );
    }

    println!("suite gateway ({cores} cores)");
    println!("  {where_clickhouse}, at idle priority (SCHED_IDLE); spools on disk");
    let line = |name: &str, value: String| println!("  {name:<52} {value:>12}");
    line(
        "tasks/s over HTTP, saturated (noop)",
        format!("{http_tasks_per_s:.0}"),
    );
    line(
        "tasks/s in process (Gateway::submit)",
        format!("{inprocess_tasks_per_s:.0}"),
    );
    line(
        "HTTP / in-process tasks/s",
        format!("{:.2}", http_tasks_per_s / inprocess_tasks_per_s),
    );
    line(
        "answers/s over HTTP, a handler that runs nothing",
        format!("{floor_tasks_per_s:.0}"),
    );
    line(
        "HTTP tasks/s / that handler's answers/s",
        format!("{:.2}", http_tasks_per_s / floor_tasks_per_s),
    );
    for (phase, cpu) in [
        ("over HTTP", &http_cpu),
        ("in process", &inprocess_cpu),
        ("of that handler", &floor_cpu),
    ] {
        line(
            &format!("CPU µs/task {phase}: isometer / load / ClickHouse"),
            format!(
                "{:.0} / {:.0} / {:.0}",
                cpu.isometer_us, cpu.load_us, cpu.clickhouse_us
            ),
        );
    }
    line(
        "spool backlog of the two phases shipped in (s)",
        format!("{:.1}", backlog.as_secs_f64()),
    );
    line(
        &format!("p50 / p99 at half load, {} s (ms)", HALF_LOAD_FOR.as_secs()),
        format!("{http_p50_ms:.2} / {http_p99_ms:.2}"),
    );
    line(
        &format!("  p99 of each {} s of it (ms)", WINDOW.as_secs()),
        window_p99s_ms
            .iter()
            .map(|p| format!("{p:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line(
        "  the handler's own time (Server-Timing)",
        format!("{server_p50_ms:.2} / {server_p99_ms:.2}"),
    );
    line(
        "    its slowest 1%: whole / admit / run / record (ms, means)",
        std::iter::once(slowest_ms)
            .chain(slowest_stages_ms)
            .map(|ms| format!("{ms:.2}"))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    line(
        "  the cores' time the host took meanwhile (steal)",
        format!("{:.1}%", half_steal * 100.0),
    );
    line(
        "disk alone: 8 KiB fdatasync p50 / p99 / max (ms)",
        format!(
            "{:.2} / {:.2} / {:.0}",
            disk.p50_ms, disk.p99_ms, disk.max_ms
        ),
    );
    line(
        "  share of its time in syncs over 5 ms",
        format!("{:.2}%", disk.stalled_share * 100.0),
    );
    for (removed, floor) in [
        ("64 MiB segments removed at once", &disk_at_once),
        (
            "them removed in steps (the spool's way past its spares)",
            &disk_in_steps,
        ),
    ] {
        line(
            &format!("  beside {removed}: p99 / max (ms), share over 5 ms"),
            format!(
                "{:.2} / {:.0}, {:.2}%",
                floor.p99_ms,
                floor.max_ms,
                floor.stalled_share * 100.0
            ),
        );
    }
    line(
        "fair share error (noisy tenant at 10x its share)",
        format!("{fair_share_error:.3}"),
    );
    for (tenant, expected, got) in &shares {
        line(
            &format!("  {tenant}: weighted share / completed share"),
            format!("{expected:.3} / {got:.3}"),
        );
    }
    line(
        "victims' p99 with / without the noisy tenant (ms)",
        String::new(),
    );
    for (round, (with, alone)) in victims.iter().enumerate() {
        line(
            &format!("  round {}", round + 1),
            format!("{with:.2} / {alone:.2}"),
        );
    }
    line(
        "victim p99 ratio (the rounds' median)",
        format!("{victim_p99_ratio:.2}"),
    );
    line(
        "RSS before / peak at 5x saturation (MiB)",
        format!("{rss_before_mib:.0} / {overload_rss_mib:.0}"),
    );
    line(
        "offered / ok / 429 / shed at 5x saturation",
        format!(
            "{} / {} / {} / {}",
            overload.offered, overload.ok, overload.refused, overload.shed
        ),
    );
    line(
        "429 answers / throttled records",
        format!("{refused} / {throttled}"),
    );

    let slowest_stages: serde_json::Map<_, _> = Timing::STAGES
        .iter()
        .zip(slowest_stages_ms)
        .map(|(stage, ms)| (stage.to_string(), json!(ms)))
        .collect();
    let mut json = json!({
        "suite": "gateway",
        "cores": cores,
        "clickhouse_data": where_clickhouse,
        "clickhouse_priority": "idle",
        "backlog_shipped_s": backlog.as_secs_f64(),
        "http_tasks_per_s": http_tasks_per_s,
        "inprocess_tasks_per_s": inprocess_tasks_per_s,
        "http_over_inprocess": http_tasks_per_s / inprocess_tasks_per_s,
        "http_cpu_us_per_task": http_cpu.isometer_us,
        "http_load_cpu_us_per_task": http_cpu.load_us,
        "http_clickhouse_cpu_us_per_task": http_cpu.clickhouse_us,
        "inprocess_cpu_us_per_task": inprocess_cpu.isometer_us,
        "inprocess_clickhouse_cpu_us_per_task": inprocess_cpu.clickhouse_us,
        "http_floor_answers_per_s": floor_tasks_per_s,
        "http_floor_cpu_us_per_answer": floor_cpu.isometer_us,
        "http_floor_load_cpu_us_per_answer": floor_cpu.load_us,
        "http_p50_ms": http_p50_ms,
        "http_p99_ms": http_p99_ms,
        "http_p99_ms_by_window": window_p99s_ms,
        "half_load_host_steal": half_steal,
        "http_server_p50_ms": server_p50_ms,
        "http_server_p99_ms": server_p99_ms,
        "disk_fdatasync_syncs": disk.syncs,
        "disk_fdatasync_p50_ms": disk.p50_ms,
        "disk_fdatasync_p99_ms": disk.p99_ms,
        "disk_fdatasync_max_ms": disk.max_ms,
        "disk_stalled_share": disk.stalled_share,
        "disk_removal_at_once_max_ms": disk_at_once.max_ms,
        "disk_removal_at_once_stalled_share": disk_at_once.stalled_share,
        "disk_removal_in_steps_max_ms": disk_in_steps.max_ms,
        "disk_removal_in_steps_stalled_share": disk_in_steps.stalled_share,
        "fair_share_error": fair_share_error,
        "victim_p99_ratio": victim_p99_ratio,
        "victim_p99_ms_with_noisy": victims.iter().map(|r| r.0).collect::<Vec<_>>(),
        "victim_p99_ms_alone": victims.iter().map(|r| r.1).collect::<Vec<_>>(),
        "overload_rss_mib": overload_rss_mib,
        "overload_offered": overload.offered,
        "overload_ok": overload.ok,
        "overload_429": overload.refused,
        "throttled_records": throttled,
    });
    // Beyond what one `json!` expands.
    json["http_server_slowest_ms"] = json!(slowest_ms);
    json["http_server_slowest_stages_ms"] = json!(slowest_stages);
    common::write_json(&root, "gateway", &json)?;
    Ok(())
}

/// The shipped configuration with `noop` for the standard and premium tiers, `slow` for
/// the free tier, a third standard tenant, and weights 1 (free, standard) and 2
/// (premium).
fn bench_config(root: &std::path::Path) -> anyhow::Result<Config> {
    let mut config = Config::load(&root.join("config"))?;
    for tool in &mut config.tools {
        tool.artifact = isometer_testkit::guest(&tool.id);
    }
    config.tools.push(Tool {
        id: "noop".into(),
        artifact: isometer_testkit::guest("noop"),
        declared_at: "bench".into(),
        description: "does nothing".into(),
        default_use_case: "noop".into(),
        sha256: None,
        destructive: false,
    });
    for tier in ["standard", "premium"] {
        let template = config
            .policy_for("summarize", tier)
            .ok_or_else(|| anyhow::anyhow!("no summarize/{tier} policy"))?
            .clone();
        config.policies.push(Policy {
            id: format!("noop/{tier}"),
            tool_id: "noop".into(),
            ..template
        });
    }
    // The overloading tenant's tool, on the free tier.
    let template = config
        .policy_for("summarize", "free")
        .ok_or_else(|| anyhow::anyhow!("no summarize/free policy"))?
        .clone();
    config.policies.push(Policy {
        id: "slow/free".into(),
        tool_id: "slow".into(),
        ..template
    });
    config.tenants.push(Tenant {
        id: "hooli".into(),
        name: "Hooli".into(),
        tier: "standard".into(),
    });
    for tier in &mut config.tiers {
        tier.weight = if tier.id == "premium" { 2 } else { 1 };
        tier.loop_caps = Default::default();
    }
    Ok(config)
}

fn gateway_on(
    store: &Store,
    config: Config,
    admission: Option<AdmissionOptions>,
) -> anyhow::Result<Gateway> {
    let gateway = Gateway::new(
        Arc::new(config),
        store.writer(WriterOptions::default())?,
        isometer_testkit::signer(),
        Arc::new(SystemClock),
    )?;
    Ok(match admission {
        Some(options) => gateway.with_admission(options),
        None => gateway,
    })
}

/// Serves `POST /v1/tasks` on loopback with a handler that reads the body as a task
/// request, as the task API does, and answers `answer` without running anything.
async fn answering_server(answer: Vec<u8>) -> anyhow::Result<std::net::SocketAddr> {
    use axum::http::header::CONTENT_TYPE;
    let answer = axum::body::Bytes::from(answer);
    let handler = move |axum::Json(_request): axum::Json<TaskRequest>| {
        let answer = answer.clone();
        async move { ([(CONTENT_TYPE, "application/json")], answer) }
    };
    let router = axum::Router::new().route("/v1/tasks", axum::routing::post(handler));
    let listener = isometer_web::listen("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    tokio::spawn(isometer_web::serve(
        listener,
        router,
        std::future::pending::<()>(),
    ));
    Ok(addr)
}

/// The load generator's HTTP/1.1 client, as small as wrk's: each request is prepared
/// bytes written to a keep-alive connection, each answer read by its status line and
/// `Content-Length`. It shares the cores with the server, so the less it costs, the more
/// of the figure is the server's.
#[derive(Clone)]
struct Client {
    addr: std::net::SocketAddr,
    idle: Arc<std::sync::Mutex<Vec<Connection>>>,
    /// One permit per connection: requests beyond `CONNECTIONS` wait for one.
    connections: Arc<tokio::sync::Semaphore>,
}

struct Connection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: std::net::SocketAddr) -> Self {
        Client {
            addr,
            idle: Arc::default(),
            connections: Arc::new(tokio::sync::Semaphore::new(CONNECTIONS)),
        }
    }

    /// Opens connections until `n` are idle, as wrk opens its connections before it
    /// starts the clock: a burst of connects would otherwise overflow the listen backlog
    /// and wait out a SYN retransmit (a second).
    async fn warm(&self, n: usize) -> anyhow::Result<()> {
        let poisoned = |_| anyhow::anyhow!("the idle list's lock is poisoned");
        let have = self.idle.lock().map_err(poisoned)?.len();
        for _ in have..n.min(CONNECTIONS) {
            let connection = Connection::open(self.addr).await?;
            self.idle.lock().map_err(poisoned)?.push(connection);
        }
        Ok(())
    }

    /// `POST /v1/tasks` with `body`, as bytes.
    fn request(&self, key: &str, body: &serde_json::Value) -> Arc<[u8]> {
        let body = body.to_string();
        format!(
            "POST /v1/tasks HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .into_bytes()
        .into()
    }
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(16 << 10),
        })
    }

    /// Writes the request and reads the answer; its status, and the handler's time and
    /// stages from its `Server-Timing` when it has one.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Option<Timing>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let bad = |what: &str| std::io::Error::other(format!("bad answer: {what}"));
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("connection closed"));
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("head"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| bad("no content-length"))?;
        let server = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("server-timing")
                .then(|| Timing::parse(value))?
        });
        while self.buf.len() < head_end + length {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("body cut short"));
            }
        }
        Ok((status, server))
    }
}

/// An answer's `Server-Timing`: the handler's time (`app`) and the task's stages.
#[derive(Debug, Clone, Copy)]
struct Timing {
    app: Duration,
    /// admit, run, record (ms); zero when the answer has no stages.
    stages: [f64; 3],
}

impl Timing {
    const STAGES: [&str; 3] = ["admit", "run", "record"];

    /// `app;dur=1.2, admit;dur=0.00, run;dur=0.08, record;dur=0.95`.
    fn parse(value: &str) -> Option<Timing> {
        let mut app = None;
        let mut stages = [0.0; 3];
        for metric in value.split(',') {
            let (name, ms) = metric.trim().split_once(";dur=")?;
            let ms: f64 = ms.parse().ok()?;
            match Self::STAGES.iter().position(|s| *s == name) {
                Some(i) => stages[i] = ms,
                None if name == "app" => app = Some(Duration::from_secs_f64(ms / 1e3)),
                None => {}
            }
        }
        Some(Timing { app: app?, stages })
    }
}

/// What a load run got back.
#[derive(Debug, Default)]
struct Load {
    offered: u64,
    ok: u64,
    refused: u64,
    failed: u64,
    /// The first failure, for the report.
    first_failure: Option<String>,
    /// Not sent: the generator had `MAX_OUTSTANDING` requests waiting already.
    shed: u64,
    latencies: Vec<Duration>,
    /// The latencies of the requests sent in each `WINDOW`, in order.
    windows: Vec<Vec<Duration>>,
    /// The handler's own time of the answers that had one (`Server-Timing`).
    server_times: Vec<Duration>,
    /// Their stages, in the same order.
    server_stages: Vec<[f64; 3]>,
    elapsed: Duration,
}

/// One answer: its status, the time from send to its last byte, and the handler's time.
struct Answer {
    status: u16,
    latency: Duration,
    server: Option<Timing>,
}

impl Load {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }

    fn percentile_ms(&self, p: usize) -> f64 {
        percentile_ms(&self.latencies, p)
    }

    fn server_percentile_ms(&self, p: usize) -> f64 {
        percentile_ms(&self.server_times, p)
    }

    /// The answers whose handler time is in the slowest 1%: the mean of that time, and
    /// of each stage of it.
    fn slowest_stages_ms(&self) -> (f64, [f64; 3]) {
        let mut order: Vec<usize> = (0..self.server_times.len()).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse(self.server_times[i]));
        let slowest = &order[..order.len().div_ceil(100)];
        let n = slowest.len().max(1) as f64;
        let mut app = 0.0;
        let mut means = [0.0; 3];
        for &i in slowest {
            app += self.server_times[i].as_secs_f64() * 1e3 / n;
            for (mean, stage) in means.iter_mut().zip(self.server_stages[i]) {
                *mean += stage / n;
            }
        }
        (app, means)
    }

    /// The p99 of each window's requests (ms).
    fn window_p99s_ms(&self) -> Vec<f64> {
        self.windows.iter().map(|w| percentile_ms(w, 99)).collect()
    }

    fn add(&mut self, outcome: Result<Answer, String>) {
        self.add_in(0, outcome);
    }

    /// Adds an answer to a request sent in window `window`.
    fn add_in(&mut self, window: usize, outcome: Result<Answer, String>) {
        match outcome {
            Ok(Answer {
                status: 200,
                latency,
                server,
            }) => {
                self.ok += 1;
                self.latencies.push(latency);
                if self.windows.len() <= window {
                    self.windows.resize_with(window + 1, Vec::new);
                }
                self.windows[window].push(latency);
                if let Some(timing) = server {
                    self.server_times.push(timing.app);
                    self.server_stages.push(timing.stages);
                }
            }
            Ok(Answer { status: 429, .. }) => self.refused += 1,
            Ok(Answer { status, .. }) => self.fail(format!("status {status}")),
            Err(e) => self.fail(e),
        }
    }
}

fn percentile_ms(times: &[Duration], p: usize) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// One request on an idle connection (or a new one).
async fn send(client: &Client, request: &[u8]) -> Result<Answer, String> {
    let started = Instant::now();
    let _connection = client
        .connections
        .acquire()
        .await
        .map_err(|e| format!("connections: {e}"))?;
    let poisoned = |_| "the idle list's lock is poisoned".to_owned();
    let idle = client.idle.lock().map_err(poisoned)?.pop();
    let mut connection = match idle {
        Some(c) => c,
        None => Connection::open(client.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?,
    };
    let (status, server) = connection
        .exchange(request)
        .await
        .map_err(|e| format!("exchange: {e}"))?;
    client.idle.lock().map_err(poisoned)?.push(connection);
    Ok(Answer {
        status,
        latency: started.elapsed(),
        server,
    })
}

/// `concurrency` requests in flight, each sent when the one before it is answered.
async fn closed_loop(
    client: &Client,
    key: &str,
    body: &serde_json::Value,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let request = client.request(key, body);
    client.warm(concurrency).await?;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, request) = (client.clone(), request.clone());
            tokio::spawn(async move {
                let mut load = Load::default();
                while started.elapsed() < duration {
                    load.offered += 1;
                    load.add(send(&client, &request).await);
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for w in workers {
        let load = w.await?;
        total.offered += load.offered;
        total.ok += load.ok;
        total.refused += load.refused;
        total.failed += load.failed;
        total.first_failure = total.first_failure.or(load.first_failure);
        total.latencies.extend(load.latencies);
        total.server_times.extend(load.server_times);
        total.server_stages.extend(load.server_stages);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// [`SATURATION_CONCURRENCY`] requests of `key` with `body` in flight for `duration`: the
/// load, the CPU per answered request (ClickHouse's from `clickhouse`), and answers/s.
fn saturate(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    (key, body): (&str, &serde_json::Value),
    duration: Duration,
    clickhouse: u32,
) -> anyhow::Result<(Load, CpuPerTask, f64)> {
    let before = Cpu::now(clickhouse);
    let load = rt.block_on(closed_loop(
        client,
        key,
        body,
        SATURATION_CONCURRENCY,
        duration,
    ))?;
    let cpu = Cpu::now(clickhouse).since(&before, load.ok);
    let per_s = load.ok as f64 / load.elapsed.as_secs_f64();
    Ok((load, cpu, per_s))
}

/// Requests sent at `rate` per second whatever the answers, for `duration`.
async fn open_loop(
    client: &Client,
    key: &str,
    body: &serde_json::Value,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Load> {
    let request = client.request(key, body);
    client.warm(WARM_CONNECTIONS).await?;
    let started = Instant::now();
    let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut load = Load::default();
    let mut i: u64 = 0;
    loop {
        let due = Duration::from_secs_f64(i as f64 / rate);
        if due >= duration {
            break;
        }
        tokio::time::sleep_until((started + due).into()).await;
        i += 1;
        load.offered += 1;
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            load.shed += 1;
            continue;
        };
        let (client, request, tx) = (client.clone(), request.clone(), tx.clone());
        let window = (due.as_nanos() / WINDOW.as_nanos()) as usize;
        tokio::spawn(async move {
            let outcome = send(&client, &request).await;
            drop(permit);
            let _ = tx.send((window, outcome));
        });
    }
    drop(tx);
    while let Some((window, outcome)) = rx.recv().await {
        load.add_in(window, outcome);
    }
    load.elapsed = started.elapsed();
    Ok(load)
}

/// Tasks per second through `Gateway::submit` with 64 in flight, and how many ran.
async fn in_process(gateway: &Arc<Gateway>) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..SATURATION_CONCURRENCY)
        .map(|_| {
            let (gateway, done) = (gateway.clone(), done.clone());
            tokio::spawn(async move {
                while started.elapsed() < SATURATION_FOR {
                    let answer = gateway
                        .submit(TaskRequest::new("acme", "noop", json!(null)))
                        .await?;
                    anyhow::ensure!(answer.outcome == Outcome::Success, "{:?}", answer.outcome);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let done = done.load(Ordering::Relaxed);
    Ok((done as f64 / started.elapsed().as_secs_f64(), done))
}

type Shares = Vec<(&'static str, f64, f64)>;
/// Each round's victims' p99 with the noisy tenant and alone (ms).
type Rounds = Vec<(f64, f64)>;

/// Weighted fair sharing of 8 slots, and what a noisy tenant does to the others' p99.
async fn fairness(store: &Store, config: &Config) -> anyhow::Result<(f64, Shares, f64, Rounds)> {
    let options = AdmissionOptions {
        max_in_flight: 8,
        max_wait: Duration::from_secs(30),
    };
    let mut config = config.clone();
    for tier in &mut config.tiers {
        tier.max_concurrency = 1_000;
        tier.max_queue = 10_000;
    }
    let gateway = Arc::new(gateway_on(store, config.clone(), Some(options))?);
    let slow = json!({"ms": 2});
    // Busy tenants: acme and hooli (weight 1 each) and globex (weight 2). A fair share of
    // 8 slots is 2, 2 and 4; acme offers ten times its share, the others four times
    // theirs: a task leaves its slot before its record is synced, and a worker waiting
    // for a slow sync must not leave its tenant's share idle for acme to take.
    let offered: [(&'static str, usize); 3] = [("acme", 20), ("hooli", 8), ("globex", 16)];
    let weights = [("acme", 1.0), ("hooli", 1.0), ("globex", 2.0)];
    let started = Instant::now();
    let counts: Vec<_> = offered
        .iter()
        .map(|&(tenant, concurrency)| {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (gateway, slow) = (gateway.clone(), slow.clone());
                    tokio::spawn(async move {
                        let mut done = 0u64;
                        // Counted from the first second on, once every queue is full.
                        while started.elapsed() < FAIRNESS_FOR {
                            let answer = gateway
                                .submit(TaskRequest::new(tenant, "slow", slow.clone()))
                                .await?;
                            anyhow::ensure!(
                                answer.outcome == Outcome::Success,
                                "{:?}",
                                answer.outcome
                            );
                            if started.elapsed() > Duration::from_secs(1) {
                                done += 1;
                            }
                        }
                        anyhow::Ok(done)
                    })
                })
                .collect();
            (tenant, workers)
        })
        .collect();
    let mut completed = Vec::new();
    for (tenant, workers) in counts {
        let mut n = 0;
        for w in workers {
            n += w.await??;
        }
        completed.push((tenant, n));
    }
    let total: u64 = completed.iter().map(|(_, n)| n).sum();
    let weight_sum: f64 = weights.iter().map(|(_, w)| w).sum();
    let mut shares = Vec::new();
    let mut error: f64 = 0.0;
    for ((tenant, n), (_, w)) in completed.iter().zip(weights) {
        let expected = w / weight_sum;
        let got = *n as f64 / total.max(1) as f64;
        error = error.max((got - expected).abs() / expected);
        shares.push((*tenant, expected, got));
    }

    // Victims: hooli and globex at 100 tasks/s each, alone, then with acme flooding, in
    // rounds; the ratio is the rounds' median, so that one stall of the disk (which every
    // task waits for) decides one round, not the figure.
    let mut rounds = Vec::new();
    for _ in 0..VICTIM_ROUNDS {
        let alone = victims(&gateway, None).await?;
        let with_noisy = victims(&gateway, Some(40)).await?;
        rounds.push((with_noisy, alone));
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|(with, alone)| with / alone).collect();
    ratios.sort_by(f64::total_cmp);
    Ok((error, shares, ratios[ratios.len() / 2], rounds))
}

/// The p99 (ms) of hooli's and globex's tasks at 100/s each for [`VICTIM_WINDOW`], with
/// acme keeping `noisy` tasks in flight meanwhile.
async fn victims(gateway: &Arc<Gateway>, noisy: Option<usize>) -> anyhow::Result<f64> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..noisy.unwrap_or(0))
        .map(|_| {
            let (gateway, stop) = (gateway.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    gateway
                        .submit(TaskRequest::new("acme", "slow", json!({"ms": 2})))
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut sent = Vec::new();
    let mut i = 0u32;
    while started.elapsed() < VICTIM_WINDOW {
        for tenant in ["hooli", "globex"] {
            let gateway = gateway.clone();
            sent.push(tokio::spawn(async move {
                let t = Instant::now();
                let answer = gateway
                    .submit(TaskRequest::new(tenant, "slow", json!({"ms": 2})))
                    .await?;
                anyhow::ensure!(answer.outcome == Outcome::Success, "{:?}", answer.outcome);
                anyhow::Ok(t.elapsed())
            }));
        }
        i += 1;
        tokio::time::sleep_until((started + Duration::from_millis(10) * i).into()).await;
    }
    let mut latencies = Vec::new();
    for s in sent {
        latencies.push(s.await??);
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await??;
    }
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    Ok(p99.as_secs_f64() * 1e3)
}

async fn throttled_records(store: &Store) -> anyhow::Result<u64> {
    Ok(store
        .outcome_counts()
        .await?
        .iter()
        .find(|c| c.outcome == "throttled")
        .map_or(0, |c| c.attempts))
}

/// CPU time so far (user and system, from `/proc`): this process apart from its load
/// generator's threads, those threads, and the ClickHouse server.
struct Cpu {
    process_s: f64,
    load_s: f64,
    clickhouse_s: f64,
}

/// CPU per task between two [`Cpu`] readings, in microseconds.
struct CpuPerTask {
    isometer_us: f64,
    load_us: f64,
    clickhouse_us: f64,
}

impl Cpu {
    fn now(clickhouse: u32) -> Cpu {
        let load_s = std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("load"))
            })
            .map(|t| cpu_seconds(&t.path().join("stat")))
            .sum();
        Cpu {
            process_s: cpu_seconds(std::path::Path::new("/proc/self/stat")),
            load_s,
            clickhouse_s: cpu_seconds(std::path::Path::new(&format!("/proc/{clickhouse}/stat"))),
        }
    }

    fn since(&self, before: &Cpu, tasks: u64) -> CpuPerTask {
        let per_task = |s: f64| s * 1e6 / tasks.max(1) as f64;
        let load = self.load_s - before.load_s;
        CpuPerTask {
            isometer_us: per_task(self.process_s - before.process_s - load),
            load_us: per_task(load),
            clickhouse_us: per_task(self.clickhouse_s - before.clickhouse_s),
        }
    }
}

/// User and system time of a `/proc/.../stat` file, in seconds (its ticks are 1/100 s).
fn cpu_seconds(stat: &std::path::Path) -> f64 {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return 0.0;
    };
    // The fields after the command's closing parenthesis: state is the first, utime
    // and stime the twelfth and thirteenth.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Time the hypervisor ran something else while this machine's cores wanted to run, in
/// seconds over all cores (`steal` in `/proc/stat`, in 1/100 s ticks); zero where the
/// kernel does not count it.
fn stolen_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The disk under the spools, alone: 8 KiB appended and made durable with `fdatasync`,
/// one after another for `duration`. Its tail is a floor under the gateway's: every task
/// of a group commit waits for its sync.
#[derive(Debug)]
struct DiskFloor {
    syncs: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The share of the time spent in syncs longer than 5 ms: about the share of tasks
    /// that arrive while one is under way.
    stalled_share: f64,
}

/// How segments are removed beside the syncs of [`disk_floor`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Removal {
    /// None are.
    None,
    /// One 64 MiB segment a second, removed at once.
    AtOnce,
    /// One 64 MiB segment a second, removed as the spool does (`remove_in_steps`).
    InSteps,
}

fn disk_floor(duration: Duration, removal: Removal) -> anyhow::Result<DiskFloor> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    // The segments to remove, written and synced before the clock starts.
    let mut segments = Vec::new();
    if removal != Removal::None {
        let megabyte = vec![0xa5_u8; 1 << 20];
        for i in 0..duration.as_secs() {
            let path = dir.path().join(format!("{i}.seg"));
            let mut segment = std::fs::File::create(&path)?;
            for _ in 0..64 {
                segment.write_all(&megabyte)?;
            }
            segment.sync_all()?;
            segments.push(path);
        }
    }
    let remover = std::thread::spawn(move || -> std::io::Result<()> {
        for path in segments {
            std::thread::sleep(Duration::from_millis(500));
            match removal {
                Removal::AtOnce => std::fs::remove_file(&path)?,
                _ => drop(isometer_store::remove_in_steps(&path)?),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    });
    let probe = dir.path().join("probe");
    let mut file = std::fs::File::create(&probe)?;
    let block = vec![0x5a_u8; 8 << 10];
    let mut syncs = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        syncs.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    remover
        .join()
        .map_err(|_| anyhow::anyhow!("the remover panicked"))??;
    // The probe's file (hundreds of MiB) goes in steps too: removed at once with the
    // directory, its discards held the syncs of the phase after for 30 to 40 ms.
    drop(file);
    isometer_store::remove_in_steps(&probe)?;
    syncs.sort_unstable();
    let at = |p: usize| syncs[(syncs.len() * p / 100).min(syncs.len() - 1)].as_secs_f64() * 1e3;
    let stalled: Duration = syncs
        .iter()
        .filter(|d| **d > Duration::from_millis(5))
        .sum();
    Ok(DiskFloor {
        syncs: syncs.len(),
        p50_ms: at(50),
        p99_ms: at(99),
        max_ms: syncs.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        stalled_share: stalled.as_secs_f64() / elapsed.as_secs_f64(),
    })
}
