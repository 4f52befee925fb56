//! Conversations: create, get, list, add and remove participants, update settings, set a
//! participant's role.
//!
//! Each request is checked here (the error names the field) and routed to the shard of
//! its conversation; the role policy and the conversation's state are the shard's to
//! judge. Listing spans shards: it reads the caller's membership index through the
//! storage pool and asks each owning shard for its summaries. Nothing here writes.

use tokio::sync::oneshot;

use legalchat_protocol::pb;
use legalchat_protocol::validate;

use super::{Context, Pending, Routed, Services, gone, invalid, parse_conv};
use crate::ids;
use crate::policy::{self, RequestError};
use crate::shard::{Command, CreateSpec, SettingsUpdate};
use crate::store::ConversationKey;

/// Creating a conversation. A private conversation's id is derived from the pair (so
/// creating it twice finds the first); any other gets a fresh random id.
pub fn create(c: pb::CreateConversation, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let kind = pb::ConversationType::try_from(c.r#type)
        .map_err(|_| RequestError::invalid(format!("type: unknown conversation type {}", c.r#type)))?;
    validate::participant_ids("participant_ids", &c.participant_ids).map_err(invalid)?;
    validate::title(&c.title).map_err(invalid)?;
    validate::description(&c.description).map_err(invalid)?;
    let mut others: Vec<String> = Vec::with_capacity(c.participant_ids.len());
    for u in c.participant_ids {
        if u != cx.caller.user_id && !others.contains(&u) {
            others.push(u);
        }
    }
    match kind {
        pb::ConversationType::Case => validate::case_id(&c.case_id).map_err(invalid)?,
        _ if !c.case_id.is_empty() => return Err(RequestError::invalid("case_id: only CASE conversations carry a case id")),
        _ => {}
    }
    let id = match kind {
        pb::ConversationType::Private => {
            let [other] = others.as_slice() else {
                return Err(RequestError::invalid("participant_ids: a private conversation takes exactly one other user"));
            };
            ids::private_conversation_id(&cx.caller.user_id, other)
        }
        pb::ConversationType::Unspecified => return Err(RequestError::invalid("type: must be PRIVATE, GROUP, CASE or SUPPORT")),
        _ => ids::random_id(),
    };
    if others.len() + 1 > policy::MAX_PARTICIPANTS {
        return Err(RequestError::invalid(format!(
            "participant_ids: a conversation has at most {} participants",
            policy::MAX_PARTICIPANTS
        )));
    }
    let spec = CreateSpec { kind, others, title: c.title, description: c.description, case_id: c.case_id };
    let (caller, origin) = (cx.caller.clone(), cx.session);
    Ok(cx.route(&id, |reply| Command::Create { id, caller, origin, spec, reply }, Pending::Conversation))
}

/// Fetching one conversation.
pub fn get(g: &pb::GetConversation, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&g.conversation_id)?;
    let caller = cx.caller.clone();
    Ok(cx.route(&id, |reply| Command::Get { id, caller, reply }, Pending::Conversation))
}

/// Adding participants.
pub fn add(a: pb::AddParticipants, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&a.conversation_id)?;
    validate::participant_ids("user_ids", &a.user_ids).map_err(invalid)?;
    if a.user_ids.is_empty() {
        return Err(RequestError::invalid("user_ids: name at least one user"));
    }
    let role =
        pb::ParticipantRole::try_from(a.role).map_err(|_| RequestError::invalid(format!("role: unknown participant role {}", a.role)))?;
    let (caller, origin, users) = (cx.caller.clone(), cx.session, a.user_ids);
    Ok(cx.route(&id, |reply| Command::Add { id, caller, origin, users, role, reply }, Pending::Conversation))
}

/// Removing one participant.
pub fn remove(r: pb::RemoveParticipant, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&r.conversation_id)?;
    validate::user_id("user_id", &r.user_id).map_err(invalid)?;
    let (caller, origin, user) = (cx.caller.clone(), cx.session, r.user_id);
    Ok(cx.route(&id, |reply| Command::Remove { id, caller, origin, user, reply }, Pending::Conversation))
}

/// Changing title, description or settings.
pub fn update(u: pb::UpdateConversation, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&u.conversation_id)?;
    validate::client_event_id(&u.client_event_id).map_err(invalid)?;
    if let Some(t) = &u.title {
        validate::title(t).map_err(invalid)?;
    }
    if let Some(d) = &u.description {
        validate::description(d).map_err(invalid)?;
    }
    if let Some(r) = u.retention_days {
        validate::retention_days(r).map_err(invalid)?;
    }
    let update = SettingsUpdate {
        title: u.title,
        description: u.description,
        notifications: u.notifications,
        retention_days: u.retention_days,
        encryption: u.encryption,
    };
    let (caller, origin, client_event_id) = (cx.caller.clone(), cx.session, u.client_event_id);
    Ok(cx.route(&id, |reply| Command::Update { id, caller, origin, client_event_id, update, reply }, Pending::Conversation))
}

/// Giving a participant another role.
pub fn set_role(r: pb::SetParticipantRole, cx: &Context<'_>) -> Result<Routed, RequestError> {
    let id = parse_conv(&r.conversation_id)?;
    validate::user_id("user_id", &r.user_id).map_err(invalid)?;
    let role =
        pb::ParticipantRole::try_from(r.role).map_err(|_| RequestError::invalid(format!("role: unknown participant role {}", r.role)))?;
    let (caller, origin, user) = (cx.caller.clone(), cx.session, r.user_id);
    Ok(cx.route(&id, |reply| Command::SetRole { id, caller, origin, user, role, reply }, Pending::Conversation))
}

/// Listing the caller's conversations, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// Most conversations in the answer.
    pub limit: u32,
}

/// Checks a listing request.
pub fn list(l: &pb::ListConversations) -> Result<List, RequestError> {
    Ok(List { limit: validate::list_limit(l.limit).map_err(invalid)? })
}

impl List {
    /// Reads the user's membership index, asks each owning shard for its newest `limit`
    /// summaries, and merges them newest first.
    pub async fn run(self, services: &Services, user: &str) -> Result<pb::ack::Result, RequestError> {
        let ids = user_conversations(services, user).await?;
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let mut waits = Vec::new();
        for (shard, ids) in group_by_shard(services.shards.len(), ids).into_iter().enumerate().filter(|(_, ids)| !ids.is_empty()) {
            let (reply, rx) = oneshot::channel();
            services.shards.submit_to(shard, Command::Summaries { ids, user: user.to_owned(), limit, reply })?;
            waits.push(rx);
        }
        let mut all = Vec::new();
        for rx in waits {
            all.extend(rx.await.map_err(|_| gone())??);
        }
        all.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then_with(|| a.id.cmp(&b.id)));
        all.truncate(limit);
        Ok(pb::ack::Result::Conversations(pb::ConversationList { conversations: all }))
    }
}

/// The conversations `user` participates in, from the membership index, read through the
/// storage pool.
pub(crate) async fn user_conversations(services: &Services, user: &str) -> Result<Vec<ConversationKey>, RequestError> {
    let u = user.to_owned();
    services.pool.read(move |store| store.user_conversations(&u)).await?.map_err(|e| {
        tracing::error!(error = %e, "membership scan failed");
        RequestError::internal("storage failure while reading conversations")
    })
}

/// Conversation ids sorted into their owning shards' lists.
pub(crate) fn group_by_shard(shards: usize, ids: Vec<ConversationKey>) -> Vec<Vec<ConversationKey>> {
    let mut by_shard: Vec<Vec<ConversationKey>> = vec![Vec::new(); shards.max(1)];
    for id in ids {
        by_shard[ids::shard_of(&id, shards)].push(id);
    }
    by_shard
}
