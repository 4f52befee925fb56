//! `legalchat-powercut-fs [--model journal|posix] [--control SOCKET] MOUNTPOINT BACKING`
//!
//! Mounts the power-cut filesystem (see the crate's README) and takes commands, one a
//! line, on stdin and, with `--control`, on a Unix socket (one answer line each):
//!
//! ```text
//! status    what is not durable yet      → pending files=N bytes=N names=N
//! sync      make everything durable      → synced
//! cut       the power cut: drop what is not durable, unmount, exit
//!                                        → cut files=N bytes=N names=N (what was lost)
//! unmount   clean shutdown: sync, unmount, exit → unmounted
//! ```
//!
//! Without `--control`, the end of stdin is `unmount`. If the process is killed instead,
//! `fusermount3 -u MOUNTPOINT` removes the dead mount.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use legalchat_powercut::{PowercutMount, SyncModel};

const USAGE: &str = "usage: legalchat-powercut-fs [--model journal|posix] [--control SOCKET] MOUNTPOINT BACKING";

struct Args {
    model: SyncModel,
    control: Option<PathBuf>,
    mountpoint: PathBuf,
    backing: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut model = SyncModel::default();
    let mut control = None;
    let mut positional = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--model") => {
                let value = args.next().ok_or("--model needs a value")?;
                model = value.to_string_lossy().parse()?;
            }
            Some("--control") => control = Some(PathBuf::from(args.next().ok_or("--control needs a path")?)),
            Some("-h" | "--help") => return Err(String::new()),
            Some(s) if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [mountpoint, backing] = <[PathBuf; 2]>::try_from(positional).map_err(|_| "MOUNTPOINT and BACKING are required".to_owned())?;
    Ok(Args { model, control, mountpoint, backing })
}

/// Runs one command; the answer, and whether the process should exit.
fn command(mount: &Mutex<Option<PowercutMount>>, line: &str) -> (String, bool) {
    let mut slot = mount.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(m) = slot.as_ref() else { return ("error: already stopped".into(), true) };
    match line.trim() {
        "status" => match m.pending() {
            Some(p) => (format!("pending {p}"), false),
            None => ("error: cut".into(), true),
        },
        "sync" => match m.sync() {
            Ok(()) => ("synced".into(), false),
            Err(e) => (format!("error: {e}"), false),
        },
        "cut" => match slot.take().map(PowercutMount::power_cut) {
            Some(Ok(lost)) => (format!("cut {lost}"), true),
            Some(Err(e)) => (format!("error: {e}"), true),
            None => ("error: already stopped".into(), true),
        },
        "unmount" => match slot.take().map(PowercutMount::unmount) {
            Some(Ok(())) => ("unmounted".into(), true),
            Some(Err(e)) => (format!("error: {e}"), true),
            None => ("error: already stopped".into(), true),
        },
        "" => (String::new(), false),
        other => (format!("error: unknown command {other:?} (status, sync, cut, unmount)"), false),
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("legalchat-powercut-fs: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let mount = match PowercutMount::mount(&args.mountpoint, &args.backing, args.model) {
        Ok(m) => Arc::new(Mutex::new(Some(m))),
        Err(e) => {
            eprintln!("legalchat-powercut-fs: {e}");
            std::process::exit(1);
        }
    };
    let (exit_tx, exit_rx) = mpsc::channel::<()>();

    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("legalchat-powercut-fs: binding {}: {e}", path.display());
                std::process::exit(1);
            }
        };
        let (mount, exit_tx) = (mount.clone(), exit_tx.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(mut writer) = stream.try_clone() else { continue };
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let (answer, exit) = command(&mount, &line);
                    let _ = writeln!(writer, "{answer}");
                    if exit {
                        let _ = exit_tx.send(());
                        return;
                    }
                }
            }
        });
    }
    {
        let (mount, exit_tx, eof_unmounts) = (mount.clone(), exit_tx.clone(), args.control.is_none());
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let (answer, exit) = command(&mount, &line);
                println!("{answer}");
                if exit {
                    let _ = exit_tx.send(());
                    return;
                }
            }
            if eof_unmounts {
                let (answer, _) = command(&mount, "unmount");
                println!("{answer}");
                let _ = exit_tx.send(());
            }
        });
    }
    println!("legalchat-powercut-fs mounted {} (backing {}, model {:?})", args.mountpoint.display(), args.backing.display(), args.model);
    let _ = exit_rx.recv();
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
}
