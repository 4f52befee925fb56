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
use legalchat_sdk::{Client, ClientConfig, Error, Event};

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

    /// Reads `Authenticate` and accepts it as user `alice`.
    async fn accept_alice(&mut self) {
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
async fn goodbye_ends_the_session_and_fails_waiting_requests() {
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
    let client = Client::connect(config(addr, &pem, "good-token").with_request_timeout(Duration::from_secs(30))).await.expect("connected");
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
    assert!(matches!(client.next_event().await, Some(Event::Closed { reason }) if reason.contains("server shutting down")));
    assert!(client.next_event().await.is_none());
    assert!(client.closed_reason().is_some());
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
