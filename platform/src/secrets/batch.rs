//! Replacing many files at once without paying one flush per file, and without weakening what
//! [`super::write_atomic`] guarantees for each of them: after a crash every file holds its old
//! content or its new one, never a mix and never nothing.
//!
//! The order is: every new content goes to a temporary file beside its target (named after
//! the target, so a rerun after a crash finds and replaces a leftover); each file system that
//! holds one is flushed once (`syncfs(2)`, which covers every file written to it); then every
//! temporary file is renamed over its target, and the file systems are flushed once more, so
//! the renames are durable before the caller records the batch as done. Two flushes per file
//! system instead of two per file: rotating a thousand files costs a few flushes, not a few
//! thousand.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::atomic::AtomicWriteError;

/// One file of a batch: where it goes and its new content. The file keeps its mode (0644 for
/// a new file).
#[derive(Debug, Clone)]
pub struct BatchFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// Where a batch stands, for a caller that reports progress (and for the crash tests, which
/// kill the process at each of these points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPoint {
    /// The temporary file of the `n`th file (1-based) is written, not yet flushed.
    Written(usize),
    /// Every temporary file is durable; no target has changed yet.
    Flushed,
    /// `n` targets (counted from 1, in the order their renames finished, which need not be
    /// the order of the files) have their new content.
    Renamed(usize),
    /// Every rename is durable.
    Done,
}

/// How long the batch spent on each part: writing, and making it durable (flushes and
/// renames), which a benchmark reports apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTimings {
    pub write: Duration,
    pub durability: Duration,
}

impl BatchTimings {
    pub fn add(&mut self, other: BatchTimings) {
        self.write += other.write;
        self.durability += other.durability;
    }
}

/// The temporary file a batch writes before renaming it over `target`.
pub fn batch_temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.opus-batch.tmp"))
}

/// Removes the temporary file a killed batch may have left beside `target` (it holds only the
/// same kind of content as the target, never plaintext, but it is litter). Returns whether
/// there was one.
pub fn remove_leftover(target: &Path) -> bool {
    std::fs::remove_file(batch_temp_path(target)).is_ok()
}

/// Replaces every file of `files` (see the module documentation). `at` sees each point as it
/// is reached (the renames' on the threads doing them). On an error the targets renamed so far
/// hold their new content and the others their old one; the temporary files not yet renamed
/// are removed.
pub fn write_batch(
    files: &[BatchFile],
    at: &(dyn Fn(BatchPoint) + Sync),
) -> Result<BatchTimings, AtomicWriteError> {
    let mut timings = BatchTimings::default();
    let started = Instant::now();
    let mut written: Vec<PathBuf> = Vec::with_capacity(files.len());
    let result = (|| {
        // The temporary files are written, and later renamed, by more workers than cores:
        // creating a file, and freeing the one a rename replaces, is kernel work that mostly
        // waits on the file system's journal, and files in different folders do not contend.
        // Each one's file system is noted to be flushed with syncfs.
        let outcomes = crate::parallel::map_waiting(files, write_temporary);
        let mut file_systems: BTreeMap<u64, std::fs::File> = BTreeMap::new();
        let mut failure = None;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok((temp, device)) => {
                    if let std::collections::btree_map::Entry::Vacant(slot) = file_systems.entry(device) {
                        let handle = std::fs::File::open(&temp).map_err(|source| AtomicWriteError {
                            path: files[index].path.clone(),
                            step: "open the temporary file",
                            source,
                        });
                        match handle {
                            Ok(handle) => {
                                slot.insert(handle);
                            }
                            Err(error) => {
                                failure.get_or_insert(error);
                            }
                        }
                    }
                    written.push(temp);
                    at(BatchPoint::Written(index + 1));
                }
                Err(error) => {
                    // Its temporary file, if any, is removed below with the others.
                    written.push(batch_temp_path(&files[index].path));
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        timings.write = started.elapsed();
        let durable = Instant::now();
        flush(&file_systems, files)?;
        at(BatchPoint::Flushed);
        // After a failed rename no other one starts; the ones under way finish.
        let failed = std::sync::atomic::AtomicBool::new(false);
        let renamed = std::sync::atomic::AtomicUsize::new(0);
        let indices: Vec<usize> = (0..files.len()).collect();
        let renames = crate::parallel::map_waiting(&indices, |&index| {
            use std::sync::atomic::Ordering::Relaxed;
            if failed.load(Relaxed) {
                return Ok(());
            }
            let file = &files[index];
            let result = std::fs::rename(&written[index], &file.path);
            if let Err(source) = result {
                failed.store(true, Relaxed);
                return Err(AtomicWriteError {
                    path: file.path.clone(),
                    step: "rename over the target",
                    source,
                });
            }
            at(BatchPoint::Renamed(renamed.fetch_add(1, Relaxed) + 1));
            Ok(())
        });
        renames.into_iter().collect::<Result<(), AtomicWriteError>>()?;
        written.clear();
        flush(&file_systems, files)?;
        timings.durability = durable.elapsed();
        at(BatchPoint::Done);
        Ok(timings)
    })();
    for temp in &written {
        let _ = std::fs::remove_file(temp);
    }
    result
}

/// Writes one temporary file: its path and its device.
fn write_temporary(file: &BatchFile) -> Result<(PathBuf, u64), AtomicWriteError> {
    let temp = batch_temp_path(&file.path);
    let fail = |step: &'static str| {
        let path = file.path.clone();
        move |source| AtomicWriteError { path, step, source }
    };
    let mode = match std::fs::metadata(&file.path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(_) => 0o644,
    };
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(fail("create a temporary file"))?;
    handle.write_all(&file.contents).map_err(fail("write the temporary file"))?;
    // The mode given to open is masked by the umask; set it exactly.
    handle.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(fail("set permissions"))?;
    let device = handle.metadata().map_err(fail("read the temporary file's metadata"))?.dev();
    Ok((temp, device))
}

fn flush(file_systems: &BTreeMap<u64, std::fs::File>, files: &[BatchFile]) -> Result<(), AtomicWriteError> {
    use std::os::fd::AsRawFd;
    for handle in file_systems.values() {
        // SAFETY: syncfs takes an open file descriptor we own for the duration of the call.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
            return Err(AtomicWriteError {
                path: files.first().map(|f| f.path.clone()).unwrap_or_default(),
                step: "flush the file system",
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_file_keeps_modes_and_reports_each_point() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.enc.yaml");
        let b = dir.path().join("sub/b.enc.yaml");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(&a, "old a").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640)).unwrap();
        let points = std::sync::Mutex::new(Vec::new());
        write_batch(
            &[
                BatchFile { path: a.clone(), contents: b"new a".to_vec() },
                BatchFile { path: b.clone(), contents: b"new b".to_vec() },
            ],
            &|point| points.lock().unwrap().push(point),
        )
        .unwrap();
        // Fewer files than a worker takes at once: one worker renames them, in order.
        let points = points.into_inner().unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new b");
        assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(
            points,
            [
                BatchPoint::Written(1),
                BatchPoint::Written(2),
                BatchPoint::Flushed,
                BatchPoint::Renamed(1),
                BatchPoint::Renamed(2),
                BatchPoint::Done
            ]
        );
        assert!(!batch_temp_path(&a).exists() && !batch_temp_path(&b).exists());
    }

    #[test]
    fn a_failed_rename_leaves_the_rest_unchanged_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "old a").unwrap();
        // A directory where the second target should be: its rename fails.
        let b = dir.path().join("b");
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("inside"), "x").unwrap();
        let c = dir.path().join("c");
        std::fs::write(&c, "old c").unwrap();
        let files = [
            BatchFile { path: a.clone(), contents: b"new a".to_vec() },
            BatchFile { path: b.clone(), contents: b"new b".to_vec() },
            BatchFile { path: c.clone(), contents: b"new c".to_vec() },
        ];
        let error = write_batch(&files, &|_| {}).unwrap_err();
        assert_eq!(error.step, "rename over the target");
        assert_eq!(error.path, b);
        // Fewer files than a worker takes at once: renamed in order, and none after b.
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "old c");
        assert!(b.join("inside").exists(), "the directory in b's place was touched");
        for file in &files {
            assert!(!batch_temp_path(&file.path).exists(), "{}", file.path.display());
        }
    }

    #[test]
    fn many_files_are_renamed_by_several_workers_each_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<BatchFile> = (0..64)
            .map(|n| {
                let path = dir.path().join(format!("f{n}"));
                std::fs::write(&path, format!("old {n}")).unwrap();
                BatchFile { path, contents: format!("new {n}").into_bytes() }
            })
            .collect();
        let renamed = std::sync::Mutex::new(Vec::new());
        write_batch(&files, &|point| {
            if let BatchPoint::Renamed(n) = point {
                renamed.lock().unwrap().push(n);
            }
        })
        .unwrap();
        let mut renamed = renamed.into_inner().unwrap();
        renamed.sort_unstable();
        assert_eq!(renamed, (1..=64).collect::<Vec<_>>());
        for (n, file) in files.iter().enumerate() {
            assert_eq!(std::fs::read_to_string(&file.path).unwrap(), format!("new {n}"));
            assert!(!batch_temp_path(&file.path).exists(), "{}", file.path.display());
        }
    }

    #[test]
    fn a_leftover_temporary_file_is_replaced_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(batch_temp_path(&a), "left by a killed batch, longer than the new content").unwrap();
        write_batch(&[BatchFile { path: a.clone(), contents: b"new".to_vec() }], &|_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new");
        std::fs::write(batch_temp_path(&a), "again").unwrap();
        assert!(remove_leftover(&a));
        assert!(!remove_leftover(&a));
    }
}
