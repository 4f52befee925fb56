//! Runs `legalchat-bridge` (the Socket.IO bridge) as a child process in front of a daemon,
//! the way [`crate::daemon_process`] runs `legalchatd`. Readiness is its one stdout line,
//! `legalchat-bridge ready http=ADDR`; its stderr goes to a file in a temporary directory
//! and is quoted when it fails to start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long the bridge may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running bridge; dropping it kills the process.
#[derive(Debug)]
pub struct BridgeProcess {
    child: Child,
    addr: SocketAddr,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl BridgeProcess {
    /// Starts `bin` in front of the daemon at `daemon` (certificate `ca`), listening on
    /// `127.0.0.1:0`, with `args` added.
    pub async fn start(bin: &Path, daemon: SocketAddr, ca: &Path, args: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("legalchat-bridge-").tempdir().context("creating a temporary directory")?;
        let stderr_path = dir.path().join("bridge.stderr.log");
        let stderr = std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut child = Command::new(bin)
            .arg("--daemon")
            .arg(daemon.to_string())
            .arg("--ca")
            .arg(ca)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("LEGALCHAT_LOG", std::env::var("LEGALCHAT_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} (build it with cargo build -p legalchat-bridge)", bin.display()))?;
        let stdout = child.stdout.take().context("the bridge's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("legalchat-bridge ready http=") {
                    return Ok(addr.trim().parse::<SocketAddr>()?);
                }
            }
            bail!("the bridge closed stdout before it was ready")
        };
        let addr = match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Ok(addr)) => addr,
            failed => {
                let _ = child.start_kill();
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no ready line within {READY_TIMEOUT:?}"),
                };
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!("legalchat-bridge failed to start: {why}\n{log}");
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child.id().context("the bridge has no pid")?;
        Ok(Self { child, addr, pid, _dir: dir })
    }

    /// The binary beside the running executable (`target/<profile>/legalchat-bridge`).
    pub fn default_bin() -> anyhow::Result<PathBuf> {
        Ok(std::env::current_exe()?.with_file_name("legalchat-bridge"))
    }

    /// Where browsers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            self.child.kill().await?;
        }
        Ok(())
    }
}
