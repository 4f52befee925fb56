//! Receipts: moving the caller's delivered or read position, and reading everyone's.
//!
//! Checked here and routed to the conversation's shard, which owns the positions, keeps
//! them moving only forward and tells the other participants. Nothing here reads or
//! writes storage.

use legalchat_protocol::pb;

use super::{Context, Pending, Routed, parse_conv};
use crate::policy::RequestError;
use crate::shard::Command;

/// Marking a conversation read or delivered up to `seq`.
pub fn mark(conversation_id: &str, kind: pb::ReceiptKind, seq: u64, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(conversation_id)?;
    let (caller, origin) = (cx.caller.clone(), cx.session);
    Ok(cx.route(&id, |reply| Command::Receipt { id, caller, origin, kind, seq, reply }, Pending::Done))
}

/// Every participant's positions in a conversation.
pub fn get(g: &pb::GetReceipts, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&g.conversation_id)?;
    let caller = cx.caller.clone();
    Ok(cx.route(&id, |reply| Command::Receipts { id, caller, reply }, Pending::Receipts))
}
