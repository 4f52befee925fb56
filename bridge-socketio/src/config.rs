//! What the bridge is told: where it listens, which daemons it speaks for, and its limits.
//! Every setting has a command-line flag and an environment variable (the requirements'
//! `SOCKET_IO_PORT` and `SOCKET_IO_CORS_ORIGIN` among them); see the binary's `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Sessions one shared QUIC connection to a daemon carries before the bridge opens
/// another (the daemon's own limit is 1,024 by default).
pub const DEFAULT_SESSIONS_PER_CONNECTION: usize = 500;
/// Time a socket that connected without a token has to send `authenticate`.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets queued per socket towards its browser.
pub const DEFAULT_SOCKET_BUFFER: usize = 1_024;
/// How long a socket's full queue may stay full before the browser is disconnected as
/// too slow (it resumes from its cursors when it comes back).
pub const DEFAULT_SLOW_SOCKET_GRACE: Duration = Duration::from_secs(5);
/// Largest Engine.IO packet a browser may send. A chat message is at most 10 KiB of text;
/// this leaves room for JSON escaping and the other fields, and refuses anything bigger
/// before it is parsed.
pub const DEFAULT_MAX_PAYLOAD: u64 = 256 * 1024;

/// Where a socket's daemon sessions go, and how the bridge meets browsers.
#[derive(Clone)]
pub struct BridgeConfig {
    /// The HTTP address for Socket.IO (both transports) and the web app.
    pub listen: SocketAddr,
    /// Origins allowed to call cross-origin (`SOCKET_IO_CORS_ORIGIN`, comma-separated;
    /// `*` for any). Empty: only the bridge's own origin (the web app it serves).
    pub cors_origins: Vec<String>,
    /// The daemons' QUIC addresses; sockets are spread over them.
    pub daemons: Vec<SocketAddr>,
    /// TLS server name the daemons' certificate is checked against.
    pub server_name: String,
    /// CA certificate(s), PEM, that the daemons' certificate must chain to (shared by
    /// every session's SDK configuration, not copied into each).
    pub ca_pem: bytes::Bytes,
    /// See [`DEFAULT_SESSIONS_PER_CONNECTION`].
    pub sessions_per_connection: usize,
    /// See [`DEFAULT_AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// See [`DEFAULT_SOCKET_BUFFER`].
    pub socket_buffer: usize,
    /// See [`DEFAULT_SLOW_SOCKET_GRACE`].
    pub slow_socket_grace: Duration,
    /// See [`DEFAULT_MAX_PAYLOAD`].
    pub max_payload: u64,
    /// A directory with the built web app to serve at `/`; none: no web app.
    pub web_root: Option<PathBuf>,
    /// Demo accounts offered on the sign-in page (development mode only): `(user, role,
    /// token)`.
    pub demo_accounts: Vec<DemoAccount>,
    /// New Socket.IO connections per client address per minute (0: no limit).
    pub connections_per_minute: u32,
    /// New connections one address may open at once before the per-minute rate applies
    /// (an office behind one public address).
    pub connection_burst: u32,
    /// Addresses never limited, and the proxies whose `X-Forwarded-For` is believed
    /// (loopback by default).
    pub trusted_networks: legalchat_protocol::net::Networks,
}

/// One demo account of development mode.
#[derive(Clone)]
pub struct DemoAccount {
    /// User id.
    pub user_id: String,
    /// Global role (`advocate`, `client`, `admin`, `staff`).
    pub role: String,
    /// A token for it.
    pub token: String,
}

impl std::fmt::Debug for DemoAccount {
    // Tokens never land in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoAccount").field("user_id", &self.user_id).field("role", &self.role).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("listen", &self.listen)
            .field("cors_origins", &self.cors_origins)
            .field("daemons", &self.daemons)
            .field("server_name", &self.server_name)
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("sessions_per_connection", &self.sessions_per_connection)
            .field("auth_timeout", &self.auth_timeout)
            .field("socket_buffer", &self.socket_buffer)
            .field("slow_socket_grace", &self.slow_socket_grace)
            .field("max_payload", &self.max_payload)
            .field("web_root", &self.web_root)
            .field("demo_accounts", &self.demo_accounts)
            .field("connections_per_minute", &self.connections_per_minute)
            .field("connection_burst", &self.connection_burst)
            .field("trusted_networks", &self.trusted_networks)
            .finish()
    }
}

impl BridgeConfig {
    /// Defaults for everything but where to listen, the daemons and their CA.
    pub fn new(listen: SocketAddr, daemons: Vec<SocketAddr>, ca_pem: impl Into<bytes::Bytes>) -> Self {
        Self {
            listen,
            cors_origins: Vec::new(),
            daemons,
            server_name: "localhost".into(),
            ca_pem: ca_pem.into(),
            sessions_per_connection: DEFAULT_SESSIONS_PER_CONNECTION,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            slow_socket_grace: DEFAULT_SLOW_SOCKET_GRACE,
            max_payload: DEFAULT_MAX_PAYLOAD,
            web_root: None,
            demo_accounts: Vec::new(),
            connections_per_minute: 5,
            connection_burst: 20,
            trusted_networks: legalchat_protocol::net::Networks::loopback(),
        }
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.daemons.is_empty() {
            return Err("no daemon to bridge to: give at least one --daemon (LEGALCHAT_DAEMONS)".into());
        }
        if self.ca_pem.is_empty() {
            return Err("no CA certificate for the daemons: give --ca (LEGALCHAT_CA)".into());
        }
        if !(1..=100_000).contains(&self.sessions_per_connection) {
            return Err(format!("--sessions-per-connection {} is outside 1..=100000", self.sessions_per_connection));
        }
        if !(16..=1_000_000).contains(&self.socket_buffer) {
            return Err(format!("--socket-buffer {} is outside 16..=1000000", self.socket_buffer));
        }
        if self.auth_timeout.is_zero() || self.slow_socket_grace.is_zero() {
            return Err("--auth-timeout-ms and --slow-socket-grace-ms must be positive".into());
        }
        if !(4_096..=64 * 1024 * 1024).contains(&self.max_payload) {
            return Err(format!("--max-payload {} is outside 4096..=67108864", self.max_payload));
        }
        for origin in &self.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!("SOCKET_IO_CORS_ORIGIN: {origin:?} is not an origin (http://host[:port], https://host[:port] or *)"));
            }
        }
        Ok(())
    }
}

/// Splits `SOCKET_IO_CORS_ORIGIN`'s comma-separated list, trimming blanks and a trailing
/// `/` (browsers send origins without one).
pub fn parse_origins(list: &str) -> Vec<String> {
    list.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeConfig {
        BridgeConfig::new("127.0.0.1:3001".parse().unwrap(), vec!["127.0.0.1:7443".parse().unwrap()], b"pem".to_vec())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn each_bad_setting_is_named() {
        let mut c = config();
        c.daemons.clear();
        assert!(c.validate().unwrap_err().contains("--daemon"));
        let mut c = config();
        c.ca_pem.clear();
        assert!(c.validate().unwrap_err().contains("--ca"));
        let mut c = config();
        c.sessions_per_connection = 0;
        assert!(c.validate().unwrap_err().contains("--sessions-per-connection"));
        let mut c = config();
        c.cors_origins = vec!["localhost:3000".into()];
        assert!(c.validate().unwrap_err().contains("SOCKET_IO_CORS_ORIGIN"));
    }

    #[test]
    fn origins_are_split_and_trimmed() {
        assert_eq!(parse_origins(" http://a:3000/, https://b ,,"), ["http://a:3000", "https://b"]);
        assert!(parse_origins("").is_empty());
    }

    #[test]
    fn tokens_stay_out_of_debug_output() {
        let mut c = config();
        c.demo_accounts.push(DemoAccount { user_id: "alice".into(), role: "advocate".into(), token: "secret-token".into() });
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
