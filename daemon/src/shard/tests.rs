//! Shards driven through their real threads over a real RocksDB store.

use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::outbound;
use crate::push::Job;
use crate::registry::Registry;
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
    ShardConfig { max_batch: 64, ..ShardConfig::for_tests() }
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
        master: Arc::new(crate::crypto::Keyring::new(crate::crypto::MasterKey::from_bytes(&[7; 32]).unwrap())),
        registry: registry.clone(),
        directory: Arc::new(Directory::new(store)),
        hub: Arc::new(Hub::new(registry, Duration::from_secs(5))),
        push,
    }
}

/// Alice creates the group conversation `CONV` with bob, carol and dave.
fn create() -> (Command, Answer<pb::Conversation>) {
    create_in(CONV)
}

/// Alice creates the group conversation `id` with bob, carol and dave.
fn create_in(id: ConversationKey) -> (Command, Answer<pb::Conversation>) {
    let (reply, rx) = oneshot::channel();
    let spec = CreateSpec {
        kind: ConversationType::Group,
        others: vec!["bob".into(), "carol".into(), "dave".into()],
        title: "Case team".into(),
        description: String::new(),
        case_id: String::new(),
    };
    (Command::Create { id, caller: alice(), origin: 1, spec, reply }, rx)
}

/// Alice sends a message with `client_message_id` to `CONV`.
fn send(client_message_id: &str) -> (Command, Answer<pb::MessageAccepted>) {
    send_as(alice(), client_message_id, &format!("text of {client_message_id}"), 0)
}

/// `who` sends `text` to `CONV`, replying to `reply_to_seq` unless it is 0.
fn send_as(who: Identity, client_message_id: &str, text: &str, reply_to_seq: u64) -> (Command, Answer<pb::MessageAccepted>) {
    let (reply, rx) = SendReply::channel();
    let content = pb::MessageContent { text: text.into(), ..Default::default() };
    let cmd = Command::Send {
        id: CONV,
        caller: who,
        origin: 1,
        echo: false,
        client_message_id: client_message_id.into(),
        content,
        reply_to_seq,
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
        deps.registry.register("bob", SessionHandle::new(2, outbound, Arc::new(Kick::default())));
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

// ───────────────────────────── the event log ─────────────────────────────

fn user(id: &str, role: Role) -> Identity {
    Identity { user_id: id.into(), role, name: None }
}

fn bob() -> Identity {
    user("bob", Role::Client)
}

/// A shard without a thread: each call is one batch, handled and committed at once.
struct Direct {
    shard: Shard,
    _dir: TempDir,
}

impl Direct {
    fn new() -> Self {
        Self::with(config(), None)
    }

    fn with(config: ShardConfig, store: Option<Arc<dyn Store>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut deps = deps(&dir, None);
        if let Some(store) = store {
            deps.store = store;
        }
        let mut d = Self { shard: Shard::new(0, config, &deps), _dir: dir };
        let (cmd, rx) = create();
        d.run(cmd);
        rx.blocking_recv().unwrap().unwrap();
        d
    }

    fn run(&mut self, cmd: Command) {
        let mut batch = Pending::default();
        self.shard.handle(cmd, &mut batch);
        self.shard.flush(&mut batch);
    }

    fn send_as(&mut self, who: Identity, id: &str, text: &str) -> Result<pb::MessageAccepted, RequestError> {
        self.send_reply(who, id, text, 0)
    }

    fn send_reply(&mut self, who: Identity, id: &str, text: &str, reply_to_seq: u64) -> Result<pb::MessageAccepted, RequestError> {
        let (cmd, rx) = send_as(who, id, text, reply_to_seq);
        self.run(cmd);
        rx.blocking_recv().unwrap()
    }

    fn event(&mut self, who: Identity, id: &str, request: EventRequest) -> Result<pb::MessageAccepted, RequestError> {
        let (reply, rx) = SendReply::channel();
        self.run(Command::Event {
            id: CONV,
            caller: who,
            origin: 9,
            client_event_id: id.into(),
            request,
            submitted: Instant::now(),
            reply,
        });
        rx.blocking_recv().unwrap()
    }

    fn history(&mut self, who: Identity) -> Result<pb::HistoryPage, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.run(Command::History { id: CONV, caller: who, cursor: Cursor::Latest, limit: 100, reply });
        rx.blocking_recv().unwrap()
    }

    fn view(&mut self, who: Identity) -> pb::Conversation {
        let (reply, rx) = oneshot::channel();
        self.run(Command::Get { id: CONV, caller: who, reply });
        rx.blocking_recv().unwrap().unwrap()
    }

    fn audit(&mut self, who: Identity, seq: u64) -> Result<pb::MessageAudit, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.run(Command::Audit { id: CONV, caller: who, seq, reply });
        rx.blocking_recv().unwrap()
    }
}

fn text(m: &pb::Message) -> Option<&str> {
    m.content.as_ref().map(|c| c.text.as_str())
}

fn edit(seq: u64, new: &str) -> EventRequest {
    EventRequest::Edit { seq, content: pb::MessageContent { text: new.into(), ..Default::default() } }
}

fn react(seq: u64, emoji: &str, remove: bool) -> EventRequest {
    EventRequest::React { seq, emoji: emoji.into(), remove }
}

#[test]
fn every_event_takes_the_next_seq_and_history_shows_each_message_as_it_is_now() {
    let mut d = Direct::new();
    assert_eq!(d.send_as(alice(), "m1", "hearing at 9").unwrap().seq, 1);
    assert_eq!(d.send_as(bob(), "m2", "noted").unwrap().seq, 2);
    assert_eq!(d.event(bob(), "r1", react(1, "👍", false)).unwrap().seq, 3);
    assert_eq!(d.event(alice(), "e1", edit(1, "hearing at 10")).unwrap().seq, 4);
    assert_eq!(d.event(bob(), "d1", EventRequest::Delete { seq: 2 }).unwrap().seq, 5);
    assert_eq!(d.event(alice(), "p1", EventRequest::Pin { seq: 1, unpin: false }).unwrap().seq, 6);

    let page = d.history(user("carol", Role::Advocate)).unwrap();
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(page.last_seq, 6);
    let first = &page.messages[0];
    assert_eq!(text(first), Some("hearing at 10"), "a message's entry holds its current text");
    assert_eq!((first.edited_at_ms > 0, first.pinned, first.state_seq), (true, true, 6));
    assert_eq!(first.reactions, [pb::Reaction { emoji: "👍".into(), user_ids: vec!["bob".into()] }]);
    let second = &page.messages[1];
    assert_eq!((text(second), second.deleted_at_ms > 0, second.deleted_by.as_str()), (None, true, "bob"), "a tombstone");
    // The events themselves, in order.
    let kinds: Vec<_> = page.messages[2..].iter().map(|m| m.event.as_ref().and_then(|e| e.kind.clone())).collect();
    use pb::conversation_event::Kind;
    assert!(matches!(&kinds[0], Some(Kind::Reaction(r)) if r.target_seq == 1 && r.added && r.emoji == "👍"));
    assert!(
        matches!(&kinds[1], Some(Kind::Edited(e)) if e.target_seq == 1 && !e.redacted && e.content.as_ref().unwrap().text == "hearing at 10")
    );
    assert!(matches!(&kinds[2], Some(Kind::Deleted(x)) if x.target_seq == 2));
    assert!(matches!(&kinds[3], Some(Kind::Pin(p)) if p.target_seq == 1 && p.pinned));
    assert!(page.messages[2..].iter().all(|m| m.content.is_none() && m.state_seq == 0));

    // Unread counts only visible messages: carol has read nothing; of two messages one
    // is deleted, and the four other events count for nothing.
    let carol = d.view(user("carol", Role::Advocate));
    assert_eq!(carol.unread_count, 1);
    assert_eq!(carol.pinned_seqs, [1]);
    assert_eq!(carol.last_message.as_ref().map(|m| m.seq), Some(1), "the newest visible message, never an event");
    assert_eq!(carol.last_message.as_ref().and_then(text), Some("hearing at 10"));
}

#[test]
fn edits_and_reactions_leave_unread_counts_alone_and_reading_an_event_counts_what_came_before() {
    let mut d = Direct::new();
    d.send_as(alice(), "m1", "one").unwrap();
    d.send_as(alice(), "m2", "two").unwrap();
    let carol = || user("carol", Role::Advocate);
    assert_eq!(d.view(carol()).unread_count, 2);
    d.event(alice(), "e1", edit(1, "one, edited")).unwrap();
    d.event(bob(), "r1", react(2, "❤️", false)).unwrap();
    assert_eq!(d.view(carol()).unread_count, 2, "an edit and a reaction are not new messages");
    assert_eq!(d.view(alice()).unread_count, 0, "the sender has read up to their own message");
    // Carol reads up to the reaction (seq 4): both messages are read.
    let (reply, rx) = oneshot::channel();
    d.run(Command::Receipt { id: CONV, caller: carol(), origin: 3, kind: pb::ReceiptKind::Read, seq: 4, reply });
    rx.blocking_recv().unwrap().unwrap();
    assert_eq!(d.view(carol()).unread_count, 0);
    // Reading up to seq 1 only would have left one: check with dave.
    let (reply, rx) = oneshot::channel();
    d.run(Command::Receipt { id: CONV, caller: user("dave", Role::Advocate), origin: 4, kind: pb::ReceiptKind::Read, seq: 1, reply });
    rx.blocking_recv().unwrap().unwrap();
    assert_eq!(d.view(user("dave", Role::Advocate)).unread_count, 1);
}

#[test]
fn event_requests_are_refused_with_reasons() {
    let mut d = Direct::new();
    d.send_as(alice(), "m1", "privileged").unwrap();
    let code = |r: Result<pb::MessageAccepted, RequestError>| r.unwrap_err().code;
    assert_eq!(code(d.event(bob(), "x1", edit(1, "not yours"))), ErrorCode::Forbidden, "editing someone else's message");
    assert_eq!(code(d.event(bob(), "x2", EventRequest::Delete { seq: 1 })), ErrorCode::Forbidden, "a member deleting another's message");
    assert_eq!(
        code(d.event(user("eve", Role::Advocate), "x3", react(1, "👍", false))),
        ErrorCode::NotFound,
        "not a participant: as if there were no such conversation"
    );
    assert_eq!(code(d.event(bob(), "x4", EventRequest::Pin { seq: 1, unpin: false })), ErrorCode::Forbidden, "pinning as a member");
    assert_eq!(code(d.event(alice(), "x5", edit(7, "nothing there"))), ErrorCode::NotFound);
    d.event(bob(), "r1", react(1, "👍", false)).unwrap();
    assert_eq!(code(d.event(alice(), "x6", react(2, "👍", false))), ErrorCode::InvalidArgument, "a reaction is not a message");
    d.event(alice(), "d1", EventRequest::Delete { seq: 1 }).unwrap();
    assert_eq!(code(d.event(alice(), "x7", edit(1, "too late"))), ErrorCode::InvalidArgument, "a deleted message");
    assert_eq!(code(d.event(bob(), "x8", react(1, "❤️", false))), ErrorCode::InvalidArgument);
    // Nothing refused took a seq.
    assert_eq!(d.history(alice()).unwrap().last_seq, 3);
}

#[test]
fn moderators_and_global_admins_may_delete_others_messages() {
    let mut d = Direct::new();
    d.send_as(bob(), "m1", "one").unwrap();
    d.send_as(bob(), "m2", "two").unwrap();
    // Alice created the group: she is its admin.
    assert!(d.event(alice(), "d1", EventRequest::Delete { seq: 1 }).is_ok());
    // A global admin who is not a participant.
    assert!(d.event(user("root", Role::Admin), "d2", EventRequest::Delete { seq: 2 }).is_ok());
    // Deleting again changes nothing.
    let again = d.event(alice(), "d3", EventRequest::Delete { seq: 2 }).unwrap();
    assert!(again.duplicate);
    assert_eq!(d.history(alice()).unwrap().last_seq, 4);
}

#[test]
fn reactions_are_counted_per_emoji_bounded_and_idempotent() {
    let mut d = Direct::with(ShardConfig { max_reactions_per_message: 2, ..config() }, None);
    d.send_as(alice(), "m1", "settled").unwrap();
    d.event(bob(), "r1", react(1, "👍", false)).unwrap();
    d.event(alice(), "r2", react(1, "👍", false)).unwrap();
    d.event(alice(), "r3", react(1, "🎉", false)).unwrap();
    let same = d.event(bob(), "r4", react(1, "👍", false)).unwrap();
    assert!(same.duplicate, "bob already reacted with 👍");
    let err = d.event(bob(), "r5", react(1, "❤️", false)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    d.event(bob(), "r6", react(1, "👍", true)).unwrap();
    // The same client event id again: the first answer, nothing stored.
    let retry = d.event(bob(), "r6", react(1, "👍", true)).unwrap();
    assert!(retry.duplicate);
    let page = d.history(alice()).unwrap();
    assert_eq!(
        page.messages[0].reactions,
        [
            pb::Reaction { emoji: "👍".into(), user_ids: vec!["alice".into()] },
            pb::Reaction { emoji: "🎉".into(), user_ids: vec!["alice".into()] }
        ]
    );
    assert_eq!(page.last_seq, 5);
}

#[test]
fn superseded_versions_are_hidden_from_participants_and_kept_for_admins() {
    let mut d = Direct::new();
    d.send_as(alice(), "m1", "v1: settle at 100").unwrap();
    d.event(alice(), "e1", edit(1, "v2: settle at 120")).unwrap();
    d.event(alice(), "e2", edit(1, "v3: settle at 150")).unwrap();
    let page = d.history(bob()).unwrap();
    let all_text: String = page
        .messages
        .iter()
        .flat_map(|m| {
            let edit = match m.event.as_ref().and_then(|e| e.kind.as_ref()) {
                Some(pb::conversation_event::Kind::Edited(e)) => e.content.as_ref().map(|c| c.text.clone()),
                _ => None,
            };
            [text(m).map(str::to_owned), edit]
        })
        .flatten()
        .collect();
    assert!(!all_text.contains("v1") && !all_text.contains("v2"), "participants see only the newest version: {all_text}");
    assert!(all_text.contains("v3"));

    d.event(alice(), "d1", EventRequest::Delete { seq: 1 }).unwrap();
    let page = d.history(bob()).unwrap();
    assert!(page.messages.iter().all(|m| m.content.is_none()), "after a delete no entry shows any version");

    assert_eq!(d.audit(alice(), 1).unwrap_err().code, ErrorCode::Forbidden, "participants cannot read the audit trail");
    let audit = d.audit(user("root", Role::Admin), 1).unwrap();
    let versions: Vec<(u64, pb::AuditAction, &str, Option<&str>)> =
        audit.versions.iter().map(|v| (v.seq, v.action(), v.actor_id.as_str(), v.content.as_ref().map(|c| c.text.as_str()))).collect();
    assert_eq!(
        versions,
        [
            (1, pb::AuditAction::Original, "alice", Some("v1: settle at 100")),
            (2, pb::AuditAction::Edited, "alice", Some("v2: settle at 120")),
            (3, pb::AuditAction::Edited, "alice", Some("v3: settle at 150")),
            (4, pb::AuditAction::Deleted, "alice", Some("v3: settle at 150")),
        ]
    );
}

#[test]
fn the_edit_window_closes() {
    let mut d = Direct::with(ShardConfig { edit_window: Some(Duration::ZERO), ..config() }, None);
    let sent = d.send_as(alice(), "m1", "draft").unwrap();
    // A zero window has passed as soon as the clock moves on.
    while ids::now_ms() <= sent.timestamp_ms {
        std::thread::yield_now();
    }
    let err = d.event(alice(), "e1", edit(1, "final")).unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    assert!(err.message.contains("edit window"), "{err}");
}

#[test]
fn replies_quote_their_parent_as_it_is_now_and_threads_page() {
    let mut d = Direct::new();
    d.send_as(alice(), "m1", "Can you confirm the date?").unwrap();
    d.send_reply(bob(), "m2", "Yes, the 4th", 1).unwrap();
    d.send_as(alice(), "m3", "unrelated").unwrap();
    d.send_reply(alice(), "m4", "Thanks", 1).unwrap();
    d.event(alice(), "e1", edit(1, "Can you confirm the hearing date?")).unwrap();
    let page = d.history(bob()).unwrap();
    let preview = page.messages[1].reply_preview.clone().unwrap();
    assert_eq!((page.messages[1].reply_to_seq, preview.text.as_str(), preview.deleted), (1, "Can you confirm the hearing date?", false));

    let thread = |d: &mut Direct, after: u64, limit: u32| {
        let (reply, rx) = oneshot::channel();
        d.run(Command::Thread { id: CONV, caller: bob(), root: 1, after, limit, reply });
        rx.blocking_recv().unwrap().unwrap()
    };
    let first = thread(&mut d, 0, 1);
    assert_eq!((first.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), first.has_more), (vec![2], true));
    let next = thread(&mut d, 2, 1);
    assert_eq!((next.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), next.has_more), (vec![4], false));

    d.event(alice(), "d1", EventRequest::Delete { seq: 1 }).unwrap();
    let page = d.history(bob()).unwrap();
    let preview = page.messages[1].reply_preview.clone().unwrap();
    assert_eq!((preview.text.as_str(), preview.deleted), ("", true), "\"message deleted\"");
    assert_eq!(d.send_reply(bob(), "m5", "to a deleted one", 1).unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn mentions_of_participants_are_marked_and_counted() {
    let mut d = Direct::new();
    d.send_as(alice(), "m1", "@bob please review; cc @carol and @nobody").unwrap();
    d.send_as(alice(), "m2", "no mention here, bob").unwrap();
    let page = d.history(bob()).unwrap();
    assert_eq!(page.messages[0].mentions, ["bob", "carol"], "only participants count");
    assert!(page.messages[1].mentions.is_empty());
    let bob_view = d.view(bob());
    assert_eq!((bob_view.unread_count, bob_view.mention_count), (2, 1));
    assert_eq!(d.view(user("dave", Role::Advocate)).mention_count, 0);
    // Edited: bob is no longer mentioned, dave is.
    d.event(alice(), "e1", edit(1, "@dave please review")).unwrap();
    assert_eq!(d.view(bob()).mention_count, 0);
    assert_eq!(d.view(user("dave", Role::Advocate)).mention_count, 1);
    assert_eq!(d.history(bob()).unwrap().messages[0].mentions, ["dave"]);
}

#[test]
fn a_retry_from_another_sender_in_the_same_batch_is_a_conflict() {
    let mut d = Direct::new();
    let (first, theirs) = (send("same-id"), send_as(bob(), "same-id", "hijack", 0));
    // One batch: the store's index does not know the id yet.
    let mut batch = Pending::default();
    d.shard.handle(first.0, &mut batch);
    d.shard.handle(theirs.0, &mut batch);
    d.shard.flush(&mut batch);
    assert_eq!(first.1.blocking_recv().unwrap().unwrap().seq, 1);
    assert_eq!(theirs.1.blocking_recv().unwrap().unwrap_err().code, ErrorCode::Conflict);
}

#[test]
fn a_failed_commit_answers_every_request_of_its_batch_and_loses_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(crate::store::faulty::FaultyStore::new(RocksStore::open(&dir.path().join("db")).unwrap()));
    let mut d = Direct::with(config(), Some(flaky.clone()));
    d.send_as(alice(), "m1", "before").unwrap();
    flaky.fail_commits(true);
    // One batch with a send and a reaction: both are told, neither is stored.
    let mut batch = Pending::default();
    let (cmd, sent) = send("m2");
    d.shard.handle(cmd, &mut batch);
    let (reply, reacted) = SendReply::channel();
    let request = react(1, "👍", false);
    d.shard.handle(
        Command::Event { id: CONV, caller: bob(), origin: 2, client_event_id: "r1".into(), request, submitted: Instant::now(), reply },
        &mut batch,
    );
    d.shard.flush(&mut batch);
    assert_eq!(sent.blocking_recv().unwrap().unwrap_err().code, ErrorCode::Internal);
    assert_eq!(reacted.blocking_recv().unwrap().unwrap_err().code, ErrorCode::Internal);
    // Once the store works again, the next send takes seq 2: memory was not left ahead of
    // the disk, and the retry of the failed send is stored, not answered as a duplicate.
    flaky.fail_commits(false);
    let retried = d.send_as(alice(), "m2", "again").unwrap();
    assert_eq!((retried.seq, retried.duplicate), (2, false));
    let page = d.history(alice()).unwrap();
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(page.messages[0].reactions.is_empty());
}

#[test]
fn evicted_conversations_come_back_whole_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut shard = Shard::new(0, ShardConfig { max_cached_conversations: 16, ..config() }, &deps(&dir, None));
    let ids: Vec<ConversationKey> = (0..40u8).map(|i| [i; 16]).collect();
    let mut batch = Pending::default();
    for id in &ids {
        let (reply, rx) = oneshot::channel();
        let spec = CreateSpec {
            kind: ConversationType::Group,
            others: vec!["bob".into()],
            title: "t".into(),
            description: String::new(),
            case_id: String::new(),
        };
        shard.handle(Command::Create { id: *id, caller: alice(), origin: 1, spec, reply }, &mut batch);
        shard.flush(&mut batch);
        rx.blocking_recv().unwrap().unwrap();
        let (mut cmd, rx) = send_as(alice(), "m", "hello", 0);
        if let Command::Send { id: to, .. } = &mut cmd {
            *to = *id;
        }
        shard.handle(cmd, &mut batch);
        shard.flush(&mut batch);
        rx.blocking_recv().unwrap().unwrap();
    }
    assert!(shard.conversations.len() <= 16, "the cache is bounded: {}", shard.conversations.len());
    // The first conversation was evicted; it comes back with its seq and its message.
    assert!(!shard.conversations.contains_key(&ids[0]));
    let (reply, rx) = oneshot::channel();
    shard.handle(Command::Get { id: ids[0], caller: bob(), reply }, &mut batch);
    shard.flush(&mut batch);
    let view = rx.blocking_recv().unwrap().unwrap();
    assert_eq!((view.last_seq, view.unread_count), (1, 1));
    assert_eq!(view.last_message.as_ref().and_then(text), Some("hello"));
}

#[test]
fn a_muted_conversation_pushes_only_the_mentioned() {
    let (tx, mut jobs) = mpsc::channel(16);
    // carol and dave are offline with subscriptions.
    let f = Fixture::new(Some((tx, vec!["carol".into(), "dave".into()])));
    let (reply, rx) = oneshot::channel();
    let update = SettingsUpdate { notifications: Some(false), ..SettingsUpdate::default() };
    f.submit(Command::Update { id: CONV, caller: alice(), origin: 1, client_event_id: "mute".into(), update, reply });
    let view = rx.blocking_recv().unwrap().unwrap();
    assert_eq!(view.settings.map(|s| s.notifications), Some(false));

    let send = |id: &str, text: &str| {
        let (cmd, rx) = send_as(alice(), id, text, 0);
        f.submit(cmd);
        rx.blocking_recv().unwrap().unwrap()
    };
    send("quiet", "nobody is pushed for this");
    let loud = send("mention", "@carol the filing is due");
    assert_eq!(f.history().last_seq, loud.seq);
    let job = jobs.try_recv().expect("carol was mentioned");
    assert_eq!((job.user_id.as_str(), job.notification.seq), ("carol", loud.seq));
    assert!(jobs.try_recv().is_err(), "muted: nobody else, and nothing for the message without a mention");
    f.stop();
}

#[test]
fn records_outside_conversations_are_answered_after_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(&dir, None);
    let store = deps.store.clone();
    let (shards, threads) = start(2, ShardConfig::for_tests(), deps).unwrap();
    let record = crate::store::StoredUser {
        user_id: "erin".into(),
        role: pb::UserRole::Client as i32,
        name: "Erin".into(),
        last_seen_ms: 5,
        ..Default::default()
    };
    let (reply, rx) = oneshot::channel();
    let shard = shards.shard_of_user("erin");
    assert!(shard < 2);
    shards.submit_to(shard, Command::Commit { writes: vec![Write::User(record)], sync: true, reply }).unwrap();
    rx.blocking_recv().unwrap().unwrap();
    // Answered means committed: the record is readable at once.
    assert_eq!(store.user("erin").unwrap().map(|u| (u.name, u.last_seen_ms)), Some(("Erin".into(), 5)));
    drop(shards);
    threads.join();
}

#[test]
fn a_batch_waits_only_for_the_rest_of_the_commit_interval_since_the_last_commit() {
    let interval = Duration::from_millis(2);
    let t0 = Instant::now();
    assert_eq!(commit_wait(None, interval, t0), None, "the first commit does not wait");
    assert_eq!(commit_wait(Some(t0), interval, t0 + Duration::from_micros(500)), Some(Duration::from_micros(1_500)));
    assert_eq!(commit_wait(Some(t0), interval, t0 + interval), None, "after a quiet spell a message is committed at once");
    assert_eq!(commit_wait(Some(t0), Duration::ZERO, t0), None, "a zero interval never waits");
}

#[test]
fn with_a_commit_interval_every_message_is_answered_delivered_and_stored_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (outbound, mut bob) = outbound::channel(1_024);
    let deps = deps(&dir, None);
    deps.registry.register("bob", SessionHandle::new(2, outbound, Arc::new(Kick::default())));
    let (shards, threads) = start(1, ShardConfig { commit_interval: Duration::from_millis(5), ..config() }, deps).unwrap();
    let (cmd, created) = create();
    shards.submit_to(0, cmd).unwrap();
    created.blocking_recv().unwrap().unwrap();
    // Sent one after another, each while the previous batch may still wait for its turn.
    let answers: Vec<_> = (0..50)
        .map(|i| {
            let (cmd, rx) = send(&format!("m{i}"));
            shards.submit_to(0, cmd).unwrap();
            rx
        })
        .collect();
    let seqs: Vec<u64> = answers.into_iter().map(|rx| rx.blocking_recv().unwrap().unwrap().seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    // A read is served after everything before it was committed and fanned out.
    let (reply, page) = oneshot::channel();
    shards.submit_to(0, Command::History { id: CONV, caller: alice(), cursor: Cursor::Latest, limit: 100, reply }).unwrap();
    assert_eq!(page.blocking_recv().unwrap().unwrap().messages.len(), 50);
    let mut delivered = Vec::new();
    while let Some(bytes) = bob.try_recv() {
        if let Some(pb::server_frame::Event::ReceiveMessage(r)) = codec::decode_exact::<pb::ServerFrame>(&bytes, 1 << 20).unwrap().event {
            delivered.push(r.message.unwrap().seq);
        }
    }
    assert_eq!(delivered, (1..=50).collect::<Vec<_>>(), "bob is sent each message once, in order");
    drop(shards);
    threads.join();
}

#[test]
fn a_listing_builds_only_the_newest_summaries_in_the_listings_order() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, threads) = start(1, config(), deps(&dir, None)).unwrap();
    let ids: Vec<ConversationKey> = (1..=6u8).map(|i| [i; 16]).collect();
    for id in &ids {
        let (cmd, rx) = create_in(*id);
        shards.submit_to(0, cmd).unwrap();
        rx.blocking_recv().unwrap().unwrap();
    }
    // A message in the first conversation: its time counts, not only the creation's.
    let (cmd, rx) = send("late");
    let Command::Send { caller, origin, echo, client_message_id, content, reply_to_seq, submitted, reply, .. } = cmd else {
        unreachable!()
    };
    shards
        .submit_to(0, Command::Send { id: ids[0], caller, origin, echo, client_message_id, content, reply_to_seq, submitted, reply })
        .unwrap();
    let sent = rx.blocking_recv().unwrap().unwrap();

    let list = |user: &str, limit: usize| {
        let (reply, rx) = oneshot::channel();
        shards.submit_to(0, Command::Summaries { ids: ids.clone(), user: user.into(), limit, reply }).unwrap();
        rx.blocking_recv().unwrap().unwrap()
    };
    let all = list("bob", usize::MAX);
    assert_eq!(all.len(), ids.len());
    for w in all.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            a.updated_at_ms > b.updated_at_ms || (a.updated_at_ms == b.updated_at_ms && a.id < b.id),
            "newest first, ties by id: {all:?}"
        );
    }
    let first = all.iter().find(|c| c.id == format_id(&ids[0])).unwrap();
    assert_eq!(first.updated_at_ms, sent.timestamp_ms, "the last message's time");
    let newest = list("bob", 2);
    assert_eq!(newest.iter().map(|c| &c.id).collect::<Vec<_>>(), all[..2].iter().map(|c| &c.id).collect::<Vec<_>>());
    assert!(list("bob", 0).is_empty());
    assert!(list("mallory", usize::MAX).is_empty(), "none of them is hers");
    drop(shards);
    threads.join();
}
