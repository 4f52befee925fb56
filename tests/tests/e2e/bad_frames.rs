//! Bad input ends only the session that sent it, with a clear error; everyone else
//! carries on.

use std::time::Duration;

use legalchat_sdk::pb::{self, ErrorCode, client_frame::Request, server_frame::Event as Ev};
use legalchat_tests::{RawSession, bounded, wait_for_message};

use crate::daemon;

/// Reads until `raw` is closed and returns the session-level error it got first.
async fn error_then_close(raw: &mut RawSession, what: &str) -> pb::Error {
    let (how, frames) =
        raw.until_closed(Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{what}: the session was not closed: {e:#}"));
    frames
        .into_iter()
        .find_map(|f| match f.event {
            Some(Ev::Error(e)) => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{what}: closed ({how}) without an Error frame"))
}

/// Alice and Bob, connected through all of this, still talk both ways.
async fn witnesses_still_talk(alice: &legalchat_sdk::Client, bob: &legalchat_sdk::Client, round: u32) {
    let conv = alice.private_chat("bob").await.expect("private chat");
    let text = format!("round {round}: still here?");
    alice.send_text(&conv.id, &text).await.expect("alice sends");
    wait_for_message(bob, "alice's message", |m| m.sender_id == "alice" && m.content.as_ref().is_some_and(|c| c.text == text)).await;
    let reply = format!("round {round}: yes");
    bob.send_text(&conv.id, &reply).await.expect("bob sends");
    wait_for_message(alice, "bob's reply", |m| m.sender_id == "bob" && m.content.as_ref().is_some_and(|c| c.text == reply)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_own_session() {
    bounded("bad_frames", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        witnesses_still_talk(&alice, &bob, 0).await;

        // A length prefix far above the maximum: refused before any body is read.
        let mut raw = d.raw_session_as("mallory", "advocate").await;
        raw.write_raw(&0x7fff_ffffu32.to_be_bytes()).await.expect("write the prefix");
        let err = error_then_close(&mut raw, "2 GiB prefix").await;
        assert_eq!(err.code(), ErrorCode::FrameTooLarge, "{err:?}");
        assert!(!err.message.is_empty());
        witnesses_still_talk(&alice, &bob, 1).await;

        // One byte over the announced maximum.
        let mut raw = d.raw_session().await;
        let authenticated = raw.authenticate(&d.token("mallory", "advocate")).await.expect("authenticate");
        assert!(authenticated.max_frame_size > 0, "the server announces its maximum frame size");
        raw.write_raw(&(authenticated.max_frame_size + 1).to_be_bytes()).await.expect("write the prefix");
        let err = error_then_close(&mut raw, "max + 1 prefix").await;
        assert_eq!(err.code(), ErrorCode::FrameTooLarge, "{err:?}");

        // Bytes that are not a ClientFrame (a truncated varint tag).
        let mut raw = d.raw_session_as("mallory", "advocate").await;
        raw.write_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.expect("write garbage");
        let err = error_then_close(&mut raw, "malformed protobuf").await;
        assert_eq!(err.code(), ErrorCode::MalformedFrame, "{err:?}");
        assert!(!err.message.is_empty());

        // Garbage as the very first frame, before authenticating, also just ends that session.
        let mut raw = d.raw_session().await;
        raw.write_raw(&[0, 0, 0, 2, 0x0f, 0x0f]).await.expect("write garbage");
        raw.until_closed(Duration::from_secs(30)).await.expect("the unauthenticated garbage session is closed");

        witnesses_still_talk(&alice, &bob, 2).await;
        alice.ping().await.expect("alice's session is alive");
        bob.ping().await.expect("bob's session is alive");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_text_is_refused_naming_the_field() {
    bounded("over_long_text", async {
        let d = daemon().await;
        let mut raw = d.raw_session().await;
        let authenticated = raw.authenticate(&d.token("mallory", "advocate")).await.expect("authenticate");
        let max_text = usize::try_from(authenticated.max_message_bytes).unwrap();
        assert!(max_text > 0, "the server announces its text limit");

        let create = pb::CreateConversation {
            r#type: pb::ConversationType::Group.into(),
            participant_ids: vec!["bob".into()],
            title: "raw".into(),
            ..Default::default()
        };
        let conv = match raw.request(2, Request::CreateConversation(create)).await.expect("create") {
            Ev::Ack(pb::Ack { result: Some(pb::ack::Result::Conversation(c)), .. }) => c,
            other => panic!("create failed: {other:?}"),
        };

        let send = |text: String, client_message_id: &str| {
            Request::SendMessage(pb::SendMessage {
                conversation_id: conv.id.clone(),
                client_message_id: client_message_id.into(),
                content: Some(pb::MessageContent {
                    text,
                    r#type: pb::ContentType::Text.into(),
                    format: pb::TextFormat::Plain.into(),
                    ..Default::default()
                }),
                reply_to_seq: 0,
            })
        };
        match raw.request(3, send("x".repeat(max_text + 1), "too-long-1")).await.expect("send over-long text") {
            Ev::Error(e) => {
                assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
                assert_eq!(e.request_id, 3);
                assert!(e.message.contains("content.text"), "the error does not name content.text: {:?}", e.message);
            }
            other => panic!("an over-long text was accepted: {other:?}"),
        }

        // A refused request does not end the session, and the exact limit is accepted.
        match raw.request(4, send("y".repeat(max_text), "exact-limit-1")).await.expect("send text at the limit") {
            Ev::Ack(pb::Ack { result: Some(pb::ack::Result::MessageAccepted(m)), .. }) => assert_eq!(m.seq, 1),
            other => panic!("a text at the limit was refused: {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_messages_without_a_file_are_refused_naming_the_type() {
    bounded("attachment_types", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");
        let content = |ty: pb::ContentType| pb::MessageContent { text: "brief.pdf".into(), r#type: ty.into(), ..Default::default() };

        // The SDK refuses before sending...
        match alice.send(&conv.id, "file-sdk", content(pb::ContentType::File)).await {
            Err(legalchat_sdk::Error::Invalid(e)) => assert_eq!(e.field, "content.attachments", "{e}"),
            other => panic!("the SDK sent a FILE message without a file: {other:?}"),
        }
        // ...and the server refuses what a client sends anyway, and the session goes on.
        let mut raw = d.raw_session_as("alice", "advocate").await;
        for (n, ty) in [pb::ContentType::File, pb::ContentType::Image, pb::ContentType::Document].into_iter().enumerate() {
            let request_id = 10 + u64::try_from(n).unwrap();
            let send = pb::SendMessage {
                conversation_id: conv.id.clone(),
                client_message_id: format!("raw-{n}"),
                content: Some(content(ty)),
                reply_to_seq: 0,
            };
            match raw.request(request_id, Request::SendMessage(send)).await.expect("send") {
                Ev::Error(e) => {
                    assert_eq!((e.code(), e.request_id), (ErrorCode::InvalidArgument, request_id), "{e:?}");
                    let expected = format!("a {} message carries at least one attachment", ty.as_str_name());
                    assert!(e.message.contains("content.attachments") && e.message.contains(&expected), "{:?}", e.message);
                }
                other => panic!("a {} message without a file was accepted: {other:?}", ty.as_str_name()),
            }
        }
        // Nothing was stored: the first text is the conversation's first message.
        let sent = alice.send_text(&conv.id, "the brief follows by e-mail").await.expect("send text");
        assert_eq!(sent.seq, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_completes_ends_only_its_session() {
    bounded("slowloris", async {
        let d = crate::daemon_with(&["--frame-timeout-ms", "500"]).await;
        let bystander = d.client("bob", "advocate").await;
        let mut raw = d.raw_session_as("alice", "advocate").await;
        // Two bytes of a four-byte length prefix, and then nothing: a slowloris.
        raw.write_raw(&[0, 0]).await.expect("write");
        let (_, frames) = raw.until_closed(Duration::from_secs(10)).await.expect("the session ends");
        let error = frames
            .iter()
            .find_map(|f| match &f.event {
                Some(Ev::Error(e)) => Some(e.clone()),
                _ => None,
            })
            .expect("an error says why");
        assert_eq!(error.code(), ErrorCode::MalformedFrame);
        assert!(error.message.contains("did not complete within 500 ms"), "{}", error.message);
        bystander.ping().await.expect("another session is not affected");
    })
    .await;
}
