//! The session's logic without IO: what an incoming frame means, which waiting request
//! it answers, and how requests learn that the session is over.
//!
//! [`crate::client`] is the driver: it reads frames off the QUIC stream, hands them to
//! [`route`], and does what the result says. Everything here is tested with plain
//! values.

use std::collections::HashMap;

use legalchat_protocol::codec::DEFAULT_MAX_FRAME_LEN;
use legalchat_protocol::pb;
use legalchat_protocol::validate::DEFAULT_MAX_MESSAGE_BYTES;
use tokio::sync::oneshot;

use crate::outbox::EntryId;
use crate::{Error, Event};

/// What the server said about this session when it accepted the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The user (the token's `sub`).
    pub user_id: String,
    /// The user's global role.
    pub role: pb::UserRole,
    /// Server-assigned id of this session, for support and the audit trail.
    pub session_id: String,
    /// Largest frame the server accepts, in bytes after the length prefix.
    pub max_frame_size: usize,
    /// Largest message text the server accepts, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Server time when the session was authenticated, milliseconds since the epoch.
    pub server_time_ms: i64,
    /// The user's display name, when the token carries one (else empty).
    pub display_name: String,
    /// Largest attachment the server accepts, in bytes (0: not announced).
    pub max_file_bytes: u64,
    /// When the session's token expires, milliseconds since the epoch (0: not announced).
    pub token_expires_at_ms: i64,
    /// The session's events come on its shared connection's fan-out stream (a session of
    /// a [`crate::SharedConnection`] asks for that), not on its own stream.
    pub fanout: bool,
}

impl SessionInfo {
    pub(crate) fn from_pb(a: pb::Authenticated) -> Self {
        // 0 means "not announced" (an older server); fall back to the protocol defaults.
        let or_default = |announced: u32, default: usize| match usize::try_from(announced) {
            Ok(0) | Err(_) => default,
            Ok(n) => n,
        };
        Self {
            role: a.role(),
            max_frame_size: or_default(a.max_frame_size, DEFAULT_MAX_FRAME_LEN),
            max_message_bytes: or_default(a.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES),
            server_time_ms: a.server_time_ms,
            user_id: a.user_id,
            session_id: a.session_id,
            display_name: a.display_name,
            max_file_bytes: a.max_file_bytes,
            token_expires_at_ms: a.token_expires_at_ms,
            fanout: a.fanout,
        }
    }
}

/// Reads the server's answer to `Authenticate`. `None` means the frame is of a kind this
/// client does not know and must be ignored (a newer server); keep reading.
pub(crate) fn authentication_outcome(frame: pb::ServerFrame, request_id: u64) -> Option<Result<SessionInfo, Error>> {
    use pb::server_frame::Event as E;
    let outcome = match frame.event? {
        E::Ack(pb::Ack { request_id: id, result: Some(pb::ack::Result::Authenticated(a)) }) if id == request_id => {
            Ok(SessionInfo::from_pb(a))
        }
        E::Ack(ack) => Err(Error::Protocol(format!(
            "expected the answer to Authenticate, got an Ack of request {} carrying {}",
            ack.request_id,
            ack.result.as_ref().map_or("nothing", answer_name)
        ))),
        E::Error(e) => Err(Error::from_server(&e)),
        E::Unauthorized(u) => Err(Error::Unauthorized(u.reason)),
        E::Goodbye(g) => Err(Error::Server { code: g.code(), message: g.reason, retry_after: None }),
        E::ReceiveMessage(_) | E::ConversationUpdated(_) | E::Typing(_) | E::RoomUsers(_) | E::Presence(_) | E::Receipt(_) => {
            Err(Error::Protocol("the server sent an event before accepting the token".into()))
        }
    };
    Some(outcome)
}

/// The answer to one request: what the `Ack` carried, or why it failed.
pub(crate) type Reply = Result<pb::ack::Result, Error>;

/// What an incoming frame means for the session.
#[derive(Debug)]
pub(crate) enum Routed {
    /// The answer to request `request_id`.
    Reply { request_id: u64, reply: Reply },
    /// An event for the application.
    Event(Event),
    /// A session-level error: the server is about to close the session, and this is the
    /// reason to report when it does.
    SessionError(String),
    /// Nothing to do; the string says why, for the debug log.
    Ignore(&'static str),
}

/// Decides what a frame received after authentication means.
pub(crate) fn route(frame: pb::ServerFrame) -> Routed {
    use pb::server_frame::Event as E;
    let Some(event) = frame.event else {
        return Routed::Ignore("frame of an unknown kind");
    };
    match event {
        E::Ack(pb::Ack { request_id: 0, .. }) => Routed::Ignore("Ack without a request id"),
        E::Ack(pb::Ack { request_id, result: Some(result) }) => Routed::Reply { request_id, reply: Ok(result) },
        E::Ack(pb::Ack { request_id, result: None }) => Routed::Reply {
            request_id,
            reply: Err(Error::Protocol(format!("the answer to request {request_id} carries no result this client knows"))),
        },
        E::Error(e) if e.request_id == 0 => Routed::SessionError(format!("server error {}: {}", e.code().as_str_name(), e.message)),
        E::Error(e) => Routed::Reply { request_id: e.request_id, reply: Err(Error::from_server(&e)) },
        E::ReceiveMessage(pb::ReceiveMessage { message: Some(m) }) => Routed::Event(Event::Message(m)),
        E::ReceiveMessage(pb::ReceiveMessage { message: None }) => Routed::Ignore("ReceiveMessage without a message"),
        E::ConversationUpdated(pb::ConversationUpdated { conversation: Some(c) }) => Routed::Event(Event::ConversationUpdated(c)),
        E::ConversationUpdated(pb::ConversationUpdated { conversation: None }) => {
            Routed::Ignore("ConversationUpdated without a conversation")
        }
        E::Goodbye(g) => Routed::Event(Event::Goodbye { code: g.code(), reason: g.reason }),
        E::Unauthorized(u) => Routed::SessionError(format!("unauthorized: {}", u.reason)),
        E::Typing(t) => Routed::Event(Event::Typing(t)),
        E::RoomUsers(r) => Routed::Event(Event::RoomUsers(r)),
        E::Presence(pb::PresenceEvent { presence: Some(p) }) => Routed::Event(Event::Presence(p)),
        E::Presence(pb::PresenceEvent { presence: None }) => Routed::Ignore("PresenceEvent without a presence"),
        E::Receipt(r) => Routed::Event(Event::Receipt(r)),
    }
}

/// The close reason a `Goodbye` implies.
pub(crate) fn goodbye_reason(code: pb::ErrorCode, reason: &str) -> String {
    format!("the server said goodbye ({}): {reason}", code.as_str_name())
}

/// Who waits for the answer to a request.
#[derive(Debug)]
enum Waiter {
    /// A caller, through a channel.
    Caller(oneshot::Sender<Reply>),
    /// A send of the outbox; the answer is the outbox's to settle.
    Send(EntryId),
}

/// What became of an answer.
#[derive(Debug)]
pub(crate) enum Completed {
    /// Handed to the caller waiting for it.
    Answered,
    /// Nobody waits for it (the request timed out or was cancelled).
    Nobody,
    /// The answer to an outbox entry's send (boxed: answers are large next to the other
    /// variants).
    Send { entry: EntryId, reply: Box<Reply> },
}

/// Requests waiting for their answers on one connection, and whether that connection can
/// still answer any.
///
/// Once [`close`](Self::close)d, every waiting caller has failed (with
/// [`Error::Disconnected`], or [`Error::Closed`] when the client itself ended) and every
/// later [`register`](Self::register) fails at once, so no request can wait for an answer
/// that cannot come. Outbox sends waiting on the connection are simply let go: the
/// outbox still holds them and sends them again on the next connection.
#[derive(Debug, Default)]
pub(crate) struct PendingRequests {
    waiting: HashMap<u64, Waiter>,
    closed: Option<(String, bool)>,
}

impl PendingRequests {
    /// Starts waiting for the answer to `request_id`.
    pub(crate) fn register(&mut self, request_id: u64) -> Result<oneshot::Receiver<Reply>, Error> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(request_id, Waiter::Caller(tx));
        Ok(rx)
    }

    /// Starts waiting for the answer to `request_id`, the send of outbox entry `entry`.
    pub(crate) fn register_send(&mut self, request_id: u64, entry: EntryId) -> Result<(), Error> {
        self.check_open()?;
        self.waiting.insert(request_id, Waiter::Send(entry));
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        match &self.closed {
            Some((reason, ended)) => Err(closed_error(reason, *ended)),
            None => Ok(()),
        }
    }

    /// Delivers the answer to `request_id`.
    pub(crate) fn complete(&mut self, request_id: u64, reply: Reply) -> Completed {
        match self.waiting.remove(&request_id) {
            Some(Waiter::Caller(tx)) => {
                if tx.send(reply).is_ok() {
                    Completed::Answered
                } else {
                    Completed::Nobody
                }
            }
            Some(Waiter::Send(entry)) => Completed::Send { entry, reply: Box::new(reply) },
            None => Completed::Nobody,
        }
    }

    /// Stops waiting for `request_id` (timeout or cancellation).
    pub(crate) fn forget(&mut self, request_id: u64) {
        self.waiting.remove(&request_id);
    }

    /// Fails every waiting caller and every later request: with [`Error::Closed`] when
    /// the client has `ended`, else with [`Error::Disconnected`]. The first reason wins.
    pub(crate) fn close(&mut self, reason: &str, ended: bool) {
        let (reason, ended) = self.closed.get_or_insert_with(|| (reason.to_owned(), ended)).clone();
        for (_, waiter) in self.waiting.drain() {
            if let Waiter::Caller(tx) = waiter {
                let _ = tx.send(Err(closed_error(&reason, ended)));
            }
        }
    }

    /// Why the connection closed, once it has.
    pub(crate) fn closed_reason(&self) -> Option<&str> {
        self.closed.as_ref().map(|(r, _)| r.as_str())
    }

    /// Number of requests waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

fn closed_error(reason: &str, ended: bool) -> Error {
    if ended { Error::Closed(reason.to_owned()) } else { Error::Disconnected(reason.to_owned()) }
}

/// Short name of an answer kind, for error messages.
pub(crate) fn answer_name(result: &pb::ack::Result) -> &'static str {
    use pb::ack::Result as R;
    match result {
        R::Authenticated(_) => "Authenticated",
        R::Conversation(_) => "Conversation",
        R::Conversations(_) => "ConversationList",
        R::MessageAccepted(_) => "MessageAccepted",
        R::History(_) => "HistoryPage",
        R::Pong(_) => "Pong",
        R::RoomUsers(_) => "RoomUsers",
        R::Presence(_) => "PresenceList",
        R::CatchUp(_) => "CatchUpPage",
        R::Receipts(_) => "ReceiptList",
        R::Done(_) => "Done",
        R::Audit(_) => "MessageAudit",
        R::Ticket(_) => "TransferTicket",
    }
}

fn unexpected(request: &str, expected: &str, got: &pb::ack::Result) -> Error {
    Error::Protocol(format!("{request} was answered with {} instead of {expected}", answer_name(got)))
}

/// Typed views of an answer; each names the request when the server answered with the
/// wrong kind.
pub(crate) mod answer {
    use super::*;
    use pb::ack::Result as R;

    pub(crate) fn conversation(request: &str, r: R) -> Result<pb::Conversation, Error> {
        match r {
            R::Conversation(c) => Ok(c),
            other => Err(unexpected(request, "Conversation", &other)),
        }
    }

    pub(crate) fn conversations(r: R) -> Result<Vec<pb::Conversation>, Error> {
        match r {
            R::Conversations(list) => Ok(list.conversations),
            other => Err(unexpected("ListConversations", "ConversationList", &other)),
        }
    }

    pub(crate) fn message_accepted(r: R) -> Result<pb::MessageAccepted, Error> {
        match r {
            R::MessageAccepted(m) => Ok(m),
            other => Err(unexpected("SendMessage", "MessageAccepted", &other)),
        }
    }

    pub(crate) fn history(r: R) -> Result<pb::HistoryPage, Error> {
        match r {
            R::History(page) => Ok(page),
            other => Err(unexpected("GetHistory", "HistoryPage", &other)),
        }
    }

    pub(crate) fn pong(r: R) -> Result<pb::Pong, Error> {
        match r {
            R::Pong(p) => Ok(p),
            other => Err(unexpected("Ping", "Pong", &other)),
        }
    }

    pub(crate) fn room_users(r: R) -> Result<pb::RoomUsers, Error> {
        match r {
            R::RoomUsers(u) => Ok(u),
            other => Err(unexpected("JoinRoom", "RoomUsers", &other)),
        }
    }

    pub(crate) fn presence(r: R) -> Result<pb::PresenceList, Error> {
        match r {
            R::Presence(p) => Ok(p),
            other => Err(unexpected("GetPresence", "PresenceList", &other)),
        }
    }

    pub(crate) fn catch_up(r: R) -> Result<pb::CatchUpPage, Error> {
        match r {
            R::CatchUp(p) => Ok(p),
            other => Err(unexpected("CatchUp", "CatchUpPage", &other)),
        }
    }

    pub(crate) fn receipts(r: R) -> Result<pb::ReceiptList, Error> {
        match r {
            R::Receipts(l) => Ok(l),
            other => Err(unexpected("GetReceipts", "ReceiptList", &other)),
        }
    }

    /// The answer to a request that only succeeds (`MarkRead`, `LeaveRoom`, ...).
    pub(crate) fn done(request: &str, r: R) -> Result<(), Error> {
        match r {
            R::Done(_) => Ok(()),
            other => Err(unexpected(request, "Done", &other)),
        }
    }
}

#[cfg(test)]
mod tests;
