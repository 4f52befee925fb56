//! Presence: who of the caller's contacts is online, and telling a user's contacts when
//! they come online or go offline.
//!
//! A user's contacts are everyone who shares a conversation with them. They are read from
//! the store — the membership index, then each conversation's participant list — through
//! the bounded storage pool, never by asking the shards to load the conversations: a
//! connect storm must not churn the shards' conversation caches. A conversation that
//! cannot be read is an error to the caller (and a logged warning for an announcement),
//! never silently skipped. Nothing here writes.

use std::collections::HashSet;
use std::sync::Arc;

use legalchat_protocol::codec;
use legalchat_protocol::pb::{self, server_frame::Event};
use legalchat_protocol::validate;

use super::{PendingWork, Services, invalid};
use crate::bus::Bus;
use crate::directory::Directory;
use crate::ids;
use crate::policy::RequestError;
use crate::store::{ConversationKey, Store, StoreError};

/// A checked presence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetPresence {
    /// The users asked about.
    pub user_ids: Vec<String>,
}

/// Checks a presence request.
pub fn get(g: pb::GetPresence) -> Result<GetPresence, RequestError> {
    validate::participant_ids("user_ids", &g.user_ids).map_err(invalid)?;
    Ok(GetPresence { user_ids: g.user_ids })
}

impl GetPresence {
    /// The presence of each user asked about whom `me` may see (themselves and their
    /// contacts), once each, in the order asked.
    pub async fn run(self, services: &Services, me: &str) -> Result<pb::ack::Result, RequestError> {
        let (registry, directory, me) = (services.registry.clone(), services.directory.clone(), me.to_owned());
        let users = services
            .pool
            .read(move |store| {
                let visible = visible(store, &me, self.user_ids)?;
                let now = ids::now_ms();
                Ok::<_, StoreError>(visible.iter().map(|u| presence_of(&*registry, &directory, u, now)).collect())
            })
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "reading contacts failed");
                RequestError::internal("storage failure while reading contacts")
            })?;
        Ok(pb::ack::Result::Presence(pb::PresenceList { users }))
    }
}

/// Of `asked`, those `me` may see — themselves and whoever shares a conversation with
/// them — once each, in the order asked (blocking). Served from the membership index
/// alone: each asked user's conversations against the caller's, so the work grows with
/// the (bounded) list asked about, never with the participant lists of every
/// conversation the caller is in.
pub fn visible(store: &dyn Store, me: &str, asked: Vec<String>) -> Result<Vec<String>, StoreError> {
    let mine: HashSet<ConversationKey> = store.user_conversations(me)?.into_iter().collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for user in asked {
        if !seen.insert(user.clone()) {
            continue;
        }
        if user == me || store.user_conversations(&user)?.iter().any(|c| mine.contains(c)) {
            out.push(user);
        }
    }
    Ok(out)
}

/// Everyone who shares a conversation with `user`, read from the store (blocking). A
/// conversation the membership index names but that is gone is no contact; a read that
/// fails is an error.
pub fn contacts_of(store: &dyn Store, user: &str) -> Result<HashSet<String>, StoreError> {
    let mut contacts = HashSet::new();
    for id in store.user_conversations(user)? {
        if let Some(c) = store.conversation(&id)? {
            contacts.extend(c.participants.into_iter().map(|p| p.user_id));
        }
    }
    contacts.remove(user);
    Ok(contacts)
}

/// Whether `user` is online now, or when they were last. May read the directory's store
/// (blocking).
pub fn presence_of(registry: &dyn Bus, directory: &Directory, user: &str, now_ms: i64) -> pb::Presence {
    let online = registry.is_online(user);
    let last_seen_ms = if online { now_ms } else { directory.last_seen(user) };
    pb::Presence { user_id: user.to_owned(), online, last_seen_ms }
}

/// Tells everyone who shares a conversation with `user` whether they are online now.
/// The state is read when the event is built, so a quick disconnect and reconnect can
/// only produce an extra event, never a wrong final state; and while one announcement
/// waits for its read, another for the same user is not queued (it would say the same).
pub async fn announce(services: Arc<Services>, user: String) {
    if !services.pending.claim(PendingWork::Presence, &user) {
        return;
    }
    let (registry, directory, pending, who) =
        (services.registry.clone(), services.directory.clone(), services.pending.clone(), user.clone());
    // Nobody would retry this read: it waits its turn however many sessions start or end
    // at once (see `storage_pool`).
    let read = services
        .pool
        .read_in_turn(move |store| {
            pending.started(PendingWork::Presence, &who);
            let contacts = contacts_of(store, &who)?;
            Ok::<_, StoreError>((contacts, presence_of(&*registry, &directory, &who, ids::now_ms())))
        })
        .await;
    let (contacts, presence) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::warn!(%user, error = %e, "presence not announced: reading contacts failed");
            return;
        }
        Err(e) => {
            services.pending.started(PendingWork::Presence, &user);
            tracing::warn!(%user, error = %e, "presence not announced");
            return;
        }
    };
    let online = presence.online;
    let frame = codec::encode(&pb::ServerFrame { event: Some(Event::Presence(pb::PresenceEvent { presence: Some(presence) })) });
    for contact in &contacts {
        services.registry.deliver(contact, &frame, None);
    }
    services.hub.presence_changed(&user, online);
    metrics::counter!("legalchat_presence_events_total", "online" => if online { "true" } else { "false" }).increment(1);
}
