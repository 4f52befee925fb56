//! A retried send (same client message id) is stored and delivered once.

use std::time::Duration;

use legalchat_sdk::pb;
use legalchat_sdk::{HistoryCursor, new_client_message_id};
use legalchat_tests::{bounded, collect_messages, text_of};

use crate::daemon;

fn text(t: &str) -> pb::MessageContent {
    pb::MessageContent { text: t.into(), r#type: pb::ContentType::Text.into(), format: pb::TextFormat::Plain.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_send_is_stored_once() {
    bounded("dedup", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");

        let cmid = new_client_message_id();
        let first = alice.send(&conv.id, &cmid, text("Draft attached")).await.expect("first send");
        assert!(!first.duplicate);
        let retry = alice.send(&conv.id, &cmid, text("Draft attached")).await.expect("retry");
        assert!(retry.duplicate, "the retry is reported as a duplicate");
        assert_eq!((retry.message_id.as_str(), retry.seq), (first.message_id.as_str(), first.seq));

        // A retry from a new session of the same user (e.g. after a reconnect) too.
        let alice2 = d.client("alice", "advocate").await;
        let again = alice2.send(&conv.id, &cmid, text("Draft attached")).await.expect("retry from a new session");
        assert!(again.duplicate);
        assert_eq!((again.message_id.as_str(), again.seq), (first.message_id.as_str(), first.seq));

        // A different id is a different message, right after the first.
        let next = alice.send_text(&conv.id, "end of test").await.expect("next send");
        assert_eq!(next.seq, first.seq + 1);

        // Bob got the message once, then the next one.
        let got = collect_messages(&bob, &conv.id, Duration::from_secs(30), |got| got.iter().any(|m| text_of(m) == "end of test")).await;
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [first.seq, next.seq], "bob's deliveries: {got:?}");

        let page = bob.history(&conv.id, HistoryCursor::Latest, 100).await.expect("history");
        let copies = page.messages.iter().filter(|m| m.client_message_id == cmid).count();
        assert_eq!(copies, 1, "history: {:?}", page.messages);
        assert_eq!(page.messages.len(), 2);
        assert_eq!(page.last_seq, next.seq);
    })
    .await;
}
