//! Limits and identifier formats, enforced by the server and checked early by clients so
//! that a user learns of a mistake before a round trip.
//!
//! Every check returns a [`ValidationError`] naming the offending field, because a lawyer
//! reading "invalid argument" with no further word has no way to fix the request.

use crate::pb;

/// Default maximum message text in bytes (the requirements' `MAX_MESSAGE_SIZE=10240`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024;
/// Longest user id (the token's `sub`).
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest client message id or case id.
pub const MAX_TOKEN_ID_LEN: usize = 64;
/// Longest conversation title.
pub const MAX_TITLE_LEN: usize = 200;
/// Longest conversation description.
pub const MAX_DESCRIPTION_LEN: usize = 2_000;
/// Longest `Authenticate.client_info`.
pub const MAX_CLIENT_INFO_LEN: usize = 256;
/// Most participants named in one create or add request.
pub const MAX_PARTICIPANTS_PER_REQUEST: usize = 1_000;
/// Largest history page.
pub const MAX_HISTORY_LIMIT: u32 = 100;
/// History page size when the request says 0.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Largest conversation list.
pub const MAX_LIST_LIMIT: u32 = 500;
/// Conversation list size when the request says 0.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Length of a conversation or message id in hex characters (128 bits).
pub const ID_HEX_LEN: usize = 32;
/// Longest reaction emoji in bytes (the longest ZWJ sequences are about 35).
pub const MAX_EMOJI_LEN: usize = 64;
/// Longest retention period in days (a century).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// A field that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
#[non_exhaustive]
pub struct ValidationError {
    /// The field, as named in the `.proto` file.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    /// An error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

fn check_len(field: &'static str, value: &str, min: usize, max: usize) -> Result {
    if value.len() < min {
        return Err(ValidationError::new(
            field,
            if min == 1 { "must not be empty".into() } else { format!("must be at least {min} bytes") },
        ));
    }
    if value.len() > max {
        return Err(ValidationError::new(field, format!("is {} bytes; the maximum is {max}", value.len())));
    }
    Ok(())
}

fn check_alphabet(field: &'static str, value: &str, extra: &[u8]) -> Result {
    match value.bytes().find(|b| !(b.is_ascii_alphanumeric() || extra.contains(b))) {
        None => Ok(()),
        Some(b) => Err(ValidationError::new(
            field,
            format!("contains {:?}; allowed are ASCII letters, digits and {:?}", char::from(b), String::from_utf8_lossy(extra)),
        )),
    }
}

/// A user id: 1..=128 bytes of ASCII letters, digits, `.`, `_`, `-`, `@`.
pub fn user_id(field: &'static str, value: &str) -> Result {
    check_len(field, value, 1, MAX_USER_ID_LEN)?;
    check_alphabet(field, value, b"._-@")
}

/// A client message id: 1..=64 bytes of ASCII letters, digits, `-`, `_`.
pub fn client_message_id(value: &str) -> Result {
    check_len("client_message_id", value, 1, MAX_TOKEN_ID_LEN)?;
    check_alphabet("client_message_id", value, b"-_")
}

/// A client event id (the id of an edit, delete, reaction, pin or settings request):
/// 1..=64 bytes of ASCII letters, digits, `-`, `_`, like a client message id.
pub fn client_event_id(value: &str) -> Result {
    check_len("client_event_id", value, 1, MAX_TOKEN_ID_LEN)?;
    check_alphabet("client_event_id", value, b"-_")
}

/// A seq naming an earlier entry of a conversation's log: never 0.
pub fn target_seq(field: &'static str, seq: u64) -> Result {
    if seq == 0 { Err(ValidationError::new(field, "must name a message (seqs start at 1)")) } else { Ok(()) }
}

/// A reaction: exactly one emoji of the Unicode emoji set (with its skin tone, if any),
/// with or without the emoji variation selector U+FE0F. One emoji of the set is one
/// grapheme cluster, so text, two emoji in a row or a bare skin-tone modifier are refused.
pub fn emoji(value: &str) -> Result {
    check_len("emoji", value, 1, MAX_EMOJI_LEN)?;
    if is_emoji(value) {
        return Ok(());
    }
    Err(ValidationError::new("emoji", "must be exactly one emoji"))
}

fn is_emoji(value: &str) -> bool {
    // Digits, `#` and `*` are emoji only as keycaps (with U+20E3): plain ASCII, with or
    // without the presentation selector, never is.
    if value.chars().all(|c| c.is_ascii() || c == '\u{FE0F}') {
        return false;
    }
    if emojis::get(value).is_some() {
        return true;
    }
    // Keyboards differ on U+FE0F (emoji presentation): "❤" and "❤\u{FE0F}" are one emoji.
    let bare: String = value.chars().filter(|&c| c != '\u{FE0F}').collect();
    if bare.is_empty() {
        return false;
    }
    emojis::get(&bare).is_some() || emojis::get(&format!("{bare}\u{FE0F}")).is_some()
}

/// A retention period in days (0: no period of the conversation's own).
pub fn retention_days(days: u32) -> Result {
    if days > MAX_RETENTION_DAYS {
        return Err(ValidationError::new("retention_days", format!("is {days}; the maximum is {MAX_RETENTION_DAYS}")));
    }
    Ok(())
}

/// A case id: 1..=64 bytes of ASCII letters, digits, `-`, `_`.
pub fn case_id(value: &str) -> Result {
    check_len("case_id", value, 1, MAX_TOKEN_ID_LEN)?;
    check_alphabet("case_id", value, b"-_")
}

/// Parses a 128-bit id written as 32 lowercase hex characters.
pub fn parse_id(field: &'static str, value: &str) -> Result<[u8; 16]> {
    if value.len() != ID_HEX_LEN {
        return Err(ValidationError::new(field, format!("must be {ID_HEX_LEN} lowercase hex characters, got {} bytes", value.len())));
    }
    let mut out = [0u8; 16];
    for (i, pair) in value.as_bytes().chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or_else(|| ValidationError::new(field, "must be lowercase hex"))?;
        let lo = hex_val(pair[1]).ok_or_else(|| ValidationError::new(field, "must be lowercase hex"))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Formats a 128-bit id as 32 lowercase hex characters.
pub fn format_id(id: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(ID_HEX_LEN);
    for b in id {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// A conversation title.
pub fn title(value: &str) -> Result {
    check_len("title", value, 0, MAX_TITLE_LEN)?;
    no_control_chars("title", value)
}

/// A conversation description: within its length, and free of control characters other
/// than tab and line breaks (it may hold paragraphs; it is shown to every participant).
pub fn description(value: &str) -> Result {
    check_len("description", value, 0, MAX_DESCRIPTION_LEN)?;
    match value.chars().find(|&c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        None => Ok(()),
        Some(c) => Err(ValidationError::new("description", format!("contains the control character U+{:04X}", u32::from(c)))),
    }
}

fn no_control_chars(field: &'static str, value: &str) -> Result {
    match value.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(ValidationError::new(field, format!("contains the control character U+{:04X}", u32::from(c)))),
    }
}

/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 10;

/// Message content: text that is at most `max_bytes` and free of control characters other
/// than tab and newline (they are invisible to the reader and a classic vehicle for
/// spoofed transcripts), and at most [`MAX_ATTACHMENTS`] attachments, each named by a
/// well-formed `file_id`.
///
/// A TEXT message (or one of unspecified type, which means TEXT) needs text. A FILE,
/// IMAGE or DOCUMENT message needs at least one attachment (it would promise the reader a
/// file that does not exist) and may have no text. Whether the files exist is the
/// server's to check.
pub fn message_content(content: Option<&pb::MessageContent>, max_bytes: usize) -> Result {
    let Some(content) = content else {
        return Err(ValidationError::new("content", "is required"));
    };
    let ty = pb::ContentType::try_from(content.r#type)
        .map_err(|_| ValidationError::new("content.type", format!("unknown content type {}", content.r#type)))?;
    pb::TextFormat::try_from(content.format)
        .map_err(|_| ValidationError::new("content.format", format!("unknown text format {}", content.format)))?;
    if content.attachments.len() > MAX_ATTACHMENTS {
        return Err(ValidationError::new(
            "content.attachments",
            format!("has {}; a message carries at most {MAX_ATTACHMENTS}", content.attachments.len()),
        ));
    }
    for (i, a) in content.attachments.iter().enumerate() {
        parse_id("content.attachments.file_id", &a.file_id)
            .map_err(|e| ValidationError::new(e.field, format!("(attachment {}) {}", i + 1, e.reason)))?;
        if a.name.len() > 4 * crate::files::MAX_FILE_NAME_BYTES {
            return Err(ValidationError::new("content.attachments.name", format!("(attachment {}) is too long", i + 1)));
        }
    }
    let with_files = matches!(ty, pb::ContentType::File | pb::ContentType::Image | pb::ContentType::Document);
    if with_files && content.attachments.is_empty() {
        return Err(ValidationError::new(
            "content.attachments",
            format!("is empty; a {} message carries at least one attachment (upload the file first)", ty.as_str_name()),
        ));
    }
    if !with_files && content.text.trim().is_empty() {
        return Err(ValidationError::new("content.text", "must not be empty"));
    }
    if content.text.len() > max_bytes {
        return Err(ValidationError::new("content.text", format!("is {} bytes; the maximum is {max_bytes}", content.text.len())));
    }
    match content.text.chars().find(|&c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        None => Ok(()),
        Some(c) => Err(ValidationError::new("content.text", format!("contains the control character U+{:04X}", u32::from(c)))),
    }
}

/// Normalises a history page size: 0 means the default; above the maximum is an error.
pub fn history_limit(limit: u32) -> Result<u32> {
    match limit {
        0 => Ok(DEFAULT_HISTORY_LIMIT),
        l if l > MAX_HISTORY_LIMIT => Err(ValidationError::new("limit", format!("is {l}; the maximum is {MAX_HISTORY_LIMIT}"))),
        l => Ok(l),
    }
}

/// Normalises a conversation list size.
pub fn list_limit(limit: u32) -> Result<u32> {
    match limit {
        0 => Ok(DEFAULT_LIST_LIMIT),
        l if l > MAX_LIST_LIMIT => Err(ValidationError::new("limit", format!("is {l}; the maximum is {MAX_LIST_LIMIT}"))),
        l => Ok(l),
    }
}

/// A participant list of a create or add request: bounded and well formed.
pub fn participant_ids(field: &'static str, ids: &[String]) -> Result {
    if ids.len() > MAX_PARTICIPANTS_PER_REQUEST {
        return Err(ValidationError::new(field, format!("names {} users; the maximum is {MAX_PARTICIPANTS_PER_REQUEST}", ids.len())));
    }
    ids.iter().try_for_each(|id| user_id(field, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_line_breaks_and_refuse_other_control_characters() {
        assert!(description("First paragraph.\n\nSecond,\tindented.").is_ok());
        for c in ['\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}'] {
            let e = description(&format!("a{c}b")).unwrap_err();
            assert_eq!(e.field, "description");
            assert!(e.reason.contains("control character"), "{e}");
        }
    }

    #[test]
    fn ids_round_trip_and_reject_bad_hex() {
        let id = [0xab; 16];
        assert_eq!(parse_id("conversation_id", &format_id(&id)), Ok(id));
        assert!(parse_id("conversation_id", "ABABABABABABABABABABABABABABABAB").is_err());
        assert!(parse_id("conversation_id", "abc").is_err());
        let err = parse_id("conversation_id", &"g".repeat(32)).unwrap_err();
        assert_eq!(err.field, "conversation_id");
    }

    #[test]
    fn user_ids_follow_the_alphabet() {
        assert!(user_id("user_id", "alice@firm.example").is_ok());
        assert!(user_id("user_id", "").is_err());
        assert!(user_id("user_id", "a b").is_err());
        assert!(user_id("user_id", &"a".repeat(129)).is_err());
        assert!(user_id("user_id", "../etc/passwd").is_err());
    }

    #[test]
    fn message_text_limits() {
        let text = |t: &str| pb::MessageContent { text: t.into(), ..Default::default() };
        assert!(message_content(Some(&text("hello")), 10).is_ok());
        assert!(message_content(Some(&text("   ")), 10).is_err());
        let err = message_content(Some(&text(&"x".repeat(11))), 10).unwrap_err();
        assert_eq!(err.to_string(), "content.text: is 11 bytes; the maximum is 10");
        assert!(message_content(Some(&text("a\u{7}b")), 10).is_err());
        assert!(message_content(Some(&text("line\nline")), 10).is_ok());
        assert!(message_content(None, 10).is_err());
    }

    #[test]
    fn reactions_are_exactly_one_emoji() {
        for ok in ["👍", "❤️", "❤", "👍🏽", "👩‍⚖️", "🇩🇪", "✌️", "✌🏿", "1️⃣"] {
            assert_eq!(emoji(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "a", "ok", "👍👍", "👍 ", "🏽", "\u{FE0F}", "<script>", "1", "#", "1\u{FE0F}", "👍a"] {
            let err = emoji(bad).expect_err(bad);
            assert_eq!(err.field, "emoji", "{bad:?}");
        }
        assert!(emoji(&"👍".repeat(20)).is_err());
    }

    #[test]
    fn event_ids_and_targets() {
        assert!(client_event_id("edit-1_a").is_ok());
        assert_eq!(client_event_id("").unwrap_err().field, "client_event_id");
        assert!(client_event_id("a b").is_err());
        assert!(target_seq("message_seq", 0).is_err());
        assert!(target_seq("message_seq", 1).is_ok());
        assert!(retention_days(MAX_RETENTION_DAYS).is_ok());
        assert!(retention_days(MAX_RETENTION_DAYS + 1).is_err());
    }

    #[test]
    fn file_messages_need_an_attachment_and_text_messages_text() {
        let file = |id: &str| pb::Attachment { file_id: id.into(), ..Default::default() };
        let of = |ty: pb::ContentType, text: &str, files: Vec<pb::Attachment>| pb::MessageContent {
            text: text.into(),
            r#type: ty.into(),
            attachments: files,
            ..Default::default()
        };
        let id = "0123456789abcdef0123456789abcdef";
        for (ty, name) in [(pb::ContentType::File, "FILE"), (pb::ContentType::Image, "IMAGE"), (pb::ContentType::Document, "DOCUMENT")] {
            let err = message_content(Some(&of(ty, "contract.pdf", vec![])), 100).unwrap_err();
            assert_eq!(err.field, "content.attachments");
            assert!(err.to_string().contains(&format!("a {name} message carries at least one attachment")), "{err}");
            assert!(message_content(Some(&of(ty, "", vec![file(id)])), 100).is_ok(), "a file message needs no text");
        }
        assert!(message_content(Some(&of(pb::ContentType::Text, "", vec![file(id)])), 100).is_err(), "TEXT needs text");
        assert!(message_content(Some(&of(pb::ContentType::Text, "see attached", vec![file(id)])), 100).is_ok());
        assert!(message_content(Some(&of(pb::ContentType::Unspecified, "x", vec![])), 100).is_ok(), "unspecified means TEXT");
        let bad = message_content(Some(&of(pb::ContentType::File, "", vec![file("../etc/passwd")])), 100).unwrap_err();
        assert_eq!(bad.field, "content.attachments.file_id");
        assert!(bad.to_string().contains("(attachment 1)"), "{bad}");
        let many = message_content(Some(&of(pb::ContentType::File, "", vec![file(id); MAX_ATTACHMENTS + 1])), 100).unwrap_err();
        assert_eq!(many.to_string(), "content.attachments: has 11; a message carries at most 10");
        let unknown = pb::MessageContent { text: "x".into(), r#type: 99, ..Default::default() };
        assert_eq!(message_content(Some(&unknown), 100).unwrap_err().field, "content.type");
    }

    #[test]
    fn page_limits() {
        assert_eq!(history_limit(0), Ok(DEFAULT_HISTORY_LIMIT));
        assert_eq!(history_limit(100), Ok(100));
        assert!(history_limit(101).is_err());
    }
}
