//! What a browser may send the Socket.IO bridge, through the bridge's readers, as its
//! server calls them: for each event of `incoming::REQUESTS` (and an unknown one),
//! `files::parse_start` for the transfer events and `incoming::parse` for the others; and
//! the credentials of the handshake and of `authenticate` (`server::credentials`). Then
//! what they accept goes through the checks the SDK makes before it sends anything, as
//! `Client` would.
//!
//! The payload is, by the first byte, the rest of the bytes as JSON text or a
//! `serde_json::Value` built from them (keys and values drawn mostly from the fields the
//! bridge reads, so that deep payloads are reached).
//!
//! What must hold for any input: no panic; a refusal is INVALID_ARGUMENT and names the JSON
//! field at fault (`field: reason`); what is accepted is within the bounds the bridge
//! promises (positive seqs, page sizes 1..=100, message content by the protocol's rules);
//! a check of the SDK that refuses it names a field.
#![no_main]

use arbitrary::Unstructured;
use legalchat_bridge::files::{self, Start};
use legalchat_bridge::incoming::{self, Call, Failure};
use legalchat_bridge::server::{MAX_CURSORS, credentials};
use legalchat_protocol::validate::{self, ValidationError};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

/// Field names the bridge reads, to build payloads that get past the first check.
const KEYS: &[&str] = &[
    "conversationId",
    "seq",
    "content",
    "text",
    "type",
    "format",
    "attachments",
    "fileId",
    "name",
    "clientMessageId",
    "replyTo",
    "emoji",
    "unpin",
    "before",
    "after",
    "limit",
    "participants",
    "title",
    "caseId",
    "description",
    "settings",
    "notifications",
    "encryption",
    "retention",
    "userIds",
    "role",
    "userId",
    "token",
    "active",
    "fileName",
    "size",
    "sha256",
    "uploadId",
    "cursors",
];
/// Values that pass the first check of some field.
const WORDS: &[&str] = &[
    "0123456789abcdef0123456789abcdef",
    "alice",
    "bob@firm.example",
    "👍",
    "❤️",
    "hello",
    "text",
    "file",
    "image",
    "document",
    "plain",
    "markdown",
    "private",
    "group",
    "case",
    "support",
    "member",
    "moderator",
    "admin",
    "cm-1",
    "case-7",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let payload = if mode & 1 == 0 {
        match serde_json::from_slice::<Value>(rest) {
            Ok(v) => v,
            Err(_) => return,
        }
    } else {
        match value(&mut Unstructured::new(rest), 4) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    let max = if mode & 2 == 0 { validate::DEFAULT_MAX_MESSAGE_BYTES } else { 8 };

    // As the server reads a request event: the transfer events first, then the others.
    for event in incoming::REQUESTS.iter().copied().chain(["no_such_event"]) {
        match files::parse_start(event, &payload) {
            Some(Ok(Start::Upload { conversation, .. })) => sdk(validate::parse_id("conversation_id", conversation).map(|_| ())),
            Some(Ok(Start::Download { conversation, file })) => {
                sdk(validate::parse_id("conversation_id", conversation).map(|_| ()));
                sdk(validate::parse_id("file_id", file).map(|_| ()));
            }
            Some(Err(f)) => refused(&f),
            None => match incoming::parse(event, &payload, max) {
                Ok(call) => accepted(call, max),
                Err(f) if event == "no_such_event" => assert_eq!(f.code, "INVALID_ARGUMENT"),
                Err(f) => refused(&f),
            },
        }
    }
    match credentials(&payload) {
        Ok((token, cursors)) => {
            assert!(token.is_none_or(|t| !t.is_empty()));
            assert!(cursors.len() <= MAX_CURSORS);
            for (conversation, _) in &cursors {
                assert!(validate::parse_id("auth.cursors", conversation).is_ok());
            }
        }
        Err(e) => assert!(e.contains("auth.token") || e.contains("auth.cursors"), "{e}"),
    }
});

/// INVALID_ARGUMENT, `field: reason`: the field as the JSON spells it, or (for what the
/// protocol's own rules refuse, such as `content.attachments.file_id`) as the `.proto` does.
fn refused(f: &Failure) {
    assert_eq!(f.code, "INVALID_ARGUMENT", "{f:?}");
    let named = f.message.split_once(": ").is_some_and(|(field, reason)| {
        !reason.is_empty()
            && field.split('.').all(|part| {
                part.starts_with(|c: char| c.is_ascii_alphabetic()) && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
    });
    assert!(named, "names no field: {:?}", f.message);
}

/// A check of the SDK's: when it refuses, it names a field.
fn sdk(checked: Result<(), ValidationError>) {
    if let Err(e) = checked {
        assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
    }
}

fn accepted(call: Call<'_>, max: usize) {
    let conversation = |c: &str| sdk(validate::parse_id("conversation_id", c).map(|_| ()));
    let page = |limit: u32| assert!((1..=100).contains(&limit), "limit {limit}");
    match call {
        Call::SendMessage(m) => {
            assert!(validate::parse_id("conversationId", &m.conversation_id).is_ok());
            assert_eq!(validate::client_message_id(&m.client_message_id), Ok(()));
            assert_eq!(validate::message_content(m.content.as_ref(), max), Ok(()));
        }
        Call::Edit { conversation: c, seq, content } => {
            assert!(seq > 0);
            assert_eq!(validate::message_content(Some(&content), max), Ok(()));
            conversation(c);
        }
        Call::Delete { conversation: c, seq } | Call::Pin { conversation: c, seq, .. } | Call::MarkRead { conversation: c, seq } => {
            assert!(seq > 0);
            conversation(c);
        }
        Call::Audit { conversation: c, seq } => {
            assert!(seq > 0);
            conversation(c);
        }
        Call::React { conversation: c, seq, emoji, .. } => {
            assert!(seq > 0);
            conversation(c);
            sdk(validate::emoji(emoji));
        }
        Call::History { conversation: c, limit, .. } => {
            page(limit);
            conversation(c);
            sdk(validate::history_limit(limit).map(|_| ()));
        }
        Call::Thread { conversation: c, root, limit, .. } => {
            assert!(root > 0);
            page(limit);
            conversation(c);
        }
        Call::ListConversations { limit } => {
            page(limit);
            sdk(validate::list_limit(limit).map(|_| ()));
        }
        Call::Typing { conversation: c, .. }
        | Call::JoinRoom { conversation: c }
        | Call::LeaveRoom { conversation: c }
        | Call::Pins { conversation: c }
        | Call::Receipts { conversation: c }
        | Call::GetConversation { conversation: c } => conversation(c),
        Call::CreateConversation(new) => sdk(new.validate()),
        Call::UpdateConversation { conversation: c, update } => {
            conversation(c);
            sdk(update.validate());
        }
        Call::AddParticipants { conversation: c, users, .. } => {
            conversation(c);
            sdk(validate::participant_ids("user_ids", &users));
        }
        Call::RemoveParticipant { conversation: c, user } | Call::SetRole { conversation: c, user, .. } => {
            conversation(c);
            sdk(validate::user_id("user_id", user));
        }
        Call::Presence { users } => users.iter().for_each(|u| sdk(validate::user_id("user_ids", u))),
        Call::RevokeSessions { user } | Call::SetUserActive { user, .. } => sdk(validate::user_id("user_id", user)),
        Call::RenewToken { .. } => {}
        _ => {}
    }
}

/// A JSON value from the bytes, at most `depth` deep.
fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(match u.choose_index(4)? {
            0 => Number::from(u.int_in_range(0u64..=8)?),
            1 => Number::from(u.arbitrary::<i64>()?),
            2 => Number::from(u.arbitrary::<u64>()?),
            _ => Number::from_f64(u.arbitrary()?).unwrap_or_else(|| Number::from(0)),
        }),
        3 | 4 => Value::String(if u.arbitrary()? { (*u.choose(WORDS)?).to_owned() } else { u.arbitrary()? }),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<arbitrary::Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=8)?;
            let mut map = Map::new();
            for _ in 0..n {
                let key = if u.ratio(7, 8)? { (*u.choose(KEYS)?).to_owned() } else { u.arbitrary()? };
                map.insert(key, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}
