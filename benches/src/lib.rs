//! # legalchat-benches
//!
//! Measurement tools for LegalChat, and the small harness they share with the end-to-end
//! tests (`legalchat-tests`):
//!
//! ```text
//!  legalchat-load ──┐                       ┌──► legalchatd (child process, temp data dir)
//!  e2e tests ───────┼─► DaemonProcess ──────┤      stdout: "legalchatd ready quic=… ops=…"
//!                   │                       └──► stderr → <data dir>/../legalchatd.stderr.log
//!                   └─► TokenMinter ── HS256 JWTs {sub, role, iat, exp} for any user
//!
//!  reference peer:  PeerProcess ──► node peers/socketio/server.js (Socket.IO 4.8, in memory)
//!                   SioClient ──── Socket.IO over WebSocket ──► stdout: {"ready":true,"port":…}
//! ```
//!
//! - [`daemon_process`]: start `legalchatd` on loopback ports chosen by the OS, wait for its
//!   ready line, stop it gracefully (SIGTERM) or brutally (SIGKILL) and start it again on the
//!   same data dir.
//! - [`tokens`]: mint the HS256 tokens the daemon accepts, given its shared secret.
//! - [`peer_process`]: start the Socket.IO reference peer (`benches/peers/socketio`, the
//!   Node.js server the issue compares against) and wait for its ready line.
//! - [`sio`]: a minimal Socket.IO 4 client (WebSocket transport only) that drives the peer
//!   with the same events as the daemon's scenarios (`join_room`, `send_message` with ack,
//!   `receive_message`).
//! - [`load`]: the open-loop load generator and its scenarios (seed, max ingest, max
//!   fan-out, idle sessions, reconnect storm), against `legalchatd` or the Node.js
//!   Socket.IO peer; `src/bin/legalchat-load.rs` is its command line (see
//!   `benches/README.md`), and an end-to-end test runs it in-process.
//! - [`probe`]: CPU time and memory of a process, read from `/proc`.
//! - `benches/codec.rs`: criterion benchmarks of the frame codec.
//!
//! What is not here: assertions about timings. Benchmarks measure; `BENCHMARKS.md` records.
//! The harness lives here rather than in `legalchat-tests` so that the load generator does
//! not have to build the daemon (and RocksDB) to link against it.

pub mod bridge_process;
pub mod daemon_process;
pub mod load;
pub mod peer_process;
pub mod probe;
pub mod sio;
pub mod tokens;
