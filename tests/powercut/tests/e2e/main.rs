//! End-to-end power-cut tests: `legalchatd` with its data directory on the power-cut
//! filesystem; `kill -9`, then the cut, then a restart on the same directory.
//!
//! ```text
//!  test ──► Machine ─┬─ PowercutMount: <tmp>/mnt over <tmp>/disk (the "disk")
//!                    ├─ legalchatd … run --data-dir <tmp>/mnt/data (DaemonProcess;
//!                    │     a fixed QUIC port, so that SDK clients reconnect to it)
//!                    └─ crash(): kill -9 → power cut (the cache is dropped, unmounted)
//!                                → mount again → start again
//! ```
//!
//! Without FUSE (`/dev/fuse`, `fusermount3`) each test says `skipped: …` and passes,
//! except under `CI=true`, where it fails. No sleeps: every wait is for an event or a
//! condition, with a deadline.

mod acknowledged;
mod edits_and_attachments;
mod first_start;
mod fsync_never;
mod lock;

use std::path::{Path, PathBuf};
use std::time::Duration;

use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};
use legalchat_benches::tokens::TokenMinter;
use legalchat_powercut::{Pending, PowercutMount, SyncModel, skip_without_fuse};
use legalchat_sdk::{Client, ClientConfig, ReconnectPolicy};

/// The daemon under test: this crate's copy of `legalchatd`, or the binary named by
/// `LEGALCHAT_POWERCUT_DAEMON` (to try another build, e.g. an older one).
fn daemon_bin() -> PathBuf {
    std::env::var_os("LEGALCHAT_POWERCUT_DAEMON").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_legalchatd-powercut")), PathBuf::from)
}

/// How the daemon syncs its log (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fsync {
    Always,
    Never,
}

/// A machine: a disk with a volatile cache, mounted, and a daemon whose data directory
/// is on it. Dropping it kills the daemon and cuts the power (which unmounts).
struct Machine {
    // Dropped in this order: the daemon, then the mount, then the directories.
    daemon: DaemonProcess,
    mount: Option<PowercutMount>,
    root: tempfile::TempDir,
    model: SyncModel,
    minter: TokenMinter,
}

/// Mounts `<root>/disk` on `<root>/mnt`.
fn mount_disk(root: &Path, model: SyncModel) -> PowercutMount {
    PowercutMount::mount(&root.join("mnt"), &root.join("disk"), model).unwrap_or_else(|e| panic!("mounting the disk: {e}"))
}

/// A free UDP port on loopback: the daemon keeps it across restarts so that the SDK
/// clients' reconnects find it again.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding a UDP port");
    socket.local_addr().expect("its address").port()
}

impl Machine {
    /// Mounts a fresh disk and starts the daemon on it; `None` (after saying why) when
    /// FUSE is not available here.
    async fn boot(test: &str, fsync: Fsync) -> Option<Self> {
        Self::boot_with(test, fsync, SyncModel::Journal).await
    }

    async fn boot_with(test: &str, fsync: Fsync, model: SyncModel) -> Option<Self> {
        if skip_without_fuse(test).is_some() {
            return None;
        }
        let root = tempfile::Builder::new().prefix("powercut-e2e-").tempdir().expect("a temporary directory");
        std::fs::create_dir(root.path().join("mnt")).expect("mnt");
        std::fs::create_dir(root.path().join("disk")).expect("disk");
        let data = root.path().join("mnt").join("data");
        let port = free_udp_port();
        // The standard arguments (--dev, a random secret, loopback) come first; the `run`
        // subcommand's own flags take precedence over them: the data directory on the
        // mount, and a fixed port.
        let config = DaemonConfig::new(daemon_bin()).args([
            "run".to_owned(),
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--tcp-listen".to_owned(),
            "off".to_owned(),
            "--fsync".to_owned(),
            match fsync {
                Fsync::Always => "always",
                Fsync::Never => "never",
            }
            .to_owned(),
        ]);
        let minter = TokenMinter::new(&config.jwt_secret);
        let mount = mount_disk(root.path(), model);
        let daemon = match DaemonProcess::start(config).await {
            Ok(d) => d,
            Err(e) => panic!("{test}: the first start failed: {e:#}"),
        };
        Some(Self { daemon, mount: Some(mount), root, model, minter })
    }

    /// The daemon's data directory (on the mount).
    fn data_dir(&self) -> PathBuf {
        self.root.path().join("mnt").join("data")
    }

    /// The same directory on the disk underneath: what is durable.
    fn disk_data_dir(&self) -> PathBuf {
        self.root.path().join("disk").join("data")
    }

    /// Starts the daemon again on the data directory; the error quotes its stderr.
    async fn start(&mut self) -> anyhow::Result<()> {
        self.daemon.start_again().await
    }

    fn daemon(&self) -> &DaemonProcess {
        assert!(self.daemon.pid().is_some(), "the daemon is not running");
        &self.daemon
    }

    /// `kill -9`: the process dies; the machine (and its cache) does not.
    async fn kill9(&mut self) {
        self.daemon.kill9().await.expect("kill -9");
    }

    /// The power cut, with the daemon already dead: what was cached is gone; the disk
    /// is mounted again (the reboot). Returns what was lost.
    fn power_cut(&mut self) -> Pending {
        assert!(self.daemon.pid().is_none(), "kill the daemon before cutting the power");
        let lost = self.mount.take().expect("mounted").power_cut().unwrap_or_else(|e| panic!("the power cut: {e}"));
        self.mount = Some(mount_disk(self.root.path(), self.model));
        lost
    }

    /// What is cached and not yet durable.
    fn pending(&self) -> Pending {
        self.mount.as_ref().and_then(PowercutMount::pending).unwrap_or_default()
    }

    /// What is not durable, by path, for the test's report.
    fn pending_paths(&self) -> String {
        let paths = self.mount.as_ref().and_then(PowercutMount::pending_paths).unwrap_or_default();
        paths.iter().map(|(p, bytes)| format!("{} ({bytes} bytes)", p.display())).collect::<Vec<_>>().join(", ")
    }

    /// `kill -9`, the power cut, the reboot; the daemon is not started again.
    async fn crash(&mut self) -> Pending {
        self.kill9().await;
        self.power_cut()
    }

    /// The development certificate to trust (read through the mount).
    fn ca_pem(&self) -> Vec<u8> {
        let path = self.data_dir().join("tls").join("cert.pem");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn token(&self, user: &str, role: &str) -> String {
        self.minter.token(user, role).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// SDK settings: reconnect quickly (a crash is expected) and let sends wait out a
    /// crash and a restart.
    fn client_config(&self, user: &str, role: &str) -> ClientConfig {
        ClientConfig::new(self.daemon().quic_addr(), self.token(user, role))
            .with_ca_pem(self.ca_pem())
            .with_server_name("localhost")
            .with_reconnect_policy(
                ReconnectPolicy::default().with_initial_delay(Duration::from_millis(100)).with_max_delay(Duration::from_secs(1)),
            )
            .with_send_timeout(Duration::from_secs(120))
    }

    async fn client(&self, user: &str, role: &str) -> Client {
        match Client::connect(self.client_config(user, role)).await {
            Ok(c) => c,
            Err(e) => panic!("connecting {user}: {e}\n{}", self.stderr()),
        }
    }

    /// stderr of every daemon run so far.
    fn stderr(&self) -> String {
        self.daemon.stderr_tail()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.stderr());
        }
    }
}

/// Runs a test body with an overall deadline.
async fn bounded<F: std::future::Future<Output = ()>>(name: &str, body: F) {
    const LIMIT: Duration = Duration::from_secs(300);
    if tokio::time::timeout(LIMIT, body).await.is_err() {
        panic!("test {name} did not finish within {LIMIT:?}");
    }
}
