//! A `clickhouse-server` child process that isometer starts, owns and always stops.
//!
//! The server is spawned from a dedicated thread that lives exactly as long as the server
//! should, through `setpriv --pdeathsig TERM`: if isometer dies in any way, SIGKILL
//! included, the kernel sends the server SIGTERM, so no orphan is ever left behind.

use crate::error::StoreError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to start a managed server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Directory for the server's configuration, data and logs (created if missing).
    pub dir: PathBuf,
    /// How long to wait for the server to answer `/ping`.
    pub startup_timeout: Duration,
    /// How long a SIGTERM may take before SIGKILL.
    pub shutdown_timeout: Duration,
    /// Ports to listen on; free ones are picked when unset. Fixed ports let a server be
    /// restarted at the same URL.
    pub http_port: Option<u16>,
    pub tcp_port: Option<u16>,
    /// Extra server configuration, XML elements placed inside the root element (a
    /// cluster's `<remote_servers>`, `<zookeeper>`, `<distributed_ddl>`).
    pub extra_config: String,
    /// Runs the server under `SCHED_IDLE`: it gets only the CPU time nothing else on the
    /// machine wants. For a server sharing a small machine with a gateway, whose tasks
    /// wait for the spool and never for ClickHouse: shipping catches up whenever the
    /// tasks leave a core idle, and a merge never delays an answer. The cost is that any
    /// busy process on the machine delays shipping (and the spool fills up meanwhile).
    pub idle_priority: bool,
}

impl ServerOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            dir: dir.into(),
            startup_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(15),
            http_port: None,
            tcp_port: None,
            extra_config: String::new(),
            idle_priority: false,
        }
    }
}

/// A running `clickhouse-server` owned by this process.
#[derive(Debug)]
pub struct ManagedClickHouse {
    http_port: u16,
    tcp_port: u16,
    pid: u32,
    dir: PathBuf,
    shutdown_timeout: Duration,
    control: Option<mpsc::Sender<Duration>>,
    stopped: Arc<Mutex<Option<ExitStatus>>>,
    // Behind a mutex only so the handle is Sync (it can live in a static).
    done: Mutex<Option<mpsc::Receiver<()>>>,
    /// Held for the server's life; released when the handle is dropped.
    _lock: Option<std::fs::File>,
}

impl ManagedClickHouse {
    /// Starts a server with its files under `options.dir` and waits until it answers.
    pub fn start(options: &ServerOptions) -> Result<Self, StoreError> {
        let binary = find_server_binary().ok_or(StoreError::ServerNotFound)?;
        let dir = prepare_dir(&options.dir)?;
        // One owner per directory, decided before anything in it is touched: a second
        // isometer must not rewrite the config of a server that is running.
        let lock = lock_dir(&dir)?;
        // A free port found now may be taken before the server binds it: try again then.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once(&binary, &dir, options) {
                Ok(mut server) => {
                    server._lock = Some(lock);
                    return Ok(server);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(StoreError::ServerNotFound))
    }

    fn start_once(binary: &Path, dir: &Path, options: &ServerOptions) -> Result<Self, StoreError> {
        let http_port = match options.http_port {
            Some(port) => port,
            None => free_port().map_err(StoreError::Spawn)?,
        };
        let tcp_port = match options.tcp_port {
            Some(port) => port,
            None => free_port().map_err(StoreError::Spawn)?,
        };
        let io = |source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::write(
            dir.join("config.xml"),
            server_config(dir, http_port, tcp_port, &options.extra_config),
        )
        .map_err(io)?;
        std::fs::write(dir.join("users.xml"), USERS_XML).map_err(io)?;
        let log = dir.join("log/stdout.log");
        let stdout = std::fs::File::create(&log).map_err(io)?;
        let stderr = stdout.try_clone().map_err(io)?;

        // `chrt` and `setpriv` each exec the next: the server keeps the pid spawned here.
        let mut argv: Vec<PathBuf> = Vec::new();
        if options.idle_priority {
            let chrt = which("chrt").ok_or_else(|| {
                StoreError::Spawn(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "idle priority needs `chrt` (util-linux), which is not on PATH",
                ))
            })?;
            argv.extend([chrt, "--idle".into(), "0".into()]);
        }
        match which("setpriv") {
            Some(setpriv) => {
                argv.extend([setpriv, "--pdeathsig".into(), "TERM".into(), "--".into()])
            }
            None => tracing::warn!(
                "setpriv not found: the ClickHouse child is stopped on exit, but not if isometer is killed"
            ),
        }
        argv.push(binary.to_path_buf());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        // Its own process group: a Ctrl-C at the terminal reaches isometer, which then
        // flushes and stops the server in order, rather than both at once.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .arg(format!(
                "--config-file={}",
                dir.join("config.xml").display()
            ))
            .current_dir(dir)
            // Current releases fork a watchdog parent when not on a terminal; the server
            // must be the process isometer signals and the kernel ties to isometer.
            .env("CLICKHOUSE_WATCHDOG_ENABLE", "0")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);

        let stopped = Arc::new(Mutex::new(None));
        let (control_tx, control_rx) = mpsc::channel::<Duration>();
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let status = stopped.clone();
        std::thread::Builder::new()
            .name("clickhouse-guardian".into())
            .spawn(move || guard(command, control_rx, spawned_tx, status, done_tx))
            .map_err(StoreError::Spawn)?;
        let pid = spawned_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("guardian thread ended")))
            .map_err(StoreError::Spawn)?;

        let mut server = ManagedClickHouse {
            http_port,
            tcp_port,
            pid,
            dir: dir.to_owned(),
            shutdown_timeout: options.shutdown_timeout,
            control: Some(control_tx),
            stopped,
            done: Mutex::new(Some(done_rx)),
            _lock: None,
        };
        if let Err(reason) = server.wait_ready(options.startup_timeout) {
            server.stop();
            let error_log = dir.join("log/error.log");
            let tail = tail_lines(&error_log, 15)
                .or_else(|| tail_lines(&log, 15))
                .unwrap_or_default();
            return Err(StoreError::NotReady {
                reason,
                log: error_log,
                tail,
            });
        }
        tracing::info!(pid, http_port, dir = %dir.display(), "clickhouse-server ready");
        Ok(server)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) {
                return Err(format!("the server exited during start-up ({status})"));
            }
            if ping(self.http_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer on port {} within {timeout:?}",
                    self.http_port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native-protocol port (what other servers of a cluster connect to).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (SIGTERM, then SIGKILL after the shutdown timeout) and waits for it.
    /// Idempotent.
    pub fn stop(&mut self) {
        if let Some(control) = self.control.take() {
            let _ = control.send(self.shutdown_timeout);
        }
        let done = self
            .done
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(done) = done {
            let _ = done.recv();
            tracing::info!(pid = self.pid, "clickhouse-server stopped");
        }
    }
}

impl Drop for ManagedClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Body of the guardian thread: spawn, watch, and on request (or when the handle is gone)
/// terminate and reap the server.
fn guard(
    mut command: Command,
    control: mpsc::Receiver<Duration>,
    spawned: mpsc::Sender<std::io::Result<u32>>,
    stopped: Arc<Mutex<Option<ExitStatus>>>,
    done: mpsc::Sender<()>,
) {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = spawned.send(Err(e));
            return;
        }
    };
    let _ = spawned.send(Ok(child.id()));
    let grace = loop {
        match control.recv_timeout(Duration::from_millis(100)) {
            Ok(grace) => break grace,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Duration::from_secs(15),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    *stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    // Wait for the stop request so the handle still learns it is done.
                    let _ = control.recv();
                    let _ = done.send(());
                    return;
                }
            }
        }
    };
    let status = terminate(&mut child, grace);
    *stopped.lock().unwrap_or_else(|e| e.into_inner()) = status;
    let _ = done.send(());
}

fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!(
        pid = child.id(),
        "clickhouse-server ignored SIGTERM; killing it"
    );
    let _ = child.kill();
    child.wait().ok()
}

fn find_server_binary() -> Option<PathBuf> {
    which("clickhouse-server").or_else(|| {
        ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn prepare_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    let io = |source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    };
    for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
    }
    dir.canonicalize().map_err(io)
}

fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join("isometer.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::DataDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::DirInUse(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::DataDir { path, source }),
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// `GET /ping` answered with `Ok.`.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("Ok.\n")
}

fn tail_lines(path: &Path, n: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    (!tail.is_empty()).then_some(tail)
}

fn server_config(dir: &Path, http_port: u16, tcp_port: u16, extra: &str) -> String {
    let d = dir.display();
    // <yandex> is the root element 18.x reads; current releases accept it too.
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/log/server.log</log>
        <errorlog>{d}/log/error.log</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>200</max_concurrent_queries>
{extra}
</yandex>
"#
    )
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>8000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
"#;
