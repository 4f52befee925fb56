//! A message edit and an attachment, acknowledged, then `kill -9` and the power cut:
//! after the restart the message reads as edited (with its audit trail), and the file
//! downloads whole, byte for byte.

use legalchat_sdk::{NewConversation, pb};
use legalchat_tests::{full_history, pdf_bytes, text_of};
use sha2::{Digest as _, Sha256};

use legalchat_powercut::SyncModel;

use crate::{Fsync, Machine, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_an_attachment_survive_kill_9_and_a_power_cut() {
    scenario("an_edit_and_an_attachment_survive_kill_9_and_a_power_cut", SyncModel::Journal).await;
}

/// The same where a name is durable only once its directory is fsynced (the upload is
/// moved from its parts directory into the conversation's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_an_attachment_survive_kill_9_and_a_power_cut_under_strict_posix() {
    scenario("an_edit_and_an_attachment_survive_kill_9_and_a_power_cut_under_strict_posix", SyncModel::Posix).await;
}

async fn scenario(test: &str, model: SyncModel) {
    bounded(test, async {
        let Some(mut m) = Machine::boot_with(test, Fsync::Always, model).await else { return };
        let alice = m.client("alice", "advocate").await;
        let conv = alice.create_conversation(NewConversation::group("Exhibits", vec!["bob".into()])).await.expect("group").id;
        let original = alice.send_text(&conv, "draft terms").await.expect("send");
        let edit = alice.edit_text(&conv, original.seq, "final terms").await.expect("edit");

        let files = tempfile::tempdir().expect("a directory for the test files");
        let content = pdf_bytes(700_000);
        let upload = files.path().join("Exhibit A.pdf");
        std::fs::write(&upload, &content).expect("writing the upload");
        let attachment = alice.upload_file(&conv, &upload, None, &mut |_| {}).await.expect("upload");
        let document = pb::MessageContent {
            r#type: pb::ContentType::Document.into(),
            format: pb::TextFormat::Plain.into(),
            attachments: vec![pb::Attachment { file_id: attachment.file_id.clone(), ..Default::default() }],
            ..Default::default()
        };
        let doc = alice.send(&conv, &legalchat_sdk::new_client_message_id(), document).await.expect("the document message");
        drop(alice);

        let lost = m.crash().await;
        eprintln!("{test}: the cut dropped {lost}");
        m.start().await.unwrap_or_else(|e| panic!("restart after the power cut: {e:#}"));

        let bob = m.client("bob", "advocate").await;
        let history = full_history(&bob, &conv).await;
        let seqs: Vec<u64> = history.iter().map(|msg| msg.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free");
        let at = |seq: u64| history.iter().find(|msg| msg.seq == seq).unwrap_or_else(|| panic!("seq {seq} lost: {history:?}"));
        let message = at(original.seq);
        assert_eq!((text_of(message), message.edited_at_ms != 0), ("final terms", true), "the edit survived");
        assert!(at(edit.seq).event.is_some(), "the edit's event is in the log");
        let stored = at(doc.seq).content.as_ref().map(|c| c.attachments.iter().map(|a| a.file_id.clone()).collect::<Vec<_>>());
        assert_eq!(stored, Some(vec![attachment.file_id.clone()]));

        let admin = m.client("root", "admin").await;
        let audit = admin.audit(&conv, original.seq).await.expect("the audit trail");
        let versions: Vec<(pb::AuditAction, &str)> =
            audit.versions.iter().map(|v| (v.action(), v.content.as_ref().map_or("", |c| c.text.as_str()))).collect();
        assert_eq!(versions, [(pb::AuditAction::Original, "draft terms"), (pb::AuditAction::Edited, "final terms")]);

        let target = files.path().join("downloaded.pdf");
        let got = bob.download_file(&conv, &attachment.file_id, &target, &mut |_| {}).await.expect("download after the cut");
        assert_eq!(got.size, content.len() as u64);
        let bytes = std::fs::read(&target).expect("the download");
        assert!(bytes == content, "the file came back different");
        assert_eq!(got.sha256, <[u8; 32]>::from(Sha256::digest(&content)));
    })
    .await;
}
