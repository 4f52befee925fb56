//! A minimal Socket.IO 4 client (Engine.IO protocol 4 over WebSocket only) for driving the
//! reference peer in `benches/peers/socketio` with the same scenarios as `legalchatd`.
//!
//! ```text
//!  SioClient (Clone) ── emit "42<id>[…]" ──► outgoing mpsc (bounded) ──► write task ──► WebSocket
//!       │  register id                                                                   │
//!       ▼                                                                                ▼
//!  AckTable (≤ MAX_PENDING_ACKS) ◄── "43<id>[…]" ── read task ◄─────────────────────── server
//!                                                     │  "2" (ping) ──► outgoing "3" (pong)
//!  mpsc::Receiver<PeerMessage> (≤ EVENT_QUEUE) ◄──────┘  "42["receive_message",{…}]"
//! ```
//!
//! The packets themselves are in [`packet`] (pure functions, no IO). This module is the thin
//! driver: the handshake (`GET /socket.io/?EIO=4&transport=websocket`, the server's open
//! packet, our CONNECT with `auth: {token}`), then one read task and one write task.
//!
//! Everything is bounded: the outgoing queue (an emit waits when it is full), the event queue
//! (the read task waits when the application does not keep up, which is back-pressure all the
//! way to the server's socket), and the table of emits waiting for their ack (an emit beyond
//! [`MAX_PENDING_ACKS`] fails at once with [`SioError::TooManyPendingAcks`]).
//!
//! Errors are [`SioError`]s inside `anyhow::Error`, so a caller can classify them with
//! `err.downcast_ref::<SioError>()` (a refused token, a closed connection, a server error).
//!
//! What it does not do: long polling, binary packets, namespaces other than `/`,
//! reconnecting (a load scenario reconnects by calling [`SioClient::connect`] again), or
//! answering acks the server asks for (the reference peer asks for none).

pub mod packet;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::packet::{EngineOpen, EnginePacket, PacketError, SocketBody, SocketPacket};

/// Capacity of the `receive_message` queue returned by [`SioClient::connect`].
pub const EVENT_QUEUE: usize = 4096;

/// Most emits waiting for their ack at once, per client.
pub const MAX_PENDING_ACKS: usize = 4096;

/// Largest WebSocket message accepted from the server. The peer's own limit on what it
/// accepts is Socket.IO's default `maxHttpBufferSize` of 1 MB; twice that leaves room for
/// JSON escaping of a message the peer accepted.
pub const MAX_MESSAGE_BYTES: usize = 2 << 20;

/// How long TCP connect, WebSocket upgrade, Engine.IO open and Socket.IO CONNECT may take
/// together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets queued for the write task. Small: it only has to cover a burst between two
/// writes; beyond it, emitters wait.
const OUTGOING_QUEUE: usize = 1024;

type Ws = WebSocketStream<TcpStream>;

/// Why a Socket.IO operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SioError {
    /// TCP, the WebSocket upgrade or the Engine.IO/Socket.IO handshake failed or timed out.
    #[error("Socket.IO handshake with {addr} failed: {reason}")]
    Handshake {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The server answered our CONNECT with CONNECT_ERROR (e.g. `unauthorized`).
    #[error("the server refused the connection (connect_error): {0}")]
    Refused(String),
    /// The connection is gone; the reason is the first thing that ended it.
    #[error("the Socket.IO connection is closed: {0}")]
    Closed(String),
    /// [`MAX_PENDING_ACKS`] emits are already waiting for their acks.
    #[error("{0} emits are already waiting for their acks; wait for some before sending more")]
    TooManyPendingAcks(usize),
    /// The server acknowledged with `{error}`.
    #[error("the server answered {event} with an error: {error}")]
    Server {
        /// The event we emitted.
        event: &'static str,
        /// The `error` field of the ack.
        error: String,
    },
    /// An ack or event that parses as Socket.IO but does not carry what the event promises.
    #[error("malformed {what} from the server: {problem}")]
    Malformed {
        /// Which ack or event.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A packet that is not valid Engine.IO / Socket.IO.
    #[error("Socket.IO protocol error: {0}")]
    Packet(#[from] PacketError),
    /// A valid packet that makes no sense at this point of the session.
    #[error("unexpected {0} packet from the server")]
    Unexpected(&'static str),
}

/// One `receive_message` event: a message someone else sent to a room we joined.
#[derive(Debug, Clone)]
pub struct PeerMessage {
    /// The room.
    pub room: String,
    /// The room's sequence number the server gave the message.
    pub seq: u64,
    /// The sender's user id (the `sub` of their token).
    pub sender: String,
    /// The text.
    pub text: String,
}

/// The `receive_message` payload as the peer sends it; fields we do not need
/// (`client_message_id`, `sent_at_ms`) are ignored.
#[derive(Deserialize)]
struct ReceiveMessage {
    room: String,
    seq: u64,
    sender: String,
    text: String,
}

/// The LegalChat bridge's `receive_message` (the requirements' `MessageSchema`); the
/// other fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeMessage {
    conversation_id: String,
    seq: u64,
    sender_id: String,
    content: Option<BridgeContent>,
}

#[derive(Deserialize)]
struct BridgeContent {
    text: String,
}

/// Which server's event payloads a client speaks: the same event names, different fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The reference peer: `join_room {room}`, `send_message {room, client_message_id, text}`,
    /// `receive_message {room, seq, sender, text}`.
    Peer,
    /// The LegalChat bridge: `send_message {conversationId, clientMessageId, content}`,
    /// `receive_message {conversationId, seq, senderId, content: {text}}`; members receive
    /// their conversations' messages without joining.
    Bridge,
}

impl PeerMessage {
    /// Reads the arguments of a `receive_message` event: one object.
    fn from_event_args(mut args: Vec<Value>, dialect: Dialect) -> Result<Self, SioError> {
        let malformed = |problem: String| SioError::Malformed { what: "receive_message event", problem };
        if args.is_empty() {
            return Err(malformed("no argument".into()));
        }
        let arg = args.swap_remove(0);
        match dialect {
            Dialect::Peer => {
                let event: ReceiveMessage = serde_json::from_value(arg).map_err(|e| malformed(e.to_string()))?;
                Ok(Self { room: event.room, seq: event.seq, sender: event.sender, text: event.text })
            }
            Dialect::Bridge => {
                let event: BridgeMessage = serde_json::from_value(arg).map_err(|e| malformed(e.to_string()))?;
                let text = event.content.map(|c| c.text).unwrap_or_default();
                Ok(Self { room: event.conversation_id, seq: event.seq, sender: event.sender_id, text })
            }
        }
    }
}

/// A connected Socket.IO client. Clones share the connection; the connection ends when
/// [`close`](Self::close) is called, when the server ends it, or when the last clone is
/// dropped.
#[derive(Clone)]
pub struct SioClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    sid: String,
    dialect: Dialect,
    outgoing: mpsc::Sender<Message>,
    acks: Arc<Mutex<AckTable>>,
    next_ack_id: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tasks hold no reference to `Inner`, so this runs when the last clone goes.
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in tasks.iter() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for SioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SioClient").field("addr", &self.inner.addr).field("sid", &self.inner.sid).finish_non_exhaustive()
    }
}

impl SioClient {
    /// Connects to e.g. `127.0.0.1:PORT`, authenticates with `token` (sent as the
    /// handshake's `auth: {token}`), and starts the read and write tasks. Incoming
    /// `receive_message` events go to the returned receiver (capacity [`EVENT_QUEUE`]); when
    /// it is full the read task waits, so acks wait too: keep draining it. Dropping the
    /// receiver discards later events.
    ///
    /// A refused token fails with [`SioError::Refused`] carrying the server's message.
    pub async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<(SioClient, mpsc::Receiver<PeerMessage>)> {
        Self::connect_speaking(addr, token, Dialect::Peer).await
    }

    /// [`connect`](Self::connect), speaking `dialect`.
    pub async fn connect_speaking(
        addr: SocketAddr,
        token: &str,
        dialect: Dialect,
    ) -> anyhow::Result<(SioClient, mpsc::Receiver<PeerMessage>)> {
        let (ws, open, sid) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(addr, token))
            .await
            .unwrap_or_else(|_| Err(SioError::Handshake { addr, reason: format!("no answer within {HANDSHAKE_TIMEOUT:?}") }))?;
        // The server pings every pingInterval and waits pingTimeout for the pong; hearing
        // nothing for both together means the server or the path is gone.
        let silence = Duration::from_millis(open.ping_interval.saturating_add(open.ping_timeout));

        let (sink, stream) = ws.split();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let acks = Arc::new(Mutex::new(AckTable::default()));
        let writer = tokio::spawn(write_loop(sink, outgoing_rx, Arc::clone(&acks)));
        let reader = Reader { stream, outgoing: outgoing.clone(), events: Some(events), acks: Arc::clone(&acks), silence, dialect };
        let reader = tokio::spawn(reader.run(writer.abort_handle()));
        let inner = Inner { addr, sid, dialect, outgoing, acks, next_ack_id: AtomicU64::new(0), tasks: Mutex::new(vec![reader, writer]) };
        Ok((SioClient { inner: Arc::new(inner) }, events_rx))
    }

    /// Emits `join_room {room}` and waits for the ack `{ok: true, users: […]}`.
    pub async fn join_room(&self, room: &str) -> anyhow::Result<()> {
        if self.inner.dialect == Dialect::Bridge {
            // The bridge delivers a conversation's messages to its members; rooms are for
            // typing signals only.
            return Ok(());
        }
        let reply = self.emit_with_ack("join_room", json!({ "room": room })).await?;
        if reply.get("ok") != Some(&Value::Bool(true)) {
            return Err(SioError::Malformed { what: "join_room ack", problem: "no \"ok\": true".into() }.into());
        }
        Ok(())
    }

    /// Emits `send_message {room, client_message_id, text}` with an ack id and waits for the
    /// ack; returns the room's sequence number `seq` the server gave the message.
    pub async fn send_message(&self, room: &str, client_message_id: &str, text: &str) -> anyhow::Result<u64> {
        let payload = match self.inner.dialect {
            Dialect::Peer => json!({ "room": room, "client_message_id": client_message_id, "text": text }),
            Dialect::Bridge => json!({ "conversationId": room, "clientMessageId": client_message_id, "content": text }),
        };
        let reply = self.emit_with_ack("send_message", payload).await?;
        let seq = reply.get("seq").and_then(Value::as_u64);
        Ok(seq.ok_or_else(|| SioError::Malformed { what: "send_message ack", problem: "no \"seq\" number".into() })?)
    }

    /// Drops the WebSocket at once, without a close handshake (for reconnect storms): both
    /// tasks are aborted, which closes the TCP connection. Emits still waiting fail with
    /// [`SioError::Closed`]. Returns when the socket is gone.
    pub async fn close(&self) {
        lock(&self.inner.acks).close(SioError::Closed("closed by the client".into()));
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Cancelled, or already finished: either way the socket has been dropped.
            let _ = task.await;
        }
    }

    /// Emits `event` with one argument and an ack id, waits for the ack, and returns its
    /// first argument; an ack of `{error}` is a [`SioError::Server`].
    async fn emit_with_ack(&self, event: &'static str, payload: Value) -> Result<Value, SioError> {
        let id = self.inner.next_ack_id.fetch_add(1, Ordering::Relaxed);
        // Registered before the emit leaves, so that even an instant ack finds its waiter.
        let wait = AckWait::register(&self.inner.acks, id)?;
        let text = packet::encode_event(Some(id), event, &[payload]);
        if self.inner.outgoing.send(Message::text(text)).await.is_err() {
            return Err(lock(&self.inner.acks).closed_error());
        }
        let mut args = wait.recv().await?;
        let reply = if args.is_empty() { Value::Null } else { args.swap_remove(0) };
        if let Some(error) = reply.get("error") {
            let error = error.as_str().map_or_else(|| error.to_string(), str::to_owned);
            return Err(SioError::Server { event, error });
        }
        Ok(reply)
    }
}

/// Emits waiting for their acks, by ack id, and why the connection ended once it has.
#[derive(Debug, Default)]
struct AckTable {
    waiting: HashMap<u64, oneshot::Sender<Vec<Value>>>,
    closed: Option<SioError>,
}

impl AckTable {
    fn register(&mut self, id: u64) -> Result<oneshot::Receiver<Vec<Value>>, SioError> {
        if let Some(reason) = &self.closed {
            return Err(reason.clone());
        }
        if self.waiting.len() >= MAX_PENDING_ACKS {
            return Err(SioError::TooManyPendingAcks(self.waiting.len()));
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(id, tx);
        Ok(rx)
    }

    /// Hands the ack to its waiter. An unknown id is an emit whose caller stopped waiting.
    fn resolve(&mut self, id: u64, args: Vec<Value>) {
        if let Some(tx) = self.waiting.remove(&id) {
            let _ = tx.send(args);
        }
    }

    /// Ends every wait; the first reason given is the one every caller sees.
    fn close(&mut self, reason: SioError) {
        self.closed.get_or_insert(reason);
        self.waiting.clear();
    }

    fn closed_error(&self) -> SioError {
        self.closed.clone().unwrap_or_else(|| SioError::Closed("the connection ended".into()))
    }
}

/// One registered emit. Dropping it (e.g. a caller's timeout cancelled the emit) removes its
/// entry, so abandoned emits do not fill the table.
struct AckWait {
    acks: Arc<Mutex<AckTable>>,
    id: u64,
    rx: Option<oneshot::Receiver<Vec<Value>>>,
}

impl AckWait {
    fn register(acks: &Arc<Mutex<AckTable>>, id: u64) -> Result<Self, SioError> {
        let rx = lock(acks).register(id)?;
        Ok(Self { acks: Arc::clone(acks), id, rx: Some(rx) })
    }

    async fn recv(mut self) -> Result<Vec<Value>, SioError> {
        let Some(rx) = self.rx.take() else {
            return Err(lock(&self.acks).closed_error());
        };
        // The sender is dropped only when the connection closes.
        rx.await.map_err(|_| lock(&self.acks).closed_error())
    }
}

impl Drop for AckWait {
    fn drop(&mut self) {
        lock(&self.acks).waiting.remove(&self.id);
    }
}

/// A poisoned lock only means another thread panicked while holding it; the table itself
/// is still consistent (every operation on it is a single insert, remove or clear).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// TCP connect, WebSocket upgrade, Engine.IO open, Socket.IO CONNECT with `{token}`.
async fn handshake(addr: SocketAddr, token: &str) -> Result<(Ws, EngineOpen, String), SioError> {
    let failed = |reason: String| SioError::Handshake { addr, reason };
    let tcp = TcpStream::connect(addr).await.map_err(|e| failed(format!("TCP connect: {e}")))?;
    // Chat packets are small and latency is what we measure.
    tcp.set_nodelay(true).map_err(|e| failed(format!("setting TCP_NODELAY: {e}")))?;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_BYTES)).max_frame_size(Some(MAX_MESSAGE_BYTES));
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await.map_err(|e| failed(format!("WebSocket upgrade: {e}")))?;

    let open = match next_packet(&mut ws).await.map_err(|e| failed(e.to_string()))? {
        EnginePacket::Open(open) => open,
        other => return Err(failed(format!("expected the Engine.IO open packet, got {}", other.kind()))),
    };
    let connect = packet::encode_connect(&json!({ "token": token }));
    ws.send(Message::text(connect)).await.map_err(|e| failed(format!("sending CONNECT: {e}")))?;
    loop {
        match next_packet(&mut ws).await.map_err(|e| failed(e.to_string()))? {
            EnginePacket::Message(SocketPacket { namespace, body }) if namespace == "/" => match body {
                SocketBody::Connect { sid } => return Ok((ws, open, sid)),
                SocketBody::ConnectError { message } => return Err(SioError::Refused(message)),
                other => return Err(failed(format!("expected CONNECT or CONNECT_ERROR, got {}", other.kind()))),
            },
            EnginePacket::Ping => ws.send(Message::text(packet::PONG)).await.map_err(|e| failed(format!("sending a pong: {e}")))?,
            EnginePacket::Pong | EnginePacket::Noop => {}
            other => return Err(failed(format!("expected CONNECT or CONNECT_ERROR, got {}", other.kind()))),
        }
    }
}

/// The next Engine.IO packet, skipping WebSocket control frames.
async fn next_packet(ws: &mut Ws) -> Result<EnginePacket, SioError> {
    loop {
        let message = ws.next().await.ok_or_else(|| SioError::Closed("the server closed the TCP connection".into()))?;
        let message = message.map_err(|e| SioError::Closed(format!("reading the WebSocket: {e}")))?;
        if let Some(packet) = decode_message(message)? {
            return Ok(packet);
        }
    }
}

/// One WebSocket message as an Engine.IO packet; `None` for control frames (tungstenite
/// answers WebSocket pings itself).
fn decode_message(message: Message) -> Result<Option<EnginePacket>, SioError> {
    match message {
        Message::Text(text) => Ok(Some(EnginePacket::decode(&text)?)),
        Message::Binary(_) => Err(PacketError::Binary.into()),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
        Message::Close(Some(frame)) => Err(SioError::Closed(format!("the server closed the WebSocket ({}: {})", frame.code, frame.reason))),
        Message::Close(None) => Err(SioError::Closed("the server closed the WebSocket".into())),
    }
}

/// Writes queued packets: feeds everything already queued, then flushes once, so that a
/// burst of emits costs one write.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut outgoing: mpsc::Receiver<Message>, acks: Arc<Mutex<AckTable>>) {
    while let Some(first) = outgoing.recv().await {
        let written = async {
            sink.feed(first).await?;
            while let Ok(next) = outgoing.try_recv() {
                sink.feed(next).await?;
            }
            sink.flush().await
        }
        .await;
        if let Err(e) = written {
            lock(&acks).close(SioError::Closed(format!("writing to the WebSocket: {e}")));
            return;
        }
    }
}

/// The read task's state.
struct Reader {
    stream: SplitStream<Ws>,
    outgoing: mpsc::Sender<Message>,
    /// `None` once the application dropped its receiver.
    events: Option<mpsc::Sender<PeerMessage>>,
    acks: Arc<Mutex<AckTable>>,
    silence: Duration,
    dialect: Dialect,
}

impl Reader {
    /// Reads until the connection ends, then fails the waiting emits with the reason and
    /// stops the write task (which drops the other half of the socket).
    async fn run(mut self, writer: AbortHandle) {
        let reason = self.read_until_closed().await;
        lock(&self.acks).close(reason);
        writer.abort();
    }

    /// Returns why the connection ended.
    async fn read_until_closed(&mut self) -> SioError {
        loop {
            let message = match tokio::time::timeout(self.silence, self.stream.next()).await {
                Err(_) => return SioError::Closed(format!("nothing from the server for {:?} (no ping)", self.silence)),
                Ok(None) => return SioError::Closed("the server closed the TCP connection".into()),
                Ok(Some(Err(e))) => return SioError::Closed(format!("reading the WebSocket: {e}")),
                Ok(Some(Ok(message))) => message,
            };
            let packet = match decode_message(message) {
                Ok(Some(packet)) => packet,
                Ok(None) => continue,
                Err(e) => return e,
            };
            match packet {
                EnginePacket::Ping => {
                    if self.outgoing.send(Message::text(packet::PONG)).await.is_err() {
                        return SioError::Closed("the write task stopped".into());
                    }
                }
                EnginePacket::Pong | EnginePacket::Noop => {}
                EnginePacket::Close => return SioError::Closed("the server closed the Engine.IO session".into()),
                EnginePacket::Message(SocketPacket { namespace, body }) => {
                    // Only `/` was joined; a packet for another namespace is not addressed to us.
                    if namespace != "/" {
                        continue;
                    }
                    if let Err(e) = self.handle(body).await {
                        return e;
                    }
                }
                other @ (EnginePacket::Open(_) | EnginePacket::Upgrade) => return SioError::Unexpected(other.kind()),
            }
        }
    }

    async fn handle(&mut self, body: SocketBody) -> Result<(), SioError> {
        match body {
            SocketBody::Ack { ack_id, args } => lock(&self.acks).resolve(ack_id, args),
            SocketBody::Event { name, args, .. } if name == "receive_message" => {
                let message = PeerMessage::from_event_args(args, self.dialect)?;
                if let Some(events) = &self.events {
                    // Waits while the queue is full: back-pressure rather than growth.
                    if events.send(message).await.is_err() {
                        self.events = None;
                    }
                }
            }
            // Other events (none in the scenarios) are not ours to interpret.
            SocketBody::Event { .. } => {}
            SocketBody::Disconnect => return Err(SioError::Closed("the server disconnected the socket".into())),
            SocketBody::ConnectError { message } => return Err(SioError::Refused(message)),
            other @ SocketBody::Connect { .. } => return Err(SioError::Unexpected(other.kind())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_receive_message_event() {
        let args = vec![json!({
            "room": "r1", "seq": 7, "sender": "alice", "client_message_id": "c1", "text": "hi", "sent_at_ms": 1
        })];
        let message = PeerMessage::from_event_args(args, Dialect::Peer).expect("valid event");
        assert_eq!((message.room.as_str(), message.seq, message.sender.as_str(), message.text.as_str()), ("r1", 7, "alice", "hi"));

        for bad in [vec![], vec![json!({"room": "r1", "seq": "7", "sender": "a", "text": ""})], vec![json!("text")]] {
            let err = PeerMessage::from_event_args(bad, Dialect::Peer).expect_err("malformed");
            assert!(matches!(err, SioError::Malformed { what: "receive_message event", .. }), "{err}");
        }
    }

    #[test]
    fn reads_the_bridges_receive_message_event() {
        let args = vec![json!({
            "_id": "m", "conversationId": "c1", "seq": 9, "senderId": "bob", "clientMessageId": "x",
            "content": {"text": "hello", "type": "text", "format": "plain", "attachments": []}, "timestamp": "2026-12-03T10:00:00.000Z"
        })];
        let message = PeerMessage::from_event_args(args, Dialect::Bridge).expect("valid event");
        assert_eq!((message.room.as_str(), message.seq, message.sender.as_str(), message.text.as_str()), ("c1", 9, "bob", "hello"));
        let peer_shaped = vec![json!({"room": "r1", "seq": 7, "sender": "alice", "text": "hi"})];
        assert!(PeerMessage::from_event_args(peer_shaped, Dialect::Bridge).is_err());
    }

    #[test]
    fn the_ack_table_is_bounded_and_closes_once() {
        let mut table = AckTable::default();
        let mut receivers = Vec::new();
        for id in 0..MAX_PENDING_ACKS as u64 {
            receivers.push(table.register(id).expect("room left"));
        }
        assert_eq!(table.register(u64::MAX).err(), Some(SioError::TooManyPendingAcks(MAX_PENDING_ACKS)));

        table.resolve(3, vec![json!({"seq": 1})]);
        assert_eq!(receivers[3].try_recv(), Ok(vec![json!({"seq": 1})]));
        table.resolve(3, vec![]); // a second ack for the same id is ignored
        assert!(table.register(u64::MAX).is_ok(), "a resolved ack frees its slot");

        table.close(SioError::Closed("first".into()));
        table.close(SioError::Closed("second".into()));
        assert!(receivers[0].try_recv().is_err(), "waiters see the close");
        assert_eq!(table.register(9_999).err(), Some(SioError::Closed("first".into())));
        assert_eq!(table.closed_error(), SioError::Closed("first".into()));
    }

    #[test]
    fn an_abandoned_wait_frees_its_slot() {
        let acks = Arc::new(Mutex::new(AckTable::default()));
        let wait = AckWait::register(&acks, 1).expect("registered");
        assert_eq!(lock(&acks).waiting.len(), 1);
        drop(wait);
        assert!(lock(&acks).waiting.is_empty());
    }

    #[test]
    fn decodes_websocket_messages() {
        assert_eq!(decode_message(Message::text("2")), Ok(Some(EnginePacket::Ping)));
        assert_eq!(decode_message(Message::Ping(Vec::new().into())), Ok(None));
        assert_eq!(decode_message(Message::Binary(vec![4, 1].into())), Err(SioError::Packet(PacketError::Binary)));
        assert!(matches!(decode_message(Message::Close(None)), Err(SioError::Closed(_))));
        assert!(matches!(decode_message(Message::text("9")), Err(SioError::Packet(PacketError::UnknownEngineType('9')))));
    }
}
