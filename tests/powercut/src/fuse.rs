//! The FUSE adapter: kernel requests in, [`Volume`] calls, replies out.
//!
//! The kernel is left to do what it does locally without asking: POSIX and flock locks
//! (this filesystem does not ask for them, so the kernel keeps them itself — RocksDB's
//! LOCK file works), `access` (refused as unimplemented, so the kernel allows), lseek,
//! copy_file_range and xattrs (unimplemented: the kernel falls back or refuses). Writes
//! are not cached by the kernel (no writeback cache): each one reaches [`Volume::write`]
//! before the syscall returns, so the cache this filesystem keeps is the only one.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::disk::{BackingDir, Kind};
use crate::volume::{Attr, Ino, Volume, VolumeError};

/// How long the kernel may cache names and attributes. Every change passes through the
/// kernel, so its caches stay right; the power cut unmounts, which drops them all.
const TTL: Duration = Duration::from_secs(1);

/// `O_DSYNC` (part of `O_SYNC`): every write is synced, as by fdatasync.
const O_DSYNC: i32 = 0o10000;
/// `FALLOC_FL_KEEP_SIZE`.
const FALLOC_FL_KEEP_SIZE: i32 = 1;
/// `S_IFMT` and `S_IFREG`, for mknod.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

/// The state the filesystem and its controller share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    backing: PathBuf,
}

#[derive(Debug)]
pub(crate) struct State {
    /// `None` after the power cut: every request fails with EIO until the unmount.
    pub(crate) volume: Option<Volume<BackingDir>>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

#[derive(Debug)]
enum Handle {
    File {
        ino: Ino,
        sync_writes: bool,
    },
    /// A directory listing as it was at opendir, so that readdir's offsets stay stable.
    Dir {
        ino: Ino,
        entries: Vec<(OsString, Ino, Kind)>,
    },
}

impl Shared {
    pub(crate) fn new(volume: Volume<BackingDir>, backing: PathBuf) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State { volume: Some(volume), handles: HashMap::new(), next_fh: 1 }), backing })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the model suspect, but the filesystem must
        // keep answering (with errors) so that it can be unmounted.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The filesystem served to the kernel.
#[derive(Debug)]
pub struct PowercutFs {
    shared: Arc<Shared>,
}

impl PowercutFs {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn errno(op: &str, e: &VolumeError) -> Errno {
    match e {
        VolumeError::NotFound => Errno::ENOENT,
        VolumeError::Exists => Errno::EEXIST,
        VolumeError::NotDir => Errno::ENOTDIR,
        VolumeError::IsDir => Errno::EISDIR,
        VolumeError::NotEmpty => Errno::ENOTEMPTY,
        VolumeError::InvalidName => Errno::EINVAL,
        VolumeError::CrossDirectory => Errno::EXDEV,
        VolumeError::Reserved => Errno::EPERM,
        VolumeError::Disk(io) => {
            // The backing directory failed under the model: a bug or a full disk, either
            // worth seeing.
            eprintln!("legalchat-powercut: {op}: {e}");
            io.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
        }
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: match a.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    u16::try_from(mode & !umask & 0o7777).unwrap_or(0o644)
}

impl State {
    /// Runs `f` on the volume; after the power cut, EIO.
    fn with<T>(&mut self, op: &str, f: impl FnOnce(&mut Volume<BackingDir>) -> Result<T, VolumeError>) -> Result<T, Errno> {
        let volume = self.volume.as_mut().ok_or(Errno::EIO)?;
        f(volume).map_err(|e| errno(op, &e))
    }

    fn add_handle(&mut self, handle: Handle) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        FileHandle(fh)
    }
}

impl Filesystem for PowercutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.shared.lock().with("lookup", |v| v.lookup(parent.0, name)) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.lock().with("getattr", |v| v.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.shared.lock().with("setattr", |v| {
            if let Some(size) = size {
                v.set_size(ino.0, size)?;
            }
            if let Some(mode) = mode {
                v.set_perm(ino.0, perm(mode, 0))?;
            }
            if uid.is_some() || gid.is_some() {
                v.set_owner(ino.0, uid, gid)?;
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(t)) => v.set_mtime(ino.0, t)?,
                Some(TimeOrNow::Now) => v.set_mtime(ino.0, SystemTime::now())?,
                None => {}
            }
            v.attr(ino.0)
        });
        match result {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        if mode & S_IFMT != S_IFREG {
            // Regular files and directories only.
            return reply.error(Errno::EPERM);
        }
        match self.shared.lock().with("mknod", |v| v.create_file(parent.0, name, perm(mode, umask), (req.uid(), req.gid()))) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match self.shared.lock().with("mkdir", |v| v.create_dir(parent.0, name, perm(mode, umask), (req.uid(), req.gid()))) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.lock().with("unlink", |v| v.unlink(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.lock().with("rmdir", |v| v.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not modelled.
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.shared.lock().with("rename", |v| v.rename(parent.0, name, newparent.0, newname, no_replace)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.shared.lock();
        match state.with("open", |v| {
            if v.attr(ino.0)?.kind == Kind::Dir {
                return Err(VolumeError::IsDir);
            }
            v.open(ino.0)
        }) {
            Ok(()) => {
                let fh = state.add_handle(Handle::File { ino: ino.0, sync_writes: flags.0 & O_DSYNC != 0 });
                // No FOPEN_KEEP_CACHE: the kernel drops its page cache of the file on open.
                reply.opened(fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let mut state = self.shared.lock();
        let created = state.with("create", |v| {
            let a = v.create_file(parent.0, name, perm(mode, umask), (req.uid(), req.gid()))?;
            v.open(a.ino)?;
            Ok(a)
        });
        match created {
            Ok(a) => {
                let fh = state.add_handle(Handle::File { ino: a.ino, sync_writes: flags & O_DSYNC != 0 });
                reply.created(&TTL, &file_attr(&a), Generation(0), fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.shared.lock().with("read", |v| v.read(ino.0, offset, size)) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.shared.lock();
        let sync = flags.0 & O_DSYNC != 0 || matches!(state.handles.get(&fh.0), Some(Handle::File { sync_writes: true, .. }));
        match state.with("write", |v| {
            v.write(ino.0, offset, data)?;
            if sync { v.sync_file(ino.0) } else { Ok(()) }
        }) {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.lock();
        if let Some(Handle::File { ino, .. } | Handle::Dir { ino, .. }) = state.handles.remove(&fh.0)
            && let Some(v) = state.volume.as_mut()
        {
            v.release(ino);
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // fdatasync makes the bytes and the size durable, which is all fsync adds here
        // (timestamps are not modelled).
        match self.shared.lock().with("fsync", |v| v.sync_file(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.shared.lock();
        let listing = state.with("opendir", |v| {
            let parent = v.parent(ino.0);
            let mut entries = vec![(OsString::from("."), ino.0, Kind::Dir), (OsString::from(".."), parent, Kind::Dir)];
            entries.extend(v.readdir(ino.0)?.into_iter().map(|e| (e.name, e.ino, e.kind)));
            v.open(ino.0)?;
            Ok(entries)
        });
        match listing {
            Ok(entries) => {
                let fh = state.add_handle(Handle::Dir { ino: ino.0, entries });
                reply.opened(fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.shared.lock();
        let Some(Handle::Dir { entries, .. }) = state.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, ino, kind)) in entries.iter().enumerate().skip(from) {
            let kind = if *kind == Kind::Dir { FileType::Directory } else { FileType::RegularFile };
            // The offset of an entry is where the next readdir resumes.
            if reply.add(INodeNo(*ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, req: &Request, ino: INodeNo, fh: FileHandle, flags: OpenFlags, reply: ReplyEmpty) {
        self.release(req, ino, fh, flags, None, false, reply);
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.shared.lock().with("fsyncdir", |v| v.sync_dir(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The backing directory's filesystem: free space is real.
        match nix::sys::statvfs::statvfs(&self.shared.backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                u32::try_from(s.block_size()).unwrap_or(4096),
                u32::try_from(s.name_max()).unwrap_or(255),
                u32::try_from(s.fragment_size()).unwrap_or(4096),
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        // RocksDB preallocates its log and table files with FALLOC_FL_KEEP_SIZE.
        let keep_size = match mode {
            0 => false,
            FALLOC_FL_KEEP_SIZE => true,
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        match self.shared.lock().with("fallocate", |v| v.allocate(ino.0, offset, length, keep_size)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
