//! The Socket.IO reference peer (`benches/peers/socketio`, a real Node.js process) driven by
//! `SioClient`: the events the load scenarios use, and the refusal of a bad token.
//!
//! Needs `node` and the peer's packages (`npm ci` in `benches/peers/socketio`). Without
//! them the test says it skipped, except under CI (`CI=true`), where a missing peer is a
//! failure rather than a silently skipped comparison.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use legalchat_benches::peer_process::{PeerConfig, PeerProcess};
use legalchat_benches::sio::{PeerMessage, SioClient, SioError};
use legalchat_benches::tokens::{Claims, TokenMinter};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Generous for a loaded 2-core machine; a working peer answers in milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// Whether the peer can run here; `false` means "skip" (and panics under CI).
fn peer_available() -> bool {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|out| out.status.success());
    let packages = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/socketio/node_modules/socket.io/package.json").is_file();
    if node && packages {
        return true;
    }
    let missing = "node or the peer's node_modules not installed (run npm ci in benches/peers/socketio)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true, so this is a failure, not a skip: {missing}");
    println!("skipped: {missing}");
    false
}

async fn next(rx: &mut mpsc::Receiver<PeerMessage>, who: &str) -> PeerMessage {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{who} received nothing within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{who}'s connection ended"))
}

fn refusal(result: anyhow::Result<(SioClient, mpsc::Receiver<PeerMessage>)>) -> SioError {
    let err = result.expect_err("the peer must refuse this token");
    err.downcast_ref::<SioError>().cloned().unwrap_or_else(|| panic!("not a SioError: {err:#}"))
}

#[tokio::test]
async fn clients_exchange_messages_through_the_reference_peer() {
    if !peer_available() {
        return;
    }
    let mut peer = PeerProcess::start(PeerConfig::default()).await.expect("the peer starts");
    assert!(peer.addr().port() != 0);
    assert!(peer.pid() != 0);
    let minter = TokenMinter::new(peer.secret());
    let token = |user: &str| minter.token(user, "client").expect("token");

    let (alice, mut alice_rx) = SioClient::connect(peer.addr(), &token("alice")).await.expect("alice connects");
    let (bob, mut bob_rx) = SioClient::connect(peer.addr(), &token("bob")).await.expect("bob connects");
    let (carol, mut carol_rx) = SioClient::connect(peer.addr(), &token("carol")).await.expect("carol connects");

    // Sending to a room one has not joined is a server error, answered in the ack.
    let err = alice.send_message("room-1", "early", "too early").await.expect_err("not in the room yet");
    assert!(
        matches!(err.downcast_ref::<SioError>(), Some(SioError::Server { event: "send_message", error }) if error == "not in room"),
        "{err:#}"
    );

    for client in [&alice, &bob, &carol] {
        client.join_room("room-1").await.expect("join");
    }

    let seq = alice.send_message("room-1", "alice-1", "hello from alice").await.expect("alice's ack");
    assert_eq!(seq, 1);
    for (who, rx) in [("bob", &mut bob_rx), ("carol", &mut carol_rx)] {
        let got = next(rx, who).await;
        assert_eq!(
            (got.room.as_str(), got.seq, got.sender.as_str(), got.text.as_str()),
            ("room-1", 1, "alice", "hello from alice"),
            "{who}"
        );
    }

    // The sender is excluded from the broadcast: the first thing alice receives is bob's
    // message, not her own.
    let seq = bob.send_message("room-1", "bob-1", "hi alice").await.expect("bob's ack");
    assert_eq!(seq, 2);
    for (who, rx) in [("alice", &mut alice_rx), ("carol", &mut carol_rx)] {
        let got = next(rx, who).await;
        assert_eq!((got.seq, got.sender.as_str(), got.text.as_str()), (2, "bob", "hi alice"), "{who}");
    }

    // A retried send (same client_message_id) gets its original seq and is not delivered again.
    assert_eq!(alice.send_message("room-1", "alice-1", "hello from alice").await.expect("retry ack"), 1);
    assert_eq!(carol.send_message("room-1", "carol-1", "third").await.expect("carol's ack"), 3);
    for (who, rx) in [("alice", &mut alice_rx), ("bob", &mut bob_rx)] {
        assert_eq!(next(rx, who).await.seq, 3, "{who} sees carol's message, and no duplicate before it");
    }

    // A client that drops its socket does not disturb the others.
    carol.close().await;
    let err = carol.send_message("room-1", "carol-2", "after close").await.expect_err("closed");
    assert!(matches!(err.downcast_ref::<SioError>(), Some(SioError::Closed(_))), "{err:#}");
    assert_eq!(bob.send_message("room-1", "bob-2", "still here").await.expect("bob's ack"), 4);
    assert_eq!(next(&mut alice_rx, "alice").await.text, "still here");

    // Refused tokens: wrong secret, expired, not a JWT.
    let forged = TokenMinter::new("a different secret of the same kind, 32+ bytes").token("mallory", "client").expect("token");
    let expired = minter.sign(&Claims::new("alice", "client", -60)).expect("token");
    for (what, token) in [("forged", forged.as_str()), ("expired", expired.as_str()), ("garbage", "not-a-jwt")] {
        let err = refusal(SioClient::connect(peer.addr(), token).await);
        assert_eq!(err, SioError::Refused("unauthorized".into()), "{what}");
        assert!(err.to_string().contains("unauthorized"), "{what}: {err}");
    }

    peer.stop().await.expect("the peer stops cleanly on SIGTERM");
    // A stopped peer is a closed connection, not a hang.
    let err = tokio::time::timeout(WAIT, alice.send_message("room-1", "alice-2", "gone")).await.expect("no hang").expect_err("peer gone");
    assert!(matches!(err.downcast_ref::<SioError>(), Some(SioError::Closed(_))), "{err:#}");
}

#[tokio::test]
async fn a_peer_without_its_packages_fails_with_a_clear_hint() {
    if !peer_available() {
        return;
    }
    // The script alone, in a directory with no node_modules above it.
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("server.js");
    std::fs::copy(PeerConfig::default_script(), &script).expect("copy the script");
    let err = PeerProcess::start(PeerConfig { script, ..PeerConfig::default() }).await.expect_err("socket.io cannot be found");
    let err = format!("{err:#}");
    assert!(err.contains("npm ci"), "{err}");
    assert!(err.contains("Cannot find module 'socket.io'"), "the stderr is quoted: {err}");
}

/// A scripted server: the handshake, a ping, then a `receive_message` the client cannot
/// read. No Node.js needed.
#[tokio::test]
async fn malformed_input_from_the_server_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("WebSocket upgrade");
        let send = |text: &'static str| Message::text(text);
        ws.send(send(r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#)).await.expect("open");
        let connect = ws.next().await.expect("CONNECT").expect("CONNECT");
        assert_eq!(connect.to_text().expect("text"), r#"40{"token":"tok"}"#);
        ws.send(send(r#"40{"sid":"s1"}"#)).await.expect("connected");
        ws.send(send("2")).await.expect("ping");
        let (mut pong, mut emit) = (false, None);
        while !pong || emit.is_none() {
            let text = ws.next().await.expect("a packet").expect("a packet").into_text().expect("text");
            match text.as_str() {
                "3" => pong = true,
                other => emit = Some(other.to_owned()),
            }
        }
        ws.send(send(r#"42["receive_message",{"room":"r","seq":"one","sender":"x","text":"t"}]"#)).await.expect("bad event");
        // Wait for the client to go away.
        while let Some(Ok(_)) = ws.next().await {}
        emit
    });

    let (client, _rx) = SioClient::connect(addr, "tok").await.expect("connect");
    let err =
        tokio::time::timeout(WAIT, client.send_message("r", "c1", "hello")).await.expect("no hang").expect_err("the connection breaks");
    assert!(matches!(err.downcast_ref::<SioError>(), Some(SioError::Malformed { what: "receive_message event", .. })), "{err:#}");
    let emit = tokio::time::timeout(WAIT, server).await.expect("server ends").expect("server task");
    let emit = emit.expect("the client emitted");
    let json = emit.strip_prefix("420").unwrap_or_else(|| panic!("an EVENT with ack id 0: {emit}"));
    let json: serde_json::Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(json, serde_json::json!(["send_message", {"room": "r", "client_message_id": "c1", "text": "hello"}]));
}

/// The load generator's scenarios drive the peer as they drive legalchatd (a smoke run:
/// counts, never timings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_scenarios_drive_the_peer() {
    use legalchat_benches::load::{self, LoadOptions, Target, scenarios};
    use legalchat_benches::probe::ProcessProbe;
    if !peer_available() {
        return;
    }
    let mut peer = PeerProcess::start(PeerConfig::default()).await.expect("the peer starts");
    let target = Target::Peer { addr: peer.addr(), secret: peer.secret().to_owned() };
    let probe = ProcessProbe::new(peer.pid()).expect("the peer's /proc entry");

    let opts = LoadOptions { users: 6, group_size: 3, rate: 60.0, duration: 1.0, warmup: 0.5, drain: 20.0, ..LoadOptions::default() };
    let summary =
        tokio::time::timeout(Duration::from_secs(120), load::run(&opts, &target, Some(probe))).await.expect("in time").expect("run");
    assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
    assert_eq!(summary.server, "socket.io peer");
    assert!(summary.acked_measured > 0);
    assert_eq!(summary.sent, summary.acked);
    assert_eq!(summary.deliveries_measured, summary.acked_measured * 2, "each message reaches the 2 other room members");
    assert!(summary.server_usage.is_some_and(|u| u.rss_mib > 0.0));

    let idle = scenarios::idle(&target, probe, 10, 1, Duration::from_millis(200)).await.expect("idle");
    assert_eq!((idle.sessions, idle.connections), (10, 10));

    // Socket.IO has no resume: every client comes back, none holds what was sent meanwhile.
    let storm = scenarios::reconnect_storm(&target, Some(probe), 8, 4, 1, Duration::from_secs(60)).await.expect("storm");
    assert_eq!(storm.back, 8);
    assert_eq!(storm.got_missed_message, 0);
    peer.stop().await.expect("the peer stops");
}
