//! The model: a filesystem whose changes stay in a volatile cache until they are synced,
//! over a [`Disk`] that holds exactly what was made durable. No FUSE here: every
//! operation is a method, and the tests drive it directly.
//!
//! ```text
//!   write / create / rename / unlink / truncate ──► the cache (this struct, in memory):
//!                                                   what everyone sees, reads included
//!   fsync(file) ──► that file's bytes and size ─────┐
//!   fsync(dir)  ──► that directory's names ─────────┼──► the Disk (= what survives)
//!   (journal model: any fsync ─► every name) ───────┘
//!   power_cut() ──► the cache is dropped; the Disk is what is left
//! ```
//!
//! Each inode has a *live* state (what the running system sees) and a *durable* state
//! (what the disk holds): for a file, its durable bytes are its bytes on the disk, plus,
//! in memory, the writes not yet synced ([`PendingWrites`]) and how far a truncation has
//! cut into the durable bytes (`kept`); for a directory, its live names and its durable
//! names. An inode's durable place on the disk follows from the durable names alone: a
//! file fsynced before any of its names is durable keeps its durable bytes in memory
//! (`orphan`) until a directory sync gives it a place — and loses them in a power cut,
//! as fsck would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::disk::{Disk, Kind};
use crate::extents::PendingWrites;

/// An inode number. Numbers are never reused while a volume lives.
pub type Ino = u64;

/// The root directory's inode number (FUSE's).
pub const ROOT: Ino = 1;

/// Pseudo-inode of the stash: a directory on the disk where a sync parks the subtrees it
/// moves, for the length of one sync (see [`Volume::sync_dir`]).
const STASH: Ino = 0;

/// The stash's name in the disk's root; reserved, so nobody can create it.
pub const STASH_NAME: &str = ".powercut-stash";

/// When changes to names (create, mkdir, rename, unlink, rmdir) become durable.
///
/// In both models a file's bytes and size become durable only by an fsync or fdatasync
/// of that file (writeback never happens on its own: the cut comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncModel {
    /// ext4 with `data=ordered`, as its journal behaves: every fsync or fdatasync commits
    /// the running transaction, i.e. *every* change to names made before it, in every
    /// directory, and every truncation; a rename is atomic.
    #[default]
    Journal,
    /// What POSIX promises and no more: a name is durable once its directory is fsynced
    /// (fsync of a file makes its bytes durable, not its name). A program that keeps its
    /// data under this model keeps it on every Linux filesystem.
    Posix,
}

impl std::str::FromStr for SyncModel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "journal" | "ext4" => Ok(Self::Journal),
            "posix" => Ok(Self::Posix),
            other => Err(format!("unknown sync model {other:?} (journal or posix)")),
        }
    }
}

/// Why an operation failed; the FUSE adapter answers each with an errno.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// No such file or directory (or a stale inode).
    #[error("no such file or directory")]
    NotFound,
    /// The name exists.
    #[error("the name exists")]
    Exists,
    /// A directory was expected.
    #[error("not a directory")]
    NotDir,
    /// A file was expected.
    #[error("is a directory")]
    IsDir,
    /// The directory has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// A name that cannot be a file name (empty, `.`, `..`, or with a `/`).
    #[error("invalid name")]
    InvalidName,
    /// A directory may be renamed within its parent only (a move elsewhere is refused
    /// with EXDEV, which programs answer by copying).
    #[error("directories are renamed within their parent only")]
    CrossDirectory,
    /// The name is the filesystem's own.
    #[error("{STASH_NAME} is reserved for the filesystem")]
    Reserved,
    /// The disk failed.
    #[error("disk: {0}")]
    Disk(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, VolumeError>;

/// Attributes of an inode, as `stat` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes (live).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Names of this inode (files: 1, or 0 once unlinked); directories: 2 + subdirectories.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last change of content.
    pub mtime: SystemTime,
    /// Last change of content or attributes.
    pub ctime: SystemTime,
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: OsString,
    /// Its inode.
    pub ino: Ino,
    /// File or directory.
    pub kind: Kind,
}

/// What is not durable yet (and what a power cut loses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pending {
    /// Files whose bytes, size or permissions differ from the disk.
    pub files: u64,
    /// Bytes written and not synced.
    pub bytes: u64,
    /// Directory entries (name → inode) that differ between the live and the durable state.
    pub names: u64,
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "files={} bytes={} names={}", self.files, self.bytes, self.names)
    }
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    perm: u16,
    durable_perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Live parent and name; `None` for the root and for unlinked inodes.
    live: Option<(Ino, OsString)>,
    /// Durable parent and name ([`STASH`] during a sync); `None` when no name is durable.
    durable: Option<(Ino, OsString)>,
    /// Directories: live names.
    entries: BTreeMap<OsString, Ino>,
    /// Directories: durable names.
    durable_entries: BTreeMap<OsString, Ino>,
    /// Files: live size.
    size: u64,
    /// Files: how many of the durable bytes are still visible (a truncation cuts this).
    kept: u64,
    /// Files: length of the durable bytes.
    durable_len: u64,
    /// Files: writes not yet synced.
    pending: PendingWrites,
    /// Files: the durable bytes while the inode has no place on the disk.
    orphan: Vec<u8>,
    /// Open handles (FUSE open/create/opendir minus release).
    open: u32,
}

impl Node {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32, now: SystemTime) -> Self {
        Self {
            kind,
            perm,
            durable_perm: perm,
            uid,
            gid,
            mtime: now,
            ctime: now,
            live: None,
            durable: None,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            size: 0,
            kept: 0,
            durable_len: 0,
            pending: PendingWrites::default(),
            orphan: Vec::new(),
            open: 0,
        }
    }

    fn data_is_synced(&self) -> bool {
        self.pending.is_empty() && self.kept == self.durable_len && self.size == self.durable_len && self.perm == self.durable_perm
    }
}

fn index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn check_name(name: &OsStr) -> Result<()> {
    let bytes = name.as_encoded_bytes();
    if bytes.is_empty() || name == "." || name == ".." || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(VolumeError::InvalidName);
    }
    Ok(())
}

/// The live filesystem: a volatile cache over a [`Disk`].
#[derive(Debug)]
pub struct Volume<D: Disk> {
    disk: D,
    model: SyncModel,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// Directories whose names may differ from the disk's.
    dirty_dirs: BTreeSet<Ino>,
    /// Files whose bytes, size or permissions may differ from the disk's.
    dirty_files: BTreeSet<Ino>,
    /// Inodes parked in the stash by the current sync.
    stashed: BTreeSet<Ino>,
}

impl<D: Disk> Volume<D> {
    /// Reads the disk's tree (everything on it is durable) and starts with an empty cache.
    /// Inodes loaded from the disk belong to `owner` (uid, gid). A stash left by a sync
    /// that was interrupted is removed: it holds nothing durable.
    pub fn load(mut disk: D, model: SyncModel, owner: (u32, u32)) -> Result<Self> {
        let root_stat = disk.stat(Path::new(""))?;
        if root_stat.kind != Kind::Dir {
            return Err(VolumeError::NotDir);
        }
        if disk.stat(Path::new(STASH_NAME)).is_ok() {
            disk.remove(Path::new(STASH_NAME))?;
        }
        let root = Node::new(Kind::Dir, root_stat.perm, owner.0, owner.1, root_stat.mtime);
        let mut me = Self {
            disk,
            model,
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            dirty_dirs: BTreeSet::new(),
            dirty_files: BTreeSet::new(),
            stashed: BTreeSet::new(),
        };
        me.load_dir(ROOT, PathBuf::new(), owner)?;
        Ok(me)
    }

    fn load_dir(&mut self, dir: Ino, path: PathBuf, owner: (u32, u32)) -> Result<()> {
        let mut names = self.disk.list(&path)?;
        names.sort();
        for name in names {
            let child_path = path.join(&name);
            let stat = self.disk.stat(&child_path)?;
            let ino = self.next_ino;
            self.next_ino += 1;
            let mut node = Node::new(stat.kind, stat.perm, owner.0, owner.1, stat.mtime);
            node.live = Some((dir, name.clone()));
            node.durable = Some((dir, name.clone()));
            if stat.kind == Kind::File {
                (node.size, node.kept, node.durable_len) = (stat.len, stat.len, stat.len);
            }
            self.nodes.insert(ino, node);
            let parent = self.node_mut(dir)?;
            parent.entries.insert(name.clone(), ino);
            parent.durable_entries.insert(name, ino);
            if stat.kind == Kind::Dir {
                self.load_dir(ino, child_path, owner)?;
            }
        }
        Ok(())
    }

    /// The sync model.
    pub fn model(&self) -> SyncModel {
        self.model
    }

    /// The disk (the durable state).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The power cut: the cache is gone; returns the disk, which holds exactly what was
    /// durable, and what was lost.
    pub fn power_cut(self) -> (D, Pending) {
        let lost = self.pending();
        (self.disk, lost)
    }

    /// What is not durable yet.
    pub fn pending(&self) -> Pending {
        let mut p = Pending::default();
        for ino in &self.dirty_files {
            if let Some(n) = self.nodes.get(ino)
                && !n.data_is_synced()
            {
                p.files += 1;
                p.bytes += n.pending.bytes();
            }
        }
        for ino in &self.dirty_dirs {
            if let Some(n) = self.nodes.get(ino) {
                let differ = |a: &BTreeMap<OsString, Ino>, b: &BTreeMap<OsString, Ino>| {
                    a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count() as u64
                };
                p.names += differ(&n.entries, &n.durable_entries) + differ(&n.durable_entries, &n.entries);
            }
        }
        p
    }

    /// The live paths of what is not durable yet, each with the bytes written and not
    /// synced (directories: 0), for reports.
    pub fn pending_paths(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        for ino in &self.dirty_files {
            if let Some(n) = self.nodes.get(ino)
                && !n.data_is_synced()
                && let Some(path) = self.live_path(*ino)
            {
                out.push((path, n.pending.bytes()));
            }
        }
        for ino in &self.dirty_dirs {
            if let Some(n) = self.nodes.get(ino)
                && n.entries != n.durable_entries
                && let Some(path) = self.live_path(*ino)
            {
                out.push((path, 0));
            }
        }
        out.sort();
        out
    }

    fn live_path(&self, ino: Ino) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let (parent, name) = self.nodes.get(&at)?.live.as_ref()?;
            names.push(name);
            at = *parent;
            if names.len() > self.nodes.len() {
                return None;
            }
        }
        Some(names.iter().rev().collect())
    }

    // ───────────────────────────── looking ─────────────────────────────

    fn node(&self, ino: Ino) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(VolumeError::NotFound)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(VolumeError::NotFound)
    }

    fn alive(&self, ino: Ino) -> bool {
        ino == ROOT || self.nodes.get(&ino).is_some_and(|n| n.live.is_some())
    }

    fn live_dir(&self, ino: Ino) -> Result<&Node> {
        let n = self.node(ino)?;
        if n.kind != Kind::Dir {
            return Err(VolumeError::NotDir);
        }
        if !self.alive(ino) {
            return Err(VolumeError::NotFound);
        }
        Ok(n)
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut Node> {
        let n = self.node_mut(ino)?;
        if n.kind != Kind::File {
            return Err(VolumeError::IsDir);
        }
        Ok(n)
    }

    /// Attributes of `ino`.
    pub fn attr(&self, ino: Ino) -> Result<Attr> {
        let n = self.node(ino)?;
        let nlink = match n.kind {
            Kind::File => u32::from(n.live.is_some()),
            Kind::Dir => {
                let subdirs = n.entries.values().filter(|c| self.nodes.get(c).is_some_and(|c| c.kind == Kind::Dir)).count();
                2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2)
            }
        };
        let size = if n.kind == Kind::File { n.size } else { 4096 };
        Ok(Attr { ino, kind: n.kind, size, perm: n.perm, nlink, uid: n.uid, gid: n.gid, mtime: n.mtime, ctime: n.ctime })
    }

    /// The inode named `name` in `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let ino = *self.live_dir(parent)?.entries.get(name).ok_or(VolumeError::NotFound)?;
        self.attr(ino)
    }

    /// The names in directory `ino`, sorted.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let n = self.node(ino)?;
        if n.kind != Kind::Dir {
            return Err(VolumeError::NotDir);
        }
        Ok(n.entries
            .iter()
            .filter_map(|(name, c)| self.nodes.get(c).map(|cn| DirEntry { name: name.clone(), ino: *c, kind: cn.kind }))
            .collect())
    }

    /// Live parent of `ino` (for `..`).
    pub fn parent(&self, ino: Ino) -> Ino {
        self.nodes.get(&ino).and_then(|n| n.live.as_ref()).map_or(ROOT, |(p, _)| *p)
    }

    // ───────────────────────────── names ─────────────────────────────

    fn check_new_name(&self, parent: Ino, name: &OsStr) -> Result<()> {
        check_name(name)?;
        if parent == ROOT && name == STASH_NAME {
            return Err(VolumeError::Reserved);
        }
        if self.live_dir(parent)?.entries.contains_key(name) {
            return Err(VolumeError::Exists);
        }
        Ok(())
    }

    fn add(&mut self, parent: Ino, name: &OsStr, mut node: Node) -> Result<Attr> {
        let ino = self.next_ino;
        self.next_ino += 1;
        node.live = Some((parent, name.to_owned()));
        let kind = node.kind;
        self.nodes.insert(ino, node);
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.entries.insert(name.to_owned(), ino);
        (p.mtime, p.ctime) = (now, now);
        self.dirty_dirs.insert(parent);
        if kind == Kind::File {
            self.dirty_files.insert(ino);
        } else {
            self.dirty_dirs.insert(ino);
        }
        self.attr(ino)
    }

    /// Creates an empty file.
    pub fn create_file(&mut self, parent: Ino, name: &OsStr, perm: u16, owner: (u32, u32)) -> Result<Attr> {
        self.check_new_name(parent, name)?;
        self.add(parent, name, Node::new(Kind::File, perm, owner.0, owner.1, SystemTime::now()))
    }

    /// Creates an empty directory.
    pub fn create_dir(&mut self, parent: Ino, name: &OsStr, perm: u16, owner: (u32, u32)) -> Result<Attr> {
        self.check_new_name(parent, name)?;
        self.add(parent, name, Node::new(Kind::Dir, perm, owner.0, owner.1, SystemTime::now()))
    }

    /// Takes `ino` out of the live namespace (it was unlinked, removed or replaced).
    fn drop_live(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.live = None;
            n.ctime = SystemTime::now();
        }
        self.forget_if_unreachable(ino);
    }

    /// An inode nobody can reach any more (no live name, no open handle) needs no cache;
    /// without a durable name either, it needs nothing at all.
    fn forget_if_unreachable(&mut self, ino: Ino) {
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        if n.live.is_some() || n.open > 0 || ino == ROOT {
            return;
        }
        n.pending.clear();
        if n.durable.is_none() {
            self.nodes.remove(&ino);
            self.dirty_files.remove(&ino);
            self.dirty_dirs.remove(&ino);
        }
    }

    fn remove_name(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<()> {
        let ino = *self.live_dir(parent)?.entries.get(name).ok_or(VolumeError::NotFound)?;
        let n = self.node(ino)?;
        match (n.kind, dir) {
            (Kind::Dir, false) => return Err(VolumeError::IsDir),
            (Kind::File, true) => return Err(VolumeError::NotDir),
            (Kind::Dir, true) if !n.entries.is_empty() => return Err(VolumeError::NotEmpty),
            _ => {}
        }
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.entries.remove(name);
        (p.mtime, p.ctime) = (now, now);
        self.dirty_dirs.insert(parent);
        self.drop_live(ino);
        Ok(())
    }

    /// Removes a file's name.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove_name(parent, name, false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove_name(parent, name, true)
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing what is there unless
    /// `no_replace`.
    pub fn rename(&mut self, parent: Ino, name: &OsStr, new_parent: Ino, new_name: &OsStr, no_replace: bool) -> Result<()> {
        check_name(new_name)?;
        if new_parent == ROOT && new_name == STASH_NAME {
            return Err(VolumeError::Reserved);
        }
        let ino = *self.live_dir(parent)?.entries.get(name).ok_or(VolumeError::NotFound)?;
        let target = self.live_dir(new_parent)?.entries.get(new_name).copied();
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        let kind = self.node(ino)?.kind;
        if kind == Kind::Dir && parent != new_parent {
            return Err(VolumeError::CrossDirectory);
        }
        if let Some(t) = target {
            if no_replace {
                return Err(VolumeError::Exists);
            }
            let tn = self.node(t)?;
            match (kind, tn.kind) {
                (Kind::Dir, Kind::File) => return Err(VolumeError::NotDir),
                (Kind::File, Kind::Dir) => return Err(VolumeError::IsDir),
                (Kind::Dir, Kind::Dir) if !tn.entries.is_empty() => return Err(VolumeError::NotEmpty),
                _ => {}
            }
        }
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.entries.remove(name);
        (p.mtime, p.ctime) = (now, now);
        let np = self.node_mut(new_parent)?;
        np.entries.insert(new_name.to_owned(), ino);
        (np.mtime, np.ctime) = (now, now);
        let n = self.node_mut(ino)?;
        n.live = Some((new_parent, new_name.to_owned()));
        n.ctime = now;
        self.dirty_dirs.insert(parent);
        self.dirty_dirs.insert(new_parent);
        if let Some(t) = target {
            self.drop_live(t);
        }
        Ok(())
    }

    // ───────────────────────────── handles ─────────────────────────────

    /// An open handle on `ino` (it stays readable and writable after an unlink).
    pub fn open(&mut self, ino: Ino) -> Result<()> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    /// A handle on `ino` was closed.
    pub fn release(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        self.forget_if_unreachable(ino);
    }

    // ───────────────────────────── bytes ─────────────────────────────

    /// The durable bytes of file `ino` at `offset` into `buf` (which lies within them).
    fn read_durable(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.disk_path(ino) {
            Some(path) => Ok(self.disk.read_exact_at(&path, offset, buf)?),
            None => {
                let n = self.node(ino)?;
                let from = index(offset).min(n.orphan.len());
                let have = &n.orphan[from..(from + buf.len()).min(n.orphan.len())];
                buf[..have.len()].copy_from_slice(have);
                Ok(())
            }
        }
    }

    /// Reads up to `len` bytes at `offset`, as the live file holds them.
    pub fn read(&self, ino: Ino, offset: u64, len: u32) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        if n.kind != Kind::File {
            return Err(VolumeError::IsDir);
        }
        let end = (offset + u64::from(len)).min(n.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; index(end - offset)];
        let durable_end = end.min(n.kept);
        if offset < durable_end {
            self.read_durable(ino, offset, &mut buf[..index(durable_end - offset)])?;
        }
        n.pending.overlay(offset, &mut buf);
        Ok(buf)
    }

    /// Writes `data` at `offset` (into the cache).
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<()> {
        let n = self.file_mut(ino)?;
        n.pending.write(offset, data);
        n.size = n.size.max(offset + data.len() as u64);
        let now = SystemTime::now();
        (n.mtime, n.ctime) = (now, now);
        self.dirty_files.insert(ino);
        Ok(())
    }

    /// Sets the size: cuts, or extends with zeros.
    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<()> {
        let n = self.file_mut(ino)?;
        if size < n.size {
            n.pending.truncate(size);
            n.kept = n.kept.min(size);
        }
        n.size = size;
        let now = SystemTime::now();
        (n.mtime, n.ctime) = (now, now);
        self.dirty_files.insert(ino);
        Ok(())
    }

    /// fallocate(2): reserving space changes nothing here, except that without
    /// `keep_size` the file grows to cover the range.
    pub fn allocate(&mut self, ino: Ino, offset: u64, len: u64, keep_size: bool) -> Result<()> {
        let size = self.file_mut(ino)?.size;
        if !keep_size && offset + len > size {
            self.set_size(ino, offset + len)?;
        }
        Ok(())
    }

    /// chmod.
    pub fn set_perm(&mut self, ino: Ino, perm: u16) -> Result<()> {
        let n = self.node_mut(ino)?;
        n.perm = perm & 0o7777;
        n.ctime = SystemTime::now();
        match n.kind {
            Kind::File => self.dirty_files.insert(ino),
            Kind::Dir => self.dirty_dirs.insert(ino),
        };
        Ok(())
    }

    /// chown (not modelled for durability).
    pub fn set_owner(&mut self, ino: Ino, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let n = self.node_mut(ino)?;
        n.uid = uid.unwrap_or(n.uid);
        n.gid = gid.unwrap_or(n.gid);
        n.ctime = SystemTime::now();
        Ok(())
    }

    /// utimes (not modelled for durability).
    pub fn set_mtime(&mut self, ino: Ino, mtime: SystemTime) -> Result<()> {
        let n = self.node_mut(ino)?;
        n.mtime = mtime;
        n.ctime = SystemTime::now();
        Ok(())
    }

    // ───────────────────────────── syncing ─────────────────────────────

    /// fsync or fdatasync of a file: its bytes, size and permissions reach the disk (at
    /// its durable place, or in memory while it has none). In the journal model, every
    /// name changed so far becomes durable too.
    pub fn sync_file(&mut self, ino: Ino) -> Result<()> {
        if self.node(ino)?.kind == Kind::Dir {
            return self.sync_dir(ino);
        }
        self.sync_file_data(ino)?;
        if self.model == SyncModel::Journal {
            self.commit_journal()?;
        }
        Ok(())
    }

    /// fsync of a directory: its names reach the disk (in the journal model: every name).
    pub fn sync_dir(&mut self, ino: Ino) -> Result<()> {
        if self.node(ino)?.kind != Kind::Dir {
            return self.sync_file(ino);
        }
        match self.model {
            SyncModel::Journal => self.commit_journal(),
            SyncModel::Posix => {
                self.commit_dir(ino)?;
                self.clear_stash()
            }
        }
    }

    /// sync(1), or a clean unmount: everything becomes durable.
    pub fn sync_all(&mut self) -> Result<()> {
        for ino in self.dirty_files.clone() {
            if self.nodes.contains_key(&ino) {
                self.sync_file_data(ino)?;
            }
        }
        let mut dirs: Vec<Ino> = self.dirty_dirs.iter().copied().filter(|d| self.alive(*d)).collect();
        dirs.sort_by_key(|d| self.depth(*d));
        for d in dirs {
            self.commit_dir(d)?;
        }
        self.clear_stash()
    }

    fn sync_file_data(&mut self, ino: Ino) -> Result<()> {
        let path = self.disk_path(ino);
        let n = self.nodes.get_mut(&ino).ok_or(VolumeError::NotFound)?;
        match path {
            Some(path) => {
                if n.kept < n.durable_len {
                    self.disk.set_len(&path, n.kept)?;
                }
                if n.size != n.kept.min(n.durable_len) {
                    self.disk.set_len(&path, n.size)?;
                }
                for (offset, run) in n.pending.runs() {
                    self.disk.write_at(&path, offset, run)?;
                }
                if n.perm != n.durable_perm {
                    self.disk.set_perm(&path, n.perm)?;
                }
            }
            None => {
                n.orphan.truncate(index(n.kept));
                n.orphan.resize(index(n.size), 0);
                for (offset, run) in n.pending.runs() {
                    n.orphan[index(offset)..index(offset) + run.len()].copy_from_slice(run);
                }
            }
        }
        n.pending.clear();
        (n.kept, n.durable_len, n.durable_perm) = (n.size, n.size, n.perm);
        self.dirty_files.remove(&ino);
        Ok(())
    }

    /// The journal commit: every changed directory, parents first (so that a new
    /// directory gets its place before its entries are written into it), and every
    /// truncation.
    fn commit_journal(&mut self) -> Result<()> {
        let mut dirs: Vec<Ino> = self.dirty_dirs.iter().copied().filter(|d| self.alive(*d)).collect();
        dirs.sort_by_key(|d| self.depth(*d));
        for d in dirs {
            self.commit_dir(d)?;
        }
        self.clear_stash()?;
        // A truncation is metadata, journaled at once; new bytes wait for their file's fsync.
        for ino in self.dirty_files.clone() {
            let path = self.disk_path(ino);
            let Some(n) = self.nodes.get_mut(&ino) else { continue };
            if n.kept < n.durable_len {
                match path {
                    Some(p) => self.disk.set_len(&p, n.kept)?,
                    None => n.orphan.truncate(index(n.kept)),
                }
                n.durable_len = n.kept;
            }
        }
        Ok(())
    }

    fn depth(&self, mut ino: Ino) -> usize {
        let mut depth = 0;
        while let Some((p, _)) = self.nodes.get(&ino).and_then(|n| n.live.as_ref()) {
            depth += 1;
            ino = *p;
            if depth > self.nodes.len() {
                break;
            }
        }
        depth
    }

    /// Where `ino`'s durable state lies on the disk, if it has a place there (a chain
    /// of durable names up to the root, or to the stash).
    fn disk_path(&self, ino: Ino) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let (parent, name) = self.nodes.get(&at)?.durable.as_ref()?;
            names.push(name);
            if *parent == STASH {
                names.push(OsStr::new(STASH_NAME));
                break;
            }
            at = *parent;
            if names.len() > self.nodes.len() {
                return None;
            }
        }
        Some(names.iter().rev().collect())
    }

    fn stash_path(ino: Ino) -> PathBuf {
        Path::new(STASH_NAME).join(ino.to_string())
    }

    /// Makes directory `dir`'s durable names equal to its live names, moving durable
    /// subtrees on the disk to match.
    ///
    /// Names that go first: an inode still alive elsewhere is parked in the stash (by a
    /// rename on the disk, whatever its size); one nobody can reach is deleted (after its
    /// own live descendants, if a directory, were parked). Then names that come: an inode
    /// durable under another name loses that name (a rename is atomic, as in a journal)
    /// and moves on the disk; one without a place is written out from memory.
    fn commit_dir(&mut self, dir: Ino) -> Result<()> {
        let Some(d) = self.nodes.get(&dir) else { return Ok(()) };
        if d.kind != Kind::Dir {
            return Ok(());
        }
        let live = d.entries.clone();
        let old = d.durable_entries.clone();
        let dir_path = self.disk_path(dir);

        for (name, ino) in &old {
            if live.get(name) == Some(ino) {
                continue;
            }
            self.node_mut(dir)?.durable_entries.remove(name);
            let path = dir_path.as_ref().map(|p| p.join(name));
            if self.nodes.get(ino).and_then(|n| n.durable.as_ref()) != Some(&(dir, name.clone())) {
                continue;
            }
            if self.alive(*ino) {
                self.park(*ino, path)?;
            } else {
                self.bury(*ino, path)?;
            }
        }

        for (name, ino) in &live {
            if old.get(name) == Some(ino) {
                continue;
            }
            let from = self.disk_path(*ino);
            match self.node_mut(*ino)?.durable.replace((dir, name.clone())) {
                Some((STASH, _)) => {
                    self.stashed.remove(ino);
                }
                Some((p, n)) => {
                    if let Some(pn) = self.nodes.get_mut(&p) {
                        pn.durable_entries.remove(&n);
                    }
                }
                None => {}
            }
            self.node_mut(dir)?.durable_entries.insert(name.clone(), *ino);
            let to = self.disk_path(*ino);
            match (from, to) {
                (Some(from), Some(to)) => self.disk.rename(&from, &to)?,
                (None, Some(to)) => self.write_out(*ino, &to)?,
                (Some(from), None) => {
                    self.read_in(*ino, &from)?;
                    self.disk.remove(&from)?;
                }
                (None, None) => {}
            }
        }

        if let Some(path) = &dir_path {
            let d = self.node_mut(dir)?;
            if d.perm != d.durable_perm {
                let perm = d.perm;
                d.durable_perm = perm;
                self.disk.set_perm(path, perm)?;
            }
        }
        self.dirty_dirs.remove(&dir);
        Ok(())
    }

    /// `ino` (alive) lost its durable name: park it in the stash until the sync ends.
    fn park(&mut self, ino: Ino, path: Option<PathBuf>) -> Result<()> {
        match path {
            Some(path) => {
                if self.disk.stat(Path::new(STASH_NAME)).is_err() {
                    self.disk.create_dir(Path::new(STASH_NAME), 0o700)?;
                }
                self.disk.rename(&path, &Self::stash_path(ino))?;
                self.node_mut(ino)?.durable = Some((STASH, OsString::from(ino.to_string())));
                self.stashed.insert(ino);
            }
            // Without a place, its durable state is already in memory.
            None => self.node_mut(ino)?.durable = None,
        }
        Ok(())
    }

    /// `ino` (which nobody can reach) lost its durable name: delete it, after parking
    /// its durable descendants that are still alive elsewhere.
    fn bury(&mut self, ino: Ino, path: Option<PathBuf>) -> Result<()> {
        let children = std::mem::take(&mut self.node_mut(ino)?.durable_entries);
        for (name, child) in children {
            if self.nodes.get(&child).and_then(|n| n.durable.as_ref()) != Some(&(ino, name.clone())) {
                continue;
            }
            let child_path = path.as_ref().map(|p| p.join(&name));
            if self.alive(child) {
                self.park(child, child_path)?;
            } else {
                self.bury(child, child_path)?;
            }
        }
        if let Some(path) = path {
            self.disk.remove(&path)?;
        }
        let n = self.node_mut(ino)?;
        n.durable = None;
        n.orphan = Vec::new();
        (n.kept, n.durable_len) = (0, 0);
        self.dirty_dirs.remove(&ino);
        self.dirty_files.remove(&ino);
        self.forget_if_unreachable(ino);
        Ok(())
    }

    /// Writes `ino`'s durable state, held in memory, to `path` on the disk.
    fn write_out(&mut self, ino: Ino, path: &Path) -> Result<()> {
        let n = self.node_mut(ino)?;
        let (kind, perm) = (n.kind, n.durable_perm);
        match kind {
            Kind::File => {
                let data = std::mem::take(&mut n.orphan);
                self.disk.create_file(path, perm)?;
                if !data.is_empty() {
                    self.disk.write_at(path, 0, &data)?;
                }
            }
            Kind::Dir => {
                self.disk.create_dir(path, perm)?;
                for (name, child) in self.node(ino)?.durable_entries.clone() {
                    self.write_out(child, &path.join(name))?;
                }
            }
        }
        Ok(())
    }

    /// Reads `ino`'s durable state from `path` on the disk into memory (the caller then
    /// removes `path`).
    fn read_in(&mut self, ino: Ino, path: &Path) -> Result<()> {
        let n = self.node(ino)?;
        match n.kind {
            Kind::File => {
                let mut data = vec![0u8; index(n.durable_len)];
                self.disk.read_exact_at(path, 0, &mut data)?;
                self.node_mut(ino)?.orphan = data;
            }
            Kind::Dir => {
                for (name, child) in n.durable_entries.clone() {
                    self.read_in(child, &path.join(name))?;
                }
            }
        }
        Ok(())
    }

    /// At the end of a sync, whatever is still parked has no durable name: its durable
    /// state moves into memory, and the stash goes.
    fn clear_stash(&mut self) -> Result<()> {
        for ino in std::mem::take(&mut self.stashed) {
            let path = Self::stash_path(ino);
            self.read_in(ino, &path)?;
            self.disk.remove(&path)?;
            self.node_mut(ino)?.durable = None;
        }
        if self.disk.stat(Path::new(STASH_NAME)).is_ok() {
            self.disk.remove(Path::new(STASH_NAME))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
