//! The text packets of Engine.IO protocol 4 and Socket.IO protocol 5 (the protocol of the
//! Socket.IO 4.x libraries), as a client sees them. No IO, no clock: a WebSocket text
//! message goes in, a packet comes out, and the other way round.
//!
//! ```text
//!  WebSocket text message     Engine.IO packet      Socket.IO packet (inside an Engine.IO "4")
//!  0{"sid":…,"pingInterval":…}  Open
//!  2 / 3                        Ping / Pong
//!  40{"sid":…}                  Message ──────────► Connect            (answer to our CONNECT)
//!  44{"message":"…"}            Message ──────────► ConnectError       (middleware refused us)
//!  42["name",{…}]               Message ──────────► Event
//!  4317[{…}]                    Message ──────────► Ack id 17
//!  41 / 1                       Disconnect / Close
//! ```
//!
//! Packet layout (Socket.IO): `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`; the
//! namespace is written only when it is not `/`. Decoding checks the layout first (type,
//! namespace, ack id digits) and then parses the JSON, which must be all that is left.
//!
//! What is not here: binary packets (types 5 and 6, and Engine.IO binary messages; the
//! reference peer never sends binary data), long polling, and the upgrade dance: the client
//! opens the WebSocket transport directly.

use serde::Deserialize;
use serde_json::Value;

/// What the client answers to the server's `2` (ping).
pub const PONG: &str = "3";

/// A DISCONNECT of the main namespace: the client leaves politely.
pub const DISCONNECT: &str = "41";

/// The longest ack id we accept: `u64::MAX` has 20 digits. Bounding the digits first keeps
/// a hostile packet from making us scan a megabyte of digits before we notice.
const MAX_ACK_ID_DIGITS: usize = 20;

/// A packet the client cannot make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// An empty WebSocket message.
    #[error("empty Engine.IO packet")]
    Empty,
    /// The first character is not an Engine.IO packet type (`0`..=`6`).
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),
    /// An Engine.IO message packet (`4`) with nothing in it.
    #[error("empty Socket.IO packet")]
    EmptyMessage,
    /// The first character of a message packet is not a Socket.IO packet type.
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownSocketType(char),
    /// A binary Socket.IO packet (BINARY_EVENT or BINARY_ACK): not supported.
    #[error("binary Socket.IO packets are not supported")]
    Binary,
    /// The Engine.IO open packet's JSON does not describe a session.
    #[error("bad Engine.IO open packet: {0}")]
    BadOpen(String),
    /// An ack id that does not fit in a `u64`.
    #[error("ack id {0:?} is out of range")]
    BadAckId(String),
    /// The JSON part of a Socket.IO packet does not parse.
    #[error("bad JSON in a Socket.IO {kind} packet: {reason}")]
    BadJson {
        /// The packet type.
        kind: &'static str,
        /// serde_json's explanation.
        reason: String,
    },
    /// The JSON parses but is not what this packet type carries.
    #[error("bad Socket.IO {kind} packet: {problem}")]
    BadPayload {
        /// The packet type.
        kind: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The session parameters the server announces in its Engine.IO open packet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineOpen {
    /// The Engine.IO session id.
    pub sid: String,
    /// How often the server pings, in milliseconds.
    pub ping_interval: u64,
    /// How long the server waits for our pong, in milliseconds.
    pub ping_timeout: u64,
    /// The largest packet the server accepts, in bytes (0 when the server does not say).
    #[serde(default)]
    pub max_payload: u64,
}

/// One Engine.IO packet, as carried by one WebSocket text message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EnginePacket {
    /// `0{…}`: the session is open.
    Open(EngineOpen),
    /// `1`: the server closes the session.
    Close,
    /// `2`: the server's heartbeat; answer [`PONG`].
    Ping,
    /// `3`: an answer to a ping (servers do not send these to clients in protocol 4).
    Pong,
    /// `4…`: a Socket.IO packet.
    Message(SocketPacket),
    /// `5`: transport upgrade (only after long polling; never expected here).
    Upgrade,
    /// `6`: nothing.
    Noop,
}

/// A Socket.IO packet and the namespace it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketPacket {
    /// `/` unless the packet names another namespace.
    pub namespace: String,
    /// What the packet says.
    pub body: SocketBody,
}

/// What a Socket.IO packet says (server to client).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SocketBody {
    /// `0{"sid":…}`: the server accepted our CONNECT.
    Connect {
        /// The Socket.IO session id.
        sid: String,
    },
    /// `1`: the server disconnected us from the namespace.
    Disconnect,
    /// `2[<name>, …args]`, with an ack id when the server wants an answer.
    Event {
        /// Set when the server expects an ack.
        ack_id: Option<u64>,
        /// The event name.
        name: String,
        /// The arguments after the name.
        args: Vec<Value>,
    },
    /// `3<id>[…args]`: the answer to the event we emitted with ack id `ack_id`.
    Ack {
        /// The id we sent.
        ack_id: u64,
        /// The arguments of the server's callback.
        args: Vec<Value>,
    },
    /// `4{"message":…}`: the server refused our CONNECT (a middleware called `next(err)`).
    ConnectError {
        /// The error's message, e.g. `unauthorized`.
        message: String,
    },
}

impl EnginePacket {
    /// Decodes one WebSocket text message.
    pub fn decode(text: &str) -> Result<Self, PacketError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(PacketError::Empty)?;
        let rest = chars.as_str();
        match kind {
            '0' => serde_json::from_str(rest).map(Self::Open).map_err(|e| PacketError::BadOpen(e.to_string())),
            '1' => Ok(Self::Close),
            // A ping or pong may carry data ("probe" during an upgrade); it means nothing here.
            '2' => Ok(Self::Ping),
            '3' => Ok(Self::Pong),
            '4' => SocketPacket::decode(rest).map(Self::Message),
            '5' => Ok(Self::Upgrade),
            '6' => Ok(Self::Noop),
            other => Err(PacketError::UnknownEngineType(other)),
        }
    }
}

impl EnginePacket {
    /// The packet's kind, for error messages (which must not quote a megabyte of JSON).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Open(_) => "Engine.IO open",
            Self::Close => "Engine.IO close",
            Self::Ping => "Engine.IO ping",
            Self::Pong => "Engine.IO pong",
            Self::Message(packet) => packet.body.kind(),
            Self::Upgrade => "Engine.IO upgrade",
            Self::Noop => "Engine.IO noop",
        }
    }
}

impl SocketBody {
    /// The packet type's name in the Socket.IO protocol, e.g. `CONNECT_ERROR`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "CONNECT",
            Self::Disconnect => "DISCONNECT",
            Self::Event { .. } => "EVENT",
            Self::Ack { .. } => "ACK",
            Self::ConnectError { .. } => "CONNECT_ERROR",
        }
    }
}

impl SocketPacket {
    /// Decodes a Socket.IO packet (the part after the Engine.IO `4`).
    pub fn decode(text: &str) -> Result<Self, PacketError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(PacketError::EmptyMessage)?;
        let kind_name = match kind {
            '0' => "CONNECT",
            '1' => "DISCONNECT",
            '2' => "EVENT",
            '3' => "ACK",
            '4' => "CONNECT_ERROR",
            '5' | '6' => return Err(PacketError::Binary),
            other => return Err(PacketError::UnknownSocketType(other)),
        };
        let mut rest = chars.as_str();

        // Check the layout: namespace, then ack id digits; what remains is JSON.
        let namespace = if rest.starts_with('/') {
            let (namespace, after) = rest.split_once(',').unwrap_or((rest, ""));
            rest = after;
            namespace.to_owned()
        } else {
            "/".to_owned()
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack_id = if digits == 0 {
            None
        } else {
            let (id, after) = rest.split_at(digits);
            rest = after;
            if digits > MAX_ACK_ID_DIGITS {
                return Err(PacketError::BadAckId(format!("{}…", &id[..MAX_ACK_ID_DIGITS])));
            }
            Some(id.parse::<u64>().map_err(|_| PacketError::BadAckId(id.to_owned()))?)
        };
        let payload = if rest.is_empty() {
            None
        } else {
            // from_str rejects anything after the JSON value (other than whitespace).
            Some(serde_json::from_str::<Value>(rest).map_err(|e| PacketError::BadJson { kind: kind_name, reason: e.to_string() })?)
        };

        let bad = |problem| PacketError::BadPayload { kind: kind_name, problem };
        let body = match kind {
            '0' => match payload {
                Some(Value::Object(mut map)) => match map.remove("sid") {
                    Some(Value::String(sid)) => SocketBody::Connect { sid },
                    _ => return Err(bad("no \"sid\" string")),
                },
                _ => return Err(bad("the payload is not an object")),
            },
            '1' => SocketBody::Disconnect,
            '2' => {
                let Some(Value::Array(mut args)) = payload else {
                    return Err(bad("the payload is not an array"));
                };
                if args.is_empty() {
                    return Err(bad("no event name"));
                }
                let Value::String(name) = args.remove(0) else {
                    return Err(bad("the event name is not a string"));
                };
                SocketBody::Event { ack_id, name, args }
            }
            '3' => {
                let ack_id = ack_id.ok_or_else(|| bad("no ack id"))?;
                let Some(Value::Array(args)) = payload else {
                    return Err(bad("the payload is not an array"));
                };
                SocketBody::Ack { ack_id, args }
            }
            // '4': Socket.IO 4 sends {"message", "data"?}; older servers sent a bare string.
            _ => match payload {
                Some(Value::Object(mut map)) => match map.remove("message") {
                    Some(Value::String(message)) => SocketBody::ConnectError { message },
                    _ => return Err(bad("no \"message\" string")),
                },
                Some(Value::String(message)) => SocketBody::ConnectError { message },
                _ => return Err(bad("the payload is neither an object nor a string")),
            },
        };
        Ok(Self { namespace, body })
    }
}

/// `40{auth}`: CONNECT to the main namespace with the handshake's `auth` object.
pub fn encode_connect(auth: &Value) -> String {
    format!("40{auth}")
}

/// `42[<ack id>]["name", …args]`: an EVENT on the main namespace, asking for an ack when
/// `ack_id` is set.
pub fn encode_event(ack_id: Option<u64>, name: &str, args: &[Value]) -> String {
    let mut array = Vec::with_capacity(args.len() + 1);
    array.push(Value::String(name.to_owned()));
    array.extend_from_slice(args);
    let json = Value::Array(array);
    match ack_id {
        Some(id) => format!("42{id}{json}"),
        None => format!("42{json}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(body: SocketBody) -> EnginePacket {
        EnginePacket::Message(SocketPacket { namespace: "/".into(), body })
    }

    #[test]
    fn decodes_the_open_packet() {
        let open = EnginePacket::decode(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#);
        assert_eq!(
            open,
            Ok(EnginePacket::Open(EngineOpen { sid: "abc".into(), ping_interval: 25_000, ping_timeout: 20_000, max_payload: 1_000_000 }))
        );
        assert!(matches!(EnginePacket::decode("0{}"), Err(PacketError::BadOpen(_))));
        assert!(matches!(EnginePacket::decode(r#"0{"sid":"a","pingInterval":-1,"pingTimeout":1}"#), Err(PacketError::BadOpen(_))));
    }

    #[test]
    fn decodes_engine_control_packets() {
        assert_eq!(EnginePacket::decode("1"), Ok(EnginePacket::Close));
        assert_eq!(EnginePacket::decode("2"), Ok(EnginePacket::Ping));
        assert_eq!(EnginePacket::decode("2probe"), Ok(EnginePacket::Ping));
        assert_eq!(EnginePacket::decode("3"), Ok(EnginePacket::Pong));
        assert_eq!(EnginePacket::decode("6"), Ok(EnginePacket::Noop));
        assert_eq!(EnginePacket::decode(""), Err(PacketError::Empty));
        assert_eq!(EnginePacket::decode("7"), Err(PacketError::UnknownEngineType('7')));
        assert_eq!(EnginePacket::decode("é"), Err(PacketError::UnknownEngineType('é')));
    }

    #[test]
    fn decodes_connect_and_connect_error() {
        assert_eq!(EnginePacket::decode(r#"40{"sid":"s1"}"#), Ok(message(SocketBody::Connect { sid: "s1".into() })));
        assert_eq!(
            EnginePacket::decode(r#"44{"message":"unauthorized"}"#),
            Ok(message(SocketBody::ConnectError { message: "unauthorized".into() }))
        );
        assert_eq!(
            EnginePacket::decode(r#"44{"message":"unauthorized","data":{"why":1}}"#),
            Ok(message(SocketBody::ConnectError { message: "unauthorized".into() }))
        );
        assert_eq!(EnginePacket::decode(r#"44"nope""#), Ok(message(SocketBody::ConnectError { message: "nope".into() })));
        assert!(matches!(EnginePacket::decode("40"), Err(PacketError::BadPayload { kind: "CONNECT", .. })));
        assert!(matches!(EnginePacket::decode(r#"40{"sid":7}"#), Err(PacketError::BadPayload { .. })));
        assert!(matches!(EnginePacket::decode("44{}"), Err(PacketError::BadPayload { kind: "CONNECT_ERROR", .. })));
    }

    #[test]
    fn decodes_events_and_acks() {
        assert_eq!(
            EnginePacket::decode(r#"42["receive_message",{"seq":1}]"#),
            Ok(message(SocketBody::Event { ack_id: None, name: "receive_message".into(), args: vec![json!({"seq": 1})] }))
        );
        assert_eq!(
            EnginePacket::decode(r#"4212["ping_me"]"#),
            Ok(message(SocketBody::Event { ack_id: Some(12), name: "ping_me".into(), args: vec![] }))
        );
        assert_eq!(EnginePacket::decode(r#"437[{"seq":3}]"#), Ok(message(SocketBody::Ack { ack_id: 7, args: vec![json!({"seq": 3})] })));
        assert_eq!(EnginePacket::decode("430[]"), Ok(message(SocketBody::Ack { ack_id: 0, args: vec![] })));
        assert_eq!(EnginePacket::decode("41"), Ok(message(SocketBody::Disconnect)));
    }

    #[test]
    fn reads_the_namespace() {
        assert_eq!(
            EnginePacket::decode(r#"42/admin,3["x",1]"#),
            Ok(EnginePacket::Message(SocketPacket {
                namespace: "/admin".into(),
                body: SocketBody::Event { ack_id: Some(3), name: "x".into(), args: vec![json!(1)] }
            }))
        );
        assert_eq!(
            EnginePacket::decode("41/admin"),
            Ok(EnginePacket::Message(SocketPacket { namespace: "/admin".into(), body: SocketBody::Disconnect }))
        );
    }

    #[test]
    fn rejects_malformed_socket_packets() {
        assert_eq!(EnginePacket::decode("4"), Err(PacketError::EmptyMessage));
        assert_eq!(EnginePacket::decode("49"), Err(PacketError::UnknownSocketType('9')));
        assert_eq!(EnginePacket::decode(r#"451-["x",{"_placeholder":true,"num":0}]"#), Err(PacketError::Binary));
        assert!(matches!(EnginePacket::decode("42[1]"), Err(PacketError::BadPayload { problem: "the event name is not a string", .. })));
        assert!(matches!(EnginePacket::decode("42[]"), Err(PacketError::BadPayload { problem: "no event name", .. })));
        assert!(matches!(EnginePacket::decode(r#"42{"a":1}"#), Err(PacketError::BadPayload { .. })));
        assert!(matches!(EnginePacket::decode("42"), Err(PacketError::BadPayload { .. })));
        assert!(matches!(EnginePacket::decode(r#"42["x"] trailing"#), Err(PacketError::BadJson { kind: "EVENT", .. })));
        assert!(matches!(EnginePacket::decode(r#"42["x""#), Err(PacketError::BadJson { .. })));
        assert!(matches!(EnginePacket::decode("43[]"), Err(PacketError::BadPayload { problem: "no ack id", .. })));
        assert!(matches!(EnginePacket::decode("431"), Err(PacketError::BadPayload { kind: "ACK", .. })));
        assert!(matches!(EnginePacket::decode("4318446744073709551616[]"), Err(PacketError::BadAckId(_))));
        let long_id = format!("43{}[]", "9".repeat(10_000));
        assert!(matches!(EnginePacket::decode(&long_id), Err(PacketError::BadAckId(id)) if id.len() < 30));
        assert_eq!(EnginePacket::decode("4318446744073709551615[]"), Ok(message(SocketBody::Ack { ack_id: u64::MAX, args: vec![] })));
    }

    #[test]
    fn encodes_client_packets() {
        assert_eq!(encode_connect(&json!({"token": "a.b.c"})), r#"40{"token":"a.b.c"}"#);
        assert_eq!(encode_event(None, "join_room", &[json!({"room": "r"})]), r#"42["join_room",{"room":"r"}]"#);
        assert_eq!(
            encode_event(Some(17), "send_message", &[json!({"text": "hi \"you\""})]),
            r#"4217["send_message",{"text":"hi \"you\""}]"#
        );
        assert_eq!(encode_event(Some(0), "x", &[]), r#"420["x"]"#);
        assert_eq!(PONG, "3");
        assert_eq!(EnginePacket::decode(PONG).map(|p| p.kind()), Ok("Engine.IO pong"));
        assert_eq!(EnginePacket::decode("44\"x\"").map(|p| p.kind()), Ok("CONNECT_ERROR"));
        assert_eq!(DISCONNECT, "41");
    }

    #[test]
    fn what_we_encode_decodes_back() {
        // The server's ack of our event carries the same id; the layouts must agree.
        let sent = encode_event(Some(42), "e", &[json!({"k": [1, 2]})]);
        assert_eq!(
            EnginePacket::decode(&sent),
            Ok(message(SocketBody::Event { ack_id: Some(42), name: "e".into(), args: vec![json!({"k": [1, 2]})] }))
        );
    }
}
