//! The disk: what survives a power cut. [`Volume`](crate::Volume) writes to it only when
//! something is made durable, so at every moment it holds exactly the durable state.
//!
//! Two disks: [`BackingDir`], a directory of the host (what the FUSE filesystem uses),
//! and [`MemDisk`], a tree in memory (for tests of the model). Paths are relative to the
//! disk's root; the empty path is the root.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// A file or a directory; nothing else is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What [`Disk::stat`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStat {
    /// File or directory.
    pub kind: Kind,
    /// Length in bytes (files).
    pub len: u64,
    /// Permission bits.
    pub perm: u16,
    /// Last modification, as the disk recorded it.
    pub mtime: SystemTime,
}

/// Durable storage, addressed by relative path.
pub trait Disk: Send + 'static {
    /// Kind, length and permissions of `path`.
    fn stat(&self, path: &Path) -> io::Result<DiskStat>;
    /// The names in directory `path`.
    fn list(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Reads from file `path` at `offset` into `buf`; fills all of it or fails.
    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` into file `path` at `offset`.
    fn write_at(&mut self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Cuts or extends (with zeros) file `path` to `len` bytes.
    fn set_len(&mut self, path: &Path, len: u64) -> io::Result<()>;
    /// Creates an empty file; fails if `path` exists.
    fn create_file(&mut self, path: &Path, perm: u16) -> io::Result<()>;
    /// Creates an empty directory; fails if `path` exists.
    fn create_dir(&mut self, path: &Path, perm: u16) -> io::Result<()>;
    /// Sets permission bits.
    fn set_perm(&mut self, path: &Path, perm: u16) -> io::Result<()>;
    /// Moves `from` to `to`, which must not exist.
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file, or a directory with everything in it.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
}

/// A directory of the host as the disk.
///
/// Writes to it are not synced to the host's own disk: the power cut is the model's,
/// not the host's.
#[derive(Debug)]
pub struct BackingDir {
    root: PathBuf,
}

impl BackingDir {
    /// The disk rooted at `root`, which must be a directory.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        if !std::fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, format!("{} is not a directory", root.display())));
        }
        Ok(Self { root })
    }

    /// The host directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn at(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }
}

impl Disk for BackingDir {
    fn stat(&self, path: &Path) -> io::Result<DiskStat> {
        let m = std::fs::symlink_metadata(self.at(path))?;
        let kind = if m.is_dir() {
            Kind::Dir
        } else if m.is_file() {
            Kind::File
        } else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} is neither a file nor a directory", self.at(path).display()),
            ));
        };
        let perm = u16::try_from(m.permissions().mode() & 0o7777).unwrap_or(0o644);
        Ok(DiskStat { kind, len: m.len(), perm, mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH) })
    }

    fn list(&self, path: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(self.at(path))?.map(|e| e.map(|e| e.file_name())).collect()
    }

    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::fs::File::open(self.at(path))?.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        std::fs::OpenOptions::new().write(true).open(self.at(path))?.write_all_at(data, offset)
    }

    fn set_len(&mut self, path: &Path, len: u64) -> io::Result<()> {
        std::fs::OpenOptions::new().write(true).open(self.at(path))?.set_len(len)
    }

    fn create_file(&mut self, path: &Path, perm: u16) -> io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(self.at(path))?;
        file.set_permissions(std::fs::Permissions::from_mode(perm.into()))
    }

    fn create_dir(&mut self, path: &Path, perm: u16) -> io::Result<()> {
        std::fs::create_dir(self.at(path))?;
        self.set_perm(path, perm)
    }

    fn set_perm(&mut self, path: &Path, perm: u16) -> io::Result<()> {
        // Directories stay enterable by their owner, or the disk could not be maintained.
        let perm = if std::fs::symlink_metadata(self.at(path))?.is_dir() { perm | 0o700 } else { perm | 0o600 };
        std::fs::set_permissions(self.at(path), std::fs::Permissions::from_mode(perm.into()))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if std::fs::symlink_metadata(self.at(to)).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", to.display())));
        }
        std::fs::rename(self.at(from), self.at(to))
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let at = self.at(path);
        if std::fs::symlink_metadata(&at)?.is_dir() { std::fs::remove_dir_all(at) } else { std::fs::remove_file(at) }
    }
}

/// A disk in memory, for tests of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemDisk {
    root: MemNode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MemNode {
    File { data: Vec<u8>, perm: u16 },
    Dir { entries: BTreeMap<OsString, MemNode>, perm: u16 },
}

impl Default for MemDisk {
    fn default() -> Self {
        Self { root: MemNode::Dir { entries: BTreeMap::new(), perm: 0o755 } }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

fn names(path: &Path) -> impl Iterator<Item = &std::ffi::OsStr> {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n),
        _ => None,
    })
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every path on the disk with its content (`None` for directories), sorted: a
    /// snapshot to compare in tests.
    pub fn tree(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        fn walk(node: &MemNode, at: PathBuf, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
            match node {
                MemNode::File { data, .. } => {
                    out.insert(at, Some(data.clone()));
                }
                MemNode::Dir { entries, .. } => {
                    if !at.as_os_str().is_empty() {
                        out.insert(at.clone(), None);
                    }
                    for (name, child) in entries {
                        walk(child, at.join(name), out);
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, PathBuf::new(), &mut out);
        out
    }

    fn node(&self, path: &Path) -> io::Result<&MemNode> {
        let mut node = &self.root;
        for name in names(path) {
            node = match node {
                MemNode::Dir { entries, .. } => entries.get(name).ok_or_else(|| not_found(path))?,
                MemNode::File { .. } => return Err(not_found(path)),
            };
        }
        Ok(node)
    }

    fn node_mut(&mut self, path: &Path) -> io::Result<&mut MemNode> {
        let mut node = &mut self.root;
        for name in names(path) {
            node = match node {
                MemNode::Dir { entries, .. } => entries.get_mut(name).ok_or_else(|| not_found(path))?,
                MemNode::File { .. } => return Err(not_found(path)),
            };
        }
        Ok(node)
    }

    fn data_mut(&mut self, path: &Path) -> io::Result<&mut Vec<u8>> {
        match self.node_mut(path)? {
            MemNode::File { data, .. } => Ok(data),
            MemNode::Dir { .. } => Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string())),
        }
    }

    /// The directory holding `path`, and `path`'s name in it.
    fn parent_mut(&mut self, path: &Path) -> io::Result<(&mut BTreeMap<OsString, MemNode>, OsString)> {
        let name = path.file_name().ok_or_else(|| not_found(path))?.to_owned();
        match self.node_mut(path.parent().unwrap_or(Path::new("")))? {
            MemNode::Dir { entries, .. } => Ok((entries, name)),
            MemNode::File { .. } => Err(not_found(path)),
        }
    }

    fn insert_new(&mut self, path: &Path, node: MemNode) -> io::Result<()> {
        let (entries, name) = self.parent_mut(path)?;
        if entries.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string()));
        }
        entries.insert(name, node);
        Ok(())
    }
}

impl Disk for MemDisk {
    fn stat(&self, path: &Path) -> io::Result<DiskStat> {
        Ok(match self.node(path)? {
            MemNode::File { data, perm } => {
                DiskStat { kind: Kind::File, len: data.len() as u64, perm: *perm, mtime: SystemTime::UNIX_EPOCH }
            }
            MemNode::Dir { perm, .. } => DiskStat { kind: Kind::Dir, len: 0, perm: *perm, mtime: SystemTime::UNIX_EPOCH },
        })
    }

    fn list(&self, path: &Path) -> io::Result<Vec<OsString>> {
        match self.node(path)? {
            MemNode::Dir { entries, .. } => Ok(entries.keys().cloned().collect()),
            MemNode::File { .. } => Err(io::Error::new(io::ErrorKind::NotADirectory, path.display().to_string())),
        }
    }

    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let MemNode::File { data, .. } = self.node(path)? else {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string()));
        };
        let from = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = data.get(from..from + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let data = self.data_mut(path)?;
        let from = usize::try_from(offset).map_err(|_| io::ErrorKind::FileTooLarge)?;
        if data.len() < from + bytes.len() {
            data.resize(from + bytes.len(), 0);
        }
        data[from..from + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&mut self, path: &Path, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::FileTooLarge)?;
        self.data_mut(path)?.resize(len, 0);
        Ok(())
    }

    fn create_file(&mut self, path: &Path, perm: u16) -> io::Result<()> {
        self.insert_new(path, MemNode::File { data: Vec::new(), perm })
    }

    fn create_dir(&mut self, path: &Path, perm: u16) -> io::Result<()> {
        self.insert_new(path, MemNode::Dir { entries: BTreeMap::new(), perm })
    }

    fn set_perm(&mut self, path: &Path, new: u16) -> io::Result<()> {
        match self.node_mut(path)? {
            MemNode::File { perm, .. } | MemNode::Dir { perm, .. } => *perm = new,
        }
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if self.node(to).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, to.display().to_string()));
        }
        let (entries, name) = self.parent_mut(from)?;
        let node = entries.remove(&name).ok_or_else(|| not_found(from))?;
        self.insert_new(to, node)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let (entries, name) = self.parent_mut(path)?;
        entries.remove(&name).map(|_| ()).ok_or_else(|| not_found(path))
    }
}
