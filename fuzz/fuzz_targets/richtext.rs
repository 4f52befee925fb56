//! Arbitrary message text through the rich-text rules: mention extraction (run by the
//! server on every message) and the sanitizing HTML renderer (run by clients on what other
//! users wrote). Neither may panic; every mention is a valid user id; the HTML holds no
//! script, no event handler and no link other than http, https or mailto.
#![no_main]

use legalchat_protocol::richtext::{self, Format};
use legalchat_protocol::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (format, rest) = match data {
        [f, rest @ ..] => (if f % 2 == 0 { Format::Plain } else { Format::Markdown }, rest),
        [] => (Format::Plain, data),
    };
    let text = String::from_utf8_lossy(rest);
    for user in richtext::mentions(&text, format) {
        assert!(validate::user_id("mention", &user).is_ok(), "{user:?} is not a user id");
    }
    let html = richtext::render_html(&text, format).to_ascii_lowercase();
    for banned in ["<script", "<iframe", "<svg", "<style", "<object", "<embed", "javascript:", "vbscript:", "data:"] {
        assert!(!html.contains(banned), "{banned} in {html}");
    }
    // Text is escaped, so every `<` opens a real tag: no attribute in one may be a handler.
    for tag in html.split('<').skip(1).filter_map(|t| t.split('>').next()) {
        for attribute in tag.split_whitespace().skip(1) {
            assert!(!attribute.starts_with("on"), "an event handler in <{tag}>");
        }
    }
    for (i, _) in html.match_indices("href=\"") {
        let target = &html[i + 6..];
        assert!(["http://", "https://", "mailto:"].iter().any(|p| target.starts_with(p)), "a link to {target}");
    }
});
