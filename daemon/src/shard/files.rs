//! The shard's part in attachments: access checks for transfers, keeping an uploaded
//! file, and removing one nothing refers to. Keeping and removing run on the shard that
//! owns the conversation, like the sends that attach files, so that a file cannot be
//! removed between a send's check that it exists and the send's commit.

use std::path::Path;

use prost::Message as _;

use legalchat_protocol::pb::ErrorCode;
use legalchat_protocol::validate::format_id;

use super::{Pending, Shard, store_err};
use crate::auth::Identity;
use crate::crypto::DataKey;
use crate::fsutil;
use crate::ids;
use crate::policy::RequestError;
use crate::store::{ConversationKey, StoredFile, Write};

fn damaged(id: &ConversationKey, file: &[u8; 16]) -> RequestError {
    tracing::error!(conversation = %format_id(id), file = %format_id(file), "a file record does not open under the conversation's key");
    RequestError::new(ErrorCode::Internal, "the file's record is damaged")
}

fn io_failed(what: &str, e: &std::io::Error) -> RequestError {
    tracing::error!(error = %e, "{what}");
    RequestError::new(ErrorCode::Internal, "the server could not store the file; try again")
}

impl Shard {
    /// A stored file's record, opened.
    fn file_record(&mut self, id: &ConversationKey, file: &[u8; 16]) -> Result<Option<StoredFile>, RequestError> {
        let store = self.store.clone();
        let c = self.load(id)?;
        let Some(sealed) = store.file(id, file).map_err(store_err)? else { return Ok(None) };
        let plain = c.dek.open_file_record(id, file, &sealed).map_err(|_| damaged(id, file))?;
        StoredFile::decode(plain.as_slice()).map(Some).map_err(|_| damaged(id, file))
    }

    pub(super) fn file_access(
        &mut self,
        id: &ConversationKey,
        caller: &Identity,
        file: Option<[u8; 16]>,
    ) -> Result<(DataKey, Option<StoredFile>), RequestError> {
        let c = self.load(id)?;
        c.require_participant(&caller.user_id)?;
        let key = c.dek.clone();
        let Some(file) = file else { return Ok((key, None)) };
        match self.file_record(id, &file)? {
            Some(record) => Ok((key, Some(record))),
            None => Err(RequestError::new(ErrorCode::NotFound, format!("file_id: no file {} in this conversation", format_id(&file)))),
        }
    }

    pub(super) fn store_file(
        &mut self,
        id: ConversationKey,
        file: [u8; 16],
        mut record: StoredFile,
        part: &Path,
        dir: &Path,
        p: &mut Pending,
    ) -> Result<StoredFile, RequestError> {
        let existing = self.file_record(&id, &file)?;
        let c = self.load(&id)?;
        match existing {
            // The same content is stored already: keep it, renew its record so that a
            // sweep does not take it before the new upload is attached.
            Some(mut kept) => {
                if let Err(e) = std::fs::remove_file(part) {
                    tracing::warn!(error = %e, "an upload's part file could not be removed");
                }
                kept.stored_at_ms = ids::now_ms();
                record = kept;
            }
            None => {
                let mut generation = [0u8; 8];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut generation);
                record.blob = format!("{}-{}", format_id(&file), hex::encode(generation));
                fsutil::rename_durably(part, &dir.join(&record.blob)).map_err(|e| io_failed("storing an upload failed", &e))?;
            }
        }
        let sealed = c.dek.seal_file_record(&id, &file, &record.encode_to_vec());
        p.writes.push(Write::File { conversation: id, file, sealed });
        Ok(record)
    }

    pub(super) fn sweep_file(
        &mut self,
        id: ConversationKey,
        file: [u8; 16],
        cutoff_ms: i64,
        p: &mut Pending,
    ) -> Result<Option<String>, RequestError> {
        let store = self.store.clone();
        let Some(record) = self.file_record(&id, &file)? else { return Ok(None) };
        if record.stored_at_ms >= cutoff_ms || store.file_referenced(&id, &file).map_err(store_err)? {
            return Ok(None);
        }
        p.writes.push(Write::RemoveFile { conversation: id, file });
        p.removed_files.insert((id, file));
        Ok(Some(record.blob))
    }
}
