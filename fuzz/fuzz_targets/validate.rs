//! Arbitrary strings through every validation rule of `legalchat_protocol::validate`: the
//! server runs these on untrusted input before anything else sees it. No rule may panic
//! (e.g. by slicing inside a UTF-8 character), and every error must name a field.
#![no_main]

use legalchat_protocol::pb;
use legalchat_protocol::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the content type and format (including unknown values);
    // the rest, read leniently as UTF-8, is the string under test.
    let (ty, format, rest) = match data {
        [a, b, rest @ ..] => (i32::from(*a) - 8, i32::from(*b) - 8, rest),
        _ => (0, 0, data),
    };
    let s = String::from_utf8_lossy(rest);
    let s = s.as_ref();

    named(validate::user_id("user_id", s));
    named(validate::client_message_id(s));
    named(validate::client_event_id(s));
    named(validate::emoji(s));
    named(validate::case_id(s));
    named(validate::title(s));
    named(validate::description(s));
    if let Ok(id) = validate::parse_id("conversation_id", s) {
        // A parsed id formats back to the very string: ids have one spelling only.
        assert_eq!(validate::format_id(&id), s);
    }

    let content = pb::MessageContent { text: s.to_owned(), r#type: ty, format, ..Default::default() };
    for max in [0, 16, validate::DEFAULT_MAX_MESSAGE_BYTES] {
        match validate::message_content(Some(&content), max) {
            Ok(()) => assert!(content.text.len() <= max),
            Err(e) => assert!(e.field.starts_with("content")),
        }
    }

    // Page sizes and participant lists, derived from the same bytes.
    let n = rest.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if let Ok(l) = validate::history_limit(n) {
        assert!((1..=validate::MAX_HISTORY_LIMIT).contains(&l));
    }
    if let Ok(l) = validate::list_limit(n) {
        assert!((1..=validate::MAX_LIST_LIMIT).contains(&l));
    }
    let ids: Vec<String> = s.split(',').map(str::to_owned).collect();
    named(validate::participant_ids("participant_ids", &ids));
});

fn named(result: Result<(), validate::ValidationError>) {
    if let Err(e) = result {
        assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?} names no field or reason");
    }
}
