//! One module per subcommand, and the glue they share: settings, ClickHouse, shutdown.

mod billing;
mod demo;
mod keys;
mod replay;
mod run;
mod serve;
mod upstreams;
mod verify;

use crate::{Cli, Command};
use anyhow::Context;
use isometer_policy::Settings;
use isometer_store::{ManagedClickHouse, ServerOptions, Store};
use std::process::ExitCode;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // serve and demo wait for a signal to stop in order; they listen before anything else
    // starts. The other commands keep the default action: a signal ends them at once.
    let shutdown = || {
        let _context = runtime.enter();
        Shutdown::register()
    };
    match &cli.command {
        Command::Run(args) => runtime.block_on(run::run(&cli, args)),
        Command::Migrate => {
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(async {
                let store = open_store(&cli, &url).await?;
                let report = store.migrate().await?;
                for name in &report.applied {
                    println!("applied {name}");
                }
                println!(
                    "{} applied, {} already applied, database {}",
                    report.applied.len(),
                    report.already_applied,
                    store.database()
                );
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Serve(args) => {
            let shutdown = shutdown()?;
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(serve::serve(&cli, args, &url, shutdown))
        }
        Command::Spool(crate::SpoolCommand::Status(args)) => spool_status(&cli, args),
        Command::Verify(args) => verify::verify(&cli, args),
        Command::Replay(args) => match (&args.run, &args.trace_id, &args.out) {
            (Some(dir), _, _) => runtime.block_on(replay::run(&cli, dir)),
            (None, Some(trace_id), Some(out)) => {
                let (_server, url) = clickhouse(&cli)?;
                runtime.block_on(async {
                    let store = open_store(&cli, &url).await?;
                    replay::export(&store, trace_id, out).await
                })
            }
            _ => anyhow::bail!("give a trace id and --out DIR, or --run DIR"),
        },
        Command::Keys(command) => {
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(async {
                let store = open_store(&cli, &url).await?;
                store.migrate().await.context("migrating")?;
                keys::keys(&cli, command, &store).await
            })
        }
        Command::Kpi(args) => {
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(async {
                let store = open_store(&cli, &url).await?;
                store.migrate().await.context("migrating")?;
                billing::kpi(&cli, args, &store).await
            })
        }
        Command::Statement(args) => {
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(async {
                let store = open_store(&cli, &url).await?;
                store.migrate().await.context("migrating")?;
                billing::statement(&cli, args, &store).await
            })
        }
        Command::Export(crate::ExportCommand::Focus { period, out }) => {
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(async {
                let store = open_store(&cli, &url).await?;
                store.migrate().await.context("migrating")?;
                billing::focus(&cli, period, out, &store).await
            })
        }
        Command::Demo(args) => {
            let shutdown = shutdown()?;
            let (_server, url) = clickhouse(&cli)?;
            runtime.block_on(demo::demo(&cli, args, &url, shutdown))
        }
    }
    // `_server`, when isometer started one, is stopped here as it goes out of scope.
}

/// The evidence signing key: from `[evidence] key_dir` in isometer.toml when set (it must
/// be there), otherwise `DATA_DIR/keys`, created there on first use when `create`.
fn evidence_key(cli: &Cli, create: bool) -> anyhow::Result<isometer_evidence::EvidenceKey> {
    use isometer_evidence::EvidenceKey;
    Ok(match settings(cli)?.evidence_key_dir {
        Some(dir) => EvidenceKey::load(&dir).with_context(|| {
            format!(
                "the evidence key named in {}",
                cli.config.join("isometer.toml").display()
            )
        })?,
        None if create => EvidenceKey::load_or_create(&cli.data_dir.join("keys"))?,
        None => EvidenceKey::load(&cli.data_dir.join("keys"))?,
    })
}

/// The signer of this deployment's evidence, creating its key the first time.
fn evidence_signer(cli: &Cli) -> anyhow::Result<isometer_evidence::BatchSigner> {
    Ok(isometer_evidence::BatchSigner::new(evidence_key(
        cli, true,
    )?))
}

/// Where usage for `database` is spooled.
fn spool_dir(cli: &Cli, database: &str) -> std::path::PathBuf {
    cli.data_dir.join("spool").join(database)
}

fn spool_status(cli: &Cli, args: &crate::SpoolStatusArgs) -> anyhow::Result<ExitCode> {
    let database = match &args.of {
        Some(name) => name.clone(),
        None => database(cli)?,
    };
    let dir = spool_dir(cli, &database);
    if !dir.is_dir() {
        anyhow::bail!(
            "there is no spool at {} (nothing was recorded for database {database} with this --data-dir)",
            dir.display()
        );
    }
    let status = isometer_store::spool_status(&dir)?;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!("spool      {}", status.dir.display());
        println!("segments   {} ({} bytes)", status.segments, status.bytes);
        println!(
            "shipped    every record below {} (next to append: {})",
            status.shipped_seq, status.next_seq
        );
        println!(
            "lag        {} records, {} rows (events and task records){}",
            status.lag_records,
            status.lag_rows,
            status
                .lag_ms
                .map(|ms| format!(", oldest appended {:.1} s ago", ms as f64 / 1000.0))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The wasm runtime, with compiled tools cached under the data directory.
/// Pool sizes come from `[runtime]` in isometer.toml.
fn wasm_runtime(cli: &Cli) -> anyhow::Result<isometer_runtime::Runtime> {
    let settings = settings(cli)?.runtime;
    let defaults = isometer_runtime::RuntimeOptions::default();
    Ok(isometer_runtime::Runtime::with_options(
        isometer_runtime::RuntimeOptions {
            max_in_flight: settings.max_in_flight.unwrap_or(defaults.max_in_flight),
            max_memory_bytes: settings
                .max_memory_bytes
                .unwrap_or(defaults.max_memory_bytes),
            max_module_bytes: settings
                .max_module_bytes
                .unwrap_or(defaults.max_module_bytes),
            cache_dir: Some(cli.data_dir.join("compiled")),
            ..defaults
        },
    )?)
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(Settings::load(&cli.config)?)
}

/// The database of `serve` and `migrate`.
fn database(cli: &Cli) -> anyhow::Result<String> {
    Ok(cli
        .database
        .clone()
        .or(settings(cli)?.database)
        .unwrap_or_else(|| "isometer".to_owned()))
}

/// The database of `serve` and `migrate`, on the configured cluster if there is one.
async fn open_store(cli: &Cli, url: &str) -> anyhow::Result<Store> {
    let database = database(cli)?;
    Ok(match settings(cli)?.cluster {
        Some(cluster) => Store::open_on_cluster(url, &database, &cluster).await?,
        None => Store::open(url, &database).await?,
    })
}

/// How long a shutdown waits for queued usage to reach ClickHouse.
const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Flushes the gateway's queued usage, giving up after [`FLUSH_DEADLINE`].
async fn flush_before_exit(gateway: &isometer_gateway::Gateway) -> anyhow::Result<()> {
    match tokio::time::timeout(FLUSH_DEADLINE, gateway.flush()).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!(
            "ClickHouse did not take the queued usage within {FLUSH_DEADLINE:?}; rows still queued were not written"
        ),
    }
}

/// The ClickHouse to use: the configured URL, or a server started here and owned by the
/// returned handle.
fn clickhouse(cli: &Cli) -> anyhow::Result<(Option<ManagedClickHouse>, String)> {
    if let Some(url) = cli.clickhouse_url.clone().or(settings(cli)?.clickhouse_url) {
        tracing::info!(%url, "using the configured ClickHouse server");
        return Ok((None, url));
    }
    let dir = cli.data_dir.join("clickhouse");
    eprintln!("starting clickhouse-server (data in {})", dir.display());
    let server = ManagedClickHouse::start(&ServerOptions::new(&dir))?;
    let url = server.url();
    Ok((Some(server), url))
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for from the start of the process: one that
/// arrives before anything waits for it is kept, never lost to the default action.
pub(crate) struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    /// Must be called inside the async runtime's context.
    fn register() -> anyhow::Result<Self> {
        Ok(Shutdown {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// Resolves at the next (or an already received) SIGINT or SIGTERM.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        tracing::info!("shutting down");
    }
}
