//! Frames in and out of a session stream: [`FrameReader`] reads whole client frames off
//! a session stream (QUIC or TLS over TCP); the `*_frame` functions encode the server frames the driver writes.
//! No request logic lives here.

use bytes::{Bytes, BytesMut};

use legalchat_protocol::codec::{self, DecodeError, FrameDecoder};
use legalchat_protocol::pb::{self, ErrorCode, server_frame::Event};

use crate::streams::RecvHalf;

/// Why reading a frame stopped.
#[derive(Debug)]
pub(super) enum ReadError {
    Decode(DecodeError),
    Stream(String),
    /// A frame began and did not complete in time (a slowloris).
    Stalled(std::time::Duration),
}

/// Reads whole frames off a session stream, never buffering past the frame being read.
pub(super) struct FrameReader {
    pub(super) recv: RecvHalf,
    pub(super) buf: BytesMut,
    decoder: FrameDecoder,
    /// How long a frame may take from its first byte to its last.
    frame_timeout: std::time::Duration,
}

impl FrameReader {
    pub(super) fn new(recv: RecvHalf, max_frame_size: usize, frame_timeout: std::time::Duration) -> Self {
        Self { recv, buf: BytesMut::new(), decoder: FrameDecoder::new(max_frame_size), frame_timeout }
    }

    pub(super) async fn next(&mut self) -> Result<Option<pb::ClientFrame>, ReadError> {
        // Set once a frame has begun: its rest must come before then.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).map_err(ReadError::Decode)? {
                return Ok(Some(frame));
            }
            let want = self.decoder.missing(&self.buf).max(1);
            let read = self.recv.read_chunk(want);
            let read = if self.buf.is_empty() {
                read.await
            } else {
                // Boxed: only a frame in progress waits with a deadline, and a timer inline
                // would weigh on every idle session's task.
                let by = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.frame_timeout);
                match Box::pin(tokio::time::timeout_at(by, read)).await {
                    Ok(read) => read,
                    Err(_) => return Err(ReadError::Stalled(self.frame_timeout)),
                }
            };
            match read {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(ReadError::Stream("stream ended inside a frame".into())),
                Err(e) => return Err(ReadError::Stream(e)),
            }
        }
    }
}

pub(super) fn error_frame(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Bytes {
    codec::encode(&pb::ServerFrame {
        event: Some(Event::Error(pb::Error { request_id, code: code as i32, message: message.into(), retry_after_ms: 0 })),
    })
}

pub(super) fn ack_frame(request_id: u64, result: pb::ack::Result) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Ack(pb::Ack { request_id, result: Some(result) })) })
}

/// The answer to a request: its `Ack` or its `Error`.
pub(super) fn answer_frame(request_id: u64, result: Result<pb::ack::Result, crate::policy::RequestError>) -> Bytes {
    match result {
        Ok(r) => ack_frame(request_id, r),
        Err(e) => codec::encode(&pb::ServerFrame { event: Some(Event::Error(e.to_pb(request_id))) }),
    }
}

pub(super) fn unauthorized_frame(reason: &str) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Unauthorized(pb::Unauthorized { reason: reason.to_owned() })) })
}

pub(super) fn goodbye_frame(code: ErrorCode, reason: &str) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(Event::Goodbye(pb::Goodbye { code: code as i32, reason: reason.to_owned() })) })
}

pub(super) fn decode_code(e: &DecodeError) -> ErrorCode {
    match e {
        DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::MalformedFrame,
    }
}
