//! Attachments: uploads and downloads on transfer streams of the client's connection,
//! beside its session, with progress, resumption and an end-to-end SHA-256 check.
//!
//! The high-level calls ([`Client::upload_file`], [`Client::download_file`]) take paths
//! and carry on across dropped connections from the last offset the server confirmed (or
//! the bytes already written). The low-level ones ([`Client::start_upload`],
//! [`Client::upload_from`], [`Client::start_download`], [`Client::download_into`]) move one
//! ticket's worth over any reader or writer, for gateways that relay a body.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use legalchat_protocol::codec::{self, FrameDecoder};
use legalchat_protocol::pb::{self, transfer_reply::Reply};
use legalchat_protocol::validate;

use crate::carrier::RecvHalf;
use crate::carrier::SendHalf;
use crate::client::Client;
use crate::config::DEFAULT_IDLE_TIMEOUT as IDLE_TIMEOUT;
use crate::connection::ReadFailure;
use crate::error::{Error, Result};

/// First byte of a transfer stream.
const STREAM_TRANSFER: u8 = 0x01;
/// Bytes read from a source per write.
const PIECE: usize = 64 * 1024;
/// Largest `TransferReply` frame accepted (an `uploaded` answer carries a preview).
const MAX_REPLY_FRAME: usize = 256 * 1024;
/// Attempts of one upload or download across dropped connections.
const MAX_ATTEMPTS: u32 = 20;

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent (uploads) or received and written (downloads), from the file's start.
    pub done: u64,
    /// Uploads: bytes the server holds durably (a resumed upload goes on from here).
    /// Downloads: equal to `done`.
    pub confirmed: u64,
    /// The file's size.
    pub total: u64,
}

/// A file downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, checked against the server's.
    pub sha256: [u8; 32],
    /// Its type as the server recognised it.
    pub mime_type: String,
    /// The sanitized name it was stored under.
    pub file_name: String,
}

/// Reads `TransferReply` frames, and the raw bytes after them, off a transfer stream.
struct ReplyReader {
    recv: RecvHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl ReplyReader {
    fn new(recv: RecvHalf) -> Self {
        Self { recv, buf: BytesMut::new(), decoder: FrameDecoder::new(MAX_REPLY_FRAME) }
    }

    /// The next reply; `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<Reply>> {
        loop {
            match self.decoder.decode::<pb::TransferReply>(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame.reply),
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(format!("transfer reply: {e}"))),
            }
            let want = self.decoder.missing(&self.buf).max(1);
            match self.recv.read_chunk(want).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(Error::Protocol("the transfer stream ended inside a frame".into())),
                Err(e) => return Err(Error::Disconnected(format!("the transfer stream broke: {}", e.describe(IDLE_TIMEOUT)))),
            }
        }
    }

    /// Raw bytes after the frames (a download's content); `None` at the end.
    async fn bytes(&mut self) -> Result<Option<bytes::Bytes>> {
        if !self.buf.is_empty() {
            return Ok(Some(self.buf.split().freeze()));
        }
        match self.recv.read_chunk(PIECE).await {
            Ok(chunk) => Ok(chunk),
            Err(ReadFailure::Stream(quinn::ReadError::Reset(code))) => Err(Error::Server {
                code: pb::ErrorCode::Internal,
                message: format!("the server stopped the download (code {code}); ask again to resume"),
                retry_after: None,
            }),
            Err(e) => Err(Error::Disconnected(format!("the transfer stream broke: {}", e.describe(IDLE_TIMEOUT)))),
        }
    }
}

fn unexpected(what: &str, reply: Option<Reply>) -> Error {
    match reply {
        Some(Reply::Error(e)) => Error::from_server(&e),
        None => Error::Disconnected(format!("the transfer stream ended before {what}")),
        Some(_) => Error::Protocol(format!("expected {what} on the transfer stream")),
    }
}

/// SHA-256 and size of a file, read once.
pub async fn hash_file(path: &Path) -> Result<([u8; 32], u64)> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| io_error(path, &e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; PIECE];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| io_error(path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Invalid(validate::ValidationError::new("path", format!("{}: {e}", path.display())))
}

fn retryable(e: &Error) -> bool {
    matches!(e, Error::Disconnected(_) | Error::Timeout | Error::Connect(_))
        || matches!(e, Error::Server { code: pb::ErrorCode::Unavailable | pb::ErrorCode::Overloaded | pb::ErrorCode::Conflict, .. })
}

impl Client {
    /// Opens a transfer stream on the current connection and presents `ticket`.
    async fn open_transfer(&self, ticket: &pb::TransferTicket, offset: u64) -> Result<(SendHalf, ReplyReader)> {
        let deadline = Instant::now() + self.shared().config.request_timeout;
        let link = self.shared().current_link(deadline).await?;
        let (mut send, recv) = timeout_at(deadline, link.carrier.open_transfer()).await.map_err(|_| Error::Timeout)??;
        let request = pb::TransferRequest { ticket: ticket.ticket.clone(), offset };
        let mut first = vec![STREAM_TRANSFER];
        first.extend_from_slice(&codec::encode(&request));
        send.write_all(&first).await.map_err(|e| Error::Disconnected(format!("cannot send on the transfer stream: {e}")))?;
        Ok((send, ReplyReader::new(recv)))
    }

    /// Asks to upload a file of `size` bytes with SHA-256 `sha256` into `conv` (or to
    /// resume upload `upload_id`): the answer's ticket opens one transfer, from its
    /// `offset`.
    pub async fn start_upload(
        &self,
        conv: &str,
        file_name: &str,
        size: u64,
        sha256: [u8; 32],
        upload_id: Option<&str>,
    ) -> Result<pb::TransferTicket> {
        validate::parse_id("conversation_id", conv)?;
        let request = pb::StartUpload {
            conversation_id: conv.to_owned(),
            file_name: file_name.to_owned(),
            size,
            sha256: sha256.to_vec(),
            upload_id: upload_id.unwrap_or_default().to_owned(),
        };
        match self.request(pb::client_frame::Request::StartUpload(request)).await? {
            pb::ack::Result::Ticket(t) => Ok(t),
            other => Err(Error::Protocol(format!("StartUpload was answered with {}", crate::session::answer_name(&other)))),
        }
    }

    /// Asks to download attachment `file_id` of `conv`.
    pub async fn start_download(&self, conv: &str, file_id: &str) -> Result<pb::TransferTicket> {
        validate::parse_id("conversation_id", conv)?;
        validate::parse_id("file_id", file_id)?;
        let request = pb::StartDownload { conversation_id: conv.to_owned(), file_id: file_id.to_owned() };
        match self.request(pb::client_frame::Request::StartDownload(request)).await? {
            pb::ack::Result::Ticket(t) => Ok(t),
            other => Err(Error::Protocol(format!("StartDownload was answered with {}", crate::session::answer_name(&other)))),
        }
    }

    /// Uploads with `ticket`: `body` yields the file's bytes from `ticket.offset` to its
    /// end. Returns the stored attachment once the server has checked and kept the file.
    pub async fn upload_from(
        &self,
        ticket: &pb::TransferTicket,
        mut body: impl AsyncRead + Unpin,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<pb::Attachment> {
        let (mut send, mut replies) = self.open_transfer(ticket, 0).await?;
        let offset = match replies.next().await? {
            Some(Reply::Started(s)) => s.offset,
            other => return Err(unexpected("the upload's start", other)),
        };
        if offset != ticket.offset {
            return Err(Error::Protocol(format!("the server starts the upload at {offset}, not at the ticket's {}", ticket.offset)));
        }
        let total = ticket.size;
        let mut done = offset;
        let mut confirmed = offset;
        let mut piece = vec![0u8; PIECE];
        let mut body_done = false;
        progress(Progress { done, confirmed, total });
        loop {
            tokio::select! {
                read = body.read(&mut piece), if !body_done => {
                    let n = read.map_err(|e| Error::Invalid(validate::ValidationError::new("body", e.to_string())))?;
                    if n == 0 {
                        body_done = true;
                        send.finish().await;
                    } else {
                        send.write_all(&piece[..n]).await.map_err(|e| Error::Disconnected(format!("the upload stream broke: {e}")))?;
                        done += n as u64;
                        progress(Progress { done, confirmed, total });
                    }
                }
                reply = replies.next() => match reply? {
                    Some(Reply::Progress(p)) => {
                        confirmed = p.confirmed;
                        progress(Progress { done, confirmed, total });
                    }
                    Some(Reply::Uploaded(attachment)) => {
                        progress(Progress { done: total, confirmed: total, total });
                        return Ok(attachment);
                    }
                    other => return Err(unexpected("the upload's result", other)),
                }
            }
        }
    }

    /// Downloads with `ticket` from byte `offset` into `sink`; returns the bytes written.
    pub async fn download_into(
        &self,
        ticket: &pb::TransferTicket,
        offset: u64,
        sink: &mut (impl AsyncWrite + Unpin),
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<u64> {
        let (mut send, mut replies) = self.open_transfer(ticket, offset).await?;
        send.finish().await;
        let total = match replies.next().await? {
            Some(Reply::Started(s)) if s.offset == offset => s.size,
            Some(Reply::Started(s)) => {
                return Err(Error::Protocol(format!("the server starts the download at {}, not {offset}", s.offset)));
            }
            other => return Err(unexpected("the download's start", other)),
        };
        let mut done = offset;
        progress(Progress { done, confirmed: done, total });
        while let Some(bytes) = replies.bytes().await? {
            if done + bytes.len() as u64 > total {
                return Err(Error::Protocol(format!("the server sent more than the file's {total} bytes")));
            }
            sink.write_all(&bytes).await.map_err(|e| Error::Invalid(validate::ValidationError::new("sink", e.to_string())))?;
            done += bytes.len() as u64;
            progress(Progress { done, confirmed: done, total });
        }
        if done != total {
            return Err(Error::Disconnected(format!("the download ended after {done} of {total} bytes")));
        }
        sink.flush().await.map_err(|e| Error::Invalid(validate::ValidationError::new("sink", e.to_string())))?;
        Ok(done - offset)
    }

    /// Uploads the file at `path` into `conv` under `name` (the path's file name when
    /// `None`), resuming from the server's last confirmed offset when the connection
    /// drops. The server checks size, type, hash and (when configured) malware before it
    /// answers with the attachment to put in a message.
    pub async fn upload_file(
        &self,
        conv: &str,
        path: &Path,
        name: Option<&str>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<pb::Attachment> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let (sha256, size) = hash_file(path).await?;
        let mut upload_id: Option<String> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = async {
                let ticket = self.start_upload(conv, &name, size, sha256, upload_id.as_deref()).await?;
                upload_id = Some(ticket.upload_id.clone());
                let mut file = tokio::fs::File::open(path).await.map_err(|e| io_error(path, &e))?;
                file.seek(std::io::SeekFrom::Start(ticket.offset)).await.map_err(|e| io_error(path, &e))?;
                self.upload_from(&ticket, file.take(size - ticket.offset), progress).await
            }
            .await;
            match outcome {
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "upload interrupted; resuming");
                    self.settle().await;
                }
                done => return done,
            }
        }
    }

    /// Downloads attachment `file_id` of `conv` to `path`, through `path` + `.part` (a
    /// partial file there is resumed), and checks its SHA-256 before moving it into place.
    pub async fn download_file(
        &self,
        conv: &str,
        file_id: &str,
        path: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Downloaded> {
        let mut part_name = path.as_os_str().to_owned();
        part_name.push(".part");
        let part = PathBuf::from(part_name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = async {
                let ticket = self.start_download(conv, file_id).await?;
                let mut file =
                    tokio::fs::OpenOptions::new().create(true).append(true).open(&part).await.map_err(|e| io_error(&part, &e))?;
                let mut have = file.metadata().await.map_err(|e| io_error(&part, &e))?.len();
                if have > ticket.size {
                    file.set_len(0).await.map_err(|e| io_error(&part, &e))?;
                    have = 0;
                }
                self.download_into(&ticket, have, &mut file, progress).await?;
                file.sync_all().await.map_err(|e| io_error(&part, &e))?;
                Ok::<_, Error>(ticket)
            }
            .await;
            match outcome {
                Ok(ticket) => {
                    let (sha256, size) = hash_file(&part).await?;
                    if sha256[..] != ticket.sha256[..] {
                        let _ = tokio::fs::remove_file(&part).await;
                        return Err(Error::Protocol(format!(
                            "the downloaded file's SHA-256 does not match the server's ({} bytes); it was discarded",
                            size
                        )));
                    }
                    tokio::fs::rename(&part, path).await.map_err(|e| io_error(path, &e))?;
                    return Ok(Downloaded {
                        path: path.to_owned(),
                        size,
                        sha256,
                        mime_type: ticket.mime_type,
                        file_name: ticket.file_name,
                    });
                }
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "download interrupted; resuming");
                    self.settle().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits a moment before a transfer is tried again (the client reconnects by itself
    /// meanwhile; the next request waits for the new connection).
    async fn settle(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
