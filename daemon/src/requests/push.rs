//! Push registration: adding and removing a user's Web Push subscriptions.
//!
//! The subscription is checked here (the error names the field). Registering then reads
//! the user's existing subscriptions through the storage pool (to drop the oldest beyond
//! the limit and check the push-service host) and commits through the user's shard with
//! fsync: the answer means the registration is durable. Sending notifications is
//! `crate::push`'s, not this module's.

use legalchat_protocol::pb;

use super::{Context, Services};
use crate::policy::RequestError;
use crate::push::{PushHandle, parse_subscription};
use crate::store::Write;

/// A checked registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The subscription, as the browser reported it.
    pub subscription: pb::WebPushSubscription,
}

/// Checks a registration.
pub fn register(r: pb::RegisterPush, cx: &Context<'_>) -> Result<Register, RequestError> {
    match r.target {
        Some(pb::register_push::Target::WebPush(w)) => {
            parse_subscription(&cx.caller.user_id, &w)?;
            Ok(Register { subscription: w })
        }
        None => Err(RequestError::invalid("target: name a push target (web_push)")),
    }
}

impl Register {
    /// Reads what is registered, commits the new subscription durably, and starts
    /// queueing the user's notifications.
    pub async fn run(self, services: &Services, user: &str) -> Result<pb::ack::Result, RequestError> {
        let (push, who) = (services.push.clone(), user.to_owned());
        let writes = services.pool.read(move |_| push.registration(&who, &self.subscription)).await??;
        services.commit_records(user, writes, true).await?;
        services.push.registered(user);
        Ok(pb::ack::Result::Done(pb::Done {}))
    }
}

/// A checked unregistration.
#[derive(Debug, Clone)]
pub struct Unregister {
    /// The removal.
    pub write: Write,
}

/// Checks an unregistration.
pub fn unregister(u: &pb::UnregisterPush, cx: &Context<'_>) -> Result<Unregister, RequestError> {
    Ok(Unregister { write: PushHandle::unregistration(&cx.caller.user_id, &u.endpoint)? })
}

impl Unregister {
    /// Commits the removal durably, then stops queueing the user's notifications if it
    /// was their last subscription.
    pub async fn run(self, services: &Services, user: &str) -> Result<pb::ack::Result, RequestError> {
        services.commit_records(user, vec![self.write], true).await?;
        let (push, who) = (services.push.clone(), user.to_owned());
        if let Err(e) = services.pool.read(move |_| push.unregistered(&who)).await {
            // The registration is gone either way; at worst a notification is queued and
            // finds no subscription.
            tracing::warn!(%user, error = %e, "push subscriber list not updated");
        }
        Ok(pb::ack::Result::Done(pb::Done {}))
    }
}
