//! Rooms and typing: joining a conversation's room (its participants come from the
//! conversation's shard), leaving it, and typing signals.
//!
//! A typing signal is never answered, neither with an `Ack` nor an `Error`: one that does
//! not name a conversation is dropped. The rooms a session joined are the session's to
//! remember (it leaves them when it ends); the hub relays typing and room presence.

use tokio::sync::oneshot;

use legalchat_protocol::pb;

use super::{Context, ReplyRx, parse_conv};
use crate::policy::RequestError;
use crate::shard::Command;
use crate::store::ConversationKey;

/// Joining a room: first the participant list from the conversation's shard (which also
/// checks that the caller is one), then the hub.
#[derive(Debug)]
pub struct Join {
    /// The conversation.
    pub conversation: ConversationKey,
    /// Its shard.
    pub shard: usize,
    /// The `Members` command.
    pub command: Command,
    /// Where the participants will arrive.
    pub members: ReplyRx<Vec<String>>,
}

/// Checks a join and routes it.
pub fn join(j: &pb::JoinRoom, cx: &Context<'_>) -> Result<Join, RequestError> {
    let id = parse_conv(&j.conversation_id)?;
    let (reply, members) = oneshot::channel();
    Ok(Join { conversation: id, shard: cx.shard_of(&id), command: Command::Members { id, caller: cx.caller.clone(), reply }, members })
}

/// The conversation a typing signal is about and whether typing started, or `None` when
/// it names no conversation (dropped without an answer).
pub fn typing(t: &pb::Typing) -> Option<(ConversationKey, bool)> {
    parse_conv(&t.conversation_id).ok().map(|id| (id, t.active))
}
