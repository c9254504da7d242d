//! A standalone ZooKeeper on a free loopback port, for cluster tests (ClickHouse 18.16
//! runs `ON CLUSTER` DDL through it). Debian's `zookeeper` package provides it.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JAR: &str = "/usr/share/java/zookeeper.jar";

/// A running ZooKeeper, stopped when dropped (and by the kernel if the test dies).
#[derive(Debug)]
pub struct ZooKeeper {
    pub port: u16,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl ZooKeeper {
    pub fn start() -> anyhow::Result<Self> {
        if !std::path::Path::new(JAR).is_file() {
            bail!(
                "{JAR} is missing: install ZooKeeper with `apt-get install zookeeper` (`make deps`)"
            );
        }
        let dir = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let data: PathBuf = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let config = dir.path().join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                data.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("zookeeper.log"))?;
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--", "java", "-Xmx256m", "-cp", JAR])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The parent-death signal follows the spawning *thread*: spawn from a thread that
        // lives exactly as long as the child.
        let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = spawned_tx.send(Ok(child.id()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = spawned_tx.send(Err(e));
            }
        });
        let pid = spawned_rx
            .recv()
            .context("the ZooKeeper thread ended")?
            .context("starting java for ZooKeeper")?;
        let zookeeper = ZooKeeper {
            port,
            pid,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zookeeper.ok() {
            if Instant::now() > deadline {
                bail!("ZooKeeper did not answer on port {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(zookeeper)
    }

    /// Whether it serves requests (`ruok` answers as soon as the process is up; `srvr`
    /// reports a mode only once it serves). A server still starting may accept the
    /// connection and say nothing: each probe gives up after a second.
    fn ok(&self) -> bool {
        let patience = Duration::from_secs(1);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&address, patience) else {
            return false;
        };
        let mut answer = String::new();
        stream.set_read_timeout(Some(patience)).is_ok()
            && stream.set_write_timeout(Some(patience)).is_ok()
            && stream.write_all(b"srvr").is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.contains("Mode: standalone")
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
