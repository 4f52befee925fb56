//! The public face of the SDK: [`Client`]. The work happens in [`crate::driver`] (tasks)
//! and [`crate::state`] (decisions); this file validates arguments, makes requests, and
//! turns answers into return values.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use legalchat_protocol::pb;
use legalchat_protocol::validate::{self, ValidationError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::driver::{self, Shared, lock};
use crate::outbox::{Attempt, EntryId};
use crate::session::{SessionInfo, answer};
use crate::{ClientConfig, ConnectionState, ConversationUpdate, Error, Event, HistoryCursor, NewConversation, Result, Sent};

/// Most user ids per presence query (the protocol's limit).
const MAX_PRESENCE_QUERY: usize = 1_000;
/// Longest Web Push endpoint URL the protocol accepts.
const MAX_PUSH_ENDPOINT: usize = 1_024;
/// Longest base64url key material of a Web Push subscription worth sending (the real
/// ones are 87 and 22 characters).
const MAX_PUSH_KEY: usize = 256;
/// Most bytes a `ClientFrame` adds around a `SendMessage`: the request id (a varint of at
/// most 10 bytes) with its tag, the oneof field's tag (2 bytes) and length (at most 5).
const FRAME_OVERHEAD: usize = 1 + 10 + 2 + 5;
/// How long [`Client::close`] waits for the supervisor to wind down.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A LegalChat client: one user's session with the server, kept alive across network
/// trouble.
///
/// Cheap to clone: clones share one connection, and may be used from many tasks at once;
/// requests are multiplexed on the session stream and answered independently. The client
/// ends when [`close`](Client::close) is called or the last clone is dropped.
///
/// When the connection drops, the client reconnects by itself (see
/// [`ReconnectPolicy`](crate::ReconnectPolicy)), catches up on what it missed, and carries
/// on; [`Event::State`] tells the app. Sends made meanwhile wait in the outbox.
///
/// Events (new messages, receipts, typing, presence, conversation and connection
/// changes) queue up for [`next_event`](Client::next_event). **Drain them**: when the
/// queue is full the client stops reading from the server, so answers to requests stall
/// too, and the server eventually ends a session that lags too far behind (the client
/// then reconnects and catches up).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

/// Owned by the app's clones; the client ends when the last one is dropped.
struct Handle {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The supervisor closes the connection; without it keep-alives would hold it open
        // for as long as the tasks live, i.e. forever.
        self.shared.request_shutdown("client dropped");
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("Client")
            .field("server", &shared.config.server_addr)
            .field("user_id", &shared.user_id)
            .field("session_id", &shared.session().session_id)
            .field("state", shared.state().state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the server, authenticates with the configured token, sets the
    /// conversation cursors, and starts the session.
    ///
    /// Cursors start at each conversation's newest message (the app is live from now and
    /// loads history itself), or at [`ClientConfig::resume_cursors`] when given: then
    /// everything after them is delivered as events first, followed by
    /// [`ConnectionState::Resumed`].
    ///
    /// Fails fast, without retrying: [`Error::Unauthorized`] when the server refuses the
    /// token, [`Error::Tls`] when its certificate is not trusted, [`Error::Connect`] when
    /// it cannot be reached within [`ClientConfig::connect_timeout`]. Reconnecting starts
    /// only once a first connection has succeeded.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let started = driver::start(config).await?;
        Ok(Client { inner: Arc::new(Handle { shared: started.shared, supervisor: Mutex::new(Some(started.supervisor)) }) })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The authenticated user's id.
    pub fn user_id(&self) -> &str {
        &self.shared().user_id
    }

    /// The authenticated user's global role.
    pub fn role(&self) -> pb::UserRole {
        self.shared().role
    }

    /// The server-assigned id of the current (or last) session; it changes on every
    /// reconnect. Quote it to support.
    pub fn session_id(&self) -> String {
        self.shared().session().session_id
    }

    /// Everything the server announced when it accepted the token on the current (or
    /// last) connection, limits included.
    pub fn session(&self) -> SessionInfo {
        self.shared().session()
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.shared().state().state().clone()
    }

    /// Why the client ended, once it has; `None` while it is running (connected or
    /// reconnecting).
    pub fn closed_reason(&self) -> Option<String> {
        self.shared().state().closed_reason().map(str::to_owned)
    }

    /// For every conversation the client follows, the newest seq delivered to the app
    /// (sorted by conversation id). Save them to resume from in a later run with
    /// [`ClientConfig::resume_cursors`].
    pub fn cursors(&self) -> Vec<(String, u64)> {
        self.shared().state().cursors()
    }

    /// Creates a group, case or support conversation (or a private one; see also
    /// [`private_chat`](Self::private_chat)). The caller becomes its admin.
    pub async fn create_conversation(&self, new: NewConversation) -> Result<pb::Conversation> {
        new.validate()?;
        let reply = self.request(pb::client_frame::Request::CreateConversation(new.into_request())).await?;
        let conversation = answer::conversation("CreateConversation", reply)?;
        // The creator knows what is in it: follow it from its newest message.
        self.shared().state().opened(&conversation);
        Ok(conversation)
    }

    /// The private conversation between the caller and `other_user`, created if the
    /// pair has none yet.
    pub async fn private_chat(&self, other_user: &str) -> Result<pb::Conversation> {
        self.create_conversation(NewConversation::private(other_user)).await
    }

    /// One conversation the caller participates in.
    pub async fn get_conversation(&self, id: &str) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", id)?;
        let request = pb::GetConversation { conversation_id: id.to_owned() };
        let reply = self.request(pb::client_frame::Request::GetConversation(request)).await?;
        answer::conversation("GetConversation", reply)
    }

    /// The caller's conversations, most recently active first, each with its last
    /// message and unread count. `limit` is 1..=500; 0 means the server default (100).
    pub async fn list_conversations(&self, limit: u32) -> Result<Vec<pb::Conversation>> {
        validate::list_limit(limit)?;
        let reply = self.request(pb::client_frame::Request::ListConversations(pb::ListConversations { limit })).await?;
        answer::conversations(reply)
    }

    /// Adds `users` to a group, case or support conversation with conversation role
    /// `role` ([`pb::ParticipantRole::Unspecified`] means member). Users already present
    /// are ignored.
    pub async fn add_participants(&self, conv: &str, users: &[&str], role: pb::ParticipantRole) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", conv)?;
        let user_ids: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        if user_ids.is_empty() {
            return Err(ValidationError::new("user_ids", "must name at least one user").into());
        }
        validate::participant_ids("user_ids", &user_ids)?;
        let request = pb::AddParticipants { conversation_id: conv.to_owned(), user_ids, role: role as i32 };
        let reply = self.request(pb::client_frame::Request::AddParticipants(request)).await?;
        answer::conversation("AddParticipants", reply)
    }

    /// Removes `user` from a conversation; with the caller's own id, leaves it.
    pub async fn remove_participant(&self, conv: &str, user: &str) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", conv)?;
        validate::user_id("user_id", user)?;
        let request = pb::RemoveParticipant { conversation_id: conv.to_owned(), user_id: user.to_owned() };
        let reply = self.request(pb::client_frame::Request::RemoveParticipant(request)).await?;
        let conversation = answer::conversation("RemoveParticipant", reply)?;
        if user == self.user_id() {
            self.shared().state().no_longer_participant(conv);
        }
        Ok(conversation)
    }

    /// Sends a plain-text message with a fresh client message id. Returns once the
    /// message is durably stored; see [`send`](Self::send) for what happens while the
    /// connection is down.
    pub async fn send_text(&self, conv: &str, text: &str) -> Result<Sent> {
        let content = pb::MessageContent {
            text: text.to_owned(),
            r#type: pb::ContentType::Text as i32,
            format: pb::TextFormat::Plain as i32,
            ..Default::default()
        };
        self.send(conv, &crate::new_client_message_id(), content).await
    }

    /// Sends a message with a caller-chosen client message id. Sending again with the
    /// same id stores nothing new and returns the first send's receipt with
    /// [`Sent::duplicate`] set.
    ///
    /// Every send goes through the outbox (at most
    /// [`ClientConfig::outbox_capacity`] at once; beyond it [`Error::OutboxFull`]). While
    /// disconnected, the send waits there; a send whose answer was lost with a connection
    /// is sent again on the next one, with the same client message id, so it is stored
    /// once (and resolves with `duplicate: true` and the original seq). Sends are
    /// (re)sent in the order they were made.
    ///
    /// The call waits at most [`ClientConfig::send_timeout`]. When that runs out, the
    /// send is taken out of the outbox and fails: with [`Error::Disconnected`] when it was
    /// never sent (nothing was stored), with [`Error::Timeout`] when it was (it may have
    /// been stored; retry with the same id to find out). Nothing is sent after the call
    /// has failed, or after it was cancelled.
    pub async fn send(&self, conv: &str, client_message_id: &str, content: pb::MessageContent) -> Result<Sent> {
        self.send_message(conv, client_message_id, content, 0).await
    }

    /// Sends a plain-text reply to message `reply_to_seq` of the conversation (a thread),
    /// with a fresh client message id; otherwise like [`send`](Self::send).
    pub async fn reply(&self, conv: &str, reply_to_seq: u64, text: &str) -> Result<Sent> {
        validate::target_seq("reply_to_seq", reply_to_seq)?;
        let content = pb::MessageContent {
            text: text.to_owned(),
            r#type: pb::ContentType::Text as i32,
            format: pb::TextFormat::Plain as i32,
            ..Default::default()
        };
        self.send_message(conv, &crate::new_client_message_id(), content, reply_to_seq).await
    }

    /// Sends a message, a reply when `reply_to_seq` is not 0, through the outbox.
    pub async fn send_message(&self, conv: &str, client_message_id: &str, content: pb::MessageContent, reply_to_seq: u64) -> Result<Sent> {
        validate::parse_id("conversation_id", conv)?;
        validate::client_message_id(client_message_id)?;
        let shared = self.shared();
        let (max_frame_size, max_message_bytes) = shared.limits();
        validate::message_content(Some(&content), max_message_bytes)?;
        let message = pb::SendMessage {
            conversation_id: conv.to_owned(),
            client_message_id: client_message_id.to_owned(),
            content: Some(content),
            reply_to_seq,
        };
        // The frame around it adds at most a request id, two tags and a length.
        let frame_len = prost::Message::encoded_len(&message) + FRAME_OVERHEAD;
        if frame_len > max_frame_size {
            return Err(ValidationError::new(
                "frame",
                format!("the request is {frame_len} bytes; the server accepts at most {max_frame_size}"),
            )
            .into());
        }

        let deadline = Instant::now() + shared.config.send_timeout;
        let (tx, rx) = oneshot::channel();
        let entry = shared.state().queue_send(message, tx)?;
        let mut guard = GiveUpOnDrop { shared, entry: Some(entry) };
        shared.write_send(entry).await;
        match timeout_at(deadline, rx).await {
            Ok(Ok(outcome)) => {
                guard.entry = None;
                outcome
            }
            // The waiter went without an answer: the client ended.
            Ok(Err(_)) => {
                guard.entry = None;
                Err(Error::Closed(self.closed_reason().unwrap_or_else(|| "the client ended".into())))
            }
            Err(_) => {
                guard.entry = None;
                let taken = shared.state().outbox_mut().take(entry);
                match taken {
                    Some(p) if matches!(p.attempt, Attempt::Sent { .. }) => Err(Error::Timeout),
                    Some(_) => Err(Error::Disconnected(format!(
                        "not sent: no connection to the server within {} s ({})",
                        shared.config.send_timeout.as_secs(),
                        self.state()
                    ))),
                    // Answered in the meantime after all.
                    None => Err(Error::Timeout),
                }
            }
        }
    }

    /// A page of a conversation's history, in ascending seq order. `limit` is 1..=100;
    /// 0 means the server default (50).
    pub async fn history(&self, conv: &str, cursor: HistoryCursor, limit: u32) -> Result<pb::HistoryPage> {
        validate::parse_id("conversation_id", conv)?;
        validate::history_limit(limit)?;
        let request = pb::GetHistory { conversation_id: conv.to_owned(), cursor: cursor.into_pb(), limit };
        let reply = self.request(pb::client_frame::Request::GetHistory(request)).await?;
        let page = answer::history(reply)?;
        self.shared().state().loaded(&page.messages);
        Ok(page)
    }

    /// The current state of message `seq` of a conversation as this client knows it:
    /// folded from every edit, delete, reaction and pin that reached it. `None` for a
    /// message the client has not seen (load it with [`history`](Self::history)).
    pub fn message(&self, conv: &str, seq: u64) -> Option<pb::Message> {
        self.shared().state().timeline().get(conv, seq).cloned()
    }

    /// Replaces the text of one of the user's own messages (plain text). Returns the edit
    /// event's receipt once it is durable. The server keeps every earlier version in the
    /// message's audit trail.
    pub async fn edit_text(&self, conv: &str, seq: u64, text: &str) -> Result<Sent> {
        let content = pb::MessageContent {
            text: text.to_owned(),
            r#type: pb::ContentType::Text as i32,
            format: pb::TextFormat::Plain as i32,
            ..Default::default()
        };
        self.edit(conv, seq, content).await
    }

    /// Replaces the content of one of the user's own messages.
    pub async fn edit(&self, conv: &str, seq: u64, content: pb::MessageContent) -> Result<Sent> {
        validate::target_seq("message_seq", seq)?;
        let (_, max_message_bytes) = self.shared().limits();
        validate::message_content(Some(&content), max_message_bytes)?;
        self.event_request(conv, |client_event_id| {
            pb::client_frame::Request::EditMessage(pb::EditMessage {
                conversation_id: conv.to_owned(),
                client_event_id,
                message_seq: seq,
                content: Some(content.clone()),
            })
        })
        .await
    }

    /// Deletes a message: participants see a tombstone. The user's own messages; others'
    /// for conversation admins and moderators and global admins.
    pub async fn delete(&self, conv: &str, seq: u64) -> Result<Sent> {
        validate::target_seq("message_seq", seq)?;
        self.event_request(conv, |client_event_id| {
            pb::client_frame::Request::DeleteMessage(pb::DeleteMessage {
                conversation_id: conv.to_owned(),
                client_event_id,
                message_seq: seq,
            })
        })
        .await
    }

    /// Adds the user's reaction `emoji` (exactly one emoji) to a message. Adding one the
    /// user already has changes nothing ([`Sent::duplicate`]).
    pub async fn react(&self, conv: &str, seq: u64, emoji: &str) -> Result<Sent> {
        self.reaction(conv, seq, emoji, false).await
    }

    /// Removes the user's reaction `emoji` from a message.
    pub async fn unreact(&self, conv: &str, seq: u64, emoji: &str) -> Result<Sent> {
        self.reaction(conv, seq, emoji, true).await
    }

    async fn reaction(&self, conv: &str, seq: u64, emoji: &str, remove: bool) -> Result<Sent> {
        validate::target_seq("message_seq", seq)?;
        validate::emoji(emoji)?;
        self.event_request(conv, |client_event_id| {
            pb::client_frame::Request::React(pb::React {
                conversation_id: conv.to_owned(),
                client_event_id,
                message_seq: seq,
                emoji: emoji.to_owned(),
                remove,
            })
        })
        .await
    }

    /// Pins (or, with `unpin`, unpins) a message.
    pub async fn pin(&self, conv: &str, seq: u64, unpin: bool) -> Result<Sent> {
        validate::target_seq("message_seq", seq)?;
        self.event_request(conv, |client_event_id| {
            pb::client_frame::Request::PinMessage(pb::PinMessage {
                conversation_id: conv.to_owned(),
                client_event_id,
                message_seq: seq,
                unpin,
            })
        })
        .await
    }

    /// Changes a conversation's title, description or settings; fields left `None` stay.
    pub async fn update_conversation(&self, conv: &str, update: ConversationUpdate) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", conv)?;
        update.validate()?;
        let client_event_id = crate::new_client_message_id();
        let request = update.into_request(conv, client_event_id);
        let reply = self.request(pb::client_frame::Request::UpdateConversation(request)).await?;
        answer::conversation("UpdateConversation", reply)
    }

    /// Gives a participant another conversation role.
    pub async fn set_participant_role(&self, conv: &str, user: &str, role: pb::ParticipantRole) -> Result<pb::Conversation> {
        validate::parse_id("conversation_id", conv)?;
        validate::user_id("user_id", user)?;
        let request = pb::SetParticipantRole { conversation_id: conv.to_owned(), user_id: user.to_owned(), role: role as i32 };
        let reply = self.request(pb::client_frame::Request::SetParticipantRole(request)).await?;
        answer::conversation("SetParticipantRole", reply)
    }

    /// A page of the replies to message `root_seq`, ascending, after reply `after_seq`
    /// (0: from the first). `limit` is 1..=100; 0 means 50.
    pub async fn thread(&self, conv: &str, root_seq: u64, after_seq: u64, limit: u32) -> Result<pb::HistoryPage> {
        validate::parse_id("conversation_id", conv)?;
        validate::target_seq("root_seq", root_seq)?;
        validate::history_limit(limit)?;
        let request = pb::GetThread { conversation_id: conv.to_owned(), root_seq, after_seq, limit };
        let reply = self.request(pb::client_frame::Request::GetThread(request)).await?;
        let page = answer::history(reply)?;
        self.shared().state().loaded(&page.messages);
        Ok(page)
    }

    /// The pinned messages of a conversation, ascending.
    pub async fn pins(&self, conv: &str) -> Result<pb::HistoryPage> {
        validate::parse_id("conversation_id", conv)?;
        let reply = self.request(pb::client_frame::Request::ListPins(pb::ListPins { conversation_id: conv.to_owned() })).await?;
        let page = answer::history(reply)?;
        self.shared().state().loaded(&page.messages);
        Ok(page)
    }

    /// Every version of a message (the audit trail). For global admins.
    pub async fn audit(&self, conv: &str, seq: u64) -> Result<pb::MessageAudit> {
        validate::parse_id("conversation_id", conv)?;
        validate::target_seq("message_seq", seq)?;
        let request = pb::GetMessageAudit { conversation_id: conv.to_owned(), message_seq: seq };
        match self.request(pb::client_frame::Request::GetMessageAudit(request)).await? {
            pb::ack::Result::Audit(a) => Ok(a),
            other => Err(Error::Protocol(format!("GetMessageAudit was answered with {}", crate::session::answer_name(&other)))),
        }
    }

    /// Sends an event request with a fresh client event id, and again with the same id
    /// when the connection drops before the answer (the server stores it once), until the
    /// request timeout.
    async fn event_request(&self, conv: &str, make: impl Fn(String) -> pb::client_frame::Request) -> Result<Sent> {
        validate::parse_id("conversation_id", conv)?;
        let request = make(crate::new_client_message_id());
        let deadline = Instant::now() + self.shared().config.request_timeout;
        loop {
            match self.request(request.clone()).await {
                Ok(reply) => return Ok(answer::message_accepted(reply)?.into()),
                Err(Error::Disconnected(_)) if Instant::now() < deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The transport of the current connection: [`Transport::Quic`], or
    /// [`Transport::Tcp`] when QUIC did not answer (a network that blocks UDP); `None`
    /// while disconnected. A client on TCP tries QUIC again every
    /// [`ClientConfig::quic_retry_interval`](crate::ClientConfig::quic_retry_interval).
    pub fn transport(&self) -> Option<crate::Transport> {
        self.shared().transport()
    }

    /// Moves the connection to a new local UDP socket, as when a phone leaves Wi-Fi for
    /// cellular: QUIC migrates the connection, the session goes on (no reconnect, no
    /// catch-up), and nothing is missed. Returns the new local address. For clients with a
    /// UDP endpoint of their own.
    pub fn rebind(&self) -> Result<std::net::SocketAddr> {
        self.shared().rebind()
    }

    /// Renews this session's token in place, before it expires (the session otherwise
    /// ends then): `token` must name the same user and role. The client reconnects with
    /// it from now on. See also [`ClientConfig::with_token_source`](crate::ClientConfig::with_token_source).
    pub async fn renew_token(&self, token: &str) -> Result<SessionInfo> {
        self.shared().renew_token(token.to_owned()).await
    }

    /// Ends every live session of `user` now and refuses their tokens issued before now.
    /// For global admins.
    pub async fn revoke_sessions(&self, user: &str) -> Result<()> {
        validate::user_id("user_id", user)?;
        let request = pb::client_frame::Request::RevokeSessions(pb::RevokeSessions { user_id: user.to_owned() });
        self.request(request).await.and_then(|r| answer::done("RevokeSessions", r))
    }

    /// Deactivates (`active` false: their sessions end, they cannot sign in) or
    /// reactivates `user`. For global admins.
    pub async fn set_user_active(&self, user: &str, active: bool) -> Result<()> {
        validate::user_id("user_id", user)?;
        let request = pb::client_frame::Request::SetUserActive(pb::SetUserActive { user_id: user.to_owned(), active });
        self.request(request).await.and_then(|r| answer::done("SetUserActive", r))
    }

    /// Measures the round trip to the server through the session stream.
    pub async fn ping(&self) -> Result<Duration> {
        let nonce: u64 = rand::random();
        let started = Instant::now();
        let reply = self.request(pb::client_frame::Request::Ping(pb::Ping { nonce })).await?;
        let pong = answer::pong(reply)?;
        if pong.nonce != nonce {
            return Err(Error::Protocol(format!("Pong carries nonce {} instead of {nonce}", pong.nonce)));
        }
        Ok(started.elapsed())
    }

    /// Marks everything up to and including `seq` in a conversation as read by the user
    /// (the spec's `message_read`). The other participants receive an
    /// [`Event::Receipt`] of kind [`pb::ReceiptKind::Read`]; the conversation's
    /// `unread_count` follows. Read positions only move forward.
    pub async fn mark_read(&self, conv: &str, seq: u64) -> Result<()> {
        validate::parse_id("conversation_id", conv)?;
        let reply = self.request(pb::client_frame::Request::MarkRead(pb::MarkRead { conversation_id: conv.to_owned(), seq })).await?;
        answer::done("MarkRead", reply)
    }

    /// Tells the members of a conversation's room that the user started (`true`) or
    /// stopped typing. A signal: nothing is answered, and it is not queued while
    /// disconnected ([`Error::Disconnected`]). While typing, call it again at least every
    /// 3 s (the server's `TYPING_TIMEOUT`), or the server ends the typing state by itself.
    pub async fn typing(&self, conv: &str, active: bool) -> Result<()> {
        validate::parse_id("conversation_id", conv)?;
        self.shared().signal(pb::client_frame::Request::Typing(pb::Typing { conversation_id: conv.to_owned(), active })).await
    }

    /// `typing(conv, true)`: the spec's `typing_start`.
    pub async fn start_typing(&self, conv: &str) -> Result<()> {
        self.typing(conv, true).await
    }

    /// `typing(conv, false)`: the spec's `typing_stop`.
    pub async fn stop_typing(&self, conv: &str) -> Result<()> {
        self.typing(conv, false).await
    }

    /// Subscribes to a conversation's live signals (typing, and who of its participants
    /// is online: [`Event::RoomUsers`]) — the spec's `join_room`. Returns who is online
    /// now. Rooms are joined again after every reconnect, each answered with a fresh
    /// [`Event::RoomUsers`]. Messages and receipts arrive without joining.
    pub async fn join_room(&self, conv: &str) -> Result<pb::RoomUsers> {
        validate::parse_id("conversation_id", conv)?;
        let reply = self.request(pb::client_frame::Request::JoinRoom(pb::JoinRoom { conversation_id: conv.to_owned() })).await?;
        let users = answer::room_users(reply)?;
        self.shared().state().joined(conv);
        Ok(users)
    }

    /// Unsubscribes from a conversation's live signals (the spec's `leave_room`). It stays
    /// a conversation of the user's.
    pub async fn leave_room(&self, conv: &str) -> Result<()> {
        validate::parse_id("conversation_id", conv)?;
        // Forget it first: a reconnect in between must not join it again.
        self.shared().state().left(conv);
        let reply = self.request(pb::client_frame::Request::LeaveRoom(pb::LeaveRoom { conversation_id: conv.to_owned() })).await?;
        answer::done("LeaveRoom", reply)
    }

    /// Whether `users` are online, and when they were last seen. Users who share no
    /// conversation with the caller are left out of the answer. At most 1,000 at once.
    pub async fn presence(&self, users: &[&str]) -> Result<Vec<pb::Presence>> {
        if users.len() > MAX_PRESENCE_QUERY {
            return Err(ValidationError::new("user_ids", format!("{} users; at most {MAX_PRESENCE_QUERY} at once", users.len())).into());
        }
        for u in users {
            validate::user_id("user_ids", u)?;
        }
        let request = pb::GetPresence { user_ids: users.iter().map(|u| (*u).to_owned()).collect() };
        let reply = self.request(pb::client_frame::Request::GetPresence(request)).await?;
        Ok(answer::presence(reply)?.users)
    }

    /// Every participant's delivery and read position in a conversation (message seq N
    /// reached / was read by a user when N is at most their `delivered_seq` / `read_seq`).
    pub async fn receipts(&self, conv: &str) -> Result<pb::ReceiptList> {
        validate::parse_id("conversation_id", conv)?;
        let reply = self.request(pb::client_frame::Request::GetReceipts(pb::GetReceipts { conversation_id: conv.to_owned() })).await?;
        answer::receipts(reply)
    }

    /// Registers a browser's Web Push subscription for the user: when none of the user's
    /// devices is connected, new messages are announced there. The arguments are the
    /// fields of the browser's `PushSubscription` JSON: `endpoint`, `keys.p256dh` and
    /// `keys.auth` (base64url).
    pub async fn register_web_push(&self, endpoint: &str, p256dh_b64url: &str, auth_b64url: &str) -> Result<()> {
        check_push_endpoint(endpoint)?;
        check_base64url("p256dh", p256dh_b64url)?;
        check_base64url("auth", auth_b64url)?;
        let subscription =
            pb::WebPushSubscription { endpoint: endpoint.to_owned(), p256dh: p256dh_b64url.to_owned(), auth: auth_b64url.to_owned() };
        let request = pb::RegisterPush { target: Some(pb::register_push::Target::WebPush(subscription)) };
        let reply = self.request(pb::client_frame::Request::RegisterPush(request)).await?;
        answer::done("RegisterPush", reply)
    }

    /// Removes a Web Push subscription registered with
    /// [`register_web_push`](Self::register_web_push).
    pub async fn unregister_web_push(&self, endpoint: &str) -> Result<()> {
        check_push_endpoint(endpoint)?;
        let request = pb::UnregisterPush { endpoint: endpoint.to_owned() };
        let reply = self.request(pb::client_frame::Request::UnregisterPush(request)).await?;
        answer::done("UnregisterPush", reply)
    }

    /// The next event, waiting for one if none is queued. `None` once the client has
    /// ended and every event, the final [`Event::Closed`] included, has been taken.
    ///
    /// Events are delivered in the order the client settled them: per conversation,
    /// messages in seq order, exactly once. When several tasks call this at once, each
    /// event goes to one of them.
    pub async fn next_event(&self) -> Option<Event> {
        self.shared().next_event().await
    }

    /// Drops the current connection and reconnects at once, catching up as after any
    /// outage — e.g. when the device switched networks and the old path is dead. Does
    /// nothing while already disconnected.
    pub fn reconnect_now(&self) {
        if let Some(link) = self.shared().link() {
            link.drop_session("client reconnects");
        }
    }

    /// Ends the client gracefully: sends what is queued, finishes the session stream,
    /// closes the connection with code 0, and waits briefly (a few seconds at most) for
    /// the close to reach the server. Requests still waiting, and sends in the outbox,
    /// fail with [`Error::Closed`]; [`next_event`](Self::next_event) yields the remaining
    /// events, then [`Event::Closed`], then `None`.
    pub async fn close(&self) {
        self.shared().request_shutdown("client closed the session");
        let supervisor = lock(&self.inner.supervisor).take();
        if let Some(supervisor) = supervisor {
            let _ = timeout(CLOSE_WAIT, supervisor).await;
        }
    }

    /// Sends one request on the current connection (waiting for one, while reconnecting)
    /// and waits for its answer, all within the request timeout.
    pub(crate) async fn request(&self, request: pb::client_frame::Request) -> Result<pb::ack::Result> {
        let shared = self.shared();
        let deadline = Instant::now() + shared.config.request_timeout;
        let _slot = match timeout_at(deadline, shared.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it as an ended client if it ever is.
            Ok(Err(_)) => return Err(Error::Closed("the client ended".into())),
            Err(_) => return Err(Error::Timeout),
        };
        let link = shared.current_link(deadline).await?;
        shared.exchange(&link, request, deadline).await
    }
}

/// Takes a send out of the outbox when its caller stops waiting (cancellation), so that
/// nothing is sent on behalf of a caller who no longer expects it.
struct GiveUpOnDrop<'a> {
    shared: &'a Shared,
    entry: Option<EntryId>,
}

impl Drop for GiveUpOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.shared.state().outbox_mut().take(entry);
        }
    }
}

fn check_push_endpoint(endpoint: &str) -> Result<(), ValidationError> {
    if endpoint.is_empty() || endpoint.len() > MAX_PUSH_ENDPOINT {
        return Err(ValidationError::new("endpoint", format!("must be 1..={MAX_PUSH_ENDPOINT} bytes, is {}", endpoint.len())));
    }
    if !endpoint.starts_with("https://") {
        return Err(ValidationError::new("endpoint", "must be an https:// URL"));
    }
    if endpoint.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::new("endpoint", "must not contain spaces or control characters"));
    }
    Ok(())
}

fn check_base64url(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_PUSH_KEY {
        return Err(ValidationError::new(field, format!("must be 1..={MAX_PUSH_KEY} characters of base64url")));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=') {
        return Err(ValidationError::new(field, "must be base64url (A-Z, a-z, 0-9, '-', '_')"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_subscriptions_are_checked_before_sending() {
        assert_eq!(check_push_endpoint("https://push.example/abc"), Ok(()));
        assert_eq!(check_push_endpoint("http://push.example/abc").unwrap_err().field, "endpoint");
        assert_eq!(check_push_endpoint("").unwrap_err().field, "endpoint");
        assert_eq!(check_push_endpoint(&format!("https://{}", "a".repeat(1_100))).unwrap_err().field, "endpoint");
        assert_eq!(check_push_endpoint("https://push.example/a b").unwrap_err().field, "endpoint");
        assert_eq!(check_base64url("auth", "q1w2e3r4-_"), Ok(()));
        assert_eq!(check_base64url("auth", "").unwrap_err().field, "auth");
        assert_eq!(check_base64url("p256dh", "a+b/c").unwrap_err().field, "p256dh");
    }
}
