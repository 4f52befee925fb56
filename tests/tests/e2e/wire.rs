//! The real-time requests at the wire level, without the SDK's conveniences: what the
//! server itself promises to any client written from the `.proto` file.

use legalchat_sdk::NewConversation;
use legalchat_sdk::pb::{self, ErrorCode, client_frame::Request, server_frame::Event as Ev};
use legalchat_tests::{RawSession, bounded};

use crate::daemon;

fn ack(ev: Ev, what: &str) -> pb::ack::Result {
    match ev {
        Ev::Ack(pb::Ack { result: Some(r), .. }) => r,
        other => panic!("{what}: expected an Ack, got {other:?}"),
    }
}

fn error(ev: Ev, what: &str) -> pb::Error {
    match ev {
        Ev::Error(e) => e,
        other => panic!("{what}: expected an Error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_a_signal_and_receipts_only_move_forward() {
    bounded("wire_receipts", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Wire", vec!["bob".into()])).await.expect("create");
        for n in 0..5 {
            alice.send_text(&conv.id, &format!("m{n}")).await.expect("send");
        }
        let mut bob: RawSession = d.raw_session_as("bob", "advocate").await;

        // A typing signal is never answered, even with a request id: the next frame on the
        // stream is the answer to the ping sent after it.
        let typing = pb::Typing { conversation_id: conv.id.clone(), active: true };
        bob.send_frame(&pb::ClientFrame { request_id: 7, request: Some(Request::Typing(typing)) }).await.expect("typing");
        match ack(bob.request(8, Request::Ping(pb::Ping { nonce: 42 })).await.expect("ping"), "ping") {
            pb::ack::Result::Pong(p) => assert_eq!(p.nonce, 42),
            other => panic!("expected Pong, got {other:?}"),
        }

        // Read position: forward only, never past the newest message.
        let read = |seq| Request::MarkRead(pb::MarkRead { conversation_id: conv.id.clone(), seq });
        let e = error(bob.request(9, read(6)).await.expect("mark read"), "read past the end");
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message.contains("seq"), "{e:?}");
        assert!(matches!(ack(bob.request(10, read(3)).await.expect("read 3"), "read 3"), pb::ack::Result::Done(_)));
        assert!(matches!(ack(bob.request(11, read(2)).await.expect("read 2"), "read 2"), pb::ack::Result::Done(_)));
        let receipts = match ack(
            bob.request(12, Request::GetReceipts(pb::GetReceipts { conversation_id: conv.id.clone() })).await.expect("receipts"),
            "receipts",
        ) {
            pb::ack::Result::Receipts(r) => r,
            other => panic!("expected ReceiptList, got {other:?}"),
        };
        let mine = receipts.states.iter().find(|s| s.user_id == "bob").expect("bob has a position");
        assert_eq!((mine.read_seq, mine.delivered_seq), (3, 3), "reading 3 then 2 leaves 3; reading implies delivered");
        assert!(mine.read_at_ms > 0);
        let sender = receipts.states.iter().find(|s| s.user_id == "alice").expect("alice has a position");
        assert_eq!(sender.read_seq, 5, "a sender has read their own messages");
        let listed = alice.list_conversations(10).await.expect("list");
        assert_eq!(listed[0].unread_count, 0);
        let bobs_view = match ack(
            bob.request(13, Request::GetConversation(pb::GetConversation { conversation_id: conv.id.clone() })).await.expect("get"),
            "get",
        ) {
            pb::ack::Result::Conversation(c) => c,
            other => panic!("expected Conversation, got {other:?}"),
        };
        assert_eq!(bobs_view.unread_count, 2, "unread follows the read position");

        // A non-participant can do none of it.
        let mut eve = d.raw_session_as("eve", "advocate").await;
        // (As if there were no such conversation.)
        let e = error(eve.request(2, read(1)).await.expect("eve reads"), "eve");
        assert_eq!(e.code(), ErrorCode::NotFound);
        let join = Request::JoinRoom(pb::JoinRoom { conversation_id: conv.id.clone() });
        assert_eq!(error(eve.request(3, join).await.expect("eve joins"), "eve joins").code(), ErrorCode::NotFound);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_pages_across_conversations_with_continuation() {
    bounded("wire_catch_up", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let mut convs = Vec::new();
        for k in 0..6 {
            let conv = alice.create_conversation(NewConversation::group(format!("Matter {k}"), vec!["bob".into()])).await.expect("create");
            for n in 1..=(10 * (k + 1)) {
                alice.send_text(&conv.id, &format!("matter {k} message {n}")).await.expect("send");
            }
            convs.push(conv.id);
        }
        // 10 + 20 + ... + 60 = 210 messages; pages of at most 50.
        let mut bob = d.raw_session_as("bob", "advocate").await;
        let mut cursors: Vec<pb::ConversationCursor> =
            convs.iter().take(3).map(|c| pb::ConversationCursor { conversation_id: c.clone(), after_seq: 0 }).collect();
        let mut got: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        let mut pages = 0;
        let mut include_unlisted = true;
        loop {
            let req = Request::CatchUp(pb::CatchUp { cursors: cursors.clone(), max_messages: 50, include_unlisted });
            let page = match ack(bob.request(100 + pages, req).await.expect("catch up"), "catch up") {
                pb::ack::Result::CatchUp(p) => p,
                other => panic!("expected CatchUpPage, got {other:?}"),
            };
            pages += 1;
            assert!(page.messages.len() <= 50, "a page larger than asked: {}", page.messages.len());
            assert!(page.unknown.is_empty(), "include_unlisted covers every conversation");
            for m in &page.messages {
                let seqs = got.entry(m.conversation_id.clone()).or_default();
                assert_eq!(m.seq, seqs.last().copied().unwrap_or(0) + 1, "gap or duplicate in {}", m.conversation_id);
                seqs.push(m.seq);
            }
            if !page.has_more {
                break;
            }
            // Continue with the answer's cursors; everything is now listed.
            cursors = page.next.clone();
            include_unlisted = false;
            for (conv, seqs) in &got {
                if !cursors.iter().any(|c| &c.conversation_id == conv) {
                    cursors.push(pb::ConversationCursor { conversation_id: conv.clone(), after_seq: seqs.last().copied().unwrap_or(0) });
                }
            }
            assert!(pages < 20, "catch-up does not converge");
        }
        assert!(pages >= 5, "210 messages in pages of 50 take at least 5 pages, took {pages}");
        for (k, conv) in convs.iter().enumerate() {
            assert_eq!(got.get(conv).map(Vec::len), Some(10 * (k + 1)), "conversation {k} incomplete");
        }

        // Without include_unlisted, unlisted conversations are named, not sent.
        let req = Request::CatchUp(pb::CatchUp { cursors: vec![], max_messages: 10, include_unlisted: false });
        match ack(bob.request(500, req).await.expect("catch up"), "catch up") {
            pb::ack::Result::CatchUp(p) => {
                assert!(p.messages.is_empty());
                assert_eq!(p.unknown.len(), 6);
            }
            other => panic!("expected CatchUpPage, got {other:?}"),
        }
        let too_big = Request::CatchUp(pb::CatchUp { cursors: vec![], max_messages: 5_001, include_unlisted: true });
        assert_eq!(error(bob.request(501, too_big).await.expect("catch up"), "too big").code(), ErrorCode::InvalidArgument);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_may_arrive_as_a_datagram() {
    bounded("wire_datagram", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");
        let mut bob = d.raw_session_as("bob", "advocate").await;
        let join = Request::JoinRoom(pb::JoinRoom { conversation_id: conv.id.clone() });
        match ack(bob.request(2, join).await.expect("join"), "join") {
            pb::ack::Result::RoomUsers(r) => assert_eq!(r.online_user_ids, ["alice", "bob"]),
            other => panic!("expected RoomUsers, got {other:?}"),
        }

        let typist = d.raw_session_as("alice", "advocate").await;
        let signal = pb::ClientFrame {
            request_id: 0,
            request: Some(Request::Typing(pb::Typing { conversation_id: conv.id.clone(), active: true })),
        };
        typist.connection.send_datagram(legalchat_protocol::codec::encode(&signal)).expect("datagram");
        loop {
            let frame = bob.next_frame(std::time::Duration::from_secs(30)).await.expect("a frame for bob");
            if let Some(Ev::Typing(t)) = frame.event {
                assert_eq!((t.user_id.as_str(), t.active, t.conversation_id.as_str()), ("alice", true, conv.id.as_str()));
                break;
            }
        }
    })
    .await;
}
