//! What a browser hears: each SDK [`Event`] of its daemon session as a Socket.IO event
//! name and JSON payload. Pure; the order is the SDK's (per conversation: every log entry
//! once, in seq order, across reconnects).
//!
//! ```text
//!  Event::Message (a message)          ──► receive_message        {MessageSchema + seq}
//!  Event::Message (edit/delete/…)      ──► message_edited | message_deleted | reaction_added |
//!                                          reaction_removed | message_pinned | message_unpinned |
//!                                          conversation_event     {the entry, with `event`}
//!  Event::ConversationUpdated          ──► conversation_updated   {ConversationSchema}
//!  Event::Receipt                      ──► message_delivered | message_read
//!  Event::Typing                       ──► typing_start | typing_stop
//!  Event::RoomUsers                    ──► room_users
//!  Event::Presence                     ──► user_online | user_offline
//!  Event::State                        ──► connection_state
//!  Event::Goodbye (UNAUTHORIZED)       ──► unauthorized           (expired, revoked, deactivated; then closed)
//!  Event::Closed (token refused)       ──► unauthorized           (then the socket is closed)
//!  Event::Closed (otherwise)           ──► error                  (then the socket is closed)
//! ```

use legalchat_protocol::pb::{self, conversation_event::Kind};
use legalchat_protocol::time::rfc3339;
use legalchat_sdk::{ConnectionState, Event};
use serde::ser::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::payload;

/// One Socket.IO event for the browser.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The event name.
    pub name: &'static str,
    /// Its one argument.
    pub payload: Payload,
    /// The session is over: close the socket after sending this.
    pub last: bool,
}

impl Outgoing {
    fn new(name: &'static str, payload: Value) -> Self {
        Self { name, payload: Payload::Json(payload), last: false }
    }
}

/// An event's argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A log entry, written as [`payload::message`] spells it straight into the packet.
    Entry(Box<pb::Message>),
    /// Anything else.
    Json(Value),
}

#[cfg(test)]
impl Payload {
    /// The argument as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Entry(m) => payload::message(m, None),
            Self::Json(v) => v.clone(),
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Entry(m) => payload::Entry { message: m, receipts: None }.serialize(s),
            Self::Json(v) => v.serialize(s),
        }
    }
}

/// The event name of a log entry: `receive_message` for a message, else what it did.
pub fn entry_event_name(m: &pb::Message) -> &'static str {
    match m.event.as_ref().and_then(|e| e.kind.as_ref()) {
        None => "receive_message",
        Some(Kind::Edited(_)) => "message_edited",
        Some(Kind::Deleted(_)) => "message_deleted",
        Some(Kind::Reaction(r)) if r.added => "reaction_added",
        Some(Kind::Reaction(_)) => "reaction_removed",
        Some(Kind::Pin(p)) if p.pinned => "message_pinned",
        Some(Kind::Pin(_)) => "message_unpinned",
        Some(Kind::ParticipantsAdded(_) | Kind::ParticipantRemoved(_) | Kind::RoleChanged(_) | Kind::ConversationChanged(_)) => {
            "conversation_event"
        }
    }
}

/// The browser's event for an SDK event; `None` for what browsers are not told
/// (`Goodbye`, which a `connection_state` follows, and folded states the bridge does not
/// keep).
pub fn translate(event: Event) -> Option<Outgoing> {
    Some(match event {
        Event::Message(m) => Outgoing { name: entry_event_name(&m), payload: Payload::Entry(Box::new(m)), last: false },
        Event::ConversationUpdated(c) => Outgoing::new("conversation_updated", payload::conversation(&c)),
        Event::Receipt(r) => {
            let read = r.kind() == pb::ReceiptKind::Read;
            let mut body = json!({
                "conversationId": r.conversation_id,
                "userId": r.user_id,
                "seq": r.seq,
                "timestamp": rfc3339(r.timestamp_ms),
            });
            if !read {
                body["status"] = json!("delivered");
            }
            Outgoing::new(if read { "message_read" } else { "message_delivered" }, body)
        }
        Event::Typing(t) => Outgoing::new(
            if t.active { "typing_start" } else { "typing_stop" },
            json!({"conversationId": t.conversation_id, "userId": t.user_id}),
        ),
        Event::RoomUsers(r) => Outgoing::new("room_users", json!({"conversationId": r.conversation_id, "users": r.online_user_ids})),
        Event::Presence(p) => Outgoing::new(
            if p.online { "user_online" } else { "user_offline" },
            json!({"userId": p.user_id, "lastSeen": if p.last_seen_ms == 0 { Value::Null } else { json!(rfc3339(p.last_seen_ms)) }}),
        ),
        Event::State(state) => Outgoing::new("connection_state", connection_state(&state)),
        Event::Closed { reason } => {
            // The SDK ends a client whose token the server refused on reconnecting with a
            // reason that starts so (`Error::Unauthorized`'s spelling).
            let unauthorized = reason.starts_with("unauthorized");
            let (name, code) = if unauthorized { ("unauthorized", "UNAUTHENTICATED") } else { ("error", "UNAVAILABLE") };
            Outgoing { name, payload: Payload::Json(json!({"code": code, "message": reason})), last: true }
        }
        // The token expired, or an admin revoked the sessions or deactivated the user: the
        // browser hears `unauthorized` at once, and the socket is closed.
        Event::Goodbye { code: pb::ErrorCode::Unauthorized, reason } => {
            Outgoing { name: "unauthorized", payload: Payload::Json(json!({"code": "UNAUTHENTICATED", "message": reason})), last: true }
        }
        Event::Goodbye { .. } | Event::MessageUpdated(_) => return None,
        // The SDK's event list may grow; what the bridge does not know, browsers do not hear.
        _ => return None,
    })
}

/// `connection_state`: how the bridge's session with the daemon stands. While it is
/// `disconnected` or `reconnecting`, sends wait (up to their timeout) and nothing is lost;
/// `resumed` follows once everything missed has been delivered.
pub fn connection_state(state: &ConnectionState) -> Value {
    match state {
        ConnectionState::Connected => json!({"state": "connected"}),
        ConnectionState::Disconnected { reason } => json!({"state": "disconnected", "reason": reason}),
        ConnectionState::Reconnecting { attempt, delay } => {
            json!({"state": "reconnecting", "attempt": attempt, "delayMs": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)})
        }
        ConnectionState::Resumed { missed } => json!({"state": "resumed", "missed": missed}),
        ConnectionState::Closed { reason } => json!({"state": "closed", "reason": reason}),
        _ => json!({"state": "unknown"}),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(kind: Option<Kind>) -> pb::Message {
        pb::Message {
            conversation_id: "c".into(),
            seq: 4,
            sender_id: "bob".into(),
            event: kind.map(|k| pb::ConversationEvent { kind: Some(k) }),
            ..Default::default()
        }
    }

    #[test]
    fn every_kind_of_entry_has_its_event_and_keeps_its_seq() {
        let cases = [
            (None, "receive_message"),
            (Some(Kind::Edited(pb::MessageEdited { target_seq: 1, ..Default::default() })), "message_edited"),
            (Some(Kind::Deleted(pb::MessageDeleted { target_seq: 1 })), "message_deleted"),
            (Some(Kind::Reaction(pb::ReactionChanged { target_seq: 1, emoji: "👍".into(), added: true })), "reaction_added"),
            (Some(Kind::Reaction(pb::ReactionChanged { target_seq: 1, emoji: "👍".into(), added: false })), "reaction_removed"),
            (Some(Kind::Pin(pb::PinChanged { target_seq: 1, pinned: true })), "message_pinned"),
            (Some(Kind::Pin(pb::PinChanged { target_seq: 1, pinned: false })), "message_unpinned"),
            (Some(Kind::ParticipantRemoved(pb::ParticipantRemoved { user_id: "dan".into() })), "conversation_event"),
        ];
        for (kind, name) in cases {
            let out = translate(Event::Message(entry(kind))).unwrap();
            assert_eq!(out.name, name);
            let payload = out.payload.to_value();
            assert_eq!((payload["seq"].as_u64(), payload["conversationId"].as_str()), (Some(4), Some("c")), "{name}");
            // What is written into the packet is that value.
            assert_eq!(serde_json::to_value(&out.payload).unwrap(), payload, "{name}");
            assert!(!out.last);
        }
    }

    #[test]
    fn receipts_say_who_and_how_far() {
        let r = |kind: pb::ReceiptKind| {
            translate(Event::Receipt(pb::ReceiptEvent {
                conversation_id: "c".into(),
                user_id: "bob".into(),
                kind: kind.into(),
                seq: 9,
                timestamp_ms: 1_700_000_000_000,
            }))
            .unwrap()
        };
        let read = r(pb::ReceiptKind::Read);
        assert_eq!(read.name, "message_read");
        assert_eq!(
            read.payload.to_value(),
            json!({"conversationId": "c", "userId": "bob", "seq": 9, "timestamp": "2023-11-14T22:13:20.000Z"})
        );
        let delivered = r(pb::ReceiptKind::Delivered);
        assert_eq!((delivered.name, delivered.payload.to_value()["status"].as_str()), ("message_delivered", Some("delivered")));
    }

    #[test]
    fn a_refused_token_is_unauthorized_and_ends_the_socket() {
        let out = translate(Event::Closed { reason: "unauthorized: token expired".into() }).unwrap();
        assert_eq!((out.name, out.last), ("unauthorized", true));
        assert_eq!(out.payload.to_value()["code"], "UNAUTHENTICATED");
        let out = translate(Event::Closed { reason: "reconnect policy gave up".into() }).unwrap();
        assert_eq!((out.name, out.last), ("error", true));
    }

    #[test]
    fn signals_and_states() {
        let t = translate(Event::Typing(pb::TypingEvent { conversation_id: "c".into(), user_id: "bob".into(), active: false })).unwrap();
        assert_eq!((t.name, t.payload.to_value()), ("typing_stop", json!({"conversationId": "c", "userId": "bob"})));
        let p = translate(Event::Presence(pb::Presence { user_id: "bob".into(), online: true, last_seen_ms: 0 })).unwrap();
        assert_eq!((p.name, p.payload.to_value()), ("user_online", json!({"userId": "bob", "lastSeen": null})));
        let s = translate(Event::State(ConnectionState::Reconnecting { attempt: 2, delay: Duration::from_millis(400) })).unwrap();
        assert_eq!(s.payload.to_value(), json!({"state": "reconnecting", "attempt": 2, "delayMs": 400}));
        assert_eq!(translate(Event::Goodbye { code: pb::ErrorCode::Unavailable, reason: "restart".into() }), None);
    }
}
