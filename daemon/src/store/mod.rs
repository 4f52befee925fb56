//! Durable state behind the [`Store`] trait.
//!
//! RocksDB ([`RocksStore`]) is the embedded default. The trait speaks in records and
//! batches of [`Write`]s rather than RocksDB types, so that a shared store for multi-node
//! clusters can implement it later without touching the shards.
//!
//! Keys are big-endian so that `(conversation, seq)` scans come out ordered. Message
//! records are stored *sealed* (see [`crate::crypto`]); the store never sees plaintext
//! message bodies.
//!
//! A conversation's log grows only through [`Write::Append`], which names the newest seq
//! the writer believes is stored: a store refuses the whole batch when another writer got
//! there first ([`StoreError::Conflict`]). One node never sees that (each conversation has
//! one shard); in a cluster on a shared store it is what fences a second writer.
//!
//! [`conformance`] holds the behaviour every implementation must show, as tests that run
//! against RocksDB here and against any future store.

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
pub(crate) mod faulty;
mod records;
mod rocks;

pub use records::{
    StoredConversation, StoredFile, StoredMessage, StoredParticipant, StoredPushSubscription, StoredReadState, StoredUser, StoredVersion,
};
pub use rocks::{FORMAT_VERSION, RocksStore};

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
    /// An append expected a different newest seq: another writer appended first. Nothing
    /// of the batch was applied.
    #[error("conversation {conversation}: expected newest seq {expected}, found {actual}")]
    Conflict {
        /// The conversation, as hex.
        conversation: String,
        /// What the writer expected.
        expected: u64,
        /// What is stored.
        actual: u64,
    },
    /// The data directory was written by another version of the daemon.
    #[error("{0}")]
    Format(String),
}

/// A secondary index entry of a conversation's log (plaintext: seqs and user ids only).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexEntry {
    /// Message `seq` replies to message `parent` (threads).
    Reply {
        /// The replied-to message.
        parent: u64,
        /// The reply.
        seq: u64,
    },
    /// Message `seq` is deleted (unread counts skip it).
    Deleted {
        /// The message.
        seq: u64,
    },
    /// Message `seq` mentions `user` (mention counts).
    Mention {
        /// The mentioned participant.
        user: String,
        /// The message.
        seq: u64,
    },
    /// Message `seq` carries attachment `file` (a file is kept while a message refers to
    /// it).
    FileRef {
        /// The file's id.
        file: [u8; 16],
        /// The message.
        seq: u64,
    },
}

/// One write of a batch. A batch is applied atomically: all of it or nothing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Write {
    /// Create or replace a conversation's metadata.
    Conversation(StoredConversation),
    /// Append sealed entries to a conversation's log, on condition that its newest seq is
    /// `expected_last_seq`; the entries' seqs run on from there without gaps.
    Append {
        /// The conversation.
        conversation: ConversationKey,
        /// The newest seq before this append (0 for an empty log).
        expected_last_seq: u64,
        /// (seq, sealed record), ascending from `expected_last_seq + 1`.
        entries: Vec<(u64, Vec<u8>)>,
    },
    /// Replace an entry already in the log: a message's state after an edit, delete,
    /// reaction or pin, or an edit event whose text was superseded.
    Replace {
        /// The conversation.
        conversation: ConversationKey,
        /// The entry's seq.
        seq: u64,
        /// The sealed record.
        sealed: Vec<u8>,
    },
    /// Add a secondary index entry.
    Index {
        /// The conversation.
        conversation: ConversationKey,
        /// The entry.
        entry: IndexEntry,
    },
    /// Remove a secondary index entry (a mention edited away).
    Unindex {
        /// The conversation.
        conversation: ConversationKey,
        /// The entry.
        entry: IndexEntry,
    },
    /// Keep a superseded version of message `target` in its audit trail.
    AuditVersion {
        /// The conversation.
        conversation: ConversationKey,
        /// The message.
        target: u64,
        /// The seq of the event that made this version.
        version: u64,
        /// The sealed `StoredVersion`.
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
    /// Create or replace a file's metadata record (sealed under the conversation's key).
    File {
        /// The conversation.
        conversation: ConversationKey,
        /// The file's id.
        file: [u8; 16],
        /// The sealed `StoredFile`.
        sealed: Vec<u8>,
    },
    /// Remove a file's metadata record (its content is removed from disk after the
    /// commit).
    RemoveFile {
        /// The conversation.
        conversation: ConversationKey,
        /// The file's id.
        file: [u8; 16],
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
    /// Sealed log entries with `from <= seq <= to`, ascending, at most `limit`.
    fn messages(&self, id: &ConversationKey, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Sealed log entries with `seq < before`, newest first, at most `limit`.
    fn entries_before(&self, id: &ConversationKey, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Seqs of the replies to `parent` with `seq > after`, ascending, at most `limit`.
    fn replies(&self, id: &ConversationKey, parent: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError>;
    /// Seqs of deleted messages with `seq > after`, ascending, at most `limit`.
    fn deleted_after(&self, id: &ConversationKey, after: u64, limit: usize) -> Result<Vec<u64>, StoreError>;
    /// Seqs of messages mentioning `user` with `seq > after`, ascending, at most `limit`.
    fn mentions_after(&self, id: &ConversationKey, user: &str, after: u64, limit: usize) -> Result<Vec<u64>, StoreError>;
    /// The sealed audit versions of message `target`: (version seq, sealed), ascending.
    fn audit_versions(&self, id: &ConversationKey, target: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Every conversation `user` participates in.
    /// The sealed metadata record of `file` in conversation `id`.
    fn file(&self, id: &ConversationKey, file: &[u8; 16]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether any message of conversation `id` refers to `file`.
    fn file_referenced(&self, id: &ConversationKey, file: &[u8; 16]) -> Result<bool, StoreError>;
    /// Up to `limit` stored files, in key order, after `after` (exclusive; `None` from
    /// the start): for the sweep that removes files nothing refers to.
    fn files_after(&self, after: Option<(ConversationKey, [u8; 16])>, limit: usize)
    -> Result<Vec<(ConversationKey, [u8; 16])>, StoreError>;
    /// Up to `limit` wrapped data keys in conversation order, after `after` (exclusive;
    /// `None` from the start): for re-wrapping them under a new master key.
    fn data_keys_after(&self, after: Option<ConversationKey>, limit: usize) -> Result<Vec<(ConversationKey, Vec<u8>)>, StoreError>;
    /// `user`'s conversations.
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
