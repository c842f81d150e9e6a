//! The file journal: a checksummed append log, one line per entry, `<sha256 hex> <json>\n`,
//! the checksum covering the JSON bytes exactly. The first line is the [`JournalHeader`], written
//! atomically when the journal is created; every further line is a [`StepRecord`], written at
//! the end of the file and fsynced before [`FileJournal::append`] returns, so a record is
//! durable before the next step starts.
//!
//! A crash while appending leaves at most one torn line at the end (no newline, or a checksum
//! that does not match). Opening such a journal fails with [`JournalError::TornRecord`]; it is
//! never read as if the record (or the journal) were empty. [`repair`] cuts exactly that line,
//! after which the step it described simply runs again. A bad line anywhere else is corruption,
//! reported and never skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{JOURNAL_FORMAT, JournalError, JournalHeader, JournalLocation, OpenJournalOptions, StepRecord};
use crate::secrets::{AtomicWriteOptions, write_atomic};

/// How much of a dropped torn line a [`RepairReport`] shows.
const DROPPED_PREVIEW_CHARS: usize = 200;

/// An open file journal. Appends assume the caller holds the environment's deploy lock.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    header: JournalHeader,
    file: Arc<File>,
    /// Length of the valid content: the next record is written here.
    len: u64,
    latest: BTreeMap<String, StepRecord>,
    /// Set when an append failed and its partial line could not be cut: no further appends.
    poisoned: bool,
}

/// What [`repair`] dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub path: PathBuf,
    /// The line number of the torn record (1-based).
    pub line: usize,
    pub dropped_bytes: u64,
    /// The start of the dropped text, for the operator to see what is lost.
    pub dropped_preview: String,
}

/// A journal file, read and checked.
struct Parsed {
    header: JournalHeader,
    records: Vec<StepRecord>,
    /// The torn last line: its number and the byte offset where it starts.
    torn: Option<(usize, u64)>,
    /// Length of the file.
    len: u64,
}

fn io_error(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io { path, step, source }
}

/// `<sha256 hex> <json>\n`
fn encode_line(json: &[u8]) -> Vec<u8> {
    let mut line = hex::encode(Sha256::digest(json)).into_bytes();
    line.push(b' ');
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

/// The JSON of a line whose checksum matches, or `None`.
fn verify_line(line: &[u8]) -> Option<&[u8]> {
    let (checksum, json) = (line.get(..64)?, line.get(65..)?);
    if line[64] != b' ' {
        return None;
    }
    let expected = hex::encode(Sha256::digest(json));
    (checksum == expected.as_bytes()).then_some(json)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, JournalError> {
    let corrupt = |line: usize, reason: String| JournalError::Corrupt { path: path.to_owned(), line, reason };
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A file ending with a newline splits into a last empty piece; otherwise the last piece is
    // an unterminated line.
    let unterminated_last = match lines.last() {
        Some([]) => {
            lines.pop();
            false
        }
        _ => true,
    };
    if bytes.is_empty() {
        return Err(corrupt(1, "the file is empty; a journal starts with a header line".into()));
    }
    let n_lines = lines.len();

    // The header is written atomically: any damage to it is corruption, never a torn record.
    let header_json = match verify_line(lines[0]) {
        Some(json) if !(n_lines == 1 && unterminated_last) => json,
        _ => return Err(corrupt(1, "the header line is damaged (checksum mismatch)".into())),
    };
    let header: JournalHeader = serde_json::from_slice(header_json)
        .map_err(|error| corrupt(1, format!("the header is not a journal header: {error}")))?;

    let mut records = Vec::with_capacity(n_lines.saturating_sub(1));
    let mut offset = lines[0].len() as u64 + 1;
    let mut torn = None;
    for (idx, line) in lines.iter().enumerate().skip(1) {
        let line_no = idx + 1;
        let is_last = idx == n_lines - 1;
        match verify_line(line) {
            Some(json) if !(is_last && unterminated_last) => {
                let record: StepRecord = serde_json::from_slice(json).map_err(|error| {
                    corrupt(line_no, format!("the checksum matches but the record is unreadable: {error}"))
                })?;
                records.push(record);
            }
            _ if is_last => torn = Some((line_no, offset)),
            _ => return Err(corrupt(line_no, "checksum mismatch in a record followed by others".into())),
        }
        offset += line.len() as u64 + 1;
    }
    Ok(Parsed { header, records, torn, len: bytes.len() as u64 })
}

fn check_header(
    path: &Path,
    header: &JournalHeader,
    environment: &str,
    options: &OpenJournalOptions,
) -> Result<(), JournalError> {
    if header.format > JOURNAL_FORMAT {
        return Err(JournalError::UnsupportedFormat {
            location: JournalLocation::File(path.to_owned()),
            found: header.format,
        });
    }
    if header.environment != environment {
        return Err(JournalError::WrongEnvironment {
            path: path.to_owned(),
            expected: environment.to_owned(),
            found: header.environment.clone(),
            lineage: header.lineage,
        });
    }
    match options.expected_lineage {
        Some(expected) if expected != header.lineage => Err(JournalError::LineageMismatch {
            location: JournalLocation::File(path.to_owned()),
            environment: environment.to_owned(),
            expected,
            found: header.lineage,
        }),
        _ => Ok(()),
    }
}

fn read_and_parse(path: &Path) -> Result<Parsed, JournalError> {
    let bytes = std::fs::read(path).map_err(io_error(path, "read"))?;
    parse(path, &bytes)
}

impl FileJournal {
    /// Opens the journal at `path`, or creates it (and its directory) with a header for
    /// `environment` when the file does not exist. Blocking.
    pub fn open(
        path: &Path,
        environment: &str,
        options: &OpenJournalOptions,
    ) -> Result<FileJournal, JournalError> {
        if !path.try_exists().map_err(io_error(path, "look for"))? {
            create(path, environment, options)?;
        }
        let parsed = read_and_parse(path)?;
        check_header(path, &parsed.header, environment, options)?;
        if let Some((line, _)) = parsed.torn {
            return Err(JournalError::TornRecord { path: path.to_owned(), line });
        }
        let file =
            std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(io_error(path, "open"))?;
        let mut latest = BTreeMap::new();
        for record in parsed.records {
            latest.insert(record.step_id.clone(), record);
        }
        Ok(FileJournal {
            path: path.to_owned(),
            header: parsed.header,
            file: Arc::new(file),
            len: parsed.len,
            latest,
            poisoned: false,
        })
    }

    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record of every step.
    pub fn latest(&self) -> &BTreeMap<String, StepRecord> {
        &self.latest
    }

    /// Appends `record` and fsyncs the file before returning.
    pub async fn append(&mut self, record: &StepRecord) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Io {
                path: self.path.clone(),
                step: "append to (an earlier append failed and left a partial record)",
                source: std::io::Error::other("journal closed after a failed append"),
            });
        }
        let record = record.normalized();
        let json = serde_json::to_vec(&record)
            .map_err(|source| JournalError::Encode { step_id: record.step_id.clone(), source })?;
        let line = encode_line(&json);
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let offset = self.len;
        let written = tokio::task::spawn_blocking(move || write_record(&file, &path, offset, &line))
            .await
            .expect("the journal write task does not panic");
        match written {
            Ok(n_bytes) => {
                self.len += n_bytes;
                self.latest.insert(record.step_id.clone(), record);
                Ok(())
            }
            Err((error, cut)) => {
                self.poisoned = !cut;
                Err(error)
            }
        }
    }

    /// The last `limit` records, newest first (read from the file).
    pub async fn history(&self, limit: usize) -> Result<Vec<StepRecord>, JournalError> {
        let path = self.path.clone();
        let parsed = tokio::task::spawn_blocking(move || read_and_parse(&path))
            .await
            .expect("the journal read task does not panic")?;
        Ok(parsed.records.into_iter().rev().take(limit).collect())
    }

    /// The last `limit` records of `step_id`, newest first.
    pub async fn history_of(&self, step_id: &str, limit: usize) -> Result<Vec<StepRecord>, JournalError> {
        let path = self.path.clone();
        let parsed = tokio::task::spawn_blocking(move || read_and_parse(&path))
            .await
            .expect("the journal read task does not panic")?;
        Ok(parsed.records.into_iter().rev().filter(|r| r.step_id == step_id).take(limit).collect())
    }
}

/// Writes one line at `offset` and fsyncs. On failure, cuts the file back to `offset` so no
/// partial line stays in the middle of the log; the flag says whether that worked.
fn write_record(file: &File, path: &Path, offset: u64, line: &[u8]) -> Result<u64, (JournalError, bool)> {
    let result = file
        .write_all_at(line, offset)
        .map_err(io_error(path, "append to"))
        .and_then(|()| file.sync_data().map_err(io_error(path, "fsync")));
    match result {
        Ok(()) => Ok(line.len() as u64),
        Err(error) => {
            let cut = file.set_len(offset).and_then(|()| file.sync_data()).is_ok();
            Err((error, cut))
        }
    }
}

fn create(path: &Path, environment: &str, options: &OpenJournalOptions) -> Result<(), JournalError> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error(path, "create the directory of"))?;
    }
    let header = JournalHeader::new(environment, options.expected_lineage);
    let json = serde_json::to_vec(&header).expect("a journal header always encodes");
    // Atomic: a crash leaves no journal or a whole header, never a torn header.
    write_atomic(path, &encode_line(&json), &AtomicWriteOptions { mode: Some(0o644) })
        .map_err(|source| JournalError::Create { path: path.to_owned(), source })
}

/// Cuts a torn last record off the journal at `path` (of `environment`) and returns what was
/// dropped, or `None` when the journal has no torn record. Corruption elsewhere is still an
/// error: only the torn tail, which a crash can leave, is ever removed.
pub fn repair(path: &Path, environment: &str) -> Result<Option<RepairReport>, JournalError> {
    let bytes = std::fs::read(path).map_err(io_error(path, "read"))?;
    let parsed = parse(path, &bytes)?;
    check_header(path, &parsed.header, environment, &OpenJournalOptions::default())?;
    let Some((line, offset)) = parsed.torn else {
        return Ok(None);
    };
    let dropped = &bytes[offset as usize..];
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(io_error(path, "open"))?;
    file.set_len(offset).map_err(io_error(path, "truncate"))?;
    file.sync_all().map_err(io_error(path, "fsync"))?;
    Ok(Some(RepairReport {
        path: path.to_owned(),
        line,
        dropped_bytes: parsed.len - offset,
        dropped_preview: String::from_utf8_lossy(dropped).chars().take(DROPPED_PREVIEW_CHARS).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_verifies_only_with_its_own_checksum() {
        let line = encode_line(br#"{"a":1}"#);
        assert_eq!(verify_line(&line[..line.len() - 1]), Some(&br#"{"a":1}"#[..]));
        let mut changed = line.clone();
        changed[66] = b'b';
        assert_eq!(verify_line(&changed[..changed.len() - 1]), None);
        assert_eq!(verify_line(b"short"), None);
    }

    #[test]
    fn an_empty_file_is_corrupt_not_an_empty_journal() {
        let error = parse(Path::new("j"), b"").err().unwrap();
        assert!(matches!(error, JournalError::Corrupt { line: 1, .. }), "{error:?}");
    }
}
