//! # legalchat-powercut
//!
//! A FUSE filesystem for tests that loses, on command, everything that was not made
//! durable — a power cut — and the end-to-end tests that run `legalchatd` on it.
//!
//! ```text
//!  legalchatd, RocksDB ──syscalls──► kernel (FUSE) ──► PowercutFs (fuse.rs)
//!                                                        │
//!                                                        ▼
//!                      Volume (volume.rs): the live state; writes, truncations and
//!                      name changes wait in memory (the "volatile cache")
//!                                                        │ fsync / fdatasync / fsync(dir)
//!                                                        ▼
//!                      Disk (disk.rs): the backing directory = exactly what is durable
//!
//!  PowercutMount::power_cut() (mount.rs): the cache is dropped, the filesystem unmounted;
//!  mounting the backing directory again is the reboot.
//! ```
//!
//! The model ([`SyncModel`]): a file's bytes and size become durable only when that file
//! is fsynced or fdatasynced (or written with `O_DSYNC`/`O_SYNC`); nothing is written
//! back on its own, as if the cut always came before the kernel's writeback. Names
//! (create, mkdir, rename, unlink, rmdir) become durable
//! - in [`SyncModel::Journal`] (the default, ext4 `data=ordered`): at the next fsync or
//!   fdatasync of anything, all of them, in order, as jbd2 commits its running
//!   transaction; a truncation likewise;
//! - in [`SyncModel::Posix`]: when their directory is fsynced, and only then.
//!
//! What it does not model: timestamps and ownership (kept, never lost), hard and
//! symbolic links (refused with EPERM), directories moved to another parent (refused
//! with EXDEV; files move freely), torn writes (a synced write is whole), ext4's
//! `auto_da_alloc` heuristics (which only ever keep more), and the host's own
//! durability (the backing directory is never fsynced: the cut is the model's).
//!
//! Locks are left to the kernel (the filesystem does not ask for them), so fcntl and
//! flock locks work within the machine, which is all RocksDB's LOCK file needs.

pub mod disk;
pub mod extents;
mod fuse;
pub mod mount;
pub mod volume;

pub use disk::{BackingDir, Disk, Kind, MemDisk};
pub use mount::{MountError, PowercutMount, fuse_unavailable};
pub use volume::{Pending, SyncModel, Volume, VolumeError};

/// For tests that need FUSE: `Some(reason)` when it is missing here, after printing
/// `skipped: <reason>`; under `CI=true` a missing FUSE is a failure instead (CI installs
/// `fuse3`), so that the tests cannot silently stop running there.
pub fn skip_without_fuse(test: &str) -> Option<String> {
    let reason = fuse_unavailable()?;
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: FUSE is required under CI=true: {reason}");
    }
    eprintln!("skipped: {test}: {reason}");
    Some(reason)
}
