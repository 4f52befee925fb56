//! What the sessions of one connection share: how many are open, the stream credit
//! granted to the client, and whom typing datagrams speak for. No frames are read or
//! written here. A TLS-over-TCP connection carries one stream, so most of this is QUIC's.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::{INITIAL_STREAMS, close_code};
use crate::outbound;
use crate::registry::{FanoutRoute, FanoutStream};
use crate::streams::SendHalf;

/// The kind byte that opens the fan-out stream (see the `.proto`).
pub(super) const STREAM_FANOUT: u8 = 0x02;

/// How long the client may take to give the server room for the fan-out stream (its
/// `initial_max_streams_uni`) once a session asked for it.
const FANOUT_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the sessions of one connection share.
pub(super) struct Link {
    /// The QUIC connection; `None` for TLS over TCP, which ends with its one session.
    pub(super) conn: Option<quinn::Connection>,
    most_sessions: usize,
    state: std::sync::Mutex<LinkState>,
}

struct LinkState {
    /// Session streams accepted and not yet ended, authenticated or not.
    open: usize,
    /// Concurrent bidirectional streams granted to the client so far.
    stream_limit: u32,
    /// Whom typing datagrams on this connection speak for.
    speaker: Speaker,
    /// The fan-out stream, once a tagged session asked for it.
    fanout: Option<Arc<FanoutStream>>,
    /// Tags of the live sessions on the fan-out stream.
    tags: HashSet<u32>,
}

/// A datagram belongs to no stream, so it can only speak for the connection's user.
enum Speaker {
    /// No session has authenticated yet.
    Nobody,
    /// Every authenticated session on the connection is this user's.
    One(Arc<str>),
    /// Sessions of more than one user have shared the connection: datagrams are ignored
    /// from now on.
    Mixed,
}

impl Link {
    pub(super) fn new(conn: quinn::Connection, most_sessions: usize) -> Self {
        let state = LinkState { open: 0, stream_limit: INITIAL_STREAMS, speaker: Speaker::Nobody, fanout: None, tags: HashSet::new() };
        Self { conn: Some(conn), most_sessions, state: std::sync::Mutex::new(state) }
    }

    /// A TLS-over-TCP connection's: one stream, so one session.
    pub(super) fn tcp() -> Self {
        let state = LinkState { open: 0, stream_limit: 1, speaker: Speaker::Nobody, fanout: None, tags: HashSet::new() };
        Self { conn: None, most_sessions: 1, state: std::sync::Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes on one more session stream, unless the connection carries its maximum.
    /// Keeps a little headroom of streams open to the client so that opening the next
    /// session never waits on a round trip for credit.
    pub(super) fn open(&self) -> bool {
        let mut s = self.state();
        if s.open >= self.most_sessions {
            return false;
        }
        s.open += 1;
        let ceiling = u32::try_from(self.most_sessions).unwrap_or(u32::MAX).saturating_add(INITIAL_STREAMS);
        let wanted = u32::try_from(s.open).unwrap_or(u32::MAX).saturating_add(2);
        if let Some(conn) = &self.conn
            && wanted > s.stream_limit
            && s.stream_limit < ceiling
        {
            s.stream_limit = s.stream_limit.saturating_mul(2).max(wanted).min(ceiling);
            conn.set_max_concurrent_bi_streams(s.stream_limit.into());
        }
        true
    }

    pub(super) fn authenticated(&self, user: &str) {
        let mut s = self.state();
        match &s.speaker {
            Speaker::Nobody => s.speaker = Speaker::One(user.into()),
            Speaker::One(u) if &**u != user => s.speaker = Speaker::Mixed,
            Speaker::One(_) | Speaker::Mixed => {}
        }
    }

    /// A place under `tag` on the connection's fan-out stream, opened with the first:
    /// `Ok(None)` over TLS over TCP (one stream only: events stay on the session's), `Err`
    /// with the reason when a live session already has the tag. `queue` bounds the
    /// stream's queue, in frames.
    pub(super) fn join_fanout(&self, tag: u32, queue: usize) -> Result<Option<FanoutRoute>, String> {
        let Some(conn) = &self.conn else { return Ok(None) };
        let mut s = self.state();
        if !s.tags.insert(tag) {
            return Err(format!("fanout_tag {tag} is already used by another session on this connection"));
        }
        let stream = s
            .fanout
            .get_or_insert_with(|| {
                let (out, rx) = outbound::channel(queue);
                // The kind byte goes first; nothing can overtake it.
                let _ = out.try_send(Bytes::from_static(&[STREAM_FANOUT]));
                tokio::spawn(write_fanout(conn.clone(), rx));
                Arc::new(FanoutStream { out })
            })
            .clone();
        Ok(Some(FanoutRoute { stream, tag }))
    }

    /// A session left the fan-out stream: its tag is free again.
    pub(super) fn leave_fanout(&self, tag: u32) {
        self.state().tags.remove(&tag);
    }

    /// The user typing datagrams on this connection speak for, if there is one.
    pub(super) fn datagram_user(&self) -> Option<Arc<str>> {
        match &self.state().speaker {
            Speaker::One(user) => Some(user.clone()),
            Speaker::Nobody | Speaker::Mixed => None,
        }
    }

    /// One session stream ended. The last one takes the connection with it, closed with
    /// that session's code and reason; a connection nobody uses is not kept open.
    ///
    /// The connection is closed while the count is held: a session stream taken on between
    /// the count reaching zero and the close would be authenticated and then lose its
    /// connection to another session's ending (seen under CPU load, when the closing task
    /// was preempted there). Held, a new stream is either counted first, and the
    /// connection stays, or comes after the close and fails with it, as the client expects.
    pub(super) fn close_one(&self, code: u32, reason: &str) {
        let mut s = self.state();
        s.open = s.open.saturating_sub(1);
        if s.open == 0
            && let Some(conn) = &self.conn
        {
            conn.close(code.into(), reason.as_bytes());
        }
    }
}

/// Opens the connection's fan-out stream and writes what its queue gets until the
/// connection ends. A client that refuses or resets the stream leaves its tagged sessions
/// without their events, so the connection is closed: its sessions reconnect and resync.
async fn write_fanout(conn: quinn::Connection, rx: outbound::Receiver) {
    let send = match tokio::time::timeout(FANOUT_OPEN_TIMEOUT, conn.open_uni()).await {
        Ok(Ok(send)) => send,
        Ok(Err(_)) => return,
        Err(_) => {
            conn.close(
                close_code::PROTOCOL.into(),
                b"a session asked for the fan-out stream (fanout_tag), but the client lets the server open no unidirectional stream",
            );
            return;
        }
    };
    if !super::write_loop(SendHalf::Quic(send), rx).await && conn.close_reason().is_none() {
        conn.close(close_code::PROTOCOL.into(), b"the fan-out stream was reset");
    }
}
