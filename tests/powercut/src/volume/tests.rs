//! The model without FUSE, on a disk in memory: what a power cut keeps after each kind of
//! sync, in both sync models.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use super::*;
use crate::disk::MemDisk;

const ME: (u32, u32) = (1000, 1000);

fn volume(model: SyncModel) -> Volume<MemDisk> {
    Volume::load(MemDisk::new(), model, ME).unwrap()
}

fn n(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn create(v: &mut Volume<MemDisk>, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let ino = v.create_file(parent, n(name), 0o644, ME).unwrap().ino;
    v.write(ino, 0, data).unwrap();
    ino
}

fn mkdir(v: &mut Volume<MemDisk>, parent: Ino, name: &str) -> Ino {
    v.create_dir(parent, n(name), 0o755, ME).unwrap().ino
}

/// The disk after a power cut: path → bytes (`None`: a directory).
fn cut(v: Volume<MemDisk>) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let (disk, _) = v.power_cut();
    disk.tree()
}

fn tree(entries: &[(&str, Option<&[u8]>)]) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    entries.iter().map(|(p, d)| (PathBuf::from(p), d.map(<[u8]>::to_vec))).collect()
}

/// Everything the live volume shows, in the shape of [`MemDisk::tree`].
fn live_tree(v: &Volume<MemDisk>) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(v: &Volume<MemDisk>, dir: Ino, at: PathBuf, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in v.readdir(dir).unwrap() {
            let path = at.join(&e.name);
            match e.kind {
                Kind::File => {
                    let size = v.attr(e.ino).unwrap().size;
                    out.insert(path, Some(v.read(e.ino, 0, u32::try_from(size).unwrap()).unwrap()));
                }
                Kind::Dir => {
                    out.insert(path.clone(), None);
                    walk(v, e.ino, path, out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, ROOT, PathBuf::new(), &mut out);
    out
}

#[test]
fn writes_are_seen_at_once_and_lost_in_a_cut_unless_synced() {
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let mut v = volume(model);
        let f = create(&mut v, ROOT, "log", b"hello");
        assert_eq!(v.read(f, 0, 100).unwrap(), b"hello", "{model:?}: reads see the cache");
        assert_eq!(v.pending(), Pending { files: 1, bytes: 5, names: 1 });
        assert_eq!(cut(v), tree(&[]), "{model:?}: nothing was synced");
    }
}

#[test]
fn a_file_fsync_keeps_the_bytes_and_the_name_needs_its_directory_under_posix() {
    // POSIX: the bytes are durable, the name is not.
    let mut v = volume(SyncModel::Posix);
    let f = create(&mut v, ROOT, "log", b"hello");
    v.sync_file(f).unwrap();
    assert_eq!(v.pending(), Pending { files: 0, bytes: 0, names: 1 });
    assert_eq!(cut(v), tree(&[]));

    // Journal: the fsync commits the create as well.
    let mut v = volume(SyncModel::Journal);
    let f = create(&mut v, ROOT, "log", b"hello");
    v.sync_file(f).unwrap();
    assert_eq!(v.pending(), Pending::default());
    assert_eq!(cut(v), tree(&[("log", Some(b"hello"))]));

    // Both: file and directory synced.
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let mut v = volume(model);
        let f = create(&mut v, ROOT, "log", b"hello");
        v.sync_file(f).unwrap();
        v.sync_dir(ROOT).unwrap();
        assert_eq!(cut(v), tree(&[("log", Some(b"hello"))]), "{model:?}");
    }
}

#[test]
fn a_directory_sync_without_a_file_sync_keeps_an_empty_file() {
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let mut v = volume(model);
        create(&mut v, ROOT, "cert.pem", b"-----BEGIN CERTIFICATE-----");
        v.sync_dir(ROOT).unwrap();
        assert_eq!(cut(v), tree(&[("cert.pem", Some(b""))]), "{model:?}: the name without its bytes");
    }
}

#[test]
fn appends_after_a_sync_are_lost_and_the_synced_prefix_kept() {
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let mut v = volume(model);
        let f = create(&mut v, ROOT, "wal", b"abc");
        v.sync_file(f).unwrap();
        v.sync_dir(ROOT).unwrap();
        v.write(f, 3, b"def").unwrap();
        v.write(f, 1, b"B").unwrap();
        assert_eq!(v.read(f, 0, 10).unwrap(), b"aBcdef");
        assert_eq!(v.read(f, 2, 2).unwrap(), b"cd");
        assert_eq!(cut(v), tree(&[("wal", Some(b"abc"))]), "{model:?}");
    }
}

#[test]
fn a_truncation_is_pending_until_a_file_sync_or_a_journal_commit() {
    let setup = |model| {
        let mut v = volume(model);
        let f = create(&mut v, ROOT, "f", b"hello");
        v.sync_file(f).unwrap();
        v.sync_dir(ROOT).unwrap();
        v.set_size(f, 2).unwrap();
        v.set_size(f, 4).unwrap();
        assert_eq!(v.read(f, 0, 10).unwrap(), b"he\0\0", "bytes past a cut read as zeros");
        (v, f)
    };
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let (v, _) = setup(model);
        assert_eq!(cut(v), tree(&[("f", Some(b"hello"))]), "{model:?}: nothing committed");
    }
    // Another file's fsync: the journal commits the truncation (not the regrowth).
    let (mut v, _) = setup(SyncModel::Journal);
    let g = create(&mut v, ROOT, "g", b"");
    v.sync_file(g).unwrap();
    assert_eq!(cut(v), tree(&[("f", Some(b"he")), ("g", Some(b""))]));
    let (mut v, _) = setup(SyncModel::Posix);
    let g = create(&mut v, ROOT, "g", b"");
    v.sync_file(g).unwrap();
    assert_eq!(cut(v), tree(&[("f", Some(b"hello"))]));
    // Its own fsync: size and zeros.
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let (mut v, f) = setup(model);
        v.sync_file(f).unwrap();
        assert_eq!(cut(v), tree(&[("f", Some(b"he\0\0"))]), "{model:?}");
    }
}

#[test]
fn a_rename_over_a_file_is_durable_with_its_directory_and_atomic() {
    // RocksDB's CURRENT: write a temporary file, sync it, rename it over, sync the directory.
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let mut v = volume(model);
        let current = create(&mut v, ROOT, "CURRENT", b"MANIFEST-1\n");
        v.sync_file(current).unwrap();
        v.sync_dir(ROOT).unwrap();
        let tmp = create(&mut v, ROOT, "000002.dbtmp", b"MANIFEST-2\n");
        v.sync_file(tmp).unwrap();
        v.rename(ROOT, n("000002.dbtmp"), ROOT, n("CURRENT"), false).unwrap();
        let before_dir_sync = cut_copy(&v);
        let expected_before = match model {
            // The journal committed the temporary file's name with its fsync.
            SyncModel::Journal => tree(&[("000002.dbtmp", Some(b"MANIFEST-2\n")), ("CURRENT", Some(b"MANIFEST-1\n"))]),
            _ => tree(&[("CURRENT", Some(b"MANIFEST-1\n"))]),
        };
        assert_eq!(before_dir_sync, expected_before, "{model:?}: the old CURRENT until the directory is synced");
        v.sync_dir(ROOT).unwrap();
        assert_eq!(cut(v), tree(&[("CURRENT", Some(b"MANIFEST-2\n"))]), "{model:?}");
    }
}

/// The disk as a cut now would leave it, without cutting.
fn cut_copy(v: &Volume<MemDisk>) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    v.disk().tree()
}

#[test]
fn an_unlink_comes_back_unless_its_directory_is_synced() {
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let mut v = volume(model);
        let f = create(&mut v, ROOT, "old.log", b"x");
        v.sync_file(f).unwrap();
        v.sync_dir(ROOT).unwrap();
        v.unlink(ROOT, n("old.log")).unwrap();
        assert!(v.lookup(ROOT, n("old.log")).is_err());
        assert_eq!(cut_copy(&v), tree(&[("old.log", Some(b"x"))]), "{model:?}");
        v.sync_dir(ROOT).unwrap();
        assert_eq!(cut(v), tree(&[]), "{model:?}");
    }
}

#[test]
fn a_new_directory_needs_its_parent_synced_under_posix() {
    // mkdir a; create a/f; fsync f; fsync a — under POSIX, `a` itself is not durable yet,
    // and its synced entries wait in memory.
    let mut v = volume(SyncModel::Posix);
    let a = mkdir(&mut v, ROOT, "a");
    let f = create(&mut v, a, "f", b"data");
    v.sync_file(f).unwrap();
    v.sync_dir(a).unwrap();
    assert_eq!(cut_copy(&v), tree(&[]));
    v.write(f, 4, b"+more").unwrap();
    v.sync_dir(ROOT).unwrap();
    assert_eq!(cut(v), tree(&[("a", None), ("a/f", Some(b"data"))]), "the synced bytes, not the later ones");

    // The journal: the fsync of f commits `a` and `a/f`.
    let mut v = volume(SyncModel::Journal);
    let a = mkdir(&mut v, ROOT, "a");
    let f = create(&mut v, a, "f", b"data");
    v.sync_file(f).unwrap();
    assert_eq!(cut(v), tree(&[("a", None), ("a/f", Some(b"data"))]));
}

#[test]
fn a_file_moved_to_another_directory_is_durable_when_the_target_is_synced() {
    // The daemon's rename_durably: parts/p → files/c/p, then fsync files/c.
    let setup = || {
        let mut v = volume(SyncModel::Posix);
        let parts = mkdir(&mut v, ROOT, "parts");
        let files = mkdir(&mut v, ROOT, "files");
        let c = mkdir(&mut v, files, "c");
        create(&mut v, parts, "p", b"sealed bytes");
        v.sync_all().unwrap();
        v.rename(parts, n("p"), c, n("blob"), false).unwrap();
        (v, parts, c)
    };
    let (mut v, parts, c) = setup();
    v.sync_dir(c).unwrap();
    let moved = tree(&[("files", None), ("files/c", None), ("files/c/blob", Some(b"sealed bytes")), ("parts", None)]);
    assert_eq!(cut_copy(&v), moved, "moved atomically: not in both places");
    v.sync_dir(parts).unwrap();
    assert_eq!(cut(v), moved);

    // The source synced first: for a while the file has no durable name (POSIX allows
    // that); its bytes wait in memory and reach the disk with the target's sync.
    let (mut v, parts, c) = setup();
    v.sync_dir(parts).unwrap();
    assert_eq!(cut_copy(&v), tree(&[("files", None), ("files/c", None), ("parts", None)]));
    v.sync_dir(c).unwrap();
    assert_eq!(cut(v), moved);
}

#[test]
fn removing_a_directory_keeps_what_moved_out_of_it() {
    let mut v = volume(SyncModel::Posix);
    let a = mkdir(&mut v, ROOT, "a");
    let b = mkdir(&mut v, ROOT, "b");
    create(&mut v, a, "keep", b"k");
    create(&mut v, a, "drop", b"d");
    v.sync_all().unwrap();
    v.rename(a, n("keep"), b, n("keep"), false).unwrap();
    v.unlink(a, n("drop")).unwrap();
    v.rmdir(ROOT, n("a")).unwrap();
    // Only the root is synced: `a` goes with `drop`; `keep` waits in memory for `b`.
    v.sync_dir(ROOT).unwrap();
    assert_eq!(cut_copy(&v), tree(&[("b", None)]));
    v.sync_dir(b).unwrap();
    assert_eq!(cut(v), tree(&[("b", None), ("b/keep", Some(b"k"))]));
}

#[test]
fn an_open_unlinked_file_stays_usable() {
    let mut v = volume(SyncModel::Journal);
    let f = create(&mut v, ROOT, "tmp", b"abc");
    v.open(f).unwrap();
    v.unlink(ROOT, n("tmp")).unwrap();
    v.write(f, 3, b"def").unwrap();
    assert_eq!(v.read(f, 0, 10).unwrap(), b"abcdef");
    assert_eq!(v.attr(f).unwrap().nlink, 0);
    v.sync_file(f).unwrap();
    v.release(f);
    assert!(v.attr(f).is_err(), "forgotten once closed");
    assert_eq!(cut(v), tree(&[]));
}

#[test]
fn the_journal_commits_every_name_at_any_fsync() {
    let mut v = volume(SyncModel::Journal);
    let d = mkdir(&mut v, ROOT, "db");
    create(&mut v, d, "LOCK", b"");
    create(&mut v, ROOT, "unsynced", b"bytes");
    let other = create(&mut v, d, "000004.log", b"wal");
    v.sync_file(other).unwrap();
    assert_eq!(
        cut(v),
        tree(&[("db", None), ("db/000004.log", Some(b"wal")), ("db/LOCK", Some(b"")), ("unsynced", Some(b""))]),
        "names durable; bytes only of the synced file"
    );
}

#[test]
fn a_reloaded_disk_is_the_durable_state() {
    let mut v = volume(SyncModel::Posix);
    let d = mkdir(&mut v, ROOT, "data");
    let f = create(&mut v, d, "kept", b"kept bytes");
    v.sync_file(f).unwrap();
    v.sync_dir(d).unwrap();
    v.sync_dir(ROOT).unwrap();
    v.write(f, 0, b"KEPT").unwrap();
    create(&mut v, d, "lost", b"lost bytes");
    let (disk, lost) = v.power_cut();
    assert_eq!(lost, Pending { files: 2, bytes: 14, names: 1 });

    let v = Volume::load(disk, SyncModel::Posix, ME).unwrap();
    let d = v.lookup(ROOT, n("data")).unwrap();
    assert_eq!(v.readdir(d.ino).unwrap().iter().map(|e| e.name.clone()).collect::<Vec<_>>(), [n("kept")]);
    let f = v.lookup(d.ino, n("kept")).unwrap();
    assert_eq!(f.size, 10);
    assert_eq!(v.read(f.ino, 0, 100).unwrap(), b"kept bytes");
    assert_eq!(v.pending(), Pending::default());
}

#[test]
fn names_are_checked() {
    let mut v = volume(SyncModel::Posix);
    assert!(matches!(v.create_file(ROOT, n(STASH_NAME), 0o644, ME), Err(VolumeError::Reserved)));
    assert!(matches!(v.create_file(ROOT, n(".."), 0o644, ME), Err(VolumeError::InvalidName)));
    let a = mkdir(&mut v, ROOT, "a");
    let b = mkdir(&mut v, ROOT, "b");
    let sub = mkdir(&mut v, a, "sub");
    assert!(matches!(v.rename(a, n("sub"), b, n("sub"), false), Err(VolumeError::CrossDirectory)));
    v.rename(a, n("sub"), a, n("renamed"), false).unwrap();
    create(&mut v, sub, "f", b"");
    assert!(matches!(v.rmdir(a, n("renamed")), Err(VolumeError::NotEmpty)));
    assert!(matches!(v.unlink(ROOT, n("a")), Err(VolumeError::IsDir)));
    create(&mut v, ROOT, "x", b"");
    create(&mut v, ROOT, "y", b"");
    assert!(matches!(v.rename(ROOT, n("x"), ROOT, n("y"), true), Err(VolumeError::Exists)));
    assert!(matches!(v.rename(ROOT, n("x"), ROOT, n("a"), false), Err(VolumeError::IsDir)));
}

/// The name of directory `ino` in its parent.
fn live_name(v: &Volume<MemDisk>, ino: Ino) -> std::ffi::OsString {
    v.readdir(v.parent(ino)).unwrap().into_iter().find(|e| e.ino == ino).map(|e| e.name).unwrap_or_default()
}

/// The directories reachable from the root.
fn live_dirs(v: &Volume<MemDisk>) -> Vec<Ino> {
    let mut out = vec![ROOT];
    let mut i = 0;
    while i < out.len() {
        out.extend(v.readdir(out[i]).unwrap().into_iter().filter(|e| e.kind == Kind::Dir).map(|e| e.ino));
        i += 1;
    }
    out
}

/// Random operations in many directories, with random syncs of files and directories.
/// A shadow copy of every file's bytes, kept by the test, must match what the volume
/// reads after every step; after a final sync of everything the disk holds exactly the
/// live tree. This runs every path a sync can take (parking, burying, writing out,
/// reading in).
#[test]
fn after_syncing_everything_the_disk_equals_the_live_tree() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut syncs = 0;
    for model in [SyncModel::Posix, SyncModel::Journal] {
        for round in 0..150 {
            let mut v = volume(model);
            let mut shadow: BTreeMap<Ino, Vec<u8>> = BTreeMap::new();
            let write = |shadow: &mut BTreeMap<Ino, Vec<u8>>, ino: Ino, off: u64, data: &[u8]| {
                let bytes = shadow.entry(ino).or_default();
                let off = usize::try_from(off).unwrap();
                if bytes.len() < off + data.len() {
                    bytes.resize(off + data.len(), 0);
                }
                bytes[off..off + data.len()].copy_from_slice(data);
            };
            let mut dirs = vec![ROOT];
            for step in 0..60 {
                let dir = dirs[usize::try_from(next(dirs.len() as u64)).unwrap()];
                let entries = v.readdir(dir).unwrap();
                let pick = |k: u64| entries.get(usize::try_from(k).unwrap()).cloned();
                let name = format!("n{}", next(6));
                match next(12) {
                    0 => {
                        let _ = v.create_dir(dir, n(&name), 0o755, ME);
                    }
                    1 | 2 => {
                        if let Ok(a) = v.create_file(dir, n(&name), 0o644, ME) {
                            let (off, data) = (next(8), format!("{round}.{step}"));
                            v.write(a.ino, off, data.as_bytes()).unwrap();
                            write(&mut shadow, a.ino, off, data.as_bytes());
                        }
                    }
                    3 => {
                        if let Some(e) = pick(next(8))
                            && e.kind == Kind::File
                        {
                            let (off, data) = (next(16), format!("<{step}>"));
                            v.write(e.ino, off, data.as_bytes()).unwrap();
                            write(&mut shadow, e.ino, off, data.as_bytes());
                        }
                    }
                    4 => {
                        if let Some(e) = pick(next(8))
                            && e.kind == Kind::File
                        {
                            let len = next(12);
                            v.set_size(e.ino, len).unwrap();
                            shadow.entry(e.ino).or_default().resize(usize::try_from(len).unwrap(), 0);
                        }
                    }
                    5 => {
                        // A rename, within the directory or (files) to another one.
                        if let Some(e) = pick(next(8)) {
                            let to = if e.kind == Kind::File { dirs[usize::try_from(next(dirs.len() as u64)).unwrap()] } else { dir };
                            let _ = v.rename(dir, &e.name, to, n(&name), false);
                        }
                    }
                    6 => {
                        if let Some(e) = pick(next(8)) {
                            let _ = if e.kind == Kind::File { v.unlink(dir, &e.name) } else { v.rmdir(dir, &e.name) };
                        }
                    }
                    10 if dir != ROOT => {
                        // Empty a directory into another one, then remove it.
                        let to = dirs[usize::try_from(next(dirs.len() as u64)).unwrap()];
                        for e in &entries {
                            let _ = v.rename(dir, &e.name, to, n(&format!("m{step}{}", e.name.display())), false);
                        }
                        let (parent, name) = (v.parent(dir), live_name(&v, dir));
                        let _ = v.rmdir(parent, &name);
                    }
                    7 | 8 => {
                        if let Some(e) = pick(next(8)) {
                            v.sync_file(e.ino).unwrap();
                            syncs += 1;
                        }
                    }
                    _ => {
                        v.sync_dir(dir).unwrap();
                        syncs += 1;
                    }
                }
                dirs = live_dirs(&v);
                assert!(v.disk().tree().keys().all(|p| !p.starts_with(STASH_NAME)), "the stash is empty between operations");
                for d in &dirs {
                    for e in v.readdir(*d).unwrap().into_iter().filter(|e| e.kind == Kind::File) {
                        let want = shadow.get(&e.ino).cloned().unwrap_or_default();
                        assert_eq!(v.read(e.ino, 0, 1 << 16).unwrap(), want, "{model:?} round {round} step {step}: {:?}", e.name);
                    }
                }
            }
            let live = live_tree(&v);
            v.sync_all().unwrap();
            assert_eq!(v.pending(), Pending::default());
            assert_eq!(cut_copy(&v), live, "{model:?} round {round}");
            // And a reload sees the same.
            let (disk, _) = v.power_cut();
            let again = Volume::load(disk, model, ME).unwrap();
            assert_eq!(live_tree(&again), live);
        }
    }
    assert!(syncs > 1_000, "the random walk synced {syncs} times");
}
