//! `isometer demo`: a fresh database, a week of multi-tenant work, a summary, the dashboard.

use super::upstreams;
use crate::{Cli, DemoArgs};
use anyhow::Context;
use isometer_core::{Clock, ManualClock, SystemClock};
use isometer_gateway::Gateway;
use isometer_gateway::workload::{self, WorkloadOptions};
use isometer_policy::Config;
use isometer_store::{Store, WriterOptions};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// The demo's own database, dropped and recreated on every run. Never configurable, so
/// the demo cannot drop anything else.
const DEMO_DATABASE: &str = "isometer_demo";

pub(crate) async fn demo(
    cli: &Cli,
    args: &DemoArgs,
    url: &str,
    mut shutdown: super::Shutdown,
) -> anyhow::Result<ExitCode> {
    let database = DEMO_DATABASE;
    let store = Store::open_fresh(url, database).await?;
    // The demo starts from nothing: its spool too.
    let spool = super::spool_dir(cli, database);
    if spool.exists() {
        std::fs::remove_dir_all(&spool)
            .with_context(|| format!("cannot clear the demo's spool {}", spool.display()))?;
    }
    store.migrate().await.context("migrating")?;
    // The services the demo's tools reach, and the configuration that names them.
    let upstreams = upstreams::start().await?;
    let config = Arc::new(demo_config(
        &cli.config,
        &cli.data_dir.join("demo-config"),
        upstreams.addr,
        false,
    )?);
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let gateway = Arc::new(Gateway::with_runtime(
        config,
        super::wasm_runtime(cli)?,
        store.writer(WriterOptions {
            spool_dir: Some(spool),
            ..WriterOptions::default()
        })?,
        super::evidence_signer(cli)?,
        clock.clone(),
    )?);
    let state = isometer_web::AppState::new(gateway.clone(), store.clone());
    state.start().await?;

    let started = Instant::now();
    let options = WorkloadOptions {
        tasks: args.tasks,
        seed: args.seed,
        days: args.days,
        upstream: Some(upstreams.base()),
    };
    let burst = match options.burst_tasks() {
        0 => String::new(),
        n => format!(", and a burst of {n} on the day before last"),
    };
    eprintln!(
        "demo: submitting {} tasks over {} simulated days{burst}",
        options.tasks, options.days
    );
    let mut hooks = WeekHooks {
        state: state.clone(),
        clock: clock.clone(),
        variant: Some(demo_config(
            &cli.config,
            &cli.data_dir.join("demo-config-changed"),
            upstreams.addr,
            true,
        )?),
        rollback_day: 0,
    };
    let mut bar = Progress::new(started);
    let summary = tokio::select! {
        s = workload::run(&gateway, &clock, options, &mut hooks, |done, total| bar.show(done, total)) => s?,
        () = shutdown.wait() => {
            super::flush_before_exit(&gateway).await?;
            anyhow::bail!("interrupted");
        }
    };
    bar.finish();
    super::flush_before_exit(&gateway).await?;
    let totals = store.totals().await?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\ndemo: {} tasks in {:.1} s, database {database}",
        summary.tasks,
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        out,
        "  stored: {} usage events, {} tasks, {} tenants, {} tools",
        totals.events, totals.tasks, totals.tenants, totals.tools
    )?;
    for (outcome, n) in workload::ordered_outcomes(&summary) {
        writeln!(out, "  {outcome:<18} {n:>6}")?;
    }
    let today = clock.now().date_naive();
    let week = isometer_store::Filter::days(
        today - chrono::Days::new(u64::from(args.days.max(1))),
        today,
    );
    let kpis = isometer_billing::kpis(
        &store,
        &gateway.config(),
        &week,
        isometer_store::Source::Rollup,
    )
    .await
    .context("computing the week's KPIs")?;
    let currency = kpis.currency.clone().unwrap_or_default();
    writeln!(
        out,
        "  cost               {} {currency}",
        kpis.cost_total.round_dp(6)
    )?;
    writeln!(
        out,
        "  billed             {} {currency}",
        kpis.billed_total.round_dp(6)
    )?;
    writeln!(
        out,
        "  gross margin       {} {currency}",
        kpis.gross_margin.round_dp(6)
    )?;
    writeln!(
        out,
        "  capped runs        {:>6} ({} tasks, {} {currency} avoided)",
        summary.capped_runs.len(),
        kpis.capped_tasks,
        kpis.capped_savings.round_dp(6)
    )?;
    writeln!(
        out,
        "  throttled tasks    {:>6} ({} of the {} in the burst)",
        kpis.throttled_tasks, summary.burst_throttled, summary.burst
    )?;
    let waiting = summary.expired.saturating_sub(
        summary
            .outcomes
            .get("approval_required")
            .copied()
            .unwrap_or(0),
    );
    writeln!(
        out,
        "  approvals          {:>6} ({} approved, {} denied, {} expired, {waiting} awaiting an approver)",
        summary.approvals,
        summary.approved,
        summary.denied,
        summary.expired - waiting,
    )?;
    if hooks.rollback_day > 0 {
        writeln!(
            out,
            "  configuration      changed on day {}, rolled back on day {}",
            hooks.rollback_day - 1,
            hooks.rollback_day
        )?;
    }
    drop(out);

    // A key for each role, and one for the first tenant, to sign in to the dashboard.
    let first_tenant = gateway.config().tenants.first().map(|t| t.id.clone());
    let mut keys = Vec::new();
    for role in isometer_web::auth::Role::ALL {
        let tenant = match role {
            isometer_web::auth::Role::Tenant => match &first_tenant {
                Some(t) => Some(t.as_str()),
                None => continue,
            },
            _ => None,
        };
        let key = isometer_web::auth::create_key(&store, role, tenant)
            .await
            .map_err(|e| anyhow::anyhow!("creating the demo's {role} key: {e}"))?;
        let who = match tenant {
            Some(t) => format!("{role} {t}"),
            None => role.to_string(),
        };
        keys.push((who, key.key));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "  sign-in keys (paste one at /login):")?;
    for (who, key) in &keys {
        writeln!(out, "    {who:<16} {key}")?;
    }
    drop(out);

    if !args.no_serve {
        super::serve::serve_until_signal(state, args.listen, shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The week's configuration story: a change on day 3 (a tighter deadline for the slow
/// tool, which makes it time out) and its rollback on day 4, both recorded as they would
/// be through the admin API.
struct WeekHooks {
    state: isometer_web::AppState,
    clock: Arc<ManualClock>,
    variant: Option<Config>,
    rollback_day: u32,
}

/// How long after a configuration change the next agent call arrives: what the change's
/// activation time measures.
const NEXT_CALL_AFTER_CHANGE_MS: i64 = 2_400;

impl workload::Hooks for WeekHooks {
    async fn new_day(&mut self, day: u32) {
        match day {
            3 => {
                if let Some(variant) = self.variant.take() {
                    match self.state.apply_config(variant, "demo").await {
                        Ok(_) => self
                            .clock
                            .advance(chrono::TimeDelta::milliseconds(NEXT_CALL_AFTER_CHANGE_MS)),
                        Err(e) => eprintln!("demo: the configuration change failed: {e}"),
                    }
                }
            }
            4 => match self.state.rollback_config("demo").await {
                Ok(_) => {
                    self.rollback_day = day;
                    self.clock
                        .advance(chrono::TimeDelta::milliseconds(NEXT_CALL_AFTER_CHANGE_MS));
                }
                Err(e) => eprintln!("demo: the rollback failed: {e}"),
            },
            _ => {}
        }
    }
}

/// The demo's configuration: the shipped one (its tools' paths made absolute) plus the
/// tools that reach the demo's upstream services, written to `dir`. With `cut_deadline`,
/// the slow tool's deadline is cut to 5 ms (the change the demo rolls back).
fn demo_config(
    config: &std::path::Path,
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    cut_deadline: bool,
) -> anyhow::Result<Config> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Paths in the files are read relative to the directory itself: write absolute ones.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let base = config
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", config.display()))?;
    let root = base.parent().unwrap_or(&base).display().to_string();
    let key = dir.join("market-data.key");
    std::fs::write(&key, upstreams::MARKET_KEY)?;
    // A tool deployed broken: its file is no wasm module, so its tasks are invalid_artifact.
    let legacy = dir.join("legacy-export.wasm");
    std::fs::write(&legacy, b"MZ\x90\x00 a Windows binary uploaded by mistake")?;
    for entry in std::fs::read_dir(&base)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path
            .file_name()
            .map(std::ffi::OsStr::to_owned)
            .unwrap_or_default();
        let mut text = std::fs::read_to_string(&path)?
            .replace("artifact = \"../", &format!("artifact = \"{root}/"));
        let overlay = match name.to_str() {
            Some("tools.toml") => tools_overlay(&root, &legacy),
            Some("policies.toml") => policies_overlay(upstream),
            Some("secrets.toml") => format!(
                "\n# The demo's market-data service: its key, injected by the egress gateway.\n\
                 [[secret_profile]]\nid = \"market-data\"\n\n[[secret_profile.secret]]\n\
                 host = \"{upstream}\"\nheader = \"Authorization\"\nprefix = \"Bearer \"\n\
                 value = \"file:{}\"\n",
                key.display()
            ),
            _ => String::new(),
        };
        text.push_str(&overlay);
        if cut_deadline && name == "policies.toml" {
            text = text.replace(
                "purpose = \"export documents from a slow archive\"\nmax_duration_ms = 250",
                "purpose = \"export documents from a slow archive\"\nmax_duration_ms = 5",
            );
        }
        std::fs::write(dir.join(name), text)?;
    }
    Ok(Config::load(dir)?)
}

fn tools_overlay(root: &str, legacy: &std::path::Path) -> String {
    let guest = |name: &str| format!("{root}/target/guests/wasm32-wasip1/release/{name}.wasm");
    format!(
        r#"
# The demo's tools that reach its local upstream services.
[[tool]]
id = "market-quote"
artifact = "{fetch}"
description = "Reads a stock quote from the market-data service"
default_use_case = "portfolio-quote"

[[tool]]
id = "news-digest"
artifact = "{fetch}"
description = "Reads market news for a briefing"
default_use_case = "market-briefing"

[[tool]]
id = "partner-sync"
artifact = "{fetch}"
description = "Reads accounts from a partner's API"
default_use_case = "crm-sync"

[[tool]]
id = "send-email"
artifact = "{email}"
description = "Sends an email to a customer"
default_use_case = "customer-notice"
destructive = true

[[tool]]
id = "legacy-export"
artifact = "{legacy}"
description = "Exports documents in the old format"
default_use_case = "document-export"
"#,
        fetch = guest("fetch"),
        email = guest("send-email"),
        legacy = legacy.display(),
    )
}

fn policies_overlay(upstream: std::net::SocketAddr) -> String {
    let read = format!("network_allowlist = [{{ host = \"{upstream}\", access = \"read\" }}]");
    let write = format!("network_allowlist = [{{ host = \"{upstream}\", access = \"write\" }}]");
    // Each tool's purpose and what its policy adds to the shared budget.
    let tools = [
        (
            "market-quote",
            "read quotes to answer portfolio questions",
            format!("{read}\nsecret_profile = \"market-data\""),
        ),
        (
            "news-digest",
            "read market news for briefings",
            format!("{read}\non_poisoning = \"deny\""),
        ),
        (
            "partner-sync",
            "synchronise accounts with a partner",
            format!(
                "{read}\nretry = {{ max_attempts = 3, budget_ratio = 0.3, window_s = 300, \
                 backoff_ms = 10, on = [\"failed\"] }}\nfallback = {{ kind = \"static\", \
                 body = '{{\"synced\":false,\"status\":\"deferred\"}}' }}"
            ),
        ),
        (
            "legacy-export",
            "export documents in the old format",
            String::new(),
        ),
        ("send-email", "notify customers by email", write),
    ];
    let mut out =
        String::from("\n# The demo's upstream tools, for the standard and premium tiers.\n");
    for tier in ["standard", "premium"] {
        for (tool, purpose, extra) in &tools {
            out.push_str(&format!(
                "\n[[policy]]\nid = \"{tool}/{tier}\"\ntool_id = \"{tool}\"\n\
                 tenant_tier = \"{tier}\"\npurpose = \"{purpose}\"\nmax_duration_ms = 2000\n\
                 max_fuel = 50_000_000\nmax_memory_mb = 64\nmax_output_bytes = 65_536\n{extra}\n"
            ));
        }
    }
    out
}

/// A one-line progress bar with tasks/s on a terminal; a line per tenth otherwise.
struct Progress {
    started: Instant,
    terminal: bool,
    next_tenth: usize,
}

impl Progress {
    fn new(started: Instant) -> Self {
        use std::io::IsTerminal;
        Progress {
            started,
            terminal: std::io::stderr().is_terminal(),
            next_tenth: 0,
        }
    }

    fn show(&mut self, done: usize, total: usize) {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        if self.terminal {
            if !done.is_multiple_of(16) && done != total {
                return;
            }
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\rdemo: [{}{}] {done:>6}/{total} tasks, {rate:>6.0} tasks/s",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
        } else if done * 10 >= self.next_tenth * total || done == total {
            eprintln!("demo: {done:>6}/{total} tasks ({rate:.0} tasks/s)");
            self.next_tenth = done * 10 / total.max(1) + 1;
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
