//! The Socket.IO server: sockets in, daemon sessions out.
//!
//! ```text
//!  handshake {auth: {token, cursors}} ──► middleware: Client::connect (shared QUIC connection,
//!        │                                resume from cursors, own messages echoed)
//!        │                                refused ──► connect_error "unauthorized: <reason>"
//!        ▼
//!  connected ──► `authenticated` {userId, …, cursors} ──► pump: Client::next_event ──► emit
//!        │        (without a token: `authenticate` within auth_timeout, else `unauthorized`)
//!        ├── request events ──► incoming::handle ──► acknowledgement {…} | {error}
//!        └── disconnect ──► Client::close (the session ends; the daemon keeps everything)
//! ```
//!
//! The bridge holds no chat state: a socket's session is an SDK [`Client`] whose cursors,
//! outbox and catch-up do the work. When the daemon connection drops, the client
//! reconnects and catches up by itself, and the browser hears `connection_state` only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use legalchat_protocol::pb;
use legalchat_protocol::validate;
use legalchat_sdk::{Client, ClientConfig, ClientEndpoint};
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use socketioxide::{SendError, SocketError, SocketIo, TransportType};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::{debug, info, warn};

use crate::config::BridgeConfig;
use crate::files;
use crate::incoming::{self, Failure};
use crate::linger::Lingering;
use crate::outgoing::{self, Outgoing};
use crate::pool::{DaemonPool, Lease};

/// Headers on every HTTP answer: the web app loads only its own scripts, styles and
/// connections (message text is never markup, and this makes sure), is never framed, and
/// content types are never guessed.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         manifest-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// Initial WebSocket read buffer per socket (socketioxide's default is 4 KiB).
const WS_READ_BUFFER: usize = 1024;

/// Most conversations a handshake's `cursors` may name.
pub const MAX_CURSORS: usize = 10_000;
/// How often a socket whose queue is full is looked at again.
const FULL_QUEUE_RETRY: Duration = Duration::from_millis(10);
/// How long a disconnect waits for a place in a full queue (the Engine.IO heartbeat
/// closes a connection that stays stalled longer).
const CLOSE_PATIENCE: Duration = Duration::from_secs(60);

/// The bridge's shared parts.
#[derive(Debug)]
pub struct Bridge {
    config: BridgeConfig,
    pool: DaemonPool,
    tickets: Arc<files::Tickets>,
    /// New connections per client address.
    connections: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
}

/// A socket's daemon session.
#[derive(Debug)]
struct Session {
    client: Client,
    _lease: Lease,
}

/// What the bridge keeps per socket: its session once authenticated.
#[derive(Debug)]
struct Slot {
    session: OnceLock<Arc<Session>>,
    /// An authentication is under way or done: a second `authenticate` is refused.
    claimed: AtomicBool,
    /// Requests of this socket being answered: beyond [`MAX_REQUESTS_IN_FLIGHT`] a request
    /// is refused `OVERLOADED` at once, so that a flood costs a bounded number of tasks.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The socket is being cut off (an answer found its queue full): one task does it.
    cut_off: AtomicBool,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            session: OnceLock::new(),
            claimed: AtomicBool::new(false),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
            cut_off: AtomicBool::new(false),
        }
    }
}

/// Requests one socket may have waiting for their answers.
const MAX_REQUESTS_IN_FLIGHT: usize = 256;

/// Sends a request's answer. An answer that finds the socket's queue full cannot wait (an
/// acknowledgement is sent once): the socket is then disconnected with `OVERLOADED`, and
/// the client resyncs from its cursors and sends again what was not answered (the same
/// client message id, so nothing is stored twice). An answer is never dropped in silence.
fn answer(s: &SocketRef, ack: AckSender, value: &Value) {
    if let Err(SendError::Socket(SocketError::InternalChannelFull)) = ack.send(value) {
        if slot(s).cut_off.swap(true, Ordering::AcqRel) {
            return;
        }
        warn!(socket = %s.id, "an answer found a browser's queue full; disconnecting it to resync from its cursors");
        let socket = s.clone();
        tokio::spawn(async move {
            let reason = json!({
                "code": "OVERLOADED",
                "message": "this connection could not take an answer; reconnect, resume from your cursors and send again what was not answered",
            });
            close(&socket, Some(reason)).await;
        });
    }
}

/// Why a handshake was refused: the `connect_error` message.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running bridge.
#[derive(Debug)]
pub struct RunningBridge {
    /// Where it listens.
    pub addr: SocketAddr,
    io: SocketIo,
    bridge: Arc<Bridge>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RunningBridge {
    /// Sessions currently open, per connection, per daemon.
    pub fn sessions(&self) -> Vec<(SocketAddr, Vec<usize>)> {
        self.bridge.pool.sessions()
    }

    /// Disconnects every socket, ends their sessions and stops listening.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for socket in self.io.sockets() {
            let _ = socket.disconnect();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.bridge.pool.close();
    }

    /// Waits until the server stops by itself (it does not, short of an IO error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Binds `config.listen` and serves Socket.IO (WebSocket and long-polling), `/healthz`,
/// the development sign-in list and the web app.
pub async fn start(config: BridgeConfig) -> anyhow::Result<RunningBridge> {
    config.validate().map_err(anyhow::Error::msg)?;
    let bind: SocketAddr = if config.daemons[0].is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let endpoint = ClientEndpoint::bind(bind)?;
    let pool = DaemonPool::new(&config.daemons, &endpoint, config.sessions_per_connection);
    let listener = TcpListener::bind(config.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let connections = std::num::NonZeroU32::new(config.connections_per_minute).map(|n| {
        let burst = std::num::NonZeroU32::new(config.connection_burst).unwrap_or(n).max(n);
        governor::RateLimiter::keyed(governor::Quota::per_minute(n).allow_burst(burst))
    });
    let bridge = Arc::new(Bridge { config, pool, tickets: Arc::default(), connections });

    let (layer, io) = SocketIo::builder()
        .max_buffer_size(bridge.config.socket_buffer)
        // Browsers send little (a chat message is at most 10 KiB of text); a small read
        // buffer, grown when a large frame comes, keeps idle sockets small.
        .ws_read_buffer_size(WS_READ_BUFFER)
        .max_payload(bridge.config.max_payload)
        // The same bound over WebSocket (`max_payload` covers long-polling only).
        .ws_max_message_size(usize::try_from(bridge.config.max_payload).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(bridge.config.max_payload).unwrap_or(usize::MAX))
        .transports([TransportType::Polling, TransportType::Websocket])
        .with_state(bridge.clone())
        .build_layer();
    io.ns("/", on_connect.with(handshake));

    let transfers = Router::new()
        .route("/api/uploads/{ticket}", axum::routing::put(files::upload).post(files::upload))
        .route("/api/downloads/{ticket}", get(files::download))
        // A body is streamed to the daemon as it arrives; its size is the ticket's.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(bridge.tickets.clone());
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/dev/accounts", get(dev_accounts))
        .with_state(bridge.clone())
        .merge(transfers);
    if let Some(root) = &bridge.config.web_root {
        app = app.fallback_service(tower_http::services::ServeDir::new(root).append_index_html_on_directories(true));
    }
    let mut app = app.layer(layer).layer(cors(&bridge.config.cors_origins));
    for (name, value) in SECURITY_HEADERS {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            axum::http::HeaderName::from_static(name),
            axum::http::HeaderValue::from_static(value),
        ));
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, app, stopped));
    info!(%addr, daemons = ?bridge.config.daemons, "bridge listening");
    Ok(RunningBridge { addr, io, bridge, server, stop })
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST, axum::http::Method::PUT])
        .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::RANGE])
        .expose_headers([axum::http::header::CONTENT_DISPOSITION, axum::http::HeaderName::from_static("x-legalchat-sha256")]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list = origins.iter().filter_map(|o| axum::http::HeaderValue::from_str(o).ok());
        layer.allow_origin(AllowOrigin::list(list))
    }
}

async fn healthz(axum::extract::State(bridge): axum::extract::State<Arc<Bridge>>) -> impl IntoResponse {
    let sessions: usize = bridge.pool.sessions().iter().flat_map(|(_, c)| c.iter()).sum();
    axum::Json(json!({"ok": true, "sessions": sessions}))
}

/// The demo accounts for the sign-in page; development mode only (404 otherwise).
async fn dev_accounts(axum::extract::State(bridge): axum::extract::State<Arc<Bridge>>) -> axum::response::Response {
    if bridge.config.demo_accounts.is_empty() {
        return (axum::http::StatusCode::NOT_FOUND, "no demo accounts: the bridge is not in development mode").into_response();
    }
    let accounts: Vec<Value> =
        bridge.config.demo_accounts.iter().map(|a| json!({"userId": a.user_id, "role": a.role, "token": a.token})).collect();
    axum::Json(json!({"accounts": accounts})).into_response()
}

/// `(conversation id, newest seq the client has)` pairs.
pub type Cursors = Vec<(String, u64)>;

/// Reads `{token, cursors}` (the handshake's `auth`, or an `authenticate` payload). Pure,
/// so that what a browser may send is fuzzed (`fuzz/fuzz_targets/bridge_json.rs`).
pub fn credentials(auth: &Value) -> Result<(Option<String>, Cursors), String> {
    let token = match auth.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.is_empty() => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err("auth.token must be a string (the JWT)".into()),
    };
    let cursors = match auth.get("cursors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => {
            if map.len() > MAX_CURSORS {
                return Err(format!("auth.cursors names {} conversations; at most {MAX_CURSORS}", map.len()));
            }
            let mut cursors = Vec::with_capacity(map.len());
            for (conversation, seq) in map {
                validate::parse_id("auth.cursors", conversation).map_err(|e| format!("{}: {}", e.field, e.reason))?;
                let seq = seq.as_u64().ok_or_else(|| format!("auth.cursors[{conversation:?}] must be a seq (a non-negative integer)"))?;
                cursors.push((conversation.clone(), seq));
            }
            cursors
        }
        Some(_) => return Err("auth.cursors must be an object {conversationId: seq}".into()),
    };
    Ok((token, cursors))
}

impl Bridge {
    /// Counts a new connection against its address's allowance (the address behind a
    /// trusted proxy, from `X-Forwarded-For`).
    fn admit(&self, s: &SocketRef) -> Result<(), Refused> {
        let Some(limiter) = &self.connections else { return Ok(()) };
        let parts = s.req_parts();
        let Some(peer) = parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) else { return Ok(()) };
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        let client = self.config.trusted_networks.client_address(peer, forwarded);
        if self.config.trusted_networks.contains(client) {
            return Ok(());
        }
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&client).map_err(|not_until| {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            warn!(%client, "refusing a connection: too many new connections from its address");
            Refused(format!("rate_limited: too many new connections from your address; try again in {secs} s"))
        })
    }

    /// A daemon session for `token`, resuming after `cursors` when given.
    async fn open_session(&self, token: String, cursors: Cursors) -> Result<Arc<Session>, Failure> {
        let lease = self.pool.lease();
        let config = ClientConfig::new(lease.addr, token)
            .with_ca_pem(self.config.ca_pem.clone())
            .with_server_name(self.config.server_name.clone())
            .with_shared_connection(lease.connection.clone())
            .with_client_info("legalchat-bridge (Socket.IO)")
            .with_timeline_capacity(0)
            .with_own_messages_echoed(true)
            .with_resume_cursors(cursors);
        let client = Client::connect(config).await.map_err(|e| {
            let failure = Failure::from(e);
            debug!(code = failure.code, reason = %failure.message, "a socket's session was refused");
            failure
        })?;
        Ok(Arc::new(Session { client, _lease: lease }))
    }
}

/// Handshake middleware: with a token, the session is opened now and a refusal is the
/// socket's `connect_error`; without one, the socket must `authenticate`.
async fn handshake(s: SocketRef, State(bridge): State<Arc<Bridge>>, TryData(auth): TryData<Value>) -> Result<(), Refused> {
    let this = Arc::new(Slot::default());
    s.extensions.insert(this.clone());
    // The handlers go on here, before the CONNECT packet leaves (socketioxide sends it
    // before running `on_connect`): an event a browser sends the instant it is connected
    // must find them.
    s.on("authenticate", authenticate);
    // Every request event through one handler: a socket holds one, not one per event.
    s.on_fallback(request);
    s.on_disconnect(async |s: SocketRef| {
        if let Some(session) = slot(&s).session.get().cloned() {
            tokio::spawn(async move { session.client.close().await });
        }
    });
    bridge.admit(&s)?;
    let auth = auth.unwrap_or(Value::Null);
    let (token, cursors) = credentials(&auth).map_err(|e| Refused(format!("unauthorized: {e}")))?;
    let Some(token) = token else { return Ok(()) };
    this.claimed.store(true, Ordering::Release);
    let session = bridge.open_session(token, cursors).await.map_err(refusal)?;
    let _ = this.session.set(session);
    Ok(())
}

/// The `connect_error` message for a session the daemon (or the SDK's checks) refused:
/// `unauthorized: …` for the credentials, `unavailable: …` for what a retry may cure.
fn refusal(f: Failure) -> Refused {
    match f.code {
        "UNAUTHENTICATED" | "UNAUTHORIZED" | "INVALID_ARGUMENT" if f.message.starts_with("unauthorized") => Refused(f.message),
        "UNAUTHENTICATED" | "UNAUTHORIZED" | "INVALID_ARGUMENT" => Refused(format!("unauthorized: {}", f.message)),
        _ => Refused(format!("unavailable: {}", f.message)),
    }
}

fn slot(s: &SocketRef) -> Arc<Slot> {
    // Inserted by the handshake, which runs before anything else of the socket.
    s.extensions.get::<Arc<Slot>>().unwrap_or_default()
}

async fn on_connect(s: SocketRef, State(bridge): State<Arc<Bridge>>) {
    let this = slot(&s);
    match this.session.get().cloned() {
        Some(session) => begin(&s, session, bridge.config.slow_socket_grace),
        None => {
            // Without a token in the handshake: `authenticate` must come in time.
            let timeout = bridge.config.auth_timeout;
            let socket = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if socket.connected() && this.session.get().is_none() && !this.claimed.load(Ordering::Acquire) {
                    let message =
                        format!("no token: send auth.token in the handshake or an authenticate event within {} s", timeout.as_secs());
                    let _ = socket.emit("unauthorized", &json!({"code": "UNAUTHENTICATED", "message": message}));
                    let _ = socket.disconnect();
                }
            });
        }
    }
}

/// `authenticate {token, cursors?}`: the session for a socket that connected without a
/// token. A refusal is `unauthorized`, and the socket is closed.
async fn authenticate(s: SocketRef, State(bridge): State<Arc<Bridge>>, TryData(payload): TryData<Value>, ack: AckSender) {
    let slot = slot(&s);
    if slot.claimed.swap(true, Ordering::AcqRel) {
        let failure = Failure { code: "ALREADY_EXISTS", message: "this socket is authenticated already".into(), retry_after_ms: 0 };
        answer(&s, ack, &failure.to_json());
        return;
    }
    let refuse = |s: &SocketRef, ack: AckSender, failure: Failure| {
        let _ = ack.send(&failure.to_json());
        let _ = s.emit("unauthorized", &json!({"code": "UNAUTHENTICATED", "message": failure.message}));
        let _ = s.clone().disconnect();
    };
    let (token, cursors) = match payload.map_err(|e| e.to_string()).and_then(|p| credentials(&p)) {
        Ok((Some(token), cursors)) => (token, cursors),
        Ok((None, _)) => {
            return refuse(&s, ack, Failure { code: "UNAUTHENTICATED", message: "token is required".into(), retry_after_ms: 0 });
        }
        Err(e) => return refuse(&s, ack, Failure { code: "UNAUTHENTICATED", message: e, retry_after_ms: 0 }),
    };
    match bridge.open_session(token, cursors).await {
        Ok(session) => {
            let _ = slot.session.set(session.clone());
            answer(&s, ack, &identity(&session.client));
            if s.connected() {
                begin(&s, session, bridge.config.slow_socket_grace);
            } else {
                session.client.close().await;
            }
        }
        Err(failure) => refuse(&s, ack, failure),
    }
}

/// Who the session is, and where its cursors start: the first event of every socket.
fn identity(client: &Client) -> Value {
    let info = client.session();
    let role = match info.role {
        pb::UserRole::Advocate => "advocate",
        pb::UserRole::Client => "client",
        pb::UserRole::Admin => "admin",
        _ => "staff",
    };
    let cursors: serde_json::Map<String, Value> = client.cursors().into_iter().map(|(c, s)| (c, json!(s))).collect();
    json!({
        "userId": info.user_id,
        "role": role,
        "displayName": info.display_name,
        "sessionId": info.session_id,
        "maxMessageBytes": info.max_message_bytes,
        "maxFileBytes": info.max_file_bytes,
        "tokenExpiresAt": if info.token_expires_at_ms > 0 { json!(legalchat_protocol::time::rfc3339(info.token_expires_at_ms)) } else { Value::Null },
        "cursors": cursors,
    })
}

/// Tells the browser who it is, then relays the session's events until either side ends.
fn begin(s: &SocketRef, session: Arc<Session>, grace: Duration) {
    let _ = s.emit("authenticated", &identity(&session.client));
    let socket = s.clone();
    // A task per session, idle nearly all its life, so its size counts: what waits only on
    // rare paths (a full queue, the end) is boxed, and no event is held across an await.
    // It holds 200 bytes, not the 2 KB it did.
    tokio::spawn(async move {
        // `loop` and `let … else`, not `while let`: the latter's scrutinee (the event)
        // would keep its room in this future across the awaits of the body.
        loop {
            let Some(event) = session.client.next_event().await else { break };
            let Some(out) = outgoing::translate(event) else { continue };
            match emit(&socket, &out, grace).await {
                Ok(()) if out.last => {
                    Box::pin(close(&socket, None)).await;
                    break;
                }
                Ok(()) => {}
                Err(Stop::Gone) => break,
                Err(Stop::Slow) => {
                    warn!(socket = %socket.id, "a browser fell behind by a full queue; disconnecting it to resync from its cursors");
                    let reason = json!({
                        "code": "OVERLOADED",
                        "message": "this connection fell behind; reconnect and resume from your cursors",
                    });
                    Box::pin(close(&socket, Some(reason))).await;
                    break;
                }
            }
        }
        Box::pin(session.client.close()).await;
    });
}

/// Copies a request's URI and header values into allocations of their own. hyper parses
/// them as slices of the connection's read buffer (8 KiB), so whatever keeps them keeps
/// the whole buffer; and the Socket.IO layer keeps a WebSocket's request head for the
/// socket's life (its handshake data). Copied, an idle socket holds the few hundred bytes
/// of its head, not the buffer.
async fn own_request_head(mut request: axum::extract::Request) -> axum::extract::Request {
    for value in request.headers_mut().values_mut() {
        if let Ok(mut owned) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
    if let Ok(uri) = axum::http::Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    request
}

/// Time a client has to send a request's head (line and headers), from when the
/// connection is ready for it: a slowloris that trickles its headers, or sends nothing,
/// is closed after it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Open HTTP connections (WebSockets and long-polls included) beyond which new ones are
/// closed at once.
const MAX_HTTP_CONNECTIONS: usize = 50_000;

/// Serves HTTP/1.1 (with upgrades, for WebSocket) until `stop`, then lets open
/// connections end (bounded). Each connection gets its peer address as `ConnectInfo`.
///
/// Every request's URI and header values are copied out of the connection's read buffer
/// first ([`own_request_head`]).
async fn serve(listener: tokio::net::TcpListener, app: Router, mut stop: tokio::sync::watch::Receiver<bool>) -> std::io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many HTTP connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer))).layer(axum::middleware::map_request(own_request_head)),
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(hyper_util::rt::TokioIo::new(Lingering::new(stream)), service)
            .with_upgrades();
        let mut stopping = stop.clone();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let stopped = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                _ = stopping.wait_for(|s| *s) => None,
            };
            let ended = match stopped {
                Some(ended) => ended,
                None => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    let drained = tokio::time::timeout(Duration::from_secs(10), async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

/// Disconnects a socket, telling it why first (an `error` event) when `reason` is given.
/// Each packet needs a place in the socket's queue: while the queue is full it is tried
/// again, so that a browser that reads again hears the reason and `io server disconnect`
/// after what was queued before them (and resyncs from its cursors), even when its own
/// requests still wait unread (the connection's close lingers: [`crate::linger`]). One that
/// never reads again is closed by the Engine.IO heartbeat.
async fn close(socket: &SocketRef, reason: Option<Value>) {
    let deadline = Instant::now() + CLOSE_PATIENCE;
    if let Some(reason) = reason {
        loop {
            match socket.emit("error", &reason) {
                Err(SendError::Socket(SocketError::InternalChannelFull)) if Instant::now() < deadline => {
                    tokio::time::sleep(FULL_QUEUE_RETRY).await;
                }
                _ => break,
            }
        }
    }
    while socket.connected() {
        match socket.clone().disconnect() {
            Err(SocketError::InternalChannelFull) if Instant::now() < deadline => tokio::time::sleep(FULL_QUEUE_RETRY).await,
            _ => return,
        }
    }
}

enum Stop {
    /// The socket is gone.
    Gone,
    /// The socket's queue stayed full for the whole grace period.
    Slow,
}

/// Queues `out` for the browser; a full queue is waited on for at most `grace`.
async fn emit(s: &SocketRef, out: &Outgoing, grace: Duration) -> Result<(), Stop> {
    match emit_once(s, out) {
        Emitted::Done(result) => result,
        // Rare: the wait for room is boxed, so that the relay task does not carry it.
        Emitted::Full => Box::pin(emit_when_room(s, out, grace)).await,
    }
}

enum Emitted {
    Done(Result<(), Stop>),
    /// The socket's queue is full.
    Full,
}

fn emit_once(s: &SocketRef, out: &Outgoing) -> Emitted {
    match s.emit(out.name, &out.payload) {
        Ok(()) => Emitted::Done(Ok(())),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Emitted::Full,
        Err(SendError::Serialize(e)) => {
            warn!(event = out.name, error = %e, "an event could not be encoded; skipped");
            Emitted::Done(Ok(()))
        }
        Err(_) => Emitted::Done(Err(Stop::Gone)),
    }
}

/// Tries again every `FULL_QUEUE_RETRY` while the socket's queue is full, for at most `grace`.
async fn emit_when_room(s: &SocketRef, out: &Outgoing, grace: Duration) -> Result<(), Stop> {
    let started = Instant::now();
    loop {
        if started.elapsed() >= grace {
            return Err(Stop::Slow);
        }
        tokio::time::sleep(FULL_QUEUE_RETRY).await;
        if let Emitted::Done(result) = emit_once(s, out) {
            return result;
        }
    }
}

/// One request event: answered through its acknowledgement.
async fn request(s: SocketRef, State(bridge): State<Arc<Bridge>>, Event(name): Event, TryData(payload): TryData<Value>, ack: AckSender) {
    let name = name.as_str();
    if !incoming::REQUESTS.contains(&name) {
        let failure =
            Failure { code: "INVALID_ARGUMENT", message: format!("{name:?} is not an event this bridge serves"), retry_after_ms: 0 };
        answer(&s, ack, &failure.to_json());
        return;
    }
    let this = slot(&s);
    let Ok(_permit) = this.in_flight.clone().try_acquire_owned() else {
        let failure = Failure {
            code: "OVERLOADED",
            message: format!("{name}: this socket has {MAX_REQUESTS_IN_FLIGHT} requests waiting for answers; wait for them and retry"),
            retry_after_ms: 0,
        };
        answer(&s, ack, &failure.to_json());
        return;
    };
    let Some(session) = this.session.get().cloned() else {
        let failure = Failure {
            code: "UNAUTHENTICATED",
            message: format!("{name}: authenticate first (auth.token or the authenticate event)"),
            retry_after_ms: 0,
        };
        let _ = s.emit("unauthorized", &json!({"code": failure.code, "message": failure.message}));
        answer(&s, ack, &failure.to_json());
        return;
    };
    let outcome = match payload {
        Ok(payload) => match files::start(&bridge.tickets, &session.client, name, &payload).await {
            Some(outcome) => outcome,
            None => incoming::handle(&session.client, name, payload).await,
        },
        Err(e) => Err(Failure { code: "INVALID_ARGUMENT", message: format!("payload: {e}"), retry_after_ms: 0 }),
    };
    match outcome {
        Ok(reply) => {
            if name == "send_message" {
                // The requirements' flow, step 5: the sender hears that the message is stored.
                let mut stored = reply.clone();
                stored["status"] = json!("sent");
                let _ = s.emit("message_delivered", &stored);
            }
            answer(&s, ack, &reply);
        }
        Err(failure) => {
            debug!(event = name, code = failure.code, reason = %failure.message, "request refused");
            answer(&s, ack, &failure.to_json());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_read_token_and_cursors() {
        let id = "0123456789abcdef0123456789abcdef";
        let (token, cursors) = credentials(&json!({"token": "t", "cursors": {id: 4}})).unwrap();
        assert_eq!((token.as_deref(), cursors), (Some("t"), vec![(id.to_string(), 4)]));
        assert_eq!(credentials(&json!({})).unwrap(), (None, vec![]));
        assert_eq!(credentials(&json!({"token": ""})).unwrap().0, None);
    }

    #[test]
    fn refusals_say_whether_to_fix_the_token_or_retry() {
        let refused = |code, message: &str| refusal(Failure { code, message: message.into(), retry_after_ms: 0 }).0;
        assert_eq!(refused("UNAUTHENTICATED", "unauthorized: token expired"), "unauthorized: token expired");
        assert_eq!(refused("UNAUTHORIZED", "bad signature"), "unauthorized: bad signature");
        assert_eq!(refused("INVALID_ARGUMENT", "token: is too long"), "unauthorized: token: is too long");
        assert_eq!(refused("UNAVAILABLE", "cannot connect: refused"), "unavailable: cannot connect: refused");
        assert_eq!(refused("OVERLOADED", "try later"), "unavailable: try later");
    }

    /// hyper hands a request's URI and header values over as slices of the connection's
    /// read buffer; once copied, nothing of the request keeps that buffer.
    #[tokio::test]
    async fn a_request_head_is_copied_out_of_the_read_buffer() {
        let read = bytes::Bytes::from(b"/socket.io/?EIO=4&transport=websocketsecret-key".to_vec());
        let uri = axum::http::Uri::from_maybe_shared(read.slice(0..37)).unwrap();
        let mut key = axum::http::HeaderValue::from_maybe_shared(read.slice(37..)).unwrap();
        key.set_sensitive(true);
        let request = axum::extract::Request::builder().uri(uri).header("sec-websocket-key", key).body(axum::body::Body::empty()).unwrap();
        assert!(!read.is_unique(), "the head shares the buffer, as hyper's does");
        let request = own_request_head(request).await;
        assert!(read.is_unique(), "the copied head keeps nothing of the buffer");
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        let key = &request.headers()["sec-websocket-key"];
        assert_eq!(key, "secret-key");
        assert!(key.is_sensitive(), "a sensitive value stays out of logs");
    }

    #[test]
    fn bad_credentials_say_which_part() {
        assert!(credentials(&json!({"token": 5})).unwrap_err().contains("auth.token"));
        assert!(credentials(&json!({"token": "t", "cursors": [1]})).unwrap_err().contains("auth.cursors"));
        assert!(credentials(&json!({"token": "t", "cursors": {"x": 1}})).unwrap_err().contains("auth.cursors"));
        let id = "0123456789abcdef0123456789abcdef";
        assert!(credentials(&json!({"token": "t", "cursors": {id: -1}})).unwrap_err().contains("non-negative"));
    }
}
