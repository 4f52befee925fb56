//! The JSON that web clients exchange, shaped like the requirements' `MessageSchema` and
//! `ConversationSchema`, to and from the protobuf of the QUIC protocol.
//!
//! ```text
//!  pb::Message       ──message()──────► { _id, conversationId, seq, senderId, content, timestamp, … }
//!  pb::Conversation  ──conversation()─► { _id, type, participants, settings, lastMessage, … }
//!  send_message JSON ──send_message()─► pb::SendMessage (checked with the protocol's rules)
//! ```
//!
//! Pure functions, no IO: what a field means is the `.proto`'s; this module only spells it
//! the way the requirements' schemas do (camelCase, RFC 3339 times, lower-case enums) and
//! adds `seq`, which browsers need to resume. Times are the server's. A log entry that is
//! not a message (an edit, a reaction, ...) keeps its place in the log and carries an
//! `event` object saying what it did.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use legalchat_protocol::pb::{self, conversation_event::Kind};
use legalchat_protocol::time::rfc3339;
use legalchat_protocol::validate::{self, ValidationError};

/// `null` for an unset time, else its RFC 3339 spelling.
fn time_or_null(ms: i64) -> Value {
    if ms == 0 { Value::Null } else { Value::String(rfc3339(ms)) }
}

fn content_type(t: i32) -> &'static str {
    match pb::ContentType::try_from(t).unwrap_or(pb::ContentType::Unspecified) {
        pb::ContentType::File => "file",
        pb::ContentType::Image => "image",
        pb::ContentType::Document => "document",
        pb::ContentType::Text | pb::ContentType::Unspecified => "text",
    }
}

fn text_format(f: i32) -> &'static str {
    match pb::TextFormat::try_from(f).unwrap_or(pb::TextFormat::Unspecified) {
        pb::TextFormat::Markdown => "markdown",
        pb::TextFormat::Plain | pb::TextFormat::Unspecified => "plain",
    }
}

fn role(r: i32) -> &'static str {
    match pb::ParticipantRole::try_from(r).unwrap_or(pb::ParticipantRole::Unspecified) {
        pb::ParticipantRole::AdminRole => "admin",
        pb::ParticipantRole::Moderator => "moderator",
        pb::ParticipantRole::Member | pb::ParticipantRole::Unspecified => "member",
    }
}

fn conversation_type(t: i32) -> &'static str {
    match pb::ConversationType::try_from(t).unwrap_or(pb::ConversationType::Unspecified) {
        pb::ConversationType::Private => "private",
        pb::ConversationType::Group => "group",
        pb::ConversationType::Case => "case",
        pb::ConversationType::Support => "support",
        pb::ConversationType::Unspecified => "unknown",
    }
}

/// What a non-message entry did, as `{type, targetSeq, ...}`.
fn event(kind: &Kind) -> Value {
    match kind {
        Kind::Edited(e) => json!({
            "type": "edited",
            "targetSeq": e.target_seq,
            "content": e.content.as_ref().map(content_json),
            "redacted": e.redacted,
        }),
        Kind::Deleted(d) => json!({"type": "deleted", "targetSeq": d.target_seq}),
        Kind::Reaction(r) => {
            json!({"type": if r.added { "reaction_added" } else { "reaction_removed" }, "targetSeq": r.target_seq, "emoji": r.emoji})
        }
        Kind::Pin(p) => json!({"type": if p.pinned { "pinned" } else { "unpinned" }, "targetSeq": p.target_seq}),
        Kind::ParticipantsAdded(a) => json!({
            "type": "participants_added",
            "participants": a.participants.iter().map(participant).collect::<Vec<_>>(),
        }),
        Kind::ParticipantRemoved(r) => json!({"type": "participant_removed", "userId": r.user_id}),
        Kind::RoleChanged(r) => json!({"type": "role_changed", "userId": r.user_id, "role": role(r.role)}),
        Kind::ConversationChanged(c) => json!({
            "type": "conversation_changed",
            "title": c.title,
            "description": c.description,
            "settings": c.settings.as_ref().map(settings),
        }),
    }
}

/// A message's `content`: `{text, type, format, attachments}`.
fn content_json(c: &pb::MessageContent) -> Value {
    // As in `message`: every key is a string, so this does not fail.
    serde_json::to_value(Content(c)).unwrap_or(Value::Null)
}

/// An attachment (the requirements' `AttachmentSchema`): `{fileId, name, type, size,
/// sha256, thumbnail}`; the preview, when there is one, as a `data:` URL. The file itself
/// is fetched with a ticket (`start_download`).
pub fn attachment(a: &pb::Attachment) -> Value {
    use base64::Engine as _;
    let thumbnail = a.thumbnail.as_ref().map(|t| {
        json!({
            "type": t.mime_type,
            "width": t.width,
            "height": t.height,
            "url": format!("data:{};base64,{}", t.mime_type, base64::engine::general_purpose::STANDARD.encode(&t.data)),
        })
    });
    json!({
        "fileId": a.file_id,
        "name": a.name,
        "type": a.mime_type,
        "size": a.size,
        "sha256": hex::encode(&a.sha256),
        "thumbnail": thumbnail,
    })
}

fn participant(p: &pb::Participant) -> Value {
    json!({"userId": p.user_id, "role": role(p.role), "joinedAt": time_or_null(p.joined_at_ms), "displayName": p.display_name})
}

fn settings(s: &pb::ConversationSettings) -> Value {
    json!({"encryption": s.encryption, "retention": s.retention_days, "notifications": s.notifications})
}

/// A log entry in the shape of the requirements' `MessageSchema`, plus `seq`, `stateSeq`
/// and (for entries that are not messages) `event`. `receipts` fills `deliveryStatus`:
/// the message at `seq` was delivered to / read by a participant whose position is at or
/// beyond it.
pub fn message(m: &pb::Message, receipts: Option<&pb::ReceiptList>) -> Value {
    // Serializing into a `Value` fails only for map keys that are not strings; every key
    // here is one.
    serde_json::to_value(Entry { message: m, receipts }).unwrap_or(Value::Null)
}

/// A log entry as [`message`] spells it, serialized straight to JSON: the bridge writes
/// one for every message it delivers, and a tree of `Value`s (a map and a string per
/// field) would be built only to be written out and dropped.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The entry.
    pub message: &'a pb::Message,
    /// Read positions, for `deliveryStatus`.
    pub receipts: Option<&'a pb::ReceiptList>,
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.message;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("_id", &m.message_id)?;
        map.serialize_entry("conversationId", &m.conversation_id)?;
        map.serialize_entry("seq", &m.seq)?;
        map.serialize_entry("senderId", &m.sender_id)?;
        map.serialize_entry("clientMessageId", &m.client_message_id)?;
        let sent = rfc3339(m.timestamp_ms);
        map.serialize_entry("timestamp", &sent)?;
        if let Some(kind) = m.event.as_ref().and_then(|e| e.kind.as_ref()) {
            map.serialize_entry("event", &event(kind))?;
            return map.end();
        }
        map.serialize_entry("content", &m.content.as_ref().map(Content))?;
        map.serialize_entry("editedAt", &Time(m.edited_at_ms))?;
        map.serialize_entry("deletedAt", &Time(m.deleted_at_ms))?;
        map.serialize_entry("deletedBy", &(!m.deleted_by.is_empty()).then_some(&m.deleted_by))?;
        map.serialize_entry("deliveryStatus", &DeliveryStatus { entry: *self, sent: &sent })?;
        // The requirements' flat list: one entry per (user, emoji).
        map.serialize_entry(
            "reactions",
            &Seq(|| m.reactions.iter().flat_map(|r| r.user_ids.iter().map(move |u| Pair("userId", u, "emoji", &r.emoji)))),
        )?;
        map.serialize_entry("replyTo", &(m.reply_to_seq != 0).then_some(m.reply_to_seq))?;
        map.serialize_entry(
            "replyPreview",
            &m.reply_preview.as_ref().map(|p| json!({"senderId": p.sender_id, "text": p.text, "deleted": p.deleted})),
        )?;
        map.serialize_entry("mentions", &m.mentions)?;
        map.serialize_entry("pinned", &m.pinned)?;
        map.serialize_entry("stateSeq", &m.state_seq)?;
        map.end()
    }
}

/// A time as [`time_or_null`] spells it.
struct Time(i64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 { s.serialize_none() } else { s.serialize_str(&rfc3339(self.0)) }
    }
}

/// A message's `content` (see [`content_json`]).
struct Content<'a>(&'a pb::MessageContent);

impl Serialize for Content<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("text", &c.text)?;
        map.serialize_entry("type", content_type(c.r#type))?;
        map.serialize_entry("format", text_format(c.format))?;
        map.serialize_entry("attachments", &Seq(|| c.attachments.iter().map(attachment)))?;
        map.end()
    }
}

/// `deliveryStatus`: `{sent, delivered: [{userId, timestamp}], read: [...]}`.
struct DeliveryStatus<'a> {
    entry: Entry<'a>,
    sent: &'a str,
}

impl Serialize for DeliveryStatus<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (m, receipts) = (self.entry.message, self.entry.receipts);
        let reached = move |seq_of: fn(&pb::ReceiptState) -> u64, at: fn(&pb::ReceiptState) -> i64| {
            Seq(move || {
                receipts
                    .into_iter()
                    .flat_map(|list| &list.states)
                    .filter(move |r| r.user_id != m.sender_id && seq_of(r) >= m.seq)
                    .map(move |r| Pair("userId", &r.user_id, "timestamp", Time(at(r))))
            })
        };
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("sent", self.sent)?;
        map.serialize_entry("delivered", &reached(|r| r.delivered_seq, |r| r.delivered_at_ms))?;
        map.serialize_entry("read", &reached(|r| r.read_seq, |r| r.read_at_ms))?;
        map.end()
    }
}

/// An object of two fields.
struct Pair<A, B>(&'static str, A, &'static str, B);

impl<A: Serialize, B: Serialize> Serialize for Pair<A, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(self.0, &self.1)?;
        map.serialize_entry(self.2, &self.3)?;
        map.end()
    }
}

/// A JSON array of the items of the iterator that `f` makes, written without collecting them.
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// A conversation in the shape of the requirements' `ConversationSchema`, plus `seq`
/// bookkeeping (`lastSeq`), unread and mention counts and pins.
pub fn conversation(c: &pb::Conversation) -> Value {
    json!({
        "_id": c.id,
        "type": conversation_type(c.r#type),
        "participants": c.participants.iter().map(participant).collect::<Vec<_>>(),
        "caseId": if c.case_id.is_empty() { Value::Null } else { json!(c.case_id) },
        "title": c.title,
        "description": c.description,
        "settings": c.settings.as_ref().map(settings),
        "lastMessage": c.last_message.as_ref().map(|m| json!({
            "content": m.content.as_ref().map_or("", |x| x.text.as_str()),
            // Files of a message without text, so that a list can say "📎 brief.pdf".
            "attachments": m.content.iter().flat_map(|x| &x.attachments).map(|a| json!({
                "fileId": a.file_id,
                "name": a.name,
                "type": a.mime_type,
            })).collect::<Vec<_>>(),
            "deleted": m.deleted_at_ms != 0,
            "timestamp": rfc3339(m.timestamp_ms),
            "senderId": m.sender_id,
            "seq": m.seq,
        })),
        "createdAt": time_or_null(c.created_at_ms),
        "updatedAt": time_or_null(c.updated_at_ms),
        "lastSeq": c.last_seq,
        "unreadCount": c.unread_count,
        "mentionCount": c.mention_count,
        "pinnedSeqs": c.pinned_seqs,
    })
}

/// Reads a `send_message` payload: `{conversationId, content, clientMessageId?, replyTo?}`
/// where `content` is a string or `{text, type?, format?}`. Checked with the protocol's
/// own rules (`max_message_bytes` of text), so a browser hears of a mistake from the bridge
/// exactly as a native app would from the daemon. Without `clientMessageId`, `fresh_id` is
/// used (retries from the browser should send their own).
pub fn send_message(
    payload: &Value,
    max_message_bytes: usize,
    fresh_id: impl FnOnce() -> String,
) -> Result<pb::SendMessage, ValidationError> {
    let object = payload.as_object().ok_or_else(|| ValidationError::new("payload", "must be an object"))?;
    let conversation_id = string_field(object, "conversationId")?.ok_or_else(|| ValidationError::new("conversationId", "is required"))?;
    validate::parse_id("conversationId", conversation_id)?;
    let content = content(object.get("content"))?;
    validate::message_content(Some(&content), max_message_bytes)?;
    let client_message_id = match string_field(object, "clientMessageId")? {
        Some(id) => id.to_owned(),
        None => fresh_id(),
    };
    validate::client_message_id(&client_message_id)?;
    let reply_to_seq = match object.get("replyTo") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|s| *s > 0)
            .ok_or_else(|| ValidationError::new("replyTo", "must be the seq of a message (a positive integer)"))?,
    };
    Ok(pb::SendMessage { conversation_id: conversation_id.to_owned(), client_message_id, content: Some(content), reply_to_seq })
}

/// Reads a message's `content`: a string (plain text) or `{text, type?, format?}`.
pub fn content(value: Option<&Value>) -> Result<pb::MessageContent, ValidationError> {
    match value {
        Some(Value::String(text)) => Ok(pb::MessageContent {
            text: text.clone(),
            r#type: pb::ContentType::Text.into(),
            format: pb::TextFormat::Plain.into(),
            ..Default::default()
        }),
        Some(Value::Object(c)) => {
            let text = nested_string(c, "text", "content.text")?.unwrap_or_default().to_owned();
            let r#type = match nested_string(c, "type", "content.type")?.unwrap_or("text") {
                "text" => pb::ContentType::Text,
                "file" => pb::ContentType::File,
                "image" => pb::ContentType::Image,
                "document" => pb::ContentType::Document,
                other => return Err(ValidationError::new("content.type", format!("{other:?} is not text, file, image or document"))),
            };
            let format = match nested_string(c, "format", "content.format")?.unwrap_or("plain") {
                "plain" => pb::TextFormat::Plain,
                "markdown" => pb::TextFormat::Markdown,
                other => return Err(ValidationError::new("content.format", format!("{other:?} is not plain or markdown"))),
            };
            let attachments = match c.get("attachments") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => list.iter().map(attachment_ref).collect::<Result<_, _>>()?,
                Some(_) => return Err(ValidationError::new("content.attachments", "must be a list of {fileId, name?}")),
            };
            Ok(pb::MessageContent { text, r#type: r#type.into(), format: format.into(), attachments })
        }
        Some(_) => Err(ValidationError::new("content", "must be a string or an object {text, type, format, attachments}")),
        None => Err(ValidationError::new("content", "is required")),
    }
}

/// `{fileId, name?}`: an upload of the same conversation, by its id.
fn attachment_ref(value: &Value) -> Result<pb::Attachment, ValidationError> {
    let Value::Object(a) = value else {
        return Err(ValidationError::new("content.attachments", "each must be an object {fileId, name?}"));
    };
    let file_id = nested_string(a, "fileId", "content.attachments.fileId")?
        .ok_or_else(|| ValidationError::new("content.attachments.fileId", "is required"))?;
    let name = nested_string(a, "name", "content.attachments.name")?.unwrap_or_default();
    Ok(pb::Attachment { file_id: file_id.to_owned(), name: name.to_owned(), ..Default::default() })
}

fn string_field<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, ValidationError> {
    nested_string(object, field, field)
}

/// Field `key` of `object`, whose errors name it by its whole JSON path `path`.
fn nested_string<'a>(object: &'a Map<String, Value>, key: &str, path: &'static str) -> Result<Option<&'a str>, ValidationError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ValidationError::new(path, "must be a string")),
    }
}

#[cfg(test)]
mod tests;
