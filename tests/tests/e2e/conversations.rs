//! Conversations: participants under the role policy, the events that tell everyone about
//! changes, unread counts, every device of a user, and case ids.

use legalchat_sdk::pb::{ConversationType, ErrorCode, ParticipantRole};
use legalchat_sdk::{Client, Error, Event, HistoryCursor, NewConversation};
use legalchat_tests::{EVENT_TIMEOUT, bounded, next_event, text_of, wait_for_message};
use tokio::time::Instant;

use crate::daemon;

/// Waits for a `ConversationUpdated` about `id`; other events are skipped.
async fn wait_for_update(client: &Client, id: &str) -> legalchat_sdk::pb::Conversation {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        if let Event::ConversationUpdated(c) = next_event(client, deadline, "a conversation update").await
            && c.id == id
        {
            return c;
        }
    }
}

fn code(result: Result<impl std::fmt::Debug, Error>) -> ErrorCode {
    match result {
        Err(e) => e.code().unwrap_or_else(|| panic!("no server code in {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

fn members(c: &legalchat_sdk::pb::Conversation) -> Vec<(String, ParticipantRole)> {
    let mut m: Vec<_> = c.participants.iter().map(|p| (p.user_id.clone(), p.role())).collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_are_managed_under_permissions() {
    bounded("participants", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let carol = d.client("carol", "advocate").await;
        let dan = d.client("dan", "client").await;
        let root = d.client("root", "admin").await;

        let conv = alice.create_conversation(NewConversation::group("Estate of Smith", vec!["bob".into()])).await.expect("create");
        assert_eq!(members(&conv), [("alice".into(), ParticipantRole::AdminRole), ("bob".into(), ParticipantRole::Member)]);
        // Bob learns he was added, without asking.
        assert_eq!(wait_for_update(&bob, &conv.id).await.participants.len(), 2);

        // A member may not add; the conversation admin may, with any role.
        assert_eq!(code(bob.add_participants(&conv.id, &["carol"], ParticipantRole::Member).await), ErrorCode::Forbidden);
        let after = alice.add_participants(&conv.id, &["carol"], ParticipantRole::Moderator).await.expect("admin adds carol");
        assert!(members(&after).contains(&("carol".into(), ParticipantRole::Moderator)));
        assert_eq!(wait_for_update(&carol, &conv.id).await.participants.len(), 3);
        assert_eq!(wait_for_update(&bob, &conv.id).await.participants.len(), 3, "existing members hear of the change");

        // A moderator adds members but cannot hand out admin.
        assert_eq!(code(carol.add_participants(&conv.id, &["dan"], ParticipantRole::AdminRole).await), ErrorCode::Forbidden);
        carol.add_participants(&conv.id, &["dan"], ParticipantRole::Member).await.expect("moderator adds a member");
        dan.send_text(&conv.id, "Thank you for adding me.").await.expect("dan may post now");

        // Removed, dan can neither read nor post any more; the others see the change.
        let after = carol.remove_participant(&conv.id, "dan").await.expect("moderator removes dan");
        assert!(!members(&after).iter().any(|(u, _)| u == "dan"));
        // As if there were no such conversation: a non-participant learns nothing.
        assert_eq!(code(dan.history(&conv.id, HistoryCursor::Latest, 10).await), ErrorCode::NotFound);
        assert_eq!(code(dan.send_text(&conv.id, "still here?").await), ErrorCode::NotFound);
        assert!(!dan.list_conversations(100).await.expect("list").iter().any(|c| c.id == conv.id), "a removed user no longer lists it");

        // A member may leave but not remove others.
        assert_eq!(code(bob.remove_participant(&conv.id, "carol").await), ErrorCode::Forbidden);
        bob.remove_participant(&conv.id, "bob").await.expect("bob leaves");
        assert_eq!(code(bob.send_text(&conv.id, "hello?").await), ErrorCode::NotFound);

        // A global admin manages any conversation without being in it.
        root.add_participants(&conv.id, &["erin"], ParticipantRole::Member).await.expect("admin adds erin");
        let now = alice.get_conversation(&conv.id).await.expect("get");
        let ids: Vec<String> = members(&now).into_iter().map(|(u, _)| u).collect();
        assert_eq!(ids, ["alice", "carol", "erin"]);

        // Private conversations keep exactly their two participants.
        let private = alice.private_chat("bob").await.expect("private chat");
        assert_eq!(code(alice.add_participants(&private.id, &["carol"], ParticipantRole::Member).await), ErrorCode::Forbidden);
        assert_eq!(code(root.remove_participant(&private.id, "bob").await), ErrorCode::Forbidden);

        // Unknown conversations are NOT_FOUND, not a crash or a silent success.
        let missing = "0123456789abcdef0123456789abcdef";
        assert_eq!(code(alice.add_participants(missing, &["bob"], ParticipantRole::Member).await), ErrorCode::NotFound);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_last_message_and_unread_counts() {
    bounded("unread", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Discovery", vec!["bob".into()])).await.expect("create");
        let other = alice.create_conversation(NewConversation::group("Billing", vec!["bob".into()])).await.expect("create");
        for n in 1..=3 {
            alice.send_text(&conv.id, &format!("exhibit {n}")).await.expect("send");
        }
        alice.send_text(&other.id, "invoice").await.expect("send");

        let find = |list: &[legalchat_sdk::pb::Conversation], id: &str| list.iter().find(|c| c.id == id).cloned().expect("listed");
        let list = bob.list_conversations(100).await.expect("bob lists");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, other.id, "most recently active first");
        let c = find(&list, &conv.id);
        assert_eq!((c.last_seq, c.unread_count), (3, 3));
        assert_eq!(c.last_message.as_ref().map(text_of), Some("exhibit 3"));
        assert_eq!(find(&alice.list_conversations(100).await.expect("alice lists"), &conv.id).unread_count, 0, "own messages are read");

        // Replying reads everything before the reply.
        bob.send_text(&conv.id, "received all three").await.expect("bob replies");
        assert_eq!(find(&bob.list_conversations(100).await.expect("list"), &conv.id).unread_count, 0);
        let mine = find(&alice.list_conversations(100).await.expect("list"), &conv.id);
        assert_eq!((mine.last_seq, mine.unread_count), (4, 1));
        assert_eq!(find(&bob.list_conversations(100).await.expect("list"), &other.id).unread_count, 1, "other conversations unaffected");

        // get_conversation agrees with the list.
        assert_eq!(alice.get_conversation(&conv.id).await.expect("get").unread_count, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_a_user_receives_messages() {
    bounded("devices", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let phone = d.client("bob", "advocate").await;
        let laptop = d.client("bob", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");

        let sent = alice.send_text(&conv.id, "Call me when you land.").await.expect("send");
        for device in [&phone, &laptop] {
            let got = wait_for_message(device, "alice's message", |m| m.seq == sent.seq).await;
            assert_eq!(got.message_id, sent.message_id);
        }

        // A message from one device reaches the user's other device, not back to itself:
        // the phone's next message event is alice's answer, not an echo of its own send.
        let own = phone.send_text(&conv.id, "Landed.").await.expect("phone sends");
        let on_laptop = wait_for_message(&laptop, "the phone's message", |m| m.seq == own.seq).await;
        assert_eq!((on_laptop.sender_id.as_str(), text_of(&on_laptop)), ("bob", "Landed."));
        let answer = alice.send_text(&conv.id, "Great.").await.expect("alice answers");
        let next = wait_for_message(&phone, "alice's answer", |_| true).await;
        assert_eq!(next.seq, answer.seq, "the sending device got its own message echoed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_conversations_carry_a_case_id() {
    bounded("case_ids", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv =
            alice.create_conversation(NewConversation::case("2024-017", "Smith v. Jones", vec!["bob".into()])).await.expect("create case");
        assert_eq!(conv.r#type(), ConversationType::Case);
        assert_eq!(conv.case_id, "2024-017");

        let refused = |r: Result<legalchat_sdk::pb::Conversation, Error>| match r {
            Err(Error::Invalid(e)) => assert_eq!(e.field, "case_id"),
            Err(e) if e.code() == Some(ErrorCode::InvalidArgument) => assert!(e.to_string().contains("case_id"), "{e}"),
            other => panic!("not refused: {other:?}"),
        };
        refused(alice.create_conversation(NewConversation::case("", "No case", vec!["bob".into()])).await);
        refused(alice.create_conversation(NewConversation::case("../../etc", "Hostile", vec!["bob".into()])).await);
        let mut group = NewConversation::group("Team", vec!["bob".into()]);
        group.case_id = "2024-017".into();
        refused(alice.create_conversation(group).await);
    })
    .await;
}
