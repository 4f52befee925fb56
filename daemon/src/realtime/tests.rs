use super::*;
use crate::registry::Kick;
use crate::registry::Registry;

const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn tracker_starts_refreshes_and_expires() {
    let t0 = Instant::now();
    let mut t = TypingTracker::default();
    let c = [1u8; 16];
    assert!(t.start(c, "alice", t0, TIMEOUT), "first signal starts");
    assert!(!t.start(c, "alice", t0 + Duration::from_secs(2), TIMEOUT), "a refresh is not a new start");
    // The refresh moved the deadline to t0 + 5 s.
    assert!(t.expire(t0 + Duration::from_secs(4)).is_empty());
    assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(t.expire(t0 + Duration::from_secs(5)), vec![(c, "alice".to_string())]);
    assert_eq!(t.next_deadline(), None);
    assert!(t.start(c, "bob", t0, TIMEOUT));
    assert!(t.stop(c, "bob"));
    assert!(!t.stop(c, "bob"), "stopping twice is not a change");
}

fn session(id: SessionId) -> (SessionHandle, crate::outbound::Receiver) {
    let (tx, rx) = crate::outbound::channel(64);
    (SessionHandle::new(id, tx, Arc::new(Kick::default())), rx)
}

fn event(rx: &mut crate::outbound::Receiver) -> Option<Event> {
    let bytes = rx.try_recv()?;
    legalchat_protocol::codec::decode_exact::<pb::ServerFrame>(&bytes, 1 << 20).ok()?.event
}

fn hub_with(users: &[(&str, SessionHandle)]) -> (Arc<Hub>, Arc<Registry>) {
    let registry = Arc::new(Registry::default());
    for (u, h) in users {
        registry.register(u, h.clone());
    }
    (Arc::new(Hub::new(registry.clone(), TIMEOUT)), registry)
}

#[tokio::test(start_paused = true)]
async fn typing_stops_by_itself_after_the_timeout() {
    let (alice, _ra) = session(1);
    let (bob, mut rb) = session(2);
    let (hub, _reg) = hub_with(&[("alice", alice.clone()), ("bob", bob.clone())]);
    let c = [7u8; 16];
    let parts = vec!["alice".to_string(), "bob".to_string()];
    hub.join(c, parts.clone(), "bob", bob);
    hub.join(c, parts, "alice", alice);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(hub.clone().drive_typing(async move {
        let _ = stop_rx.await;
    }));

    hub.typing(c, "alice", true, Instant::now());
    match event(&mut rb) {
        Some(Event::Typing(t)) => assert!(t.active && t.user_id == "alice"),
        other => panic!("bob should see alice typing, got {other:?}"),
    }
    // With the clock paused, time moves only when every task waits: the driver's sleep
    // until the deadline completes at once, virtually 3 s later.
    let started = Instant::now();
    loop {
        tokio::task::yield_now().await;
        if let Some(ev) = event(&mut rb) {
            match ev {
                Event::Typing(t) => {
                    assert!(!t.active && t.user_id == "alice", "{t:?}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let waited = Instant::now() - started;
    assert!(waited >= TIMEOUT && waited < TIMEOUT + Duration::from_millis(200), "stopped after {waited:?} of virtual time");
    let _ = stop_tx.send(());
    driver.await.unwrap();
}

#[tokio::test]
async fn typing_is_not_echoed_and_needs_participation() {
    let (alice, mut ra) = session(1);
    let (bob, mut rb) = session(2);
    let (hub, _reg) = hub_with(&[("alice", alice.clone()), ("bob", bob.clone())]);
    let c = [7u8; 16];
    let parts = vec!["alice".to_string(), "bob".to_string()];
    hub.join(c, parts.clone(), "alice", alice);
    hub.join(c, parts, "bob", bob);
    hub.typing(c, "mallory", true, Instant::now());
    assert!(event(&mut rb).is_none(), "a non-participant's signal is dropped");
    hub.typing(c, "alice", true, Instant::now());
    assert!(matches!(event(&mut rb), Some(Event::Typing(_))));
    assert!(event(&mut ra).is_none(), "the typist does not see their own signal");
    hub.typing(c, "alice", true, Instant::now());
    assert!(event(&mut rb).is_none(), "a refresh is not relayed");
    hub.typing(c, "alice", false, Instant::now());
    assert!(matches!(event(&mut rb), Some(Event::Typing(pb::TypingEvent { active: false, .. }))));
}

/// The online list a `RoomUsers` event of room `c` carries; anything else fails the test.
fn room_users(rx: &mut crate::outbound::Receiver, c: &ConversationKey, what: &str) -> Vec<String> {
    match event(rx) {
        Some(Event::RoomUsers(r)) => {
            assert_eq!(r.conversation_id, format_id(c), "{what}");
            r.online_user_ids
        }
        other => panic!("{what}: expected RoomUsers, got {other:?}"),
    }
}

#[test]
fn room_users_follow_presence_and_membership() {
    let (alice, mut ra) = session(1);
    let (hub, registry) = hub_with(&[("alice", alice.clone())]);
    let c = [9u8; 16];
    let answer = hub.join(c, vec!["alice".into(), "bob".into(), "carol".into()], "alice", alice);
    assert_eq!(answer.online_user_ids, ["alice"]);

    // Bob is a participant: his coming and going changes the room's list.
    let (bob, _rb) = session(2);
    registry.register("bob", bob.clone());
    hub.presence_changed("bob", true);
    assert_eq!(room_users(&mut ra, &c, "bob came online"), ["alice", "bob"]);
    registry.unregister("bob", bob.id);
    hub.presence_changed("bob", false);
    assert_eq!(room_users(&mut ra, &c, "bob went offline"), ["alice"]);
    registry.register("bob", bob.clone());
    hub.presence_changed("bob", true);
    assert_eq!(room_users(&mut ra, &c, "bob came back"), ["alice", "bob"]);

    // Removing him changes the list at once.
    hub.participants_changed(&c, &["alice".to_string(), "carol".to_string()]);
    assert_eq!(room_users(&mut ra, &c, "bob was removed"), ["alice"]);
    // From now on his presence is none of the room's business. Coming online again
    // would have changed the list, had he still been a participant.
    registry.unregister("bob", bob.id);
    hub.presence_changed("bob", false);
    registry.register("bob", bob);
    hub.presence_changed("bob", true);
    assert!(event(&mut ra).is_none(), "bob is no longer in the room");
    // And the next list, when carol comes, leaves him out although he is online.
    let (carol, _rc) = session(3);
    registry.register("carol", carol);
    hub.presence_changed("carol", true);
    assert_eq!(room_users(&mut ra, &c, "carol came online"), ["alice", "carol"]);
}
