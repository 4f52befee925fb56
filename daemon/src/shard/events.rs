//! The event log of a conversation: what each kind of event checks, appends and rewrites.
//!
//! ```text
//!  request ──► checks (role, author, window, limits) ──► append the event at last_seq + 1
//!                                                     ├► rewrite the target message's entry
//!                                                     │  to its new state (text, tombstone,
//!                                                     │  reactions, pin)
//!                                                     ├► audit trail: the superseded version
//!                                                     └► fan-out of the event to every
//!                                                        participant's devices
//! ```
//!
//! A message's entry always holds its *current* state, so a page of history shows each
//! message as it is now, whatever part of the log a device has seen. The event entries
//! tell devices that already hold the message what changed. An edit's entry keeps its text
//! only while it is the message's newest version: a later edit or a delete redacts it, so
//! that participants can never read a superseded version. Those versions live on in the
//! message's audit trail, sealed under the conversation's key, for global admins.

use std::sync::Arc;

use prost::Message as _;

use legalchat_protocol::pb::{self, ConversationType, ErrorCode, ParticipantRole, conversation_event::Kind};
use legalchat_protocol::validate::{self, format_id};

use super::{Conversation, Fanout, Pending, Shard, encode_event, open_record, store_err};
use crate::auth::{Identity, Role};
use crate::ids;
use crate::policy::RequestError;
use crate::registry::SessionId;
use crate::store::{IndexEntry, Store, StoredMessage, StoredVersion, Write};

/// Distinct emoji one message may carry unless configured otherwise.
pub const DEFAULT_MAX_REACTIONS: usize = 20;
/// Pinned messages one conversation may have.
pub const MAX_PINS: usize = 100;
/// Entries read back at most to find a conversation's newest visible message.
const LAST_MESSAGE_SCAN: usize = 1_024;
/// Bytes of a parent's text in a reply's preview.
const PREVIEW_BYTES: usize = 200;

/// An event request about one message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventRequest {
    /// Replace the text.
    Edit {
        /// The message.
        seq: u64,
        /// The new content (validated).
        content: pb::MessageContent,
    },
    /// Delete it.
    Delete {
        /// The message.
        seq: u64,
    },
    /// Add or remove the caller's reaction.
    React {
        /// The message.
        seq: u64,
        /// The emoji (validated).
        emoji: String,
        /// Remove instead of add.
        remove: bool,
    },
    /// Pin or unpin.
    Pin {
        /// The message.
        seq: u64,
        /// Unpin instead of pin.
        unpin: bool,
    },
}

/// A change of title, description or settings: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SettingsUpdate {
    /// New title (validated).
    pub title: Option<String>,
    /// New description (validated).
    pub description: Option<String>,
    /// Push notifications on or off.
    pub notifications: Option<bool>,
    /// Retention in days.
    pub retention_days: Option<u32>,
    /// Marked as needing extra encryption.
    pub encryption: Option<bool>,
}

/// The wire form of the entry at `seq`, with its state as of `state_seq`.
pub(super) fn to_wire(
    c: &Conversation,
    seq: u64,
    rec: &StoredMessage,
    state_seq: u64,
    reply_preview: Option<pb::ReplyPreview>,
) -> pb::Message {
    let message_id: [u8; 16] = rec.message_id.as_slice().try_into().unwrap_or([0; 16]);
    let visible = rec.is_visible_message();
    pb::Message {
        conversation_id: format_id(&c.id),
        seq,
        message_id: format_id(&message_id),
        client_message_id: rec.client_message_id.clone(),
        sender_id: rec.sender_id.clone(),
        content: visible.then(|| rec.content()),
        timestamp_ms: rec.timestamp_ms,
        event: rec.event.clone(),
        reply_to_seq: rec.reply_to_seq,
        reply_preview,
        mentions: if visible { rec.mentions.clone() } else { Vec::new() },
        edited_at_ms: rec.edited_at_ms,
        deleted_at_ms: rec.deleted_at_ms,
        deleted_by: rec.deleted_by.clone(),
        reactions: rec.reactions.clone(),
        pinned: rec.pinned,
        state_seq: if rec.is_message() { state_seq } else { 0 },
    }
}

/// A reply's view of its parent.
pub(super) fn preview(parent: &StoredMessage) -> pb::ReplyPreview {
    if parent.deleted_at_ms != 0 {
        return pb::ReplyPreview { sender_id: parent.sender_id.clone(), text: String::new(), deleted: true };
    }
    let mut end = parent.text.len().min(PREVIEW_BYTES);
    while !parent.text.is_char_boundary(end) {
        end -= 1;
    }
    pb::ReplyPreview { sender_id: parent.sender_id.clone(), text: parent.text[..end].to_owned(), deleted: false }
}

/// The entry at `seq` in its newest state: from this batch, or from the store.
pub(super) fn record(c: &Conversation, store: &dyn Store, seq: u64) -> Result<StoredMessage, RequestError> {
    if let Some(r) = c.batch_records.get(&seq) {
        return Ok(r.clone());
    }
    if seq == 0 || seq > c.last_seq {
        return Err(RequestError::not_found(format!("message_seq: there is no event {seq} in this conversation")));
    }
    let sealed = store.messages(&c.id, seq, seq, 1).map_err(store_err)?;
    match sealed.into_iter().next() {
        Some((s, bytes)) if s == seq => open_record(c, seq, &bytes),
        _ => Err(RequestError::internal(format!("event {seq} is missing from the log"))),
    }
}

/// Opens a stored entry into its wire form, as of the conversation's newest seq, with the
/// preview of its parent when it is a reply.
pub(super) fn open_entry(c: &Conversation, store: &dyn Store, seq: u64, sealed: &[u8]) -> Result<pb::Message, RequestError> {
    let rec = open_record(c, seq, sealed)?;
    let preview = if rec.reply_to_seq > 0 && rec.is_visible_message() {
        match record(c, store, rec.reply_to_seq) {
            Ok(parent) => Some(preview(&parent)),
            Err(e) if e.code == ErrorCode::NotFound => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(to_wire(c, seq, &rec, c.last_seq, preview))
}

/// Participants (other than the sender) mentioned in `content`, sorted, without repeats.
pub(super) fn mentions(c: &Conversation, content: &pb::MessageContent, sender: &str) -> Vec<String> {
    let format = pb::TextFormat::try_from(content.format).unwrap_or(pb::TextFormat::Plain);
    let mut found: Vec<String> = legalchat_protocol::richtext::mentions(&content.text, format.into())
        .into_iter()
        .filter(|u| u != sender && c.role_of(u).is_some())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The answer to a retried request: the original's, after checking it was the same
/// author's. `None` when the id is new.
pub(super) fn duplicate(
    c: &Conversation,
    store: &dyn Store,
    client_id: &str,
    caller: &str,
) -> Result<Option<pb::MessageAccepted>, RequestError> {
    let conflict = || RequestError::new(ErrorCode::Conflict, "client_message_id: already used by another sender in this conversation");
    if let Some((author, prev)) = c.uncommitted.get(client_id) {
        if author != caller {
            return Err(conflict());
        }
        return Ok(Some(pb::MessageAccepted { duplicate: true, ..prev.clone() }));
    }
    if client_id.is_empty() {
        return Ok(None);
    }
    let Some(seq) = store.client_message_seq(&c.id, client_id).map_err(store_err)? else { return Ok(None) };
    let original = record(c, store, seq).map_err(|e| {
        if e.code == ErrorCode::NotFound { RequestError::internal("de-duplication index points at a missing message") } else { e }
    })?;
    if original.sender_id != caller {
        return Err(conflict());
    }
    let message_id: [u8; 16] = original.message_id.as_slice().try_into().unwrap_or([0; 16]);
    Ok(Some(pb::MessageAccepted {
        conversation_id: format_id(&c.id),
        message_id: format_id(&message_id),
        seq,
        timestamp_ms: original.timestamp_ms,
        duplicate: true,
    }))
}

/// The answer to a request that changes nothing (a reaction already there, a pin already
/// in place): the conversation's newest seq.
fn unchanged(c: &Conversation) -> pb::MessageAccepted {
    pb::MessageAccepted {
        conversation_id: format_id(&c.id),
        message_id: String::new(),
        seq: c.last_seq,
        timestamp_ms: ids::now_ms(),
        duplicate: true,
    }
}

/// Rewrites the entry at `seq` with `rec` (its new state).
fn rewrite(c: &mut Conversation, p: &mut Pending, seq: u64, rec: StoredMessage) {
    let sealed = c.dek.seal_message(&c.id, seq, &rec.encode_to_vec());
    p.replace(c.id, seq, sealed);
    c.batch_records.insert(seq, rec);
}

/// Appends an event entry and fans it out to every participant's devices (and `also`, a
/// user just removed). The session that asked is not skipped: it learns the seq from its
/// answer, and the entry reaches it in order with everything else.
pub(super) fn append_event(
    c: &mut Conversation,
    p: &mut Pending,
    caller: &Identity,
    client_event_id: String,
    kind: Kind,
    also: Option<&str>,
    now: i64,
) -> pb::MessageAccepted {
    let seq = c.last_seq + 1;
    let event_id = ids::random_id();
    let timestamp_ms = now.max(c.last_message.as_ref().map_or(0, |m| m.timestamp_ms));
    let rec = StoredMessage {
        message_id: event_id.to_vec(),
        client_message_id: client_event_id.clone(),
        sender_id: caller.user_id.clone(),
        timestamp_ms,
        event: Some(pb::ConversationEvent { kind: Some(kind) }),
        message_number: c.message_count,
        ..Default::default()
    };
    let sealed = c.dek.seal_message(&c.id, seq, &rec.encode_to_vec());
    p.append(c.id, seq, sealed);
    if !client_event_id.is_empty() {
        p.writes.push(Write::ClientMessageId { conversation: c.id, client_message_id: client_event_id.clone(), seq });
    }
    let wire = to_wire(c, seq, &rec, seq, None);
    let accepted = pb::MessageAccepted {
        conversation_id: wire.conversation_id.clone(),
        message_id: wire.message_id.clone(),
        seq,
        timestamp_ms,
        duplicate: false,
    };
    c.last_seq = seq;
    if !client_event_id.is_empty() {
        c.uncommitted.insert(client_event_id, (caller.user_id.clone(), accepted.clone()));
    }
    c.batch_records.insert(seq, rec);
    let recipients: Arc<[String]> = match also {
        Some(user) => c.members.iter().cloned().chain(std::iter::once(user.to_owned())).collect(),
        None => c.members.clone(),
    };
    let frame = encode_event(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage { message: Some(wire) }));
    p.fanout.push(Fanout { recipients, origin: None, frame, message: false, notice: None });
    p.events += 1;
    accepted
}

/// May `caller` act on other people's messages here (delete them, pin)? Global admins
/// everywhere; conversation admins and moderators outside private chats.
fn moderates(c: &Conversation, caller: &Identity) -> bool {
    caller.role == Role::Admin
        || (c.kind() != ConversationType::Private
            && matches!(c.role_of(&caller.user_id), Some(ParticipantRole::AdminRole | ParticipantRole::Moderator)))
}

/// Fills in a new message's attachments from the files stored in its conversation (type,
/// size, hash, preview: never what the sender claims) and returns their ids. A file that
/// is not stored in this conversation is refused, so that nobody attaches what they have
/// not uploaded here.
pub(super) fn resolve_attachments(
    c: &Conversation,
    store: &dyn Store,
    attachments: &mut [pb::Attachment],
    removed: &std::collections::HashSet<(crate::store::ConversationKey, [u8; 16])>,
) -> Result<Vec<[u8; 16]>, RequestError> {
    let mut ids = Vec::with_capacity(attachments.len());
    for (i, a) in attachments.iter_mut().enumerate() {
        let file = validate::parse_id("content.attachments.file_id", &a.file_id).map_err(|e| RequestError::invalid(e.to_string()))?;
        let not_found = || {
            RequestError::new(
                ErrorCode::NotFound,
                format!("content.attachments.file_id: (attachment {}) no file {} in this conversation; upload it first", i + 1, a.file_id),
            )
        };
        if removed.contains(&(c.id, file)) {
            return Err(not_found());
        }
        let sealed = store.file(&c.id, &file).map_err(store_err)?.ok_or_else(not_found)?;
        let record = c.dek.open_file_record(&c.id, &file, &sealed).map_err(|_| open_failed(c, "file record"))?;
        let stored = crate::store::StoredFile::decode(record.as_slice()).map_err(|_| open_failed(c, "file record"))?;
        *a = stored.attachment(std::mem::take(&mut a.file_id), &a.name);
        if !ids.contains(&file) {
            ids.push(file);
        }
    }
    Ok(ids)
}

fn open_failed(c: &Conversation, what: &str) -> RequestError {
    tracing::error!(conversation = %format_id(&c.id), what, "a stored record does not open under the conversation's key");
    RequestError::new(ErrorCode::Internal, "a stored record of this conversation is damaged")
}

/// The audit version for a message's current content, keyed by the event that made it.
fn current_version(target_seq: u64, target: &StoredMessage) -> (u64, StoredVersion) {
    let (seq, action, at) = match target.edit_seqs.last() {
        Some(&edit) => (edit, pb::AuditAction::Edited, target.edited_at_ms),
        None => (target_seq, pb::AuditAction::Original, target.timestamp_ms),
    };
    let content = target.content();
    (seq, StoredVersion { action: action as i32, actor_id: target.sender_id.clone(), timestamp_ms: at, content: Some(content) })
}

fn keep_version(c: &Conversation, p: &mut Pending, target: u64, version: u64, v: &StoredVersion) {
    let sealed = c.dek.seal_version(&c.id, target, version, &v.encode_to_vec());
    p.writes.push(Write::AuditVersion { conversation: c.id, target, version, sealed });
}

/// Redacts the text of an edit entry whose version is superseded.
fn redact_edit(c: &mut Conversation, store: &dyn Store, p: &mut Pending, edit_seq: u64) -> Result<(), RequestError> {
    let mut rec = record(c, store, edit_seq)?;
    if let Some(pb::ConversationEvent { kind: Some(Kind::Edited(e)) }) = &mut rec.event {
        e.content = None;
        e.redacted = true;
        rewrite(c, p, edit_seq, rec);
    }
    Ok(())
}

/// The newest visible message with a seq below `before`, in its current state.
pub(super) fn last_visible_before(c: &Conversation, store: &dyn Store, before: u64) -> Result<Option<Arc<pb::Message>>, RequestError> {
    let mut next = before;
    let mut scanned = 0usize;
    while next > 1 && scanned < LAST_MESSAGE_SCAN {
        let page = store.entries_before(&c.id, next, 64).map_err(store_err)?;
        let lowest = page.last().map(|(s, _)| *s);
        // Entries of this batch are newer than the store's copies.
        let mut candidates: Vec<(u64, StoredMessage)> = Vec::with_capacity(page.len());
        for (seq, sealed) in page {
            let rec = match c.batch_records.get(&seq) {
                Some(r) => r.clone(),
                None => open_record(c, seq, &sealed)?,
            };
            candidates.push((seq, rec));
        }
        for seq in c.batch_records.keys().copied().filter(|s| *s < next && lowest.is_none_or(|l| *s > l)) {
            if !candidates.iter().any(|(s, _)| *s == seq) {
                candidates.push((seq, c.batch_records[&seq].clone()));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (seq, rec) in &candidates {
            scanned += 1;
            if rec.is_visible_message() {
                return Ok(Some(Arc::new(to_wire(c, *seq, rec, *seq, None))));
            }
        }
        match lowest {
            Some(l) => next = l,
            None => break,
        }
    }
    Ok(None)
}

impl Shard {
    /// An edit, delete, reaction or pin.
    pub(super) fn event(
        &mut self,
        id: crate::store::ConversationKey,
        caller: &Identity,
        _origin: SessionId,
        client_event_id: String,
        request: EventRequest,
        p: &mut Pending,
    ) -> Result<pb::MessageAccepted, RequestError> {
        let store = self.store.clone();
        let edit_window = self.config.edit_window;
        let max_reactions = self.config.max_reactions_per_message.max(1);
        let c = self.load(&id)?;
        let participant = c.role_of(&caller.user_id).is_some();
        // Global admins may delete and pin anywhere; everything else is for participants.
        let admin_action = matches!(request, EventRequest::Delete { .. } | EventRequest::Pin { .. }) && caller.role == Role::Admin;
        if !participant && !admin_action {
            c.require_participant(&caller.user_id)?;
        }
        if let Some(original) = duplicate(c, &*store, &client_event_id, &caller.user_id)? {
            return Ok(original);
        }
        let seq = match &request {
            EventRequest::Edit { seq, .. }
            | EventRequest::Delete { seq }
            | EventRequest::React { seq, .. }
            | EventRequest::Pin { seq, .. } => *seq,
        };
        let mut target = record(c, &*store, seq)?;
        if !target.is_message() {
            return Err(RequestError::invalid(format!("message_seq: event {seq} is not a message")));
        }
        let deleted = target.deleted_at_ms != 0;
        let now = ids::now_ms();
        let kind = match request {
            EventRequest::Edit { content, .. } => {
                if target.sender_id != caller.user_id {
                    return Err(RequestError::forbidden("you can edit only your own messages"));
                }
                if deleted {
                    return Err(RequestError::invalid(format!("message_seq: message {seq} was deleted and cannot be edited")));
                }
                if let Some(window) = edit_window {
                    let age = u64::try_from(now.saturating_sub(target.timestamp_ms)).unwrap_or(0);
                    if u128::from(age) > window.as_millis() {
                        return Err(RequestError::forbidden(format!(
                            "message {seq} can no longer be edited: the edit window is {} seconds",
                            window.as_secs()
                        )));
                    }
                }
                let (version_seq, version) = current_version(seq, &target);
                keep_version(c, p, seq, version_seq, &version);
                if let Some(&previous) = target.edit_seqs.last() {
                    redact_edit(c, &*store, p, previous)?;
                }
                let new_mentions = mentions(c, &content, &caller.user_id);
                let edit_seq = c.last_seq + 1;
                for user in new_mentions.iter().filter(|u| !target.mentions.contains(u)) {
                    p.writes.push(Write::Index { conversation: id, entry: IndexEntry::Mention { user: user.clone(), seq } });
                }
                // A mention edited away no longer counts.
                for user in target.mentions.iter().filter(|u| !new_mentions.contains(u)) {
                    p.writes.push(Write::Unindex { conversation: id, entry: IndexEntry::Mention { user: user.clone(), seq } });
                }
                target.text.clone_from(&content.text);
                target.format = content.format;
                // An edit changes the text: a message with files keeps them and its type,
                // and the event says so, so that a client folding it keeps them too.
                if target.attachments.is_empty() {
                    target.content_type = content.r#type;
                }
                let content = target.content();
                target.edited_at_ms = now;
                target.edit_seqs.push(edit_seq);
                target.mentions = new_mentions;
                Kind::Edited(pb::MessageEdited { target_seq: seq, content: Some(content), redacted: false })
            }
            EventRequest::Delete { .. } => {
                if target.sender_id != caller.user_id && !moderates(c, caller) {
                    return Err(RequestError::forbidden(
                        "you can delete only your own messages (conversation admins and moderators may delete others')",
                    ));
                }
                if deleted {
                    return Ok(unchanged(c));
                }
                let delete_seq = c.last_seq + 1;
                let (version_seq, version) = current_version(seq, &target);
                keep_version(c, p, seq, version_seq, &version);
                let removal = StoredVersion {
                    action: pb::AuditAction::Deleted as i32,
                    actor_id: caller.user_id.clone(),
                    timestamp_ms: now,
                    content: version.content.clone(),
                };
                keep_version(c, p, seq, delete_seq, &removal);
                for edit in target.edit_seqs.clone() {
                    redact_edit(c, &*store, p, edit)?;
                }
                p.writes.push(Write::Index { conversation: id, entry: IndexEntry::Deleted { seq } });
                for file in target.attachments.drain(..) {
                    if let Ok(file) = validate::parse_id("file_id", &file.file_id) {
                        p.writes.push(Write::Unindex { conversation: id, entry: IndexEntry::FileRef { file, seq } });
                    }
                }
                target.text.clear();
                target.content_type = 0;
                target.format = 0;
                target.mentions.clear();
                target.reactions.clear();
                target.deleted_at_ms = now;
                target.deleted_by.clone_from(&caller.user_id);
                if target.pinned {
                    target.pinned = false;
                    c.meta.pinned.retain(|s| *s != seq);
                    p.writes.push(Write::Conversation(c.meta.clone()));
                }
                Kind::Deleted(pb::MessageDeleted { target_seq: seq })
            }
            EventRequest::React { emoji, remove, .. } => {
                if deleted {
                    return Err(RequestError::invalid(format!("message_seq: message {seq} was deleted")));
                }
                let at = target.reactions.iter().position(|r| r.emoji == emoji);
                let has = at.is_some_and(|i| target.reactions[i].user_ids.contains(&caller.user_id));
                if has != remove {
                    return Ok(unchanged(c));
                }
                match (at, remove) {
                    (Some(i), false) => target.reactions[i].user_ids.push(caller.user_id.clone()),
                    (None, false) => {
                        if target.reactions.len() >= max_reactions {
                            return Err(RequestError::invalid(format!(
                                "emoji: message {seq} already carries the most distinct reactions ({max_reactions})"
                            )));
                        }
                        target.reactions.push(pb::Reaction { emoji: emoji.clone(), user_ids: vec![caller.user_id.clone()] });
                    }
                    (Some(i), true) => {
                        target.reactions[i].user_ids.retain(|u| u != &caller.user_id);
                        if target.reactions[i].user_ids.is_empty() {
                            target.reactions.remove(i);
                        }
                    }
                    (None, true) => return Ok(unchanged(c)),
                }
                Kind::Reaction(pb::ReactionChanged { target_seq: seq, emoji, added: !remove })
            }
            EventRequest::Pin { unpin, .. } => {
                let allowed = (c.kind() == ConversationType::Private && participant) || moderates(c, caller);
                if !allowed {
                    return Err(RequestError::forbidden("only the conversation's admins and moderators may pin messages"));
                }
                if deleted {
                    return Err(RequestError::invalid(format!("message_seq: message {seq} was deleted")));
                }
                if target.pinned != unpin {
                    return Ok(unchanged(c));
                }
                if !unpin && c.meta.pinned.len() >= MAX_PINS {
                    return Err(RequestError::invalid(format!("a conversation has at most {MAX_PINS} pinned messages; unpin one first")));
                }
                target.pinned = !unpin;
                if unpin {
                    c.meta.pinned.retain(|s| *s != seq);
                } else {
                    c.meta.pinned.push(seq);
                    c.meta.pinned.sort_unstable();
                }
                p.writes.push(Write::Conversation(c.meta.clone()));
                Kind::Pin(pb::PinChanged { target_seq: seq, pinned: !unpin })
            }
        };
        let was_last = c.last_message.as_ref().is_some_and(|m| m.seq == seq);
        let accepted = append_event(c, p, caller, client_event_id, kind, None, now);
        let event_seq = accepted.seq;
        let visible = target.is_visible_message();
        let state = visible.then(|| Arc::new(to_wire(c, seq, &target, event_seq, None)));
        rewrite(c, p, seq, target);
        if was_last {
            c.last_message = match state {
                Some(s) => Some(s),
                None => last_visible_before(c, &*store, seq)?,
            };
        }
        Ok(accepted)
    }

    /// Title, description, settings.
    pub(super) fn update(
        &mut self,
        id: crate::store::ConversationKey,
        caller: &Identity,
        origin: SessionId,
        client_event_id: String,
        update: SettingsUpdate,
        p: &mut Pending,
    ) -> Result<pb::Conversation, RequestError> {
        let store = self.store.clone();
        let names = self.directory.clone();
        let c = self.load(&id)?;
        let participant = c.role_of(&caller.user_id).is_some();
        if !(moderates(c, caller) || (c.kind() == ConversationType::Private && participant)) {
            if !participant {
                c.require_participant(&caller.user_id)?;
            }
            return Err(RequestError::forbidden("only the conversation's admins and moderators may change its title or settings"));
        }
        if duplicate(c, &*store, &client_event_id, &caller.user_id)?.is_some() {
            return Ok(c.to_pb(&*store, &names, &caller.user_id));
        }
        let m = &mut c.meta;
        let before = (m.title.clone(), m.description.clone(), m.muted, m.retention_days, m.encryption);
        if let Some(t) = update.title {
            m.title = t;
        }
        if let Some(d) = update.description {
            m.description = d;
        }
        if let Some(n) = update.notifications {
            m.muted = !n;
        }
        if let Some(r) = update.retention_days {
            m.retention_days = r;
        }
        if let Some(e) = update.encryption {
            m.encryption = e;
        }
        if before == (m.title.clone(), m.description.clone(), m.muted, m.retention_days, m.encryption) {
            return Ok(c.to_pb(&*store, &names, &caller.user_id));
        }
        let now = ids::now_ms();
        c.meta.updated_at_ms = now;
        p.writes.push(Write::Conversation(c.meta.clone()));
        let kind = Kind::ConversationChanged(pb::ConversationChanged {
            title: c.meta.title.clone(),
            description: c.meta.description.clone(),
            settings: Some(c.settings()),
        });
        append_event(c, p, caller, client_event_id, kind, None, now);
        super::announce(c, &*store, &names, p, origin, None);
        Ok(c.to_pb(&*store, &names, &caller.user_id))
    }

    /// A participant's role.
    pub(super) fn set_role(
        &mut self,
        id: crate::store::ConversationKey,
        caller: &Identity,
        origin: SessionId,
        user: &str,
        role: ParticipantRole,
        p: &mut Pending,
    ) -> Result<pb::Conversation, RequestError> {
        let store = self.store.clone();
        let names = self.directory.clone();
        let c = self.load(&id)?;
        if c.kind() == ConversationType::Private {
            return Err(RequestError::invalid("participants of a private conversation have no roles to change"));
        }
        let admin_here = c.role_of(&caller.user_id) == Some(ParticipantRole::AdminRole);
        if !(admin_here || caller.role == Role::Admin) {
            c.require_participant(&caller.user_id)?;
            return Err(RequestError::forbidden("only the conversation's admins may change roles"));
        }
        if role == ParticipantRole::Unspecified {
            return Err(RequestError::invalid("role: must be MEMBER, MODERATOR or ADMIN_ROLE"));
        }
        let Some(part) = c.meta.participants.iter_mut().find(|x| x.user_id == user) else {
            return Err(RequestError::not_found(format!("user {user} is not a participant of this conversation")));
        };
        if part.role == role as i32 {
            return Ok(c.to_pb(&*store, &names, &caller.user_id));
        }
        part.role = role as i32;
        let now = ids::now_ms();
        c.meta.updated_at_ms = now;
        p.writes.push(Write::Conversation(c.meta.clone()));
        let kind = Kind::RoleChanged(pb::ParticipantRoleChanged { user_id: user.to_owned(), role: role as i32 });
        append_event(c, p, caller, String::new(), kind, None, now);
        super::announce(c, &*store, &names, p, origin, None);
        Ok(c.to_pb(&*store, &names, &caller.user_id))
    }

    /// A page of replies to `root`.
    pub(super) fn thread(
        &mut self,
        id: &crate::store::ConversationKey,
        caller: &Identity,
        root: u64,
        after: u64,
        limit: u32,
    ) -> Result<pb::HistoryPage, RequestError> {
        let store = self.store.clone();
        let c = self.load(id)?;
        c.require_participant(&caller.user_id)?;
        let parent = record(c, &*store, root)?;
        if !parent.is_message() {
            return Err(RequestError::invalid(format!("root_seq: event {root} is not a message")));
        }
        let limit = usize::try_from(limit.max(1)).unwrap_or(100);
        let mut seqs = store.replies(id, root, after, limit + 1).map_err(store_err)?;
        let has_more = seqs.len() > limit;
        seqs.truncate(limit);
        let mut messages = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let rec = record(c, &*store, seq)?;
            messages.push(to_wire(c, seq, &rec, c.last_seq, Some(preview(&parent))));
        }
        Ok(pb::HistoryPage { conversation_id: format_id(id), messages, has_more, last_seq: c.last_seq })
    }

    /// The pinned messages.
    pub(super) fn pins(&mut self, id: &crate::store::ConversationKey, caller: &Identity) -> Result<pb::HistoryPage, RequestError> {
        let store = self.store.clone();
        let c = self.load(id)?;
        c.require_participant(&caller.user_id)?;
        let mut messages = Vec::with_capacity(c.meta.pinned.len());
        for seq in c.meta.pinned.clone() {
            let rec = record(c, &*store, seq)?;
            let parent = if rec.reply_to_seq > 0 { record(c, &*store, rec.reply_to_seq).ok().map(|p| preview(&p)) } else { None };
            messages.push(to_wire(c, seq, &rec, c.last_seq, parent));
        }
        Ok(pb::HistoryPage { conversation_id: format_id(id), messages, has_more: false, last_seq: c.last_seq })
    }

    /// Every version of a message, for global admins.
    pub(super) fn audit(
        &mut self,
        id: &crate::store::ConversationKey,
        caller: &Identity,
        seq: u64,
    ) -> Result<pb::MessageAudit, RequestError> {
        if caller.role != Role::Admin {
            return Err(RequestError::forbidden("only administrators may read a message's audit trail"));
        }
        let store = self.store.clone();
        let c = self.load(id)?;
        let target = record(c, &*store, seq)?;
        if !target.is_message() {
            return Err(RequestError::invalid(format!("message_seq: event {seq} is not a message")));
        }
        let mut versions = Vec::new();
        for (version, sealed) in store.audit_versions(id, seq).map_err(store_err)? {
            let plain = c.dek.open_version(id, seq, version, &sealed).map_err(|e| {
                tracing::error!(conversation = %format_id(id), seq, version, error = %e, "audit version failed authentication");
                RequestError::internal("a stored audit version failed its integrity check")
            })?;
            let v = StoredVersion::decode(plain.as_slice()).map_err(|e| RequestError::internal(format!("corrupt audit record: {e}")))?;
            versions.push(pb::MessageVersion {
                seq: version,
                action: v.action,
                actor_id: v.actor_id,
                timestamp_ms: v.timestamp_ms,
                content: v.content,
            });
        }
        if target.deleted_at_ms == 0 {
            let (version, v) = current_version(seq, &target);
            versions.push(pb::MessageVersion {
                seq: version,
                action: v.action,
                actor_id: v.actor_id,
                timestamp_ms: v.timestamp_ms,
                content: v.content,
            });
        }
        versions.sort_by_key(|v| v.seq);
        metrics::counter!("legalchat_audit_reads_total").increment(1);
        tracing::info!(admin = %caller.user_id, conversation = %format_id(id), seq, "audit trail read");
        Ok(pb::MessageAudit { conversation_id: format_id(id), message_seq: seq, versions })
    }
}
