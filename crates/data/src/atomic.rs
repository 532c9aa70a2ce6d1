//! Atomic file replacement: readers see either the old file or the complete
//! new one, never a partial write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writes within one process.
static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` by writing a temporary file in the same folder,
/// syncing it to disk, and renaming it over `path`. The folder is then synced
/// so that the rename itself survives a crash. That last step is best effort
/// and its failure is ignored, because some platforms and file systems do
/// not support syncing a folder.
///
/// # Errors
///
/// Returns the I/O error of creating, writing, syncing or renaming the
/// temporary file, which is removed on failure. Returns `InvalidInput` when
/// `path` has no file name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(path)?;
    let result = write_and_sync(&temp, bytes).and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // The write already failed, and a leftover temporary file is harmless.
        let _ = fs::remove_file(&temp);
        return result;
    }
    sync_parent(path);
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, as
/// [`write_atomic`] does, but without syncing to disk. Readers still see
/// the old or the new file whole, and the new one survives a crash of the
/// process, but not always a crash of the machine. It suits state that is
/// replaced many times per second.
///
/// # Errors
///
/// As for [`write_atomic`].
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(path)?;
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // The write already failed, and a leftover temporary file is harmless.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Returns a hidden, unique sibling of `path`, such as
/// `.model.safetensors.1234.0.tmp`.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let id = NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{id}.tmp", process::id()));
    Ok(path.with_file_name(temp_name))
}

fn write_and_sync(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list folder")
            .map(|entry| {
                entry
                    .expect("folder entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_new_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"hello").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"hello");
        assert_eq!(folder_entries(dir.path()), vec!["a.bin"]);
    }

    #[test]
    fn replaces_existing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.bin");
        fs::write(&path, b"a much longer old content").expect("old file");
        write_atomic(&path, b"new").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert_eq!(folder_entries(dir.path()), vec!["a.bin"]);
    }

    #[test]
    fn missing_folder_fails_cleanly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("no-such-folder/a.bin");
        let error = write_atomic(&path, b"x").expect_err("folder missing");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(folder_entries(dir.path()).is_empty());
    }

    #[test]
    fn rename_failure_removes_temp_file() {
        // POSIX rename cannot replace a folder with a file (EISDIR).
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("taken");
        fs::create_dir(&target).expect("folder");
        fs::write(target.join("inside"), b"x").expect("file in folder");

        assert!(write_atomic(&target, b"x").is_err());
        assert_eq!(folder_entries(dir.path()), vec!["taken"]);
    }

    #[test]
    fn path_without_file_name() {
        let error = write_atomic(Path::new("/"), b"x").expect_err("no file name");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
