use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const CONV: &str = "c0";

/// What the server holds for one message: an independent model of the rules, so that the
/// fold is checked against something other than itself.
#[derive(Debug, Clone, Default)]
struct Truth {
    sender: String,
    text: String,
    edited_at: i64,
    deleted_at: i64,
    deleted_by: String,
    reactions: Vec<(String, Vec<String>)>,
    pinned: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Send(u8),
    Edit(usize),
    Delete(usize, u8),
    React(usize, u8, u8, bool),
    Pin(usize, bool),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => any::<u8>().prop_map(Op::Send),
        2 => any::<usize>().prop_map(Op::Edit),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(t, u)| Op::Delete(t, u)),
        3 => (any::<usize>(), any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(t, u, e, add)| Op::React(t, u, e, add)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(t, p)| Op::Pin(t, p)),
    ];
    proptest::collection::vec(op, 1..60)
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const EMOJI: [&str; 3] = ["👍", "❤️", "🎉"];

fn event(seq: u64, sender: &str, ts: i64, kind: Kind) -> pb::Message {
    pb::Message {
        conversation_id: CONV.into(),
        seq,
        sender_id: sender.into(),
        timestamp_ms: ts,
        event: Some(pb::ConversationEvent { kind: Some(kind) }),
        ..Default::default()
    }
}

fn snapshot(seq: u64, t: &Truth, state_seq: u64) -> pb::Message {
    pb::Message {
        conversation_id: CONV.into(),
        seq,
        sender_id: t.sender.clone(),
        content: (t.deleted_at == 0).then(|| pb::MessageContent { text: t.text.clone(), ..Default::default() }),
        edited_at_ms: t.edited_at,
        deleted_at_ms: t.deleted_at,
        deleted_by: t.deleted_by.clone(),
        reactions: t.reactions.iter().map(|(e, u)| pb::Reaction { emoji: e.clone(), user_ids: u.clone() }).collect(),
        pinned: t.pinned,
        state_seq,
        ..Default::default()
    }
}

/// Runs `ops` against the model; returns the log (as it went out live) and, for every
/// point in it, the model's messages at that point.
fn run(ops: &[Op]) -> (Vec<pb::Message>, Vec<BTreeMap<u64, Truth>>) {
    let mut truth: BTreeMap<u64, Truth> = BTreeMap::new();
    let mut log = Vec::new();
    let mut states = vec![truth.clone()];
    // The edits of each message so far, to redact superseded ones as the server does.
    let mut edits: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for op in ops {
        let seq = log.len() as u64 + 1;
        let ts = seq as i64 * 10;
        let msgs: Vec<u64> = truth.keys().copied().collect();
        let pick = |i: usize| (!msgs.is_empty()).then(|| msgs[i % msgs.len()]);
        let entry = match *op {
            Op::Send(u) => {
                let sender = USERS[usize::from(u) % 3];
                truth.insert(seq, Truth { sender: sender.into(), text: format!("m{seq}"), ..Default::default() });
                let t = &truth[&seq];
                Some(snapshot(seq, t, seq))
            }
            Op::Edit(i) => pick(i).and_then(|target| {
                let t = truth.get_mut(&target)?;
                if t.deleted_at != 0 {
                    return None;
                }
                t.text = format!("m{target} edited at {seq}");
                t.edited_at = ts;
                let content = pb::MessageContent { text: t.text.clone(), ..Default::default() };
                let sender = t.sender.clone();
                for &earlier in edits.get(&target).into_iter().flatten() {
                    redact(&mut log, earlier);
                }
                edits.entry(target).or_default().push(log.len());
                Some(event(
                    seq,
                    &sender,
                    ts,
                    Kind::Edited(pb::MessageEdited { target_seq: target, content: Some(content), redacted: false }),
                ))
            }),
            Op::Delete(i, u) => pick(i).and_then(|target| {
                let t = truth.get_mut(&target)?;
                if t.deleted_at != 0 {
                    return None;
                }
                let who = USERS[usize::from(u) % 3];
                *t = Truth {
                    sender: t.sender.clone(),
                    deleted_at: ts,
                    deleted_by: who.into(),
                    edited_at: t.edited_at,
                    ..Default::default()
                };
                for &earlier in edits.get(&target).into_iter().flatten() {
                    redact(&mut log, earlier);
                }
                Some(event(seq, who, ts, Kind::Deleted(pb::MessageDeleted { target_seq: target })))
            }),
            Op::React(i, u, e, add) => pick(i).and_then(|target| {
                let t = truth.get_mut(&target)?;
                if t.deleted_at != 0 {
                    return None;
                }
                let (who, emoji) = (USERS[usize::from(u) % 3], EMOJI[usize::from(e) % 3]);
                let at = t.reactions.iter().position(|(x, _)| x == emoji);
                let has = at.is_some_and(|i| t.reactions[i].1.iter().any(|x| x == who));
                if has == add {
                    return None;
                }
                match at {
                    Some(i) if add => t.reactions[i].1.push(who.into()),
                    None => t.reactions.push((emoji.into(), vec![who.into()])),
                    Some(i) => {
                        t.reactions[i].1.retain(|x| x != who);
                        if t.reactions[i].1.is_empty() {
                            t.reactions.remove(i);
                        }
                    }
                }
                Some(event(seq, who, ts, Kind::Reaction(pb::ReactionChanged { target_seq: target, emoji: emoji.into(), added: add })))
            }),
            Op::Pin(i, pin) => pick(i).and_then(|target| {
                let t = truth.get_mut(&target)?;
                if t.deleted_at != 0 || t.pinned == pin {
                    return None;
                }
                t.pinned = pin;
                Some(event(seq, "alice", ts, Kind::Pin(pb::PinChanged { target_seq: target, pinned: pin })))
            }),
        };
        if let Some(entry) = entry {
            log.push(entry);
            states.push(truth.clone());
        }
    }
    (log, states)
}

/// What the server does to a superseded edit entry in its log: anyone reading it later
/// sees no text.
fn redact(log: &mut [pb::Message], at: usize) {
    if let Some(pb::ConversationEvent { kind: Some(Kind::Edited(e)) }) = &mut log[at].event {
        e.content = None;
        e.redacted = true;
    }
}

fn assert_matches(timeline: &Timeline, truth: &BTreeMap<u64, Truth>, who: &str) {
    let held: Vec<u64> = timeline.messages(CONV).map(|m| m.seq).collect();
    assert_eq!(held, truth.keys().copied().collect::<Vec<_>>(), "{who}: messages held");
    for (seq, t) in truth {
        let m = timeline.get(CONV, *seq).expect("held");
        let text = m.content.as_ref().map(|c| c.text.clone());
        assert_eq!(text, (t.deleted_at == 0).then(|| t.text.clone()), "{who}: text of {seq}");
        assert_eq!((m.deleted_at_ms, m.deleted_by.as_str()), (t.deleted_at, t.deleted_by.as_str()), "{who}: delete of {seq}");
        let reactions: Vec<(String, Vec<String>)> = m.reactions.iter().map(|r| (r.emoji.clone(), r.user_ids.clone())).collect();
        assert_eq!(reactions, t.reactions, "{who}: reactions of {seq}");
        assert_eq!(m.pinned, t.pinned, "{who}: pin of {seq}");
        if t.deleted_at == 0 {
            assert_eq!(m.edited_at_ms, t.edited_at, "{who}: edit time of {seq}");
        }
    }
}

proptest! {
    /// A device online for the whole log, and a device that loaded a snapshot of the
    /// messages at some point (history) and then the rest of the log (catch-up), end
    /// with exactly the server's state. The live device reads the log as it went out,
    /// before later redactions; the late device reads the log as stored afterwards.
    #[test]
    fn online_and_offline_devices_fold_to_the_same_state(ops in ops(), cut in any::<prop::sample::Index>()) {
        let (live_log, states) = run(&ops);
        let truth = states.last().expect("a final state");

        // Live: every entry as it was fanned out (redaction happened after the fact, so
        // the live device saw each edit's text when it was new).
        let mut live = Timeline::new();
        let (fanned_out, _) = run_unredacted(&ops);
        for entry in &fanned_out {
            live.apply(entry);
        }
        assert_matches(&live, truth, "live device");

        // Late: a snapshot of every message as of `at`, then the stored log after it.
        let at = cut.index(live_log.len() + 1);
        let mut late = Timeline::new();
        let at_seq = at as u64;
        for (seq, t) in &states[at] {
            late.insert(snapshot(*seq, t, at_seq));
        }
        for entry in &live_log[at..] {
            late.apply(entry);
        }
        assert_matches(&late, truth, "late device");

        // Replaying everything again changes nothing (duplicates are harmless).
        for entry in &live_log {
            late.apply(entry);
        }
        assert_matches(&late, truth, "late device after a replay");
    }
}

/// The log as it was fanned out live: without the redactions applied later.
fn run_unredacted(ops: &[Op]) -> (Vec<pb::Message>, ()) {
    let (mut log, _) = run(ops);
    // Recover each redacted edit's text from the model: the live device saw it before
    // the redaction. The model's text for an edit at seq s is "m{target} edited at {s}".
    for entry in &mut log {
        let seq = entry.seq;
        if let Some(pb::ConversationEvent { kind: Some(Kind::Edited(e)) }) = &mut entry.event
            && e.redacted
        {
            e.redacted = false;
            e.content = Some(pb::MessageContent { text: format!("m{} edited at {seq}", e.target_seq), ..Default::default() });
        }
    }
    (log, ())
}

#[test]
fn an_event_older_than_the_state_is_not_applied_twice() {
    let mut t = Timeline::new();
    let mut m = pb::Message { conversation_id: CONV.into(), seq: 1, sender_id: "bob".into(), state_seq: 5, ..Default::default() };
    m.reactions.push(pb::Reaction { emoji: "👍".into(), user_ids: vec!["alice".into()] });
    t.insert(m);
    // The reaction at seq 3 is already counted in the state as of seq 5.
    let reaction = event(3, "alice", 30, Kind::Reaction(pb::ReactionChanged { target_seq: 1, emoji: "👍".into(), added: true }));
    assert!(t.apply(&reaction).is_none());
    assert_eq!(t.get(CONV, 1).expect("held").reactions[0].user_ids, ["alice"]);
    // A newer one is.
    let newer = event(6, "carol", 60, Kind::Reaction(pb::ReactionChanged { target_seq: 1, emoji: "👍".into(), added: true }));
    let state = t.apply(&newer).expect("changed");
    assert_eq!(state.reactions[0].user_ids, ["alice", "carol"]);
    assert_eq!(state.state_seq, 6);
}

#[test]
fn an_older_snapshot_never_replaces_a_newer_state() {
    let mut t = Timeline::new();
    let text = |s: &str| Some(pb::MessageContent { text: s.into(), ..Default::default() });
    t.insert(pb::Message { conversation_id: CONV.into(), seq: 1, content: text("new"), state_seq: 9, ..Default::default() });
    t.insert(pb::Message { conversation_id: CONV.into(), seq: 1, content: text("old"), state_seq: 4, ..Default::default() });
    assert_eq!(t.get(CONV, 1).and_then(|m| m.content.as_ref()).map(|c| c.text.as_str()), Some("new"));
}

#[test]
fn events_about_unknown_messages_and_conversation_events_change_nothing() {
    let mut t = Timeline::new();
    let deleted = event(4, "bob", 40, Kind::Deleted(pb::MessageDeleted { target_seq: 2 }));
    assert!(t.apply(&deleted).is_none());
    let renamed = event(5, "bob", 50, Kind::ConversationChanged(pb::ConversationChanged::default()));
    assert!(t.apply(&renamed).is_none());
    assert_eq!(t.messages(CONV).count(), 0);
}

#[test]
fn a_timeline_of_capacity_zero_keeps_nothing() {
    let mut t = Timeline::with_capacity(0);
    assert!(t.insert(pb::Message { conversation_id: CONV.into(), seq: 1, ..Default::default() }).is_none());
    assert_eq!(t.messages(CONV).count(), 0);
    assert!(!t.keeps_messages());
}

#[test]
fn the_timeline_is_bounded_per_conversation() {
    let mut t = Timeline::new();
    for seq in 1..=(MAX_MESSAGES_PER_CONVERSATION as u64 + 10) {
        t.insert(pb::Message { conversation_id: CONV.into(), seq, ..Default::default() });
    }
    assert_eq!(t.messages(CONV).count(), MAX_MESSAGES_PER_CONVERSATION);
    assert!(t.get(CONV, 10).is_none(), "the oldest went first");
    assert!(t.get(CONV, MAX_MESSAGES_PER_CONVERSATION as u64 + 10).is_some());
}
