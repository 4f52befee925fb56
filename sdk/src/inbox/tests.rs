use proptest::prelude::*;

use super::*;

const C: &str = "c1";

fn msg(conv: &str, seq: u64) -> pb::Message {
    pb::Message { conversation_id: conv.into(), seq, sender_id: "bob".into(), ..Default::default() }
}

fn seqs(out: &[pb::Message]) -> Vec<u64> {
    out.iter().map(|m| m.seq).collect()
}

fn page(conv: &str, range: std::ops::RangeInclusive<u64>, has_more: bool, last_seq: u64) -> pb::HistoryPage {
    pb::HistoryPage { conversation_id: conv.into(), messages: range.map(|s| msg(conv, s)).collect(), has_more, last_seq }
}

fn fetch(after_seq: u64) -> Fetch {
    Fetch { conversation_id: C.into(), after_seq }
}

#[test]
fn in_order_messages_go_straight_through() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 4);
    let mut out = Vec::new();
    for s in 5..=8 {
        assert_eq!(inbox.receive(msg(C, s), false, &mut out), None);
    }
    assert_eq!(seqs(&out), [5, 6, 7, 8]);
    assert_eq!(inbox.cursor(C), Some(8));
}

#[test]
fn duplicates_and_old_messages_are_dropped() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 10);
    let mut out = Vec::new();
    inbox.receive(msg(C, 3), false, &mut out);
    inbox.receive(msg(C, 10), false, &mut out);
    inbox.receive(msg(C, 11), false, &mut out);
    inbox.receive(msg(C, 11), false, &mut out);
    assert_eq!(seqs(&out), [11]);
}

#[test]
fn a_gap_holds_later_messages_and_asks_for_exactly_what_is_missing() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 2);
    let mut out = Vec::new();
    assert_eq!(inbox.receive(msg(C, 5), false, &mut out), Some(fetch(2)));
    assert_eq!(inbox.receive(msg(C, 6), false, &mut out), None, "one fetch at a time");
    assert!(out.is_empty(), "nothing goes out past a gap");

    // The fetch answers 3..=6; 5 and 6 were held and are not delivered twice.
    let next = inbox.fetched(&fetch(2), page(C, 3..=6, false, 6), |_| false, &mut out);
    assert_eq!(next, None);
    assert_eq!(seqs(&out), [3, 4, 5, 6]);
    assert_eq!(inbox.cursor(C), Some(6));
}

#[test]
fn a_gap_filled_by_live_messages_needs_no_more_fetching() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    assert_eq!(inbox.receive(msg(C, 2), false, &mut out), Some(fetch(0)));
    inbox.receive(msg(C, 1), false, &mut out);
    assert_eq!(seqs(&out), [1, 2]);
    // The late answer repeats what was delivered: nothing more goes out, nothing is asked.
    assert_eq!(inbox.fetched(&fetch(0), page(C, 1..=2, false, 2), |_| false, &mut out), None);
    assert_eq!(seqs(&out), [1, 2]);
}

#[test]
fn long_gaps_are_fetched_page_by_page() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    let first = inbox.receive(msg(C, 250), false, &mut out).expect("a fetch");
    let second = inbox.fetched(&first, page(C, 1..=100, true, 250), |_| false, &mut out).expect("more");
    assert_eq!(second, fetch(100));
    let third = inbox.fetched(&second, page(C, 101..=200, true, 250), |_| false, &mut out).expect("more");
    assert_eq!(inbox.fetched(&third, page(C, 201..=249, false, 250), |_| false, &mut out), None);
    assert_eq!(seqs(&out), (1..=250).collect::<Vec<_>>());
}

#[test]
fn overflowing_the_held_buffer_drops_it_and_relies_on_the_fetch() {
    let mut inbox = Inbox::new(4);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    let f = inbox.receive(msg(C, 2), false, &mut out).expect("a fetch");
    for s in 3..=10 {
        inbox.receive(msg(C, s), false, &mut out);
    }
    assert!(out.is_empty());
    // The fetch brings everything, in order, exactly once.
    let next = inbox.fetched(&f, page(C, 1..=10, false, 10), |_| false, &mut out);
    assert_eq!(next, None);
    assert_eq!(seqs(&out), (1..=10).collect::<Vec<_>>());
}

#[test]
fn own_sends_are_skipped_whichever_arrives_first() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    // The ack for our seq 1 comes first: the cursor moves over it.
    inbox.own_sent(C, 1, &mut out);
    assert_eq!(inbox.cursor(C), Some(1));
    // Someone else's 3 arrives before the ack for our 2.
    assert_eq!(inbox.receive(msg(C, 3), false, &mut out), Some(fetch(1)));
    inbox.own_sent(C, 2, &mut out);
    assert_eq!(seqs(&out), [3], "3 goes out once 2 is known to be ours");
    // The fetch's copy of our own 2 is not delivered.
    let mut page_with_own = page(C, 2..=3, false, 3);
    page_with_own.messages[0].sender_id = "me".into();
    assert_eq!(inbox.fetched(&fetch(1), page_with_own, |m| m.sender_id == "me", &mut out), None);
    assert_eq!(seqs(&out), [3]);
}

#[test]
fn an_own_message_seen_before_its_ack_is_skipped_and_the_ack_is_harmless() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    // Catch-up after a reconnect brings 1 (someone else), 2 (ours, ack lost), 3.
    inbox.receive(msg(C, 1), false, &mut out);
    inbox.receive(msg(C, 2), true, &mut out);
    inbox.receive(msg(C, 3), false, &mut out);
    // The resend's duplicate ack reports 2 again.
    inbox.own_sent(C, 2, &mut out);
    assert_eq!(seqs(&out), [1, 3]);
    assert_eq!(inbox.cursor(C), Some(3));
}

#[test]
fn an_own_message_ahead_of_a_gap_is_remembered() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    inbox.own_sent(C, 3, &mut out);
    // Catch-up brings 1..=4; 3 is ours and is skipped, though it no longer waits in the outbox.
    for s in 1..=4 {
        inbox.receive(msg(C, s), false, &mut out);
    }
    assert_eq!(seqs(&out), [1, 2, 4]);
}

#[test]
fn own_sends_in_a_conversation_not_followed_start_it_there() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    let mut out = Vec::new();
    inbox.own_sent(C, 40, &mut out);
    assert_eq!(inbox.cursor(C), Some(40));
    assert_eq!(inbox.receive(msg(C, 41), false, &mut out), None);
    assert_eq!(seqs(&out), [41]);
}

#[test]
fn unknown_conversations_start_from_their_first_message() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    let mut out = Vec::new();
    assert_eq!(inbox.receive(msg("new", 3), false, &mut out), Some(Fetch { conversation_id: "new".into(), after_seq: 0 }));
    assert!(out.is_empty());
    assert_eq!(inbox.receive(msg("other", 1), false, &mut out), None);
    assert_eq!(seqs(&out), [1]);
}

#[test]
fn a_conversation_that_appears_with_history_is_fetched_from_the_start() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    assert_eq!(inbox.appeared(C, 7), Some(fetch(0)));
    assert_eq!(inbox.appeared(C, 7), None, "already fetching");
    assert_eq!(inbox.appeared("empty", 0), None);
    assert_eq!(inbox.cursor("empty"), Some(0));
    // A known conversation that is up to date needs nothing.
    inbox.start_at("known", 5);
    assert_eq!(inbox.appeared("known", 5), None);
    assert_eq!(inbox.cursor("known"), Some(5));
}

#[test]
fn known_cursors_are_not_moved_by_a_later_start() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    assert!(inbox.start_at(C, 3));
    assert!(!inbox.start_at(C, 9));
    assert_eq!(inbox.cursor(C), Some(3));
    inbox.start_at("a", 1);
    assert_eq!(inbox.cursors(), [("a".to_string(), 1), (C.to_string(), 3)]);
    inbox.forget(C);
    assert!(!inbox.follows(C));
}

#[test]
fn a_gap_the_server_cannot_fill_is_skipped_rather_than_fetched_forever() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    let f = inbox.receive(msg(C, 5), false, &mut out).expect("a fetch");
    // The server answers with nothing new.
    let empty = pb::HistoryPage { conversation_id: C.into(), messages: vec![], has_more: false, last_seq: 5 };
    assert_eq!(inbox.fetched(&f, empty, |_| false, &mut out), None);
    assert_eq!(seqs(&out), [5]);
    assert_eq!(inbox.cursor(C), Some(5));
}

#[test]
fn failed_fetches_can_be_made_again() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    inbox.start_at(C, 0);
    let mut out = Vec::new();
    assert!(inbox.receive(msg(C, 3), false, &mut out).is_some());
    assert_eq!(inbox.receive(msg(C, 4), false, &mut out), None);
    inbox.fetch_failed(C);
    assert_eq!(inbox.receive(msg(C, 6), false, &mut out), Some(fetch(0)));
    inbox.reset_fetches();
    assert_eq!(inbox.appeared(C, 6), Some(fetch(0)));
}

#[test]
fn answers_for_forgotten_conversations_are_ignored() {
    let mut inbox = Inbox::new(DEFAULT_MAX_HELD);
    let mut out = Vec::new();
    let f = inbox.receive(msg(C, 2), false, &mut out).expect("a fetch");
    inbox.forget(C);
    assert_eq!(inbox.fetched(&f, page(C, 1..=2, false, 2), |_| false, &mut out), None);
    assert!(out.is_empty());
}

/// What the wire brings in [`any_interleaving_delivers_each_seq_once_in_order`]: the
/// conversation's messages are `1..=newest`, the app has seen `1..=start`, and `wire` is a
/// shuffle of them in which each seq comes 0 to 3 times (the newest at least once, as the
/// live event that reveals any gap below it).
#[derive(Debug, Clone)]
struct Wire {
    start: u64,
    newest: u64,
    wire: Vec<u64>,
    /// Whether the server answers the fetch in flight after the n-th arrival (cycled).
    answer_now: Vec<bool>,
    page_size: u64,
    max_held: usize,
}

fn wires() -> impl Strategy<Value = Wire> {
    (0..10u64, 1..60u64, 1..12u64, 1..16usize)
        .prop_flat_map(|(start, count, page_size, max_held)| {
            let newest = start + count;
            let copies = proptest::collection::vec(0..=3usize, usize::try_from(newest).unwrap());
            (Just((start, newest, page_size, max_held)), copies, proptest::collection::vec(any::<bool>(), 1..8))
        })
        .prop_flat_map(|((start, newest, page_size, max_held), mut copies, answer_now)| {
            // The newest message always arrives: it is what tells the client that more exist.
            if let Some(last) = copies.last_mut() {
                *last = (*last).max(1);
            }
            let wire: Vec<u64> = (1..=newest).zip(copies).flat_map(|(seq, n)| std::iter::repeat_n(seq, n)).collect();
            (Just(wire).prop_shuffle(), Just((start, newest, page_size, max_held, answer_now)))
        })
        .prop_map(|(wire, (start, newest, page_size, max_held, answer_now))| Wire { start, newest, wire, answer_now, page_size, max_held })
}

/// The server's answer to `f`: up to `page_size` messages after it, and whether more follow.
fn serve(f: &Fetch, newest: u64, page_size: u64) -> pb::HistoryPage {
    let end = (f.after_seq + page_size).min(newest);
    page(C, f.after_seq + 1..=end, end < newest, newest)
}

/// Records a fetch the inbox asked for when its cursor was `cursor`.
fn take(f: Option<Fetch>, cursor: u64, in_flight: &mut Option<Fetch>) -> Result<(), TestCaseError> {
    if let Some(f) = f {
        prop_assert!(in_flight.is_none(), "a second fetch while {:?} is in flight", in_flight);
        prop_assert_eq!(f.after_seq, cursor, "a fetch asks for what follows the cursor");
        *in_flight = Some(f);
    }
    Ok(())
}

proptest! {
    /// Whatever the wire does — duplicates, reorderings, losses below the newest message,
    /// fetch answers at any moment, a tiny hold buffer — the app gets every seq after its
    /// cursor exactly once, ascending. Every fetch asks for exactly what is missing (the
    /// cursor at that moment), there is at most one in flight, and while anything seen is
    /// beyond the cursor one is in flight.
    #[test]
    fn any_interleaving_delivers_each_seq_once_in_order(w in wires()) {
        let mut inbox = Inbox::new(w.max_held);
        inbox.start_at(C, w.start);
        let mut out = Vec::new();
        let mut in_flight: Option<Fetch> = None;
        let mut newest_seen = w.start;
        for (n, &seq) in w.wire.iter().enumerate() {
            let before = inbox.cursor(C).unwrap();
            newest_seen = newest_seen.max(seq);
            let f = inbox.receive(msg(C, seq), false, &mut out);
            take(f, before, &mut in_flight)?;
            if w.answer_now[n % w.answer_now.len()] && let Some(f) = in_flight.take() {
                let page = serve(&f, w.newest, w.page_size);
                newest_seen = newest_seen.max(page.messages.last().map_or(0, |m| m.seq));
                let next = inbox.fetched(&f, page, |_| false, &mut out);
                take(next, inbox.cursor(C).unwrap(), &mut in_flight)?;
            }
            let cursor = inbox.cursor(C).unwrap();
            prop_assert!(cursor >= newest_seen || in_flight.is_some(), "seq {newest_seen} seen, cursor {cursor}, and no fetch for the gap");
        }
        while let Some(f) = in_flight.take() {
            let next = inbox.fetched(&f, serve(&f, w.newest, w.page_size), |_| false, &mut out);
            take(next, inbox.cursor(C).unwrap(), &mut in_flight)?;
        }
        let expected: Vec<u64> = (w.start + 1..=w.newest).collect();
        prop_assert_eq!(seqs(&out), expected);
        prop_assert_eq!(inbox.cursor(C), Some(w.newest));
    }
}
