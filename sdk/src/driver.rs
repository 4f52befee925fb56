//! The async driver: connections come and go, the [`ClientState`] stays.
//!
//! ```text
//!                 ┌──────────────── supervisor task (one per client) ───────────────┐
//!                 │ link up ─► resend outbox ─► catch up ─► Resumed ─► re-join rooms │
//!                 │ link down ─► Disconnected ─► backoff ─► Reconnecting ─► connect  │
//!                 └──────────────────────────────────────────────────────────────────┘
//!  per link:  reader task: frames ─► answers to their requests, events ─► ClientState
//!             writer task: the only writer of the session stream
//!             datagram task: typing events that arrive as QUIC datagrams
//!  on demand: fetch tasks (gaps: GetHistory) and report tasks (MarkDelivered)
//! ```
//!
//! All decisions are made by [`ClientState`] under one mutex that is never held across
//! an `.await`; the tasks here only move bytes and carry out the returned effects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use legalchat_protocol::codec::{self, LENGTH_PREFIX_LEN};
use legalchat_protocol::pb;
use legalchat_protocol::validate::ValidationError;
use prost::Message as _;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info, warn};

use crate::carrier::{Carrier, TcpDialer, Transport, TransportPolicy};
use crate::connection::{
    self, AUTH_REQUEST_ID, CLOSE_DRAIN, CLOSE_GRACE, CLOSE_NORMAL, CLOSE_PROTOCOL, Dial, Established, FrameReader, Outbound, ReadFailure,
};
use crate::inbox::Fetch;
use crate::outbox::{Attempt, EntryId};
use crate::session::{self, Completed, PendingRequests, Routed, SessionInfo, answer};
use crate::state::{ClientState, Effects};
use crate::{ClientConfig, Error, Event, Result};

/// Frames queued for a writer task. Each is at most one server frame size, so the queue
/// holds at most a few MiB; callers beyond it wait.
const OUTBOUND_QUEUE: usize = 256;
/// Page size of gap fetches (the protocol's maximum).
const FETCH_PAGE: u32 = 100;
/// Page size of the conversation list that sets the first cursors (the protocol's maximum).
const LIST_LIMIT: u32 = 500;

/// Locks a mutex that guards plain data; a panic elsewhere while holding it cannot
/// leave that data half-updated in a way that matters, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One authenticated connection.
#[derive(Debug)]
pub(crate) struct Link {
    /// Counts connections of this client, from 1.
    pub(crate) epoch: u64,
    pub(crate) session: SessionInfo,
    pub(crate) carrier: Carrier,
    /// The connection carries other clients' sessions too (a [`crate::SharedConnection`]):
    /// this session ends with its stream, and the connection stays.
    shared_connection: bool,
    /// Set (with the reason) to end this session on a shared connection; its reader stops.
    abandoned: Latch,
    outbound: crate::queue::Sender<Outbound>,
    pending: Mutex<PendingRequests>,
    writer: Mutex<Option<JoinHandle<()>>>,
    datagrams: Mutex<Option<JoinHandle<()>>>,
    /// The session's place on its shared connection's fan-out stream, where its events
    /// come (see [`crate::fanout`]).
    fanout: Option<(Arc<crate::fanout::FanoutTable>, u32)>,
}

impl Link {
    /// Writes one frame (waiting for room in the writer's queue).
    async fn write(&self, frame: bytes::Bytes) -> Result<()> {
        self.outbound.send(Outbound::Frame(frame)).await.map_err(|_| self.gone())
    }

    /// Closes the connection, unless other clients' sessions share it.
    fn close_connection(&self, code: u32, why: &[u8]) {
        if !self.shared_connection {
            self.carrier.close(code, why);
        }
    }

    /// Ends this session so that the client reconnects: closes its connection, or on a
    /// shared connection stops the session's reader (and with it, its stream).
    pub(crate) fn drop_session(&self, why: &str) {
        if self.shared_connection {
            self.abandoned.set(why);
        } else {
            self.carrier.close(CLOSE_NORMAL, why.as_bytes());
        }
    }

    fn gone(&self) -> Error {
        Error::Disconnected(lock(&self.pending).closed_reason().unwrap_or("the connection is closed").to_owned())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // However the session ended (its reader may have been aborted with the client),
        // its tag leaves the fan-out table with it.
        if let Some((table, tag)) = &self.fanout {
            table.remove(*tag);
        }
    }
}

/// Everything the tasks of one client share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    /// The newest token: renewed in place, used by the next reconnect.
    token: Mutex<String>,
    quic: quinn::ClientConfig,
    endpoint: quinn::Endpoint,
    /// How to reach the server over TLS over TCP.
    tcp: TcpDialer,
    /// The last connection had to use TLS over TCP, and QUIC has not answered since: the
    /// next connection tries TCP first.
    prefer_tcp: AtomicBool,
    /// The endpoint is this client's alone (not a shared [`crate::ClientEndpoint`]): it is
    /// closed with the client.
    owns_endpoint: bool,
    pub(crate) user_id: String,
    pub(crate) role: pb::UserRole,
    session: Mutex<SessionInfo>,
    state: Mutex<ClientState>,
    /// The current connection, once authenticated; `None` while disconnected.
    link: Mutex<Option<Arc<Link>>>,
    /// A connection was published, or the client ended: requests waiting for a
    /// connection look again. (A mutex and a `Notify` rather than a `watch` channel, which
    /// keeps eight wait lists: a gateway holds a client per socket.)
    link_published: Notify,
    /// Events were queued for the app.
    readable: Notify,
    /// The app took events; the queue has room again.
    writable: Notify,
    /// Set (with the reason) when the client is to end.
    shutdown: Latch,
    next_request_id: AtomicU64,
    epochs: AtomicU64,
    pub(crate) in_flight: Semaphore,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, ClientState> {
        lock(&self.state)
    }

    pub(crate) fn session(&self) -> SessionInfo {
        lock(&self.session).clone()
    }

    /// The current session's `(max_frame_size, max_message_bytes)`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        let s = lock(&self.session);
        (s.max_frame_size, s.max_message_bytes)
    }

    /// Tells a waiting reader of events that there are some. One wake-up per update is
    /// enough (a reader takes what is there, then looks again); when nobody waits, the
    /// permit is kept for the next one, so nothing is missed.
    pub(crate) fn events_queued(&self) {
        self.readable.notify_one();
    }

    pub(crate) fn request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The current connection, if any.
    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        lock(&self.link).clone()
    }

    /// Makes `link` (or none) the current connection and wakes what waits for one.
    fn publish_link(&self, link: Option<Arc<Link>>) {
        *lock(&self.link) = link;
        self.link_published.notify_waiters();
    }

    /// Asks the supervisor to end the client.
    pub(crate) fn request_shutdown(&self, reason: &str) {
        self.shutdown.set(reason);
    }

    /// The next event for the app; `None` once the client has ended and everything,
    /// `Event::Closed` included, was taken.
    pub(crate) async fn next_event(&self) -> Option<Event> {
        loop {
            // A full queue never makes this wait; yield now and then like a channel would
            // (tokio's cooperative budget). No event is held across an await here: one
            // would make every waiting future (one per idle session of a gateway) as large
            // as the largest event.
            tokio::task::consume_budget().await;
            match self.take_event() {
                Taken::Event(event) => return Some(event),
                Taken::Finished => return None,
                // Empty: wait for the reader's signal (a permit left before we got here
                // counts), then look again.
                Taken::Empty => {}
            }
            self.readable.notified().await;
        }
    }

    /// The next queued event, without waiting.
    fn take_event(&self) -> Taken {
        let mut state = self.state();
        let was_full = !state.has_room();
        match state.pop_event() {
            Some(event) => {
                drop(state);
                if was_full {
                    // The reader may be waiting for room.
                    self.writable.notify_waiters();
                }
                Taken::Event(event)
            }
            None if state.is_finished() => Taken::Finished,
            None => Taken::Empty,
        }
    }

    /// Waits until the app's event queue has room (or the client ended).
    async fn wait_for_room(&self) {
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                if state.has_room() || state.is_finished() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Waits (until `deadline`) for a connection to send a request on.
    pub(crate) async fn current_link(&self, deadline: Instant) -> Result<Arc<Link>> {
        loop {
            // Registered before looking, so that a connection published in between wakes it.
            let published = self.link_published.notified();
            let mut published = std::pin::pin!(published);
            published.as_mut().enable();
            if let Some(reason) = self.state().closed_reason() {
                return Err(Error::Closed(reason.to_owned()));
            }
            if let Some(link) = self.link() {
                return Ok(link);
            }
            if timeout_at(deadline, published).await.is_err() {
                let state = self.state().state().clone();
                return Err(Error::Disconnected(format!("no connection to the server in time ({state})")));
            }
        }
    }

    /// Sends `request` on `link` and waits (until `deadline`) for its answer.
    pub(crate) async fn exchange(&self, link: &Link, request: pb::client_frame::Request, deadline: Instant) -> Result<pb::ack::Result> {
        let request_id = self.request_id();
        let frame = encode_checked(request_id, request, link.session.max_frame_size)?;
        let answer = lock(&link.pending).register(request_id)?;
        let _forget = ForgetOnDrop { pending: &link.pending, request_id };
        let exchange = async {
            link.write(frame).await?;
            answer.await.map_err(|_| link.gone())?
        };
        timeout_at(deadline, exchange).await.map_err(|_| Error::Timeout)?
    }

    /// Writes a frame that is never answered (typing).
    pub(crate) async fn signal(&self, request: pb::client_frame::Request) -> Result<()> {
        let Some(link) = self.link() else {
            let state = self.state().state().clone();
            return Err(Error::Disconnected(state.to_string()));
        };
        let frame = encode_checked(self.request_id(), request, link.session.max_frame_size)?;
        link.write(frame).await
    }

    /// Writes outbox entry `entry` on the current connection now, if sends go straight
    /// to it (otherwise the supervisor sends it once the outbox has been resent).
    pub(crate) async fn write_send(&self, entry: EntryId) {
        let Some(link) = self.link() else { return };
        let frame = {
            let mut state = self.state();
            if state.direct() != Some(link.epoch) {
                return;
            }
            match prepare_send(&mut state, &link, self.request_id(), entry) {
                Some(frame) => frame,
                None => return,
            }
        };
        // On failure the entry stays in the outbox, marked as sent on a dead connection,
        // and is sent again on the next one.
        let _ = link.write(frame).await;
    }

    /// Carries out what a state change asked for.
    fn carry_out(self: &Arc<Self>, link: &Arc<Link>, effects: Effects) {
        for fetch in effects.fetches {
            tokio::spawn(fetch_missing(Arc::clone(self), Arc::clone(link), fetch));
        }
        for (conversation_id, seq) in effects.delivery_reports {
            tokio::spawn(report_delivery(Arc::clone(self), Arc::clone(link), conversation_id, seq));
        }
    }

    /// Runs `f` on the state, wakes the app, and carries out the effects on `link`.
    /// Returns whether the app's event queue still has room.
    fn update(self: &Arc<Self>, link: &Arc<Link>, f: impl FnOnce(&mut ClientState) -> Effects) -> bool {
        let (effects, room) = {
            let mut state = self.state();
            let effects = f(&mut state);
            (effects, state.has_room() || state.is_finished())
        };
        self.events_queued();
        if !effects.is_empty() {
            self.carry_out(link, effects);
        }
        room
    }
}

/// What [`Shared::take_event`] found. Matched as soon as it is made, so the event is
/// not boxed: that would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Taken {
    Event(Event),
    /// The client has ended and every event was taken.
    Finished,
    Empty,
}

/// Encodes a request, refusing one the server would end the whole session over.
fn encode_checked(request_id: u64, request: pb::client_frame::Request, max_frame_size: usize) -> Result<bytes::Bytes> {
    let frame = pb::ClientFrame { request_id, request: Some(request) };
    let body_len = frame.encoded_len();
    if body_len > max_frame_size {
        return Err(
            ValidationError::new("frame", format!("the request is {body_len} bytes; the server accepts at most {max_frame_size}")).into()
        );
    }
    let bytes = codec::encode(&frame);
    debug_assert_eq!(bytes.len(), body_len + LENGTH_PREFIX_LEN);
    Ok(bytes)
}

/// The frame that sends outbox entry `entry` on `link` as `request_id`, after recording
/// that it was sent there; `None` when the entry is gone or the link is closed.
fn prepare_send(state: &mut ClientState, link: &Link, request_id: u64, entry: EntryId) -> Option<bytes::Bytes> {
    let pending = state.outbox().get(entry)?;
    if let Attempt::Sent { epoch, .. } = pending.attempt
        && epoch == link.epoch
    {
        return None;
    }
    let frame = pb::ClientFrame { request_id, request: Some(pending.request()) };
    lock(&link.pending).register_send(request_id, entry).ok()?;
    state.outbox_mut().mark_sent(entry, link.epoch, request_id);
    Some(codec::encode(&frame))
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

// ───────────────────────────── starting ─────────────────────────────

/// A connected client: its shared state and its supervisor task.
pub(crate) struct Started {
    pub(crate) shared: Arc<Shared>,
    pub(crate) supervisor: JoinHandle<()>,
}

/// Connects, authenticates, sets the first cursors (from the conversation list, or from
/// saved cursors), and starts the supervisor.
pub(crate) async fn start(mut config: ClientConfig) -> Result<Started> {
    config.validate()?;
    // The clients of a shared connection share their configurations (a root store, a
    // crypto provider and a TLS session cache each).
    let (quic, tls) = match &config.connection {
        Some(shared) => shared.client_configs(&config)?,
        None => crate::tls::client_configs(&config.ca_cert_pem, config.idle_timeout, config.keep_alive_interval)?,
    };
    let bind: std::net::SocketAddr = if config.server_addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let (endpoint, owns_endpoint) = match &config.endpoint {
        Some(shared) => (shared.endpoint.clone(), false),
        None => (quinn::Endpoint::client(bind).map_err(|e| Error::Connect(format!("cannot open a UDP socket on {bind}: {e}")))?, true),
    };
    let tcp = TcpDialer { addr: config.tcp_addr(), server_name: config.server_name.clone(), tls };
    let deadline = Instant::now() + config.connect_timeout;
    let dial = Dial { endpoint: &endpoint, quic: quic.clone(), tcp: &tcp };
    let established = match connection::establish(&dial, &config, deadline, Transport::Quic).await {
        Ok(e) => e,
        Err(e) => {
            if owns_endpoint {
                endpoint.close(CLOSE_NORMAL.into(), b"");
            }
            return Err(e);
        }
    };

    let session = established.session.clone();
    let mut state = ClientState::new(
        &session.user_id,
        config.event_buffer,
        config.outbox_capacity,
        crate::inbox::DEFAULT_MAX_HELD,
        config.timeline_capacity,
    );
    state.echo_own_messages(config.echo_own_messages);
    let resume = !config.resume_cursors.is_empty();
    state.start_from_cursors(&config.resume_cursors);
    // Until the first cursors are set, live events wait (see `ClientState::on_event`).
    state.begin_catch_up();
    // Kept once, not twice: the token lives on in `Shared::token` (renewed there; each
    // reconnect puts the newest into its copy of the configuration), and the cursors to
    // resume from are in the state now. A gateway holds a client per socket.
    let token = std::mem::take(&mut config.token);
    config.resume_cursors = Vec::new();
    let shared = Arc::new(Shared {
        in_flight: Semaphore::new(config.max_in_flight),
        quic,
        endpoint,
        prefer_tcp: AtomicBool::new(established.carrier.transport() == Transport::Tcp),
        tcp,
        owns_endpoint,
        user_id: session.user_id.clone(),
        role: session.role,
        session: Mutex::new(session),
        state: Mutex::new(state),
        link: Mutex::new(None),
        link_published: Notify::new(),
        readable: Notify::new(),
        writable: Notify::new(),
        shutdown: Latch::default(),
        next_request_id: AtomicU64::new(AUTH_REQUEST_ID + 1),
        epochs: AtomicU64::new(0),
        token: Mutex::new(token),
        config,
    });
    let (link, reader) = open_link(&shared, established);
    debug!(user_id = %shared.user_id, session_id = %link.session.session_id, "session established");

    if !resume {
        let listed = shared
            .exchange(&link, pb::client_frame::Request::ListConversations(pb::ListConversations { limit: LIST_LIMIT }), deadline)
            .await;
        match listed.and_then(answer::conversations) {
            Ok(conversations) => {
                shared.update(&link, |state| {
                    state.start_from_list(&conversations);
                    state.finish_catch_up(false)
                });
            }
            Err(e) => {
                end_link(&shared, &link, "the first conversation list failed", true, true).await;
                reader.abort();
                if shared.owns_endpoint {
                    shared.endpoint.close(CLOSE_NORMAL.into(), b"");
                }
                return Err(e);
            }
        }
    }
    let supervisor = tokio::spawn(supervise(Arc::clone(&shared), link, reader, resume));
    if let Some(source) = shared.config.token_source.clone() {
        tokio::spawn(renew_tokens(Arc::downgrade(&shared), source));
    }
    Ok(Started { shared, supervisor })
}

/// Starts the tasks of a freshly authenticated connection and publishes it.
fn open_link(shared: &Arc<Shared>, established: Established) -> (Arc<Link>, JoinHandle<String>) {
    let Established { carrier, shared: shared_connection, session, reader, send, fanout_tag } = established;
    let fanout = fanout_tag.and_then(|tag| Some((shared.config.connection.as_ref()?.fanout.clone(), tag)));
    let epoch = shared.epochs.fetch_add(1, Ordering::Relaxed) + 1;
    let (outbound_tx, outbound_rx) = crate::queue::bounded(OUTBOUND_QUEUE);
    let writer = tokio::spawn(connection::write_loop(send, outbound_rx));
    *lock(&shared.session) = session.clone();
    let link = Arc::new(Link {
        epoch,
        session,
        carrier,
        shared_connection,
        abandoned: Latch::default(),
        outbound: outbound_tx,
        pending: Mutex::new(PendingRequests::default()),
        writer: Mutex::new(Some(writer)),
        datagrams: Mutex::new(None),
        fanout,
    });
    if let Some((table, tag)) = &link.fanout {
        table.insert(*tag, shared, &link);
    }
    // A datagram belongs to no stream: on a shared connection it could be any session's.
    if !link.shared_connection && link.carrier.transport() == Transport::Quic {
        *lock(&link.datagrams) = Some(tokio::spawn(read_datagrams(Arc::clone(shared), Arc::clone(&link))));
    }
    if link.carrier.transport() == Transport::Tcp && shared.config.transport == TransportPolicy::Auto {
        tokio::spawn(probe_quic(Arc::downgrade(shared), Arc::downgrade(&link)));
    }
    let reader = tokio::spawn(read_loop(Arc::clone(shared), Arc::clone(&link), reader));
    shared.publish_link(Some(Arc::clone(&link)));
    (link, reader)
}

/// While a link runs over TLS over TCP, tries a QUIC handshake every
/// `quic_retry_interval`; once QUIC answers, ends the link so that the client reconnects
/// on QUIC (and resumes: nothing is missed). Ends with the link or the client.
async fn probe_quic(shared: std::sync::Weak<Shared>, link: std::sync::Weak<Link>) {
    loop {
        let Some(interval) = shared.upgrade().map(|s| s.config.quic_retry_interval) else { return };
        tokio::time::sleep(interval).await;
        let (Some(s), Some(l)) = (shared.upgrade(), link.upgrade()) else { return };
        if lock(&l.pending).closed_reason().is_some() || s.state().closed_reason().is_some() {
            return;
        }
        let deadline = Instant::now() + s.config.connect_timeout;
        if connection::quic_answers(&s.endpoint, s.quic.clone(), &s.config, deadline).await {
            s.prefer_tcp.store(false, Ordering::Relaxed);
            info!("QUIC answers again; moving the session back to it");
            l.drop_session("moving back to QUIC, which answers again");
            return;
        }
        debug!("QUIC still does not answer; staying on TLS over TCP");
    }
}

// ───────────────────────────── per-connection tasks ─────────────────────────────

/// The reader task: answers to their requests, events to the state, until the
/// connection ends; returns why it ended. Requests still waiting on the connection fail
/// at once.
// The reader of every session waits in these futures nearly all its life, one per
// session of a gateway, so they are laid out with care: functions returning async blocks
// rather than `async fn`s (rustc keeps an `async fn`'s arguments twice for the future's
// whole life), the reader held once, and the rare back-pressure wait boxed.
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see above)
fn read_loop(shared: Arc<Shared>, link: Arc<Link>, mut reader: FrameReader) -> impl Future<Output = String> {
    async move {
        let reason = read_frames(&shared, &link, &mut reader).await;
        if let Some((table, tag)) = &link.fanout {
            // The session is over: events still on their way for it are dropped (the next
            // session catches up).
            table.remove(*tag);
        }
        // Without reconnecting, what waits here fails as for a closed client.
        lock(&link.pending).close(&reason, !shared.config.reconnect.allows(1));
        reason
    }
}

#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see above)
fn read_frames<'a>(shared: &'a Arc<Shared>, link: &'a Arc<Link>, reader: &'a mut FrameReader) -> impl Future<Output = String> + 'a {
    async move {
        let idle = shared.config.idle_timeout;
        // A Goodbye or session-level error names the real reason better than the connection
        // close that follows it.
        let mut announced_end: Option<String> = None;
        // One wait for the whole loop: made anew for every frame, it registered and
        // unregistered with the watch each time, a few percent of a gateway's CPU.
        let abandoned = link.abandoned.wait();
        let mut abandoned = std::pin::pin!(abandoned);
        loop {
            // The frame lives only inside this block: a session's reader waits here nearly
            // all its life, and a frame in scope across the awaits below would make this
            // future (one per session of a gateway) as large as the largest frame.
            let room = {
                let read = tokio::select! {
                    biased;
                    why = &mut abandoned => {
                        reader.stop(CLOSE_NORMAL);
                        return why;
                    }
                    read = reader.read_frame() => read,
                };
                match take_frame(shared, link, reader, read, &mut announced_end) {
                    Ok(room) => room,
                    Err(reason) => return reason,
                }
            };
            if room {
                // Reading a full buffer never waits, so yield now and then (tokio's
                // cooperative budget): a busy connection must not starve the others' tasks.
                tokio::task::consume_budget().await;
                continue;
            }
            // Back-pressure: stop reading while the app's queue is full (the server applies
            // its slow-consumer policy), but notice a dead connection meanwhile. Boxed: rare,
            // and an idle reader's future need not carry its room.
            let ended = Box::pin(async {
                tokio::select! {
                    () = shared.wait_for_room() => None,
                    reason = link.carrier.closed(idle) => Some(announced_end.take().unwrap_or(reason)),
                    why = abandoned.as_mut() => {
                        reader.stop(CLOSE_NORMAL);
                        Some(why)
                    }
                }
            })
            .await;
            if let Some(reason) = ended {
                return reason;
            }
        }
    }
}

/// Hands one read frame to whoever waits for it: `Ok` with whether the app's event queue
/// still has room, `Err` with the reason once the session is over.
fn take_frame(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    reader: &mut FrameReader,
    read: Result<Option<pb::ServerFrame>, ReadFailure>,
    announced_end: &mut Option<String>,
) -> Result<bool, String> {
    let idle = shared.config.idle_timeout;
    let frame = match read {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(announced_end.take().unwrap_or_else(|| "the server ended the session".into())),
        Err(failure) => {
            if failure.is_malformed() {
                warn!(error = %failure.describe(idle), "closing the session");
                reader.stop(CLOSE_PROTOCOL);
                link.close_connection(CLOSE_PROTOCOL, b"malformed frame");
            }
            return Err(announced_end.take().unwrap_or_else(|| failure.describe(idle)));
        }
    };
    Ok(match session::route(frame) {
        Routed::Reply { request_id, reply } => {
            let completed = lock(&link.pending).complete(request_id, reply);
            match completed {
                Completed::Send { entry, reply } => shared.update(link, |state| state.send_answered(entry, *reply)),
                Completed::Answered => true,
                Completed::Nobody => {
                    debug!(request_id, "answer arrived after its caller stopped waiting");
                    true
                }
            }
        }
        Routed::Event(event) => {
            if let Event::Goodbye { code, reason } = &event {
                announced_end.get_or_insert_with(|| session::goodbye_reason(*code, reason));
            }
            shared.update(link, |state| state.on_event(event))
        }
        Routed::SessionError(reason) => {
            warn!(%reason, "session-level error from the server");
            announced_end.get_or_insert(reason);
            true
        }
        Routed::Ignore(why) => {
            debug!(why, "ignored a frame");
            true
        }
    })
}

/// An event from the fan-out stream for the session on `link`. It cannot wait for room in
/// the app's queue (the stream carries other sessions' events too), so a session whose
/// app has fallen a whole queue behind is ended and resumed from its cursors, as the
/// server would end one that stopped reading its own stream.
pub(crate) fn fanout_event(shared: &Arc<Shared>, link: &Arc<Link>, event: Event) {
    if link.abandoned.is_set() {
        return;
    }
    let effects = {
        let mut state = shared.state();
        // While catching up, live events wait in a queue of their own, with its own bound
        // (see `ClientState::on_event`): a full event queue then says nothing of them.
        if state.has_room() || state.is_finished() || state.is_catching_up() { Some(state.on_event(event)) } else { None }
    };
    let Some(effects) = effects else {
        warn!("the app fell a whole event queue behind on a shared connection; resuming the session");
        link.drop_session("the app did not take its events in time; resuming from the cursors");
        return;
    };
    shared.events_queued();
    if !effects.is_empty() {
        shared.carry_out(link, effects);
    }
}

/// A reason, set once, and a wait for it: what a `watch` channel of `Option<String>` would
/// do here in a fraction of its memory (tokio's watch channel keeps eight wait lists, about
/// 300 bytes; a gateway holds two of these per session).
#[derive(Debug, Default)]
pub(crate) struct Latch {
    reason: Mutex<Option<String>>,
    set: Notify,
}

impl Latch {
    /// Sets the reason, unless one was set before (the first reason wins).
    pub(crate) fn set(&self, reason: &str) {
        {
            let mut r = lock(&self.reason);
            if r.is_some() {
                return;
            }
            *r = Some(reason.to_owned());
        }
        self.set.notify_waiters();
    }

    /// Whether the reason is set.
    pub(crate) fn is_set(&self) -> bool {
        lock(&self.reason).is_some()
    }

    /// Resolves with the reason once it is set (at once if it is).
    pub(crate) async fn wait(&self) -> String {
        loop {
            // Registered before looking, so that a reason set in between wakes it.
            let notified = self.set.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = lock(&self.reason).clone() {
                return reason;
            }
            notified.await;
        }
    }
}

/// Typing events may arrive as QUIC datagrams, each one whole frame.
async fn read_datagrams(shared: Arc<Shared>, link: Arc<Link>) {
    let Carrier::Quic(connection) = &link.carrier else { return };
    while let Ok(bytes) = connection.read_datagram().await {
        match codec::decode_exact::<pb::ServerFrame>(&bytes, shared.config.max_inbound_frame) {
            Ok(frame) => match session::route(frame) {
                Routed::Event(event @ Event::Typing(_)) => {
                    shared.update(&link, |state| state.on_event(event));
                }
                _ => debug!("ignored a datagram that is not a typing event"),
            },
            Err(e) => debug!(error = %e, "ignored an undecodable datagram"),
        }
    }
}

/// Fetches what a gap is missing, one page; the state asks for the next if needed.
async fn fetch_missing(shared: Arc<Shared>, link: Arc<Link>, fetch: Fetch) {
    shared.wait_for_room().await;
    let request = pb::GetHistory {
        conversation_id: fetch.conversation_id.clone(),
        cursor: Some(pb::get_history::Cursor::AfterSeq(fetch.after_seq)),
        limit: FETCH_PAGE,
    };
    let deadline = Instant::now() + shared.config.request_timeout;
    let reply = shared.exchange(&link, pb::client_frame::Request::GetHistory(request), deadline).await.and_then(answer::history);
    shared.update(&link, |state| state.fetched(&fetch, reply));
}

/// Reports delivery in a conversation, and newer positions while they keep coming: the
/// first at once, later ones at most every `delivery_report_interval`, each with the
/// newest position at the time it goes. Every report that moves a position is fanned out
/// to the whole group, so in a busy conversation the pace, not the message rate, sets the
/// cost.
async fn report_delivery(shared: Arc<Shared>, link: Arc<Link>, conversation_id: String, mut seq: u64) {
    loop {
        let sent_at = Instant::now();
        let request = pb::MarkDelivered { conversation_id: conversation_id.clone(), seq };
        let deadline = sent_at + shared.config.request_timeout;
        let reply = shared.exchange(&link, pb::client_frame::Request::MarkDelivered(request), deadline).await;
        let reply = reply.and_then(|r| answer::done("MarkDelivered", r));
        let next = match reply {
            Ok(()) => shared.state().delivery_reported(&conversation_id, true),
            Err(e @ (Error::Disconnected(_) | Error::Closed(_))) => {
                debug!(error = %e, "delivery report lost with the connection; it is made again after reconnecting");
                shared.state().delivery_report_lost(&conversation_id, seq);
                None
            }
            Err(e) => {
                debug!(error = %e, conversation = %conversation_id, "delivery report failed");
                shared.state().delivery_reported(&conversation_id, false)
            }
        };
        if next.is_none() {
            return;
        }
        tokio::time::sleep_until(sent_at + shared.config.delivery_report_interval).await;
        // Messages kept coming while waiting: report the newest.
        match shared.state().delivery_report_newest(&conversation_id) {
            Some(newest) => seq = newest,
            None => return,
        }
    }
}

/// Re-joins a room after a reconnect; the answer goes to the app as `RoomUsers`.
async fn rejoin_room(shared: Arc<Shared>, link: Arc<Link>, conversation_id: String) {
    let request = pb::JoinRoom { conversation_id: conversation_id.clone() };
    let deadline = Instant::now() + shared.config.request_timeout;
    let reply = shared.exchange(&link, pb::client_frame::Request::JoinRoom(request), deadline).await.and_then(answer::room_users);
    shared.state().rejoined(&conversation_id, reply);
    shared.events_queued();
}

// ───────────────────────────── the supervisor ─────────────────────────────

/// Keeps the client connected: brings each new connection in sync, and replaces it when
/// it drops, until the client ends.
async fn supervise(shared: Arc<Shared>, mut link: Arc<Link>, mut reader: JoinHandle<String>, mut catch_up: bool) {
    // This task waits on a live connection nearly all its life; what it does between
    // connections (syncing, ending, reconnecting) is boxed, so that it does not take room
    // in every session's idle task.
    loop {
        let ended = tokio::select! {
            reason = &mut reader => Some(reason.unwrap_or_else(|e| format!("the reader task failed: {e}"))),
            () = Box::pin(sync_link(&shared, &link, catch_up)) => None,
            reason = shared.shutdown.wait() => {
                reader.abort();
                Box::pin(end_link(&shared, &link, &reason, true, true)).await;
                return Box::pin(finish(&shared, &reason)).await;
            }
        };
        let reason = match ended {
            Some(reason) => reason,
            // In sync: now wait for the connection to end.
            None => tokio::select! {
                reason = &mut reader => reason.unwrap_or_else(|e| format!("the reader task failed: {e}")),
                reason = shared.shutdown.wait() => {
                    reader.abort();
                    Box::pin(end_link(&shared, &link, &reason, true, true)).await;
                    return Box::pin(finish(&shared, &reason)).await;
                }
            },
        };
        info!(%reason, "connection lost");
        // Without reconnecting, what waits on this connection fails as for a closed client.
        Box::pin(end_link(&shared, &link, &reason, false, !shared.config.reconnect.allows(1))).await;
        shared.update(&link, |state| {
            state.connection_lost(&reason);
            Effects::default()
        });
        match Box::pin(reconnect(&shared, &reason)).await {
            Ok((new_link, new_reader)) => {
                link = new_link;
                reader = new_reader;
                catch_up = true;
            }
            Err(reason) => return Box::pin(finish(&shared, &reason)).await,
        }
    }
}

/// Brings a new connection in sync: resends the outbox, catches up (when `catch_up`),
/// then re-joins rooms. Returns when done; a connection that fails meanwhile is noticed
/// by its reader.
async fn sync_link(shared: &Arc<Shared>, link: &Arc<Link>, catch_up: bool) {
    // Sends first: they may go right after authentication, in their original order.
    loop {
        let batch: Option<Vec<bytes::Bytes>> = {
            let mut state = shared.state();
            let due = state.outbox().due(link.epoch);
            if due.is_empty() {
                state.set_direct(link.epoch);
                break;
            }
            let batch: Vec<bytes::Bytes> =
                due.into_iter().filter_map(|entry| prepare_send(&mut state, link, shared.request_id(), entry)).collect();
            // Entries are due but none could be registered: the connection is closed.
            (!batch.is_empty()).then_some(batch)
        };
        let Some(batch) = batch else {
            // Its reader reports the end; do not spin.
            return std::future::pending().await;
        };
        for frame in batch {
            if link.write(frame).await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    if catch_up {
        match catch_up_on(shared, link).await {
            Ok(()) => {}
            Err(e @ Error::Server { .. }) => {
                // The server will not catch us up in one exchange; ask per conversation.
                warn!(error = %e, "CatchUp refused; fetching missed messages conversation by conversation");
                shared.update(link, |state| {
                    let mut effects = state.finish_catch_up(true);
                    effects.fetches.extend(state.fetch_all());
                    effects
                });
            }
            Err(Error::Timeout) => {
                warn!("catching up timed out; reconnecting");
                link.drop_session("catch-up timed out");
                return std::future::pending().await;
            }
            Err(e) => {
                debug!(error = %e, "catching up stopped; the connection is going");
                return std::future::pending().await;
            }
        }
    }

    for room in shared.state().rooms() {
        tokio::spawn(rejoin_room(Arc::clone(shared), Arc::clone(link), room));
    }
}

/// The chain of `CatchUp` exchanges, until the server has nothing more (and once more if
/// live messages had to be dropped meanwhile), then `Resumed` and the live events.
async fn catch_up_on(shared: &Arc<Shared>, link: &Arc<Link>) -> Result<()> {
    loop {
        loop {
            shared.wait_for_room().await;
            let cursors = shared.state().catch_up_cursors();
            let request = pb::CatchUp { cursors, max_messages: shared.config.catch_up_page, include_unlisted: true };
            let deadline = Instant::now() + shared.config.request_timeout;
            let page = shared.exchange(link, pb::client_frame::Request::CatchUp(request), deadline).await.and_then(answer::catch_up)?;
            let empty = page.messages.is_empty();
            let mut more = false;
            shared.update(link, |state| {
                let (has_more, effects) = state.catch_up_page(page);
                more = has_more;
                effects
            });
            if !more {
                break;
            }
            if empty {
                // Asking again with the same cursors would get the same answer forever.
                warn!("the server says more is waiting but sent nothing; ending this catch-up");
                break;
            }
        }
        if !shared.state().needs_another_round() {
            break;
        }
    }
    shared.update(link, |state| state.finish_catch_up(true));
    Ok(())
}

impl Shared {
    /// The transport of the current connection; `None` while disconnected.
    pub(crate) fn transport(&self) -> Option<Transport> {
        lock(&self.link).as_ref().map(|link| link.carrier.transport())
    }

    /// Moves this client's connection to a new local UDP socket (a phone leaving Wi-Fi for
    /// cellular): QUIC migrates the connection, so the session goes on without
    /// reconnecting. Only for a client with an endpoint of its own.
    pub(crate) fn rebind(&self) -> Result<std::net::SocketAddr> {
        if !self.owns_endpoint {
            return Err(Error::Invalid(ValidationError::new(
                "endpoint",
                "this client shares its UDP endpoint with others; rebind the shared endpoint instead",
            )));
        }
        let local = self.endpoint.local_addr().map_err(|e| Error::Connect(format!("cannot read the local address: {e}")))?;
        let unspecified: std::net::IpAddr =
            if local.is_ipv6() { std::net::Ipv6Addr::UNSPECIFIED.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() };
        let socket =
            std::net::UdpSocket::bind((unspecified, 0)).map_err(|e| Error::Connect(format!("cannot open a new UDP socket: {e}")))?;
        self.endpoint.rebind(socket).map_err(|e| Error::Connect(format!("cannot move to the new UDP socket: {e}")))?;
        self.endpoint.local_addr().map_err(|e| Error::Connect(format!("cannot read the local address: {e}")))
    }

    /// Renews the current session with `token` (`Reauthenticate`); the next reconnect
    /// uses it too.
    pub(crate) async fn renew_token(&self, token: String) -> Result<SessionInfo> {
        let deadline = Instant::now() + self.config.request_timeout;
        let link = self.current_link(deadline).await?;
        let request = pb::client_frame::Request::Reauthenticate(pb::Reauthenticate { token: token.clone() });
        match self.exchange(&link, request, deadline).await? {
            pb::ack::Result::Authenticated(a) => {
                let info = SessionInfo::from_pb(a);
                *lock(&self.token) = token;
                lock(&self.session).token_expires_at_ms = info.token_expires_at_ms;
                Ok(info)
            }
            other => Err(Error::Protocol(format!("Reauthenticate was answered with {}", session::answer_name(&other)))),
        }
    }
}

/// Renews the session's token from `source` a while before it expires (a fifth of its
/// life, between 5 s and 60 s), for as long as the client lives. A failure is tried again
/// every 5 s until the token has expired; then the session ends, and the reconnect asks
/// the source again.
async fn renew_tokens(shared: std::sync::Weak<Shared>, source: crate::config::TokenSource) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.state().closed_reason().is_some() {
            return;
        }
        let expires = lock(&s.session).token_expires_at_ms;
        drop(s);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if expires <= 0 {
            return;
        }
        let life = expires.saturating_sub(now);
        let margin = (life / 5).clamp(5_000, 60_000);
        let wait = std::time::Duration::from_millis(u64::try_from(life.saturating_sub(margin)).unwrap_or(0));
        tokio::time::sleep(wait).await;
        let Some(s) = shared.upgrade() else { return };
        let renewed = match source().await {
            Ok(token) => match s.renew_token(token).await {
                // A token that does not outlast the one it replaces renews nothing.
                Ok(info) if info.token_expires_at_ms <= expires => {
                    Err(Error::Unauthorized("the token source gave a token that expires no later than the current one".into()))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(Error::Unauthorized(format!("the token source failed: {e}"))),
        };
        if let Err(e) = renewed {
            warn!(error = %e, "renewing the session's token failed; trying again in 5 s");
            drop(s);
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    }
}

/// Reconnects with backoff. `Err` carries the reason the client ends with: the server
/// refused the token, the policy gave up, or the client was closed meanwhile.
async fn reconnect(shared: &Arc<Shared>, lost: &str) -> Result<(Arc<Link>, JoinHandle<String>), String> {
    let policy = shared.config.reconnect;
    let mut last_error = lost.to_owned();
    for attempt in 1u32.. {
        if !policy.allows(attempt) {
            return Err(if attempt == 1 {
                format!("{lost} (reconnecting is turned off)")
            } else {
                format!("gave up reconnecting after {} attempts; last: {last_error}", attempt - 1)
            });
        }
        let delay = policy.delay(attempt, rand::random::<f64>);
        shared.state().reconnecting(attempt, delay);
        shared.events_queued();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            reason = shared.shutdown.wait() => return Err(reason),
        }
        let deadline = Instant::now() + shared.config.connect_timeout;
        let mut config = shared.config.clone();
        config.token = lock(&shared.token).clone();
        let first = if shared.prefer_tcp.load(Ordering::Relaxed) { Transport::Tcp } else { Transport::Quic };
        let dial = Dial { endpoint: &shared.endpoint, quic: shared.quic.clone(), tcp: &shared.tcp };
        let established = tokio::select! {
            r = connection::establish(&dial, &config, deadline, first) => r,
            reason = shared.shutdown.wait() => return Err(reason),
        };
        match established {
            Ok(e) if e.session.user_id != shared.user_id => {
                if !e.shared {
                    e.carrier.close(CLOSE_NORMAL, b"");
                }
                return Err(format!("the server authenticated {} instead of {} on reconnecting", e.session.user_id, shared.user_id));
            }
            Ok(e) => {
                let transport = e.carrier.transport();
                shared.prefer_tcp.store(transport == Transport::Tcp, Ordering::Relaxed);
                info!(attempt, session_id = %e.session.session_id, %transport, "reconnected");
                // Live events wait until the catch-up is done.
                shared.state().begin_catch_up();
                return Ok(open_link(shared, e));
            }
            Err(Error::Unauthorized(reason)) => {
                // An expired token, when a source can give a fresh one: try again with it.
                let fresh = match &shared.config.token_source {
                    Some(source) => source().await.ok(),
                    None => None,
                };
                match fresh {
                    Some(token) if token != config.token => {
                        *lock(&shared.token) = token;
                        last_error = format!("unauthorized: {reason}");
                    }
                    _ => return Err(format!("unauthorized: {reason}")),
                }
            }
            Err(e) => {
                debug!(attempt, error = %e, "reconnect attempt failed");
                last_error = e.to_string();
            }
        }
    }
    Err(last_error)
}

/// Takes a connection out of service. With `graceful`, what is queued is sent and the
/// stream finished first (the client is closing); otherwise it is dropped. Requests
/// waiting on it fail with `Error::Closed` when the client has `ended`, else with
/// `Error::Disconnected`.
async fn end_link(shared: &Shared, link: &Link, reason: &str, graceful: bool, ended: bool) {
    {
        let mut current = lock(&shared.link);
        if current.as_ref().is_some_and(|l| l.epoch == link.epoch) {
            *current = None;
        }
    }
    lock(&link.pending).close(reason, ended);
    let writer = lock(&link.writer).take();
    if let Some(writer) = writer {
        if graceful {
            // The writer flushes, finishes the stream and waits (bounded) for the server to
            // acknowledge it; only then is closing the connection free of data loss.
            if timeout(CLOSE_GRACE, link.outbound.send(Outbound::Finish)).await.is_ok() {
                let _ = timeout(CLOSE_GRACE, writer).await;
            }
        } else {
            writer.abort();
        }
    }
    if let Some(datagrams) = lock(&link.datagrams).take() {
        datagrams.abort();
    }
    let why: &[u8] = if graceful { b"client closed the session" } else { b"connection lost" };
    link.close_connection(CLOSE_NORMAL, why);
}

/// Ends the client: fails what waits, queues `Event::Closed`, lets the endpoint close.
async fn finish(shared: &Shared, reason: &str) {
    info!(%reason, "client ended");
    // The state first: requests woken by the link change must find the client ended.
    shared.state().finish(reason);
    shared.publish_link(None);
    // Every waiting reader must see the end, not just one.
    shared.readable.notify_waiters();
    shared.events_queued();
    shared.writable.notify_waiters();
    if shared.owns_endpoint {
        let _ = timeout(CLOSE_DRAIN, shared.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_requests_are_refused_before_sending() {
        let request = pb::client_frame::Request::Ping(pb::Ping { nonce: 1 });
        assert!(encode_checked(2, request.clone(), 1_000).is_ok());
        let err = encode_checked(2, request, 3).unwrap_err();
        assert!(matches!(&err, Error::Invalid(e) if e.field == "frame"), "{err}");
    }

    #[tokio::test]
    async fn a_latch_wakes_its_waiter_once_with_the_first_reason() {
        let latch = Arc::new(Latch::default());
        assert!(!latch.is_set());
        let waiter = tokio::spawn({
            let latch = Arc::clone(&latch);
            async move { latch.wait().await }
        });
        // The waiter may or may not be waiting yet: either way it hears the reason.
        latch.set("first");
        latch.set("second");
        assert_eq!(waiter.await.unwrap(), "first");
        assert!(latch.is_set());
        assert_eq!(latch.wait().await, "first", "once set, a wait resolves at once");
    }
}
