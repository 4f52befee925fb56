//! Runs the Socket.IO reference peer (`benches/peers/socketio/server.js`, Node.js) as a child
//! process, the way [`crate::daemon_process`] runs `legalchatd`.
//!
//! The peer listens on `127.0.0.1:0` (a port chosen by the OS), takes its HS256 secret from
//! `PEER_JWT_SECRET`, and announces itself with exactly one stdout line:
//!
//! ```text
//! {"ready":true,"port":PORT,"pid":PID}
//! ```
//!
//! Readiness is that line, never a sleep: [`PeerProcess::start`] reads stdout until it
//! arrives or [`READY_TIMEOUT`] passes (then it fails and quotes the peer's stderr, which
//! goes to `<tmp>/socketio-peer.stderr.log`). The peer needs its packages installed
//! (`npm ci` in `benches/peers/socketio`); without them the error says so.
//!
//! Tokens for the peer come from [`crate::tokens::TokenMinter`] with [`PeerProcess::secret`]:
//! the peer reads `sub` (the user id) and `exp`, and ignores `role` and `iat`.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long the peer may take to print its ready line (Node starts in well under a second;
/// a machine busy with a build can be slow, nothing legitimate takes this long).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a graceful stop may take before the peer is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The Node.js executable (`node` on the `PATH` by default).
    pub node_bin: PathBuf,
    /// The peer's script ([`PeerConfig::default_script`] by default).
    pub script: PathBuf,
    /// HS256 secret passed as `PEER_JWT_SECRET`; tokens are minted with it.
    pub secret: String,
}

impl PeerConfig {
    /// The defaults: `node` from the `PATH`, this checkout's script, a random secret.
    pub fn new() -> Self {
        Self::default()
    }

    /// `benches/peers/socketio/server.js` of this checkout.
    pub fn default_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join("socketio").join("server.js")
    }
}

impl Default for PeerConfig {
    /// `node` from the `PATH`, the checkout's script, a random secret.
    fn default() -> Self {
        Self { node_bin: PathBuf::from("node"), script: Self::default_script(), secret: crate::tokens::random_secret() }
    }
}

/// The peer's ready line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PeerReadyLine {
    /// Always `true` in a ready line.
    pub ready: bool,
    /// The port it listens on (on 127.0.0.1).
    pub port: u16,
    /// Node's own process id.
    pub pid: u32,
}

impl PeerReadyLine {
    /// Parses `{"ready":true,"port":…,"pid":…}` (extra fields are ignored); `None` for any
    /// other line.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str::<Self>(line.trim()).ok().filter(|ready| ready.ready)
    }
}

/// A running peer. Dropping it kills the process (SIGKILL) and removes its temporary
/// directory.
#[derive(Debug)]
pub struct PeerProcess {
    config: PeerConfig,
    // Declared before `dir` so that the process dies before its directory is removed.
    child: Option<Child>,
    ready: PeerReadyLine,
    stderr_path: PathBuf,
    dir: tempfile::TempDir,
}

impl PeerProcess {
    /// Starts `node <script> --port 0 --host 127.0.0.1` and waits for its ready line.
    pub async fn start(config: PeerConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("socketio-peer-").tempdir().context("creating a temporary directory")?;
        let stderr_path = dir.path().join("socketio-peer.stderr.log");
        let mut stderr = File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
        writeln!(stderr, "===== {} {} =====", config.node_bin.display(), config.script.display())?;

        let mut cmd = Command::new(&config.node_bin);
        cmd.arg(&config.script)
            .args(["--port", "0", "--host", "127.0.0.1"])
            .env("PEER_JWT_SECRET", &config.secret)
            // How a Node service is run in production; the reference is not a dev server.
            .env("NODE_ENV", "production")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "spawning {} {} (is Node.js installed? PeerConfig::node_bin names the executable)",
                config.node_bin.display(),
                config.script.display()
            )
        })?;
        let stdout = child.stdout.take().context("the peer's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();

        let mut me = Self { config, child: None, ready: PeerReadyLine { ready: false, port: 0, pid: 0 }, stderr_path, dir };
        let wait_ready = async {
            let mut seen = Vec::new();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match PeerReadyLine::parse(&line) {
                        Some(ready) => return Ok(ready),
                        None => seen.push(line),
                    },
                    Ok(None) => bail!("the peer closed stdout before it was ready; stdout was: {seen:?}"),
                    Err(e) => bail!("reading the peer's stdout: {e}"),
                }
            }
        };
        let failure = match tokio::time::timeout(READY_TIMEOUT, wait_ready).await {
            Ok(Ok(ready)) => {
                me.ready = ready;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no ready line within {READY_TIMEOUT:?}")),
        };
        if let Some(failure) = failure {
            let _ = child.start_kill();
            let status = child.wait().await.ok();
            bail!("the Socket.IO peer failed to start: {failure} (exit: {status:?}){}\n{}", me.install_hint(), me.stderr_tail());
        }
        // Keep draining stdout so that a chatty peer never blocks on a full pipe. The task
        // ends at EOF, i.e. when the process exits.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        me.child = Some(child);
        Ok(me)
    }

    /// Where the peer listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ready.port))
    }

    /// Node's process id, from the ready line (the process to watch for CPU and memory,
    /// even if `node_bin` is a wrapper).
    pub fn pid(&self) -> u32 {
        self.ready.pid
    }

    /// The HS256 secret the peer verifies tokens with.
    pub fn secret(&self) -> &str {
        &self.config.secret
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The temporary directory holding the stderr log.
    pub fn root_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the stderr log.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the peer wrote to stderr (lossy UTF-8).
    pub fn stderr_log(&self) -> String {
        std::fs::read(&self.stderr_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last 200 lines of the stderr log, for error messages.
    pub fn stderr_tail(&self) -> String {
        let log = self.stderr_log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(200);
        format!("--- socketio peer stderr ({}) ---\n{}\n--- end of stderr ---", self.stderr_path.display(), lines[from..].join("\n"))
    }

    /// Graceful stop: SIGTERM, then wait (bounded by [`STOP_TIMEOUT`]) for the exit; on
    /// timeout the peer is killed and the stop fails. Fails too when the peer exits
    /// unsuccessfully.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the peer is not running");
        };
        let Some(pid) = child.id() else {
            // Already reaped; nothing to signal.
            return child.wait().await.context("waiting for the peer");
        };
        // `kill(1)` rather than libc::kill: the workspace forbids `unsafe` (as in
        // daemon_process). The signal goes to the child we spawned, not to `self.pid()`.
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().context("running `kill -TERM`")?;
        if !status.success() {
            bail!("`kill -TERM {pid}` failed with {status}");
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the peer to exit")?;
                if !status.success() {
                    bail!("the Socket.IO peer exited with {status} after SIGTERM\n{}", self.stderr_tail());
                }
                Ok(status)
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!("the Socket.IO peer did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it\n{}", self.stderr_tail())
            }
        }
    }

    /// A hint when the failure is the classic one: packages not installed.
    fn install_hint(&self) -> String {
        if self.stderr_log().contains("Cannot find module 'socket.io'") {
            let dir = self.config.script.parent().unwrap_or_else(|| Path::new("."));
            format!("\nsocket.io is not installed: run `npm ci` in {}", dir.display())
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(
            PeerReadyLine::parse("{\"ready\":true,\"port\":43121,\"pid\":77}\n"),
            Some(PeerReadyLine { ready: true, port: 43121, pid: 77 })
        );
        assert!(PeerReadyLine::parse(r#"{"ready":true,"port":1,"pid":2,"version":"4.8.4"}"#).is_some());
        assert_eq!(PeerReadyLine::parse(r#"{"ready":false,"port":1,"pid":2}"#), None);
        assert_eq!(PeerReadyLine::parse(r#"{"ready":true,"port":70000,"pid":2}"#), None);
        assert_eq!(PeerReadyLine::parse("listening on 3000"), None);
    }

    #[test]
    fn the_default_script_is_in_this_checkout() {
        assert!(PeerConfig::default_script().is_file(), "{}", PeerConfig::default_script().display());
    }
}
