//! One client session: a QUIC connection's session stream, from `Authenticate` to goodbye.
//!
//! ```text
//!  RecvStream ─► FrameReader ─► dispatch ──try_send──► shard mailbox
//!                                  │                        │ (after commit)
//!                                  └─ reply task ◄─oneshot──┘
//!                                        │
//!  SendStream ◄─ writer task ◄── outbound queue (bounded) ◄── Bus fan-out
//! ```
//!
//! The reader never waits on a shard: a full mailbox is answered OVERLOADED at once, and
//! the number of requests in flight is capped by a semaphore, which back-pressures the
//! client's stream rather than growing memory. Requests about the same conversation go to
//! the same shard mailbox in the order they were read, so their effects keep that order.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, oneshot, watch};

use legalchat_protocol::codec::{self, DecodeError, FrameDecoder};
use legalchat_protocol::pb::{self, ErrorCode, client_frame::Request, server_frame::Event};
use legalchat_protocol::validate::{self, ValidationError, format_id};

use crate::auth::{Authenticator, Identity};
use crate::bus::Bus;
use crate::directory::Directory;
use crate::ids;
use crate::outbound;
use crate::policy::RequestError;
use crate::push::PushHandle;
use crate::realtime::Hub;
use crate::registry::{Kick, SessionHandle, SessionId};
use crate::shard::{CatchUpPart, Command, CreateSpec, Cursor, EventRequest, SendReply, SettingsUpdate, Shards};
use crate::store::{ConversationKey, Store};

/// QUIC application close codes.
pub mod close_code {
    /// Normal end.
    pub const NORMAL: u32 = 0;
    /// Authentication failed or missing.
    pub const UNAUTHORIZED: u32 = 1;
    /// A frame broke the protocol.
    pub const PROTOCOL: u32 = 2;
    /// The session fell behind (slow consumer).
    pub const OVERLOADED: u32 = 3;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 4;
}

/// Limits a session enforces.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest frame body accepted.
    pub max_frame_size: usize,
    /// Largest message text.
    pub max_message_size: usize,
    /// Time allowed to authenticate.
    pub auth_timeout: Duration,
    /// Outbound queue bound, in frames.
    pub outbound: usize,
    /// Requests in flight.
    pub inflight: usize,
    /// Sessions one connection may carry.
    pub sessions_per_connection: usize,
}

/// Everything sessions share.
#[derive(Debug)]
pub struct SessionContext {
    /// Shard mailboxes.
    pub shards: Shards,
    /// Connected sessions.
    pub registry: Arc<dyn Bus>,
    /// Storage (membership index reads).
    pub store: Arc<dyn Store>,
    /// Known users.
    pub directory: Arc<Directory>,
    /// Token verification.
    pub auth: Authenticator,
    /// Limits.
    pub limits: SessionLimits,
    /// Flips to true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Rooms, typing, room presence.
    pub hub: Arc<Hub>,
    /// Push registration.
    pub push: PushHandle,
    next_id: AtomicU64,
}

impl SessionContext {
    /// A context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shards: Shards,
        registry: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        auth: Authenticator,
        limits: SessionLimits,
        shutdown: watch::Receiver<bool>,
        hub: Arc<Hub>,
        push: PushHandle,
    ) -> Self {
        Self { shards, registry, store, directory, auth, limits, shutdown, hub, push, next_id: AtomicU64::new(1) }
    }
}

/// Why reading a frame stopped.
#[derive(Debug)]
enum ReadError {
    Decode(DecodeError),
    Stream(String),
}

/// Reads whole frames off a QUIC stream, never buffering past the frame being read.
struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameReader {
    async fn next(&mut self) -> Result<Option<pb::ClientFrame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).map_err(ReadError::Decode)? {
                return Ok(Some(frame));
            }
            let want = self.decoder.missing(&self.buf).max(1);
            match self.recv.read_chunk(want, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(ReadError::Stream("stream ended inside a frame".into())),
                Err(e) => return Err(ReadError::Stream(e.to_string())),
            }
        }
    }
}

fn error_frame(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Error(pb::Error { request_id, code: code as i32, message: message.into() })) })
}

fn ack_frame(request_id: u64, result: pb::ack::Result) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Ack(pb::Ack { request_id, result: Some(result) })) })
}

fn unauthorized_frame(reason: &str) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Unauthorized(pb::Unauthorized { reason: reason.to_owned() })) })
}

fn goodbye_frame(code: ErrorCode, reason: &str) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Goodbye(pb::Goodbye { code: code as i32, reason: reason.to_owned() })) })
}

/// Bidirectional streams a client may open on a new connection. Most connections carry one
/// session; the limit grows as a multiplexing client opens more.
pub const INITIAL_STREAMS: u32 = 4;

/// What the sessions of one QUIC connection share.
struct Link {
    conn: quinn::Connection,
    most_sessions: usize,
    state: std::sync::Mutex<LinkState>,
}

struct LinkState {
    /// Session streams accepted and not yet ended, authenticated or not.
    open: usize,
    /// Concurrent bidirectional streams granted to the client so far.
    stream_limit: u32,
    /// Whom typing datagrams on this connection speak for.
    speaker: Speaker,
}

/// A datagram belongs to no stream, so it can only speak for the connection's user.
enum Speaker {
    /// No session has authenticated yet.
    Nobody,
    /// Every authenticated session on the connection is this user's.
    One(Arc<str>),
    /// Sessions of more than one user have shared the connection: datagrams are ignored
    /// from now on.
    Mixed,
}

impl Link {
    fn new(conn: quinn::Connection, most_sessions: usize) -> Self {
        let state = LinkState { open: 0, stream_limit: INITIAL_STREAMS, speaker: Speaker::Nobody };
        Self { conn, most_sessions, state: std::sync::Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes on one more session stream, unless the connection carries its maximum.
    /// Keeps a little headroom of streams open to the client so that opening the next
    /// session never waits on a round trip for credit.
    fn open(&self) -> bool {
        let mut s = self.state();
        if s.open >= self.most_sessions {
            return false;
        }
        s.open += 1;
        let ceiling = u32::try_from(self.most_sessions).unwrap_or(u32::MAX).saturating_add(INITIAL_STREAMS);
        let wanted = u32::try_from(s.open).unwrap_or(u32::MAX).saturating_add(2);
        if wanted > s.stream_limit && s.stream_limit < ceiling {
            s.stream_limit = s.stream_limit.saturating_mul(2).max(wanted).min(ceiling);
            self.conn.set_max_concurrent_bi_streams(s.stream_limit.into());
        }
        true
    }

    fn authenticated(&self, user: &str) {
        let mut s = self.state();
        match &s.speaker {
            Speaker::Nobody => s.speaker = Speaker::One(user.into()),
            Speaker::One(u) if &**u != user => s.speaker = Speaker::Mixed,
            Speaker::One(_) | Speaker::Mixed => {}
        }
    }

    /// The user typing datagrams on this connection speak for, if there is one.
    fn datagram_user(&self) -> Option<Arc<str>> {
        match &self.state().speaker {
            Speaker::One(user) => Some(user.clone()),
            Speaker::Nobody | Speaker::Mixed => None,
        }
    }

    /// One session stream ended. The last one takes the connection with it, closed with
    /// that session's code and reason; a connection nobody uses is not kept open.
    fn close_one(&self, code: u32, reason: &str) {
        let mut s = self.state();
        s.open = s.open.saturating_sub(1);
        if s.open == 0 {
            drop(s);
            self.conn.close(code.into(), reason.as_bytes());
        }
    }
}

/// Writes a last frame on a session stream, finishes it, and waits (bounded) for the
/// peer to have it.
async fn send_last(mut send: quinn::SendStream, frame: Bytes) {
    let _ = send.write_all(&frame).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

/// Ends a session with a last frame (and the connection, when it was the last session on
/// it).
async fn refuse(link: &Link, send: quinn::SendStream, frame: Bytes, code: u32, reason: &str) {
    send_last(send, frame).await;
    link.close_one(code, reason);
}

/// Serves one QUIC connection until it ends. Every bidirectional stream the client opens
/// is a session of its own, authenticated by its own first frame: a native app opens one,
/// while a client that multiplexes (a bridge, a load generator, an app with several
/// accounts) may carry up to `max_sessions_per_connection` on one connection.
pub async fn serve_connection(conn: quinn::Connection, ctx: Arc<SessionContext>) {
    let link = Arc::new(Link::new(conn.clone(), ctx.limits.sessions_per_connection));
    let first = match tokio::time::timeout(ctx.limits.auth_timeout, conn.accept_bi()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return,
        Err(_) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "timeout").increment(1);
            conn.close(close_code::UNAUTHORIZED.into(), b"authentication timed out");
            return;
        }
    };
    let datagrams = tokio::spawn(read_datagrams(link.clone(), ctx.clone()));
    let mut sessions = tokio::task::JoinSet::new();
    let mut next = Some(first);
    loop {
        if let Some((send, recv)) = next.take() {
            if link.open() {
                sessions.spawn(serve_session(link.clone(), ctx.clone(), send, recv));
            } else {
                sessions.spawn(refuse_extra(ctx.limits.sessions_per_connection, send, recv));
            }
        }
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok(stream) => next = Some(stream),
                Err(_) => break,
            },
            Some(_) = sessions.join_next() => {}
        }
    }
    datagrams.abort();
    while sessions.join_next().await.is_some() {}
}

/// Answers a session stream beyond the connection's maximum, without touching the others.
async fn refuse_extra(most: usize, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    metrics::counter!("legalchat_sessions_refused_total").increment(1);
    let _ = recv.stop(close_code::OVERLOADED.into());
    let message = format!("this connection already carries its maximum of {most} sessions; open another connection");
    send_last(send, error_frame(0, ErrorCode::Overloaded, message)).await;
}

/// Phase 1 of a session: the first frame must be `Authenticate`, within the deadline.
/// Returns the request id and the identity, or `None` once the session has been refused
/// (and ended).
async fn authenticate(
    link: &Link,
    ctx: &SessionContext,
    send: quinn::SendStream,
    reader: &mut FrameReader,
) -> Option<(u64, Identity, quinn::SendStream)> {
    let deadline = Instant::now() + ctx.limits.auth_timeout;

    let first = tokio::time::timeout_at(deadline.into(), reader.next()).await;
    let (request_id, token) = match first {
        Err(_) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "timeout").increment(1);
            refuse(link, send, unauthorized_frame("authentication timed out"), close_code::UNAUTHORIZED, "authentication timed out").await;
            return None;
        }
        Ok(Ok(Some(pb::ClientFrame { request_id, request: Some(Request::Authenticate(a)) }))) => (request_id, a.token),
        Ok(Ok(Some(_))) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "not_first").increment(1);
            let reason = "the first frame of a session must be Authenticate";
            refuse(link, send, unauthorized_frame(reason), close_code::UNAUTHORIZED, reason).await;
            return None;
        }
        Ok(Ok(None)) | Ok(Err(ReadError::Stream(_))) => {
            link.close_one(close_code::NORMAL, "bye");
            return None;
        }
        Ok(Err(ReadError::Decode(e))) => {
            let frame = error_frame(0, decode_code(&e), e.to_string());
            refuse(link, send, frame, close_code::PROTOCOL, "malformed frame").await;
            return None;
        }
    };
    let identity = match ctx.auth.verify(&token) {
        Ok(id) => id,
        Err(e) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "token").increment(1);
            let reason = e.to_string();
            refuse(link, send, unauthorized_frame(&reason), close_code::UNAUTHORIZED, &reason).await;
            return None;
        }
    };
    if let Err(e) = ctx.directory.observe(&identity) {
        tracing::error!(error = %e, "recording the user failed");
        let frame = error_frame(request_id, ErrorCode::Internal, "the server cannot record this session; try again");
        refuse(link, send, frame, close_code::NORMAL, "internal error").await;
        return None;
    }
    Some((request_id, identity, send))
}

/// Serves one session stream, from `Authenticate` to its end.
async fn serve_session(link: Arc<Link>, ctx: Arc<SessionContext>, send: quinn::SendStream, recv: quinn::RecvStream) {
    let mut reader = FrameReader { recv, buf: BytesMut::new(), decoder: FrameDecoder::new(ctx.limits.max_frame_size) };
    // Boxed, like the ending: what only the first moments need must not weigh on every
    // idle session's task.
    let Some((request_id, identity, send)) = Box::pin(authenticate(&link, &ctx, send, &mut reader)).await else { return };
    if reader.buf.is_empty() {
        // The buffer that held the token: an idle session keeps none.
        reader.buf = BytesMut::new();
    }
    link.authenticated(&identity.user_id);

    // Phase 2: an authenticated session.
    let id: SessionId = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let (out_tx, out_rx) = outbound::channel(ctx.limits.outbound);
    let kick = Arc::new(Kick::default());
    let authenticated = pb::Authenticated {
        user_id: identity.user_id.clone(),
        role: identity.role.to_pb() as i32,
        session_id: format!("{id:016x}"),
        max_frame_size: u32::try_from(ctx.limits.max_frame_size).unwrap_or(u32::MAX),
        max_message_bytes: u32::try_from(ctx.limits.max_message_size).unwrap_or(u32::MAX),
        server_time_ms: ids::now_ms(),
        display_name: identity.name.clone().unwrap_or_default(),
    };
    // The ack goes first into the queue, so nothing can overtake it.
    let _ = out_tx.try_send(ack_frame(request_id, pb::ack::Result::Authenticated(authenticated)));
    let handle = SessionHandle { id, outbound: out_tx.clone(), kick: kick.clone() };
    if ctx.registry.register(&identity.user_id, handle.clone()) {
        tokio::spawn(announce_presence(ctx.clone(), identity.user_id.clone()));
    }
    metrics::gauge!("legalchat_sessions_active").increment(1.0);
    metrics::counter!("legalchat_sessions_total").increment(1);
    tracing::debug!(session = id, user = %identity.user_id, role = identity.role.as_str(), "session authenticated");

    let writer = tokio::spawn(write_loop(send, out_rx));
    let session = Session {
        ctx: ctx.clone(),
        identity,
        id,
        out: out_tx,
        handle,
        rooms: std::sync::Mutex::new(HashSet::new()),
        inflight: Arc::new(Semaphore::new(ctx.limits.inflight)),
    };
    let ending = session.read_loop(&mut reader, &kick).await;

    for room in session.rooms.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        ctx.hub.leave(&room, id);
    }
    if ctx.registry.unregister(&session.identity.user_id, id) {
        ctx.directory.seen(&session.identity.user_id, ids::now_ms());
        tokio::spawn(announce_presence(ctx.clone(), session.identity.user_id.clone()));
    }
    metrics::gauge!("legalchat_sessions_active").decrement(1.0);
    let Session { out, inflight, handle, .. } = session;
    drop(handle);
    // Boxed: the waits of the ending must not weigh on every idle session's task.
    Box::pin(end_session(&link, &ctx, ending, out, &inflight, writer, &mut reader)).await;
}

/// Lets the last frames of an ended session out (bounded), then ends its stream and,
/// when it was the last session on the connection, the connection.
async fn end_session(
    link: &Link,
    ctx: &SessionContext,
    ending: Ending,
    out: outbound::Sender,
    inflight: &Semaphore,
    writer: tokio::task::JoinHandle<()>,
    reader: &mut FrameReader,
) {
    match ending {
        Ending::ClientDone => {
            // Let answers still in flight reach the client, bounded.
            let _ =
                tokio::time::timeout(Duration::from_secs(5), inflight.acquire_many(u32::try_from(ctx.limits.inflight).unwrap_or(u32::MAX)))
                    .await;
            drop(out);
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            link.close_one(close_code::NORMAL, "bye");
        }
        Ending::Goodbye { frame, code, reason } => {
            // Every request read is answered before the goodbye (the protocol promises one
            // answer per request): sends are answered by their shard once committed, or
            // with UNAVAILABLE if it stopped first. Bounded, so a stuck shard cannot hold
            // the session open.
            let _ =
                tokio::time::timeout(Duration::from_secs(3), inflight.acquire_many(u32::try_from(ctx.limits.inflight).unwrap_or(u32::MAX)))
                    .await;
            if let Some(frame) = frame {
                let _ = tokio::time::timeout(Duration::from_secs(1), out.send(frame)).await;
            }
            drop(out);
            // In-flight reply tasks hold queue senders; the writer ends when they finish.
            let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
            link.close_one(code, &reason);
        }
        Ending::Abort { code, reason } => {
            // Nothing more can be said in-band: reset both directions of this session's
            // stream; other sessions on the connection carry on.
            out.abort(code);
            let _ = reader.recv.stop(code.into());
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
            link.close_one(code, &reason);
        }
    }
}

/// How a session ended.
enum Ending {
    /// The client finished its stream or the connection dropped.
    ClientDone,
    /// We end it, after a last frame if one fits.
    Goodbye { frame: Option<Bytes>, code: u32, reason: String },
    /// We end it at once (the queue is full; nothing more can be said in-band).
    Abort { code: u32, reason: String },
}

fn decode_code(e: &DecodeError) -> ErrorCode {
    match e {
        DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::MalformedFrame,
    }
}

/// Typing signals may come as QUIC datagrams, each holding one whole frame: they are
/// ephemeral, and a lost one is replaced by the next refresh. A datagram belongs to no
/// stream, so it speaks for the connection's user, and is honoured only while every session
/// on the connection is that one user's. Anything else in a datagram is ignored (and
/// counted), never an error that could end a session.
async fn read_datagrams(link: Arc<Link>, ctx: Arc<SessionContext>) {
    while let Ok(bytes) = link.conn.read_datagram().await {
        let user = link.datagram_user();
        match (codec::decode_exact::<pb::ClientFrame>(&bytes, ctx.limits.max_frame_size), user) {
            (Ok(pb::ClientFrame { request: Some(Request::Typing(t)), .. }), Some(user)) => {
                if let Ok(id) = parse_conv(&t.conversation_id) {
                    ctx.hub.typing(id, &user, t.active, tokio::time::Instant::now());
                }
            }
            _ => metrics::counter!("legalchat_frames_rejected_total", "reason" => "datagram").increment(1),
        }
    }
}

async fn write_loop(mut send: quinn::SendStream, mut rx: outbound::Receiver) {
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        // Whatever is already queued goes in one write: fewer syscalls and packets under
        // fan-out load, no added latency when idle.
        match rx.recv_many(&mut chunks, 64).await {
            outbound::Taken::Frames(_) => {}
            outbound::Taken::Ended => break,
            outbound::Taken::Aborted(code) => {
                let _ = send.reset(code.into());
                return;
            }
        }
        let n = chunks.len() as u64;
        // A write blocked on a slow client is cut short by an abort.
        let written = tokio::select! {
            biased;
            code = rx.aborted() => {
                let _ = send.reset(code.into());
                return;
            }
            r = send.write_all_chunks(&mut chunks) => r,
        };
        if written.is_err() {
            return;
        }
        crate::ops::hot().frames_sent.increment(n);
        chunks.clear();
        if rx.is_empty() {
            // An idle session keeps no batch buffer.
            chunks = Vec::new();
        }
    }
    let _ = send.finish();
    // Closing the connection discards stream data the peer has not acknowledged yet, so
    // a last frame (a goodbye, an error) would be lost: wait until it is acknowledged.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

struct Session {
    ctx: Arc<SessionContext>,
    identity: Identity,
    id: SessionId,
    out: outbound::Sender,
    /// This session as the registry and rooms see it.
    handle: SessionHandle,
    /// Rooms this session joined, to leave when it ends.
    rooms: std::sync::Mutex<HashSet<ConversationKey>>,
    inflight: Arc<Semaphore>,
}

impl Session {
    async fn read_loop(&self, reader: &mut FrameReader, kick: &Kick) -> Ending {
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return Ending::Goodbye {
                    frame: Some(goodbye_frame(ErrorCode::Unavailable, "the server is shutting down; reconnect shortly")),
                    code: close_code::SHUTDOWN,
                    reason: "server shutting down".into(),
                };
            }
            tokio::select! {
                biased;
                (code, reason) = kick.kicked() => {
                    return Ending::Abort { code: close_code::OVERLOADED, reason: format!("{}: {reason}", code.as_str_name()) };
                }
                _ = shutdown.changed() => continue,
                frame = reader.next() => match frame {
                    Ok(Some(frame)) => Box::pin(self.dispatch(frame)).await,
                    Ok(None) => return Ending::ClientDone,
                    Err(ReadError::Stream(reason)) => {
                        tracing::debug!(session = self.id, %reason, "session stream ended");
                        return Ending::ClientDone;
                    }
                    Err(ReadError::Decode(e)) => {
                        metrics::counter!("legalchat_frames_rejected_total", "reason" => decode_code(&e).as_str_name()).increment(1);
                        tracing::info!(session = self.id, user = %self.identity.user_id, error = %e, "closing session after a bad frame");
                        return Ending::Goodbye { frame: Some(error_frame(0, decode_code(&e), e.to_string())), code: close_code::PROTOCOL, reason: e.to_string() };
                    }
                },
            }
        }
    }

    /// Answers one request: validation errors at once, everything else through a shard.
    async fn dispatch(&self, frame: pb::ClientFrame) {
        let request_id = frame.request_id;
        let Ok(permit) = self.inflight.clone().acquire_owned().await else { return };
        if request_id == 0 && !matches!(frame.request, Some(Request::Typing(_))) {
            return self.answer_now(RequestError::invalid("request_id: must be non-zero"), 0).await;
        }
        let Some(request) = frame.request else {
            return self.answer_now(RequestError::invalid("the frame carries no request (unknown to this server?)"), request_id).await;
        };
        // Typing is a signal: never answered, whatever its request_id.
        if let Request::Typing(t) = request {
            if let Ok(id) = parse_conv(&t.conversation_id) {
                self.ctx.hub.typing(id, &self.identity.user_id, t.active, tokio::time::Instant::now());
            }
            drop(permit);
            return;
        }
        let started = Instant::now();
        let result = match request {
            Request::Authenticate(_) => Err(RequestError::invalid("this session is already authenticated")),
            Request::Ping(p) => {
                let pong = pb::ack::Result::Pong(pb::Pong { nonce: p.nonce, server_time_ms: ids::now_ms() });
                let _ = self.out.send(ack_frame(request_id, pong)).await;
                return;
            }
            Request::CreateConversation(c) => self.create(c).map(|(shard, cmd, rx)| (shard, cmd, Pending::Conversation(rx))),
            Request::GetConversation(g) => parse_conv(&g.conversation_id).map(|id| {
                let (reply, rx) = oneshot::channel();
                (self.ctx.shards.shard_of(&id), Command::Get { id, caller: self.identity.clone(), reply }, Pending::Conversation(rx))
            }),
            Request::AddParticipants(a) => self.add(a).map(|(shard, cmd, rx)| (shard, cmd, Pending::Conversation(rx))),
            Request::RemoveParticipant(r) => self.remove(r).map(|(shard, cmd, rx)| (shard, cmd, Pending::Conversation(rx))),
            Request::SendMessage(m) => {
                crate::ops::hot().messages_received.increment(1);
                return self.send(m, request_id, permit, started).await;
            }
            Request::GetHistory(h) => self.history(h).map(|(shard, cmd, rx)| (shard, cmd, Pending::History(rx))),
            Request::EditMessage(e) => {
                let request = validate::target_seq("message_seq", e.message_seq)
                    .and_then(|()| validate::message_content(e.content.as_ref(), self.ctx.limits.max_message_size))
                    .map(|()| EventRequest::Edit { seq: e.message_seq, content: e.content.unwrap_or_default() });
                return self.event(&e.conversation_id, &e.client_event_id, request, request_id, permit, started).await;
            }
            Request::DeleteMessage(d) => {
                let request = validate::target_seq("message_seq", d.message_seq).map(|()| EventRequest::Delete { seq: d.message_seq });
                return self.event(&d.conversation_id, &d.client_event_id, request, request_id, permit, started).await;
            }
            Request::React(r) => {
                let request = validate::target_seq("message_seq", r.message_seq)
                    .and_then(|()| validate::emoji(&r.emoji))
                    .map(|()| EventRequest::React { seq: r.message_seq, emoji: r.emoji, remove: r.remove });
                return self.event(&r.conversation_id, &r.client_event_id, request, request_id, permit, started).await;
            }
            Request::PinMessage(m) => {
                let request =
                    validate::target_seq("message_seq", m.message_seq).map(|()| EventRequest::Pin { seq: m.message_seq, unpin: m.unpin });
                return self.event(&m.conversation_id, &m.client_event_id, request, request_id, permit, started).await;
            }
            Request::UpdateConversation(u) => self.update(u).map(|(shard, cmd, rx)| (shard, cmd, Pending::Conversation(rx))),
            Request::SetParticipantRole(r) => self.set_role(r).map(|(shard, cmd, rx)| (shard, cmd, Pending::Conversation(rx))),
            Request::GetThread(t) => self.thread(t).map(|(shard, cmd, rx)| (shard, cmd, Pending::History(rx))),
            Request::ListPins(l) => parse_conv(&l.conversation_id).map(|id| {
                let (reply, rx) = oneshot::channel();
                (self.ctx.shards.shard_of(&id), Command::Pins { id, caller: self.identity.clone(), reply }, Pending::History(rx))
            }),
            Request::GetMessageAudit(a) => parse_conv(&a.conversation_id).and_then(|id| {
                validate::target_seq("message_seq", a.message_seq).map_err(invalid)?;
                let (reply, rx) = oneshot::channel();
                let cmd = Command::Audit { id, caller: self.identity.clone(), seq: a.message_seq, reply };
                Ok((self.ctx.shards.shard_of(&id), cmd, Pending::Audit(rx)))
            }),
            Request::ListConversations(l) => {
                return self.list(l, request_id, permit).await;
            }
            Request::Typing(_) => return,
            Request::MarkRead(m) => {
                self.receipt(&m.conversation_id, pb::ReceiptKind::Read, m.seq).map(|(s, c, rx)| (s, c, Pending::Done(rx)))
            }
            Request::MarkDelivered(m) => {
                self.receipt(&m.conversation_id, pb::ReceiptKind::Delivered, m.seq).map(|(s, c, rx)| (s, c, Pending::Done(rx)))
            }
            Request::GetReceipts(g) => parse_conv(&g.conversation_id).map(|id| {
                let (reply, rx) = oneshot::channel();
                (self.ctx.shards.shard_of(&id), Command::Receipts { id, caller: self.identity.clone(), reply }, Pending::Receipts(rx))
            }),
            Request::JoinRoom(j) => return self.join_room(&j.conversation_id, request_id, permit).await,
            Request::LeaveRoom(l) => {
                let result = parse_conv(&l.conversation_id).map(|id| {
                    self.rooms.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    self.ctx.hub.leave(&id, self.id);
                    pb::ack::Result::Done(pb::Done {})
                });
                return self.answer(request_id, result).await;
            }
            Request::RegisterPush(r) => {
                let result = match r.target {
                    Some(pb::register_push::Target::WebPush(w)) => self.ctx.push.register(&self.identity.user_id, &w),
                    None => Err(RequestError::invalid("target: name a push target (web_push)")),
                };
                return self.answer(request_id, result.map(|()| pb::ack::Result::Done(pb::Done {}))).await;
            }
            Request::UnregisterPush(u) => {
                let result = self.ctx.push.unregister(&self.identity.user_id, &u.endpoint);
                return self.answer(request_id, result.map(|()| pb::ack::Result::Done(pb::Done {}))).await;
            }
            Request::GetPresence(g) => return self.presence(g, request_id, permit).await,
            Request::CatchUp(c) => return self.catch_up(c, request_id, permit).await,
        };
        let (shard, cmd, pending) = match result {
            Ok(x) => x,
            Err(e) => return self.answer_now(e, request_id).await,
        };
        if let Err(e) = self.ctx.shards.submit_to(shard, cmd) {
            return self.answer_now(e.into(), request_id).await;
        }
        let out = self.out.clone();
        tokio::spawn(async move {
            let frame = match pending.wait().await {
                Ok(result) => ack_frame(request_id, result),
                Err(e) => error_frame(request_id, e.code, e.message),
            };
            let _ = out.send(frame).await;
            drop(permit);
        });
    }

    async fn answer_now(&self, e: RequestError, request_id: u64) {
        let _ = self.out.send(error_frame(request_id, e.code, e.message)).await;
    }

    async fn answer(&self, request_id: u64, result: Result<pb::ack::Result, RequestError>) {
        let frame = match result {
            Ok(r) => ack_frame(request_id, r),
            Err(e) => error_frame(request_id, e.code, e.message),
        };
        let _ = self.out.send(frame).await;
    }

    fn receipt(&self, conversation_id: &str, kind: pb::ReceiptKind, seq: u64) -> Result<Routed<()>, RequestError> {
        let id = parse_conv(conversation_id)?;
        let (reply, rx) = oneshot::channel();
        Ok((self.ctx.shards.shard_of(&id), Command::Receipt { id, caller: self.identity.clone(), origin: self.id, kind, seq, reply }, rx))
    }

    /// Joining needs the participant list (from the shard) before the room can answer.
    async fn join_room(&self, conversation_id: &str, request_id: u64, permit: tokio::sync::OwnedSemaphorePermit) {
        let id = match parse_conv(conversation_id) {
            Ok(id) => id,
            Err(e) => return self.answer_now(e, request_id).await,
        };
        let (reply, rx) = oneshot::channel();
        if let Err(e) =
            self.ctx.shards.submit_to(self.ctx.shards.shard_of(&id), Command::Members { id, caller: self.identity.clone(), reply })
        {
            return self.answer_now(e.into(), request_id).await;
        }
        let members = match rx.await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return self.answer_now(e, request_id).await,
            Err(_) => return self.answer_now(RequestError::new(ErrorCode::Unavailable, "the server is shutting down"), request_id).await,
        };
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        let users = self.ctx.hub.join(id, members, &self.identity.user_id, self.handle.clone());
        self.answer(request_id, Ok(pb::ack::Result::RoomUsers(users))).await;
        drop(permit);
    }

    async fn presence(&self, g: pb::GetPresence, request_id: u64, permit: tokio::sync::OwnedSemaphorePermit) {
        if let Err(e) = validate::participant_ids("user_ids", &g.user_ids) {
            return self.answer_now(invalid(e), request_id).await;
        }
        let ctx = self.ctx.clone();
        let me = self.identity.user_id.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let frame = match contacts_of(&ctx, &me).await {
                Ok(contacts) => {
                    let mut seen = HashSet::new();
                    let users = g
                        .user_ids
                        .into_iter()
                        .filter(|u| (u == &me || contacts.contains(u)) && seen.insert(u.clone()))
                        .map(|u| presence_of(&ctx, &u))
                        .collect();
                    ack_frame(request_id, pb::ack::Result::Presence(pb::PresenceList { users }))
                }
                Err(e) => error_frame(request_id, e.code, e.message),
            };
            let _ = out.send(frame).await;
            drop(permit);
        });
    }

    async fn catch_up(&self, c: pb::CatchUp, request_id: u64, permit: tokio::sync::OwnedSemaphorePermit) {
        let max_messages = match c.max_messages {
            0 => 1_000,
            n if n > 5_000 => return self.answer_now(RequestError::invalid(format!("max_messages: {n} exceeds 5000")), request_id).await,
            n => n as usize,
        };
        let mut cursors = Vec::with_capacity(c.cursors.len());
        for cur in &c.cursors {
            match parse_conv(&cur.conversation_id) {
                Ok(id) => cursors.push((id, cur.after_seq)),
                Err(e) => return self.answer_now(e, request_id).await,
            }
        }
        let ctx = self.ctx.clone();
        let user = self.identity.user_id.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let frame = match catch_up(&ctx, &user, cursors, c.include_unlisted, max_messages).await {
                Ok(page) => ack_frame(request_id, pb::ack::Result::CatchUp(page)),
                Err(e) => error_frame(request_id, e.code, e.message),
            };
            let _ = out.send(frame).await;
            drop(permit);
        });
    }

    fn create(&self, c: pb::CreateConversation) -> Result<Routed<pb::Conversation>, RequestError> {
        let kind = pb::ConversationType::try_from(c.r#type)
            .map_err(|_| RequestError::invalid(format!("type: unknown conversation type {}", c.r#type)))?;
        validate::participant_ids("participant_ids", &c.participant_ids).map_err(invalid)?;
        validate::title(&c.title).map_err(invalid)?;
        validate::description(&c.description).map_err(invalid)?;
        let mut others: Vec<String> = Vec::with_capacity(c.participant_ids.len());
        for u in c.participant_ids {
            if u != self.identity.user_id && !others.contains(&u) {
                others.push(u);
            }
        }
        match kind {
            pb::ConversationType::Case => validate::case_id(&c.case_id).map_err(invalid)?,
            _ if !c.case_id.is_empty() => return Err(RequestError::invalid("case_id: only CASE conversations carry a case id")),
            _ => {}
        }
        let id = match kind {
            pb::ConversationType::Private => {
                let [other] = others.as_slice() else {
                    return Err(RequestError::invalid("participant_ids: a private conversation takes exactly one other user"));
                };
                ids::private_conversation_id(&self.identity.user_id, other)
            }
            pb::ConversationType::Unspecified => return Err(RequestError::invalid("type: must be PRIVATE, GROUP, CASE or SUPPORT")),
            _ => ids::random_id(),
        };
        if others.len() + 1 > crate::policy::MAX_PARTICIPANTS {
            return Err(RequestError::invalid(format!(
                "participant_ids: a conversation has at most {} participants",
                crate::policy::MAX_PARTICIPANTS
            )));
        }
        let (reply, rx) = oneshot::channel();
        let spec = CreateSpec { kind, others, title: c.title, description: c.description, case_id: c.case_id };
        Ok((self.ctx.shards.shard_of(&id), Command::Create { id, caller: self.identity.clone(), origin: self.id, spec, reply }, rx))
    }

    fn add(&self, a: pb::AddParticipants) -> Result<Routed<pb::Conversation>, RequestError> {
        let id = parse_conv(&a.conversation_id)?;
        validate::participant_ids("user_ids", &a.user_ids).map_err(invalid)?;
        if a.user_ids.is_empty() {
            return Err(RequestError::invalid("user_ids: name at least one user"));
        }
        let role = pb::ParticipantRole::try_from(a.role)
            .map_err(|_| RequestError::invalid(format!("role: unknown participant role {}", a.role)))?;
        let (reply, rx) = oneshot::channel();
        Ok((
            self.ctx.shards.shard_of(&id),
            Command::Add { id, caller: self.identity.clone(), origin: self.id, users: a.user_ids, role, reply },
            rx,
        ))
    }

    fn remove(&self, r: pb::RemoveParticipant) -> Result<Routed<pb::Conversation>, RequestError> {
        let id = parse_conv(&r.conversation_id)?;
        validate::user_id("user_id", &r.user_id).map_err(invalid)?;
        let (reply, rx) = oneshot::channel();
        Ok((
            self.ctx.shards.shard_of(&id),
            Command::Remove { id, caller: self.identity.clone(), origin: self.id, user: r.user_id, reply },
            rx,
        ))
    }

    /// A send is answered from its shard's thread (see [`AckTo`]), not by a task of its own.
    async fn send(&self, m: pb::SendMessage, request_id: u64, permit: tokio::sync::OwnedSemaphorePermit, started: Instant) {
        let checked = parse_conv(&m.conversation_id).and_then(|id| {
            validate::client_message_id(&m.client_message_id).map_err(invalid)?;
            validate::message_content(m.content.as_ref(), self.ctx.limits.max_message_size).map_err(invalid)?;
            Ok(id)
        });
        let id = match checked {
            Ok(id) => id,
            Err(e) => return self.answer_now(e, request_id).await,
        };
        let ack = AckTo { out: self.out.clone(), kick: self.handle.kick.clone(), request_id, started, permit: Some(permit) };
        let cmd = Command::Send {
            id,
            caller: self.identity.clone(),
            origin: self.id,
            client_message_id: m.client_message_id,
            content: m.content.unwrap_or_default(),
            reply_to_seq: m.reply_to_seq,
            submitted: Instant::now(),
            reply: SendReply::new(move |result| ack.answer(result)),
        };
        crate::ops::hot().stage_receive.record(started.elapsed().as_secs_f64());
        if let Err(refused) = self.ctx.shards.submit(self.ctx.shards.shard_of(&id), cmd)
            && let (e, Command::Send { reply, .. }) = *refused
        {
            reply.answer(Err(e.into()));
        }
    }

    /// An edit, delete, reaction or pin: answered from its shard's thread, like a send.
    async fn event(
        &self,
        conversation_id: &str,
        client_event_id: &str,
        request: Result<EventRequest, ValidationError>,
        request_id: u64,
        permit: tokio::sync::OwnedSemaphorePermit,
        started: Instant,
    ) {
        let checked = parse_conv(conversation_id).and_then(|id| {
            validate::client_event_id(client_event_id).map_err(invalid)?;
            Ok((id, request.map_err(invalid)?))
        });
        let (id, request) = match checked {
            Ok(x) => x,
            Err(e) => return self.answer_now(e, request_id).await,
        };
        let ack = AckTo { out: self.out.clone(), kick: self.handle.kick.clone(), request_id, started, permit: Some(permit) };
        let cmd = Command::Event {
            id,
            caller: self.identity.clone(),
            origin: self.id,
            client_event_id: client_event_id.to_owned(),
            request,
            submitted: Instant::now(),
            reply: SendReply::new(move |result| ack.answer(result)),
        };
        if let Err(refused) = self.ctx.shards.submit(self.ctx.shards.shard_of(&id), cmd)
            && let (e, Command::Event { reply, .. }) = *refused
        {
            reply.answer(Err(e.into()));
        }
    }

    fn update(&self, u: pb::UpdateConversation) -> Result<Routed<pb::Conversation>, RequestError> {
        let id = parse_conv(&u.conversation_id)?;
        validate::client_event_id(&u.client_event_id).map_err(invalid)?;
        if let Some(t) = &u.title {
            validate::title(t).map_err(invalid)?;
        }
        if let Some(d) = &u.description {
            validate::description(d).map_err(invalid)?;
        }
        if let Some(r) = u.retention_days {
            validate::retention_days(r).map_err(invalid)?;
        }
        let update = SettingsUpdate {
            title: u.title,
            description: u.description,
            notifications: u.notifications,
            retention_days: u.retention_days,
            encryption: u.encryption,
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Update { id, caller: self.identity.clone(), origin: self.id, client_event_id: u.client_event_id, update, reply };
        Ok((self.ctx.shards.shard_of(&id), cmd, rx))
    }

    fn set_role(&self, r: pb::SetParticipantRole) -> Result<Routed<pb::Conversation>, RequestError> {
        let id = parse_conv(&r.conversation_id)?;
        validate::user_id("user_id", &r.user_id).map_err(invalid)?;
        let role = pb::ParticipantRole::try_from(r.role)
            .map_err(|_| RequestError::invalid(format!("role: unknown participant role {}", r.role)))?;
        let (reply, rx) = oneshot::channel();
        Ok((
            self.ctx.shards.shard_of(&id),
            Command::SetRole { id, caller: self.identity.clone(), origin: self.id, user: r.user_id, role, reply },
            rx,
        ))
    }

    fn thread(&self, t: pb::GetThread) -> Result<Routed<pb::HistoryPage>, RequestError> {
        let id = parse_conv(&t.conversation_id)?;
        validate::target_seq("root_seq", t.root_seq).map_err(invalid)?;
        let limit = validate::history_limit(t.limit).map_err(invalid)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Thread { id, caller: self.identity.clone(), root: t.root_seq, after: t.after_seq, limit, reply };
        Ok((self.ctx.shards.shard_of(&id), cmd, rx))
    }

    fn history(&self, h: pb::GetHistory) -> Result<Routed<pb::HistoryPage>, RequestError> {
        let id = parse_conv(&h.conversation_id)?;
        let limit = validate::history_limit(h.limit).map_err(invalid)?;
        let cursor = match h.cursor {
            None => Cursor::Latest,
            Some(pb::get_history::Cursor::BeforeSeq(b)) => Cursor::Before(b),
            Some(pb::get_history::Cursor::AfterSeq(a)) => Cursor::After(a),
        };
        let (reply, rx) = oneshot::channel();
        Ok((self.ctx.shards.shard_of(&id), Command::History { id, caller: self.identity.clone(), cursor, limit, reply }, rx))
    }

    /// Listing spans shards: read the user's membership index, ask each owning shard for
    /// its summaries, merge newest first.
    async fn list(&self, l: pb::ListConversations, request_id: u64, permit: tokio::sync::OwnedSemaphorePermit) {
        let limit = match validate::list_limit(l.limit) {
            Ok(l) => l,
            Err(e) => return self.answer_now(invalid(e), request_id).await,
        };
        let ctx = self.ctx.clone();
        let user = self.identity.user_id.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let frame = match list_conversations(&ctx, user, limit).await {
                Ok(conversations) => ack_frame(request_id, pb::ack::Result::Conversations(pb::ConversationList { conversations })),
                Err(e) => error_frame(request_id, e.code, e.message),
            };
            let _ = out.send(frame).await;
            drop(permit);
        });
    }
}

async fn list_conversations(ctx: &Arc<SessionContext>, user: String, limit: u32) -> Result<Vec<pb::Conversation>, RequestError> {
    let ids = user_conversations(ctx, &user).await?;
    let by_shard = group_by_shard(ctx, ids);
    let mut waits = Vec::new();
    for (shard, ids) in by_shard.into_iter().enumerate().filter(|(_, ids)| !ids.is_empty()) {
        let (reply, rx) = oneshot::channel();
        ctx.shards.submit_to(shard, Command::Summaries { ids, user: user.clone(), reply })?;
        waits.push(rx);
    }
    let mut all = Vec::new();
    for rx in waits {
        all.extend(rx.await.map_err(|_| RequestError::new(ErrorCode::Unavailable, "the server is shutting down"))??);
    }
    all.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then_with(|| a.id.cmp(&b.id)));
    all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(all)
}

/// Most text bytes in one catch-up page (frames stay well below the SDK's 16 MiB).
const CATCH_UP_MAX_BYTES: usize = 4 << 20;

async fn user_conversations(ctx: &Arc<SessionContext>, user: &str) -> Result<Vec<ConversationKey>, RequestError> {
    let store = ctx.store.clone();
    let u = user.to_owned();
    tokio::task::spawn_blocking(move || store.user_conversations(&u))
        .await
        .map_err(|_| RequestError::internal("membership scan failed"))?
        .map_err(|e| {
            tracing::error!(error = %e, "membership scan failed");
            RequestError::internal("storage failure while reading conversations")
        })
}

/// Conversation ids sorted into their owning shards' lists.
fn group_by_shard(ctx: &SessionContext, ids: Vec<ConversationKey>) -> Vec<Vec<ConversationKey>> {
    let mut by_shard: Vec<Vec<ConversationKey>> = vec![Vec::new(); ctx.shards.len()];
    for id in ids {
        by_shard[ctx.shards.shard_of(&id)].push(id);
    }
    by_shard
}

/// Everyone who shares a conversation with `user`.
async fn contacts_of(ctx: &Arc<SessionContext>, user: &str) -> Result<HashSet<String>, RequestError> {
    let by_shard = group_by_shard(ctx, user_conversations(ctx, user).await?);
    let mut waits = Vec::new();
    for (shard, ids) in by_shard.into_iter().enumerate().filter(|(_, ids)| !ids.is_empty()) {
        let (reply, rx) = oneshot::channel();
        ctx.shards.submit_to(shard, Command::Participants { ids, reply })?;
        waits.push(rx);
    }
    let mut contacts = HashSet::new();
    for rx in waits {
        for list in rx.await.map_err(|_| RequestError::new(ErrorCode::Unavailable, "the server is shutting down"))?? {
            contacts.extend(list);
        }
    }
    contacts.remove(user);
    Ok(contacts)
}

fn presence_of(ctx: &SessionContext, user: &str) -> pb::Presence {
    let online = ctx.registry.is_online(user);
    let last_seen_ms = if online { ids::now_ms() } else { ctx.directory.last_seen(user) };
    pb::Presence { user_id: user.to_owned(), online, last_seen_ms }
}

/// Tells everyone who shares a conversation with `user` whether they are online now.
/// The state is read when the event is built, so a quick disconnect and reconnect can
/// only produce an extra event, never a wrong final state.
async fn announce_presence(ctx: Arc<SessionContext>, user: String) {
    let contacts = match contacts_of(&ctx, &user).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%user, error = %e, "presence not announced");
            return;
        }
    };
    let presence = presence_of(&ctx, &user);
    let online = presence.online;
    let frame = codec::encode(&pb::ServerFrame { event: Some(Event::Presence(pb::PresenceEvent { presence: Some(presence) })) });
    for contact in &contacts {
        ctx.registry.deliver(contact, &frame, None);
    }
    ctx.hub.presence_changed(&user, online);
    metrics::counter!("legalchat_presence_events_total", "online" => if online { "true" } else { "false" }).increment(1);
}

/// One page of catching up across shards, within the message and byte budget.
async fn catch_up(
    ctx: &Arc<SessionContext>,
    user: &str,
    cursors: Vec<(ConversationKey, u64)>,
    include_unlisted: bool,
    max_messages: usize,
) -> Result<pb::CatchUpPage, RequestError> {
    let mine: HashSet<ConversationKey> = user_conversations(ctx, user).await?.into_iter().collect();
    let listed: HashSet<ConversationKey> = cursors.iter().map(|(id, _)| *id).collect();
    let mut unknown: Vec<ConversationKey> = mine.iter().filter(|id| !listed.contains(*id)).copied().collect();
    unknown.sort_unstable();
    // Only the caller's conversations; the order given is the order served.
    let mut wanted: Vec<(ConversationKey, u64)> = cursors.into_iter().filter(|(id, _)| mine.contains(id)).collect();
    if include_unlisted {
        wanted.extend(unknown.drain(..).map(|id| (id, 0)));
    }
    let mut by_shard: Vec<Vec<(ConversationKey, u64)>> = vec![Vec::new(); ctx.shards.len()];
    for (id, after) in wanted {
        by_shard[ctx.shards.shard_of(&id)].push((id, after));
    }
    let mut page = pb::CatchUpPage::default();
    let mut bytes = 0usize;
    for (shard, cursors) in by_shard.into_iter().enumerate().filter(|(_, c)| !c.is_empty()) {
        let room = max_messages.saturating_sub(page.messages.len());
        if room == 0 || bytes >= CATCH_UP_MAX_BYTES {
            // Budget spent: the rest is for the next page.
            page.next.extend(
                cursors.into_iter().map(|(id, after)| pb::ConversationCursor { conversation_id: format_id(&id), after_seq: after }),
            );
            continue;
        }
        let (reply, rx) = oneshot::channel();
        let cmd = Command::CatchUp { cursors, user: user.to_owned(), max_messages: room, max_bytes: CATCH_UP_MAX_BYTES - bytes, reply };
        ctx.shards.submit_to(shard, cmd)?;
        let part: CatchUpPart = rx.await.map_err(|_| RequestError::new(ErrorCode::Unavailable, "the server is shutting down"))??;
        bytes += part.bytes;
        page.messages.extend(part.messages);
        page.next
            .extend(part.next.into_iter().map(|(id, after)| pb::ConversationCursor { conversation_id: format_id(&id), after_seq: after }));
        page.receipts.extend(part.receipts);
    }
    page.has_more = !page.next.is_empty();
    page.unknown = unknown.iter().map(format_id).collect();
    metrics::counter!("legalchat_catch_up_messages_total").increment(page.messages.len() as u64);
    Ok(page)
}

/// The answer to come from a shard.
type ReplyRx<T> = oneshot::Receiver<Result<T, RequestError>>;

/// A request ready for its shard: (shard index, command, where its answer will arrive).
type Routed<T> = (usize, Command, ReplyRx<T>);

/// Where a send's answer goes: queued on the session's stream by whichever thread has it
/// (the shard's, after the commit), with the request's in-flight permit let go once it is.
/// Dropped unanswered (the shard stopped first), it answers that the server is going away.
struct AckTo {
    out: outbound::Sender,
    kick: Arc<Kick>,
    request_id: u64,
    started: Instant,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AckTo {
    fn answer(mut self, result: Result<pb::MessageAccepted, RequestError>) {
        let frame = match result {
            Ok(accepted) => {
                crate::ops::hot().send_ack_seconds.record(self.started.elapsed().as_secs_f64());
                ack_frame(self.request_id, pb::ack::Result::MessageAccepted(accepted))
            }
            Err(e) => error_frame(self.request_id, e.code, e.message),
        };
        self.queue(frame);
    }

    /// Queues `frame` without waiting (the caller may be a shard thread). A session whose
    /// queue is full has stopped reading: it is ended as a slow consumer, as fan-out does.
    fn queue(&mut self, frame: Bytes) {
        if let Err(outbound::TrySendError::Full) = self.out.try_send(frame) {
            metrics::counter!("legalchat_slow_consumer_disconnects_total").increment(1);
            self.kick.kick(ErrorCode::Overloaded, "this session fell too far behind; reconnect and resync from your last seq");
        }
        self.permit = None;
    }
}

impl Drop for AckTo {
    fn drop(&mut self) {
        if self.permit.is_some() {
            let frame = error_frame(self.request_id, ErrorCode::Unavailable, "the server is shutting down; the request was not applied");
            self.queue(frame);
        }
    }
}

/// A reply still to come from a shard.
enum Pending {
    Conversation(ReplyRx<pb::Conversation>),
    History(ReplyRx<pb::HistoryPage>),
    Done(ReplyRx<()>),
    Receipts(ReplyRx<pb::ReceiptList>),
    Audit(ReplyRx<pb::MessageAudit>),
}

impl Pending {
    async fn wait(self) -> Result<pb::ack::Result, RequestError> {
        fn gone() -> RequestError {
            RequestError::new(ErrorCode::Unavailable, "the server is shutting down; the request was not applied")
        }
        match self {
            Pending::Conversation(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::Conversation),
            Pending::History(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::History),
            Pending::Done(rx) => rx.await.map_err(|_| gone())?.map(|()| pb::ack::Result::Done(pb::Done {})),
            Pending::Receipts(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::Receipts),
            Pending::Audit(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::Audit),
        }
    }
}

fn invalid(e: ValidationError) -> RequestError {
    RequestError::invalid(e.to_string())
}

fn parse_conv(s: &str) -> Result<ConversationKey, RequestError> {
    validate::parse_id("conversation_id", s).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(frame: &Bytes) -> Event {
        let server: pb::ServerFrame = codec::decode_exact(frame, 1 << 20).expect("a whole frame");
        server.event.expect("an event")
    }

    fn ack_to(out: &outbound::Sender, kick: &Arc<Kick>, inflight: &Arc<Semaphore>) -> AckTo {
        let permit = inflight.clone().try_acquire_owned().expect("a free permit");
        AckTo { out: out.clone(), kick: kick.clone(), request_id: 7, started: Instant::now(), permit: Some(permit) }
    }

    #[tokio::test]
    async fn a_send_is_answered_on_the_stream_and_lets_its_permit_go() {
        let (out, mut rx) = outbound::channel(4);
        let (kick, inflight) = (Arc::new(Kick::default()), Arc::new(Semaphore::new(1)));

        let accepted = pb::MessageAccepted { seq: 3, ..Default::default() };
        ack_to(&out, &kick, &inflight).answer(Ok(accepted.clone()));
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 8).await, outbound::Taken::Frames(1));
        let Event::Ack(ack) = decode(&got[0]) else { panic!("not an ack") };
        assert_eq!((ack.request_id, ack.result), (7, Some(pb::ack::Result::MessageAccepted(accepted))));
        assert_eq!(inflight.available_permits(), 1, "the permit is back");

        ack_to(&out, &kick, &inflight).answer(Err(RequestError::forbidden("not yours")));
        got.clear();
        rx.recv_many(&mut got, 8).await;
        let Event::Error(e) = decode(&got[0]) else { panic!("not an error") };
        assert_eq!((e.request_id, e.code, e.message.as_str()), (7, ErrorCode::Forbidden as i32, "not yours"));

        // The shard went away with the send unanswered: the caller hears why all the same.
        drop(ack_to(&out, &kick, &inflight));
        got.clear();
        rx.recv_many(&mut got, 8).await;
        let Event::Error(e) = decode(&got[0]) else { panic!("not an error") };
        assert_eq!((e.request_id, e.code), (7, ErrorCode::Unavailable as i32));
        assert_eq!(inflight.available_permits(), 1);
    }

    #[tokio::test]
    async fn an_answer_that_finds_the_queue_full_ends_the_session_as_a_slow_consumer() {
        let (out, _rx) = outbound::channel(1);
        let (kick, inflight) = (Arc::new(Kick::default()), Arc::new(Semaphore::new(1)));
        out.try_send(Bytes::from_static(b"unread")).expect("room for one");
        ack_to(&out, &kick, &inflight).answer(Ok(pb::MessageAccepted::default()));
        let (code, _) = tokio::time::timeout(Duration::from_secs(5), kick.kicked()).await.expect("kicked");
        assert_eq!(code, ErrorCode::Overloaded);
        assert_eq!(inflight.available_permits(), 1, "the permit is back even so");
    }
}
