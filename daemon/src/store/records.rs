//! Stored records, as protobuf so that they evolve the way the wire protocol does: new
//! fields get new tags and old data stays readable.
//!
//! Where a record holds something the wire protocol already describes exactly (an event
//! of the log, a reaction), it embeds the protocol's own message: the two evolve under the
//! same rule, and a second copy of the schema could only drift.

use legalchat_protocol::pb;

/// A conversation's metadata (plaintext: ids, kind, title, participants; never bodies).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredConversation {
    /// 16-byte id.
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    /// `pb::ConversationType`.
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// Display title.
    #[prost(string, tag = "3")]
    pub title: String,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
    /// Legal case id.
    #[prost(string, tag = "5")]
    pub case_id: String,
    /// Current participants.
    #[prost(message, repeated, tag = "6")]
    pub participants: Vec<StoredParticipant>,
    /// Creation time.
    #[prost(int64, tag = "7")]
    pub created_at_ms: i64,
    /// Last change of metadata.
    #[prost(int64, tag = "8")]
    pub updated_at_ms: i64,
    /// Who created it.
    #[prost(string, tag = "9")]
    pub created_by: String,
    /// `settings.notifications` off: no push except mentions. Stored inverted so that a
    /// record written before settings existed reads as "notifications on".
    #[prost(bool, tag = "10")]
    pub muted: bool,
    /// `settings.retention_days` (0: none of its own).
    #[prost(uint32, tag = "11")]
    pub retention_days: u32,
    /// `settings.encryption`.
    #[prost(bool, tag = "12")]
    pub encryption: bool,
    /// Seqs of pinned messages, ascending.
    #[prost(uint64, repeated, tag = "13")]
    pub pinned: Vec<u64>,
}

/// One participant.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredParticipant {
    /// User id.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// `pb::ParticipantRole`.
    #[prost(int32, tag = "2")]
    pub role: i32,
    /// Join time.
    #[prost(int64, tag = "3")]
    pub joined_at_ms: i64,
}

/// An uploaded file's metadata; stored sealed under the conversation's data key (its name
/// says as much as its content). The content lies sealed in chunks outside the database.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredFile {
    /// The sanitized name it was first uploaded under.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type, recognised from the content.
    #[prost(string, tag = "2")]
    pub mime_type: String,
    /// Size in bytes.
    #[prost(uint64, tag = "3")]
    pub size: u64,
    /// SHA-256 of the content.
    #[prost(bytes = "vec", tag = "4")]
    pub sha256: Vec<u8>,
    /// A preview, for images.
    #[prost(message, optional, tag = "5")]
    pub thumbnail: Option<pb::Thumbnail>,
    /// Who uploaded it first.
    #[prost(string, tag = "6")]
    pub uploaded_by: String,
    /// When it was stored (or last uploaded again).
    #[prost(int64, tag = "7")]
    pub stored_at_ms: i64,
    /// The name of its sealed content in the conversation's directory of files: the file
    /// id and a random generation, so that content removed and uploaded again never
    /// shares a name with what a sweep is deleting.
    #[prost(string, tag = "8")]
    pub blob: String,
}

impl StoredFile {
    /// The attachment a message carries for it, under `name` (empty: the stored name).
    pub fn attachment(&self, file_id: String, name: &str) -> pb::Attachment {
        pb::Attachment {
            file_id,
            name: if name.is_empty() { self.name.clone() } else { legalchat_protocol::files::sanitize_file_name(name) },
            mime_type: self.mime_type.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            thumbnail: self.thumbnail.clone(),
        }
    }
}

/// A message record; stored sealed under the conversation's data key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredMessage {
    /// Server-assigned id.
    #[prost(bytes = "vec", tag = "1")]
    pub message_id: Vec<u8>,
    /// Sender's id for de-duplication.
    #[prost(string, tag = "2")]
    pub client_message_id: String,
    /// Sender.
    #[prost(string, tag = "3")]
    pub sender_id: String,
    /// Text.
    #[prost(string, tag = "4")]
    pub text: String,
    /// `pb::ContentType`.
    #[prost(int32, tag = "5")]
    pub content_type: i32,
    /// `pb::TextFormat`.
    #[prost(int32, tag = "6")]
    pub format: i32,
    /// Server time.
    #[prost(int64, tag = "7")]
    pub timestamp_ms: i64,
    /// Set for an entry that is not a new message (edit, delete, reaction, ...).
    #[prost(message, optional, tag = "8")]
    pub event: Option<pb::ConversationEvent>,
    /// The message replied to (0: none).
    #[prost(uint64, tag = "9")]
    pub reply_to_seq: u64,
    /// Mentioned participants, sorted.
    #[prost(string, repeated, tag = "10")]
    pub mentions: Vec<String>,
    /// Last edit (0: never).
    #[prost(int64, tag = "11")]
    pub edited_at_ms: i64,
    /// Deleted at (0: not deleted). A deleted message keeps no text here; its versions
    /// are in the audit trail.
    #[prost(int64, tag = "12")]
    pub deleted_at_ms: i64,
    /// Who deleted it.
    #[prost(string, tag = "13")]
    pub deleted_by: String,
    /// Reactions, one per emoji.
    #[prost(message, repeated, tag = "14")]
    pub reactions: Vec<pb::Reaction>,
    /// Pinned.
    #[prost(bool, tag = "15")]
    pub pinned: bool,
    /// How many messages (entries that are messages, deleted or not) the log holds up to
    /// and including this entry: unread counts are differences of these. 0 in records of
    /// format 1, where every entry was a message, so that there it equals the seq.
    #[prost(uint64, tag = "16")]
    pub message_number: u64,
    /// Seqs of the edit events of this message, oldest first (to redact superseded ones).
    #[prost(uint64, repeated, tag = "17")]
    pub edit_seqs: Vec<u64>,
    /// Attached files, as the server resolved them when the message was sent.
    #[prost(message, repeated, tag = "18")]
    pub attachments: Vec<pb::Attachment>,
}

impl StoredMessage {
    /// Its content as the wire carries it.
    pub fn content(&self) -> pb::MessageContent {
        pb::MessageContent {
            text: self.text.clone(),
            r#type: self.content_type,
            format: self.format,
            attachments: self.attachments.clone(),
        }
    }

    /// Whether this entry is a message (not another event).
    pub fn is_message(&self) -> bool {
        self.event.is_none()
    }

    /// Whether this entry is a message that is not deleted.
    pub fn is_visible_message(&self) -> bool {
        self.event.is_none() && self.deleted_at_ms == 0
    }

    /// Messages in the log up to and including this entry, at `seq`.
    pub fn messages_through(&self, seq: u64) -> u64 {
        // Format 1 wrote only messages and no numbers; a message of format 2 counts itself.
        if self.message_number == 0 && self.is_message() { seq } else { self.message_number }
    }
}

/// One superseded version of a message, kept sealed in its audit trail.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredVersion {
    /// `pb::AuditAction`.
    #[prost(int32, tag = "1")]
    pub action: i32,
    /// Who made this version.
    #[prost(string, tag = "2")]
    pub actor_id: String,
    /// When.
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
    /// The content of this version.
    #[prost(message, optional, tag = "4")]
    pub content: Option<pb::MessageContent>,
}

/// A participant's position in a conversation.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct StoredReadState {
    /// Everything up to this seq has been read.
    #[prost(uint64, tag = "1")]
    pub read_seq: u64,
    /// Everything up to this seq has been delivered to a device.
    #[prost(uint64, tag = "2")]
    pub delivered_seq: u64,
    /// When `read_seq` last moved.
    #[prost(int64, tag = "3")]
    pub read_at_ms: i64,
    /// When `delivered_seq` last moved.
    #[prost(int64, tag = "4")]
    pub delivered_at_ms: i64,
    /// Messages in the log up to `read_seq` (`StoredMessage::message_number` there):
    /// unread = the conversation's message count minus this, minus deleted ones after.
    /// The upgrade from format 1 sets it to `read_seq`.
    #[prost(uint64, tag = "5")]
    pub read_count: u64,
}

/// A user the server has seen, with the role their last token claimed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredUser {
    /// User id.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// `pb::UserRole`.
    #[prost(int32, tag = "2")]
    pub role: i32,
    /// Display name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Last authentication.
    #[prost(int64, tag = "4")]
    pub last_seen_ms: i64,
    /// Deactivated by an admin: cannot sign in.
    #[prost(bool, tag = "5")]
    pub deactivated: bool,
    /// Tokens issued before this time are refused (sessions revoked), 0 for none.
    #[prost(int64, tag = "6")]
    pub revoked_before_ms: i64,
}

/// A Web Push subscription of a user (RFC 8030 / RFC 8291).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredPushSubscription {
    /// The user.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Push service URL.
    #[prost(string, tag = "2")]
    pub endpoint: String,
    /// Subscription public key (P-256, uncompressed, 65 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub p256dh: Vec<u8>,
    /// Authentication secret (16 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub auth: Vec<u8>,
    /// When it was registered.
    #[prost(int64, tag = "5")]
    pub created_at_ms: i64,
}
