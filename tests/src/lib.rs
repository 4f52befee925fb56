//! # legalchat-tests
//!
//! Helpers for the end-to-end tests in `tests/e2e/` (one test binary, `e2e`). Every test
//! starts its own `legalchatd` on `127.0.0.1:0` in a temporary directory and drives it
//! from outside, exactly as an app would:
//!
//! ```text
//!  e2e test ──► TestDaemon ──► legalchatd-test (child process: this crate's copy of the daemon CLI)
//!     │            │  token(user, role): HS256 JWT with the daemon's secret
//!     │            │  client(user, role): SDK Client trusting <data>/tls/cert.pem
//!     │            │  restart() (SIGTERM) · kill9_and_restart() (SIGKILL) on the same data dir
//!     ├─► RawSession: quinn + the codec, for frames the SDK would never send
//!     ├─► UdpRelay: a loopback UDP relay that can be cut or made lossy, between a client and the daemon
//!     └─► http_get: plain HTTP/1.1 on the ops listener (/metrics, /healthz, /readyz)
//! ```
//!
//! Rules the helpers enforce for the tests: no sleeps as synchronisation (every wait is
//! for an event or a condition, with a deadline that fails the test), loopback only, and
//! the daemon's stderr printed when a test fails.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};
use legalchat_benches::tokens::{Claims, TokenMinter};
use legalchat_protocol::codec::{self, FrameDecoder};
use legalchat_protocol::pb;
use legalchat_sdk::{Client, ClientConfig, Event};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

pub use legalchat_benches::tokens;

pub mod clamd;

/// Longest wait for any single expected event (a message, an answer, a close).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest any one test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs a test body with an overall deadline; running past it fails the test.
pub async fn bounded<F: Future<Output = ()>>(name: &str, body: F) {
    if tokio::time::timeout(TEST_TIMEOUT, body).await.is_err() {
        panic!("test {name} did not finish within {TEST_TIMEOUT:?}");
    }
}

/// A `legalchatd` process for one test. Dropping it kills the daemon; when the test is
/// failing (panicking), the daemon's stderr is printed first.
#[derive(Debug)]
pub struct TestDaemon {
    process: DaemonProcess,
    minter: TokenMinter,
}

impl TestDaemon {
    /// Starts `bin` with the standard test arguments (see [`DaemonProcess`]) plus `args`.
    pub async fn start_with(bin: impl AsRef<Path>, args: &[&str]) -> Self {
        let config = DaemonConfig::new(bin.as_ref()).args(args.iter().copied());
        let minter = TokenMinter::new(&config.jwt_secret);
        match DaemonProcess::start(config).await {
            Ok(process) => Self { process, minter },
            Err(e) => panic!("starting legalchatd: {e:#}"),
        }
    }

    /// The underlying process harness.
    pub fn process(&self) -> &DaemonProcess {
        &self.process
    }

    /// The QUIC address of the current run.
    pub fn quic_addr(&self) -> SocketAddr {
        self.process.quic_addr()
    }

    /// The ops HTTP address of the current run.
    pub fn ops_addr(&self) -> SocketAddr {
        self.process.ops_addr()
    }

    /// The TLS-over-TCP address of the current run.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.process.tcp_addr().unwrap_or_else(|| panic!("this daemon runs without its TCP listener"))
    }

    /// The daemon's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        self.process.data_dir()
    }

    /// The daemon's secret.
    pub fn jwt_secret(&self) -> &str {
        self.process.jwt_secret()
    }

    /// The development certificate to trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.process.ca_cert_pem().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A valid token for `user` with global role `role` ("advocate", "client", "admin").
    pub fn token(&self, user: &str, role: &str) -> String {
        self.minter.token(user, role).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A token with exactly `claims`, signed with the daemon's secret.
    pub fn token_with(&self, claims: &Claims) -> String {
        self.minter.sign(claims).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// SDK settings for `token` against the current run.
    pub fn client_config(&self, token: String) -> ClientConfig {
        let config = ClientConfig::new(self.quic_addr(), token).with_ca_pem(self.ca_pem()).with_server_name("localhost");
        match self.process.tcp_addr() {
            Some(tcp) => config.with_tcp_addr(tcp),
            None => config,
        }
    }

    /// Connects with `token`; the outcome is the caller's to judge.
    pub async fn connect_with_token(&self, token: String) -> Result<Client, legalchat_sdk::Error> {
        Client::connect(self.client_config(token)).await
    }

    /// A connected SDK client for `user`; connecting must succeed.
    pub async fn client(&self, user: &str, role: &str) -> Client {
        match self.connect_with_token(self.token(user, role)).await {
            Ok(c) => c,
            Err(e) => panic!("connecting {user} ({role}): {e}\n{}", self.process.stderr_tail()),
        }
    }

    /// A raw QUIC session (not yet authenticated).
    pub async fn raw_session(&self) -> RawSession {
        RawSession::connect(self.quic_addr(), &self.ca_pem()).await.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A raw session authenticated as `user`.
    pub async fn raw_session_as(&self, user: &str, role: &str) -> RawSession {
        let mut raw = self.raw_session().await;
        raw.authenticate(&self.token(user, role)).await.unwrap_or_else(|e| panic!("{e:#}"));
        raw
    }

    /// `GET path` on the ops listener.
    pub async fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.ops_addr(), path).await.unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// Graceful restart: SIGTERM, wait for a clean exit, start again on the same data dir.
    pub async fn restart(&mut self) {
        if let Err(e) = self.process.restart().await {
            panic!("graceful restart: {e:#}");
        }
    }

    /// `kill -9`, then start again on the same data dir.
    pub async fn kill9_and_restart(&mut self) {
        if let Err(e) = self.process.kill9_and_restart().await {
            panic!("kill -9 and restart: {e:#}");
        }
    }

    /// Starts again on the same data dir after [`kill9`](Self::kill9); the outcome is the
    /// caller's to judge.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.process.start_again().await
    }

    /// `kill -9` only.
    pub async fn kill9(&mut self) {
        if let Err(e) = self.process.kill9().await {
            panic!("kill -9: {e:#}");
        }
    }

    /// The daemon's stderr so far (the last lines), for assertion messages.
    pub fn stderr_tail(&self) -> String {
        self.process.stderr_tail()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.process.stderr_tail());
        }
    }
}

/// The next event of `client`, waiting until `deadline`; a timeout or a closed session
/// fails the test.
pub async fn next_event(client: &Client, deadline: Instant, what: &str) -> Event {
    match tokio::time::timeout_at(deadline, client.next_event()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{}: session ended while waiting for {what}", client.user_id()),
        Err(_) => panic!("{}: no event within {EVENT_TIMEOUT:?} while waiting for {what}", client.user_id()),
    }
}

/// Waits (bounded by [`EVENT_TIMEOUT`]) for a message for which `matches` holds; other
/// messages and other events are skipped. A `Goodbye` or `Closed` fails the test.
pub async fn wait_for_message(client: &Client, what: &str, matches: impl Fn(&pb::Message) -> bool) -> pb::Message {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match next_event(client, deadline, what).await {
            Event::Message(m) if matches(&m) => return m,
            Event::Goodbye { code, reason } => panic!("{}: Goodbye({code:?}: {reason}) while waiting for {what}", client.user_id()),
            Event::Closed { reason } => panic!("{}: session closed ({reason}) while waiting for {what}", client.user_id()),
            _ => {}
        }
    }
}

/// Collects messages of `conversation_id` until `done` says the collection is complete,
/// in arrival order. Bounded by `timeout`.
pub async fn collect_messages(
    client: &Client,
    conversation_id: &str,
    timeout: Duration,
    mut done: impl FnMut(&[pb::Message]) -> bool,
) -> Vec<pb::Message> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while !done(&got) {
        let what = format!("more messages of {conversation_id} (have {})", got.len());
        match next_event(client, deadline, &what).await {
            Event::Message(m) if m.conversation_id == conversation_id => got.push(m),
            Event::Goodbye { code, reason } => panic!("{}: Goodbye({code:?}: {reason}) while waiting for {what}", client.user_id()),
            Event::Closed { reason } => panic!("{}: session closed ({reason}) while waiting for {what}", client.user_id()),
            _ => {}
        }
    }
    got
}

/// The whole history of a conversation, oldest first, read forwards in pages of 100
/// (`After` cursors). Checks on the way that pages are ascending and contiguous.
pub async fn full_history(client: &Client, conversation_id: &str) -> Vec<pb::Message> {
    let mut all: Vec<pb::Message> = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .history(conversation_id, legalchat_sdk::HistoryCursor::After(after), 100)
            .await
            .unwrap_or_else(|e| panic!("{}: history of {conversation_id} after {after}: {e}", client.user_id()));
        assert!(page.messages.len() <= 100, "a page larger than its limit");
        for m in &page.messages {
            assert!(m.seq > after, "page after {after} holds seq {}", m.seq);
            after = m.seq;
        }
        if !page.has_more {
            all.extend(page.messages);
            return all;
        }
        // A page that claims more but holds nothing would loop forever.
        assert!(!page.messages.is_empty(), "has_more with an empty page after {after}");
        all.extend(page.messages);
    }
}

/// The text of a message (empty when it has no content).
pub fn text_of(m: &pb::Message) -> &str {
    m.content.as_ref().map_or("", |c| c.text.as_str())
}

/// A PDF-looking file of `size` bytes: the magic bytes, then pseudo-random bytes (which
/// compress to nothing, so that a scan of the disk cannot miss them in a compressed block).
pub fn pdf_bytes(size: usize) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut state = rand::random::<u64>() | 1;
    while out.len() < size {
        // xorshift: fast enough for 50 MB in a debug build.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A random lowercase hex string of `bytes * 2` characters, to make markers unique.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

// ───────────────────────────── raw sessions ─────────────────────────────

/// What a raw session saw next.
#[derive(Debug)]
pub enum RawEvent {
    /// A whole server frame (boxed: frames are large next to the other variant).
    Frame(Box<pb::ServerFrame>),
    /// The session stream or the connection ended; the string says how.
    Closed(String),
}

/// A session speaking frames directly over quinn, for inputs the SDK refuses to send.
#[derive(Debug)]
pub struct RawSession {
    // Kept so that the endpoint's driver lives as long as the session.
    _endpoint: quinn::Endpoint,
    /// The QUIC connection.
    pub connection: quinn::Connection,
    send: Option<quinn::SendStream>,
    recv: Option<quinn::RecvStream>,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl RawSession {
    /// Connects (TLS via the SDK's own settings, so ALPN and trust are the real ones). The
    /// session stream is opened lazily by the first write, as QUIC only announces a
    /// stream once data is sent on it.
    pub async fn connect(addr: SocketAddr, ca_pem: &[u8]) -> anyhow::Result<Self> {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).context("client endpoint")?;
        endpoint.set_default_client_config(legalchat_sdk::tls::client_config(ca_pem)?);
        let connecting = endpoint.connect(addr, "localhost").context("starting the QUIC handshake")?;
        let connection =
            tokio::time::timeout(EVENT_TIMEOUT, connecting).await.context("QUIC handshake timed out")?.context("QUIC handshake")?;
        // Allow the largest legitimate server frames (history pages) and then some.
        Ok(Self { _endpoint: endpoint, connection, send: None, recv: None, buf: BytesMut::new(), decoder: FrameDecoder::new(32 << 20) })
    }

    async fn streams(&mut self) -> anyhow::Result<(&mut quinn::SendStream, &mut quinn::RecvStream)> {
        if self.send.is_none() {
            let (send, recv) = self.connection.open_bi().await.context("opening the session stream")?;
            self.send = Some(send);
            self.recv = Some(recv);
        }
        match (self.send.as_mut(), self.recv.as_mut()) {
            (Some(s), Some(r)) => Ok((s, r)),
            _ => bail!("session stream missing"),
        }
    }

    /// Writes raw bytes to the session stream.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let (send, _) = self.streams().await?;
        send.write_all(bytes).await.context("writing to the session stream")
    }

    /// Writes one client frame.
    pub async fn send_frame(&mut self, frame: &pb::ClientFrame) -> anyhow::Result<()> {
        self.write_raw(&codec::encode(frame)).await
    }

    /// The next server frame, or the end of the session; fails after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<RawEvent> {
        let deadline = Instant::now() + timeout;
        let decoder = self.decoder;
        loop {
            match decoder.decode::<pb::ServerFrame>(&mut self.buf) {
                Ok(Some(frame)) => return Ok(RawEvent::Frame(Box::new(frame))),
                Ok(None) => {}
                Err(e) => bail!("the server sent an undecodable frame: {e}"),
            }
            let (_, recv) = self.streams().await?;
            let read = tokio::time::timeout_at(deadline, recv.read_chunk(64 * 1024, true))
                .await
                .with_context(|| format!("no frame and no close within {timeout:?}"))?;
            match read {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    if !self.buf.is_empty() {
                        return Ok(RawEvent::Closed(format!("stream finished mid-frame with {} bytes left", self.buf.len())));
                    }
                    return Ok(RawEvent::Closed("stream finished".into()));
                }
                Err(e) => return Ok(RawEvent::Closed(format!("stream ended: {e} ({e:?})"))),
            }
        }
    }

    /// The next frame, which must exist (not a close).
    pub async fn next_frame(&mut self, timeout: Duration) -> anyhow::Result<pb::ServerFrame> {
        match self.next(timeout).await? {
            RawEvent::Frame(f) => Ok(*f),
            RawEvent::Closed(how) => bail!("expected a frame, the session ended: {how}"),
        }
    }

    /// Reads until the session ends, skipping frames (bounded). Returns how it ended and
    /// the frames seen on the way.
    pub async fn until_closed(&mut self, timeout: Duration) -> anyhow::Result<(String, Vec<pb::ServerFrame>)> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                RawEvent::Frame(f) => frames.push(*f),
                RawEvent::Closed(how) => return Ok((how, frames)),
            }
        }
    }

    /// Sends `request` with `request_id` and returns the answer to it (an `Ack` or an
    /// `Error` with the same id), skipping events that arrive in between.
    pub async fn request(&mut self, request_id: u64, request: pb::client_frame::Request) -> anyhow::Result<pb::server_frame::Event> {
        self.send_frame(&pb::ClientFrame { request_id, request: Some(request) }).await?;
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next_frame(left).await?;
            match frame.event {
                Some(pb::server_frame::Event::Ack(a)) if a.request_id == request_id => return Ok(pb::server_frame::Event::Ack(a)),
                Some(pb::server_frame::Event::Error(e)) if e.request_id == request_id || e.request_id == 0 => {
                    return Ok(pb::server_frame::Event::Error(e));
                }
                Some(pb::server_frame::Event::Unauthorized(u)) => return Ok(pb::server_frame::Event::Unauthorized(u)),
                _ => {}
            }
        }
    }

    /// Authenticates with `token` (request id 1); must succeed.
    pub async fn authenticate(&mut self, token: &str) -> anyhow::Result<pb::Authenticated> {
        let auth = pb::Authenticate { token: token.to_owned(), client_info: "legalchat-tests raw session".into(), ..Default::default() };
        match self.request(1, pb::client_frame::Request::Authenticate(auth)).await? {
            pb::server_frame::Event::Ack(pb::Ack { result: Some(pb::ack::Result::Authenticated(a)), .. }) => Ok(a),
            other => bail!("authentication failed: {other:?}"),
        }
    }

    /// Waits (bounded) until the QUIC connection is closed, by either side; returns why.
    pub async fn connection_closed(&self, timeout: Duration) -> anyhow::Result<quinn::ConnectionError> {
        tokio::time::timeout(timeout, self.connection.closed())
            .await
            .with_context(|| format!("the connection was not closed within {timeout:?}"))
    }
}

// ───────────────────────────── a relay that can fail ─────────────────────────────

/// A UDP relay on loopback that forwards QUIC datagrams between one client and a server,
/// and can be told to lose some of them or all of them.
///
/// ```text
///  SDK client ──udp──► relay.addr() ─┬─ cut? drop : random loss? drop : forward ─► server
///             ◄──────────────────────┘                      (and the same way back)
/// ```
///
/// Point [`ClientConfig::server_addr`] at [`addr`](Self::addr). While [`cut`](Self::cut),
/// nothing passes either way: a client whose QUIC idle timeout runs out meanwhile loses
/// its connection and reconnects once [`heal`](Self::heal)ed — exactly what a dead Wi-Fi
/// or a tunnel does to a phone. The relay follows the client's newest address, so a
/// client on a new UDP port is served too.
#[derive(Debug)]
pub struct UdpRelay {
    addr: SocketAddr,
    control: std::sync::Arc<RelayControl>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct RelayControl {
    cut: std::sync::atomic::AtomicBool,
    loss_per_mille: std::sync::atomic::AtomicU32,
    forwarded: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
}

impl RelayControl {
    /// Whether the next datagram passes.
    fn passes(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let loss = self.loss_per_mille.load(Relaxed);
        let pass = !self.cut.load(Relaxed) && (loss == 0 || rand::random_range(0..1_000) >= loss);
        if pass {
            self.forwarded.fetch_add(1, Relaxed)
        } else {
            self.dropped.fetch_add(1, Relaxed)
        };
        pass
    }
}

impl UdpRelay {
    /// Starts relaying between a new loopback port and `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let front = tokio::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the relay's client side")?;
        let back = tokio::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the relay's server side")?;
        back.connect(upstream).await.with_context(|| format!("connecting the relay to {upstream}"))?;
        let addr = front.local_addr()?;
        let control = std::sync::Arc::new(RelayControl::default());
        let task = tokio::spawn(relay(front, back, std::sync::Arc::clone(&control)));
        Ok(Self { addr, control, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every datagram, both ways, until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.control.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forwards datagrams again.
    pub fn heal(&self) {
        self.control.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the relay is cut.
    pub fn is_cut(&self) -> bool {
        self.control.cut.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops each datagram with probability `per_mille` / 1000 (both ways), as a lossy
    /// network does; QUIC retransmits.
    pub fn set_loss(&self, per_mille: u32) {
        self.control.loss_per_mille.store(per_mille.min(1_000), std::sync::atomic::Ordering::Relaxed);
    }

    /// Datagrams forwarded and dropped so far.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.control.forwarded.load(Relaxed), self.control.dropped.load(Relaxed))
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(front: tokio::net::UdpSocket, back: tokio::net::UdpSocket, control: std::sync::Arc<RelayControl>) {
    // Larger than any QUIC datagram.
    let mut from_client = vec![0u8; 65_536];
    let mut from_server = vec![0u8; 65_536];
    let mut client: Option<SocketAddr> = None;
    loop {
        tokio::select! {
            r = front.recv_from(&mut from_client) => {
                let Ok((n, peer)) = r else { continue };
                client = Some(peer);
                if control.passes() {
                    let _ = back.send(&from_client[..n]).await;
                }
            }
            r = back.recv(&mut from_server) => {
                // An ICMP "port unreachable" surfaces as an error here; keep going.
                let Ok(n) = r else { continue };
                if let Some(peer) = client
                    && control.passes()
                {
                    let _ = front.send_to(&from_server[..n], peer).await;
                }
            }
        }
    }
}

// ───────────────────────────── ops HTTP ─────────────────────────────

/// An HTTP response from the ops listener.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header block (lowercase names kept as sent).
    pub headers: String,
    /// Body (chunked encoding removed).
    pub body: String,
}

/// `GET path` over plain HTTP/1.1 with `Connection: close`, bounded by [`EVENT_TIMEOUT`].
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(EVENT_TIMEOUT, exchange).await.context("HTTP request timed out")??;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 =
        status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("bad status line {status_line:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok(HttpResponse { status, headers: head, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_hex:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).context("truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_http_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r =
            parse_http_response(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
        assert!(parse_http_response(b"garbage").is_err());
    }
}
