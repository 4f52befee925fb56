//! Tokens expire and can be revoked: a session ends when its token expires unless it was
//! renewed in place; admins revoke a user's sessions and deactivate users, which ends
//! every live session at once and keeps old tokens out.

use std::sync::Arc;
use std::time::Duration;

use legalchat_sdk::{Client, Error, Event, ReconnectPolicy, TokenSource, pb};
use legalchat_tests::tokens::Claims;
use legalchat_tests::{EVENT_TIMEOUT, TestDaemon, bounded, next_event};
use tokio::time::Instant;

use crate::daemon;

fn now_secs() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// A token for `user` that expires in `ttl` seconds, issued `issued_in` seconds from now.
fn token(d: &TestDaemon, user: &str, role: &str, ttl: i64, issued_in: i64) -> String {
    let mut claims = Claims::new(user, role, ttl);
    claims.iat = now_secs() + issued_in;
    d.token_with(&claims)
}

async fn connect(d: &TestDaemon, token: String) -> Client {
    // No reconnecting: a session that ends stays ended, which is what is looked at.
    let config = d.client_config(token).with_reconnect_policy(ReconnectPolicy::never());
    Client::connect(config).await.expect("connect")
}

/// Waits for the session's end and returns its Goodbye.
async fn goodbye(client: &Client, what: &str) -> (pb::ErrorCode, String) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match next_event(client, deadline, what).await {
            Event::Goodbye { code, reason } => return (code, reason),
            Event::Closed { reason } => panic!("{what}: closed without a Goodbye: {reason}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires_unless_renewed_in_place() {
    bounded("tokens_expiry", async {
        let d = daemon().await;
        let lapsing = connect(&d, token(&d, "alice", "advocate", 3, 0)).await;
        let renewing = connect(&d, token(&d, "alice", "advocate", 3, 0)).await;
        let first_expiry = renewing.session().token_expires_at_ms;
        assert!(first_expiry > 0, "the session knows when its token expires");

        // Another user's token, or another role, cannot renew the session.
        let e = renewing.renew_token(&token(&d, "bob", "advocate", 60, 0)).await.unwrap_err();
        assert!(matches!(&e, Error::Unauthorized(m) if m.contains("another user")), "{e:?}");
        let e = renewing.renew_token(&token(&d, "alice", "admin", 60, 0)).await.unwrap_err();
        assert!(matches!(&e, Error::Unauthorized(m) if m.contains("another role")), "{e:?}");
        let info = renewing.renew_token(&token(&d, "alice", "advocate", 60, 0)).await.expect("renewed");
        assert!(info.token_expires_at_ms > first_expiry + 50_000);
        assert_eq!(renewing.session().token_expires_at_ms, info.token_expires_at_ms);

        let (code, reason) = goodbye(&lapsing, "the expiry").await;
        assert_eq!(code, pb::ErrorCode::Unauthorized);
        assert!(reason.contains("your token expired"), "{reason}");
        // The renewed session outlived the token it started with.
        renewing.ping().await.expect("the renewed session goes on");
        assert!(renewing.state().is_connected());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_source_renews_the_session_before_it_expires() {
    bounded("tokens_source", async {
        let d = Arc::new(daemon().await);
        let fresh: TokenSource = {
            let d = Arc::clone(&d);
            Arc::new(move || {
                let t = token(&d, "alice", "advocate", 60, 0);
                Box::pin(async move { Ok::<_, String>(t) })
            })
        };
        let config =
            d.client_config(token(&d, "alice", "advocate", 6, 0)).with_reconnect_policy(ReconnectPolicy::never()).with_token_source(fresh);
        let renewed = Client::connect(config).await.unwrap();
        let lapsing = connect(&d, token(&d, "alice", "advocate", 6, 0)).await;
        let started_with = renewed.session().token_expires_at_ms;
        goodbye(&lapsing, "the expiry of the same first token").await;
        renewed.ping().await.expect("renewed by itself");
        assert!(renewed.session().token_expires_at_ms > started_with + 30_000, "a fresh token was taken");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_ends_every_live_session_at_once_and_keeps_old_tokens_out() {
    bounded("tokens_revoke", async {
        let d = daemon().await;
        let admin = d.client("carol", "admin").await;
        let old = token(&d, "bob", "client", 3600, 0);
        let phone = connect(&d, old.clone()).await;
        let laptop = connect(&d, old.clone()).await;
        let bystander = d.client("dan", "advocate").await;

        let e = bystander.revoke_sessions("bob").await.unwrap_err();
        assert_eq!(e.code(), Some(pb::ErrorCode::Forbidden), "{e:?}");

        let asked = Instant::now();
        admin.revoke_sessions("bob").await.expect("revoked");
        for (client, what) in [(&phone, "phone"), (&laptop, "laptop")] {
            let (code, reason) = goodbye(client, what).await;
            assert_eq!(code, pb::ErrorCode::Unauthorized);
            assert!(reason.contains("revoked by an administrator"), "{reason}");
        }
        let took = asked.elapsed();
        eprintln!("revocation to the end of both sessions: {took:?}");
        assert!(took < Duration::from_secs(1), "revocation took {took:?}");

        // The old token is out; one issued after the revocation is in.
        let e = Client::connect(d.client_config(old)).await.unwrap_err();
        assert!(matches!(&e, Error::Unauthorized(m) if m.contains("revoked")), "{e:?}");
        let again = connect(&d, token(&d, "bob", "client", 3600, 2)).await;
        again.ping().await.unwrap();
        bystander.ping().await.expect("nobody else was affected");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_is_signed_out_and_cannot_sign_in_until_reactivated() {
    bounded("tokens_deactivate", async {
        let d = daemon().await;
        let admin = d.client("carol", "admin").await;
        let bob = connect(&d, token(&d, "bob", "client", 3600, 0)).await;
        admin.set_user_active("bob", false).await.expect("deactivated");
        let (code, reason) = goodbye(&bob, "deactivation").await;
        assert_eq!(code, pb::ErrorCode::Unauthorized);
        assert!(reason.contains("deactivated"), "{reason}");
        let e = Client::connect(d.client_config(token(&d, "bob", "client", 3600, 5))).await.unwrap_err();
        assert!(matches!(&e, Error::Unauthorized(m) if m.contains("deactivated")), "{e:?}");
        admin.set_user_active("bob", true).await.expect("reactivated");
        let back = connect(&d, token(&d, "bob", "client", 3600, 5)).await;
        back.ping().await.expect("signed in again");
        let e = admin.set_user_active("nobody-ever", false).await.unwrap_err();
        assert_eq!(e.code(), Some(pb::ErrorCode::NotFound), "{e:?}");
    })
    .await;
}
