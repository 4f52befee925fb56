//! Push notifications for users with no connected device.
//!
//! ```text
//!  shard (after commit): participant had no session ──notify()──► bounded queue
//!                                                                    │
//!                                                    dispatcher task ▼
//!                         Web Push (RFC 8030 + RFC 8291 + RFC 8292 VAPID) to each subscription
//!                         signed webhook (HMAC-SHA256) to the firm's notification service
//!                         retries with backoff; 404/410 removes the subscription
//! ```
//!
//! By default no message text leaves the server: a notification names the sender and the
//! conversation (or case) only. `docs/push.md` is the operator's and app developer's guide:
//! settings, payload formats, verifying the webhook signature, the VAPID key, retries.
//!
//! | module | what it holds |
//! |---|---|
//! | [`payload`] | the JSON a notification carries (Web Push payload, webhook body) |
//! | [`encryption`] | RFC 8291 message encryption (`aes128gcm`, RFC 8188) |
//! | [`vapid`] | RFC 8292 VAPID key and `Authorization` header |
//! | [`webhook`] | the webhook's HMAC-SHA256 signature |
//! | [`retry`] | the retry policy as a pure function |
//! | [`http`] | the HTTPS client (hyper, rustls with ring) |
//! | [`dispatcher`] | the task that turns queued jobs into deliveries |
//!
//! Not done here: native push (APNs, FCM's own API; a firm's notification service can
//! bridge to them from the webhook), per-device preferences, collapsing notifications.

pub mod dispatcher;
pub mod encryption;
pub mod http;
pub mod payload;
pub mod retry;
pub mod vapid;
pub mod webhook;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine;
use tokio::sync::mpsc;

use legalchat_protocol::pb;

use crate::ids;
use crate::policy::RequestError;
use crate::store::{Store, StoredPushSubscription, Write};

/// What a notification is about. Built at most once per message, when a recipient turns
/// out to need one, and shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The conversation.
    pub conversation_id: String,
    /// Its kind (`pb::ConversationType`).
    pub conversation_type: i32,
    /// Its title.
    pub conversation_title: String,
    /// Its case id (CASE conversations).
    pub case_id: String,
    /// Who sent the message.
    pub sender_id: String,
    /// The message's position.
    pub seq: u64,
    /// The message id.
    pub message_id: String,
    /// The text; only sent out when configured to include it.
    pub text: String,
    /// Server time of the message.
    pub timestamp_ms: i64,
}

/// One notification for one user.
#[derive(Debug, Clone)]
pub struct Job {
    /// The recipient.
    pub user_id: String,
    /// What happened.
    pub notification: Arc<Notification>,
}

/// Most notifications waiting for the dispatcher; beyond it new ones are dropped and
/// counted (`legalchat_push_dropped_total`) rather than holding up the shards.
pub const QUEUE_BOUND: usize = 10_000;

/// Longest accepted Web Push endpoint URL.
pub const MAX_ENDPOINT_LEN: usize = 1_024;

/// Most push subscriptions kept per user (older ones are replaced first).
pub const MAX_SUBSCRIPTIONS_PER_USER: usize = 20;

/// The shards' and sessions' way to the push dispatcher.
#[derive(Debug, Clone)]
pub struct PushHandle {
    tx: Option<mpsc::Sender<Job>>,
    store: Arc<dyn Store>,
    allowed_hosts: Arc<Vec<String>>,
    /// Users who may have a Web Push subscription, when only Web Push is on: a
    /// notification for anyone else is dropped here instead of costing the dispatcher a
    /// store lookup. Most participants of most conversations are offline most of the
    /// time, so without this every message costs one lookup per offline participant.
    /// `None`: every notification is queued (the webhook wants them all).
    subscribers: Option<Arc<RwLock<HashSet<String>>>>,
}

impl PushHandle {
    /// A handle over `store` whose notifications go to `tx` (none: notifications are off),
    /// accepting Web Push endpoints on the default push-service hosts.
    pub fn new(store: Arc<dyn Store>, tx: Option<mpsc::Sender<Job>>) -> Self {
        let hosts = crate::config::DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        Self { tx, store, allowed_hosts: Arc::new(hosts), subscribers: None }
    }

    /// The same handle queueing notifications only for users with a Web Push
    /// subscription: `subscribers` at start, kept up to date by [`Self::register`] and
    /// [`Self::unregister`].
    pub fn only_for_subscribers(mut self, subscribers: Vec<String>) -> Self {
        self.subscribers = Some(Arc::new(RwLock::new(subscribers.into_iter().collect())));
        self
    }

    /// The same handle accepting endpoints on `hosts` only (`host` or `.suffix`).
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> Self {
        self.allowed_hosts = Arc::new(hosts);
        self
    }

    /// Whether notifications are queued at all.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether [`Self::notify`] would queue a notification for `user`, so that callers
    /// need not build one that would be dropped.
    pub fn wants(&self, user: &str) -> bool {
        self.tx.is_some() && self.subscribers.as_ref().is_none_or(|s| s.read().unwrap_or_else(PoisonError::into_inner).contains(user))
    }

    /// Queues a notification for `user`; never blocks.
    pub fn notify(&self, user: &str, notification: &Arc<Notification>) {
        let Some(tx) = &self.tx else { return };
        if !self.wants(user) {
            return;
        }
        match tx.try_send(Job { user_id: user.to_owned(), notification: notification.clone() }) {
            Ok(()) => metrics::counter!("legalchat_push_queued_total").increment(1),
            Err(_) => metrics::counter!("legalchat_push_dropped_total").increment(1),
        }
    }

    /// Registers a Web Push subscription of `user` after checking it, committing straight
    /// to the store (with fsync): the three steps sessions take one by one
    /// ([`Self::registration`] in the storage pool, the writes through the user's shard,
    /// then [`Self::registered`]), in one call for tests.
    #[cfg(test)]
    pub fn register(&self, user: &str, sub: &pb::WebPushSubscription) -> Result<(), RequestError> {
        let writes = self.registration(user, sub)?;
        self.store.commit(writes, true).map_err(|_| RequestError::internal("storage failure"))?;
        self.registered(user);
        Ok(())
    }

    /// The writes that register a Web Push subscription of `user`, after checking it: the
    /// subscription, and the removal of the oldest ones beyond
    /// [`MAX_SUBSCRIPTIONS_PER_USER`]. Reads the user's subscriptions: blocking.
    pub fn registration(&self, user: &str, sub: &pb::WebPushSubscription) -> Result<Vec<Write>, RequestError> {
        let stored = parse_subscription(user, sub)?;
        check_host(&stored.endpoint, &self.allowed_hosts)?;
        let mut existing = self.store.push_subscriptions(user).map_err(|_| RequestError::internal("storage failure"))?;
        existing.retain(|s| s.endpoint != stored.endpoint);
        existing.sort_by_key(|s| s.created_at_ms);
        let mut writes = Vec::new();
        while existing.len() + 1 > MAX_SUBSCRIPTIONS_PER_USER {
            let oldest = existing.remove(0);
            writes.push(Write::RemovePushSubscription { user: user.to_owned(), endpoint: oldest.endpoint });
        }
        writes.push(Write::PushSubscription(stored));
        Ok(writes)
    }

    /// Notes that `user` has a subscription (its writes are committed), so that their
    /// notifications are queued from now on.
    pub fn registered(&self, user: &str) {
        if let Some(subscribers) = &self.subscribers {
            subscribers.write().unwrap_or_else(PoisonError::into_inner).insert(user.to_owned());
        }
    }

    /// Removes a Web Push subscription of `user`, committing straight to the store (with
    /// fsync): [`Self::unregistration`], the commit, then [`Self::unregistered`], in one
    /// call for tests.
    #[cfg(test)]
    pub fn unregister(&self, user: &str, endpoint: &str) -> Result<(), RequestError> {
        let write = Self::unregistration(user, endpoint)?;
        self.store.commit(vec![write], true).map_err(|_| RequestError::internal("storage failure"))?;
        self.unregistered(user);
        Ok(())
    }

    /// The write that removes `user`'s subscription at `endpoint`, after checking it. Pure.
    pub fn unregistration(user: &str, endpoint: &str) -> Result<Write, RequestError> {
        if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(RequestError::invalid("endpoint: must be 1..=1024 bytes"));
        }
        Ok(Write::RemovePushSubscription { user: user.to_owned(), endpoint: endpoint.to_owned() })
    }

    /// Notes that a subscription of `user` is gone (committed): when it was their last,
    /// their notifications stop being queued. Reads the user's subscriptions: blocking.
    pub fn unregistered(&self, user: &str) {
        if let Some(subscribers) = &self.subscribers
            && self.store.push_subscriptions(user).is_ok_and(|left| left.is_empty())
        {
            subscribers.write().unwrap_or_else(PoisonError::into_inner).remove(user);
        }
    }
}

/// Refuses endpoints outside the allowed push-service hosts.
pub fn check_host(endpoint: &str, allowed: &[String]) -> Result<(), RequestError> {
    let host = http::host_of(endpoint).map_err(|e| RequestError::invalid(format!("web_push.endpoint: {e}")))?;
    if host.is_empty() {
        return Err(RequestError::invalid("web_push.endpoint: no host in the URL"));
    }
    let ok = allowed.iter().any(|a| match a.strip_prefix('.') {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => &host == a,
    });
    if ok {
        Ok(())
    } else {
        Err(RequestError::forbidden(format!("web_push.endpoint: host {host} is not an allowed push service (push.allowed_hosts)")))
    }
}

fn b64url(field: &'static str, value: &str, len: usize) -> Result<Vec<u8>, RequestError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| RequestError::invalid(format!("{field}: must be base64url")))?;
    if bytes.len() != len {
        return Err(RequestError::invalid(format!("{field}: must decode to {len} bytes, got {}", bytes.len())));
    }
    Ok(bytes)
}

/// Checks a subscription as a browser reports it: an https (or loopback http) endpoint,
/// a 65-byte uncompressed P-256 key and a 16-byte secret.
pub fn parse_subscription(user: &str, sub: &pb::WebPushSubscription) -> Result<StoredPushSubscription, RequestError> {
    if sub.endpoint.is_empty() || sub.endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(RequestError::invalid("web_push.endpoint: must be 1..=1024 bytes"));
    }
    let loopback = sub.endpoint.starts_with("http://127.0.0.1:")
        || sub.endpoint.starts_with("http://localhost:")
        || sub.endpoint.starts_with("http://[::1]:");
    if !(sub.endpoint.starts_with("https://") || loopback) || sub.endpoint.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RequestError::invalid("web_push.endpoint: must be an https URL"));
    }
    let p256dh = b64url("web_push.p256dh", &sub.p256dh, 65)?;
    // Checked here, not at the first push, so the app hears of a bad key at once.
    if p256dh.first() != Some(&4) || p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
        return Err(RequestError::invalid("web_push.p256dh: must be an uncompressed P-256 point"));
    }
    let auth = b64url("web_push.auth", &sub.auth, 16)?;
    Ok(StoredPushSubscription { user_id: user.to_owned(), endpoint: sub.endpoint.clone(), p256dh, auth, created_at_ms: ids::now_ms() })
}

/// Why the push dispatcher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A push setting is unusable; the message names it.
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTPS client could not be built.
    #[error(transparent)]
    Client(#[from] http::ClientError),
}

const VAPID_KEY_SETTING: &str = "push.vapid_private_key_file (LEGALCHAT_PUSH_VAPID_PRIVATE_KEY_FILE, --push-vapid-private-key)";

/// The VAPID contact used in development mode when none is configured.
pub const DEV_VAPID_SUBJECT: &str = "mailto:admin@localhost";

/// Where the VAPID public key is published for app developers: `DATA_DIR/vapid-public-key.txt`.
pub fn public_key_path(config: &crate::config::Config) -> PathBuf {
    config.data_dir.join("vapid-public-key.txt")
}

/// Where development mode keeps its generated VAPID key: `DATA_DIR/dev/vapid.pem`.
pub fn dev_key_path(config: &crate::config::Config) -> PathBuf {
    config.dev_dir().join("vapid.pem")
}

/// Starts the dispatcher for `config`'s push settings; returns the handle shards and
/// sessions use, and the dispatcher task (which ends when `shutdown` flips to true).
/// Must be called inside a Tokio runtime.
///
/// Web Push is on when a VAPID key is configured (or generated, in development mode); its
/// public key is then written to [`public_key_path`]. The webhook is on when its URL is
/// set. With neither, or with `push.enabled = false`, notifications are not queued at all,
/// while registrations are still accepted and kept.
pub fn start(
    config: &crate::config::Config,
    store: Arc<dyn Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(PushHandle, tokio::task::JoinHandle<()>), PushError> {
    let push = &config.push;
    let hosts = config.push.allowed_hosts.clone();
    let off = |store| (PushHandle::new(store, None).with_allowed_hosts(hosts), tokio::spawn(async {}));
    if !push.enabled {
        tracing::info!("push notifications are off (push.enabled = false)");
        unpublish(&public_key_path(config))?;
        return Ok(off(store));
    }
    let web_push = web_push_sender(config)?;
    match &web_push {
        Some(sender) => {
            let path = public_key_path(config);
            publish(&path, sender.vapid.public_key_b64())?;
            tracing::info!(public_key = sender.vapid.public_key_b64(), file = %path.display(), subject = %sender.subject, "Web Push on");
        }
        None => {
            unpublish(&public_key_path(config))?;
            tracing::info!("Web Push is off: no VAPID key (set push.vapid_private_key_file)");
        }
    }
    let webhook = match (&push.webhook_url, &push.webhook_secret) {
        (Some(url), Some(secret)) => {
            http::checked_uri(url).map_err(|e| {
                PushError::Config(format!("invalid setting push.webhook_url (LEGALCHAT_PUSH_WEBHOOK_URL, --push-webhook-url): {e}"))
            })?;
            Some(dispatcher::WebhookTarget { url: url.clone(), secret: secret.as_bytes().to_vec() })
        }
        _ => None,
    };
    if let Some(w) = &webhook {
        tracing::info!(origin = %vapid::origin(&w.url).unwrap_or_default(), "push webhook on");
    }
    if web_push.is_none() && webhook.is_none() {
        tracing::info!("no push channel configured; notifications are not sent");
        return Ok(off(store));
    }
    if push.include_text {
        tracing::warn!("push.include_text is on: message text leaves the server in notifications");
    }
    let settings = dispatcher::Settings {
        webhook,
        web_push,
        include_text: push.include_text,
        ttl_secs: push.ttl_secs,
        max_attempts: push.max_attempts,
    };
    let client = http::HttpClient::new()?;
    let (tx, rx) = mpsc::channel(QUEUE_BOUND);
    let only_web_push = settings.webhook.is_none();
    let task = tokio::spawn(dispatcher::run(settings, store.clone(), client, rx, shutdown));
    let mut handle = PushHandle::new(store.clone(), Some(tx)).with_allowed_hosts(config.push.allowed_hosts.clone());
    if only_web_push {
        let subscribers = store.push_subscribers().map_err(|e| PushError::Config(format!("reading push subscriptions: {e}")))?;
        handle = handle.only_for_subscribers(subscribers);
    }
    Ok((handle, task))
}

/// The VAPID key and subject, or `None` when Web Push is off for want of a key.
fn web_push_sender(config: &crate::config::Config) -> Result<Option<dispatcher::WebPushSender>, PushError> {
    let bad = |reason: String| PushError::Config(format!("invalid setting {VAPID_KEY_SETTING}: {reason}"));
    let text = match &config.push.vapid_private_key_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| bad(format!("reading {}: {e}", path.display())))?,
        None if config.dev => {
            let fresh = vapid::VapidKey::generate_pem().map_err(|e| bad(e.to_string()))?;
            let path = dev_key_path(config);
            // Made again when damaged (development mode): subscriptions made with the old
            // key stop receiving.
            crate::fsutil::read_or_generate(&path, || fresh, |s| vapid::VapidKey::parse(s).map(|_| ()).map_err(|e| e.to_string()), true, "")
                .map_err(|e| PushError::Config(format!("development VAPID key: {e}")))?
        }
        None => return Ok(None),
    };
    let vapid = vapid::VapidKey::parse(&text).map_err(|e| bad(e.to_string()))?;
    let subject = match (&config.push.vapid_subject, config.dev) {
        (Some(s), _) => s.clone(),
        (None, true) => DEV_VAPID_SUBJECT.to_owned(),
        (None, false) => {
            return Err(PushError::Config(
                "invalid setting push.vapid_subject (LEGALCHAT_PUSH_VAPID_SUBJECT, --push-vapid-subject): required with a VAPID key".into(),
            ));
        }
    };
    Ok(Some(dispatcher::WebPushSender { vapid, subject }))
}

/// Writes the public key for app developers (durably; it is not a secret).
fn publish(path: &Path, public_key: &str) -> Result<(), PushError> {
    crate::fsutil::write_durably(path, format!("{public_key}\n").as_bytes(), crate::fsutil::Access::Public)
        .map_err(|source| PushError::Io { what: format!("writing {}", path.display()), source })
}

/// Removes a published key that no longer applies, so nobody subscribes with it.
fn unpublish(path: &Path) -> Result<(), PushError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PushError::Io { what: format!("removing {}", path.display()), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;

    use super::*;

    #[test]
    fn endpoints_must_be_on_allowed_push_hosts() {
        let allowed: Vec<String> = crate::config::DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        assert!(check_host("https://fcm.googleapis.com/fcm/send/abc", &allowed).is_ok());
        assert!(check_host("https://web.push.apple.com/QGx", &allowed).is_ok());
        assert!(check_host("https://wns2-par02p.notify.windows.com/w/?token=1", &allowed).is_ok());
        for hostile in [
            "https://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:6379/",
            "https://fcm.googleapis.com.evil.example/x",
            "https://evilpush.apple.com.example/x",
            "https://notapple.com/x",
        ] {
            let e = check_host(hostile, &allowed).unwrap_err();
            assert_eq!(e.code, pb::ErrorCode::Forbidden, "{hostile}: {e:?}");
        }
        // Credentials in the URL are a classic way to disguise the real host.
        assert_eq!(check_host("https://fcm.googleapis.com@10.0.0.1/x", &allowed).unwrap_err().code, pb::ErrorCode::InvalidArgument);
        let loopback = vec!["127.0.0.1".to_owned()];
        assert!(check_host("http://127.0.0.1:8080/wp/bob", &loopback).is_ok());
        assert!(check_host("http://[::1]:8080/wp", &loopback).is_err());
    }
    use crate::store::RocksStore;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn browser_subscription(endpoint: &str) -> pb::WebPushSubscription {
        let key = encryption::random_secret_key();
        pb::WebPushSubscription {
            endpoint: endpoint.into(),
            p256dh: b64(key.public_key().to_encoded_point(false).as_bytes()),
            auth: b64(&rand::random::<[u8; 16]>()),
        }
    }

    #[test]
    fn subscriptions_are_parsed_as_browsers_report_them() {
        let sub = browser_subscription("https://fcm.googleapis.com/fcm/send/abc:APA91b");
        let stored = parse_subscription("bob", &sub).unwrap();
        assert_eq!((stored.user_id.as_str(), stored.endpoint.as_str()), ("bob", sub.endpoint.as_str()));
        assert_eq!((stored.p256dh.len(), stored.auth.len()), (65, 16));
        // Some browsers pad their base64url.
        let padded = pb::WebPushSubscription { auth: format!("{}==", sub.auth), ..sub.clone() };
        assert_eq!(parse_subscription("bob", &padded).unwrap().auth, stored.auth);
        assert!(parse_subscription("bob", &browser_subscription("http://127.0.0.1:8080/wp")).is_ok());

        let field = |s: &pb::WebPushSubscription| parse_subscription("bob", s).unwrap_err().message;
        for endpoint in ["", "http://push.example/x", "ftp://x", "https://push.example/a b"] {
            assert!(field(&pb::WebPushSubscription { endpoint: endpoint.into(), ..sub.clone() }).contains("endpoint"), "{endpoint:?}");
        }
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert!(field(&pb::WebPushSubscription { endpoint: long, ..sub.clone() }).contains("endpoint"));
        assert!(field(&pb::WebPushSubscription { p256dh: b64(&[4; 33]), ..sub.clone() }).contains("p256dh"));
        assert!(field(&pb::WebPushSubscription { p256dh: b64(&[2; 65]), ..sub.clone() }).contains("p256dh"));
        let mut off_curve = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&sub.p256dh).unwrap();
        off_curve[64] ^= 1;
        assert!(field(&pb::WebPushSubscription { p256dh: b64(&off_curve), ..sub.clone() }).contains("p256dh"));
        assert!(field(&pb::WebPushSubscription { p256dh: "not base64!".into(), ..sub.clone() }).contains("p256dh"));
        assert!(field(&pb::WebPushSubscription { auth: b64(&[0; 12]), ..sub.clone() }).contains("auth"));
    }

    #[test]
    fn registration_replaces_by_endpoint_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let handle = PushHandle::new(store.clone(), None).with_allowed_hosts(vec!["push.example".into()]);
        handle.register("bob", &browser_subscription("https://push.example/1")).unwrap();
        handle.register("bob", &browser_subscription("https://push.example/1")).unwrap();
        assert_eq!(store.push_subscriptions("bob").unwrap().len(), 1, "same endpoint: replaced");
        for i in 2..=MAX_SUBSCRIPTIONS_PER_USER + 3 {
            handle.register("bob", &browser_subscription(&format!("https://push.example/{i}"))).unwrap();
        }
        assert_eq!(store.push_subscriptions("bob").unwrap().len(), MAX_SUBSCRIPTIONS_PER_USER);
        handle.unregister("bob", "https://push.example/23").unwrap();
        assert_eq!(store.push_subscriptions("bob").unwrap().len(), MAX_SUBSCRIPTIONS_PER_USER - 1);
        assert!(handle.unregister("bob", "").is_err());
        // Off (no dispatcher): notify is a no-op, not a panic.
        handle.notify("bob", &notification());
    }

    fn notification() -> Arc<Notification> {
        Arc::new(Notification {
            conversation_id: "c".into(),
            conversation_type: pb::ConversationType::Group as i32,
            conversation_title: String::new(),
            case_id: String::new(),
            sender_id: "alice".into(),
            seq: 1,
            message_id: "m".into(),
            text: "t".into(),
            timestamp_ms: 0,
        })
    }

    #[test]
    fn with_web_push_only_users_without_a_subscription_cost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let bootstrap = PushHandle::new(store.clone(), None).with_allowed_hosts(vec!["push.example".into()]);
        bootstrap.register("carol", &browser_subscription("https://push.example/c")).unwrap();
        assert_eq!(store.push_subscribers().unwrap(), ["carol"], "read back from the store at start");

        let (tx, mut rx) = mpsc::channel(16);
        let handle = PushHandle::new(store.clone(), Some(tx))
            .with_allowed_hosts(vec!["push.example".into()])
            .only_for_subscribers(store.push_subscribers().unwrap());
        let n = notification();
        let queued = |rx: &mut mpsc::Receiver<Job>| std::iter::from_fn(|| rx.try_recv().ok()).map(|j| j.user_id).collect::<Vec<_>>();
        handle.notify("bob", &n);
        handle.notify("carol", &n);
        assert_eq!(queued(&mut rx), ["carol"], "bob has no subscription: nothing queued");

        handle.register("bob", &browser_subscription("https://push.example/b")).unwrap();
        handle.notify("bob", &n);
        assert_eq!(queued(&mut rx), ["bob"], "registering makes bob a subscriber at once");

        handle.unregister("bob", "https://push.example/b").unwrap();
        handle.notify("bob", &n);
        assert!(queued(&mut rx).is_empty(), "his last subscription is gone");
    }

    #[tokio::test]
    async fn start_in_dev_mode_generates_and_publishes_the_vapid_key() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::ConfigArgs { dev: true, data_dir: Some(dir.path().to_owned()), ..Default::default() };
        let config = crate::config::Config::load(&args).unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("db")).unwrap());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (_handle, task) = start(&config, store.clone(), stop.clone()).unwrap();
        let published = std::fs::read_to_string(public_key_path(&config)).unwrap();
        let pem = std::fs::read_to_string(dev_key_path(&config)).unwrap();
        assert_eq!(published.trim(), vapid::VapidKey::parse(&pem).unwrap().public_key_b64());
        // The same key on the next start.
        let (_again, task2) = start(&config, store.clone(), stop.clone()).unwrap();
        assert_eq!(std::fs::read_to_string(public_key_path(&config)).unwrap(), published);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        task2.await.unwrap();

        // Off: the stale public key is withdrawn.
        let off = crate::config::Config::load(&crate::config::ConfigArgs { push_enabled: Some(false), ..args.clone() }).unwrap();
        let (_h, t) = start(&off, store.clone(), stop.clone()).unwrap();
        t.await.unwrap();
        assert!(!public_key_path(&config).exists());

        // A key file that is not a key names the setting.
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "hello").unwrap();
        let cfg = crate::config::Config::load(&crate::config::ConfigArgs { push_vapid_private_key: Some(bad), ..args }).unwrap();
        let e = start(&cfg, store, stop).unwrap_err().to_string();
        assert!(e.contains("push.vapid_private_key_file"), "{e}");
    }
}
