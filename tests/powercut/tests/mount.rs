//! The filesystem through the kernel: mounted, written with and without syncs, cut,
//! mounted again. Skipped (saying why) without FUSE, except under `CI=true`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use legalchat_powercut::{Pending, PowercutMount, SyncModel, skip_without_fuse};

/// A mountpoint and a backing directory in a fresh temporary directory.
struct Dirs {
    _tmp: tempfile::TempDir,
    mnt: PathBuf,
    back: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new().prefix("powercut-").tempdir().unwrap();
    let (mnt, back) = (tmp.path().join("mnt"), tmp.path().join("back"));
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&back).unwrap();
    Dirs { _tmp: tmp, mnt, back }
}

fn write_file(path: &Path, data: &[u8]) -> File {
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(path).unwrap();
    f.write_all(data).unwrap();
    f
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[test]
fn what_was_not_synced_is_gone_after_a_cut_and_what_was_is_kept() {
    if skip_without_fuse("what_was_not_synced_is_gone_after_a_cut_and_what_was_is_kept").is_some() {
        return;
    }
    for model in [SyncModel::Journal, SyncModel::Posix] {
        let d = dirs();
        let m = PowercutMount::mount(&d.mnt, &d.back, model).unwrap();

        // Synced the way a careful program does: the file, then its directory.
        std::fs::create_dir(d.mnt.join("db")).unwrap();
        sync_dir(&d.mnt);
        write_file(&d.mnt.join("db/kept"), b"acknowledged").sync_all().unwrap();
        sync_dir(&d.mnt.join("db"));
        // fdatasync of an append to a synced file.
        let wal = write_file(&d.mnt.join("db/wal"), b"record 1;");
        wal.sync_data().unwrap();
        sync_dir(&d.mnt.join("db"));
        wal.write_all_at(b"record 2;", 9).unwrap();
        wal.sync_data().unwrap();
        // Not synced: a new file, an append, an overwrite, and an unlink.
        write_file(&d.mnt.join("db/lost"), b"never synced");
        wal.write_all_at(b"record 3;", 18).unwrap();
        drop(wal);
        OpenOptions::new().write(true).open(d.mnt.join("db/kept")).unwrap().write_all_at(b"ACK", 0).unwrap();
        std::fs::remove_file(d.mnt.join("db/wal")).unwrap();

        // Until the cut, everyone sees the cache.
        assert_eq!(read(&d.mnt.join("db/lost")).as_deref(), Some(&b"never synced"[..]));
        assert_eq!(read(&d.mnt.join("db/kept")).as_deref(), Some(&b"ACKnowledged"[..]));
        assert!(read(&d.mnt.join("db/wal")).is_none());
        // (The unlinked log's bytes leave the cache once the kernel releases its last
        // handle, which it does in the background: not counted here.)
        let pending = m.pending().unwrap();
        assert!(pending.bytes >= 15 && pending.names == 2, "{model:?}: {pending:?}");
        // …and the backing directory holds only what is durable.
        assert!(read(&d.back.join("db/lost")).is_none(), "{model:?}");
        assert_eq!(read(&d.back.join("db/wal")).as_deref(), Some(&b"record 1;record 2;"[..]));

        let lost = m.power_cut().unwrap();
        assert!(lost.bytes >= 15 && lost.names == 2, "{model:?}: {lost:?}");
        assert_eq!(read(&d.back.join("db/kept")).as_deref(), Some(&b"acknowledged"[..]), "{model:?}");
        assert_eq!(read(&d.back.join("db/wal")).as_deref(), Some(&b"record 1;record 2;"[..]), "{model:?}: the unlink is undone");
        assert!(read(&d.back.join("db/lost")).is_none(), "{model:?}");

        // The reboot: mounted again, the filesystem shows the durable state.
        let m = PowercutMount::mount(&d.mnt, &d.back, model).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(d.mnt.join("db")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["kept", "wal"], "{model:?}");
        assert_eq!(read(&d.mnt.join("db/kept")).as_deref(), Some(&b"acknowledged"[..]));
        assert_eq!(m.pending(), Some(Pending::default()));
        m.unmount().unwrap();
    }
}

#[test]
fn names_need_their_directory_synced_under_posix_and_any_fsync_under_the_journal() {
    if skip_without_fuse("names_need_their_directory_synced_under_posix_and_any_fsync_under_the_journal").is_some() {
        return;
    }
    for (model, survives) in [(SyncModel::Posix, false), (SyncModel::Journal, true)] {
        let d = dirs();
        let m = PowercutMount::mount(&d.mnt, &d.back, model).unwrap();
        // The file is fsynced; its directory is not.
        write_file(&d.mnt.join("cert.pem"), b"-----BEGIN CERTIFICATE-----").sync_all().unwrap();
        m.power_cut().unwrap();
        let got = read(&d.back.join("cert.pem"));
        assert_eq!(got.is_some(), survives, "{model:?}: {got:?}");
    }
    // The rename dance (temporary file, fsync, rename, fsync of the directory) is durable
    // in both; before the directory's fsync, the old content is what a cut leaves.
    for model in [SyncModel::Posix, SyncModel::Journal] {
        let d = dirs();
        std::fs::write(d.back.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
        let m = PowercutMount::mount(&d.mnt, &d.back, model).unwrap();
        write_file(&d.mnt.join("CURRENT.tmp"), b"MANIFEST-000002\n").sync_all().unwrap();
        std::fs::rename(d.mnt.join("CURRENT.tmp"), d.mnt.join("CURRENT")).unwrap();
        assert_eq!(read(&d.back.join("CURRENT")).as_deref(), Some(&b"MANIFEST-000001\n"[..]), "{model:?}");
        sync_dir(&d.mnt);
        assert_eq!(read(&d.back.join("CURRENT")).as_deref(), Some(&b"MANIFEST-000002\n"[..]), "{model:?}");
        assert!(read(&d.back.join("CURRENT.tmp")).is_none());
        m.power_cut().unwrap();
    }
}

#[test]
fn locks_truncation_and_positioned_io_work_through_the_kernel() {
    if skip_without_fuse("locks_truncation_and_positioned_io_work_through_the_kernel").is_some() {
        return;
    }
    let d = dirs();
    let m = PowercutMount::mount(&d.mnt, &d.back, SyncModel::Journal).unwrap();
    // RocksDB's LOCK file: the kernel keeps locks for a FUSE filesystem that does not.
    let lock_path = d.mnt.join("LOCK");
    let first = write_file(&lock_path, b"");
    first.try_lock().expect("the first lock");
    let second = OpenOptions::new().write(true).open(&lock_path).unwrap();
    assert!(second.try_lock().is_err(), "a second lock on the same file must be refused");
    first.unlock().unwrap();
    second.try_lock().expect("free again after the unlock");

    // pwrite past the end, pread, truncate, and their sync.
    let f = OpenOptions::new().create(true).read(true).write(true).truncate(true).open(d.mnt.join("table.sst")).unwrap();
    f.write_all_at(b"tail", 8192).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    let mut buf = [0xffu8; 6];
    f.read_exact_at(&mut buf, 8190).unwrap();
    assert_eq!(&buf, b"\0\0tail", "a hole reads as zeros");
    assert_eq!(f.metadata().unwrap().len(), 8196);
    f.set_len(6).unwrap();
    assert_eq!(std::fs::read(d.mnt.join("table.sst")).unwrap(), b"head\0\0");
    f.sync_all().unwrap();
    assert_eq!(read(&d.back.join("table.sst")).as_deref(), Some(&b"head\0\0"[..]));
    drop((f, first, second));
    m.unmount().unwrap();
    // A clean unmount synced everything: the lock file is there.
    assert!(d.back.join("LOCK").exists());
}

/// The binary, driven as its usage says: mounted, told to cut on its control socket.
#[test]
fn the_binary_cuts_on_command() {
    if skip_without_fuse("the_binary_cuts_on_command").is_some() {
        return;
    }
    let d = dirs();
    let control = d.back.parent().unwrap().join("control.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_legalchat-powercut-fs"))
        .arg("--control")
        .arg(&control)
        .arg(&d.mnt)
        .arg(&d.back)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready when it says so (bounded: the reader thread gives up with the process).
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = ready_tx.send(line);
        }
    });
    let line = ready_rx.recv_timeout(Duration::from_secs(30)).expect("the mounted line");
    assert!(line.starts_with("legalchat-powercut-fs mounted "), "{line}");

    write_file(&d.mnt.join("synced"), b"kept").sync_all().unwrap();
    sync_dir(&d.mnt);
    write_file(&d.mnt.join("unsynced"), b"lost");

    let mut socket = std::os::unix::net::UnixStream::connect(&control).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    socket.write_all(b"status\ncut\n").unwrap();
    let mut answers = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.matches('\n').count() < 2 && Instant::now() < deadline {
        let mut buf = [0u8; 256];
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answers.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("reading the control socket: {e}"),
        }
    }
    assert_eq!(answers, "pending files=1 bytes=4 names=1\ncut files=1 bytes=4 names=1\n");
    // It exits after the cut (bounded wait).
    let (exit_tx, exit_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = exit_rx.recv_timeout(Duration::from_secs(30)).expect("the binary exits after the cut").unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(read(&d.back.join("synced")).as_deref(), Some(&b"kept"[..]));
    assert!(read(&d.back.join("unsynced")).is_none());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(d.mnt.to_str().unwrap()), "unmounted");
}

/// A cut while a file is still open (as when a test fails before its daemon is gone):
/// the unmount cannot wait for the file to close, so the connection is aborted and the
/// writer gets errors from then on. Aborting needs root; elsewhere this is skipped.
#[test]
fn a_cut_with_a_file_still_open_ends_the_mount() {
    if skip_without_fuse("a_cut_with_a_file_still_open_ends_the_mount").is_some() {
        return;
    }
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !root {
        eprintln!("skipped: a_cut_with_a_file_still_open_ends_the_mount: aborting a FUSE connection needs root");
        return;
    }
    let d = dirs();
    let m = PowercutMount::mount(&d.mnt, &d.back, SyncModel::Journal).unwrap();
    let mut open = write_file(&d.mnt.join("busy"), b"unsynced");
    let started = Instant::now();
    let lost = m.power_cut().expect("the cut unmounts even with a file open");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(lost.bytes, 8);
    assert!(open.write_all(b"more").and_then(|()| open.sync_all()).is_err(), "the writer sees the power gone");
    assert!(read(&d.back.join("busy")).is_none());
}
