//! # legalchat-sdk
//!
//! The Rust client library for LegalChat, the firm's secure chat server. Native apps embed
//! it to talk to `legalchatd`; the `legalchat` command-line client is built on it.
//!
//! ```text
//!   your app                       legalchat-sdk                          legalchatd
//!  ──────────                ─────────────────────────                    ──────────
//!  client.send_text() ──► validate ─► encode ─► [writer task] ══ QUIC ══►
//!        ▲                   pending requests           (one bidi stream,
//!        │ Sent / Error ◄── (by request id) ◄┐           TLS 1.3, ALPN legalchat/1)
//!        │                                   ├── [reader task] ◄═════════
//!  client.next_event() ◄── bounded event queue ◄┘   Ack/Error → request
//!                                                   ReceiveMessage, ... → event
//! ```
//!
//! What it does:
//! - connects over QUIC, trusting only the CA certificates you give it, and authenticates
//!   with a bearer token ([`Client::connect`]);
//! - sends requests concurrently on one session stream and matches each answer to its
//!   request, with a timeout per request ([`Client::send_text`], [`Client::history`], ...);
//! - checks arguments against the protocol's rules before sending, so a mistake is an
//!   [`Error::Invalid`] naming the field rather than a round trip;
//! - queues events (new messages, conversation changes) in a bounded queue for
//!   [`Client::next_event`]; a slow reader slows the server down instead of growing memory.
//!
//! What it does not do:
//! - reconnect: when the session ends, [`Event::Closed`] says why; connect again and
//!   catch up with [`HistoryCursor::After`] from the last seq you saw per conversation;
//! - store anything: no cache, no offline queue, no keys on disk;
//! - retry: a send that timed out may or may not have been stored. Retry it with
//!   [`Client::send`] and the *same* client message id; the server stores it once;
//! - render: message text is UTF-8 as the sender typed it (Markdown when
//!   [`pb::TextFormat::Markdown`]), and must be displayed without interpreting raw HTML.
//!
//! ## Quick start
//!
//! ```no_run
//! use legalchat_sdk::{Client, ClientConfig, Event, HistoryCursor, NewConversation};
//!
//! # async fn demo() -> Result<(), legalchat_sdk::Error> {
//! let config = ClientConfig::new("127.0.0.1:7443".parse().unwrap(), std::env::var("LEGALCHAT_TOKEN").unwrap_or_default())
//!     .with_ca_file("legalchat-data/tls/cert.pem")?
//!     .with_server_name("localhost");
//! let client = Client::connect(config).await?;
//! println!("signed in as {} ({:?})", client.user_id(), client.role());
//!
//! let team = client
//!     .create_conversation(NewConversation::case("C-2024-017", "Estate of Smith", vec!["bob".into()]))
//!     .await?;
//! let sent = client.send_text(&team.id, "Draft will is uploaded for review.").await?;
//! println!("stored as #{}", sent.seq);
//!
//! let page = client.history(&team.id, HistoryCursor::Latest, 20).await?;
//! for m in &page.messages {
//!     println!("#{} {}: {}", m.seq, m.sender_id, m.content.as_ref().map_or("", |c| c.text.as_str()));
//! }
//!
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Message(m) => println!("{} in {}", m.sender_id, m.conversation_id),
//!         Event::Closed { reason } => println!("session over: {reason}"),
//!         _ => {}
//!     }
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! All async functions need a tokio runtime (with the `time` and `net` drivers enabled).

mod client;
mod config;
mod error;
mod session;
pub mod tls;
mod types;

pub use legalchat_protocol::pb;
pub use legalchat_protocol::validate::ValidationError;

pub use client::Client;
pub use config::{
    ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENT_BUFFER, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_INBOUND_FRAME, DEFAULT_REQUEST_TIMEOUT,
};
pub use error::{Error, Result};
pub use session::SessionInfo;
pub use types::{Event, HistoryCursor, NewConversation, Sent, new_client_message_id};
