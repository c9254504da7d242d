//! `isometer serve`: the API and the dashboard over the configured store.

use crate::{Cli, ServeArgs};
use anyhow::Context;
use isometer_core::SystemClock;
use isometer_gateway::Gateway;
use isometer_policy::Config;
use isometer_store::WriterOptions;
use isometer_web::AppState;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) async fn serve(
    cli: &Cli,
    args: &ServeArgs,
    url: &str,
    shutdown: super::Shutdown,
) -> anyhow::Result<ExitCode> {
    let layouts = match &args.dashboards {
        Some(dir) => Some(isometer_web::Layouts::load(dir)?),
        None => None,
    };
    let store = super::open_store(cli, url).await?;
    store.migrate().await.context("migrating")?;
    let config = Arc::new(Config::load(&cli.config)?);
    let gateway = Gateway::with_runtime(
        config,
        super::wasm_runtime(cli)?,
        store.writer(WriterOptions {
            spool_dir: Some(super::spool_dir(cli, store.database())),
            ..WriterOptions::default()
        })?,
        super::evidence_signer(cli)?,
        Arc::new(SystemClock),
    )?;
    let mut state = AppState::new(Arc::new(gateway), store);
    if let Some(layouts) = layouts {
        state = state.with_layouts(layouts);
    }
    state.start().await?;
    serve_until_signal(state, args.listen, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves until Ctrl-C or SIGTERM, then flushes recorded usage. SIGHUP reloads the
/// configuration directory (an invalid one is reported and the active version stays).
pub(crate) async fn serve_until_signal(
    state: AppState,
    listen: SocketAddr,
    mut shutdown: super::Shutdown,
) -> anyhow::Result<()> {
    let listener =
        isometer_web::listen(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let reloader = state.clone();
    let reloads = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloader.reload_config("sighup").await {
                Ok(Some(applied)) => eprintln!(
                    "SIGHUP: configuration {} is active (was {})",
                    applied.change.version, applied.change.previous_version
                ),
                Ok(None) => eprintln!("SIGHUP: the configuration is unchanged"),
                Err(isometer_web::ApiError::Invalid { message, problems }) => {
                    eprintln!("SIGHUP: {message}");
                    for problem in problems {
                        eprintln!("  {problem}");
                    }
                }
                Err(e) => eprintln!("SIGHUP: reload failed: {e}"),
            }
        }
    });
    // Approvals whose time is up end, and their tasks are recorded, within a second.
    let gateway = state.gateway.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = gateway.expire_approvals().await {
                tracing::warn!(error = %e, "cannot end expired approvals; will retry");
            }
        }
    });
    let gateway = state.gateway.clone();
    let router = isometer_web::router(state);
    println!("serving the dashboard at http://{addr}/ (Ctrl-C to stop)");
    isometer_web::serve(listener, router, async move { shutdown.wait().await }).await?;
    reloads.abort();
    sweeper.abort();
    super::flush_before_exit(&gateway).await
}
