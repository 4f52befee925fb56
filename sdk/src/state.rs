//! Everything the client knows across connections, without IO: the [`Inbox`] (cursors
//! and ordering), the [`Outbox`] (unacknowledged sends), receipts in both directions,
//! the rooms the app joined, the connection state, and the queue of events for the app.
//!
//! ```text
//!  reader task ──► on_event ──┬─ live:      apply ──► inbox / ledger ──► ready ──► Client::next_event
//!                             └─ syncing:   held in `live` (bounded) until finish_sync
//!  catch-up    ──► catch_up_page ──► inbox ──► ready;  receipts kept for finish_sync
//!  finish_sync ──► receipts beyond what was told, State(Resumed), then the held live events
//! ```
//!
//! The driver ([`crate::driver`]) holds it behind one mutex, calls in with what
//! happened, and carries out the returned [`Effects`] (history fetches, delivery
//! reports). Because every event for the app is queued here, under the same lock that
//! orders the inbox, the app sees one order no matter which task did the work.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use legalchat_protocol::pb;
use tracing::warn;

use crate::inbox::{Fetch, Inbox};
use crate::outbox::{EntryId, Outbox, OutboxFull, PendingSend, SendWaiter, outcome};
use crate::receipts::{DeliveryAcks, ReceiptLedger};
use crate::session::Reply;
use crate::timeline::Timeline;
use crate::{ConnectionState, Error, Event};

/// Work for the driver that follows from a state change.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Effects {
    /// History fetches to make.
    pub(crate) fetches: Vec<Fetch>,
    /// `MarkDelivered{conversation, seq}` reports to make.
    pub(crate) delivery_reports: Vec<(String, u64)>,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.fetches.extend(other.fetches);
        self.delivery_reports.extend(other.delivery_reports);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fetches.is_empty() && self.delivery_reports.is_empty()
    }
}

/// A catch-up in progress.
#[derive(Debug, Default)]
struct CatchingUp {
    /// The server's `next` cursors: where to continue in conversations that have more.
    next: BTreeMap<String, u64>,
    /// The newest receipt positions seen per conversation, told at the end.
    receipts: BTreeMap<String, pb::ReceiptList>,
    /// Messages delivered by this catch-up.
    missed: u64,
}

/// The client's state across connections.
#[derive(Debug)]
pub(crate) struct ClientState {
    me: String,
    inbox: Inbox,
    outbox: Outbox,
    ledger: ReceiptLedger,
    acks: DeliveryAcks,
    rooms: BTreeSet<String>,
    catching_up: Option<CatchingUp>,
    /// Live events that arrived while catching up, in arrival order.
    live: VecDeque<Event>,
    live_capacity: usize,
    /// A live message or receipt was dropped from a full `live` buffer: one more round of
    /// catching up is needed before going live.
    live_overflowed: bool,
    /// Events for the app.
    ready: VecDeque<Event>,
    ready_capacity: usize,
    state: ConnectionState,
    /// The connection whose outbox resend is done: new sends may be written to it
    /// directly.
    direct: Option<u64>,
    /// `Event::Closed` is queued; nothing follows it.
    finished: bool,
    /// Each message's current state, folded from the log as it reaches the app.
    timeline: Timeline,
    /// Conversations with a gap whose fetch waits for this session's own sends there to be
    /// answered: in a busy conversation, the next message often arrives before the
    /// acknowledgment of the user's own (events and answers travel separately), and the
    /// acknowledgment fills the gap without a round trip to the store.
    deferred_gaps: BTreeSet<String>,
    /// The server delivers this session's own new messages back to it
    /// ([`ClientConfig::with_own_messages_echoed`](crate::ClientConfig::with_own_messages_echoed)):
    /// they are delivered like everyone else's, and nothing is skipped.
    echo_own: bool,
}

impl ClientState {
    pub(crate) fn new(me: &str, event_buffer: usize, outbox_capacity: usize, max_held: usize, timeline_capacity: usize) -> Self {
        Self {
            me: me.to_owned(),
            inbox: Inbox::new(max_held),
            outbox: Outbox::new(outbox_capacity),
            ledger: ReceiptLedger::default(),
            acks: DeliveryAcks::default(),
            rooms: BTreeSet::new(),
            catching_up: None,
            live: VecDeque::new(),
            live_capacity: event_buffer,
            live_overflowed: false,
            ready: VecDeque::new(),
            ready_capacity: event_buffer,
            state: ConnectionState::Connected,
            direct: None,
            finished: false,
            timeline: Timeline::with_capacity(timeline_capacity),
            deferred_gaps: BTreeSet::new(),
            echo_own: false,
        }
    }

    /// The server echoes this session's own new messages: deliver them, skip none.
    pub(crate) fn echo_own_messages(&mut self, on: bool) {
        self.echo_own = on;
    }

    // ───────────────────────────── events for the app ─────────────────────────────

    /// The next event for the app.
    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        let event = self.ready.pop_front();
        if self.ready.is_empty() && self.ready.capacity() > 0 {
            // An idle client keeps no queue buffer: an event is some 600 bytes, so even
            // the smallest buffer (four of them) would weigh on each of a gateway's idle
            // sockets. Allocating it again for the next event costs far less than the
            // event itself.
            self.ready = VecDeque::new();
        }
        event
    }

    /// Whether the event queue has room; the reader stops reading while it has none.
    pub(crate) fn has_room(&self) -> bool {
        self.ready.len() < self.ready_capacity
    }

    /// Whether `Event::Closed` has been queued.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    fn emit(&mut self, event: Event) {
        if !self.finished {
            self.ready.push_back(event);
        }
    }

    // ───────────────────────────── connection state ─────────────────────────────

    pub(crate) fn state(&self) -> &ConnectionState {
        &self.state
    }

    fn set_state(&mut self, state: ConnectionState, announce: bool) {
        self.state = state.clone();
        if announce {
            self.emit(Event::State(state));
        }
    }

    /// The connection dropped.
    pub(crate) fn connection_lost(&mut self, reason: &str) {
        self.direct = None;
        self.acks.connection_lost();
        self.inbox.reset_fetches();
        self.set_state(ConnectionState::Disconnected { reason: reason.to_owned() }, true);
    }

    /// The client waits `delay` before reconnect attempt `attempt`.
    pub(crate) fn reconnecting(&mut self, attempt: u32, delay: std::time::Duration) {
        self.set_state(ConnectionState::Reconnecting { attempt, delay }, true);
    }

    /// The client has ended: the outbox fails with `Error::Closed`, and `Event::Closed` is
    /// the last event.
    pub(crate) fn finish(&mut self, reason: &str) {
        if self.finished {
            return;
        }
        for entry in self.outbox.drain() {
            if let Some(waiter) = entry.waiter {
                let _ = waiter.send(Err(Error::Closed(reason.to_owned())));
            }
        }
        self.direct = None;
        self.set_state(ConnectionState::Closed { reason: reason.to_owned() }, false);
        self.emit(Event::Closed { reason: reason.to_owned() });
        self.finished = true;
    }

    /// Why the client ended, once it has.
    pub(crate) fn closed_reason(&self) -> Option<&str> {
        match &self.state {
            ConnectionState::Closed { reason } => Some(reason),
            _ => None,
        }
    }

    // ───────────────────────────── cursors ─────────────────────────────

    /// First connection: follow the listed conversations from their newest message.
    pub(crate) fn start_from_list(&mut self, conversations: &[pb::Conversation]) {
        for c in conversations {
            self.inbox.start_at(&c.id, c.last_seq);
        }
    }

    /// Follow conversations from saved cursors.
    pub(crate) fn start_from_cursors(&mut self, cursors: &[(String, u64)]) {
        for (conversation, seq) in cursors {
            self.inbox.start_at(conversation, *seq);
        }
    }

    /// The user created (or opened) `c`: follow it from its newest message.
    pub(crate) fn opened(&mut self, c: &pb::Conversation) {
        self.inbox.start_at(&c.id, c.last_seq);
    }

    /// The user left (or was removed from) a conversation: stop following it.
    pub(crate) fn no_longer_participant(&mut self, conversation_id: &str) {
        self.inbox.forget(conversation_id);
        self.ledger.forget(conversation_id);
        self.acks.forget(conversation_id);
        self.rooms.remove(conversation_id);
        self.timeline.forget(conversation_id);
    }

    /// The folded state of the messages this client has seen.
    pub(crate) fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Messages read from history: their states as of the read.
    pub(crate) fn loaded(&mut self, messages: &[pb::Message]) {
        if !self.timeline.keeps_messages() {
            return;
        }
        for m in messages {
            self.timeline.insert(m.clone());
        }
    }

    /// Every followed conversation with the newest seq the app was given.
    pub(crate) fn cursors(&self) -> Vec<(String, u64)> {
        self.inbox.cursors()
    }

    // ───────────────────────────── live events ─────────────────────────────

    /// An event from the server. While catching up, it waits in a bounded buffer.
    pub(crate) fn on_event(&mut self, event: Event) -> Effects {
        if self.catching_up.is_none() {
            return self.apply(event);
        }
        match event {
            // Not about conversations; the app hears of these at once.
            e @ (Event::Goodbye { .. } | Event::State(_) | Event::Closed { .. }) => self.emit(e),
            e if self.live.len() < self.live_capacity => self.live.push_back(e),
            Event::Typing(_) | Event::Presence(_) | Event::RoomUsers(_) => {
                warn!("dropping a typing, presence or room event that arrived while catching up: too many arrived");
            }
            _ => {
                // Messages and receipts are caught up again; see `needs_another_round`.
                warn!("too many live events while catching up; catching up once more");
                self.live_overflowed = true;
            }
        }
        Effects::default()
    }

    fn apply(&mut self, event: Event) -> Effects {
        let mut effects = Effects::default();
        match event {
            Event::Message(m) => {
                let own = self.is_own_waiting(&m);
                let mut out = Vec::new();
                if let Some(fetch) = self.inbox.receive(m, own, &mut out) {
                    self.fetch_or_defer(fetch, &mut effects);
                }
                self.deliver(out, &mut effects);
            }
            Event::ConversationUpdated(c) => {
                if c.participants.iter().any(|p| p.user_id == self.me) {
                    effects.fetches.extend(self.inbox.appeared(&c.id, c.last_seq));
                } else {
                    self.no_longer_participant(&c.id);
                }
                self.emit(Event::ConversationUpdated(c));
            }
            Event::Receipt(r) => {
                if self.ledger.advance(&r) {
                    self.emit(Event::Receipt(r));
                }
            }
            other => self.emit(other),
        }
        effects
    }

    /// Makes a gap fetch now, or, while this session's own sends into the conversation
    /// are unanswered, after their answers (which may fill the gap).
    fn fetch_or_defer(&mut self, fetch: Fetch, effects: &mut Effects) {
        // With echoes, an acknowledgment fills no gap: the echo arrives in its place.
        if !self.echo_own && self.outbox.has_pending_in(&fetch.conversation_id) {
            self.inbox.fetch_failed(&fetch.conversation_id);
            self.deferred_gaps.insert(fetch.conversation_id);
        } else {
            effects.fetches.push(fetch);
        }
    }

    /// A send into `conversation_id` was answered (stored as `seq`, 0 if refused): a
    /// deferred gap there is fetched once no more answers are due, or at once when the
    /// missing seq lies below this answer's (the session's later sends there are stored
    /// after it, so they cannot fill it; a busy sender must not starve the fetch).
    fn resume_deferred_gap(&mut self, conversation_id: &str, seq: u64, effects: &mut Effects) {
        if !self.deferred_gaps.contains(conversation_id) {
            return;
        }
        let below = self.inbox.cursor(conversation_id).is_some_and(|cursor| cursor + 1 < seq);
        if below || !self.outbox.has_pending_in(conversation_id) {
            self.deferred_gaps.remove(conversation_id);
            effects.fetches.extend(self.inbox.fetch_gap(conversation_id));
        }
    }

    /// A message of the user's that this session sent and still waits to hear about.
    fn is_own_waiting(&self, m: &pb::Message) -> bool {
        !self.echo_own && m.sender_id == self.me && self.outbox.is_waiting(&m.conversation_id, &m.client_message_id)
    }

    /// Queues in-order messages for the app and works out the delivery reports.
    fn deliver(&mut self, messages: Vec<pb::Message>, effects: &mut Effects) {
        for m in messages {
            // Messages come in seq order, so each one's seq is the conversation's newest
            // delivered position when it goes out; the user's own are not reported.
            if m.sender_id != self.me
                && let Some(seq) = self.acks.delivered(&m.conversation_id, m.seq)
            {
                effects.delivery_reports.push((m.conversation_id.clone(), seq));
            }
            if let Some(c) = &mut self.catching_up {
                c.missed += 1;
            }
            // An event about a message changes that message's state: the app gets the
            // event, then the new state.
            let changed = if m.event.is_some() {
                self.timeline.apply(&m).cloned()
            } else {
                if self.timeline.keeps_messages() {
                    self.timeline.insert(m.clone());
                }
                None
            };
            self.emit(Event::Message(m));
            if let Some(state) = changed {
                self.emit(Event::MessageUpdated(state));
            }
        }
    }

    // ───────────────────────────── history fetches ─────────────────────────────

    /// The answer to a fetch. Returns what to do next (usually: the next page).
    pub(crate) fn fetched(&mut self, fetch: &Fetch, reply: Result<pb::HistoryPage, Error>) -> Effects {
        let mut effects = Effects::default();
        match reply {
            Ok(page) => {
                let mut out = Vec::new();
                let (me, outbox, echo) = (&self.me, &self.outbox, self.echo_own);
                let own = |m: &pb::Message| !echo && m.sender_id == *me && outbox.is_waiting(&m.conversation_id, &m.client_message_id);
                effects.fetches.extend(self.inbox.fetched(fetch, page, own, &mut out));
                self.deliver(out, &mut effects);
            }
            Err(e @ Error::Server { code: pb::ErrorCode::Forbidden | pb::ErrorCode::NotFound, .. }) => {
                // No longer a participant: nothing to wait for there.
                warn!(conversation = %fetch.conversation_id, error = %e, "cannot fetch missed messages; no longer following the conversation");
                self.inbox.forget(&fetch.conversation_id);
            }
            Err(e) => {
                warn!(conversation = %fetch.conversation_id, error = %e, "fetching missed messages failed; the next catch-up fills the gap");
                self.inbox.fetch_failed(&fetch.conversation_id);
            }
        }
        effects
    }

    /// A fetch of everything after the cursor, for every followed conversation that is
    /// not being fetched already (the fallback when the server refuses `CatchUp`).
    pub(crate) fn fetch_all(&mut self) -> Vec<Fetch> {
        self.inbox.fetch_all()
    }

    // ───────────────────────────── delivery reports ─────────────────────────────

    /// The answer to a delivery report (`ok`: accepted). Returns the next report of that
    /// conversation, if a newer position is waiting.
    pub(crate) fn delivery_reported(&mut self, conversation_id: &str, ok: bool) -> Option<u64> {
        self.acks.answered(conversation_id, ok)
    }

    /// The position the report about to go (the one in flight) should carry: the newest
    /// wanted. `None` when there is nothing to report any more.
    pub(crate) fn delivery_report_newest(&mut self, conversation_id: &str) -> Option<u64> {
        self.acks.newest_in_flight(conversation_id)
    }

    /// The delivery report of `seq` was lost with its connection; it is made again after
    /// the next catch-up.
    pub(crate) fn delivery_report_lost(&mut self, conversation_id: &str, seq: u64) {
        self.acks.lost(conversation_id, seq);
    }

    // ───────────────────────────── catching up ─────────────────────────────

    /// A catch-up starts (after a reconnect, or on a first connection with saved
    /// cursors): live events wait until [`finish_catch_up`](Self::finish_catch_up).
    pub(crate) fn begin_catch_up(&mut self) {
        self.catching_up = Some(CatchingUp::default());
        self.inbox.reset_fetches();
        // The catch-up fills every gap.
        self.deferred_gaps.clear();
    }

    /// Whether a catch-up is under way (live events wait meanwhile).
    pub(crate) fn is_catching_up(&self) -> bool {
        self.catching_up.is_some()
    }

    /// The cursors for the next `CatchUp`: where the app stands, moved on to the server's
    /// `next` cursors where those are further.
    pub(crate) fn catch_up_cursors(&self) -> Vec<pb::ConversationCursor> {
        let mut cursors: BTreeMap<String, u64> = self.inbox.cursors().into_iter().collect();
        if let Some(c) = &self.catching_up {
            for (conversation, after) in &c.next {
                let at = cursors.entry(conversation.clone()).or_default();
                *at = (*at).max(*after);
            }
        }
        cursors.into_iter().map(|(conversation_id, after_seq)| pb::ConversationCursor { conversation_id, after_seq }).collect()
    }

    /// One page of catching up: its messages go to the app now; its receipts are kept for
    /// the end. Returns whether the server has more.
    pub(crate) fn catch_up_page(&mut self, page: pb::CatchUpPage) -> (bool, Effects) {
        let mut effects = Effects::default();
        let mut out = Vec::new();
        for m in page.messages {
            let own = self.is_own_waiting(&m);
            effects.fetches.extend(self.inbox.receive(m, own, &mut out));
        }
        self.deliver(out, &mut effects);
        if let Some(c) = &mut self.catching_up {
            for cursor in page.next {
                let at = c.next.entry(cursor.conversation_id).or_default();
                *at = (*at).max(cursor.after_seq);
            }
            for list in page.receipts {
                // Pages are read in order, so a later page's positions are newer.
                c.receipts.insert(list.conversation_id.clone(), list);
            }
        }
        (page.has_more, effects)
    }

    /// Whether live messages were dropped while catching up, so that another round of
    /// catching up must run before going live. Resets the flag.
    pub(crate) fn needs_another_round(&mut self) -> bool {
        if let Some(c) = &mut self.catching_up {
            c.next.clear();
        }
        std::mem::take(&mut self.live_overflowed)
    }

    /// The catch-up is complete: receipts that moved go to the app, then (when
    /// `announce`) `State(Resumed)`, then the live events that waited, through the same
    /// filter. Delivery reports lost with the old connection are made again.
    pub(crate) fn finish_catch_up(&mut self, announce: bool) -> Effects {
        let mut effects = Effects::default();
        let Some(done) = self.catching_up.take() else { return effects };
        let mut receipts = Vec::new();
        for list in done.receipts.values() {
            self.ledger.catch_up(list, &self.me, &mut receipts);
        }
        for r in receipts {
            self.emit(Event::Receipt(r));
        }
        if announce {
            self.set_state(ConnectionState::Resumed { missed: done.missed }, true);
        } else {
            self.state = ConnectionState::Connected;
        }
        // Taken whole: the buffer of the events held while catching up goes with it.
        for event in std::mem::take(&mut self.live) {
            effects.merge(self.apply(event));
        }
        effects.delivery_reports.extend(self.acks.due());
        effects
    }

    // ───────────────────────────── sends ─────────────────────────────

    /// Queues a send in the outbox.
    pub(crate) fn queue_send(&mut self, message: pb::SendMessage, waiter: SendWaiter) -> Result<EntryId, Error> {
        if let Some(reason) = self.closed_reason() {
            return Err(Error::Closed(reason.to_owned()));
        }
        self.outbox.push(message, Some(waiter)).map_err(|OutboxFull { capacity }| Error::OutboxFull(capacity))
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(crate) fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The connection on which new sends may be written at once, if any.
    pub(crate) fn direct(&self) -> Option<u64> {
        self.direct
    }

    /// The outbox has been resent on connection `epoch`; later sends go straight to it.
    pub(crate) fn set_direct(&mut self, epoch: u64) {
        self.direct = Some(epoch);
    }

    /// The server answered the send of outbox entry `entry`. The caller learns the
    /// outcome; the seq is this session's own, and is skipped by the inbox.
    pub(crate) fn send_answered(&mut self, entry: EntryId, reply: Reply) -> Effects {
        let mut effects = Effects::default();
        let pending = self.outbox.take(entry);
        let accepted_in = match &reply {
            Ok(pb::ack::Result::MessageAccepted(a)) if !a.conversation_id.is_empty() => Some(a.conversation_id.clone()),
            _ => None,
        };
        let conversation = accepted_in.or_else(|| pending.as_ref().map(|p| p.message.conversation_id.clone()));
        // Even when the caller gave up, the seq is ours: never deliver it back (unless the
        // server echoes it, in its place in the log).
        if let (Ok(pb::ack::Result::MessageAccepted(a)), Some(conversation), false) = (&reply, &conversation, self.echo_own) {
            let mut out = Vec::new();
            self.inbox.own_sent(conversation, a.seq, &mut out);
            self.deliver(out, &mut effects);
        }
        if let Some(conversation) = &conversation {
            let seq = match &reply {
                Ok(pb::ack::Result::MessageAccepted(a)) => a.seq,
                _ => 0,
            };
            self.resume_deferred_gap(conversation, seq, &mut effects);
        }
        // The user's own message is in the timeline too, so that reactions to it fold.
        if let (Ok(pb::ack::Result::MessageAccepted(a)), Some(p), true) = (&reply, &pending, self.timeline.keeps_messages()) {
            self.timeline.insert(pb::Message {
                conversation_id: p.message.conversation_id.clone(),
                seq: a.seq,
                message_id: a.message_id.clone(),
                client_message_id: p.message.client_message_id.clone(),
                sender_id: self.me.clone(),
                content: p.message.content.clone(),
                timestamp_ms: a.timestamp_ms,
                reply_to_seq: p.message.reply_to_seq,
                state_seq: a.seq,
                ..Default::default()
            });
        }
        if let Some(PendingSend { message, waiter: Some(waiter), .. }) = pending {
            let _ = waiter.send(outcome(&message.conversation_id, reply));
        }
        effects
    }

    // ───────────────────────────── rooms ─────────────────────────────

    pub(crate) fn joined(&mut self, conversation_id: &str) {
        self.rooms.insert(conversation_id.to_owned());
    }

    pub(crate) fn left(&mut self, conversation_id: &str) {
        self.rooms.remove(conversation_id);
    }

    pub(crate) fn rooms(&self) -> Vec<String> {
        self.rooms.iter().cloned().collect()
    }

    /// The answer to re-joining a room after a reconnect.
    pub(crate) fn rejoined(&mut self, conversation_id: &str, reply: Result<pb::RoomUsers, Error>) {
        match reply {
            Ok(users) => self.emit(Event::RoomUsers(users)),
            Err(e) => {
                warn!(conversation = conversation_id, error = %e, "could not re-join a room after reconnecting");
                if matches!(e, Error::Server { .. }) {
                    self.rooms.remove(conversation_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
