//! Shards driven through their real threads over a real RocksDB store.

use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::outbound;
use crate::push::Job;
use crate::registry::{Kick, SessionHandle};
use crate::store::RocksStore;

const CONV: ConversationKey = [42; 16];

/// One shard over a fresh store, with a group conversation of alice (who sends), bob
/// (connected), carol and dave (offline).
struct Fixture {
    shards: Shards,
    threads: ShardThreads,
    bob: outbound::Receiver,
    _dir: TempDir,
}

type Answer<T> = oneshot::Receiver<Result<T, RequestError>>;

fn config() -> ShardConfig {
    ShardConfig { mailbox: 64, max_batch: 64, sync: false }
}

/// What a shard runs on, over a fresh store in `dir`. With `push`: notifications go to
/// that queue, for users with a Web Push subscription.
fn deps(dir: &TempDir, push: Option<(mpsc::Sender<Job>, Vec<String>)>) -> ShardDeps {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let registry = Arc::new(Registry::default());
    let push = match push {
        Some((tx, subscribers)) => PushHandle::new(store.clone(), Some(tx)).only_for_subscribers(subscribers),
        None => PushHandle::new(store.clone(), None),
    };
    ShardDeps {
        store: store.clone(),
        master: MasterKey::from_bytes(&[7; 32]).unwrap(),
        registry: registry.clone(),
        directory: Arc::new(Directory::new(store)),
        hub: Arc::new(Hub::new(registry, Duration::from_secs(5))),
        push,
    }
}

/// Alice creates the group conversation `CONV` with bob, carol and dave.
fn create() -> (Command, Answer<pb::Conversation>) {
    let (reply, rx) = oneshot::channel();
    let spec = CreateSpec {
        kind: ConversationType::Group,
        others: vec!["bob".into(), "carol".into(), "dave".into()],
        title: "Case team".into(),
        description: String::new(),
        case_id: String::new(),
    };
    (Command::Create { id: CONV, caller: alice(), origin: 1, spec, reply }, rx)
}

/// Alice sends a message with `client_message_id` to `CONV`.
fn send(client_message_id: &str) -> (Command, Answer<pb::MessageAccepted>) {
    let (reply, rx) = SendReply::channel();
    let content = pb::MessageContent { text: format!("text of {client_message_id}"), ..Default::default() };
    let cmd = Command::Send {
        id: CONV,
        caller: alice(),
        origin: 1,
        client_message_id: client_message_id.into(),
        content,
        submitted: Instant::now(),
        reply,
    };
    (cmd, rx)
}

fn alice() -> Identity {
    Identity { user_id: "alice".into(), role: Role::Advocate, name: None }
}

impl Fixture {
    /// With `push`: notifications go to that queue, for users with a Web Push subscription.
    fn new(push: Option<(mpsc::Sender<Job>, Vec<String>)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (outbound, bob) = outbound::channel(1_024);
        let deps = deps(&dir, push);
        deps.registry.register("bob", SessionHandle { id: 2, outbound, kick: Arc::new(Kick::default()) });
        let (shards, threads) = start(1, config(), deps).unwrap();
        let f = Self { shards, threads, bob, _dir: dir };
        let (cmd, rx) = create();
        f.submit(cmd);
        rx.blocking_recv().unwrap().unwrap();
        f
    }

    fn submit(&self, cmd: Command) {
        self.shards.submit_to(0, cmd).unwrap();
    }

    fn send(&self, client_message_id: &str) -> Answer<pb::MessageAccepted> {
        let (cmd, rx) = send(client_message_id);
        self.submit(cmd);
        rx
    }

    /// A read: answered only after everything before it was committed and fanned out.
    fn history(&self) -> pb::HistoryPage {
        let (reply, rx) = oneshot::channel();
        self.submit(Command::History { id: CONV, caller: alice(), cursor: Cursor::Latest, limit: 100, reply });
        rx.blocking_recv().unwrap().unwrap()
    }

    /// The seqs of the messages bob has been sent so far (other events skipped).
    fn bob_messages(&mut self) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(bytes) = self.bob.try_recv() {
            let frame = codec::decode_exact::<pb::ServerFrame>(&bytes, 1 << 20).unwrap();
            if let Some(pb::server_frame::Event::ReceiveMessage(r)) = frame.event {
                seqs.push(r.message.unwrap().seq);
            }
        }
        seqs
    }

    /// Closes the mailbox and joins the shard; whatever it was handed is finished.
    fn stop(self) {
        drop(self.shards);
        self.threads.join();
    }
}

#[test]
fn push_notifications_go_only_to_offline_subscribers() {
    let (tx, mut jobs) = mpsc::channel(16);
    // bob is online; carol is offline with a subscription; dave offline without one;
    // alice has one but sent the message.
    let mut f = Fixture::new(Some((tx, vec!["carol".into(), "alice".into()])));
    let accepted = f.send("m1").blocking_recv().unwrap().unwrap();
    assert_eq!(f.history().last_seq, 1);
    assert_eq!(f.bob_messages(), [1]);
    let job = jobs.try_recv().expect("carol is notified");
    assert_eq!(job.user_id, "carol");
    let n = &job.notification;
    assert_eq!((n.seq, n.sender_id.as_str(), n.text.as_str()), (1, "alice", "text of m1"));
    assert_eq!((n.conversation_id.as_str(), n.message_id.as_str()), (accepted.conversation_id.as_str(), accepted.message_id.as_str()));
    assert_eq!(
        (n.conversation_title.as_str(), n.conversation_type, n.timestamp_ms),
        ("Case team", ConversationType::Group as i32, accepted.timestamp_ms)
    );
    assert!(jobs.try_recv().is_err(), "nobody else: bob is online, dave has no subscription, alice sent it");
    f.stop();
}

#[test]
fn with_push_off_messages_are_still_delivered_in_order() {
    let mut f = Fixture::new(None);
    let seqs: Vec<u64> = ["m1", "m2", "m3"].iter().map(|id| f.send(id)).map(|rx| rx.blocking_recv().unwrap().unwrap().seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(f.history().messages.len(), 3);
    assert_eq!(f.bob_messages(), [1, 2, 3]);
    f.stop();
}

#[test]
fn a_retry_is_stored_once_whether_its_original_is_committed_or_still_in_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    // No thread: the test decides where each batch ends.
    let mut shard = Shard::new(0, config(), &deps(&dir, None));
    let mut batch = Pending::default();
    let (cmd, created) = create();
    shard.handle(cmd, &mut batch);
    shard.flush(&mut batch);
    created.blocking_recv().unwrap().unwrap();

    // One batch: a message, its retry (the store's index does not have it yet), another.
    let answers = ["a", "a", "b"].map(|id| {
        let (cmd, rx) = send(id);
        shard.handle(cmd, &mut batch);
        rx
    });
    shard.flush(&mut batch);
    let [first, retry, other] = answers.map(|rx| rx.blocking_recv().unwrap().unwrap());
    assert_eq!((first.seq, first.duplicate, other.seq, other.duplicate), (1, false, 2, false));
    assert_eq!((retry.seq, retry.duplicate, retry.message_id.as_str()), (1, true, first.message_id.as_str()));
    assert!(shard.conversations[&CONV].uncommitted.is_empty(), "a commit leaves nothing held in memory for retries");

    // A later batch: the retry is answered from the store's index.
    let (cmd, later) = send("a");
    shard.handle(cmd, &mut batch);
    shard.flush(&mut batch);
    let later = later.blocking_recv().unwrap().unwrap();
    assert_eq!((later.seq, later.duplicate, later.message_id.as_str()), (1, true, first.message_id.as_str()));

    let (reply, page) = oneshot::channel();
    shard.handle(Command::History { id: CONV, caller: alice(), cursor: Cursor::Latest, limit: 100, reply }, &mut batch);
    shard.flush(&mut batch);
    let page = page.blocking_recv().unwrap().unwrap();
    assert_eq!(page.messages.iter().map(|m| m.client_message_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}
