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
//! it again changes nothing.
//!
//! Which *kind* of file it is, is not decided by the name or by what the sender declares:
//! [`check_content`] looks at the first [`SNIFF_BYTES`] of the content (magic bytes) and
//! takes only the types of an allow-list ([`DEFAULT_ALLOWED_TYPES`]: PDF, Office
//! documents, common images, plain text). An executable renamed `.pdf` is an executable.

use crate::pb;
use crate::validate::ValidationError;

/// How much of the start of a file [`check_content`] looks at.
pub const SNIFF_BYTES: usize = 8 * 1024;

/// The attachment types allowed unless configured otherwise (MIME types).
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "application/pdf",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/plain",
];

/// What a file's content turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// Its MIME type.
    pub mime: &'static str,
    /// How a message carrying it is typed: images are `IMAGE`, the rest `DOCUMENT`.
    pub content_type: pb::ContentType,
}

/// What the content starting with `head` (the first [`SNIFF_BYTES`], or all of a smaller
/// file) is, by its magic bytes; `None` when it is nothing recognisable. Text is
/// recognised as UTF-8 without control characters other than tab, line breaks and form
/// feed (a multi-byte character cut off at the end of `head` is fine).
pub fn detect(head: &[u8]) -> Option<&'static str> {
    if let Some(kind) = infer::get(head) {
        return Some(kind.mime_type());
    }
    is_plain_text(head).then_some("text/plain")
}

/// Checks that the content starting with `head` is of a type in `allowed`; the error says
/// what it is instead.
pub fn check_content<S: AsRef<str>>(head: &[u8], allowed: &[S]) -> Result<Detected, ValidationError> {
    let allowed_list = || allowed.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ");
    let Some(mime) = detect(head) else {
        return Err(ValidationError::new("content", format!("is not a file type that can be attached (allowed: {})", allowed_list())));
    };
    if !allowed.iter().any(|a| a.as_ref().eq_ignore_ascii_case(mime)) {
        return Err(ValidationError::new("content", format!("is {mime}, which cannot be attached (allowed: {})", allowed_list())));
    }
    let content_type = if mime.starts_with("image/") { pb::ContentType::Image } else { pb::ContentType::Document };
    Ok(Detected { mime, content_type })
}

fn is_plain_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // Cut inside a character at the end of the sample: judge what came before it.
        Err(e) if e.error_len().is_none() && head.len() >= SNIFF_BYTES => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(text) => text,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

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

    /// The first bytes of a ZIP whose first entry is `name` (enough for type detection).
    fn zip_head(name: &str) -> Vec<u8> {
        let mut b = b"PK\x03\x04".to_vec();
        b.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        b.extend_from_slice(&[0; 12]); // crc, sizes
        b.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
        b.extend_from_slice(&[0, 0]); // extra length
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"<?xml version=\"1.0\"?><w:document/>");
        b
    }

    #[test]
    fn content_decides_the_type_not_the_name() {
        let allowed = DEFAULT_ALLOWED_TYPES;
        let ok = |head: &[u8]| check_content(head, allowed).map(|d| (d.mime, d.content_type));
        assert_eq!(ok(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"), Ok(("application/pdf", pb::ContentType::Document)));
        assert_eq!(ok(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Ok(("image/png", pb::ContentType::Image)));
        assert_eq!(ok(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), Ok(("image/jpeg", pb::ContentType::Image)));
        assert_eq!(ok(b"GIF89a\x01\0\x01\0"), Ok(("image/gif", pb::ContentType::Image)));
        assert_eq!(
            ok(&zip_head("word/document.xml")),
            Ok(("application/vnd.openxmlformats-officedocument.wordprocessingml.document", pb::ContentType::Document))
        );
        assert_eq!(ok("Schriftsatz vom 3. Dezember\r\n\tMüller ./. Schmidt\n".as_bytes()), Ok(("text/plain", pb::ContentType::Document)));

        // An executable is an executable, whatever it is called.
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
        elf.resize(64, 0);
        let err = check_content(&elf, allowed).unwrap_err();
        assert_eq!(err.field, "content");
        assert!(err.reason.contains("application/x-executable"), "{}", err.reason);
        let mut pe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
        pe.resize(0x40, 0);
        pe[0x3c] = 0x40;
        pe.extend_from_slice(b"PE\0\0");
        assert!(check_content(&pe, allowed).is_err());
        for refused in [
            &b"#!/bin/sh\nrm -rf /\n"[..],
            b"<!DOCTYPE html><html><script>alert(1)</script>",
            &zip_head("payload.exe"),
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 not really a compound file",
            b"\0\x01\x02binary",
            b"",
        ] {
            assert!(check_content(refused, allowed).is_err(), "{refused:?}");
        }
        // The allow-list is the configuration's.
        assert!(check_content(b"%PDF-1.7", &["image/png"]).unwrap_err().reason.contains("application/pdf"));
    }

    #[test]
    fn text_cut_inside_a_character_at_the_end_of_the_sample_is_text() {
        let mut head = format!("a{}", "ä".repeat(SNIFF_BYTES / 2 - 1)).into_bytes();
        head.push(0xc3); // the first byte of another "ä", cut off
        assert_eq!(head.len(), SNIFF_BYTES);
        assert_eq!(detect(&head), Some("text/plain"));
        // Invalid UTF-8 in the middle is not text.
        assert_eq!(detect(b"abc\xff\xfedef"), None);
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
            // The last part, as it would be alone (a device name like `con` gets its `_`).
            prop_assert_eq!(sanitize_file_name(&path), sanitize_file_name(parts.last().unwrap()));
            prop_assert!(!sanitize_file_name(&path).contains('/'));
        }
    }
}
