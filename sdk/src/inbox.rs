//! Exactly once, in order, to the app: the per-conversation filter between the wire
//! (at-least-once, and out of order around reconnects and the user's own sends) and
//! [`Event::Message`](crate::Event::Message).
//!
//! ```text
//!  live events ─┐                        ┌─ seq <= cursor      → drop (duplicate)
//!  catch-up    ─┼─► receive(message) ───►├─ seq == cursor + 1  → deliver, cursor += 1, release held
//!  gap fetches ─┘                        └─ seq >  cursor + 1  → hold, fetch after `cursor`
//!  own sends (acks) ──► own_sent(seq): skip that seq, never deliver it
//! ```
//!
//! Each conversation has a *cursor*: the newest seq the app has been given (or skipped as
//! this session's own message). Seqs are gap-free per conversation, so a seq beyond
//! `cursor + 1` proves that something was missed, and what is missing is exactly
//! `GetHistory{after_seq: cursor}`. The buffer of held messages is bounded; when it
//! overflows, its contents are dropped, because the fetch brings them again anyway.
//!
//! The user's own messages *from this session* are not news to the app (it made them; the
//! send call reports them), and the server does not echo them to the session that sent
//! them. They still take a seq, so the inbox learns of them from the send's
//! acknowledgment ([`Inbox::own_sent`]) or, when the acknowledgment was lost with a
//! connection, from the caller's judgment that a fetched message is one it is still
//! waiting to hear about (the `own` flag of [`Inbox::receive`]).
//!
//! No IO: fetches are returned as [`Fetch`] requests for the driver to make.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use legalchat_protocol::pb;
use tracing::warn;

/// Default bound on out-of-order messages held per conversation.
pub(crate) const DEFAULT_MAX_HELD: usize = 1_024;
/// Bound on remembered own seqs ahead of a conversation's cursor. They pile up only while
/// a gap below them stays unfilled, which a fetch resolves.
const MAX_OWN_AHEAD: usize = 10_000;

/// A history fetch the driver should make: `GetHistory{conversation_id, after_seq}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetch {
    pub(crate) conversation_id: String,
    pub(crate) after_seq: u64,
}

#[derive(Debug, Default)]
struct Track {
    /// Newest seq given to the app (or skipped as this session's own).
    cursor: u64,
    /// Messages beyond `cursor + 1`, waiting for the gap below them to fill.
    held: BTreeMap<u64, pb::Message>,
    /// This session's own seqs beyond `cursor`: skipped, never delivered.
    own: BTreeSet<u64>,
    /// A fetch for this conversation is in flight.
    fetching: bool,
}

impl Track {
    fn at(cursor: u64) -> Self {
        Self { cursor, ..Self::default() }
    }

    /// Takes `m` (with `seq > cursor`); returns true when it left a gap below it.
    fn take(&mut self, m: pb::Message, own: bool, max_held: usize, out: &mut Vec<pb::Message>) -> bool {
        let seq = m.seq;
        if seq <= self.cursor {
            return false;
        }
        if seq == self.cursor + 1 {
            let skip = own || self.own.remove(&seq);
            self.cursor = seq;
            if !skip {
                out.push(m);
            }
            self.release(out);
            return false;
        }
        if own {
            self.remember_own(seq);
        } else if !self.own.contains(&seq) {
            if self.held.len() >= max_held {
                // The fetch that this gap triggers brings these again, in order.
                warn!(conversation = %m.conversation_id, held = self.held.len(), "dropping held out-of-order messages; refetching them");
                self.held.clear();
            }
            self.held.insert(seq, m);
        }
        true
    }

    fn remember_own(&mut self, seq: u64) {
        self.own.insert(seq);
        if self.own.len() > MAX_OWN_AHEAD {
            self.own.pop_first();
        }
    }

    /// Moves the cursor over every contiguous held or own seq.
    fn release(&mut self, out: &mut Vec<pb::Message>) {
        loop {
            let next = self.cursor + 1;
            if self.own.remove(&next) {
                self.held.remove(&next);
                self.cursor = next;
            } else if let Some(m) = self.held.remove(&next) {
                out.push(m);
                self.cursor = next;
            } else {
                break;
            }
        }
        // Anything at or below the cursor is settled.
        self.held = self.held.split_off(&(self.cursor + 1));
        self.own = self.own.split_off(&(self.cursor + 1));
    }

    fn has_gap(&self) -> bool {
        !self.held.is_empty()
    }

    fn fetch(&mut self, conversation_id: &str) -> Option<Fetch> {
        if self.fetching {
            return None;
        }
        self.fetching = true;
        Some(Fetch { conversation_id: conversation_id.to_owned(), after_seq: self.cursor })
    }
}

/// Per-conversation cursors and the messages held back until they can go out in order.
#[derive(Debug)]
pub(crate) struct Inbox {
    tracks: HashMap<String, Track>,
    max_held: usize,
}

impl Inbox {
    pub(crate) fn new(max_held: usize) -> Self {
        Self { tracks: HashMap::new(), max_held: max_held.max(1) }
    }

    /// Starts following `conversation_id` after `seq` (known from the conversation list,
    /// a saved cursor, or the user's own creation of it). A conversation already followed
    /// keeps its cursor. Returns whether it was new.
    pub(crate) fn start_at(&mut self, conversation_id: &str, seq: u64) -> bool {
        if self.tracks.contains_key(conversation_id) {
            return false;
        }
        self.tracks.insert(conversation_id.to_owned(), Track::at(seq));
        true
    }

    /// The conversation exists with newest seq `last_seq` and the user participates
    /// (`ConversationUpdated`). A conversation not followed yet is followed from its first
    /// message; when messages are missing below `last_seq`, they are fetched.
    pub(crate) fn appeared(&mut self, conversation_id: &str, last_seq: u64) -> Option<Fetch> {
        let t = self.tracks.entry(conversation_id.to_owned()).or_default();
        // Were everything up to `last_seq` here, the cursor would have moved over it.
        if last_seq > t.cursor { t.fetch(conversation_id) } else { None }
    }

    /// Stops following a conversation (the user left or was removed).
    pub(crate) fn forget(&mut self, conversation_id: &str) {
        self.tracks.remove(conversation_id);
    }

    /// Whether the conversation is followed.
    #[cfg(test)]
    pub(crate) fn follows(&self, conversation_id: &str) -> bool {
        self.tracks.contains_key(conversation_id)
    }

    /// The conversation's cursor, if followed.
    pub(crate) fn cursor(&self, conversation_id: &str) -> Option<u64> {
        self.tracks.get(conversation_id).map(|t| t.cursor)
    }

    /// Every followed conversation with its cursor, sorted by conversation id.
    pub(crate) fn cursors(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.tracks.iter().map(|(c, t)| (c.clone(), t.cursor)).collect();
        all.sort();
        all
    }

    /// Takes one message off the wire. What may go to the app now is appended to `out`, in
    /// order; a returned [`Fetch`] asks for the gap below it. `own` says that this is one
    /// of this session's sends that is still waiting for its acknowledgment. A message of
    /// a conversation not followed yet starts following it from its first message.
    pub(crate) fn receive(&mut self, m: pb::Message, own: bool, out: &mut Vec<pb::Message>) -> Option<Fetch> {
        let max_held = self.max_held;
        // The hot path: a followed conversation, the next seq. No allocation.
        if !self.tracks.contains_key(&m.conversation_id) {
            self.tracks.insert(m.conversation_id.clone(), Track::default());
        }
        let t = self.tracks.get_mut(&m.conversation_id)?;
        let conversation_id = (m.seq > t.cursor + 1).then(|| m.conversation_id.clone());
        if t.take(m, own, max_held, out) { conversation_id.and_then(|c| t.fetch(&c)) } else { None }
    }

    /// This session's send was stored as `seq`: skip that seq. Messages held back behind
    /// it may go out now (appended to `out`). A conversation not followed yet is followed
    /// from `seq` on: the app evidently has it open, and its history is the app's to load.
    pub(crate) fn own_sent(&mut self, conversation_id: &str, seq: u64, out: &mut Vec<pb::Message>) {
        let t = self.tracks.entry(conversation_id.to_owned()).or_insert_with(|| Track::at(seq.saturating_sub(1)));
        if seq <= t.cursor {
            return;
        }
        if seq == t.cursor + 1 {
            t.cursor = seq;
            t.release(out);
        } else {
            t.remember_own(seq);
        }
    }

    /// The answer to a [`Fetch`] after `after_seq`: a page of messages (ascending), whether
    /// the server has more after it, and the conversation's newest seq. Returns the next
    /// fetch while the conversation is still behind.
    pub(crate) fn fetched(
        &mut self,
        fetch: &Fetch,
        page: pb::HistoryPage,
        own: impl Fn(&pb::Message) -> bool,
        out: &mut Vec<pb::Message>,
    ) -> Option<Fetch> {
        let max_held = self.max_held;
        let t = self.tracks.get_mut(&fetch.conversation_id)?;
        t.fetching = false;
        let useful = page.messages.iter().any(|m| m.seq > fetch.after_seq);
        for m in page.messages {
            if m.conversation_id == fetch.conversation_id || m.conversation_id.is_empty() {
                let own = own(&m);
                let m = pb::Message { conversation_id: fetch.conversation_id.clone(), ..m };
                t.take(m, own, max_held, out);
            }
        }
        let behind = page.has_more || t.has_gap() || t.cursor < page.last_seq;
        if !behind {
            return None;
        }
        if !useful {
            // The server has nothing to fill the gap with. Rather than ask forever, give
            // the app what is held, from just below the first held seq.
            if let Some(&first) = t.held.keys().next() {
                warn!(conversation = %fetch.conversation_id, from = t.cursor + 1, to = first - 1, "the server cannot fill a gap; skipping it");
                t.cursor = first - 1;
                t.release(out);
            }
            return None;
        }
        t.fetch(&fetch.conversation_id)
    }

    /// A fetch of the gap below held messages, if there is one and no fetch is in flight.
    pub(crate) fn fetch_gap(&mut self, conversation_id: &str) -> Option<Fetch> {
        let t = self.tracks.get_mut(conversation_id)?;
        if t.has_gap() { t.fetch(conversation_id) } else { None }
    }

    /// A fetch failed (the connection dropped, or the server refused it), or was not made
    /// after all; another may be made.
    pub(crate) fn fetch_failed(&mut self, conversation_id: &str) {
        if let Some(t) = self.tracks.get_mut(conversation_id) {
            t.fetching = false;
        }
    }

    /// A fetch of everything after the cursor for every followed conversation not being
    /// fetched already.
    pub(crate) fn fetch_all(&mut self) -> Vec<Fetch> {
        let mut all: Vec<Fetch> = self.tracks.iter_mut().filter_map(|(c, t)| t.fetch(c)).collect();
        all.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
        all
    }

    /// A new connection: fetches of the old one are void.
    pub(crate) fn reset_fetches(&mut self) {
        for t in self.tracks.values_mut() {
            t.fetching = false;
        }
    }
}

#[cfg(test)]
mod tests;
