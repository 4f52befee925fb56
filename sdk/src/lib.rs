//! # legalchat-sdk
//!
//! The Rust client library for LegalChat, the firm's secure chat server. Native apps embed
//! it to talk to `legalchatd`; the `legalchat` command-line client is built on it.
//!
//! ```text
//!   your app                        legalchat-sdk                                   legalchatd
//!  ──────────        ─────────────────────────────────────────────                  ──────────
//!  send_text() ──► outbox (bounded) ──► [writer task] ═══════ QUIC, TLS 1.3, ══════►
//!      ▲ Sent ◄──── answered by request id ◄┐                  ALPN legalchat/1
//!      │                                    ├── [reader task] ◄═══════════════════════
//!  next_event() ◄── event queue ◄── inbox ◄─┘   per conversation: seq order, no gaps,
//!                   (bounded)      (cursors)    no duplicates; gaps fetched
//!                      ▲
//!                      └── [supervisor] connection lost ─► backoff ─► reconnect ─►
//!                          resend outbox ─► CatchUp pages ─► receipts ─► Resumed ─► live
//! ```
//!
//! What it does:
//! - connects over QUIC, trusting only the CA certificates you give it, and authenticates
//!   with a bearer token ([`Client::connect`], which fails fast: a bad token is
//!   [`Error::Unauthorized`] at once);
//! - **stays connected**: when the connection drops (network change, idle timeout, server
//!   restart, a `Goodbye`), it reconnects by itself with exponential backoff and jitter
//!   ([`ReconnectPolicy`]: 200 ms doubling up to 30 s, full jitter, forever by default) and
//!   reports each step as [`Event::State`] ([`ConnectionState`]). Only a token the server
//!   refuses on reconnecting, or a policy that gives up, ends the client
//!   ([`Event::Closed`]);
//! - **resumes without gaps or duplicates**: it keeps a cursor per conversation — the
//!   newest seq delivered to the app ([`Client::cursors`]). Messages reach the app only in
//!   seq order: an older seq is a duplicate and dropped, a seq beyond `cursor + 1` is held
//!   while the gap is fetched (`GetHistory{after_seq: cursor}`). After a reconnect it
//!   re-authenticates and catches up on *every* conversation in one chain of bounded
//!   `CatchUp` pages, delivers what was missed in order, then the delivery and read
//!   receipts that moved meanwhile, then [`ConnectionState::Resumed`], and only then the
//!   live events that arrived during the catch-up, through the same filter. Rooms the app
//!   joined are joined again. Apps that persist [`Client::cursors`] can resume a later run
//!   from them ([`ClientConfig::resume_cursors`]);
//! - **queues sends** in a bounded outbox ([`ClientConfig::outbox_capacity`], 1,000): a send
//!   made while disconnected, or in flight when the connection dropped, is (re)sent after
//!   reconnecting with the *same* client message id, in the original order, so the server
//!   stores it once; the call resolves with the server's acknowledgment (a retried one
//!   with `duplicate: true` and the original seq), or fails after
//!   [`ClientConfig::send_timeout`] — and is then never sent. The user's own messages
//!   from this client are reported by the send, never echoed back as events;
//! - **acknowledges delivery** automatically: after messages of others went to the app, it
//!   reports `MarkDelivered` for their conversation — at once after a quiet spell, then at
//!   most one report in flight and one per [`ClientConfig::delivery_report_interval`]
//!   (1 s) per conversation, each carrying the newest position, so that a busy group does
//!   not double the traffic. The senders get [`Event::Receipt`]s. [`Client::mark_read`]
//!   sets the read position;
//! - real-time signals: typing ([`Client::typing`]), rooms and who is in them
//!   ([`Client::join_room`], [`Event::RoomUsers`]), presence ([`Event::Presence`],
//!   [`Client::presence`]), receipts ([`Client::receipts`]), Web Push registration;
//! - checks arguments against the protocol's rules before sending, so a mistake is an
//!   [`Error::Invalid`] naming the field rather than a round trip;
//! - queues events in a bounded queue for [`Client::next_event`]; a slow reader slows the
//!   server down instead of growing memory (and a server that gives up on a slow reader
//!   is simply reconnected to and caught up with).
//!
//! What it does not do:
//! - store anything: no cache, no keys on disk, and the outbox and cursors live in memory
//!   (save [`Client::cursors`] yourself to resume across runs; a send not acknowledged
//!   when the app exits is lost to the app, though the server may have stored it);
//! - retry anything but sends: other requests in flight when the connection drops fail
//!   with [`Error::Disconnected`]; requests made while disconnected wait for the
//!   connection within their timeout;
//! - deliver history on its own: on a first connection it follows each conversation from
//!   its newest message (load older pages with [`Client::history`]); only conversations
//!   the user is added to later are delivered from their first message;
//! - render: message text is UTF-8 as the sender typed it (Markdown when
//!   [`pb::TextFormat::Markdown`]), and must be displayed without interpreting raw HTML.
//!
//! The logic that decides — cursors and gap filling (`inbox`), the outbox, receipts,
//! the backoff schedule ([`ReconnectPolicy::delay`]) and the client state that composes
//! them — does no IO and reads no clock; the async driver around it only moves bytes.
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
//!         // Per conversation in seq order, exactly once, across reconnects.
//!         Event::Message(m) => {
//!             println!("{} in {}", m.sender_id, m.conversation_id);
//!             client.mark_read(&m.conversation_id, m.seq).await?;
//!         }
//!         Event::Receipt(r) => println!("{} {:?} up to #{}", r.user_id, r.kind(), r.seq),
//!         Event::State(state) => println!("connection: {state}"),
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

mod carrier;
mod client;
mod config;
mod connection;
mod driver;
mod error;
mod fanout;
mod inbox;
mod outbox;
mod queue;
mod receipts;
mod reconnect;
mod session;
mod state;
pub mod timeline;
pub mod tls;
mod transfer;
mod types;

pub use legalchat_protocol::pb;
pub use legalchat_protocol::validate::ValidationError;

pub use carrier::{Transport, TransportPolicy};
pub use client::Client;
pub use config::{
    ClientConfig, ClientEndpoint, DEFAULT_CATCH_UP_PAGE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELIVERY_REPORT_INTERVAL, DEFAULT_EVENT_BUFFER,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_INBOUND_FRAME, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SEND_TIMEOUT, DEFAULT_TIMELINE_CAPACITY, MAX_CATCH_UP_PAGE, SharedConnection, TokenSource,
};
pub use error::{Error, Result};
pub use outbox::DEFAULT_OUTBOX_CAPACITY;
pub use reconnect::{DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, DEFAULT_MULTIPLIER, Jitter, ReconnectPolicy};
pub use session::SessionInfo;
pub use timeline::Timeline;
pub use transfer::{Downloaded, Progress, hash_file};
pub use types::{ConnectionState, ConversationUpdate, Event, HistoryCursor, NewConversation, Sent, new_client_message_id};
