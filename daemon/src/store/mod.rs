//! Durable state behind the [`Store`] trait.
//!
//! RocksDB ([`RocksStore`]) is the embedded default. The trait speaks in records and
//! batches of [`Write`]s rather than RocksDB types, so that a shared store for multi-node
//! clusters can implement it later without touching the shards.
//!
//! Keys are big-endian so that `(conversation, seq)` scans come out ordered. Message
//! records are stored *sealed* (see [`crate::crypto`]); the store never sees plaintext
//! message bodies.

mod records;
mod rocks;

pub use records::{StoredConversation, StoredMessage, StoredParticipant, StoredPushSubscription, StoredReadState, StoredUser};
pub use rocks::RocksStore;

/// A conversation id: 128 bits.
pub type ConversationKey = [u8; 16];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed (disk full, I/O error, corruption).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {what}: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One write of a batch. A batch is applied atomically: all of it or nothing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Write {
    /// Create or replace a conversation's metadata.
    Conversation(StoredConversation),
    /// Store a sealed message at (conversation, seq).
    Message {
        /// The conversation.
        conversation: ConversationKey,
        /// Its sequence number.
        seq: u64,
        /// The sealed record.
        sealed: Vec<u8>,
    },
    /// Remember that `client_message_id` was stored as `seq` (for de-duplication).
    ClientMessageId {
        /// The conversation.
        conversation: ConversationKey,
        /// The sender's id for the message.
        client_message_id: String,
        /// Where it was stored.
        seq: u64,
    },
    /// Add `conversation` to `user`'s list.
    Membership {
        /// The user.
        user: String,
        /// The conversation.
        conversation: ConversationKey,
    },
    /// Remove `conversation` from `user`'s list.
    RemoveMembership {
        /// The user.
        user: String,
        /// The conversation.
        conversation: ConversationKey,
    },
    /// A conversation's wrapped data key.
    DataKey {
        /// The conversation.
        conversation: ConversationKey,
        /// The data key, wrapped by the master key.
        wrapped: Vec<u8>,
    },
    /// A user's read position in a conversation.
    ReadState {
        /// The conversation.
        conversation: ConversationKey,
        /// The user.
        user: String,
        /// The position.
        state: StoredReadState,
    },
    /// A user's directory entry.
    User(StoredUser),
    /// Add or replace a push subscription (keyed by user and endpoint).
    PushSubscription(StoredPushSubscription),
    /// Remove a push subscription.
    RemovePushSubscription {
        /// The user.
        user: String,
        /// The subscription's endpoint.
        endpoint: String,
    },
}

/// Durable storage of conversations, messages and users.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Applies `writes` atomically. With `sync`, returns only once they are on stable
    /// storage (fsync); without, once they are in the write-ahead log in the OS.
    fn commit(&self, writes: Vec<Write>, sync: bool) -> Result<(), StoreError>;
    /// A conversation's metadata.
    fn conversation(&self, id: &ConversationKey) -> Result<Option<StoredConversation>, StoreError>;
    /// A conversation's wrapped data key.
    fn data_key(&self, id: &ConversationKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// The highest stored seq of a conversation (0 when empty).
    fn last_seq(&self, id: &ConversationKey) -> Result<u64, StoreError>;
    /// The seq stored for a client message id, if any.
    fn client_message_seq(&self, id: &ConversationKey, client_message_id: &str) -> Result<Option<u64>, StoreError>;
    /// Sealed messages with `from <= seq <= to`, ascending, at most `limit`.
    fn messages(&self, id: &ConversationKey, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Every conversation `user` participates in.
    fn user_conversations(&self, user: &str) -> Result<Vec<ConversationKey>, StoreError>;
    /// Read positions of every participant of a conversation.
    fn read_states(&self, id: &ConversationKey) -> Result<Vec<(String, StoredReadState)>, StoreError>;
    /// A user's directory entry.
    fn user(&self, user: &str) -> Result<Option<StoredUser>, StoreError>;
    /// Every push subscription of `user`.
    fn push_subscriptions(&self, user: &str) -> Result<Vec<StoredPushSubscription>, StoreError>;
    /// Every user with at least one push subscription (read once at start).
    fn push_subscribers(&self) -> Result<Vec<String>, StoreError>;
    /// Makes everything committed so far durable (used at shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}
