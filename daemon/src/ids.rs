//! Identifiers the server assigns.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::ConversationKey;

/// A fresh random 128-bit id (conversations other than private, messages).
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    id
}

/// The one private conversation of a pair of users: derived from the pair, so creating
/// it is idempotent on any node without coordination, and the order of the pair does
/// not matter.
pub fn private_conversation_id(a: &str, b: &str) -> ConversationKey {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(b"legalchat/private/v1\0");
    h.update(lo.as_bytes());
    // User ids never contain NUL, so the separator makes the encoding unambiguous.
    h.update([0u8]);
    h.update(hi.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Which of `shards` owns a conversation. Ids are uniformly random (or hash outputs), so
/// their first bytes spread evenly.
pub fn shard_of(id: &ConversationKey, shards: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id[..8]);
    let n = u64::try_from(shards.max(1)).unwrap_or(1);
    usize::try_from(u64::from_be_bytes(first) % n).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ids_ignore_order_and_separate_pairs() {
        assert_eq!(private_conversation_id("alice", "bob"), private_conversation_id("bob", "alice"));
        assert_ne!(private_conversation_id("alice", "bob"), private_conversation_id("alice", "bobby"));
        assert_ne!(private_conversation_id("ab", "c"), private_conversation_id("a", "bc"));
    }

    #[test]
    fn shards_cover_the_range() {
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[shard_of(&random_id(), 4)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
