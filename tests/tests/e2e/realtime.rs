//! Real-time signals through the SDK: typing (and its timeout), presence across devices,
//! who is in a room, and delivery and read receipts.
//!
//! "Did not happen" is checked against a later event that must come after it: the
//! events of one session arrive in the order the server produced them.

use legalchat_sdk::pb::{self, ReceiptKind};
use legalchat_sdk::{Client, Event, NewConversation};
use legalchat_tests::{EVENT_TIMEOUT, bounded, next_event, wait_for_message};
use tokio::time::Instant;

use crate::{daemon, daemon_with};

/// Milliseconds since the Unix epoch, as the daemon stamps times.
fn wall_clock_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("milliseconds fit in i64")
}

/// Events of `client` up to and including the first for which `stop` holds.
async fn events_until(client: &Client, what: &str, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let e = next_event(client, deadline, what).await;
        let done = stop(&e);
        if let Event::Closed { reason } = &e {
            panic!("{}: closed ({reason}) while waiting for {what}", client.user_id());
        }
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn typing_of(events: &[Event], user: &str) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Typing(t) if t.user_id == user => Some(t.active),
            _ => None,
        })
        .collect()
}

fn presence_of(events: &[Event], user: &str) -> Vec<pb::Presence> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Presence(p) if p.user_id == user => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_room_but_not_the_typist() {
    bounded("typing", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Drafting", vec!["bob".into()])).await.expect("create");
        alice.join_room(&conv.id).await.expect("alice joins");
        let room = bob.join_room(&conv.id).await.expect("bob joins");
        assert_eq!(room.conversation_id, conv.id);

        alice.start_typing(&conv.id).await.expect("typing_start");
        alice.stop_typing(&conv.id).await.expect("typing_stop");
        let seen = events_until(&bob, "alice to stop typing", |e| matches!(e, Event::Typing(t) if t.user_id == "alice" && !t.active)).await;
        assert_eq!(typing_of(&seen, "alice"), [true, false]);
        assert!(seen.iter().all(|e| !matches!(e, Event::Typing(t) if t.conversation_id != conv.id)));

        // Bob answers; everything alice was sent before bob's message is before it in her
        // stream, so her own typing would show up here.
        bob.send_text(&conv.id, "Saw you typing.").await.expect("bob sends");
        let seen = events_until(&alice, "bob's message", |e| matches!(e, Event::Message(m) if m.sender_id == "bob")).await;
        assert_eq!(typing_of(&seen, "alice"), Vec::<bool>::new(), "the typist got her own typing back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_stops_by_itself_when_not_refreshed() {
    bounded("typing_timeout", async {
        let d = daemon_with(&["--typing-timeout-ms", "300"]).await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Drafting", vec!["bob".into()])).await.expect("create");
        bob.join_room(&conv.id).await.expect("bob joins");
        alice.start_typing(&conv.id).await.expect("typing_start");
        // No refresh and no stop: the server ends it.
        let seen = events_until(&bob, "the typing state to time out", |e| matches!(e, Event::Typing(t) if !t.active)).await;
        assert_eq!(typing_of(&seen, "alice"), [true, false]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_first_and_the_last_device() {
    bounded("presence", async {
        let d = daemon().await;
        let watcher = d.client("watcher", "advocate").await;
        let conv = watcher.create_conversation(NewConversation::group("Team", vec!["multi".into()])).await.expect("create");

        // First device: online.
        let phone = d.client("multi", "advocate").await;
        let seen = events_until(&watcher, "multi online", |e| matches!(e, Event::Presence(p) if p.user_id == "multi")).await;
        let online = presence_of(&seen, "multi");
        assert_eq!(online.len(), 1);
        assert!(online[0].online);

        // Second device, then the first of two goes: no change to tell. Then the last goes:
        // offline, with a last-seen time. Then back: online. Spurious events in between
        // would show up before the final one.
        let laptop = d.client("multi", "advocate").await;
        phone.close().await;
        laptop.send_text(&conv.id, "still here on the laptop").await.expect("laptop sends");
        let seen = events_until(&watcher, "the laptop's message", |e| matches!(e, Event::Message(_))).await;
        assert!(presence_of(&seen, "multi").is_empty(), "a second device or the first of two changed presence: {seen:?}");
        laptop.close().await;
        let seen = events_until(&watcher, "multi offline", |e| matches!(e, Event::Presence(p) if p.user_id == "multi")).await;
        let offline = presence_of(&seen, "multi");
        assert_eq!(offline.len(), 1);
        assert!(!offline[0].online);
        assert!(offline[0].last_seen_ms >= online[0].last_seen_ms && offline[0].last_seen_ms > 0, "{offline:?}");

        let again = d.client("multi", "advocate").await;
        let seen = events_until(&watcher, "multi online again", |e| matches!(e, Event::Presence(p) if p.user_id == "multi")).await;
        assert_eq!(presence_of(&seen, "multi").iter().map(|p| p.online).collect::<Vec<_>>(), [true]);
        again.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_queries_answer_for_contacts_only() {
    bounded("presence_query", async {
        let d = daemon().await;
        let watcher = d.client("watcher", "advocate").await;
        watcher.create_conversation(NewConversation::group("Team", vec!["online-one".into(), "offline-one".into()])).await.expect("create");
        let online = d.client("online-one", "advocate").await;
        let gone = d.client("offline-one", "advocate").await;
        gone.close().await;
        // Someone the watcher shares nothing with.
        let _stranger = d.client("stranger", "advocate").await;

        // The offline one's last-seen time is recorded once their session has ended.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Event::Presence(p) = next_event(&watcher, deadline, "offline-one to go offline").await
                && p.user_id == "offline-one"
                && !p.online
            {
                break;
            }
        }
        let mut answer = watcher.presence(&["online-one", "offline-one", "stranger", "nobody-at-all"]).await.expect("presence");
        answer.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let users: Vec<(&str, bool)> = answer.iter().map(|p| (p.user_id.as_str(), p.online)).collect();
        assert_eq!(users, [("offline-one", false), ("online-one", true)], "strangers are left out");
        assert!(answer.iter().all(|p| p.last_seen_ms > 0), "{answer:?}");
        online.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_users_on_join_and_when_a_participant_comes_online() {
    bounded("room_users", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Hearing", vec!["bob".into(), "carol".into()])).await.expect("create");
        let room = alice.join_room(&conv.id).await.expect("join");
        assert_eq!(room.online_user_ids, ["alice"], "only alice is connected");

        let _bob = d.client("bob", "advocate").await;
        let seen =
            events_until(&alice, "bob in the room", |e| matches!(e, Event::RoomUsers(r) if r.online_user_ids.iter().any(|u| u == "bob")))
                .await;
        match seen.last() {
            Some(Event::RoomUsers(r)) => {
                assert_eq!(r.conversation_id, conv.id);
                assert_eq!(r.online_user_ids, ["alice", "bob"]);
            }
            other => panic!("{other:?}"),
        }
        alice.leave_room(&conv.id).await.expect("leave");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_and_read_receipts_reach_the_sender() {
    bounded("receipts", async {
        let started_ms = wall_clock_ms();
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Filing", vec!["bob".into()])).await.expect("create");
        let mut last = 0;
        for n in 0..3 {
            last = alice.send_text(&conv.id, &format!("exhibit {n}")).await.expect("send").seq;
        }

        // Bob's SDK acknowledges receipt by itself.
        wait_for_message(&bob, "the last exhibit", |m| m.seq == last).await;
        let seen = events_until(
            &alice,
            "delivery to bob",
            |e| matches!(e, Event::Receipt(r) if r.user_id == "bob" && r.kind() == ReceiptKind::Delivered && r.seq == last),
        )
        .await;
        let delivered: Vec<u64> = seen
            .iter()
            .filter_map(|e| match e {
                Event::Receipt(r) if r.kind() == ReceiptKind::Delivered => Some(r.seq),
                _ => None,
            })
            .collect();
        assert!(delivered.windows(2).all(|w| w[0] < w[1]), "receipts only move forward: {delivered:?}");
        match seen.last() {
            Some(Event::Receipt(r)) => {
                assert_eq!(r.conversation_id, conv.id);
                assert!(r.timestamp_ms > 0);
            }
            other => panic!("{other:?}"),
        }
        let unread = |list: Vec<pb::Conversation>| list.iter().find(|c| c.id == conv.id).map(|c| c.unread_count);
        assert_eq!(unread(bob.list_conversations(10).await.expect("list")), Some(3), "delivered is not read");

        // Bob reads the first two. His delivery position moved before this (alice saw it
        // move), his read position moves after it.
        let before_read_ms = wall_clock_ms();
        bob.mark_read(&conv.id, 2).await.expect("mark read");
        let seen = events_until(&alice, "bob reading", |e| matches!(e, Event::Receipt(r) if r.kind() == ReceiptKind::Read)).await;
        match seen.last() {
            Some(Event::Receipt(r)) => assert_eq!((r.user_id.as_str(), r.seq), ("bob", 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(unread(bob.list_conversations(10).await.expect("list")), Some(1), "unread follows the read watermark");

        // receipts() agrees with the events.
        let list = alice.receipts(&conv.id).await.expect("receipts");
        let bobs = list.states.iter().find(|s| s.user_id == "bob").expect("bob's positions");
        assert_eq!((bobs.delivered_seq, bobs.read_seq), (last, 2));
        // The server stamps each position when it moves, on the same clock as this test.
        let after_ms = wall_clock_ms();
        let (delivered_at, read_at) = (bobs.delivered_at_ms, bobs.read_at_ms);
        assert!(
            started_ms <= delivered_at && delivered_at <= before_read_ms,
            "delivered at {delivered_at}, test window {started_ms}..{before_read_ms}"
        );
        assert!(before_read_ms <= read_at && read_at <= after_ms, "read at {read_at}, test window {before_read_ms}..{after_ms}");

        // Reading everything clears the count; reading backwards changes nothing.
        bob.mark_read(&conv.id, last).await.expect("read all");
        bob.mark_read(&conv.id, 1).await.expect("read backwards");
        assert_eq!(unread(bob.list_conversations(10).await.expect("list")), Some(0));
        assert_eq!(
            bob.receipts(&conv.id).await.expect("receipts").states.iter().find(|s| s.user_id == "bob").map(|s| s.read_seq),
            Some(last)
        );
    })
    .await;
}
