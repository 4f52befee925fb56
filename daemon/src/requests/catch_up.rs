//! Catching up after a disconnect: one page of everything missed in the caller's
//! conversations, across shards, within a message and byte budget.
//!
//! The caller's conversations come from the membership index, read through the storage
//! pool; each shard then fills its share of the page from the conversations it owns, in
//! the order the client listed them. A conversation that cannot be read fails the page:
//! the client must never believe it is up to date where it is not. Nothing here writes.

use std::collections::HashSet;

use tokio::sync::oneshot;

use legalchat_protocol::pb;
use legalchat_protocol::validate::format_id;

use super::conversations::user_conversations;
use super::{Services, gone, parse_conv};
use crate::ids;
use crate::policy::RequestError;
use crate::shard::{CatchUpPart, Command};
use crate::store::ConversationKey;

/// Most text bytes in one catch-up page (frames stay well below the SDK's 16 MiB).
pub const MAX_BYTES: usize = 4 << 20;

/// Messages in a page when the client does not say.
pub const DEFAULT_MESSAGES: usize = 1_000;

/// Most messages a client may ask for in one page.
pub const MAX_MESSAGES: u32 = 5_000;

/// A checked catch-up request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// Where the client is in each conversation it knows, in the order to serve them.
    pub cursors: Vec<(ConversationKey, u64)>,
    /// Also serve the caller's conversations the client did not list, from the start.
    pub include_unlisted: bool,
    /// Most messages in the page.
    pub max_messages: usize,
}

/// Checks a catch-up request.
pub fn plan(c: pb::CatchUp) -> Result<CatchUp, RequestError> {
    let max_messages = match c.max_messages {
        0 => DEFAULT_MESSAGES,
        n if n > MAX_MESSAGES => return Err(RequestError::invalid(format!("max_messages: {n} exceeds {MAX_MESSAGES}"))),
        n => n as usize,
    };
    let cursors = c.cursors.iter().map(|cur| parse_conv(&cur.conversation_id).map(|id| (id, cur.after_seq))).collect::<Result<_, _>>()?;
    Ok(CatchUp { cursors, include_unlisted: c.include_unlisted, max_messages })
}

impl CatchUp {
    /// Gathers one page for `user`.
    pub async fn run(self, services: &Services, user: &str) -> Result<pb::ack::Result, RequestError> {
        let mine: HashSet<ConversationKey> = user_conversations(services, user).await?.into_iter().collect();
        let (by_shard, unknown) = self.split(&mine, services.shards.len());
        let mut page = pb::CatchUpPage::default();
        let mut bytes = 0usize;
        for (shard, cursors) in by_shard.into_iter().enumerate().filter(|(_, c)| !c.is_empty()) {
            let room = self.max_messages.saturating_sub(page.messages.len());
            if room == 0 || bytes >= MAX_BYTES {
                // Budget spent: the rest is for the next page.
                page.next.extend(cursors.into_iter().map(cursor));
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let cmd = Command::CatchUp { cursors, user: user.to_owned(), max_messages: room, max_bytes: MAX_BYTES - bytes, reply };
            services.shards.submit_to(shard, cmd)?;
            let part: CatchUpPart = rx.await.map_err(|_| gone())??;
            bytes += part.bytes;
            page.messages.extend(part.messages);
            page.next.extend(part.next.into_iter().map(cursor));
            page.receipts.extend(part.receipts);
        }
        page.has_more = !page.next.is_empty();
        page.unknown = unknown.iter().map(format_id).collect();
        metrics::counter!("legalchat_catch_up_messages_total").increment(page.messages.len() as u64);
        Ok(pb::ack::Result::CatchUp(page))
    }

    /// The cursors to serve, by owning shard — only the caller's conversations (`mine`),
    /// in the order given, then (when asked) the unlisted ones from the start — and the
    /// caller's conversations the client did not list, sorted.
    pub fn split(&self, mine: &HashSet<ConversationKey>, shards: usize) -> (Vec<Vec<(ConversationKey, u64)>>, Vec<ConversationKey>) {
        let listed: HashSet<ConversationKey> = self.cursors.iter().map(|(id, _)| *id).collect();
        let mut unknown: Vec<ConversationKey> = mine.iter().filter(|id| !listed.contains(*id)).copied().collect();
        unknown.sort_unstable();
        let mut wanted: Vec<(ConversationKey, u64)> = self.cursors.iter().filter(|(id, _)| mine.contains(id)).copied().collect();
        if self.include_unlisted {
            wanted.extend(unknown.drain(..).map(|id| (id, 0)));
        }
        let mut by_shard: Vec<Vec<(ConversationKey, u64)>> = vec![Vec::new(); shards.max(1)];
        for (id, after) in wanted {
            by_shard[ids::shard_of(&id, shards)].push((id, after));
        }
        (by_shard, unknown)
    }
}

fn cursor((id, after): (ConversationKey, u64)) -> pb::ConversationCursor {
    pb::ConversationCursor { conversation_id: format_id(&id), after_seq: after }
}
