//! A real ClamAV daemon for tests: `clamd` from the system, started in the foreground on
//! a Unix socket in a temporary directory, with a signature database the test writes
//! (there is no internet here for the official one). The database holds one hash
//! signature: the EICAR test file's MD5 and size.
//!
//! Without `clamd` installed the scanning tests say so and skip — except under
//! `CI=true`, where a missing tool is a failure (CI installs `clamav-daemon`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

/// The EICAR anti-malware test file: harmless, and detected by every scanner.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A running clamd; stopped when dropped.
#[derive(Debug)]
pub struct TestClamd {
    child: tokio::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn clamd_binary() -> Option<PathBuf> {
    ["/usr/sbin/clamd", "/usr/bin/clamd", "/usr/local/sbin/clamd"].iter().map(PathBuf::from).find(|p| p.exists())
}

impl TestClamd {
    /// Starts clamd, or returns `None` (after saying why) when it is not installed and
    /// this is not CI.
    pub async fn start() -> Option<Self> {
        let Some(binary) = clamd_binary() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("clamd is not installed; CI must install clamav-daemon (see .ci/run)");
            }
            eprintln!("skipped: clamd is not installed (apt-get install clamav-daemon)");
            return None;
        };
        Some(Self::start_binary(&binary).await.expect("starting clamd"))
    }

    async fn start_binary(binary: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("db");
        std::fs::create_dir(&db)?;
        let md5 = md5_hex(EICAR);
        std::fs::write(db.join("legalchat-test.hdb"), format!("{md5}:{}:Eicar-Test-Signature\n", EICAR.len()))?;
        let socket = dir.path().join("clamd.sock");
        let config = dir.path().join("clamd.conf");
        std::fs::write(
            &config,
            format!(
                "Foreground yes\nLocalSocket {}\nDatabaseDirectory {}\nLogFile {}\nStreamMaxLength 64M\nMaxThreads 4\n",
                socket.display(),
                db.display(),
                dir.path().join("clamd.log").display()
            ),
        )?;
        let child = tokio::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let mut clamd = Self { child, socket, _dir: dir };
        clamd.wait_ready().await?;
        Ok(clamd)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = tokio::net::UnixStream::connect(&self.socket).await {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                s.write_all(b"zPING\0").await?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).await?;
                if answer.starts_with(b"PONG") {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use tokio::io::AsyncReadExt as _;
                    let _ = e.read_to_string(&mut err).await;
                }
                bail!("clamd exited with {status}: {err}");
            }
            if Instant::now() > deadline {
                bail!("clamd did not answer PING within 60 s");
            }
            // Polling a socket that does not exist yet: there is no event to wait for.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemon's `--clamd` argument.
    pub fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Stops clamd (a scanner that is down).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// MD5 in hex: ClamAV's hash signatures name files by it.
fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_of_known_inputs() {
        assert_eq!(super::md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(super::md5_hex(super::EICAR), "44d88612fea8a8f36de82e1278abb02f");
    }
}
