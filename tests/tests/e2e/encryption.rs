//! No plaintext message body reaches disk; conversation metadata (stored in plaintext by
//! design: ids, kind, title, case id, participants) does, which proves the scan can find
//! what is there.

use std::path::{Path, PathBuf};

use legalchat_sdk::NewConversation;
use legalchat_tests::{bounded, full_history, random_hex, text_of};

use crate::daemon;

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// The files under `dir` whose bytes contain `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| match std::fs::read(path) {
            Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
            // RocksDB may delete an obsolete file between listing and reading it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("reading {}: {e}", path.display()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_bodies_are_encrypted_at_rest() {
    bounded("encryption_at_rest", async {
        let mut d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        // Random markers: no file can contain them by chance, and their first occurrence
        // cannot be a back-reference of the compressor.
        let marker = format!("PRIVILEGED-{}", random_hex(16));
        let case_id = format!("CASE-{}", random_hex(8));
        let conv = alice
            .create_conversation(NewConversation::case(&case_id, "Estate of J. Doe", vec!["bob".into()]))
            .await
            .expect("create a case conversation");
        for n in 0..20 {
            alice.send_text(&conv.id, &format!("{marker} paragraph {n}: the client admits")).await.expect("send");
        }

        // Write-ahead log and memtables: acknowledged, so on disk in some form.
        let leaks = files_containing(d.data_dir(), marker.as_bytes());
        assert!(leaks.is_empty(), "plaintext message body found in {leaks:?}");

        // After a restart RocksDB has replayed its log into sorted tables (SST files).
        d.restart().await;
        let sst_count = files_under(d.data_dir()).iter().filter(|p| p.extension().is_some_and(|e| e == "sst")).count();
        assert!(sst_count > 0, "no SST file after a graceful restart; the scan would only have seen the log");
        let leaks = files_containing(d.data_dir(), marker.as_bytes());
        assert!(leaks.is_empty(), "plaintext message body found in {leaks:?}");

        // The scan does find what is stored in plaintext, so the absence above means something.
        let found = files_containing(d.data_dir(), case_id.as_bytes());
        assert!(!found.is_empty(), "the scan did not find the case id {case_id}, which conversation metadata stores in plaintext");

        // And the bodies decrypt back for a participant.
        let alice = d.client("alice", "advocate").await;
        let history = full_history(&alice, &conv.id).await;
        assert_eq!(history.len(), 20);
        assert!(history.iter().all(|m| text_of(m).starts_with(&marker)));
    })
    .await;
}

/// Waits (bounded) until the daemon's log holds `needle`; returns that line.
async fn log_line(d: &legalchat_tests::TestDaemon, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + legalchat_tests::EVENT_TIMEOUT;
    loop {
        if let Some(line) = d.process().stderr_log().lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no {needle:?} in the log:\n{}", d.stderr_tail());
        // The log is a file the daemon appends to: nothing to wait on but its content.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_rotates_online_and_the_old_key_can_be_destroyed() {
    bounded("master_key_rotation", async {
        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("master.key");
        let (old_key, new_key) = (random_hex(32), random_hex(32));
        std::fs::write(&key_file, &old_key).unwrap();
        let mut d = crate::daemon_with(&["--master-key-file", key_file.to_str().unwrap()]).await;
        let alice = d.client("alice", "advocate").await;
        let mut conversations = Vec::new();
        for title in ["Estate", "Merger"] {
            let conv = alice.create_conversation(NewConversation::group(title, vec!["bob".into()])).await.unwrap().id;
            for n in 0..5 {
                alice.send_text(&conv, &format!("{title} paragraph {n}")).await.unwrap();
            }
            conversations.push(conv);
        }

        // The new key goes into the file; SIGHUP rotates online.
        std::fs::write(&key_file, &new_key).unwrap();
        let pid = d.process().pid().expect("running");
        assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
        let done = log_line(&d, "master key rotated").await;
        assert!(done.contains("rewrapped=2"), "both conversations' keys were re-wrapped: {done}");
        // Sessions went on throughout, and new conversations use the new key.
        alice.send_text(&conversations[0], "after the rotation").await.expect("sessions are not interrupted");
        drop(alice);

        // Restarted with only the new key, everything reads back.
        d.restart().await;
        let alice = d.client("alice", "advocate").await;
        for (conv, title) in conversations.iter().zip(["Estate", "Merger"]) {
            let texts: Vec<String> = full_history(&alice, conv).await.iter().map(|m| text_of(m).to_owned()).collect();
            assert!(texts.iter().filter(|t| t.starts_with(title)).count() == 5, "{texts:?}");
        }
        drop(alice);

        // The old key opens nothing any more: it can be destroyed.
        std::fs::write(&key_file, &old_key).unwrap();
        d.restart().await;
        // (The SDK lists the conversations as it connects, which opens their keys.)
        let e = d.connect_with_token(d.token("alice", "advocate")).await.unwrap_err();
        assert_eq!(e.code(), Some(legalchat_sdk::pb::ErrorCode::Internal), "{e:?}");
        assert!(e.to_string().contains("conversation key cannot be opened"), "{e}");
    })
    .await;
}
