//! Starting and stopping: bad configuration fails at start naming the setting, and a
//! graceful shutdown tells connected clients goodbye without losing what was acknowledged.

use std::path::Path;
use std::process::Command;

use legalchat_sdk::Event;
use legalchat_sdk::pb::{self, ErrorCode};
use legalchat_tests::{EVENT_TIMEOUT, bounded, full_history, next_event};
use tokio::time::Instant;

use crate::{DAEMON_BIN, daemon};

/// Runs the daemon with `args` (it must fail at start) and returns its stderr.
fn start_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let out = Command::new(DAEMON_BIN)
        .args(["--dev", "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run the daemon");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "the daemon should refuse {args:?}; stderr: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "it must not report ready");
    stderr
}

#[test]
fn bad_configuration_fails_at_start_naming_the_setting() {
    let e = start_fails(&["--jwt-secret", "too-short"]);
    assert!(e.contains("jwt.secret") && e.contains("at least 32"), "{e}");
    let e = start_fails(&["--jwt-algorithm", "RS256"]);
    assert!(e.contains("LEGALCHAT_JWT_PUBLIC_KEY"), "{e}");
    let e = start_fails(&["--max-message-size", "0"]);
    assert!(e.contains("MAX_MESSAGE_SIZE"), "{e}");

    let dir = tempfile::tempdir().expect("temporary directory");
    let toml = dir.path().join("legalchatd.toml");
    std::fs::write(&toml, "dev = true\nmax_batchh = 10\n").expect("write config");
    let e = start_fails(&["--config", toml.to_str().expect("utf-8 path")]);
    assert!(e.contains("max_batchh") && e.contains("legalchatd.toml"), "{e}");

    // A master key that is not 32 bytes is refused rather than silently replaced.
    let key = dir.path().join("master.key");
    std::fs::write(&key, "abcd").expect("write key");
    let e = start_fails(&["--master-key-file", key.to_str().expect("utf-8 path")]);
    assert!(e.contains("master key"), "{e}");
}

/// Runs `legalchatd token ARGS` in `cwd` with no settings from the environment.
fn token_command(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(DAEMON_BIN)
        .arg("token")
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("NO_COLOR", "1")
        .output()
        .expect("run legalchatd token");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Whether `token` is an HS256 JWT for `user` signed with exactly these key bytes.
fn signed_with(token: &str, key: &[u8], user: &str) -> bool {
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::decode::<serde_json::Value>(token, &jsonwebtoken::DecodingKey::from_secret(key), &validation)
        .is_ok_and(|t| t.claims["sub"] == user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_needs_only_the_jwt_secret() {
    bounded("token", async {
        let d = daemon().await;
        let cwd = tempfile::tempdir().expect("temporary directory");

        // As the README writes it, with a secret: no certificate, no master key, no --dev.
        let (code, stdout, stderr) = token_command(cwd.path(), &["--user", "erin", "--role", "client", "--jwt-secret", d.jwt_secret()]);
        assert_eq!(code, Some(0), "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        let [token] = lines.as_slice() else { panic!("one line, the token, on stdout: {stdout:?}") };
        assert_eq!(std::fs::read_dir(cwd.path()).expect("read the directory").count(), 0, "it creates nothing");
        // A daemon with that secret accepts it.
        let erin = d.connect_with_token((*token).to_owned()).await.expect("the daemon accepts the token");
        assert_eq!((erin.user_id(), erin.role()), ("erin", pb::UserRole::Client));

        // Without a secret, the error names the setting that is missing, and only that.
        let (code, stdout, stderr) = token_command(cwd.path(), &["--user", "erin", "--role", "client"]);
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stderr.contains("jwt.secret") && stderr.contains("LEGALCHAT_JWT_SECRET"), "{stderr}");
        assert!(!stderr.contains("certificate") && !stderr.contains("master key"), "{stderr}");

        // Development mode signs with DATA_DIR/dev/jwt-secret, used as it is written (64 hex
        // characters as the key's bytes, not decoded), and makes no master key for it.
        let data = cwd.path().join("data");
        let data_arg = data.to_str().expect("utf-8 path");
        let (code, stdout, stderr) = token_command(cwd.path(), &["--dev", "--data-dir", data_arg, "--user", "erin", "--role", "client"]);
        assert_eq!(code, Some(0), "{stderr}");
        let secret = std::fs::read_to_string(data.join("dev").join("jwt-secret")).expect("the development secret");
        let secret = secret.trim();
        assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret:?}");
        assert!(signed_with(stdout.trim(), secret.as_bytes(), "erin"), "signed with the file's text");
        assert!(!signed_with(stdout.trim(), &hex::decode(secret).expect("hex"), "erin"), "not with its hex-decoded bytes");
        assert!(!data.join("dev").join("master.key").exists(), "`token` has no use for a master key");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_says_goodbye_and_keeps_every_ack() {
    bounded("shutdown", async {
        let mut d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        // A session that never reconnects by itself, to see exactly how the old one ends.
        let mut carol = d.raw_session_as("carol", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");
        let mut acked = Vec::new();
        for n in 0..20 {
            acked.push(alice.send_text(&conv.id, &format!("before shutdown {n}")).await.expect("send").message_id);
        }
        let data_dir = d.data_dir().to_owned();
        let old_pid = d.process().pid();

        d.restart().await;

        // Bob was told why the session ended, in band, before the connection closed.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let (code, reason) = loop {
            match next_event(&bob, deadline, "the goodbye").await {
                Event::Goodbye { code, reason } => break (code, reason),
                Event::Closed { reason } => panic!("closed without a goodbye: {reason}"),
                _ => {}
            }
        };
        assert_eq!(code, ErrorCode::Unavailable);
        assert!(reason.contains("shutting down"), "{reason}");

        // The old daemon ended the old session itself: a Goodbye as the last frame, the
        // stream finished, and the connection closed by the server with the shutdown code
        // (not timed out, not reset by a vanished peer).
        let (how, frames) = carol.until_closed(EVENT_TIMEOUT).await.expect("the old session ends");
        let last = frames.last().and_then(|f| f.event.clone());
        match last {
            Some(pb::server_frame::Event::Goodbye(g)) => assert_eq!(g.code(), ErrorCode::Unavailable, "{g:?}"),
            other => panic!("the last frame of the old session should be a Goodbye, was {other:?} ({how})"),
        }
        match carol.connection_closed(EVENT_TIMEOUT).await.expect("the old connection closes") {
            quinn::ConnectionError::ApplicationClosed(close) => {
                // 4: the daemon's close code for a shutdown (`session::close_code::SHUTDOWN`).
                assert_eq!(close.error_code.into_inner(), 4, "the shutdown close code: {close:?}");
            }
            other => panic!("the server should have closed the old connection, got {other}"),
        }

        // A new process on the same data directory serves what the old one acknowledged,
        // and carries on numbering where it left off.
        assert_eq!(d.data_dir(), data_dir);
        assert_ne!(d.process().pid(), old_pid, "a new process");
        let alice = d.client("alice", "advocate").await;
        let stored: Vec<String> = full_history(&alice, &conv.id).await.into_iter().map(|m| m.message_id).collect();
        assert_eq!(stored, acked);
        let next = alice.send_text(&conv.id, "after the restart").await.expect("send after the restart");
        assert_eq!(next.seq, 21, "the next seq after 20 acknowledged messages");
        let ready = d.http_get("/readyz").await;
        assert_eq!(ready.status, 200);
    })
    .await;
}

/// The protocol promises one answer per request: a shutdown answers every request the
/// server has read before it says goodbye, and stores nothing it did not acknowledge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_every_request_it_read_before_the_goodbye() {
    use pb::client_frame::Request;
    use pb::server_frame::Event as Ev;
    bounded("answers_before_goodbye", async {
        let mut d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice.create_conversation(legalchat_sdk::NewConversation::group("Shutdown", vec!["bob".into()])).await.expect("create");
        alice.close().await;
        let mut raw = d.raw_session_as("alice", "advocate").await;
        const SENDS: u64 = 300;
        for i in 1..=SENDS {
            let send = Request::SendMessage(pb::SendMessage {
                conversation_id: conv.id.clone(),
                client_message_id: format!("m{i}"),
                content: Some(pb::MessageContent { text: format!("message {i}"), ..Default::default() }),
                reply_to_seq: 0,
            });
            raw.send_frame(&pb::ClientFrame { request_id: i, request: Some(send) }).await.expect("pipelined send");
        }
        // SIGTERM while those are in flight; the session is read to its end meanwhile.
        let (restarted, ended) = tokio::join!(d.restart(), raw.until_closed(EVENT_TIMEOUT));
        let ((), (_, frames)) = (restarted, ended.expect("the session ends"));

        let mut acked = std::collections::BTreeSet::new();
        let mut refused = 0;
        let mut goodbye = false;
        for f in &frames {
            match &f.event {
                Some(Ev::Ack(a)) => {
                    assert!(!goodbye, "an answer after the goodbye");
                    acked.insert(format!("m{}", a.request_id));
                }
                Some(Ev::Error(e)) if e.request_id != 0 => {
                    assert!(!goodbye, "an answer after the goodbye");
                    assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
                    refused += 1;
                }
                Some(Ev::Goodbye(g)) => {
                    assert_eq!(g.code(), ErrorCode::Unavailable);
                    goodbye = true;
                }
                _ => {}
            }
        }
        assert!(goodbye, "the session ends with a goodbye");
        eprintln!("shutdown: {} of {SENDS} sends acknowledged, {refused} refused before the goodbye", acked.len());

        // What was acknowledged is stored; what was not acknowledged is not.
        let bob = d.client("bob", "advocate").await;
        let stored: std::collections::BTreeSet<String> =
            full_history(&bob, &conv.id).await.into_iter().filter(|m| m.event.is_none()).map(|m| m.client_message_id).collect();
        assert_eq!(stored, acked, "exactly the acknowledged sends are stored");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_generated_files_are_made_again_or_named_with_what_to_do() {
    bounded("damaged_generated_files", async {
        let mut d = daemon().await;
        let first_cert = d.ca_pem();
        let alice = d.client("alice", "advocate").await;
        let conv = alice.private_chat("bob").await.unwrap().id;
        alice.send_text(&conv, "before the cut").await.unwrap();
        drop(alice);
        d.kill9().await;

        // Emptied, as a power cut leaves files that were never synced: the development
        // certificate and VAPID key are made again, with a warning, and the data is intact.
        let data = d.data_dir().to_owned();
        std::fs::write(data.join("tls/cert.pem"), "").unwrap();
        std::fs::write(data.join("dev/vapid.pem"), "").unwrap();
        d.start_again().await.unwrap_or_else(|e| panic!("the daemon does not start after a damaged certificate: {e:#}"));
        let log = d.process().stderr_log();
        assert!(log.contains("the development certificate is damaged; generating a new one"), "{log}");
        assert!(log.contains("a generated file is damaged; generating it again") && log.contains("vapid.pem"), "{log}");
        assert_ne!(d.ca_pem(), first_cert, "a new certificate");
        let alice = d.client("alice", "advocate").await;
        let history = alice.history(&conv, legalchat_sdk::HistoryCursor::Latest, 10).await.unwrap();
        assert_eq!(history.messages.len(), 1, "the conversation is intact");
        drop(alice);
        d.kill9().await;

        // The master key is never made again (it wraps every data key): the start fails,
        // naming the file and what to do.
        std::fs::write(data.join("dev/master.key"), "").unwrap();
        assert!(d.start_again().await.is_err(), "the daemon started without its master key");
        let log = d.process().stderr_log();
        assert!(log.contains("master.key is damaged") && log.contains("start over with an empty data directory"), "{log}");
    })
    .await;
}
