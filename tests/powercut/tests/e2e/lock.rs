//! RocksDB's LOCK file through FUSE: the filesystem leaves fcntl locks to the kernel, and
//! they must still keep a second daemon off a data directory in use.

use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};

use crate::{Fsync, Machine, bounded, daemon_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_directory_is_refused() {
    let test = "a_second_daemon_on_the_same_data_directory_is_refused";
    bounded(test, async {
        let Some(m) = Machine::boot(test, Fsync::Always).await else { return };
        let data = m.data_dir().display().to_string();
        let second = DaemonConfig::new(daemon_bin()).args(["run", "--data-dir", data.as_str(), "--tcp-listen", "off"]);
        match DaemonProcess::start(second).await {
            Ok(_) => panic!("a second daemon started on a data directory in use"),
            Err(e) => {
                let why = format!("{e:#}");
                assert!(why.contains("LOCK"), "refused, but not by the lock: {why}");
            }
        }
        // The first one is unharmed.
        let alice = m.client("alice", "advocate").await;
        alice.list_conversations(10).await.expect("the first daemon still answers");
    })
    .await;
}
