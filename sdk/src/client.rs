//! The async driver: one QUIC connection, one session stream, a reader task and a
//! writer task around the IO-free logic of [`crate::session`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use legalchat_protocol::codec::{self, DecodeError, FrameDecoder, LENGTH_PREFIX_LEN};
use legalchat_protocol::pb;
use legalchat_protocol::validate::{self, ValidationError};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, warn};

use crate::session::{self, PendingRequests, Routed, SessionInfo, answer};
use crate::{ClientConfig, Error, Event, HistoryCursor, NewConversation, Result, Sent, tls};

/// Request id of `Authenticate`, the first request of every session.
const AUTH_REQUEST_ID: u64 = 1;
/// Frames queued for the writer task. Each is at most one server frame size, so the
/// queue holds at most a few MiB; callers beyond it wait.
const OUTBOUND_QUEUE: usize = 256;
/// Most bytes taken off the stream per read.
const READ_CHUNK: usize = 64 * 1024;
/// How long each step of a graceful close may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Application close code for "goodbye, all is well".
const CLOSE_NORMAL: u32 = 0;
/// Application close code when the server sent bytes this client cannot frame. The
/// same table as the daemon's close codes (0 normal, 1 unauthorized, 2 protocol).
const CLOSE_PROTOCOL: u32 = 2;

/// A connected, authenticated LegalChat session.
///
/// Cheap to clone: clones share one connection, and may be used from many tasks at once;
/// requests are multiplexed on the session stream and answered independently. The
/// connection is closed when [`close`](Client::close) is called or the last clone is
/// dropped.
///
/// Events (new messages, conversation changes) queue up for
/// [`next_event`](Client::next_event). **Drain them**: when the queue is full the client
/// stops reading from the server, so answers to requests stall too, and the server
/// eventually ends a session that lags too far behind.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    session: SessionInfo,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    outbound: mpsc::Sender<Outbound>,
    pending: Arc<Mutex<PendingRequests>>,
    in_flight: Semaphore,
    next_request_id: AtomicU64,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    request_timeout: Duration,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without this, keep-alives would hold the connection open for as long as the
        // reader task lives, i.e. forever.
        self.connection.close(CLOSE_NORMAL.into(), b"client dropped");
    }
}

/// What the writer task sends.
#[derive(Debug)]
enum Outbound {
    /// One encoded frame.
    Frame(Bytes),
    /// Finish the stream after everything queued before.
    Finish,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.connection.remote_address())
            .field("user_id", &self.inner.session.user_id)
            .field("session_id", &self.inner.session.session_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the server, authenticates with the configured token, and starts the
    /// session.
    ///
    /// Fails with [`Error::Unauthorized`] when the server refuses the token,
    /// [`Error::Tls`] when its certificate is not trusted, [`Error::Connect`] when it
    /// cannot be reached within [`ClientConfig::connect_timeout`].
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let quic_config = tls::client_config(&config.ca_cert_pem)?;
        let bind: SocketAddr =
            if config.server_addr.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
        let endpoint = quinn::Endpoint::client(bind).map_err(|e| Error::Connect(format!("cannot open a UDP socket on {bind}: {e}")))?;
        let deadline = Instant::now() + config.connect_timeout;
        match establish(&endpoint, quic_config, &config, deadline).await {
            Ok((connection, session, reader, send)) => Ok(Client::start(config, endpoint, connection, session, reader, send)),
            Err(e) => {
                endpoint.close(CLOSE_NORMAL.into(), b"");
                Err(e)
            }
        }
    }

    fn start(
        config: ClientConfig,
        endpoint: quinn::Endpoint,
        connection: quinn::Connection,
        session: SessionInfo,
        reader: FrameReader,
        send: quinn::SendStream,
    ) -> Client {
        let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(config.event_buffer);
        let pending = Arc::new(Mutex::new(PendingRequests::default()));
        tokio::spawn(read_loop(reader, Arc::clone(&pending), events_tx, connection.clone()));
        let writer = tokio::spawn(write_loop(send, outbound_rx));
        debug!(user_id = %session.user_id, session_id = %session.session_id, "session established");
        Client {
            inner: Arc::new(Inner {
                session,
                connection,
                endpoint,
                outbound: outbound_tx,
                pending,
                in_flight: Semaphore::new(config.max_in_flight),
                next_request_id: AtomicU64::new(AUTH_REQUEST_ID + 1),
                events: tokio::sync::Mutex::new(events_rx),
                request_timeout: config.request_timeout,
                writer: Mutex::new(Some(writer)),
            }),
        }
    }

    /// The authenticated user's id.
    pub fn user_id(&self) -> &str {
        &self.inner.session.user_id
    }

    /// The authenticated user's global role.
    pub fn role(&self) -> pb::UserRole {
        self.inner.session.role
    }

    /// The server-assigned session id (quote it to support).
    pub fn session_id(&self) -> &str {
        &self.inner.session.session_id
    }

    /// Everything the server announced when it accepted the token, limits included.
    pub fn session(&self) -> &SessionInfo {
        &self.inner.session
    }

    /// Why the session ended, once it has; `None` while it is open.
    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.inner.pending).closed_reason().map(str::to_owned)
    }

    /// Creates a group, case or support conversation (or a private one; see also
    /// [`private_chat`](Self::private_chat)). The caller becomes its admin.
    pub async fn create_conversation(&self, new: NewConversation) -> Result<pb::Conversation> {
        new.validate()?;
        let reply = self.request(pb::client_frame::Request::CreateConversation(new.into_request())).await?;
        answer::conversation("CreateConversation", reply)
    }

    /// The private conversation between the caller and `other_user`, created if the
    /// pair has none yet.
    pub async fn private_chat(&self, other_user: &str) -> Result<pb::Conversation> {
        self.create_conversation(NewConversation::private(other_user)).await
    }

    /// One conversation the caller participates in.
    pub async fn get_conversation(&self, id: &str) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", id)?;
        let request = pb::GetConversation { conversation_id: id.to_owned() };
        let reply = self.request(pb::client_frame::Request::GetConversation(request)).await?;
        answer::conversation("GetConversation", reply)
    }

    /// The caller's conversations, most recently active first, each with its last
    /// message and unread count. `limit` is 1..=500; 0 means the server default (100).
    pub async fn list_conversations(&self, limit: u32) -> Result<Vec<pb::Conversation>> {
        validate::list_limit(limit)?;
        let reply = self.request(pb::client_frame::Request::ListConversations(pb::ListConversations { limit })).await?;
        answer::conversations(reply)
    }

    /// Adds `users` to a group, case or support conversation with conversation role
    /// `role` ([`pb::ParticipantRole::Unspecified`] means member). Users already present
    /// are ignored.
    pub async fn add_participants(&self, conv: &str, users: &[&str], role: pb::ParticipantRole) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", conv)?;
        let user_ids: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        if user_ids.is_empty() {
            return Err(ValidationError::new("user_ids", "must name at least one user").into());
        }
        validate::participant_ids("user_ids", &user_ids)?;
        let request = pb::AddParticipants { conversation_id: conv.to_owned(), user_ids, role: role as i32 };
        let reply = self.request(pb::client_frame::Request::AddParticipants(request)).await?;
        answer::conversation("AddParticipants", reply)
    }

    /// Removes `user` from a conversation; with the caller's own id, leaves it.
    pub async fn remove_participant(&self, conv: &str, user: &str) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", conv)?;
        validate::user_id("user_id", user)?;
        let request = pb::RemoveParticipant { conversation_id: conv.to_owned(), user_id: user.to_owned() };
        let reply = self.request(pb::client_frame::Request::RemoveParticipant(request)).await?;
        answer::conversation("RemoveParticipant", reply)
    }

    /// Sends a plain-text message with a fresh client message id. Returns once the
    /// message is durably stored.
    ///
    /// To retry safely after [`Error::Timeout`] or a lost connection, use
    /// [`send`](Self::send) with an id from [`new_client_message_id`](crate::new_client_message_id)
    /// kept across attempts.
    pub async fn send_text(&self, conv: &str, text: &str) -> Result<Sent> {
        let content =
            pb::MessageContent { text: text.to_owned(), r#type: pb::ContentType::Text as i32, format: pb::TextFormat::Plain as i32 };
        self.send(conv, &crate::new_client_message_id(), content).await
    }

    /// Sends a message with a caller-chosen client message id. Sending again with the
    /// same id stores nothing new and returns the first send's receipt with
    /// [`Sent::duplicate`] set.
    pub async fn send(&self, conv: &str, client_message_id: &str, content: pb::MessageContent) -> Result<Sent> {
        validate::parse_id("conversation_id", conv)?;
        validate::client_message_id(client_message_id)?;
        validate::message_content(Some(&content), self.inner.session.max_message_bytes)?;
        let request =
            pb::SendMessage { conversation_id: conv.to_owned(), client_message_id: client_message_id.to_owned(), content: Some(content) };
        let reply = self.request(pb::client_frame::Request::SendMessage(request)).await?;
        let accepted = answer::message_accepted(reply)?;
        if !accepted.conversation_id.is_empty() && accepted.conversation_id != conv {
            return Err(Error::Protocol(format!(
                "a message sent to {conv} was acknowledged for conversation {}",
                accepted.conversation_id
            )));
        }
        Ok(accepted.into())
    }

    /// A page of a conversation's history, in ascending seq order. `limit` is 1..=100;
    /// 0 means the server default (50).
    pub async fn history(&self, conv: &str, cursor: HistoryCursor, limit: u32) -> Result<pb::HistoryPage> {
        validate::parse_id("conversation_id", conv)?;
        validate::history_limit(limit)?;
        let request = pb::GetHistory { conversation_id: conv.to_owned(), cursor: cursor.into_pb(), limit };
        let reply = self.request(pb::client_frame::Request::GetHistory(request)).await?;
        answer::history(reply)
    }

    /// Measures the round trip to the server through the session stream.
    pub async fn ping(&self) -> Result<Duration> {
        let nonce: u64 = rand::random();
        let started = Instant::now();
        let reply = self.request(pb::client_frame::Request::Ping(pb::Ping { nonce })).await?;
        let pong = answer::pong(reply)?;
        if pong.nonce != nonce {
            return Err(Error::Protocol(format!("Pong carries nonce {} instead of {nonce}", pong.nonce)));
        }
        Ok(started.elapsed())
    }

    /// The next event, waiting for one if none is queued. `None` once the session has
    /// closed and every event, the final [`Event::Closed`] included, has been taken.
    ///
    /// Events are delivered in the order the server sent them. When several tasks call
    /// this at once, each event goes to one of them.
    pub async fn next_event(&self) -> Option<Event> {
        self.inner.events.lock().await.recv().await
    }

    /// Ends the session gracefully: sends what is queued, finishes the session stream,
    /// closes the connection with code 0, and waits briefly (about two seconds at most)
    /// for the close to reach the server. Requests still waiting fail with
    /// [`Error::Closed`]; [`next_event`](Self::next_event) yields the remaining events,
    /// then [`Event::Closed`], then `None`.
    pub async fn close(&self) {
        let inner = &*self.inner;
        let writer = lock(&inner.writer).take();
        if let Some(writer) = writer {
            // The writer flushes, finishes the stream and waits (bounded) for the server to
            // acknowledge it; only then is closing the connection free of data loss.
            if timeout(CLOSE_GRACE, inner.outbound.send(Outbound::Finish)).await.is_ok() {
                let _ = timeout(CLOSE_GRACE, writer).await;
            }
        }
        inner.connection.close(CLOSE_NORMAL.into(), b"client closed the session");
        let _ = timeout(CLOSE_GRACE, inner.endpoint.wait_idle()).await;
    }

    /// Sends one request and waits for its answer, within the request timeout.
    async fn request(&self, request: pb::client_frame::Request) -> Result<pb::ack::Result> {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.request_timeout;
        let request_id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let frame = codec::encode(&pb::ClientFrame { request_id, request: Some(request) });
        let body_len = frame.len().saturating_sub(LENGTH_PREFIX_LEN);
        if body_len > inner.session.max_frame_size {
            // The server would end the whole session over it; refuse it here instead.
            return Err(ValidationError::new(
                "frame",
                format!("the request is {body_len} bytes; the server accepts at most {}", inner.session.max_frame_size),
            )
            .into());
        }

        let _slot = match timeout_at(deadline, inner.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it as a closed session if it ever is.
            Ok(Err(_)) => return Err(self.closed_error()),
            Err(_) => return Err(Error::Timeout),
        };
        let answer = lock(&inner.pending).register(request_id)?;
        let _forget = ForgetOnDrop { pending: &inner.pending, request_id };
        let exchange = async {
            inner.outbound.send(Outbound::Frame(frame)).await.map_err(|_| self.closed_error())?;
            answer.await.map_err(|_| self.closed_error())?
        };
        timeout_at(deadline, exchange).await.map_err(|_| Error::Timeout)?
    }

    fn closed_error(&self) -> Error {
        let pending = lock(&self.inner.pending);
        Error::Closed(pending.closed_reason().unwrap_or("the session stream is closed").to_owned())
    }
}

/// Removes a request's entry from the pending table when its caller stops waiting, be
/// it by answer, timeout or cancellation, so that abandoned requests do not accumulate.
struct ForgetOnDrop<'a> {
    pending: &'a Mutex<PendingRequests>,
    request_id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        lock(self.pending).forget(self.request_id);
    }
}

/// Locks a mutex that guards plain data; a panic elsewhere while holding it cannot
/// leave that data half-updated in a way that matters, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handshake, session stream, `Authenticate`, and its answer, all before `deadline`.
async fn establish(
    endpoint: &quinn::Endpoint,
    quic_config: quinn::ClientConfig,
    config: &ClientConfig,
    deadline: Instant,
) -> Result<(quinn::Connection, SessionInfo, FrameReader, quinn::SendStream)> {
    let addr = config.server_addr;
    let connecting = endpoint.connect_with(quic_config, addr, &config.server_name).map_err(|e| Error::Connect(format!("{addr}: {e}")))?;
    let connection = match timeout_at(deadline, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return Err(handshake_error(addr, &e)),
        Err(_) => return Err(Error::Connect(format!("no answer from {addr}; is the server running and reachable?"))),
    };

    let authenticated = async {
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| Error::Connect(format!("cannot open the session stream: {}", describe_connection_error(&e))))?;
        let hello = pb::ClientFrame {
            request_id: AUTH_REQUEST_ID,
            request: Some(pb::client_frame::Request::Authenticate(pb::Authenticate {
                token: config.token.clone(),
                client_info: config.client_info.clone(),
            })),
        };
        send.write_all(&codec::encode(&hello))
            .await
            .map_err(|e| refused_during_auth(&connection, &format!("cannot send Authenticate: {e}")))?;

        let mut reader = FrameReader::new(recv, config.max_inbound_frame);
        loop {
            match reader.read_frame().await {
                Ok(Some(frame)) => match session::authentication_outcome(frame, AUTH_REQUEST_ID) {
                    Some(Ok(session)) => return Ok((session, reader, send)),
                    Some(Err(e)) => return Err(e),
                    None => debug!("ignored a frame of an unknown kind before authentication"),
                },
                Ok(None) => {
                    return Err(refused_during_auth(&connection, "the server ended the session without answering Authenticate"));
                }
                Err(failure) => return Err(refused_during_auth(&connection, &failure.describe())),
            }
        }
    };
    match timeout_at(deadline, authenticated).await {
        Ok(Ok((session, reader, send))) => Ok((connection, session, reader, send)),
        Ok(Err(e)) => {
            connection.close(CLOSE_NORMAL.into(), b"");
            Err(e)
        }
        Err(_) => {
            connection.close(CLOSE_NORMAL.into(), b"");
            Err(Error::Connect(format!("{addr} accepted the connection but did not answer Authenticate in time")))
        }
    }
}

/// The error for a session that ended while authenticating. A server that closes the
/// connection with application code `UNAUTHORIZED` (1) refused the token, whether or not
/// its `Unauthorized` frame made it through before the close.
fn refused_during_auth(connection: &quinn::Connection, what: &str) -> Error {
    match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) if close.error_code.into_inner() == pb::ErrorCode::Unauthorized as u64 => {
            let reason = String::from_utf8_lossy(&close.reason);
            Error::Unauthorized(if reason.is_empty() { "the server refused the token".into() } else { reason.into_owned() })
        }
        Some(e) => Error::Connect(format!("{what}: {}", describe_connection_error(&e))),
        None => Error::Connect(what.to_owned()),
    }
}

/// Maps a failed QUIC handshake to the error that tells the user what to fix.
fn handshake_error(addr: SocketAddr, e: &quinn::ConnectionError) -> Error {
    // QUIC carries TLS alerts as transport error codes 0x100..=0x1ff.
    let is_tls = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if is_tls(t.code) => {
            Error::Tls(format!("the certificate of {addr} is not trusted or does not match: {t}"))
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_tls(c.error_code) => Error::Tls(format!("{addr} refused the TLS handshake: {c}")),
        quinn::ConnectionError::TimedOut => Error::Connect(format!("no answer from {addr}; is the server running and reachable?")),
        other => Error::Connect(format!("{addr}: {}", describe_connection_error(other))),
    }
}

/// A sentence saying why a connection ended.
fn describe_connection_error(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as C;
    match e {
        C::LocallyClosed => "closed by this client".into(),
        C::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            if reason.is_empty() {
                format!("the server closed the connection (code {})", close.error_code)
            } else {
                format!("the server closed the connection: {reason}")
            }
        }
        C::TimedOut => format!("nothing heard from the server for {} s", tls::IDLE_TIMEOUT.as_secs()),
        C::Reset => "the server reset the connection (it may have restarted)".into(),
        C::ConnectionClosed(close) => format!("the server's QUIC stack aborted the connection: {close}"),
        C::TransportError(t) => format!("QUIC transport error: {t}"),
        other => other.to_string(),
    }
}

/// Why reading frames stopped.
#[derive(Debug)]
enum ReadFailure {
    /// The server sent bytes that are not a valid frame.
    Decode(DecodeError),
    /// The stream ended inside a frame.
    Truncated(usize),
    /// The stream or connection failed.
    Stream(quinn::ReadError),
}

impl ReadFailure {
    fn describe(&self) -> String {
        match self {
            ReadFailure::Decode(e) => format!("the server sent an invalid frame: {e}"),
            ReadFailure::Truncated(n) => format!("the server ended the session stream inside a frame ({n} bytes left over)"),
            ReadFailure::Stream(quinn::ReadError::ConnectionLost(e)) => describe_connection_error(e),
            ReadFailure::Stream(quinn::ReadError::Reset(code)) => format!("the server reset the session stream (code {code})"),
            ReadFailure::Stream(e) => format!("session stream: {e}"),
        }
    }

    /// Whether the byte stream itself is broken (as opposed to the connection ending).
    fn is_malformed(&self) -> bool {
        matches!(self, ReadFailure::Decode(_) | ReadFailure::Truncated(_))
    }
}

/// Frames off the session stream (mini-redis' `Connection::read_frame`).
struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameReader {
    fn new(recv: quinn::RecvStream, max_frame: usize) -> Self {
        Self { recv, buf: BytesMut::with_capacity(READ_CHUNK), decoder: FrameDecoder::new(max_frame) }
    }

    /// The next frame; `Ok(None)` when the server finished the stream cleanly between
    /// frames. The buffer never holds more than one maximal frame plus one read, because
    /// the decoder rejects an oversized length before its body is read.
    async fn read_frame(&mut self) -> Result<Option<pb::ServerFrame>, ReadFailure> {
        loop {
            if let Some(frame) = self.decoder.decode::<pb::ServerFrame>(&mut self.buf).map_err(ReadFailure::Decode)? {
                return Ok(Some(frame));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(ReadFailure::Truncated(self.buf.len())),
                Err(e) => return Err(ReadFailure::Stream(e)),
            }
        }
    }
}

/// The reader task: routes answers to their requests and events to the queue until the
/// session ends, then fails what still waits and queues [`Event::Closed`].
async fn read_loop(
    mut reader: FrameReader,
    pending: Arc<Mutex<PendingRequests>>,
    events: mpsc::Sender<Event>,
    connection: quinn::Connection,
) {
    // A Goodbye or session-level error names the real reason better than the connection
    // close that follows it.
    let mut announced_end: Option<String> = None;
    let reason = loop {
        let frame = match reader.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break announced_end.take().unwrap_or_else(|| "the server ended the session".into()),
            Err(failure) => {
                if failure.is_malformed() {
                    warn!(error = %failure.describe(), "closing the session");
                    connection.close(CLOSE_PROTOCOL.into(), b"malformed frame");
                }
                break announced_end.take().unwrap_or_else(|| failure.describe());
            }
        };
        match session::route(frame) {
            Routed::Reply { request_id, reply } => {
                if !lock(&pending).complete(request_id, reply) {
                    debug!(request_id, "answer arrived after its caller stopped waiting");
                }
            }
            Routed::Event(event) => {
                if let Event::Goodbye { code, reason } = &event {
                    announced_end.get_or_insert_with(|| session::goodbye_reason(*code, reason));
                }
                // Wait for room in the queue (back-pressure on the server) but notice a
                // dead connection meanwhile, so waiting requests fail now rather than at
                // their timeout.
                let permit = tokio::select! {
                    permit = events.reserve() => permit,
                    e = connection.closed() => {
                        let reason = announced_end.clone().unwrap_or_else(|| describe_connection_error(&e));
                        lock(&pending).close(&reason);
                        events.reserve().await
                    }
                };
                match permit {
                    Ok(permit) => permit.send(event),
                    Err(_) => break "the client was dropped".into(),
                }
            }
            Routed::SessionError(reason) => {
                warn!(%reason, "session-level error from the server");
                announced_end.get_or_insert(reason);
            }
            Routed::Ignore(why) => debug!(why, "ignored a frame"),
        }
    };
    debug!(%reason, "session ended");
    lock(&pending).close(&reason);
    let final_reason = lock(&pending).closed_reason().unwrap_or(&reason).to_owned();
    let _ = events.send(Event::Closed { reason: final_reason }).await;
}

/// The writer task: the only owner of the send half of the session stream.
async fn write_loop(mut send: quinn::SendStream, mut outbound: mpsc::Receiver<Outbound>) {
    while let Some(item) = outbound.recv().await {
        match item {
            Outbound::Frame(frame) => {
                if let Err(e) = send.write_chunk(frame).await {
                    debug!(error = %e, "session stream closed for writing");
                    return;
                }
            }
            Outbound::Finish => break,
        }
    }
    // Finish after the last frame (on `close`, or when every `Client` is gone), and wait
    // until the server has acknowledged everything, so that closing the connection next
    // cannot drop a frame in flight.
    if send.finish().is_ok() {
        let _ = timeout(CLOSE_GRACE, send.stopped()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_read_as_sentences() {
        let closed = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: 0u32.into(),
            reason: Bytes::from_static(b"server shutting down"),
        });
        assert_eq!(describe_connection_error(&closed), "the server closed the connection: server shutting down");
        assert_eq!(describe_connection_error(&quinn::ConnectionError::LocallyClosed), "closed by this client");
        assert!(describe_connection_error(&quinn::ConnectionError::TimedOut).contains("30 s"));
    }

    #[test]
    fn handshake_timeouts_say_where() {
        let addr: SocketAddr = ([127, 0, 0, 1], 7443).into();
        let err = handshake_error(addr, &quinn::ConnectionError::TimedOut);
        assert!(matches!(&err, Error::Connect(m) if m.contains("127.0.0.1:7443")), "{err}");
    }

    #[test]
    fn read_failures_describe_themselves() {
        let f = ReadFailure::Decode(DecodeError::TooLarge { len: 99, max: 10 });
        assert!(f.is_malformed());
        assert!(f.describe().contains("invalid frame"));
        let f = ReadFailure::Stream(quinn::ReadError::Reset(3u32.into()));
        assert!(!f.is_malformed());
        assert_eq!(f.describe(), "the server reset the session stream (code 3)");
    }
}
