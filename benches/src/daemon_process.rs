//! Runs `legalchatd` as a child process for tests and load runs.
//!
//! The daemon is started with `--dev` on `127.0.0.1:0` (QUIC and ops), in a fresh temporary
//! directory, and announces itself with exactly one stdout line (`docs/INTERFACES.md`):
//!
//! ```text
//! legalchatd ready quic=127.0.0.1:PORT ops=127.0.0.1:PORT
//! ```
//!
//! Readiness is that line, never a sleep: [`DaemonProcess::start`] reads stdout until it
//! arrives or [`DaemonConfig::ready_timeout`] passes (then it fails and quotes the daemon's
//! stderr). Stopping waits for the process to exit, also bounded.
//!
//! Layout of the temporary directory:
//!
//! ```text
//! <tmp>/data/                   --data-dir (TLS cert in data/tls/cert.pem in --dev mode)
//! <tmp>/legalchatd.stderr.log   stderr of every start, appended, with a header per start
//! ```
//!
//! The log sits outside the data dir so that scans of the data dir (the encryption-at-rest
//! test) see only what the daemon itself stores.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The prefix of the daemon's ready line on stdout.
pub const READY_PREFIX: &str = "legalchatd ready ";

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The `legalchatd` executable.
    pub bin: PathBuf,
    /// HS256 secret passed as `--jwt-secret`; tokens are minted with it.
    pub jwt_secret: String,
    /// Arguments after the standard ones, e.g. `["--auth-timeout-ms", "300"]`.
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// How long to wait for the ready line (a cold debug build of RocksDB opening a big
    /// WAL can take a while; nothing legitimate takes a minute).
    pub ready_timeout: Duration,
    /// How long a graceful stop may take before it counts as hung.
    pub stop_timeout: Duration,
}

impl DaemonConfig {
    /// Defaults: a random secret, no extra arguments, `NO_COLOR=1`, 60 s to get ready,
    /// 30 s to stop, and a message limit of a million per user per minute: load runs and
    /// tests send far faster than a person, while the limiter stays on the path (so its
    /// cost is measured); a test of the limit sets its own with `--messages-per-minute`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            jwt_secret: crate::tokens::random_secret(),
            extra_args: Vec::new(),
            // Logs go to a file, where colour codes are noise.
            env: vec![("NO_COLOR".into(), "1".into()), ("LEGALCHAT_MESSAGES_PER_MINUTE".into(), "1000000".into())],
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// Where a running daemon listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyLine {
    /// The QUIC endpoint.
    pub quic: SocketAddr,
    /// The ops HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub ops: SocketAddr,
    /// The TLS-over-TCP listener, unless turned off.
    pub tcp: Option<SocketAddr>,
}

impl ReadyLine {
    /// Parses `legalchatd ready quic=ADDR ops=ADDR` (extra `key=value` words are ignored,
    /// so the daemon may add some later). `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix(READY_PREFIX)?;
        let mut quic = None;
        let mut ops = None;
        let mut tcp = None;
        for word in rest.split_whitespace() {
            match word.split_once('=') {
                Some(("quic", addr)) => quic = addr.parse().ok(),
                Some(("ops", addr)) => ops = addr.parse().ok(),
                Some(("tcp", addr)) => tcp = addr.parse().ok(),
                _ => {}
            }
        }
        Some(Self { quic: quic?, ops: ops?, tcp })
    }
}

/// A `legalchatd` child process and the directory it owns. Dropping it kills the process
/// (SIGKILL) and removes the directory.
#[derive(Debug)]
pub struct DaemonProcess {
    config: DaemonConfig,
    // Declared before `dir` so that the process dies before its directory is removed.
    child: Option<Child>,
    ready: ReadyLine,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    starts: u32,
    dir: tempfile::TempDir,
}

impl DaemonProcess {
    /// Starts the daemon in a new temporary directory and waits for its ready line.
    pub async fn start(config: DaemonConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("legalchatd-").tempdir().context("creating a temporary directory")?;
        let data_dir = dir.path().join("data");
        let stderr_path = dir.path().join("legalchatd.stderr.log");
        let mut me = Self {
            config,
            child: None,
            ready: ReadyLine { quic: ([127, 0, 0, 1], 0).into(), ops: ([127, 0, 0, 1], 0).into(), tcp: None },
            data_dir,
            stderr_path,
            starts: 0,
            dir,
        };
        me.spawn().await?;
        Ok(me)
    }

    /// The QUIC address of the current run (it changes on every start).
    pub fn quic_addr(&self) -> SocketAddr {
        self.ready.quic
    }

    /// The TLS-over-TCP address of the current run, unless the daemon runs without it.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.ready.tcp
    }

    /// The ops HTTP address of the current run.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ready.ops
    }

    /// `--data-dir`, kept across restarts.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The self-signed certificate `--dev` generated (server name "localhost").
    pub fn ca_cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    /// The certificate's PEM bytes.
    pub fn ca_cert_pem(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.ca_cert_path();
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// The HS256 secret the daemon verifies tokens with.
    pub fn jwt_secret(&self) -> &str {
        &self.config.jwt_secret
    }

    /// The configuration every (re)start uses.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// The temporary directory holding the data dir and the stderr log.
    pub fn root_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Everything the daemon wrote to stderr, over all starts (lossy UTF-8).
    pub fn stderr_log(&self) -> String {
        std::fs::read(&self.stderr_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Path of the stderr log.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Graceful stop: SIGTERM, then wait (bounded) for the exit. Fails when the daemon does
    /// not exit in time or exits unsuccessfully: a graceful shutdown is supposed to be clean.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon is not running");
        };
        let Some(pid) = child.id() else {
            // Already reaped; nothing to signal.
            return child.wait().await.context("waiting for the daemon");
        };
        // `kill(1)` rather than libc::kill: the workspace forbids `unsafe`, and procps'
        // `kill` is on every Linux machine this runs on.
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().context("running `kill -TERM`")?;
        if !status.success() {
            bail!("`kill -TERM {pid}` failed with {status}");
        }
        match tokio::time::timeout(self.config.stop_timeout, child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the daemon to exit")?;
                if !status.success() {
                    bail!("legalchatd exited with {status} after SIGTERM\n{}", self.stderr_tail());
                }
                Ok(status)
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!("legalchatd did not exit within {:?} of SIGTERM; killed it\n{}", self.config.stop_timeout, self.stderr_tail())
            }
        }
    }

    /// Brutal stop: SIGKILL and reap. Nothing the daemon acknowledged may be lost by this.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon is not running");
        };
        child.start_kill().context("sending SIGKILL")?;
        tokio::time::timeout(self.config.stop_timeout, child.wait())
            .await
            .context("the daemon did not die after SIGKILL")?
            .context("waiting for the killed daemon")?;
        Ok(())
    }

    /// Graceful stop, then start again on the same data dir with the same secret.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// SIGKILL, then start again on the same data dir with the same secret.
    pub async fn kill9_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        self.spawn().await
    }

    /// Starts the daemon again on the same data dir after [`kill9`](Self::kill9) (or a
    /// failed start), with the same secret.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }

    /// The last 200 lines of the stderr log, for error messages.
    pub fn stderr_tail(&self) -> String {
        let log = self.stderr_log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(200);
        format!("--- legalchatd stderr ({}) ---\n{}\n--- end of stderr ---", self.stderr_path.display(), lines[from..].join("\n"))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .with_context(|| format!("opening {}", self.stderr_path.display()))?;
        writeln!(log, "===== start #{} of {} =====", self.starts, self.config.bin.display())?;
        let stderr: File = log;

        let mut cmd = Command::new(&self.config.bin);
        cmd.arg("--dev")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .arg("--jwt-secret")
            .arg(&self.config.jwt_secret)
            .args(&self.config.extra_args)
            .envs(self.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {}", self.config.bin.display()))?;
        let stdout = child.stdout.take().context("the daemon's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();

        let wait_ready = async {
            let mut seen = Vec::new();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match ReadyLine::parse(&line) {
                        Some(ready) => return Ok(ready),
                        None if line.starts_with(READY_PREFIX) => bail!("cannot parse the ready line {line:?}"),
                        None => seen.push(line),
                    },
                    Ok(None) => bail!("the daemon closed stdout before it was ready; stdout was: {seen:?}"),
                    Err(e) => bail!("reading the daemon's stdout: {e}"),
                }
            }
        };
        let ready = match tokio::time::timeout(self.config.ready_timeout, wait_ready).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                bail!("legalchatd start #{} failed: {e} (exit: {status:?})\n{}", self.starts, self.stderr_tail());
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!(
                    "legalchatd start #{} printed no ready line within {:?}\n{}",
                    self.starts,
                    self.config.ready_timeout,
                    self.stderr_tail()
                );
            }
        };
        // Keep draining stdout so that a chatty daemon never blocks on a full pipe. The task
        // ends at EOF, i.e. when this process exits.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.ready = ready;
        self.child = Some(child);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ReadyLine;

    #[test]
    fn parses_the_ready_line() {
        let r = ReadyLine::parse("legalchatd ready quic=127.0.0.1:4433 ops=127.0.0.1:9464\n").unwrap();
        assert_eq!(r.quic, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(r.ops, "127.0.0.1:9464".parse().unwrap());
        assert!(ReadyLine::parse("legalchatd ready quic=127.0.0.1:1 ops=127.0.0.1:2 bridge=127.0.0.1:3").is_some());
        assert!(ReadyLine::parse("legalchatd starting").is_none());
        assert!(ReadyLine::parse("legalchatd ready quic=nonsense ops=127.0.0.1:2").is_none());
    }
}
