//! The first bytes of a bidirectional stream, read as the daemon reads them: the kind byte
//! (`files::StreamKind::of`); for a transfer stream its `TransferRequest`
//! (`files::decode_request`), fed in reads of at most the size it asks for, and shorter as
//! QUIC may deliver less; for a session stream its first frame, whose length prefix
//! begins with the kind byte, read the same way (as the session's `FrameReader` does).
//!
//! The first fuzz byte sets the largest read (1..=64 bytes); the rest is the stream.
//!
//! What must hold for any input: no panic; a kind byte other than 0x00 and 0x01 is refused
//! with a reason naming it; reading never asks for a byte past the request's frame, so an
//! upload's first bytes stay in the stream; a request decodes from exactly that frame and
//! its ticket fits in it; a refusal is MALFORMED_FRAME and says it was the transfer request.
#![no_main]

use bytes::BytesMut;
use legalchat_daemon::files::{RequestRead, StreamKind, decode_request};
use legalchat_protocol::codec::{self, FrameDecoder, LENGTH_PREFIX_LEN};
use legalchat_protocol::pb::{self, ErrorCode};
use libfuzzer_sys::fuzz_target;

/// The largest `TransferRequest` frame the daemon reads.
const MAX_REQUEST_FRAME: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&read, stream)) = data.split_first() else { return };
    let largest_read = usize::from(read % 64) + 1;
    let Some(&kind) = stream.first() else { return };
    match StreamKind::of(kind) {
        Ok(StreamKind::Transfer) => transfer(&stream[1..], largest_read),
        Ok(StreamKind::Session) => session(stream, largest_read),
        Err(reason) => {
            assert!(kind > 1);
            assert!(reason.contains(&format!("0x{kind:02x}")), "{reason}");
        }
    }
});

fn transfer(mut rest: &[u8], largest_read: usize) {
    let all = rest;
    let mut buf = BytesMut::new();
    let mut taken = 0;
    loop {
        match decode_request(&mut buf) {
            Ok(RequestRead::Done(request)) => {
                assert!(buf.is_empty(), "read past the transfer request");
                assert!(request.ticket.len() <= MAX_REQUEST_FRAME);
                let frame = &all[..taken];
                assert!(frame.len() <= LENGTH_PREFIX_LEN + MAX_REQUEST_FRAME);
                assert_eq!(codec::decode_exact::<pb::TransferRequest>(frame, MAX_REQUEST_FRAME).as_ref(), Ok(&request));
                return;
            }
            Ok(RequestRead::More(want)) => {
                assert!(want >= 1);
                let room = LENGTH_PREFIX_LEN + MAX_REQUEST_FRAME - buf.len();
                assert!(want <= room, "asks for {want} bytes; the request has at most {room} left");
                if rest.is_empty() {
                    return; // The stream ended before its request.
                }
                let n = want.min(largest_read).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                taken += n;
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::MalformedFrame);
                assert!(e.message.starts_with("the transfer request: "), "{}", e.message);
                return;
            }
        }
    }
}

/// The session's first frame, with the default frame limit.
fn session(mut rest: &[u8], largest_read: usize) {
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    loop {
        match decoder.decode::<pb::ClientFrame>(&mut buf) {
            Ok(Some(_first)) => return assert!(buf.is_empty(), "read past the first frame"),
            Ok(None) => {
                if rest.is_empty() {
                    return;
                }
                let n = decoder.missing(&buf).max(1).min(largest_read).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            Err(_) => return,
        }
    }
}
