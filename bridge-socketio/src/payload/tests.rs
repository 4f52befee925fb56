use serde_json::json;

use super::*;

const CONV: &str = "0123456789abcdef0123456789abcdef";

fn stored(seq: u64) -> pb::Message {
    pb::Message {
        conversation_id: CONV.into(),
        seq,
        message_id: "fe".repeat(16),
        client_message_id: "c-1".into(),
        sender_id: "alice".into(),
        content: Some(pb::MessageContent { text: "Hearing at 10".into(), r#type: 1, format: 2, ..Default::default() }),
        timestamp_ms: 1_700_000_000_123,
        state_seq: 9,
        ..Default::default()
    }
}

#[test]
fn a_message_has_the_requirements_shape_with_its_seq() {
    let mut m = stored(4);
    m.edited_at_ms = 1_700_000_001_000;
    m.reply_to_seq = 2;
    m.reply_preview = Some(pb::ReplyPreview { sender_id: "bob".into(), text: "When?".into(), deleted: false });
    m.reactions = vec![pb::Reaction { emoji: "👍".into(), user_ids: vec!["bob".into(), "carol".into()] }];
    m.mentions = vec!["bob".into()];
    let receipts = pb::ReceiptList {
        conversation_id: CONV.into(),
        states: vec![
            pb::ReceiptState {
                user_id: "bob".into(),
                delivered_seq: 5,
                delivered_at_ms: 1_700_000_002_000,
                read_seq: 4,
                read_at_ms: 1_700_000_003_000,
            },
            pb::ReceiptState { user_id: "carol".into(), delivered_seq: 4, delivered_at_ms: 1_700_000_002_500, read_seq: 3, read_at_ms: 1 },
            pb::ReceiptState { user_id: "alice".into(), delivered_seq: 4, read_seq: 4, ..Default::default() },
        ],
    };
    let v = message(&m, Some(&receipts));
    assert_eq!(v["_id"], "fe".repeat(16));
    assert_eq!((v["conversationId"].as_str(), v["seq"].as_u64(), v["senderId"].as_str()), (Some(CONV), Some(4), Some("alice")));
    assert_eq!(v["content"], json!({"text": "Hearing at 10", "type": "text", "format": "markdown", "attachments": []}));
    assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["editedAt"], "2023-11-14T22:13:21.000Z");
    assert_eq!((v["deletedAt"].is_null(), v["replyTo"].as_u64()), (true, Some(2)));
    assert_eq!(v["replyPreview"], json!({"senderId": "bob", "text": "When?", "deleted": false}));
    assert_eq!(v["reactions"], json!([{"userId": "bob", "emoji": "👍"}, {"userId": "carol", "emoji": "👍"}]));
    // Delivered to bob and carol (positions at or beyond 4), read by bob only; the sender's
    // own position is not a receipt.
    assert_eq!(
        v["deliveryStatus"],
        json!({
            "sent": "2023-11-14T22:13:20.123Z",
            "delivered": [{"userId": "bob", "timestamp": "2023-11-14T22:13:22.000Z"}, {"userId": "carol", "timestamp": "2023-11-14T22:13:22.500Z"}],
            "read": [{"userId": "bob", "timestamp": "2023-11-14T22:13:23.000Z"}],
        })
    );
    assert_eq!((v["mentions"].clone(), v["pinned"].clone(), v["stateSeq"].clone()), (json!(["bob"]), json!(false), json!(9)));
}

#[test]
fn a_tombstone_has_no_content_and_says_who_deleted_it() {
    let mut m = stored(4);
    m.content = None;
    m.deleted_at_ms = 1_700_000_005_000;
    m.deleted_by = "carol".into();
    let v = message(&m, None);
    assert!(v["content"].is_null());
    assert_eq!((v["deletedAt"].as_str(), v["deletedBy"].as_str()), (Some("2023-11-14T22:13:25.000Z"), Some("carol")));
    assert_eq!(v["deliveryStatus"]["delivered"], json!([]));
}

#[test]
fn events_keep_their_place_and_say_what_they_did() {
    let entry = |kind| pb::Message { event: Some(pb::ConversationEvent { kind: Some(kind) }), content: None, ..stored(7) };
    let v = message(&entry(Kind::Reaction(pb::ReactionChanged { target_seq: 4, emoji: "🎉".into(), added: false })), None);
    assert_eq!(v["seq"], 7);
    assert_eq!(v["event"], json!({"type": "reaction_removed", "targetSeq": 4, "emoji": "🎉"}));
    assert!(v.get("content").is_none() && v.get("reactions").is_none(), "an event is not a message: {v}");
    let edit = entry(Kind::Edited(pb::MessageEdited { target_seq: 4, content: None, redacted: true }));
    assert_eq!(message(&edit, None)["event"], json!({"type": "edited", "targetSeq": 4, "content": null, "redacted": true}));
    let role = entry(Kind::RoleChanged(pb::ParticipantRoleChanged { user_id: "bob".into(), role: pb::ParticipantRole::Moderator.into() }));
    assert_eq!(message(&role, None)["event"], json!({"type": "role_changed", "userId": "bob", "role": "moderator"}));
}

#[test]
fn a_conversation_has_the_requirements_shape() {
    let c = pb::Conversation {
        id: CONV.into(),
        r#type: pb::ConversationType::Case.into(),
        participants: vec![pb::Participant {
            user_id: "alice".into(),
            role: 3,
            joined_at_ms: 1_700_000_000_000,
            display_name: "Alice A.".into(),
        }],
        case_id: "2024-017".into(),
        title: "Smith v. Jones".into(),
        settings: Some(pb::ConversationSettings { notifications: false, retention_days: 365, encryption: true }),
        last_message: Some(stored(4)),
        last_seq: 6,
        unread_count: 2,
        mention_count: 1,
        pinned_seqs: vec![4],
        created_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let v = conversation(&c);
    assert_eq!((v["_id"].as_str(), v["type"].as_str(), v["caseId"].as_str()), (Some(CONV), Some("case"), Some("2024-017")));
    assert_eq!(
        v["participants"],
        json!([{"userId": "alice", "role": "admin", "joinedAt": "2023-11-14T22:13:20.000Z", "displayName": "Alice A."}])
    );
    assert_eq!(v["settings"], json!({"encryption": true, "retention": 365, "notifications": false}));
    assert_eq!(
        v["lastMessage"],
        json!({
            "content": "Hearing at 10",
            "attachments": [],
            "deleted": false,
            "timestamp": "2023-11-14T22:13:20.123Z",
            "senderId": "alice",
            "seq": 4,
        })
    );
    assert_eq!((v["lastSeq"].clone(), v["unreadCount"].clone(), v["mentionCount"].clone()), (json!(6), json!(2), json!(1)));
    assert!(v["updatedAt"].is_null(), "an unset time is null");
}

#[test]
fn send_message_payloads_are_read_and_checked_like_the_protocol() {
    let fresh = || "generated-1".to_owned();
    let plain = send_message(&json!({"conversationId": CONV, "content": "hello"}), 100, fresh).unwrap();
    assert_eq!((plain.client_message_id.as_str(), plain.reply_to_seq), ("generated-1", 0));
    assert_eq!(plain.content.unwrap().text, "hello");
    let full = send_message(
        &json!({"conversationId": CONV, "clientMessageId": "c-9", "replyTo": 3, "content": {"text": "**bold**", "format": "markdown"}}),
        100,
        fresh,
    )
    .unwrap();
    assert_eq!((full.client_message_id.as_str(), full.reply_to_seq), ("c-9", 3));
    assert_eq!(full.content.unwrap().format, pb::TextFormat::Markdown as i32);

    let field = |payload: serde_json::Value| send_message(&payload, 10, fresh).unwrap_err().field;
    assert_eq!(field(json!("hello")), "payload");
    assert_eq!(field(json!({"content": "x"})), "conversationId");
    assert_eq!(field(json!({"conversationId": "nope", "content": "x"})), "conversationId");
    assert_eq!(field(json!({"conversationId": CONV})), "content");
    assert_eq!(field(json!({"conversationId": CONV, "content": 5})), "content");
    assert_eq!(field(json!({"conversationId": CONV, "content": "x".repeat(11)})), "content.text", "the size limit");
    assert_eq!(field(json!({"conversationId": CONV, "content": {"text": "x", "type": "exe"}})), "content.type");
    assert_eq!(field(json!({"conversationId": CONV, "content": {"text": "x", "format": "html"}})), "content.format");
    assert_eq!(
        field(json!({"conversationId": CONV, "content": {"text": "x", "type": "file"}})),
        "content.attachments",
        "a file needs a file"
    );
    assert_eq!(field(json!({"conversationId": CONV, "content": "x", "clientMessageId": "a b"})), "client_message_id");
    assert_eq!(field(json!({"conversationId": CONV, "content": "x", "replyTo": -1})), "replyTo");
    assert_eq!(field(json!({"conversationId": CONV, "content": "x", "replyTo": "2"})), "replyTo");
    assert_eq!(field(json!({"conversationId": 7, "content": "x"})), "conversationId");
}
