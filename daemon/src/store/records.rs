//! Stored records, as protobuf so that they evolve the way the wire protocol does: new
//! fields get new tags and old data stays readable.

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
