//! Rate limits, exact at their boundaries: messages per user over all their devices, and
//! new connections per address after the burst. Refusals say how long to wait; what was
//! accepted stays, and bystanders are not affected.

use legalchat_sdk::{Error, NewConversation, pb};
use legalchat_tests::{bounded, full_history};

use crate::daemon_with;

fn rate_limited(e: &Error) -> &str {
    match e {
        Error::Server { code: pb::ErrorCode::RateLimited, message, .. } => message,
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sends_at_most_the_limit_per_minute_over_all_devices() {
    bounded("limits_messages", async {
        let d = daemon_with(&["--messages-per-minute", "100"]).await;
        let phone = d.client("alice", "advocate").await;
        let laptop = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = phone.create_conversation(NewConversation::group("Limits", vec!["bob".into()])).await.unwrap().id;
        for n in 0..60 {
            phone.send_text(&conv, &format!("phone {n}")).await.unwrap_or_else(|e| panic!("phone message {n}: {e}"));
        }
        for n in 0..40 {
            laptop.send_text(&conv, &format!("laptop {n}")).await.unwrap_or_else(|e| panic!("laptop message {n}: {e}"));
        }
        // The 101st within the minute, from either device.
        let e = phone.send_text(&conv, "one too many").await.unwrap_err();
        let message = rate_limited(&e);
        assert!(message.starts_with("message limit reached: at most 100 messages per minute; try again in "), "{message}");
        let Error::Server { retry_after: Some(wait), .. } = e else { panic!("no time to wait in {e:?}") };
        assert!(wait <= std::time::Duration::from_millis(600), "{wait:?}");
        let e = laptop.send_text(&conv, "one too many, elsewhere").await.unwrap_err();
        rate_limited(&e);

        // The wire says how long, in milliseconds.
        let mut raw = d.raw_session_as("alice", "advocate").await;
        let send = pb::SendMessage {
            conversation_id: conv.clone(),
            client_message_id: "raw-101".into(),
            content: Some(pb::MessageContent { text: "raw".into(), r#type: pb::ContentType::Text.into(), ..Default::default() }),
            reply_to_seq: 0,
        };
        match raw.request(7, pb::client_frame::Request::SendMessage(send)).await.unwrap() {
            pb::server_frame::Event::Error(e) => {
                assert_eq!(e.code(), pb::ErrorCode::RateLimited);
                assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 600, "one message comes back every 0.6 s: {}", e.retry_after_ms);
            }
            other => panic!("the 101st message was not refused: {other:?}"),
        }

        // Another user is not affected, and everything accepted is there.
        bob.send_text(&conv, "bob is not limited").await.expect("a bystander sends");
        let history = full_history(&bob, &conv).await;
        let from_alice = history.iter().filter(|m| m.sender_id == "alice" && m.event.is_none()).count();
        assert_eq!(from_alice, 100, "exactly the accepted messages are stored");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_per_address_are_limited_after_the_burst() {
    bounded("limits_connections", async {
        // Loopback is trusted by default; here it is not.
        let d = daemon_with(&["--trusted-networks", "", "--connections-per-minute", "5", "--connection-burst", "5"]).await;
        let mut clients = Vec::new();
        for n in 0..5 {
            clients.push(
                d.connect_with_token(d.token(&format!("user{n}"), "advocate")).await.unwrap_or_else(|e| panic!("connection {n}: {e}")),
            );
        }
        let e = d.connect_with_token(d.token("user5", "advocate")).await.unwrap_err();
        let message = rate_limited(&e);
        assert!(message.starts_with("too many new connections from your address; try again in "), "{message}");
        // The connections already open keep working.
        let conv =
            clients[0].create_conversation(NewConversation::group("Open", vec!["user1".into()])).await.expect("an open session works");
        clients[0].send_text(&conv.id, "still here").await.expect("and sends");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pass_a_stateless_retry_when_handshakes_flood_in() {
    bounded("handshake_retry", async {
        // 0: every new client must first prove its address, as under a flood.
        let d = daemon_with(&["--handshakes-before-retry", "0"]).await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Retry", vec!["bob".into()])).await.unwrap().id;
        alice.send_text(&conv, "after a retry").await.expect("sessions work after a stateless retry");
        bob.ping().await.unwrap();
        let metrics = d.http_get("/metrics").await;
        let retries: f64 = metrics
            .body
            .lines()
            .filter(|l| l.starts_with("legalchat_handshake_retries_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(retries >= 2.0, "each client was asked to retry: {retries}");
    })
    .await;
}
