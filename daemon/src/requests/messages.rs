//! Messages and the events on them: send, edit, delete, react, pin (appends to the
//! conversation's log, answered from the shard's thread once durable), and the reads of
//! the log: history, thread, pins, a message's audit trail.
//!
//! Each request is checked here (the error names the field) and routed to the shard of
//! its conversation. Whether the caller may do it, and what the log holds, is the shard's
//! to judge.

use legalchat_protocol::pb;
use legalchat_protocol::validate::{self, ValidationError};

use super::{Append, AppendEntry, Context, Pending, Routed, invalid, parse_conv};
use crate::policy::RequestError;
use crate::shard::{Command, Cursor, EventRequest};

/// Sending a message.
pub fn send(m: pb::SendMessage, cx: &Context<'_>) -> Result<Append, RequestError> {
    crate::ops::hot().messages_received.increment(1);
    let id = parse_conv(&m.conversation_id)?;
    validate::client_message_id(&m.client_message_id).map_err(invalid)?;
    validate::message_content(m.content.as_ref(), cx.max_message_size).map_err(invalid)?;
    let entry = AppendEntry::Message {
        client_message_id: m.client_message_id,
        content: m.content.unwrap_or_default(),
        reply_to_seq: m.reply_to_seq,
    };
    Ok(Append { shard: cx.shard_of(&id), conversation: id, entry })
}

/// Editing a message's content.
pub fn edit(e: pb::EditMessage, cx: &Context<'_>) -> Result<Append, RequestError> {
    // An edit changes the text: a message's files and its type stay as they were sent.
    let content = e.content.map(|c| pb::MessageContent { r#type: pb::ContentType::Text.into(), ..c });
    let request = validate::target_seq("message_seq", e.message_seq)
        .and_then(|()| match &content {
            Some(c) if !c.attachments.is_empty() => {
                Err(ValidationError::new("content.attachments", "an edit changes the text only; the attachments stay as sent"))
            }
            c => validate::message_content(c.as_ref(), cx.max_message_size),
        })
        .map(|()| EventRequest::Edit { seq: e.message_seq, content: content.unwrap_or_default() });
    event(&e.conversation_id, e.client_event_id, request, cx)
}

/// Deleting a message.
pub fn delete(d: pb::DeleteMessage, cx: &Context<'_>) -> Result<Append, RequestError> {
    let request = validate::target_seq("message_seq", d.message_seq).map(|()| EventRequest::Delete { seq: d.message_seq });
    event(&d.conversation_id, d.client_event_id, request, cx)
}

/// Adding or removing a reaction.
pub fn react(r: pb::React, cx: &Context<'_>) -> Result<Append, RequestError> {
    let request = validate::target_seq("message_seq", r.message_seq)
        .and_then(|()| validate::emoji(&r.emoji))
        .map(|()| EventRequest::React { seq: r.message_seq, emoji: r.emoji, remove: r.remove });
    event(&r.conversation_id, r.client_event_id, request, cx)
}

/// Pinning or unpinning a message.
pub fn pin(p: pb::PinMessage, cx: &Context<'_>) -> Result<Append, RequestError> {
    let request = validate::target_seq("message_seq", p.message_seq).map(|()| EventRequest::Pin { seq: p.message_seq, unpin: p.unpin });
    event(&p.conversation_id, p.client_event_id, request, cx)
}

/// An edit, delete, reaction or pin, once its own fields are checked: the conversation
/// first, then the event id, then the event's fields.
fn event(
    conversation_id: &str,
    client_event_id: String,
    request: Result<EventRequest, ValidationError>,
    cx: &Context<'_>,
) -> Result<Append, RequestError> {
    let id = parse_conv(conversation_id)?;
    validate::client_event_id(&client_event_id).map_err(invalid)?;
    let request = request.map_err(invalid)?;
    Ok(Append { shard: cx.shard_of(&id), conversation: id, entry: AppendEntry::Event { client_event_id, request } })
}

/// A page of history.
pub fn history(h: &pb::GetHistory, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&h.conversation_id)?;
    let limit = validate::history_limit(h.limit).map_err(invalid)?;
    let cursor = match h.cursor {
        None => Cursor::Latest,
        Some(pb::get_history::Cursor::BeforeSeq(b)) => Cursor::Before(b),
        Some(pb::get_history::Cursor::AfterSeq(a)) => Cursor::After(a),
    };
    let caller = cx.caller.clone();
    Ok(cx.route(&id, |reply| Command::History { id, caller, cursor, limit, reply }, Pending::History))
}

/// A page of a thread.
pub fn thread(t: &pb::GetThread, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&t.conversation_id)?;
    validate::target_seq("root_seq", t.root_seq).map_err(invalid)?;
    let limit = validate::history_limit(t.limit).map_err(invalid)?;
    let (caller, root, after) = (cx.caller.clone(), t.root_seq, t.after_seq);
    Ok(cx.route(&id, |reply| Command::Thread { id, caller, root, after, limit, reply }, Pending::History))
}

/// The pinned messages.
pub fn pins(l: &pb::ListPins, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&l.conversation_id)?;
    let caller = cx.caller.clone();
    Ok(cx.route(&id, |reply| Command::Pins { id, caller, reply }, Pending::History))
}

/// A message's audit trail.
pub fn audit(a: &pb::GetMessageAudit, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&a.conversation_id)?;
    validate::target_seq("message_seq", a.message_seq).map_err(invalid)?;
    let (caller, seq) = (cx.caller.clone(), a.message_seq);
    Ok(cx.route(&id, |reply| Command::Audit { id, caller, seq, reply }, Pending::Audit))
}
