//! Malware scanning by ClamAV's daemon, `clamd`, over its socket protocol: `zINSTREAM`,
//! then the content in chunks each prefixed by its 4-byte big-endian length, then a zero
//! length; the answer is `stream: OK`, `stream: <signature> FOUND` or `… ERROR`, ended by
//! a NUL. clamd refuses streams above its `StreamMaxLength` (25 MB unless configured):
//! set it above the largest file accepted (`StreamMaxLength 64M`).

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannerAddress {
    /// A Unix socket (`unix:/run/clamav/clamd.ctl`, or any absolute path).
    Unix(PathBuf),
    /// A TCP address (`tcp:127.0.0.1:3310`, or `host:port`).
    Tcp(String),
}

impl FromStr for ScannerAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(path.into()));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return Ok(Self::Tcp(addr.into()));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(s.into()));
        }
        if s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
            return Ok(Self::Tcp(s.into()));
        }
        Err(format!("{s:?} is neither unix:/path/to/clamd.sock nor tcp:host:port"))
    }
}

impl std::fmt::Display for ScannerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Scanner settings.
#[derive(Debug, Clone)]
pub struct ScannerConfig {
    /// Where clamd listens.
    pub address: ScannerAddress,
    /// When clamd cannot be reached or fails: accept the upload unscanned (true) or
    /// refuse it (false, the default).
    pub fail_open: bool,
    /// Longest wait for any one read or write on clamd's socket.
    pub timeout: Duration,
}

/// What clamd said of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing found.
    Clean,
    /// Found: the signature's name.
    Infected(String),
}

/// Why a scan gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// clamd could not be reached or stopped answering.
    #[error("the malware scanner at {address} cannot be reached: {reason}")]
    Unreachable {
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// clamd answered with an error.
    #[error("the malware scanner failed: {0}")]
    Failed(String),
    /// The content could not be read.
    #[error("the file could not be read for scanning: {0}")]
    Content(std::io::Error),
}

trait Socket: Read + Write {}
impl<T: Read + Write> Socket for T {}

/// A clamd client.
#[derive(Debug, Clone)]
pub struct Clamd {
    config: ScannerConfig,
}

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;
/// Longest answer read.
const MAX_ANSWER: usize = 4096;

impl Clamd {
    /// A client for the configured daemon.
    pub fn new(config: ScannerConfig) -> Self {
        Self { config }
    }

    /// Whether a failing scanner lets uploads through.
    pub fn fails_open(&self) -> bool {
        self.config.fail_open
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ScanError {
        ScanError::Unreachable { address: self.config.address.to_string(), reason: e.to_string() }
    }

    fn connect(&self) -> Result<Box<dyn Socket>, ScanError> {
        let t = Some(self.config.timeout);
        match &self.config.address {
            ScannerAddress::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| self.unreachable(e))?;
                s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)).map_err(|e| self.unreachable(e))?;
                Ok(Box::new(s))
            }
            ScannerAddress::Tcp(addr) => {
                let to = addr.to_socket_addrs().map_err(|e| self.unreachable(e))?.next().ok_or_else(|| self.unreachable("no address"))?;
                let s = std::net::TcpStream::connect_timeout(&to, self.config.timeout).map_err(|e| self.unreachable(e))?;
                s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)).map_err(|e| self.unreachable(e))?;
                Ok(Box::new(s))
            }
        }
    }

    fn answer(&self, socket: &mut dyn Socket) -> Result<String, ScanError> {
        let mut answer = Vec::new();
        let mut byte = [0u8; 256];
        loop {
            let n = socket.read(&mut byte).map_err(|e| self.unreachable(e))?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&byte[..n]);
            if answer.contains(&0) || answer.len() > MAX_ANSWER {
                break;
            }
        }
        let end = answer.iter().position(|&b| b == 0).unwrap_or(answer.len());
        Ok(String::from_utf8_lossy(&answer[..end]).trim().to_owned())
    }

    /// Checks that clamd answers (`PING`).
    pub fn ping(&self) -> Result<(), ScanError> {
        let mut socket = self.connect()?;
        socket.write_all(b"zPING\0").map_err(|e| self.unreachable(e))?;
        match self.answer(&mut *socket)?.as_str() {
            "PONG" => Ok(()),
            other => Err(ScanError::Failed(format!("PING was answered {other:?}"))),
        }
    }

    /// Scans `content` (blocking: run it off the async runtime).
    pub fn scan(&self, mut content: impl Read) -> Result<Verdict, ScanError> {
        let mut socket = self.connect()?;
        socket.write_all(b"zINSTREAM\0").map_err(|e| self.unreachable(e))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = content.read(&mut buf).map_err(ScanError::Content)?;
            if n == 0 {
                break;
            }
            let len = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
            // clamd closes the socket when a stream passes its StreamMaxLength: its
            // answer then says why, so read it rather than report the broken pipe.
            if socket.write_all(&len).and_then(|()| socket.write_all(&buf[..n])).is_err() {
                return Err(ScanError::Failed(self.answer(&mut *socket).unwrap_or_else(|e| e.to_string())));
            }
        }
        socket.write_all(&[0, 0, 0, 0]).map_err(|e| self.unreachable(e))?;
        parse(&self.answer(&mut *socket)?)
    }
}

fn parse(answer: &str) -> Result<Verdict, ScanError> {
    let result = answer.strip_prefix("stream:").unwrap_or(answer).trim();
    if result == "OK" {
        Ok(Verdict::Clean)
    } else if let Some(name) = result.strip_suffix(" FOUND") {
        Ok(Verdict::Infected(name.trim().to_owned()))
    } else if result.is_empty() {
        Err(ScanError::Failed("clamd closed the connection without an answer".into()))
    } else {
        Err(ScanError::Failed(result.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_answers_parse() {
        assert_eq!("unix:/run/clamd.ctl".parse(), Ok(ScannerAddress::Unix("/run/clamd.ctl".into())));
        assert_eq!("/tmp/c.sock".parse(), Ok(ScannerAddress::Unix("/tmp/c.sock".into())));
        assert_eq!("tcp:127.0.0.1:3310".parse(), Ok(ScannerAddress::Tcp("127.0.0.1:3310".into())));
        assert_eq!("localhost:3310".parse(), Ok(ScannerAddress::Tcp("localhost:3310".into())));
        assert!("clamd".parse::<ScannerAddress>().is_err());
        assert_eq!(parse("stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(parse("stream: Eicar-Test-Signature FOUND").unwrap(), Verdict::Infected("Eicar-Test-Signature".into()));
        let err = parse("INSTREAM size limit exceeded. ERROR").unwrap_err();
        assert_eq!(err.to_string(), "the malware scanner failed: INSTREAM size limit exceeded. ERROR");
    }
}
