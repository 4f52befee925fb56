//! Message text: the Markdown subset LegalChat defines, the mentions in it and (with the
//! `html` feature) its rendering to sanitised HTML.
//!
//! ```text
//!  MessageContent.text ─► pulldown-cmark ─► subset events ──► mentions()    sorted user ids
//!  (+ TextFormat)          (CommonMark,     (raw HTML as text,
//!                           no extensions)   mentions cut out) ─► render_html() ─► ammonia ─► HTML
//! ```
//!
//! # The subset
//!
//! [`Format::Markdown`] text is CommonMark, parsed by pulldown-cmark with no extension
//! switched on, and rendered as:
//!
//! | source                                  | HTML                                                 |
//! |-----------------------------------------|------------------------------------------------------|
//! | paragraphs                              | `<p>`                                                |
//! | `**bold**`, `*italic*`                  | `<strong>`, `<em>`                                   |
//! | `` `code` ``, fenced or indented code   | `<code>`, `<pre><code>` (the info string is dropped) |
//! | `[text](https://…)`, `<https://…>`      | `<a href rel="noopener noreferrer nofollow">`        |
//! | lists (`-`, `1.`), `> quotes`           | `<ul>`/`<ol>` (with `start`), `<li>`, `<blockquote>` |
//! | a newline, hard or soft                 | `<br>` (a chat message is written line by line)      |
//! | `@user_id`                              | `<span class="mention" data-user="id">@id</span>`    |
//!
//! Everything else is reduced to text, never to markup of its own:
//! - raw HTML (`<b>`, `<script>`, comments) is shown as the characters the user typed;
//! - an image shows its alt text only: loading an address a sender chose would tell that
//!   sender who read the message and when;
//! - a link whose destination is not `http:`, `https:` or `mailto:` (so also a relative one)
//!   shows its text without the link;
//! - a heading is a paragraph and a thematic break (`---`) is dropped;
//! - tables, footnotes, strikethrough and task lists are not parsed, so their markers stay
//!   as text.
//!
//! [`Format::Plain`] text is shown literally, with line breaks and mentions.
//!
//! # Mentions
//!
//! A mention is `@` followed by a user id ([`validate::user_id`]: 1..=128 bytes of ASCII
//! letters, digits, `.`, `_`, `-`, `@`), with these rules:
//! - `@` begins a mention only where it begins a word: at the start of the text or after a
//!   character that cannot be part of a user id. So `alice@firm.example` and
//!   `john_@firm.example` are e-mail addresses, while `@alice@firm.example` mentions the
//!   user `alice@firm.example`.
//! - Trailing `.`s end the sentence, not the id: `ask @bob.` mentions `bob`.
//! - A run of id characters longer than 128 bytes is no mention at all, not a cut-off one.
//! - In Markdown, text in code spans, code blocks and link text is not searched. "Before" the
//!   `@` means in the text as shown: in `**x**@bob` the `@` follows `x`.
//!
//! # Size
//!
//! Sources are message texts, which [`validate::message_content`] bounds to
//! [`validate::DEFAULT_MAX_MESSAGE_BYTES`] (10 KiB) before they reach these functions; nothing
//! here checks a length again.
//!
//! [`validate::user_id`]: crate::validate::user_id
//! [`validate::message_content`]: crate::validate::message_content
//! [`validate::DEFAULT_MAX_MESSAGE_BYTES`]: crate::validate::DEFAULT_MAX_MESSAGE_BYTES

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;

use pulldown_cmark::{CodeBlockKind, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd, TextMergeStream};

use crate::{pb, validate};

/// How a message's text is written; the protocol's [`pb::TextFormat`] without the wire's
/// "unspecified".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Literal text.
    #[default]
    Plain,
    /// The Markdown subset described in the [module docs](self).
    Markdown,
}

impl From<pb::TextFormat> for Format {
    /// `TEXT_FORMAT_UNSPECIFIED` is treated as `PLAIN`, as the `.proto` file says.
    fn from(format: pb::TextFormat) -> Self {
        match format {
            pb::TextFormat::Unspecified | pb::TextFormat::Plain => Format::Plain,
            pb::TextFormat::Markdown => Format::Markdown,
        }
    }
}

/// The user ids `source` mentions, de-duplicated and sorted (byte order).
///
/// See the [module docs](self) for what counts as a mention. In [`Format::Plain`] every
/// `@id` word counts; in [`Format::Markdown`] those in code and link text do not.
///
/// ```
/// use legalchat_protocol::richtext::{Format, mentions};
///
/// let text = "@carol, see `@dave` and ask @bob. Mail alice@firm.example or @bob";
/// assert_eq!(mentions(text, Format::Markdown), ["bob", "carol"]);
/// assert_eq!(mentions(text, Format::Plain), ["bob", "carol", "dave"]);
/// ```
pub fn mentions(source: &str, format: Format) -> Vec<String> {
    let ids: BTreeSet<String> = Tokens::new(source, format)
        .filter_map(|token| match token {
            Token::Mention(id) => Some(id),
            Token::Event(_) => None,
        })
        .collect();
    ids.into_iter().collect()
}

/// Renders `source` as an HTML fragment that is safe to insert into a page. Built with the
/// crate's `html` feature.
///
/// The output holds only `p`, `br`, `strong`, `em`, `code`, `pre`, `a`, `ul`, `ol`, `li`,
/// `blockquote` and the mention `span`; links only to `http:`, `https:` and `mailto:`
/// addresses, each with `rel="noopener noreferrer nofollow"`; no `style`, `id` or event
/// handler attribute. Bidirectional override and isolate characters (U+202A..U+202E,
/// U+2066..U+2069) are removed, because they make a file name or a link text read
/// differently from its characters.
///
/// The HTML is built from the [subset](self) and then passed through an allow-list
/// sanitiser (ammonia) anyway, so that a mistake in the first step is not an injection.
///
/// ```
/// use legalchat_protocol::richtext::{Format, render_html};
///
/// assert_eq!(
///     render_html("**Filed**, @bob. <script>x</script> [docket](javascript:x)", Format::Markdown),
///     "<p><strong>Filed</strong>, <span class=\"mention\" data-user=\"bob\">@bob</span>. \
///      &lt;script&gt;x&lt;/script&gt; docket</p>\n",
/// );
/// ```
#[cfg(feature = "html")]
pub fn render_html(source: &str, format: Format) -> String {
    let events = Tokens::new(source, format).map(|token| match token {
        Token::Event(Event::Text(text)) => Event::Text(without_bidi_controls(text)),
        Token::Event(Event::Code(code)) => Event::Code(without_bidi_controls(code)),
        Token::Event(event) => event,
        // The id is of the user-id alphabet (letters, digits, `._-@`), so it needs no escaping
        // in an attribute or as text.
        Token::Mention(id) => Event::InlineHtml(format!(r#"<span class="mention" data-user="{id}">@{id}</span>"#).into()),
    });
    let mut html = String::with_capacity(source.len() + source.len() / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    sanitizer().clean(&html).to_string()
}

/// The allow-list the rendered HTML passes through, built once.
#[cfg(feature = "html")]
fn sanitizer() -> &'static ammonia::Builder<'static> {
    use std::collections::{HashMap, HashSet};
    use std::sync::OnceLock;

    static SANITIZER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    SANITIZER.get_or_init(|| {
        let mut builder = ammonia::Builder::empty();
        builder
            .tags(HashSet::from(["p", "br", "strong", "em", "code", "pre", "a", "ul", "ol", "li", "blockquote", "span"]))
            // Dropped with their content, should one ever get here: their text is code, not prose.
            .clean_content_tags(HashSet::from(["script", "style"]))
            // `rel` is not listed: ammonia sets it on every link (`link_rel`).
            .tag_attributes(HashMap::from([
                ("a", HashSet::from(["href"])),
                ("ol", HashSet::from(["start"])),
                ("span", HashSet::from(["data-user"])),
            ]))
            .generic_attributes(HashSet::new())
            .generic_attribute_prefixes(HashSet::new())
            .allowed_classes(HashMap::from([("span", HashSet::from(["mention"]))]))
            .url_schemes(HashSet::from(["http", "https", "mailto"]))
            // A relative address would resolve against whatever page shows the message.
            .url_relative(ammonia::UrlRelative::Deny)
            .link_rel(Some("noopener noreferrer nofollow"))
            .strip_comments(true)
            .id_prefix(None);
        builder
    })
}

/// Removes the characters that reorder the text around them (bidirectional embeddings,
/// overrides and isolates). Marks such as U+200E/U+200F, which only nudge neutral
/// characters, stay: right-to-left writing needs them.
#[cfg(feature = "html")]
fn without_bidi_controls(text: CowStr<'_>) -> CowStr<'_> {
    let is_bidi_control = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if text.contains(is_bidi_control) { text.replace(is_bidi_control, "").into() } else { text }
}

/// One item of the subset's stream: a pulldown-cmark event, or a mention cut out of text.
#[derive(Debug)]
enum Token<'a> {
    // Only rendering reads the events; mentions need the stream's state, not its output.
    Event(#[cfg_attr(not(feature = "html"), allow(dead_code))] Event<'a>),
    Mention(String),
}

/// Maps pulldown-cmark's events onto the subset and cuts mentions out of text. Both
/// [`mentions`] and `render_html` read this one stream, so a mention is counted exactly when
/// it is shown as one.
struct Tokens<'a> {
    events: Box<dyn Iterator<Item = Event<'a>> + 'a>,
    /// Produced but not yet returned: one text event can become several tokens.
    pending: VecDeque<Token<'a>>,
    /// Inside a code block: the text is code, never mentions.
    in_code_block: bool,
    /// Newlines in text are line breaks: in plain text, and in raw HTML shown as text.
    newlines_break: bool,
    /// One entry per open link: whether it is kept (its destination is allowed).
    links: Vec<bool>,
    /// The last character shown in the current block, for "`@` begins a word".
    before: Option<char>,
}

impl<'a> Tokens<'a> {
    fn new(source: &'a str, format: Format) -> Self {
        let events: Box<dyn Iterator<Item = Event<'a>> + 'a> = match format {
            Format::Plain => Box::new(std::iter::once(Event::Text(source.into()))),
            // No extension is switched on: tables, footnotes, strikethrough, task lists and
            // the rest are not in the subset. Raw HTML becomes text *before* merging, so that
            // `<b>@bob</b>` is one text whose `@` follows `>`.
            Format::Markdown => Box::new(TextMergeStream::new(Parser::new_ext(source, Options::empty()).map(|event| match event {
                Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
                other => other,
            }))),
        };
        Tokens {
            events,
            pending: VecDeque::new(),
            in_code_block: false,
            newlines_break: format == Format::Plain,
            links: Vec::new(),
            before: None,
        }
    }

    fn emit(&mut self, event: Event<'a>) {
        self.pending.push_back(Token::Event(event));
    }

    /// A block begins or ends: the next text starts a word.
    fn block(&mut self, event: Event<'a>) {
        self.before = None;
        self.emit(event);
    }

    fn start(&mut self, tag: Tag<'a>) {
        match tag {
            Tag::Paragraph | Tag::List(_) | Tag::Item => self.block(Event::Start(tag)),
            Tag::Heading { .. } => self.block(Event::Start(Tag::Paragraph)),
            // The kind is a GFM alert, which is off; rendered it would be a class.
            Tag::BlockQuote(_) => self.block(Event::Start(Tag::BlockQuote(None))),
            // The info string would become a class; the subset has none.
            Tag::CodeBlock(_) => {
                self.in_code_block = true;
                self.block(Event::Start(Tag::CodeBlock(CodeBlockKind::Indented)));
            }
            Tag::HtmlBlock => {
                self.newlines_break = true;
                self.block(Event::Start(Tag::Paragraph));
            }
            Tag::Emphasis | Tag::Strong => self.emit(Event::Start(tag)),
            Tag::Link { link_type, dest_url, id, .. } => {
                let kept = link_allowed(link_type, &dest_url);
                self.links.push(kept);
                if kept {
                    // The title is dropped: the subset has no tooltip.
                    self.emit(Event::Start(Tag::Link { link_type, dest_url, title: CowStr::Borrowed(""), id }));
                }
            }
            // The alt text that follows is shown as text; the image is not loaded.
            Tag::Image { .. } => {}
            // Only produced by extensions that are off; their content, if any, stays as text.
            Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Table(_)
            | Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::Strikethrough
            | Tag::Superscript
            | Tag::Subscript
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::List(_) | TagEnd::Item => self.block(Event::End(tag)),
            TagEnd::Heading(_) => self.block(Event::End(TagEnd::Paragraph)),
            TagEnd::BlockQuote(_) => self.block(Event::End(TagEnd::BlockQuote(None))),
            TagEnd::CodeBlock => {
                self.in_code_block = false;
                self.block(Event::End(tag));
            }
            TagEnd::HtmlBlock => {
                self.newlines_break = false;
                self.block(Event::End(TagEnd::Paragraph));
            }
            TagEnd::Emphasis | TagEnd::Strong => self.emit(Event::End(tag)),
            TagEnd::Link => {
                if self.links.pop() == Some(true) {
                    self.emit(Event::End(tag));
                }
            }
            TagEnd::Image
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Table
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::TableCell
            | TagEnd::Strikethrough
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::MetadataBlock(_) => {}
        }
    }

    fn text(&mut self, text: CowStr<'a>) {
        let searched = !self.in_code_block && self.links.is_empty();
        if !(searched && (text.contains('@') || self.newlines_break && text.contains(['\n', '\r']))) {
            self.before = text.chars().next_back().or(self.before);
            self.emit(Event::Text(text));
            return;
        }
        // The last newline ends the raw HTML block or the plain message; it is no break.
        let body = if self.newlines_break { text.trim_end_matches(['\n', '\r']) } else { &text };
        let lines: Vec<&str> = if self.newlines_break { body.lines().collect() } else { vec![body] };
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                self.emit(Event::HardBreak);
                self.before = None;
            }
            let mut from = 0;
            while let Some(mention) = next_mention(line, from, self.before) {
                if from < mention.start {
                    self.emit(Event::Text(line[from..mention.start].to_owned().into()));
                }
                self.pending.push_back(Token::Mention(line[mention.start + 1..mention.end].to_owned()));
                from = mention.end;
                self.before = line[..from].chars().next_back();
            }
            if from < line.len() {
                self.emit(Event::Text(line[from..].to_owned().into()));
                self.before = line.chars().next_back();
            }
        }
    }

    fn push(&mut self, event: Event<'a>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.text(text),
            Event::Code(code) => {
                self.before = code.chars().next_back().or(self.before);
                self.emit(Event::Code(code));
            }
            // Raw HTML was turned into text in `new`; this is the same rule should one slip by.
            Event::Html(html) | Event::InlineHtml(html) => self.text(html),
            // A chat message is written line by line: a single newline is a line break.
            Event::SoftBreak | Event::HardBreak => {
                self.before = None;
                self.emit(Event::HardBreak);
            }
            Event::Rule => self.before = None,
            // Only produced by extensions that are off.
            Event::InlineMath(_) | Event::DisplayMath(_) | Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            if let Some(token) = self.pending.pop_front() {
                return Some(token);
            }
            let event = self.events.next()?;
            self.push(event);
        }
    }
}

/// Whether a link to `dest` is kept. Compared on the destination as parsed (entities such as
/// `&#x61;` already decoded), and by prefix, so `java\tscript:` or ` javascript:` is no
/// scheme at all and is dropped.
fn link_allowed(link_type: LinkType, dest: &str) -> bool {
    // An e-mail autolink (`<bob@firm.example>`) is written with its `mailto:` added.
    if link_type == LinkType::Email {
        return true;
    }
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| dest.as_bytes().get(..scheme.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme.as_bytes())))
}

/// A byte of the user-id alphabet ([`validate::user_id`]).
fn is_user_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@')
}

/// The byte range of the next mention (`@id`, with its `@`) in `text` at or after `from`;
/// `before` is the character shown before `text`.
fn next_mention(text: &str, mut from: usize, before: Option<char>) -> Option<Range<usize>> {
    while let Some(at) = text.get(from..)?.find('@').map(|i| from + i) {
        let run_end = at + 1 + text.as_bytes()[at + 1..].iter().take_while(|&&b| is_user_id_byte(b)).count();
        let preceding = text[..at].chars().next_back().or(before);
        // Inside a word the `@` is an e-mail address's; skip the whole word.
        let starts_word = !preceding.is_some_and(|c| u8::try_from(c).is_ok_and(is_user_id_byte));
        let id = text[at + 1..run_end].trim_end_matches('.');
        if starts_word && validate::user_id("mention", id).is_ok() {
            return Some(at..at + 1 + id.len());
        }
        from = run_end;
    }
    None
}

#[cfg(test)]
mod tests;
