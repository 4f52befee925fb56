//! End-to-end tests: real `legalchatd` processes on loopback, driven through the SDK and
//! through raw QUIC sessions. One binary for all of them (see `Cargo.toml`).
//!
//! Each test starts its own daemon in its own temporary directory, so tests run in
//! parallel without sharing state. Nothing here is skipped, with or without `CI=true`:
//! these tests need nothing beyond the Rust toolchain.

mod access;
mod attachments;
mod auth;
mod bad_frames;
mod conversations;
mod dedup;
mod durability;
mod encryption;
mod events;
mod lifecycle;
mod limits;
mod load;
mod messaging;
mod multiplex;
mod ops;
mod push;
mod realtime;
mod resume;
mod security;
mod tokens;
mod transport;
mod wire;

use legalchat_tests::TestDaemon;

/// This crate's copy of the daemon binary (`src/bin/legalchatd-test.rs`).
const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_legalchatd-test");

/// A daemon with the standard test arguments.
async fn daemon() -> TestDaemon {
    TestDaemon::start_with(DAEMON_BIN, &[]).await
}

/// A daemon with extra arguments.
async fn daemon_with(args: &[&str]) -> TestDaemon {
    TestDaemon::start_with(DAEMON_BIN, args).await
}
