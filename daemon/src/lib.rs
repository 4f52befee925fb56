//! # legalchat-daemon
//!
//! `legalchatd`, the LegalChat server: authenticated sessions over QUIC, conversations
//! sharded across per-core threads, messages sequenced, committed to RocksDB in group
//! commits, encrypted at rest, and fanned out to every connected device.
//!
//! ```text
//!  QUIC endpoint ──► connection task ──► session (auth, outbound queue)   [session.rs]
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
//! What it does not do (yet): typing indicators, presence, receipts and resume; edits,
//! reactions and search; attachments; the Socket.IO bridge; multi-node operation. The
//! seams for them are the [`shard::Command`] enum, the [`store::Write`] enum and the
//! `read_states` family.
//!
//! The binary is a thin shell over [`cli::main`]; [`server::Daemon`] can also be started
//! in-process (the load generator does).

pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod directory;
mod fsutil;
pub mod ids;
pub mod ops;
pub mod policy;
pub mod registry;
pub mod server;
pub mod session;
pub mod shard;
pub mod store;
pub mod tls;

pub use config::Config;
pub use server::Daemon;
