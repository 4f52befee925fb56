//! What a browser asks: each Socket.IO event it emits, read from its JSON payload, made
//! as a request of its daemon session, and answered through the Socket.IO
//! acknowledgement: the result, or `{error: {code, message}}`.
//!
//! ```text
//!  send_message {conversationId, content, clientMessageId?, replyTo?} ──► Client::send_message ──► {_id, seq, …}
//!  edit_message {conversationId, seq, content}                        ──► Client::edit
//!  …                                                                   (the table in REQUESTS)
//! ```
//!
//! Payloads are checked here with the protocol's own rules before anything is sent, so a
//! mistake names the JSON field (`conversationId`, `content.text`, …).

use std::future::Future;

use legalchat_protocol::pb;
use legalchat_protocol::time::rfc3339;
use legalchat_protocol::validate::ValidationError;
use legalchat_sdk::{Client, ConversationUpdate, Error, HistoryCursor, NewConversation, Sent, new_client_message_id};
use serde_json::{Map, Value, json};

use crate::payload;

/// Every event a browser may emit once authenticated (besides `authenticate`), in the
/// order `bridge-socketio/README.md` documents them.
pub const REQUESTS: &[&str] = &[
    "send_message",
    "edit_message",
    "delete_message",
    "react",
    "unreact",
    "pin_message",
    "message_read",
    "typing_start",
    "typing_stop",
    "join_room",
    "leave_room",
    "get_history",
    "get_thread",
    "list_pins",
    "get_receipts",
    "list_conversations",
    "get_conversation",
    "create_conversation",
    "update_conversation",
    "add_participants",
    "remove_participant",
    "set_role",
    "get_presence",
    "get_audit",
    "start_upload",
    "start_download",
    "renew_token",
    "revoke_sessions",
    "set_user_active",
];

/// A failed request, as the acknowledgement's `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The `.proto`'s error code name (`INVALID_ARGUMENT`, `FORBIDDEN`, …), or
    /// `UNAUTHENTICATED` / `UNAVAILABLE` / `TIMEOUT` for what the bridge itself saw.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// `RATE_LIMITED`: milliseconds until the request would be accepted (0: not known).
    pub retry_after_ms: u64,
}

impl Failure {
    /// `{error: {code, message}}`, and `retryAfterMs` when the server said how long to wait.
    pub fn to_json(&self) -> Value {
        if self.retry_after_ms > 0 {
            return json!({"error": {"code": self.code, "message": self.message, "retryAfterMs": self.retry_after_ms}});
        }
        json!({"error": {"code": self.code, "message": self.message}})
    }

    fn invalid(e: ValidationError) -> Self {
        Self { code: "INVALID_ARGUMENT", message: format!("{}: {}", e.field, e.reason), retry_after_ms: 0 }
    }
}

impl From<ValidationError> for Failure {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid(v) => return Self::invalid(v.clone()),
            Error::Server { code, .. } => code.as_str_name(),
            Error::Unauthorized(_) => "UNAUTHENTICATED",
            Error::Timeout => "TIMEOUT",
            Error::OutboxFull(_) => "OVERLOADED",
            Error::Connect(_) | Error::Tls(_) | Error::Closed(_) | Error::Disconnected(_) => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        let retry_after_ms = match &e {
            Error::Server { retry_after: Some(wait), .. } => u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            _ => 0,
        };
        let message = match e {
            Error::Server { message, .. } => message,
            other => other.to_string(),
        };
        Self { code, message, retry_after_ms }
    }
}

type Outcome = Result<Value, Failure>;

/// A request event's payload, read and checked: what [`run`] asks of the daemon session.
/// Strings borrow from the payload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Call<'a> {
    /// `send_message`.
    SendMessage(pb::SendMessage),
    /// `edit_message`.
    Edit { conversation: &'a str, seq: u64, content: pb::MessageContent },
    /// `delete_message`.
    Delete { conversation: &'a str, seq: u64 },
    /// `react` (`remove: false`) and `unreact`.
    React { conversation: &'a str, seq: u64, emoji: &'a str, remove: bool },
    /// `pin_message`.
    Pin { conversation: &'a str, seq: u64, unpin: bool },
    /// `message_read`.
    MarkRead { conversation: &'a str, seq: u64 },
    /// `typing_start` and `typing_stop`.
    Typing { conversation: &'a str, active: bool },
    /// `join_room`.
    JoinRoom { conversation: &'a str },
    /// `leave_room`.
    LeaveRoom { conversation: &'a str },
    /// `get_history`.
    History { conversation: &'a str, cursor: HistoryCursor, limit: u32 },
    /// `get_thread`.
    Thread { conversation: &'a str, root: u64, after: u64, limit: u32 },
    /// `list_pins`.
    Pins { conversation: &'a str },
    /// `get_receipts`.
    Receipts { conversation: &'a str },
    /// `list_conversations`.
    ListConversations { limit: u32 },
    /// `get_conversation`.
    GetConversation { conversation: &'a str },
    /// `create_conversation`.
    CreateConversation(NewConversation),
    /// `update_conversation`.
    UpdateConversation { conversation: &'a str, update: ConversationUpdate },
    /// `add_participants`.
    AddParticipants { conversation: &'a str, users: Vec<String>, role: pb::ParticipantRole },
    /// `remove_participant`.
    RemoveParticipant { conversation: &'a str, user: &'a str },
    /// `set_role`.
    SetRole { conversation: &'a str, user: &'a str, role: pb::ParticipantRole },
    /// `get_presence`.
    Presence { users: Vec<String> },
    /// `renew_token`.
    RenewToken { token: &'a str },
    /// `revoke_sessions`.
    RevokeSessions { user: &'a str },
    /// `set_user_active`.
    SetUserActive { user: &'a str, active: bool },
    /// `get_audit`.
    Audit { conversation: &'a str, seq: u64 },
}

/// An event's arguments: its payload as an object (none is an empty one).
pub(crate) fn arguments(payload: &Value) -> Result<&Map<String, Value>, Failure> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    match payload {
        Value::Object(o) => Ok(o),
        Value::Null => Ok(&EMPTY),
        _ => Err(ValidationError::new("payload", "must be an object").into()),
    }
}

/// Serves one request event of an authenticated socket. `event` is one of [`REQUESTS`].
pub async fn handle(client: &Client, event: &str, payload: Value) -> Outcome {
    let call = parse(event, &payload, client.session().max_message_bytes)?;
    run(client, call).await
}

/// Reads the payload of request event `event` (the text of a message at most
/// `max_message_bytes`). Pure, so that what a browser may send is fuzzed
/// (`fuzz/fuzz_targets/bridge_json.rs`); an error names the JSON field. What the SDK
/// checks itself when it sends (ids, emoji, titles, …) is checked there.
pub fn parse<'a>(event: &str, payload: &'a Value, max_message_bytes: usize) -> Result<Call<'a>, Failure> {
    let args = arguments(payload)?;
    let conv = || required_str(args, "conversationId");
    Ok(match event {
        "send_message" => Call::SendMessage(payload::send_message(payload, max_message_bytes, new_client_message_id)?),
        "edit_message" => {
            let conversation = conv()?;
            let content = payload::content(args.get("content"))?;
            legalchat_protocol::validate::message_content(Some(&content), max_message_bytes)?;
            Call::Edit { conversation, seq: seq(args, "seq")?, content }
        }
        "delete_message" => {
            let conversation = conv()?;
            Call::Delete { conversation, seq: seq(args, "seq")? }
        }
        "react" | "unreact" => {
            let conversation = conv()?;
            let (seq, emoji) = (seq(args, "seq")?, required_str(args, "emoji")?);
            Call::React { conversation, seq, emoji, remove: event == "unreact" }
        }
        "pin_message" => {
            let conversation = conv()?;
            let unpin = optional_bool(args, "unpin")?.unwrap_or(false);
            Call::Pin { conversation, seq: seq(args, "seq")?, unpin }
        }
        "message_read" => {
            let conversation = conv()?;
            Call::MarkRead { conversation, seq: seq(args, "seq")? }
        }
        "typing_start" | "typing_stop" => Call::Typing { conversation: conv()?, active: event == "typing_start" },
        "join_room" => Call::JoinRoom { conversation: conv()? },
        "leave_room" => Call::LeaveRoom { conversation: conv()? },
        "get_history" => {
            let conversation = conv()?;
            let cursor = match (optional_u64(args, "before")?, optional_u64(args, "after")?) {
                (Some(_), Some(_)) => return Err(ValidationError::new("before", "give before or after, not both").into()),
                (Some(b), None) => HistoryCursor::Before(b),
                (None, Some(a)) => HistoryCursor::After(a),
                (None, None) => HistoryCursor::Latest,
            };
            Call::History { conversation, cursor, limit: limit(args, 50)? }
        }
        "get_thread" => {
            let conversation = conv()?;
            let after = optional_u64(args, "after")?.unwrap_or(0);
            Call::Thread { conversation, root: seq(args, "seq")?, after, limit: limit(args, 50)? }
        }
        "list_pins" => Call::Pins { conversation: conv()? },
        "get_receipts" => Call::Receipts { conversation: conv()? },
        "list_conversations" => Call::ListConversations { limit: limit(args, 100)? },
        "get_conversation" => Call::GetConversation { conversation: conv()? },
        "create_conversation" => {
            let kind = required_str(args, "type")?;
            let participants = string_list(args, "participants")?;
            let title = optional_str(args, "title")?.unwrap_or_default();
            let new = match kind {
                "private" => {
                    let [other] = participants.as_slice() else {
                        return Err(ValidationError::new("participants", "a private conversation takes exactly one other user").into());
                    };
                    NewConversation::private(other.clone())
                }
                "group" => NewConversation::group(title, participants),
                "support" => NewConversation::support(title, participants),
                "case" => NewConversation::case(required_str(args, "caseId")?, title, participants),
                other => {
                    return Err(ValidationError::new("type", format!("{other:?} is not private, group, case or support")).into());
                }
            };
            Call::CreateConversation(new.with_description(optional_str(args, "description")?.unwrap_or_default()))
        }
        "update_conversation" => {
            let mut update = ConversationUpdate::new();
            if let Some(t) = optional_str(args, "title")? {
                update = update.title(t);
            }
            if let Some(d) = optional_str(args, "description")? {
                update = update.description(d);
            }
            if let Some(settings) = args.get("settings").and_then(Value::as_object) {
                if let Some(n) = optional_bool(settings, "notifications")? {
                    update = update.notifications(n);
                }
                if let Some(e) = optional_bool(settings, "encryption")? {
                    update = update.encryption(e);
                }
                if let Some(r) = optional_u64(settings, "retention")? {
                    update =
                        update.retention_days(u32::try_from(r).map_err(|_| ValidationError::new("settings.retention", "is too large"))?);
                }
            }
            Call::UpdateConversation { conversation: conv()?, update }
        }
        "add_participants" => {
            let users = string_list(args, "userIds")?;
            let role = role(optional_str(args, "role")?.unwrap_or("member"))?;
            Call::AddParticipants { conversation: conv()?, users, role }
        }
        "remove_participant" => Call::RemoveParticipant { conversation: conv()?, user: required_str(args, "userId")? },
        "set_role" => {
            let role = role(required_str(args, "role")?)?;
            Call::SetRole { conversation: conv()?, user: required_str(args, "userId")?, role }
        }
        "get_presence" => Call::Presence { users: string_list(args, "userIds")? },
        "renew_token" => Call::RenewToken { token: required_str(args, "token")? },
        "revoke_sessions" => Call::RevokeSessions { user: required_str(args, "userId")? },
        "set_user_active" => {
            let active = args
                .get("active")
                .and_then(Value::as_bool)
                .ok_or_else(|| Failure::from(ValidationError::new("active", "must be true or false")))?;
            Call::SetUserActive { user: required_str(args, "userId")?, active }
        }
        "get_audit" => Call::Audit { conversation: conv()?, seq: seq(args, "seq")? },
        other => {
            return Err(Failure {
                code: "INVALID_ARGUMENT",
                message: format!("{other:?} is not an event this bridge serves"),
                retry_after_ms: 0,
            });
        }
    })
}

/// Asks the daemon session for what `call` says, and shapes the answer for the browser.
pub async fn run(client: &Client, call: Call<'_>) -> Outcome {
    match call {
        Call::SendMessage(send) => {
            let sent = client
                .send_message(&send.conversation_id, &send.client_message_id, send.content.unwrap_or_default(), send.reply_to_seq)
                .await?;
            Ok(sent_json(&send.conversation_id, &sent, Some(&send.client_message_id)))
        }
        Call::Edit { conversation, seq, content } => event_entry(conversation, client.edit(conversation, seq, content)).await,
        Call::Delete { conversation, seq } => event_entry(conversation, client.delete(conversation, seq)).await,
        Call::React { conversation, seq, emoji, remove: false } => event_entry(conversation, client.react(conversation, seq, emoji)).await,
        Call::React { conversation, seq, emoji, remove: true } => event_entry(conversation, client.unreact(conversation, seq, emoji)).await,
        Call::Pin { conversation, seq, unpin } => event_entry(conversation, client.pin(conversation, seq, unpin)).await,
        Call::MarkRead { conversation, seq } => {
            client.mark_read(conversation, seq).await?;
            Ok(json!({"conversationId": conversation, "seq": seq}))
        }
        Call::Typing { conversation, active } => {
            client.typing(conversation, active).await?;
            Ok(json!({"conversationId": conversation}))
        }
        Call::JoinRoom { conversation } => {
            let users = client.join_room(conversation).await?;
            Ok(json!({"conversationId": users.conversation_id, "users": users.online_user_ids}))
        }
        Call::LeaveRoom { conversation } => {
            client.leave_room(conversation).await?;
            Ok(json!({"conversationId": conversation}))
        }
        Call::History { conversation, cursor, limit } => {
            let (page, receipts) = tokio::join!(client.history(conversation, cursor, limit), client.receipts(conversation));
            Ok(page_json(&page?, receipts.ok().as_ref()))
        }
        Call::Thread { conversation, root, after, limit } => Ok(page_json(&client.thread(conversation, root, after, limit).await?, None)),
        Call::Pins { conversation } => Ok(page_json(&client.pins(conversation).await?, None)),
        Call::Receipts { conversation } => {
            let list = client.receipts(conversation).await?;
            let states: Vec<Value> = list
                .states
                .iter()
                .map(|s| {
                    json!({
                        "userId": s.user_id,
                        "deliveredSeq": s.delivered_seq,
                        "deliveredAt": time_or_null(s.delivered_at_ms),
                        "readSeq": s.read_seq,
                        "readAt": time_or_null(s.read_at_ms),
                    })
                })
                .collect();
            Ok(json!({"conversationId": list.conversation_id, "states": states}))
        }
        Call::ListConversations { limit } => {
            let list = client.list_conversations(limit).await?;
            Ok(json!({"conversations": list.iter().map(payload::conversation).collect::<Vec<_>>()}))
        }
        Call::GetConversation { conversation } => Ok(payload::conversation(&client.get_conversation(conversation).await?)),
        Call::CreateConversation(new) => Ok(payload::conversation(&client.create_conversation(new).await?)),
        Call::UpdateConversation { conversation, update } => {
            Ok(payload::conversation(&client.update_conversation(conversation, update).await?))
        }
        Call::AddParticipants { conversation, users, role } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            Ok(payload::conversation(&client.add_participants(conversation, &users, role).await?))
        }
        Call::RemoveParticipant { conversation, user } => Ok(payload::conversation(&client.remove_participant(conversation, user).await?)),
        Call::SetRole { conversation, user, role } => {
            Ok(payload::conversation(&client.set_participant_role(conversation, user, role).await?))
        }
        Call::Presence { users } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            let presence = client.presence(&users).await?;
            let users: Vec<Value> = presence
                .iter()
                .map(|p| json!({"userId": p.user_id, "online": p.online, "lastSeen": time_or_null(p.last_seen_ms)}))
                .collect();
            Ok(json!({"users": users}))
        }
        Call::RenewToken { token } => {
            let info = client.renew_token(token).await?;
            Ok(json!({"tokenExpiresAt": rfc3339(info.token_expires_at_ms)}))
        }
        Call::RevokeSessions { user } => {
            client.revoke_sessions(user).await?;
            Ok(json!({}))
        }
        Call::SetUserActive { user, active } => {
            client.set_user_active(user, active).await?;
            Ok(json!({}))
        }
        Call::Audit { conversation, seq } => {
            let audit = client.audit(conversation, seq).await?;
            let versions: Vec<Value> = audit
                .versions
                .iter()
                .map(|v| {
                    json!({
                        "seq": v.seq,
                        "action": v.action().as_str_name().to_ascii_lowercase(),
                        "actorId": v.actor_id,
                        "timestamp": rfc3339(v.timestamp_ms),
                        "content": v.content.as_ref().map(|c| json!({"text": c.text})),
                    })
                })
                .collect();
            Ok(json!({"conversationId": audit.conversation_id, "seq": audit.message_seq, "versions": versions}))
        }
    }
}

/// An event request's answer: the new entry's place in the log.
async fn event_entry(conversation: &str, request: impl Future<Output = Result<Sent, Error>>) -> Outcome {
    Ok(sent_json(conversation, &request.await?, None))
}

/// The acknowledgement of a stored entry: `{_id, conversationId, seq, timestamp, duplicate}`.
pub fn sent_json(conversation: &str, sent: &Sent, client_message_id: Option<&str>) -> Value {
    let mut out = json!({
        "_id": sent.message_id,
        "conversationId": conversation,
        "seq": sent.seq,
        "timestamp": rfc3339(sent.timestamp_ms),
        "duplicate": sent.duplicate,
    });
    if let Some(id) = client_message_id {
        out["clientMessageId"] = json!(id);
    }
    out
}

fn page_json(page: &pb::HistoryPage, receipts: Option<&pb::ReceiptList>) -> Value {
    json!({
        "conversationId": page.conversation_id,
        "messages": page.messages.iter().map(|m| payload::message(m, receipts)).collect::<Vec<_>>(),
        "hasMore": page.has_more,
        "lastSeq": page.last_seq,
    })
}

fn time_or_null(ms: i64) -> Value {
    if ms == 0 { Value::Null } else { json!(rfc3339(ms)) }
}

fn required_str<'a>(args: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, Failure> {
    optional_str(args, field)?.ok_or_else(|| ValidationError::new(field, "is required").into())
}

fn optional_str<'a>(args: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, Failure> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ValidationError::new(field, "must be a string").into()),
    }
}

fn optional_u64(args: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, Failure> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ValidationError::new(field, "must be a non-negative integer").into()),
    }
}

fn optional_bool(args: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, Failure> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ValidationError::new(field, "must be true or false").into()),
    }
}

/// A message's seq: a positive integer.
fn seq(args: &Map<String, Value>, field: &'static str) -> Result<u64, Failure> {
    optional_u64(args, field)?
        .filter(|s| *s > 0)
        .ok_or_else(|| ValidationError::new(field, "must be the seq of a message (a positive integer)").into())
}

/// A page size, 1..=100 (`default` when not given).
fn limit(args: &Map<String, Value>, default: u32) -> Result<u32, Failure> {
    match optional_u64(args, "limit")? {
        None => Ok(default),
        Some(l) => {
            u32::try_from(l).ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| ValidationError::new("limit", "must be 1..=100").into())
        }
    }
}

fn string_list(args: &Map<String, Value>, field: &'static str) -> Result<Vec<String>, Failure> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| ValidationError::new(field, "must be a list of user ids").into()))
            .collect(),
        Some(_) => Err(ValidationError::new(field, "must be a list of user ids").into()),
    }
}

fn role(name: &str) -> Result<pb::ParticipantRole, Failure> {
    match name {
        "member" => Ok(pb::ParticipantRole::Member),
        "moderator" => Ok(pb::ParticipantRole::Moderator),
        "admin" => Ok(pb::ParticipantRole::AdminRole),
        other => Err(ValidationError::new("role", format!("{other:?} is not member, moderator or admin")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn seqs_must_be_positive_integers() {
        assert_eq!(seq(&args(json!({"seq": 3})), "seq"), Ok(3));
        for bad in [json!({"seq": 0}), json!({"seq": -1}), json!({"seq": "3"}), json!({"seq": 1.5}), json!({})] {
            let e = seq(&args(bad.clone()), "seq").unwrap_err();
            assert_eq!(e.code, "INVALID_ARGUMENT", "{bad}");
            assert!(e.message.starts_with("seq: "), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn limits_and_lists_name_their_field() {
        assert_eq!(limit(&args(json!({})), 50), Ok(50));
        assert_eq!(limit(&args(json!({"limit": 100})), 50), Ok(100));
        assert!(limit(&args(json!({"limit": 101})), 50).unwrap_err().message.starts_with("limit: "));
        assert_eq!(string_list(&args(json!({"userIds": ["a", "b"]})), "userIds"), Ok(vec!["a".to_string(), "b".to_string()]));
        assert!(string_list(&args(json!({"userIds": [1]})), "userIds").unwrap_err().message.starts_with("userIds: "));
        assert!(role("owner").unwrap_err().message.contains("member, moderator or admin"));
    }

    #[test]
    fn sdk_errors_keep_the_servers_code() {
        let f = Failure::from(Error::Server { code: pb::ErrorCode::Forbidden, message: "not a participant".into(), retry_after: None });
        assert_eq!(f, Failure { code: "FORBIDDEN", message: "not a participant".into(), retry_after_ms: 0 });
        assert_eq!(f.to_json(), json!({"error": {"code": "FORBIDDEN", "message": "not a participant"}}));
        assert_eq!(Failure::from(Error::Disconnected("gone".into())).code, "UNAVAILABLE");
        assert_eq!(Failure::from(Error::Invalid(ValidationError::new("emoji", "is not an emoji"))).message, "emoji: is not an emoji");
    }

    #[test]
    fn acknowledgements_carry_the_place_in_the_log() {
        let sent = Sent { message_id: "m1".into(), seq: 7, timestamp_ms: 1_700_000_000_000, duplicate: false };
        let v = sent_json("c1", &sent, Some("cm-1"));
        assert_eq!(v["_id"], "m1");
        assert_eq!((v["seq"].as_u64(), v["conversationId"].as_str(), v["clientMessageId"].as_str()), (Some(7), Some("c1"), Some("cm-1")));
        assert_eq!(v["duplicate"], false);
    }
}
