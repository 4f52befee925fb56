//! Encryption at rest.
//!
//! ```text
//!  master key (file / LEGALCHAT_MASTER_KEY)
//!      │ wraps (AES-256-GCM, AAD = "legalchat/dek/v1" ‖ conversation id)
//!      ▼
//!  data key, one per conversation (random 256 bits)
//!      │ seals (AES-256-GCM, AAD = "legalchat/msg/v1" ‖ conversation id ‖ seq)
//!      ▼
//!  stored message record
//! ```
//!
//! The associated data binds every ciphertext to its place: a record copied to another
//! conversation or another sequence number fails to open, so nobody with write access to
//! the disk can splice one client's message into another's transcript. Nonces are 96
//! random bits per seal; at the 2^32 seals per key where random nonces start to get risky,
//! a conversation would have sent four billion messages. Attachments are sealed in chunks
//! under the same data key, each bound to its file and position ([`stream`]).

pub mod stream;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

const NONCE_LEN: usize = 12;
const DEK_AAD: &[u8] = b"legalchat/dek/v1";
const MSG_AAD: &[u8] = b"legalchat/msg/v1";
/// A version in a message's audit trail: a domain of its own, so that a version can never
/// be opened as a log entry (or the other way round), even at the same seq.
const AUDIT_AAD: &[u8] = b"legalchat/aud/v1";
/// A file's metadata record.
const FILE_RECORD_AAD: &[u8] = b"legalchat/fmd/v1";
/// What the data key's file-id key is derived for.
const FILE_ID_DOMAIN: &[u8] = b"legalchat/fid/v1";

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ciphertext is corrupt, truncated, or was moved from elsewhere.
    #[error("ciphertext failed authentication (corrupt, truncated or moved)")]
    Authentication,
    /// A key of the wrong size or encoding.
    #[error("bad key: {0}")]
    BadKey(String),
}

/// The key that wraps every conversation's data key.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A conversation's data key, with the key that names its files.
#[derive(Clone)]
pub struct DataKey {
    cipher: Aes256Gcm,
    /// Keys the HMAC that turns a file's hash into its id: ids are content addresses
    /// within the conversation that reveal nothing of the hash to whoever reads the disk.
    address: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    // Encryption with a valid key cannot fail for inputs below 64 GiB.
    let ct = cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
    out.extend_from_slice(&ct);
    out
}

fn open(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Authentication);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Authentication)?;
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad }).map_err(|_| CryptoError::Authentication)
}

impl MasterKey {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Aes256Gcm::new_from_slice(bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadKey(format!("master key must be 32 bytes, got {}", bytes.len())))
    }

    /// From text: 64 hex characters or base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| CryptoError::BadKey(e.to_string()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| CryptoError::BadKey("master key must be 64 hex characters or base64 of 32 bytes".into()))?
        };
        Self::from_bytes(&bytes)
    }

    /// A fresh random key as 64 hex characters, for development mode and `keygen`.
    pub fn generate_text() -> String {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        hex::encode(k)
    }

    /// Creates a data key for `conversation` and returns it with its wrapped form, which
    /// is what gets stored.
    pub fn new_data_key(&self, conversation: &[u8; 16]) -> (DataKey, Vec<u8>) {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let wrapped = seal(&self.0, &dek_aad(conversation), &raw);
        (DataKey::from_raw(&raw), wrapped)
    }

    /// Unwraps a stored data key of `conversation`.
    pub fn unwrap_data_key(&self, conversation: &[u8; 16], wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let raw = open(&self.0, &dek_aad(conversation), wrapped)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| CryptoError::BadKey("stored data key has the wrong size".into()))?;
        Ok(DataKey::from_raw(&raw))
    }
}

/// The master key in use, and during a rotation the one before it: data keys wrapped by
/// either open, new ones are wrapped by the current key, and a rotation re-wraps the old
/// ones (see `server::Daemon::rotate_master_key`).
#[derive(Debug)]
pub struct Keyring {
    keys: std::sync::RwLock<(MasterKey, Option<MasterKey>)>,
}

impl Keyring {
    /// A keyring holding `current` only.
    pub fn new(current: MasterKey) -> Self {
        Self { keys: std::sync::RwLock::new((current, None)) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (MasterKey, Option<MasterKey>)> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A new data key for `conversation`, wrapped by the current master key.
    pub fn new_data_key(&self, conversation: &[u8; 16]) -> (DataKey, Vec<u8>) {
        self.read().0.new_data_key(conversation)
    }

    /// Unwraps a stored data key with the current master key, or the previous one during a
    /// rotation.
    pub fn unwrap_data_key(&self, conversation: &[u8; 16], wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let keys = self.read();
        match keys.0.unwrap_data_key(conversation, wrapped) {
            Ok(key) => Ok(key),
            Err(e) => match &keys.1 {
                Some(previous) => previous.unwrap_data_key(conversation, wrapped),
                None => Err(e),
            },
        }
    }

    /// `wrapped` under the current master key: `None` when it is so already, else the
    /// data key re-wrapped (its raw bytes unchanged, so nothing sealed under it changes).
    pub fn rewrap(&self, conversation: &[u8; 16], wrapped: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        let keys = self.read();
        if open(&keys.0.0, &dek_aad(conversation), wrapped).is_ok() {
            return Ok(None);
        }
        let previous = keys.1.as_ref().ok_or(CryptoError::Authentication)?;
        let raw = open(&previous.0, &dek_aad(conversation), wrapped)?;
        Ok(Some(seal(&keys.0.0, &dek_aad(conversation), &raw)))
    }

    /// Starts a rotation to `next`: the current key becomes the previous one.
    pub fn begin_rotation(&self, next: MasterKey) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let current = std::mem::replace(&mut keys.0, next);
        keys.1 = Some(current);
    }

    /// Ends a rotation: the previous key is forgotten.
    pub fn end_rotation(&self) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).1 = None;
    }
}

fn dek_aad(conversation: &[u8; 16]) -> Vec<u8> {
    [DEK_AAD, conversation.as_slice()].concat()
}

fn msg_aad(conversation: &[u8; 16], seq: u64) -> [u8; 16 + 16 + 8] {
    let mut aad = [0u8; 40];
    aad[..16].copy_from_slice(MSG_AAD);
    aad[16..32].copy_from_slice(conversation);
    aad[32..].copy_from_slice(&seq.to_be_bytes());
    aad
}

fn file_record_aad(conversation: &[u8; 16], file: &[u8; 16]) -> [u8; 48] {
    let mut aad = [0u8; 48];
    aad[..16].copy_from_slice(FILE_RECORD_AAD);
    aad[16..32].copy_from_slice(conversation);
    aad[32..].copy_from_slice(file);
    aad
}

fn audit_aad(conversation: &[u8; 16], target: u64, version: u64) -> [u8; 16 + 16 + 8 + 8] {
    let mut aad = [0u8; 48];
    aad[..16].copy_from_slice(AUDIT_AAD);
    aad[16..32].copy_from_slice(conversation);
    aad[32..40].copy_from_slice(&target.to_be_bytes());
    aad[40..].copy_from_slice(&version.to_be_bytes());
    aad
}

impl DataKey {
    fn from_raw(raw: &[u8; 32]) -> Self {
        use hmac::Mac;
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(raw).expect("HMAC takes any key length");
        mac.update(FILE_ID_DOMAIN);
        Self { cipher: Aes256Gcm::new(raw.into()), address: mac.finalize().into_bytes().into() }
    }

    /// The id of a file with SHA-256 `sha256` in this conversation: the same content has
    /// the same id (so it is stored once), and nobody without the key can tell from an id
    /// which content it names.
    pub fn file_id(&self, sha256: &[u8; 32]) -> [u8; 16] {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.address).expect("HMAC takes any key length");
        mac.update(sha256);
        let out = mac.finalize().into_bytes();
        let mut id = [0u8; 16];
        id.copy_from_slice(&out[..16]);
        id
    }

    /// Seals the metadata record of file `file` (its name, type, size, hash).
    pub fn seal_file_record(&self, conversation: &[u8; 16], file: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.cipher, &file_record_aad(conversation, file), plaintext)
    }

    /// Opens a file's metadata record; fails if it was stored for another file.
    pub fn open_file_record(&self, conversation: &[u8; 16], file: &[u8; 16], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.cipher, &file_record_aad(conversation, file), sealed)
    }

    /// Seals a message record at (`conversation`, `seq`).
    pub fn seal_message(&self, conversation: &[u8; 16], seq: u64, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.cipher, &msg_aad(conversation, seq), plaintext)
    }

    /// Opens a message record; fails if it was stored anywhere but (`conversation`, `seq`).
    pub fn open_message(&self, conversation: &[u8; 16], seq: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.cipher, &msg_aad(conversation, seq), sealed)
    }

    /// Seals version `version` (the seq of the event that made it) of message `target`'s
    /// audit trail.
    pub fn seal_version(&self, conversation: &[u8; 16], target: u64, version: u64, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.cipher, &audit_aad(conversation, target, version), plaintext)
    }

    /// Opens an audit version; fails if it was stored anywhere but where it was sealed for.
    pub fn open_version(&self, conversation: &[u8; 16], target: u64, version: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.cipher, &audit_aad(conversation, target, version), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_in_place() {
        let master = MasterKey::from_text(&MasterKey::generate_text()).unwrap();
        let conv = [1u8; 16];
        let (key, wrapped) = master.new_data_key(&conv);
        let version = key.seal_version(&conv, 7, 9, b"earlier");
        assert!(key.open_version(&conv, 7, 9, &version).is_ok());
        assert!(key.open_message(&conv, 9, &version).is_err(), "an audit version is not a log entry");
        assert!(key.open_version(&conv, 7, 8, &version).is_err());
        let sealed = key.seal_message(&conv, 7, b"privileged");
        assert!(!sealed.windows(10).any(|w| w == b"privileged"));
        assert_eq!(key.open_message(&conv, 7, &sealed).unwrap(), b"privileged");
        assert_eq!(key.open_message(&conv, 8, &sealed), Err(CryptoError::Authentication));
        assert_eq!(key.open_message(&[2u8; 16], 7, &sealed), Err(CryptoError::Authentication));

        let again = master.unwrap_data_key(&conv, &wrapped).unwrap();
        assert_eq!(again.open_message(&conv, 7, &sealed).unwrap(), b"privileged");
        assert!(master.unwrap_data_key(&[2u8; 16], &wrapped).is_err());
        let other = MasterKey::from_text(&MasterKey::generate_text()).unwrap();
        assert!(other.unwrap_data_key(&conv, &wrapped).is_err());
    }

    #[test]
    fn a_rotation_rewraps_data_keys_without_changing_them() {
        let old = MasterKey::from_text(&MasterKey::generate_text()).unwrap();
        let new = MasterKey::from_text(&MasterKey::generate_text()).unwrap();
        let conv = [3u8; 16];
        let ring = Keyring::new(old.clone());
        let (key, wrapped) = ring.new_data_key(&conv);
        let sealed = key.seal_message(&conv, 1, b"privileged");
        ring.begin_rotation(new.clone());
        assert!(ring.unwrap_data_key(&conv, &wrapped).is_ok(), "old wrappings open during the rotation");
        let rewrapped = ring.rewrap(&conv, &wrapped).unwrap().expect("re-wrapped");
        assert_eq!(ring.rewrap(&conv, &rewrapped).unwrap(), None, "already under the new key");
        ring.end_rotation();
        assert!(ring.unwrap_data_key(&conv, &wrapped).is_err(), "the old wrapping no longer opens");
        let again = ring.unwrap_data_key(&conv, &rewrapped).unwrap();
        assert_eq!(again.open_message(&conv, 1, &sealed).unwrap(), b"privileged", "messages are not re-encrypted");
        assert!(old.unwrap_data_key(&conv, &rewrapped).is_err() && new.unwrap_data_key(&conv, &rewrapped).is_ok());
    }

    #[test]
    fn file_ids_are_keyed_content_addresses() {
        let master = MasterKey::from_text(&MasterKey::generate_text()).unwrap();
        let conv = [1u8; 16];
        let (key, wrapped) = master.new_data_key(&conv);
        let again = master.unwrap_data_key(&conv, &wrapped).unwrap();
        let hash = [7u8; 32];
        assert_eq!(key.file_id(&hash), again.file_id(&hash), "the same content has the same id");
        assert_ne!(key.file_id(&hash), key.file_id(&[8u8; 32]));
        let (other, _) = master.new_data_key(&[2u8; 16]);
        assert_ne!(key.file_id(&hash), other.file_id(&hash), "another conversation names it otherwise");
        assert_ne!(&key.file_id(&hash)[..], &hash[..16], "the id is not the hash");

        let file = key.file_id(&hash);
        let record = key.seal_file_record(&conv, &file, b"contract.pdf");
        assert_eq!(key.open_file_record(&conv, &file, &record).unwrap(), b"contract.pdf");
        assert!(key.open_file_record(&conv, &[0u8; 16], &record).is_err());
        assert!(key.open_message(&conv, 1, &record).is_err(), "a file record is not a log entry");
    }

    #[test]
    fn key_text_formats() {
        assert!(MasterKey::from_text(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_text(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::from_text("short").is_err());
        assert!(MasterKey::from_text(&base64::engine::general_purpose::STANDARD.encode([7u8; 16])).is_err());
    }

    #[test]
    fn truncated_ciphertext_is_rejected() {
        let master = MasterKey::from_text(&MasterKey::generate_text()).unwrap();
        let (key, _) = master.new_data_key(&[0; 16]);
        assert_eq!(key.open_message(&[0; 16], 1, &[0u8; 5]), Err(CryptoError::Authentication));
    }
}
