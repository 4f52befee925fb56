//! The dispatcher: takes jobs off the bounded queue, turns each into deliveries (the
//! webhook, and one per Web Push subscription of the user), and runs every delivery as its
//! own task so that one slow or failing endpoint never holds up the others.
//!
//! ```text
//!  queue (QUEUE_BOUND) ──► run() ──► delivery task ─┬─ attempt ─► retry::next ─► done / remove / give up
//!                           │   MAX_PENDING tasks    └─ backoff sleep ◄─┘ (retry)
//!                           │   MAX_SENDING requests at a time
//!                           └── shutdown: stop taking jobs, give tasks SHUTDOWN_GRACE, abort the rest
//! ```
//!
//! Bounds: at most [`MAX_PENDING`] deliveries exist at once (sending or waiting to retry);
//! when they are all taken the dispatcher stops taking jobs, the queue fills, and new
//! notifications are dropped and counted at [`super::PushHandle::notify`]. At most
//! [`MAX_SENDING`] requests are on the network at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::encryption::{self, EncryptError};
use super::http::{Answer, HttpClient};
use super::retry::{self, Channel, Next};
use super::vapid::{self, VapidKey};
use super::{Job, payload, webhook};
use crate::store::{Store, StoredPushSubscription, Write};

/// Deliveries in progress at once, including those waiting to retry.
pub const MAX_PENDING: usize = 4_096;
/// Requests on the network at once.
pub const MAX_SENDING: usize = 64;
/// How long deliveries in flight may finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The firm's notification service.
#[derive(Debug)]
pub struct WebhookTarget {
    /// Where to POST.
    pub url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
}

/// What Web Push needs besides the subscriptions.
#[derive(Debug)]
pub struct WebPushSender {
    /// This server's VAPID key.
    pub vapid: VapidKey,
    /// The VAPID `sub` claim.
    pub subject: String,
}

/// The dispatcher's settings, resolved from the configuration at start.
#[derive(Debug)]
pub struct Settings {
    /// The webhook, when configured.
    pub webhook: Option<WebhookTarget>,
    /// Web Push, when a VAPID key is available.
    pub web_push: Option<WebPushSender>,
    /// Whether message text goes out.
    pub include_text: bool,
    /// Web Push `TTL`, seconds.
    pub ttl_secs: u32,
    /// Attempts per delivery.
    pub max_attempts: u32,
}

/// Shared by the dispatcher and its delivery tasks.
#[derive(Debug)]
struct Context {
    settings: Settings,
    store: Arc<dyn Store>,
    client: HttpClient,
    sending: Semaphore,
}

/// One notification to one place.
#[derive(Debug)]
enum Delivery {
    Webhook { body: Bytes },
    WebPush { subscription: StoredPushSubscription, payload: Bytes },
}

/// Runs until `shutdown` turns true (or its sender goes) or every handle is dropped.
pub async fn run(
    settings: Settings,
    store: Arc<dyn Store>,
    client: HttpClient,
    mut jobs: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(Context { settings, store, client, sending: Semaphore::new(MAX_SENDING) });
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let mut tasks = JoinSet::new();
    'jobs: loop {
        let job = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                reaped(done);
                continue;
            }
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        for delivery in deliveries(&ctx, job).await {
            // Wait for room, reaping finished tasks meanwhile; shutdown ends the wait.
            let permit = loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break 'jobs,
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => reaped(done),
                    permit = pending.clone().acquire_owned() => match permit {
                        Ok(p) => break p,
                        Err(_) => break 'jobs,
                    },
                }
            };
            let (ctx, stop) = (ctx.clone(), shutdown.clone());
            tasks.spawn(async move {
                deliver(&ctx, delivery, stop).await;
                drop(permit);
            });
        }
    }
    jobs.close();
    let mut left = 0u64;
    while jobs.try_recv().is_ok() {
        left += 1;
    }
    if left > 0 {
        metrics::counter!("legalchat_push_dropped_total").increment(left);
        tracing::info!(notifications = left, "push: shutting down with notifications still queued; they are dropped");
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::info!(deliveries = tasks.len(), "push: deliveries still in flight at shutdown are abandoned");
        tasks.abort_all();
    }
}

/// A delivery task ended; deliveries report their own outcome, so only a panic is news.
fn reaped(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "push: a delivery task panicked");
    }
}

/// Resolves when shutdown has begun (or can no longer be signalled).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// The deliveries one job makes: the webhook, then one per Web Push subscription.
async fn deliveries(ctx: &Arc<Context>, job: Job) -> Vec<Delivery> {
    let s = &ctx.settings;
    let mut out = Vec::new();
    if s.webhook.is_some() {
        out.push(Delivery::Webhook { body: payload::webhook(&job.user_id, &job.notification, s.include_text).into() });
    }
    if s.web_push.is_some() {
        let store = ctx.store.clone();
        let user = job.user_id.clone();
        match tokio::task::spawn_blocking(move || store.push_subscriptions(&user)).await {
            Ok(Ok(subscriptions)) if !subscriptions.is_empty() => {
                let payload = Bytes::from(payload::web_push(&job.notification, s.include_text));
                out.extend(subscriptions.into_iter().map(|subscription| Delivery::WebPush { subscription, payload: payload.clone() }));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics::counter!("legalchat_push_failed_total", "kind" => "webpush", "reason" => "storage").increment(1);
                tracing::error!(error = %e, user = %job.user_id, "push: reading push subscriptions failed");
            }
            Err(e) => tracing::error!(error = %e, "push: subscription lookup task failed"),
        }
    }
    out
}

/// Runs one delivery to its end: delivered, removed, given up, or cut short by shutdown.
async fn deliver(ctx: &Context, delivery: Delivery, mut shutdown: watch::Receiver<bool>) {
    let (channel, url, body) = match &delivery {
        Delivery::Webhook { body } => {
            let Some(target) = &ctx.settings.webhook else { return };
            (Channel::Webhook, target.url.as_str(), body.clone())
        }
        Delivery::WebPush { subscription, payload } => match encryption::encrypt(payload, &subscription.p256dh, &subscription.auth) {
            Ok(body) => (Channel::WebPush, subscription.endpoint.as_str(), Bytes::from(body)),
            Err(e @ (EncryptError::BadSubscriberKey | EncryptError::BadAuthSecret(_))) => {
                // Nothing can ever be delivered to it.
                tracing::warn!(error = %e, user = %subscription.user_id, "push: removing an unusable subscription");
                failed(Channel::WebPush, "bad_subscription");
                remove(ctx, subscription).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, user = %subscription.user_id, "push: payload could not be encrypted");
                failed(Channel::WebPush, "encryption");
                return;
            }
        },
    };
    let kind = channel.label();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let headers = match headers(ctx, &delivery, &body) {
            Ok(h) => h,
            Err(reason) => {
                tracing::warn!(kind, origin = %origin_of(url), reason, "push: request could not be made");
                failed(channel, "request");
                return;
            }
        };
        let answer = {
            let Ok(_sending) = ctx.sending.acquire().await else { return };
            ctx.client.post(url, &headers, body.clone()).await
        };
        let Answer { outcome, detail } = match answer {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(kind, error = %e, "push: not sent");
                failed(channel, "bad_url");
                return;
            }
        };
        match retry::next(channel, attempt, ctx.settings.max_attempts, outcome, rand::random()) {
            Next::Done => {
                metrics::counter!("legalchat_push_sent_total", "kind" => kind).increment(1);
                tracing::debug!(kind, origin = %origin_of(url), attempt, "push: delivered");
                return;
            }
            Next::RemoveSubscription => {
                if let Delivery::WebPush { subscription, .. } = &delivery {
                    tracing::info!(user = %subscription.user_id, origin = %origin_of(url), "push: subscription gone (404/410); removing it");
                    failed(channel, "gone");
                    remove(ctx, subscription).await;
                }
                return;
            }
            Next::RetryAfter(wait) => {
                metrics::counter!("legalchat_push_retries_total", "kind" => kind).increment(1);
                tracing::debug!(kind, origin = %origin_of(url), attempt, ?outcome, ?wait, %detail, "push: will retry");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stopped(&mut shutdown) => {
                        failed(channel, "shutdown");
                        return;
                    }
                }
            }
            Next::GiveUp(reason) => {
                tracing::warn!(kind, origin = %origin_of(url), attempt, ?outcome, %detail, reason, "push: giving up on a notification");
                failed(channel, reason);
                return;
            }
        }
    }
}

/// The headers of one attempt. Signatures and tokens are made per attempt, so that a late
/// retry still carries a fresh timestamp and an unexpired VAPID token.
fn headers(ctx: &Context, delivery: &Delivery, body: &[u8]) -> Result<Vec<(HeaderName, HeaderValue)>, &'static str> {
    let now = crate::auth::now_secs();
    let value = |s: String| HeaderValue::try_from(s).map_err(|_| "header value");
    match delivery {
        Delivery::Webhook { .. } => {
            let secret = ctx.settings.webhook.as_ref().map(|w| w.secret.as_slice()).unwrap_or_default();
            Ok(vec![
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (HeaderName::from_static(webhook::TIMESTAMP_HEADER), value(now.to_string())?),
                (HeaderName::from_static(webhook::SIGNATURE_HEADER), value(webhook::signature(secret, now, body))?),
            ])
        }
        Delivery::WebPush { subscription, .. } => {
            let sender = ctx.settings.web_push.as_ref().ok_or("web push is off")?;
            let authorization = sender.vapid.authorization(&subscription.endpoint, &sender.subject, now).map_err(|_| "vapid token")?;
            Ok(vec![
                (HeaderName::from_static("ttl"), value(ctx.settings.ttl_secs.to_string())?),
                (CONTENT_ENCODING, HeaderValue::from_static("aes128gcm")),
                (CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                // A chat message is for now; "high" asks the push service to wake the device.
                (HeaderName::from_static("urgency"), HeaderValue::from_static("high")),
                (AUTHORIZATION, value(authorization)?),
            ])
        }
    }
}

fn failed(channel: Channel, reason: &'static str) {
    metrics::counter!("legalchat_push_failed_total", "kind" => channel.label(), "reason" => reason).increment(1);
}

/// Deletes a subscription the push service has given up on.
async fn remove(ctx: &Context, subscription: &StoredPushSubscription) {
    let store = ctx.store.clone();
    let write = Write::RemovePushSubscription { user: subscription.user_id.clone(), endpoint: subscription.endpoint.clone() };
    match tokio::task::spawn_blocking(move || store.commit(vec![write], true)).await {
        Ok(Ok(())) => metrics::counter!("legalchat_push_subscriptions_removed_total").increment(1),
        Ok(Err(e)) => tracing::error!(error = %e, "push: removing a subscription failed"),
        Err(e) => tracing::error!(error = %e, "push: subscription removal task failed"),
    }
}

/// The endpoint's origin for logs: endpoint paths are capabilities (whoever knows one can
/// push to it) and are never logged.
fn origin_of(url: &str) -> String {
    vapid::origin(url).unwrap_or_else(|_| "<invalid url>".into())
}

#[cfg(test)]
mod tests;
