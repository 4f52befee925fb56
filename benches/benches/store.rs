//! The store's append path, as a shard runs it: seal each message under the
//! conversation's data key (AES-256-GCM), then commit message, de-duplication index and
//! read position in one RocksDB write batch — with and without fsync, one message per
//! batch (a lone message) and 100 per batch (group commit under load).
//!
//! ```sh
//! cargo bench -p legalchat-benches --bench store
//! cargo bench -p legalchat-benches --bench store -- --quick
//! ```

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use legalchat_daemon::crypto::MasterKey;
use legalchat_daemon::store::{RocksStore, Store, StoredMessage, StoredReadState, Write};
use prost::Message as _;

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = RocksStore::open(dir.path()).expect("open RocksDB");
    let master = MasterKey::from_text(&MasterKey::generate_text()).expect("master key");
    let conversation = [7u8; 16];
    let (key, _) = master.new_data_key(&conversation);
    let text = "Hearing moved to 10:00; bring the signed exhibits. ".repeat(4);
    let mut seq = 0u64;

    let mut group = c.benchmark_group("store_append");
    for (batch, sync) in [(1usize, true), (100, true), (1, false), (100, false)] {
        group.throughput(Throughput::Elements(batch as u64));
        let name = format!("{}_per_batch_{}", batch, if sync { "fsync" } else { "no_fsync" });
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut writes = Vec::with_capacity(batch * 2 + 1);
                let mut entries = Vec::with_capacity(batch);
                let expected_last_seq = seq;
                for _ in 0..batch {
                    seq += 1;
                    let client_message_id = format!("bench-{seq}");
                    let record = StoredMessage {
                        message_id: seq.to_be_bytes().repeat(2),
                        client_message_id: client_message_id.clone(),
                        sender_id: "advocate.jane".into(),
                        text: text.clone(),
                        content_type: 1,
                        format: 1,
                        timestamp_ms: 1_764_000_000_000,
                        message_number: seq,
                        ..Default::default()
                    };
                    let sealed = key.seal_message(&conversation, seq, &record.encode_to_vec());
                    entries.push((seq, sealed));
                    writes.push(Write::ClientMessageId { conversation, client_message_id, seq });
                    writes.push(Write::ReadState {
                        conversation,
                        user: "advocate.jane".into(),
                        state: StoredReadState { read_seq: seq, delivered_seq: seq, ..Default::default() },
                    });
                }
                writes.push(Write::Append { conversation, expected_last_seq, entries });
                store.commit(black_box(writes), sync).expect("commit");
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = append
}
criterion_main!(benches);
