//! Receipts in both directions, without IO.
//!
//! * [`ReceiptLedger`]: what the app has been told about other participants' delivery
//!   and read positions, so that receipts caught up after a reconnect
//!   (`CatchUpPage.receipts`) and live `ReceiptEvent`s reach the app only when they move
//!   a position forward — never twice, never backwards.
//! * [`DeliveryAcks`]: this device's own `MarkDelivered` reports. After messages went to
//!   the app, the newest seq of their conversation is reported, with at most one report
//!   in flight per conversation: while one is in flight, newer positions only replace the
//!   one to send next. A busy group therefore costs one report per round trip, not one
//!   per message.

use std::collections::HashMap;

use legalchat_protocol::pb;

/// One participant's positions as last told to the app: (seq, when) for delivered and
/// read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Told {
    delivered: u64,
    read: u64,
}

/// What the app knows of other participants' positions.
#[derive(Debug, Default)]
pub(crate) struct ReceiptLedger {
    told: HashMap<(String, String), Told>,
}

impl ReceiptLedger {
    /// A live receipt: true when it moves a position the app knows, so that the app must
    /// hear of it.
    pub(crate) fn advance(&mut self, e: &pb::ReceiptEvent) -> bool {
        let told = self.told.entry((e.conversation_id.clone(), e.user_id.clone())).or_default();
        let position = match e.kind() {
            pb::ReceiptKind::Delivered => &mut told.delivered,
            pb::ReceiptKind::Read => &mut told.read,
            pb::ReceiptKind::Unspecified => return false,
        };
        if e.seq <= *position {
            return false;
        }
        *position = e.seq;
        if e.kind() == pb::ReceiptKind::Read {
            // Reading implies having received (the server moves both and reports the read).
            told.delivered = told.delivered.max(e.seq);
        }
        true
    }

    /// Receipt events for the positions in `list` that are beyond what the app was told,
    /// delivered before read for each participant. Reading a message implies having
    /// received it, so a read position also counts as delivered up to it.
    pub(crate) fn catch_up(&mut self, list: &pb::ReceiptList, me: &str, out: &mut Vec<pb::ReceiptEvent>) {
        for s in &list.states {
            if s.user_id == me {
                continue;
            }
            let delivered = s.delivered_seq.max(s.read_seq);
            let delivered_at = if s.delivered_seq >= s.read_seq { s.delivered_at_ms } else { s.read_at_ms };
            for (kind, seq, at) in
                [(pb::ReceiptKind::Delivered, delivered, delivered_at), (pb::ReceiptKind::Read, s.read_seq, s.read_at_ms)]
            {
                let e = pb::ReceiptEvent {
                    conversation_id: list.conversation_id.clone(),
                    user_id: s.user_id.clone(),
                    kind: kind as i32,
                    seq,
                    timestamp_ms: at,
                };
                if seq > 0 && self.advance(&e) {
                    out.push(e);
                }
            }
        }
    }

    /// Forgets a conversation (the user left it).
    pub(crate) fn forget(&mut self, conversation_id: &str) {
        self.told.retain(|(c, _), _| c != conversation_id);
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct AckTrack {
    /// Newest position the server confirmed.
    confirmed: u64,
    /// Newest position to report.
    wanted: u64,
    /// The position of the report in flight.
    in_flight: Option<u64>,
}

/// This device's `MarkDelivered` reports, coalesced per conversation.
#[derive(Debug, Default)]
pub(crate) struct DeliveryAcks {
    convs: HashMap<String, AckTrack>,
}

impl DeliveryAcks {
    /// Messages up to `seq` went to the app. Returns the position to report now, if no
    /// report of this conversation is in flight.
    pub(crate) fn delivered(&mut self, conversation_id: &str, seq: u64) -> Option<u64> {
        if !self.convs.contains_key(conversation_id) {
            self.convs.insert(conversation_id.to_owned(), AckTrack::default());
        }
        let t = self.convs.get_mut(conversation_id)?;
        t.wanted = t.wanted.max(seq);
        Self::next(t)
    }

    /// The report in flight was answered (`ok`) or failed. Returns the next position to
    /// report, if a newer one is wanted. A refused report is not repeated: it would be
    /// refused again.
    pub(crate) fn answered(&mut self, conversation_id: &str, ok: bool) -> Option<u64> {
        let t = self.convs.get_mut(conversation_id)?;
        let sent = t.in_flight.take()?;
        if !ok {
            tracing::debug!(conversation = conversation_id, seq = sent, "the server refused a delivery report");
        }
        // Either way that position is settled: confirmed, or not worth repeating.
        t.confirmed = t.confirmed.max(sent);
        Self::next(t)
    }

    /// The connection dropped: reports in flight are lost, and must be made again on the
    /// next connection.
    pub(crate) fn connection_lost(&mut self) {
        for t in self.convs.values_mut() {
            t.in_flight = None;
        }
    }

    /// Moves the report in flight (one about to be sent after a pause) to the newest
    /// wanted position, and returns it; `None` when no report is in flight.
    pub(crate) fn newest_in_flight(&mut self, conversation_id: &str) -> Option<u64> {
        let t = self.convs.get_mut(conversation_id)?;
        let in_flight = t.in_flight.as_mut()?;
        *in_flight = (*in_flight).max(t.wanted);
        Some(*in_flight)
    }

    /// The report of `seq` was lost with its connection (no answer will come): it may be
    /// made again. A newer report in flight meanwhile is left alone.
    pub(crate) fn lost(&mut self, conversation_id: &str, seq: u64) {
        if let Some(t) = self.convs.get_mut(conversation_id)
            && t.in_flight == Some(seq)
        {
            t.in_flight = None;
        }
    }

    /// Every report to make now (after a reconnect): conversations with a wanted position
    /// beyond the confirmed one and no report in flight.
    pub(crate) fn due(&mut self) -> Vec<(String, u64)> {
        let mut due: Vec<(String, u64)> = self.convs.iter_mut().filter_map(|(c, t)| Self::next(t).map(|s| (c.clone(), s))).collect();
        due.sort();
        due
    }

    /// Forgets a conversation (the user left it).
    pub(crate) fn forget(&mut self, conversation_id: &str) {
        self.convs.remove(conversation_id);
    }

    fn next(t: &mut AckTrack) -> Option<u64> {
        if t.in_flight.is_some() || t.wanted <= t.confirmed {
            return None;
        }
        t.in_flight = Some(t.wanted);
        Some(t.wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(conv: &str, user: &str, kind: pb::ReceiptKind, seq: u64) -> pb::ReceiptEvent {
        pb::ReceiptEvent { conversation_id: conv.into(), user_id: user.into(), kind: kind as i32, seq, timestamp_ms: 1_000 + seq as i64 }
    }

    fn state(user: &str, delivered: u64, read: u64) -> pb::ReceiptState {
        pb::ReceiptState {
            user_id: user.into(),
            delivered_seq: delivered,
            delivered_at_ms: 10 * delivered as i64,
            read_seq: read,
            read_at_ms: 100 * read as i64,
        }
    }

    #[test]
    fn live_receipts_pass_only_when_they_move_forward() {
        let mut l = ReceiptLedger::default();
        assert!(l.advance(&event("c", "bob", pb::ReceiptKind::Delivered, 3)));
        assert!(!l.advance(&event("c", "bob", pb::ReceiptKind::Delivered, 3)), "repeated");
        assert!(!l.advance(&event("c", "bob", pb::ReceiptKind::Delivered, 2)), "backwards");
        assert!(l.advance(&event("c", "bob", pb::ReceiptKind::Read, 2)), "read is its own position");
        assert!(l.advance(&event("c", "bob", pb::ReceiptKind::Read, 6)));
        assert!(!l.advance(&event("c", "bob", pb::ReceiptKind::Delivered, 5)), "reading 6 implied delivery of 6");
        assert!(l.advance(&event("c", "carol", pb::ReceiptKind::Delivered, 1)), "per user");
        assert!(l.advance(&event("d", "bob", pb::ReceiptKind::Delivered, 1)), "per conversation");
        assert!(!l.advance(&event("c", "bob", pb::ReceiptKind::Unspecified, 9)));
    }

    #[test]
    fn caught_up_receipts_are_synthesised_beyond_what_was_told() {
        let mut l = ReceiptLedger::default();
        l.advance(&event("c", "bob", pb::ReceiptKind::Delivered, 5));
        let list =
            pb::ReceiptList { conversation_id: "c".into(), states: vec![state("bob", 9, 7), state("me", 9, 9), state("carol", 0, 0)] };
        let mut out = Vec::new();
        l.catch_up(&list, "me", &mut out);
        assert_eq!(
            out,
            [
                pb::ReceiptEvent {
                    conversation_id: "c".into(),
                    user_id: "bob".into(),
                    kind: pb::ReceiptKind::Delivered as i32,
                    seq: 9,
                    timestamp_ms: 90
                },
                pb::ReceiptEvent {
                    conversation_id: "c".into(),
                    user_id: "bob".into(),
                    kind: pb::ReceiptKind::Read as i32,
                    seq: 7,
                    timestamp_ms: 700
                },
            ]
        );
        // The same list again tells nothing new.
        out.clear();
        l.catch_up(&list, "me", &mut out);
        assert!(out.is_empty());
        // Nor does a live event the catch-up already covered.
        assert!(!l.advance(&event("c", "bob", pb::ReceiptKind::Read, 7)));
    }

    #[test]
    fn a_read_position_implies_delivery() {
        let mut l = ReceiptLedger::default();
        let list = pb::ReceiptList { conversation_id: "c".into(), states: vec![state("bob", 2, 6)] };
        let mut out = Vec::new();
        l.catch_up(&list, "me", &mut out);
        assert_eq!(
            out.iter().map(|e| (e.kind(), e.seq, e.timestamp_ms)).collect::<Vec<_>>(),
            [(pb::ReceiptKind::Delivered, 6, 600), (pb::ReceiptKind::Read, 6, 600)]
        );
        l.forget("c");
        out.clear();
        l.catch_up(&list, "me", &mut out);
        assert_eq!(out.len(), 2, "forgotten, so told again");
    }

    #[test]
    fn delivery_reports_are_coalesced_one_in_flight_per_conversation() {
        let mut a = DeliveryAcks::default();
        assert_eq!(a.delivered("c", 1), Some(1));
        assert_eq!(a.delivered("c", 2), None, "one in flight");
        assert_eq!(a.delivered("c", 3), None);
        assert_eq!(a.delivered("d", 1), Some(1), "per conversation");
        assert_eq!(a.answered("c", true), Some(3), "the newest goes next, 2 is skipped");
        assert_eq!(a.answered("c", true), None);
        assert_eq!(a.delivered("c", 3), None, "already confirmed");
        assert_eq!(a.answered("unknown", true), None);
    }

    #[test]
    fn a_paused_report_carries_the_newest_position() {
        let mut a = DeliveryAcks::default();
        assert_eq!(a.delivered("c", 1), Some(1));
        assert_eq!(a.delivered("c", 2), None);
        assert_eq!(a.answered("c", true), Some(2), "the next report is due");
        // While the driver pauses before sending it, more messages arrive.
        assert_eq!(a.delivered("c", 5), None);
        assert_eq!(a.newest_in_flight("c"), Some(5));
        assert_eq!(a.answered("c", true), None);
        assert_eq!(a.newest_in_flight("c"), None, "nothing in flight");
        assert_eq!(a.newest_in_flight("unknown"), None);
    }

    #[test]
    fn reports_lost_with_a_connection_are_made_again() {
        let mut a = DeliveryAcks::default();
        assert_eq!(a.delivered("c", 4), Some(4));
        assert_eq!(a.delivered("d", 2), Some(2));
        assert_eq!(a.answered("d", true), None);
        a.connection_lost();
        assert_eq!(a.due(), [("c".to_string(), 4)]);
        assert_eq!(a.due(), [], "now in flight");
        a.lost("c", 4);
        assert_eq!(a.due(), [("c".to_string(), 4)], "lost again, due again");
        a.lost("c", 3);
        assert_eq!(a.due(), [], "a stale loss does not free the newer report");
    }

    #[test]
    fn a_refused_report_is_not_repeated() {
        let mut a = DeliveryAcks::default();
        assert_eq!(a.delivered("c", 4), Some(4));
        assert_eq!(a.answered("c", false), None);
        assert_eq!(a.due(), []);
        assert_eq!(a.delivered("c", 5), Some(5), "a newer position still goes");
        a.forget("c");
        assert_eq!(a.due(), []);
    }
}
