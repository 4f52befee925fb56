//! The SDK against a scripted in-process server over real QUIC on localhost: TLS trust,
//! authentication, answer routing, events and session end. The daemon's behaviour is
//! tested end to end in the workspace's `tests/` crate; here the server is a script so
//! that each test can make it do exactly one surprising thing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use legalchat_protocol::codec::{FrameDecoder, encode};
use legalchat_protocol::pb;
use legalchat_sdk::{Client, ClientConfig, ConnectionState, Error, Event, Jitter, ReconnectPolicy};

type Handler = Box<dyn FnOnce(Session) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The server's side of one session stream.
struct Session {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl Session {
    async fn read(&mut self) -> Option<pb::ClientFrame> {
        let decoder = FrameDecoder::default();
        loop {
            if let Some(frame) = decoder.decode(&mut self.buf).expect("client frames are well formed") {
                return Some(frame);
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn write(&mut self, event: pb::server_frame::Event) {
        let _ = self.send.write_all(&encode(&pb::ServerFrame { event: Some(event) })).await;
    }

    /// Reads `Authenticate` and accepts it as user `alice`, then answers the client's
    /// first `ListConversations` (which sets its cursors) with `conversations`.
    async fn accept_alice(&mut self) {
        self.authenticate_alice().await;
        self.answer_list(vec![]).await;
    }

    /// Answers the `ListConversations` a client sends right after authenticating.
    async fn answer_list(&mut self, conversations: Vec<pb::Conversation>) {
        let frame = self.read().await.expect("ListConversations");
        match frame.request {
            Some(pb::client_frame::Request::ListConversations(_)) => {}
            other => panic!("expected ListConversations, got {other:?}"),
        }
        self.write(ack(frame.request_id, pb::ack::Result::Conversations(pb::ConversationList { conversations }))).await;
    }

    /// Ends the session the way a server going away does: finish the stream, wait
    /// (bounded) until the client has everything, close the connection.
    async fn hang_up(&mut self, reason: &'static [u8]) {
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.send.stopped()).await;
        self.connection.close(0u32.into(), reason);
    }

    /// Reads `Authenticate` and accepts it as user `alice`.
    async fn authenticate_alice(&mut self) {
        let frame = self.read().await.expect("Authenticate");
        assert_eq!(frame.request_id, 1);
        match frame.request {
            Some(pb::client_frame::Request::Authenticate(a)) => assert_eq!(a.token, "good-token"),
            other => panic!("expected Authenticate, got {other:?}"),
        }
        self.write(ack(
            1,
            pb::ack::Result::Authenticated(pb::Authenticated {
                user_id: "alice".into(),
                role: pb::UserRole::Advocate as i32,
                session_id: "session-1".into(),
                max_frame_size: 65_536,
                max_message_bytes: 10_240,
                server_time_ms: 1,
                display_name: String::new(),
                ..Default::default()
            }),
        ))
        .await;
    }
}

fn ack(request_id: u64, result: pb::ack::Result) -> pb::server_frame::Event {
    pb::server_frame::Event::Ack(pb::Ack { request_id, result: Some(result) })
}

fn pong_for(frame: &pb::ClientFrame) -> pb::server_frame::Event {
    match &frame.request {
        Some(pb::client_frame::Request::Ping(p)) => {
            ack(frame.request_id, pb::ack::Result::Pong(pb::Pong { nonce: p.nonce, server_time_ms: 0 }))
        }
        other => panic!("expected Ping, got {other:?}"),
    }
}

const CONV: &str = "0123456789abcdef0123456789abcdef";

/// Starts a server that runs `handler` on the first session, and returns its address and
/// the PEM of its self-signed certificate.
fn start_server(handler: Handler) -> (SocketAddr, String) {
    let (addr, pem, endpoint) = server_endpoint();
    tokio::spawn(async move {
        // A client that fails the handshake (the TLS test) simply ends this task.
        let Some(incoming) = endpoint.accept().await else { return };
        let Ok(connection) = incoming.await else { return };
        let Ok((send, recv)) = connection.accept_bi().await else { return };
        handler(Session { connection: connection.clone(), send, recv, buf: BytesMut::new() }).await;
        // Keep the connection until the client is done with it.
        connection.closed().await;
        drop(endpoint);
    });
    (addr, pem)
}

/// Starts a server that runs one handler per connection, in the order connections come;
/// returns its address and the PEM of its self-signed certificate.
fn start_servers(handlers: Vec<Handler>) -> (SocketAddr, String) {
    let (addr, pem, endpoint) = server_endpoint();
    tokio::spawn(async move {
        let mut connections = Vec::new();
        for handler in handlers {
            let Some(incoming) = endpoint.accept().await else { return };
            let Ok(connection) = incoming.await else { return };
            let Ok((send, recv)) = connection.accept_bi().await else { return };
            handler(Session { connection: connection.clone(), send, recv, buf: BytesMut::new() }).await;
            connections.push(connection);
        }
        for connection in connections {
            connection.closed().await;
        }
        drop(endpoint);
    });
    (addr, pem)
}

/// A reconnect policy that retries at once, for tests.
fn quick_reconnects() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_jitter(Jitter::None)
}

fn message(seq: u64, sender: &str, client_message_id: &str) -> pb::Message {
    pb::Message {
        conversation_id: CONV.into(),
        seq,
        sender_id: sender.into(),
        client_message_id: client_message_id.into(),
        message_id: format!("{seq:032x}"),
        content: Some(pb::MessageContent { text: format!("message {seq}"), ..Default::default() }),
        ..Default::default()
    }
}

fn accepted(request_id: u64, seq: u64, duplicate: bool) -> pb::server_frame::Event {
    ack(
        request_id,
        pb::ack::Result::MessageAccepted(pb::MessageAccepted {
            conversation_id: CONV.into(),
            message_id: format!("{seq:032x}"),
            seq,
            timestamp_ms: 1,
            duplicate,
        }),
    )
}

fn done(request_id: u64) -> pb::server_frame::Event {
    ack(request_id, pb::ack::Result::Done(pb::Done {}))
}

fn server_endpoint() -> (SocketAddr, String, quinn::Endpoint) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params").self_signed(&key).expect("certificate");
    let pem = cert.pem();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server certificate");
    tls.alpn_protocols = vec![legalchat_protocol::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = endpoint.local_addr().expect("address");
    (addr, pem, endpoint)
}

fn config(addr: SocketAddr, pem: &str, token: &str) -> ClientConfig {
    ClientConfig::new(addr, token).with_ca_pem(pem.as_bytes().to_vec())
}

#[tokio::test]
async fn answers_reach_their_request_even_out_of_order() {
    let (addr, pem) = start_server(Box::new(|mut s: Session| {
        Box::pin(async move {
            s.accept_alice().await;
            let first = s.read().await.expect("first ping");
            let second = s.read().await.expect("second ping");
            // An event between answers, and the answers reversed.
            let message = pb::Message {
                conversation_id: CONV.into(),
                seq: 1,
                sender_id: "bob".into(),
                content: Some(pb::MessageContent { text: "hello".into(), ..Default::default() }),
                ..Default::default()
            };
            s.write(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage { message: Some(message) })).await;
            s.write(pong_for(&second)).await;
            s.write(pong_for(&first)).await;
            // Keep the session open until the client closes it.
            s.connection.closed().await;
        })
    }));
    let client = Client::connect(config(addr, &pem, "good-token")).await.expect("connected");
    assert_eq!(client.user_id(), "alice");
    assert_eq!(client.role(), pb::UserRole::Advocate);
    assert_eq!(client.session_id(), "session-1");

    // `ping` checks the nonce, so a misrouted answer would fail it.
    let (a, b) = tokio::join!(client.ping(), client.ping());
    a.expect("first ping");
    b.expect("second ping");
    match client.next_event().await {
        Some(Event::Message(m)) => assert_eq!((m.sender_id.as_str(), m.seq), ("bob", 1)),
        other => panic!("expected a message, got {other:?}"),
    }
    client.close().await;
    assert!(matches!(client.next_event().await, Some(Event::Closed { .. })));
    assert!(client.next_event().await.is_none());
    assert!(matches!(client.ping().await, Err(Error::Closed(_))));
}

#[tokio::test]
async fn sends_are_acknowledged_with_their_receipt() {
    let (addr, pem) = start_server(Box::new(|mut s: Session| {
        Box::pin(async move {
            s.accept_alice().await;
            let frame = s.read().await.expect("SendMessage");
            let Some(pb::client_frame::Request::SendMessage(send)) = frame.request else { panic!("expected SendMessage") };
            assert_eq!(send.conversation_id, CONV);
            assert_eq!(send.content.expect("content").text, "see the draft");
            s.write(ack(
                frame.request_id,
                pb::ack::Result::MessageAccepted(pb::MessageAccepted {
                    conversation_id: CONV.into(),
                    message_id: "ff".repeat(16),
                    seq: 42,
                    timestamp_ms: 1_700_000_000_000,
                    duplicate: true,
                }),
            ))
            .await;
            let frame = s.read().await.expect("GetConversation");
            s.write(pb::server_frame::Event::Error(pb::Error {
                request_id: frame.request_id,
                code: pb::ErrorCode::NotFound as i32,
                message: "no such conversation".into(),
                ..Default::default()
            }))
            .await;
        })
    }));
    let client = Client::connect(config(addr, &pem, "good-token")).await.expect("connected");
    let sent = client.send_text(CONV, "see the draft").await.expect("stored");
    assert_eq!((sent.seq, sent.duplicate), (42, true));
    let err = client.get_conversation(CONV).await.unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::NotFound));
    // Checked locally: nothing is sent for a malformed id.
    assert!(matches!(client.get_conversation("nope").await, Err(Error::Invalid(_))));
    client.close().await;
}

#[tokio::test]
async fn a_refused_token_is_unauthorized() {
    let (addr, pem) = start_server(Box::new(|mut s: Session| {
        Box::pin(async move {
            let _ = s.read().await;
            s.write(pb::server_frame::Event::Unauthorized(pb::Unauthorized { reason: "token expired".into() })).await;
            let _ = s.send.finish();
        })
    }));
    match Client::connect(config(addr, &pem, "stale-token")).await {
        Err(Error::Unauthorized(reason)) => assert_eq!(reason, "token expired"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn a_close_with_the_unauthorized_code_is_unauthorized() {
    let (addr, pem) = start_server(Box::new(|mut s: Session| {
        Box::pin(async move {
            let _ = s.read().await;
            s.connection.close((pb::ErrorCode::Unauthorized as u32).into(), b"bad signature");
        })
    }));
    match Client::connect(config(addr, &pem, "forged-token")).await {
        Err(Error::Unauthorized(reason)) => assert_eq!(reason, "bad signature"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let (addr, _pem) = start_server(Box::new(|_s: Session| Box::pin(async {})));
    let (_, other_pem, _other) = server_endpoint();
    match Client::connect(config(addr, &other_pem, "good-token")).await {
        Err(Error::Tls(message)) => assert!(message.contains(&addr.to_string()), "{message}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn goodbye_without_reconnecting_ends_the_session_and_fails_waiting_requests() {
    let (addr, pem) = start_server(Box::new(|mut s: Session| {
        Box::pin(async move {
            s.accept_alice().await;
            // Leave the ping unanswered, say goodbye, and hang up.
            let _ = s.read().await;
            s.write(pb::server_frame::Event::Goodbye(pb::Goodbye {
                code: pb::ErrorCode::Unavailable as i32,
                reason: "server shutting down".into(),
            }))
            .await;
            let _ = s.send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.send.stopped()).await;
            s.connection.close(0u32.into(), b"shutdown");
        })
    }));
    let config =
        config(addr, &pem, "good-token").with_request_timeout(Duration::from_secs(30)).with_reconnect_policy(ReconnectPolicy::never());
    let client = Client::connect(config).await.expect("connected");
    match client.ping().await {
        Err(Error::Closed(reason)) => assert!(reason.contains("server shutting down"), "{reason}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    match client.next_event().await {
        Some(Event::Goodbye { code, reason }) => {
            assert_eq!(code, pb::ErrorCode::Unavailable);
            assert_eq!(reason, "server shutting down");
        }
        other => panic!("expected Goodbye, got {other:?}"),
    }
    assert!(matches!(client.next_event().await, Some(Event::State(ConnectionState::Disconnected { .. }))));
    assert!(matches!(client.next_event().await, Some(Event::Closed { reason }) if reason.contains("server shutting down")));
    assert!(client.next_event().await.is_none());
    assert!(client.closed_reason().is_some());
    assert!(matches!(client.state(), ConnectionState::Closed { .. }));
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let (addr, pem) = start_server(Box::new(|mut s: Session| {
        Box::pin(async move {
            s.accept_alice().await;
            // Read the ping and never answer it.
            let _ = s.read().await;
            let _ = s.read().await;
        })
    }));
    let client =
        Client::connect(config(addr, &pem, "good-token").with_request_timeout(Duration::from_millis(300))).await.expect("connected");
    assert!(matches!(client.ping().await, Err(Error::Timeout)));
    client.close().await;
}

/// The whole resume story against a script: a send in flight and a send made while
/// disconnected are (re)sent in order with their client message ids; the catch-up's
/// messages, then its receipts, then `Resumed`, then live messages reach the app, each
/// once; the user's own message is not delivered back.
#[tokio::test]
async fn a_dropped_connection_is_replaced_caught_up_and_the_outbox_resent() {
    let (cm_tx, cm_rx) = tokio::sync::oneshot::channel::<String>();
    let first: Handler = Box::new(move |mut s: Session| {
        Box::pin(async move {
            s.authenticate_alice().await;
            s.answer_list(vec![pb::Conversation { id: CONV.into(), last_seq: 0, ..Default::default() }]).await;
            // A send arrives; the connection dies before it is answered.
            let frame = s.read().await.expect("SendMessage");
            let Some(pb::client_frame::Request::SendMessage(send)) = frame.request else { panic!("expected SendMessage") };
            let _ = cm_tx.send(send.client_message_id);
            s.connection.close(0u32.into(), b"network trouble");
        })
    });
    let second: Handler = Box::new(move |mut s: Session| {
        Box::pin(async move {
            s.authenticate_alice().await;
            let first_id = cm_rx.await.expect("the first send's id");
            // The outbox comes first, in order, with the same client message id.
            let frame = s.read().await.expect("resend");
            let Some(pb::client_frame::Request::SendMessage(send)) = &frame.request else { panic!("expected the resend, got {frame:?}") };
            assert_eq!(send.client_message_id, first_id, "a resend keeps its client message id");
            s.write(accepted(frame.request_id, 1, true)).await;
            let mut caught_up = false;
            while let Some(frame) = s.read().await {
                match frame.request {
                    Some(pb::client_frame::Request::SendMessage(send)) => {
                        assert_eq!(send.content.expect("content").text, "written while offline");
                        s.write(accepted(frame.request_id, 4, false)).await;
                    }
                    Some(pb::client_frame::Request::CatchUp(c)) => {
                        assert!(!caught_up, "one catch-up page is all there is");
                        caught_up = true;
                        assert!(c.include_unlisted);
                        assert_eq!(c.cursors, [pb::ConversationCursor { conversation_id: CONV.into(), after_seq: 0 }]);
                        // A live message slips in before the catch-up's answer: it must wait.
                        s.write(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage { message: Some(message(3, "bob", "b3")) }))
                            .await;
                        let page = pb::CatchUpPage {
                            messages: vec![message(1, "alice", &first_id), message(2, "bob", "b2")],
                            next: vec![],
                            has_more: false,
                            receipts: vec![pb::ReceiptList {
                                conversation_id: CONV.into(),
                                states: vec![pb::ReceiptState {
                                    user_id: "bob".into(),
                                    delivered_seq: 1,
                                    delivered_at_ms: 5,
                                    read_seq: 1,
                                    read_at_ms: 6,
                                }],
                            }],
                            unknown: vec![],
                        };
                        s.write(ack(frame.request_id, pb::ack::Result::CatchUp(page))).await;
                    }
                    Some(pb::client_frame::Request::MarkDelivered(_)) => s.write(done(frame.request_id)).await,
                    Some(pb::client_frame::Request::Ping(_)) => {
                        let pong = pong_for(&frame);
                        s.write(pong).await;
                    }
                    other => panic!("unexpected request {other:?}"),
                }
            }
        })
    });
    let (addr, pem) = start_servers(vec![first, second]);
    let config = config(addr, &pem, "good-token").with_reconnect_policy(quick_reconnects());
    let client = Client::connect(config).await.expect("connected");
    assert_eq!(client.cursors(), [(CONV.to_string(), 0)]);

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.send_text(CONV, "in flight when the connection dropped").await }
    });
    // Wait until the drop is noticed, then send while disconnected (or, should the
    // reconnect be quicker, right after: the order is the same).
    let mut events = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.expect("an event").expect("open");
        let disconnected = matches!(e, Event::State(ConnectionState::Disconnected { .. }));
        events.push(e);
        if disconnected {
            break;
        }
    }
    let offline = client.send_text(CONV, "written while offline").await.expect("sent after reconnecting");
    assert_eq!((offline.seq, offline.duplicate), (4, false));
    let sent = in_flight.await.expect("task").expect("the retried send resolves");
    assert_eq!((sent.seq, sent.duplicate), (1, true), "the original seq of the retried send");

    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.expect("an event").expect("open");
        let last = matches!(&e, Event::Message(m) if m.seq == 3);
        events.push(e);
        if last {
            break;
        }
    }
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::Message(m) => format!("#{}", m.seq),
            Event::Receipt(r) => format!("{:?} {}", r.kind(), r.seq),
            Event::State(ConnectionState::Disconnected { .. }) => "disconnected".into(),
            Event::State(ConnectionState::Reconnecting { attempt, .. }) => format!("reconnecting {attempt}"),
            Event::State(ConnectionState::Resumed { missed }) => format!("resumed {missed}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(summary, ["disconnected", "reconnecting 1", "#2", "Delivered 1", "Read 1", "resumed 1", "#3"]);
    assert_eq!(client.state(), ConnectionState::Resumed { missed: 1 });
    assert_eq!(client.cursors(), [(CONV.to_string(), 4)], "own seq 4 is skipped, not delivered");
    client.ping().await.expect("requests work on the new connection");
    client.close().await;
}

/// A token refused on reconnecting ends the client: no endless retries with a bad token.
#[tokio::test]
async fn a_refused_token_on_reconnecting_ends_the_client() {
    let first: Handler = Box::new(|mut s: Session| {
        Box::pin(async move {
            s.accept_alice().await;
            s.hang_up(b"bye").await;
        })
    });
    let second: Handler = Box::new(|mut s: Session| {
        Box::pin(async move {
            let _ = s.read().await;
            s.write(pb::server_frame::Event::Unauthorized(pb::Unauthorized { reason: "token expired".into() })).await;
            let _ = s.send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.send.stopped()).await;
        })
    });
    let (addr, pem) = start_servers(vec![first, second]);
    let client = Client::connect(config(addr, &pem, "good-token").with_reconnect_policy(quick_reconnects())).await.expect("connected");
    let mut last = None;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.expect("an event") {
        last = Some(e);
    }
    match last {
        Some(Event::Closed { reason }) => assert!(reason.contains("token expired"), "{reason}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(matches!(client.send_text(CONV, "too late").await, Err(Error::Closed(_))));
}

/// A send that cannot go out before its timeout fails as not sent, and is never sent.
#[tokio::test]
async fn a_send_that_waits_too_long_in_the_outbox_fails_as_not_sent() {
    let first: Handler = Box::new(|mut s: Session| {
        Box::pin(async move {
            s.accept_alice().await;
            s.hang_up(b"bye").await;
        })
    });
    let (addr, pem) = start_servers(vec![first]);
    // Nobody answers reconnect attempts: the client keeps trying.
    let config = config(addr, &pem, "good-token")
        .with_reconnect_policy(quick_reconnects())
        .with_connect_timeout(Duration::from_millis(200))
        .with_send_timeout(Duration::from_millis(300));
    let client = Client::connect(config).await.expect("connected");
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.expect("an event").expect("open");
        if matches!(e, Event::State(ConnectionState::Disconnected { .. })) {
            break;
        }
    }
    match client.send_text(CONV, "nobody hears this").await {
        Err(Error::Disconnected(reason)) => assert!(reason.contains("not sent"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(client.state().to_string().contains("reconnecting"), "{}", client.state());
    client.close().await;
    assert!(matches!(client.state(), ConnectionState::Closed { .. }));
}
