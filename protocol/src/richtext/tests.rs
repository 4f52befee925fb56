use proptest::prelude::*;

use super::*;

fn md(source: &str) -> Vec<String> {
    mentions(source, Format::Markdown)
}

#[test]
fn format_follows_the_wire_enum() {
    assert_eq!(Format::from(pb::TextFormat::Unspecified), Format::Plain);
    assert_eq!(Format::from(pb::TextFormat::Plain), Format::Plain);
    assert_eq!(Format::from(pb::TextFormat::Markdown), Format::Markdown);
}

#[test]
fn mentions_are_sorted_and_deduplicated() {
    assert_eq!(md("@carol, @bob and @alice; again @bob"), ["alice", "bob", "carol"]);
    assert_eq!(md("*@bob* **@carol** > @dave"), ["bob", "carol", "dave"]);
    assert_eq!(md("> quoted @erin\n\n- item @frank\n1. @grace"), ["erin", "frank", "grace"]);
    assert_eq!(md("no one here"), Vec::<String>::new());
}

#[test]
fn mentions_in_code_do_not_count() {
    assert_eq!(md("`@bob` and @carol"), ["carol"]);
    assert_eq!(md("```\n@bob\n```\n\n    @dave\n\n@carol"), ["carol"]);
    // In plain text there is no code: every mention counts.
    assert_eq!(mentions("`@bob` and @carol", Format::Plain), ["bob", "carol"]);
}

#[test]
fn email_addresses_are_not_mentions() {
    assert_eq!(md("write to alice@firm.example"), Vec::<String>::new());
    assert_eq!(md("write to john_@firm.example or j.doe-@firm.example"), Vec::<String>::new());
    assert_eq!(md("<bob@firm.example>"), Vec::<String>::new());
    assert_eq!(mentions("alice@firm.example", Format::Plain), Vec::<String>::new());
    // A user id may itself look like an address; the leading `@` makes it a mention.
    assert_eq!(md("ping @alice@firm.example"), ["alice@firm.example"]);
    // A mention begins a word after punctuation that cannot be part of an id.
    assert_eq!(md("(@bob) hi,@carol \"@dave\""), ["bob", "carol", "dave"]);
    // "Before" is what is shown: the `@` follows the `x` of the bold text.
    assert_eq!(md("**x**@bob"), Vec::<String>::new());
}

#[test]
fn trailing_dots_end_a_mention() {
    assert_eq!(md("Thanks @bob."), ["bob"]);
    assert_eq!(md("Thanks @bob... and @j.doe."), ["bob", "j.doe"]);
    assert_eq!(md("@bob's file, @carol! @dave? @erin:"), ["bob", "carol", "dave", "erin"]);
    assert_eq!(md("a lone @ or @. is nothing"), Vec::<String>::new());
}

#[test]
fn mention_ids_follow_the_user_id_rules() {
    let longest = "a".repeat(validate::MAX_USER_ID_LEN);
    assert_eq!(md(&format!("@{longest}")), [longest.as_str()]);
    // Too long is no mention at all, not a mention of its first 128 bytes.
    assert_eq!(md(&format!("@{longest}b")), Vec::<String>::new());
    assert_eq!(md(&format!("@{longest}.")), [longest.as_str()]);
    assert_eq!(md("@bob\u{e9}"), ["bob"]);
}

#[test]
fn link_text_is_not_searched() {
    assert_eq!(md("[@bob](https://x.example) <https://x.example/@carol> @dave"), ["dave"]);
}

#[test]
fn raw_html_is_text_for_mentions_too() {
    assert_eq!(md("<b>@bob</b>"), ["bob"]);
    assert_eq!(md("<div>\n@carol\n</div>"), ["carol"]);
}

/// The user ids `mentions` may return are those `validate::user_id` accepts.
fn assert_valid_mentions(found: &[String]) {
    assert!(found.windows(2).all(|w| w[0] < w[1]), "not sorted and unique: {found:?}");
    for id in found {
        assert!(validate::user_id("mention", id).is_ok(), "{id:?}");
        assert!(!id.ends_with('.'), "{id:?}");
    }
}

proptest! {
    #[test]
    fn mentions_are_valid_user_ids_on_any_text(source in any::<String>(), plain in any::<bool>()) {
        let format = if plain { Format::Plain } else { Format::Markdown };
        assert_valid_mentions(&mentions(&source, format));
    }

    #[test]
    fn mentions_are_valid_user_ids_on_markup(source in markup()) {
        assert_valid_mentions(&mentions(&source, Format::Markdown));
        assert_valid_mentions(&mentions(&source, Format::Plain));
    }
}

/// Strings built from the pieces that matter to Markdown, HTML and mentions, so that the
/// properties meet real structure rather than mostly plain letters.
fn markup() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "@",
        "@bob",
        "@a.b",
        ".",
        "a",
        " ",
        "\n",
        "\n\n",
        "\r\n",
        "\t",
        "*",
        "**",
        "_",
        "`",
        "```",
        "    ",
        "> ",
        "- ",
        "1. ",
        "[",
        "]",
        "(",
        ")",
        "![",
        "<",
        ">",
        "</",
        "/>",
        "\"",
        "'",
        "=",
        "&",
        "&#x61;",
        "&#106;",
        ";",
        ":",
        "javascript:",
        "JaVaScRiPt:",
        "data:",
        "vbscript:",
        "http://",
        "https://",
        "mailto:",
        "script",
        "svg",
        "iframe",
        "style",
        "object",
        "img",
        "a",
        "p",
        "span",
        " on",
        "onerror=",
        "onclick=",
        "href=",
        "src=",
        "<!--",
        "-->",
        "\\",
        "\u{202E}",
        "\u{200D}",
        "\u{0}",
        "\u{1}",
        "\u{FF1C}",
        "\u{e9}",
        "#",
        "---",
        "|",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|pieces| pieces.concat())
}

#[cfg(feature = "html")]
mod html {
    use super::*;

    fn render(source: &str) -> String {
        render_html(source, Format::Markdown)
    }

    /// Renders and checks the result with [`harm`] too, so every happy path also says the
    /// checker accepts what the subset is meant to produce.
    fn harmless(source: &str, format: Format) -> String {
        let html = render_html(source, format);
        assert_eq!(harm(&html), None, "{source:?} rendered as {html:?}");
        html
    }

    #[test]
    fn inline_elements_render() {
        assert_eq!(
            harmless("plain *italic* _also_ **bold** __also__ `code`", Format::Markdown),
            "<p>plain <em>italic</em> <em>also</em> <strong>bold</strong> <strong>also</strong> <code>code</code></p>\n"
        );
        assert_eq!(harmless("***both***", Format::Markdown), "<p><em><strong>both</strong></em></p>\n");
        assert_eq!(harmless("one\n\ntwo", Format::Markdown), "<p>one</p>\n<p>two</p>\n");
    }

    #[test]
    fn code_blocks_render_literally() {
        assert_eq!(
            harmless("```rust\nlet x = a < b && **c**;\n```", Format::Markdown),
            "<pre><code>let x = a &lt; b &amp;&amp; **c**;\n</code></pre>\n"
        );
        assert_eq!(harmless("    indented <b>\n", Format::Markdown), "<pre><code>indented &lt;b&gt;\n</code></pre>\n");
        assert_eq!(harmless("`<i>` and `*x*`", Format::Markdown), "<p><code>&lt;i&gt;</code> and <code>*x*</code></p>\n");
    }

    #[test]
    fn links_render_with_rel() {
        assert_eq!(
            harmless("[brief](https://firm.example/a?b=1&c=2 \"title\")", Format::Markdown),
            "<p><a href=\"https://firm.example/a?b=1&amp;c=2\" rel=\"noopener noreferrer nofollow\">brief</a></p>\n"
        );
        assert_eq!(
            harmless("<http://firm.example>", Format::Markdown),
            "<p><a href=\"http://firm.example\" rel=\"noopener noreferrer nofollow\">http://firm.example</a></p>\n"
        );
        assert_eq!(
            harmless("<bob@firm.example> [mail](mailto:bob@firm.example)", Format::Markdown),
            "<p><a href=\"mailto:bob@firm.example\" rel=\"noopener noreferrer nofollow\">bob@firm.example</a> \
             <a href=\"mailto:bob@firm.example\" rel=\"noopener noreferrer nofollow\">mail</a></p>\n"
        );
        assert_eq!(
            harmless("[ref][r]\n\n[r]: https://firm.example", Format::Markdown),
            "<p><a href=\"https://firm.example\" rel=\"noopener noreferrer nofollow\">ref</a></p>\n"
        );
        // Relative and other schemes keep their text and lose the link.
        assert_eq!(harmless("[rel](/docs) [ftp](ftp://x.example)", Format::Markdown), "<p>rel ftp</p>\n");
    }

    #[test]
    fn lists_and_quotes_render() {
        assert_eq!(harmless("- one\n- two", Format::Markdown), "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n");
        assert_eq!(harmless("1. one\n2. two", Format::Markdown), "<ol>\n<li>one</li>\n<li>two</li>\n</ol>\n");
        assert_eq!(harmless("3. three\n4. four", Format::Markdown), "<ol start=\"3\">\n<li>three</li>\n<li>four</li>\n</ol>\n");
        assert_eq!(harmless("> said\n> more", Format::Markdown), "<blockquote>\n<p>said<br>\nmore</p>\n</blockquote>\n");
        assert_eq!(
            harmless("- a\n\n  > q\n- b\n  1. c", Format::Markdown),
            "<ul>\n<li>\n<p>a</p>\n<blockquote>\n<p>q</p>\n</blockquote>\n</li>\n<li>\n<p>b</p>\n<ol>\n<li>c</li>\n</ol>\n</li>\n</ul>\n"
        );
    }

    #[test]
    fn line_breaks_render() {
        // Soft (a newline), hard (two spaces, or a backslash): all are breaks in a chat.
        assert_eq!(harmless("one\ntwo  \nthree\\\nfour", Format::Markdown), "<p>one<br>\ntwo<br>\nthree<br>\nfour</p>\n");
    }

    #[test]
    fn mentions_render_as_spans() {
        assert_eq!(
            harmless("hi @bob and @alice@firm.example.", Format::Markdown),
            "<p>hi <span class=\"mention\" data-user=\"bob\">@bob</span> and \
             <span class=\"mention\" data-user=\"alice@firm.example\">@alice@firm.example</span>.</p>\n"
        );
        assert_eq!(harmless("`@bob` alice@firm.example", Format::Markdown), "<p><code>@bob</code> alice@firm.example</p>\n");
    }

    #[test]
    fn what_is_outside_the_subset_is_text() {
        assert_eq!(harmless("# Title\n\n---\n\npara", Format::Markdown), "<p>Title</p>\n<p>para</p>\n");
        assert_eq!(
            harmless("see ![the plan @bob](https://x.example/p.png)", Format::Markdown),
            "<p>see the plan <span class=\"mention\" data-user=\"bob\">@bob</span></p>\n"
        );
        assert_eq!(harmless("~~gone~~ | a | b |", Format::Markdown), "<p>~~gone~~ | a | b |</p>\n");
        assert_eq!(harmless("a <b>bold</b> claim", Format::Markdown), "<p>a &lt;b&gt;bold&lt;/b&gt; claim</p>\n");
        assert_eq!(harmless("<div>\nblock\n</div>", Format::Markdown), "<p>&lt;div&gt;<br>\nblock<br>\n&lt;/div&gt;</p>\n");
    }

    #[test]
    fn plain_text_is_escaped_with_breaks() {
        assert_eq!(
            harmless("a < b & **c**\n<script>x</script>\r\n@bob", Format::Plain),
            "a &lt; b &amp; **c**<br>\n&lt;script&gt;x&lt;/script&gt;<br>\n<span class=\"mention\" data-user=\"bob\">@bob</span>"
        );
    }

    /// The tags the subset produces, and the attributes each may carry.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("p", &[]),
        ("br", &[]),
        ("strong", &[]),
        ("em", &[]),
        ("code", &[]),
        ("pre", &[]),
        ("a", &["href", "rel"]),
        ("ul", &[]),
        ("ol", &["start"]),
        ("li", &[]),
        ("blockquote", &[]),
        ("span", &["class", "data-user"]),
    ];

    /// Why `html` could run script, load something or spoof its text; `None` if it is
    /// harmless. It reads HTML as the sanitiser writes it (attribute values in double quotes,
    /// `<` in text escaped), and anything else it cannot read is harm too.
    fn harm(html: &str) -> Option<String> {
        let lower = html.to_ascii_lowercase();
        for needle in ["<script", "<svg", "<iframe", "<style", "<object", "<embed", "<img", "<!", "\u{202E}", "\u{202D}"] {
            if lower.contains(needle) {
                return Some(format!("contains {needle:?}"));
            }
        }
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            let tail = &rest[open + 1..];
            let Some(close) = tail.find('>') else { return Some(format!("unclosed tag at {tail:?}")) };
            if let Some(why) = tag_harm(&tail[..close]) {
                return Some(format!("<{}>: {why}", &tail[..close]));
            }
            rest = &tail[close + 1..];
        }
        None
    }

    fn tag_harm(tag: &str) -> Option<String> {
        let (closing, body) = match tag.strip_prefix('/') {
            Some(body) => (true, body),
            None => (false, tag),
        };
        let name_end = body.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(body.len());
        let name = body[..name_end].to_ascii_lowercase();
        let Some((_, attributes)) = ALLOWED.iter().find(|(allowed, _)| *allowed == name) else {
            return Some(format!("tag {name:?} is not allowed"));
        };
        let mut rest = &body[name_end..];
        if closing && !rest.is_empty() {
            return Some("a closing tag with attributes".into());
        }
        while !rest.is_empty() {
            let Some(attribute) = rest.strip_prefix(' ') else { return Some(format!("cannot read {rest:?}")) };
            let Some((attribute, after)) = attribute.split_once("=\"") else { return Some(format!("cannot read {attribute:?}")) };
            let Some((value, after)) = after.split_once('"') else { return Some(format!("unterminated value of {attribute:?}")) };
            rest = after;
            let attribute = attribute.to_ascii_lowercase();
            if attribute.starts_with("on") {
                return Some(format!("event handler {attribute:?}"));
            }
            if !attributes.contains(&attribute.as_str()) {
                return Some(format!("attribute {attribute:?} is not allowed on {name:?}"));
            }
            let lower = value.to_ascii_lowercase();
            let fine = match attribute.as_str() {
                "href" => ["http://", "https://", "mailto:"].iter().any(|scheme| lower.starts_with(scheme)),
                "rel" => value == "noopener noreferrer nofollow",
                "class" => value == "mention",
                "data-user" => validate::user_id("data-user", value).is_ok(),
                "start" => value.bytes().all(|b| b.is_ascii_digit()),
                _ => false,
            };
            if !fine {
                return Some(format!("{attribute}={value:?}"));
            }
        }
        if name == "a" && !closing && !body.contains(" rel=\"noopener noreferrer nofollow\"") {
            return Some("a link without rel".into());
        }
        None
    }

    /// pulldown-cmark's own rendering, raw HTML and every link included: what the page would
    /// get without this module.
    fn unsanitised(source: &str) -> String {
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, Parser::new(source));
        html
    }

    /// An attack, and whether pulldown-cmark's rendering without this module would carry it
    /// (`false` where CommonMark alone already makes it text).
    struct Attack {
        source: &'static str,
        harmful_unsanitised: bool,
    }

    const fn attack(source: &'static str, harmful_unsanitised: bool) -> Attack {
        Attack { source, harmful_unsanitised }
    }

    const CORPUS: &[Attack] = &[
        // Script tags, as a block and inline, split and nested.
        attack("<script>alert(1)</script>", true),
        attack("hi <script>alert(1)</script> there", true),
        attack("<SCRIPT SRC=https://evil.example/x.js></SCRIPT>", true),
        attack("<scr<script>ipt>alert(1)</script>", true),
        attack("<<script>alert(1)//<</script>", true),
        attack("**<script>alert(1)</script>**", true),
        // Event handlers.
        attack("<img src=x onerror=alert(1)>", true),
        attack("x <img src=x onerror=alert(1)>", true),
        attack("<a onclick=\"alert(1)\" href=\"https://ok.example\">x</a>", true),
        attack("<A HREF=https://ok.example OnMouseOver=alert(1)>x</A>", true),
        attack("<p/onclick=alert(1)>x</p>", false),
        attack("<body onload=alert(1)>", true),
        attack("[<img src=x onerror=alert(1)>](https://ok.example)", true),
        attack("![x\" onerror=\"alert(1)](https://ok.example/p.png)", true),
        // Dangerous schemes as Markdown links, reference links, images and autolinks.
        attack("[x](javascript:alert(1))", true),
        attack("[x](JaVaScRiPt:alert(1))", true),
        attack("[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)", true),
        attack("[x](vbscript:msgbox(1))", true),
        attack("[x][r]\n\n[r]: javascript:alert(1)", true),
        attack("![x](javascript:alert(1))", true),
        attack("<javascript:alert(1)>", true),
        attack("<JaVaScRiPt:alert(1)>", true),
        attack("<data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==>", true),
        attack("<vbscript:msgbox(1)>", true),
        attack("<a href=\"javascript:alert(1)\">x</a>", true),
        // Entity-encoded schemes.
        attack("[x](jav&#x61;script:alert(1))", true),
        attack("[x](&#106;avascript:alert(1))", true),
        attack("[x](javascript&#58;alert(1))", true),
        attack("[x](&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;&#x3A;alert(1))", true),
        attack("<a href=\"jav&#x61;script:alert(1)\">x</a>", true),
        // Whitespace and control characters inside or before a scheme (browsers drop them).
        attack("[x](<java\tscript:alert(1)>)", true),
        attack("[x](java&#9;script:alert(1))", true),
        attack("[x](java&#10;script:alert(1))", true),
        attack("[x](\u{1}javascript:alert(1))", false),
        attack("[x](<\u{1}javascript:alert(1)>)", true),
        attack("[x]( javascript:alert(1))", true),
        attack("[x](<\u{7f}javascript:alert(1)>)", true),
        attack("<a href=\"java&#x0A;script:alert(1)\">x</a>", true),
        attack("<a href=\" &#14; javascript:alert(1)\">x</a>", true),
        // Breaking out of an attribute.
        attack("[x](https://ok.example \"\\\" onmouseover=\\\"alert(1)\")", true),
        attack("<https://ok.example/\"onmouseover=\"alert(1)>", true),
        attack("@bob\"onmouseover=\"alert(1)", false),
        // Other elements that run script, load content or change the page.
        attack("<svg onload=alert(1)>", true),
        attack("<svg><script>alert(1)</script></svg>", true),
        attack("<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>", true),
        attack("<iframe src=\"javascript:alert(1)\"></iframe>", true),
        attack("<iframe srcdoc=\"&lt;script&gt;alert(1)&lt;/script&gt;\">", true),
        attack("<style>body{background:url(javascript:alert(1))}</style>", true),
        attack("<p style=\"background:url(javascript:alert(1))\">x</p>", true),
        attack("<object data=\"javascript:alert(1)\"></object>", true),
        attack("<embed src=\"javascript:alert(1)\">", true),
        attack("<form action=javascript:alert(1)><button>x</button></form>", true),
        attack("<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">", true),
        attack("<base href=\"javascript:/\">", true),
        attack("<link rel=stylesheet href=https://evil.example/x.css>", true),
        attack("<template><script>alert(1)</script></template>", true),
        attack("<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">", true),
        attack("<p id=\"main\" class=\"admin\">x</p>", true),
        // Broken and unclosed markup.
        attack("<img src=x onerror=alert(1)//", false),
        attack("<a href=\"javascript:alert(1)\" <b>x", true),
        attack("<script>alert(1)", true),
        attack("<div><p>unclosed <em>x", true),
        attack("</p><script>alert(1)</script><p>", true),
        attack("<![CDATA[<script>alert(1)</script>]]>", true),
        // Comments.
        attack("<!-- <script>alert(1)</script> -->", true),
        attack("<!--><script>alert(1)</script>-->", true),
        attack("<!--[if IE]><script>alert(1)</script><![endif]-->", true),
        attack("x <!-- y --> z", true),
        // Unicode tricks.
        attack("invoice\u{202E}fdp.exe", true),
        attack("[invoice\u{202E}fdp.exe](https://evil.example/x.exe)", true),
        attack("\u{2066}@bob\u{2069} says \u{202D}hi", true),
        attack("[x](java\u{200D}script:alert(1))", true),
        attack("<scr\u{200B}ipt>alert(1)</scr\u{200B}ipt>", false),
        attack("\u{FF1C}script\u{FF1E}alert(1)\u{FF1C}/script\u{FF1E}", false),
        attack("<scr\u{0}ipt>alert(1)</script>", true),
        attack("`<script>alert(1)</script>`", false),
    ];

    #[test]
    fn checker_flags_unsanitised_html() {
        // The checker is what the corpus test relies on: show it would catch the real thing.
        for bad in [
            "<script>alert(1)</script>",
            "<p onclick=\"alert(1)\">x</p>",
            "<p ONCLICK=\"alert(1)\">x</p>",
            "<a href=\"javascript:alert(1)\" rel=\"noopener noreferrer nofollow\">x</a>",
            "<a href=\"/relative\" rel=\"noopener noreferrer nofollow\">x</a>",
            "<a href=\"https://ok.example\">no rel</a>",
            "<span class=\"admin\">x</span>",
            "<p style=\"x\">x</p>",
            "<p id=\"x\">x</p>",
            "<img src=\"https://x.example/p.png\">",
            "<p",
            "<p x=y>",
            "a\u{202E}b",
        ] {
            assert!(harm(bad).is_some(), "the checker passes {bad:?}");
        }
        let misjudged: Vec<_> = CORPUS
            .iter()
            .map(|attack| (attack, unsanitised(attack.source)))
            .filter(|(attack, raw)| harm(raw).is_some() != attack.harmful_unsanitised)
            .map(|(attack, raw)| format!("{:?} renders unsanitised as {raw:?}", attack.source))
            .collect();
        assert!(misjudged.is_empty(), "{misjudged:#?}");
    }

    #[test]
    fn attacks_render_harmless() {
        for attack in CORPUS {
            harmless(attack.source, Format::Markdown);
            harmless(attack.source, Format::Plain);
        }
    }

    #[test]
    fn attacks_keep_their_text() {
        // Harmless is not enough: the reader must still see what was sent.
        assert_eq!(render("<script>alert(1)</script>"), "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n");
        assert_eq!(render("<img src=x onerror=alert(1)>"), "<p>&lt;img src=x onerror=alert(1)&gt;</p>\n");
        assert_eq!(render("[x](javascript:alert(1)) <javascript:alert(1)>"), "<p>x javascript:alert(1)</p>\n");
        assert_eq!(render("[x](jav&#x61;script:alert(1))"), "<p>x</p>\n");
        assert_eq!(render("<!-- c -->"), "<p>&lt;!-- c --&gt;</p>\n");
        assert_eq!(render("invoice\u{202E}fdp.exe"), "<p>invoicefdp.exe</p>\n");
        assert_eq!(render("java\u{200D}script"), "<p>java\u{200D}script</p>\n");
        assert_eq!(render("\u{FF1C}script\u{FF1E}"), "<p>\u{FF1C}script\u{FF1E}</p>\n");
    }

    proptest! {
        #[test]
        fn render_html_is_harmless_on_any_text(source in any::<String>(), plain in any::<bool>()) {
            let format = if plain { Format::Plain } else { Format::Markdown };
            let html = render_html(&source, format);
            prop_assert_eq!(harm(&html), None, "{:?} rendered as {:?}", source, html);
        }

        #[test]
        fn render_html_is_harmless_on_markup(source in markup()) {
            for format in [Format::Markdown, Format::Plain] {
                let html = render_html(&source, format);
                prop_assert_eq!(harm(&html), None, "{:?} rendered as {:?}", source, html);
            }
        }

        #[test]
        fn every_mention_is_rendered_as_one(source in markup()) {
            for format in [Format::Markdown, Format::Plain] {
                let html = render_html(&source, format);
                for id in mentions(&source, format) {
                    let span = format!("<span class=\"mention\" data-user=\"{id}\">@{id}</span>");
                    prop_assert!(html.contains(&span), "{:?}: {:?} lacks {}", source, html, span);
                }
            }
        }
    }
}
