//! A power cut right after the first start in development mode: everything the first
//! start generated (certificate, keys, secrets, the database) must have been written
//! durably, or the daemon does not start again — or starts with a new certificate that
//! no client trusts.

use legalchat_sdk::NewConversation;
use legalchat_tests::{full_history, text_of};

use legalchat_powercut::SyncModel;

use crate::{Fsync, Machine, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_right_after_the_first_start_loses_nothing_it_generated() {
    scenario("a_power_cut_right_after_the_first_start_loses_nothing_it_generated", SyncModel::Journal).await;
}

/// The same where a name is durable only once its directory is fsynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_right_after_the_first_start_loses_nothing_it_generated_under_strict_posix() {
    scenario("a_power_cut_right_after_the_first_start_loses_nothing_it_generated_under_strict_posix", SyncModel::Posix).await;
}

async fn scenario(test: &str, model: SyncModel) {
    bounded(test, async {
        let Some(mut m) = Machine::boot_with(test, Fsync::Always, model).await else { return };
        let cert = m.ca_pem();
        let lost = m.crash().await;
        eprintln!("{test}: the cut dropped {lost}");
        let durable_cert = std::fs::read(m.disk_data_dir().join("tls").join("cert.pem")).unwrap_or_default();
        if let Err(e) = m.start().await {
            panic!(
                "after a power cut right after the first start, legalchatd does not start (durable tls/cert.pem: {} bytes): {e:#}",
                durable_cert.len()
            );
        }
        assert_eq!(m.ca_pem(), cert, "the certificate changed: clients that trusted the first one are locked out");

        // And the daemon works: what it acknowledges survives the next cut too.
        let alice = m.client("alice", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("After the cut", vec!["bob".into()])).await.expect("group").id;
        let sent = alice.send_text(&conv, "still here").await.expect("send");
        drop(alice);
        m.crash().await;
        m.start().await.unwrap_or_else(|e| panic!("restart after the second cut: {e:#}"));
        let bob = m.client("bob", "advocate").await;
        let history = full_history(&bob, &conv).await;
        let stored = history.iter().find(|msg| msg.seq == sent.seq).map(text_of);
        assert_eq!(stored, Some("still here"), "{history:?}");
    })
    .await;
}
