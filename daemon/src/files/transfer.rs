//! Transfer streams: one file up or down on a bidirectional stream of its own, so that a
//! 50 MB upload never waits behind chat or makes chat wait. The wire format is in the
//! `.proto` ("transfers"); memory per transfer is a chunk or two, whatever the file's
//! size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::oneshot;

use legalchat_protocol::codec::{self, FrameDecoder};
use legalchat_protocol::files;
use legalchat_protocol::pb::{self, ErrorCode, transfer_reply::Reply};
use legalchat_protocol::validate::format_id;

use super::scan::Verdict;
use super::sealed::SealedReader;
use super::{Download, FileEvent, Files, Grant, Upload, thumbnail};
use crate::crypto::stream::{CHUNK, SEALED_CHUNK, chunk_count, sealed_len};
use crate::ids;
use crate::policy::RequestError;
use crate::shard::Command;
use crate::store::StoredFile;
use crate::streams::{RecvHalf, SendHalf};

/// First byte of a session stream.
pub const STREAM_SESSION: u8 = 0x00;
/// First byte of a transfer stream.
pub const STREAM_TRANSFER: u8 = 0x01;
/// Transfers one connection may run at once.
pub const MAX_TRANSFERS_PER_CONNECTION: usize = 4;
/// Chunks written between syncs: an upload confirms progress every 4 MiB (a sync per MiB
/// made chat commits wait behind the upload's syncs on a shared disk: chat delivery p99
/// 5.6× its figure without uploads, against 3.2× with a sync at the end only).
const CONFIRM_EVERY: u64 = 64;
/// How long the first frame of a transfer stream may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer whose bytes stop moving for this long ends (it can be resumed).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last byte of an upload: how long to wait for the stream's end, to tell a
/// finished upload from one that carries more than it declared.
const END_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `TransferRequest` frame.
const MAX_REQUEST_FRAME: usize = 1024;
/// QUIC application error code for a download that failed part way.
const RESET_INTERNAL: u32 = 3;

/// Counts the transfers running on one connection.
#[derive(Debug, Default, Clone)]
pub struct TransferSlots(Arc<AtomicUsize>);

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TransferSlots {
    fn take(&self) -> Option<Slot> {
        let taken = self.0.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.0.clone());
        (taken < MAX_TRANSFERS_PER_CONNECTION).then_some(slot)
    }
}

fn reply_frame(reply: Reply) -> bytes::Bytes {
    codec::encode(&pb::TransferReply { reply: Some(reply) })
}

fn error_reply(e: &RequestError) -> bytes::Bytes {
    reply_frame(Reply::Error(e.to_pb(0)))
}

/// Ends a transfer stream with an error.
async fn refuse(mut send: SendHalf, recv: &mut RecvHalf, e: &RequestError) {
    recv.stop(0);
    let _ = send.write_all(&error_reply(e)).await;
    send.finish(Duration::from_secs(2)).await;
}

/// What a bidirectional stream carries, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A session ([`STREAM_SESSION`]): the byte is also the first of its first frame's length.
    Session,
    /// A transfer ([`STREAM_TRANSFER`]): a `TransferRequest` frame follows.
    Transfer,
}

impl StreamKind {
    /// The kind a stream's first byte names, or why it names none (the client hears it).
    pub fn of(first: u8) -> Result<Self, String> {
        match first {
            STREAM_SESSION => Ok(Self::Session),
            STREAM_TRANSFER => Ok(Self::Transfer),
            b => Err(format!("a stream must start with 0x00 (session) or 0x01 (transfer), not 0x{b:02x}")),
        }
    }
}

/// What the bytes of a transfer stream so far make of its request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestRead {
    /// The request; its frame was taken off the buffer, and nothing past it.
    Done(pb::TransferRequest),
    /// Incomplete: read at most this many more bytes (never past the request).
    More(usize),
}

/// Decodes the `TransferRequest` at the start of `buf`, the bytes after the kind byte.
/// Pure, so that what a client may send first is fuzzed (`fuzz/fuzz_targets/stream_header.rs`).
pub fn decode_request(buf: &mut BytesMut) -> Result<RequestRead, RequestError> {
    let decoder = FrameDecoder::new(MAX_REQUEST_FRAME);
    match decoder.decode::<pb::TransferRequest>(buf) {
        Ok(Some(request)) => Ok(RequestRead::Done(request)),
        Ok(None) => Ok(RequestRead::More(decoder.missing(buf).max(1))),
        Err(e) => Err(RequestError::new(ErrorCode::MalformedFrame, format!("the transfer request: {e}"))),
    }
}

/// Reads the `TransferRequest`, never past it.
async fn read_request(recv: &mut RecvHalf) -> Result<pb::TransferRequest, RequestError> {
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            let want = match decode_request(&mut buf)? {
                RequestRead::Done(request) => return Ok(request),
                RequestRead::More(want) => want,
            };
            match recv.read_chunk(want).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) | Err(_) => return Err(RequestError::invalid("the stream ended before its transfer request")),
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.unwrap_or_else(|_| Err(RequestError::invalid("no transfer request arrived in time")))
}

/// How receiving an upload ended, short of the whole file.
enum Cut {
    /// The client finished the stream early: it hears where to go on from.
    Ended,
    /// The stream broke or stalled: nobody to tell.
    Lost,
    /// Refused for good: the upload is dropped.
    Refused(RequestError),
    /// The server failed: the upload is kept and may be resumed.
    Failed(RequestError),
}

fn io_failed(e: &std::io::Error) -> Cut {
    tracing::error!(error = %e, "writing an upload failed");
    Cut::Failed(RequestError::internal("the server could not store the upload; resume it later"))
}

fn chunk_len(size: u64, index: u64) -> usize {
    usize::try_from(size.saturating_sub(index * CHUNK as u64).min(CHUNK as u64)).unwrap_or(CHUNK)
}

impl Files {
    /// Serves a transfer stream whose kind byte has been read.
    pub async fn serve_transfer(self: Arc<Self>, slots: TransferSlots, send: SendHalf, mut recv: RecvHalf) {
        let request = match read_request(&mut recv).await {
            Ok(r) => r,
            Err(e) => return refuse(send, &mut recv, &e).await,
        };
        let Some(_slot) = slots.take() else {
            let e = RequestError::new(
                ErrorCode::Overloaded,
                format!("this connection already runs its maximum of {MAX_TRANSFERS_PER_CONNECTION} transfers; wait for one to end"),
            );
            return refuse(send, &mut recv, &e).await;
        };
        let Ok(_running) = self.running.clone().try_acquire_owned() else {
            let e = RequestError::new(ErrorCode::Overloaded, "the server runs its maximum of transfers; try again shortly");
            return refuse(send, &mut recv, &e).await;
        };
        match self.redeem(&request.ticket) {
            None => {
                metrics::counter!("legalchat_transfers_refused_total", "reason" => "ticket").increment(1);
                let e = RequestError::new(ErrorCode::Unauthorized, "the transfer ticket is unknown, used or expired; ask for a new one");
                refuse(send, &mut recv, &e).await;
            }
            Some(Grant::Upload(id)) => Box::pin(self.upload(id, send, recv)).await,
            Some(Grant::Download(d)) => {
                recv.stop(0);
                Box::pin(self.download(*d, request.offset, send)).await;
            }
        }
    }

    async fn upload(&self, id: [u8; 16], mut send: SendHalf, mut recv: RecvHalf) {
        let Some(upload) = super::lock(&self.uploads).get(&id).cloned() else {
            let e = RequestError::not_found("the upload was dropped (finished, refused or expired); start it again");
            return refuse(send, &mut recv, &e).await;
        };
        let Ok(mut u) = upload.try_lock_owned() else {
            let e =
                RequestError::new(ErrorCode::Conflict, "the upload is still running on another stream; try again once that one has ended");
            return refuse(send, &mut recv, &e).await;
        };
        let cut = match self.receive(&mut u, &mut send, &mut recv).await {
            Ok(()) => match self.accept(&mut u).await {
                Ok(attachment) => {
                    let _ = send.write_all(&reply_frame(Reply::Uploaded(attachment))).await;
                    self.finish_upload(&id);
                    send.finish(Duration::from_secs(2)).await;
                    return;
                }
                Err(cut) => cut,
            },
            Err(cut) => cut,
        };
        match cut {
            Cut::Lost => {}
            Cut::Ended => {
                let e = RequestError::invalid(format!(
                    "the stream ended after {} of {} bytes; resume from {}",
                    u.confirmed, u.size, u.confirmed
                ));
                refuse(send, &mut recv, &e).await;
            }
            Cut::Failed(e) => refuse(send, &mut recv, &e).await,
            Cut::Refused(e) => {
                metrics::counter!("legalchat_uploads_refused_total").increment(1);
                self.audit.record(FileEvent {
                    action: "refused",
                    user: u.user.clone(),
                    conversation: u.conversation,
                    file: u.file,
                    bytes: u.confirmed,
                    detail: e.message.clone(),
                });
                self.finish_upload(&id);
                refuse(send, &mut recv, &e).await;
            }
        }
    }

    /// Receives the rest of an upload into its part file, sealed, confirming progress.
    async fn receive(&self, u: &mut Upload, send: &mut SendHalf, recv: &mut RecvHalf) -> Result<(), Cut> {
        let count = chunk_count(u.size);
        let mut index = u.chunks_done;
        let path = self.part_path(&u.id);
        let mut file =
            tokio::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).await.map_err(|e| io_failed(&e))?;
        let start = index * SEALED_CHUNK as u64;
        file.set_len(start).await.map_err(|e| io_failed(&e))?;
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| io_failed(&e))?;

        let started = reply_frame(Reply::Started(pb::TransferStarted { offset: u.confirmed, size: u.size }));
        send.write_all(&started).await.map_err(|_| Cut::Lost)?;
        let mut hasher = u.hasher.clone();
        let mut buf = Vec::with_capacity(CHUNK);
        let mut unsynced = 0;
        while index < count {
            let want = chunk_len(u.size, index);
            while buf.len() < want {
                match tokio::time::timeout(IDLE_TIMEOUT, recv.read_chunk(want - buf.len())).await {
                    Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
                    Ok(Ok(None)) => return Err(Cut::Ended),
                    Ok(Err(_)) | Err(_) => return Err(Cut::Lost),
                }
            }
            if index == 0 {
                let head = &buf[..buf.len().min(files::SNIFF_BYTES)];
                let detected = files::check_content(head, &self.config.allowed_types)
                    .map_err(|e| Cut::Refused(RequestError::invalid(e.to_string())))?;
                u.mime = Some(detected.mime.to_owned());
            }
            hasher.update(&buf);
            let last = index + 1 == count;
            let sealed = u.key.seal_file_chunk(&u.conversation, &u.file, index, last, &buf);
            file.write_all(&sealed).await.map_err(|e| io_failed(&e))?;
            buf.clear();
            index += 1;
            unsynced += 1;
            if unsynced == CONFIRM_EVERY || last {
                file.flush().await.map_err(|e| io_failed(&e))?;
                file.sync_data().await.map_err(|e| io_failed(&e))?;
                unsynced = 0;
                u.chunks_done = index;
                u.confirmed = (index * CHUNK as u64).min(u.size);
                u.hasher = hasher.clone();
                let progress = reply_frame(Reply::Progress(pb::TransferProgress { confirmed: u.confirmed }));
                send.write_all(&progress).await.map_err(|_| Cut::Lost)?;
            }
        }
        // The whole file is here: anything more breaks the declared size.
        if let Ok(Ok(Some(more))) = tokio::time::timeout(END_TIMEOUT, recv.read_chunk(1)).await
            && !more.is_empty()
        {
            return Err(Cut::Refused(RequestError::invalid(format!("the upload carries more than its declared size of {} bytes", u.size))));
        }
        Ok(())
    }

    /// Checks a whole upload (hash, scan), makes its preview and hands it to the
    /// conversation's shard to keep.
    async fn accept(&self, u: &mut Upload) -> Result<pb::Attachment, Cut> {
        let hash: [u8; 32] = u.hasher.clone().finalize().into();
        if hash != u.sha256 {
            return Err(Cut::Refused(RequestError::invalid(format!(
                "sha256: the content's SHA-256 is {}, not the declared {}",
                hex::encode(hash),
                hex::encode(u.sha256)
            ))));
        }
        let mime = u.mime.clone().unwrap_or_default();
        let path = self.part_path(&u.id);
        let reader = {
            let (path, key, conversation, file, size) = (path.clone(), u.key.clone(), u.conversation, u.file, u.size);
            move || SealedReader::open(&path, key, conversation, file, size)
        };
        if let Some(scanner) = self.scanner.clone() {
            let open = reader.clone();
            let verdict = tokio::task::spawn_blocking(move || scanner.scan(open().map_err(super::scan::ScanError::Content)?)).await;
            match verdict {
                Ok(Ok(Verdict::Clean)) => {}
                Ok(Ok(Verdict::Infected(name))) => {
                    metrics::counter!("legalchat_uploads_infected_total").increment(1);
                    return Err(Cut::Refused(RequestError::invalid(format!("file: refused: the malware scanner found {name}"))));
                }
                Ok(Err(e)) => {
                    metrics::counter!("legalchat_scan_failures_total").increment(1);
                    if self.scanner.as_ref().is_some_and(super::scan::Clamd::fails_open) {
                        tracing::warn!(error = %e, "accepting an upload unscanned (the scanner fails open)");
                    } else {
                        tracing::warn!(error = %e, "refusing an upload: the scanner is unavailable");
                        return Err(Cut::Failed(RequestError::new(
                            ErrorCode::Unavailable,
                            "the malware scanner is unavailable, so the file cannot be accepted now; resume the upload later",
                        )));
                    }
                }
                Err(e) => return Err(Cut::Failed(RequestError::internal(format!("the scan did not finish: {e}")))),
            }
        }
        let thumbnail = if mime.starts_with("image/") {
            let open = reader.clone();
            let mime = mime.clone();
            tokio::task::spawn_blocking(move || open().ok().and_then(|r| thumbnail::make(std::io::BufReader::new(r), &mime)))
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let record = StoredFile {
            name: u.name.clone(),
            mime_type: mime,
            size: u.size,
            sha256: u.sha256.to_vec(),
            thumbnail,
            uploaded_by: u.user.clone(),
            stored_at_ms: ids::now_ms(),
            blob: String::new(),
        };
        let (reply, rx) = oneshot::channel();
        let command =
            Command::StoreFile { id: u.conversation, file: u.file, record, part: path, dir: self.conversation_dir(&u.conversation), reply };
        let shard = self.shards.shard_of(&u.conversation);
        self.shards.submit_to(shard, command).map_err(|e| Cut::Failed(e.into()))?;
        let stored = rx.await.map_err(|_| Cut::Failed(crate::requests::gone()))?.map_err(Cut::Failed)?;
        metrics::counter!("legalchat_uploads_total").increment(1);
        metrics::counter!("legalchat_upload_bytes_total").increment(u.size);
        self.audit.record(FileEvent {
            action: "upload",
            user: u.user.clone(),
            conversation: u.conversation,
            file: u.file,
            bytes: u.size,
            detail: String::new(),
        });
        Ok(stored.attachment(format_id(&u.file), &u.name))
    }

    async fn download(&self, d: Download, offset: u64, mut send: SendHalf) {
        let size = d.record.size;
        if offset > size {
            let e = RequestError::invalid(format!("offset: {offset} is past the end of the file ({size} bytes)"));
            let _ = send.write_all(&error_reply(&e)).await;
            send.finish(Duration::from_secs(2)).await;
            return;
        }
        let path = self.conversation_dir(&d.conversation).join(&d.record.blob);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, file = %format_id(&d.file), "a stored file is missing");
                let e = RequestError::internal("the file's content is missing on the server");
                let _ = send.write_all(&error_reply(&e)).await;
                send.finish(Duration::from_secs(2)).await;
                return;
            }
        };
        let started = reply_frame(Reply::Started(pb::TransferStarted { offset, size }));
        if send.write_all(&started).await.is_err() {
            return;
        }
        let count = chunk_count(size);
        let mut index = offset / CHUNK as u64;
        let mut skip = usize::try_from(offset - index * CHUNK as u64).unwrap_or(0);
        let mut sealed = vec![0u8; SEALED_CHUNK];
        if index < count && file.seek(std::io::SeekFrom::Start(index * SEALED_CHUNK as u64)).await.is_err() {
            send.reset(RESET_INTERNAL);
            return;
        }
        while index < count {
            let last = index + 1 == count;
            let len = if last { usize::try_from(sealed_len(size) - index * SEALED_CHUNK as u64).unwrap_or(0) } else { SEALED_CHUNK };
            let plain = match file.read_exact(&mut sealed[..len]).await {
                Ok(_) => d.key.open_file_chunk(&d.conversation, &d.file, index, last, &sealed[..len]).ok(),
                Err(_) => None,
            };
            let Some(plain) = plain else {
                tracing::error!(file = %format_id(&d.file), chunk = index, "a stored file is damaged");
                send.reset(RESET_INTERNAL);
                return;
            };
            match tokio::time::timeout(IDLE_TIMEOUT, send.write_all(&plain[skip.min(plain.len())..])).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            skip = 0;
            index += 1;
        }
        metrics::counter!("legalchat_downloads_total").increment(1);
        self.audit.record(FileEvent {
            action: "download",
            user: d.user,
            conversation: d.conversation,
            file: d.file,
            bytes: size - offset,
            detail: if offset > 0 { format!("resumed at {offset}") } else { String::new() },
        });
        // Every byte is written; the end of the stream follows them.
        send.finish(IDLE_TIMEOUT).await;
    }
}
