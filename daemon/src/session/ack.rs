//! The answer path of sends and events: [`AckTo`] is handed to the shard inside the
//! command and answers on the session's outbound queue from the shard's own thread, once
//! the append is durable, with no task to wake in between. It decides nothing about the
//! request; it only queues the answer and lets the request's in-flight permit go.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use legalchat_protocol::pb::{self, ErrorCode};

use super::frames::{ack_frame, error_frame};
use crate::outbound;
use crate::policy::RequestError;
use crate::registry::Kick;

/// Where a send's answer goes: queued on the session's stream by whichever thread has it
/// (the shard's, after the commit), with the request's in-flight permit let go once it is.
/// Dropped unanswered (the shard stopped first), it answers that the server is going away.
pub(super) struct AckTo {
    pub(super) out: outbound::Sender,
    pub(super) kick: Arc<Kick>,
    pub(super) request_id: u64,
    pub(super) started: Instant,
    pub(super) permit: Option<super::InFlight>,
}

impl AckTo {
    pub(super) fn answer(mut self, result: Result<pb::MessageAccepted, RequestError>) {
        let frame = match result {
            Ok(accepted) => {
                crate::ops::hot().send_ack_seconds.record(self.started.elapsed().as_secs_f64());
                ack_frame(self.request_id, pb::ack::Result::MessageAccepted(accepted))
            }
            Err(e) => error_frame(self.request_id, e.code, e.message),
        };
        self.queue(frame);
    }

    /// Queues `frame` without waiting (the caller may be a shard thread). A session whose
    /// queue is full has stopped reading: it is ended as a slow consumer, as fan-out does.
    fn queue(&mut self, frame: Bytes) {
        if let Err(outbound::TrySendError::Full) = self.out.try_send(frame) {
            metrics::counter!("legalchat_slow_consumer_disconnects_total").increment(1);
            self.kick.kick(ErrorCode::Overloaded, "this session fell too far behind; reconnect and resync from your last seq");
        }
        self.permit = None;
    }
}

impl Drop for AckTo {
    fn drop(&mut self) {
        if self.permit.is_some() {
            let frame = error_frame(self.request_id, ErrorCode::Unavailable, "the server is shutting down; the request was not applied");
            self.queue(frame);
        }
    }
}
