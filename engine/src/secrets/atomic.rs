//! Crash-safe file replacement: write a temporary file in the target's directory, fsync it,
//! rename it over the target, fsync the directory. A reader (or a crash) sees either the old
//! content or the new one, never a mix. Used for secrets files and reusable by any module
//! that must not leave half-written files (journals, key files, bundles).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Options for [`write_atomic`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtomicWriteOptions {
    /// The new file's permission bits. `None` keeps the mode of the file being replaced, or
    /// uses 0644 for a new file.
    pub mode: Option<u32>,
}

/// An atomic write failed; the target is unchanged.
#[derive(Debug, thiserror::Error)]
#[error("could not write {path} ({step}); the file was left unchanged")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `contents` atomically (see the module documentation).
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    options: &AtomicWriteOptions,
) -> Result<(), AtomicWriteError> {
    let fail = |step: &'static str| move |source| AtomicWriteError { path: path.to_owned(), step, source };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let mode = match options.mode {
        Some(mode) => mode,
        None => match std::fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode() & 0o7777,
            Err(_) => 0o644,
        },
    };
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    // The temporary file is created 0600 and removed on every error path by its drop.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(&directory)
        .map_err(fail("create a temporary file"))?;
    temp.write_all(contents).map_err(fail("write the temporary file"))?;
    temp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(fail("set permissions"))?;
    temp.as_file().sync_all().map_err(fail("fsync the temporary file"))?;
    temp.persist(path).map_err(|error| fail("rename over the target")(error.error))?;
    sync_dir(&directory).map_err(fail("fsync the directory"))?;
    Ok(())
}

/// Fsyncs a directory so a rename or a new entry in it survives a crash.
pub fn sync_dir(directory: &Path) -> std::io::Result<()> {
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_keeps_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.enc.yaml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new", &AtomicWriteOptions::default()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_names_the_file_and_step() {
        let error = write_atomic(
            Path::new("/nonexistent-dir-7d1/x.yaml"),
            b"x",
            &AtomicWriteOptions { mode: Some(0o600) },
        )
        .unwrap_err();
        assert!(error.to_string().contains("/nonexistent-dir-7d1/x.yaml"));
        assert_eq!(error.step, "create a temporary file");
    }
}
