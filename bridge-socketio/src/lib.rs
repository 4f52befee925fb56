//! # legalchat-bridge
//!
//! The Socket.IO face of LegalChat for browsers and legacy web clients. Web clients speak
//! the event names of the product requirements (`send_message`, `receive_message`, …);
//! the bridge maps each to its protobuf counterpart on the QUIC protocol, so that the
//! bridge is a translation, never a second implementation of chat semantics.
//!
//! ```text
//!  browser ── Socket.IO (event names below) ──► bridge ── legalchat/1 over QUIC ──► legalchatd
//! ```
//!
//! This crate currently holds the event mapping, which is the contract the bridge server
//! and web client will be built on; the Socket.IO server itself is not here yet.

use legalchat_protocol::pb;

/// Which way an event travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Browser to server.
    FromClient,
    /// Server to browser.
    ToClient,
    /// Socket.IO's own lifecycle.
    Lifecycle,
}

/// One event of the requirements, and the protocol message that carries its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMapping {
    /// The Socket.IO event name.
    pub event: &'static str,
    /// Which way it travels.
    pub direction: Direction,
    /// The protobuf message (in `legalchat.v1`) with the same meaning.
    pub protocol: &'static str,
}

/// Every event of the requirements' `SOCKET_EVENTS`, with its protocol counterpart.
pub const EVENTS: &[EventMapping] = &[
    EventMapping { event: "connection", direction: Direction::Lifecycle, protocol: "(QUIC connection + session stream)" },
    EventMapping { event: "disconnect", direction: Direction::Lifecycle, protocol: "Goodbye / connection close" },
    EventMapping { event: "authenticate", direction: Direction::FromClient, protocol: "Authenticate" },
    EventMapping { event: "send_message", direction: Direction::FromClient, protocol: "SendMessage" },
    EventMapping { event: "receive_message", direction: Direction::ToClient, protocol: "ReceiveMessage" },
    EventMapping { event: "message_delivered", direction: Direction::ToClient, protocol: "Ack.message_accepted / ReceiptEvent{DELIVERED}" },
    EventMapping { event: "message_read", direction: Direction::FromClient, protocol: "MarkRead / ReceiptEvent{READ}" },
    EventMapping { event: "typing_start", direction: Direction::FromClient, protocol: "Typing{active: true} / TypingEvent" },
    EventMapping { event: "typing_stop", direction: Direction::FromClient, protocol: "Typing{active: false} / TypingEvent" },
    EventMapping { event: "join_room", direction: Direction::FromClient, protocol: "JoinRoom" },
    EventMapping { event: "leave_room", direction: Direction::FromClient, protocol: "LeaveRoom" },
    EventMapping { event: "room_users", direction: Direction::ToClient, protocol: "RoomUsers" },
    EventMapping { event: "user_online", direction: Direction::ToClient, protocol: "PresenceEvent{online: true}" },
    EventMapping { event: "user_offline", direction: Direction::ToClient, protocol: "PresenceEvent{online: false}" },
    EventMapping { event: "error", direction: Direction::ToClient, protocol: "Error" },
    EventMapping { event: "unauthorized", direction: Direction::ToClient, protocol: "Unauthorized" },
];

/// The mapping of a Socket.IO event name, if it is one of the requirements' events.
pub fn mapping(event: &str) -> Option<&'static EventMapping> {
    EVENTS.iter().find(|m| m.event == event)
}

/// The Socket.IO `error` payload for a protocol error: `{code, message, requestId}` with
/// the code spelled as in the `.proto` file (e.g. `"FORBIDDEN"`).
pub fn error_code_name(code: i32) -> &'static str {
    pb::ErrorCode::try_from(code).map_or("INTERNAL", |c| c.as_str_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_event_is_mapped_once() {
        // SOCKET_EVENTS of the requirements, verbatim.
        let required = [
            "connection",
            "disconnect",
            "authenticate",
            "send_message",
            "receive_message",
            "message_delivered",
            "message_read",
            "typing_start",
            "typing_stop",
            "join_room",
            "leave_room",
            "room_users",
            "user_online",
            "user_offline",
            "error",
            "unauthorized",
        ];
        for name in required {
            assert!(mapping(name).is_some(), "{name} has no protocol counterpart");
        }
        assert_eq!(EVENTS.len(), required.len());
    }

    #[test]
    fn error_codes_use_proto_spelling() {
        assert_eq!(error_code_name(pb::ErrorCode::Forbidden as i32), "FORBIDDEN");
        assert_eq!(error_code_name(9_999), "INTERNAL");
    }
}
