//! Sessions multiplexed on one QUIC connection: each client authenticates its own session
//! on its own stream, ends on its own, and recovers on its own when the connection drops.

use std::time::Duration;

use legalchat_sdk::{Client, ClientEndpoint, Error, NewConversation, SharedConnection, pb};
use legalchat_tests::{TestDaemon, bounded, collect_messages, text_of, wait_for_message};

use crate::{daemon, daemon_with};

fn shared_connection() -> (ClientEndpoint, SharedConnection) {
    let endpoint = ClientEndpoint::bind("127.0.0.1:0".parse().expect("address")).expect("a socket");
    (endpoint.clone(), SharedConnection::new(endpoint))
}

async fn connect_shared(d: &TestDaemon, shared: &SharedConnection, user: &str) -> Result<Client, Error> {
    Client::connect(d.client_config(d.token(user, "advocate")).with_shared_connection(shared.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_one_connection_and_end_independently() {
    bounded("multiplex_share", async {
        let d = daemon().await;
        let (endpoint, shared) = shared_connection();
        // More sessions than a connection is first granted streams for: the server raises
        // the limit as they come.
        let mut clients = Vec::new();
        for i in 0..12 {
            clients.push(connect_shared(&d, &shared, &format!("user{i}")).await.unwrap_or_else(|e| panic!("user{i} connects: {e}")));
        }
        assert_eq!(endpoint.open_connections(), 1, "twelve sessions, one connection");
        assert!(clients.iter().all(|c| c.session().fanout), "their events come on the connection's fan-out stream");

        let others: Vec<String> = (1..12).map(|i| format!("user{i}")).collect();
        let conv = clients[0].create_conversation(NewConversation::group("multiplexed", others)).await.expect("user0 creates a group");
        clients[0].send_text(&conv.id, "one").await.expect("user0 sends");
        for c in &clients[1..] {
            let got = wait_for_message(c, "the first message", |m| m.conversation_id == conv.id).await;
            assert_eq!((got.seq, text_of(&got)), (1, "one"), "{}", c.user_id());
        }

        // One client ends: its session only.
        let last = clients.pop().expect("twelve clients");
        last.close().await;
        clients[0].send_text(&conv.id, "two").await.expect("user0 sends after user11 left");
        let got = wait_for_message(&clients[1], "the second message", |m| text_of(m) == "two").await;
        assert_eq!(got.seq, 2);
        assert!(shared.is_connected(), "the connection outlives one of its sessions");
        assert!(last.send_text(&conv.id, "late").await.is_err(), "the closed client refuses sends");

        // A refused token ends that session alone.
        let bad = Client::connect(d.client_config("not-a-token".into()).with_shared_connection(shared.clone())).await;
        assert!(matches!(&bad, Err(Error::Unauthorized(_))), "a bad token is refused: {bad:?}");
        clients[0].send_text(&conv.id, "three").await.expect("user0 sends after the refusal");
        let got = wait_for_message(&clients[2], "the third message", |m| text_of(m) == "three").await;
        assert_eq!(got.seq, 3);
        assert_eq!(endpoint.open_connections(), 1, "still one connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_shared_connection_resumes_every_session_with_nothing_missed() {
    bounded("multiplex_reconnect", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let (_endpoint, shared) = shared_connection();
        let mut members = Vec::new();
        for i in 0..5 {
            members.push(connect_shared(&d, &shared, &format!("member{i}")).await.unwrap_or_else(|e| panic!("member{i} connects: {e}")));
        }
        let conv = alice
            .create_conversation(NewConversation::group("dropped", (0..5).map(|i| format!("member{i}")).collect()))
            .await
            .expect("alice creates a group");
        alice.send_text(&conv.id, "before").await.expect("alice sends");
        for m in &members {
            wait_for_message(m, "the first message", |msg| text_of(msg) == "before").await;
        }

        // The connection goes; alice keeps writing meanwhile.
        shared.close();
        for i in 0..5 {
            alice.send_text(&conv.id, &format!("while away {i}")).await.expect("alice sends while they are away");
        }
        for m in &members {
            let got = collect_messages(m, &conv.id, Duration::from_secs(30), |got| got.len() >= 5).await;
            let seqs: Vec<u64> = got.iter().map(|msg| msg.seq).collect();
            assert_eq!(seqs, [2, 3, 4, 5, 6], "{}: every missed message, in order, once", m.user_id());
        }
        assert!(shared.is_connected(), "the sessions came back on a new shared connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_at_most_its_configured_sessions() {
    bounded("multiplex_limit", async {
        let d = daemon_with(&["--max-sessions-per-connection", "2"]).await;
        let (endpoint, shared) = shared_connection();
        let first = connect_shared(&d, &shared, "first").await.expect("the first session");
        let second = connect_shared(&d, &shared, "second").await.expect("the second session");
        let third = connect_shared(&d, &shared, "third").await;
        match &third {
            Err(Error::Server { code, message, .. }) => {
                assert_eq!(*code, pb::ErrorCode::Overloaded);
                assert!(message.contains("maximum of 2 sessions"), "{message}");
            }
            other => panic!("a third session on the connection is refused, got {other:?}"),
        }
        // The refusal touched neither of the others.
        let conv = first.private_chat("second").await.expect("first opens a chat");
        first.send_text(&conv.id, "still here").await.expect("first sends");
        let got = wait_for_message(&second, "the message", |m| m.conversation_id == conv.id).await;
        assert_eq!(text_of(&got), "still here");
        assert_eq!(endpoint.open_connections(), 1);
    })
    .await;
}

/// Opens a session stream on `conn` and authenticates `token` on it.
async fn raw_session(conn: &quinn::Connection, token: String) -> (quinn::SendStream, quinn::RecvStream, bytes::BytesMut) {
    use legalchat_protocol::codec;
    let (mut send, mut recv) = conn.open_bi().await.expect("a session stream");
    let hello = pb::ClientFrame {
        request_id: 1,
        request: Some(pb::client_frame::Request::Authenticate(pb::Authenticate { token, client_info: "raw".into(), ..Default::default() })),
    };
    send.write_all(&codec::encode(&hello)).await.expect("Authenticate goes out");
    let mut buf = bytes::BytesMut::new();
    let frame = next_frame(&mut recv, &mut buf).await.expect("an answer to Authenticate");
    assert!(
        matches!(frame.event, Some(pb::server_frame::Event::Ack(pb::Ack { result: Some(pb::ack::Result::Authenticated(_)), .. }))),
        "authenticated: {frame:?}"
    );
    (send, recv, buf)
}

/// The next whole frame of a raw session stream; `None` when the stream ended or failed.
async fn next_frame(recv: &mut quinn::RecvStream, buf: &mut bytes::BytesMut) -> Option<pb::ServerFrame> {
    let decoder = legalchat_protocol::codec::FrameDecoder::new(1 << 20);
    loop {
        if let Some(frame) = decoder.decode::<pb::ServerFrame>(buf).expect("a valid frame") {
            return Some(frame);
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            other => {
                eprintln!("the stream ended: {other:?}");
                return None;
            }
        }
    }
}

/// Reads a raw session stream to its end, which must be a reset with code 3 (OVERLOADED):
/// the server dropped the session as a slow one.
async fn expect_overloaded(recv: &mut quinn::RecvStream) {
    let reset = loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the session's stream finished instead of being reset"),
            Err(e) => break e,
        }
    };
    assert!(matches!(reset, quinn::ReadError::Reset(code) if code.into_inner() == 3), "reset with code 3: {reset:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_session_is_reset_without_touching_its_neighbours_on_the_connection() {
    bounded("multiplex_slow_consumer", async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("legalchatd.toml");
        std::fs::write(&config, "session_outbound = 16\n").expect("config file");
        let d = daemon_with(&["--config", config.to_str().expect("a UTF-8 path")]).await;

        // One connection whose client reads each stream through a small window, so a
        // session nobody reads backs up quickly.
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window(16_384u32.into());
        let mut client = legalchat_sdk::tls::client_config(&d.ca_pem()).expect("client TLS");
        client.transport_config(std::sync::Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("a socket");
        endpoint.set_default_client_config(client);
        let conn = endpoint.connect(d.quic_addr(), "localhost").expect("connect").await.expect("handshake");
        let (_slow_send, mut slow_recv, _) = raw_session(&conn, d.token("slow", "advocate")).await;
        let (_steady_send, mut steady_recv, mut steady_buf) = raw_session(&conn, d.token("steady", "advocate")).await;

        let alice = d.client("alice", "advocate").await;
        let conv = alice
            .create_conversation(NewConversation::group("one slow reader", vec!["slow".into(), "steady".into()]))
            .await
            .expect("alice creates a group");
        const MESSAGES: u64 = 300;
        // The steady session reads as the messages come.
        let steady = tokio::spawn(async move {
            let mut next_seq = 1;
            while next_seq <= MESSAGES {
                let frame = next_frame(&mut steady_recv, &mut steady_buf).await.expect("the steady session stays up");
                if let Some(pb::server_frame::Event::ReceiveMessage(r)) = frame.event {
                    let m = r.message.expect("a message");
                    assert_eq!(m.seq, next_seq, "in order, none missing");
                    next_seq += 1;
                }
            }
            (steady_recv, steady_buf)
        });
        let text = "x".repeat(1_000);
        for _ in 0..MESSAGES {
            alice.send_text(&conv.id, &text).await.expect("alice sends");
        }
        let _steady = steady.await.expect("the steady session got every message, in order, on the shared connection");
        // The session that never read fell behind its bound: its stream is reset with
        // code 3 (OVERLOADED), and the connection stays up for the others.
        expect_overloaded(&mut slow_recv).await;
        assert!(conn.close_reason().is_none(), "the connection is still up: {:?}", conn.close_reason());
        conn.close(0u32.into(), b"done");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_on_a_shared_connection_hears_its_own_answer_when_another_was_just_refused() {
    bounded("multiplex_own_answer", async {
        let d = daemon().await;
        // The server closes a connection when its last session is refused; the next session,
        // opened on it at that moment, must not take that refusal for its own.
        for round in 0..25 {
            let (_endpoint, shared) = shared_connection();
            let malformed = Client::connect(d.client_config("not-a-token".into()).with_shared_connection(shared.clone())).await;
            assert!(matches!(&malformed, Err(Error::Unauthorized(m)) if m.contains("malformed")), "round {round}: {malformed:?}");
            let good = d.token("rafe", "advocate");
            let forged = format!("{}AAAA", &good[..good.len() - 4]);
            let forged = Client::connect(d.client_config(forged).with_shared_connection(shared.clone())).await;
            assert!(matches!(&forged, Err(Error::Unauthorized(m)) if m.contains("signature")), "round {round}: {forged:?}");
            let client = Client::connect(d.client_config(good).with_shared_connection(shared.clone()))
                .await
                .unwrap_or_else(|e| panic!("round {round}: a good token after two refusals connects: {e}"));
            client.close().await;
        }
    })
    .await;
}

/// Opens a session stream on `conn` and authenticates `token` on it, asking for events on
/// the connection's fan-out stream under `tag`. The answer: `Authenticated`, or the
/// refusal's error.
async fn tagged_session(
    conn: &quinn::Connection,
    token: String,
    tag: u32,
) -> Result<(quinn::SendStream, quinn::RecvStream, bytes::BytesMut, pb::Authenticated), pb::Error> {
    use legalchat_protocol::codec;
    let (mut send, mut recv) = conn.open_bi().await.expect("a session stream");
    let hello = pb::ClientFrame {
        request_id: 1,
        request: Some(pb::client_frame::Request::Authenticate(pb::Authenticate {
            token,
            client_info: "raw tagged".into(),
            fanout_tag: tag,
            ..Default::default()
        })),
    };
    send.write_all(&codec::encode(&hello)).await.expect("Authenticate goes out");
    let mut buf = bytes::BytesMut::new();
    match next_frame(&mut recv, &mut buf).await.expect("an answer to Authenticate").event {
        Some(pb::server_frame::Event::Ack(pb::Ack { result: Some(pb::ack::Result::Authenticated(a)), .. })) => Ok((send, recv, buf, a)),
        Some(pb::server_frame::Event::Error(e)) => Err(e),
        other => panic!("an answer to Authenticate, got {other:?}"),
    }
}

/// A raw QUIC connection whose client takes the server's fan-out stream and reads every
/// stream through `window` bytes.
async fn raw_connection(d: &TestDaemon, window: u32) -> (quinn::Endpoint, quinn::Connection) {
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(window.into());
    transport.max_concurrent_uni_streams(1u8.into());
    let mut client = legalchat_sdk::tls::client_config(&d.ca_pem()).expect("client TLS");
    client.transport_config(std::sync::Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("a socket");
    endpoint.set_default_client_config(client);
    let conn = endpoint.connect(d.quic_addr(), "localhost").expect("connect").await.expect("handshake");
    (endpoint, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_many_tagged_sessions_crosses_the_connection_once() {
    bounded("multiplex_fanout", async {
        use legalchat_protocol::codec;
        let d = daemon().await;
        let (_endpoint, conn) = raw_connection(&d, 1 << 20).await;
        let (mut s1, mut r1, mut b1, a1) = tagged_session(&conn, d.token("fan1", "advocate"), 7).await.expect("fan1 is accepted");
        let (_s2, _r2, _b2, a2) = tagged_session(&conn, d.token("fan2", "advocate"), 9).await.expect("fan2 is accepted");
        assert!(a1.fanout && a2.fanout, "both sessions take their events from the fan-out stream");
        // A tag a live session of the connection holds is refused, and only that session.
        let taken = tagged_session(&conn, d.token("fan3", "advocate"), 7).await.expect_err("a second tag 7 is refused");
        assert_eq!(taken.code(), pb::ErrorCode::InvalidArgument);
        assert!(taken.message.contains("fanout_tag 7 is already used"), "{}", taken.message);

        let alice = d.client("alice", "advocate").await;
        assert!(!alice.session().fanout, "a connection of its own keeps events on the session stream");
        let conv = alice
            .create_conversation(NewConversation::group("fanned out", vec!["fan1".into(), "fan2".into()]))
            .await
            .expect("alice creates a group");
        alice.send_text(&conv.id, "to both, once").await.expect("alice sends");

        // The fan-out stream: its kind byte, then one Fanout per event, naming both tags.
        let mut fanout = conn.accept_uni().await.expect("the server opens the fan-out stream");
        let mut buf = bytes::BytesMut::new();
        while buf.is_empty() {
            let chunk = fanout.read_chunk(64 * 1024, true).await.expect("the fan-out stream").expect("its first bytes");
            buf.extend_from_slice(&chunk.bytes);
        }
        assert_eq!(buf[0], 0x02, "the stream's kind byte");
        bytes::Buf::advance(&mut buf, 1);
        let decoder = codec::FrameDecoder::new(1 << 20);
        let message = loop {
            let fan = loop {
                if let Some(fan) = decoder.decode::<pb::Fanout>(&mut buf).expect("a valid Fanout") {
                    break fan;
                }
                let chunk = fanout.read_chunk(64 * 1024, true).await.expect("the fan-out stream").expect("more of it");
                buf.extend_from_slice(&chunk.bytes);
            };
            let frame: pb::ServerFrame = prost::Message::decode(fan.frame.as_slice()).expect("the event decodes");
            // Other events may come first (the group's creation, presence).
            if let Some(pb::server_frame::Event::ReceiveMessage(r)) = frame.event {
                let mut tags = fan.tags.clone();
                tags.sort_unstable();
                assert_eq!(tags, [7, 9], "one frame for both sessions, not one each");
                break r.message.expect("a message");
            }
        };
        assert_eq!((message.seq, text_of(&message)), (1, "to both, once"));

        // Nothing of it came on the session stream: the next frame there is the answer to
        // a ping sent after the event had crossed.
        let ping = pb::ClientFrame { request_id: 2, request: Some(pb::client_frame::Request::Ping(pb::Ping { nonce: 5 })) };
        s1.write_all(&codec::encode(&ping)).await.expect("a ping goes out");
        let answer = next_frame(&mut r1, &mut b1).await.expect("an answer to the ping");
        assert!(
            matches!(answer.event, Some(pb::server_frame::Event::Ack(pb::Ack { request_id: 2, result: Some(pb::ack::Result::Pong(_)) }))),
            "the session stream carries answers only: {answer:?}"
        );
        conn.close(0u32.into(), b"done");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_stream_nobody_reads_ends_its_sessions_and_not_the_connection() {
    bounded("multiplex_fanout_slow", async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("legalchatd.toml");
        std::fs::write(&config, "session_outbound = 16\n").expect("config file");
        let d = daemon_with(&["--config", config.to_str().expect("a UTF-8 path")]).await;
        // The fan-out stream is never read, through a small window: it backs up quickly.
        let (_endpoint, conn) = raw_connection(&d, 16_384).await;
        let (_s1, mut r1, _, _) = tagged_session(&conn, d.token("quiet1", "advocate"), 1).await.expect("quiet1 is accepted");
        let (_s2, mut r2, _, _) = tagged_session(&conn, d.token("quiet2", "advocate"), 2).await.expect("quiet2 is accepted");
        // A session without a tag keeps the connection up when the others end.
        let (_s3, mut r3, mut b3) = raw_session(&conn, d.token("bystander", "advocate")).await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice
            .create_conversation(NewConversation::group("nobody reads", vec!["quiet1".into(), "quiet2".into()]))
            .await
            .expect("alice creates a group");
        let text = "x".repeat(1_000);
        for _ in 0..300 {
            alice.send_text(&conv.id, &text).await.expect("alice sends: a reader that fell behind never slows the sender");
        }
        // Both sessions missed events: each one's stream is reset with code 3 (OVERLOADED),
        // as a slow session's is, so that it reconnects and resyncs.
        expect_overloaded(&mut r1).await;
        expect_overloaded(&mut r2).await;
        assert!(conn.close_reason().is_none(), "the connection is still up: {:?}", conn.close_reason());
        // And the session on its own stream still hears what is for it.
        let chat = alice.private_chat("bystander").await.expect("alice opens a chat with the bystander");
        alice.send_text(&chat.id, "still there?").await.expect("alice sends");
        let message = loop {
            let frame = next_frame(&mut r3, &mut b3).await.expect("the bystander's stream stays up");
            if let Some(pb::server_frame::Event::ReceiveMessage(r)) = frame.event {
                break r.message.expect("a message");
            }
        };
        assert_eq!(text_of(&message), "still there?");
        conn.close(0u32.into(), b"done");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_falls_behind_on_a_shared_connection_resumes_with_nothing_missed() {
    bounded("multiplex_fanout_laggard", async {
        let d = daemon().await;
        let (_endpoint, shared) = shared_connection();
        // Room for four events: the fan-out stream cannot wait for this app (it carries the
        // others' events too), so the SDK ends the session and resumes it from its cursors.
        let config = d.client_config(d.token("laggard", "client")).with_shared_connection(shared.clone()).with_event_buffer(4);
        let laggard = Client::connect(config).await.expect("the laggard connects");
        let steady = connect_shared(&d, &shared, "steady").await.expect("steady connects");
        let alice = d.client("alice", "advocate").await;
        let conv = alice
            .create_conversation(NewConversation::group("one lags", vec!["laggard".into(), "steady".into()]))
            .await
            .expect("alice creates a group");
        const MESSAGES: u64 = 100;
        for i in 1..=MESSAGES {
            alice.send_text(&conv.id, &format!("m{i}")).await.expect("alice sends");
        }
        // The neighbour on the connection heard everything as it came.
        let got = collect_messages(&steady, &conv.id, Duration::from_secs(30), |got| got.len() as u64 >= MESSAGES).await;
        assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=MESSAGES).collect::<Vec<_>>());
        // The laggard takes its events only now: every message once, in order, and its
        // session was resumed on the way.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (mut seqs, mut resumed) = (Vec::new(), false);
        while (seqs.len() as u64) < MESSAGES {
            match tokio::time::timeout_at(deadline, laggard.next_event()).await.expect("the laggard's events in time") {
                Some(legalchat_sdk::Event::Message(m)) if m.conversation_id == conv.id => seqs.push(m.seq),
                Some(legalchat_sdk::Event::State(_)) => resumed = true,
                Some(_) => {}
                None => panic!("the laggard's client ended"),
            }
        }
        assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>(), "every message once, in order");
        assert!(resumed, "the session that fell behind was ended and resumed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_session_on_a_client_that_allows_no_fanout_stream_ends_its_connection_with_the_reason() {
    bounded("multiplex_fanout_refused", async {
        let d = daemon().await;
        // The client lets the server open no unidirectional stream at all.
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(0u8.into());
        let mut client = legalchat_sdk::tls::client_config(&d.ca_pem()).expect("client TLS");
        client.transport_config(std::sync::Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("a socket");
        endpoint.set_default_client_config(client);
        let conn = endpoint.connect(d.quic_addr(), "localhost").expect("connect").await.expect("handshake");
        let (_send, _recv, _, _) = tagged_session(&conn, d.token("nostream", "advocate"), 1).await.expect("accepted");
        match conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code.into_inner(), 2, "a protocol error");
                let reason = String::from_utf8_lossy(&close.reason);
                assert!(reason.contains("fan-out stream") && reason.contains("unidirectional"), "{reason}");
            }
            other => panic!("the server closes the connection with a reason, got {other:?}"),
        }
    })
    .await;
}
