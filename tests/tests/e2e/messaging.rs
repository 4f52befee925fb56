//! Messages flow between participants, in one order everyone agrees on.

use std::collections::BTreeMap;
use std::time::Duration;

use legalchat_sdk::{NewConversation, pb};
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

/// Every tag in `html` is one the renderer makes, without event handlers, and every link's
/// target is http, https or mailto.
fn assert_only_safe_markup(source: &str, html: &str) {
    const ALLOWED: [&str; 13] = ["p", "strong", "em", "code", "pre", "a", "ul", "ol", "li", "blockquote", "span", "br", "del"];
    for tag in html.split('<').skip(1) {
        let inside = tag.split('>').next().unwrap_or_default();
        let name: String = inside.trim_start_matches('/').chars().take_while(char::is_ascii_alphanumeric).collect();
        assert!(ALLOWED.contains(&name.as_str()), "{source:?}: a <{name}> element in {html:?}");
        assert!(!inside.to_ascii_lowercase().contains(" on"), "{source:?}: an event handler in <{inside}>");
        if let Some(href) = inside.split("href=\"").nth(1) {
            let target = href.split('"').next().unwrap_or_default();
            assert!(["http://", "https://", "mailto:"].iter().any(|s| target.starts_with(s)), "{source:?}: a link to {target:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_arrives_as_text_and_renders_harmless() {
    bounded("xss_round_trip", async {
        use legalchat_protocol::richtext::{Format, render_html};
        let d = daemon().await;
        let mallory = d.client("mallory", "advocate").await;
        let alice = d.client("alice", "advocate").await;
        let conv = mallory.private_chat("alice").await.unwrap().id;
        let hostile = [
            "<script>alert(document.cookie)</script>",
            "<img src=x onerror=alert(1)>",
            "[the brief](javascript:alert(1))",
            "<a href=\"data:text/html;base64,PHNjcmlwdD4=\">open</a>",
            "**bold** <iframe src=//evil.example></iframe>",
            "invoice\u{202E}fdp.exe and \u{200B}hidden",
        ];
        for (n, text) in hostile.iter().enumerate() {
            let format = if n % 2 == 0 { pb::TextFormat::Markdown } else { pb::TextFormat::Plain };
            let content = pb::MessageContent {
                text: (*text).into(),
                r#type: pb::ContentType::Text.into(),
                format: format.into(),
                ..Default::default()
            };
            mallory.send(&conv, &format!("hostile-{n}"), content).await.expect("hostile text is still text");
            let got = wait_for_message(&alice, text, |m| m.client_message_id == format!("hostile-{n}")).await;
            let content = got.content.unwrap();
            assert_eq!(content.text, *text, "stored and delivered byte for byte");
            let html = render_html(&content.text, Format::from(content.format()));
            // Only the renderer's own elements are live, links go only to http(s) and mail,
            // and hostile markup comes out as escaped text (`&lt;img …`): shown, never run.
            assert_only_safe_markup(text, &html);
            assert!(!html.contains('\u{202E}'), "bidirectional overrides are dropped: {html:?}");
        }
        // Control characters never get in at all.
        let e = mallory.send_text(&conv, "bell\u{7}ring").await.unwrap_err();
        assert!(e.to_string().contains("content.text: contains the control character U+0007"), "{e}");
        alice.ping().await.expect("the reader is fine");
    })
    .await;
}
