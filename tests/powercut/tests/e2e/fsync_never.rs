//! The control run: with `--fsync never` the daemon acknowledges messages it has not
//! synced, and a power cut must lose some of them. If it did not, the power-cut tests
//! could not fail, and would prove nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use legalchat_sdk::{Client, NewConversation};
use legalchat_tests::{full_history, text_of};
use tokio::task::JoinSet;

use crate::{Fsync, Machine, bounded};

const SENDS: usize = 200;

/// `SENDS` messages, 20 at a time; seq → text of each acknowledgment.
async fn send_all(client: &Client, conv: &str, tag: &str) -> BTreeMap<u64, String> {
    let mut acked = BTreeMap::new();
    let mut in_flight = JoinSet::new();
    for n in 0..SENDS {
        let (client, conv, text) = (client.clone(), conv.to_owned(), format!("{tag} #{n}"));
        in_flight.spawn(async move { (client.send_text(&conv, &text).await, text) });
        if in_flight.len() >= 20
            && let Some(done) = in_flight.join_next().await
        {
            let (sent, text) = done.expect("a send task");
            acked.insert(sent.unwrap_or_else(|e| panic!("{text}: {e}")).seq, text);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        let (sent, text) = done.expect("a send task");
        acked.insert(sent.unwrap_or_else(|e| panic!("{text}: {e}")).seq, text);
    }
    acked
}

/// Of `acked`, those not stored as acknowledged.
async fn missing(m: &Machine, conv: &str, acked: &BTreeMap<u64, String>) -> Vec<u64> {
    let reader = m.client("bob", "advocate").await;
    let stored: BTreeMap<u64, String> = full_history(&reader, conv).await.iter().map(|msg| (msg.seq, text_of(msg).to_owned())).collect();
    acked.iter().filter(|(seq, text)| stored.get(seq) != Some(text)).map(|(seq, _)| *seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_a_power_cut_loses_acknowledged_messages() {
    bounded("fsync_never", async {
        let Some(mut m) = Machine::boot("without_fsync_a_power_cut_loses_acknowledged_messages", Fsync::Never).await else { return };
        let alice = m.client("alice", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Unsynced", vec!["bob".into()])).await.expect("group").id;

        // kill -9 alone loses nothing: the machine's cache outlives the process.
        let first = send_all(&alice, &conv, "before kill -9").await;
        m.kill9().await;
        m.start().await.expect("restart after kill -9");
        let gone = missing(&m, &conv, &first).await;
        assert!(gone.is_empty(), "kill -9 without a power cut lost {} acknowledged messages: {gone:?}", gone.len());

        // The power cut loses what was acknowledged and never synced.
        let alice = m.client("alice", "advocate").await;
        let second = send_all(&alice, &conv, "before the cut").await;
        let pending = m.pending();
        eprintln!("fsync never: not durable before the kill: {}", m.pending_paths());
        m.kill9().await;
        let lost = m.power_cut();
        m.start().await.unwrap_or_else(|e| panic!("restart after the power cut: {e:#}"));
        let gone = missing(&m, &conv, &second).await;
        let gone_first = missing(&m, &conv, &first).await;
        eprintln!(
            "fsync never: the cut dropped {lost} (pending before the kill: {pending}); lost {} of the {} acknowledged messages sent before the cut, and {} of the {} from before the first restart",
            gone.len(),
            second.len(),
            gone_first.len(),
            first.len()
        );
        assert!(!gone.is_empty(), "--fsync never lost no acknowledged message in a power cut: the test cannot tell durable from not");
        assert!(lost.bytes > 0, "the cut dropped nothing: {lost}");

        // The daemon is usable after the loss.
        let alice = m.client("alice", "advocate").await;
        tokio::time::timeout(Duration::from_secs(30), alice.send_text(&conv, "after the cut"))
            .await
            .expect("in time")
            .expect("a send after the cut");
    })
    .await;
}
