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
//! Each browser socket is a daemon session through the SDK ([`legalchat_sdk::Client`]),
//! many of them multiplexed on shared QUIC connections ([`pool`]); the bridge keeps no chat
//! state of its own. [`server::start`] runs it; the `legalchat-bridge` binary runs it
//! standalone, against one or more daemons. `bridge-socketio/README.md` documents every
//! event and payload.
//!
//! - [`payload`]: messages and conversations as JSON in the requirements' schemas;
//! - [`incoming`]: what a browser asks, as SDK requests;
//! - [`outgoing`]: what a browser hears, from SDK events;
//! - [`server`]: the Socket.IO server, authentication and the per-socket relay.

pub mod config;
pub mod files;
pub mod incoming;
mod linger;
pub mod outgoing;
pub mod payload;
pub mod pool;
pub mod server;

pub use config::{BridgeConfig, DemoAccount};
pub use server::{RunningBridge, start};

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

/// The requirements' `SOCKET_EVENTS`, verbatim and in their order: the event names web
/// clients already speak. The one copy of that list in this repository.
pub const SOCKET_EVENTS: [&str; 16] = [
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

/// Every event of [`SOCKET_EVENTS`], with its protocol counterpart.
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
    use legalchat_protocol::codec;
    use legalchat_protocol::pb::ack::Result as Answer;
    use legalchat_protocol::pb::client_frame::Request;
    use legalchat_protocol::pb::server_frame::Event;

    use super::*;

    /// One frame that carries part of an event's meaning.
    #[derive(Debug, Clone, PartialEq)]
    enum Frame {
        Client(pb::ClientFrame),
        Server(Box<pb::ServerFrame>),
    }

    fn request(r: Request) -> Frame {
        Frame::Client(pb::ClientFrame { request_id: 7, request: Some(r) })
    }

    fn event(e: Event) -> Frame {
        Frame::Server(Box::new(pb::ServerFrame { event: Some(e) }))
    }

    fn answer(a: Answer) -> Frame {
        event(Event::Ack(pb::Ack { request_id: 7, result: Some(a) }))
    }

    /// The frames that carry `name` on the QUIC protocol, built from the generated types:
    /// a message or oneof case that disappeared from the `.proto` file breaks this build.
    /// `connection` has no frame of its own: it is the QUIC connection and its stream.
    fn carriers(name: &str) -> Vec<Frame> {
        let receipt = |kind: pb::ReceiptKind| {
            event(Event::Receipt(pb::ReceiptEvent {
                conversation_id: "c".into(),
                user_id: "u".into(),
                kind: kind.into(),
                seq: 1,
                timestamp_ms: 1,
            }))
        };
        let presence = |online| {
            event(Event::Presence(pb::PresenceEvent { presence: Some(pb::Presence { user_id: "u".into(), online, last_seen_ms: 1 }) }))
        };
        let typing = |active| {
            vec![
                request(Request::Typing(pb::Typing { conversation_id: "c".into(), active })),
                event(Event::Typing(pb::TypingEvent { conversation_id: "c".into(), user_id: "u".into(), active })),
            ]
        };
        match name {
            "connection" => vec![],
            "disconnect" => vec![event(Event::Goodbye(pb::Goodbye { code: pb::ErrorCode::Unavailable.into(), reason: "bye".into() }))],
            "authenticate" => vec![request(Request::Authenticate(pb::Authenticate { token: "t".into(), ..Default::default() }))],
            "send_message" => vec![request(Request::SendMessage(pb::SendMessage {
                conversation_id: "c".into(),
                client_message_id: "m".into(),
                content: Some(pb::MessageContent { text: "hello".into(), ..Default::default() }),
                reply_to_seq: 0,
            }))],
            "receive_message" => {
                vec![event(Event::ReceiveMessage(pb::ReceiveMessage { message: Some(pb::Message { seq: 1, ..Default::default() }) }))]
            }
            "message_delivered" => vec![
                answer(Answer::MessageAccepted(pb::MessageAccepted { seq: 1, ..Default::default() })),
                receipt(pb::ReceiptKind::Delivered),
            ],
            "message_read" => {
                vec![request(Request::MarkRead(pb::MarkRead { conversation_id: "c".into(), seq: 1 })), receipt(pb::ReceiptKind::Read)]
            }
            "typing_start" => typing(true),
            "typing_stop" => typing(false),
            "join_room" => vec![request(Request::JoinRoom(pb::JoinRoom { conversation_id: "c".into() }))],
            "leave_room" => vec![request(Request::LeaveRoom(pb::LeaveRoom { conversation_id: "c".into() }))],
            "room_users" => vec![event(Event::RoomUsers(pb::RoomUsers { conversation_id: "c".into(), online_user_ids: vec!["u".into()] }))],
            "user_online" => vec![presence(true)],
            "user_offline" => vec![presence(false)],
            "error" => vec![event(Event::Error(pb::Error {
                request_id: 7,
                code: pb::ErrorCode::Forbidden.into(),
                message: "no".into(),
                ..Default::default()
            }))],
            "unauthorized" => vec![event(Event::Unauthorized(pb::Unauthorized { reason: "expired".into() }))],
            other => panic!("{other} is not an event of the requirements"),
        }
    }

    /// The `.proto` name of the case a frame holds, as [`EventMapping::protocol`] spells
    /// it: the message's name, and `Ack.<field>` for an answer.
    fn case_name(frame: &Frame) -> &'static str {
        match frame {
            Frame::Client(f) => match &f.request {
                Some(Request::Authenticate(_)) => "Authenticate",
                Some(Request::SendMessage(_)) => "SendMessage",
                Some(Request::MarkRead(_)) => "MarkRead",
                Some(Request::Typing(_)) => "Typing",
                Some(Request::JoinRoom(_)) => "JoinRoom",
                Some(Request::LeaveRoom(_)) => "LeaveRoom",
                _ => "(a request no event maps to)",
            },
            Frame::Server(f) => match &f.event {
                Some(Event::Ack(pb::Ack { result: Some(Answer::MessageAccepted(_)), .. })) => "Ack.message_accepted",
                Some(Event::Error(_)) => "Error",
                Some(Event::ReceiveMessage(_)) => "ReceiveMessage",
                Some(Event::Unauthorized(_)) => "Unauthorized",
                Some(Event::Goodbye(_)) => "Goodbye",
                Some(Event::Typing(_)) => "TypingEvent",
                Some(Event::RoomUsers(_)) => "RoomUsers",
                Some(Event::Presence(_)) => "PresenceEvent",
                Some(Event::Receipt(_)) => "ReceiptEvent",
                _ => "(an event no event maps to)",
            },
        }
    }

    /// Encodes and decodes `frame` with the real codec: what a peer would receive.
    fn over_the_wire(frame: &Frame) -> Frame {
        match frame {
            Frame::Client(f) => Frame::Client(codec::decode_exact(&codec::encode(f), codec::DEFAULT_MAX_FRAME_LEN).unwrap()),
            Frame::Server(f) => Frame::Server(Box::new(codec::decode_exact(&codec::encode(&**f), codec::DEFAULT_MAX_FRAME_LEN).unwrap())),
        }
    }

    /// The protobuf names a mapping's description mentions: its CamelCase words
    /// (`ReceiptEvent`, `Ack.message_accepted`), not enum values (`DELIVERED`) or prose.
    fn names_in(protocol: &str) -> Vec<&str> {
        let mut names: Vec<&str> = protocol
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()) && w.contains(|c: char| c.is_ascii_lowercase()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    #[test]
    fn every_required_event_is_mapped_once() {
        for name in SOCKET_EVENTS {
            assert_eq!(EVENTS.iter().filter(|m| m.event == name).count(), 1, "{name} must be mapped exactly once");
        }
        assert_eq!(EVENTS.len(), SOCKET_EVENTS.len(), "the table holds only events of the requirements");
    }

    #[test]
    fn every_mapping_names_the_protocol_frames_that_carry_it() {
        for name in SOCKET_EVENTS {
            let m = mapping(name).unwrap();
            let frames = carriers(name);
            let mut carried: Vec<&str> = Vec::new();
            for frame in &frames {
                // Each carrier is a real frame of its kind: it survives the codec unchanged
                // and decodes as the same oneof case.
                let received = over_the_wire(frame);
                assert_eq!(&received, frame, "{name}");
                carried.push(case_name(&received));
            }
            carried.sort_unstable();
            carried.dedup();
            assert_eq!(names_in(m.protocol), carried, "{name}: the table says {:?}", m.protocol);
            // The direction agrees with who sends the frames.
            let from_client = frames.iter().any(|f| matches!(f, Frame::Client(_)));
            let to_client = frames.iter().any(|f| matches!(f, Frame::Server(_)));
            match m.direction {
                Direction::FromClient => assert!(from_client, "{name} comes from the browser but no request carries it"),
                Direction::ToClient => assert!(to_client && !from_client, "{name} goes to the browser; only server frames carry it"),
                Direction::Lifecycle => assert!(!from_client, "{name} is Socket.IO's own; no request carries it"),
            }
        }
    }

    #[test]
    fn error_codes_use_proto_spelling() {
        assert_eq!(error_code_name(pb::ErrorCode::Forbidden as i32), "FORBIDDEN");
        assert_eq!(error_code_name(9_999), "INTERNAL");
    }
}
