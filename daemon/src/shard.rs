//! Shards: the owners of conversations.
//!
//! ```text
//!  sessions ──try_send──► mailbox (bounded) ──► shard thread k
//!                                               │ drain up to max_batch commands
//!                                               │ apply each to in-memory state,
//!                                               │   collecting writes + replies
//!                                               │ ONE store commit (fsync) per batch
//!                                               │ then: replies, fan-out via the Bus
//! ```
//!
//! Conversation `c` lives on shard `shard_of(c)`, and only that shard reads or writes its
//! state, so sequencing needs no locks: the shard assigns `last_seq + 1` and nothing else
//! can. A conversation is a log of events (messages, edits, deletes, reactions, pins,
//! participant and settings changes, see [`events`]), each with its own seq; a message's
//! entry is rewritten in place to hold its current state, and superseded versions go to
//! its sealed audit trail. Every command in a batch is answered only after the batch's commit returned, so
//! an acknowledgment always means "durable". If the commit fails, every command in the
//! batch is answered INTERNAL and the touched conversations are dropped from memory, to
//! be reloaded from what really is on disk.
//!
//! A shard is a plain thread, not an async task: the commit blocks on fsync, and a
//! blocked thread of its own costs nothing while a blocked runtime worker would stall
//! unrelated sessions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use legalchat_protocol::codec;
use legalchat_protocol::pb::{self, ConversationType, ErrorCode, ParticipantRole};
use legalchat_protocol::validate::format_id;

use crate::auth::{Identity, Role};
use crate::bus::Bus;
use crate::crypto::DataKey;
use crate::directory::Directory;
use crate::ids;
use crate::policy::{self, RequestError};
use crate::push::{Notification, PushHandle};
use crate::realtime::Hub;
use crate::registry::SessionId;
use crate::store::{
    ConversationKey, Store, StoreError, StoredConversation, StoredFile, StoredMessage, StoredParticipant, StoredReadState, Write,
};

mod events;
mod files;
pub use events::{DEFAULT_MAX_REACTIONS, EventRequest, SettingsUpdate};

/// The answer channel of one command.
pub type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// The answer to a send: run on the shard thread once the message is durable (or the
/// commit failed), so the session's ack is queued right there, with no task to wake in
/// between. Dropped unrun only if the shard is gone; the session answers for it then.
pub struct SendReply(Box<dyn FnOnce(Result<pb::MessageAccepted, RequestError>) + Send>);

impl SendReply {
    /// A reply that runs `f` with the result.
    pub fn new(f: impl FnOnce(Result<pb::MessageAccepted, RequestError>) + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// A reply that sends the result on a channel.
    #[cfg(test)]
    pub fn channel() -> (Self, oneshot::Receiver<Result<pb::MessageAccepted, RequestError>>) {
        let (tx, rx) = oneshot::channel();
        (Self::new(move |r| drop(tx.send(r))), rx)
    }

    /// Answers.
    pub fn answer(self, result: Result<pb::MessageAccepted, RequestError>) {
        (self.0)(result);
    }
}

/// What a shard answers a command through once its batch has committed.
pub trait Respond<T>: Send + 'static {
    /// Answers with `result`.
    fn respond(self, result: Result<T, RequestError>);
}

impl<T: Send + 'static> Respond<T> for Reply<T> {
    fn respond(self, result: Result<T, RequestError>) {
        // A caller that stopped waiting needs no answer.
        let _ = self.send(result);
    }
}

impl Respond<pb::MessageAccepted> for SendReply {
    fn respond(self, result: Result<pb::MessageAccepted, RequestError>) {
        self.answer(result);
    }
}

impl std::fmt::Debug for SendReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendReply")
    }
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest messages.
    Latest,
    /// Messages with seq below this.
    Before(u64),
    /// Messages with seq above this.
    After(u64),
}

/// What the caller asked to create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// Kind.
    pub kind: ConversationType,
    /// Other participants (without the caller), de-duplicated.
    pub others: Vec<String>,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Case id (CASE only).
    pub case_id: String,
}

/// A request for a shard. Each carries its conversation and its reply channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Create a conversation.
    Create { id: ConversationKey, caller: Identity, origin: SessionId, spec: CreateSpec, reply: Reply<pb::Conversation> },
    /// Fetch one conversation.
    Get { id: ConversationKey, caller: Identity, reply: Reply<pb::Conversation> },
    /// Summaries of several conversations of this shard for `user` (for listing): the
    /// `limit` most recently updated, newest first (ties by id).
    Summaries { ids: Vec<ConversationKey>, user: String, limit: usize, reply: Reply<Vec<pb::Conversation>> },
    /// Add participants.
    Add {
        id: ConversationKey,
        caller: Identity,
        origin: SessionId,
        users: Vec<String>,
        role: ParticipantRole,
        reply: Reply<pb::Conversation>,
    },
    /// Remove one participant.
    Remove { id: ConversationKey, caller: Identity, origin: SessionId, user: String, reply: Reply<pb::Conversation> },
    /// Store and fan out a message.
    Send {
        id: ConversationKey,
        caller: Identity,
        origin: SessionId,
        /// The sending session gets the new message too (`Authenticate.echo_own_messages`).
        echo: bool,
        client_message_id: String,
        content: pb::MessageContent,
        /// The message replied to (0: none).
        reply_to_seq: u64,
        /// When the session handed it over, for the queue-wait stage metric.
        submitted: Instant,
        reply: SendReply,
    },
    /// Append an edit, delete, reaction or pin event.
    Event {
        id: ConversationKey,
        caller: Identity,
        origin: SessionId,
        client_event_id: String,
        request: EventRequest,
        /// When the session handed it over, for the queue-wait stage metric.
        submitted: Instant,
        reply: SendReply,
    },
    /// Change title, description or settings.
    Update {
        id: ConversationKey,
        caller: Identity,
        origin: SessionId,
        client_event_id: String,
        update: SettingsUpdate,
        reply: Reply<pb::Conversation>,
    },
    /// Give a participant another role.
    SetRole {
        id: ConversationKey,
        caller: Identity,
        origin: SessionId,
        user: String,
        role: ParticipantRole,
        reply: Reply<pb::Conversation>,
    },
    /// Read a page of history.
    History { id: ConversationKey, caller: Identity, cursor: Cursor, limit: u32, reply: Reply<pb::HistoryPage> },
    /// Read a page of a thread.
    Thread { id: ConversationKey, caller: Identity, root: u64, after: u64, limit: u32, reply: Reply<pb::HistoryPage> },
    /// The pinned messages.
    Pins { id: ConversationKey, caller: Identity, reply: Reply<pb::HistoryPage> },
    /// A message's audit trail (global admins).
    Audit { id: ConversationKey, caller: Identity, seq: u64, reply: Reply<pb::MessageAudit> },
    /// Move a participant's delivery or read position.
    Receipt { id: ConversationKey, caller: Identity, origin: SessionId, kind: pb::ReceiptKind, seq: u64, reply: Reply<()> },
    /// Every participant's positions.
    Receipts { id: ConversationKey, caller: Identity, reply: Reply<pb::ReceiptList> },
    /// The participants of a conversation, for a participant (joining a room).
    Members { id: ConversationKey, caller: Identity, reply: Reply<Vec<String>> },
    /// Missed messages after cursors, within a budget (catching up).
    CatchUp { cursors: Vec<(ConversationKey, u64)>, user: String, max_messages: usize, max_bytes: usize, reply: Reply<CatchUpPart> },
    /// Commit records that belong to no conversation (a user's directory entry, push
    /// subscriptions) in this shard's next group commit; answered once it is done. Routed
    /// by [`Shards::shard_of_user`], so one user's writes keep their order. With `sync`
    /// the batch is fsynced whatever the shard's fsync policy: the caller's answer
    /// promises durability.
    Commit { writes: Vec<Write>, sync: bool, reply: Reply<()> },
    /// For a participant: the conversation's data key and, with `file`, that file's
    /// record (transfers check access and seal or open files with them).
    FileAccess { id: ConversationKey, caller: Identity, file: Option<[u8; 16]>, reply: Reply<(DataKey, Option<StoredFile>)> },
    /// Keep an uploaded file: move its sealed content from `part` into `dir` (the
    /// conversation's directory of files) and commit its record (or, when the same content
    /// is stored already, keep that and renew its record). Answered with the record once
    /// durable.
    StoreFile {
        id: ConversationKey,
        file: [u8; 16],
        record: StoredFile,
        part: std::path::PathBuf,
        dir: std::path::PathBuf,
        reply: Reply<StoredFile>,
    },
    /// Remove a file's record when no message refers to it and it was stored before
    /// `cutoff_ms`; answered with the name of its content on disk, for the caller to delete
    /// once the removal is durable (`None`: kept).
    SweepFile { id: ConversationKey, file: [u8; 16], cutoff_ms: i64, reply: Reply<Option<String>> },
}

/// One shard's share of a catch-up page.
#[derive(Debug, Default)]
pub struct CatchUpPart {
    /// Missed messages, grouped by conversation, ascending.
    pub messages: Vec<pb::Message>,
    /// Cursors of conversations that have more than fitted.
    pub next: Vec<(ConversationKey, u64)>,
    /// Positions in the conversations that had news.
    pub receipts: Vec<pb::ReceiptList>,
    /// Text bytes used (so the next shard gets the rest of the budget).
    pub bytes: usize,
}

impl Command {
    /// Reads must see only committed state, so a read that arrives behind uncommitted
    /// writes in a batch forces the commit first.
    fn is_read(&self) -> bool {
        matches!(
            self,
            Command::Get { .. }
                | Command::Summaries { .. }
                | Command::History { .. }
                | Command::Thread { .. }
                | Command::Pins { .. }
                | Command::Audit { .. }
                | Command::Receipts { .. }
                | Command::Members { .. }
                | Command::CatchUp { .. }
                | Command::FileAccess { .. }
        )
    }
}

/// Handles to every shard's mailbox.
#[derive(Debug, Clone)]
pub struct Shards {
    mailboxes: Vec<mpsc::Sender<Command>>,
}

/// Why a command could not be handed to its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The mailbox is full: the shard is overloaded.
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    /// The shard has stopped (shutdown).
    #[error("the server is shutting down")]
    Stopped,
}

impl From<SubmitError> for RequestError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => RequestError::new(ErrorCode::Overloaded, e.to_string()),
            SubmitError::Stopped => RequestError::new(ErrorCode::Unavailable, e.to_string()),
        }
    }
}

impl Shards {
    /// Number of shards.
    pub fn len(&self) -> usize {
        self.mailboxes.len()
    }

    /// Whether there are no shards (never, once started).
    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty()
    }

    /// The shard owning `id`.
    pub fn shard_of(&self, id: &ConversationKey) -> usize {
        ids::shard_of(id, self.mailboxes.len())
    }

    /// The shard that commits `user`'s records outside conversations ([`Command::Commit`]).
    pub fn shard_of_user(&self, user: &str) -> usize {
        ids::shard_of_user(user, self.mailboxes.len())
    }

    /// Hands `cmd` to shard `shard` without waiting; a full mailbox is an answer, not a wait.
    pub fn submit_to(&self, shard: usize, cmd: Command) -> Result<(), SubmitError> {
        self.submit(shard, cmd).map_err(|refused| refused.0)
    }

    /// [`Shards::submit_to`], giving back a refused command (and its reply, to answer).
    pub fn submit(&self, shard: usize, cmd: Command) -> Result<(), Box<(SubmitError, Command)>> {
        let Some(mailbox) = self.mailboxes.get(shard) else { return Err(Box::new((SubmitError::Stopped, cmd))) };
        mailbox.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(cmd) => {
                metrics::counter!("legalchat_shard_mailbox_full_total").increment(1);
                Box::new((SubmitError::Overloaded, cmd))
            }
            mpsc::error::TrySendError::Closed(cmd) => Box::new((SubmitError::Stopped, cmd)),
        })
    }

    /// Commands waiting in each shard's mailbox, in shard order: what the ops listener
    /// reports as `legalchat_shard_mailbox_depth` when scraped, so the hot path pays nothing.
    pub fn mailbox_depths(&self) -> impl Iterator<Item = usize> + '_ {
        self.mailboxes.iter().map(|m| m.max_capacity() - m.capacity())
    }
}

/// Settings a shard needs.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Mailbox bound.
    pub mailbox: usize,
    /// Most commands per write batch.
    pub max_batch: usize,
    /// fsync each batch.
    pub sync: bool,
    /// Shortest time between the starts of two commits that write, under sustained load;
    /// what arrives meanwhile joins the next batch. Zero: commit as soon as the last returned.
    pub commit_interval: std::time::Duration,
    /// How long after sending an author may edit a message (`None`: always).
    pub edit_window: Option<std::time::Duration>,
    /// Most distinct emoji on one message.
    pub max_reactions_per_message: usize,
    /// Conversations kept in memory per shard; the least recently used beyond it are
    /// dropped (and read again from the store when next needed).
    pub max_cached_conversations: usize,
}

impl ShardConfig {
    /// Settings for tests: small bounds, no sync.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            mailbox: 64,
            max_batch: 16,
            sync: false,
            commit_interval: std::time::Duration::ZERO,
            edit_window: None,
            max_reactions_per_message: events::DEFAULT_MAX_REACTIONS,
            max_cached_conversations: 1_000,
        }
    }
}

/// Running shard threads; dropping the last [`Shards`] handle and joining stops them.
#[derive(Debug)]
pub struct ShardThreads {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ShardThreads {
    /// Waits for every shard to finish its last batch.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What every shard shares.
#[derive(Debug, Clone)]
pub struct ShardDeps {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Wraps the conversations' data keys.
    pub master: Arc<crate::crypto::Keyring>,
    /// Connected sessions, for fan-out.
    pub registry: Arc<dyn Bus>,
    /// Known users, for the role policy.
    pub directory: Arc<Directory>,
    /// Rooms, told of membership changes.
    pub hub: Arc<Hub>,
    /// Notifications for users with no connected device.
    pub push: PushHandle,
}

/// Starts `n` shard threads.
pub fn start(n: usize, config: ShardConfig, deps: ShardDeps) -> std::io::Result<(Shards, ShardThreads)> {
    let mut mailboxes = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::channel(config.mailbox);
        let shard = Shard::new(i, config.clone(), &deps);
        threads.push(std::thread::Builder::new().name(format!("shard-{i}")).spawn(move || shard.run(rx))?);
        mailboxes.push(tx);
    }
    Ok((Shards { mailboxes }, ShardThreads { threads }))
}

/// A conversation's state while it lives in a shard.
struct Conversation {
    id: ConversationKey,
    meta: StoredConversation,
    dek: DataKey,
    /// The newest event's seq.
    last_seq: u64,
    /// Messages in the log (deleted ones included): unread counts are differences of it.
    message_count: u64,
    /// The newest message that is not deleted, in its current state.
    last_message: Option<Arc<pb::Message>>,
    reads: HashMap<String, StoredReadState>,
    /// Client message (and event) ids accepted in the batch being built, with their
    /// author and answer. The store's index answers a retry once the batch is committed,
    /// but not before: a retry within the batch is answered from here, after the same
    /// author check. Emptied by every commit, so it holds at most one batch.
    uncommitted: HashMap<String, (String, pb::MessageAccepted)>,
    /// Log entries appended or rewritten in the batch being built, in their newest state:
    /// a later event of the same batch (a reaction to a message just sent) starts from
    /// here, since the store does not have them yet. Emptied by every commit.
    batch_records: HashMap<u64, StoredMessage>,
    /// The participants' ids, shared by every frame fanned out to them until the
    /// membership changes: a message costs no copy of the list.
    members: Arc<[String]>,
}

impl Conversation {
    fn new(id: ConversationKey, meta: StoredConversation, dek: DataKey, last_seq: u64) -> Self {
        let members = member_list(&meta);
        Self {
            id,
            meta,
            dek,
            last_seq,
            message_count: 0,
            last_message: None,
            reads: HashMap::new(),
            uncommitted: HashMap::new(),
            batch_records: HashMap::new(),
            members,
        }
    }

    /// Call after every change to `meta.participants`.
    fn participants_changed(&mut self) {
        self.members = member_list(&self.meta);
    }

    fn kind(&self) -> ConversationType {
        ConversationType::try_from(self.meta.kind).unwrap_or(ConversationType::Unspecified)
    }

    fn role_of(&self, user: &str) -> Option<ParticipantRole> {
        self.meta
            .participants
            .iter()
            .find(|p| p.user_id == user)
            .map(|p| ParticipantRole::try_from(p.role).unwrap_or(ParticipantRole::Member))
    }

    fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(String::as_str)
    }

    fn require_participant(&self, user: &str) -> Result<(), RequestError> {
        match self.role_of(user) {
            Some(_) => Ok(()),
            None => Err(RequestError::unknown_conversation(&format_id(&self.id))),
        }
    }

    /// When the conversation last changed: its metadata or its last message.
    fn updated_at_ms(&self) -> i64 {
        let last_ts = self.last_message.as_ref().map_or(0, |m| m.timestamp_ms);
        self.meta.updated_at_ms.max(last_ts)
    }

    fn to_pb(&self, store: &dyn Store, names: &Directory, for_user: &str) -> pb::Conversation {
        let (unread_count, mention_count) = self.unread(store, for_user);
        pb::Conversation {
            id: format_id(&self.id),
            r#type: self.meta.kind,
            participants: self
                .meta
                .participants
                .iter()
                .map(|p| pb::Participant {
                    user_id: p.user_id.clone(),
                    role: p.role,
                    joined_at_ms: p.joined_at_ms,
                    display_name: names.name_of(&p.user_id),
                })
                .collect(),
            case_id: self.meta.case_id.clone(),
            title: self.meta.title.clone(),
            description: self.meta.description.clone(),
            created_at_ms: self.meta.created_at_ms,
            updated_at_ms: self.updated_at_ms(),
            last_seq: self.last_seq,
            last_message: self.last_message.as_deref().cloned(),
            unread_count,
            settings: Some(self.settings()),
            mention_count,
            pinned_seqs: self.meta.pinned.clone(),
        }
    }

    fn settings(&self) -> pb::ConversationSettings {
        pb::ConversationSettings {
            notifications: !self.meta.muted,
            retention_days: self.meta.retention_days,
            encryption: self.meta.encryption,
        }
    }

    /// Unread messages of `user` (messages after their read position that are not
    /// deleted) and how many of those mention them. Everything read is the common case
    /// and costs nothing; otherwise two short index scans.
    fn unread(&self, store: &dyn Store, user: &str) -> (u64, u64) {
        let read = self.reads.get(user).copied().unwrap_or_default();
        if read.read_seq >= self.last_seq {
            return (0, 0);
        }
        let after = self.message_count.saturating_sub(read.read_count);
        if after == 0 {
            return (0, 0);
        }
        let deleted: HashSet<u64> = match store.deleted_after(&self.id, read.read_seq, INDEX_SCAN_LIMIT) {
            Ok(d) => d.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "deleted-message index unreadable; unread count includes deleted messages");
                HashSet::new()
            }
        };
        let mentions = store
            .mentions_after(&self.id, user, read.read_seq, INDEX_SCAN_LIMIT)
            .map(|m| m.into_iter().filter(|s| !deleted.contains(s)).count() as u64)
            .unwrap_or(0);
        (after.saturating_sub(deleted.len() as u64), mentions)
    }
}

/// Most index entries (deleted messages, mentions) one unread count reads.
const INDEX_SCAN_LIMIT: usize = 100_000;

fn member_list(meta: &StoredConversation) -> Arc<[String]> {
    meta.participants.iter().map(|p| p.user_id.clone()).collect()
}

/// One frame for some recipients, sent after the commit.
struct Fanout {
    recipients: Arc<[String]>,
    /// The session that caused it, which already knows.
    origin: Option<SessionId>,
    frame: Bytes,
    /// Whether the frame carries a new message (counted as a message delivery).
    message: bool,
    /// For a new message while push is on: recipients with no connected device get a
    /// push notification, built from this.
    notice: Option<Notice>,
}

/// What a new message's push notification is made of. The notification itself is built
/// only when a recipient turns out to need one, and then once for all of them: most
/// messages reach every recipient online, or recipients without a push subscription.
struct Notice {
    message: Arc<pb::Message>,
    conversation_type: i32,
    conversation_title: String,
    case_id: String,
    /// Notifications are off for the conversation: only mentioned users are pushed.
    muted: bool,
}

impl Notice {
    /// Whether `user`, offline, gets a push for this message.
    fn wanted_by(&self, user: &str) -> bool {
        user != self.message.sender_id && (!self.muted || self.message.mentions.iter().any(|m| m == user))
    }
}

impl Notice {
    fn notification(&self) -> Arc<Notification> {
        let m = &self.message;
        Arc::new(Notification {
            conversation_id: m.conversation_id.clone(),
            conversation_type: self.conversation_type,
            conversation_title: self.conversation_title.clone(),
            case_id: self.case_id.clone(),
            sender_id: m.sender_id.clone(),
            seq: m.seq,
            message_id: m.message_id.clone(),
            text: m.content.as_ref().map(|c| c.text.clone()).unwrap_or_default(),
            timestamp_ms: m.timestamp_ms,
        })
    }
}

/// Runs after a batch's commit with its outcome.
type AfterCommit = Box<dyn FnOnce(Result<(), &RequestError>) + Send>;

/// What a batch accumulates until its commit.
#[derive(Default)]
struct Pending {
    writes: Vec<Write>,
    /// Run after the commit with its outcome: replies to callers.
    replies: Vec<AfterCommit>,
    /// Frames to fan out after a successful commit.
    fanout: Vec<Fanout>,
    /// Participant lists that changed, for the rooms of the real-time hub.
    membership: Vec<(ConversationKey, Vec<String>)>,
    touched: HashSet<ConversationKey>,
    /// Where this batch already writes a (conversation, user) read state, so a later move
    /// in the same batch replaces that write instead of adding one.
    read_state_writes: HashMap<ConversationKey, HashMap<String, usize>>,
    /// Where this batch already carries a receipt event per (conversation, user, kind).
    receipt_events: HashMap<(ConversationKey, String, i32), usize>,
    /// Where this batch's append to each conversation's log is.
    appends: HashMap<ConversationKey, usize>,
    /// Where this batch already rewrites a (conversation, seq) entry.
    replaces: HashMap<(ConversationKey, u64), usize>,
    messages: u64,
    /// Events other than messages appended by this batch.
    events: u64,
    /// Fsync this batch even when the shard's policy does not ([`Command::Commit`]).
    sync: bool,
    /// Files whose records this batch removes: a send later in the batch, which still
    /// reads them from the store, must not attach them.
    removed_files: HashSet<(ConversationKey, [u8; 16])>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.writes.is_empty()
    }

    /// Writes a participant's read state; within one batch only the newest is kept.
    fn write_read_state(&mut self, conversation: ConversationKey, user: &str, state: StoredReadState) {
        let write = Write::ReadState { conversation, user: user.to_owned(), state };
        let written = self.read_state_writes.entry(conversation).or_default();
        match written.get(user) {
            Some(&i) => self.writes[i] = write,
            None => {
                written.insert(user.to_owned(), self.writes.len());
                self.writes.push(write);
            }
        }
        self.touched.insert(conversation);
    }

    /// Appends a sealed entry at `seq` to the conversation's log; `seq - 1` is the newest
    /// seq before it (the store checks that, for the first entry of the batch).
    fn append(&mut self, conversation: ConversationKey, seq: u64, sealed: Vec<u8>) {
        match self.appends.get(&conversation) {
            Some(&i) => {
                if let Write::Append { entries, .. } = &mut self.writes[i] {
                    entries.push((seq, sealed));
                }
            }
            None => {
                self.appends.insert(conversation, self.writes.len());
                self.writes.push(Write::Append { conversation, expected_last_seq: seq - 1, entries: vec![(seq, sealed)] });
            }
        }
        self.touched.insert(conversation);
    }

    /// Rewrites the entry at `seq`; within one batch only the newest rewrite is kept.
    fn replace(&mut self, conversation: ConversationKey, seq: u64, sealed: Vec<u8>) {
        let write = Write::Replace { conversation, seq, sealed };
        match self.replaces.get(&(conversation, seq)) {
            Some(&i) => self.writes[i] = write,
            None => {
                self.replaces.insert((conversation, seq), self.writes.len());
                self.writes.push(write);
            }
        }
        self.touched.insert(conversation);
    }

    /// Queues a receipt event; within one batch a newer move of the same participant and
    /// kind replaces the older event (positions only grow, so the newest says it all).
    fn receipt_event(&mut self, conversation: ConversationKey, event: &pb::ReceiptEvent, fanout: Fanout) {
        let key = (conversation, event.user_id.clone(), event.kind);
        match self.receipt_events.get(&key) {
            Some(&i) => self.fanout[i] = fanout,
            None => {
                self.receipt_events.insert(key, self.fanout.len());
                self.fanout.push(fanout);
            }
        }
    }

    /// Answers `reply` with `result` once the batch has committed (or with the commit's
    /// error if it failed).
    fn reply<T: Send + 'static>(&mut self, reply: impl Respond<T>, result: Result<T, RequestError>) {
        self.replies.push(Box::new(move |commit: Result<(), &RequestError>| {
            reply.respond(match commit {
                Ok(()) => result,
                Err(e) => Err(e.clone()),
            });
        }));
    }
}

struct Shard {
    index: usize,
    config: ShardConfig,
    store: Arc<dyn Store>,
    master: Arc<crate::crypto::Keyring>,
    registry: Arc<dyn Bus>,
    directory: Arc<Directory>,
    hub: Arc<Hub>,
    push: PushHandle,
    conversations: HashMap<ConversationKey, Conversation>,
    /// When each cached conversation was last used (a counter), for eviction.
    used: HashMap<ConversationKey, u64>,
    clock: u64,
    /// When the last commit that wrote started (see [`ShardConfig::commit_interval`]).
    last_commit: Option<Instant>,
}

impl Shard {
    fn new(index: usize, config: ShardConfig, deps: &ShardDeps) -> Self {
        Self {
            index,
            config,
            store: deps.store.clone(),
            master: deps.master.clone(),
            registry: deps.registry.clone(),
            directory: deps.directory.clone(),
            hub: deps.hub.clone(),
            push: deps.push.clone(),
            conversations: HashMap::new(),
            used: HashMap::new(),
            clock: 0,
            last_commit: None,
        }
    }
}

/// How long a batch that writes waits before its commit: the rest of `interval` since the
/// last commit started, if that is not over yet.
fn commit_wait(last_commit: Option<Instant>, interval: std::time::Duration, now: Instant) -> Option<std::time::Duration> {
    let due = last_commit? + interval;
    (now < due).then(|| due - now)
}

fn store_err(e: StoreError) -> RequestError {
    tracing::error!(error = %e, "storage failure");
    RequestError::internal("storage failure; nothing was changed")
}

fn encode_event(event: pb::server_frame::Event) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(event) })
}

impl Shard {
    fn run(mut self, mut mailbox: mpsc::Receiver<Command>) {
        tracing::debug!(shard = self.index, "shard started");
        while let Some(first) = mailbox.blocking_recv() {
            let mut pending = Pending::default();
            let mut taken = 1;
            self.handle(first, &mut pending);
            // Group commit: fold whatever else is already waiting into the same batch,
            // up to the bound, so one fsync covers many messages under load and a lone
            // message is not held back waiting for company.
            self.gather(&mut mailbox, &mut pending, &mut taken);
            // Under sustained load, commits are spaced at least `commit_interval` apart: a
            // batch that follows the last commit closely waits for the rest of the interval
            // and takes what arrived meanwhile. One fsync then covers more messages, and
            // the hand-offs to and from this thread (wake-ups of the mailbox and of the
            // sessions' writers) come once per batch. A message after a quiet spell is
            // committed at once.
            if taken < self.config.max_batch
                && !pending.writes.is_empty()
                && let Some(wait) = commit_wait(self.last_commit, self.config.commit_interval, Instant::now())
            {
                std::thread::sleep(wait);
                self.gather(&mut mailbox, &mut pending, &mut taken);
            }
            self.flush(&mut pending);
        }
        tracing::debug!(shard = self.index, "shard stopped");
    }

    /// Takes what already waits in the mailbox into `pending`, up to the batch bound. A
    /// read commits what is pending first, so it sees it.
    fn gather(&mut self, mailbox: &mut mpsc::Receiver<Command>, pending: &mut Pending, taken: &mut usize) {
        while *taken < self.config.max_batch {
            match mailbox.try_recv() {
                Ok(cmd) => {
                    if cmd.is_read() && !pending.is_empty() {
                        self.flush(pending);
                    }
                    self.handle(cmd, pending);
                    *taken += 1;
                }
                Err(_) => break,
            }
        }
    }

    /// Commits what `pending` holds, answers and fans out.
    fn flush(&mut self, pending: &mut Pending) {
        if !pending.writes.is_empty() {
            self.last_commit = Some(Instant::now());
        }
        let batch = std::mem::take(pending);
        if batch.is_empty() {
            return;
        }
        let outcome = if batch.writes.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let n = batch.writes.len();
            let r = self.store.commit(batch.writes, self.config.sync || batch.sync).map_err(store_err);
            let hot = crate::ops::hot();
            let took = started.elapsed();
            hot.write_batch_seconds.record(took.as_secs_f64());
            hot.stage_commit.record(took.as_secs_f64());
            #[allow(clippy::cast_precision_loss)]
            hot.write_batch_writes.record(n as f64);
            #[allow(clippy::cast_precision_loss)]
            hot.write_batch_messages.record(batch.messages as f64);
            r
        };
        for id in &batch.touched {
            if outcome.is_err() {
                // What is in memory may now be ahead of the disk: forget it and reload.
                self.conversations.remove(id);
            } else if let Some(c) = self.conversations.get_mut(id) {
                // Committed: the store's index answers these ids' retries from now on, and
                // the store holds these entries.
                c.uncommitted.clear();
                c.batch_records.clear();
            }
        }
        self.evict();
        for reply in batch.replies {
            reply(outcome.as_ref().map(|_| ()));
        }
        if outcome.is_ok() {
            let hot = crate::ops::hot();
            hot.messages_stored.increment(batch.messages);
            let fanout_started = Instant::now();
            let mut delivered = 0u64;
            let mut messages_delivered = 0u64;
            for f in &batch.fanout {
                let mut notification = None;
                let push = &self.push;
                self.registry.deliver_each(&mut f.recipients.iter().map(String::as_str), &f.frame, f.origin, &mut |user, n, online| {
                    delivered += n as u64;
                    if f.message {
                        messages_delivered += n as u64;
                    }
                    if let Some(notice) = &f.notice
                        && !online
                        && notice.wanted_by(user)
                        && push.wants(user)
                    {
                        push.notify(user, notification.get_or_insert_with(|| notice.notification()));
                    }
                });
            }
            for (id, participants) in &batch.membership {
                self.hub.participants_changed(id, participants);
            }
            hot.frames_delivered.increment(delivered);
            hot.messages_delivered.increment(messages_delivered);
            if batch.messages > 0 {
                hot.stage_fanout.record(fanout_started.elapsed().as_secs_f64());
            }
        }
    }

    fn handle(&mut self, cmd: Command, p: &mut Pending) {
        let store = self.store.clone();
        let names = self.directory.clone();
        match cmd {
            Command::Create { id, caller, origin, spec, reply } => {
                let r = self.create(id, &caller, origin, spec, p);
                p.reply(reply, r);
            }
            Command::Get { id, caller, reply } => {
                let r = self.load(&id).and_then(|c| {
                    c.require_participant(&caller.user_id)?;
                    Ok(c.to_pb(&*store, &names, &caller.user_id))
                });
                p.reply(reply, r);
            }
            Command::Summaries { ids, user, limit, reply } => {
                let mut found = Vec::with_capacity(ids.len());
                let mut failed = None;
                for id in ids {
                    match self.load(&id) {
                        Ok(c) if c.role_of(&user).is_some() => found.push((c.updated_at_ms(), id)),
                        Ok(_) => {}
                        // A conversation the membership index names but that is gone: skip.
                        Err(e) if e.code == ErrorCode::NotFound => {}
                        Err(e) => failed = Some(e),
                    }
                }
                // Only the summaries the answer can hold are built (a user in thousands of
                // conversations lists the newest few hundred). The ids' bytes sort as their
                // hex does, so the order is the listing's.
                found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                found.truncate(limit);
                let out = found.iter().filter_map(|(_, id)| self.conversations.get(id)).map(|c| c.to_pb(&*store, &names, &user)).collect();
                let _ = reply.send(match failed {
                    Some(e) => Err(e),
                    None => Ok(out),
                });
            }
            Command::Add { id, caller, origin, users, role, reply } => {
                let r = self.add(id, &caller, origin, users, role, p);
                p.reply(reply, r);
            }
            Command::Remove { id, caller, origin, user, reply } => {
                let r = self.remove(id, &caller, origin, &user, p);
                p.reply(reply, r);
            }
            Command::Send { id, caller, origin, echo, client_message_id, content, reply_to_seq, submitted, reply } => {
                let started = Instant::now();
                let hot = crate::ops::hot();
                hot.stage_queue.record(started.duration_since(submitted).as_secs_f64());
                let r = self.send(id, &caller, (!echo).then_some(origin), client_message_id, content, reply_to_seq, p);
                hot.stage_sequence.record(started.elapsed().as_secs_f64());
                p.reply(reply, r);
            }
            Command::Event { id, caller, origin, client_event_id, request, submitted, reply } => {
                let started = Instant::now();
                crate::ops::hot().stage_queue.record(started.duration_since(submitted).as_secs_f64());
                let r = self.event(id, &caller, origin, client_event_id, request, p);
                p.reply(reply, r);
            }
            Command::Update { id, caller, origin, client_event_id, update, reply } => {
                let r = self.update(id, &caller, origin, client_event_id, update, p);
                p.reply(reply, r);
            }
            Command::SetRole { id, caller, origin, user, role, reply } => {
                let r = self.set_role(id, &caller, origin, &user, role, p);
                p.reply(reply, r);
            }
            Command::History { id, caller, cursor, limit, reply } => {
                let r = self.history(&id, &caller, cursor, limit);
                p.reply(reply, r);
            }
            Command::Thread { id, caller, root, after, limit, reply } => {
                let r = self.thread(&id, &caller, root, after, limit);
                p.reply(reply, r);
            }
            Command::Pins { id, caller, reply } => {
                let r = self.pins(&id, &caller);
                p.reply(reply, r);
            }
            Command::Audit { id, caller, seq, reply } => {
                let r = self.audit(&id, &caller, seq);
                p.reply(reply, r);
            }
            Command::Receipt { id, caller, origin, kind, seq, reply } => {
                let r = self.receipt(id, &caller, origin, kind, seq, p);
                p.reply(reply, r);
            }
            Command::Receipts { id, caller, reply } => {
                let r = self.load(&id).and_then(|c| {
                    c.require_participant(&caller.user_id)?;
                    Ok(receipt_list(c))
                });
                p.reply(reply, r);
            }
            Command::Members { id, caller, reply } => {
                let r = self.load(&id).and_then(|c| {
                    c.require_participant(&caller.user_id)?;
                    Ok(c.member_ids().map(str::to_owned).collect())
                });
                p.reply(reply, r);
            }
            Command::Commit { writes, sync, reply } => {
                p.writes.extend(writes);
                p.sync |= sync;
                p.reply(reply, Ok(()));
            }
            Command::FileAccess { id, caller, file, reply } => {
                let r = self.file_access(&id, &caller, file);
                p.reply(reply, r);
            }
            Command::StoreFile { id, file, record, part, dir, reply } => {
                let r = self.store_file(id, file, record, &part, &dir, p);
                p.sync |= r.is_ok();
                p.reply(reply, r);
            }
            Command::SweepFile { id, file, cutoff_ms, reply } => {
                let r = self.sweep_file(id, file, cutoff_ms, p);
                p.reply(reply, r);
            }
            Command::CatchUp { cursors, user, max_messages, max_bytes, reply } => {
                let _ = reply.send(self.catch_up(cursors, &user, max_messages, max_bytes));
            }
        }
    }

    /// The conversation, from memory or the store.
    fn load(&mut self, id: &ConversationKey) -> Result<&mut Conversation, RequestError> {
        self.clock += 1;
        self.used.insert(*id, self.clock);
        if !self.conversations.contains_key(id) {
            let c = match self.read_conversation(id) {
                Ok(c) => c,
                Err(e) => {
                    self.used.remove(id);
                    return Err(e);
                }
            };
            self.conversations.insert(*id, c);
        }
        self.conversations.get_mut(id).ok_or_else(|| RequestError::internal("conversation vanished"))
    }

    /// Drops the least recently used conversations beyond the bound, down to three
    /// quarters of it (so that eviction runs once per many loads). Runs between batches
    /// only, when nothing in memory is ahead of the store.
    fn evict(&mut self) {
        let most = self.config.max_cached_conversations.max(1);
        if self.conversations.len() <= most {
            return;
        }
        let mut by_age: Vec<(u64, ConversationKey)> = self.used.iter().map(|(id, t)| (*t, *id)).collect();
        by_age.sort_unstable();
        let excess = self.conversations.len() - most * 3 / 4;
        for (_, id) in by_age.into_iter().take(excess) {
            self.conversations.remove(&id);
            self.used.remove(&id);
        }
        metrics::counter!("legalchat_conversations_evicted_total").increment(excess as u64);
    }

    fn read_conversation(&self, id: &ConversationKey) -> Result<Conversation, RequestError> {
        let not_found = || RequestError::unknown_conversation(&format_id(id));
        let meta = self.store.conversation(id).map_err(store_err)?.ok_or_else(not_found)?;
        let wrapped = self.store.data_key(id).map_err(store_err)?.ok_or_else(|| RequestError::internal("conversation has no data key"))?;
        let dek = self.master.unwrap_data_key(id, &wrapped).map_err(|e| {
            tracing::error!(conversation = %format_id(id), error = %e, "cannot unwrap data key; wrong master key?");
            RequestError::internal("conversation key cannot be opened")
        })?;
        let last_seq = self.store.last_seq(id).map_err(store_err)?;
        let mut c = Conversation::new(*id, meta, dek, last_seq);
        c.reads = self.store.read_states(id).map_err(store_err)?.into_iter().collect();
        if last_seq > 0 {
            // The newest entry tells how many messages the log holds.
            c.message_count = events::record(&c, &*self.store, last_seq)?.messages_through(last_seq);
            c.last_message = events::last_visible_before(&c, &*self.store, last_seq + 1)?;
        }
        Ok(c)
    }

    fn create(
        &mut self,
        id: ConversationKey,
        caller: &Identity,
        origin: SessionId,
        spec: CreateSpec,
        p: &mut Pending,
    ) -> Result<pb::Conversation, RequestError> {
        let store = self.store.clone();
        let names = self.directory.clone();
        if spec.kind == ConversationType::Private {
            // Exactly one per pair: an existing one is the answer.
            match self.load(&id) {
                Ok(c) => {
                    c.require_participant(&caller.user_id)?;
                    return Ok(c.to_pb(&*store, &names, &caller.user_id));
                }
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        } else if self.conversations.contains_key(&id) || self.store.conversation(&id).map_err(store_err)?.is_some() {
            return Err(RequestError::new(ErrorCode::Conflict, "conversation id collision; retry"));
        }
        let roles = known_roles(&self.directory, &spec.others);
        policy::may_create(caller.role, spec.kind, &borrowed(&roles))?;

        let now = ids::now_ms();
        let creator_role = if spec.kind == ConversationType::Private { ParticipantRole::Member } else { ParticipantRole::AdminRole };
        let mut participants = vec![StoredParticipant { user_id: caller.user_id.clone(), role: creator_role as i32, joined_at_ms: now }];
        participants.extend(spec.others.iter().map(|u| StoredParticipant {
            user_id: u.clone(),
            role: ParticipantRole::Member as i32,
            joined_at_ms: now,
        }));
        let meta = StoredConversation {
            id: id.to_vec(),
            kind: spec.kind as i32,
            title: spec.title,
            description: spec.description,
            case_id: spec.case_id,
            participants,
            created_at_ms: now,
            updated_at_ms: now,
            created_by: caller.user_id.clone(),
            ..Default::default()
        };
        let (dek, wrapped) = self.master.new_data_key(&id);
        p.writes.push(Write::DataKey { conversation: id, wrapped });
        p.writes.push(Write::Conversation(meta.clone()));
        for part in &meta.participants {
            p.writes.push(Write::Membership { user: part.user_id.clone(), conversation: id });
        }
        p.touched.insert(id);
        let c = Conversation::new(id, meta, dek, 0);
        let view = c.to_pb(&*store, &names, &caller.user_id);
        announce(&c, &*store, &names, p, origin, None);
        self.conversations.insert(id, c);
        self.clock += 1;
        self.used.insert(id, self.clock);
        metrics::counter!("legalchat_conversations_created_total").increment(1);
        Ok(view)
    }

    fn add(
        &mut self,
        id: ConversationKey,
        caller: &Identity,
        origin: SessionId,
        users: Vec<String>,
        role: ParticipantRole,
        p: &mut Pending,
    ) -> Result<pb::Conversation, RequestError> {
        let directory = self.directory.clone();
        let store = self.store.clone();
        let names = self.directory.clone();
        let c = self.load(&id)?;
        if caller.role != Role::Admin {
            c.require_participant(&caller.user_id)?;
        }
        let new: Vec<String> = {
            let mut seen = HashSet::new();
            users.into_iter().filter(|u| c.role_of(u).is_none() && seen.insert(u.clone())).collect()
        };
        let roles = known_roles(&directory, &new);
        policy::may_add(caller.role, c.role_of(&caller.user_id), c.kind(), role, &borrowed(&roles))?;
        if c.meta.participants.len() + new.len() > policy::MAX_PARTICIPANTS {
            return Err(RequestError::invalid(format!("user_ids: a conversation has at most {} participants", policy::MAX_PARTICIPANTS)));
        }
        if new.is_empty() {
            return Ok(c.to_pb(&*store, &names, &caller.user_id));
        }
        let role = if role == ParticipantRole::Unspecified { ParticipantRole::Member } else { role };
        let now = ids::now_ms();
        let mut added = Vec::with_capacity(new.len());
        for u in &new {
            let part = StoredParticipant { user_id: u.clone(), role: role as i32, joined_at_ms: now };
            added.push(pb::Participant { user_id: u.clone(), role: part.role, joined_at_ms: now, display_name: directory.name_of(u) });
            c.meta.participants.push(part);
            p.writes.push(Write::Membership { user: u.clone(), conversation: id });
        }
        c.participants_changed();
        c.meta.updated_at_ms = now;
        p.writes.push(Write::Conversation(c.meta.clone()));
        p.touched.insert(id);
        let kind = pb::conversation_event::Kind::ParticipantsAdded(pb::ParticipantsAdded { participants: added });
        events::append_event(c, p, caller, String::new(), kind, None, now);
        announce(c, &*store, &names, p, origin, None);
        p.membership.push((id, c.member_ids().map(str::to_owned).collect()));
        Ok(c.to_pb(&*store, &names, &caller.user_id))
    }

    fn remove(
        &mut self,
        id: ConversationKey,
        caller: &Identity,
        origin: SessionId,
        user: &str,
        p: &mut Pending,
    ) -> Result<pb::Conversation, RequestError> {
        let store = self.store.clone();
        let names = self.directory.clone();
        let c = self.load(&id)?;
        if caller.role != Role::Admin {
            c.require_participant(&caller.user_id)?;
        }
        policy::may_remove(caller.role, &caller.user_id, c.role_of(&caller.user_id), c.kind(), user)?;
        if c.role_of(user).is_none() {
            return Err(RequestError::not_found(format!("user {user} is not a participant of this conversation")));
        }
        c.meta.participants.retain(|part| part.user_id != user);
        c.participants_changed();
        let now = ids::now_ms();
        c.meta.updated_at_ms = now;
        p.writes.push(Write::Conversation(c.meta.clone()));
        p.writes.push(Write::RemoveMembership { user: user.to_owned(), conversation: id });
        p.touched.insert(id);
        // The removed user hears of it too: their view no longer lists them.
        let kind = pb::conversation_event::Kind::ParticipantRemoved(pb::ParticipantRemoved { user_id: user.to_owned() });
        events::append_event(c, p, caller, String::new(), kind, Some(user), now);
        announce(c, &*store, &names, p, origin, Some(user));
        p.membership.push((id, c.member_ids().map(str::to_owned).collect()));
        Ok(c.to_pb(&*store, &names, &caller.user_id))
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        id: ConversationKey,
        caller: &Identity,
        // The session not to deliver the new message to (its sender's, unless it asked for
        // an echo).
        origin: Option<SessionId>,
        client_message_id: String,
        content: pb::MessageContent,
        reply_to_seq: u64,
        p: &mut Pending,
    ) -> Result<pb::MessageAccepted, RequestError> {
        let store = self.store.clone();
        let push_on = self.push.is_on();
        let c = self.load(&id)?;
        c.require_participant(&caller.user_id)?;

        // A retry: answer with the original, store nothing.
        if let Some(original) = events::duplicate(c, &*store, &client_message_id, &caller.user_id)? {
            return Ok(original);
        }
        let reply_preview = if reply_to_seq > 0 {
            let parent = events::record(c, &*store, reply_to_seq)?;
            if !parent.is_message() {
                return Err(RequestError::invalid(format!("reply_to_seq: {reply_to_seq} is not a message")));
            }
            if parent.deleted_at_ms != 0 {
                return Err(RequestError::invalid(format!("reply_to_seq: message {reply_to_seq} was deleted")));
            }
            Some(events::preview(&parent))
        } else {
            None
        };
        let mut content = content;
        let files = events::resolve_attachments(c, &*store, &mut content.attachments, &p.removed_files)?;

        let seq = c.last_seq + 1;
        let message_id = ids::random_id();
        // Timestamps never go backwards within a conversation, even if the clock does.
        let timestamp_ms = ids::now_ms().max(c.last_message.as_ref().map_or(0, |m| m.timestamp_ms));
        let mentions = events::mentions(c, &content, &caller.user_id);
        let message_number = c.message_count + 1;
        let record = StoredMessage {
            message_id: message_id.to_vec(),
            client_message_id: client_message_id.clone(),
            sender_id: caller.user_id.clone(),
            text: content.text.clone(),
            content_type: content.r#type,
            format: content.format,
            timestamp_ms,
            reply_to_seq,
            mentions,
            message_number,
            attachments: content.attachments.clone(),
            ..Default::default()
        };
        let sealed = c.dek.seal_message(&id, seq, &record.encode_to_vec());
        p.append(id, seq, sealed);
        if !client_message_id.is_empty() {
            p.writes.push(Write::ClientMessageId { conversation: id, client_message_id: client_message_id.clone(), seq });
        }
        if reply_to_seq > 0 {
            p.writes.push(Write::Index { conversation: id, entry: crate::store::IndexEntry::Reply { parent: reply_to_seq, seq } });
        }
        for user in &record.mentions {
            p.writes.push(Write::Index { conversation: id, entry: crate::store::IndexEntry::Mention { user: user.clone(), seq } });
        }
        for file in files {
            p.writes.push(Write::Index { conversation: id, entry: crate::store::IndexEntry::FileRef { file, seq } });
        }
        // Sending implies having read everything before: the sender's unread count is 0.
        let read = StoredReadState {
            read_seq: seq,
            delivered_seq: seq,
            read_at_ms: timestamp_ms,
            delivered_at_ms: timestamp_ms,
            read_count: message_number,
        };
        p.write_read_state(id, &caller.user_id, read);
        p.messages += 1;

        let mut message = events::to_wire(c, seq, &record, seq, reply_preview);
        message.content = Some(content);
        let accepted = pb::MessageAccepted {
            conversation_id: message.conversation_id.clone(),
            message_id: message.message_id.clone(),
            seq,
            timestamp_ms,
            duplicate: false,
        };
        c.last_seq = seq;
        c.message_count = message_number;
        c.reads.insert(caller.user_id.clone(), read);
        c.uncommitted.insert(client_message_id, (caller.user_id.clone(), accepted.clone()));
        c.batch_records.insert(seq, record);
        let recipients = c.members.clone();
        // Encoded once; every recipient's queue gets a clone of the same bytes.
        let frame = encode_event(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage { message: Some(message.clone()) }));
        let message = Arc::new(message);
        let notice = push_on.then(|| Notice {
            message: message.clone(),
            conversation_type: c.meta.kind,
            conversation_title: c.meta.title.clone(),
            case_id: c.meta.case_id.clone(),
            muted: c.meta.muted,
        });
        c.last_message = Some(message);
        p.fanout.push(Fanout { recipients, origin, frame, message: true, notice });
        Ok(accepted)
    }

    fn receipt(
        &mut self,
        id: ConversationKey,
        caller: &Identity,
        origin: SessionId,
        kind: pb::ReceiptKind,
        seq: u64,
        p: &mut Pending,
    ) -> Result<(), RequestError> {
        let store = self.store.clone();
        let c = self.load(&id)?;
        c.require_participant(&caller.user_id)?;
        if seq > c.last_seq {
            return Err(RequestError::invalid(format!("seq: {seq} is beyond the newest event ({})", c.last_seq)));
        }
        let now = ids::now_ms();
        let current = c.reads.get(&caller.user_id).copied().unwrap_or_default();
        let moves = match kind {
            pb::ReceiptKind::Read => seq > current.read_seq,
            pb::ReceiptKind::Delivered => seq > current.delivered_seq,
            pb::ReceiptKind::Unspecified => return Err(RequestError::invalid("kind: must be DELIVERED or READ")),
        };
        if !moves {
            // Positions only move forward; an older report changes nothing.
            return Ok(());
        }
        // How many messages the log holds up to the new read position, for unread counts.
        let read_count = if kind == pb::ReceiptKind::Read {
            if seq == c.last_seq { c.message_count } else { events::record(c, &*store, seq)?.messages_through(seq) }
        } else {
            current.read_count
        };
        let state = c.reads.entry(caller.user_id.clone()).or_default();
        if kind == pb::ReceiptKind::Read {
            state.read_seq = seq;
            state.read_at_ms = now;
            state.read_count = read_count;
        }
        // Reading implies having received.
        if seq > state.delivered_seq {
            state.delivered_seq = seq;
            state.delivered_at_ms = now;
        }
        let state = *state;
        p.write_read_state(id, &caller.user_id, state);
        let event = pb::ReceiptEvent {
            conversation_id: format_id(&id),
            user_id: caller.user_id.clone(),
            kind: kind as i32,
            seq,
            timestamp_ms: now,
        };
        let recipients = c.members.clone();
        let frame = encode_event(pb::server_frame::Event::Receipt(event.clone()));
        p.receipt_event(id, &event, Fanout { recipients, origin: Some(origin), frame, message: false, notice: None });
        let hot = crate::ops::hot();
        if kind == pb::ReceiptKind::Read { &hot.receipts_read } else { &hot.receipts_delivered }.increment(1);
        Ok(())
    }

    /// Fills a catch-up page from this shard's conversations, in the order given, until
    /// the message or byte budget is spent. A conversation that cannot be read fails the
    /// whole page: the caller must not believe it is up to date there.
    fn catch_up(
        &mut self,
        cursors: Vec<(ConversationKey, u64)>,
        user: &str,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<CatchUpPart, RequestError> {
        let store = self.store.clone();
        let mut part = CatchUpPart::default();
        for (id, after) in cursors {
            let room = max_messages.saturating_sub(part.messages.len());
            let c = match self.load(&id) {
                Ok(c) => c,
                // Deleted since the membership index was read: nothing to catch up on.
                Err(e) if e.code == ErrorCode::NotFound => continue,
                Err(e) => return Err(e),
            };
            if c.role_of(user).is_none() {
                continue;
            }
            if c.last_seq <= after {
                // No new events, but positions may have moved while the client was away
                // (someone read what it sent): those are caught up too.
                if c.reads.iter().any(|(u, r)| u != user && (r.read_seq > 0 || r.delivered_seq > 0)) {
                    part.receipts.push(receipt_list(c));
                }
                continue;
            }
            if room == 0 || part.bytes >= max_bytes {
                part.next.push((id, after));
                continue;
            }
            let to = c.last_seq.min(after.saturating_add(room as u64));
            let sealed = store.messages(&id, after + 1, to, room).map_err(store_err)?;
            let mut cursor = after;
            for (seq, bytes) in sealed {
                let m = events::open_entry(c, &*store, seq, &bytes)?;
                part.bytes += m.encoded_len();
                part.messages.push(m);
                cursor = seq;
                if part.bytes >= max_bytes {
                    break;
                }
            }
            if cursor < c.last_seq {
                part.next.push((id, cursor));
            }
            part.receipts.push(receipt_list(c));
        }
        Ok(part)
    }

    fn history(&mut self, id: &ConversationKey, caller: &Identity, cursor: Cursor, limit: u32) -> Result<pb::HistoryPage, RequestError> {
        let store = self.store.clone();
        let c = self.load(id)?;
        c.require_participant(&caller.user_id)?;
        let last = c.last_seq;
        let limit = u64::from(limit.max(1));
        // Sequence numbers are gap-free, so a page is a computed range, not a scan.
        let (from, to, has_more) = match cursor {
            Cursor::Latest | Cursor::Before(_) => {
                let end = match cursor {
                    Cursor::Before(b) => b.saturating_sub(1).min(last),
                    _ => last,
                };
                let start = end.saturating_sub(limit - 1).max(1);
                (start, end, start > 1)
            }
            Cursor::After(a) => {
                let start = a.saturating_add(1);
                let end = a.saturating_add(limit).min(last);
                (start, end, end < last)
            }
        };
        let mut messages = Vec::new();
        if from <= to && to > 0 {
            let sealed = store.messages(id, from, to, usize::try_from(limit).unwrap_or(100)).map_err(store_err)?;
            messages.reserve(sealed.len());
            for (seq, bytes) in sealed {
                messages.push(events::open_entry(c, &*store, seq, &bytes)?);
            }
        }
        Ok(pb::HistoryPage { conversation_id: format_id(id), messages, has_more, last_seq: last })
    }
}

/// Each participant (and `also`, e.g. a user just removed) gets a `ConversationUpdated`
/// with their own view of the conversation: unread counts differ per user. Conversation
/// changes are rare, so encoding per recipient costs nothing that matters.
fn announce(c: &Conversation, store: &dyn Store, names: &Directory, p: &mut Pending, origin: SessionId, also: Option<&str>) {
    for user in c.member_ids().chain(also) {
        let view = c.to_pb(store, names, user);
        let frame = encode_event(pb::server_frame::Event::ConversationUpdated(pb::ConversationUpdated { conversation: Some(view) }));
        p.fanout.push(Fanout { recipients: Arc::from([user.to_owned()]), origin: Some(origin), frame, message: false, notice: None });
    }
}

/// Every participant's positions in `c`.
fn receipt_list(c: &Conversation) -> pb::ReceiptList {
    let mut states: Vec<pb::ReceiptState> = c
        .reads
        .iter()
        .filter(|(u, _)| c.role_of(u).is_some())
        .map(|(u, r)| pb::ReceiptState {
            user_id: u.clone(),
            delivered_seq: r.delivered_seq,
            delivered_at_ms: r.delivered_at_ms,
            read_seq: r.read_seq,
            read_at_ms: r.read_at_ms,
        })
        .collect();
    states.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    pb::ReceiptList { conversation_id: format_id(&c.id), states }
}

/// The directory's roles of `users`, for the policy checks.
fn known_roles(directory: &Directory, users: &[String]) -> Vec<(String, Option<Role>)> {
    users.iter().map(|u| (u.clone(), directory.role_of(u))).collect()
}

fn borrowed(roles: &[(String, Option<Role>)]) -> Vec<(&str, Option<Role>)> {
    roles.iter().map(|(u, r)| (u.as_str(), *r)).collect()
}

/// Opens and decodes the log entry sealed at `seq`.
fn open_record(c: &Conversation, seq: u64, sealed: &[u8]) -> Result<StoredMessage, RequestError> {
    let plain = c.dek.open_message(&c.id, seq, sealed).map_err(|e| {
        tracing::error!(conversation = %format_id(&c.id), seq, error = %e, "stored message failed authentication");
        RequestError::internal("a stored message failed its integrity check")
    })?;
    StoredMessage::decode(plain.as_slice()).map_err(|e| RequestError::internal(format!("corrupt message record: {e}")))
}

#[cfg(test)]
mod overload_tests;
#[cfg(test)]
mod tests;
