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

/// Which of `shards` keeps the records of `user` that belong to no conversation (directory
/// entry, push subscriptions): every write about one user goes through one shard, so those
/// writes keep the order they were submitted in. FNV-1a, so the choice is the same on every
/// run and every node.
pub fn shard_of_user(user: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let n = u64::try_from(shards.max(1)).unwrap_or(1);
    usize::try_from(h % n).unwrap_or(0)
}

/// Hands out session ids that are unique across daemons, not just within one: a random
/// 32-bit prefix chosen when the process starts, in the high half, and a counter in the
/// low half. Two daemons behind one load balancer (sharing a bus, later) then never give
/// two live sessions the same id, short of a 1 in 2^32 prefix collision. The counter wraps
/// after 2^32 sessions of one process, long after the first of them has ended.
#[derive(Debug)]
pub struct SessionIds {
    prefix: u64,
    next: std::sync::atomic::AtomicU32,
}

impl SessionIds {
    /// Ids with a fresh random prefix.
    pub fn new() -> Self {
        Self::with_prefix(rand::rng().next_u32())
    }

    /// Ids with the given prefix (tests; a node id, some day).
    pub fn with_prefix(prefix: u32) -> Self {
        Self { prefix: u64::from(prefix) << 32, next: std::sync::atomic::AtomicU32::new(1) }
    }

    /// The next id. Shown to clients as 16 hex digits.
    pub fn next(&self) -> u64 {
        self.prefix | u64::from(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for SessionIds {
    fn default() -> Self {
        Self::new()
    }
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
    fn session_ids_carry_the_process_prefix_and_differ_between_processes() {
        let ids = SessionIds::with_prefix(0xdead_beef);
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!((a >> 32, b >> 32), (0xdead_beef, 0xdead_beef), "the prefix is in the high half");
        assert_eq!(format!("{a:016x}"), "deadbeef00000001", "16 hex digits, as Authenticated.session_id shows it");
        // Two daemons: two random prefixes. Equal by chance once in 2^32 runs; three tries
        // make a false failure practically impossible.
        let differ = (0..3).any(|_| SessionIds::new().next() >> 32 != SessionIds::new().next() >> 32);
        assert!(differ, "two processes draw different prefixes");
        assert_eq!(format!("{:016x}", SessionIds::with_prefix(0).next()).len(), 16, "a zero prefix is still 16 digits");
    }

    #[test]
    fn a_user_always_maps_to_the_same_shard_and_users_spread() {
        assert_eq!(shard_of_user("alice", 8), shard_of_user("alice", 8));
        let mut seen = [false; 4];
        for i in 0..200 {
            seen[shard_of_user(&format!("user-{i}"), 4)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(shard_of_user("alice", 0), 0, "no shards: index 0, never a panic");
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
