//! Attachments over HTTP: a browser asks for a ticket on its socket, then moves the file
//! with one plain HTTP request, which the bridge relays onto a transfer stream of the
//! socket's daemon session. Every check is the daemon's (ticket, size, type, name, rate,
//! malware scan); the bridge adds only what HTTP needs: a `Content-Length` that matches,
//! before any byte of the body is read, and safe headers on what it serves.
//!
//! ```text
//!  start_upload {conversationId, fileName, size, sha256, uploadId?} ──► {uploadId, offset, url, …}
//!  PUT  <url>   body: the file from `offset`   ──► Client::upload_from ──► 201 {attachment}
//!  start_download {conversationId, fileId}   ──► {url, fileName, size, type, sha256, …}
//!  GET  <url>   (Range: bytes=N- resumes)       ──► Client::download_into ──► 200/206 the file
//! ```
//!
//! A ticket is the daemon's: 32 random bytes, valid once, for about a minute. The bridge
//! remembers only which socket's session asked for it, until it is used or expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use legalchat_protocol::pb;
use legalchat_sdk::Client;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::incoming::Failure;
use crate::payload;

/// How long a ticket waits for its HTTP request.
const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// Bytes buffered between the daemon and a download's HTTP body.
const DOWNLOAD_BUFFER: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Upload,
    Download,
}

#[derive(Debug)]
struct Issued {
    kind: Kind,
    client: Client,
    ticket: pb::TransferTicket,
    expires: Instant,
}

/// Tickets handed to browsers and not yet used.
#[derive(Debug, Default)]
pub struct Tickets {
    issued: Mutex<HashMap<String, Issued>>,
}

fn token(ticket: &pb::TransferTicket) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ticket.ticket)
}

impl Tickets {
    fn remember(&self, kind: Kind, client: &Client, ticket: pb::TransferTicket) -> String {
        let token = token(&ticket);
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        issued.retain(|_, i| i.expires > now);
        issued.insert(token.clone(), Issued { kind, client: client.clone(), ticket, expires: now + TICKET_LIFETIME });
        token
    }

    fn take(&self, token: &str, kind: Kind) -> Option<Issued> {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let found = issued.remove(token)?;
        (found.kind == kind && found.expires > Instant::now()).then_some(found)
    }
}

fn str_arg<'a>(args: &'a Map<String, Value>, field: &str) -> Result<&'a str, Failure> {
    match args.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Failure { code: "INVALID_ARGUMENT", message: format!("{field}: is required"), retry_after_ms: 0 }),
        Some(_) => Err(Failure { code: "INVALID_ARGUMENT", message: format!("{field}: must be a string"), retry_after_ms: 0 }),
    }
}

/// A `start_upload` or `start_download` payload, read and checked. Strings borrow from
/// the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start<'a> {
    /// `start_upload {conversationId, fileName, size, sha256, uploadId?}`.
    Upload {
        /// The conversation.
        conversation: &'a str,
        /// The file's name.
        name: &'a str,
        /// Its size in bytes.
        size: u64,
        /// Its SHA-256.
        sha256: [u8; 32],
        /// The interrupted upload to resume.
        upload_id: Option<&'a str>,
    },
    /// `start_download {conversationId, fileId}`.
    Download {
        /// The conversation.
        conversation: &'a str,
        /// The file.
        file: &'a str,
    },
}

/// Reads a `start_upload` or `start_download` payload; `None` for other events. Pure, so
/// that what a browser may send is fuzzed (`fuzz/fuzz_targets/bridge_json.rs`); an error
/// names the JSON field.
pub fn parse_start<'a>(event: &str, payload: &'a Value) -> Option<Result<Start<'a>, Failure>> {
    if !matches!(event, "start_upload" | "start_download") {
        return None;
    }
    let args = match crate::incoming::arguments(payload) {
        Ok(args) => args,
        Err(e) => return Some(Err(e)),
    };
    match event {
        "start_upload" => Some(upload_args(args)),
        "start_download" => Some(download_args(args)),
        _ => None,
    }
}

fn download_args(args: &Map<String, Value>) -> Result<Start<'_>, Failure> {
    Ok(Start::Download { conversation: str_arg(args, "conversationId")?, file: str_arg(args, "fileId")? })
}

fn upload_args(args: &Map<String, Value>) -> Result<Start<'_>, Failure> {
    let conversation = str_arg(args, "conversationId")?;
    let name = str_arg(args, "fileName")?;
    let size = args.get("size").and_then(Value::as_u64).ok_or_else(|| Failure {
        code: "INVALID_ARGUMENT",
        message: "size: must be the file's size in bytes".into(),
        retry_after_ms: 0,
    })?;
    let sha256: [u8; 32] = hex::decode(str_arg(args, "sha256")?).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| Failure {
        code: "INVALID_ARGUMENT",
        message: "sha256: must be 64 hexadecimal characters".into(),
        retry_after_ms: 0,
    })?;
    let upload_id = match args.get("uploadId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Failure { code: "INVALID_ARGUMENT", message: "uploadId: must be a string".into(), retry_after_ms: 0 }),
    };
    Ok(Start::Upload { conversation, name, size, sha256, upload_id })
}

/// `start_upload` and `start_download`: a ticket from the daemon, as a URL for one HTTP
/// request. `None` for other events.
pub async fn start(tickets: &Tickets, client: &Client, event: &str, payload: &Value) -> Option<Result<Value, Failure>> {
    Some(match parse_start(event, payload)? {
        Err(e) => Err(e),
        Ok(Start::Upload { conversation, name, size, sha256, upload_id }) => {
            start_upload(tickets, client, conversation, name, size, sha256, upload_id).await
        }
        Ok(Start::Download { conversation, file }) => start_download(tickets, client, conversation, file).await,
    })
}

async fn start_upload(
    tickets: &Tickets,
    client: &Client,
    conversation: &str,
    name: &str,
    size: u64,
    sha256: [u8; 32],
    upload_id: Option<&str>,
) -> Result<Value, Failure> {
    let ticket = client.start_upload(conversation, name, size, sha256, upload_id).await?;
    let answer = json!({
        "uploadId": ticket.upload_id,
        "offset": ticket.offset,
        "size": ticket.size,
        "fileName": ticket.file_name,
        "expiresAt": legalchat_protocol::time::rfc3339(ticket.expires_at_ms),
    });
    let token = tickets.remember(Kind::Upload, client, ticket);
    let mut answer = answer;
    answer["url"] = json!(format!("/api/uploads/{token}"));
    Ok(answer)
}

async fn start_download(tickets: &Tickets, client: &Client, conversation: &str, file: &str) -> Result<Value, Failure> {
    let ticket = client.start_download(conversation, file).await?;
    let answer = json!({
        "fileName": ticket.file_name,
        "size": ticket.size,
        "type": ticket.mime_type,
        "sha256": hex::encode(&ticket.sha256),
        "expiresAt": legalchat_protocol::time::rfc3339(ticket.expires_at_ms),
    });
    let token = tickets.remember(Kind::Download, client, ticket);
    let mut answer = answer;
    answer["url"] = json!(format!("/api/downloads/{token}"));
    Ok(answer)
}

/// The HTTP status for a failure.
fn status(code: &str) -> StatusCode {
    match code {
        "INVALID_ARGUMENT" | "MALFORMED_FRAME" => StatusCode::BAD_REQUEST,
        "UNAUTHORIZED" | "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        "FORBIDDEN" => StatusCode::FORBIDDEN,
        "NOT_FOUND" => StatusCode::NOT_FOUND,
        "CONFLICT" => StatusCode::CONFLICT,
        "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
        "OVERLOADED" | "UNAVAILABLE" | "TIMEOUT" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failed(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    (status, axum::Json(Failure { code, message: message.into(), retry_after_ms: 0 }.to_json())).into_response()
}

fn refused(f: Failure) -> Response {
    let status = status(f.code);
    let mut response = (status, axum::Json(f.to_json())).into_response();
    if f.retry_after_ms > 0 {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(f.retry_after_ms.div_ceil(1000)));
    }
    response
}

fn unknown_ticket() -> Response {
    failed(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the transfer ticket is unknown, used or expired; ask for a new one")
}

/// `PUT /api/uploads/{ticket}` (or `POST`): the file's bytes from the ticket's `offset`.
pub async fn upload(State(tickets): State<std::sync::Arc<Tickets>>, Path(token): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let Some(issued) = tickets.take(&token, Kind::Upload) else { return unknown_ticket() };
    let expected = issued.ticket.size.saturating_sub(issued.ticket.offset);
    let Some(length) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) else {
        return failed(StatusCode::LENGTH_REQUIRED, "INVALID_ARGUMENT", format!("Content-Length is required: {expected} bytes"));
    };
    // Judged before a byte of the body is read.
    if length > expected {
        return failed(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
            format!("the body is {length} bytes; this upload takes {expected} (the declared size from offset {})", issued.ticket.offset),
        );
    }
    if length < expected {
        return failed(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("the body is {length} bytes; this upload takes {expected} (from offset {})", issued.ticket.offset),
        );
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    match issued.client.upload_from(&issued.ticket, reader, &mut |_| {}).await {
        Ok(attachment) => (StatusCode::CREATED, axum::Json(json!({"attachment": payload::attachment(&attachment)}))).into_response(),
        Err(e) => refused(Failure::from(e)),
    }
}

/// `bytes=N-`: where a download resumes.
fn range_start(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let Some(value) = headers.get(header::RANGE) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ())?;
    let start = value.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).ok_or(())?;
    start.parse().map(Some).map_err(|_| ())
}

/// `filename*=UTF-8''…` (RFC 6266 / 8187), with a plain ASCII `filename` for old agents.
fn disposition(kind: &str, name: &str) -> HeaderValue {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%') || c == ' ' { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `GET /api/downloads/{ticket}`: the file, or its rest from `Range: bytes=N-`. With
/// `?inline`, an image is shown in the page (previews); everything else is always a
/// download.
pub async fn download(
    State(tickets): State<std::sync::Arc<Tickets>>,
    Path(token): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(issued) = tickets.take(&token, Kind::Download) else { return unknown_ticket() };
    let size = issued.ticket.size;
    let offset = match range_start(&headers) {
        Ok(start) => start.unwrap_or(0),
        Err(()) => return failed(StatusCode::RANGE_NOT_SATISFIABLE, "INVALID_ARGUMENT", "only Range: bytes=N- is supported"),
    };
    if offset > size {
        return failed(StatusCode::RANGE_NOT_SATISFIABLE, "INVALID_ARGUMENT", format!("the file has {size} bytes"));
    }
    let mime = issued.ticket.mime_type.clone();
    let inline = query.is_some_and(|q| q.split('&').any(|p| p == "inline" || p.starts_with("inline="))) && mime.starts_with("image/");
    let name = issued.ticket.file_name.clone();
    let sha256 = hex::encode(&issued.ticket.sha256);
    let (mut writer, reader) = tokio::io::duplex(DOWNLOAD_BUFFER);
    tokio::spawn(async move {
        if let Err(e) = issued.client.download_into(&issued.ticket, offset, &mut writer, &mut |_| {}).await {
            // The status line has gone out: the body ends short of its Content-Length,
            // which the browser reports as a failed download (and may resume).
            tracing::debug!(error = %e, "a download ended early");
        }
    });
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(reader)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size - offset));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, disposition(if inline { "inline" } else { "attachment" }, &name));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    // Whatever the file holds, it runs nothing in the app's origin.
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'"));
    h.insert("x-legalchat-sha256", HeaderValue::from_str(&sha256).unwrap_or(HeaderValue::from_static("")));
    if offset > 0 {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let range = format!("bytes {offset}-{}/{size}", size.saturating_sub(1));
        response.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("")));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_safely_in_content_disposition() {
        let d = disposition("attachment", "Schriftsatz \"final\" – Müller.pdf");
        assert_eq!(
            d.to_str().unwrap(),
            "attachment; filename=\"Schriftsatz _final_ _ M_ller.pdf\"; filename*=UTF-8''Schriftsatz%20%22final%22%20%E2%80%93%20M%C3%BCller.pdf"
        );
    }

    #[test]
    fn ranges_and_statuses() {
        let mut h = HeaderMap::new();
        assert_eq!(range_start(&h), Ok(None));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=100-"));
        assert_eq!(range_start(&h), Ok(Some(100)));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-99"));
        assert_eq!(range_start(&h), Err(()));
        assert_eq!(status("RATE_LIMITED"), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status("FORBIDDEN"), StatusCode::FORBIDDEN);
        assert_eq!(status("INVALID_ARGUMENT"), StatusCode::BAD_REQUEST);
    }
}
