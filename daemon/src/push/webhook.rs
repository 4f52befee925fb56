//! The signed webhook to the firm's notification service.
//!
//! ```text
//!  POST <push.webhook_url>
//!  Content-Type: application/json
//!  X-LegalChat-Timestamp: <unix seconds>
//!  X-LegalChat-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! ```
//!
//! Signing the timestamp with the body lets the receiver reject replays: it checks the
//! signature in constant time, then that the timestamp is recent (`docs/push.md`). Every
//! attempt is signed afresh, so a retry an hour later still passes a five-minute window.

use hmac::Mac as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "x-legalchat-timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-legalchat-signature";

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"` with `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn any_change_changes_the_signature() {
        let base = signature(b"k1", 10, b"body");
        assert_ne!(base, signature(b"k2", 10, b"body"));
        assert_ne!(base, signature(b"k1", 11, b"body"));
        assert_ne!(base, signature(b"k1", 10, b"body "));
        // The dot separates: "1" + "0.body" is not "10" + ".body".
        assert_ne!(signature(b"k1", 1, b"0.body"), signature(b"k1", 10, b".body"));
        assert_eq!(base, signature(b"k1", 10, b"body"));
    }
}
