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
    let html = richtext::render_html(&text, format);
    // Text is escaped, so every `<` opens a tag the sanitizer let through: each must be an
    // allowed tag with allowed attributes, and a link may only go to http, https or mailto.
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        let tag = tag.strip_prefix('/').unwrap_or(tag);
        let (name, mut rest) = tag.split_once(' ').unwrap_or((tag, ""));
        assert!(TAGS.contains(&name), "<{name}> is not an allowed tag: {html}");
        while let Some((attribute, after)) = rest.trim_start().split_once("=\"") {
            let (value, after) = after.split_once('"').unwrap_or_else(|| panic!("an unquoted attribute in <{tag}>"));
            assert!(ATTRIBUTES.contains(&(name, attribute)), "{attribute} on <{name}>: {html}");
            if attribute == "href" {
                assert!(["http://", "https://", "mailto:"].iter().any(|p| value.starts_with(p)), "a link to {value}");
            }
            rest = after;
        }
        assert!(rest.trim().is_empty(), "cannot read <{tag}>");
    }
});

/// What the renderer may emit.
const TAGS: [&str; 12] = ["p", "br", "strong", "em", "code", "pre", "a", "ul", "ol", "li", "blockquote", "span"];
const ATTRIBUTES: [(&str, &str); 5] = [("a", "href"), ("a", "rel"), ("ol", "start"), ("span", "class"), ("span", "data-user")];
