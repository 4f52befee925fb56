//! Attachment file names a client gives, made safe to store, show and save.
//!
//! A name comes from someone else's machine and ends up in a download dialog, a file
//! system or a log line. [`sanitize_file_name`] keeps what a person would recognise and
//! removes what could mislead or break something:
//!
//! ```text
//!  "../../etc/passwd"          → "passwd"              only the last path component
//!  "C:\\Users\\a\\report.pdf"   → "report.pdf"          (either separator)
//!  "invoice\u{202E}fdp.exe"     → "invoicefdp.exe"      bidi overrides (the name shown "invoiceexe.pdf")
//!  "a\u{0}b\tc.txt"             → "ab c.txt"            control characters; whitespace as one space
//!  "what?.pdf"                  → "what_.pdf"           characters Windows reserves
//!  "CON.txt", "lpt1"            → "_CON.txt", "_lpt1"   Windows device names
//!  "  .hidden  "                → "hidden"              leading dots, trailing dots and spaces
//!  300 × "a" + ".pdf"           → 251 × "a" + ".pdf"    at most 255 bytes, the extension kept
//!  "", "..", "\u{202E}"         → "file"                nothing left
//! ```
//!
//! The result is never empty, never longer than [`MAX_FILE_NAME_BYTES`], and sanitizing
//! it again changes nothing. Which *kind* of file it is, is not decided by the name: the
//! server looks at the content.

/// Longest file name kept, in bytes of UTF-8 (what most file systems allow).
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest extension kept whole when a long name is shortened (".docx" is 5).
const MAX_KEPT_EXTENSION_BYTES: usize = 16;
/// The name given when nothing usable is left.
pub const FALLBACK_FILE_NAME: &str = "file";

/// Device names Windows reserves in every directory, with or without an extension.
const RESERVED_DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9", "LPT1", "LPT2", "LPT3", "LPT4",
    "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A safe version of the file name `name`; see the module documentation.
pub fn sanitize_file_name(name: &str) -> String {
    // Only the last component of any path, whichever separator the sender's system uses.
    let last = name.rsplit(['/', '\\']).find(|part| !part.trim().is_empty()).unwrap_or("");
    let mut out = String::with_capacity(last.len().min(MAX_FILE_NAME_BYTES));
    let mut space = false;
    for c in last.chars() {
        if c.is_whitespace() {
            // Runs of any whitespace (tabs and line breaks too) become one plain space.
            space = true;
            continue;
        }
        if is_invisible_or_control(c) {
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c });
    }
    // No hidden files, and no names Windows would silently change.
    let trimmed = out.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let mut name = shorten(trimmed);
    if name.is_empty() {
        return FALLBACK_FILE_NAME.to_owned();
    }
    let stem = name.split('.').next().unwrap_or("");
    if RESERVED_DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem.trim_end())) {
        name.insert(0, '_');
        name = shorten(&name);
    }
    name
}

/// Characters that are not seen but change what is seen, or that terminals and file
/// systems treat specially: controls, bidirectional formatting, zero-width characters.
fn is_invisible_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
            | '\u{061C}'              // Arabic letter mark
            | '\u{FEFF}'              // byte order mark
        )
}

/// At most [`MAX_FILE_NAME_BYTES`], cut at a character boundary, keeping a short
/// extension whole; the cut leaves no trailing dot or space.
fn shorten(name: &str) -> String {
    if name.len() <= MAX_FILE_NAME_BYTES {
        return name.to_owned();
    }
    let extension = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_KEPT_EXTENSION_BYTES => &name[dot..],
        _ => "",
    };
    let mut end = MAX_FILE_NAME_BYTES - extension.len();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let stem = name[..end].trim_end_matches(['.', ' ']);
    format!("{stem}{extension}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn hostile_names_are_made_safe() {
        let cases = [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\Windows\\system32\\drivers\\etc\\hosts", "hosts"),
            ("C:\\Users\\a\\report.pdf", "report.pdf"),
            ("dir/", "dir"),
            ("invoice\u{202E}fdp.exe", "invoicefdp.exe"),
            ("a\u{2066}b\u{2069}\u{200B}c.txt", "abc.txt"),
            ("a\u{0}b\nc\r\t.txt", "ab c .txt"),
            ("\u{FEFF}bom.txt", "bom.txt"),
            ("what?<now>:*|\".pdf", "what__now_____.pdf"),
            ("CON", "_CON"),
            ("con.txt", "_con.txt"),
            ("Lpt9.tar.gz", "_Lpt9.tar.gz"),
            ("COM10.txt", "COM10.txt"),
            ("CONSOLE.txt", "CONSOLE.txt"),
            ("  .hidden  ", "hidden"),
            ("...", FALLBACK_FILE_NAME),
            ("name. . .", "name"),
            ("Smith   v.\tJones.docx", "Smith v. Jones.docx"),
            ("", FALLBACK_FILE_NAME),
            ("..", FALLBACK_FILE_NAME),
            ("/", FALLBACK_FILE_NAME),
            ("\u{202E}", FALLBACK_FILE_NAME),
            ("Schriftsatz – Müller ✓.pdf", "Schriftsatz – Müller ✓.pdf"),
        ];
        for (hostile, safe) in cases {
            assert_eq!(sanitize_file_name(hostile), safe, "{hostile:?}");
        }
    }

    #[test]
    fn long_names_keep_their_extension_and_a_whole_character() {
        let long = format!("{}.pdf", "a".repeat(300));
        let short = sanitize_file_name(&long);
        assert_eq!(short.len(), MAX_FILE_NAME_BYTES);
        assert!(short.ends_with(".pdf"));
        // A multi-byte character at the cut is not split.
        let wide = format!("{}.docx", "ä".repeat(200));
        let short = sanitize_file_name(&wide);
        assert!(short.len() <= MAX_FILE_NAME_BYTES && short.ends_with(".docx"), "{short}");
        // A "extension" too long to be one is cut like the rest.
        let odd = format!("a.{}", "b".repeat(400));
        assert_eq!(sanitize_file_name(&odd).len(), MAX_FILE_NAME_BYTES);
    }

    proptest! {
        #[test]
        fn any_name_comes_out_safe_and_stable(name in any::<String>()) {
            let safe = sanitize_file_name(&name);
            prop_assert!(!safe.is_empty() && safe.len() <= MAX_FILE_NAME_BYTES);
            prop_assert!(!safe.contains(['/', '\\', '<', '>', ':', '"', '|', '?', '*']));
            prop_assert!(!safe.chars().any(is_invisible_or_control));
            prop_assert!(!safe.starts_with(['.', ' ']) && !safe.ends_with(['.', ' ']));
            let stem = safe.split('.').next().unwrap_or("");
            prop_assert!(!RESERVED_DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem)));
            prop_assert_eq!(sanitize_file_name(&safe), safe.clone(), "sanitizing twice changes nothing");
        }

        #[test]
        fn path_like_names_keep_only_their_last_part(parts in proptest::collection::vec("[a-z]{1,8}", 1..5)) {
            let path = parts.join("/");
            prop_assert_eq!(sanitize_file_name(&path), parts.last().unwrap().clone());
        }
    }
}
