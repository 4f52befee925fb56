//! Mounting, the power cut and unmounting, for tests and for the binary.
//!
//! ```text
//!  PowercutMount::mount(mountpoint, backing, model)   loads the backing dir, mounts
//!     │  pending() · sync()                            what is cached · make it durable
//!     ├─ power_cut() → Pending   drop the cache (EIO from then on), unmount: the backing
//!     │                          dir holds exactly what was durable; mount again to "boot"
//!     ├─ unmount()               a clean shutdown: everything synced, then unmounted
//!     └─ drop                    a power cut, quietly (so a failing test leaves no mount)
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption};

use crate::disk::BackingDir;
use crate::fuse::{PowercutFs, Shared};
use crate::volume::{Pending, SyncModel, Volume, VolumeError};

/// How long the FUSE session may take to end after the unmount.
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(20);

/// Why mounting, syncing or unmounting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// FUSE cannot be used on this machine (the reason says what is missing).
    #[error("FUSE is not available: {0}")]
    Unavailable(String),
    /// The backing directory could not be read.
    #[error("loading {path}: {source}")]
    Load {
        /// The backing directory.
        path: PathBuf,
        /// What failed.
        source: VolumeError,
    },
    /// The kernel refused the mount.
    #[error("mounting {path}: {source}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Making the cache durable failed.
    #[error("syncing: {0}")]
    Sync(VolumeError),
    /// The filesystem could not be unmounted, or its session did not end.
    #[error("unmounting {path}: {reason}")]
    Unmount {
        /// The mountpoint.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Why FUSE cannot be used here, or `None` when it can: `/dev/fuse` must open, and
/// `fusermount3` (Debian package `fuse3`) must be installed.
pub fn fuse_unavailable() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        return Some(format!("/dev/fuse cannot be opened ({e}); FUSE needs the fuse kernel module and, in a container, the device"));
    }
    if find_program("fusermount3").is_none() {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// A mounted power-cut filesystem.
#[derive(Debug)]
pub struct PowercutMount {
    mountpoint: PathBuf,
    /// The mountpoint as the mount table names it.
    canonical: PathBuf,
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
}

impl PowercutMount {
    /// Mounts a filesystem on `mountpoint` over the backing directory `backing` (whose
    /// content is taken as durable), with names made durable as `model` says.
    pub fn mount(mountpoint: &Path, backing: &Path, model: SyncModel) -> Result<Self, MountError> {
        if let Some(reason) = fuse_unavailable() {
            return Err(MountError::Unavailable(reason));
        }
        let load_err = |source| MountError::Load { path: backing.to_owned(), source };
        let disk = BackingDir::open(backing).map_err(|e| load_err(e.into()))?;
        let meta = std::fs::metadata(backing).map_err(|e| load_err(e.into()))?;
        let owner = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.uid(), meta.gid())
        };
        let volume = Volume::load(disk, model, owner).map_err(load_err)?;
        let canonical = mountpoint.canonicalize().map_err(|source| MountError::Mount { path: mountpoint.to_owned(), source })?;
        let shared = Shared::new(volume, backing.to_owned());
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("legalchat-powercut".into()), MountOption::Subtype("powercut".into())];
        let session = fuser::spawn_mount(PowercutFs::new(shared.clone()), mountpoint, &config)
            .map_err(|source| MountError::Mount { path: mountpoint.to_owned(), source })?;
        Ok(Self { mountpoint: mountpoint.to_owned(), canonical, shared, session: Some(session) })
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What is cached and not durable (`None` after the cut).
    pub fn pending(&self) -> Option<Pending> {
        self.shared.lock().volume.as_ref().map(Volume::pending)
    }

    /// The live paths of what is not durable, with the bytes not synced (`None` after
    /// the cut).
    pub fn pending_paths(&self) -> Option<Vec<(PathBuf, u64)>> {
        self.shared.lock().volume.as_ref().map(Volume::pending_paths)
    }

    /// Makes everything durable, as sync(1) would.
    pub fn sync(&self) -> Result<(), MountError> {
        match self.shared.lock().volume.as_mut() {
            Some(v) => v.sync_all().map_err(MountError::Sync),
            None => Ok(()),
        }
    }

    /// The power cut: every change not made durable is dropped, from now on the
    /// filesystem answers EIO, and it is unmounted. Returns what was lost. The backing
    /// directory holds exactly what was durable; mount it again to "boot".
    pub fn power_cut(mut self) -> Result<Pending, MountError> {
        let lost = self.cut();
        self.unmount_now()?;
        Ok(lost)
    }

    /// A clean shutdown: everything is synced, then unmounted.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.sync()?;
        self.cut();
        self.unmount_now()
    }

    fn cut(&mut self) -> Pending {
        match self.shared.lock().volume.take() {
            Some(v) => v.power_cut().1,
            None => Pending::default(),
        }
    }

    fn unmount_now(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let fail = |reason: String| MountError::Unmount { path: self.mountpoint.clone(), reason };
        let plain = Command::new("fusermount3").arg("-u").arg(&self.mountpoint).output();
        if !plain.as_ref().is_ok_and(|o| o.status.success()) && self.is_mounted() {
            // Busy: a process still has a file open there (the daemon of a test that
            // ended without stopping it). A forced unmount aborts the FUSE connection
            // (root only; otherwise it fails and changes nothing), so that the session
            // ends and those processes get errors, as after a real power cut; a lazy
            // unmount then detaches the mountpoint if the forced one could not.
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_FORCE);
            if self.is_mounted() {
                let lazy = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.mountpoint).output();
                match lazy {
                    Ok(o) if o.status.success() || !self.is_mounted() => {}
                    Ok(o) => return Err(fail(format!("fusermount3 -u -z: {}", String::from_utf8_lossy(&o.stderr).trim()))),
                    Err(e) => return Err(fail(format!("running fusermount3: {e}"))),
                }
            }
        }
        // The session thread ends when the kernel closes the connection; bounded, so that
        // a test cannot hang here.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(session.join());
        });
        match done_rx.recv_timeout(SESSION_END_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(format!("the FUSE session ended with an error: {e}"))),
            Err(_) => Err(fail(format!("the FUSE session did not end within {SESSION_END_TIMEOUT:?} of the unmount"))),
        }
    }

    /// Whether the mountpoint is (still) a mount of this process's mount namespace.
    fn is_mounted(&self) -> bool {
        let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return true };
        let Some(mountpoint) = self.canonical.to_str() else { return true };
        // Field 5 is the mount point, with spaces and the like escaped as octal.
        let escaped = mountpoint.replace('\\', "\\134").replace(' ', "\\040").replace('\t', "\\011").replace('\n', "\\012");
        table.lines().any(|line| line.split(' ').nth(4) == Some(escaped.as_str()))
    }
}

impl Drop for PowercutMount {
    fn drop(&mut self) {
        if self.session.is_some() {
            self.cut();
            if let Err(e) = self.unmount_now() {
                eprintln!("legalchat-powercut: {e}");
            }
        }
    }
}
