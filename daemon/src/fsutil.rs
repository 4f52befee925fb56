//! Small file helpers: secrets written atomically, durable renames.

use std::io::Write as _;
use std::path::Path;

/// Writes a secret file readable by its owner only (mode 0600 on Unix), atomically: a
/// crash leaves either no file or the whole file, never half a key.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads a secret file, or creates it with `make()` when absent.
pub fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let value = make();
            write_private(path, value.as_bytes())?;
            Ok(value)
        }
        Err(e) => Err(e),
    }
}

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Moves a file whose contents are already durable to `to`, creating `to`'s directory if
/// needed, and makes the move durable: after a crash the file is at `to`, or where it was.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().ok_or_else(|| std::io::Error::other(format!("{} has no directory", to.display())))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        if let Some(up) = dir.parent() {
            sync_dir(up)?;
        }
    }
    std::fs::rename(from, to)?;
    sync_dir(dir)
}
