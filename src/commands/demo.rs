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
    let mut next_report = 0;
    let progress = |done: usize, total: usize| {
        if done * 10 >= next_report * total || done == total {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!("demo: {done:>6}/{total} tasks ({rate:.0} tasks/s)");
            next_report = done * 10 / total.max(1) + 1;
        }
    };
    let summary = tokio::select! {
        s = workload::run(&gateway, &clock, options, progress) => s?,
        () = shutdown.wait() => {
            super::flush_before_exit(&gateway).await?;
            anyhow::bail!("interrupted");
        }
    };
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
    writeln!(out, "  total cost         {}", summary.cost.round_dp(6))?;
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
