//! `isometer demo`: a fresh database, a week of multi-tenant work, a summary, the dashboard.

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
    let config = Arc::new(Config::load(&cli.config)?);
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
    };
    eprintln!(
        "demo: submitting {} tasks over {} simulated days",
        args.tasks, args.days
    );
    let mut hooks = WeekHooks {
        state: state.clone(),
        variant: variant_config(&cli.config, cli.data_dir.join("demo-config"))?,
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
    variant: Option<Config>,
    rollback_day: u32,
}

impl workload::Hooks for WeekHooks {
    async fn new_day(&mut self, day: u32) {
        match day {
            3 => {
                if let Some(variant) = self.variant.take() {
                    match self.state.apply_config(variant, "demo").await {
                        Ok(_) => {}
                        Err(e) => eprintln!("demo: the configuration change failed: {e}"),
                    }
                }
            }
            4 => match self.state.rollback_config("demo").await {
                Ok(_) => self.rollback_day = day,
                Err(e) => eprintln!("demo: the rollback failed: {e}"),
            },
            _ => {}
        }
    }
}

/// The shipped configuration with the slow tool's deadline cut to 5 ms, written beside
/// the data (its tools' paths made absolute); `None` when the configuration has no such
/// deadline to cut.
fn variant_config(
    config: &std::path::Path,
    dir: std::path::PathBuf,
) -> anyhow::Result<Option<Config>> {
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let base = config
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", config.display()))?;
    let mut changed = false;
    for entry in std::fs::read_dir(&base)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path)?;
        let parent = base.parent().unwrap_or(&base).display().to_string();
        text = text.replace("artifact = \"../", &format!("artifact = \"{parent}/"));
        if path.file_name().is_some_and(|n| n == "policies.toml") {
            let cut = text.replace(
                "tool_id = \"slow\"\ntenant_tier = \"standard\"\npurpose = \"export documents from a slow archive\"\nmax_duration_ms = 250",
                "tool_id = \"slow\"\ntenant_tier = \"standard\"\npurpose = \"export documents from a slow archive\"\nmax_duration_ms = 5",
            );
            changed = cut != text;
            text = cut;
        }
        let name = path
            .file_name()
            .map(std::ffi::OsStr::to_owned)
            .unwrap_or_default();
        std::fs::write(dir.join(name), text)?;
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(Config::load(&dir)?))
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
