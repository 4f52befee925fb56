//! A full shard mailbox is an answer, not a wait: the request that does not fit is refused
//! at once with `OVERLOADED`, and the shard takes commands again once it has moved on.
//!
//! The shard is held busy deterministically: the answer to the first command runs on the
//! shard's own thread (see [`SendReply`]), and this one waits there until the test lets it
//! go, so nothing more leaves the mailbox meanwhile.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::registry::Registry;
use crate::store::RocksStore;

/// Longest wait for the shard thread; reaching it fails the test.
const WAIT: Duration = Duration::from_secs(20);

/// A shard's dependencies over a fresh store in `dir`, with push off.
fn deps(dir: &TempDir) -> ShardDeps {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let registry = Arc::new(Registry::default());
    ShardDeps {
        store: store.clone(),
        master: Arc::new(crate::crypto::Keyring::new(crate::crypto::MasterKey::from_bytes(&[7; 32]).unwrap())),
        registry: registry.clone(),
        directory: Arc::new(Directory::new(store.clone())),
        hub: Arc::new(Hub::new(registry, Duration::from_secs(5))),
        push: PushHandle::new(store, None),
    }
}

/// Alice sends to a conversation nobody created: the shard answers NOT_FOUND through
/// `reply`, on its thread.
fn send(reply: SendReply) -> Command {
    Command::Send {
        id: [1; 16],
        caller: Identity { user_id: "alice".into(), role: Role::Advocate, name: None },
        origin: 1,
        echo: false,
        client_message_id: "m1".into(),
        content: pb::MessageContent { text: "hello".into(), ..Default::default() },
        reply_to_seq: 0,
        submitted: Instant::now(),
        reply,
    }
}

fn code<T: std::fmt::Debug>(answer: Result<T, RequestError>) -> ErrorCode {
    answer.expect_err("an error answer").code
}

#[test]
fn a_full_mailbox_answers_overloaded_and_takes_commands_again_once_drained() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, threads) = start(1, ShardConfig { mailbox: 1, max_batch: 64, ..ShardConfig::for_tests() }, deps(&dir)).unwrap();

    // The first command: its answer holds the shard thread until `release`.
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, released) = std_mpsc::channel::<()>();
    let busy = SendReply::new(move |answer| {
        entered_tx.send(code(answer)).unwrap();
        let _ = released.recv();
    });
    shards.submit_to(0, send(busy)).expect("an empty mailbox takes a command");
    assert_eq!(entered.recv_timeout(WAIT).expect("the shard answers the first command"), ErrorCode::NotFound);

    // The shard is busy and its mailbox holds one command: one more fits, the next does not.
    let (queued, queued_answer) = SendReply::channel();
    shards.submit_to(0, send(queued)).expect("room for one command");
    assert_eq!(shards.mailbox_depths().collect::<Vec<_>>(), [1]);
    let (refused, refused_answer) = SendReply::channel();
    let (error, command) = *shards.submit(0, send(refused)).expect_err("a full mailbox refuses");
    assert_eq!(error, SubmitError::Overloaded);
    // The refused command comes back whole, so the session answers its request at once,
    // and the answer says OVERLOADED.
    let Command::Send { reply, .. } = command else { panic!("the refused command came back as another: {command:?}") };
    reply.answer(Err(RequestError::from(error)));
    assert_eq!(code(refused_answer.blocking_recv().unwrap()), ErrorCode::Overloaded);
    assert_eq!(shards.submit_to(0, send(SendReply::new(|_| {}))), Err(SubmitError::Overloaded), "still full");

    // Let the shard go: the queued command is served, and the mailbox has room again.
    release.send(()).unwrap();
    assert_eq!(code(queued_answer.blocking_recv().unwrap()), ErrorCode::NotFound);
    let (later, later_answer) = SendReply::channel();
    shards.submit_to(0, send(later)).expect("a drained mailbox takes commands again");
    assert_eq!(code(later_answer.blocking_recv().unwrap()), ErrorCode::NotFound);

    drop(shards);
    threads.join();
}
