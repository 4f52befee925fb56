//! Requests judged and routed without QUIC: validation, routing, and the gatherings over
//! real shards and a real store.

use std::collections::HashSet;
use std::time::Duration;

use legalchat_protocol::validate::format_id;

use super::*;
use crate::auth::Role;
use crate::crypto::MasterKey;
use crate::registry::Registry;
use crate::store::faulty::FaultyStore;
use crate::store::{RocksStore, Store, StoredConversation, StoredParticipant};

const SHARDS: usize = 4;

fn alice() -> Identity {
    Identity { user_id: "alice".into(), role: Role::Advocate, name: None }
}

fn cx(caller: &Identity) -> Context<'_> {
    Context { caller, session: 9, shards: SHARDS, max_message_size: 100, now_ms: 1_234 }
}

fn frame(request_id: u64, request: Request) -> pb::ClientFrame {
    pb::ClientFrame { request_id, request: Some(request) }
}

fn plan_of(request: Request) -> Plan {
    plan(frame(1, request), &cx(&alice()))
}

/// The error a request is refused with at once.
fn refused(request: Request) -> RequestError {
    match plan_of(request) {
        Plan::Refuse(e) => e,
        other => panic!("not refused at once: {other:?}"),
    }
}

/// A conversation id per shard ([i; 16] lands on shard i of 4), so that routing to the
/// wrong shard cannot pass by luck.
fn conversations() -> Vec<ConversationKey> {
    let ids: Vec<ConversationKey> = (0u8..4).map(|i| [i; 16]).collect();
    assert_eq!(ids.iter().map(|id| ids::shard_of(id, SHARDS)).collect::<Vec<_>>(), [0, 1, 2, 3]);
    ids
}

#[test]
fn a_request_id_of_zero_is_refused() {
    let e = match plan(frame(0, Request::Ping(pb::Ping { nonce: 1 })), &cx(&alice())) {
        Plan::Refuse(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.starts_with("request_id:"), "{}", e.message);
    let empty = plan(pb::ClientFrame { request_id: 3, request: None }, &cx(&alice()));
    assert!(matches!(empty, Plan::Refuse(e) if e.code == ErrorCode::InvalidArgument), "a frame without a request is refused");
}

#[test]
fn typing_is_never_answered() {
    let id = [5; 16];
    for request_id in [0, 7] {
        let typing = |conversation_id: String| frame(request_id, Request::Typing(pb::Typing { conversation_id, active: true }));
        assert!(matches!(plan(typing(format_id(&id)), &cx(&alice())), Plan::Typing(Some((c, true))) if c == id));
        // Not even a bad conversation id earns an error.
        assert!(matches!(plan(typing("not an id".into()), &cx(&alice())), Plan::Typing(None)));
    }
}

#[test]
fn ping_is_answered_at_once_with_the_server_time_and_a_second_authenticate_is_refused() {
    match plan_of(Request::Ping(pb::Ping { nonce: 42 })) {
        Plan::Pong(p) => assert_eq!((p.nonce, p.server_time_ms), (42, 1_234)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(Request::Authenticate(pb::Authenticate { token: "t".into(), ..Default::default() })).code,
        ErrorCode::InvalidArgument
    );
}

#[test]
fn each_request_routes_to_the_shard_of_its_conversation() {
    for id in conversations() {
        let c = format_id(&id);
        let want = ids::shard_of(&id, SHARDS);
        let routed = [
            Request::GetConversation(pb::GetConversation { conversation_id: c.clone() }),
            Request::AddParticipants(pb::AddParticipants { conversation_id: c.clone(), user_ids: vec!["bob".into()], role: 0 }),
            Request::RemoveParticipant(pb::RemoveParticipant { conversation_id: c.clone(), user_id: "bob".into() }),
            Request::UpdateConversation(pb::UpdateConversation {
                conversation_id: c.clone(),
                client_event_id: "u1".into(),
                ..Default::default()
            }),
            Request::SetParticipantRole(pb::SetParticipantRole { conversation_id: c.clone(), user_id: "bob".into(), role: 1 }),
            Request::GetHistory(pb::GetHistory { conversation_id: c.clone(), limit: 10, cursor: None }),
            Request::GetThread(pb::GetThread { conversation_id: c.clone(), root_seq: 1, after_seq: 0, limit: 10 }),
            Request::ListPins(pb::ListPins { conversation_id: c.clone() }),
            Request::GetMessageAudit(pb::GetMessageAudit { conversation_id: c.clone(), message_seq: 1 }),
            Request::MarkRead(pb::MarkRead { conversation_id: c.clone(), seq: 1 }),
            Request::MarkDelivered(pb::MarkDelivered { conversation_id: c.clone(), seq: 1 }),
            Request::GetReceipts(pb::GetReceipts { conversation_id: c.clone() }),
        ];
        for request in routed {
            let name = format!("{request:?}");
            match plan_of(request) {
                Plan::Shard(r) => assert_eq!(r.shard, want, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let content = Some(pb::MessageContent { text: "hi".into(), ..Default::default() });
        let appended = [
            Request::SendMessage(pb::SendMessage {
                conversation_id: c.clone(),
                client_message_id: "m1".into(),
                content: content.clone(),
                reply_to_seq: 0,
            }),
            Request::EditMessage(pb::EditMessage { conversation_id: c.clone(), client_event_id: "e1".into(), message_seq: 1, content }),
            Request::DeleteMessage(pb::DeleteMessage { conversation_id: c.clone(), client_event_id: "e2".into(), message_seq: 1 }),
            Request::React(pb::React {
                conversation_id: c.clone(),
                client_event_id: "e3".into(),
                message_seq: 1,
                emoji: "👍".into(),
                remove: false,
            }),
            Request::PinMessage(pb::PinMessage { conversation_id: c.clone(), client_event_id: "e4".into(), message_seq: 1, unpin: false }),
        ];
        for request in appended {
            let name = format!("{request:?}");
            match plan_of(request) {
                Plan::Append(a) => assert_eq!((a.shard, a.conversation), (want, id), "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        match plan_of(Request::JoinRoom(pb::JoinRoom { conversation_id: c.clone() })) {
            Plan::JoinRoom(j) => assert_eq!((j.shard, j.conversation), (want, id)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(plan_of(Request::LeaveRoom(pb::LeaveRoom { conversation_id: c })), Plan::LeaveRoom(l) if l == id));
    }
}

#[test]
fn a_send_becomes_the_shards_send_command_with_the_caller_and_session() {
    let id = [3; 16];
    let request = Request::SendMessage(pb::SendMessage {
        conversation_id: format_id(&id),
        client_message_id: "m1".into(),
        content: Some(pb::MessageContent { text: "hi".into(), ..Default::default() }),
        reply_to_seq: 2,
    });
    let Plan::Append(append) = plan_of(request) else { panic!("not an append") };
    assert!(append.is_message());
    let (reply, _rx) = SendReply::channel();
    match append.into_command(alice(), 9, false, reply) {
        Command::Send { id: c, caller, origin, client_message_id, reply_to_seq, .. } => {
            assert_eq!((c, caller.user_id.as_str(), origin, client_message_id.as_str(), reply_to_seq), (id, "alice", 9, "m1", 2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_private_conversation_routes_to_the_shard_of_the_pair() {
    let create = Request::CreateConversation(pb::CreateConversation {
        r#type: pb::ConversationType::Private as i32,
        participant_ids: vec!["bob".into(), "alice".into()],
        ..Default::default()
    });
    let Plan::Shard(routed) = plan_of(create) else { panic!("not routed") };
    let id = ids::private_conversation_id("alice", "bob");
    assert_eq!(routed.shard, ids::shard_of(&id, SHARDS));
    let Command::Create { id: created, spec, origin, .. } = routed.command else { panic!("not a create") };
    assert_eq!((created, spec.others, origin), (id, vec!["bob".to_owned()], 9), "the caller is not among the others");
}

#[test]
fn validation_errors_name_the_field() {
    let c = format_id(&[1; 16]);
    let long = "x".repeat(101);
    let text = |t: &str| Some(pb::MessageContent { text: t.into(), ..Default::default() });
    let cases: Vec<(&str, Request)> = vec![
        ("conversation_id", Request::GetConversation(pb::GetConversation { conversation_id: "nope".into() })),
        ("type", Request::CreateConversation(pb::CreateConversation { r#type: 99, ..Default::default() })),
        ("type", Request::CreateConversation(pb::CreateConversation { r#type: 0, ..Default::default() })),
        (
            "participant_ids",
            Request::CreateConversation(pb::CreateConversation { r#type: pb::ConversationType::Private as i32, ..Default::default() }),
        ),
        (
            "case_id",
            Request::CreateConversation(pb::CreateConversation {
                r#type: pb::ConversationType::Group as i32,
                case_id: "2024-1".into(),
                ..Default::default()
            }),
        ),
        ("user_ids", Request::AddParticipants(pb::AddParticipants { conversation_id: c.clone(), user_ids: vec![], role: 0 })),
        ("role", Request::AddParticipants(pb::AddParticipants { conversation_id: c.clone(), user_ids: vec!["bob".into()], role: 99 })),
        ("user_id", Request::RemoveParticipant(pb::RemoveParticipant { conversation_id: c.clone(), user_id: String::new() })),
        ("role", Request::SetParticipantRole(pb::SetParticipantRole { conversation_id: c.clone(), user_id: "bob".into(), role: 99 })),
        (
            "retention_days",
            Request::UpdateConversation(pb::UpdateConversation {
                conversation_id: c.clone(),
                client_event_id: "u1".into(),
                retention_days: Some(u32::MAX),
                ..Default::default()
            }),
        ),
        (
            "client_message_id",
            Request::SendMessage(pb::SendMessage {
                conversation_id: c.clone(),
                client_message_id: String::new(),
                content: text("hi"),
                reply_to_seq: 0,
            }),
        ),
        (
            "content.text",
            Request::SendMessage(pb::SendMessage {
                conversation_id: c.clone(),
                client_message_id: "m".into(),
                content: text(&long),
                reply_to_seq: 0,
            }),
        ),
        (
            "message_seq",
            Request::DeleteMessage(pb::DeleteMessage { conversation_id: c.clone(), client_event_id: "e".into(), message_seq: 0 }),
        ),
        (
            "client_event_id",
            Request::PinMessage(pb::PinMessage {
                conversation_id: c.clone(),
                client_event_id: String::new(),
                message_seq: 1,
                unpin: false,
            }),
        ),
        (
            "emoji",
            Request::React(pb::React {
                conversation_id: c.clone(),
                client_event_id: "e".into(),
                message_seq: 1,
                emoji: "a".into(),
                remove: false,
            }),
        ),
        ("root_seq", Request::GetThread(pb::GetThread { conversation_id: c.clone(), root_seq: 0, after_seq: 0, limit: 10 })),
        ("message_seq", Request::GetMessageAudit(pb::GetMessageAudit { conversation_id: c.clone(), message_seq: 0 })),
        ("limit", Request::GetHistory(pb::GetHistory { conversation_id: c.clone(), limit: u32::MAX, cursor: None })),
        ("limit", Request::ListConversations(pb::ListConversations { limit: u32::MAX })),
        ("max_messages", Request::CatchUp(pb::CatchUp { max_messages: 5_001, ..Default::default() })),
        (
            "conversation_id",
            Request::CatchUp(pb::CatchUp {
                cursors: vec![pb::ConversationCursor { conversation_id: "nope".into(), after_seq: 0 }],
                ..Default::default()
            }),
        ),
        ("user_ids", Request::GetPresence(pb::GetPresence { user_ids: vec![String::new()] })),
        ("target", Request::RegisterPush(pb::RegisterPush { target: None })),
        (
            "web_push.endpoint",
            Request::RegisterPush(pb::RegisterPush {
                target: Some(pb::register_push::Target::WebPush(pb::WebPushSubscription {
                    endpoint: "ftp://x".into(),
                    ..Default::default()
                })),
            }),
        ),
        ("endpoint", Request::UnregisterPush(pb::UnregisterPush { endpoint: String::new() })),
        ("conversation_id", Request::JoinRoom(pb::JoinRoom { conversation_id: String::new() })),
        ("conversation_id", Request::MarkRead(pb::MarkRead { conversation_id: "zz".into(), seq: 1 })),
    ];
    for (field, request) in cases {
        let name = format!("{request:?}");
        let e = refused(request);
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{name}: {e:?}");
        assert!(e.message.starts_with(&format!("{field}:")), "{name}: {:?} does not name {field}", e.message);
    }
}

#[test]
fn catch_up_serves_only_the_callers_conversations_in_the_order_given() {
    let [a, b, c, d] = [[1u8; 16], [2; 16], [3; 16], [4; 16]];
    let mine: HashSet<ConversationKey> = [a, b, d].into_iter().collect();
    let request = |include_unlisted| catch_up::CatchUp { cursors: vec![(b, 5), (c, 1), (a, 0)], include_unlisted, max_messages: 10 };
    // One shard: the order is visible.
    let (by_shard, unknown) = request(false).split(&mine, 1);
    assert_eq!(by_shard, vec![vec![(b, 5), (a, 0)]], "c is not the caller's: never served");
    assert_eq!(unknown, vec![d], "d was not listed: named, not served");
    let (by_shard, unknown) = request(true).split(&mine, 1);
    assert_eq!(by_shard, vec![vec![(b, 5), (a, 0), (d, 0)]], "unlisted ones follow, from the start");
    assert!(unknown.is_empty());
    // Several shards: each conversation goes to its own.
    let (by_shard, _) = request(true).split(&mine, SHARDS);
    for (shard, cursors) in by_shard.iter().enumerate() {
        assert!(cursors.iter().all(|(id, _)| ids::shard_of(id, SHARDS) == shard));
    }
    assert_eq!(by_shard.iter().map(Vec::len).sum::<usize>(), 3);
}

fn conversation(id: ConversationKey, users: &[&str]) -> Vec<Write> {
    let participants = users.iter().map(|u| StoredParticipant { user_id: (*u).into(), role: 1, joined_at_ms: 0 }).collect();
    let meta = StoredConversation { id: id.to_vec(), kind: pb::ConversationType::Group as i32, participants, ..Default::default() };
    let mut writes = vec![Write::Conversation(meta)];
    writes.extend(users.iter().map(|u| Write::Membership { user: (*u).into(), conversation: id }));
    writes
}

#[test]
fn contacts_come_from_the_stored_participant_lists_and_a_failed_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyStore::new(RocksStore::open(dir.path()).unwrap());
    let (one, two, gone) = ([1; 16], [2; 16], [3; 16]);
    store.commit(conversation(one, &["alice", "bob"]), false).unwrap();
    store.commit(conversation(two, &["alice", "carol", "dave"]), false).unwrap();
    // A membership whose conversation no longer exists names no contact.
    store.commit(vec![Write::Membership { user: "alice".into(), conversation: gone }], false).unwrap();
    let contacts = presence::contacts_of(&store, "alice").unwrap();
    let mut sorted: Vec<_> = contacts.into_iter().collect();
    sorted.sort();
    assert_eq!(sorted, ["bob", "carol", "dave"], "everyone who shares a conversation, the user excluded");

    store.make_unreadable(two);
    assert!(presence::contacts_of(&store, "alice").is_err(), "an unreadable conversation is an error, not a skipped one");
}

#[test]
fn presence_is_answered_for_those_who_share_a_conversation_from_the_membership_index_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyStore::new(RocksStore::open(dir.path()).unwrap());
    let (one, two, theirs) = ([1; 16], [2; 16], [4; 16]);
    store.commit(conversation(one, &["alice", "bob"]), false).unwrap();
    store.commit(conversation(two, &["alice", "carol"]), false).unwrap();
    store.commit(conversation(theirs, &["mallory", "eve"]), false).unwrap();
    // No participant list is read: a conversation that cannot be read changes nothing.
    store.make_unreadable(one);
    let asked = ["carol", "mallory", "alice", "bob", "carol", "nobody"].map(String::from).to_vec();
    let seen = presence::visible(&store, "alice", asked).unwrap();
    assert_eq!(seen, ["carol", "alice", "bob"], "contacts and oneself, once each, in the order asked; strangers left out");
}

/// Real shards over a real store, and the services sessions use.
fn services(
    dir: &tempfile::TempDir,
    pool_running: usize,
    pool_waiting: usize,
) -> (Arc<Services>, crate::shard::ShardThreads, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let registry = Arc::new(Registry::default());
    let directory = Arc::new(Directory::new(store.clone()));
    let hub = Arc::new(Hub::new(registry.clone(), Duration::from_secs(5)));
    let push = PushHandle::new(store.clone(), None).with_allowed_hosts(vec!["push.example".into()]);
    let deps = crate::shard::ShardDeps {
        store: store.clone(),
        master: Arc::new(crate::crypto::Keyring::new(MasterKey::from_bytes(&[7; 32]).unwrap())),
        registry: registry.clone(),
        directory: directory.clone(),
        hub: hub.clone(),
        push: push.clone(),
    };
    let (shards, threads) = crate::shard::start(2, crate::shard::ShardConfig::for_tests(), deps).unwrap();
    let pool = StoragePool::new(store.clone(), pool_running, pool_waiting);
    let limits = crate::limits::RateLimits::local(crate::limits::LimitsConfig::default());
    let files =
        crate::files::Files::open(dir.path(), crate::files::FilesConfig::default(), shards.clone(), pool.clone(), limits.uploads.clone())
            .unwrap();
    (
        Arc::new(Services {
            shards,
            pool,
            registry,
            directory,
            hub,
            push,
            files: Arc::new(files),
            limits,
            user_shares: Arc::new(crate::shares::UserShares::new(4096)),
            pending: Arc::default(),
        }),
        threads,
        store,
    )
}

#[tokio::test]
async fn sign_ins_and_push_registrations_are_committed_through_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (services, threads, store) = services(&dir, 2, 8);
    let erin = Identity { user_id: "erin".into(), role: Role::Client, name: Some("Erin".into()) };
    services.record_sign_in(&erin).await.unwrap();
    assert_eq!(store.user("erin").unwrap().map(|u| u.name), Some("Erin".into()), "answered means committed");
    assert!(services.directory.is_current(&erin), "a reconnect needs no IO");

    let key = crate::push::encryption::random_secret_key();
    use base64::Engine as _;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let subscription = pb::WebPushSubscription {
        endpoint: "https://push.example/erin".into(),
        p256dh: b64(key.public_key().to_encoded_point(false).as_bytes()),
        auth: b64(&[9; 16]),
    };
    let register = pb::RegisterPush { target: Some(pb::register_push::Target::WebPush(subscription)) };
    let Plan::Gather(gather) = plan(frame(1, Request::RegisterPush(register)), &cx(&erin)) else { panic!("not gathered") };
    assert!(matches!(gather.run(&services, &erin).await, Ok(pb::ack::Result::Done(_))));
    assert_eq!(store.push_subscriptions("erin").unwrap().len(), 1, "acknowledged means durable");

    let unregister = pb::UnregisterPush { endpoint: "https://push.example/erin".into() };
    let Plan::Gather(gather) = plan(frame(2, Request::UnregisterPush(unregister)), &cx(&erin)) else { panic!("not gathered") };
    assert!(gather.run(&services, &erin).await.is_ok());
    assert!(store.push_subscriptions("erin").unwrap().is_empty());

    drop(services);
    tokio::task::spawn_blocking(move || threads.join()).await.unwrap();
}

#[tokio::test]
async fn last_seen_is_stored_for_every_session_that_ends_at_once_even_beyond_the_pools_bound() {
    let dir = tempfile::tempdir().unwrap();
    // One read at a time and none admitted to wait: a client's read beyond it is refused.
    let (services, threads, store) = services(&dir, 1, 0);
    let users: Vec<Identity> = (0..40).map(|i| Identity { user_id: format!("u{i}"), role: Role::Client, name: None }).collect();
    for user in &users {
        services.record_sign_in(user).await.unwrap();
    }
    // Forty sessions end together (a gateway restarting): each one's record waits its turn.
    let ended: Vec<_> = users.iter().enumerate().map(|(i, u)| services.record_last_seen(&u.user_id, 1_000 + i as i64)).collect();
    for task in ended {
        task.await.unwrap();
    }
    for (i, user) in users.iter().enumerate() {
        let stored = store.user(&user.user_id).unwrap().expect("signed in").last_seen_ms;
        assert_eq!(stored, 1_000 + i as i64, "{}", user.user_id);
    }
    drop(services);
    tokio::task::spawn_blocking(move || threads.join()).await.unwrap();
}

#[tokio::test]
async fn every_contact_that_leaves_at_once_is_announced_even_beyond_the_pools_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (services, threads, store) = services(&dir, 1, 0);
    let others: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let mut members = vec!["alice"];
    members.extend(others.iter().map(String::as_str));
    store.commit(conversation([9; 16], &members), false).unwrap();
    let (tx, mut alice) = crate::outbound::channel(256);
    services.registry.register("alice", crate::registry::SessionHandle::new(1, tx, Arc::new(crate::registry::Kick::default())));
    // Forty contacts' sessions end together; none of them is online any more.
    let announced: Vec<_> = others.iter().map(|u| tokio::spawn(presence::announce(services.clone(), u.clone()))).collect();
    for task in announced {
        task.await.unwrap();
    }
    let mut offline = HashSet::new();
    while let Some(bytes) = alice.try_recv() {
        let frame: pb::ServerFrame = legalchat_protocol::codec::decode_exact(&bytes, 1 << 20).expect("a server frame");
        if let Some(pb::server_frame::Event::Presence(p)) = frame.event {
            let p = p.presence.unwrap();
            assert!(!p.online, "{} is not online", p.user_id);
            offline.insert(p.user_id);
        }
    }
    assert_eq!(offline, others.into_iter().collect::<HashSet<_>>(), "alice hears of every one");
    drop(services);
    tokio::task::spawn_blocking(move || threads.join()).await.unwrap();
}

#[tokio::test]
async fn a_user_reconnecting_while_the_pool_is_busy_queues_one_announcement_which_tells_the_newest_state() {
    let dir = tempfile::tempdir().unwrap();
    let (services, threads, store) = services(&dir, 1, 0);
    store.commit(conversation([9; 16], &["alice", "bob"]), false).unwrap();
    let (tx, mut alice) = crate::outbound::channel(256);
    services.registry.register("alice", crate::registry::SessionHandle::new(1, tx, Arc::new(crate::registry::Kick::default())));
    // The only read slot is held, so announcements wait.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let busy = tokio::spawn({
        let pool = services.pool.clone();
        async move {
            pool.read_in_turn(move |_| {
                let _ = started.send(());
                held.recv().ok()
            })
            .await
        }
    });
    running.await.unwrap();
    // Bob comes and goes ten times; one announcement waits, the others are not queued.
    let first = tokio::spawn(presence::announce(services.clone(), "bob".into()));
    while !services.pending.0.lock().unwrap().contains(&(PendingWork::Presence, "bob".to_owned())) {
        tokio::task::yield_now().await;
    }
    for _ in 0..9 {
        // Returns at once; the bound only keeps a broken coalescing from hanging the test.
        tokio::time::timeout(Duration::from_secs(30), presence::announce(services.clone(), "bob".into()))
            .await
            .expect("a second announcement for bob is not queued while one waits");
    }
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    first.await.unwrap();
    let mut told = Vec::new();
    while let Some(bytes) = alice.try_recv() {
        let frame: pb::ServerFrame = legalchat_protocol::codec::decode_exact(&bytes, 1 << 20).expect("a server frame");
        if let Some(pb::server_frame::Event::Presence(p)) = frame.event {
            told.push(p.presence.unwrap());
        }
    }
    assert_eq!(told.len(), 1, "one announcement: {told:?}");
    assert!(!told[0].online, "bob is offline now");
    // Once it has started, the next change is announced again.
    presence::announce(services.clone(), "bob".into()).await;
    assert!(alice.try_recv().is_some());
    drop(services);
    tokio::task::spawn_blocking(move || threads.join()).await.unwrap();
}

#[tokio::test]
async fn listing_reads_the_membership_index_through_the_pool_and_summaries_from_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (services, threads, _store) = services(&dir, 2, 8);
    // Alice creates conversations on whichever shards their ids fall on.
    let caller = alice();
    for title in ["one", "two", "three"] {
        let create = Request::CreateConversation(pb::CreateConversation {
            r#type: pb::ConversationType::Group as i32,
            participant_ids: vec!["bob".into()],
            title: title.into(),
            ..Default::default()
        });
        let context = Context { shards: services.shards.len(), ..cx(&caller) };
        let Plan::Shard(routed) = plan(frame(1, create), &context) else { panic!("not routed") };
        services.shards.submit_to(routed.shard, routed.command).unwrap();
        routed.pending.wait().await.unwrap();
    }
    let Plan::Gather(list) = plan_of(Request::ListConversations(pb::ListConversations { limit: 2 })) else { panic!("not gathered") };
    let Ok(pb::ack::Result::Conversations(l)) =
        list.run(&services, &Identity { user_id: "bob".into(), role: Role::Advocate, name: None }).await
    else {
        panic!("not listed")
    };
    assert_eq!(l.conversations.len(), 2, "the limit holds across shards");
    drop(services);
    tokio::task::spawn_blocking(move || threads.join()).await.unwrap();
}
