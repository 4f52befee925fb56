//! Push notifications reach a participant with no connected device: a signed webhook to the
//! firm's service and Web Push to each registered subscription, read here the way a
//! browser and the firm's service would — the payload decrypted with the subscription's
//! keys (RFC 8291, written below from the RFC's steps), the VAPID token checked with the
//! published key (RFC 8292), the webhook's HMAC checked with the shared secret.
//!
//! ```text
//!  alice (SDK) ──send──► legalchatd ──POST /hook──────► Receiver (loopback HTTP/1.1)
//!  bob (raw session:            └──POST /wp/<device>──►   records every request
//!   RegisterPush, then gone)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::Mac as _;
use legalchat_protocol::pb;
use legalchat_sdk::{Client, Event};
use legalchat_tests::{EVENT_TIMEOUT, RawEvent, RawSession, TestDaemon, bounded, random_hex};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::daemon_with;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

// ───────────────────────────── the receiving side ─────────────────────────────

/// One request the receiver saw.
#[derive(Debug)]
struct Request {
    path: String,
    /// Lowercase names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A loopback HTTP/1.1 server standing in for the push service and the firm's notification
/// service. It answers each path with a fixed status (200 unless told otherwise), keeps
/// connections alive (the daemon pools them), and sends every request to a channel.
struct Receiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Request>,
}

impl Receiver {
    async fn start(statuses: &[(&str, u16)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let statuses: Arc<HashMap<String, u16>> = Arc::new(statuses.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect());
        let (tx, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, statuses) = (tx.clone(), statuses.clone());
                tokio::spawn(async move {
                    // A malformed request ends the connection; the test then misses a request
                    // and fails on its deadline, naming what it waited for.
                    let _ = serve(stream, tx, statuses).await;
                });
            }
        });
        Self { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, within [`EVENT_TIMEOUT`].
    async fn next(&mut self, what: &str) -> Request {
        match tokio::time::timeout(EVENT_TIMEOUT, self.requests.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("receiver stopped while waiting for {what}"),
            Err(_) => panic!("no request within {EVENT_TIMEOUT:?} while waiting for {what}"),
        }
    }

    /// Requests already received, without waiting.
    fn received_so_far(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            out.push(r);
        }
        out
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Request>,
    statuses: Arc<HashMap<String, u16>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        // Push messages are at most 4 KiB; anything near this bound is a bug.
        if len > 1 << 20 {
            return Ok(());
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await?;
        let status = statuses.get(&path).copied().unwrap_or(200);
        // Recorded before answering: once the daemon has the answer, the test has the request.
        let _ = tx.send(Request { path, headers, body });
        stream.get_mut().write_all(format!("HTTP/1.1 {status} Status\r\ncontent-length: 0\r\n\r\n").as_bytes()).await?;
    }
}

// ───────────────────────────── a browser's side of Web Push ─────────────────────────────

/// A browser's push subscription: its P-256 key pair and auth secret.
struct Device {
    private: p256::SecretKey,
    auth: [u8; 16],
}

impl Device {
    fn new() -> Self {
        let private = loop {
            if let Ok(k) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break k;
            }
        };
        Self { private, auth: rand::random() }
    }

    fn public(&self) -> Vec<u8> {
        self.private.public_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// What `PushSubscription.toJSON()` gives a web app, as the protocol carries it.
    fn subscription(&self, endpoint: String) -> pb::WebPushSubscription {
        pb::WebPushSubscription { endpoint, p256dh: B64.encode(self.public()), auth: B64.encode(self.auth) }
    }

    /// Decrypts an `aes128gcm` push message (RFC 8291 §3.4, RFC 8188 §2), as the browser
    /// does before handing the payload to the service worker.
    fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        type HmacSha256 = hmac::Hmac<sha2::Sha256>;
        fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(key).expect("HMAC takes any key");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        assert!(body.len() > 21, "push body of {} bytes has no header", body.len());
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes"));
        let idlen = usize::from(body[20]);
        assert_eq!(idlen, 65, "keyid is the server's uncompressed P-256 key");
        let as_public = &body[21..21 + idlen];
        let record = &body[21 + idlen..];
        assert!(record.len() <= rs as usize, "one record of at most rs = {rs} bytes, got {}", record.len());

        let server_key = p256::PublicKey::from_sec1_bytes(as_public).expect("keyid is a P-256 point");
        let ecdh = p256::ecdh::diffie_hellman(self.private.to_nonzero_scalar(), server_key.as_affine());
        // HKDF-SHA256 spelled out: Extract is HMAC(salt, ikm); a one-block Expand is
        // HMAC(prk, info ‖ 0x01), truncated.
        let prk_key = hmac(&self.auth, &[&ecdh.raw_secret_bytes()[..]]);
        let ikm = hmac(&prk_key, &[b"WebPush: info\0", &self.public(), as_public, &[1]]);
        let prk = hmac(salt, &[&ikm]);
        let cek = hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
        let nonce: [u8; 12] = hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]])[..12].try_into().expect("12 bytes");
        use aes_gcm::aead::{Aead as _, KeyInit as _};
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek[..16]).expect("16-byte key");
        let mut plain = cipher.decrypt(&nonce.into(), record).expect("the push message decrypts with the subscription's keys");
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "the single record ends with the last-record delimiter");
        plain
    }

    /// The decrypted payload as JSON, without the header checks.
    fn decrypt_json(&self, r: &Request) -> serde_json::Value {
        serde_json::from_slice(&self.decrypt(&r.body)).expect("payload is JSON")
    }
}

// ───────────────────────────── checks ─────────────────────────────

/// Checks the webhook's signature and freshness as the firm's service should
/// (`docs/push.md`), and returns its JSON.
fn verified_webhook(r: &Request, secret: &str) -> serde_json::Value {
    assert_eq!(r.header("content-type"), "application/json");
    let ts = r.header("x-legalchat-timestamp");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&r.body);
    let signature = r.header("x-legalchat-signature");
    let hex_part = signature.strip_prefix("sha256=").unwrap_or_else(|| panic!("signature {signature:?} lacks sha256="));
    let given = hex::decode(hex_part).expect("hex signature");
    mac.verify_slice(&given).expect("the webhook signature verifies with the shared secret");
    let ts: u64 = ts.parse().expect("unix seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(ts.abs_diff(now) < 300, "timestamp {ts} is not within 5 minutes of {now}");
    serde_json::from_slice(&r.body).expect("webhook body is JSON")
}

/// Checks a Web Push request's headers and VAPID token against the published key, and
/// returns the decrypted payload.
fn verified_web_push(r: &Request, device: &Device, vapid_public: &str, origin: &str) -> serde_json::Value {
    assert_eq!(r.header("content-encoding"), "aes128gcm");
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("ttl"), "86400");
    assert_eq!(r.header("urgency"), "high");
    let authorization = r.header("authorization");
    let rest = authorization.strip_prefix("vapid t=").unwrap_or_else(|| panic!("Authorization {authorization:?}"));
    let (token, k) = rest.split_once(", k=").unwrap_or_else(|| panic!("Authorization {authorization:?}"));
    assert_eq!(k, vapid_public, "k= is the published VAPID public key");
    let point = B64.decode(k).expect("k is base64url");
    assert_eq!((point.len(), point.first()), (65, Some(&4)));
    let key = jsonwebtoken::DecodingKey::from_ec_components(&B64.encode(&point[1..33]), &B64.encode(&point[33..])).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["aud", "exp", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).expect("the VAPID token verifies").claims;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp} is not within 24 h of {now} (RFC 8292)");
    assert_eq!(claims["sub"], "mailto:admin@localhost", "development default subject");
    serde_json::from_slice(&device.decrypt(&r.body)).expect("payload is JSON")
}

// ───────────────────────────── helpers ─────────────────────────────

async fn register(raw: &mut RawSession, request_id: u64, sub: pb::WebPushSubscription) {
    let request = pb::client_frame::Request::RegisterPush(pb::RegisterPush { target: Some(pb::register_push::Target::WebPush(sub)) });
    match raw.request(request_id, request).await.expect("RegisterPush answered") {
        pb::server_frame::Event::Ack(_) => {}
        other => panic!("RegisterPush refused: {other:?}"),
    }
}

/// Waits until `client` hears that `user` went offline: from then on the server has no
/// session of theirs, so a message to them is a notification.
async fn wait_offline(client: &Client, user: &str) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match legalchat_tests::next_event(client, deadline, &format!("{user} going offline")).await {
            Event::Presence(p) if p.user_id == user && !p.online => return,
            Event::Goodbye { reason, .. } | Event::Closed { reason } => panic!("{}: session ended: {reason}", client.user_id()),
            _ => {}
        }
    }
}

/// Waits until `raw` receives message `seq` of `conversation`.
async fn wait_message(raw: &mut RawSession, conversation: &str, seq: u64) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.next(left).await.unwrap_or_else(|e| panic!("waiting for message {seq}: {e:#}")) {
            RawEvent::Frame(f) => {
                if let Some(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage { message: Some(m) })) = f.event
                    && m.conversation_id == conversation
                    && m.seq == seq
                {
                    return;
                }
            }
            RawEvent::Closed(how) => panic!("session ended while waiting for message {seq}: {how}"),
        }
    }
}

/// The sum of a metric's samples whose line starts with `series` (a name, or a name with
/// its labels), 0 when absent.
async fn metric(d: &TestDaemon, series: &str) -> f64 {
    let body = d.http_get("/metrics").await.body;
    body.lines()
        .filter(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// Waits (bounded) until `series` reaches `value`: the daemon's own account of work done
/// after an answer the test cannot otherwise observe.
async fn wait_metric(d: &TestDaemon, series: &str, value: f64) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let now = metric(d, series).await;
        if now >= value {
            assert_eq!(now, value, "{series} overshot");
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {now}, not {value}, after {EVENT_TIMEOUT:?}");
        // Polling the ops endpoint; the condition, not the pause, is what is waited for.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn vapid_public_key(d: &TestDaemon) -> String {
    let path = d.data_dir().join("vapid-public-key.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())).trim().to_owned()
}

// ───────────────────────────── tests ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_participant_gets_a_signed_webhook_and_an_encrypted_web_push() {
    bounded("push_offline", async {
        let mut receiver = Receiver::start(&[("/hook", 200), ("/wp/bob", 201), ("/wp/gone", 410)]).await;
        let secret = random_hex(32);
        let hook = receiver.url("/hook");
        let mut d =
            daemon_with(&["--push-webhook-url", &hook, "--push-webhook-secret", &secret, "--push-allowed-hosts", "127.0.0.1"]).await;
        let vapid_public = vapid_public_key(&d);
        let origin = format!("http://{}", receiver.addr);

        let alice = d.client("alice", "advocate").await;
        let mut bob = d.raw_session_as("bob", "client").await;
        let conv = alice.private_chat("bob").await.expect("alice opens a private chat with bob");
        let (phone, old_laptop) = (Device::new(), Device::new());
        register(&mut bob, 2, phone.subscription(receiver.url("/wp/bob"))).await;
        register(&mut bob, 3, old_laptop.subscription(receiver.url("/wp/gone"))).await;

        // Bob is connected: the message reaches his session and no notification is made.
        alice.send_text(&conv.id, "While you are here: the hearing is at 10").await.expect("send 1");
        wait_message(&mut bob, &conv.id, 1).await;

        // Bob leaves; alice's presence event says the server has let him go.
        bob.connection.close(0u32.into(), b"bye");
        wait_offline(&alice, "bob").await;
        const SECRET_TEXT: &str = "Privileged: settlement authority is 2.5M";
        let sent = alice.send_text(&conv.id, SECRET_TEXT).await.expect("send 2");
        assert_eq!(sent.seq, 2);

        // Exactly three requests for message 2: the webhook and one per subscription.
        let mut by_path: HashMap<String, Request> = HashMap::new();
        for _ in 0..3 {
            let r = receiver.next("the notifications of message 2").await;
            assert!(by_path.insert(r.path.clone(), r).is_none(), "two requests to one path for one message");
        }

        let w = verified_webhook(&by_path["/hook"], &secret);
        assert_eq!(w["type"], "message");
        assert_eq!(w["user_id"], "bob");
        assert_eq!(w["sender_id"], "alice");
        assert_eq!(w["conversation_id"], conv.id.as_str());
        assert_eq!(w["conversation_type"], "private");
        assert_eq!(w["seq"], 2, "the first notification is for the message sent while bob was away");
        assert_eq!(w["message_id"], sent.message_id.as_str());
        assert!(w.get("text").is_none(), "no message text by default: {w}");
        assert!(!String::from_utf8_lossy(&by_path["/hook"].body).contains("settlement"));

        let p = verified_web_push(&by_path["/wp/bob"], &phone, &vapid_public, &origin);
        assert_eq!(p["type"], "message");
        assert_eq!(p["sender_id"], "alice");
        assert_eq!(p["conversation_id"], conv.id.as_str());
        assert_eq!(p["seq"], 2);
        assert!(p.get("text").is_none(), "no message text by default: {p}");
        // The old laptop's push service answered 410 Gone (its message was well-formed too).
        let gone = verified_web_push(&by_path["/wp/gone"], &old_laptop, &vapid_public, &origin);
        assert_eq!(gone["seq"], 2);

        // The 410 removes that subscription; the next message goes to the phone only.
        wait_metric(&d, "legalchat_push_subscriptions_removed_total", 1.0).await;
        alice.send_text(&conv.id, "Call me").await.expect("send 3");
        let mut paths = Vec::new();
        for _ in 0..2 {
            let r = receiver.next("the notifications of message 3").await;
            let seq = if r.path == "/hook" { verified_webhook(&r, &secret)["seq"].clone() } else { phone.decrypt_json(&r)["seq"].clone() };
            assert_eq!(seq, 3, "{}", r.path);
            paths.push(r.path);
        }
        paths.sort();
        assert_eq!(paths, ["/hook", "/wp/bob"]);

        // Only the two messages sent while bob was away were queued for him (and none for
        // alice, the sender): the first message made no notification at all.
        assert_eq!(metric(&d, "legalchat_push_queued_total").await, 2.0);
        // A graceful stop lets deliveries in flight finish: nothing more reached the receiver.
        d.restart().await;
        let late: Vec<String> = receiver.received_so_far().into_iter().map(|r| r.path).collect();
        assert!(late.is_empty(), "unexpected requests: {late:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_text_puts_the_message_in_the_notification() {
    bounded("push_include_text", async {
        let mut receiver = Receiver::start(&[]).await;
        let secret = random_hex(32);
        let hook = receiver.url("/hook");
        let d = daemon_with(&[
            "--push-webhook-url",
            &hook,
            "--push-webhook-secret",
            &secret,
            "--push-include-text",
            "true",
            "--push-allowed-hosts",
            "127.0.0.1",
        ])
        .await;
        let vapid_public = vapid_public_key(&d);

        let mut bob = d.raw_session_as("bob", "client").await;
        let phone = Device::new();
        register(&mut bob, 2, phone.subscription(receiver.url("/wp/phone"))).await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");
        bob.connection.close(0u32.into(), b"bye");
        wait_offline(&alice, "bob").await;

        let text = "Hearing moved to 10:00 — bring the exhibits ✓";
        alice.send_text(&conv.id, text).await.expect("send");
        let mut by_path: HashMap<String, Request> = HashMap::new();
        for _ in 0..2 {
            let r = receiver.next("the notifications").await;
            by_path.insert(r.path.clone(), r);
        }
        let p = verified_web_push(&by_path["/wp/phone"], &phone, &vapid_public, &format!("http://{}", receiver.addr));
        assert_eq!(p["text"], text);
        assert_eq!(p["sender_id"], "alice");
        assert_eq!(verified_webhook(&by_path["/hook"], &secret)["text"], text);
    })
    .await;
}
