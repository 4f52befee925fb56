//! Folding a conversation's log into each message's current state.
//!
//! ```text
//!  log entries, in seq order ─► Timeline::apply ─┬─ a message: its state, as the server sent it
//!  (live, catch-up, history)                     └─ an event about message T: T's state changed
//!                                                   (edited text, tombstone, reactions, pin)
//! ```
//!
//! A message entry carries the message's state as of its `state_seq` (the server's newest
//! seq when it was read), so an event applies to a message only when the event's seq is
//! greater than the state's `state_seq`. With that rule a device that saw every event live
//! and a device that was offline and read the message later end with the same state.
//! Events about messages the timeline does not hold change nothing: whoever loads such a
//! message later gets its current state from the server.
//!
//! No IO; bounded: per conversation it keeps the newest `capacity` messages
//! ([`Timeline::with_capacity`]; 0 keeps none, and then costs nothing).

use std::collections::{BTreeMap, HashMap};

use legalchat_protocol::pb::{self, conversation_event::Kind};

/// Messages kept per conversation by [`Timeline::new`]; older ones are dropped first.
pub const MAX_MESSAGES_PER_CONVERSATION: usize = 5_000;

/// The current state of the messages a device has seen, per conversation.
#[derive(Debug)]
pub struct Timeline {
    conversations: HashMap<String, BTreeMap<u64, pb::Message>>,
    capacity: usize,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::with_capacity(MAX_MESSAGES_PER_CONVERSATION)
    }
}

impl Timeline {
    /// An empty timeline keeping [`MAX_MESSAGES_PER_CONVERSATION`] per conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty timeline keeping the newest `messages_per_conversation` messages of each
    /// conversation (0: none).
    pub fn with_capacity(messages_per_conversation: usize) -> Self {
        Self { conversations: HashMap::new(), capacity: messages_per_conversation }
    }

    /// Takes one log entry. Returns the new state of the message it changed: the message
    /// itself for a message entry, the target for an event about a message the timeline
    /// holds; `None` when nothing changed.
    pub fn apply(&mut self, entry: &pb::Message) -> Option<&pb::Message> {
        let Some(event) = &entry.event else { return self.insert(entry.clone()) };
        let target = match event.kind.as_ref()? {
            Kind::Edited(e) => e.target_seq,
            Kind::Deleted(d) => d.target_seq,
            Kind::Reaction(r) => r.target_seq,
            Kind::Pin(p) => p.target_seq,
            // Participant and settings events change the conversation, not a message.
            Kind::ParticipantsAdded(_) | Kind::ParticipantRemoved(_) | Kind::RoleChanged(_) | Kind::ConversationChanged(_) => {
                return None;
            }
        };
        let state = self.conversations.get_mut(&entry.conversation_id)?.get_mut(&target)?;
        if entry.seq <= state.state_seq {
            // Already part of the state this device holds.
            return None;
        }
        fold(state, entry);
        Some(state)
    }

    /// Takes a message in a state from the server (a history page, a catch-up, a live
    /// message). Kept only when it is at least as new as what the timeline holds.
    pub fn insert(&mut self, message: pb::Message) -> Option<&pb::Message> {
        if message.event.is_some() || self.capacity == 0 {
            return None;
        }
        let messages = self.conversations.entry(message.conversation_id.clone()).or_default();
        let seq = message.seq;
        let state_seq = message.state_seq.max(seq);
        let newer = messages.get(&seq).is_none_or(|held| state_seq >= held.state_seq.max(held.seq));
        if newer {
            let mut message = message;
            message.state_seq = state_seq;
            messages.insert(seq, message);
            while messages.len() > self.capacity {
                messages.pop_first();
            }
        }
        messages.get(&seq)
    }

    /// Whether it keeps any message (its capacity is not 0).
    pub fn keeps_messages(&self) -> bool {
        self.capacity > 0
    }

    /// The state of message `seq` of a conversation, if the timeline holds it.
    pub fn get(&self, conversation_id: &str, seq: u64) -> Option<&pb::Message> {
        self.conversations.get(conversation_id)?.get(&seq)
    }

    /// Every message held of a conversation, ascending by seq.
    pub fn messages(&self, conversation_id: &str) -> impl Iterator<Item = &pb::Message> {
        self.conversations.get(conversation_id).into_iter().flat_map(|m| m.values())
    }

    /// Forgets a conversation (the user left it).
    pub fn forget(&mut self, conversation_id: &str) {
        self.conversations.remove(conversation_id);
    }
}

/// Applies one event entry to a message's state.
fn fold(state: &mut pb::Message, entry: &pb::Message) {
    state.state_seq = entry.seq;
    let Some(kind) = entry.event.as_ref().and_then(|e| e.kind.as_ref()) else { return };
    match kind {
        Kind::Edited(e) => {
            // A redacted edit was superseded by a later edit or a delete, which follows.
            if let (false, Some(content)) = (e.redacted, &e.content)
                && state.deleted_at_ms == 0
            {
                state.content = Some(content.clone());
                state.edited_at_ms = entry.timestamp_ms;
            }
        }
        Kind::Deleted(_) => {
            state.content = None;
            state.mentions.clear();
            state.reactions.clear();
            state.pinned = false;
            state.deleted_at_ms = entry.timestamp_ms;
            state.deleted_by.clone_from(&entry.sender_id);
        }
        Kind::Reaction(r) => {
            let at = state.reactions.iter().position(|x| x.emoji == r.emoji);
            match (at, r.added) {
                (Some(i), true) => {
                    if !state.reactions[i].user_ids.contains(&entry.sender_id) {
                        state.reactions[i].user_ids.push(entry.sender_id.clone());
                    }
                }
                (None, true) => state.reactions.push(pb::Reaction { emoji: r.emoji.clone(), user_ids: vec![entry.sender_id.clone()] }),
                (Some(i), false) => {
                    state.reactions[i].user_ids.retain(|u| u != &entry.sender_id);
                    if state.reactions[i].user_ids.is_empty() {
                        state.reactions.remove(i);
                    }
                }
                (None, false) => {}
            }
        }
        Kind::Pin(p) => state.pinned = p.pinned,
        Kind::ParticipantsAdded(_) | Kind::ParticipantRemoved(_) | Kind::RoleChanged(_) | Kind::ConversationChanged(_) => {}
    }
}

#[cfg(test)]
mod tests;
