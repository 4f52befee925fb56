//! TLS over TCP, the fallback for networks that block UDP: the same sessions and transfers
//! as QUIC; a client whose UDP is dropped falls back on its own and moves back to QUIC
//! once it answers, missing nothing; refusals and limits are the same on both.

use std::time::Duration;

use legalchat_sdk::{Client, ConnectionState, Error, Event, NewConversation, Progress, ReconnectPolicy, Transport, TransportPolicy, pb};
use legalchat_tests::{EVENT_TIMEOUT, TestDaemon, UdpRelay, bounded, next_event, text_of, wait_for_message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::{daemon, daemon_with};

async fn connect_over(d: &TestDaemon, user: &str, policy: TransportPolicy) -> Client {
    let config = d.client_config(d.token(user, "advocate")).with_transport(policy);
    Client::connect(config).await.unwrap_or_else(|e| panic!("connecting {user} with {policy:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_over_tcp_carries_sessions_and_transfers_like_quic() {
    bounded("tcp_sessions", async {
        let d = daemon().await;
        let alice = connect_over(&d, "alice", TransportPolicy::TcpOnly).await;
        let bob = connect_over(&d, "bob", TransportPolicy::QuicOnly).await;
        assert_eq!(alice.transport(), Some(Transport::Tcp));
        assert_eq!(bob.transport(), Some(Transport::Quic));

        let conv = alice.create_conversation(NewConversation::group("Over TCP", vec!["bob".into()])).await.unwrap().id;
        alice.send_text(&conv, "from TCP").await.expect("a send over TCP is acknowledged");
        wait_for_message(&bob, "alice's message over TCP", |m| text_of(m) == "from TCP").await;
        bob.send_text(&conv, "from QUIC").await.unwrap();
        wait_for_message(&alice, "bob's message over QUIC", |m| text_of(m) == "from QUIC").await;
        alice.typing(&conv, true).await.expect("typing goes on the stream over TCP");

        // A transfer opens a TCP connection of its own, authorised by its ticket.
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300_000u32).flat_map(|n| format!("line {n}\n").into_bytes()).take(300_000).collect();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, &content).unwrap();
        let attachment = alice.upload_file(&conv, &path, None, &mut |_: Progress| {}).await.expect("an upload over TCP");
        let back = dir.path().join("back.txt");
        alice.download_file(&conv, &attachment.file_id, &back, &mut |_: Progress| {}).await.expect("a download over TCP");
        assert_eq!(std::fs::read(&back).unwrap(), content, "the file comes back whole");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_udp_falls_back_to_tcp_and_moves_back_to_quic_missing_nothing() {
    bounded("tcp_fallback", async {
        let d = daemon().await;
        // The client's QUIC goes through a relay that drops every datagram, as a network
        // that blocks UDP does: no error comes back, QUIC just never answers.
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        relay.cut();
        let mut config = d.client_config(d.token("alice", "advocate"));
        config.server_addr = relay.addr();
        let config = config
            .with_quic_retry_interval(Duration::from_millis(500))
            .with_reconnect_policy(ReconnectPolicy::default().with_initial_delay(Duration::from_millis(20)));
        let started = Instant::now();
        let alice = Client::connect(config).await.expect("connects although UDP is blocked");
        let fallback = started.elapsed();
        assert_eq!(alice.transport(), Some(Transport::Tcp));
        eprintln!("fell back to TLS over TCP in {} ms", fallback.as_millis());

        let bob = connect_over(&d, "bob", TransportPolicy::QuicOnly).await;
        let conv = bob.create_conversation(NewConversation::group("Fallback", vec!["alice".into()])).await.unwrap().id;
        // Bob writes throughout, until a while after alice moved back; she must get every
        // message once, in order, whatever carries her session meanwhile.
        let moved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writer = {
            let (bob, conv, moved) = (bob.clone(), conv.clone(), moved.clone());
            tokio::spawn(async move {
                let mut after_move = 0;
                let mut n = 0;
                while after_move < 50 {
                    bob.send_text(&conv, &format!("m{n}")).await.unwrap_or_else(|e| panic!("bob's message {n}: {e}"));
                    n += 1;
                    if moved.load(std::sync::atomic::Ordering::Relaxed) {
                        after_move += 1;
                    }
                }
                n
            })
        };
        let mut texts = Vec::new();
        let deadline = Instant::now() + EVENT_TIMEOUT * 3;
        let mut total = None;
        while total.is_none_or(|t| texts.len() < t) {
            let event = match total {
                Some(_) => next_event(&alice, deadline, "the rest of bob's messages").await,
                None => tokio::select! {
                    event = next_event(&alice, deadline, "bob's messages across the move") => event,
                    n = &mut writer, if moved.load(std::sync::atomic::Ordering::Relaxed) => {
                        total = Some(n.unwrap());
                        continue;
                    }
                },
            };
            match event {
                Event::Message(m) if m.conversation_id == conv => {
                    texts.push(text_of(&m).to_owned());
                    if texts.len() == 20 {
                        // UDP gets through again: the client finds out and moves back.
                        relay.heal();
                    }
                }
                Event::State(ConnectionState::Resumed { .. }) if !relay.is_cut() => {
                    assert_eq!(alice.transport(), Some(Transport::Quic), "after QUIC answered again, the client is back on it");
                    moved.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Event::Closed { reason } => panic!("alice's client ended: {reason}"),
                _ => {}
            }
        }
        let total = total.unwrap_or_default();
        let expected: Vec<String> = (0..total).map(|n| format!("m{n}")).collect();
        assert_eq!(texts, expected, "every message exactly once, in order, across the move");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_refusals_and_limits_are_the_same_as_over_quic() {
    bounded("tcp_refusals", async {
        let d = daemon_with(&["--trusted-networks", "", "--connections-per-minute", "3", "--connection-burst", "3"]).await;
        // A token from another key is refused with the reason, in-band.
        let forged =
            legalchat_tests::tokens::TokenMinter::new("another secret of at least thirty-two bytes!!").token("mallory", "admin").unwrap();
        let config = d.client_config(forged).with_transport(TransportPolicy::TcpOnly);
        match Client::connect(config).await {
            Err(Error::Unauthorized(reason)) => assert!(reason.contains("signature"), "{reason}"),
            other => panic!("a forged token over TCP: {other:?}"),
        }
        // Sessions over TCP count against the address's connection limit, like QUIC
        // connections (the refused one above counted too).
        let mut open = Vec::new();
        for n in 0..2 {
            open.push(connect_over(&d, &format!("user{n}"), TransportPolicy::TcpOnly).await);
        }
        let config = d.client_config(d.token("user9", "advocate")).with_transport(TransportPolicy::TcpOnly);
        match Client::connect(config).await {
            Err(Error::Server { code: pb::ErrorCode::RateLimited, message, retry_after }) => {
                assert!(message.starts_with("too many new connections from your address"), "{message}");
                assert!(retry_after.is_some_and(|w| w > Duration::ZERO), "the wait is given: {retry_after:?}");
            }
            other => panic!("the session past the burst over TCP: {other:?}"),
        }
        open[0].ping().await.expect("the sessions already open go on");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_that_never_speaks_is_closed_and_others_go_on() {
    bounded("tcp_slowloris", async {
        let d = daemon_with(&["--auth-timeout-ms", "1000"]).await;
        let bystander = connect_over(&d, "bob", TransportPolicy::TcpOnly).await;
        // Half a TLS handshake (a ClientHello's first bytes), then silence.
        let mut silent = tokio::net::TcpStream::connect(d.tcp_addr()).await.unwrap();
        silent.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match silent.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server closes a handshake that does not finish");
        bystander.ping().await.expect("a bystander on TCP is unaffected");
    })
    .await;
}
