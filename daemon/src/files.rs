//! Attachments: files moved on transfer streams beside the sessions, judged by their
//! content, sealed at rest in chunks, and kept while a message refers to them.
//!
//! ```text
//!  session ── StartUpload ──► Files::start_upload: size, name, rate, participant
//!                              └─► ticket (single use, 60 s)
//!  transfer stream 0x01 ── TransferRequest{ticket} ──► transfer::upload
//!      chunks sealed into files/.parts/<upload>; fsync every 4 MiB ─► progress{confirmed}
//!      all there: type (first chunk), hash, malware scan, preview
//!      └─► shard of the conversation: rename into files/<conv>/<file>-<gen>,
//!          record sealed in RocksDB ─► uploaded{attachment}
//!  SendMessage{attachments: [file_id]} ──► the shard fills them in from the record; the
//!      message's FileRef index entries keep the file
//!  session ── StartDownload ──► ticket ──► transfer::download: chunks opened in order
//!  sweep (hourly): a file no message refers to, stored longer ago than the grace ─► gone
//! ```
//!
//! Uploads in progress live in memory: a restart drops them (and their part files), and
//! clients start those again. Stored files survive everything the database does.

pub mod scan;
mod sealed;
pub mod thumbnail;
mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use legalchat_protocol::files;
use legalchat_protocol::pb::{self, ErrorCode};
use legalchat_protocol::validate::{self, format_id};

use crate::auth::Identity;
use crate::crypto::DataKey;
use crate::ids;
use crate::limits::Limiter;
use crate::policy::RequestError;
use crate::shard::{Command, Shards};
use crate::storage_pool::StoragePool;
use crate::store::{ConversationKey, StoredFile};

pub use transfer::{RequestRead, STREAM_SESSION, STREAM_TRANSFER, StreamKind, TransferSlots, decode_request};

/// Default largest file: the requirements' `MAX_FILE_SIZE`, 50 MB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 52_428_800;
/// How long a ticket may wait before it opens a transfer stream.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// How long an interrupted upload may wait to be resumed.
pub const UPLOAD_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Transfers running at once on the whole server (each holds at most a chunk or two).
pub const MAX_RUNNING_TRANSFERS: usize = 256;

/// Attachment settings (`[attachments]`).
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Largest file in bytes.
    pub max_file_size: u64,
    /// MIME types accepted, as recognised from the content.
    pub allowed_types: Vec<String>,
    /// New uploads per user per hour (0: no limit).
    pub uploads_per_hour: u32,
    /// A file no message refers to is removed once it is older than this.
    pub orphan_grace: Duration,
    /// The ClamAV daemon to scan every upload with, if any.
    pub scanner: Option<scan::ScannerConfig>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            allowed_types: files::DEFAULT_ALLOWED_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            uploads_per_hour: 10,
            orphan_grace: Duration::from_secs(24 * 3600),
            scanner: None,
        }
    }
}

/// What happened to a file, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// `"upload"`, `"download"` or `"refused"`.
    pub action: &'static str,
    /// Who.
    pub user: String,
    /// The conversation.
    pub conversation: ConversationKey,
    /// The file (for refused uploads: the id the content would have had).
    pub file: [u8; 16],
    /// Bytes moved.
    pub bytes: u64,
    /// Why, for refusals.
    pub detail: String,
}

/// Where every upload and download is recorded: the seam for the compliance trail. The
/// default writes structured log lines under the target `legalchat::audit`.
pub trait AuditTrail: Send + Sync + std::fmt::Debug {
    /// Records one event.
    fn record(&self, event: FileEvent);
}

/// [`AuditTrail`] as log lines.
#[derive(Debug, Default)]
pub struct LogAudit;

impl AuditTrail for LogAudit {
    fn record(&self, e: FileEvent) {
        tracing::info!(
            target: "legalchat::audit",
            action = e.action,
            user = %e.user,
            conversation = %format_id(&e.conversation),
            file = %format_id(&e.file),
            bytes = e.bytes,
            detail = %e.detail,
            "file {}", e.action
        );
    }
}

/// A `StartUpload` once checked: what can be judged before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    /// The conversation.
    pub conversation: ConversationKey,
    /// The declared SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// The file name, sanitized.
    pub name: String,
}

/// Checks a `StartUpload` against the largest file size before anything is looked up.
/// Pure, so that it is fuzzed with every other request (`fuzz/fuzz_targets/client_frame.rs`);
/// each error names the field.
pub fn check_upload(req: &pb::StartUpload, max_file_size: u64) -> Result<UploadRequest, RequestError> {
    let conversation = validate::parse_id("conversation_id", &req.conversation_id).map_err(crate::requests::invalid)?;
    if req.size > max_file_size {
        return Err(RequestError::invalid(format!(
            "size: the file is {} bytes; the largest accepted is {max_file_size} bytes ({})",
            req.size,
            human_size(max_file_size)
        )));
    }
    if req.size == 0 {
        return Err(RequestError::invalid("size: an empty file cannot be attached"));
    }
    let sha256: [u8; 32] = req
        .sha256
        .as_slice()
        .try_into()
        .map_err(|_| RequestError::invalid(format!("sha256: must be 32 bytes, got {}", req.sha256.len())))?;
    if req.file_name.trim().is_empty() {
        return Err(RequestError::invalid("file_name: must not be empty"));
    }
    if req.file_name.len() > 4 * files::MAX_FILE_NAME_BYTES {
        return Err(RequestError::invalid(format!(
            "file_name: is {} bytes; at most {} are read",
            req.file_name.len(),
            4 * files::MAX_FILE_NAME_BYTES
        )));
    }
    Ok(UploadRequest { conversation, sha256, name: files::sanitize_file_name(&req.file_name) })
}

/// Checks a `StartDownload`: the conversation and the file it names, by id.
pub fn check_download(req: &pb::StartDownload) -> Result<(ConversationKey, [u8; 16]), RequestError> {
    let conversation = validate::parse_id("conversation_id", &req.conversation_id).map_err(crate::requests::invalid)?;
    let file = validate::parse_id("file_id", &req.file_id).map_err(crate::requests::invalid)?;
    Ok((conversation, file))
}

/// What a ticket lets its bearer do.
#[derive(Debug)]
enum Grant {
    Upload([u8; 16]),
    Download(Box<Download>),
}

/// A download a ticket was issued for (access was checked then).
#[derive(Debug)]
struct Download {
    user: String,
    conversation: ConversationKey,
    file: [u8; 16],
    key: DataKey,
    record: StoredFile,
}

#[derive(Debug)]
struct Ticket {
    grant: Grant,
    expires: Instant,
}

/// An upload in progress, between transfer streams too.
#[derive(Debug)]
struct Upload {
    id: [u8; 16],
    user: String,
    conversation: ConversationKey,
    file: [u8; 16],
    name: String,
    size: u64,
    sha256: [u8; 32],
    key: DataKey,
    /// Chunks sealed and durable in the part file.
    chunks_done: u64,
    /// The bytes they hold: where the next transfer stream goes on from.
    confirmed: u64,
    /// The hash of those bytes.
    hasher: Sha256,
    /// The type recognised from the first chunk.
    mime: Option<String>,
    started: Instant,
}

/// Attachments: tickets, uploads in progress, and the transfer streams.
#[derive(Debug)]
pub struct Files {
    root: PathBuf,
    config: FilesConfig,
    shards: Shards,
    pool: StoragePool,
    limiter: Arc<dyn Limiter>,
    audit: Arc<dyn AuditTrail>,
    scanner: Option<scan::Clamd>,
    /// By SHA-256 of the ticket, so that lookups reveal nothing of tickets by timing.
    tickets: Mutex<HashMap<[u8; 32], Ticket>>,
    uploads: Mutex<HashMap<[u8; 16], Arc<tokio::sync::Mutex<Upload>>>>,
    running: Arc<tokio::sync::Semaphore>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ticket_key(ticket: &[u8]) -> [u8; 32] {
    Sha256::digest(ticket).into()
}

fn internal(what: &str, e: impl std::fmt::Display) -> RequestError {
    tracing::error!(error = %e, "{what}");
    RequestError::internal("the server could not handle the file; try again")
}

impl Files {
    /// The attachments of a data directory's `files/` (created if needed). Part files of
    /// uploads that a restart interrupted are removed. New uploads are counted by
    /// `uploads` (the [`crate::limits::RateLimits`]' limiter, by user).
    pub fn open(
        data_dir: &Path,
        config: FilesConfig,
        shards: Shards,
        pool: StoragePool,
        uploads: Arc<dyn Limiter>,
    ) -> std::io::Result<Self> {
        let root = data_dir.join("files");
        let parts = root.join(".parts");
        if parts.exists() {
            std::fs::remove_dir_all(&parts)?;
        }
        crate::fsutil::create_dir_durably(&parts)?;
        let limiter = uploads;
        let scanner = config.scanner.clone().map(scan::Clamd::new);
        Ok(Self {
            root,
            config,
            shards,
            pool,
            limiter,
            audit: Arc::new(LogAudit),
            scanner,
            tickets: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
            running: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING_TRANSFERS)),
        })
    }

    /// Records file events somewhere else than the log.
    #[must_use]
    pub fn with_audit(mut self, audit: Arc<dyn AuditTrail>) -> Self {
        self.audit = audit;
        self
    }

    /// The settings.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    fn conversation_dir(&self, conversation: &ConversationKey) -> PathBuf {
        self.root.join(format_id(conversation))
    }

    fn part_path(&self, upload: &[u8; 16]) -> PathBuf {
        self.root.join(".parts").join(format_id(upload))
    }

    async fn access(
        &self,
        conversation: ConversationKey,
        caller: &Identity,
        file: Option<[u8; 16]>,
    ) -> Result<(DataKey, Option<StoredFile>), RequestError> {
        let (reply, rx) = oneshot::channel();
        let shard = self.shards.shard_of(&conversation);
        self.shards.submit_to(shard, Command::FileAccess { id: conversation, caller: caller.clone(), file, reply })?;
        rx.await.map_err(|_| crate::requests::gone())?
    }

    fn issue(&self, grant: Grant, now_ms: i64) -> (Vec<u8>, i64) {
        let mut ticket = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut ticket);
        let expires = Instant::now() + TICKET_LIFETIME;
        let mut tickets = lock(&self.tickets);
        let now = Instant::now();
        tickets.retain(|_, t| t.expires > now);
        tickets.insert(ticket_key(&ticket), Ticket { grant, expires });
        let lifetime_ms = i64::try_from(TICKET_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        (ticket, now_ms.saturating_add(lifetime_ms))
    }

    /// Takes a ticket (once): what it grants, unless it is unknown or expired.
    fn redeem(&self, ticket: &[u8]) -> Option<Grant> {
        let t = lock(&self.tickets).remove(&ticket_key(ticket))?;
        (t.expires > Instant::now()).then_some(t.grant)
    }

    /// `StartUpload`: checks what can be checked before a byte of the file moves, and
    /// answers with a ticket (and, for a resumed upload, where to go on from).
    pub async fn start_upload(&self, caller: &Identity, req: pb::StartUpload, now_ms: i64) -> Result<pb::TransferTicket, RequestError> {
        let UploadRequest { conversation, sha256, name } = check_upload(&req, self.config.max_file_size)?;

        if !req.upload_id.is_empty() {
            return self.resume_upload(caller, &req, conversation, sha256, now_ms).await;
        }
        // Access first: a refusal for a conversation one is not in does not use up the
        // hour's uploads.
        let (key, _) = self.access(conversation, caller, None).await?;
        if let Err(wait) = self.limiter.check(&caller.user_id) {
            return Err(RequestError::rate_limited(
                &format!(
                    "upload limit reached: at most {} upload{} per hour",
                    self.config.uploads_per_hour,
                    if self.config.uploads_per_hour == 1 { "" } else { "s" }
                ),
                wait,
            ));
        }
        let id = ids::random_id();
        let upload = Upload {
            id,
            user: caller.user_id.clone(),
            conversation,
            file: key.file_id(&sha256),
            name: name.clone(),
            size: req.size,
            sha256,
            key,
            chunks_done: 0,
            confirmed: 0,
            hasher: Sha256::new(),
            mime: None,
            started: Instant::now(),
        };
        self.forget_stale_uploads();
        lock(&self.uploads).insert(id, Arc::new(tokio::sync::Mutex::new(upload)));
        let (ticket, expires_at_ms) = self.issue(Grant::Upload(id), now_ms);
        Ok(pb::TransferTicket {
            ticket,
            expires_at_ms,
            upload_id: format_id(&id),
            offset: 0,
            size: req.size,
            file_name: name,
            ..Default::default()
        })
    }

    async fn resume_upload(
        &self,
        caller: &Identity,
        req: &pb::StartUpload,
        conversation: ConversationKey,
        sha256: [u8; 32],
        now_ms: i64,
    ) -> Result<pb::TransferTicket, RequestError> {
        let id = validate::parse_id("upload_id", &req.upload_id).map_err(crate::requests::invalid)?;
        let not_found = || RequestError::not_found(format!("upload_id: no interrupted upload {} of yours; start it again", req.upload_id));
        let upload = lock(&self.uploads).get(&id).cloned().ok_or_else(not_found)?;
        // Still a participant?
        self.access(conversation, caller, None).await?;
        let u = upload.try_lock().map_err(|_| {
            RequestError::new(ErrorCode::Conflict, "the upload is still running on another stream; try again once that one has ended")
        })?;
        if u.user != caller.user_id {
            return Err(not_found());
        }
        if u.conversation != conversation || u.size != req.size || u.sha256 != sha256 {
            return Err(RequestError::invalid(
                "upload_id: names an upload of another file (conversation, size and sha256 must be the same)",
            ));
        }
        let (ticket, expires_at_ms) = self.issue(Grant::Upload(id), now_ms);
        Ok(pb::TransferTicket {
            ticket,
            expires_at_ms,
            upload_id: req.upload_id.clone(),
            offset: u.confirmed,
            size: u.size,
            file_name: u.name.clone(),
            ..Default::default()
        })
    }

    /// `StartDownload`: a current participant gets a ticket for the file.
    pub async fn start_download(
        &self,
        caller: &Identity,
        req: &pb::StartDownload,
        now_ms: i64,
    ) -> Result<pb::TransferTicket, RequestError> {
        let (conversation, file) = check_download(req)?;
        let (key, record) = self.access(conversation, caller, Some(file)).await?;
        let record = record.ok_or_else(|| RequestError::not_found(format!("file_id: no file {} in this conversation", req.file_id)))?;
        let answer = pb::TransferTicket {
            size: record.size,
            file_name: record.name.clone(),
            sha256: record.sha256.clone(),
            mime_type: record.mime_type.clone(),
            ..Default::default()
        };
        let download = Download { user: caller.user_id.clone(), conversation, file, key, record };
        let (ticket, expires_at_ms) = self.issue(Grant::Download(Box::new(download)), now_ms);
        Ok(pb::TransferTicket { ticket, expires_at_ms, ..answer })
    }

    /// Drops uploads left unfinished longer than [`UPLOAD_LIFETIME`], with their part files.
    fn forget_stale_uploads(&self) {
        let mut stale = Vec::new();
        lock(&self.uploads).retain(|id, u| match u.try_lock() {
            Ok(u) if u.started.elapsed() > UPLOAD_LIFETIME => {
                stale.push(*id);
                false
            }
            _ => true,
        });
        for id in stale {
            let _ = std::fs::remove_file(self.part_path(&id));
        }
    }

    /// An upload is over (stored or refused): forget it and its part file.
    fn finish_upload(&self, id: &[u8; 16]) {
        lock(&self.uploads).remove(id);
        let _ = std::fs::remove_file(self.part_path(id));
    }

    /// Removes the files no message refers to that were stored before the grace period,
    /// one page of the store at a time through their shards. Returns how many went.
    pub async fn sweep(&self) -> Result<usize, RequestError> {
        let grace_ms = i64::try_from(self.config.orphan_grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff_ms = ids::now_ms().saturating_sub(grace_ms);
        let mut after = None;
        let mut removed = 0;
        loop {
            let page =
                self.pool.read(move |store| store.files_after(after, 256)).await?.map_err(|e| internal("listing files failed", e))?;
            let Some(&last) = page.last() else { break };
            after = Some(last);
            for (conversation, file) in page {
                let (reply, rx) = oneshot::channel();
                let shard = self.shards.shard_of(&conversation);
                self.shards.submit_to(shard, Command::SweepFile { id: conversation, file, cutoff_ms, reply })?;
                if let Some(blob) = rx.await.map_err(|_| crate::requests::gone())?? {
                    let path = self.conversation_dir(&conversation).join(&blob);
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(error = %e, file = %format_id(&file), "a removed file's content could not be deleted");
                    }
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "files no message refers to were removed");
        }
        Ok(removed)
    }

    /// Sweeps now and then every `every`, until the server stops.
    pub fn spawn_sweeper(
        self: &Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let files = self.clone();
        tokio::spawn(async move {
            loop {
                files.forget_stale_uploads();
                if let Err(e) = files.sweep().await {
                    tracing::warn!(error = %e, "sweeping files failed; trying again later");
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })
    }
}

/// `52428800` as "50 MiB".
pub fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human_size(DEFAULT_MAX_FILE_SIZE), "50 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12), "12 bytes");
    }

    #[test]
    fn tickets_open_once_and_expire() {
        let ticket = ticket_key(b"abc");
        assert_eq!(ticket, ticket_key(b"abc"));
        assert_ne!(ticket, ticket_key(b"abd"));
    }
}
