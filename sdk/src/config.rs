//! What [`Client::connect`](crate::Client::connect) needs to know.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use legalchat_protocol::validate::{self, ValidationError};

use crate::Error;
use crate::carrier::TransportPolicy;
use crate::outbox::DEFAULT_OUTBOX_CAPACITY;
use crate::reconnect::ReconnectPolicy;

/// Default time a request may wait for its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time the QUIC handshake plus authentication may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default capacity of the event queue behind [`Client::next_event`](crate::Client::next_event).
pub const DEFAULT_EVENT_BUFFER: usize = 10_000;
/// Messages per conversation whose folded state a client keeps by default: a screenful
/// and its scroll-back, not the whole conversation.
pub const DEFAULT_TIMELINE_CAPACITY: usize = 200;
/// Default largest frame accepted *from* the server.
///
/// Larger than the server's own limit on what it accepts (64 KiB): a history page of 100
/// messages of 10 KiB each is about 1 MiB. The bound exists so that a broken or hostile
/// server cannot make the client buffer an arbitrary announced length.
pub const DEFAULT_MAX_INBOUND_FRAME: usize = 16 * 1024 * 1024;
/// Default most requests in flight at once on one session; further requests wait.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1_024;
/// Default time a send may wait for its acknowledgment, including time spent in the
/// outbox while the client reconnects.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default QUIC idle timeout: a connection that hears nothing from the server for this
/// long is dead, and the client reconnects.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval of QUIC keep-alive packets. Well under the idle timeout, and short
/// enough to keep NAT bindings of home routers and mobile networks open.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Default shortest interval between two delivery reports of one conversation.
pub const DEFAULT_DELIVERY_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Default most messages per `CatchUp` page after a reconnect.
pub const DEFAULT_CATCH_UP_PAGE: u32 = 1_000;
/// Default time QUIC has to connect before TLS over TCP is tried beside it: a QUIC
/// handshake takes one round trip, so only a network that drops UDP (or a path with a
/// round trip over half a second) needs longer.
pub const DEFAULT_TCP_FALLBACK_AFTER: Duration = Duration::from_millis(500);
/// Default interval at which a client on TLS over TCP tries QUIC again.
pub const DEFAULT_QUIC_RETRY_INTERVAL: Duration = Duration::from_secs(300);
/// Largest `CatchUp` page the protocol allows.
pub const MAX_CATCH_UP_PAGE: u32 = 5_000;

/// Settings for one connection to a LegalChat server.
///
/// ```
/// # use legalchat_sdk::ClientConfig;
/// let config = ClientConfig::new("127.0.0.1:7443".parse().unwrap(), "eyJ...")
///     .with_server_name("chat.firm.example")
///     .with_client_info("Acme LegalChat for macOS 2.1");
/// assert_eq!(config.server_name, "chat.firm.example");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server's QUIC address.
    pub server_addr: SocketAddr,
    /// The name the server's certificate must be valid for (SNI and verification).
    pub server_name: String,
    /// PEM bundle of the certificates to trust as roots; only these are trusted. Shared,
    /// not copied, by the clones of a configuration (a gateway makes one per session).
    pub ca_cert_pem: Bytes,
    /// The bearer token (JWT) presented in `Authenticate`.
    pub token: String,
    /// Free-form description of this client for the audit trail, at most 256 bytes.
    pub client_info: String,
    /// How long a request waits for its answer before failing with
    /// [`Error::Timeout`].
    pub request_timeout: Duration,
    /// How long the QUIC handshake plus authentication may take.
    pub connect_timeout: Duration,
    /// Capacity of the event queue. When it is full the client stops reading from the
    /// server (which then applies its own slow-consumer policy) instead of growing memory.
    pub event_buffer: usize,
    /// Largest frame accepted from the server, in bytes after the length prefix.
    pub max_inbound_frame: usize,
    /// Most requests in flight at once; further requests wait for a free slot.
    pub max_in_flight: usize,
    /// When and how often to reconnect after the connection dropped.
    pub reconnect: ReconnectPolicy,
    /// Most sends waiting for their acknowledgment at once (queued while disconnected, or
    /// in flight). A send beyond it fails with [`Error::OutboxFull`].
    pub outbox_capacity: usize,
    /// Messages per conversation whose folded state the client keeps for
    /// [`Client::message`](crate::Client::message) and [`Event::MessageUpdated`](crate::Event::MessageUpdated)
    /// (the newest first kept); 0 keeps none. Each held message costs a copy of it: a
    /// program holding many sessions (a gateway, a load generator) sets this low or to 0.
    pub timeline_capacity: usize,
    /// The user's own new messages sent through this client come back as
    /// [`Event::Message`](crate::Event::Message) too, in their place in the log, so that
    /// the events hold every seq of a conversation. Off by default (the send reports
    /// them); a gateway that relays the whole log to a client of its own turns it on.
    pub echo_own_messages: bool,
    /// How long a send may wait for its acknowledgment, including time spent queued in
    /// the outbox while the client reconnects (see [`Client::send`](crate::Client::send)).
    pub send_timeout: Duration,
    /// Where to resume: `(conversation id, newest seq the app has)` pairs that an app
    /// saved from [`Client::cursors`](crate::Client::cursors) in an earlier run. When
    /// given, the first connection catches up on everything after them (and on whole
    /// conversations not listed) instead of starting live from now.
    pub resume_cursors: Vec<(String, u64)>,
    /// A connection that hears nothing from the server for this long is dead (QUIC idle
    /// timeout); the client then reconnects.
    pub idle_timeout: Duration,
    /// Interval of QUIC keep-alive packets; must be shorter than `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// Most messages per page when catching up after a reconnect, 1..=5,000.
    pub catch_up_page: u32,
    /// Shortest interval between two automatic delivery reports (`MarkDelivered`) of one
    /// conversation. The first report after a quiet spell goes at once; in a busy
    /// conversation one report per interval covers every message received meanwhile.
    /// Each report reaches every participant, so this bounds what a busy group costs.
    pub delivery_report_interval: Duration,
    /// A UDP endpoint shared with other clients of this process (see [`ClientEndpoint`]);
    /// `None` (the default) gives the client a socket of its own.
    pub endpoint: Option<ClientEndpoint>,
    /// A QUIC connection shared with other clients of this process (see
    /// [`SharedConnection`]); `None` (the default) gives the client a connection of its own.
    pub connection: Option<SharedConnection>,
    /// Where fresh tokens come from: the client renews its session with one before the
    /// current token expires, and reconnects with the newest. `None`: the session ends
    /// when its token expires, unless the app calls [`crate::Client::renew_token`].
    pub token_source: Option<TokenSource>,
    /// Which transports to use: QUIC, falling back to TLS over TCP when QUIC does not
    /// answer (the default), or only one of them.
    pub transport: TransportPolicy,
    /// The server's TLS-over-TCP address; `None` (the default) means the QUIC address's IP
    /// and port, on TCP.
    pub tcp_addr: Option<SocketAddr>,
    /// How long QUIC may take to connect before TLS over TCP is tried beside it (the first
    /// to be ready is used). Networks that block UDP drop QUIC's packets silently, so
    /// there is no error to wait for.
    pub tcp_fallback_after: Duration,
    /// While on TLS over TCP, how often to try QUIC again; when it answers, the client
    /// moves back to it (a reconnect that resumes, so nothing is missed).
    pub quic_retry_interval: Duration,
}

/// Socket buffer asked for on a [`ClientEndpoint`]: many connections' bursts land in it.
const SHARED_UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// One UDP socket that many clients of a process can share: a gateway or a test harness
/// holding thousands of sessions needs one socket (one file descriptor, one receive
/// loop) instead of one per session. Connections stay separate; closing one client
/// closes only its connection.
///
/// ```no_run
/// # async fn f(addr: std::net::SocketAddr, tokens: Vec<String>) -> Result<(), legalchat_sdk::Error> {
/// use legalchat_sdk::{Client, ClientConfig, ClientEndpoint};
/// let endpoint = ClientEndpoint::bind("0.0.0.0:0".parse().unwrap())?;
/// for token in tokens {
///     let client = Client::connect(ClientConfig::new(addr, token).with_endpoint(endpoint.clone())).await?;
/// #   drop(client);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    pub(crate) endpoint: quinn::Endpoint,
}

impl ClientEndpoint {
    /// Opens a UDP socket on `bind` (port 0 picks a free one) for client connections, with
    /// buffers large enough for the bursts of many connections (the kernel caps them at
    /// `net.core.rmem_max` / `wmem_max`).
    pub fn bind(bind: SocketAddr) -> Result<Self, Error> {
        let failed = |e: std::io::Error| Error::Connect(format!("cannot open a UDP socket on {bind}: {e}"));
        let socket =
            socket2::Socket::new(socket2::Domain::for_address(bind), socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(failed)?;
        // Best effort: a smaller buffer than asked for still works.
        let _ = socket.set_recv_buffer_size(SHARED_UDP_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SHARED_UDP_BUFFER_BYTES);
        socket.bind(&bind.into()).map_err(failed)?;
        let runtime = quinn::default_runtime().ok_or_else(|| Error::Connect("no async runtime for QUIC".into()))?;
        let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket.into(), runtime).map_err(failed)?;
        Ok(Self { endpoint })
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.endpoint.local_addr().map_err(|e| Error::Connect(format!("the UDP socket has no local address: {e}")))
    }

    /// Connections currently open on it.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }
}

/// One QUIC connection that the sessions of several clients share, each session on a
/// stream of its own (the server carries up to its `max_sessions_per_connection` on one
/// connection). A gateway or a test harness holding thousands of sessions saves a
/// connection's memory, handshake and keep-alive traffic per session, on both ends, and
/// the packets of many sessions travel together.
///
/// Each client still authenticates its own session and keeps its own state; ending one
/// client ends only its session. When the connection drops, every client on it
/// reconnects (and catches up) through one new connection. Typing signals that the SDK
/// would send as datagrams go on the session stream instead.
///
/// ```no_run
/// # async fn f(addr: std::net::SocketAddr, tokens: Vec<String>) -> Result<(), legalchat_sdk::Error> {
/// use legalchat_sdk::{Client, ClientConfig, ClientEndpoint, SharedConnection};
/// let shared = SharedConnection::new(ClientEndpoint::bind("0.0.0.0:0".parse().unwrap())?);
/// for token in tokens {
///     let client = Client::connect(ClientConfig::new(addr, token).with_shared_connection(shared.clone())).await?;
/// #   drop(client);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SharedConnection {
    pub(crate) endpoint: ClientEndpoint,
    /// The connection, once made; replaced when it has closed.
    pub(crate) current: Arc<std::sync::Mutex<Option<quinn::Connection>>>,
    /// Held while connecting, so that clients arriving together make one connection.
    pub(crate) connecting: Arc<tokio::sync::Mutex<()>>,
    /// The TLS and transport settings its clients use, built once: a gateway's thousands
    /// of clients would otherwise each hold a copy (a root store, a crypto provider, a
    /// TLS session cache).
    quic: Arc<std::sync::Mutex<Option<QuicSettings>>>,
    /// The sessions that take their events from the connection's fan-out stream.
    pub(crate) fanout: Arc<crate::fanout::FanoutTable>,
}

/// A built QUIC client configuration, the TLS-over-TCP configuration, and what they were
/// built from.
#[derive(Debug)]
struct QuicSettings {
    ca_cert_pem: Bytes,
    idle_timeout: Duration,
    keep_alive_interval: Duration,
    config: quinn::ClientConfig,
    tls: Arc<rustls::ClientConfig>,
}

impl SharedConnection {
    /// A connection through `endpoint`, made when the first client needs it.
    pub fn new(endpoint: ClientEndpoint) -> Self {
        Self { endpoint, current: Arc::default(), connecting: Arc::default(), quic: Arc::default(), fanout: Arc::default() }
    }

    /// The QUIC and the TLS-over-TCP client configurations for `config`: the ones
    /// already built for an earlier client with the same CA and timeouts, or new ones
    /// (kept for the next).
    pub(crate) fn client_configs(&self, config: &ClientConfig) -> Result<(quinn::ClientConfig, Arc<rustls::ClientConfig>), Error> {
        let mut cached = self.quic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = cached.as_ref()
            && s.ca_cert_pem == config.ca_cert_pem
            && s.idle_timeout == config.idle_timeout
            && s.keep_alive_interval == config.keep_alive_interval
        {
            return Ok((s.config.clone(), s.tls.clone()));
        }
        let (quic, tls) = crate::tls::client_configs(&config.ca_cert_pem, config.idle_timeout, config.keep_alive_interval)?;
        *cached = Some(QuicSettings {
            ca_cert_pem: config.ca_cert_pem.clone(),
            idle_timeout: config.idle_timeout,
            keep_alive_interval: config.keep_alive_interval,
            config: quic.clone(),
            tls: tls.clone(),
        });
        Ok((quic, tls))
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().is_some_and(|c| c.close_reason().is_none())
    }

    /// Closes the connection, and with it every session on it; clients that reconnect
    /// make a new one.
    pub fn close(&self) {
        if let Some(c) = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            c.close(0u32.into(), b"client closed the shared connection");
        }
    }
}

/// Gives a fresh token (from the firm's identity provider), or says why it cannot.
pub type TokenSource =
    std::sync::Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> + Send + Sync>;

impl std::fmt::Debug for ClientConfig {
    // Hand-written so that the token never lands in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server_addr", &self.server_addr)
            .field("token_source", &self.token_source.as_ref().map(|_| "set"))
            .field("server_name", &self.server_name)
            .field("ca_cert_pem", &format_args!("<{} bytes>", self.ca_cert_pem.len()))
            .field("token", &"<redacted>")
            .field("client_info", &self.client_info)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("event_buffer", &self.event_buffer)
            .field("max_inbound_frame", &self.max_inbound_frame)
            .field("max_in_flight", &self.max_in_flight)
            .field("reconnect", &self.reconnect)
            .field("outbox_capacity", &self.outbox_capacity)
            .field("timeline_capacity", &self.timeline_capacity)
            .field("echo_own_messages", &self.echo_own_messages)
            .field("send_timeout", &self.send_timeout)
            .field("resume_cursors", &format_args!("<{} conversations>", self.resume_cursors.len()))
            .field("idle_timeout", &self.idle_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("catch_up_page", &self.catch_up_page)
            .field("delivery_report_interval", &self.delivery_report_interval)
            .field("endpoint", &self.endpoint.as_ref().map(|e| e.local_addr().ok()))
            .field("connection", &self.connection.as_ref().map(SharedConnection::is_connected))
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with defaults: server name `localhost`, no trusted CA yet (set
    /// one with [`with_ca_pem`](Self::with_ca_pem) or [`with_ca_file`](Self::with_ca_file)),
    /// 10 s request timeout, 10,000 queued events, reconnecting forever with the default
    /// [`ReconnectPolicy`], an outbox of 1,000 sends that may wait 30 s each.
    pub fn new(server_addr: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            server_addr,
            server_name: "localhost".into(),
            ca_cert_pem: Bytes::new(),
            token: token.into(),
            token_source: None,
            client_info: format!("legalchat-sdk/{}", env!("CARGO_PKG_VERSION")),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            event_buffer: DEFAULT_EVENT_BUFFER,
            max_inbound_frame: DEFAULT_MAX_INBOUND_FRAME,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            reconnect: ReconnectPolicy::default(),
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
            timeline_capacity: DEFAULT_TIMELINE_CAPACITY,
            echo_own_messages: false,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            resume_cursors: Vec::new(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            catch_up_page: DEFAULT_CATCH_UP_PAGE,
            delivery_report_interval: DEFAULT_DELIVERY_REPORT_INTERVAL,
            endpoint: None,
            connection: None,
            transport: TransportPolicy::Auto,
            tcp_addr: None,
            tcp_fallback_after: DEFAULT_TCP_FALLBACK_AFTER,
            quic_retry_interval: DEFAULT_QUIC_RETRY_INTERVAL,
        }
    }

    /// Which transports to use (see [`TransportPolicy`]).
    pub fn with_transport(mut self, policy: TransportPolicy) -> Self {
        self.transport = policy;
        self
    }

    /// The server's TLS-over-TCP address, when it is not the QUIC address's IP and port.
    pub fn with_tcp_addr(mut self, addr: SocketAddr) -> Self {
        self.tcp_addr = Some(addr);
        self
    }

    /// How long QUIC may take before TLS over TCP is tried too; see
    /// [`ClientConfig::tcp_fallback_after`].
    pub fn with_tcp_fallback_after(mut self, after: Duration) -> Self {
        self.tcp_fallback_after = after;
        self
    }

    /// How often a client on TLS over TCP tries QUIC again; see
    /// [`ClientConfig::quic_retry_interval`].
    pub fn with_quic_retry_interval(mut self, interval: Duration) -> Self {
        self.quic_retry_interval = interval;
        self
    }

    /// The TLS-over-TCP address in use.
    pub(crate) fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr.unwrap_or(self.server_addr)
    }

    /// Connect through `endpoint`, a UDP socket shared with other clients, instead of a
    /// socket of this client's own.
    pub fn with_endpoint(mut self, endpoint: ClientEndpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Open this client's session on `connection`, a QUIC connection shared with other
    /// clients (through its endpoint), instead of a connection of its own.
    pub fn with_shared_connection(mut self, connection: SharedConnection) -> Self {
        self.endpoint = Some(connection.endpoint.clone());
        self.connection = Some(connection);
        self
    }

    /// Trust the certificates of this PEM bundle (and only them).
    pub fn with_ca_pem(mut self, pem: impl Into<Bytes>) -> Self {
        self.ca_cert_pem = pem.into();
        self
    }

    /// Trust the certificates of the PEM file at `path` (and only them).
    pub fn with_ca_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        self.ca_cert_pem = std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read CA file {}: {e}", path.display())))?.into();
        Ok(self)
    }

    /// The name the server certificate must carry.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// The client description recorded in the server's audit trail.
    pub fn with_client_info(mut self, info: impl Into<String>) -> Self {
        self.client_info = info.into();
        self
    }

    /// How long a request waits for its answer.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting (handshake and authentication) may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Capacity of the event queue.
    pub fn with_event_buffer(mut self, capacity: usize) -> Self {
        self.event_buffer = capacity;
        self
    }

    /// When and how often to reconnect ([`ReconnectPolicy::never`] turns it off).
    pub fn with_reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Most unacknowledged sends at once.
    pub fn with_outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox_capacity = capacity;
        self
    }

    /// Messages per conversation whose folded state is kept (0: none); see
    /// [`ClientConfig::timeline_capacity`].
    pub fn with_timeline_capacity(mut self, messages_per_conversation: usize) -> Self {
        self.timeline_capacity = messages_per_conversation;
        self
    }

    /// Renews the session with tokens from `source` before each expires (see
    /// [`ClientConfig::token_source`]).
    pub fn with_token_source(mut self, source: TokenSource) -> Self {
        self.token_source = Some(source);
        self
    }

    /// Own new messages come back as events too; see [`ClientConfig::echo_own_messages`].
    pub fn with_own_messages_echoed(mut self, on: bool) -> Self {
        self.echo_own_messages = on;
        self
    }

    /// How long a send may wait for its acknowledgment, outbox time included.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Resume from cursors saved in an earlier run (see [`resume_cursors`](Self::resume_cursors)).
    pub fn with_resume_cursors(mut self, cursors: Vec<(String, u64)>) -> Self {
        self.resume_cursors = cursors;
        self
    }

    /// The QUIC idle timeout and keep-alive interval: how fast a silent connection is
    /// declared dead (and replaced).
    pub fn with_idle_timeout(mut self, idle_timeout: Duration, keep_alive_interval: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self.keep_alive_interval = keep_alive_interval;
        self
    }

    /// Most messages per catch-up page.
    pub fn with_catch_up_page(mut self, max_messages: u32) -> Self {
        self.catch_up_page = max_messages;
        self
    }

    /// Shortest interval between two delivery reports of one conversation (zero: one
    /// report per round trip).
    pub fn with_delivery_report_interval(mut self, interval: Duration) -> Self {
        self.delivery_report_interval = interval;
        self
    }

    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.token.is_empty() {
            return Err(ValidationError::new("token", "must not be empty"));
        }
        if self.server_name.is_empty() {
            return Err(ValidationError::new("server_name", "must not be empty"));
        }
        if self.client_info.len() > validate::MAX_CLIENT_INFO_LEN {
            return Err(ValidationError::new(
                "client_info",
                format!("is {} bytes; the maximum is {}", self.client_info.len(), validate::MAX_CLIENT_INFO_LEN),
            ));
        }
        if self.client_info.chars().any(char::is_control) {
            return Err(ValidationError::new("client_info", "must not contain control characters"));
        }
        let positive = [
            ("request_timeout", self.request_timeout.is_zero()),
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("event_buffer", self.event_buffer == 0),
            ("max_in_flight", self.max_in_flight == 0),
            ("outbox_capacity", self.outbox_capacity == 0),
            ("send_timeout", self.send_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("keep_alive_interval", self.keep_alive_interval.is_zero()),
            ("quic_retry_interval", self.quic_retry_interval.is_zero()),
        ];
        if let Some((field, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(ValidationError::new(field, "must be greater than zero"));
        }
        // tokio panics on a channel or semaphore larger than this; say so instead.
        const MAX: usize = tokio::sync::Semaphore::MAX_PERMITS;
        for (field, value) in [("event_buffer", self.event_buffer), ("max_in_flight", self.max_in_flight)] {
            if value > MAX {
                return Err(ValidationError::new(field, format!("is {value}; the maximum is {MAX}")));
            }
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(ValidationError::new(
                "keep_alive_interval",
                format!("is {:?}; it must be shorter than idle_timeout ({:?})", self.keep_alive_interval, self.idle_timeout),
            ));
        }
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return Err(ValidationError::new("idle_timeout", format!("{:?} is too long for QUIC", self.idle_timeout)));
        }
        if !(1..=MAX_CATCH_UP_PAGE).contains(&self.catch_up_page) {
            return Err(ValidationError::new("catch_up_page", format!("is {}; it must be 1..={MAX_CATCH_UP_PAGE}", self.catch_up_page)));
        }
        self.reconnect.validate()?;
        for (conversation, _) in &self.resume_cursors {
            validate::parse_id("resume_cursors", conversation)?;
        }
        if self.max_inbound_frame < legalchat_protocol::codec::DEFAULT_MAX_FRAME_LEN {
            return Err(ValidationError::new(
                "max_inbound_frame",
                format!("must be at least {} bytes", legalchat_protocol::codec::DEFAULT_MAX_FRAME_LEN),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], 7443)), "token")
    }

    fn self_signed_pem() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key generation");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.self_signed(&key).expect("self-signed certificate").pem().into_bytes()
    }

    /// A gateway's thousands of clients on one connection hold one TLS configuration per
    /// transport between them, not one each (a root store, a crypto provider, a session
    /// cache: kilobytes per client).
    #[tokio::test]
    async fn clients_of_a_shared_connection_share_their_tls_configurations() {
        let shared = SharedConnection::new(ClientEndpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap());
        let ca = self_signed_pem();
        let client = |ca: &[u8]| ClientConfig { ca_cert_pem: Bytes::copy_from_slice(ca), ..config() };
        let (_, first) = shared.client_configs(&client(&ca)).unwrap();
        let (_, second) = shared.client_configs(&client(&ca)).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the same CA: the same TLS-over-TCP configuration");
        let (_, other) = shared.client_configs(&client(&self_signed_pem())).unwrap();
        assert!(!Arc::ptr_eq(&first, &other), "another CA: another configuration");
    }

    #[test]
    fn defaults_are_valid() {
        let c = config();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.event_buffer, DEFAULT_EVENT_BUFFER);
    }

    #[test]
    fn zero_sizes_are_rejected_by_name() {
        assert_eq!(config().with_event_buffer(0).validate().unwrap_err().field, "event_buffer");
        assert_eq!(config().with_request_timeout(Duration::ZERO).validate().unwrap_err().field, "request_timeout");
        let mut c = config();
        c.max_in_flight = 0;
        assert_eq!(c.validate().unwrap_err().field, "max_in_flight");
    }

    #[test]
    fn token_and_client_info_are_checked() {
        let mut c = config();
        c.token.clear();
        assert_eq!(c.validate().unwrap_err().field, "token");
        assert_eq!(config().with_client_info("x".repeat(257)).validate().unwrap_err().field, "client_info");
        assert_eq!(config().with_client_info("a\u{1b}[31m").validate().unwrap_err().field, "client_info");
    }

    #[test]
    fn reconnect_and_outbox_settings_are_checked() {
        let c = config();
        assert_eq!(c.outbox_capacity, 1_000);
        assert_eq!(c.reconnect.max_attempts, None);
        assert_eq!(config().with_outbox_capacity(0).validate().unwrap_err().field, "outbox_capacity");
        let err = config().with_idle_timeout(Duration::from_secs(1), Duration::from_secs(2)).validate().unwrap_err();
        assert_eq!(err.field, "keep_alive_interval");
        assert_eq!(config().with_idle_timeout(Duration::from_millis(800), Duration::from_millis(200)).validate(), Ok(()));
        assert_eq!(config().with_catch_up_page(0).validate().unwrap_err().field, "catch_up_page");
        assert_eq!(config().with_catch_up_page(5_001).validate().unwrap_err().field, "catch_up_page");
        let bad = ReconnectPolicy { multiplier: 0.0, ..ReconnectPolicy::default() };
        assert_eq!(config().with_reconnect_policy(bad).validate().unwrap_err().field, "reconnect.multiplier");
        let err = config().with_resume_cursors(vec![("not-an-id".into(), 3)]).validate().unwrap_err();
        assert_eq!(err.field, "resume_cursors");
        assert_eq!(config().with_resume_cursors(vec![("ab".repeat(16), 3)]).validate(), Ok(()));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], 7443)), "secret-jwt");
        assert!(!format!("{c:?}").contains("secret-jwt"));
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let err = config().with_ca_file("/nonexistent/legalchat/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/legalchat/ca.pem"), "{err}");
    }
}
