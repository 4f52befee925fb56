//! Starting and stopping the daemon.
//!
//! Start: data directory → secrets (generated in development mode) → store → shards →
//! QUIC endpoint → ops listener → ready. Stop (graceful): not ready → stop accepting →
//! every session says goodbye → shards finish and commit their last batches → the store
//! is flushed → the endpoint closes. Nothing acknowledged is lost on either path, and a
//! `kill -9` at any point loses nothing acknowledged either, because an acknowledgment
//! is only sent after its batch is in the write-ahead log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::auth::{AuthError, Authenticator};
use crate::bus::Bus;
use crate::config::{Config, ConfigError, FsyncPolicy, JwtAlgorithm};
use crate::crypto::MasterKey;
use crate::directory::Directory;
use crate::files::Files;
use crate::fsutil;
use crate::push;
use crate::realtime::Hub;
use crate::registry::Registry;
use crate::session::{self, SessionContext, SessionLimits};
use crate::shard::{self, ShardConfig, ShardDeps, ShardThreads, Shards};
use crate::storage_pool::{self, StoragePool};
use crate::store::{RocksStore, Store, StoreError};
use crate::tls::{self, TlsError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material is missing or unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The master key is missing or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The token key is unusable.
    #[error("JWT: {0}")]
    Auth(#[from] AuthError),
    /// Push notifications are misconfigured.
    #[error("push: {0}")]
    Push(String),
    /// A file the daemon generated is damaged (or could not be read or written).
    #[error("{0}")]
    Generated(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Secrets resolved at start.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// HS256 secret, if that is the algorithm.
    pub jwt_secret: Option<String>,
    /// The master key.
    pub master_key: MasterKey,
}

/// Resolves the JWT secret and master key: configuration first, then (development mode
/// only) files in the data directory, generated on first start.
pub fn resolve_secrets(config: &Config) -> Result<Secrets, StartError> {
    let dev_dir = config.dev_dir();
    let jwt_secret = resolve_jwt_secret(config)?;
    let master_text = match (&config.master_key, &config.master_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(io(format!("reading master key file {}", path.display())))?,
        (None, None) => fsutil::read_or_generate(
            &dev_dir.join("master.key"),
            MasterKey::generate_text,
            |s| MasterKey::from_text(s).map(|_| ()).map_err(|e| e.to_string()),
            // Never made again: every conversation's data key is wrapped by it.
            false,
            ", or start over with an empty data directory: a new key cannot open what the old one sealed",
        )
        .map_err(|e| StartError::Generated(format!("development master key: {e}")))?,
    };
    let master_key = MasterKey::from_text(&master_text).map_err(|e| StartError::MasterKey(e.to_string()))?;
    Ok(Secrets { jwt_secret, master_key })
}

/// The HS256 secret alone (what `legalchatd token` needs): the configured one, or in
/// development mode `DATA_DIR/dev/jwt-secret`, generated on first use. The file holds 64
/// hex characters that are used as they are, as the secret's bytes (not hex-decoded).
/// `None` when tokens are not HS256 or no secret is configured outside development mode.
pub fn resolve_jwt_secret(config: &Config) -> Result<Option<String>, StartError> {
    Ok(match (&config.jwt.secret, config.jwt.algorithm) {
        (Some(s), _) => Some(s.clone()),
        (None, JwtAlgorithm::Hs256) if config.dev => Some(
            fsutil::read_or_generate(
                &config.dev_dir().join("jwt-secret"),
                MasterKey::generate_text,
                |s| if s.len() < 32 { Err(format!("{} characters, fewer than 32", s.len())) } else { Ok(()) },
                // Made again, the old tokens stop working: development mode only.
                true,
                "",
            )
            .map_err(|e| StartError::Generated(format!("development JWT secret: {e}")))?,
        ),
        (None, _) => None,
    })
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    quic_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    ops_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    endpoint: quinn::Endpoint,
    accept: tokio::task::JoinHandle<JoinSet<()>>,
    tcp_accept: Option<tokio::task::JoinHandle<JoinSet<()>>>,
    ops: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
    shards: Shards,
    threads: ShardThreads,
    store: Arc<dyn Store>,
    registry: Arc<dyn Bus>,
    internal: Arc<Internal>,
}

/// In-process access for development tooling (demo data): the same shards sessions use.
#[derive(Debug)]
pub struct Internal {
    /// Shard mailboxes.
    pub shards: Shards,
    /// The user directory.
    pub directory: Arc<Directory>,
    /// The master keys.
    keyring: Arc<crate::crypto::Keyring>,
    store: Arc<dyn Store>,
}

impl Internal {
    /// Rotates the master key online: new data keys are wrapped by `next` at once, every
    /// stored data key is re-wrapped under it (through its conversation's shard, synced),
    /// and the old key is forgotten. Messages and files are not re-encrypted: their data
    /// keys do not change. Returns how many data keys were re-wrapped. On an error the
    /// rotation stays open (both keys work) and may be run again.
    pub async fn rotate_master_key(&self, next: MasterKey) -> Result<usize, String> {
        self.keyring.begin_rotation(next);
        let mut after = None;
        let mut rewrapped = 0;
        loop {
            let store = self.store.clone();
            let page = tokio::task::spawn_blocking(move || store.data_keys_after(after, 256))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let Some(&(last, _)) = page.last() else { break };
            after = Some(last);
            for (conversation, wrapped) in page {
                let Some(wrapped) = self.keyring.rewrap(&conversation, &wrapped).map_err(|e| {
                    format!(
                        "the data key of conversation {} opens under neither key: {e}",
                        legalchat_protocol::validate::format_id(&conversation)
                    )
                })?
                else {
                    continue;
                };
                let (reply, rx) = tokio::sync::oneshot::channel();
                let shard = self.shards.shard_of(&conversation);
                let commit =
                    shard::Command::Commit { writes: vec![crate::store::Write::DataKey { conversation, wrapped }], sync: true, reply };
                self.shards.submit_to(shard, commit).map_err(|e| e.to_string())?;
                rx.await.map_err(|_| "the server is shutting down".to_owned())?.map_err(|e| e.message)?;
                rewrapped += 1;
            }
        }
        self.keyring.end_rotation();
        Ok(rewrapped)
    }
}

impl Daemon {
    /// Starts everything and returns once the daemon accepts sessions.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        fsutil::create_dir_durably(&config.data_dir).map_err(io(format!("creating data directory {}", config.data_dir.display())))?;
        let secrets = resolve_secrets(&config)?;
        let material = match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => tls::load(c, k)?,
            _ => tls::load_or_generate_dev(&config.tls_dir())?,
        };
        let metrics = crate::ops::install_recorder();
        let auth = Authenticator::new(&config.jwt, secrets.jwt_secret.as_deref().map(str::as_bytes))?;

        let db_dir = config.db_dir();
        let store: Arc<dyn Store> =
            Arc::new(tokio::task::spawn_blocking(move || RocksStore::open(&db_dir)).await.map_err(|e| StoreError::Engine(e.to_string()))??);
        let registry: Arc<dyn Bus> = Arc::new(Registry::default());
        let directory = Arc::new(Directory::new(store.clone()));
        let hub = Arc::new(Hub::new(registry.clone(), config.typing_timeout));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (push, push_task) = push::start(&config, store.clone(), shutdown_rx.clone()).map_err(|e| StartError::Push(e.to_string()))?;
        let shard_config = ShardConfig {
            mailbox: config.shard_mailbox,
            max_batch: config.max_batch,
            sync: config.fsync == FsyncPolicy::Always,
            commit_interval: config.commit_interval,
            edit_window: config.edit_window,
            max_reactions_per_message: config.max_reactions_per_message,
            max_cached_conversations: config.max_cached_conversations,
        };
        let keyring = Arc::new(crate::crypto::Keyring::new(secrets.master_key.clone()));
        let deps = ShardDeps {
            store: store.clone(),
            master: keyring.clone(),
            registry: registry.clone(),
            directory: directory.clone(),
            hub: hub.clone(),
            push: push.clone(),
        };
        let (shards, threads) = shard::start(config.shards, shard_config, deps).map_err(io("starting shard threads"))?;
        let mut typing_stop = shutdown_rx.clone();
        let typing = tokio::spawn(hub.clone().drive_typing(async move {
            let _ = typing_stop.wait_for(|s| *s).await;
        }));

        let limits = SessionLimits {
            max_frame_size: config.max_frame_size,
            max_message_size: config.max_message_size,
            auth_timeout: config.auth_timeout,
            outbound: config.session_outbound,
            inflight: config.session_inflight,
            user_inflight: config.user_inflight,
            sessions_per_connection: config.max_sessions_per_connection,
            frame_timeout: config.frame_timeout,
        };
        let pool = StoragePool::new(store.clone(), storage_pool::RUNNING, storage_pool::WAITING);
        // Every rate limit on one seam, so that a shared store can take them all over.
        let rate_limits = crate::limits::RateLimits::local(config.limits.clone());
        let files = Files::open(&config.data_dir, config.files.clone(), shards.clone(), pool.clone(), rate_limits.uploads.clone())
            .map_err(io("opening the files directory"))?;
        let files = Arc::new(files);
        if let Some(scanner) = &config.files.scanner {
            let clamd = crate::files::scan::Clamd::new(scanner.clone());
            match tokio::task::spawn_blocking(move || clamd.ping()).await {
                Ok(Ok(())) => tracing::info!(address = %scanner.address, "malware scanner answers"),
                Ok(Err(e)) => tracing::warn!(error = %e, fail_open = scanner.fail_open, "malware scanner not answering now"),
                Err(_) => {}
            }
        }
        let sweeper = files.spawn_sweeper(FILE_SWEEP_INTERVAL, shutdown_rx.clone());
        let ctx = Arc::new(SessionContext::new(
            shards.clone(),
            registry.clone(),
            pool,
            directory.clone(),
            auth,
            limits,
            shutdown_rx.clone(),
            hub,
            push,
            files,
            rate_limits.clone(),
        ));

        let server_crypto = tls::server_config(material)?;
        let tcp_crypto = Arc::new(server_crypto.clone());
        let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
        let mut transport = quinn::TransportConfig::default();
        // Each session is a bidirectional stream. Most connections carry one, and quinn
        // sets aside state for every stream the peer may open, so a connection starts with
        // room for a few; `serve_connection` raises the limit as a multiplexing client
        // opens more sessions, up to `max_sessions_per_connection`.
        transport.max_concurrent_bidi_streams(session::INITIAL_STREAMS.into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.max_idle_timeout(Some(
            config.idle_timeout.try_into().map_err(|_| ConfigError::Invalid { key: "idle_timeout_ms", reason: "too large".into() })?,
        ));
        transport.keep_alive_interval(None);
        // Chat traffic is many small packets on many connections: by default a client
        // acknowledges every second packet (or after 25 ms), so about half of all datagrams
        // are bare ACKs. Ask clients to acknowledge every 10th packet or after 25 ms instead;
        // ACKs still ride along with the client's own frames.
        let mut ack_frequency = quinn::AckFrequencyConfig::default();
        ack_frequency.ack_eliciting_threshold(10u32.into());
        transport.ack_frequency_config(Some(ack_frequency));
        server_config.transport_config(Arc::new(transport));
        let socket = bind_udp(config.listen).map_err(io(format!("binding QUIC listener {}", config.listen)))?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))
            .map_err(io("starting the QUIC listener"))?;
        let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server_config), socket, runtime)
            .map_err(io(format!("binding QUIC listener {}", config.listen)))?;
        let quic_addr = endpoint.local_addr().map_err(io("reading QUIC address"))?;
        let tcp_listener = match config.tcp_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr).await.map_err(io(format!("binding the TLS-over-TCP listener {addr} (tcp_listen)")))?,
            ),
            None => None,
        };
        let tcp_addr = tcp_listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose().map_err(io("reading TCP address"))?;

        let ready = Arc::new(AtomicBool::new(false));
        let mut ops_shutdown = shutdown_rx.clone();
        let (ops_addr, ops_serve) = crate::ops::bind(config.ops_listen, metrics, shards.clone(), ready.clone(), async move {
            let _ = ops_shutdown.wait_for(|s| *s).await;
        })
        .await
        .map_err(io(format!("binding ops listener {}", config.ops_listen)))?;
        let ops = tokio::spawn(ops_serve);

        // QUIC and TCP connections count against one limit.
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        let tcp_accept = tcp_listener.map(|listener| {
            let acceptor = tokio_rustls::TlsAcceptor::from(tcp_crypto);
            tokio::spawn(tcp_accept_loop(
                listener,
                acceptor,
                ctx.clone(),
                connection_slots.clone(),
                config.auth_timeout,
                shutdown_rx.clone(),
            ))
        });
        let accept =
            tokio::spawn(accept_loop(endpoint.clone(), ctx, rate_limits, connection_slots, config.handshakes_before_retry, shutdown_rx));
        ready.store(true, Ordering::Release);
        let tcp = tcp_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(%quic_addr, %tcp, %ops_addr, shards = shards.len(), fsync = ?config.fsync, "legalchatd ready");
        let internal = Arc::new(Internal { shards: shards.clone(), directory, keyring, store: store.clone() });
        let background = vec![typing, push_task, sweeper];
        Ok(Self {
            quic_addr,
            tcp_addr,
            ops_addr,
            shutdown_tx,
            ready,
            endpoint,
            accept,
            tcp_accept,
            ops,
            background,
            shards,
            threads,
            store,
            registry,
            internal,
        })
    }

    /// The QUIC address sessions connect to.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The TLS-over-TCP address (the fallback for networks that block UDP), unless it is
    /// turned off.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The ops HTTP address.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// In-process access to the shards (development tooling).
    pub fn internal(&self) -> Arc<Internal> {
        self.internal.clone()
    }

    /// Stops gracefully; returns once every batch is committed and the store flushed.
    pub async fn shutdown(self) {
        tracing::info!(sessions = self.registry.local_sessions(), "shutting down");
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        // Stop accepting; sessions see the shutdown signal and say goodbye.
        self.endpoint.set_server_config(None);
        let mut accepts = vec![self.accept];
        accepts.extend(self.tcp_accept);
        for accept in accepts {
            if let Ok(mut sessions) = accept.await {
                let drained = tokio::time::timeout(Duration::from_secs(10), async { while sessions.join_next().await.is_some() {} }).await;
                if drained.is_err() {
                    tracing::warn!("some sessions did not end in time; closing them");
                    sessions.abort_all();
                }
            }
        }
        let _ = self.ops.await;
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Every session is gone; dropping the last mailbox handles lets each shard finish
        // its queue, commit, and stop.
        drop(self.internal);
        drop(self.shards);
        let threads = self.threads;
        let store = self.store;
        let flushed = tokio::task::spawn_blocking(move || {
            threads.join();
            store.flush()
        })
        .await;
        match flushed {
            Ok(Ok(())) => tracing::info!("store flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "flushing the store failed"),
            Err(e) => tracing::error!(error = %e, "shard threads panicked"),
        }
        self.endpoint.close(session::close_code::SHUTDOWN.into(), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    ctx: Arc<SessionContext>,
    limits: crate::limits::RateLimits,
    limit: Arc<Semaphore>,
    handshakes_before_retry: usize,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let handshaking = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sessions = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(incoming) = incoming else { break };
        // Reap finished sessions so the set does not grow with history.
        while sessions.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("legalchat_connections_refused_total").increment(1);
            incoming.refuse();
            continue;
        };
        // When handshakes flood in, a client must first prove it can receive at its
        // address (a stateless retry) before it costs a handshake.
        if !incoming.remote_address_validated() && incoming.may_retry() && handshaking.load(Ordering::Relaxed) >= handshakes_before_retry {
            metrics::counter!("legalchat_handshake_retries_total").increment(1);
            let _ = incoming.retry();
            continue;
        }
        let ctx = ctx.clone();
        let limited = limits.check_connection(incoming.remote_address().ip()).err();
        let in_handshake = Arc::clone(&handshaking);
        in_handshake.fetch_add(1, Ordering::Relaxed);
        let handshake_timeout = ctx.limits.auth_timeout;
        // Boxed: an `Incoming` is 384 bytes, and the task would keep their room for the
        // connection's whole life although the handshake consumes it.
        let incoming = Box::new(incoming);
        sessions.spawn(async move {
            // A handshake must end within the authentication timeout: a client that starts
            // one and stalls holds no state beyond it (dropping it closes the connection).
            let conn = tokio::time::timeout(handshake_timeout, *incoming).await;
            in_handshake.fetch_sub(1, Ordering::Relaxed);
            let conn = match conn {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    metrics::counter!("legalchat_auth_failures_total", "reason" => "timeout").increment(1);
                    return;
                }
            };
            if let Some(wait) = limited {
                // Refused after the handshake, so that the client hears why and for how long.
                metrics::counter!("legalchat_rate_limited_total", "limit" => "connections").increment(1);
                let e = crate::policy::RequestError::rate_limited("too many new connections from your address", wait);
                conn.close(session::close_code::RATE_LIMITED.into(), e.message.as_bytes());
                return;
            }
            metrics::counter!("legalchat_connections_total").increment(1);
            metrics::gauge!("legalchat_connections_active").increment(1.0);
            session::serve_connection(conn, ctx).await;
            metrics::gauge!("legalchat_connections_active").decrement(1.0);
            drop(permit);
        });
    }
    sessions
}

/// Accepts TLS-over-TCP connections, for clients whose network blocks UDP: each carries
/// one session or one transfer, with the same frames as a QUIC stream. The TLS handshake
/// must end within `handshake_timeout`; after it, the session's own deadlines apply.
async fn tcp_accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<SessionContext>,
    limit: Arc<Semaphore>,
    handshake_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while sessions.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("legalchat_connections_refused_total").increment(1);
            continue;
        };
        // Small frames must not wait for Nagle; a peer that vanished without a FIN is
        // noticed by keep-alive probes (QUIC has its idle timeout for this).
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(TCP_KEEPALIVE_RETRIES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        sessions.spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake over TCP failed");
                    return;
                }
                Err(_) => {
                    metrics::counter!("legalchat_auth_failures_total", "reason" => "timeout").increment(1);
                    return;
                }
            };
            metrics::counter!("legalchat_connections_total").increment(1);
            metrics::counter!("legalchat_tcp_connections_total").increment(1);
            metrics::gauge!("legalchat_connections_active").increment(1.0);
            session::serve_tcp(tls, ctx, Some(peer.ip())).await;
            metrics::gauge!("legalchat_connections_active").decrement(1.0);
            drop(permit);
        });
    }
    sessions
}

/// TCP keep-alive: first probe after this much silence, then every interval, and the
/// connection is dead after this many unanswered probes (about 30 s in all).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Socket buffer asked for on the QUIC socket. Every connection shares this one socket, so
/// a burst from many clients at once must fit: with the kernel's default (about 208 KiB)
/// a thousand busy clients overflow it, and each dropped datagram costs a QUIC loss
/// recovery (tens of milliseconds). The kernel caps the request at `net.core.rmem_max`.
/// How often files no message refers to are looked for.
const FILE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Binds the QUIC listener's UDP socket with large buffers.
fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // A wildcard IPv6 address accepts IPv4 too, whatever the system default.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer than asked for still works.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    if let Ok(got) = socket.recv_buffer_size()
        && got < UDP_BUFFER_BYTES
    {
        tracing::info!(
            requested = UDP_BUFFER_BYTES,
            got,
            "the kernel capped the QUIC socket's receive buffer (raise net.core.rmem_max for bursty loads)"
        );
    }
    Ok(socket.into())
}
