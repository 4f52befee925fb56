//! # legalchat-protocol
//!
//! The LegalChat v1 wire contract, shared by the daemon (`legalchatd`) and every client.
//! A third party can write a client from this crate's `.proto` file
//! (`proto/legalchat/v1/chat.proto`, compiled into [`pb`]) and the rules below.
//!
//! ```text
//!  client                                         server
//!    │ QUIC, ALPN "legalchat/1", one bidi stream    │
//!    │ ── [len:u32 BE][ClientFrame{Authenticate}] ─►│
//!    │ ◄──────── [len][ServerFrame{Ack{authenticated}}]
//!    │ ── [len][ClientFrame{request_id, SendMessage}]►│  validate, sequence,
//!    │                                              │  commit (fsync), then:
//!    │ ◄──────── [len][ServerFrame{Ack{message_accepted}}]
//!    │ ◄──────── [len][ServerFrame{ReceiveMessage}] (to every participant's devices)
//! ```
//!
//! What is here:
//! - [`pb`]: the generated protobuf types (`ClientFrame`, `ServerFrame`, ...).
//! - [`codec`]: the length-prefixed frame codec. It checks a frame's length against a
//!   maximum *before* allocating, treats "not enough bytes yet" as a normal outcome, and
//!   rejects trailing bytes.
//! - [`validate`]: limits and identifier formats both ends enforce (10 KiB text,
//!   id alphabets, page sizes).
//! - [`richtext`]: the Markdown subset of message text and the mentions in it; with the
//!   `html` feature (off by default), its rendering to sanitised HTML.
//!
//! What is not here: sockets, async runtimes, clocks, storage. This crate does no IO, so
//! everything in it is tested with plain values.

pub mod codec;
pub mod files;
pub mod net;
pub mod richtext;
pub mod time;
pub mod validate;

/// Generated protobuf types of `legalchat.v1` (see `proto/legalchat/v1/chat.proto`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/legalchat.v1.rs"));
}

/// The ALPN protocol id a LegalChat QUIC connection negotiates.
pub const ALPN: &[u8] = b"legalchat/1";

/// Name of the protocol version, for logs and `--version` output.
pub const PROTOCOL_VERSION: &str = "legalchat/1";
