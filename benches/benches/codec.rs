//! Frame codec micro-benchmarks: what every message costs the daemon to encode once and
//! every client to decode.
//!
//! ```sh
//! cargo bench -p legalchat-benches --bench codec
//! cargo bench -p legalchat-benches --bench codec -- --quick     # a fast look
//! ```

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use legalchat_protocol::codec::{self, FrameDecoder};
use legalchat_protocol::pb;

/// A `ServerFrame{ReceiveMessage}` as a recipient gets it, with `text_len` bytes of text.
fn receive_message(text_len: usize, seq: u64) -> pb::ServerFrame {
    pb::ServerFrame {
        event: Some(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage {
            message: Some(pb::Message {
                conversation_id: "0123456789abcdef0123456789abcdef".into(),
                seq,
                message_id: "fedcba9876543210fedcba9876543210".into(),
                client_message_id: "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b".into(),
                sender_id: "advocate.jane@firm.example".into(),
                content: Some(pb::MessageContent {
                    text: "x".repeat(text_len),
                    r#type: pb::ContentType::Text.into(),
                    format: pb::TextFormat::Plain.into(),
                    ..Default::default()
                }),
                timestamp_ms: 1_764_000_000_000,
                state_seq: seq,
                ..Default::default()
            }),
        })),
    }
}

fn single_frames(c: &mut Criterion) {
    let decoder = FrameDecoder::default();
    let mut group = c.benchmark_group("receive_message");
    for (name, text_len) in [("100B", 100), ("10KiB", 10 * 1024)] {
        let frame = receive_message(text_len, 42);
        let encoded = codec::encode(&frame);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &frame, |b, frame| {
            b.iter(|| codec::encode(black_box(frame)));
        });
        group.bench_with_input(BenchmarkId::new("decode", name), &encoded, |b, encoded| {
            b.iter(|| {
                // Copying into a fresh buffer is part of what a reader pays per read.
                let mut buf = BytesMut::from(&encoded[..]);
                decoder.decode::<pb::ServerFrame>(black_box(&mut buf)).expect("valid frame").expect("whole frame")
            });
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    const FRAMES: u64 = 100;
    let decoder = FrameDecoder::default();
    let mut stream = BytesMut::new();
    for seq in 1..=FRAMES {
        codec::encode_into(&receive_message(100, seq), &mut stream);
    }
    let stream = stream.freeze();
    let mut group = c.benchmark_group("batch_100x100B");
    group.throughput(Throughput::Elements(FRAMES));
    group.bench_function("encode_into_one_buffer", |b| {
        let frames: Vec<_> = (1..=FRAMES).map(|seq| receive_message(100, seq)).collect();
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(stream.len());
            for frame in &frames {
                codec::encode_into(black_box(frame), &mut buf);
            }
            buf
        });
    });
    group.bench_function("decode_from_one_buffer", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut n = 0u64;
            while let Some(frame) = decoder.decode::<pb::ServerFrame>(&mut buf).expect("valid frame") {
                black_box(frame);
                n += 1;
            }
            assert_eq!(n, FRAMES);
        });
    });
    group.finish();
}

criterion_group!(benches, single_frames, batch);
criterion_main!(benches);
