//! Sessions need a valid token first; everything else is refused with a reason.

use std::time::Duration;

use legalchat_sdk::Error;
use legalchat_sdk::pb::{self, client_frame::Request, server_frame::Event as Ev};
use legalchat_tests::bounded;
use legalchat_tests::tokens::{Claims, TokenMinter};

use crate::{daemon, daemon_with};

async fn assert_unauthorized(d: &legalchat_tests::TestDaemon, token: String, what: &str) {
    match d.connect_with_token(token).await {
        Err(Error::Unauthorized(reason)) => assert!(!reason.trim().is_empty(), "{what}: Unauthorized without a reason"),
        Err(other) => panic!("{what}: expected Error::Unauthorized, got {other:?}"),
        Ok(c) => panic!("{what}: connected as {} although the token is bad", c.user_id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_a_reason() {
    bounded("bad_tokens", async {
        let d = daemon().await;
        assert_unauthorized(&d, "garbage.not-a.jwt".into(), "garbage token").await;
        assert_unauthorized(&d, d.token_with(&Claims::new("alice", "advocate", -3_600)), "expired token").await;
        let other = TokenMinter::new("some-other-secret-entirely").token("alice", "advocate").unwrap();
        assert_unauthorized(&d, other, "token signed with another secret").await;
        assert_unauthorized(&d, d.token("alice", "superuser"), "unknown role claim").await;
        assert_unauthorized(&d, d.token("not a valid user id!", "advocate"), "malformed sub").await;

        // And the good token of the same user works, so the refusals were about the tokens.
        let alice = d.client("alice", "advocate").await;
        assert_eq!(alice.user_id(), "alice");
        assert_eq!(alice.role(), pb::UserRole::Advocate);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_must_be_authenticate() {
    bounded("first_frame", async {
        let d = daemon().await;
        let mut raw = d.raw_session().await;
        raw.send_frame(&pb::ClientFrame { request_id: 7, request: Some(Request::Ping(pb::Ping { nonce: 1 })) })
            .await
            .expect("write a ping");
        let (how, frames) = raw.until_closed(Duration::from_secs(30)).await.expect("the session is closed");
        let reason = frames
            .iter()
            .find_map(|f| match &f.event {
                Some(Ev::Unauthorized(u)) => Some(u.reason.clone()),
                Some(Ev::Error(e)) if e.code() == pb::ErrorCode::Unauthorized => Some(e.message.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Unauthorized before the close ({how}); frames: {frames:?}"));
        assert!(!reason.is_empty(), "Unauthorized without a reason");
        assert!(!frames.iter().any(|f| matches!(&f.event, Some(Ev::Ack(_)))), "the ping was answered without authentication: {frames:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sessions_are_closed_after_the_auth_timeout() {
    bounded("auth_timeout", async {
        let d = daemon_with(&["--auth-timeout-ms", "300"]).await;

        // A connection that never opens a stream.
        let silent = d.raw_session().await;
        // The bound is well above the configured 300 ms and below the 5 s default, so that
        // it only passes when the option is honoured; it is a deadline, not a measurement.
        let closed = silent.connection_closed(Duration::from_secs(4)).await.expect("the silent connection is closed");
        assert!(!matches!(closed, quinn::ConnectionError::LocallyClosed), "closed by us rather than by the server: {closed:?}");

        // A session stream that is opened (one byte of a length prefix) but never completes
        // a frame: the server answers Unauthorized or just closes.
        let mut half = d.raw_session().await;
        half.write_raw(&[0]).await.expect("write one byte");
        match half.until_closed(Duration::from_secs(4)).await {
            Ok((_, frames)) => assert!(
                frames.iter().all(|f| matches!(&f.event, Some(Ev::Unauthorized(_)) | Some(Ev::Error(_)) | Some(Ev::Goodbye(_)))),
                "unexpected frames before the close: {frames:?}"
            ),
            Err(e) => panic!("the half-open session was not closed: {e:#}"),
        }

        // The daemon is still fine for a well-behaved client.
        let alice = d.client("alice", "advocate").await;
        alice.ping().await.expect("ping after the timeouts");
    })
    .await;
}
