use std::time::Duration;

use tokio::sync::oneshot;

use super::*;

const ME: &str = "me";
const C: &str = "c1";
const D: &str = "d2";

fn state() -> ClientState {
    ClientState::new(ME, 100, 10, 16, 100)
}

fn msg(conv: &str, seq: u64, sender: &str) -> pb::Message {
    pb::Message {
        conversation_id: conv.into(),
        seq,
        sender_id: sender.into(),
        client_message_id: format!("cm-{conv}-{seq}"),
        ..Default::default()
    }
}

fn conversation(id: &str, last_seq: u64, participants: &[&str]) -> pb::Conversation {
    pb::Conversation {
        id: id.into(),
        last_seq,
        participants: participants.iter().map(|u| pb::Participant { user_id: (*u).into(), ..Default::default() }).collect(),
        ..Default::default()
    }
}

fn send(conv: &str, client_message_id: &str) -> pb::SendMessage {
    pb::SendMessage { conversation_id: conv.into(), client_message_id: client_message_id.into(), content: None, reply_to_seq: 0 }
}

fn accepted(conv: &str, seq: u64, duplicate: bool) -> Reply {
    Ok(pb::ack::Result::MessageAccepted(pb::MessageAccepted {
        conversation_id: conv.into(),
        message_id: format!("{seq:032x}"),
        seq,
        timestamp_ms: 1,
        duplicate,
    }))
}

/// Everything queued for the app, in order.
fn drain(s: &mut ClientState) -> Vec<Event> {
    std::iter::from_fn(|| s.pop_event()).collect()
}

/// The queued events in short form: `C#3` for a message, `R:bob:read:4`, `Resumed(2)`, ...
fn summary(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Message(m) => format!("{}#{}", m.conversation_id, m.seq),
            Event::Receipt(r) => {
                format!("R:{}:{}:{}", r.user_id, if r.kind() == pb::ReceiptKind::Read { "read" } else { "delivered" }, r.seq)
            }
            Event::State(ConnectionState::Resumed { missed }) => format!("Resumed({missed})"),
            Event::State(ConnectionState::Disconnected { .. }) => "Disconnected".into(),
            Event::State(ConnectionState::Reconnecting { attempt, .. }) => format!("Reconnecting({attempt})"),
            Event::Typing(t) => format!("typing:{}", t.user_id),
            Event::ConversationUpdated(c) => format!("updated:{}", c.id),
            Event::Closed { .. } => "Closed".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn live(s: &mut ClientState, event: Event) -> Effects {
    s.on_event(event)
}

fn catch_up_page(messages: Vec<pb::Message>, has_more: bool, receipts: Vec<pb::ReceiptList>) -> pb::CatchUpPage {
    let next = if has_more {
        messages
            .last()
            .map(|m| pb::ConversationCursor { conversation_id: m.conversation_id.clone(), after_seq: m.seq })
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    pb::CatchUpPage { messages, next, has_more, receipts, unknown: Vec::new() }
}

/// A fresh state that has listed its conversations and is live.
fn live_state(convs: &[(&str, u64)]) -> ClientState {
    let mut s = state();
    s.begin_catch_up();
    let list: Vec<pb::Conversation> = convs.iter().map(|(id, last)| conversation(id, *last, &[ME, "bob"])).collect();
    s.start_from_list(&list);
    let effects = s.finish_catch_up(false);
    assert_eq!(effects, Effects::default());
    assert_eq!(s.state(), &ConnectionState::Connected);
    s
}

#[test]
fn events_before_the_first_list_wait_and_then_go_through_the_filter() {
    let mut s = state();
    s.begin_catch_up();
    // Seq 5 was stored before the list was read: it is history, not news. Seq 6 is news.
    let _ = live(&mut s, Event::Message(msg(C, 5, "bob")));
    let _ = live(&mut s, Event::Message(msg(C, 6, "bob")));
    assert!(drain(&mut s).is_empty(), "nothing before the cursors are known");
    s.start_from_list(&[conversation(C, 5, &[ME, "bob"])]);
    let effects = s.finish_catch_up(false);
    assert_eq!(summary(&drain(&mut s)), ["c1#6"], "no Resumed on a first connection");
    assert_eq!(effects.delivery_reports, [(C.to_string(), 6)]);
}

#[test]
fn messages_from_others_are_reported_delivered_coalesced() {
    let mut s = live_state(&[(C, 0)]);
    let e = live(&mut s, Event::Message(msg(C, 1, "bob")));
    assert_eq!(e.delivery_reports, [(C.to_string(), 1)]);
    let e = live(&mut s, Event::Message(msg(C, 2, "bob")));
    assert!(e.delivery_reports.is_empty(), "one report in flight at a time");
    assert_eq!(s.delivery_reported(C, true), Some(2), "then the newest");
    assert_eq!(s.delivery_reported(C, true), None);
    // The user's own message from another device goes to the app but is not reported.
    let e = live(&mut s, Event::Message(msg(C, 3, ME)));
    assert!(e.delivery_reports.is_empty());
    assert_eq!(summary(&drain(&mut s)), ["c1#1", "c1#2", "c1#3"]);
}

#[test]
fn a_reconnect_delivers_missed_messages_then_receipts_then_resumed_then_live_events() {
    let mut s = live_state(&[(C, 2), (D, 0)]);
    s.connection_lost("network down");
    s.reconnecting(1, Duration::from_millis(150));
    s.begin_catch_up();
    assert_eq!(
        s.catch_up_cursors(),
        [
            pb::ConversationCursor { conversation_id: C.into(), after_seq: 2 },
            pb::ConversationCursor { conversation_id: D.into(), after_seq: 0 },
        ]
    );

    // Live traffic on the new connection while the catch-up runs: it must wait.
    let _ = live(&mut s, Event::Message(msg(C, 5, "bob")));
    let typing = pb::TypingEvent { conversation_id: C.into(), user_id: "bob".into(), active: true };
    let _ = live(&mut s, Event::Typing(typing));
    let receipt =
        pb::ReceiptEvent { conversation_id: C.into(), user_id: "bob".into(), kind: pb::ReceiptKind::Read as i32, seq: 2, timestamp_ms: 9 };
    let _ = live(&mut s, Event::Receipt(receipt));

    let (more, _) = s.catch_up_page(catch_up_page(vec![msg(C, 3, "bob")], true, vec![]));
    assert!(more);
    assert_eq!(s.catch_up_cursors()[0], pb::ConversationCursor { conversation_id: C.into(), after_seq: 3 });
    let receipts = pb::ReceiptList {
        conversation_id: C.into(),
        states: vec![pb::ReceiptState { user_id: "bob".into(), delivered_seq: 4, delivered_at_ms: 40, read_seq: 2, read_at_ms: 20 }],
    };
    let (more, effects) = s.catch_up_page(catch_up_page(vec![msg(C, 4, "bob"), msg(D, 1, "carol")], false, vec![receipts]));
    assert!(!more);
    assert!(!effects.delivery_reports.is_empty());
    assert!(!s.needs_another_round());
    let _ = s.finish_catch_up(true);
    assert_eq!(
        summary(&drain(&mut s)),
        [
            "Disconnected",
            "Reconnecting(1)",
            "c1#3",
            "c1#4",
            "d2#1",
            "R:bob:delivered:4",
            "R:bob:read:2",
            "Resumed(3)",
            // The live message continues the sequence; the live receipt repeats what the
            // catch-up told, so it is not told again.
            "c1#5",
            "typing:bob",
        ]
    );
    assert_eq!(s.state(), &ConnectionState::Resumed { missed: 3 });
    assert!(!s.is_catching_up());
    assert_eq!(s.cursors(), [(C.to_string(), 5), (D.to_string(), 1)]);
}

#[test]
fn live_events_that_overflow_during_a_catch_up_cause_another_round() {
    let mut s = ClientState::new(ME, 2, 10, 16, 100);
    s.begin_catch_up();
    s.start_from_list(&[conversation(C, 0, &[ME, "bob"])]);
    let _ = s.finish_catch_up(false);
    s.connection_lost("gone");
    s.begin_catch_up();
    for seq in 1..=3 {
        let _ = live(&mut s, Event::Message(msg(C, seq, "bob")));
    }
    let (_, _) = s.catch_up_page(catch_up_page(vec![], false, vec![]));
    assert!(s.needs_another_round(), "seq 3 was dropped; catch up once more");
    let (_, _) = s.catch_up_page(catch_up_page(vec![msg(C, 1, "bob"), msg(C, 2, "bob"), msg(C, 3, "bob")], false, vec![]));
    assert!(!s.needs_another_round());
    let _ = s.finish_catch_up(true);
    let got: Vec<String> = summary(&drain(&mut s)).into_iter().filter(|e| e.starts_with("c1#")).collect();
    assert_eq!(got, ["c1#1", "c1#2", "c1#3"], "the held 1 and 2 are duplicates by then");
}

#[test]
fn own_sends_are_never_delivered_back() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, mut rx) = oneshot::channel();
    let entry = s.queue_send(send(C, "cm-c1-1"), tx).expect("queued");
    // The connection drops before the ack; after reconnecting, the catch-up shows our
    // message (still waiting in the outbox) before the resend's duplicate ack arrives.
    s.connection_lost("gone");
    s.begin_catch_up();
    let (_, _) = s.catch_up_page(catch_up_page(vec![msg(C, 1, ME), msg(C, 2, "bob")], false, vec![]));
    let _ = s.finish_catch_up(true);
    let _ = s.send_answered(entry, accepted(C, 1, true));
    let sent = rx.try_recv().expect("answered").expect("stored");
    assert_eq!((sent.seq, sent.duplicate), (1, true));
    let messages: Vec<String> = summary(&drain(&mut s)).into_iter().filter(|e| e.starts_with("c1#")).collect();
    assert_eq!(messages, ["c1#2"]);
    assert_eq!(s.outbox().due(2), Vec::<u64>::new(), "settled");
}

#[test]
fn echoed_own_messages_are_delivered_in_their_place() {
    let mut s = live_state(&[(C, 0)]);
    s.echo_own_messages(true);
    let (tx, mut rx) = oneshot::channel();
    let entry = s.queue_send(send(C, "cm-c1-2"), tx).expect("queued");
    // Bob's 1, then the echo of ours as 2, then Bob's 3; the ack comes last.
    for m in [msg(C, 1, "bob"), msg(C, 2, ME), msg(C, 3, "bob")] {
        assert!(live(&mut s, Event::Message(m)).fetches.is_empty());
    }
    let _ = s.send_answered(entry, accepted(C, 2, false));
    assert_eq!(rx.try_recv().expect("answered").expect("stored").seq, 2);
    assert_eq!(summary(&drain(&mut s)), ["c1#1", "c1#2", "c1#3"], "every seq, ours included, once and in order");
    // A gap is a gap: fetched at once, not deferred for our pending sends.
    let (tx, _rx) = oneshot::channel();
    s.queue_send(send(C, "cm-c1-9"), tx).expect("queued");
    assert_eq!(live(&mut s, Event::Message(msg(C, 5, "bob"))).fetches, [Fetch { conversation_id: C.into(), after_seq: 3 }]);
}

#[test]
fn an_ack_that_fills_a_gap_releases_what_waited_behind_it() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, _rx) = oneshot::channel();
    let entry = s.queue_send(send(C, "mine"), tx).expect("queued");
    let effects = live(&mut s, Event::Message(msg(C, 2, "bob")));
    assert!(effects.fetches.is_empty(), "a gap at 1, but our own send may fill it: no fetch yet");
    let effects = s.send_answered(entry, accepted(C, 1, false));
    assert_eq!(summary(&drain(&mut s)), ["c1#2"]);
    assert_eq!(effects.delivery_reports, [(C.to_string(), 2)]);
    assert!(effects.fetches.is_empty(), "the ack filled it");
}

#[test]
fn a_gap_our_send_does_not_fill_is_fetched_once_the_send_is_answered() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, _rx) = oneshot::channel();
    let entry = s.queue_send(send(C, "mine"), tx).expect("queued");
    assert!(live(&mut s, Event::Message(msg(C, 3, "bob"))).fetches.is_empty());
    // Our send was stored as 2: seq 1 is still missing.
    let effects = s.send_answered(entry, accepted(C, 2, false));
    assert_eq!(effects.fetches, [Fetch { conversation_id: C.into(), after_seq: 0 }]);
    // A send elsewhere defers nothing here.
    let (tx, _rx) = oneshot::channel();
    s.queue_send(send(D, "elsewhere"), tx).expect("queued");
    s.start_from_cursors(&[("e3".into(), 0)]);
    assert_eq!(live(&mut s, Event::Message(msg("e3", 2, "bob"))).fetches.len(), 1);
}

#[test]
fn a_busy_sender_does_not_starve_a_gap_below_its_answers() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, _rx) = oneshot::channel();
    let first = s.queue_send(send(C, "m1"), tx).expect("queued");
    let (tx, _rx) = oneshot::channel();
    s.queue_send(send(C, "m2"), tx).expect("queued");
    assert!(live(&mut s, Event::Message(msg(C, 3, "bob"))).fetches.is_empty());
    // m1 was stored as 2 while m2 still waits: seq 1 lies below, no later send can fill it.
    let effects = s.send_answered(first, accepted(C, 2, false));
    assert_eq!(effects.fetches, [Fetch { conversation_id: C.into(), after_seq: 0 }]);
}

#[test]
fn an_answer_for_a_send_whose_caller_gave_up_still_marks_the_seq_as_ours() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, _rx) = oneshot::channel();
    let entry = s.queue_send(send(C, "mine"), tx).expect("queued");
    s.outbox_mut().take(entry);
    let _ = s.send_answered(entry, accepted(C, 1, false));
    let _ = live(&mut s, Event::Message(msg(C, 2, "bob")));
    assert_eq!(summary(&drain(&mut s)), ["c1#2"]);
}

#[test]
fn refused_sends_fail_their_caller() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, mut rx) = oneshot::channel();
    let entry = s.queue_send(send(C, "mine"), tx).expect("queued");
    let _ = s.send_answered(
        entry,
        Err(Error::Server { code: pb::ErrorCode::Forbidden, message: "not a participant".into(), retry_after: None }),
    );
    let err = rx.try_recv().expect("answered").unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::Forbidden));
}

#[test]
fn the_outbox_is_bounded() {
    let mut s = ClientState::new(ME, 100, 2, 16, 100);
    let mut keep = Vec::new();
    for i in 0..2 {
        let (tx, rx) = oneshot::channel();
        keep.push(rx);
        s.queue_send(send(C, &format!("m{i}")), tx).expect("room");
    }
    let (tx, _rx) = oneshot::channel();
    assert!(matches!(s.queue_send(send(C, "m3"), tx), Err(Error::OutboxFull(2))));
}

#[test]
fn finishing_fails_queued_sends_and_ends_the_events() {
    let mut s = live_state(&[(C, 0)]);
    let (tx, mut rx) = oneshot::channel();
    s.queue_send(send(C, "mine"), tx).expect("queued");
    s.finish("unauthorized: token expired");
    s.finish("a second reason is ignored");
    assert!(matches!(rx.try_recv(), Ok(Err(Error::Closed(r))) if r == "unauthorized: token expired"));
    assert_eq!(summary(&drain(&mut s)), ["Closed"]);
    assert!(s.is_finished());
    assert_eq!(s.closed_reason(), Some("unauthorized: token expired"));
    let (tx, _rx) = oneshot::channel();
    assert!(matches!(s.queue_send(send(C, "late"), tx), Err(Error::Closed(_))));
    let _ = live(&mut s, Event::Message(msg(C, 1, "bob")));
    assert!(drain(&mut s).is_empty(), "nothing after Closed");
}

#[test]
fn conversations_appear_and_disappear_with_the_users_participation() {
    let mut s = live_state(&[]);
    // Added to a group with history: followed from its first message, which is fetched.
    let effects = live(&mut s, Event::ConversationUpdated(conversation(C, 4, &[ME, "bob"])));
    assert_eq!(effects.fetches, [Fetch { conversation_id: C.into(), after_seq: 0 }]);
    let page =
        pb::HistoryPage { conversation_id: C.into(), messages: (1..=4).map(|i| msg(C, i, "bob")).collect(), has_more: false, last_seq: 4 };
    let effects = s.fetched(&effects.fetches[0], Ok(page));
    assert!(effects.fetches.is_empty());
    assert_eq!(summary(&drain(&mut s)), ["updated:c1", "c1#1", "c1#2", "c1#3", "c1#4"]);
    // Removed: no longer followed, rooms forgotten.
    s.joined(C);
    let _ = live(&mut s, Event::ConversationUpdated(conversation(C, 4, &["bob"])));
    assert!(s.cursors().is_empty());
    assert!(s.rooms().is_empty());
}

#[test]
fn a_conversation_the_user_created_is_followed_from_its_newest_message() {
    let mut s = live_state(&[]);
    s.opened(&conversation(C, 7, &[ME, "bob"]));
    let effects = live(&mut s, Event::Message(msg(C, 8, "bob")));
    assert!(effects.fetches.is_empty());
    assert_eq!(summary(&drain(&mut s)), ["c1#8"]);
}

#[test]
fn fetch_failures_and_refusals() {
    let mut s = live_state(&[(C, 0)]);
    let f = live(&mut s, Event::Message(msg(C, 3, "bob"))).fetches.pop().expect("a fetch");
    let effects = s.fetched(&f, Err(Error::Disconnected("gone".into())));
    assert!(effects.is_empty());
    let again = live(&mut s, Event::Message(msg(C, 4, "bob"))).fetches;
    assert_eq!(again.len(), 1, "the failed fetch may be made again");
    let _ = s.fetched(&again[0], Err(Error::Server { code: pb::ErrorCode::Forbidden, message: "no".into(), retry_after: None }));
    assert!(s.cursors().is_empty(), "refused: no longer followed");
}

#[test]
fn reconnect_states_are_announced_and_delivery_reports_are_made_again() {
    let mut s = live_state(&[(C, 0)]);
    let e = live(&mut s, Event::Message(msg(C, 1, "bob")));
    assert_eq!(e.delivery_reports, [(C.to_string(), 1)]);
    s.connection_lost("idle timeout");
    assert!(matches!(s.state(), ConnectionState::Disconnected { reason } if reason == "idle timeout"));
    s.begin_catch_up();
    let effects = s.finish_catch_up(true);
    assert_eq!(effects.delivery_reports, [(C.to_string(), 1)], "the report lost with the connection");
    assert!(s.state().is_connected());
}

#[test]
fn joined_rooms_are_remembered_and_rejoins_reported() {
    let mut s = live_state(&[(C, 0)]);
    s.joined(C);
    s.joined(D);
    s.left(D);
    assert_eq!(s.rooms(), [C.to_string()]);
    s.rejoined(C, Ok(pb::RoomUsers { conversation_id: C.into(), online_user_ids: vec!["bob".into()] }));
    assert!(matches!(drain(&mut s).as_slice(), [Event::RoomUsers(r)] if r.online_user_ids == ["bob"]));
    s.rejoined(C, Err(Error::Server { code: pb::ErrorCode::Forbidden, message: "left".into(), retry_after: None }));
    assert!(s.rooms().is_empty());
}

#[test]
fn the_event_queue_reports_when_it_is_full() {
    let mut s = ClientState::new(ME, 2, 10, 16, 100);
    s.begin_catch_up();
    s.start_from_list(&[conversation(C, 0, &[ME, "bob"])]);
    let _ = s.finish_catch_up(false);
    assert!(s.has_room());
    let _ = live(&mut s, Event::Message(msg(C, 1, "bob")));
    let _ = live(&mut s, Event::Message(msg(C, 2, "bob")));
    assert!(!s.has_room());
    let _ = s.pop_event();
    assert!(s.has_room());
}

#[test]
fn a_drained_queue_keeps_no_buffer() {
    let mut s = live_state(&[(C, 0)]);
    let _ = live(&mut s, Event::Message(msg(C, 1, "bob")));
    let _ = live(&mut s, Event::Message(msg(C, 2, "bob")));
    assert!(s.ready.capacity() > 0);
    assert_eq!(summary(&drain(&mut s)), ["c1#1", "c1#2"]);
    assert_eq!(s.ready.capacity(), 0, "an idle client holds no event buffer");
    // And it fills again as before.
    let _ = live(&mut s, Event::Message(msg(C, 3, "bob")));
    assert_eq!(summary(&drain(&mut s)), ["c1#3"]);
}
