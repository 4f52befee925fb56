//! Message encryption for Web Push (RFC 8291) in the `aes128gcm` content coding (RFC 8188).
//!
//! ```text
//!  ecdh   = ECDH(as_private, ua_public)                        ephemeral key, one per message
//!  ikm    = HKDF(salt = auth, ikm = ecdh, "WebPush: info\0" ‖ ua_public ‖ as_public, 32)
//!  cek    = HKDF(salt, ikm, "Content-Encoding: aes128gcm\0", 16)
//!  nonce  = HKDF(salt, ikm, "Content-Encoding: nonce\0", 12)
//!  body   = salt(16) ‖ rs(4, BE) ‖ idlen(1) = 65 ‖ as_public(65) ‖ AES-128-GCM(cek, nonce, plaintext ‖ 0x02)
//! ```
//!
//! One record only (RFC 8291 §4), so the nonce is used as derived (record sequence 0).
//! The randomness — the application server's ephemeral key and the salt — comes in as
//! parameters, so the RFC's Appendix A vector can be reproduced exactly; [`encrypt`] draws
//! fresh ones for every message.

use aes_gcm::aead::{Aead as _, KeyInit as _};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use sha2::Sha256;

/// The record size announced in the header. A push service must accept bodies of 4,096
/// bytes (RFC 8030 §7.2), and the single record must fit in it.
pub const RECORD_SIZE: u32 = 4_096;

/// Bytes of the `aes128gcm` header: salt, record size, key id length, key id.
pub const HEADER_LEN: usize = 16 + 4 + 1 + 65;

/// AES-GCM authentication tag.
const TAG_LEN: usize = 16;

/// Largest plaintext that fits in one push message of [`RECORD_SIZE`] bytes with its header,
/// padding delimiter and tag (3,993 bytes).
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - HEADER_LEN - 1 - TAG_LEN;

/// Why a payload could not be encrypted for a subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The subscription's `p256dh` is not a point on P-256.
    #[error("the subscription's p256dh is not a valid P-256 public key")]
    BadSubscriberKey,
    /// The subscription's `auth` secret is not 16 bytes.
    #[error("the subscription's auth secret is {0} bytes, not 16")]
    BadAuthSecret(usize),
    /// The payload does not fit in one push message.
    #[error("payload of {0} bytes exceeds {MAX_PLAINTEXT}")]
    TooLarge(usize),
    /// Key derivation or the cipher refused its input (not expected for valid keys).
    #[error("key derivation or AES-GCM failed")]
    Cipher,
}

/// Encrypts `plaintext` for the user agent whose subscription holds `ua_public` (65 bytes,
/// uncompressed) and `auth_secret` (16 bytes), with a fresh ephemeral key and salt.
pub fn encrypt(plaintext: &[u8], ua_public: &[u8], auth_secret: &[u8]) -> Result<Vec<u8>, EncryptError> {
    encrypt_with(plaintext, ua_public, auth_secret, &random_secret_key(), rand::random())
}

/// [`encrypt`] with the application server's ephemeral key `as_private` and `salt` given.
/// Reusing either across messages breaks the encryption; only tests should call this.
pub fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth_secret: &[u8],
    as_private: &p256::SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    if auth_secret.len() != 16 {
        return Err(EncryptError::BadAuthSecret(auth_secret.len()));
    }
    let ua_key = p256::PublicKey::from_sec1_bytes(ua_public).map_err(|_| EncryptError::BadSubscriberKey)?;
    // The key info binds both public keys exactly as sent, uncompressed.
    let ua_point = ua_key.to_encoded_point(false);
    let as_point = as_private.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(as_private.to_nonzero_scalar(), ua_key.as_affine());

    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_point.as_bytes());
    key_info.extend_from_slice(as_point.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth_secret), &shared.raw_secret_bytes()[..]).expand(&key_info, &mut ikm).map_err(|_| EncryptError::Cipher)?;

    let content = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    content.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|_| EncryptError::Cipher)?;
    content.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| EncryptError::Cipher)?;

    // The last (and only) record ends with the delimiter 0x02 and carries no padding:
    // notifications are short and their length says little beyond "a message arrived".
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let cipher = aes_gcm::Aes128Gcm::new(&cek.into());
    let sealed = cipher.encrypt(&nonce.into(), record.as_slice()).map_err(|_| EncryptError::Cipher)?;

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_point.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// A uniformly random P-256 private key. Drawn from `rand`'s OS-seeded generator as 32
/// bytes and retried in the (2^-32) case that they are not a valid scalar, which keeps this
/// independent of the RNG trait version the elliptic-curve crates expect.
pub fn random_secret_key() -> p256::SecretKey {
    loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(key) = p256::SecretKey::from_bytes(&bytes.into()) {
            return key;
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    // RFC 8291, Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn reproduces_the_rfc_8291_appendix_a_vector() {
        let as_private = p256::SecretKey::from_slice(&b64(AS_PRIVATE)).unwrap();
        assert_eq!(as_private.public_key().to_encoded_point(false).as_bytes(), b64(AS_PUBLIC).as_slice());
        let salt: [u8; 16] = b64(SALT).try_into().unwrap();
        let body = encrypt_with(PLAINTEXT.as_bytes(), &b64(UA_PUBLIC), &b64(AUTH), &as_private, salt).unwrap();
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&body), BODY);
    }

    /// The user agent's side, written from the RFC's steps with primitives only, so that a
    /// mistake shared with [`encrypt_with`] cannot hide.
    fn decrypt(body: &[u8], ua_private: &p256::SecretKey, auth: &[u8]) -> Vec<u8> {
        use hmac::Mac as _;
        type HmacSha256 = hmac::Hmac<Sha256>;
        fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(key).unwrap();
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        let (salt, rest) = body.split_at(16);
        let rs = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let idlen = usize::from(rest[4]);
        let as_public = &rest[5..5 + idlen];
        let ciphertext = &rest[5 + idlen..];
        assert!(ciphertext.len() <= rs as usize, "one record");
        let ua_public = ua_private.public_key().to_encoded_point(false);
        let peer = p256::PublicKey::from_sec1_bytes(as_public).unwrap();
        let ecdh = p256::ecdh::diffie_hellman(ua_private.to_nonzero_scalar(), peer.as_affine());
        // HKDF by hand: extract = HMAC(salt, ikm); one-block expand = HMAC(prk, info ‖ 0x01).
        let prk_key = hmac(auth, &[&ecdh.raw_secret_bytes()[..]]);
        let ikm = hmac(&prk_key, &[b"WebPush: info\0", ua_public.as_bytes(), as_public, &[1]]);
        let prk = hmac(salt, &[&ikm]);
        let cek = &hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]])[..16];
        let nonce: [u8; 12] = hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]])[..12].try_into().unwrap();
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(cek).unwrap();
        let mut plain = cipher.decrypt(&nonce.into(), ciphertext).unwrap();
        // Strip padding zeros, then the last-record delimiter.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "last record delimiter");
        plain
    }

    #[test]
    fn the_appendix_vector_decrypts_with_the_independent_reader() {
        let ua_private = p256::SecretKey::from_slice(&b64(UA_PRIVATE)).unwrap();
        assert_eq!(ua_private.public_key().to_encoded_point(false).as_bytes(), b64(UA_PUBLIC).as_slice());
        assert_eq!(decrypt(&b64(BODY), &ua_private, &b64(AUTH)), PLAINTEXT.as_bytes());
    }

    #[test]
    fn fresh_messages_round_trip_and_differ() {
        let ua_private = random_secret_key();
        let ua_public = ua_private.public_key().to_encoded_point(false);
        let auth: [u8; 16] = rand::random();
        let payload = br#"{"type":"message","sender_id":"alice"}"#;
        let a = encrypt(payload, ua_public.as_bytes(), &auth).unwrap();
        let b = encrypt(payload, ua_public.as_bytes(), &auth).unwrap();
        assert_ne!(a, b, "salt and ephemeral key are fresh per message");
        assert_eq!(decrypt(&a, &ua_private, &auth), payload);
        assert_eq!(decrypt(&b, &ua_private, &auth), payload);
        assert_eq!(a.len(), HEADER_LEN + payload.len() + 1 + TAG_LEN);

        let largest = vec![b'x'; MAX_PLAINTEXT];
        let body = encrypt(&largest, ua_public.as_bytes(), &auth).unwrap();
        assert_eq!(body.len(), RECORD_SIZE as usize);
        assert_eq!(decrypt(&body, &ua_private, &auth), largest);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ua = random_secret_key().public_key().to_encoded_point(false);
        let auth = [7u8; 16];
        assert_eq!(encrypt(&vec![0; MAX_PLAINTEXT + 1], ua.as_bytes(), &auth), Err(EncryptError::TooLarge(MAX_PLAINTEXT + 1)));
        assert_eq!(encrypt(b"x", ua.as_bytes(), &auth[..15]), Err(EncryptError::BadAuthSecret(15)));
        let mut off_curve = ua.as_bytes().to_vec();
        off_curve[64] ^= 1;
        assert_eq!(encrypt(b"x", &off_curve, &auth), Err(EncryptError::BadSubscriberKey));
        assert_eq!(encrypt(b"x", &[4; 65], &auth), Err(EncryptError::BadSubscriberKey));
        assert_eq!(encrypt(b"x", &[], &auth), Err(EncryptError::BadSubscriberKey));
    }
}
