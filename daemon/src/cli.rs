//! The `legalchatd` command line. `main.rs` only calls [`main`], so another crate can
//! build an identical binary (the end-to-end tests do).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use legalchat_protocol::pb::{self, ConversationType};

use crate::auth::{self, Claims, Identity, Role};
use crate::config::{Config, ConfigArgs};
use crate::server::{self, Daemon, Internal};
use crate::shard::{Command, CreateSpec};

/// LegalChat daemon: secure real-time chat over QUIC for legal practices.
#[derive(Debug, Parser)]
#[command(name = "legalchatd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Development mode: like `run --dev`, and also creates demo accounts and
    /// conversations, prints a token for each demo user, and serves the Socket.IO bridge
    /// and the web app (with a sign-in page offering the demo accounts).
    Dev {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        web: WebArgs,
    },
    /// Mint a token signed with the configured HS256 secret (development and demos).
    Token {
        /// User id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Global role: advocate, client or admin.
        #[arg(long)]
        role: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print a fresh random master key (64 hex characters) for `LEGALCHAT_MASTER_KEY`.
    Keygen,
}

/// The web side of development mode: the Socket.IO bridge, in this process.
#[derive(Debug, Clone, clap::Args)]
struct WebArgs {
    /// Port of the Socket.IO bridge and the web app (on 127.0.0.1).
    #[arg(long, env = "SOCKET_IO_PORT", default_value_t = 3001)]
    web_port: u16,
    /// The built web app (`bridge-socketio/web/dist/web`); without it, Socket.IO only.
    #[arg(long, env = "LEGALCHAT_WEB_ROOT")]
    web_root: Option<PathBuf>,
    /// Origins allowed cross-origin (comma-separated), e.g. a separate front-end dev server.
    #[arg(long, env = "SOCKET_IO_CORS_ORIGIN", default_value = "")]
    cors_origin: String,
    /// No bridge and no web app: the daemon alone.
    #[arg(long)]
    no_web: bool,
}

/// Demo users: (id, role, display name).
const DEMO_USERS: [(&str, Role, &str); 4] = [
    ("alice", Role::Advocate, "Alice Advocate"),
    ("bob", Role::Client, "Bob Client"),
    ("carol", Role::Admin, "Carol Admin"),
    ("dan", Role::Advocate, "Dan Associate"),
];

/// Runs the command line; exits the process with 1 on failure.
pub fn main() {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        None => run(cli.config, None),
        Some(Cmd::Run { config }) => run(merge(cli.config, config), None),
        Some(Cmd::Dev { mut config, web }) => {
            config.dev = true;
            run(merge(cli.config, config), Some(web))
        }
        Some(Cmd::Token { user, role, name, ttl_secs, config }) => token(&merge(cli.config, config), &user, &role, name, ttl_secs),
        Some(Cmd::Keygen) => {
            println!("{}", crate::crypto::MasterKey::generate_text());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("legalchatd: {e:#}");
        std::process::exit(1);
    }
}

/// Flags given before the subcommand count as well as those after it.
fn merge(outer: ConfigArgs, inner: ConfigArgs) -> ConfigArgs {
    ConfigArgs {
        config: inner.config.or(outer.config),
        data_dir: inner.data_dir.or(outer.data_dir),
        listen: inner.listen.or(outer.listen),
        tcp_listen: inner.tcp_listen.or(outer.tcp_listen),
        ops_listen: inner.ops_listen.or(outer.ops_listen),
        dev: inner.dev || outer.dev,
        tls_cert: inner.tls_cert.or(outer.tls_cert),
        tls_key: inner.tls_key.or(outer.tls_key),
        jwt_algorithm: inner.jwt_algorithm.or(outer.jwt_algorithm),
        jwt_secret: inner.jwt_secret.or(outer.jwt_secret),
        jwt_public_key: inner.jwt_public_key.or(outer.jwt_public_key),
        jwt_issuer: inner.jwt_issuer.or(outer.jwt_issuer),
        jwt_audience: inner.jwt_audience.or(outer.jwt_audience),
        master_key_file: inner.master_key_file.or(outer.master_key_file),
        fsync: inner.fsync.or(outer.fsync),
        shards: inner.shards.or(outer.shards),
        max_frame_size: inner.max_frame_size.or(outer.max_frame_size),
        max_message_size: inner.max_message_size.or(outer.max_message_size),
        auth_timeout_ms: inner.auth_timeout_ms.or(outer.auth_timeout_ms),
        max_connections: inner.max_connections.or(outer.max_connections),
        max_sessions_per_connection: inner.max_sessions_per_connection.or(outer.max_sessions_per_connection),
        typing_timeout_ms: inner.typing_timeout_ms.or(outer.typing_timeout_ms),
        push_enabled: inner.push_enabled.or(outer.push_enabled),
        push_webhook_url: inner.push_webhook_url.or(outer.push_webhook_url),
        push_webhook_secret: inner.push_webhook_secret.or(outer.push_webhook_secret),
        push_vapid_private_key: inner.push_vapid_private_key.or(outer.push_vapid_private_key),
        push_vapid_subject: inner.push_vapid_subject.or(outer.push_vapid_subject),
        push_include_text: inner.push_include_text.or(outer.push_include_text),
        push_ttl_secs: inner.push_ttl_secs.or(outer.push_ttl_secs),
        push_max_attempts: inner.push_max_attempts.or(outer.push_max_attempts),
        push_allowed_hosts: inner.push_allowed_hosts.or(outer.push_allowed_hosts),
        max_file_size: inner.max_file_size.or(outer.max_file_size),
        uploads_per_hour: inner.uploads_per_hour.or(outer.uploads_per_hour),
        clamd: inner.clamd.or(outer.clamd),
        clamd_fail_open: inner.clamd_fail_open.or(outer.clamd_fail_open),
        messages_per_minute: inner.messages_per_minute.or(outer.messages_per_minute),
        connections_per_minute: inner.connections_per_minute.or(outer.connections_per_minute),
        connection_burst: inner.connection_burst.or(outer.connection_burst),
        trusted_networks: inner.trusted_networks.or(outer.trusted_networks),
        frame_timeout_ms: inner.frame_timeout_ms.or(outer.frame_timeout_ms),
        commit_interval_us: inner.commit_interval_us.or(outer.commit_interval_us),
        handshakes_before_retry: inner.handshakes_before_retry.or(outer.handshakes_before_retry),
    }
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LEGALCHAT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Runs the daemon; `demo` (development mode) also seeds the demo accounts and, unless
/// switched off, serves the bridge and the web app.
fn run(args: ConfigArgs, demo: Option<WebArgs>) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("legalchatd").build()?;
    runtime.block_on(async move {
        let daemon = Daemon::start(config.clone()).await?;
        let mut bridge = None;
        if let Some(web) = demo {
            seed_demo(&daemon.internal()).await?;
            let accounts = demo_accounts(&config)?;
            if !web.no_web {
                bridge = Some(start_bridge(&config, &daemon, &web, &accounts).await?);
            }
            print_demo(&config, &daemon, &accounts, bridge.as_ref())?;
        }
        // The one line tools wait for; logs go to stderr.
        let mut stdout = std::io::stdout().lock();
        let tcp = daemon.tcp_addr().map(|a| format!(" tcp={a}")).unwrap_or_default();
        match &bridge {
            Some(b) => {
                writeln!(stdout, "legalchatd ready quic={} ops={}{tcp} web=http://{}", daemon.quic_addr(), daemon.ops_addr(), b.addr)?
            }
            None => writeln!(stdout, "legalchatd ready quic={} ops={}{tcp}", daemon.quic_addr(), daemon.ops_addr())?,
        }
        stdout.flush()?;
        drop(stdout);
        wait_for_signal(|| rotate_master_key(&config, daemon.internal())).await;
        if let Some(b) = bridge {
            b.shutdown().await;
        }
        daemon.shutdown().await;
        anyhow::Ok(())
    })
}

/// The bridge of development mode, in front of this daemon, offering the demo accounts.
async fn start_bridge(
    config: &Config,
    daemon: &Daemon,
    web: &WebArgs,
    accounts: &[legalchat_bridge::DemoAccount],
) -> anyhow::Result<legalchat_bridge::RunningBridge> {
    let ca = std::fs::read(config.tls_dir().join("cert.pem"))?;
    let mut quic = daemon.quic_addr();
    if quic.ip().is_unspecified() {
        quic.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let mut bridge = legalchat_bridge::BridgeConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, web.web_port)), vec![quic], ca);
    bridge.cors_origins = legalchat_bridge::config::parse_origins(&web.cors_origin);
    bridge.demo_accounts = accounts.to_vec();
    match &web.web_root {
        Some(root) if root.join("index.html").is_file() => bridge.web_root = Some(root.clone()),
        Some(root) => tracing::warn!(
            web_root = %root.display(),
            "no index.html there: serving Socket.IO only (build the web app with `npm ci && npm run build` in bridge-socketio/web)"
        ),
        None => {}
    }
    legalchat_bridge::start(bridge).await
}

/// A token for each demo user, valid 24 h.
fn demo_accounts(config: &Config) -> anyhow::Result<Vec<legalchat_bridge::DemoAccount>> {
    let secrets = server::resolve_secrets(config)?;
    let Some(secret) = secrets.jwt_secret else { return Ok(Vec::new()) };
    DEMO_USERS
        .iter()
        .map(|(user, role, name)| {
            let token = mint(config, secret.as_bytes(), user, role.as_str(), Some((*name).into()), 86_400)?;
            Ok(legalchat_bridge::DemoAccount { user_id: (*user).into(), role: role.as_str().into(), token })
        })
        .collect()
}

/// Waits for SIGTERM or Ctrl-C; on SIGHUP runs `on_hangup` (a master key rotation) and
/// goes on waiting.
async fn wait_for_signal<F: std::future::Future<Output = ()> + Send + 'static>(on_hangup: impl Fn() -> F) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            (Ok(mut term), Ok(mut hup)) => loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                    _ = hup.recv() => {
                        tokio::spawn(on_hangup());
                    }
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = on_hangup;
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received");
}

/// SIGHUP: reads the master key file again and, online, re-wraps every conversation's data
/// key under the key it now holds (see [`crate::server::Internal::rotate_master_key`]).
fn rotate_master_key(
    config: &Config,
    internal: std::sync::Arc<crate::server::Internal>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let source = match (&config.master_key, &config.master_key_file) {
        (Some(_), _) => Err(
            "the master key comes from LEGALCHAT_MASTER_KEY, which cannot change while the daemon runs; use --master-key-file to rotate"
                .to_owned(),
        ),
        (None, Some(path)) => Ok(path.clone()),
        (None, None) => Ok(config.dev_dir().join("master.key")),
    };
    async move {
        let path = match source {
            Ok(path) => path,
            Err(why) => return tracing::error!("master key rotation: {why}"),
        };
        let next = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::crypto::MasterKey::from_text(&t).map_err(|e| e.to_string()))
        {
            Ok(key) => key,
            Err(e) => return tracing::error!(file = %path.display(), "master key rotation: the new key cannot be read: {e}"),
        };
        tracing::info!(file = %path.display(), "master key rotation: re-wrapping every data key under the key now in the file");
        match internal.rotate_master_key(next).await {
            Ok(n) => tracing::info!(
                rewrapped = n,
                "master key rotated: every data key is wrapped by the new key; the old key is no longer used and can be destroyed"
            ),
            Err(e) => tracing::error!("master key rotation stopped (both keys stay in use; send SIGHUP again): {e}"),
        }
    }
}

/// Prints a token on stdout. Needs only the HS256 secret (no certificate, no master key):
/// it serves nothing and reads nothing else.
fn token(args: &ConfigArgs, user: &str, role: &str, name: Option<String>, ttl_secs: u64) -> anyhow::Result<()> {
    let config = Config::load_for_signing(args)?;
    let secret = server::resolve_jwt_secret(&config)?.ok_or_else(|| {
        anyhow::anyhow!("jwt.secret (LEGALCHAT_JWT_SECRET, --jwt-secret): `token` signs with an HS256 secret; set it, or use --dev")
    })?;
    println!("{}", mint(&config, secret.as_bytes(), user, role, name, ttl_secs)?);
    Ok(())
}

fn mint(config: &Config, secret: &[u8], user: &str, role: &str, name: Option<String>, ttl_secs: u64) -> anyhow::Result<String> {
    legalchat_protocol::validate::user_id("--user", user)?;
    if Role::parse(role).is_none() {
        anyhow::bail!("--role must be advocate, client or admin, not {role:?}");
    }
    let now = auth::now_secs();
    let claims = Claims {
        sub: user.to_owned(),
        role: role.to_owned(),
        exp: now + ttl_secs,
        iat: Some(now),
        nbf: None,
        iss: config.jwt.issuer.clone(),
        aud: config.jwt.audience.clone(),
        name,
    };
    Ok(auth::mint_hs256(secret, &claims)?)
}

/// Creates the demo accounts and conversations once (guarded by a marker file).
async fn seed_demo(internal: &Arc<Internal>) -> anyhow::Result<()> {
    let ids: Vec<Identity> =
        DEMO_USERS.iter().map(|(u, r, n)| Identity { user_id: (*u).into(), role: *r, name: Some((*n).into()) }).collect();
    for id in &ids {
        record(internal, id).await?;
    }
    let [alice, bob, ..] = ids.as_slice() else { anyhow::bail!("demo users") };
    // Private chat alice–bob is idempotent by construction.
    create(internal, alice, ConversationType::Private, &["bob"], "", "").await?;
    // The directory doubles as the marker that the demo conversations exist, so a
    // restart does not add them again.
    if internal.directory.role_of("demo-seeded").is_none() {
        create(internal, alice, ConversationType::Case, &["bob", "dan"], "Smith v. Jones — case team", "2024-017").await?;
        create(internal, alice, ConversationType::Group, &["dan", "carol"], "Litigation team", "").await?;
        create(internal, bob, ConversationType::Support, &["carol"], "Help with the client portal", "").await?;
        record(internal, &Identity { user_id: "demo-seeded".into(), role: Role::Admin, name: None }).await?;
    }
    Ok(())
}

/// Records a demo user in the directory the way sessions do: the lookup on a blocking
/// thread, the write through the user's shard.
async fn record(internal: &Arc<Internal>, id: &Identity) -> anyhow::Result<()> {
    let (directory, who) = (internal.directory.clone(), id.clone());
    if let Some(record) = tokio::task::spawn_blocking(move || directory.record_for(&who)).await? {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let commit = Command::Commit { writes: vec![crate::store::Write::User(record)], sync: false, reply };
        internal.shards.submit_to(internal.shards.shard_of_user(&id.user_id), commit).map_err(|e| anyhow::anyhow!("{e}"))?;
        rx.await.map_err(|_| anyhow::anyhow!("shard stopped"))??;
    }
    internal.directory.remember(id);
    Ok(())
}

async fn create(
    internal: &Arc<Internal>,
    caller: &Identity,
    kind: ConversationType,
    others: &[&str],
    title: &str,
    case_id: &str,
) -> anyhow::Result<pb::Conversation> {
    let id = if kind == ConversationType::Private {
        crate::ids::private_conversation_id(&caller.user_id, others.first().copied().unwrap_or_default())
    } else {
        crate::ids::random_id()
    };
    let spec = CreateSpec {
        kind,
        others: others.iter().map(|s| (*s).to_owned()).collect(),
        title: title.into(),
        description: String::new(),
        case_id: case_id.into(),
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    internal
        .shards
        .submit_to(internal.shards.shard_of(&id), Command::Create { id, caller: caller.clone(), origin: 0, spec, reply })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(rx.await.map_err(|_| anyhow::anyhow!("shard stopped"))??)
}

fn print_demo(
    config: &Config,
    daemon: &Daemon,
    accounts: &[legalchat_bridge::DemoAccount],
    bridge: Option<&legalchat_bridge::RunningBridge>,
) -> anyhow::Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let cert = config.tls_dir().join("cert.pem");
    let mut err = std::io::stderr().lock();
    writeln!(err)?;
    writeln!(err, "LegalChat development server — demo accounts (tokens valid 24 h):")?;
    for a in accounts {
        writeln!(err, "  {:<6} {:<9} {}", a.user_id, a.role, a.token)?;
    }
    writeln!(err)?;
    if let Some(b) = bridge {
        writeln!(err, "Web app: http://{} — sign in as alice (advocate) in one window and bob (client) in another", b.addr)?;
        writeln!(err, "  (Socket.IO clients connect to the same address with auth.token)")?;
        writeln!(err)?;
    }
    writeln!(err, "Try it (in another terminal):")?;
    writeln!(err, "  export LEGALCHAT_SERVER={} LEGALCHAT_CA={}", daemon.quic_addr(), display(&cert))?;
    writeln!(
        err,
        "  export LEGALCHAT_TOKEN=$(cargo run -q --release -p legalchat-daemon -- token --dev --data-dir {} --user alice --role advocate)",
        display(&config.data_dir)
    )?;
    writeln!(err, "  cargo run -q --release -p legalchat-sdk --bin legalchat -- list")?;
    writeln!(err, "Metrics: http://{}/metrics", daemon.ops_addr())?;
    writeln!(err)?;
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
