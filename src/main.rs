//! The `isometer` command: parses arguments, sets up logging and calls the libraries.

mod commands;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// glibc's allocator spends a tenth of the shipper's and the gateway's time in its free
/// lists under many threads; mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Meter, govern and charge back AI-agent tool executions.
#[derive(Debug, Parser)]
#[command(name = "isometer", version)]
struct Cli {
    /// Configuration directory (tenants, tools, policies, rate cards, isometer.toml).
    #[arg(long, global = true, default_value = "config", env = "ISOMETER_CONFIG")]
    config: PathBuf,
    /// Directory for the managed ClickHouse server's data and logs, and compiled tools.
    #[arg(
        long,
        global = true,
        default_value = ".isometer",
        env = "ISOMETER_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Use this ClickHouse server (HTTP URL) instead of starting one.
    #[arg(long, global = true, env = "ISOMETER_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// ClickHouse database of `serve` and `migrate` (default `isometer`); the demo always
    /// uses its own, `isometer_demo`.
    #[arg(long, global = true, env = "ISOMETER_DATABASE")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one tool module once, under limits, and print what it did and consumed.
    Run(RunArgs),
    /// Apply pending schema migrations.
    Migrate,
    /// Serve the API and the dashboard.
    Serve(ServeArgs),
    /// Start ClickHouse, run a multi-tenant workload, then serve the dashboard.
    Demo(DemoArgs),
    /// The local usage spool.
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Check a signed manifest (a file of `run --json` output, or the manifest alone)
    /// against this data directory's evidence key and, when given, the files it names.
    Verify(VerifyArgs),
    /// Write the replay package of every attempt of a trace (`TRACE_ID --out DIR`), or
    /// re-run a package and compare its output hash with the manifest's (`--run DIR`).
    Replay(ReplayArgs),
    /// API keys: create (the key is printed once, on the last line), list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The FinOps KPIs over a period (days, both included, UTC).
    Kpi(KpiArgs),
    /// A tenant's usage statement for a month: issued (stored, immutable) once the month is
    /// over, a draft before.
    Statement(StatementArgs),
    /// Export costs in a standard format.
    #[command(subcommand)]
    Export(ExportCommand),
}

#[derive(Debug, Args)]
struct KpiArgs {
    /// First day, `YYYY-MM-DD`.
    #[arg(long)]
    from: chrono::NaiveDate,
    /// Last day, `YYYY-MM-DD` (included).
    #[arg(long)]
    to: chrono::NaiveDate,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    use_case: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    /// `customer` or `exploratory`.
    #[arg(long)]
    run_class: Option<String>,
    /// Compute from the raw tables instead of the rollups (slower; the same answers).
    #[arg(long)]
    raw: bool,
    /// Print one JSON object; amounts and ratios as decimal strings.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StatementFormat {
    Html,
    Csv,
    Json,
}

#[derive(Debug, Args)]
struct StatementArgs {
    #[arg(long)]
    tenant: String,
    /// The month, `YYYY-MM`.
    #[arg(long)]
    period: String,
    #[arg(long, value_enum, default_value = "html")]
    format: StatementFormat,
    /// Write here instead of to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// When the recorded usage no longer gives the statement on record, issue the next
    /// version (saying what changed) instead of printing the one on record.
    #[arg(long)]
    reissue: bool,
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// A month's charges to every tenant as FOCUS 1.2 CSV.
    Focus {
        /// The month, `YYYY-MM`.
        #[arg(long)]
        period: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; prints it on its last line. Only its hash is kept.
    Create {
        /// admin, finance, pm, approver or tenant.
        #[arg(long)]
        role: String,
        /// The tenant a `tenant` key is bound to.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Every key: id, role, tenant, created, revoked.
    List {
        /// Print one JSON object per key instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; it stops working within seconds on every server.
    Revoke { key_id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["trace_id", "run"])))]
struct ReplayArgs {
    /// The trace whose attempts to package (from ClickHouse, database `--database`).
    #[arg(requires = "out")]
    trace_id: Option<String>,
    /// Where to write the packages.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A package (or a directory of packages) to run again.
    #[arg(long, conflicts_with = "trace_id")]
    run: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The signed manifest, as JSON.
    manifest: PathBuf,
    /// The tool module the manifest says ran.
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// The input it was given.
    #[arg(long)]
    input: Option<PathBuf>,
    /// What it wrote to stdout.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SpoolCommand {
    /// What the spool holds that ClickHouse does not have yet: records, rows, bytes and the
    /// age of the oldest. Reads the files only; safe while isometer runs.
    Status(SpoolStatusArgs),
}

#[derive(Debug, Args)]
struct SpoolStatusArgs {
    /// The database whose spool to read (default: that of `serve`).
    #[arg(long)]
    of: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The tool: a WASI command module, `.wasm` or `.wat`.
    #[arg(long)]
    tool: PathBuf,
    /// Input JSON written to the tool's stdin, or `@FILE` to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Fuel budget (about one unit per wasm instruction).
    #[arg(long, default_value_t = 50_000_000)]
    fuel: u64,
    /// Linear memory budget, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mb: u64,
    /// Wall-time budget, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
    /// stdout, stderr and log records budget, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_output_bytes: u64,
    /// Let the tool reach this host over HTTP: `HOST[:PORT]`, `*.DOMAIN[:PORT]`, `*`, or an
    /// address (naming a loopback or private address allows it). Repeatable; no network
    /// without it.
    #[arg(long, value_name = "HOST[:PORT]")]
    allow_host: Vec<String>,
    /// Egress budget (bytes sent and received).
    #[arg(long, default_value_t = 1 << 20)]
    max_egress_bytes: u64,
    /// Egress request budget.
    #[arg(long, default_value_t = 32)]
    max_egress_requests: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of dashboard layouts (one TOML file per page) instead of the shipped
    /// ones; checked before the server starts.
    #[arg(long)]
    dashboards: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Tasks to submit.
    #[arg(long, default_value_t = 1_200)]
    tasks: usize,
    /// Seed of the workload's choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Days of history the tasks are spread over.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Exit after seeding instead of serving the dashboard.
    #[arg(long)]
    no_serve: bool,
    /// Address to serve the dashboard on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISOMETER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
