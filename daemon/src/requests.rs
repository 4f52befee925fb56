//! What each request of an authenticated session turns into, without any IO.
//!
//! ```text
//!  ClientFrame ──plan()──► Plan::Refuse   refused at once (validation errors)
//!                          Plan::Pong     a ping, answered at once
//!   (+ Context:            Plan::Typing   a signal: never answered
//!    caller, session,      Plan::Shard    one command for the conversation's shard,
//!    shard count, limits,                   its answer awaited on a channel
//!    clock)                Plan::Append   a send or event: answered from the shard's thread
//!                          Plan::JoinRoom / LeaveRoom   the session's rooms
//!                          Plan::Gather   spans shards or reads storage: run by a task
//! ```
//!
//! [`plan`] is a pure function of the request and what it reads (the caller, the number
//! of shards, the limits, the time), so validation and routing are tested without QUIC
//! (`tests.rs`). One module per request family holds its validation and routing:
//!
//! | module | requests |
//! |---|---|
//! | [`conversations`] | create, get, list, add and remove participants, update, set role |
//! | [`messages`] | send, edit, delete, react, pin, history, thread, pins, audit |
//! | [`receipts`] | mark read, mark delivered, get receipts |
//! | [`rooms`] | join and leave room, typing |
//! | [`presence`] | get presence; announcing a user's presence to their contacts |
//! | [`catch_up`] | catching up after a disconnect |
//! | [`push`] | registering and unregistering push targets |
//! | [`admin`] | revoking a user's sessions, deactivating a user |
//!
//! What this module does not do: read or write frames, hold session state, or wait for
//! anything — the session driver (`session.rs`) executes a [`Plan`]. The [`Gather`]ings
//! are the one async part: they read storage through the bounded [`StoragePool`] and
//! write only through the shards ([`Services::commit_records`]), never on a runtime
//! worker.

pub mod admin;
pub mod catch_up;
pub mod conversations;
pub mod messages;
pub mod presence;
pub mod push;
pub mod receipts;
pub mod rooms;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use legalchat_protocol::pb::{self, ErrorCode, client_frame::Request};
use legalchat_protocol::validate::{self, ValidationError};

use crate::auth::Identity;
use crate::bus::Bus;
use crate::directory::Directory;
use crate::ids;
use crate::policy::RequestError;
use crate::push::PushHandle;
use crate::realtime::Hub;
use crate::registry::SessionId;
use crate::shard::{Command, EventRequest, Reply, SendReply, Shards};
use crate::storage_pool::StoragePool;
use crate::store::{ConversationKey, Write};

/// What a request is judged against: who asks, from which session, and the server's
/// shape and limits at this moment.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The caller.
    pub caller: &'a Identity,
    /// The caller's session (events it caused are not echoed to it).
    pub session: SessionId,
    /// Number of shards (conversation `c` lives on `ids::shard_of(c, shards)`).
    pub shards: usize,
    /// Largest message text.
    pub max_message_size: usize,
    /// Server time, in milliseconds since the Unix epoch.
    pub now_ms: i64,
}

impl Context<'_> {
    /// The shard owning conversation `id`.
    pub fn shard_of(&self, id: &ConversationKey) -> usize {
        ids::shard_of(id, self.shards)
    }

    /// A command for the shard of `id`, made with a fresh reply channel whose receiving
    /// end `pending` wraps.
    fn route<T>(
        &self,
        id: &ConversationKey,
        command: impl FnOnce(Reply<T>) -> Command,
        pending: impl FnOnce(ReplyRx<T>) -> Pending,
    ) -> Routed {
        let (reply, rx) = oneshot::channel();
        Routed { shard: self.shard_of(id), command: command(reply), pending: pending(rx) }
    }
}

/// What the session does with one request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Plan {
    /// Refuse at once (a validation error names the field).
    Refuse(RequestError),
    /// Answer a ping at once.
    Pong(pb::Pong),
    /// A typing signal: relay it (when it names a conversation), never answer it.
    Typing(Option<(ConversationKey, bool)>),
    /// Hand a command to a shard and answer with what comes back.
    Shard(Routed),
    /// A send or event: the shard answers it from its own thread once it is durable.
    Append(Append),
    /// Ask the shard for the participants, then join the room.
    JoinRoom(rooms::Join),
    /// Leave the room of a conversation.
    LeaveRoom(ConversationKey),
    /// Spans shards or reads storage: run by a task of its own ([`Gather::run`]).
    Gather(Gather),
}

/// The answer to come from a shard.
pub type ReplyRx<T> = oneshot::Receiver<Result<T, RequestError>>;

/// A request ready for its shard.
#[derive(Debug)]
pub struct Routed {
    /// The owning shard.
    pub shard: usize,
    /// The command.
    pub command: Command,
    /// Where its answer will arrive.
    pub pending: Pending,
}

/// A reply still to come from a shard.
#[derive(Debug)]
pub enum Pending {
    /// A conversation.
    Conversation(ReplyRx<pb::Conversation>),
    /// A page of messages.
    History(ReplyRx<pb::HistoryPage>),
    /// Done, nothing to say.
    Done(ReplyRx<()>),
    /// Receipt positions.
    Receipts(ReplyRx<pb::ReceiptList>),
    /// An audit trail.
    Audit(ReplyRx<pb::MessageAudit>),
}

/// The answer of a shard that stopped before answering.
pub(crate) fn gone() -> RequestError {
    RequestError::new(ErrorCode::Unavailable, "the server is shutting down; the request was not applied")
}

impl Pending {
    /// Waits for the shard's answer.
    pub async fn wait(self) -> Result<pb::ack::Result, RequestError> {
        match self {
            Pending::Conversation(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::Conversation),
            Pending::History(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::History),
            Pending::Done(rx) => rx.await.map_err(|_| gone())?.map(|()| pb::ack::Result::Done(pb::Done {})),
            Pending::Receipts(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::Receipts),
            Pending::Audit(rx) => rx.await.map_err(|_| gone())?.map(pb::ack::Result::Audit),
        }
    }
}

/// A validated send or event, for the shard of its conversation.
#[derive(Debug)]
pub struct Append {
    /// The owning shard.
    pub shard: usize,
    /// The conversation.
    pub conversation: ConversationKey,
    /// What is appended.
    pub entry: AppendEntry,
}

/// What an [`Append`] adds to a conversation's log.
#[derive(Debug)]
pub enum AppendEntry {
    /// A message.
    Message {
        /// The sender's id for it (de-duplication).
        client_message_id: String,
        /// The content.
        content: pb::MessageContent,
        /// The message replied to (0: none).
        reply_to_seq: u64,
    },
    /// An edit, delete, reaction or pin.
    Event {
        /// The sender's id for it (de-duplication).
        client_event_id: String,
        /// The event.
        request: EventRequest,
    },
}

impl Append {
    /// Whether it is a new message (for the message metrics).
    pub fn is_message(&self) -> bool {
        matches!(self.entry, AppendEntry::Message { .. })
    }

    /// The shard command, answered through `reply`. `echo`: the sending session gets its
    /// own new message back too.
    pub fn into_command(self, caller: Identity, origin: SessionId, echo: bool, reply: SendReply) -> Command {
        let id = self.conversation;
        let submitted = Instant::now();
        match self.entry {
            AppendEntry::Message { client_message_id, content, reply_to_seq } => {
                Command::Send { id, caller, origin, echo, client_message_id, content, reply_to_seq, submitted, reply }
            }
            AppendEntry::Event { client_event_id, request } => {
                Command::Event { id, caller, origin, client_event_id, request, submitted, reply }
            }
        }
    }
}

/// Requests that span shards or read storage outside any conversation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Gather {
    /// List the caller's conversations.
    List(conversations::List),
    /// One page of catching up.
    CatchUp(catch_up::CatchUp),
    /// Presence of some of the caller's contacts.
    Presence(presence::GetPresence),
    /// Register a push target.
    RegisterPush(push::Register),
    /// Unregister a push target.
    UnregisterPush(push::Unregister),
    /// A ticket to upload a file.
    StartUpload(pb::StartUpload),
    /// A ticket to download a file.
    StartDownload(pb::StartDownload),
    /// Revoke a user's sessions, or deactivate or reactivate the user.
    Admin(admin::Admin),
}

impl Gather {
    /// Gathers the answer for `caller`.
    pub async fn run(self, services: &Services, caller: &Identity) -> Result<pb::ack::Result, RequestError> {
        let user = caller.user_id.as_str();
        match self {
            Gather::StartUpload(u) => services.files.start_upload(caller, u, ids::now_ms()).await.map(pb::ack::Result::Ticket),
            Gather::StartDownload(d) => services.files.start_download(caller, &d, ids::now_ms()).await.map(pb::ack::Result::Ticket),
            Gather::Admin(a) => a.run(services, caller).await,
            Gather::List(l) => l.run(services, user).await,
            Gather::CatchUp(c) => c.run(services, user).await,
            Gather::Presence(p) => p.run(services, user).await,
            Gather::RegisterPush(r) => r.run(services, user).await,
            Gather::UnregisterPush(u) => u.run(services, user).await,
        }
    }
}

/// What gatherings and the session's bookkeeping reach: shards, bounded storage reads,
/// connected sessions, the directory, rooms and push.
#[derive(Debug, Clone)]
pub struct Services {
    /// Shard mailboxes.
    pub shards: Shards,
    /// Bounded blocking store reads.
    pub pool: StoragePool,
    /// Connected sessions.
    pub registry: Arc<dyn Bus>,
    /// Known users.
    pub directory: Arc<Directory>,
    /// Rooms, typing, room presence.
    pub hub: Arc<Hub>,
    /// Push notifications and registrations.
    pub push: PushHandle,
    /// Attachments.
    pub files: Arc<crate::files::Files>,
    /// Rate limits.
    pub limits: crate::limits::RateLimits,
    /// Each user's share of requests in flight.
    pub user_shares: Arc<crate::shares::UserShares>,
    /// The server's own storage work waiting for its turn, one per kind and user.
    pub pending: Arc<Queued>,
}

/// The server's own storage work after a session's start or end waits its turn (see
/// `storage_pool`), at most one waiting per kind and user: the work reads the state when
/// it starts, so a change while one waits needs none of its own, and a user reconnecting
/// in a loop queues no more than one of each.
#[derive(Debug, Default)]
pub struct Queued(std::sync::Mutex<std::collections::HashSet<(PendingWork, String)>>);

/// What [`Queued`] keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PendingWork {
    /// Telling `user`'s contacts whether they are online.
    Presence,
    /// Storing `user`'s last-seen time.
    LastSeen,
}

impl Queued {
    /// Whether to queue `work` for `user`: false while one waits already.
    pub fn claim(&self, work: PendingWork, user: &str) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert((work, user.to_owned()))
    }

    /// The queued work starts (or will not run): what changes from now on needs new work.
    pub fn started(&self, work: PendingWork, user: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&(work, user.to_owned()));
    }
}

impl Services {
    /// Commits records of `user` that belong to no conversation through the user's shard;
    /// returns once its group commit is done (with fsync when `sync`).
    pub async fn commit_records(&self, user: &str, writes: Vec<Write>, sync: bool) -> Result<(), RequestError> {
        let (reply, rx) = oneshot::channel();
        self.shards.submit_to(self.shards.shard_of_user(user), Command::Commit { writes, sync, reply })?;
        rx.await.map_err(|_| gone())?
    }

    /// Records a signed-in identity in the directory: nothing to do when its role and
    /// name are already known (the common case, no IO at all); otherwise a read through
    /// the pool and a write through the user's shard.
    pub async fn record_sign_in(&self, identity: &Identity) -> Result<(), RequestError> {
        if self.directory.is_current(identity) {
            return Ok(());
        }
        let directory = self.directory.clone();
        let id = identity.clone();
        if let Some(record) = self.pool.read(move |_| directory.record_for(&id)).await? {
            self.commit_records(&identity.user_id, vec![Write::User(record)], false).await?;
        }
        self.directory.remember(identity);
        Ok(())
    }

    /// Records that `user`'s last session ended at `ms`: in memory at once, in the store
    /// by the task returned (informative only, so a failure is logged, not answered). Its
    /// read waits its turn however many sessions end at once (see `storage_pool`), and
    /// stores the newest time when it starts: while one waits, another is not queued.
    pub fn record_last_seen(self: &Arc<Self>, user: &str, ms: i64) -> tokio::task::JoinHandle<()> {
        self.directory.saw(user, ms);
        let services = self.clone();
        let user = user.to_owned();
        tokio::spawn(async move {
            if !services.pending.claim(PendingWork::LastSeen, &user) {
                return;
            }
            let (directory, pending, who) = (services.directory.clone(), services.pending.clone(), user.clone());
            let read = services
                .pool
                .read_in_turn(move |_| {
                    pending.started(PendingWork::LastSeen, &who);
                    directory.last_seen_record(&who, directory.last_seen(&who))
                })
                .await;
            let stored = match read {
                Ok(Some(record)) => services.commit_records(&user, vec![Write::User(record)], false).await,
                Ok(None) => Ok(()),
                Err(e) => {
                    services.pending.started(PendingWork::LastSeen, &user);
                    Err(e.into())
                }
            };
            if let Err(e) = stored {
                tracing::warn!(%user, error = %e, "last-seen not stored");
            }
        })
    }
}

/// What to do with one request of an authenticated session.
pub fn plan(frame: pb::ClientFrame, cx: &Context<'_>) -> Plan {
    // Typing is a signal: never answered, whatever its request_id.
    if let Some(Request::Typing(t)) = &frame.request {
        return Plan::Typing(rooms::typing(t));
    }
    if frame.request_id == 0 {
        return Plan::Refuse(RequestError::invalid("request_id: must be non-zero"));
    }
    let Some(request) = frame.request else {
        return Plan::Refuse(RequestError::invalid("the frame carries no request (unknown to this server?)"));
    };
    let planned = match request {
        Request::Authenticate(_) => Err(RequestError::invalid("this session is already authenticated")),
        Request::Ping(p) => Ok(Plan::Pong(pb::Pong { nonce: p.nonce, server_time_ms: cx.now_ms })),
        Request::Typing(t) => Ok(Plan::Typing(rooms::typing(&t))),

        Request::CreateConversation(c) => conversations::create(c, cx).map(Plan::Shard),
        Request::GetConversation(g) => conversations::get(&g, cx).map(Plan::Shard),
        Request::ListConversations(l) => conversations::list(&l).map(|l| Plan::Gather(Gather::List(l))),
        Request::AddParticipants(a) => conversations::add(a, cx).map(Plan::Shard),
        Request::RemoveParticipant(r) => conversations::remove(r, cx).map(Plan::Shard),
        Request::UpdateConversation(u) => conversations::update(u, cx).map(Plan::Shard),
        Request::SetParticipantRole(r) => conversations::set_role(r, cx).map(Plan::Shard),

        Request::SendMessage(m) => messages::send(m, cx).map(Plan::Append),
        Request::EditMessage(e) => messages::edit(e, cx).map(Plan::Append),
        Request::DeleteMessage(d) => messages::delete(d, cx).map(Plan::Append),
        Request::React(r) => messages::react(r, cx).map(Plan::Append),
        Request::PinMessage(p) => messages::pin(p, cx).map(Plan::Append),
        Request::GetHistory(h) => messages::history(&h, cx).map(Plan::Shard),
        Request::GetThread(t) => messages::thread(&t, cx).map(Plan::Shard),
        Request::ListPins(l) => messages::pins(&l, cx).map(Plan::Shard),
        Request::GetMessageAudit(a) => messages::audit(&a, cx).map(Plan::Shard),

        Request::MarkRead(m) => receipts::mark(&m.conversation_id, pb::ReceiptKind::Read, m.seq, cx).map(Plan::Shard),
        Request::MarkDelivered(m) => receipts::mark(&m.conversation_id, pb::ReceiptKind::Delivered, m.seq, cx).map(Plan::Shard),
        Request::GetReceipts(g) => receipts::get(&g, cx).map(Plan::Shard),

        Request::JoinRoom(j) => rooms::join(&j, cx).map(Plan::JoinRoom),
        Request::LeaveRoom(l) => parse_conv(&l.conversation_id).map(Plan::LeaveRoom),

        Request::GetPresence(g) => presence::get(g).map(|p| Plan::Gather(Gather::Presence(p))),
        Request::CatchUp(c) => catch_up::plan(c).map(|c| Plan::Gather(Gather::CatchUp(c))),
        Request::RegisterPush(r) => push::register(r, cx).map(|r| Plan::Gather(Gather::RegisterPush(r))),
        Request::UnregisterPush(u) => push::unregister(&u, cx).map(|u| Plan::Gather(Gather::UnregisterPush(u))),
        Request::StartUpload(u) => Ok(Plan::Gather(Gather::StartUpload(u))),
        Request::StartDownload(d) => Ok(Plan::Gather(Gather::StartDownload(d))),
        // Answered by the session itself, which it changes.
        Request::Reauthenticate(_) => Err(RequestError::invalid("Reauthenticate is answered by the session")),
        Request::RevokeSessions(r) => admin::revoke(r).map(|a| Plan::Gather(Gather::Admin(a))),
        Request::SetUserActive(s) => admin::set_active(s).map(|a| Plan::Gather(Gather::Admin(a))),
    };
    planned.unwrap_or_else(Plan::Refuse)
}

/// A validation error as the caller hears it (the message names the field).
pub(crate) fn invalid(e: ValidationError) -> RequestError {
    RequestError::invalid(e.to_string())
}

/// A conversation id from the wire.
pub(crate) fn parse_conv(s: &str) -> Result<ConversationKey, RequestError> {
    validate::parse_id("conversation_id", s).map_err(invalid)
}
