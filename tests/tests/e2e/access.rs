//! Who may read, post and create: participants only, and clients within the role policy.

use legalchat_sdk::pb::ErrorCode;
use legalchat_sdk::{Error, HistoryCursor, NewConversation};
use legalchat_tests::bounded;

use crate::daemon;

/// A refusal for a non-participant: FORBIDDEN or NOT_FOUND (not revealing whether the
/// conversation exists is allowed), with a message that names the problem.
fn assert_refused(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    let err = result.expect_err(what);
    let Error::Server { code, message, .. } = &err else { panic!("{what}: expected a server error, got {err:?}") };
    assert!(matches!(code, ErrorCode::Forbidden | ErrorCode::NotFound), "{what}: code {code:?} ({message})");
    let lower = message.to_lowercase();
    assert!(
        lower.contains("participant") || lower.contains("conversation") || lower.contains("not found"),
        "{what}: the message {message:?} does not name the problem"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_participants_cannot_read_or_post() {
    bounded("non_participants", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let mallory = d.client("mallory", "advocate").await;
        let conv =
            alice.create_conversation(NewConversation::group("Privileged", vec!["bob".into()])).await.expect("alice creates a group");
        alice.send_text(&conv.id, "Settlement floor is 2.1M").await.expect("alice sends");

        assert_refused(mallory.history(&conv.id, HistoryCursor::Latest, 50).await, "mallory reads history");
        assert_refused(mallory.send_text(&conv.id, "let me in").await, "mallory posts");
        assert_refused(mallory.get_conversation(&conv.id).await, "mallory fetches the conversation");

        // Nothing of mallory's was stored, and her list does not show the conversation.
        let page = alice.history(&conv.id, HistoryCursor::Latest, 50).await.expect("alice reads");
        assert_eq!(page.messages.len(), 1);
        assert!(page.messages.iter().all(|m| m.sender_id == "alice"));
        let listed = mallory.list_conversations(100).await.expect("mallory lists");
        assert!(listed.iter().all(|c| c.id != conv.id), "mallory sees a conversation she is not in");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_create_groups_or_talk_privately_to_clients() {
    bounded("client_policy", async {
        let d = daemon().await;
        let carol = d.client("carol", "client").await;
        // Dave and the advocate sign in first, so the server knows their roles.
        let _dave = d.client("dave", "client").await;
        let _adv = d.client("adv-smith", "advocate").await;

        let err = carol
            .create_conversation(NewConversation::group("Clients only", vec!["dave".into()]))
            .await
            .expect_err("a client creates a group");
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err:?}");

        let err = carol.private_chat("dave").await.expect_err("a client opens a private chat with a client");
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err:?}");
        assert!(!err.to_string().is_empty());

        // The same client may talk to an advocate.
        let conv = carol.private_chat("adv-smith").await.expect("a client opens a private chat with an advocate");
        carol.send_text(&conv.id, "When is the hearing?").await.expect("the client posts");
    })
    .await;
}
