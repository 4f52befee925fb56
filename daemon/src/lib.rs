//! # legalchat-daemon
//!
//! `legalchatd`, the LegalChat server: authenticated sessions over QUIC, conversations
//! sharded across per-core threads, messages sequenced, committed to RocksDB in group
//! commits, encrypted at rest, and fanned out to every connected device.
//!
//! ```text
//!  QUIC endpoint ──► connection task ──► session (auth, outbound queue)   [session.rs]
//!                                            │ requests::plan → Plan         [requests/]
//!                                            │ bounded mailbox
//!                                            ▼
//!                         shard k = hash(conversation) % shards           [shard.rs]
//!                (membership, sequencing, group commit, fan-out)
//!                                            │
//!                                            ▼
//!                      Store trait ─► RocksDB column families             [store/]
//!                      (bodies sealed with AES-256-GCM)                   [crypto.rs]
//! ```
//!
//! Store reads that no shard owns run in the bounded [`storage_pool`]; no storage IO runs
//! on the async runtime's workers.
//!
//! Around the message path: receipts (delivery and read positions, durable), catch-up
//! after a disconnect, rooms with typing and online lists ([`realtime`]), presence, push
//! notifications for users with no connected device ([`push`]), and attachments on
//! transfer streams of their own ([`files`]).
//!
//! What it does not do (yet): search; multi-node operation. The seams for them are the [`requests::Plan`] and
//! [`shard::Command`] enums and the [`store::Write`] enum.
//!
//! The binary is a thin shell over [`cli::main`]; [`server::Daemon`] can also be started
//! in-process (the load generator does).

pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod files;
mod fsutil;
pub mod ids;
pub mod limits;
pub mod ops;
pub mod outbound;
pub mod policy;
pub mod push;
pub mod realtime;
pub mod registry;
pub mod requests;
pub mod server;
pub mod session;
pub mod shard;
pub mod shares;
pub mod storage_pool;
pub mod store;
pub mod streams;
pub mod tls;

pub use config::Config;
pub use server::Daemon;
