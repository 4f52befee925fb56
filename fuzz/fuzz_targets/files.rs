//! Arbitrary attachment heads and names: type detection (which parses ZIP headers and OLE2
//! compound files from untrusted bytes) and name sanitizing must never panic; a sanitized
//! name is safe and stable; whatever is accepted is on the allow-list.
#![no_main]

use legalchat_protocol::files::{self, DEFAULT_ALLOWED_TYPES, MAX_FILE_NAME_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(detected) = files::check_content(data, DEFAULT_ALLOWED_TYPES) {
        assert!(DEFAULT_ALLOWED_TYPES.contains(&detected.mime), "{} accepted", detected.mime);
    }
    let name = files::sanitize_file_name(&String::from_utf8_lossy(data));
    assert!(!name.is_empty() && name.len() <= MAX_FILE_NAME_BYTES);
    assert!(!name.contains(['/', '\\']), "{name:?}");
    assert_eq!(files::sanitize_file_name(&name), name);
});
