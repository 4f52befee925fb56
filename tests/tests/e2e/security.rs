//! The security suite's cross-conversation and flood cases (the authentication bypass
//! attempts are in `auth.rs`, the limits at their boundaries in `limits.rs` and
//! `attachments.rs`, bad frames and slowloris in `bad_frames.rs` and `transport.rs`):
//! a user who holds another conversation's real ids gets nothing out of them, and a
//! session that floods the server ends only itself while a bystander keeps talking.

use legalchat_sdk::pb::{self, ErrorCode, client_frame::Request};
use legalchat_sdk::{ConversationUpdate, Error, Event, HistoryCursor, NewConversation, Progress};
use legalchat_tests::{EVENT_TIMEOUT, bounded, text_of, wait_for_message};

use crate::{daemon, daemon_with};

const SECRET: &str = "Settlement floor is 2.1M";

/// A refusal that reveals nothing: FORBIDDEN or NOT_FOUND, and not a word of the
/// conversation's content in the message.
fn refused<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::Server { code: ErrorCode::Forbidden | ErrorCode::NotFound, message, .. }) => {
            assert!(!message.contains("Settlement") && !message.contains("2.1M"), "{what}: the refusal leaks content: {message}");
        }
        other => panic!("{what}: expected FORBIDDEN or NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_ids_of_another_conversation_give_nothing() {
    bounded("leaked_ids", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let mallory = d.client("mallory", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Privileged", vec!["bob".into()])).await.unwrap().id;
        let secret = alice.send_text(&conv, SECRET).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("terms.txt");
        std::fs::write(&path, SECRET).unwrap();
        let file = alice.upload_file(&conv, &path, None, &mut |_: Progress| {}).await.unwrap();
        wait_for_message(&bob, "alice's message", |m| text_of(m) == SECRET).await;

        // Mallory has learnt the conversation id, the message's seq and the file id (a
        // screenshot, a log line): every use of them is refused.
        let seq = secret.seq;
        refused(mallory.history(&conv, HistoryCursor::Latest, 50).await, "history");
        refused(mallory.get_conversation(&conv).await, "the conversation");
        refused(mallory.send_text(&conv, "let me in").await, "a send");
        refused(mallory.reply(&conv, seq, "a reply").await, "a reply");
        refused(mallory.edit_text(&conv, seq, "rewritten").await, "an edit");
        refused(mallory.delete(&conv, seq).await, "a delete");
        refused(mallory.react(&conv, seq, "👍").await, "a reaction");
        refused(mallory.pin(&conv, seq, false).await, "a pin");
        refused(mallory.thread(&conv, seq, 0, 50).await, "the thread");
        refused(mallory.pins(&conv).await, "the pins");
        refused(mallory.audit(&conv, seq).await, "the audit trail");
        refused(mallory.receipts(&conv).await, "the receipts");
        refused(mallory.join_room(&conv).await, "the room");
        refused(mallory.mark_read(&conv, seq).await, "a read receipt");
        refused(mallory.add_participants(&conv, &["mallory"], pb::ParticipantRole::AdminRole).await, "adding herself");
        refused(mallory.remove_participant(&conv, "bob").await, "removing bob");
        refused(mallory.set_participant_role(&conv, "mallory", pb::ParticipantRole::AdminRole).await, "a role");
        let update = ConversationUpdate::new().title("Mine now");
        refused(mallory.update_conversation(&conv, update).await, "an update");
        refused(mallory.start_download(&conv, &file.file_id).await, "the file");
        refused(mallory.start_upload(&conv, "x.txt", 1, [0; 32], None).await, "an upload into it");
        // Typing is a signal and never answered: it must simply reach nobody.
        mallory.typing(&conv, true).await.expect("a typing signal is not answered");
        // Presence: alice shares no conversation with mallory, so is left out.
        let seen = mallory.presence(&["alice", "bob"]).await.unwrap();
        assert!(seen.is_empty(), "mallory sees the presence of strangers: {seen:?}");

        // On the wire, a catch-up naming the conversation returns none of it.
        let mut raw = d.raw_session_as("mallory", "advocate").await;
        let ask = pb::CatchUp {
            cursors: vec![pb::ConversationCursor { conversation_id: conv.clone(), after_seq: 0 }],
            include_unlisted: true,
            max_messages: 100,
        };
        match raw.request(9, Request::CatchUp(ask)).await.unwrap() {
            pb::server_frame::Event::Ack(pb::Ack { result: Some(pb::ack::Result::CatchUp(page)), .. }) => {
                assert!(page.messages.is_empty() && page.receipts.is_empty(), "a catch-up leaks: {page:?}");
            }
            other => panic!("catch-up: {other:?}"),
        }

        // Guessed ids, well formed, get the same answers.
        let guessed = "0123456789abcdef0123456789abcdef";
        refused(mallory.history(guessed, HistoryCursor::Latest, 50).await, "a guessed conversation");
        refused(mallory.send_text(guessed, "hello?").await, "a send to a guessed conversation");

        // Nothing mallory did reached alice or bob, and nothing changed.
        bob.send_text(&conv, "still ours").await.unwrap();
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match legalchat_tests::next_event(&alice, deadline, "bob's message").await {
                Event::Message(m) if text_of(&m) == "still ours" => break,
                Event::Message(m) => assert_ne!(m.sender_id, "mallory", "mallory's event reached alice: {m:?}"),
                Event::Typing(t) => assert_ne!(t.user_id, "mallory", "mallory's typing reached alice"),
                _ => {}
            }
        }
        let page = alice.history(&conv, HistoryCursor::Latest, 50).await.unwrap();
        assert!(page.messages.iter().all(|m| m.sender_id != "mallory"), "mallory wrote into the conversation");
        assert_eq!(alice.get_conversation(&conv).await.unwrap().title, "Privileged");
        assert!(alice.get_conversation(&conv).await.unwrap().participants.iter().all(|p| p.user_id != "mallory"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_clear_refusals_or_back_pressure_and_a_bystander_keeps_talking() {
    bounded("flood", async {
        let d = daemon_with(&["--messages-per-minute", "100"]).await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Bystanders", vec!["bob".into()])).await.unwrap().id;
        let mallory = d.client("mallory", "advocate").await;
        let hers = mallory.create_conversation(NewConversation::group("Noise", vec!["eve".into()])).await.unwrap().id;
        let talk = |round_base: u32| {
            let (alice, bob, conv) = (alice.clone(), bob.clone(), conv.clone());
            async move {
                for round in round_base..round_base + 10 {
                    let text = format!("round {round}");
                    alice.send_text(&conv, &text).await.expect("alice sends during the flood");
                    wait_for_message(&bob, "alice's message during the flood", |m| text_of(m) == text).await;
                }
            }
        };

        // 1. A burst of 2,000 sends in one write: the first 100 are stored, every other one
        // is answered RATE_LIMITED with the time to wait. Alice and bob talk meanwhile.
        let mut raw = d.raw_session_as("mallory", "advocate").await;
        let mut burst = Vec::new();
        for n in 0..2_000u64 {
            let send = pb::SendMessage {
                conversation_id: hers.clone(),
                client_message_id: format!("flood-{n}"),
                content: Some(pb::MessageContent {
                    text: format!("noise {n}"),
                    r#type: pb::ContentType::Text.into(),
                    ..Default::default()
                }),
                reply_to_seq: 0,
            };
            burst.extend_from_slice(&legalchat_protocol::codec::encode(&pb::ClientFrame {
                request_id: 100 + n,
                request: Some(Request::SendMessage(send)),
            }));
        }
        let flood = async {
            raw.write_raw(&burst).await.expect("the burst is written");
            let (mut stored, mut limited) = (0, 0);
            while stored + limited < 2_000 {
                match raw.next_frame(EVENT_TIMEOUT).await.expect("an answer to every send").event {
                    Some(pb::server_frame::Event::Ack(_)) => stored += 1,
                    Some(pb::server_frame::Event::Error(e)) => {
                        assert_eq!(e.code(), ErrorCode::RateLimited, "{e:?}");
                        assert!(e.retry_after_ms > 0, "the wait is given: {e:?}");
                        limited += 1;
                    }
                    _ => {}
                }
            }
            (stored, limited)
        };
        let ((stored, limited), ()) = tokio::join!(flood, talk(0));
        assert_eq!((stored, limited), (100, 1_900), "exactly the limit is stored, the rest refused");

        // 2. Requests written as fast as they go and never read: the server answers into
        // the session's bounded queue and then stops reading it (flow control), so the
        // flooder stalls itself; nobody else notices.
        let mut raw = d.raw_session_as("mallory", "advocate").await;
        let mut pings = Vec::new();
        for n in 0..10_000u64 {
            let ping = pb::ClientFrame { request_id: 10_000 + n, request: Some(Request::Ping(pb::Ping { nonce: n })) };
            pings.extend_from_slice(&legalchat_protocol::codec::encode(&ping));
        }
        let flood = async {
            for _ in 0..100 {
                if raw.write_raw(&pings).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = flood => {}
            () = talk(10) => {}
        }
        talk(20).await;
    })
    .await;
}
