//! Plain values the client API takes and returns.

use legalchat_protocol::pb;
use legalchat_protocol::validate::{self, ValidationError};

/// A conversation to create; build it with [`NewConversation::group`],
/// [`NewConversation::case`] or [`NewConversation::support`] (private conversations are
/// made with [`Client::private_chat`](crate::Client::private_chat)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConversation {
    /// Which kind of conversation.
    pub kind: pb::ConversationType,
    /// The other participants; the caller is added by the server.
    pub participants: Vec<String>,
    /// Display title, at most 200 bytes.
    pub title: String,
    /// Longer description, at most 2,000 bytes.
    pub description: String,
    /// The legal case; required for [`pb::ConversationType::Case`], empty otherwise.
    pub case_id: String,
}

impl NewConversation {
    /// A group conversation, e.g. a case team.
    pub fn group(title: impl Into<String>, participants: Vec<String>) -> Self {
        Self::of_kind(pb::ConversationType::Group, title, participants)
    }

    /// A conversation linked to the legal case `case_id`.
    pub fn case(case_id: impl Into<String>, title: impl Into<String>, participants: Vec<String>) -> Self {
        Self { case_id: case_id.into(), ..Self::of_kind(pb::ConversationType::Case, title, participants) }
    }

    /// A client support (help desk) conversation.
    pub fn support(title: impl Into<String>, participants: Vec<String>) -> Self {
        Self::of_kind(pb::ConversationType::Support, title, participants)
    }

    /// A private (one-on-one) conversation with `other_user`. The server returns the
    /// existing one if the pair already has one.
    pub fn private(other_user: impl Into<String>) -> Self {
        Self::of_kind(pb::ConversationType::Private, String::new(), vec![other_user.into()])
    }

    fn of_kind(kind: pb::ConversationType, title: impl Into<String>, participants: Vec<String>) -> Self {
        Self { kind, participants, title: title.into(), description: String::new(), case_id: String::new() }
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Checks the request against the protocol's rules, as the server will.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::participant_ids("participant_ids", &self.participants)?;
        validate::title(&self.title)?;
        validate::description(&self.description)?;
        match self.kind {
            pb::ConversationType::Unspecified => {
                return Err(ValidationError::new("type", "must be PRIVATE, GROUP, CASE or SUPPORT"));
            }
            pb::ConversationType::Private if self.participants.len() != 1 => {
                return Err(ValidationError::new(
                    "participant_ids",
                    format!("a private conversation takes exactly one other user, got {}", self.participants.len()),
                ));
            }
            pb::ConversationType::Case => validate::case_id(&self.case_id)?,
            _ if !self.case_id.is_empty() => {
                return Err(ValidationError::new("case_id", "is only allowed for CASE conversations"));
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn into_request(self) -> pb::CreateConversation {
        pb::CreateConversation {
            r#type: self.kind as i32,
            participant_ids: self.participants,
            title: self.title,
            description: self.description,
            case_id: self.case_id,
        }
    }
}

/// A change of a conversation's title, description or settings for
/// [`Client::update_conversation`](crate::Client::update_conversation): fields left `None`
/// stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConversationUpdate {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Push notifications on, or muted (then only mentions are pushed).
    pub notifications: Option<bool>,
    /// Days to keep messages (0: the firm's policy).
    pub retention_days: Option<u32>,
    /// Marked as needing encryption beyond the server's own.
    pub encryption: Option<bool>,
}

impl ConversationUpdate {
    /// No change yet; set the fields to change.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Changes the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Turns push notifications on or off (muted).
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = Some(on);
        self
    }

    /// Sets the retention period.
    pub fn retention_days(mut self, days: u32) -> Self {
        self.retention_days = Some(days);
        self
    }

    /// Marks the conversation as needing extra encryption, or not.
    pub fn encryption(mut self, on: bool) -> Self {
        self.encryption = Some(on);
        self
    }

    /// Checks the fields as the server will.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(t) = &self.title {
            validate::title(t)?;
        }
        if let Some(d) = &self.description {
            validate::description(d)?;
        }
        if let Some(r) = self.retention_days {
            validate::retention_days(r)?;
        }
        Ok(())
    }

    pub(crate) fn into_request(self, conversation_id: &str, client_event_id: String) -> pb::UpdateConversation {
        pb::UpdateConversation {
            conversation_id: conversation_id.to_owned(),
            client_event_id,
            title: self.title,
            description: self.description,
            notifications: self.notifications,
            retention_days: self.retention_days,
            encryption: self.encryption,
        }
    }
}

/// The server's receipt for a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Server-assigned message id.
    pub message_id: String,
    /// The message's position in its conversation.
    pub seq: u64,
    /// Server time of the message, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// True when this was a retry of an earlier send with the same client message id:
    /// nothing new was stored and the fields describe the original message.
    pub duplicate: bool,
}

impl From<pb::MessageAccepted> for Sent {
    fn from(m: pb::MessageAccepted) -> Self {
        Self { message_id: m.message_id, seq: m.seq, timestamp_ms: m.timestamp_ms, duplicate: m.duplicate }
    }
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryCursor {
    /// The newest messages.
    #[default]
    Latest,
    /// Messages with a seq below this one (scrolling back).
    Before(u64),
    /// Messages with a seq above this one (catching up after a reconnect).
    After(u64),
}

impl HistoryCursor {
    pub(crate) fn into_pb(self) -> Option<pb::get_history::Cursor> {
        match self {
            HistoryCursor::Latest => None,
            HistoryCursor::Before(seq) => Some(pb::get_history::Cursor::BeforeSeq(seq)),
            HistoryCursor::After(seq) => Some(pb::get_history::Cursor::AfterSeq(seq)),
        }
    }
}

/// Something the server told this session without being asked.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A new entry of one of the user's conversations' logs: a message (also the user's
    /// own messages sent from other devices; never those sent through this client, which
    /// [`Client::send`](crate::Client::send) reports), or, with `event` set, an edit,
    /// delete, reaction, pin, participant or settings change (these also when made
    /// through this client). Per conversation, entries come exactly once and in seq order
    /// without gaps, across reconnects.
    Message(pb::Message),
    /// The current state of a message after an event about it (an edit, delete, reaction
    /// or pin) reached the app as [`Event::Message`]: the message as a device that saw
    /// everything shows it now. Follows that event. Only for messages this client holds
    /// (seen live, loaded with [`Client::history`](crate::Client::history), or sent).
    MessageUpdated(pb::Message),
    /// A conversation's participants or settings changed, or the user was added to (or
    /// removed from) a conversation.
    ConversationUpdated(pb::Conversation),
    /// The server is ending the session (shutdown, or with [`pb::ErrorCode::Overloaded`]
    /// because this client fell behind). The client reconnects and catches up by itself;
    /// [`Event::State`] follows.
    Goodbye {
        /// Machine-readable reason.
        code: pb::ErrorCode,
        /// The server's explanation.
        reason: String,
    },
    /// The client has ended: [`Client::close`](crate::Client::close) was called, the
    /// server refused the token on a reconnect, or the reconnect policy gave up. It is the
    /// last event.
    Closed {
        /// Why the session ended.
        reason: String,
    },
    /// Someone started or stopped typing in a joined room.
    Typing(pb::TypingEvent),
    /// The online participants of a joined room (on join and on every change).
    RoomUsers(pb::RoomUsers),
    /// A user who shares a conversation came online or went offline.
    Presence(pb::Presence),
    /// A participant's delivery or read position moved. After a reconnect, receipts that
    /// moved while the client was away are reported this way too (before
    /// [`ConnectionState::Resumed`]), each position at most once and never backwards.
    Receipt(pb::ReceiptEvent),
    /// The connection changed state: it dropped, the client is about to try again, or it
    /// is back and has caught up. See [`ConnectionState`].
    State(ConnectionState),
}

/// Where the client's connection stands. [`Client::state`](crate::Client::state) tells the
/// current one; [`Event::State`] reports each change, in this order around an outage:
///
/// ```text
///  Connected ─► Disconnected ─► Reconnecting{1} ─► Reconnecting{2} ─► … ─► (missed messages) ─► Resumed
///                                                                                  └─ or, when the server refuses the token: Event::Closed
/// ```
///
/// The first connection is reported by [`Client::connect`](crate::Client::connect)
/// returning, not by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected, authenticated and live.
    Connected,
    /// The connection dropped; `reason` says why. Sends are queued in the outbox until
    /// the client is back.
    Disconnected {
        /// Why the connection ended.
        reason: String,
    },
    /// The client waits `delay` (exponential backoff with jitter), then makes reconnect
    /// attempt number `attempt` (from 1).
    Reconnecting {
        /// The attempt about to be made, from 1.
        attempt: u32,
        /// How long the client waits before making it.
        delay: std::time::Duration,
    },
    /// Reconnected, and every message and receipt missed meanwhile has been delivered
    /// (`missed` messages); what follows is live. Counts as connected.
    Resumed {
        /// Messages delivered by the catch-up.
        missed: u64,
    },
    /// The client has ended for good (see [`Event::Closed`]).
    Closed {
        /// Why.
        reason: String,
    },
}

impl ConnectionState {
    /// Whether requests are answered now ([`Connected`](Self::Connected) or
    /// [`Resumed`](Self::Resumed)).
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected | ConnectionState::Resumed { .. })
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionState::Connected => f.write_str("connected"),
            ConnectionState::Disconnected { reason } => write!(f, "disconnected: {reason}"),
            ConnectionState::Reconnecting { attempt, delay } => write!(f, "reconnecting (attempt {attempt} in {} ms)", delay.as_millis()),
            ConnectionState::Resumed { missed } => write!(f, "reconnected; caught up on {missed} missed message(s)"),
            ConnectionState::Closed { reason } => write!(f, "closed: {reason}"),
        }
    }
}

/// A fresh client message id: a time-ordered (version 7, RFC 9562) UUID, e.g.
/// `"019aeb1c-3f2b-7c1e-9a4d-4f6b8e2a1c7d"`: 48 bits of Unix milliseconds, then 74
/// random bits.
///
/// The random bits make a collision between two sends of one user practically impossible,
/// which is what de-duplication by client message id relies on. Keep the id of a send and
/// reuse it when retrying that send. The time in front keeps a conversation's new ids
/// next to each other in the server's index, where inserting them is cheapest.
pub fn new_client_message_id() -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    uuid_v7(u64::try_from(millis).unwrap_or(u64::MAX), rand::random())
}

/// A version 7 UUID of `millis` (its low 48 bits) and `random` (74 bits of it used).
fn uuid_v7(millis: u64, random: [u8; 10]) -> String {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&random);
    bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex = validate::format_id(&bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_message_ids_are_valid_and_distinct() {
        let a = new_client_message_id();
        let b = new_client_message_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(validate::client_message_id(&a), Ok(()));
    }

    #[test]
    fn uuid_layout() {
        let id = uuid_v7(u64::MAX, [0xff; 10]);
        assert_eq!(id, "ffffffff-ffff-7fff-bfff-ffffffffffff");
        let id = uuid_v7(0, [0; 10]);
        assert_eq!(id, "00000000-0000-7000-8000-000000000000");
        // RFC 9562, appendix A.6: 2022-02-22 14:22:22.000 UTC.
        let id = uuid_v7(0x017f_22e2_79b0, [0xc, 0xc3, 0x18, 0xc4, 0xdc, 0x0c, 0x0c, 0x07, 0x39, 0x8f]);
        assert_eq!(id, "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
    }

    #[test]
    fn client_message_ids_sort_by_time() {
        let earlier = uuid_v7(1_764_800_000_000, [0xff; 10]);
        let later = uuid_v7(1_764_800_000_001, [0; 10]);
        assert!(earlier < later);
        assert!(new_client_message_id() > earlier);
    }

    #[test]
    fn conversation_builders_validate() {
        assert_eq!(NewConversation::group("Team", vec!["bob".into()]).validate(), Ok(()));
        assert_eq!(NewConversation::case("C-2024-17", "Estate", vec!["bob".into()]).validate(), Ok(()));
        assert_eq!(NewConversation::support("Help", vec![]).validate(), Ok(()));
        assert_eq!(NewConversation::private("bob").validate(), Ok(()));
    }

    #[test]
    fn conversation_rules_name_the_field() {
        let err = NewConversation::case("", "Estate", vec![]).validate().unwrap_err();
        assert_eq!(err.field, "case_id");
        let mut group = NewConversation::group("Team", vec![]);
        group.case_id = "C-1".into();
        assert_eq!(group.validate().unwrap_err().field, "case_id");
        let mut private = NewConversation::private("bob");
        private.participants.push("carol".into());
        assert_eq!(private.validate().unwrap_err().field, "participant_ids");
        let err = NewConversation::group("Team", vec!["not a user".into()]).validate().unwrap_err();
        assert_eq!(err.field, "participant_ids");
        let err = NewConversation::group("x".repeat(201), vec![]).validate().unwrap_err();
        assert_eq!(err.field, "title");
        let mut unspecified = NewConversation::group("Team", vec![]);
        unspecified.kind = pb::ConversationType::Unspecified;
        assert_eq!(unspecified.validate().unwrap_err().field, "type");
    }

    #[test]
    fn create_request_carries_every_field() {
        let req = NewConversation::case("C-1", "Estate", vec!["bob".into()]).with_description("Probate").into_request();
        assert_eq!(req.r#type, pb::ConversationType::Case as i32);
        assert_eq!(req.participant_ids, vec!["bob".to_string()]);
        assert_eq!((req.title.as_str(), req.description.as_str(), req.case_id.as_str()), ("Estate", "Probate", "C-1"));
    }

    #[test]
    fn history_cursor_maps_to_the_oneof() {
        assert_eq!(HistoryCursor::Latest.into_pb(), None);
        assert_eq!(HistoryCursor::Before(7).into_pb(), Some(pb::get_history::Cursor::BeforeSeq(7)));
        assert_eq!(HistoryCursor::After(9).into_pb(), Some(pb::get_history::Cursor::AfterSeq(9)));
    }
}
