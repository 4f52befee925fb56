//! Sends that are not acknowledged yet: the bounded queue that lets the app send while
//! the connection is down, and that resends what was in flight when it dropped.
//!
//! Every send passes through here. An entry is written on the current connection when
//! there is one; when the connection drops before the server's acknowledgment arrived,
//! the entry stays and is written again on the next connection with the *same* client
//! message id, so that the server stores it once (the retry is acknowledged with
//! `duplicate: true` and the original seq). Entries are kept, and resent, in the order
//! the app made the sends; the server applies one session's requests to a conversation
//! in the order they arrive, which keeps each conversation's order.
//!
//! No IO here: the driver asks which entries to write and reports answers.

use std::collections::BTreeMap;

use legalchat_protocol::pb;
use tokio::sync::oneshot;

use crate::{Error, Sent};

/// Default number of unacknowledged sends the outbox holds.
pub const DEFAULT_OUTBOX_CAPACITY: usize = 1_000;

/// Where the caller of `send` waits for the outcome.
pub(crate) type SendWaiter = oneshot::Sender<Result<Sent, Error>>;

/// Identifies an entry for as long as it is in the outbox.
pub(crate) type EntryId = u64;

/// Whether (and where) an entry has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Not written on any connection yet.
    Unsent,
    /// Written on connection `epoch` as request `request_id`.
    Sent { epoch: u64, request_id: u64 },
}

/// One unacknowledged send.
#[derive(Debug)]
pub(crate) struct PendingSend {
    /// The request, as it is (re)sent.
    pub(crate) message: pb::SendMessage,
    pub(crate) attempt: Attempt,
    pub(crate) waiter: Option<SendWaiter>,
}

impl PendingSend {
    /// The request that (re)sends this entry.
    pub(crate) fn request(&self) -> pb::client_frame::Request {
        pb::client_frame::Request::SendMessage(self.message.clone())
    }
}

/// The outbox is full; the new send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxFull {
    pub(crate) capacity: usize,
}

/// Unacknowledged sends in the order they were made.
#[derive(Debug)]
pub(crate) struct Outbox {
    capacity: usize,
    next_id: EntryId,
    // Ids grow with every push, so iteration order is submission order.
    entries: BTreeMap<EntryId, PendingSend>,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, next_id: 1, entries: BTreeMap::new() }
    }

    /// Queues a send. Fails when `capacity` sends are already waiting.
    pub(crate) fn push(&mut self, message: pb::SendMessage, waiter: Option<SendWaiter>) -> Result<EntryId, OutboxFull> {
        if self.entries.len() >= self.capacity {
            return Err(OutboxFull { capacity: self.capacity });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, PendingSend { message, attempt: Attempt::Unsent, waiter });
        Ok(id)
    }

    /// The entry `id`, if it still waits.
    pub(crate) fn get(&self, id: EntryId) -> Option<&PendingSend> {
        self.entries.get(&id)
    }

    /// Records that `id` was written on connection `epoch` as `request_id`.
    pub(crate) fn mark_sent(&mut self, id: EntryId, epoch: u64, request_id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.attempt = Attempt::Sent { epoch, request_id };
        }
    }

    /// Removes `id` (answered, or its caller gave up).
    pub(crate) fn take(&mut self, id: EntryId) -> Option<PendingSend> {
        self.entries.remove(&id)
    }

    /// The entries to write on connection `epoch`, oldest first: those never written and
    /// those written on an earlier connection, whose answer was lost with it.
    pub(crate) fn due(&self, epoch: u64) -> Vec<EntryId> {
        self.entries
            .iter()
            .filter(|(_, e)| match e.attempt {
                Attempt::Unsent => true,
                Attempt::Sent { epoch: sent_on, .. } => sent_on != epoch,
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a send of this session with `client_message_id` into `conversation_id` is
    /// still waiting for its answer: the server's copy of it is then this session's own
    /// message, not news for the app.
    pub(crate) fn is_waiting(&self, conversation_id: &str, client_message_id: &str) -> bool {
        // At most `capacity` entries, and only consulted for the user's own messages.
        self.entries.values().any(|e| e.message.client_message_id == client_message_id && e.message.conversation_id == conversation_id)
    }

    /// Whether any send into `conversation_id` waits for its answer: its seq may be the
    /// one missing below a message that arrived early.
    pub(crate) fn has_pending_in(&self, conversation_id: &str) -> bool {
        self.entries.values().any(|e| e.message.conversation_id == conversation_id)
    }

    /// Removes every entry (the client is closing).
    pub(crate) fn drain(&mut self) -> Vec<PendingSend> {
        std::mem::take(&mut self.entries).into_values().collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The result a send's caller gets from an answer.
pub(crate) fn outcome(conversation_id: &str, reply: Result<pb::ack::Result, Error>) -> Result<Sent, Error> {
    let accepted = crate::session::answer::message_accepted(reply?)?;
    if !accepted.conversation_id.is_empty() && accepted.conversation_id != conversation_id {
        return Err(Error::Protocol(format!(
            "a message sent to {conversation_id} was acknowledged for conversation {}",
            accepted.conversation_id
        )));
    }
    Ok(accepted.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(conv: &str, client_message_id: &str, t: &str) -> pb::SendMessage {
        pb::SendMessage {
            conversation_id: conv.into(),
            client_message_id: client_message_id.into(),
            content: Some(pb::MessageContent { text: t.into(), ..Default::default() }),
            reply_to_seq: 0,
        }
    }

    #[test]
    fn entries_keep_the_order_of_the_sends() {
        let mut o = Outbox::new(10);
        let a = o.push(send("c1", "m1", "one"), None).unwrap();
        let b = o.push(send("c2", "m2", "two"), None).unwrap();
        let c = o.push(send("c1", "m3", "three"), None).unwrap();
        assert_eq!(o.due(1), [a, b, c]);
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn a_full_outbox_refuses_new_sends() {
        let mut o = Outbox::new(2);
        o.push(send("c", "1", "a"), None).unwrap();
        o.push(send("c", "2", "b"), None).unwrap();
        assert_eq!(o.push(send("c", "3", "c"), None), Err(OutboxFull { capacity: 2 }));
        let first = o.due(1)[0];
        o.take(first);
        assert!(o.push(send("c", "3", "c"), None).is_ok(), "room again once one is answered");
    }

    #[test]
    fn what_was_in_flight_on_a_lost_connection_is_due_again() {
        let mut o = Outbox::new(10);
        let a = o.push(send("c", "m1", "one"), None).unwrap();
        let b = o.push(send("c", "m2", "two"), None).unwrap();
        let c = o.push(send("c", "m3", "three"), None).unwrap();
        o.mark_sent(a, 1, 10);
        o.mark_sent(b, 1, 11);
        assert_eq!(o.due(1), [c], "on the same connection only the unsent one is due");
        assert_eq!(o.due(2), [a, b, c], "on the next connection everything unanswered, in order");
        o.mark_sent(a, 2, 3);
        assert_eq!(o.due(2), [b, c]);
    }

    #[test]
    fn resends_carry_the_same_client_message_id() {
        let mut o = Outbox::new(10);
        let a = o.push(send("c", "m1", "one"), None).unwrap();
        let first = o.get(a).unwrap().request();
        o.mark_sent(a, 1, 10);
        let second = o.get(a).unwrap().request();
        assert_eq!(first, second);
        match second {
            pb::client_frame::Request::SendMessage(s) => {
                assert_eq!((s.conversation_id.as_str(), s.client_message_id.as_str()), ("c", "m1"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn own_messages_are_recognised_while_waiting() {
        let mut o = Outbox::new(10);
        let a = o.push(send("c", "m1", "one"), None).unwrap();
        assert!(o.is_waiting("c", "m1"));
        assert!(!o.is_waiting("other", "m1"), "the id is per conversation");
        assert!(!o.is_waiting("c", "m2"));
        o.take(a);
        assert!(!o.is_waiting("c", "m1"));
    }

    #[test]
    fn outcomes_check_the_conversation() {
        let accepted = |conv: &str| {
            Ok(pb::ack::Result::MessageAccepted(pb::MessageAccepted {
                conversation_id: conv.into(),
                message_id: "ab".repeat(16),
                seq: 7,
                timestamp_ms: 1,
                duplicate: true,
            }))
        };
        let sent = outcome("c", accepted("c")).unwrap();
        assert_eq!((sent.seq, sent.duplicate), (7, true));
        assert!(matches!(outcome("c", accepted("d")), Err(Error::Protocol(_))));
        assert!(matches!(outcome("c", Err(Error::Timeout)), Err(Error::Timeout)));
        assert!(matches!(outcome("c", Ok(pb::ack::Result::Done(pb::Done {}))), Err(Error::Protocol(_))));
    }

    #[test]
    fn pending_sends_are_known_per_conversation() {
        let mut o = Outbox::new(10);
        let a = o.push(send("c", "m1", "one"), None).unwrap();
        assert!(o.has_pending_in("c"));
        assert!(!o.has_pending_in("d"));
        o.take(a);
        assert!(!o.has_pending_in("c"));
    }

    #[test]
    fn draining_empties_it() {
        let mut o = Outbox::new(10);
        o.push(send("c", "m1", "one"), None).unwrap();
        o.push(send("c", "m2", "two"), None).unwrap();
        assert_eq!(o.drain().len(), 2);
        assert_eq!(o.len(), 0);
        assert_eq!(o.capacity(), 10);
    }
}
