//! The fan-out stream of a shared connection: one event, once, for every session of the
//! connection it is for (see the `.proto`, "fan-out stream").
//!
//! ```text
//!  server ──uni stream 0x02──► read() ──Fanout{tags, frame}──► decode once
//!                                         │
//!                    tag ──FanoutTable──► (client, link) ──► driver::fanout_event
//! ```
//!
//! Each session of a [`crate::SharedConnection`] asks for a tag of its own when it
//! authenticates; the server then sends its events here rather than on its session
//! stream, and a room of a gateway's users costs one frame, not one per session. Events
//! for a tag not (or no longer) in the table are dropped: they came before the session was
//! set up (its list or catch-up covers them) or after it ended (its next session
//! catches up).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use legalchat_protocol::codec::FANOUT_OVERHEAD;
use legalchat_protocol::pb;
use prost::Message;
use tracing::debug;

use crate::Event;
use crate::carrier::RecvHalf;
use crate::connection::CLOSE_PROTOCOL;
use crate::connection::FrameReader;
use crate::driver::{self, Link, Shared};
use crate::session::{self, Routed};

/// The first byte of the fan-out stream.
const STREAM_FANOUT: u8 = 0x02;

/// The sessions of a shared connection that take their events from its fan-out stream.
#[derive(Debug, Default)]
pub(crate) struct FanoutTable {
    next_tag: AtomicU32,
    targets: Mutex<HashMap<u32, Target>>,
}

#[derive(Debug)]
struct Target {
    shared: Weak<Shared>,
    link: Weak<Link>,
}

impl FanoutTable {
    /// A tag no session of this connection has had (tags are never given twice: events
    /// for an ended session may still be on their way).
    pub(crate) fn next_tag(&self) -> u32 {
        loop {
            let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
            if tag != 0 {
                return tag;
            }
        }
    }

    /// Events tagged `tag` are for `link` of the client `shared` from now on.
    pub(crate) fn insert(&self, tag: u32, shared: &Arc<Shared>, link: &Arc<Link>) {
        let target = Target { shared: Arc::downgrade(shared), link: Arc::downgrade(link) };
        driver::lock(&self.targets).insert(tag, target);
    }

    /// The session tagged `tag` has ended.
    pub(crate) fn remove(&self, tag: u32) {
        driver::lock(&self.targets).remove(&tag);
    }

    /// The live sessions among `tags`.
    fn find(&self, tags: &[u32]) -> Vec<(Arc<Shared>, Arc<Link>)> {
        let targets = driver::lock(&self.targets);
        tags.iter()
            .filter_map(|tag| {
                let t = targets.get(tag)?;
                Some((t.shared.upgrade()?, t.link.upgrade()?))
            })
            .collect()
    }

    /// Hands one fan-out frame to the sessions it names; how many took it.
    fn deliver(&self, fanout: pb::Fanout, max_frame: usize) -> usize {
        // Checked before decoding: the event inside may be no larger than on a session stream.
        if fanout.frame.len() > max_frame {
            debug!(len = fanout.frame.len(), "ignored an oversized event on the fan-out stream");
            return 0;
        }
        let frame = match pb::ServerFrame::decode(fanout.frame.as_slice()) {
            Ok(frame) => frame,
            Err(e) => {
                debug!(error = %e, "ignored an undecodable event on the fan-out stream");
                return 0;
            }
        };
        let event = match session::route(frame) {
            Routed::Event(Event::Goodbye { .. }) => {
                debug!("ignored a goodbye on the fan-out stream (it belongs on the session stream)");
                return 0;
            }
            Routed::Event(event) => event,
            Routed::Reply { .. } | Routed::SessionError(_) => {
                debug!("ignored an answer on the fan-out stream (answers come on the session stream)");
                return 0;
            }
            Routed::Ignore(why) => {
                debug!(why, "ignored a frame on the fan-out stream");
                return 0;
            }
        };
        let mut targets = self.find(&fanout.tags);
        let n = targets.len();
        // Every session but the last gets a copy; the last takes the event itself.
        let last = targets.pop();
        for (shared, link) in &targets {
            driver::fanout_event(shared, link, event.clone());
        }
        if let Some((shared, link)) = last {
            driver::fanout_event(&shared, &link, event);
        }
        n
    }
}

/// Reads the fan-out stream of `connection` until the connection ends. `max_frame` is
/// the largest event frame the clients accept.
pub(crate) async fn read(connection: quinn::Connection, table: Arc<FanoutTable>, max_frame: usize) {
    while let Ok(mut recv) = connection.accept_uni().await {
        match recv.read_chunk(1, true).await {
            Ok(Some(kind)) if kind.bytes.first() == Some(&STREAM_FANOUT) => {}
            Ok(Some(kind)) => {
                debug!(kind = ?kind.bytes.first(), "refused a unidirectional stream of an unknown kind");
                let _ = recv.stop(CLOSE_PROTOCOL.into());
                continue;
            }
            Ok(None) | Err(_) => continue,
        }
        let mut reader = FrameReader::new(RecvHalf::Quic(recv), max_frame.saturating_add(FANOUT_OVERHEAD));
        loop {
            match reader.read_message::<pb::Fanout>().await {
                Ok(Some(fanout)) => {
                    table.deliver(fanout, max_frame);
                    // A busy stream never waits to read: let the connection's other tasks in.
                    tokio::task::consume_budget().await;
                }
                Ok(None) => break,
                Err(failure) => {
                    debug!(error = ?failure, "the fan-out stream failed");
                    break;
                }
            }
        }
        // The server keeps the stream for the connection's life: without it, the sessions
        // on the connection would miss their events. The connection goes, and every
        // client on it reconnects and catches up.
        if connection.close_reason().is_none() {
            connection.close(CLOSE_PROTOCOL.into(), b"the fan-out stream ended before the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_never_zero_and_never_given_twice_in_a_row() {
        let table = FanoutTable::default();
        let first = table.next_tag();
        assert_ne!(first, 0, "0 means no tag in the protocol");
        assert_ne!(table.next_tag(), first);
        // Around the wrap, 0 is skipped.
        table.next_tag.store(u32::MAX, Ordering::Relaxed);
        assert_eq!(table.next_tag(), u32::MAX);
        assert_eq!(table.next_tag(), 1);
    }

    #[test]
    fn events_for_unknown_tags_reach_nobody() {
        let table = FanoutTable::default();
        let frame = pb::ServerFrame {
            event: Some(pb::server_frame::Event::Typing(pb::TypingEvent {
                conversation_id: "c".into(),
                user_id: "u".into(),
                active: true,
            })),
        };
        let fanout = pb::Fanout { tags: vec![1, 2], frame: frame.encode_to_vec() };
        assert_eq!(table.deliver(fanout, 1 << 16), 0);
        table.remove(1);
    }
}
