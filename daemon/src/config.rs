//! Configuration: built-in defaults, then a TOML file, then environment variables, then
//! command-line flags — each layer overrides the one before. A bad value stops the
//! daemon at start with a message naming the setting, never at the first request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use legalchat_protocol::{codec, validate};

/// A setting that could not be accepted. The message always names the setting (by its
/// TOML key, environment variable and flag) so the operator can find it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is out of range or malformed.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting, as `toml.key (ENV_VAR, --flag)`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// When a write batch is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Group commit: every write batch is fsynced before any message in it is
    /// acknowledged. Survives power loss. The default.
    Always,
    /// Writes reach the operating system (the write-ahead log) before the acknowledgment,
    /// but are not fsynced: survives a crash of the daemon, not of the machine.
    Never,
}

/// Which algorithm signs the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    #[value(name = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256; public key in PEM.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256; public key in PEM.
    #[value(name = "ES256")]
    Es256,
    /// Ed25519; public key in PEM.
    #[value(name = "EdDSA")]
    #[serde(rename = "EdDSA")]
    EdDsa,
}

/// The daemon's effective configuration, after every layer has been applied and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where RocksDB, keys and the development certificate live.
    pub data_dir: PathBuf,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// TLS-over-TCP listen address (the fallback for clients whose network blocks UDP);
    /// `None` when turned off.
    pub tcp_listen: Option<SocketAddr>,
    /// Ops HTTP listen address (metrics, health).
    pub ops_listen: SocketAddr,
    /// TLS certificate chain (PEM); `None` in development mode means "generate".
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Master key file (32 bytes, hex or base64). The environment variable
    /// `LEGALCHAT_MASTER_KEY` takes precedence.
    pub master_key_file: Option<PathBuf>,
    /// Master key given directly (from `LEGALCHAT_MASTER_KEY`).
    pub master_key: Option<String>,
    /// Development mode: generate what is missing (certificate, master key, JWT secret).
    pub dev: bool,
    /// Durability of write batches.
    pub fsync: FsyncPolicy,
    /// Number of conversation shards (threads); defaults to half the cores (see
    /// [`default_shards`]).
    pub shards: usize,
    /// Bound of each shard's mailbox.
    pub shard_mailbox: usize,
    /// Most commands folded into one write batch.
    pub max_batch: usize,
    /// Shortest time between two group commits of a shard under sustained load: more
    /// messages share one fsync and one hand-off, and an acknowledgment waits at most this
    /// much longer.
    pub commit_interval: Duration,
    /// Largest frame body accepted from a client.
    pub max_frame_size: usize,
    /// Largest message text in bytes.
    pub max_message_size: usize,
    /// How long a new session has to authenticate.
    pub auth_timeout: Duration,
    /// How long a frame may take from its first byte to its last (slowloris).
    pub frame_timeout: Duration,
    /// Handshakes in progress beyond which new clients must first pass a stateless retry
    /// (address validation); 0 for always.
    pub handshakes_before_retry: usize,
    /// Bound of each session's outbound queue, in frames. A session that falls this far
    /// behind is disconnected and told to resync.
    pub session_outbound: usize,
    /// Requests one session may have in flight.
    pub session_inflight: usize,
    /// Requests all of one user's sessions together may have in flight.
    pub user_inflight: usize,
    /// Most concurrent QUIC connections.
    pub max_connections: usize,
    /// Most sessions one QUIC connection may carry (each is its own bidirectional stream).
    pub max_sessions_per_connection: usize,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// A typing state ends by itself when not refreshed within this time.
    pub typing_timeout: Duration,
    /// How long after sending an author may edit a message (`None`: no limit).
    pub edit_window: Option<Duration>,
    /// Most distinct emoji on one message.
    pub max_reactions_per_message: usize,
    /// Conversations each shard keeps in memory.
    pub max_cached_conversations: usize,
    /// Push notifications for users with no connected device.
    pub push: PushConfig,
    /// Attachments: size, types, upload rate, malware scanning.
    pub files: crate::files::FilesConfig,
    /// Rate limits: messages per user, new connections per address.
    pub limits: crate::limits::LimitsConfig,
}

/// Push notification settings (`[push]`; see `docs/push.md`).
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Master switch; off means no notification leaves the server (subscriptions are still
    /// accepted and kept).
    pub enabled: bool,
    /// The firm's notification service: every notification is POSTed there as signed JSON.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the webhook's `X-LegalChat-Signature` (at least 32 bytes).
    pub webhook_secret: Option<String>,
    /// VAPID key (RFC 8292): P-256 private key, PEM (PKCS#8 or SEC1). Without one, Web Push
    /// is off, except in development mode, which generates one in the data directory.
    pub vapid_private_key_file: Option<PathBuf>,
    /// VAPID contact (`mailto:` or `https:` URI) the push services may use to reach the
    /// operator; required with a VAPID key outside development mode.
    pub vapid_subject: Option<String>,
    /// Whether the message text goes out in notifications. Off by default: a notification
    /// then names only the sender and the conversation.
    pub include_text: bool,
    /// How long a push service keeps an undelivered Web Push message (its `TTL`), seconds.
    pub ttl_secs: u32,
    /// Attempts per delivery (the first one included) before giving up.
    pub max_attempts: u32,
    /// Hosts Web Push endpoints may point at: an exact host, or `.suffix` for its
    /// subdomains. Endpoints come from clients, so without this list a client could make
    /// the server POST to any host, internal ones included.
    pub allowed_hosts: Vec<String>,
}

/// Default shortest time between two group commits of a shard, in microseconds.
pub const DEFAULT_COMMIT_INTERVAL_US: u64 = 2_000;

/// The public push services of today's browsers (Chrome/Android, Firefox, Safari, Edge).
pub const DEFAULT_PUSH_HOSTS: [&str; 5] =
    ["fcm.googleapis.com", "updates.push.services.mozilla.com", ".push.apple.com", ".notify.windows.com", ".push.services.mozilla.com"];

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Signing algorithm.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key for RS256/ES256/EdDSA.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
}

/// The TOML file's shape. Every field is optional; unknown keys are an error so that a
/// typo does not silently leave a default in force.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    tcp_listen: Option<String>,
    ops_listen: Option<String>,
    dev: Option<bool>,
    fsync: Option<FsyncPolicy>,
    shards: Option<usize>,
    shard_mailbox: Option<usize>,
    max_batch: Option<usize>,
    commit_interval_us: Option<u64>,
    max_frame_size: Option<usize>,
    max_message_size: Option<usize>,
    auth_timeout_ms: Option<u64>,
    frame_timeout_ms: Option<u64>,
    handshakes_before_retry: Option<usize>,
    session_outbound: Option<usize>,
    session_inflight: Option<usize>,
    user_inflight: Option<usize>,
    max_connections: Option<usize>,
    max_sessions_per_connection: Option<usize>,
    idle_timeout_ms: Option<u64>,
    typing_timeout_ms: Option<u64>,
    edit_window_secs: Option<u64>,
    max_reactions_per_message: Option<usize>,
    max_cached_conversations: Option<usize>,
    master_key_file: Option<PathBuf>,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    jwt: FileJwt,
    #[serde(default)]
    push: FilePush,
    #[serde(default)]
    attachments: FileAttachments,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    messages_per_minute: Option<u32>,
    connections_per_minute: Option<u32>,
    connection_burst: Option<u32>,
    trusted_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAttachments {
    max_file_size: Option<u64>,
    allowed_types: Option<Vec<String>>,
    uploads_per_hour: Option<u32>,
    orphan_grace_secs: Option<u64>,
    clamd: Option<String>,
    clamd_fail_open: Option<bool>,
    clamd_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    algorithm: Option<JwtAlgorithm>,
    secret: Option<String>,
    public_key_file: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePush {
    enabled: Option<bool>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    vapid_private_key_file: Option<PathBuf>,
    vapid_subject: Option<String>,
    include_text: Option<bool>,
    ttl_secs: Option<u32>,
    max_attempts: Option<u32>,
    allowed_hosts: Option<Vec<String>>,
}

/// Command-line flags; each also reads an environment variable (clap's `env`), so the
/// effective order is: flag, then environment, then the TOML file, then the default.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "LEGALCHAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (RocksDB, keys, development certificate). Default ./legalchat-data.
    #[arg(long, env = "LEGALCHAT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// QUIC listen address. Default 127.0.0.1:7443.
    #[arg(long, env = "LEGALCHAT_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// TLS-over-TCP listen address, for clients whose network blocks UDP; `off` turns it
    /// off. Default: the QUIC address (the same IP and port number, on TCP).
    #[arg(long, env = "LEGALCHAT_TCP_LISTEN", value_name = "ADDR|off")]
    pub tcp_listen: Option<String>,
    /// Ops HTTP listen address for /metrics, /healthz, /readyz. Default 127.0.0.1:9464.
    #[arg(long, env = "LEGALCHAT_OPS_LISTEN", value_name = "ADDR")]
    pub ops_listen: Option<String>,
    /// Development mode: generate a missing certificate, master key and JWT secret in the
    /// data directory. Never use in production.
    #[arg(long, env = "LEGALCHAT_DEV")]
    pub dev: bool,
    /// TLS certificate chain, PEM.
    #[arg(long, env = "LEGALCHAT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, env = "LEGALCHAT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Token algorithm: HS256 (shared secret) or RS256/ES256/EdDSA (public key). Default HS256.
    #[arg(long, env = "LEGALCHAT_JWT_ALGORITHM", value_name = "ALG")]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "LEGALCHAT_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256/ES256/EdDSA tokens.
    #[arg(long, env = "LEGALCHAT_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required token issuer (`iss`).
    #[arg(long, env = "LEGALCHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required token audience (`aud`).
    #[arg(long, env = "LEGALCHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Master key file: 32 bytes as 64 hex characters or base64. `LEGALCHAT_MASTER_KEY`
    /// (the key itself) takes precedence.
    #[arg(long, env = "LEGALCHAT_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// always: fsync each group-commit batch before acknowledging (default); never: rely on
    /// the OS to write the log (survives a daemon crash, not a power cut).
    #[arg(long, env = "LEGALCHAT_FSYNC")]
    pub fsync: Option<FsyncPolicy>,
    /// Conversation shards (threads). Default: half the cores, at least one.
    #[arg(long, env = "LEGALCHAT_SHARDS")]
    pub shards: Option<usize>,
    /// Largest frame accepted from a client, in bytes. Default 65536.
    #[arg(long, env = "LEGALCHAT_MAX_FRAME_SIZE")]
    pub max_frame_size: Option<usize>,
    /// Largest message text in bytes. Default 10240.
    #[arg(long, env = "MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Milliseconds a new session has to authenticate. Default 5000.
    #[arg(long, env = "LEGALCHAT_AUTH_TIMEOUT_MS")]
    pub auth_timeout_ms: Option<u64>,
    /// Most concurrent QUIC connections. Default 100000.
    #[arg(long, env = "LEGALCHAT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most sessions one QUIC connection may carry, each on its own stream. Default 1024.
    #[arg(long, env = "LEGALCHAT_MAX_SESSIONS_PER_CONNECTION")]
    pub max_sessions_per_connection: Option<usize>,
    /// Milliseconds after which a typing indicator that was not refreshed stops. Default 3000.
    #[arg(long, env = "TYPING_TIMEOUT")]
    pub typing_timeout_ms: Option<u64>,
    /// Push notifications on or off (true/false). Default true.
    #[arg(long, env = "LEGALCHAT_PUSH_ENABLED", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub push_enabled: Option<bool>,
    /// URL of the firm's notification service; each notification is POSTed there as JSON
    /// signed with --push-webhook-secret. https, or http on loopback only.
    #[arg(long, env = "LEGALCHAT_PUSH_WEBHOOK_URL", value_name = "URL")]
    pub push_webhook_url: Option<String>,
    /// HMAC-SHA256 key for the webhook signature (at least 32 bytes).
    #[arg(long, env = "LEGALCHAT_PUSH_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub push_webhook_secret: Option<String>,
    /// VAPID private key for Web Push: P-256, PEM. Generated in the data directory in --dev mode.
    #[arg(long, env = "LEGALCHAT_PUSH_VAPID_PRIVATE_KEY_FILE", value_name = "FILE")]
    pub push_vapid_private_key: Option<PathBuf>,
    /// VAPID contact, a mailto: or https: URI. Required with a VAPID key outside --dev mode.
    #[arg(long, env = "LEGALCHAT_PUSH_VAPID_SUBJECT", value_name = "URI")]
    pub push_vapid_subject: Option<String>,
    /// Include the message text in notifications (true/false). Default false: sender and
    /// conversation only.
    #[arg(long, env = "LEGALCHAT_PUSH_INCLUDE_TEXT", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub push_include_text: Option<bool>,
    /// Seconds a push service keeps an undelivered Web Push message (TTL). Default 86400.
    #[arg(long, env = "LEGALCHAT_PUSH_TTL_SECS")]
    pub push_ttl_secs: Option<u32>,
    /// Attempts per notification delivery before giving up. Default 5.
    #[arg(long, env = "LEGALCHAT_PUSH_MAX_ATTEMPTS")]
    pub push_max_attempts: Option<u32>,
    /// Comma-separated hosts Web Push endpoints may use (`host` or `.suffix`). Default: the
    /// browsers' public push services.
    #[arg(long, env = "LEGALCHAT_PUSH_ALLOWED_HOSTS", value_name = "HOSTS", value_delimiter = ',')]
    pub push_allowed_hosts: Option<Vec<String>>,
    /// Largest attachment in bytes. Default 52428800 (50 MiB).
    #[arg(long, env = "MAX_FILE_SIZE", value_name = "BYTES")]
    pub max_file_size: Option<u64>,
    /// New uploads per user per hour; 0 for no limit. Default 10.
    #[arg(long, env = "LEGALCHAT_UPLOADS_PER_HOUR", value_name = "N")]
    pub uploads_per_hour: Option<u32>,
    /// Scan every upload with ClamAV's daemon: unix:/path/to/clamd.sock or tcp:host:port.
    #[arg(long, env = "LEGALCHAT_CLAMD", value_name = "ADDRESS")]
    pub clamd: Option<String>,
    /// Accept uploads unscanned when clamd is unavailable (true/false). Default false:
    /// refuse them until it is back.
    #[arg(long, env = "LEGALCHAT_CLAMD_FAIL_OPEN", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub clamd_fail_open: Option<bool>,
    /// Messages per user per minute, over all their devices and transports; 0 for no
    /// limit. Default 100.
    #[arg(long, env = "LEGALCHAT_MESSAGES_PER_MINUTE", value_name = "N")]
    pub messages_per_minute: Option<u32>,
    /// New connections per client address per minute; 0 for no limit. Default 5.
    #[arg(long, env = "LEGALCHAT_CONNECTIONS_PER_MINUTE", value_name = "N")]
    pub connections_per_minute: Option<u32>,
    /// New connections one address may open at once before the per-minute rate applies.
    /// Default 20.
    #[arg(long, env = "LEGALCHAT_CONNECTION_BURST", value_name = "N")]
    pub connection_burst: Option<u32>,
    /// Comma-separated networks (CIDR) whose addresses are never limited per address.
    /// Default: loopback (127.0.0.0/8, ::1). Give an empty value for none.
    #[arg(long, env = "LEGALCHAT_TRUSTED_NETWORKS", value_name = "CIDRS", value_delimiter = ',')]
    pub trusted_networks: Option<Vec<String>>,
    /// Milliseconds a frame may take from its first byte to its last. Default 10000.
    #[arg(long, env = "LEGALCHAT_FRAME_TIMEOUT_MS", value_name = "MS")]
    pub frame_timeout_ms: Option<u64>,
    /// Shortest time between two group commits of a shard under sustained load, in
    /// microseconds: what arrives meanwhile shares the next commit and fsync. A message
    /// after a quiet spell is committed at once. 0 commits as soon as the previous commit
    /// returned. Default 2000.
    #[arg(long, env = "LEGALCHAT_COMMIT_INTERVAL_US", value_name = "US")]
    pub commit_interval_us: Option<u64>,
    /// Handshakes in progress beyond which new clients must pass a stateless retry first;
    /// 0 for always. Default 128.
    #[arg(long, env = "LEGALCHAT_HANDSHAKES_BEFORE_RETRY", value_name = "N")]
    pub handshakes_before_retry: Option<usize>,
}

impl Config {
    /// Builds the configuration from flags/environment (`args`) over the TOML file named
    /// by `args.config` over the defaults, and checks every value.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let config = Self::build(args)?;
        config.check()?;
        Ok(config)
    }

    /// The configuration for signing tokens (`legalchatd token`): only the JWT settings
    /// are checked, since nothing is served. HS256 needs a secret of at least 32 bytes,
    /// or development mode, whose secret lives in the data directory.
    pub fn load_for_signing(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let config = Self::build(args)?;
        if config.jwt.algorithm != JwtAlgorithm::Hs256 {
            return Err(invalid(
                "jwt.algorithm (LEGALCHAT_JWT_ALGORITHM, --jwt-algorithm)",
                "`token` signs HS256 tokens only; with a public-key algorithm, tokens come from your identity provider",
            ));
        }
        config.check_jwt()?;
        Ok(config)
    }

    fn build(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let master_key = std::env::var("LEGALCHAT_MASTER_KEY").ok().filter(|s| !s.is_empty());
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self::layer(args, file, master_key, cores)
    }

    /// The configuration a TOML file's text alone makes, checked as [`Config::load`]
    /// checks it, without reading flags, the environment or any file; the default shard
    /// count is that of two cores. Bad TOML or an unknown key is [`ConfigError::File`]
    /// (with an empty path). Pure, so that the parsing of configuration files is fuzzed
    /// (`fuzz/fuzz_targets/config.rs`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file = toml::from_str(text).map_err(|e| ConfigError::File { path: PathBuf::new(), reason: e.to_string() })?;
        let config = Self::layer(&ConfigArgs::default(), file, None, 2)?;
        config.check()?;
        Ok(config)
    }

    /// `args` over `file` over the defaults; `master_key` is the environment's.
    fn layer(args: &ConfigArgs, file: FileConfig, master_key: Option<String>, cores: usize) -> Result<Self, ConfigError> {
        let listen =
            parse_addr("listen (LEGALCHAT_LISTEN, --listen)", args.listen.as_deref().or(file.listen.as_deref()), "127.0.0.1:7443")?;
        let tcp_listen = match args.tcp_listen.as_deref().or(file.tcp_listen.as_deref()) {
            Some("off") => None,
            Some(value) => Some(parse_addr("tcp_listen (LEGALCHAT_TCP_LISTEN, --tcp-listen)", Some(value), "")?),
            None => Some(listen),
        };
        Ok(Config {
            listen,
            tcp_listen,
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("legalchat-data")),
            ops_listen: parse_addr(
                "ops_listen (LEGALCHAT_OPS_LISTEN, --ops-listen)",
                args.ops_listen.as_deref().or(file.ops_listen.as_deref()),
                "127.0.0.1:9464",
            )?,
            tls_cert: args.tls_cert.clone().or(file.tls.cert),
            tls_key: args.tls_key.clone().or(file.tls.key),
            jwt: JwtConfig {
                algorithm: args.jwt_algorithm.or(file.jwt.algorithm).unwrap_or(JwtAlgorithm::Hs256),
                secret: args.jwt_secret.clone().or(file.jwt.secret),
                public_key_file: args.jwt_public_key.clone().or(file.jwt.public_key_file),
                issuer: args.jwt_issuer.clone().or(file.jwt.issuer),
                audience: args.jwt_audience.clone().or(file.jwt.audience),
                leeway_secs: file.jwt.leeway_secs.unwrap_or(30),
            },
            master_key_file: args.master_key_file.clone().or(file.master_key_file),
            master_key,
            dev: args.dev || file.dev.unwrap_or(false),
            fsync: args.fsync.or(file.fsync).unwrap_or(FsyncPolicy::Always),
            shards: args.shards.or(file.shards).unwrap_or_else(|| default_shards(cores)),
            shard_mailbox: file.shard_mailbox.unwrap_or(16_384),
            max_batch: file.max_batch.unwrap_or(1_024),
            commit_interval: Duration::from_micros(
                args.commit_interval_us.or(file.commit_interval_us).unwrap_or(DEFAULT_COMMIT_INTERVAL_US),
            ),
            max_frame_size: args.max_frame_size.or(file.max_frame_size).unwrap_or(codec::DEFAULT_MAX_FRAME_LEN),
            max_message_size: args.max_message_size.or(file.max_message_size).unwrap_or(validate::DEFAULT_MAX_MESSAGE_BYTES),
            auth_timeout: Duration::from_millis(args.auth_timeout_ms.or(file.auth_timeout_ms).unwrap_or(5_000)),
            frame_timeout: Duration::from_millis(args.frame_timeout_ms.or(file.frame_timeout_ms).unwrap_or(10_000)),
            handshakes_before_retry: args.handshakes_before_retry.or(file.handshakes_before_retry).unwrap_or(128),
            session_outbound: file.session_outbound.unwrap_or(8_192),
            session_inflight: file.session_inflight.unwrap_or(1_024),
            user_inflight: file.user_inflight.unwrap_or(4_096),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(100_000),
            max_sessions_per_connection: args.max_sessions_per_connection.or(file.max_sessions_per_connection).unwrap_or(1_024),
            idle_timeout: Duration::from_millis(file.idle_timeout_ms.unwrap_or(30_000)),
            typing_timeout: Duration::from_millis(args.typing_timeout_ms.or(file.typing_timeout_ms).unwrap_or(3_000)),
            edit_window: file.edit_window_secs.filter(|s| *s > 0).map(Duration::from_secs),
            max_reactions_per_message: file.max_reactions_per_message.unwrap_or(crate::shard::DEFAULT_MAX_REACTIONS),
            max_cached_conversations: file.max_cached_conversations.unwrap_or(100_000),
            push: PushConfig {
                enabled: args.push_enabled.or(file.push.enabled).unwrap_or(true),
                webhook_url: args.push_webhook_url.clone().or(file.push.webhook_url).filter(|s| !s.is_empty()),
                webhook_secret: args.push_webhook_secret.clone().or(file.push.webhook_secret).filter(|s| !s.is_empty()),
                vapid_private_key_file: args.push_vapid_private_key.clone().or(file.push.vapid_private_key_file),
                vapid_subject: args.push_vapid_subject.clone().or(file.push.vapid_subject).filter(|s| !s.is_empty()),
                include_text: args.push_include_text.or(file.push.include_text).unwrap_or(false),
                ttl_secs: args.push_ttl_secs.or(file.push.ttl_secs).unwrap_or(86_400),
                max_attempts: args.push_max_attempts.or(file.push.max_attempts).unwrap_or(5),
                allowed_hosts: args
                    .push_allowed_hosts
                    .clone()
                    .or(file.push.allowed_hosts)
                    .unwrap_or_else(|| DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect())
                    .into_iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
            },
            limits: {
                let defaults = crate::limits::LimitsConfig::default();
                let trusted = match args.trusted_networks.clone().or(file.limits.trusted_networks) {
                    None => defaults.trusted_networks.clone(),
                    Some(list) => {
                        let list: Vec<String> = list.into_iter().filter(|s| !s.trim().is_empty()).collect();
                        crate::limits::Networks::parse(&list).map_err(|reason| ConfigError::Invalid {
                            key: "limits.trusted_networks (LEGALCHAT_TRUSTED_NETWORKS, --trusted-networks)",
                            reason,
                        })?
                    }
                };
                crate::limits::LimitsConfig {
                    messages_per_minute: args
                        .messages_per_minute
                        .or(file.limits.messages_per_minute)
                        .unwrap_or(defaults.messages_per_minute),
                    connections_per_minute: args
                        .connections_per_minute
                        .or(file.limits.connections_per_minute)
                        .unwrap_or(defaults.connections_per_minute),
                    connection_burst: args.connection_burst.or(file.limits.connection_burst).unwrap_or(defaults.connection_burst),
                    trusted_networks: trusted,
                    uploads_per_hour: args.uploads_per_hour.or(file.attachments.uploads_per_hour).unwrap_or(defaults.uploads_per_hour),
                }
            },
            files: crate::files::FilesConfig {
                max_file_size: args.max_file_size.or(file.attachments.max_file_size).unwrap_or(crate::files::DEFAULT_MAX_FILE_SIZE),
                allowed_types: file
                    .attachments
                    .allowed_types
                    .unwrap_or_else(|| legalchat_protocol::files::DEFAULT_ALLOWED_TYPES.iter().map(|t| (*t).to_owned()).collect())
                    .into_iter()
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect(),
                uploads_per_hour: args.uploads_per_hour.or(file.attachments.uploads_per_hour).unwrap_or(10),
                orphan_grace: Duration::from_secs(file.attachments.orphan_grace_secs.unwrap_or(24 * 3600)),
                scanner: match args.clamd.clone().or(file.attachments.clamd).filter(|s| !s.trim().is_empty()) {
                    None => None,
                    Some(address) => Some(crate::files::scan::ScannerConfig {
                        address: address
                            .parse()
                            .map_err(|reason| ConfigError::Invalid { key: "clamd (LEGALCHAT_CLAMD, --clamd)", reason })?,
                        fail_open: args.clamd_fail_open.or(file.attachments.clamd_fail_open).unwrap_or(false),
                        timeout: Duration::from_millis(file.attachments.clamd_timeout_ms.unwrap_or(30_000)),
                    }),
                },
            },
        })
    }

    fn check(&self) -> Result<(), ConfigError> {
        range("shards (LEGALCHAT_SHARDS, --shards)", self.shards, 1, 256)?;
        range("shard_mailbox", self.shard_mailbox, 16, 1 << 24)?;
        range("max_batch", self.max_batch, 1, 65_536)?;
        range(
            "commit_interval_us (LEGALCHAT_COMMIT_INTERVAL_US, --commit-interval-us)",
            usize::try_from(self.commit_interval.as_micros()).unwrap_or(usize::MAX),
            0,
            100_000,
        )?;
        range("max_reactions_per_message", self.max_reactions_per_message, 1, 100)?;
        range("max_cached_conversations", self.max_cached_conversations, 16, 10_000_000)?;
        range("max_frame_size (LEGALCHAT_MAX_FRAME_SIZE, --max-frame-size)", self.max_frame_size, 1_024, 16 << 20)?;
        range("max_message_size (MAX_MESSAGE_SIZE, --max-message-size)", self.max_message_size, 1, 1 << 20)?;
        // 4 GiB: beyond that an upload is not a chat attachment.
        let max_file = self.files.max_file_size;
        if !(1..=1 << 32).contains(&max_file) {
            return Err(invalid(
                "attachments.max_file_size (MAX_FILE_SIZE, --max-file-size)",
                format!("{max_file} is outside 1..=4294967296"),
            ));
        }
        if self.files.allowed_types.is_empty() {
            return Err(invalid("attachments.allowed_types", "must name at least one type"));
        }
        for t in &self.files.allowed_types {
            if !t.contains('/') {
                return Err(invalid("attachments.allowed_types", format!("{t:?} is not a MIME type (type/subtype)")));
            }
        }
        if self.max_message_size + 1_024 > self.max_frame_size {
            return Err(invalid(
                "max_message_size (MAX_MESSAGE_SIZE, --max-message-size)",
                format!("{} does not fit in a frame of max_frame_size {} with 1 KiB for ids", self.max_message_size, self.max_frame_size),
            ));
        }
        range("session_outbound", self.session_outbound, 16, 1 << 20)?;
        range("session_inflight", self.session_inflight, 1, 1 << 16)?;
        range("max_connections (LEGALCHAT_MAX_CONNECTIONS, --max-connections)", self.max_connections, 1, 10_000_000)?;
        range(
            "max_sessions_per_connection (LEGALCHAT_MAX_SESSIONS_PER_CONNECTION, --max-sessions-per-connection)",
            self.max_sessions_per_connection,
            1,
            65_536,
        )?;
        let ms = u64::try_from(self.auth_timeout.as_millis()).unwrap_or(u64::MAX);
        if !(100..=120_000).contains(&ms) {
            return Err(invalid(
                "auth_timeout_ms (LEGALCHAT_AUTH_TIMEOUT_MS, --auth-timeout-ms)",
                format!("{ms} ms is outside 100..=120000"),
            ));
        }
        let typing = u64::try_from(self.typing_timeout.as_millis()).unwrap_or(u64::MAX);
        if !(100..=60_000).contains(&typing) {
            return Err(invalid("typing_timeout_ms (TYPING_TIMEOUT, --typing-timeout-ms)", format!("{typing} ms is outside 100..=60000")));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("tls.cert / tls.key (--tls-cert, --tls-key)", "give both the certificate and the key, or neither"));
        }
        if self.tls_cert.is_none() && !self.dev {
            return Err(invalid("tls.cert (LEGALCHAT_TLS_CERT, --tls-cert)", "a certificate and key are required outside --dev mode"));
        }
        self.check_jwt()?;
        if self.master_key.is_none() && self.master_key_file.is_none() && !self.dev {
            return Err(invalid(
                "master_key_file (LEGALCHAT_MASTER_KEY_FILE, --master-key-file) or LEGALCHAT_MASTER_KEY",
                "a master key is required outside --dev mode",
            ));
        }
        self.push.check(self.dev)
    }

    /// The token settings: an HS256 secret long enough (or development mode, which makes
    /// one), or a public key for the other algorithms.
    fn check_jwt(&self) -> Result<(), ConfigError> {
        match self.jwt.algorithm {
            JwtAlgorithm::Hs256 => match &self.jwt.secret {
                Some(s) if s.len() < 32 => {
                    return Err(invalid(
                        "jwt.secret (LEGALCHAT_JWT_SECRET, --jwt-secret)",
                        format!("is {} bytes; HS256 needs at least 32", s.len()),
                    ));
                }
                None if !self.dev => {
                    return Err(invalid(
                        "jwt.secret (LEGALCHAT_JWT_SECRET, --jwt-secret)",
                        "required for HS256 outside --dev mode (--dev uses DATA_DIR/dev/jwt-secret)",
                    ));
                }
                _ => {}
            },
            _ => {
                if self.jwt.public_key_file.is_none() {
                    return Err(invalid(
                        "jwt.public_key_file (LEGALCHAT_JWT_PUBLIC_KEY, --jwt-public-key)",
                        "required for RS256, ES256 and EdDSA",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where the development certificate, key and secrets are kept.
    pub fn dev_dir(&self) -> PathBuf {
        self.data_dir.join("dev")
    }

    /// The RocksDB directory.
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    /// The TLS directory (development certificate).
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
}

impl PushConfig {
    fn check(&self, dev: bool) -> Result<(), ConfigError> {
        const URL: &str = "push.webhook_url (LEGALCHAT_PUSH_WEBHOOK_URL, --push-webhook-url)";
        const SECRET: &str = "push.webhook_secret (LEGALCHAT_PUSH_WEBHOOK_SECRET, --push-webhook-secret)";
        const SUBJECT: &str = "push.vapid_subject (LEGALCHAT_PUSH_VAPID_SUBJECT, --push-vapid-subject)";
        if let Some(url) = &self.webhook_url {
            check_push_url(URL, url)?;
            match &self.webhook_secret {
                None => return Err(invalid(SECRET, "required when push.webhook_url is set")),
                Some(s) if s.len() < 32 => return Err(invalid(SECRET, format!("is {} bytes; at least 32 are needed", s.len()))),
                Some(_) => {}
            }
        }
        if let Some(subject) = &self.vapid_subject {
            let ok = subject.strip_prefix("mailto:").or_else(|| subject.strip_prefix("https://")).is_some_and(|rest| !rest.is_empty())
                && !subject.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(invalid(SUBJECT, format!("{subject:?} is not a mailto: or https: URI")));
            }
        } else if self.enabled && self.vapid_private_key_file.is_some() && !dev {
            return Err(invalid(SUBJECT, "required with a VAPID key outside --dev mode (e.g. mailto:it@firm.example)"));
        }
        if self.ttl_secs > 2_419_200 {
            return Err(invalid(
                "push.ttl_secs (LEGALCHAT_PUSH_TTL_SECS, --push-ttl-secs)",
                format!("{} is outside 0..=2419200 (28 days)", self.ttl_secs),
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(invalid(
                "push.max_attempts (LEGALCHAT_PUSH_MAX_ATTEMPTS, --push-max-attempts)",
                format!("{} is outside 1..=20", self.max_attempts),
            ));
        }
        Ok(())
    }
}

/// An https URL, or http to a loopback address (tests, a local relay): notifications carry
/// names of clients and cases, which must not cross a network in the clear.
fn check_push_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    if url.len() > 2_048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(key, "must be a URL of at most 2048 characters, without spaces"));
    }
    let host = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let loopback = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|h| rest.strip_prefix(h).is_some_and(|after| after.is_empty() || after.starts_with(':') || after.starts_with('/')));
        if !loopback {
            return Err(invalid(key, format!("{url:?}: plain http is allowed to loopback addresses only; use https")));
        }
        rest
    } else {
        return Err(invalid(key, format!("{url:?} is not an https URL")));
    };
    if host.is_empty() || host.starts_with('/') {
        return Err(invalid(key, format!("{url:?} has no host")));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File { path: path.to_owned(), reason: e.to_string() })?;
    toml::from_str(&text).map_err(|e| ConfigError::File { path: path.to_owned(), reason: e.to_string() })
}

fn parse_addr(key: &'static str, value: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.unwrap_or(default);
    value.parse().map_err(|e| invalid(key, format!("{value:?} is not an address like 127.0.0.1:7443 ({e})")))
}

/// Shards when none are configured: half the cores, at least one. The other half runs the
/// network (QUIC, TLS, sessions) on the async runtime. All shards share one write-ahead
/// log, whose synced writes take turns, so a shard per core only adds hand-offs: on two
/// cores one shard measured about twice the durable ingest of two (BENCHMARKS.md).
pub fn default_shards(cores: usize) -> usize {
    (cores / 2).max(1)
}

fn range(key: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) { Ok(()) } else { Err(invalid(key, format!("{value} is outside {min}..={max}"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_args() -> ConfigArgs {
        ConfigArgs { dev: true, ..Default::default() }
    }

    #[test]
    fn dev_defaults_are_valid() {
        let c = Config::load(&dev_args()).unwrap();
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.max_message_size, 10_240);
    }

    #[test]
    fn a_file_alone_is_read_and_checked() {
        assert_eq!(Config::from_toml("dev = true\nshards = 3\n").unwrap().shards, 3);
        let e = Config::from_toml("dev = true\nshards = 0\n").unwrap_err().to_string();
        assert!(e.contains("shards (LEGALCHAT_SHARDS, --shards)"), "{e}");
        assert!(matches!(Config::from_toml("dev = true\nshard = 3\n"), Err(ConfigError::File { .. })));
    }

    #[test]
    fn bad_settings_name_themselves() {
        let mut a = dev_args();
        a.listen = Some("nowhere".into());
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("LEGALCHAT_LISTEN"), "{e}");

        let mut a = dev_args();
        a.jwt_secret = Some("short".into());
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("jwt.secret") && e.contains("32"), "{e}");

        let mut a = dev_args();
        a.max_message_size = Some(100_000);
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("MAX_MESSAGE_SIZE"), "{e}");
    }

    #[test]
    fn production_requires_secrets() {
        let e = Config::load(&ConfigArgs::default()).unwrap_err().to_string();
        assert!(e.contains("tls.cert"), "{e}");
    }

    #[test]
    fn signing_tokens_needs_only_the_jwt_secret() {
        // What serving needs (certificate, master key) is not asked for.
        let secret = ConfigArgs { jwt_secret: Some("0123456789abcdef0123456789abcdef".into()), ..Default::default() };
        assert!(Config::load(&secret).unwrap_err().to_string().contains("tls.cert"), "serving still needs a certificate");
        let c = Config::load_for_signing(&secret).unwrap();
        assert_eq!(c.jwt.secret.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert!(Config::load_for_signing(&dev_args()).is_ok(), "development mode has its own secret");

        // Without a secret, the error names the one setting that is missing.
        let e = Config::load_for_signing(&ConfigArgs::default()).unwrap_err().to_string();
        assert!(e.contains("jwt.secret") && e.contains("LEGALCHAT_JWT_SECRET") && e.contains("--jwt-secret"), "{e}");
        assert!(!e.contains("tls") && !e.contains("master"), "{e}");
        let short = ConfigArgs { jwt_secret: Some("short".into()), ..Default::default() };
        assert!(Config::load_for_signing(&short).unwrap_err().to_string().contains("at least 32"));
        let rs256 = ConfigArgs { jwt_algorithm: Some(JwtAlgorithm::Rs256), ..secret };
        let e = Config::load_for_signing(&rs256).unwrap_err().to_string();
        assert!(e.contains("jwt.algorithm") && e.contains("HS256"), "{e}");
    }

    #[test]
    fn push_defaults_and_checks() {
        let c = Config::load(&dev_args()).unwrap();
        assert!(c.push.enabled && !c.push.include_text);
        assert_eq!((c.push.ttl_secs, c.push.max_attempts), (86_400, 5));
        assert!(c.push.webhook_url.is_none() && c.push.vapid_private_key_file.is_none());

        let mut a = dev_args();
        a.push_webhook_url = Some("https://notify.firm.example/hook".into());
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("push.webhook_secret") && e.contains("required"), "{e}");
        a.push_webhook_secret = Some("too short".into());
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("LEGALCHAT_PUSH_WEBHOOK_SECRET") && e.contains("32"), "{e}");
        a.push_webhook_secret = Some("0123456789abcdef0123456789abcdef".into());
        assert!(Config::load(&a).is_ok());

        for bad in ["http://notify.firm.example/hook", "ftp://x", "https://", "http://127.0.0.1.evil.example/", "https://a b"] {
            let mut a = a.clone();
            a.push_webhook_url = Some(bad.into());
            let e = Config::load(&a).unwrap_err().to_string();
            assert!(e.contains("push.webhook_url"), "{bad}: {e}");
        }
        for good in ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]:80"] {
            let mut a = a.clone();
            a.push_webhook_url = Some(good.into());
            assert!(Config::load(&a).is_ok(), "{good}");
        }

        let mut a = dev_args();
        a.push_vapid_subject = Some("admin@firm.example".into());
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("push.vapid_subject"), "{e}");
        a.push_max_attempts = Some(0);
        a.push_vapid_subject = Some("mailto:it@firm.example".into());
        let e = Config::load(&a).unwrap_err().to_string();
        assert!(e.contains("push.max_attempts"), "{e}");
    }

    #[test]
    fn vapid_key_needs_a_subject_outside_dev() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let base = "fsync = \"never\"\nmaster_key_file = \"k\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
        std::fs::write(&path, format!("{base}[push]\nvapid_private_key_file = \"vapid.pem\"\n")).unwrap();
        let e = Config::load(&ConfigArgs { config: Some(path.clone()), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("push.vapid_subject"), "{e}");
        std::fs::write(
            &path,
            format!(
                "{base}[push]\nvapid_private_key_file = \"vapid.pem\"\nvapid_subject = \"mailto:it@firm.example\"\ninclude_text = true\n"
            ),
        )
        .unwrap();
        let c = Config::load(&ConfigArgs { config: Some(path.clone()), ..Default::default() }).unwrap();
        assert!(c.push.include_text);
        assert_eq!(c.push.vapid_subject.as_deref(), Some("mailto:it@firm.example"));
        std::fs::write(&path, format!("{base}[push]\nincludetext = true\n")).unwrap();
        let e = Config::load(&ConfigArgs { config: Some(path), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("includetext"), "{e}");
    }

    #[test]
    fn shards_default_to_half_the_cores_and_never_to_none() {
        assert_eq!([1, 2, 3, 4, 16].map(default_shards), [1, 1, 1, 2, 8]);
    }

    #[test]
    fn toml_file_is_read_and_typos_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "dev = true\nshards = 3\n[jwt]\nissuer = \"firm\"\n").unwrap();
        let c = Config::load(&ConfigArgs { config: Some(path.clone()), ..Default::default() }).unwrap();
        assert_eq!(c.shards, 3);
        assert_eq!(c.jwt.issuer.as_deref(), Some("firm"));
        std::fs::write(&path, "dev = true\nshardz = 3\n").unwrap();
        let e = Config::load(&ConfigArgs { config: Some(path), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("shardz"), "{e}");
    }
}
