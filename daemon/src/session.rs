//! One client session: a session stream (on QUIC, or a TLS-over-TCP connection), from
//! `Authenticate` to goodbye.
//!
//! ```text
//!  RecvStream ─► FrameReader ─► requests::plan ─► Plan ──try_send──► shard mailbox
//!                                                   │                      │ (after commit)
//!                                                   └─ reply task ◄─oneshot┘ or AckTo
//!                                                         │                 (shard thread)
//!  SendStream ◄─ writer task ◄── outbound queue (bounded) ◄┴── Bus fan-out
//! ```
//!
//! This is the driver only: it accepts session streams, authenticates them, reads
//! frames, executes the [`Plan`] that [`requests::plan`] makes of each request, writes
//! frames and ends the session. What a request means — its validation, its shard, what
//! it gathers — is `requests/`'s; the conversation state is the shards'. Nothing here
//! touches storage: recording a sign-in or a last-seen time goes through the storage pool
//! and the user's shard ([`Services`]).
//!
//! The reader never waits on a shard: a full mailbox is answered OVERLOADED at once, and
//! the number of requests in flight is capped by a semaphore, which back-pressures the
//! client's stream rather than growing memory. Requests about the same conversation go to
//! the same shard mailbox in the order they were read, so their effects keep that order.

mod ack;
mod frames;
mod link;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, watch};

use legalchat_protocol::codec;
use legalchat_protocol::pb::{self, ErrorCode, client_frame::Request};

use crate::auth::{Authenticator, Identity};
use crate::bus::Bus;
use crate::directory::Directory;
use crate::files::{STREAM_SESSION, StreamKind, TransferSlots};
use crate::ids::{self, SessionIds};
use crate::outbound;
use crate::policy::RequestError;
use crate::push::PushHandle;
use crate::realtime::Hub;
use crate::registry::{Kick, SessionHandle, SessionId};
use crate::requests::{self, Plan, Services};
use crate::shard::{Command, SendReply, Shards};
use crate::storage_pool::StoragePool;
use crate::store::ConversationKey;
use crate::streams::{RecvHalf, SendHalf, TcpTls};

use ack::AckTo;
use frames::{FrameReader, ReadError, ack_frame, answer_frame, decode_code, error_frame, goodbye_frame, unauthorized_frame};
use link::Link;

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
    /// Too many new connections from the client's address (`ErrorCode::RateLimited`); the
    /// reason says how long to wait.
    pub const RATE_LIMITED: u32 = 8;
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
    /// Requests in flight, per session.
    pub inflight: usize,
    /// Requests in flight, per user: all their sessions together.
    pub user_inflight: usize,
    /// Sessions one connection may carry.
    pub sessions_per_connection: usize,
    /// How long a frame may take from its first byte to its last.
    pub frame_timeout: Duration,
}

/// Everything sessions share.
#[derive(Debug)]
pub struct SessionContext {
    /// What requests reach: shards, the storage pool, sessions, directory, rooms, push.
    pub services: Arc<Services>,
    /// Token verification.
    pub auth: Authenticator,
    /// Limits.
    pub limits: SessionLimits,
    /// Flips to true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    session_ids: SessionIds,
}

impl SessionContext {
    /// A context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shards: Shards,
        registry: Arc<dyn Bus>,
        pool: StoragePool,
        directory: Arc<Directory>,
        auth: Authenticator,
        limits: SessionLimits,
        shutdown: watch::Receiver<bool>,
        hub: Arc<Hub>,
        push: PushHandle,
        files: Arc<crate::files::Files>,
        rate_limits: crate::limits::RateLimits,
    ) -> Self {
        let user_shares = Arc::new(crate::shares::UserShares::new(limits.user_inflight));
        let services = Arc::new(Services {
            shards,
            pool,
            registry,
            directory,
            hub,
            push,
            files,
            limits: rate_limits,
            user_shares,
            pending: Arc::default(),
        });
        Self { services, auth, limits, shutdown, session_ids: SessionIds::new() }
    }
}

/// A request's places in flight: its session's and its user's, given back when it is
/// answered.
#[derive(Debug)]
pub(crate) struct InFlight {
    _session: tokio::sync::OwnedSemaphorePermit,
    _user: tokio::sync::OwnedSemaphorePermit,
}

/// Bidirectional streams a client may open on a new connection. Most connections carry one
/// session; the limit grows as a multiplexing client opens more.
pub const INITIAL_STREAMS: u32 = 4;

/// Writes a last frame on a session stream, finishes it, and waits (bounded) for the
/// peer to have it.
async fn send_last(mut send: SendHalf, frame: Bytes) {
    let _ = send.write_all(&frame).await;
    send.finish(Duration::from_secs(2)).await;
}

/// Ends a session with a last frame (and the connection, when it was the last session on
/// it).
async fn refuse(link: &Link, send: SendHalf, frame: Bytes, code: u32, reason: &str) {
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
    let datagrams = tokio::spawn(read_datagrams(conn.clone(), link.clone(), ctx.clone()));
    let transfers = TransferSlots::default();
    let mut sessions = tokio::task::JoinSet::new();
    let mut next = Some(first);
    loop {
        if let Some((send, recv)) = next.take() {
            let (send, recv) = (SendHalf::Quic(send), RecvHalf::Quic(recv));
            sessions.spawn(serve_stream(link.clone(), ctx.clone(), transfers.clone(), send, recv, None));
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

/// Serves one TLS-over-TCP connection (the fallback for networks that block UDP): it
/// carries one stream, a session or a transfer, with the same kind byte and frames as a
/// QUIC stream. A session counts against its address's connection limit (`limited_ip`,
/// unless the address is trusted); a transfer is authorised by its ticket.
pub async fn serve_tcp(tls: TcpTls, ctx: Arc<SessionContext>, limited_ip: Option<std::net::IpAddr>) {
    let (send, recv) = crate::streams::split_tcp(tls);
    serve_stream(Arc::new(Link::tcp()), ctx, TransferSlots::default(), send, recv, limited_ip).await;
}

/// Serves one bidirectional stream by the kind its first byte names: a session, or a
/// transfer (see the `.proto`, "transfers"). A stream that names neither in time is
/// refused like a session that did not authenticate. `limited_ip`: a session must first
/// pass this address's connection limit (TLS over TCP, where each session is a connection).
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see `serve_session`)
fn serve_stream(
    link: Arc<Link>,
    ctx: Arc<SessionContext>,
    transfers: TransferSlots,
    send: SendHalf,
    mut recv: RecvHalf,
    limited_ip: Option<std::net::IpAddr>,
) -> impl Future<Output = ()> {
    // An async block, not an `async fn`, for the reason `serve_session` gives.
    async move {
        let kind = match tokio::time::timeout(ctx.limits.auth_timeout, recv.read_chunk(1)).await {
            Ok(Ok(Some(chunk))) => chunk.first().copied(),
            Ok(Ok(None) | Err(_)) => return,
            Err(_) => None,
        };
        match kind.map(StreamKind::of) {
            Some(Ok(StreamKind::Session)) => {
                if let Some(ip) = limited_ip
                    && let Err(wait) = ctx.services.limits.check_connection(ip)
                {
                    metrics::counter!("legalchat_rate_limited_total", "limit" => "connections").increment(1);
                    let e = RequestError::rate_limited("too many new connections from your address", wait);
                    let reason = e.message.clone();
                    recv.stop(close_code::RATE_LIMITED);
                    return refuse(&link, send, answer_frame(0, Err(e)), close_code::RATE_LIMITED, &reason).await;
                }
                if link.open() {
                    serve_session(link, ctx, send, recv).await;
                } else {
                    refuse_extra(ctx.limits.sessions_per_connection, send, recv).await;
                }
            }
            Some(Ok(StreamKind::Transfer)) => Box::pin(ctx.services.files.clone().serve_transfer(transfers, send, recv)).await,
            refused => {
                if !link.open() {
                    return refuse_extra(ctx.limits.sessions_per_connection, send, recv).await;
                }
                let (reason, what) = match refused {
                    Some(Err(reason)) => (reason, "stream_kind"),
                    _ => ("authentication timed out".to_owned(), "timeout"),
                };
                recv.stop(close_code::PROTOCOL);
                metrics::counter!("legalchat_auth_failures_total", "reason" => what).increment(1);
                refuse(&link, send, unauthorized_frame(&reason), close_code::UNAUTHORIZED, &reason).await;
            }
        }
    }
}

/// Answers a session stream beyond the connection's maximum, without touching the others.
async fn refuse_extra(most: usize, send: SendHalf, mut recv: RecvHalf) {
    metrics::counter!("legalchat_sessions_refused_total").increment(1);
    recv.stop(close_code::OVERLOADED);
    let message = format!("this connection already carries its maximum of {most} sessions; open another connection");
    send_last(send, error_frame(0, ErrorCode::Overloaded, message)).await;
}

/// Phase 1 of a session: the first frame must be `Authenticate`, within the deadline.
/// Returns the request id and the identity, or `None` once the session has been refused
/// (and ended).
async fn authenticate(link: &Link, ctx: &SessionContext, send: SendHalf, reader: &mut FrameReader) -> Option<Admitted> {
    let deadline = Instant::now() + ctx.limits.auth_timeout;

    let first = tokio::time::timeout_at(deadline.into(), reader.next()).await;
    let (request_id, hello) = match first {
        Err(_) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "timeout").increment(1);
            refuse(link, send, unauthorized_frame("authentication timed out"), close_code::UNAUTHORIZED, "authentication timed out").await;
            return None;
        }
        Ok(Ok(Some(pb::ClientFrame { request_id, request: Some(Request::Authenticate(a)) }))) => (request_id, a),
        Ok(Ok(Some(_))) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "not_first").increment(1);
            let reason = "the first frame of a session must be Authenticate";
            refuse(link, send, unauthorized_frame(reason), close_code::UNAUTHORIZED, reason).await;
            return None;
        }
        Ok(Ok(None)) | Ok(Err(ReadError::Stream(_) | ReadError::Stalled(_))) => {
            link.close_one(close_code::NORMAL, "bye");
            return None;
        }
        Ok(Err(ReadError::Decode(e))) => {
            let frame = error_frame(0, decode_code(&e), e.to_string());
            refuse(link, send, frame, close_code::PROTOCOL, "malformed frame").await;
            return None;
        }
    };
    let (identity, times) = match ctx.auth.verify_with_times(&hello.token) {
        Ok(verified) => verified,
        Err(e) => {
            metrics::counter!("legalchat_auth_failures_total", "reason" => "token").increment(1);
            let reason = e.to_string();
            refuse(link, send, unauthorized_frame(&reason), close_code::UNAUTHORIZED, &reason).await;
            return None;
        }
    };
    if let Err(e) = ctx.services.record_sign_in(&identity).await {
        let frame = if e.code == ErrorCode::Internal {
            tracing::error!(error = %e, "recording the user failed");
            error_frame(request_id, ErrorCode::Internal, "the server cannot record this session; try again")
        } else {
            // Overloaded or shutting down: the caller hears which, and may retry.
            error_frame(request_id, e.code, e.message)
        };
        refuse(link, send, frame, close_code::NORMAL, "internal error").await;
        return None;
    }
    if let Some(reason) = ctx.services.directory.refusal(&identity.user_id, times.issued_at_ms) {
        metrics::counter!("legalchat_auth_failures_total", "reason" => "revoked").increment(1);
        refuse(link, send, unauthorized_frame(reason), close_code::UNAUTHORIZED, reason).await;
        return None;
    }
    let fanout = match hello.fanout_tag {
        0 => None,
        tag => match link.join_fanout(tag, ctx.limits.outbound.saturating_mul(FANOUT_QUEUE_FACTOR)) {
            Ok(route) => route,
            Err(reason) => {
                let frame = error_frame(request_id, ErrorCode::InvalidArgument, reason);
                refuse(link, send, frame, close_code::PROTOCOL, "fanout_tag in use").await;
                return None;
            }
        },
    };
    Some(Admitted { request_id, identity, times, echo_own_messages: hello.echo_own_messages, fanout, send })
}

/// A session whose token was accepted.
struct Admitted {
    request_id: u64,
    identity: Identity,
    times: crate::auth::TokenTimes,
    echo_own_messages: bool,
    /// Its place on the connection's fan-out stream, when it asked for one (QUIC only).
    fanout: Option<crate::registry::FanoutRoute>,
    send: SendHalf,
}

/// A connection's fan-out stream queues this many times a session's bound: it carries
/// the events of many sessions (each event once).
const FANOUT_QUEUE_FACTOR: usize = 4;

/// What `Authenticate` and `Reauthenticate` answer: who the session is, its limits, and
/// when its token expires.
fn authenticated(ctx: &SessionContext, identity: &Identity, id: SessionId, times: crate::auth::TokenTimes) -> pb::Authenticated {
    pb::Authenticated {
        user_id: identity.user_id.clone(),
        role: identity.role.to_pb() as i32,
        session_id: format!("{id:016x}"),
        max_frame_size: u32::try_from(ctx.limits.max_frame_size).unwrap_or(u32::MAX),
        max_message_bytes: u32::try_from(ctx.limits.max_message_size).unwrap_or(u32::MAX),
        server_time_ms: ids::now_ms(),
        display_name: identity.name.clone().unwrap_or_default(),
        max_file_bytes: ctx.services.files.config().max_file_size,
        token_expires_at_ms: times.expires_at_ms,
        fanout: false,
    }
}

/// Serves one session stream, from `Authenticate` to its end.
///
/// Every idle session's task holds this future, so it is laid out with care: an async
/// block rather than an `async fn` (whose arguments rustc keeps twice for the future's
/// whole life), and what only the start or the end needs kept out of it (boxed, or in the
/// frame of [`start_session`]).
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see above)
fn serve_session(link: Arc<Link>, ctx: Arc<SessionContext>, send: SendHalf, recv: RecvHalf) -> impl Future<Output = ()> {
    async move {
        let mut reader = FrameReader::new(recv, ctx.limits.max_frame_size, ctx.limits.frame_timeout);
        // The kind byte already read is the first byte of the first frame's length.
        reader.buf.extend_from_slice(&[STREAM_SESSION]);
        let Some(admitted) = Box::pin(authenticate(&link, &ctx, send, &mut reader)).await else {
            return;
        };
        if reader.buf.is_empty() {
            // The buffer that held the token: an idle session keeps none.
            reader.buf = BytesMut::new();
        }
        let (session, kick, writer, fanout_tag) = start_session(&link, &ctx, admitted);
        let ending = session.read_loop(&mut reader, &kick).await;

        let id = session.id;
        for room in session.rooms.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            ctx.services.hub.leave(&room, id);
        }
        if ctx.services.registry.unregister(&session.identity.user_id, id) {
            drop(ctx.services.record_last_seen(&session.identity.user_id, ids::now_ms()));
            tokio::spawn(requests::presence::announce(ctx.services.clone(), session.identity.user_id.clone()));
        }
        metrics::gauge!("legalchat_sessions_active").decrement(1.0);
        let Session { out, inflight, handle, .. } = session;
        drop(handle);
        if let Some(tag) = fanout_tag {
            // Unregistered above: no event names the tag any more.
            link.leave_fanout(tag);
        }
        // Boxed: the waits of the ending must not weigh on every idle session's task.
        Box::pin(end_session(&link, &ctx, ending, out, &inflight, writer, &mut reader)).await;
    }
}

/// Phase 2 begins: registers an authenticated session, queues its `Authenticated`
/// answer and starts its writer. Returns the session, its kick, its writer and its
/// fan-out tag.
fn start_session(
    link: &Link,
    ctx: &Arc<SessionContext>,
    admitted: Admitted,
) -> (Session, Arc<Kick>, tokio::task::JoinHandle<bool>, Option<u32>) {
    let Admitted { request_id, identity, times, echo_own_messages, fanout, send } = admitted;
    link.authenticated(&identity.user_id);
    let id: SessionId = ctx.session_ids.next();
    let (out_tx, out_rx) = outbound::channel(ctx.limits.outbound);
    let kick = Arc::new(Kick::default());
    let fanout_tag = fanout.as_ref().map(|route| route.tag);
    let mut authenticated = authenticated(ctx, &identity, id, times);
    authenticated.fanout = fanout.is_some();
    // The ack goes first into the queue, so nothing on this stream can overtake it.
    let _ = out_tx.try_send(ack_frame(request_id, pb::ack::Result::Authenticated(authenticated)));
    let handle = SessionHandle { fanout, ..SessionHandle::new(id, out_tx.clone(), kick.clone()) };
    if ctx.services.registry.register(&identity.user_id, handle.clone()) {
        tokio::spawn(requests::presence::announce(ctx.services.clone(), identity.user_id.clone()));
    }
    metrics::gauge!("legalchat_sessions_active").increment(1.0);
    metrics::counter!("legalchat_sessions_total").increment(1);
    tracing::debug!(session = id, user = %identity.user_id, role = identity.role.as_str(), "session authenticated");

    let writer = tokio::spawn(write_loop(send, out_rx));
    let user_share = ctx.services.user_shares.of(&identity.user_id);
    let session = Session {
        ctx: ctx.clone(),
        identity,
        id,
        echo_own_messages,
        out: out_tx,
        handle,
        rooms: std::sync::Mutex::new(HashSet::new()),
        inflight: Arc::new(Semaphore::new(ctx.limits.inflight)),
        user_share,
        expires_at_ms: std::sync::atomic::AtomicI64::new(times.expires_at_ms),
    };
    (session, kick, writer, fanout_tag)
}

/// Lets the last frames of an ended session out (bounded), then ends its stream and,
/// when it was the last session on the connection, the connection.
async fn end_session(
    link: &Link,
    ctx: &SessionContext,
    ending: Ending,
    out: outbound::Sender,
    inflight: &Semaphore,
    writer: tokio::task::JoinHandle<bool>,
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
            reader.recv.stop(code);
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

/// Typing signals may come as QUIC datagrams, each holding one whole frame: they are
/// ephemeral, and a lost one is replaced by the next refresh. A datagram belongs to no
/// stream, so it speaks for the connection's user, and is honoured only while every session
/// on the connection is that one user's. Anything else in a datagram is ignored (and
/// counted), never an error that could end a session.
async fn read_datagrams(conn: quinn::Connection, link: Arc<Link>, ctx: Arc<SessionContext>) {
    while let Ok(bytes) = conn.read_datagram().await {
        let user = link.datagram_user();
        match (codec::decode_exact::<pb::ClientFrame>(&bytes, ctx.limits.max_frame_size), user) {
            (Ok(pb::ClientFrame { request: Some(Request::Typing(t)), .. }), Some(user)) => {
                if let Some((id, active)) = requests::rooms::typing(&t) {
                    ctx.services.hub.typing(id, &user, active, tokio::time::Instant::now());
                }
            }
            _ => metrics::counter!("legalchat_frames_rejected_total", "reason" => "datagram").increment(1),
        }
    }
}

/// Writes what `rx` gets to `send` until every sender is gone (then finishes the stream)
/// or the stream is aborted; false when a write failed.
async fn write_loop(mut send: SendHalf, mut rx: outbound::Receiver) -> bool {
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        // Whatever is already queued goes in one write: fewer syscalls and packets under
        // fan-out load, no added latency when idle.
        match rx.recv_many(&mut chunks, 64).await {
            outbound::Taken::Frames(_) => {}
            outbound::Taken::Ended => break,
            outbound::Taken::Aborted(code) => {
                send.reset(code);
                return true;
            }
        }
        let n = chunks.len() as u64;
        // A write blocked on a slow client is cut short by an abort.
        let written = tokio::select! {
            biased;
            code = rx.aborted() => {
                send.reset(code);
                return true;
            }
            r = send.write_all_chunks(&mut chunks) => r,
        };
        if written.is_err() {
            return false;
        }
        crate::ops::hot().frames_sent.increment(n);
        chunks.clear();
        if rx.is_empty() {
            // An idle session keeps no batch buffer.
            chunks = Vec::new();
        }
    }
    // Closing the connection discards stream data the peer has not acknowledged yet, so
    // a last frame (a goodbye, an error) would be lost: wait until it is acknowledged.
    send.finish(Duration::from_secs(2)).await;
    true
}

struct Session {
    ctx: Arc<SessionContext>,
    identity: Identity,
    id: SessionId,
    /// The client asked for its own new messages back (`Authenticate.echo_own_messages`).
    echo_own_messages: bool,
    out: outbound::Sender,
    /// This session as the registry and rooms see it.
    handle: SessionHandle,
    /// Rooms this session joined, to leave when it ends.
    rooms: std::sync::Mutex<HashSet<ConversationKey>>,
    inflight: Arc<Semaphore>,
    /// The user's share, which all their sessions draw on.
    user_share: Arc<Semaphore>,
    /// When the session's token expires; `Reauthenticate` moves it.
    expires_at_ms: std::sync::atomic::AtomicI64,
}

impl Session {
    /// The instant the token expires, on the runtime's clock.
    fn expiry(&self) -> tokio::time::Instant {
        let left = self.expires_at_ms.load(std::sync::atomic::Ordering::Acquire).saturating_sub(ids::now_ms());
        tokio::time::Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    #[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see `serve_session`)
    fn read_loop<'a>(&'a self, reader: &'a mut FrameReader, kick: &'a Kick) -> impl Future<Output = Ending> + 'a {
        // An async block, not an `async fn`, for the reason `serve_session` gives.
        async move {
            let mut shutdown = self.ctx.shutdown.clone();
            let expiry = tokio::time::sleep_until(self.expiry());
            tokio::pin!(expiry);
            loop {
                if *shutdown.borrow() {
                    return Ending::Goodbye {
                        frame: Some(goodbye_frame(ErrorCode::Unavailable, "the server is shutting down; reconnect shortly")),
                        code: close_code::SHUTDOWN,
                        reason: "server shutting down".into(),
                    };
                }
                // The request is handed out of the `select!` as a boxed future and awaited
                // after it: awaited inside, the `select!`'s output (the frame) would stay in
                // this future, which every idle session keeps, across the whole request.
                let dispatch = tokio::select! {
                    biased;
                    (code, reason) = kick.kicked() => {
                        if code == ErrorCode::Unauthorized {
                            // Revoked or deactivated: said in-band, then the end.
                            return Ending::Goodbye { frame: Some(goodbye_frame(code, &reason)), code: close_code::UNAUTHORIZED, reason };
                        }
                        return Ending::Abort { code: close_code::OVERLOADED, reason: format!("{}: {reason}", code.as_str_name()) };
                    }
                    () = &mut expiry => {
                        let renewed = self.expiry();
                        if renewed > tokio::time::Instant::now() {
                            expiry.as_mut().reset(renewed);
                            continue;
                        }
                        metrics::counter!("legalchat_sessions_expired_total").increment(1);
                        let reason = "your token expired; sign in again (clients renew their token before it expires)";
                        return Ending::Goodbye { frame: Some(goodbye_frame(ErrorCode::Unauthorized, reason)), code: close_code::UNAUTHORIZED, reason: reason.into() };
                    }
                    _ = shutdown.changed() => continue,
                    frame = reader.next() => match frame {
                        Ok(Some(frame)) => Box::pin(self.dispatch(frame)),
                        Ok(None) => return Ending::ClientDone,
                        Err(ReadError::Stream(reason)) => {
                            tracing::debug!(session = self.id, %reason, "session stream ended");
                            return Ending::ClientDone;
                        }
                        Err(ReadError::Stalled(after)) => {
                            metrics::counter!("legalchat_frames_rejected_total", "reason" => "stalled").increment(1);
                            let reason = format!("a frame began and did not complete within {} ms; the session ends", after.as_millis());
                            tracing::info!(session = self.id, user = %self.identity.user_id, "closing a session whose frame stalled");
                            return Ending::Goodbye { frame: Some(error_frame(0, ErrorCode::MalformedFrame, reason.clone())), code: close_code::PROTOCOL, reason };
                        }
                        Err(ReadError::Decode(e)) => {
                            metrics::counter!("legalchat_frames_rejected_total", "reason" => decode_code(&e).as_str_name()).increment(1);
                            tracing::info!(session = self.id, user = %self.identity.user_id, error = %e, "closing session after a bad frame");
                            return Ending::Goodbye { frame: Some(error_frame(0, decode_code(&e), e.to_string())), code: close_code::PROTOCOL, reason: e.to_string() };
                        }
                    },
                };
                dispatch.await;
            }
        }
    }

    /// Executes what [`requests::plan`] makes of one request. Every request but a typing
    /// signal is answered exactly once; the in-flight permit is held until it is.
    async fn dispatch(&self, frame: pb::ClientFrame) {
        let request_id = frame.request_id;
        if let Some(Request::Reauthenticate(r)) = &frame.request {
            let answer = self.reauthenticate(&r.token).await;
            return self.answer(request_id, answer).await;
        }
        let Ok(own) = self.inflight.clone().acquire_owned().await else { return };
        let Ok(users) = self.user_share.clone().try_acquire_owned() else {
            metrics::counter!("legalchat_user_share_refusals_total").increment(1);
            let most = self.ctx.services.user_shares.per_user();
            let e = RequestError::new(
                ErrorCode::Overloaded,
                format!("your sessions together have {most} requests in flight, the most one user may; wait for answers and retry"),
            );
            drop(own);
            return self.answer(request_id, Err(e)).await;
        };
        let permit = InFlight { _session: own, _user: users };
        let started = Instant::now();
        let services = &self.ctx.services;
        let cx = requests::Context {
            caller: &self.identity,
            session: self.id,
            shards: services.shards.len(),
            max_message_size: self.ctx.limits.max_message_size,
            now_ms: ids::now_ms(),
        };
        match requests::plan(frame, &cx) {
            Plan::Typing(signal) => {
                if let Some((id, active)) = signal {
                    services.hub.typing(id, &self.identity.user_id, active, tokio::time::Instant::now());
                }
            }
            Plan::Refuse(e) => self.answer(request_id, Err(e)).await,
            Plan::Pong(pong) => self.answer(request_id, Ok(pb::ack::Result::Pong(pong))).await,
            Plan::Shard(routed) => {
                if let Err(e) = services.shards.submit_to(routed.shard, routed.command) {
                    return self.answer(request_id, Err(e.into())).await;
                }
                let out = self.out.clone();
                tokio::spawn(async move {
                    let _ = out.send(answer_frame(request_id, routed.pending.wait().await)).await;
                    drop(permit);
                });
            }
            Plan::Append(append) => {
                if append.is_message()
                    && let Err(wait) = services.limits.messages.check(&self.identity.user_id)
                {
                    metrics::counter!("legalchat_rate_limited_total", "limit" => "messages").increment(1);
                    let most = services.limits.config.messages_per_minute;
                    let plural = if most == 1 { "" } else { "s" };
                    let e = RequestError::rate_limited(&format!("message limit reached: at most {most} message{plural} per minute"), wait);
                    drop(permit);
                    return self.answer(request_id, Err(e)).await;
                }
                // Answered from the shard's thread (see [`AckTo`]), not by a task of its own.
                let ack = AckTo { out: self.out.clone(), kick: self.handle.kick.clone(), request_id, started, permit: Some(permit) };
                let (shard, message) = (append.shard, append.is_message());
                let cmd = append.into_command(
                    self.identity.clone(),
                    self.id,
                    self.echo_own_messages,
                    SendReply::new(move |result| ack.answer(result)),
                );
                if message {
                    crate::ops::hot().stage_receive.record(started.elapsed().as_secs_f64());
                }
                if let Err(refused) = services.shards.submit(shard, cmd)
                    && let (e, Command::Send { reply, .. } | Command::Event { reply, .. }) = *refused
                {
                    reply.answer(Err(e.into()));
                }
            }
            Plan::JoinRoom(join) => self.join_room(join, request_id, permit).await,
            Plan::LeaveRoom(id) => {
                self.rooms.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                services.hub.leave(&id, self.id);
                self.answer(request_id, Ok(pb::ack::Result::Done(pb::Done {}))).await;
            }
            Plan::Gather(gather) => {
                let services = services.clone();
                let caller = self.identity.clone();
                let out = self.out.clone();
                tokio::spawn(async move {
                    let _ = out.send(answer_frame(request_id, gather.run(&services, &caller).await)).await;
                    drop(permit);
                });
            }
        }
    }

    /// `Reauthenticate`: a fresh token of the same user and role moves the session's
    /// expiry; anything else is refused and the session goes on as it was.
    async fn reauthenticate(&self, token: &str) -> Result<pb::ack::Result, RequestError> {
        let unauthorized = |m: &str| RequestError::new(ErrorCode::Unauthorized, m);
        let (identity, times) = self.ctx.auth.verify_with_times(token).map_err(|e| unauthorized(&e.to_string()))?;
        if identity.user_id != self.identity.user_id {
            return Err(unauthorized("the new token is for another user; open a new session for them"));
        }
        if identity.role != self.identity.role {
            return Err(unauthorized("the new token carries another role; sign in again"));
        }
        if let Some(reason) = self.ctx.services.directory.refusal(&identity.user_id, times.issued_at_ms) {
            return Err(unauthorized(reason));
        }
        self.expires_at_ms.store(times.expires_at_ms, std::sync::atomic::Ordering::Release);
        metrics::counter!("legalchat_sessions_renewed_total").increment(1);
        Ok(pb::ack::Result::Authenticated(authenticated(&self.ctx, &identity, self.id, times)))
    }

    async fn answer(&self, request_id: u64, result: Result<pb::ack::Result, RequestError>) {
        let _ = self.out.send(answer_frame(request_id, result)).await;
    }

    /// Joining needs the participant list (from the shard) before the room can answer.
    async fn join_room(&self, join: requests::rooms::Join, request_id: u64, permit: InFlight) {
        let services = &self.ctx.services;
        if let Err(e) = services.shards.submit_to(join.shard, join.command) {
            return self.answer(request_id, Err(e.into())).await;
        }
        let members = match join.members.await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return self.answer(request_id, Err(e)).await,
            Err(_) => return self.answer(request_id, Err(RequestError::new(ErrorCode::Unavailable, "the server is shutting down"))).await,
        };
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).insert(join.conversation);
        let users = services.hub.join(join.conversation, members, &self.identity.user_id, self.handle.clone());
        self.answer(request_id, Ok(pb::ack::Result::RoomUsers(users))).await;
        drop(permit);
    }
}
