//! Which sessions are connected for which user: the fan-out target of the shards.
//!
//! Shards hold no session state; after committing a message they look up each
//! participant here and hand every one of the user's sessions the same encoded bytes.
//! Each session's outbound queue is bounded. A session whose queue is full has fallen
//! behind: rather than buffer without limit or drop a message silently, it is *kicked* —
//! closed with a reason telling the client to reconnect and resync from its cursor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::outbound::{self, TrySendError};

use legalchat_protocol::codec;
use legalchat_protocol::pb::ErrorCode;

/// A session's id, unique across daemons (see [`crate::ids::SessionIds`]).
pub type SessionId = u64;

/// The way to reach one connected session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// The session.
    pub id: SessionId,
    /// Its bounded outbound queue of encoded frames.
    pub outbound: outbound::Sender,
    /// Set when the session must end.
    pub kick: Arc<Kick>,
    /// Where its events go instead of `outbound`: its connection's fan-out stream, under
    /// its tag. `None`: on its own stream.
    pub fanout: Option<FanoutRoute>,
}

impl SessionHandle {
    /// A session whose events go on its own stream.
    pub fn new(id: SessionId, outbound: outbound::Sender, kick: Arc<Kick>) -> Self {
        Self { id, outbound, kick, fanout: None }
    }
}

/// A connection's fan-out stream (see the `.proto`): one bounded queue for the events of
/// all its tagged sessions, each event once with the tags of the sessions it is for.
#[derive(Debug)]
pub struct FanoutStream {
    /// The queue its writer drains.
    pub out: outbound::Sender,
}

/// A session's place on its connection's fan-out stream.
#[derive(Debug, Clone)]
pub struct FanoutRoute {
    /// The stream.
    pub stream: Arc<FanoutStream>,
    /// The session's tag on it.
    pub tag: u32,
}

/// One frame on its way to many sessions. A session with a stream of its own gets it at
/// once ([`Delivery::offer`]); for tagged sessions the tags are gathered per fan-out
/// stream, and each stream gets the frame once, with all their tags, when the delivery is
/// dropped. A queue that is full kicks the sessions that miss the frame (slow consumer).
#[derive(Debug)]
pub struct Delivery<'a> {
    frame: &'a Bytes,
    gathered: Vec<Gathered<'a>>,
}

#[derive(Debug)]
struct Gathered<'a> {
    stream: &'a FanoutStream,
    tags: Vec<(u32, &'a Kick)>,
}

impl<'a> Delivery<'a> {
    /// A delivery of `frame` (one encoded `ServerFrame`, prefix included).
    pub fn new(frame: &'a Bytes) -> Self {
        Self { frame, gathered: Vec::new() }
    }

    /// Queues the frame for `h`, or gathers its tag; whether it was taken (a gathered
    /// session counts as taken: its stream gets the frame when the delivery ends).
    pub fn offer(&mut self, h: &'a SessionHandle) -> bool {
        let Some(route) = &h.fanout else {
            return match h.outbound.try_send(self.frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full) => {
                    slow_consumer(&h.kick);
                    false
                }
                Err(TrySendError::Closed) => false,
            };
        };
        let stream = &*route.stream;
        let tag = (route.tag, &*h.kick);
        match self.gathered.iter_mut().find(|g| std::ptr::eq(g.stream, stream)) {
            Some(g) => g.tags.push(tag),
            None => self.gathered.push(Gathered { stream, tags: vec![tag] }),
        }
        true
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        for g in self.gathered.drain(..) {
            for part in g.tags.chunks(codec::FANOUT_MAX_TAGS) {
                let tags: Vec<u32> = part.iter().map(|&(tag, _)| tag).collect();
                if let Err(TrySendError::Full) = g.stream.out.try_send(codec::encode_fanout(&tags, self.frame)) {
                    for (_, kick) in part {
                        slow_consumer(kick);
                    }
                }
            }
        }
    }
}

fn slow_consumer(kick: &Kick) {
    metrics::counter!("legalchat_slow_consumer_disconnects_total").increment(1);
    kick.kick(ErrorCode::Overloaded, "this session fell too far behind; reconnect and resync from your last seq");
}

/// A request that a session end, with the reason.
#[derive(Debug, Default)]
pub struct Kick {
    notify: Notify,
    reason: Mutex<Option<(ErrorCode, String)>>,
}

impl Kick {
    /// Asks the session to end. The first reason wins.
    pub fn kick(&self, code: ErrorCode, reason: impl Into<String>) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some((code, reason.into()));
        }
        drop(r);
        self.notify.notify_one();
    }

    /// Resolves once the session has been kicked; returns the reason.
    pub async fn kicked(&self) -> (ErrorCode, String) {
        loop {
            if let Some(r) = self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return r;
            }
            self.notify.notified().await;
        }
    }
}

/// Connected sessions by user.
#[derive(Debug, Default)]
pub struct Registry {
    users: RwLock<HashMap<String, Vec<SessionHandle>>>,
}

impl Registry {
    /// Adds a session of `user`. Returns true when it is the user's first (they came online).
    pub fn register(&self, user: &str, handle: SessionHandle) -> bool {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        // Most users have one device: room for one handle, not the default four.
        let list = users.entry(user.to_owned()).or_insert_with(|| Vec::with_capacity(1));
        list.push(handle);
        list.len() == 1
    }

    /// Removes a session of `user`. Returns true when it was the user's last (they went offline).
    pub fn unregister(&self, user: &str, id: SessionId) -> bool {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = users.get_mut(user) {
            let before = list.len();
            list.retain(|h| h.id != id);
            if list.is_empty() {
                users.remove(user);
                return before > 0;
            }
        }
        false
    }

    /// Whether `user` has a connected session.
    pub fn is_online(&self, user: &str) -> bool {
        self.users.read().unwrap_or_else(|e| e.into_inner()).contains_key(user)
    }

    /// Queues `frame` for every session of `user` except `except`. Returns how many
    /// sessions it was queued for. A full queue kicks that session (slow consumer).
    pub fn deliver(&self, user: &str, frame: &Bytes, except: Option<SessionId>) -> usize {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        let mut delivery = Delivery::new(frame);
        users.get(user).map_or(0, |list| queue(&mut delivery, list, except))
    }

    /// [`Registry::deliver`] to each of `users`, under one lock for all of them rather than
    /// one per recipient. `each` hears, per user, how many sessions the frame was queued for
    /// and whether the user has a session at all (the one excepted included); it must not
    /// call back into the registry.
    pub fn deliver_each<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        frame: &Bytes,
        except: Option<SessionId>,
        mut each: impl FnMut(&'a str, usize, bool),
    ) {
        let map = self.users.read().unwrap_or_else(|e| e.into_inner());
        let mut delivery = Delivery::new(frame);
        for user in users {
            match map.get(user) {
                Some(list) => each(user, queue(&mut delivery, list, except), true),
                None => each(user, 0, false),
            }
        }
        // The fan-out streams get the frame once each, still under the lock: a session
        // that unregisters meanwhile is not named after it has gone.
        drop(delivery);
    }

    /// Asks every session of `user` to end with `code` and `reason`; how many.
    pub fn kick_user(&self, user: &str, code: ErrorCode, reason: &str) -> usize {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        let list = users.get(user).map_or(&[][..], Vec::as_slice);
        for handle in list {
            handle.kick.kick(code, reason);
        }
        list.len()
    }

    /// Every session, for shutdown.
    pub fn all(&self) -> Vec<SessionHandle> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).values().flatten().cloned().collect()
    }

    /// Number of users with at least one session.
    pub fn online_users(&self) -> usize {
        self.users.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Offers the delivery to every session in `list` except `except`; how many took it.
fn queue<'a>(delivery: &mut Delivery<'a>, list: &'a [SessionHandle], except: Option<SessionId>) -> usize {
    list.iter().filter(|h| Some(h.id) != except).filter(|h| delivery.offer(h)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: SessionId, cap: usize) -> (SessionHandle, outbound::Receiver) {
        let (tx, rx) = outbound::channel(cap);
        (SessionHandle::new(id, tx, Arc::new(Kick::default())), rx)
    }

    #[tokio::test]
    async fn delivers_to_every_device_but_the_origin() {
        let reg = Registry::default();
        let (a, mut ra) = handle(1, 4);
        let (b, mut rb) = handle(2, 4);
        assert!(reg.register("alice", a), "first device: online");
        assert!(!reg.register("alice", b), "second device: already online");
        assert_eq!(reg.deliver("alice", &Bytes::from_static(b"x"), Some(1)), 1);
        assert_eq!(rb.recv().await.unwrap(), Bytes::from_static(b"x"));
        assert!(ra.try_recv().is_none());
        assert!(!reg.unregister("alice", 2), "one device left: still online");
        assert!(reg.is_online("alice"));
        assert!(reg.unregister("alice", 1), "last device: offline");
        assert_eq!(reg.online_users(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_kicks_instead_of_growing() {
        let reg = Registry::default();
        let (a, _ra) = handle(1, 1);
        let kick = a.kick.clone();
        reg.register("bob", a);
        assert_eq!(reg.deliver("bob", &Bytes::from_static(b"1"), None), 1);
        assert_eq!(reg.deliver("bob", &Bytes::from_static(b"2"), None), 0);
        let (code, reason) = kick.kicked().await;
        assert_eq!(code, ErrorCode::Overloaded);
        assert!(reason.contains("resync"));
    }

    #[tokio::test]
    async fn delivering_to_many_says_per_user_who_took_it_and_who_is_online() {
        let reg = Registry::default();
        let (a1, mut ra1) = handle(1, 4);
        let (a2, mut ra2) = handle(2, 4);
        let (b, mut rb) = handle(3, 4);
        reg.register("alice", a1);
        reg.register("alice", a2);
        reg.register("bob", b);
        let mut heard = Vec::new();
        reg.deliver_each(["alice", "bob", "carol"], &Bytes::from_static(b"m"), Some(3), |user, n, online| {
            heard.push((user, n, online));
        });
        assert_eq!(heard, [("alice", 2, true), ("bob", 0, true), ("carol", 0, false)], "bob's only session sent it");
        assert_eq!(ra1.recv().await.unwrap(), Bytes::from_static(b"m"));
        assert_eq!(ra2.recv().await.unwrap(), Bytes::from_static(b"m"));
        assert!(rb.try_recv().is_none(), "the origin does not get its own frame");
    }
}
