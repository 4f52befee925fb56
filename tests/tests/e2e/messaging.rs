//! Messages flow between participants, in one order everyone agrees on.

use std::collections::BTreeMap;
use std::time::Duration;

use legalchat_sdk::NewConversation;
use legalchat_tests::{bounded, collect_messages, text_of, wait_for_message};

use crate::daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_chat_both_directions_and_idempotent_creation() {
    bounded("private_chat", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;

        let conv = alice.private_chat("bob").await.expect("alice opens a private chat with bob");
        assert_eq!(conv.r#type(), legalchat_sdk::pb::ConversationType::Private);
        let mut members: Vec<&str> = conv.participants.iter().map(|p| p.user_id.as_str()).collect();
        members.sort_unstable();
        assert_eq!(members, ["alice", "bob"]);

        let sent = alice.send_text(&conv.id, "Hello Bob, the filing is due Friday.").await.expect("alice sends");
        assert_eq!(sent.seq, 1);
        assert!(!sent.duplicate);
        let got = wait_for_message(&bob, "alice's message", |m| m.sender_id == "alice").await;
        assert_eq!(got.conversation_id, conv.id);
        assert_eq!(got.seq, 1);
        assert_eq!(got.message_id, sent.message_id);
        assert_eq!(text_of(&got), "Hello Bob, the filing is due Friday.");

        let reply = bob.send_text(&conv.id, "Thanks Alice — on it.").await.expect("bob replies");
        assert_eq!(reply.seq, 2);
        let got = wait_for_message(&alice, "bob's reply", |m| m.sender_id == "bob").await;
        assert_eq!((got.seq, got.message_id.as_str(), text_of(&got)), (2, reply.message_id.as_str(), "Thanks Alice — on it."));

        // Exactly one private conversation per pair, whoever asks and however often.
        let again = alice.private_chat("bob").await.expect("alice asks again");
        let from_bob = bob.private_chat("alice").await.expect("bob asks");
        assert_eq!(again.id, conv.id);
        assert_eq!(from_bob.id, conv.id);
        assert_eq!(from_bob.last_seq, 2, "the existing conversation, with its messages");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_five_sees_one_gap_free_order() {
    const MEMBERS: usize = 5;
    const PER_SENDER: usize = 20;
    const TOTAL: u64 = (MEMBERS * PER_SENDER) as u64;
    bounded("group_of_five", async {
        let d = daemon().await;
        let names: Vec<String> = (0..MEMBERS).map(|i| format!("member{i}")).collect();
        let mut clients = Vec::new();
        for name in &names {
            clients.push(d.client(name, "advocate").await);
        }
        let conv = clients[0]
            .create_conversation(NewConversation::group("Case team", names[1..].to_vec()))
            .await
            .expect("member0 creates the group");
        assert_eq!(conv.participants.len(), MEMBERS);

        // Everyone sends 20 messages at once: 100 concurrent sends into one conversation.
        let mut sends = tokio::task::JoinSet::new();
        for (i, client) in clients.iter().enumerate() {
            for n in 0..PER_SENDER {
                let (client, conv_id) = (client.clone(), conv.id.clone());
                sends.spawn(async move {
                    let text = format!("member{i} message {n}");
                    let sent = client.send_text(&conv_id, &text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
                    (i, text, sent)
                });
            }
        }
        // What each sender knows of its own messages: seq → (message id, text).
        let mut own: Vec<BTreeMap<u64, (String, String)>> = vec![BTreeMap::new(); MEMBERS];
        while let Some(joined) = sends.join_next().await {
            let (i, text, sent) = joined.expect("send task");
            assert!(!sent.duplicate);
            assert!(own[i].insert(sent.seq, (sent.message_id, text)).is_none(), "two acks with one seq");
        }

        let mut views = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            let me = names[i].clone();
            let expected_from_others = TOTAL - PER_SENDER as u64;
            let received = collect_messages(client, &conv.id, Duration::from_secs(60), |got| {
                got.iter().filter(|m| m.sender_id != me).count() as u64 >= expected_from_others
            })
            .await;
            // Events arrive in the conversation's order.
            let seqs: Vec<u64> = received.iter().map(|m| m.seq).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{me} received out of order: {seqs:?}");
            // The member's view: what it received plus its own acknowledged sends.
            let mut view = own[i].clone();
            for m in &received {
                let entry = (m.message_id.clone(), text_of(m).to_owned());
                if let Some(previous) = view.insert(m.seq, entry.clone()) {
                    assert_eq!(previous, entry, "{me}: seq {} acked and delivered differently", m.seq);
                }
            }
            assert_eq!(view.keys().copied().collect::<Vec<_>>(), (1..=TOTAL).collect::<Vec<_>>(), "{me}: seqs are not 1..={TOTAL}");
            views.push(view);
        }
        for (i, view) in views.iter().enumerate().skip(1) {
            assert_eq!(view, &views[0], "member{i} and member0 disagree on the order");
        }

        // History agrees with what was delivered.
        let mut history = Vec::new();
        let mut cursor = legalchat_sdk::HistoryCursor::After(0);
        loop {
            let page = clients[3].history(&conv.id, cursor, 100).await.expect("history");
            history.extend(page.messages.iter().map(|m| (m.seq, (m.message_id.clone(), text_of(m).to_owned()))));
            match page.messages.last() {
                Some(last) if page.has_more => cursor = legalchat_sdk::HistoryCursor::After(last.seq),
                _ => break,
            }
        }
        assert_eq!(history.into_iter().collect::<BTreeMap<_, _>>(), views[0]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_one_udp_socket_stay_independent() {
    bounded("shared_endpoint", async {
        let d = daemon().await;
        let endpoint = legalchat_sdk::ClientEndpoint::bind("127.0.0.1:0".parse().expect("address")).expect("a socket");
        let connect = |user: &str| {
            let config = d.client_config(d.token(user, "advocate")).with_endpoint(endpoint.clone());
            legalchat_sdk::Client::connect(config)
        };
        let alice = connect("alice").await.expect("alice connects through the shared socket");
        let bob = connect("bob").await.expect("bob connects through the same socket");
        let carol = connect("carol").await.expect("carol too");
        assert_eq!(endpoint.open_connections(), 3, "one connection per client, one socket");

        let conv = alice
            .create_conversation(NewConversation::group("shared socket", vec!["bob".into(), "carol".into()]))
            .await
            .expect("alice creates a group");
        alice.send_text(&conv.id, "one").await.expect("alice sends");
        assert_eq!(text_of(&wait_for_message(&bob, "bob gets it", |m| m.sender_id == "alice").await), "one");

        // Closing one client closes its connection only.
        carol.close().await;
        alice.send_text(&conv.id, "two").await.expect("alice still sends after carol left");
        let got = wait_for_message(&bob, "bob gets the second", |m| text_of(m) == "two").await;
        assert_eq!(got.seq, 2);
        assert!(carol.send_text(&conv.id, "late").await.is_err(), "the closed client refuses sends");
    })
    .await;
}
