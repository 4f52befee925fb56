//! A store for tests that fails on demand: RocksDB underneath, with commits that fail
//! while `failing_commits` is set and `conversation` reads that fail for one id. One fake
//! for every test that needs the daemon to meet a broken disk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    ConversationKey, RocksStore, Store, StoreError, StoredConversation, StoredPushSubscription, StoredReadState, StoredUser, Write,
};

/// RocksDB with injected faults.
#[derive(Debug)]
pub(crate) struct FaultyStore {
    inner: RocksStore,
    failing_commits: AtomicBool,
    unreadable: Mutex<Option<ConversationKey>>,
}

impl FaultyStore {
    /// No faults yet.
    pub(crate) fn new(inner: RocksStore) -> Self {
        Self { inner, failing_commits: AtomicBool::new(false), unreadable: Mutex::new(None) }
    }

    /// Commits fail ("disk on fire") while `on`.
    pub(crate) fn fail_commits(&self, on: bool) {
        self.failing_commits.store(on, Ordering::SeqCst);
    }

    /// Reading conversation `id`'s metadata fails from now on.
    pub(crate) fn make_unreadable(&self, id: ConversationKey) {
        *self.unreadable.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }
}

impl Store for FaultyStore {
    fn commit(&self, writes: Vec<Write>, sync: bool) -> Result<(), StoreError> {
        if self.failing_commits.load(Ordering::SeqCst) {
            return Err(StoreError::Engine("disk on fire".into()));
        }
        self.inner.commit(writes, sync)
    }
    fn conversation(&self, id: &ConversationKey) -> Result<Option<StoredConversation>, StoreError> {
        if *self.unreadable.lock().unwrap_or_else(|e| e.into_inner()) == Some(*id) {
            return Err(StoreError::Engine("sector unreadable".into()));
        }
        self.inner.conversation(id)
    }
    fn data_key(&self, id: &ConversationKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.data_key(id)
    }
    fn last_seq(&self, id: &ConversationKey) -> Result<u64, StoreError> {
        self.inner.last_seq(id)
    }
    fn client_message_seq(&self, id: &ConversationKey, c: &str) -> Result<Option<u64>, StoreError> {
        self.inner.client_message_seq(id, c)
    }
    fn messages(&self, id: &ConversationKey, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.messages(id, from, to, limit)
    }
    fn entries_before(&self, id: &ConversationKey, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.entries_before(id, before, limit)
    }
    fn replies(&self, id: &ConversationKey, parent: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        self.inner.replies(id, parent, after, limit)
    }
    fn deleted_after(&self, id: &ConversationKey, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        self.inner.deleted_after(id, after, limit)
    }
    fn mentions_after(&self, id: &ConversationKey, user: &str, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        self.inner.mentions_after(id, user, after, limit)
    }
    fn audit_versions(&self, id: &ConversationKey, target: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.audit_versions(id, target)
    }
    fn file(&self, id: &ConversationKey, file: &[u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.file(id, file)
    }
    fn file_referenced(&self, id: &ConversationKey, file: &[u8; 16]) -> Result<bool, StoreError> {
        self.inner.file_referenced(id, file)
    }
    fn files_after(
        &self,
        after: Option<(ConversationKey, [u8; 16])>,
        limit: usize,
    ) -> Result<Vec<(ConversationKey, [u8; 16])>, StoreError> {
        self.inner.files_after(after, limit)
    }
    fn data_keys_after(&self, after: Option<ConversationKey>, limit: usize) -> Result<Vec<(ConversationKey, Vec<u8>)>, StoreError> {
        self.inner.data_keys_after(after, limit)
    }
    fn user_conversations(&self, user: &str) -> Result<Vec<ConversationKey>, StoreError> {
        self.inner.user_conversations(user)
    }
    fn read_states(&self, id: &ConversationKey) -> Result<Vec<(String, StoredReadState)>, StoreError> {
        self.inner.read_states(id)
    }
    fn user(&self, user: &str) -> Result<Option<StoredUser>, StoreError> {
        self.inner.user(user)
    }
    fn push_subscriptions(&self, user: &str) -> Result<Vec<StoredPushSubscription>, StoreError> {
        self.inner.push_subscriptions(user)
    }
    fn push_subscribers(&self) -> Result<Vec<String>, StoreError> {
        self.inner.push_subscribers()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}
