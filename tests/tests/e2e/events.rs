//! The conversation as an event log: edits, deletes, reactions, replies, mentions, pins and
//! settings reach every device live, are replayed by catch-up after a disconnect, survive a
//! restart and `kill -9`, and fold to the same state on every device.

use std::collections::BTreeMap;
use std::time::Duration;

use legalchat_sdk::pb::{self, ErrorCode, conversation_event::Kind};
use legalchat_sdk::{Client, ConnectionState, ConversationUpdate, Error, Event, NewConversation, ReconnectPolicy, TransportPolicy};
use legalchat_tests::{EVENT_TIMEOUT, TestDaemon, UdpRelay, bounded, full_history, next_event, text_of, wait_for_message};
use tokio::time::Instant;

use crate::daemon;

/// A group of alice (its admin), bob and carol.
async fn team(d: &TestDaemon) -> (Client, Client, Client, pb::Conversation) {
    let alice = d.client("alice", "advocate").await;
    let bob = d.client("bob", "advocate").await;
    let carol = d.client("carol", "advocate").await;
    let conv = alice
        .create_conversation(NewConversation::group("Smith v. Jones", vec!["bob".into(), "carol".into()]))
        .await
        .expect("alice creates the group");
    (alice, bob, carol, conv)
}

fn code(e: Error) -> Option<ErrorCode> {
    e.code()
}

/// Waits for the state update of message `seq` that satisfies `done`.
async fn wait_for_state(client: &Client, what: &str, seq: u64, done: impl Fn(&pb::Message) -> bool) -> pb::Message {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match next_event(client, deadline, what).await {
            Event::MessageUpdated(m) if m.seq == seq && done(&m) => return m,
            Event::Closed { reason } => panic!("{}: closed ({reason}) while waiting for {what}", client.user_id()),
            _ => {}
        }
    }
}

/// The message entries of a conversation's history, as the server shows them now.
async fn states(client: &Client, conv: &str) -> BTreeMap<u64, pb::Message> {
    full_history(client, conv).await.into_iter().filter(|m| m.event.is_none()).map(|m| (m.seq, m)).collect()
}

/// The parts of a message's state every device must agree on.
#[derive(Debug, PartialEq)]
struct Digest {
    seq: u64,
    text: String,
    edited: bool,
    deleted: bool,
    reactions: Vec<(String, Vec<String>)>,
    pinned: bool,
}

fn digest(m: &pb::Message) -> Digest {
    Digest {
        seq: m.seq,
        text: text_of(m).to_owned(),
        edited: m.edited_at_ms != 0,
        deleted: m.deleted_at_ms != 0,
        reactions: m.reactions.iter().map(|r| (r.emoji.clone(), r.user_ids.clone())).collect(),
        pinned: m.pinned,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_reactions_and_pins_reach_every_device_live() {
    bounded("events_live", async {
        let d = daemon().await;
        let (alice, bob, carol, conv) = team(&d).await;
        // Alice's second device.
        let alice2 = d.client("alice", "advocate").await;

        let first = alice.send_text(&conv.id, "Hearing on the 4th").await.expect("send");
        let second = alice.send_text(&conv.id, "Bring the exhibits").await.expect("send");
        wait_for_message(&bob, "the second message", |m| m.seq == second.seq).await;

        let reacted = bob.react(&conv.id, first.seq, "👍").await.expect("bob reacts");
        assert_eq!(reacted.seq, 3);
        let edited = alice.edit_text(&conv.id, first.seq, "Hearing on the 5th").await.expect("alice edits");
        assert_eq!(edited.seq, 4);
        let deleted = alice.delete(&conv.id, second.seq).await.expect("alice deletes");
        assert_eq!(deleted.seq, 5);
        let pinned = alice.pin(&conv.id, first.seq, false).await.expect("alice pins");
        assert_eq!(pinned.seq, 6);

        // Every device of every participant gets every event, in order, and the state
        // after it — including the device that made it.
        for (who, client) in [("bob", &bob), ("carol", &carol), ("alice's other device", &alice2), ("alice", &alice)] {
            let state = wait_for_state(client, &format!("{who}: the pin"), first.seq, |m| m.pinned).await;
            assert_eq!(text_of(&state), "Hearing on the 5th", "{who}");
            assert_eq!(state.reactions, [pb::Reaction { emoji: "👍".into(), user_ids: vec!["bob".into()] }], "{who}");
            let gone = client.message(&conv.id, second.seq).expect("the deleted message is held");
            assert_eq!((gone.deleted_at_ms > 0, gone.content.is_none(), gone.deleted_by.as_str()), (true, true, "alice"), "{who}");
        }

        // The server's history agrees with what the devices folded.
        let server = states(&carol, &conv.id).await;
        for client in [&alice, &bob, &carol, &alice2] {
            for (seq, m) in &server {
                assert_eq!(client.message(&conv.id, *seq).as_ref().map(digest), Some(digest(m)), "{} at {seq}", client.user_id());
            }
        }
        let pins = bob.pins(&conv.id).await.expect("pins");
        assert_eq!(pins.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [first.seq]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem_and_store_nothing() {
    bounded("events_refused", async {
        let d = daemon().await;
        let (alice, bob, _carol, conv) = team(&d).await;
        let outsider = d.client("eve", "advocate").await;
        let sent = alice.send_text(&conv.id, "privileged").await.expect("send");

        assert_eq!(code(bob.edit_text(&conv.id, sent.seq, "mine now").await.unwrap_err()), Some(ErrorCode::Forbidden));
        assert_eq!(code(outsider.react(&conv.id, sent.seq, "👍").await.unwrap_err()), Some(ErrorCode::NotFound), "as if it did not exist");
        assert_eq!(code(bob.pin(&conv.id, sent.seq, false).await.unwrap_err()), Some(ErrorCode::Forbidden), "members do not pin");
        assert_eq!(code(bob.delete(&conv.id, sent.seq).await.unwrap_err()), Some(ErrorCode::Forbidden));
        assert_eq!(code(alice.edit_text(&conv.id, 99, "nothing there").await.unwrap_err()), Some(ErrorCode::NotFound));
        assert!(matches!(bob.react(&conv.id, sent.seq, "thumbs up").await, Err(Error::Invalid(_))), "checked before sending");

        // A 10 KiB + 1 edit is refused; the client checks first, and so does the server.
        let too_long = "x".repeat(10 * 1024 + 1);
        assert!(matches!(alice.edit_text(&conv.id, sent.seq, &too_long).await, Err(Error::Invalid(_))));
        let mut raw = d.raw_session_as("alice", "advocate").await;
        let request = pb::client_frame::Request::EditMessage(pb::EditMessage {
            conversation_id: conv.id.clone(),
            client_event_id: "too-long".into(),
            message_seq: sent.seq,
            content: Some(pb::MessageContent { text: too_long, ..Default::default() }),
        });
        match raw.request(7, request).await.expect("an answer") {
            pb::server_frame::Event::Error(e) => {
                assert_eq!(e.code(), ErrorCode::InvalidArgument);
                assert!(e.message.contains("content.text"), "{}", e.message);
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let emoji = pb::client_frame::Request::React(pb::React {
            conversation_id: conv.id.clone(),
            client_event_id: "bad-emoji".into(),
            message_seq: sent.seq,
            emoji: "<img src=x onerror=alert(1)>".into(),
            remove: false,
        });
        match raw.request(8, emoji).await.expect("an answer") {
            pb::server_frame::Event::Error(e) => assert_eq!((e.code(), e.message.starts_with("emoji")), (ErrorCode::InvalidArgument, true)),
            other => panic!("expected an error, got {other:?}"),
        }

        let view = alice.get_conversation(&conv.id).await.expect("get");
        assert_eq!(view.last_seq, sent.seq, "nothing refused took a seq");
        assert_eq!(text_of(&alice.history(&conv.id, legalchat_sdk::HistoryCursor::Latest, 10).await.unwrap().messages[0]), "privileged");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_and_last_message_count_only_visible_messages() {
    bounded("events_unread", async {
        let d = daemon().await;
        let (alice, bob, carol, conv) = team(&d).await;
        let one = alice.send_text(&conv.id, "one").await.expect("send");
        let two = alice.send_text(&conv.id, "two, for @carol").await.expect("send");
        let unread = |list: Vec<pb::Conversation>| list.into_iter().find(|c| c.id == conv.id).map(|c| (c.unread_count, c.mention_count));
        assert_eq!(unread(carol.list_conversations(10).await.unwrap()), Some((2, 1)));
        bob.react(&conv.id, one.seq, "🎉").await.expect("react");
        alice.edit_text(&conv.id, one.seq, "one, edited").await.expect("edit");
        assert_eq!(unread(carol.list_conversations(10).await.unwrap()), Some((2, 1)), "edits and reactions are not unread");
        let last = carol.get_conversation(&conv.id).await.unwrap().last_message.expect("a last message");
        assert_eq!((last.seq, text_of(&last)), (two.seq, "two, for @carol"));
        assert_eq!(last.mentions, ["carol"]);

        alice.delete(&conv.id, two.seq).await.expect("delete");
        assert_eq!(unread(carol.list_conversations(10).await.unwrap()), Some((1, 0)), "a deleted message is not unread");
        let last = carol.get_conversation(&conv.id).await.unwrap().last_message.expect("a last message");
        assert_eq!((last.seq, text_of(&last)), (one.seq, "one, edited"), "the newest visible message, in its current state");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_threads_settings_roles_and_the_audit_trail() {
    bounded("events_replies", async {
        let d = daemon().await;
        let (alice, bob, _carol, conv) = team(&d).await;
        let admin = d.client("root", "admin").await;
        let question = alice.send_text(&conv.id, "Which court?").await.expect("send");
        let answer = bob.reply(&conv.id, question.seq, "District court").await.expect("reply");
        let got = wait_for_message(&alice, "bob's reply", |m| m.seq == answer.seq).await;
        assert_eq!(got.reply_to_seq, question.seq);
        assert_eq!(got.reply_preview.as_ref().map(|p| p.text.as_str()), Some("Which court?"));
        let thread = alice.thread(&conv.id, question.seq, 0, 10).await.expect("thread");
        assert_eq!(thread.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [answer.seq]);

        let updated = alice
            .update_conversation(
                &conv.id,
                ConversationUpdate::new().title("Smith v. Jones (appeal)").notifications(false).retention_days(3650),
            )
            .await
            .expect("alice renames and mutes");
        let settings = updated.settings.expect("settings");
        assert_eq!((updated.title.as_str(), settings.notifications, settings.retention_days), ("Smith v. Jones (appeal)", false, 3650));
        let err = bob.update_conversation(&conv.id, ConversationUpdate::new().title("mine")).await.unwrap_err();
        assert_eq!(code(err), Some(ErrorCode::Forbidden));
        let changed = wait_for_message(&bob, "the settings event", |m| {
            matches!(m.event.as_ref().and_then(|e| e.kind.as_ref()), Some(Kind::ConversationChanged(_)))
        })
        .await;
        assert_eq!(changed.sender_id, "alice");

        alice.set_participant_role(&conv.id, "bob", pb::ParticipantRole::Moderator).await.expect("alice makes bob a moderator");
        bob.pin(&conv.id, question.seq, false).await.expect("a moderator pins");

        alice.edit_text(&conv.id, question.seq, "Which court, and which judge?").await.expect("edit");
        alice.delete(&conv.id, question.seq).await.expect("delete");
        assert_eq!(code(alice.audit(&conv.id, question.seq).await.unwrap_err()), Some(ErrorCode::Forbidden));
        let audit = admin.audit(&conv.id, question.seq).await.expect("an admin reads the audit trail");
        let texts: Vec<(pb::AuditAction, &str)> =
            audit.versions.iter().map(|v| (v.action(), v.content.as_ref().map_or("", |c| c.text.as_str()))).collect();
        assert_eq!(
            texts,
            [
                (pb::AuditAction::Original, "Which court?"),
                (pb::AuditAction::Edited, "Which court, and which judge?"),
                (pb::AuditAction::Deleted, "Which court, and which judge?")
            ]
        );
        // The reply now quotes a deleted message.
        let page = bob.thread(&conv.id, question.seq, 0, 10).await.expect("thread");
        assert_eq!(page.messages[0].reply_preview.as_ref().map(|p| p.deleted), Some(true));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_kill9_after_the_ack_and_a_restart() {
    bounded("events_durable", async {
        let mut d = daemon().await;
        let (alice, bob, _carol, conv) = team(&d).await;
        let m = alice.send_text(&conv.id, "retainer signed").await.expect("send");
        bob.react(&conv.id, m.seq, "✅").await.expect("react");
        alice.edit_text(&conv.id, m.seq, "retainer signed and filed").await.expect("edit");
        let gone = alice.send_text(&conv.id, "typo").await.expect("send");
        alice.delete(&conv.id, gone.seq).await.expect("delete");
        let answer = bob.reply(&conv.id, m.seq, "thanks, @alice").await.expect("reply");
        alice.pin(&conv.id, m.seq, false).await.expect("pin");
        alice.set_participant_role(&conv.id, "bob", pb::ParticipantRole::Moderator).await.expect("role");
        let last = alice
            .update_conversation(&conv.id, ConversationUpdate::new().title("Retainer").notifications(false))
            .await
            .expect("settings")
            .last_seq;
        // Every one of those was acknowledged: kill -9 must lose none.
        drop((alice, bob));
        d.kill9_and_restart().await;
        let carol = d.client("carol", "advocate").await;
        let server = states(&carol, &conv.id).await;
        assert_eq!(text_of(&server[&m.seq]), "retainer signed and filed");
        assert_eq!(server[&m.seq].reactions.len(), 1);
        assert!(server[&gone.seq].deleted_at_ms > 0);
        assert!(server[&m.seq].pinned);
        let reply = &server[&answer.seq];
        assert_eq!((reply.reply_to_seq, reply.mentions.as_slice()), (m.seq, ["alice".to_string()].as_slice()));
        assert_eq!(reply.reply_preview.as_ref().map(|p| p.text.as_str()), Some("retainer signed and filed"));
        let view = carol.get_conversation(&conv.id).await.unwrap();
        assert_eq!((view.last_seq, view.title.as_str(), view.pinned_seqs.as_slice()), (last, "Retainer", [m.seq].as_slice()));
        assert_eq!(view.settings.map(|s| s.notifications), Some(false));
        let bob_role = view.participants.iter().find(|p| p.user_id == "bob").map(|p| p.role());
        assert_eq!(bob_role, Some(pb::ParticipantRole::Moderator));
        d.restart().await;
        let carol = d.client("carol", "advocate").await;
        let again = states(&carol, &conv.id).await;
        assert_eq!(again.values().map(digest).collect::<Vec<_>>(), server.values().map(digest).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_catches_up_on_every_kind_of_event_and_ends_with_the_same_state() {
    bounded("events_catch_up", async {
        let d = daemon().await;
        let (alice, bob, carol, conv) = team(&d).await;
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        let config = d
            .client_config(d.token("dave", "advocate"))
            .with_idle_timeout(Duration::from_millis(1_500), Duration::from_millis(300))
            .with_connect_timeout(Duration::from_secs(2))
            .with_reconnect_policy(
                ReconnectPolicy::default().with_initial_delay(Duration::from_millis(50)).with_max_delay(Duration::from_millis(500)),
            );
        // QUIC only: the relay's cuts are what this test is about, not the TCP fallback.
        let mut config = config.with_transport(TransportPolicy::QuicOnly);
        config.server_addr = relay.addr();
        alice.add_participants(&conv.id, &["dave"], pb::ParticipantRole::Member).await.expect("add dave");
        let dave = Client::connect(config).await.expect("dave connects through the relay");

        // Rounds of a mix of messages, edits, deletes and reactions, the relay cut for
        // each round: dave is offline while they happen and catches up afterwards.
        let mut seqs: Vec<u64> = Vec::new();
        for round in 0..4u64 {
            relay.cut();
            loop {
                match next_event(&dave, Instant::now() + EVENT_TIMEOUT, "dave's connection to drop").await {
                    Event::State(ConnectionState::Disconnected { .. }) => break,
                    Event::Closed { reason } => panic!("dave closed: {reason}"),
                    _ => {}
                }
            }
            for i in 0..5u64 {
                let sender = if i % 2 == 0 { &alice } else { &bob };
                seqs.push(sender.send_text(&conv.id, &format!("round {round} message {i}")).await.expect("send").seq);
            }
            let n = seqs.len();
            carol.react(&conv.id, seqs[n - 1], "👍").await.expect("react");
            bob.react(&conv.id, seqs[n - 1], "👍").await.expect("react");
            alice.edit_text(&conv.id, seqs[n - 5], &format!("round {round} edited")).await.expect("edit");
            alice.edit_text(&conv.id, seqs[n - 5], &format!("round {round} edited twice")).await.expect("edit");
            bob.delete(&conv.id, seqs[n - 4]).await.expect("delete");
            carol.unreact(&conv.id, seqs[n - 1], "👍").await.expect("unreact");
            if round > 0 {
                // Events about messages of an earlier round, which dave already holds.
                carol.react(&conv.id, seqs[n - 7], "❤️").await.expect("react");
                alice.delete(&conv.id, seqs[n - 10]).await.expect("delete");
            }
            let newest = carol.get_conversation(&conv.id).await.expect("get").last_seq;
            relay.heal();
            loop {
                match next_event(&dave, Instant::now() + EVENT_TIMEOUT, "dave to resume").await {
                    Event::State(ConnectionState::Resumed { .. }) => break,
                    Event::Closed { reason } => panic!("dave closed: {reason}"),
                    _ => {}
                }
            }
            assert_eq!(dave.cursors().into_iter().find(|(c, _)| c == &conv.id).map(|(_, s)| s), Some(newest), "round {round}");
        }

        // Dave, offline for every event, ends with exactly the state of carol, who was
        // online for all of them, and of the server.
        let server = states(&carol, &conv.id).await;
        assert_eq!(server.len(), seqs.len());
        for (seq, m) in &server {
            let online = carol.message(&conv.id, *seq).unwrap_or_else(|| panic!("carol holds {seq}"));
            let offline = dave.message(&conv.id, *seq).unwrap_or_else(|| panic!("dave holds {seq}"));
            assert_eq!(digest(&online), digest(m), "carol at {seq}");
            assert_eq!(digest(&offline), digest(m), "dave at {seq}");
        }
        let deleted = server.values().filter(|m| m.deleted_at_ms != 0).count();
        assert_eq!(deleted, 4 + 3, "every round deleted one of its own, later rounds one earlier message too");
    })
    .await;
}
