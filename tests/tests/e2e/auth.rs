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

/// A JWT with `header` and `claims` (JSON), signed HS256 with `secret` (or unsigned).
fn jwt(header: &str, claims: &serde_json::Value, secret: Option<&[u8]>) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = match secret {
        Some(key) => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            b64(&mac.finalize().into_bytes())
        }
        None => String::new(),
    };
    format!("{signing_input}.{signature}")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_bypass_attempts_are_refused() {
    bounded("auth_bypass", async {
        let d = daemon_with(&["--jwt-issuer", "https://login.firm.example", "--jwt-audience", "legalchat"]).await;
        let secret = d.jwt_secret().as_bytes().to_vec();
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let good = serde_json::json!({"sub": "alice", "role": "advocate", "exp": now() + 600, "iat": now(), "iss": "https://login.firm.example", "aud": "legalchat"});
        // The well-formed token works, so each refusal below is about what was changed.
        let alice = d.connect_with_token(jwt(hs256, &good, Some(&secret))).await.expect("the good token signs in");
        assert_eq!(alice.user_id(), "alice");

        let with = |key: &str, value: serde_json::Value| {
            let mut c = good.clone();
            c[key] = value;
            c
        };
        let cases: Vec<(&str, String)> = vec![
            ("no signature, alg none", jwt(r#"{"alg":"none","typ":"JWT"}"#, &good, None)),
            ("alg none with the signature of the good token", {
                let signed = jwt(hs256, &good, Some(&secret));
                let sig = signed.rsplit('.').next().unwrap().to_owned();
                format!("{}{sig}", jwt(r#"{"alg":"none","typ":"JWT"}"#, &good, None))
            }),
            ("another algorithm in the header", jwt(r#"{"alg":"HS512","typ":"JWT"}"#, &good, Some(&secret))),
            ("a role forged into a signed token", {
                let signed = jwt(hs256, &good, Some(&secret));
                let parts: Vec<&str> = signed.split('.').collect();
                let forged = jwt(hs256, &with("role", "admin".into()), None);
                let forged_claims = forged.split('.').nth(1).unwrap();
                format!("{}.{forged_claims}.{}", parts[0], parts[2])
            }),
            ("the wrong key", jwt(hs256, &good, Some(b"an-attackers-own-secret-of-32-bytes!!"))),
            ("expired", jwt(hs256, &with("exp", (now() - 3_600).into()), Some(&secret))),
            ("not yet valid", jwt(hs256, &with("nbf", (now() + 3_600).into()), Some(&secret))),
            ("the wrong audience", jwt(hs256, &with("aud", "another-app".into()), Some(&secret))),
            ("the wrong issuer", jwt(hs256, &with("iss", "https://evil.example".into()), Some(&secret))),
            ("no exp", {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                jwt(hs256, &c, Some(&secret))
            }),
        ];
        for (what, token) in cases {
            assert_unauthorized(&d, token, what).await;
        }
        alice.ping().await.expect("the refusals affected nobody else");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_confusion_is_refused_by_a_public_key_daemon() {
    bounded("auth_alg_confusion", async {
        use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
        // The identity provider's key pair: the daemon knows only the public half.
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let public_pem = secret.public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let private_pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("idp-public.pem");
        std::fs::write(&key_file, &public_pem).unwrap();
        let d = daemon_with(&["--jwt-algorithm", "ES256", "--jwt-public-key", key_file.to_str().unwrap()]).await;

        let claims = serde_json::json!({"sub": "alice", "role": "advocate", "exp": now() + 600, "iat": now()});
        let es256 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let alice = d.connect_with_token(es256).await.expect("a token of the identity provider signs in");

        // The classic confusion: HS256 with the (public) key as the HMAC secret.
        let confused = jwt(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, Some(public_pem.as_bytes()));
        assert_unauthorized(&d, confused, "HS256 signed with the public key").await;
        assert_unauthorized(&d, jwt(r#"{"alg":"none","typ":"JWT"}"#, &claims, None), "alg none on a public-key daemon").await;
        // A token of another key pair.
        let other = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng).to_pkcs8_pem(LineEnding::LF).unwrap();
        let stranger = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(other.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_unauthorized(&d, stranger, "ES256 from another key").await;
        alice.ping().await.expect("a bystander is not affected");
    })
    .await;
}
