//! The embedded RocksDB store.
//!
//! Column families and keys (all integers big-endian, so byte order is numeric order):
//!
//! | family          | key                              | value                           |
//! |-----------------|----------------------------------|---------------------------------|
//! | `conversations` | conversation (16)                | `StoredConversation`            |
//! | `messages`      | conversation (16) ‖ seq (8)      | sealed `StoredMessage`          |
//! | `client_ids`    | conversation (16) ‖ client id    | seq (8)                         |
//! | `memberships`   | user ‖ 0x00 ‖ conversation (16)  | empty                           |
//! | `data_keys`     | conversation (16)                | data key wrapped by master key  |
//! | `read_states`   | conversation (16) ‖ user         | `StoredReadState`               |
//! | `users`         | user                             | `StoredUser`                    |
//! | `push`          | user ‖ 0x00 ‖ endpoint           | `StoredPushSubscription`        |
//! | `event_index`   | conversation (16) ‖ kind ‖ ...   | empty (see below)               |
//! | `audit`         | conversation ‖ target ‖ version  | sealed `StoredVersion`          |
//! | `default`       | `format_version`                 | u32, the on-disk format         |
//!
//! `event_index` keys after the conversation: `r ‖ parent (8) ‖ seq (8)` (a reply),
//! `d ‖ seq (8)` (a deleted message), `m ‖ user ‖ 0x00 ‖ seq (8)` (a mention).
//!
//! User ids never contain 0x00 (see `validate::user_id`), so the separator is unambiguous.
//!
//! ## Format versions
//! 1. Every log entry was a message; seqs counted messages.
//! 2. Seqs count events of every kind; entries carry message numbers, read states carry
//!    read counts. A format-1 directory is upgraded on open: its read states gain their
//!    read counts (equal to their read seqs, since every entry was a message) and the
//!    marker is written. A directory of a newer format is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use prost::Message as _;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions,
};

use legalchat_protocol::validate::format_id;

use super::{
    ConversationKey, IndexEntry, Store, StoreError, StoredConversation, StoredPushSubscription, StoredReadState, StoredUser, Write,
};

const CF_CONVERSATIONS: &str = "conversations";
const CF_MESSAGES: &str = "messages";
const CF_CLIENT_IDS: &str = "client_ids";
const CF_MEMBERSHIPS: &str = "memberships";
const CF_DATA_KEYS: &str = "data_keys";
const CF_READ_STATES: &str = "read_states";
const CF_USERS: &str = "users";
const CF_PUSH: &str = "push";
const CF_EVENT_INDEX: &str = "event_index";
const CF_AUDIT: &str = "audit";
/// Attachments' metadata, sealed: conversation ‖ file id → `StoredFile`.
const CF_FILES: &str = "files";
/// The on-disk format this build writes (see the module doc).
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_KEY: &[u8] = b"format_version";
/// Conversations whose newest seq is remembered for the append check; past this the memory
/// is dropped and refilled from the log (one seek each).
const MAX_REMEMBERED_SEQS: usize = 100_000;
/// Memtable inserts into `messages` start from the last insert with the same conversation
/// (the key's 16-byte prefix); RocksDB takes this option only as a string.
const MESSAGES_INSERT_HINT: &str = "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.16";
const FAMILIES: [&str; 11] = [
    CF_CONVERSATIONS,
    CF_MESSAGES,
    CF_CLIENT_IDS,
    CF_MEMBERSHIPS,
    CF_DATA_KEYS,
    CF_READ_STATES,
    CF_USERS,
    CF_PUSH,
    CF_EVENT_INDEX,
    CF_AUDIT,
    CF_FILES,
];

/// RocksDB on local disk.
pub struct RocksStore {
    db: DB,
    /// The newest seq of conversations appended to, for [`Write::Append`]'s condition
    /// without a seek per batch. Updated before the write (a concurrent append with the
    /// same expectation then fails) and forgotten for a batch whose write failed.
    last_seqs: Mutex<HashMap<ConversationKey, u64>>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.db.path()).finish()
    }
}

fn engine(e: rocksdb::Error) -> StoreError {
    StoreError::Engine(e.into_string())
}

fn msg_key(conv: &ConversationKey, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(conv);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

fn membership_key(user: &str, conv: &ConversationKey) -> Vec<u8> {
    user_key(user, conv)
}

/// `user ‖ 0x00 ‖ rest`: all of a user's entries form one prefix.
fn user_key(user: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 1 + rest.len());
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

fn decode<M: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

fn index_key(conv: &ConversationKey, entry: &IndexEntry) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + 1 + 16);
    k.extend_from_slice(conv);
    match entry {
        IndexEntry::Reply { parent, seq } => {
            k.push(b'r');
            k.extend_from_slice(&parent.to_be_bytes());
            k.extend_from_slice(&seq.to_be_bytes());
        }
        IndexEntry::Deleted { seq } => {
            k.push(b'd');
            k.extend_from_slice(&seq.to_be_bytes());
        }
        IndexEntry::Mention { user, seq } => {
            k.push(b'm');
            k.extend_from_slice(&user_key(user, &seq.to_be_bytes()));
        }
        IndexEntry::FileRef { file, seq } => {
            k.push(b'f');
            k.extend_from_slice(file);
            k.extend_from_slice(&seq.to_be_bytes());
        }
    }
    k
}

fn concat_file(conv: &ConversationKey, file: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(conv);
    k[16..].copy_from_slice(file);
    k
}

fn audit_key(conv: &ConversationKey, target: u64, version: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(conv);
    k[16..24].copy_from_slice(&target.to_be_bytes());
    k[24..].copy_from_slice(&version.to_be_bytes());
    k
}

fn seq_from(what: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt { what, reason: format!("{} bytes where 8 were expected", bytes.len()) })
}

impl RocksStore {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        // Many shards write concurrently; pipelining lets the WAL write of one batch
        // overlap the memtable insert of the previous one.
        opts.set_enable_pipelined_write(true);
        opts.set_keep_log_file_num(5);
        // A log file is deleted only once every family has flushed what it holds, and
        // rarely written families (conversations, users, read positions updated in place)
        // would keep the log growing to RocksDB's default bound of gigabytes, all of it
        // replayed after a crash. Past this size the families holding the oldest log flush.
        opts.set_max_total_wal_size(256 << 20);
        // In-place updates (below) rule out concurrent memtable inserts; with one shard by
        // default there is one writer anyway.
        opts.set_allow_concurrent_memtable_write(false);
        // A memtable flush writes tens of megabytes: have it written out a megabyte at a time
        // as it goes, not in one burst at its end that every WAL fsync meanwhile waits behind.
        opts.set_bytes_per_sync(1 << 20);
        let mut families = Vec::with_capacity(FAMILIES.len());
        for name in &FAMILIES {
            let mut cf = if *name == CF_MESSAGES {
                // A batch appends runs of consecutive sequence numbers to a few conversations.
                // With a hint per conversation (the key's 16-byte prefix) the memtable insert
                // starts its skip-list search at that conversation's last insert instead of
                // at the top (its share of the daemon at 12,000 msgs/s: 12 → 6.5 %).
                Options::default().get_options_from_string(MESSAGES_INSERT_HINT).map_err(engine)?
            } else {
                Options::default()
            };
            // Every send moves its sender's read position: a read state is overwritten far
            // more often than it is created. Overwritten in place, the memtable holds one
            // entry per (conversation, reader) instead of one per send, and the skip list
            // stays small (daemon CPU at 25,000 durable msgs/s: 0.96–0.99 → 0.91 cores).
            // In-place values give iterators no point-in-time view; read states are only
            // iterated by the shard that owns, and alone writes, the conversation.
            if *name == CF_READ_STATES {
                cf.set_inplace_update_support(true);
            }
            // Message records are ciphertext: compressing them only burns CPU.
            if *name == CF_MESSAGES {
                cf.set_compression_type(DBCompressionType::None);
            } else {
                cf.set_compression_type(DBCompressionType::Lz4);
            }
            // Every send probes `client_ids` for a retry, and almost every probe misses:
            // a bloom filter answers those misses without touching a data block.
            if *name == CF_CLIENT_IDS {
                let mut table = BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                cf.set_block_based_table_factory(&table);
                // The same for the memtable, where the newest ids are: without a filter each
                // miss walks the skip list (4 % of the daemon's CPU at the seed load).
                cf.set_memtable_prefix_bloom_ratio(0.05);
                cf.set_memtable_whole_key_filtering(true);
            }
            families.push(ColumnFamilyDescriptor::new(*name, cf));
        }
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(engine)?;
        let store = Self { db, last_seqs: Mutex::new(HashMap::new()) };
        store.check_format()?;
        Ok(store)
    }

    /// Reads the format marker: writes it into a new directory, upgrades format 1, refuses
    /// a newer one.
    fn check_format(&self) -> Result<(), StoreError> {
        let found = match self.db.get(FORMAT_KEY).map_err(engine)? {
            Some(v) => Some(
                <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt { what: "format_version", reason: format!("{} bytes", v.len()) })?,
            ),
            None => None,
        };
        match found {
            Some(FORMAT_VERSION) => Ok(()),
            Some(v) if v > FORMAT_VERSION => Err(StoreError::Format(format!(
                "the data directory is in on-disk format {v}, written by a newer legalchatd; this one reads formats 1 to {FORMAT_VERSION}"
            ))),
            Some(v) => Err(StoreError::Format(format!("the data directory is in unknown on-disk format {v}"))),
            None => {
                let written_before = self.db.iterator_cf(self.cf(CF_CONVERSATIONS)?, IteratorMode::Start).next().is_some();
                if written_before {
                    tracing::info!(from = 1, to = FORMAT_VERSION, "upgrading the data directory's on-disk format");
                    self.upgrade_from_1()?;
                }
                let mut opts = WriteOptions::default();
                opts.set_sync(true);
                self.db.put_opt(FORMAT_KEY, FORMAT_VERSION.to_be_bytes(), &opts).map_err(engine)
            }
        }
    }

    /// Format 1 → 2: every entry of format 1 is a message, so a read position's read count
    /// is its read seq. Message records need nothing: a message without a number counts
    /// as its seq (see `StoredMessage::messages_through`).
    fn upgrade_from_1(&self) -> Result<(), StoreError> {
        let cf = self.cf(CF_READ_STATES)?;
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(engine)?;
            let mut state: StoredReadState = decode("read_states", &v)?;
            if state.read_count == 0 && state.read_seq > 0 {
                state.read_count = state.read_seq;
                batch.put_cf(cf, k, state.encode_to_vec());
                n += 1;
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(engine)?;
        tracing::info!(read_states = n, "on-disk format upgraded to 2");
        Ok(())
    }

    /// Checks every append's condition and reserves the new newest seqs; returns the
    /// conversations reserved (to forget if the write then fails).
    fn reserve_appends(&self, writes: &[Write]) -> Result<Vec<ConversationKey>, StoreError> {
        let mut known = self.last_seqs.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() > MAX_REMEMBERED_SEQS {
            known.clear();
        }
        // Check all before reserving any: a refused batch reserves nothing.
        let mut planned: Vec<(ConversationKey, u64)> = Vec::new();
        for w in writes {
            let Write::Append { conversation, expected_last_seq, entries } = w else { continue };
            let actual = match planned.iter().rev().find(|(c, _)| c == conversation) {
                Some((_, s)) => *s,
                None => match known.get(conversation) {
                    Some(s) => *s,
                    None => self.last_seq(conversation)?,
                },
            };
            if actual != *expected_last_seq {
                return Err(StoreError::Conflict { conversation: format_id(conversation), expected: *expected_last_seq, actual });
            }
            let mut next = actual;
            for (seq, _) in entries {
                if *seq != next + 1 {
                    return Err(StoreError::Conflict { conversation: format_id(conversation), expected: next + 1, actual: *seq });
                }
                next = *seq;
            }
            planned.push((*conversation, next));
        }
        let reserved = planned.iter().map(|(c, _)| *c).collect();
        known.extend(planned);
        Ok(reserved)
    }

    /// Seqs (the last 8 bytes of each key) of the keys under `prefix` greater than `after`.
    fn seqs_under(&self, cf: &'static str, prefix: &[u8], after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 || after == u64::MAX {
            return Ok(out);
        }
        let mut start = prefix.to_vec();
        start.extend_from_slice(&(after + 1).to_be_bytes());
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::From(&start, Direction::Forward)) {
            let (k, _) = item.map_err(engine)?;
            if !k.starts_with(prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            out.push(seq_from(cf, &k[prefix.len()..])?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| StoreError::Engine(format!("column family {name} is missing")))
    }

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(engine)
    }
}

impl RocksStore {
    /// Applies the batch (its append conditions already checked).
    fn write(&self, writes: Vec<Write>, sync: bool) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for w in writes {
            match w {
                Write::Conversation(c) => {
                    let key = c.id.clone();
                    batch.put_cf(self.cf(CF_CONVERSATIONS)?, key, c.encode_to_vec());
                }
                Write::Append { conversation, entries, .. } => {
                    let cf = self.cf(CF_MESSAGES)?;
                    for (seq, sealed) in entries {
                        batch.put_cf(cf, msg_key(&conversation, seq), sealed);
                    }
                }
                Write::Replace { conversation, seq, sealed } => batch.put_cf(self.cf(CF_MESSAGES)?, msg_key(&conversation, seq), sealed),
                Write::File { conversation, file, sealed } => batch.put_cf(self.cf(CF_FILES)?, concat_file(&conversation, &file), sealed),
                Write::RemoveFile { conversation, file } => batch.delete_cf(self.cf(CF_FILES)?, concat_file(&conversation, &file)),
                Write::Index { conversation, entry } => batch.put_cf(self.cf(CF_EVENT_INDEX)?, index_key(&conversation, &entry), []),
                Write::Unindex { conversation, entry } => batch.delete_cf(self.cf(CF_EVENT_INDEX)?, index_key(&conversation, &entry)),
                Write::AuditVersion { conversation, target, version, sealed } => {
                    batch.put_cf(self.cf(CF_AUDIT)?, audit_key(&conversation, target, version), sealed)
                }
                Write::ClientMessageId { conversation, client_message_id, seq } => {
                    batch.put_cf(self.cf(CF_CLIENT_IDS)?, concat(&conversation, client_message_id.as_bytes()), seq.to_be_bytes());
                }
                Write::Membership { user, conversation } => {
                    batch.put_cf(self.cf(CF_MEMBERSHIPS)?, membership_key(&user, &conversation), [])
                }
                Write::RemoveMembership { user, conversation } => {
                    batch.delete_cf(self.cf(CF_MEMBERSHIPS)?, membership_key(&user, &conversation))
                }
                Write::DataKey { conversation, wrapped } => batch.put_cf(self.cf(CF_DATA_KEYS)?, conversation, wrapped),
                Write::ReadState { conversation, user, state } => {
                    batch.put_cf(self.cf(CF_READ_STATES)?, concat(&conversation, user.as_bytes()), state.encode_to_vec());
                }
                Write::User(u) => {
                    let key = u.user_id.clone();
                    batch.put_cf(self.cf(CF_USERS)?, key, u.encode_to_vec());
                }
                Write::PushSubscription(p) => {
                    batch.put_cf(self.cf(CF_PUSH)?, user_key(&p.user_id, p.endpoint.as_bytes()), p.encode_to_vec());
                }
                Write::RemovePushSubscription { user, endpoint } => {
                    batch.delete_cf(self.cf(CF_PUSH)?, user_key(&user, endpoint.as_bytes()))
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts).map_err(engine)
    }
}

impl Store for RocksStore {
    fn commit(&self, writes: Vec<Write>, sync: bool) -> Result<(), StoreError> {
        let reserved = self.reserve_appends(&writes)?;
        let result = self.write(writes, sync);
        if result.is_err() {
            let mut known = self.last_seqs.lock().unwrap_or_else(|e| e.into_inner());
            for c in &reserved {
                known.remove(c);
            }
        }
        result
    }

    fn conversation(&self, id: &ConversationKey) -> Result<Option<StoredConversation>, StoreError> {
        self.get(CF_CONVERSATIONS, id)?.map(|v| decode("conversations", &v)).transpose()
    }

    fn data_key(&self, id: &ConversationKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_DATA_KEYS, id)
    }

    fn last_seq(&self, id: &ConversationKey) -> Result<u64, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_MESSAGES)?);
        it.seek_for_prev(msg_key(id, u64::MAX));
        match it.key() {
            Some(k) if k.len() == 24 && &k[..16] == id => seq_from("messages key", &k[16..]),
            Some(_) | None => {
                it.status().map_err(engine)?;
                Ok(0)
            }
        }
    }

    fn client_message_seq(&self, id: &ConversationKey, client_message_id: &str) -> Result<Option<u64>, StoreError> {
        self.get(CF_CLIENT_IDS, &concat(id, client_message_id.as_bytes()))?.map(|v| seq_from("client_ids", &v)).transpose()
    }

    fn messages(&self, id: &ConversationKey, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(msg_key(id, to).iter().copied().chain(std::iter::once(0)).collect::<Vec<u8>>());
        let start = msg_key(id, from);
        let mut out = Vec::with_capacity(limit.min(128));
        for item in self.db.iterator_cf_opt(self.cf(CF_MESSAGES)?, ro, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item.map_err(engine)?;
            if k.len() != 24 || &k[..16] != id {
                break;
            }
            let seq = seq_from("messages key", &k[16..])?;
            if seq > to {
                break;
            }
            out.push((seq, v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn entries_before(&self, id: &ConversationKey, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        if before <= 1 || limit == 0 {
            return Ok(out);
        }
        let mut it = self.db.raw_iterator_cf(self.cf(CF_MESSAGES)?);
        it.seek_for_prev(msg_key(id, before - 1));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.len() != 24 || &k[..16] != id {
                break;
            }
            out.push((seq_from("messages key", &k[16..])?, v.to_vec()));
            if out.len() >= limit {
                break;
            }
            it.prev();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    fn replies(&self, id: &ConversationKey, parent: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut prefix = id.to_vec();
        prefix.push(b'r');
        prefix.extend_from_slice(&parent.to_be_bytes());
        self.seqs_under(CF_EVENT_INDEX, &prefix, after, limit)
    }

    fn deleted_after(&self, id: &ConversationKey, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut prefix = id.to_vec();
        prefix.push(b'd');
        self.seqs_under(CF_EVENT_INDEX, &prefix, after, limit)
    }

    fn mentions_after(&self, id: &ConversationKey, user: &str, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut prefix = id.to_vec();
        prefix.push(b'm');
        prefix.extend_from_slice(&user_key(user, &[]));
        self.seqs_under(CF_EVENT_INDEX, &prefix, after, limit)
    }

    fn audit_versions(&self, id: &ConversationKey, target: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut prefix = id.to_vec();
        prefix.extend_from_slice(&target.to_be_bytes());
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_AUDIT)?, IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(&prefix) || k.len() != 32 {
                break;
            }
            out.push((seq_from("audit key", &k[24..])?, v.into_vec()));
        }
        Ok(out)
    }

    fn file(&self, id: &ConversationKey, file: &[u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_FILES)?, concat_file(id, file)).map_err(engine)
    }

    fn file_referenced(&self, id: &ConversationKey, file: &[u8; 16]) -> Result<bool, StoreError> {
        let mut prefix = id.to_vec();
        prefix.push(b'f');
        prefix.extend_from_slice(file);
        match self.db.iterator_cf(self.cf(CF_EVENT_INDEX)?, IteratorMode::From(&prefix, Direction::Forward)).next() {
            Some(item) => Ok(item.map_err(engine)?.0.starts_with(&prefix)),
            None => Ok(false),
        }
    }

    fn files_after(
        &self,
        after: Option<(ConversationKey, [u8; 16])>,
        limit: usize,
    ) -> Result<Vec<(ConversationKey, [u8; 16])>, StoreError> {
        let start = after.map(|(c, f)| concat_file(&c, &f));
        let mode = match &start {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_FILES)?, mode) {
            let (k, _) = item.map_err(engine)?;
            if start.as_ref().is_some_and(|s| s[..] == k[..]) {
                continue;
            }
            let (Ok(c), Ok(f)) = (<[u8; 16]>::try_from(&k[..16.min(k.len())]), <[u8; 16]>::try_from(&k[16.min(k.len())..])) else {
                return Err(StoreError::Corrupt { what: "file key", reason: format!("{} bytes where 32 were expected", k.len()) });
            };
            out.push((c, f));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn data_keys_after(&self, after: Option<ConversationKey>, limit: usize) -> Result<Vec<(ConversationKey, Vec<u8>)>, StoreError> {
        let mode = match &after {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_DATA_KEYS)?, mode) {
            let (k, v) = item.map_err(engine)?;
            if after.is_some_and(|a| a[..] == k[..]) {
                continue;
            }
            let conv = <[u8; 16]>::try_from(&k[..])
                .map_err(|_| StoreError::Corrupt { what: "data key", reason: format!("a key of {} bytes", k.len()) })?;
            out.push((conv, v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn user_conversations(&self, user: &str) -> Result<Vec<ConversationKey>, StoreError> {
        let mut prefix = user.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_MEMBERSHIPS)?, IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, _) = item.map_err(engine)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let conv: ConversationKey = k[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt { what: "memberships key", reason: "bad conversation id length".into() })?;
            out.push(conv);
        }
        Ok(out)
    }

    fn read_states(&self, id: &ConversationKey) -> Result<Vec<(String, StoredReadState)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_READ_STATES)?, IteratorMode::From(id, Direction::Forward)) {
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(id) {
                break;
            }
            let user = String::from_utf8(k[16..].to_vec())
                .map_err(|_| StoreError::Corrupt { what: "read_states key", reason: "user id is not UTF-8".into() })?;
            out.push((user, decode("read_states", &v)?));
        }
        Ok(out)
    }

    fn user(&self, user: &str) -> Result<Option<StoredUser>, StoreError> {
        self.get(CF_USERS, user.as_bytes())?.map(|v| decode("users", &v)).transpose()
    }

    fn push_subscribers(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PUSH)?, IteratorMode::Start) {
            let (k, _) = item.map_err(engine)?;
            // `user ‖ 0x00 ‖ endpoint`: the user is everything before the first 0.
            let user = k.split(|b| *b == 0).next().unwrap_or_default();
            if out.last().is_none_or(|last| last.as_bytes() != user) {
                out.push(String::from_utf8_lossy(user).into_owned());
            }
        }
        Ok(out)
    }

    fn push_subscriptions(&self, user: &str) -> Result<Vec<StoredPushSubscription>, StoreError> {
        let prefix = user_key(user, &[]);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PUSH)?, IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode("push", &v)?);
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(engine)?;
        for name in FAMILIES {
            self.db.flush_cf(self.cf(name)?).map_err(engine)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::conformance_tests;

    conformance_tests!(|path: &Path| -> Arc<dyn Store> { Arc::new(RocksStore::open(path).unwrap()) });

    #[test]
    fn messages_inserted_with_hints_read_back_in_order_whatever_the_insert_order() {
        let dir = tempfile::tempdir().unwrap();
        let convs = [[3u8; 16], [4u8; 16], [5u8; 16]];
        let sealed = |c: usize, seq: u64| [vec![u8::try_from(c).unwrap()], seq.to_be_bytes().to_vec()].concat();
        let store = RocksStore::open(dir.path()).unwrap();
        // Batches that interleave conversations, run backwards, and fill earlier gaps: a
        // stale hint must only cost a longer search, never a misplaced key.
        for round in 0..20u64 {
            let mut writes = Vec::new();
            for seq in (round * 10 + 1..=round * 10 + 10).rev().filter(|s| s % 3 != 0) {
                for (c, conv) in convs.iter().enumerate() {
                    writes.push(Write::Replace { conversation: *conv, seq, sealed: sealed(c, seq) });
                }
            }
            store.commit(writes, true).unwrap();
        }
        let gaps = (1..=200u64).filter(|s| s % 3 == 0);
        store.commit(gaps.map(|seq| Write::Replace { conversation: convs[1], seq, sealed: sealed(1, seq) }).collect(), true).unwrap();
        for (c, conv) in convs.iter().enumerate() {
            let page = store.messages(conv, 1, 200, 1_000).unwrap();
            let expect: Vec<u64> = (1..=200).filter(|s| c == 1 || s % 3 != 0).collect();
            assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), expect, "conversation {c}");
            assert!(page.iter().all(|(s, v)| *v == sealed(c, *s)), "conversation {c} holds another's record");
        }
        // The hint is set on `messages` only, and survives in the options the store writes.
        drop(store);
        let newest = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("OPTIONS-"))
            .max_by_key(|n| n["OPTIONS-".len()..].parse::<u64>().unwrap())
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(newest)).unwrap();
        let section = |cf: &str| {
            let start = text.find(&format!("[CFOptions \"{cf}\"]")).unwrap();
            let rest = &text[start + 1..];
            rest[..rest.find("\n[CFOptions").unwrap_or(rest.len())].to_string()
        };
        assert!(section(CF_MESSAGES).contains(MESSAGES_INSERT_HINT), "{}", section(CF_MESSAGES));
        assert!(!section(CF_CLIENT_IDS).contains(MESSAGES_INSERT_HINT));
    }

    #[test]
    fn read_positions_overwritten_in_place_read_back_their_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let (conv, next) = ([7u8; 16], [8u8; 16]);
        let state = |seq: u64| StoredReadState {
            read_seq: seq,
            delivered_seq: seq,
            read_at_ms: i64::try_from(seq).unwrap() * 1_000,
            delivered_at_ms: 1,
            read_count: seq,
        };
        let write = |c: ConversationKey, user: &str, seq: u64| Write::ReadState { conversation: c, user: user.into(), state: state(seq) };
        {
            let store = RocksStore::open(dir.path()).unwrap();
            // Values that shrink, grow (a longer varint cannot be written in place) and
            // repeat within one batch; a neighbouring conversation's reader is left alone.
            store.commit(vec![write(conv, "al", 1_000_000), write(next, "al", 3)], true).unwrap();
            for seq in [5, 200, 100_000, 2, 300] {
                store.commit(vec![write(conv, "al", seq), write(conv, "bo", seq + 1)], true).unwrap();
            }
            store.commit(vec![write(conv, "al", 41), write(conv, "al", 42)], true).unwrap();
            let expect = vec![("al".to_string(), state(42)), ("bo".to_string(), state(301))];
            assert_eq!(store.read_states(&conv).unwrap(), expect);
            assert_eq!(store.read_states(&next).unwrap(), vec![("al".to_string(), state(3))]);
        }
        // Replayed from the write-ahead log, then read from a flushed table.
        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.read_states(&conv).unwrap()[0], ("al".to_string(), state(42)));
        store.flush().unwrap();
        store.commit(vec![write(conv, "al", 43)], true).unwrap();
        assert_eq!(store.read_states(&conv).unwrap(), vec![("al".to_string(), state(43)), ("bo".to_string(), state(301))]);
    }

    #[test]
    fn a_directory_of_format_1_is_upgraded_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conv = [6u8; 16];
        {
            let store = RocksStore::open(dir.path()).unwrap();
            let meta = StoredConversation { id: conv.to_vec(), kind: 2, ..Default::default() };
            let read = StoredReadState { read_seq: 7, delivered_seq: 9, ..Default::default() };
            store
                .commit(vec![Write::Conversation(meta), Write::ReadState { conversation: conv, user: "al".into(), state: read }], true)
                .unwrap();
            // What format 1 left behind: no marker, read states without read counts.
            store.db.delete(FORMAT_KEY).unwrap();
        }
        let store = RocksStore::open(dir.path()).unwrap();
        let (_, read) = store.read_states(&conv).unwrap().remove(0);
        assert_eq!((read.read_seq, read.read_count), (7, 7), "every entry of format 1 was a message");
        assert_eq!(store.db.get(FORMAT_KEY).unwrap(), Some(FORMAT_VERSION.to_be_bytes().to_vec()));
        store.db.put(FORMAT_KEY, 99u32.to_be_bytes()).unwrap();
        drop(store);
        let err = RocksStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, StoreError::Format(m) if m.contains("format 99")), "{err}");
    }
}
