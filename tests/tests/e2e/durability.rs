//! What was acknowledged survives restarts: graceful ones and `kill -9`.

use std::collections::BTreeMap;

use legalchat_sdk::pb::{self, ErrorCode, client_frame::Request, server_frame::Event as Ev};
use legalchat_sdk::{Client, Error, HistoryCursor, NewConversation};
use legalchat_tests::{bounded, full_history, text_of};
use tokio::task::JoinSet;

use crate::daemon;

/// Messages per sender: well under the requirements' 100 messages per minute per user, so
/// that a rate limiter never interferes.
const PER_SENDER: usize = 50;

/// seq → (message id, text), as acknowledged or as stored.
type Transcript = BTreeMap<u64, (String, String)>;

fn transcript<'a>(messages: impl IntoIterator<Item = &'a pb::Message>) -> Transcript {
    messages.into_iter().map(|m| (m.seq, (m.message_id.clone(), text_of(m).to_owned()))).collect()
}

/// Every sender sends `PER_SENDER` messages into `conversation_id`, all at once; returns
/// the acknowledged transcript.
async fn send_concurrently(senders: &[Client], conversation_id: &str, tag: &str) -> Transcript {
    let mut sends = JoinSet::new();
    for sender in senders {
        for n in 0..PER_SENDER {
            let (sender, conv, text) = (sender.clone(), conversation_id.to_owned(), format!("{tag} {} #{n}", sender.user_id()));
            sends.spawn(async move {
                let sent = sender.send_text(&conv, &text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
                (sent, text)
            });
        }
    }
    let mut acked = Transcript::new();
    while let Some(joined) = sends.join_next().await {
        let (sent, text) = joined.expect("send task");
        assert!(acked.insert(sent.seq, (sent.message_id, text)).is_none(), "two acks with seq {}", sent.seq);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_graceful_restart() {
    bounded("graceful_restart", async {
        let mut d = daemon().await;
        let owner = d.client("owner", "advocate").await;
        // 150 + 100 + 50 = 300 messages: one, two and three senders of 50 each.
        let mut convs = Vec::new();
        let mut acked = Vec::new();
        for (k, senders) in [3usize, 2, 1].into_iter().enumerate() {
            let mut clients = Vec::new();
            for s in 0..senders {
                clients.push(d.client(&format!("sender{k}-{s}"), "advocate").await);
            }
            let ids = clients.iter().map(|c| c.user_id().to_owned()).collect();
            let conv = owner.create_conversation(NewConversation::group(format!("Matter {k}"), ids)).await.expect("create group");
            let transcript = send_concurrently(&clients, &conv.id, &format!("conv{k}")).await;
            assert_eq!(transcript.keys().copied().collect::<Vec<_>>(), (1..=(senders * PER_SENDER) as u64).collect::<Vec<_>>());
            convs.push(conv.id);
            acked.push(transcript);
        }
        drop(owner);

        d.restart().await;
        let owner = d.client("owner", "advocate").await;

        for (conv, expected) in convs.iter().zip(&acked) {
            let total = expected.len() as u64;
            // Forwards, in pages of 100.
            assert_eq!(&transcript(&full_history(&owner, conv).await), expected, "forward history of {conv}");

            // Backwards from the newest, in pages of 30: each page is the 30 just before the cursor.
            let mut backwards = Transcript::new();
            let mut cursor = HistoryCursor::Latest;
            loop {
                let page = owner.history(conv, cursor, 30).await.expect("history page");
                assert_eq!(page.last_seq, total);
                let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "a page is ascending and contiguous: {seqs:?}");
                let upper = match cursor {
                    HistoryCursor::Before(b) => b - 1,
                    _ => total,
                };
                assert_eq!(seqs.last().copied(), Some(upper), "the page ends right before the cursor");
                assert_eq!(seqs.len() as u64, upper.min(30));
                backwards.extend(transcript(&page.messages));
                if !page.has_more {
                    assert_eq!(seqs.first().copied(), Some(1));
                    break;
                }
                cursor = HistoryCursor::Before(seqs[0]);
            }
            assert_eq!(&backwards, expected, "backward history of {conv}");

            // Forwards from the middle, and the maximum page size.
            let page = owner.history(conv, HistoryCursor::After(total / 2), 10).await.expect("page after the middle");
            assert_eq!(page.messages.first().map(|m| m.seq), Some(total / 2 + 1));
            assert_eq!(page.messages.len(), 10);
            assert!(page.has_more);
            let page = owner.history(conv, HistoryCursor::Latest, 100).await.expect("a page of 100");
            assert_eq!(page.messages.len() as u64, total.min(100));
            assert_eq!(page.has_more, total > 100);
        }

        // A page of 101 is refused: by the SDK before sending, and by the server when sent raw.
        match owner.history(&convs[0], HistoryCursor::Latest, 101).await {
            Err(Error::Invalid(e)) => assert_eq!(e.field, "limit"),
            Err(e) if e.code() == Some(ErrorCode::InvalidArgument) => {}
            other => panic!("a page of 101 was not refused: {other:?}"),
        }
        let mut raw = d.raw_session_as("owner", "advocate").await;
        let get = pb::GetHistory { conversation_id: convs[0].clone(), cursor: None, limit: 101 };
        match raw.request(2, Request::GetHistory(get)).await.expect("raw history") {
            Ev::Error(e) => {
                assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
                assert!(e.message.contains("limit"), "{e:?}");
            }
            other => panic!("the server answered a page of 101 with {other:?}"),
        }

        // The conversation list shows all three with their newest message.
        let list = owner.list_conversations(100).await.expect("list");
        assert_eq!(list.len(), 3, "{list:?}");
        for (conv, expected) in convs.iter().zip(&acked) {
            let c = list.iter().find(|c| &c.id == conv).unwrap_or_else(|| panic!("{conv} missing from the list"));
            let (last_seq, (last_id, last_text)) = expected.last_key_value().unwrap();
            assert_eq!(c.last_seq, *last_seq);
            let last = c.last_message.as_ref().unwrap_or_else(|| panic!("{conv} listed without its last message"));
            assert_eq!((last.seq, &last.message_id, text_of(last)), (*last_seq, last_id, last_text.as_str()));
        }
        let updated: Vec<i64> = list.iter().map(|c| c.updated_at_ms).collect();
        assert!(updated.windows(2).all(|w| w[0] >= w[1]), "not most recently active first: {updated:?}");

        // Sequencing carries on where it stopped.
        let sender = d.client("sender2-0", "advocate").await;
        let next = sender.send_text(&convs[2], "after the restart").await.expect("send after restart");
        assert_eq!(next.seq, acked[2].len() as u64 + 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    const SENDERS: usize = 10;
    bounded("kill9", async {
        let mut d = daemon().await;
        let owner = d.client("owner", "advocate").await;
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            senders.push(d.client(&format!("sender{s}"), "advocate").await);
        }
        let ids = senders.iter().map(|c| c.user_id().to_owned()).collect();
        let conv = owner.create_conversation(NewConversation::group("Crash test", ids)).await.expect("create group");

        // 500 concurrent sends; the daemon dies the moment the last ack is in.
        let acked = send_concurrently(&senders, &conv.id, "durable").await;
        d.kill9_and_restart().await;
        assert_eq!(acked.len(), SENDERS * PER_SENDER);

        let owner = d.client("owner", "advocate").await;
        let stored = transcript(&full_history(&owner, &conv.id).await);
        for (seq, entry) in &acked {
            assert_eq!(stored.get(seq), Some(entry), "acknowledged seq {seq} lost or changed by kill -9");
        }
        assert_eq!(stored.keys().copied().collect::<Vec<_>>(), (1..=acked.len() as u64).collect::<Vec<_>>());

        let next = owner.send_text(&conv.id, "after the crash").await.expect("send after restart");
        assert_eq!(next.seq, acked.len() as u64 + 1, "sequencing resumes without a gap or a reuse");
    })
    .await;
}
