//! Fan-out and presence behind one seam: who is connected, and handing them frames.
//!
//! ```text
//!  shards (after a commit) ──┐
//!  sessions (presence)     ──┼──► dyn Bus ──► in-process: Registry (this node's sessions)
//!  rooms (typing)          ──┘              later: a Redis bus (every node's sessions)
//! ```
//!
//! Everything that delivers a frame to a user or asks whether a user is online goes
//! through [`Bus`], never through the [`Registry`] directly, so that a bus spanning several
//! nodes (Redis pub/sub for fan-out, a shared presence set) can take its place without
//! touching the shards, the sessions or the rooms. What a bus must keep: a frame handed
//! to it for a user reaches every connected session of that user except the one excepted,
//! in the order handed; a session whose bounded queue is full is kicked (told to resync),
//! never buffered without bound; `register` and `unregister` say when a user's first
//! session arrives and their last one leaves.
//!
//! This module does not decide who the recipients are (the shards do) nor keep any
//! conversation state.

use bytes::Bytes;

use crate::registry::{Registry, SessionHandle, SessionId};

/// Connected sessions, fan-out and presence.
pub trait Bus: Send + Sync + std::fmt::Debug + 'static {
    /// Adds a session of `user`. True when it is the user's first (they came online).
    fn register(&self, user: &str, handle: SessionHandle) -> bool;

    /// Removes a session of `user`. True when it was the user's last (they went offline).
    fn unregister(&self, user: &str, id: SessionId) -> bool;

    /// Whether `user` has a connected session.
    fn is_online(&self, user: &str) -> bool;

    /// Queues `frame` for every session of `user` except `except`; how many took it.
    fn deliver(&self, user: &str, frame: &Bytes, except: Option<SessionId>) -> usize;

    /// [`Bus::deliver`] to each of `users`; `each` hears, per user, how many sessions took
    /// the frame and whether the user has a session at all. `each` must not call back into
    /// the bus.
    fn deliver_each<'a>(
        &self,
        users: &mut dyn Iterator<Item = &'a str>,
        frame: &Bytes,
        except: Option<SessionId>,
        each: &mut dyn FnMut(&'a str, usize, bool),
    );

    /// Sessions connected to this node.
    fn local_sessions(&self) -> usize;

    /// Ends every session of `user` (each hears `Goodbye{code, reason}`); how many.
    fn kick_user(&self, user: &str, code: legalchat_protocol::pb::ErrorCode, reason: &str) -> usize;
}

impl Bus for Registry {
    fn kick_user(&self, user: &str, code: legalchat_protocol::pb::ErrorCode, reason: &str) -> usize {
        Registry::kick_user(self, user, code, reason)
    }

    fn register(&self, user: &str, handle: SessionHandle) -> bool {
        Registry::register(self, user, handle)
    }

    fn unregister(&self, user: &str, id: SessionId) -> bool {
        Registry::unregister(self, user, id)
    }

    fn is_online(&self, user: &str) -> bool {
        Registry::is_online(self, user)
    }

    fn deliver(&self, user: &str, frame: &Bytes, except: Option<SessionId>) -> usize {
        Registry::deliver(self, user, frame, except)
    }

    fn deliver_each<'a>(
        &self,
        users: &mut dyn Iterator<Item = &'a str>,
        frame: &Bytes,
        except: Option<SessionId>,
        each: &mut dyn FnMut(&'a str, usize, bool),
    ) {
        Registry::deliver_each(self, users, frame, except, each);
    }

    fn local_sessions(&self) -> usize {
        Registry::all(self).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::outbound;
    use crate::registry::Kick;

    /// The in-process bus, used only through the trait, keeps the bus's promises.
    #[tokio::test]
    async fn the_registry_keeps_the_bus_promises_through_the_trait() {
        let bus: Arc<dyn Bus> = Arc::new(Registry::default());
        let (tx1, mut rx1) = outbound::channel(4);
        let (tx2, mut rx2) = outbound::channel(1);
        let kick2 = Arc::new(Kick::default());
        assert!(bus.register("alice", SessionHandle::new(1, tx1, Arc::new(Kick::default()))));
        assert!(!bus.register("alice", SessionHandle::new(2, tx2, kick2.clone())));
        assert!(bus.is_online("alice") && !bus.is_online("bob"));
        let mut heard = Vec::new();
        let frames = [Bytes::from_static(b"1"), Bytes::from_static(b"2")];
        for frame in &frames {
            bus.deliver_each(&mut ["alice", "bob"].into_iter(), frame, None, &mut |user, n, online| heard.push((user, n, online)));
        }
        // Session 2's queue holds one frame: the second kicks it instead of growing.
        assert_eq!(heard, [("alice", 2, true), ("bob", 0, false), ("alice", 1, true), ("bob", 0, false)]);
        assert_eq!((rx1.recv().await, rx1.recv().await), (Some(frames[0].clone()), Some(frames[1].clone())), "in the order handed");
        assert_eq!(rx2.recv().await, Some(frames[0].clone()));
        assert_eq!(kick2.kicked().await.0, legalchat_protocol::pb::ErrorCode::Overloaded);
        assert_eq!(bus.deliver("alice", &frames[0], Some(1)), 1, "all but the excepted session");
        assert_eq!(bus.local_sessions(), 2);
        assert!(!bus.unregister("alice", 1));
        assert!(bus.unregister("alice", 2), "the last session: offline");
        assert!(!bus.is_online("alice"));
    }
}
