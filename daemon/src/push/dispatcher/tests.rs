//! The dispatcher against a loopback HTTP server and a real store: retries, removal on 410,
//! headers per channel, and a clean stop. Waits are for requests to arrive, never sleeps.

use std::collections::HashMap;
use std::net::SocketAddr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::time::timeout;

use super::*;
use crate::push::{Notification, PushHandle};
use crate::store::RocksStore;

const WAIT: Duration = Duration::from_secs(20);

/// One request the server saw.
#[derive(Debug)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A loopback HTTP/1.1 server (keep-alive, Content-Length bodies) that answers each path
/// with the statuses listed for it, in order (the last one repeats), and reports every
/// request on a channel. Every answer says `Retry-After: 0`, so retries are immediate.
async fn server(answers: HashMap<&'static str, Vec<u16>>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    server_with_retry_after(answers, 0).await
}

/// [`server`], answering with `Retry-After: retry_after_secs`.
async fn server_with_retry_after(
    answers: HashMap<&'static str, Vec<u16>>,
    retry_after_secs: u64,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let answers = Arc::new(std::sync::Mutex::new(answers));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, answers) = (tx.clone(), answers.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        stream.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                    let len: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
                    let mut body = vec![0; len];
                    stream.read_exact(&mut body).await.unwrap();
                    let status = {
                        let mut answers = answers.lock().unwrap();
                        let list = answers.get_mut(path.as_str()).unwrap();
                        if list.len() > 1 { list.remove(0) } else { list[0] }
                    };
                    let _ = tx.send(Seen { path, headers, body });
                    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nretry-after: {retry_after_secs}\r\n\r\n");
                    stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

fn subscription(user: &str, endpoint: String) -> (StoredPushSubscription, p256::SecretKey) {
    let key = encryption::random_secret_key();
    let sub = StoredPushSubscription {
        user_id: user.into(),
        endpoint,
        p256dh: key.public_key().to_encoded_point(false).as_bytes().to_vec(),
        auth: rand::random::<[u8; 16]>().to_vec(),
        created_at_ms: 1,
    };
    (sub, key)
}

fn notification() -> Arc<Notification> {
    Arc::new(Notification {
        conversation_id: "conv-1".into(),
        conversation_type: legalchat_protocol::pb::ConversationType::Private as i32,
        conversation_title: String::new(),
        case_id: String::new(),
        sender_id: "alice".into(),
        seq: 3,
        message_id: "m-3".into(),
        text: "privileged".into(),
        timestamp_ms: 5,
    })
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    timeout(WAIT, rx.recv()).await.expect("a request in time").expect("server running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_web_push_with_retry_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let (addr, mut seen) = server(HashMap::from([("/hook", vec![503, 200]), ("/wp/ok", vec![201]), ("/wp/gone", vec![410])])).await;
    let (ok_sub, _) = subscription("bob", format!("http://{addr}/wp/ok"));
    let (gone_sub, _) = subscription("bob", format!("http://{addr}/wp/gone"));
    store.commit(vec![Write::PushSubscription(ok_sub.clone()), Write::PushSubscription(gone_sub.clone())], true).unwrap();

    let vapid = VapidKey::parse(&VapidKey::generate_pem().unwrap()).unwrap();
    let settings = Settings {
        webhook: Some(WebhookTarget { url: format!("http://{addr}/hook"), secret: b"s".repeat(32) }),
        web_push: Some(WebPushSender { vapid, subject: "mailto:it@firm.example".into() }),
        include_text: false,
        ttl_secs: 60,
        max_attempts: 3,
    };
    let (tx, rx) = mpsc::channel(8);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(settings, store.clone(), HttpClient::new().unwrap(), rx, stop_rx));
    // Held to the end, so that it is the shutdown signal that stops the dispatcher.
    let handle = PushHandle::new(store.clone(), Some(tx));
    handle.notify("bob", &notification());

    // Four requests: the webhook twice (503, then 200), each subscription once.
    let mut by_path: HashMap<String, Vec<Seen>> = HashMap::new();
    for _ in 0..4 {
        let s = next(&mut seen).await;
        by_path.entry(s.path.clone()).or_default().push(s);
    }
    let hooks = &by_path["/hook"];
    assert_eq!(hooks.len(), 2, "retried after 503");
    for h in hooks {
        let ts: u64 = h.headers["x-legalchat-timestamp"].parse().unwrap();
        assert_eq!(h.headers["x-legalchat-signature"], webhook::signature(&b"s".repeat(32), ts, &h.body));
        assert_eq!(h.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!((body["user_id"].as_str(), body["sender_id"].as_str()), (Some("bob"), Some("alice")));
        assert!(body.get("text").is_none());
    }
    for path in ["/wp/ok", "/wp/gone"] {
        let [w] = by_path[path].as_slice() else { panic!("{path}: {:?}", by_path[path]) };
        assert_eq!(w.headers["content-encoding"], "aes128gcm");
        assert_eq!(w.headers["ttl"], "60");
        assert_eq!(w.headers["urgency"], "high");
        assert!(w.headers["authorization"].starts_with("vapid t="));
        assert!(w.body.len() > encryption::HEADER_LEN);
    }

    // Stop: the dispatcher lets the removal finish, then ends.
    stop_tx.send(true).unwrap();
    timeout(WAIT, task).await.expect("dispatcher stops").unwrap();
    drop(handle);
    let left = store.push_subscriptions("bob").unwrap();
    assert_eq!(left.iter().map(|s| s.endpoint.as_str()).collect::<Vec<_>>(), [ok_sub.endpoint.as_str()], "410 removed only that one");
    assert!(seen.try_recv().is_err(), "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_gives_up_at_once_and_retries_stop_at_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let (addr, mut seen) = server(HashMap::from([("/wp/forbidden", vec![403]), ("/wp/down", vec![500])])).await;
    let (forbidden, _) = subscription("carol", format!("http://{addr}/wp/forbidden"));
    let (down, _) = subscription("carol", format!("http://{addr}/wp/down"));
    store.commit(vec![Write::PushSubscription(forbidden), Write::PushSubscription(down)], true).unwrap();
    let vapid = VapidKey::parse(&VapidKey::generate_pem().unwrap()).unwrap();
    let settings = Settings {
        webhook: None,
        web_push: Some(WebPushSender { vapid, subject: "mailto:it@firm.example".into() }),
        include_text: true,
        ttl_secs: 0,
        max_attempts: 2,
    };
    let (tx, rx) = mpsc::channel(8);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(settings, store.clone(), HttpClient::new().unwrap(), rx, stop_rx));
    PushHandle::new(store.clone(), Some(tx)).notify("carol", &notification());
    // The last handle is gone: the dispatcher finishes what it has (Retry-After: 0 makes
    // every retry immediate) and ends, so every request made is on the channel by then.
    timeout(WAIT, task).await.expect("dispatcher ends").unwrap();
    let mut paths = Vec::new();
    while let Ok(s) = seen.try_recv() {
        paths.push(s.path);
    }
    paths.sort();
    assert_eq!(paths, ["/wp/down", "/wp/down", "/wp/forbidden"], "403 once; 500 max_attempts = 2 times");
    assert_eq!(store.push_subscriptions("carol").unwrap().len(), 2, "403 and 500 remove nothing");
}

/// The value of counter `name` whose labels include `label` (e.g. `reason="shutdown"`), 0
/// when it was never incremented.
fn counter(metrics: &PrometheusHandle, name: &str, label: &str) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

// One thread runs the test and every task it spawns, so that the thread-local metrics
// recorder sees the dispatcher's counters.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_ends_a_delivery_waiting_to_retry() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    // The firm's service is down and asks for a retry in five minutes.
    let (addr, mut seen) = server_with_retry_after(HashMap::from([("/hook", vec![503])]), 300).await;
    let settings = Settings {
        webhook: Some(WebhookTarget { url: format!("http://{addr}/hook"), secret: vec![1; 32] }),
        web_push: None,
        include_text: false,
        ttl_secs: 60,
        max_attempts: 20,
    };
    let (tx, rx) = mpsc::channel(8);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(settings, store.clone(), HttpClient::new().unwrap(), rx, stop_rx));
    let handle = PushHandle::new(store, Some(tx));
    handle.notify("dan", &notification());

    // The first attempt is made and answered 503...
    assert_eq!(next(&mut seen).await.path, "/hook");
    // ...and the delivery counts the retry, then waits for it with no await in between:
    // once the count shows (this thread runs every task), the delivery is asleep.
    let waiting = async {
        while counter(&metrics, "legalchat_push_retries_total", "kind=\"webhook\"") == 0 {
            tokio::task::yield_now().await;
        }
    };
    timeout(WAIT, waiting).await.expect("the delivery waits to retry");
    assert_eq!(counter(&metrics, "legalchat_push_failed_total", "reason=\"shutdown\""), 0);

    stop_tx.send(true).unwrap();
    timeout(SHUTDOWN_GRACE + WAIT, task).await.expect("dispatcher stops").unwrap();
    // The delivery ended on the signal itself; had it slept on, the dispatcher would have
    // aborted it after SHUTDOWN_GRACE and nothing would say "shutdown".
    assert_eq!(counter(&metrics, "legalchat_push_failed_total", "reason=\"shutdown\""), 1, "{}", metrics.render());
    assert!(seen.try_recv().is_err(), "no second attempt was made");
    drop(handle);
}
