//! The behaviour every [`Store`] implementation must show, as checks that take a way to
//! open a store on a directory. `conformance_tests!` turns each into a test for one
//! implementation (RocksDB in `rocks.rs`; a shared store for clusters must pass the same).

use std::path::Path;
use std::sync::Arc;

use super::{IndexEntry, Store, StoreError, StoredConversation, StoredParticipant, StoredPushSubscription, StoredReadState, Write};

/// Opens the implementation under test on `dir` (again, after a "restart").
pub(crate) type Open<'a> = &'a dyn Fn(&Path) -> Arc<dyn Store>;

fn append(conversation: [u8; 16], expected_last_seq: u64, seqs: std::ops::RangeInclusive<u64>) -> Write {
    Write::Append { conversation, expected_last_seq, entries: seqs.map(|s| (s, s.to_be_bytes().to_vec())).collect() }
}

fn seqs(entries: &[(u64, Vec<u8>)]) -> Vec<u64> {
    entries.iter().map(|(s, _)| *s).collect()
}

/// Appended entries read back in order, by range and backwards, and survive a restart.
pub(crate) fn log_reads_back_in_order_and_survives_reopen(open: Open<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let (conv, other) = ([9u8; 16], [10u8; 16]);
    {
        let store = open(dir.path());
        store.commit(vec![append(conv, 0, 1..=150)], true).unwrap();
        store
            .commit(
                vec![
                    append(conv, 150, 151..=300),
                    append(other, 0, 1..=1),
                    Write::ClientMessageId { conversation: conv, client_message_id: "abc".into(), seq: 42 },
                ],
                true,
            )
            .unwrap();
        assert_eq!(store.last_seq(&conv).unwrap(), 300);
        assert_eq!(store.last_seq(&[0u8; 16]).unwrap(), 0);
    }
    let store = open(dir.path());
    assert_eq!(store.last_seq(&conv).unwrap(), 300);
    assert_eq!(store.last_seq(&other).unwrap(), 1);
    assert_eq!(seqs(&store.messages(&conv, 255, 1_000, 100).unwrap()), (255..=300).collect::<Vec<_>>());
    let page = store.messages(&conv, 10, 19, 100).unwrap();
    assert_eq!((page.len(), page[0].1.as_slice()), (10, 10u64.to_be_bytes().as_slice()));
    assert_eq!(store.messages(&conv, 1, 300, 7).unwrap().len(), 7);
    assert_eq!(seqs(&store.entries_before(&conv, 6, 3).unwrap()), [5, 4, 3]);
    assert_eq!(seqs(&store.entries_before(&conv, 2, 10).unwrap()), [1]);
    assert!(store.entries_before(&conv, 1, 10).unwrap().is_empty());
    assert_eq!(seqs(&store.entries_before(&other, u64::MAX, 10).unwrap()), [1], "never another conversation's entries");
    assert_eq!(store.client_message_seq(&conv, "abc").unwrap(), Some(42));
    assert_eq!(store.client_message_seq(&conv, "abd").unwrap(), None);
    assert_eq!(store.client_message_seq(&other, "abc").unwrap(), None);
}

/// An append names the newest seq it expects; when another writer got there first, the
/// whole batch is refused and nothing of it is applied. Entries must run on without gaps.
pub(crate) fn appends_are_conditional_and_fence_a_second_writer(open: Open<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (conv, other) = ([1u8; 16], [2u8; 16]);
    store.commit(vec![append(conv, 0, 1..=3)], true).unwrap();
    // Two writers both believe the newest seq is 3: the first wins.
    store.commit(vec![append(conv, 3, 4..=4)], true).unwrap();
    let second = store
        .commit(vec![append(other, 0, 1..=1), Write::Membership { user: "al".into(), conversation: other }, append(conv, 3, 4..=5)], true);
    match second {
        Err(StoreError::Conflict { expected: 3, actual: 4, .. }) => {}
        other => panic!("the second writer must be fenced, got {other:?}"),
    }
    assert_eq!(store.last_seq(&other).unwrap(), 0, "nothing of a refused batch is applied");
    assert!(store.user_conversations("al").unwrap().is_empty(), "nothing of a refused batch is applied");
    assert_eq!(store.last_seq(&conv).unwrap(), 4);
    // A gap inside an append is refused too.
    assert!(matches!(store.commit(vec![append(conv, 4, 6..=6)], true), Err(StoreError::Conflict { .. })));
    // The writer that re-reads the newest seq carries on, also after a restart.
    store.commit(vec![append(conv, 4, 5..=6)], true).unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(matches!(store.commit(vec![append(conv, 5, 6..=6)], true), Err(StoreError::Conflict { expected: 5, actual: 6, .. })));
    store.commit(vec![append(conv, 6, 7..=7)], true).unwrap();
    assert_eq!(seqs(&store.messages(&conv, 1, 100, 100).unwrap()), (1..=7).collect::<Vec<_>>());
}

/// A replaced entry reads back with its new bytes; its neighbours are untouched.
pub(crate) fn replace_rewrites_one_entry(open: Open<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let conv = [3u8; 16];
    store.commit(vec![append(conv, 0, 1..=3)], true).unwrap();
    store.commit(vec![Write::Replace { conversation: conv, seq: 2, sealed: b"new".to_vec() }], true).unwrap();
    let page = store.messages(&conv, 1, 3, 10).unwrap();
    assert_eq!(page[1], (2, b"new".to_vec()));
    assert_eq!((page[0].1.as_slice(), page[2].1.as_slice()), (1u64.to_be_bytes().as_slice(), 3u64.to_be_bytes().as_slice()));
    assert_eq!(store.last_seq(&conv).unwrap(), 3);
}

/// Reply, deletion and mention indexes answer per conversation (and per user), ascending,
/// after a seq, bounded; audit versions come back in version order, per message.
pub(crate) fn indexes_and_audit_versions(open: Open<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (conv, other) = ([4u8; 16], [5u8; 16]);
    let index = |conversation, entry| Write::Index { conversation, entry };
    let mention = |user: &str, seq| IndexEntry::Mention { user: user.into(), seq };
    store
        .commit(
            vec![
                index(conv, IndexEntry::Reply { parent: 1, seq: 3 }),
                index(conv, IndexEntry::Reply { parent: 1, seq: 7 }),
                index(conv, IndexEntry::Reply { parent: 2, seq: 5 }),
                index(other, IndexEntry::Reply { parent: 1, seq: 4 }),
                index(conv, IndexEntry::Deleted { seq: 2 }),
                index(conv, IndexEntry::Deleted { seq: 9 }),
                // "al" is a prefix of "alice": their mentions stay apart.
                index(conv, mention("al", 3)),
                index(conv, mention("alice", 4)),
                index(conv, mention("al", 8)),
                Write::AuditVersion { conversation: conv, target: 1, version: 6, sealed: b"v6".to_vec() },
                Write::AuditVersion { conversation: conv, target: 1, version: 1, sealed: b"v1".to_vec() },
                Write::AuditVersion { conversation: conv, target: 2, version: 2, sealed: b"other message".to_vec() },
            ],
            true,
        )
        .unwrap();
    assert_eq!(store.replies(&conv, 1, 0, 10).unwrap(), [3, 7]);
    assert_eq!(store.replies(&conv, 1, 3, 10).unwrap(), [7]);
    assert_eq!(store.replies(&conv, 1, 0, 1).unwrap(), [3]);
    assert_eq!(store.replies(&conv, 2, 0, 10).unwrap(), [5]);
    assert_eq!(store.replies(&other, 1, 0, 10).unwrap(), [4]);
    assert_eq!(store.deleted_after(&conv, 0, 10).unwrap(), [2, 9]);
    assert_eq!(store.deleted_after(&conv, 2, 10).unwrap(), [9]);
    assert!(store.deleted_after(&other, 0, 10).unwrap().is_empty());
    assert_eq!(store.mentions_after(&conv, "al", 0, 10).unwrap(), [3, 8]);
    assert_eq!(store.mentions_after(&conv, "al", 3, 10).unwrap(), [8]);
    assert_eq!(store.mentions_after(&conv, "alice", 0, 10).unwrap(), [4]);
    assert!(store.mentions_after(&conv, "bob", 0, 10).unwrap().is_empty());
    assert_eq!(store.audit_versions(&conv, 1).unwrap(), vec![(1, b"v1".to_vec()), (6, b"v6".to_vec())]);
    store.commit(vec![Write::Unindex { conversation: conv, entry: mention("al", 3) }], true).unwrap();
    assert_eq!(store.mentions_after(&conv, "al", 0, 10).unwrap(), [8], "an unindexed entry is gone");
    assert_eq!(store.mentions_after(&conv, "alice", 0, 10).unwrap(), [4], "and nothing else");
    assert_eq!(store.audit_versions(&conv, 2).unwrap().len(), 1);
    assert!(store.audit_versions(&other, 1).unwrap().is_empty());
}

/// Conversations, memberships, read positions and push subscriptions.
pub(crate) fn memberships_and_records(open: Open<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c1 = [1u8; 16];
    let c2 = [2u8; 16];
    let conv = StoredConversation {
        id: c1.to_vec(),
        kind: 2,
        title: "Case team".into(),
        participants: vec![StoredParticipant { user_id: "al".into(), role: 3, joined_at_ms: 1 }],
        pinned: vec![4, 9],
        ..Default::default()
    };
    let read = StoredReadState { read_seq: 5, delivered_seq: 6, read_count: 4, ..Default::default() };
    store
        .commit(
            vec![
                Write::Conversation(conv.clone()),
                Write::Membership { user: "al".into(), conversation: c1 },
                Write::Membership { user: "al".into(), conversation: c2 },
                // "al" is a prefix of "alice": the separator keeps them apart.
                Write::Membership { user: "alice".into(), conversation: c2 },
                Write::ReadState { conversation: c1, user: "al".into(), state: read },
                Write::PushSubscription(StoredPushSubscription {
                    user_id: "al".into(),
                    endpoint: "https://push.example/1".into(),
                    ..Default::default()
                }),
                Write::PushSubscription(StoredPushSubscription {
                    user_id: "alice".into(),
                    endpoint: "https://push.example/2".into(),
                    ..Default::default()
                }),
            ],
            false,
        )
        .unwrap();
    assert_eq!(store.user_conversations("al").unwrap(), vec![c1, c2]);
    assert_eq!(store.user_conversations("alice").unwrap(), vec![c2]);
    assert_eq!(store.conversation(&c1).unwrap(), Some(conv));
    assert_eq!(store.conversation(&c2).unwrap(), None);
    store.commit(vec![Write::RemoveMembership { user: "al".into(), conversation: c1 }], true).unwrap();
    assert_eq!(store.user_conversations("al").unwrap(), vec![c2]);
    assert_eq!(store.read_states(&c1).unwrap(), vec![("al".to_string(), read)]);
    let subs = store.push_subscriptions("al").unwrap();
    assert_eq!(subs.iter().map(|s| s.endpoint.as_str()).collect::<Vec<_>>(), ["https://push.example/1"]);
    assert_eq!(store.push_subscribers().unwrap(), ["al", "alice"]);
    store.commit(vec![Write::RemovePushSubscription { user: "al".into(), endpoint: "https://push.example/1".into() }], true).unwrap();
    assert!(store.push_subscriptions("al").unwrap().is_empty());
    assert_eq!(store.push_subscriptions("alice").unwrap().len(), 1);
}

/// File records: put, read, listed in key order across conversations and pages, removed;
/// a file is referenced while any message's reference index entry names it.
pub(crate) fn files_and_their_references(open: Open<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (c1, c2) = ([1u8; 16], [2u8; 16]);
    let (f1, f2, f3) = ([7u8; 16], [8u8; 16], [9u8; 16]);
    let put = |conversation, file: [u8; 16]| Write::File { conversation, file, sealed: file.to_vec() };
    let reference = |file, seq| Write::Index { conversation: c1, entry: IndexEntry::FileRef { file, seq } };
    store.commit(vec![put(c2, f1), put(c1, f2), put(c1, f1), reference(f1, 4), reference(f1, 9)], true).unwrap();
    assert_eq!(store.file(&c1, &f1).unwrap(), Some(f1.to_vec()));
    assert_eq!(store.file(&c1, &f3).unwrap(), None);
    assert_eq!(store.files_after(None, 10).unwrap(), vec![(c1, f1), (c1, f2), (c2, f1)]);
    assert_eq!(store.files_after(None, 2).unwrap(), vec![(c1, f1), (c1, f2)]);
    assert_eq!(store.files_after(Some((c1, f2)), 10).unwrap(), vec![(c2, f1)]);
    assert!(store.file_referenced(&c1, &f1).unwrap());
    assert!(!store.file_referenced(&c1, &f2).unwrap());
    assert!(!store.file_referenced(&c2, &f1).unwrap(), "references are per conversation");
    store.commit(vec![Write::Unindex { conversation: c1, entry: IndexEntry::FileRef { file: f1, seq: 4 } }], true).unwrap();
    assert!(store.file_referenced(&c1, &f1).unwrap(), "message 9 still refers to it");
    store.commit(vec![Write::Unindex { conversation: c1, entry: IndexEntry::FileRef { file: f1, seq: 9 } }], true).unwrap();
    assert!(!store.file_referenced(&c1, &f1).unwrap());
    store.commit(vec![Write::RemoveFile { conversation: c1, file: f1 }], true).unwrap();
    assert_eq!(store.file(&c1, &f1).unwrap(), None);
    assert_eq!(store.files_after(None, 10).unwrap(), vec![(c1, f2), (c2, f1)]);

    // Data keys are listed in conversation order, a page at a time.
    let key = |conversation: [u8; 16]| Write::DataKey { conversation, wrapped: conversation.to_vec() };
    store.commit(vec![key(c2), key(c1), key([3u8; 16])], true).unwrap();
    assert_eq!(store.data_keys_after(None, 2).unwrap(), vec![(c1, c1.to_vec()), (c2, c2.to_vec())]);
    assert_eq!(store.data_keys_after(Some(c2), 10).unwrap(), vec![([3u8; 16], vec![3u8; 16])]);
}

/// Generates one test per conformance check for the store opened by `$open`.
macro_rules! conformance_tests {
    ($open:expr) => {
        mod conformance {
            use super::*;
            use crate::store::conformance as c;

            #[test]
            fn log_reads_back_in_order_and_survives_reopen() {
                c::log_reads_back_in_order_and_survives_reopen(&$open);
            }

            #[test]
            fn appends_are_conditional_and_fence_a_second_writer() {
                c::appends_are_conditional_and_fence_a_second_writer(&$open);
            }

            #[test]
            fn replace_rewrites_one_entry() {
                c::replace_rewrites_one_entry(&$open);
            }

            #[test]
            fn indexes_and_audit_versions() {
                c::indexes_and_audit_versions(&$open);
            }

            #[test]
            fn memberships_and_records() {
                c::memberships_and_records(&$open);
            }

            #[test]
            fn files_and_their_references() {
                c::files_and_their_references(&$open);
            }
        }
    };
}
pub(crate) use conformance_tests;
