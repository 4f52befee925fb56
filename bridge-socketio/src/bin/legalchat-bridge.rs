//! `legalchat-bridge`: the Socket.IO bridge, standalone, in front of one or more daemons.
//!
//! ```text
//! legalchat-bridge --daemon 127.0.0.1:7443 --ca legalchat-data/tls/cert.pem [--web-root web/dist]
//! ```
//!
//! Prints one line to stdout once it listens (`legalchat-bridge ready http=127.0.0.1:3001`);
//! logs go to stderr. Ctrl-C or SIGTERM disconnect every socket and end their sessions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use legalchat_bridge::config::{self, BridgeConfig, DemoAccount, parse_origins};

// As the daemon: mimalloc without transparent huge pages keeps thousands of idle sessions'
// small allocations compact (glibc's per-thread arenas hold far more resident memory).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Socket.IO bridge for LegalChat web clients.
#[derive(Debug, Parser)]
#[command(name = "legalchat-bridge", version, about)]
struct Args {
    /// Daemon QUIC address; repeat (or separate with commas) for several daemons.
    #[arg(long = "daemon", env = "LEGALCHAT_DAEMONS", value_delimiter = ',', required = true)]
    daemons: Vec<SocketAddr>,
    /// CA certificate (PEM) the daemons' certificate chains to.
    #[arg(long, env = "LEGALCHAT_CA")]
    ca: PathBuf,
    /// TLS server name of the daemons' certificate.
    #[arg(long, env = "LEGALCHAT_SERVER_NAME", default_value = "localhost")]
    server_name: String,
    /// Address to listen on for browsers.
    #[arg(long, env = "SOCKET_IO_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on for browsers (0: any free port).
    #[arg(long, env = "SOCKET_IO_PORT", default_value_t = 3001)]
    port: u16,
    /// Origins allowed cross-origin, comma-separated (`*` for any); the web app served
    /// by the bridge itself needs none.
    #[arg(long, env = "SOCKET_IO_CORS_ORIGIN", default_value = "")]
    cors_origin: String,
    /// Browser sessions per QUIC connection to a daemon.
    #[arg(long, env = "LEGALCHAT_BRIDGE_SESSIONS_PER_CONNECTION", default_value_t = config::DEFAULT_SESSIONS_PER_CONNECTION)]
    sessions_per_connection: usize,
    /// Packets queued per socket towards its browser.
    #[arg(long, env = "LEGALCHAT_BRIDGE_SOCKET_BUFFER", default_value_t = config::DEFAULT_SOCKET_BUFFER)]
    socket_buffer: usize,
    /// How long a full socket queue may stay full before the browser is disconnected.
    #[arg(long, env = "LEGALCHAT_BRIDGE_SLOW_SOCKET_GRACE_MS", default_value_t = 5_000)]
    slow_socket_grace_ms: u64,
    /// Time a socket without a token has to send `authenticate`.
    #[arg(long, env = "LEGALCHAT_BRIDGE_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    auth_timeout_ms: u64,
    /// Largest packet a browser may send, in bytes.
    #[arg(long, env = "LEGALCHAT_BRIDGE_MAX_PAYLOAD", default_value_t = config::DEFAULT_MAX_PAYLOAD)]
    max_payload: u64,
    /// Directory of the built web app to serve at `/`.
    #[arg(long, env = "LEGALCHAT_WEB_ROOT")]
    web_root: Option<PathBuf>,
    /// Development only: a demo account the sign-in page offers, as `user:role:token`
    /// (repeatable). Never in production: anyone who can reach the page signs in as it.
    #[arg(long = "demo-account", value_name = "USER:ROLE:TOKEN")]
    demo_accounts: Vec<String>,
    /// New Socket.IO connections per client address per minute; 0 for no limit.
    #[arg(long, env = "LEGALCHAT_BRIDGE_CONNECTIONS_PER_MINUTE", default_value_t = 5)]
    connections_per_minute: u32,
    /// New connections one address may open at once before the per-minute rate applies.
    #[arg(long, env = "LEGALCHAT_BRIDGE_CONNECTION_BURST", default_value_t = 20)]
    connection_burst: u32,
    /// Comma-separated networks (CIDR) never limited, whose X-Forwarded-For is believed
    /// (the firm's reverse proxy). Default: loopback. An empty value: none.
    #[arg(long, env = "LEGALCHAT_BRIDGE_TRUSTED_NETWORKS", value_delimiter = ',')]
    trusted_networks: Option<Vec<String>>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LEGALCHAT_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("legalchat-bridge: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let ca = std::fs::read(&args.ca).with_context(|| format!("cannot read the CA certificate {}", args.ca.display()))?;
    let mut config = BridgeConfig::new(SocketAddr::new(args.host, args.port), args.daemons, ca);
    config.server_name = args.server_name;
    config.cors_origins = parse_origins(&args.cors_origin);
    config.sessions_per_connection = args.sessions_per_connection;
    config.socket_buffer = args.socket_buffer;
    config.slow_socket_grace = Duration::from_millis(args.slow_socket_grace_ms);
    config.auth_timeout = Duration::from_millis(args.auth_timeout_ms);
    config.max_payload = args.max_payload;
    config.connections_per_minute = args.connections_per_minute;
    config.connection_burst = args.connection_burst;
    if let Some(list) = args.trusted_networks {
        let list: Vec<String> = list.into_iter().filter(|s| !s.trim().is_empty()).collect();
        config.trusted_networks =
            legalchat_protocol::net::Networks::parse(&list).map_err(|e| anyhow::anyhow!("--trusted-networks: {e}"))?;
    }
    if let Some(root) = args.web_root {
        anyhow::ensure!(root.join("index.html").is_file(), "--web-root {}: no index.html there (build the web app first)", root.display());
        config.web_root = Some(root);
    }
    for account in &args.demo_accounts {
        let mut parts = account.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(user), Some(role), Some(token)) if !user.is_empty() && !token.is_empty() => {
                config.demo_accounts.push(DemoAccount { user_id: user.into(), role: role.into(), token: token.into() });
            }
            _ => anyhow::bail!("--demo-account must be USER:ROLE:TOKEN"),
        }
    }
    if !config.demo_accounts.is_empty() {
        tracing::warn!(
            accounts = config.demo_accounts.len(),
            "development mode: the sign-in page offers demo accounts to anyone who reaches it"
        );
    }
    let bridge = legalchat_bridge::start(config).await?;
    println!("legalchat-bridge ready http={}", bridge.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: disconnecting every socket");
    bridge.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
