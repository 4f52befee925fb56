//! What a notification says, as JSON: the Web Push payload (encrypted for the browser's
//! service worker) and the webhook body (for the firm's notification service).
//!
//! Neither carries the message text unless `push.include_text` is on: a lock screen, a push
//! service and a notification relay are all places a client's confidences should not reach
//! by default. The conversation is named by its title — or, for a case conversation, by the
//! case id, since case titles tend to name the parties.

use legalchat_protocol::pb;
use serde::Serialize;

use super::Notification;
use super::encryption::MAX_PLAINTEXT;

/// The title a notification shows for its conversation.
pub fn title(n: &Notification) -> String {
    if n.conversation_type == pb::ConversationType::Case as i32 && !n.case_id.is_empty() {
        format!("Case {}", n.case_id)
    } else {
        n.conversation_title.clone()
    }
}

/// The conversation kind as a word (`private`, `group`, `case`, `support`).
pub fn kind(n: &Notification) -> &'static str {
    match pb::ConversationType::try_from(n.conversation_type) {
        Ok(pb::ConversationType::Private) => "private",
        Ok(pb::ConversationType::Group) => "group",
        Ok(pb::ConversationType::Case) => "case",
        Ok(pb::ConversationType::Support) => "support",
        _ => "unspecified",
    }
}

#[derive(Serialize)]
struct WebPushPayload<'a> {
    r#type: &'static str,
    conversation_id: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    case_id: &'a str,
    sender_id: &'a str,
    seq: u64,
    timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// The Web Push payload (plaintext, before encryption). With `include_text`, the text is
/// cut (at a character boundary, `"truncated": true`) so the payload fits in one push
/// message of [`MAX_PLAINTEXT`] bytes.
pub fn web_push(n: &Notification, include_text: bool) -> Vec<u8> {
    let title = title(n);
    let mut payload = WebPushPayload {
        r#type: "message",
        conversation_id: &n.conversation_id,
        title: &title,
        case_id: &n.case_id,
        sender_id: &n.sender_id,
        seq: n.seq,
        timestamp_ms: n.timestamp_ms,
        text: include_text.then_some(n.text.as_str()),
        truncated: false,
    };
    let json = to_json(&payload);
    let Some(text) = payload.text.filter(|_| json.len() > MAX_PLAINTEXT) else { return json };
    // JSON escaping makes text between one and six times longer, so search for the longest
    // prefix that fits: about 14 rounds for the largest messages, and only for those.
    payload.truncated = true;
    let (mut fits, mut too_long) = (0, text.len());
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        payload.text = Some(cut(text, mid));
        if to_json(&payload).len() <= MAX_PLAINTEXT { fits = mid } else { too_long = mid }
    }
    payload.text = Some(cut(text, fits));
    to_json(&payload)
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    r#type: &'static str,
    user_id: &'a str,
    conversation_id: &'a str,
    conversation_type: &'static str,
    title: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    case_id: &'a str,
    sender_id: &'a str,
    seq: u64,
    message_id: &'a str,
    timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// The webhook body for `user` (the recipient with no connected device).
pub fn webhook(user: &str, n: &Notification, include_text: bool) -> Vec<u8> {
    let title = title(n);
    to_json(&WebhookBody {
        r#type: "message",
        user_id: user,
        conversation_id: &n.conversation_id,
        conversation_type: kind(n),
        title: &title,
        case_id: &n.case_id,
        sender_id: &n.sender_id,
        seq: n.seq,
        message_id: &n.message_id,
        timestamp_ms: n.timestamp_ms,
        text: include_text.then_some(n.text.as_str()),
    })
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing plain structs of strings and integers to memory cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: pb::ConversationType, text: &str) -> Notification {
        Notification {
            conversation_id: "c0ffee".into(),
            conversation_type: kind as i32,
            conversation_title: "Smith v. Jones — case team".into(),
            case_id: if kind == pb::ConversationType::Case { "2024-017".into() } else { String::new() },
            sender_id: "alice".into(),
            seq: 7,
            message_id: "m-1".into(),
            text: text.into(),
            timestamp_ms: 1_700_000_000_000,
        }
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn no_text_by_default() {
        let n = note(pb::ConversationType::Group, "Settlement offer: 2.5M");
        let p = json(&web_push(&n, false));
        assert_eq!(
            p,
            serde_json::json!({"type": "message", "conversation_id": "c0ffee", "title": "Smith v. Jones — case team",
                "sender_id": "alice", "seq": 7, "timestamp_ms": 1_700_000_000_000_i64})
        );
        let w = json(&webhook("bob", &n, false));
        assert_eq!(
            w,
            serde_json::json!({"type": "message", "user_id": "bob", "conversation_id": "c0ffee", "conversation_type": "group",
                "title": "Smith v. Jones — case team", "sender_id": "alice", "seq": 7, "message_id": "m-1",
                "timestamp_ms": 1_700_000_000_000_i64})
        );
        for bytes in [web_push(&n, false), webhook("bob", &n, false)] {
            assert!(!String::from_utf8(bytes).unwrap().contains("Settlement"));
        }
    }

    #[test]
    fn case_conversations_are_named_by_case_id() {
        let n = note(pb::ConversationType::Case, "x");
        let p = json(&web_push(&n, false));
        assert_eq!((p["title"].as_str(), p["case_id"].as_str()), (Some("Case 2024-017"), Some("2024-017")));
        assert_eq!(json(&webhook("bob", &n, false))["conversation_type"], "case");
    }

    #[test]
    fn text_when_configured_and_cut_to_fit() {
        let n = note(pb::ConversationType::Private, "Hearing moved to 10:00");
        assert_eq!(json(&web_push(&n, true))["text"], "Hearing moved to 10:00");
        assert_eq!(json(&webhook("bob", &n, true))["text"], "Hearing moved to 10:00");

        // Long text, some of it expanding sixfold under JSON escaping, and multi-byte.
        for text in ["é".repeat(5_000), "\u{1}".repeat(10_000), "\"ok\" ".repeat(2_000), "a".repeat(10_240)] {
            let n = note(pb::ConversationType::Private, &text);
            let bytes = web_push(&n, true);
            assert!(bytes.len() <= MAX_PLAINTEXT, "{} bytes", bytes.len());
            let p = json(&bytes);
            assert_eq!(p["truncated"], true);
            let got = p["text"].as_str().unwrap();
            assert!(text.starts_with(got) && got.len() > 500, "kept {} bytes", got.len());
            // The webhook is not size-limited: it gets the whole text.
            assert_eq!(json(&webhook("bob", &n, true))["text"].as_str().unwrap(), text);
        }
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("é", 0), "");
    }
}
