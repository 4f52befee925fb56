//! Small file helpers: every file the daemon writes outside its database is written
//! durably (temporary file, sync, rename, directory sync), and renames are durable.

use std::io::Write as _;
use std::path::Path;

/// Who may read a file the daemon writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The owner only (mode 0600 on Unix): keys and secrets.
    Private,
    /// Anyone who may read the directory: certificates, public keys.
    Public,
}

/// Writes `contents` to `path` so that it survives a power cut whole: into a temporary
/// file beside it, synced, renamed into place, and the directory synced (creating the
/// directory, durably, if needed). After a crash at any point there is either the old
/// file (or none) or the whole new one, never a part: the one way the daemon writes a
/// file outside its database.
pub fn write_durably(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_dir_durably(dir)?;
    let name = path.file_name().ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(match access {
                Access::Private => 0o600,
                Access::Public => 0o644,
            });
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Writes a secret file readable by its owner only, durably (see [`write_durably`]).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_durably(path, contents, Access::Private)
}

/// Creates `dir` and any missing parents, each made durable in its own parent.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// Why a generated file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is there but damaged, and may not be made again.
    #[error("{path} is damaged ({reason}); restore it from a backup{hint}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
        /// What else may be done.
        hint: &'static str,
    },
}

/// Reads a file the daemon generates on first use (development keys and secrets), or
/// creates it with `make()` when absent. A file that is there but fails `check` (empty or
/// cut short by a power failure before this daemon wrote files durably) is made again
/// when `regenerate` (with a warning: what it protected is gone with it), and otherwise
/// is an error that names the file and what to do (`hint`).
pub fn read_or_generate(
    path: &Path,
    make: impl FnOnce() -> String,
    check: impl Fn(&str) -> Result<(), String>,
    regenerate: bool,
    hint: &'static str,
) -> Result<String, GeneratedError> {
    let io = |source| GeneratedError::Io { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let value = s.trim().to_owned();
            match check(&value) {
                Ok(()) => return Ok(value),
                Err(reason) if regenerate => {
                    tracing::warn!(file = %path.display(), %reason, "a generated file is damaged; generating it again");
                }
                Err(reason) => return Err(GeneratedError::Damaged { path: path.display().to_string(), reason, hint }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            if !regenerate {
                let reason = "not text".to_owned();
                return Err(GeneratedError::Damaged { path: path.display().to_string(), reason, hint });
            }
            tracing::warn!(file = %path.display(), "a generated file is damaged (not text); generating it again");
        }
        Err(e) => return Err(io(e)),
    }
    let value = make();
    write_private(path, value.as_bytes()).map_err(io)?;
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_write_creates_its_directories_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_durably(&path, b"first", Access::Private).unwrap();
        write_durably(&path, b"second, longer", Access::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["key.pem"], "the temporary file is renamed into place");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            write_durably(&dir.path().join("cert.pem"), b"public", Access::Public).unwrap();
            assert_eq!(std::fs::metadata(dir.path().join("cert.pem")).unwrap().permissions().mode() & 0o777, 0o644);
        }
    }

    #[test]
    fn a_damaged_generated_file_is_made_again_or_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev/secret");
        let check = |s: &str| if s.len() == 8 { Ok(()) } else { Err(format!("{} characters, not 8", s.len())) };
        assert_eq!(read_or_generate(&path, || "abcdefgh".into(), check, false, "").unwrap(), "abcdefgh", "made when absent");
        assert_eq!(read_or_generate(&path, || "zzzzzzzz".into(), check, false, "").unwrap(), "abcdefgh", "kept once made");

        // Emptied, as a power cut leaves a file that was never synced.
        std::fs::write(&path, "").unwrap();
        let e = read_or_generate(&path, || "zzzzzzzz".into(), check, false, "; or remove it").unwrap_err();
        assert!(matches!(e, GeneratedError::Damaged { .. }), "{e}");
        let said = e.to_string();
        assert!(said.contains("secret") && said.contains("0 characters, not 8") && said.ends_with("; or remove it"), "{said}");
        assert_eq!(std::fs::read(&path).unwrap(), b"", "not made again unless allowed");

        assert_eq!(read_or_generate(&path, || "newvalue".into(), check, true, "").unwrap(), "newvalue", "made again when allowed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newvalue");
    }
}
