//! `isometer serve`: the API and the dashboard over the configured store.

use crate::{Cli, ServeArgs};
use anyhow::Context;
use isometer_core::SystemClock;
use isometer_gateway::Gateway;
use isometer_policy::Config;
use isometer_store::{Store, WriterOptions};
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
    super::archive(&store, gateway.config()).await?;
    serve_until_signal(Arc::new(gateway), store, args.listen, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves until Ctrl-C or SIGTERM, then flushes recorded usage.
pub(crate) async fn serve_until_signal(
    gateway: Arc<Gateway>,
    store: Store,
    listen: SocketAddr,
    mut shutdown: super::Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let router = isometer_web::router(AppState {
        gateway: gateway.clone(),
        store,
    });
    println!("serving the dashboard at http://{addr}/ (Ctrl-C to stop)");
    isometer_web::serve(listener, router, async move { shutdown.wait().await }).await?;
    super::flush_before_exit(&gateway).await
}
