//! Feeds arbitrary bytes to the frame codec exactly as the daemon and the SDK read them off
//! a QUIC stream (session streams, the frames of transfer streams, the fan-out stream): in
//! chunks of arbitrary size, decoding every whole frame as it completes.
//!
//! What must hold for any input: no panic, no allocation driven by an announced length
//! above the maximum, "incomplete" consumes nothing, and a decoder stops at its first
//! error (as a session does: after a bad frame the stream is closed).
#![no_main]

use bytes::BytesMut;
use legalchat_protocol::codec::{self, DecodeError, FrameDecoder, LENGTH_PREFIX_LEN};
use legalchat_protocol::pb;
use libfuzzer_sys::fuzz_target;

/// A small maximum so that the fuzzer reaches the "too large" branch with short inputs.
const SMALL_MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The first byte, when present, picks the chunk size the bytes arrive in, so that
    // frames split across reads at every possible offset are exercised.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 32) + 1, rest),
        None => (1, data),
    };
    stream::<pb::ClientFrame>(FrameDecoder::new(SMALL_MAX), body, chunk);
    stream::<pb::ClientFrame>(FrameDecoder::default(), body, chunk);
    stream::<pb::ServerFrame>(FrameDecoder::default(), body, chunk);
    // Transfer streams: after their kind byte, a `TransferRequest` (the daemon reads it with
    // a 1 KiB maximum), and `TransferReply` frames back.
    stream::<pb::TransferRequest>(FrameDecoder::new(1024), body, chunk);
    stream::<pb::TransferReply>(FrameDecoder::default(), body, chunk);
    // The fan-out stream, after its kind byte: `Fanout` frames, each holding one event's
    // `ServerFrame` (the SDK decodes that too).
    stream::<pb::Fanout>(FrameDecoder::new(codec::DEFAULT_MAX_FRAME_LEN + codec::FANOUT_OVERHEAD), body, chunk);
    if let Ok(fanout) = codec::decode_exact::<pb::Fanout>(body, codec::DEFAULT_MAX_FRAME_LEN + codec::FANOUT_OVERHEAD) {
        let _ = <pb::ServerFrame as prost::Message>::decode(fanout.frame.as_slice());
    }

    // One datagram-style whole frame.
    for max in [SMALL_MAX, codec::DEFAULT_MAX_FRAME_LEN] {
        if let Ok(frame) = codec::decode_exact::<pb::ServerFrame>(body, max) {
            // What decodes must re-encode to a frame the same decoder accepts. (A body of
            // unknown fields only decodes to an empty frame, which re-encodes to nothing.)
            let again = codec::encode(&frame);
            if (1..=max).contains(&(again.len() - LENGTH_PREFIX_LEN)) {
                let round = codec::decode_exact::<pb::ServerFrame>(&again, max).expect("re-encoded frame decodes");
                assert_eq!(round, frame);
            }
        }
        let _ = codec::decode_exact::<pb::ClientFrame>(body, max);
    }
});

fn stream<M: prost::Message + Default>(decoder: FrameDecoder, bytes: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode::<M>(&mut buf) {
                Ok(Some(_frame)) => assert!(buf.len() < before, "a decoded frame consumes bytes"),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "incomplete consumes nothing");
                    assert!(decoder.missing(&buf) > 0, "incomplete means bytes are missing");
                    break;
                }
                Err(DecodeError::TooLarge { len, max }) => {
                    assert!(len > max && max == decoder.max_frame_len());
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
