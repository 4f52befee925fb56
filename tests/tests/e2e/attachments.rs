//! Attachments end to end: 50 MB up and down on transfer streams, checked by size, type,
//! name, hash, rate and a real clamd; stored sealed; downloadable by participants only;
//! resumable; and chat keeps flowing while a file moves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use legalchat_sdk::{Client, Error, NewConversation, Progress, pb};
use legalchat_tests::clamd::{EICAR, TestClamd};
use legalchat_tests::{bounded, pdf_bytes, random_hex, wait_for_message};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::encryption::files_containing;
use crate::{daemon, daemon_with};

/// The largest file accepted by default (the requirements' `MAX_FILE_SIZE`).
const MAX: u64 = 52_428_800;

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a test file");
    path
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn no_progress() -> impl FnMut(Progress) + Send {
    |_| {}
}

fn server_code(e: &Error) -> pb::ErrorCode {
    e.code().unwrap_or_else(|| panic!("expected a server error, got {e}"))
}

async fn conversation(alice: &Client, others: &[&str]) -> String {
    let conv = alice
        .create_conversation(NewConversation::group("Exhibits", others.iter().map(|s| (*s).to_owned()).collect()))
        .await
        .expect("create a conversation");
    conv.id
}

fn document(attachment: &pb::Attachment) -> pb::MessageContent {
    pb::MessageContent {
        text: String::new(),
        r#type: pb::ContentType::Document.into(),
        format: pb::TextFormat::Plain.into(),
        attachments: vec![pb::Attachment { file_id: attachment.file_id.clone(), ..Default::default() }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_go_up_and_down_whole_while_chat_keeps_flowing() {
    bounded("attachments_50mb", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();
        let content = pdf_bytes(usize::try_from(MAX).unwrap());
        let hash = sha256(&content);

        // The body reaches the stream through a pipe that stops half way until the test
        // has seen chat messages go both ways, so the transfer is certainly in flight.
        let ticket = alice.start_upload(&conv, "Exhibit A.pdf", MAX, hash, None).await.expect("a ticket");
        assert_eq!((ticket.offset, ticket.size, ticket.file_name.as_str()), (0, MAX, "Exhibit A.pdf"));
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let (half_sent_tx, half_sent) = tokio::sync::oneshot::channel::<()>();
        let (resume_tx, resume) = tokio::sync::oneshot::channel::<()>();
        let body = content.clone();
        let feeder = tokio::spawn(async move {
            let half = body.len() / 2;
            writer.write_all(&body[..half]).await.unwrap();
            let _ = half_sent_tx.send(());
            resume.await.unwrap();
            writer.write_all(&body[half..]).await.unwrap();
        });
        let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
        let uploading = {
            let alice = alice.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut record = move |p: Progress| seen.lock().unwrap().push(p);
                alice.upload_from(&ticket, reader, &mut record).await
            })
        };
        half_sent.await.unwrap();
        // Chat both ways while the upload is open on alice's connection.
        for n in 0..5 {
            let text = format!("during the upload {n}");
            bob.send_text(&conv, &text).await.expect("bob sends");
            wait_for_message(&alice, &text, |m| m.content.as_ref().is_some_and(|c| c.text == text)).await;
            let reply = format!("alice answers {n}");
            alice.send_text(&conv, &reply).await.expect("alice sends during her upload");
            wait_for_message(&bob, &reply, |m| m.content.as_ref().is_some_and(|c| c.text == reply)).await;
        }
        assert!(!uploading.is_finished(), "the upload is still waiting for its second half");
        resume_tx.send(()).unwrap();
        feeder.await.unwrap();
        let attachment = uploading.await.unwrap().expect("the upload is accepted");
        assert_eq!(attachment.size, MAX);
        assert_eq!(attachment.sha256, hash.to_vec());
        assert_eq!(attachment.mime_type, "application/pdf");
        assert_eq!(attachment.name, "Exhibit A.pdf");
        let progress = seen.lock().unwrap().clone();
        assert!(progress.windows(2).all(|w| w[0].done <= w[1].done && w[0].confirmed <= w[1].confirmed), "progress only grows");
        assert!(progress.iter().any(|p| p.confirmed > 0 && p.confirmed < MAX), "the server confirms durable progress on the way");
        assert_eq!(progress.last().map(|p| (p.done, p.confirmed)), Some((MAX, MAX)));

        // A message carries it; bob sees what the server stored, not what alice claimed.
        let mut claimed = document(&attachment);
        claimed.attachments[0].mime_type = "text/plain".into();
        claimed.attachments[0].size = 1;
        alice.send(&conv, "exhibit-a", claimed).await.expect("send the document");
        let m = wait_for_message(&bob, "the document", |m| m.content.as_ref().is_some_and(|c| !c.attachments.is_empty())).await;
        let got = &m.content.as_ref().unwrap().attachments[0];
        assert_eq!((got.size, got.mime_type.as_str(), got.name.as_str()), (MAX, "application/pdf", "Exhibit A.pdf"));
        assert_eq!(got.sha256, hash.to_vec());

        let target = dir.path().join("exhibit-a.pdf");
        let downloaded = bob.download_file(&conv, &got.file_id, &target, &mut no_progress()).await.expect("bob downloads");
        assert_eq!((downloaded.size, downloaded.sha256), (MAX, hash));
        assert!(std::fs::read(&target).unwrap() == content, "the download is byte for byte the upload");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_wrong_type_and_hostile_names_are_refused_or_cleaned() {
    bounded("attachments_validation", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();

        // One byte over: refused from the declared size, before any byte of the body.
        let e = alice.start_upload(&conv, "big.pdf", MAX + 1, [0; 32], None).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("52428801 bytes; the largest accepted is 52428800 bytes (50 MiB)"), "{e}");

        // More bytes than declared: refused while reading.
        let content = pdf_bytes(100_000);
        let ticket = alice.start_upload(&conv, "short.pdf", 99_999, sha256(&content[..99_999]), None).await.unwrap();
        let e = alice.upload_from(&ticket, &content[..], &mut no_progress()).await.unwrap_err();
        assert!(e.to_string().contains("more than its declared size of 99999 bytes"), "{e}");

        // An executable named like a PDF.
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0".to_vec();
        elf.resize(4096, 0);
        let path = write_file(dir.path(), "brief.pdf", &elf);
        let e = alice.upload_file(&conv, &path, None, &mut no_progress()).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("which cannot be attached"), "{e}");

        // The declared hash must be the content's.
        let text = b"Minutes of the meeting\n".repeat(100);
        let ticket = alice.start_upload(&conv, "minutes.txt", text.len() as u64, [7; 32], None).await.unwrap();
        let e = alice.upload_from(&ticket, &text[..], &mut no_progress()).await.unwrap_err();
        assert!(e.to_string().contains("sha256: the content's SHA-256 is"), "{e}");

        // Hostile names come back harmless.
        let path = write_file(dir.path(), "plain.txt", &text);
        for (hostile, clean) in [
            ("../../etc/passwd", "passwd"),
            ("C:\\Windows\\system32\\cmd.txt", "cmd.txt"),
            ("invoice\u{202e}txt.exe", "invoicetxt.exe"),
            ("CON.txt", "_CON.txt"),
            ("a\u{0}b\nc.txt", "ab c.txt"),
        ] {
            let a = alice.upload_file(&conv, &path, Some(hostile), &mut no_progress()).await.expect("a text file is accepted");
            assert_eq!(a.name, clean, "{hostile:?}");
        }

        // A FILE message must carry a file, and only one stored in this conversation.
        let e = alice
            .send(&conv, "no-file", pb::MessageContent { r#type: pb::ContentType::File.into(), ..Default::default() })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("carries at least one attachment"), "{e}");
        let other = conversation(&alice, &["carol"]).await;
        let a = alice.upload_file(&other, &path, None, &mut no_progress()).await.unwrap();
        let e = alice.send(&conv, "foreign-file", document(&a)).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::NotFound, "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_participants_download_and_tickets_open_once() {
    bounded("attachments_access", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let mallory = d.client("mallory", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "memo.pdf", &pdf_bytes(200_000));
        let a = alice.upload_file(&conv, &path, None, &mut no_progress()).await.unwrap();

        // A non-participant hears what a conversation that does not exist would say.
        let e = mallory.start_download(&conv, &a.file_id).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::NotFound, "{e}");
        let e = mallory.start_upload(&conv, "x.pdf", 10, [0; 32], None).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::NotFound, "{e}");

        // A ticket works once.
        let ticket = bob.start_download(&conv, &a.file_id).await.unwrap();
        let mut first = Vec::new();
        bob.download_into(&ticket, 0, &mut first, &mut no_progress()).await.unwrap();
        assert_eq!(first.len(), 200_000);
        let e = bob.download_into(&ticket, 0, &mut Vec::new(), &mut no_progress()).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::Unauthorized, "{e}");
        // A ticket is bound to its user's session only by being secret: it is 32 random bytes.
        assert_eq!(ticket.ticket.len(), 32);

        // A download resumes from any byte.
        let ticket = bob.start_download(&conv, &a.file_id).await.unwrap();
        let mut rest = Vec::new();
        bob.download_into(&ticket, 123_457, &mut rest, &mut no_progress()).await.unwrap();
        assert_eq!(rest, first[123_457..]);

        // Removed from the conversation, bob can no longer download.
        alice.remove_participant(&conv, "bob").await.unwrap();
        let e = bob.start_download(&conv, &a.file_id).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::NotFound, "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_resumes_from_the_last_confirmed_offset() {
    bounded("attachments_resume", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();
        let content = pdf_bytes(12 * 1024 * 1024);
        let path = write_file(dir.path(), "bundle.pdf", &content);

        // Drop the connection once the server has confirmed part of the file.
        let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut watch = {
            let (alice, seen, dropped) = (alice.clone(), seen.clone(), dropped.clone());
            move |p: Progress| {
                seen.lock().unwrap().push(p);
                if p.confirmed >= 4 * 1024 * 1024 && !dropped.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    alice.reconnect_now();
                }
            }
        };
        let a = alice.upload_file(&conv, &path, None, &mut watch).await.expect("the upload completes after the drop");
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the connection was dropped mid-upload");
        let progress = seen.lock().unwrap().clone();
        // After the drop the upload started again, from a confirmed offset, not from 0.
        let restart = progress.windows(2).find(|w| w[1].done < w[0].done).map(|w| w[1]).expect("the upload went on after the drop");
        assert!(restart.done > 0 && restart.done == restart.confirmed, "resumed at a confirmed offset: {restart:?}");
        assert_eq!(a.sha256, sha256(&content).to_vec());

        let mut back = Vec::new();
        let ticket = alice.start_download(&conv, &a.file_id).await.unwrap();
        alice.download_into(&ticket, 0, &mut back, &mut no_progress()).await.unwrap();
        assert!(back == content, "the resumed upload is the file");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_upload_within_an_hour_is_refused_with_the_wait() {
    bounded("attachments_rate", async {
        let d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        for n in 0..10 {
            alice.start_upload(&conv, &format!("f{n}.pdf"), 10, [0; 32], None).await.unwrap_or_else(|e| panic!("upload {n}: {e}"));
        }
        let e = alice.start_upload(&conv, "f10.pdf", 10, [0; 32], None).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::RateLimited, "{e}");
        assert!(e.to_string().contains("at most 10 uploads per hour; try again in"), "{e}");
        // Another user is not affected.
        bob.start_upload(&conv, "b.pdf", 10, [0; 32], None).await.expect("bob has his own allowance");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_contents_and_names_never_reach_the_disk_in_plaintext() {
    bounded("attachments_at_rest", async {
        let mut d = daemon().await;
        let alice = d.client("alice", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("PRIVILEGED-{}", random_hex(16));
        let name = format!("settlement-{}.txt", random_hex(8));
        let mut text = Vec::new();
        for n in 0..5_000 {
            text.extend_from_slice(format!("{marker} line {n}: the terms are confidential\n").as_bytes());
        }
        let path = write_file(dir.path(), &name, &text);
        let a = alice.upload_file(&conv, &path, None, &mut no_progress()).await.unwrap();
        alice.send(&conv, "settlement", document(&a)).await.unwrap();
        // Restarting flushes RocksDB's memtables to table files.
        d.restart().await;
        for needle in [marker.as_bytes(), name.as_bytes()] {
            let found = files_containing(d.data_dir(), needle);
            assert!(found.is_empty(), "{:?} found in {found:?}", String::from_utf8_lossy(needle));
        }
        // …while the file is there and comes back.
        let alice = d.client("alice", "advocate").await;
        let target = dir.path().join("back.txt");
        alice.download_file(&conv, &a.file_id, &target, &mut no_progress()).await.unwrap();
        assert!(std::fs::read(target).unwrap() == text);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_clamd_refuses_eicar_and_a_scanner_that_is_down_fails_closed() {
    bounded("attachments_clamd", async {
        let Some(mut clamd) = TestClamd::start().await else { return };
        let address = clamd.address();
        let d = daemon_with(&["--clamd", &address]).await;
        let alice = d.client("alice", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();

        let eicar = write_file(dir.path(), "invoice.txt", EICAR);
        let e = alice.upload_file(&conv, &eicar, None, &mut no_progress()).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::InvalidArgument, "{e}");
        assert!(e.to_string().contains("the malware scanner found Eicar-Test-Signature"), "{e}");

        let clean = write_file(dir.path(), "clean.pdf", &pdf_bytes(300_000));
        alice.upload_file(&conv, &clean, None, &mut no_progress()).await.expect("a clean file passes the scan");

        // With the scanner down, uploads are refused (fail closed), and say why.
        clamd.stop().await;
        let other = write_file(dir.path(), "other.pdf", &pdf_bytes(1000));
        let ticket = alice.start_upload(&conv, "other.pdf", 1000, sha256(&std::fs::read(&other).unwrap()), None).await.unwrap();
        let e = alice.upload_from(&ticket, &std::fs::read(&other).unwrap()[..], &mut no_progress()).await.unwrap_err();
        assert_eq!(server_code(&e), pb::ErrorCode::Unavailable, "{e}");
        assert!(e.to_string().contains("malware scanner is unavailable"), "{e}");

        // Configured to fail open, the same upload goes through unscanned.
        let open = daemon_with(&["--clamd", &address, "--clamd-fail-open", "true"]).await;
        let alice = open.client("alice", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        alice.upload_file(&conv, &other, None, &mut no_progress()).await.expect("accepted unscanned when failing open");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_nothing_refers_to_are_swept_and_every_transfer_is_audited() {
    bounded("attachments_sweep", async {
        // No grace: a sweep (one runs as the daemon starts) takes every file no message
        // refers to.
        let config_dir = tempfile::tempdir().unwrap();
        let config = config_dir.path().join("legalchat.toml");
        std::fs::write(&config, "[attachments]\norphan_grace_secs = 0\n").unwrap();
        let mut d = daemon_with(&["--config", config.to_str().unwrap()]).await;
        let alice = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = conversation(&alice, &["bob"]).await;
        let dir = tempfile::tempdir().unwrap();
        let never_sent =
            alice.upload_file(&conv, &write_file(dir.path(), "draft.pdf", &pdf_bytes(70_000)), None, &mut no_progress()).await.unwrap();
        let deleted =
            alice.upload_file(&conv, &write_file(dir.path(), "withdrawn.pdf", &pdf_bytes(80_000)), None, &mut no_progress()).await.unwrap();
        let kept =
            alice.upload_file(&conv, &write_file(dir.path(), "filed.pdf", &pdf_bytes(90_000)), None, &mut no_progress()).await.unwrap();
        let withdrawn = alice.send(&conv, "withdrawn", document(&deleted)).await.unwrap();
        alice.send(&conv, "filed", document(&kept)).await.unwrap();
        alice.delete(&conv, withdrawn.seq).await.unwrap();
        let ticket = bob.start_download(&conv, &kept.file_id).await.unwrap();
        bob.download_into(&ticket, 0, &mut Vec::new(), &mut no_progress()).await.unwrap();

        // Every upload and download is in the audit trail.
        let log = d.process().stderr_log();
        let audit: Vec<&str> = log.lines().filter(|l| l.contains("legalchat::audit")).collect();
        for (action, user, file) in [("upload", "alice", &never_sent), ("upload", "alice", &kept), ("download", "bob", &kept)] {
            assert!(
                audit
                    .iter()
                    .any(|l| l.contains(&format!("file {action}")) && l.contains(&format!("user={user}")) && l.contains(&file.file_id)),
                "no audit line for {user}'s {action} of {}:\n{}",
                file.file_id,
                audit.join("\n")
            );
        }

        drop((alice, bob));
        d.restart().await;
        let alice = d.client("alice", "advocate").await;
        let deadline = tokio::time::Instant::now() + legalchat_tests::EVENT_TIMEOUT;
        for gone in [&never_sent, &deleted] {
            loop {
                match alice.start_download(&conv, &gone.file_id).await {
                    Err(e) if e.code() == Some(pb::ErrorCode::NotFound) => break,
                    Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                        // The sweep runs beside the sessions: nothing to wait on but its effect.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => panic!("{} was not swept: {other:?}", gone.name),
                }
            }
        }
        alice.start_download(&conv, &kept.file_id).await.expect("a file a message refers to stays");
        let stored: Vec<PathBuf> = std::fs::read_dir(d.data_dir().join("files").join(&conv)).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(stored.len(), 1, "only the kept file's content remains: {stored:?}");
        assert!(stored[0].file_name().unwrap().to_string_lossy().starts_with(&kept.file_id));
    })
    .await;
}
