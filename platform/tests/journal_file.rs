//! Tests of the file journal: durability across reopening, torn and corrupt records, repair,
//! and refusal of another environment's or lineage's journal.

use std::path::{Path, PathBuf};

use platform::journal::{self, Journal, JournalError, OpenJournalOptions, StepOutcome, StepRecord};
use time::OffsetDateTime;
use uuid::Uuid;

fn record(step_id: &str, fingerprint: &str, outcome: StepOutcome) -> StepRecord {
    // Journals keep microseconds, as PostgreSQL does.
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap();
    StepRecord {
        step_id: step_id.to_owned(),
        fingerprint: fingerprint.to_owned(),
        outcome,
        started_at: now,
        finished_at: now,
        outputs: serde_json::json!({ "revision": 3 }),
        snapshot: serde_json::json!({ "chart": "oob-consent", "password": "(sensitive)" }),
    }
}

fn journal_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("prod.journal")
}

/// A journal with a header and three records (lines 2, 3, 4).
async fn journal_with_three_records(path: &Path) -> Vec<StepRecord> {
    let mut journal = Journal::open_file(path, "prod").await.unwrap();
    let records = vec![
        record("oob/consent/db", "aa01", StepOutcome::Succeeded),
        record("oob/consent/release", "bb02", StepOutcome::Failed { message: "timed out".into() }),
        record("oob/consent/release", "bb03", StepOutcome::Succeeded),
    ];
    for record in &records {
        journal.append(record).await.unwrap();
    }
    records
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

/// The file's length up to the start of line `line` (1-based).
fn offset_of_line(path: &Path, line: usize) -> u64 {
    file_lines(path).iter().take(line - 1).map(|text| text.len() as u64 + 1).sum()
}

#[tokio::test]
async fn appended_records_survive_reopening_and_latest_keeps_the_last_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let records = journal_with_three_records(&path).await;

    let reopened = Journal::open_file(&path, "prod").await.unwrap();
    let latest = reopened.latest().await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest["oob/consent/db"], records[0]);
    assert_eq!(latest["oob/consent/release"], records[2]);
    assert!(latest["oob/consent/release"].succeeded_with("bb03"));
    assert!(!latest["oob/consent/release"].succeeded_with("bb02"));
}

#[tokio::test]
async fn a_new_journal_gets_a_lineage_that_reopening_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let created = Journal::open_file(&path, "prod").await.unwrap();
    assert_eq!(created.header().environment, "prod");
    assert_eq!(created.header().format, journal::JOURNAL_FORMAT);
    assert!(created.latest().await.unwrap().is_empty());
    let reopened = Journal::open_file(&path, "prod").await.unwrap();
    assert_eq!(reopened.header(), created.header());
    let other = Journal::open_file(&dir.path().join("other.journal"), "prod").await.unwrap();
    assert_ne!(other.header().lineage, created.header().lineage);
}

#[tokio::test]
async fn history_is_newest_first_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let records = journal_with_three_records(&path).await;
    let journal = Journal::open_file(&path, "prod").await.unwrap();
    assert_eq!(journal.history(2).await.unwrap(), vec![records[2].clone(), records[1].clone()]);
    assert_eq!(journal.history(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_record_cut_mid_line_is_a_torn_record_not_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_three_records(&path).await;
    // A crash in the middle of writing the last record.
    let cut_at = offset_of_line(&path, 4) + 40;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut_at).unwrap();

    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    assert!(matches!(&error, JournalError::TornRecord { line: 4, path: p } if *p == path), "{error:?}");
    assert!(error.to_string().contains("torn record at line 4"), "{error}");
}

#[tokio::test]
async fn a_last_record_with_a_bad_checksum_is_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_three_records(&path).await;
    let mut lines = file_lines(&path);
    lines[3] = lines[3].replace("bb03", "bb04");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    assert!(matches!(error, JournalError::TornRecord { line: 4, .. }), "{error:?}");
}

#[tokio::test]
async fn a_complete_last_record_without_its_newline_is_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_three_records(&path).await;
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 1).unwrap();

    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    assert!(matches!(error, JournalError::TornRecord { line: 4, .. }), "{error:?}");
}

#[tokio::test]
async fn repair_drops_only_the_torn_tail_and_the_journal_takes_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let records = journal_with_three_records(&path).await;
    let intact_len = offset_of_line(&path, 4);
    let torn_len = intact_len + 40;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(torn_len).unwrap();
    let torn_text = std::fs::read_to_string(&path).unwrap()[intact_len as usize..].to_owned();

    let report = journal::repair(&path, "prod").unwrap().expect("a torn record to drop");
    assert_eq!(report.line, 4);
    assert_eq!(report.dropped_bytes, 40);
    assert_eq!(report.dropped_preview, torn_text);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), intact_len);

    let mut journal = Journal::open_file(&path, "prod").await.unwrap();
    let latest = journal.latest().await.unwrap();
    assert_eq!(latest["oob/consent/db"], records[0]);
    // The torn success is gone: the last record of the release is the failure before it.
    assert_eq!(latest["oob/consent/release"], records[1]);
    journal.append(&records[2]).await.unwrap();
    let reopened = Journal::open_file(&path, "prod").await.unwrap();
    assert_eq!(reopened.latest().await.unwrap()["oob/consent/release"], records[2]);

    // Nothing left to repair.
    assert_eq!(journal::repair(&path, "prod").unwrap(), None);
}

#[tokio::test]
async fn a_corrupted_middle_record_is_an_error_that_repair_does_not_hide() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_three_records(&path).await;
    let mut lines = file_lines(&path);
    lines[2] = lines[2].replace("timed out", "timed 0ut");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let before = std::fs::read(&path).unwrap();

    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { line: 3, .. }), "{error:?}");
    let error = journal::repair(&path, "prod").unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { line: 3, .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "repair must not touch a corrupt journal");
}

#[tokio::test]
async fn a_damaged_header_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_three_records(&path).await;
    let mut lines = file_lines(&path);
    lines[0] = lines[0].replace("prod", "prox");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { line: 1, .. }), "{error:?}");
}

#[tokio::test]
async fn a_journal_of_another_environment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let staging = Journal::open_file(&path, "staging").await.unwrap();

    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    match &error {
        JournalError::WrongEnvironment { expected, found, lineage, .. } => {
            assert_eq!((expected.as_str(), found.as_str()), ("prod", "staging"));
            assert_eq!(*lineage, staging.header().lineage);
        }
        other => panic!("expected WrongEnvironment, got {other:?}"),
    }
    assert!(error.to_string().contains("belongs to environment `staging`"), "{error}");
    let error = journal::repair(&path, "prod").unwrap_err();
    assert!(matches!(error, JournalError::WrongEnvironment { .. }), "{error:?}");
}

#[tokio::test]
async fn a_journal_with_another_lineage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let created = Journal::open_file(&path, "prod").await.unwrap();
    let recorded = created.header().lineage;

    let same = OpenJournalOptions { expected_lineage: Some(recorded) };
    Journal::open_file_with(&path, "prod", &same).await.unwrap();

    let other = Uuid::new_v4();
    let options = OpenJournalOptions { expected_lineage: Some(other) };
    let error = Journal::open_file_with(&path, "prod", &options).await.unwrap_err();
    match error {
        JournalError::LineageMismatch { expected, found, environment, .. } => {
            assert_eq!((expected, found, environment.as_str()), (other, recorded, "prod"));
        }
        other => panic!("expected LineageMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_journal_is_created_with_the_expected_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let lineage = Uuid::new_v4();
    let options = OpenJournalOptions { expected_lineage: Some(lineage) };
    let journal = Journal::open_file_with(&journal_path(&dir), "prod", &options).await.unwrap();
    assert_eq!(journal.header().lineage, lineage);
}

#[tokio::test]
async fn an_empty_journal_file_is_corruption_not_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.journal");
    std::fs::write(&path, "").unwrap();
    let error = Journal::open_file(&path, "prod").await.unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { line: 1, .. }), "{error:?}");
}

#[tokio::test]
async fn a_journal_of_a_newer_format_is_refused_naming_both_formats() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_three_records(&path).await;
    // What a newer build would write: the same header with a higher format, checksummed.
    let text = std::fs::read_to_string(&path).unwrap();
    let (header_line, rest) = text.split_once('\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_str(&header_line[65..]).unwrap();
    assert_eq!(header["format"], journal::JOURNAL_FORMAT);
    header["format"] = serde_json::json!(journal::JOURNAL_FORMAT + 1);
    let json = serde_json::to_string(&header).unwrap();
    let line = format!("{} {json}", hex::encode(sha2::Sha256::digest(json.as_bytes())));
    std::fs::write(&path, format!("{line}\n{rest}")).unwrap();

    let Err(error) = Journal::open_file(&path, "prod").await else { panic!("a newer journal is refused") };
    assert!(
        matches!(error, JournalError::UnsupportedFormat { found, .. } if found == journal::JOURNAL_FORMAT + 1)
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("format {}", journal::JOURNAL_FORMAT + 1))
            && message.contains(&format!("format {} at most", journal::JOURNAL_FORMAT)),
        "{message}"
    );
    assert!(message.contains("newer"), "says a newer build wrote it: {message}");
}

#[tokio::test]
async fn a_record_of_a_newer_fingerprint_format_is_refused_naming_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let mut journal = Journal::open_file(&path, "prod").await.unwrap();
    let current = platform::plan::FINGERPRINT_FORMAT;
    journal.append(&record("release/a", &format!("{current}:aa"), StepOutcome::Succeeded)).await.unwrap();
    journal.append(&record("@deploy", "", StepOutcome::Succeeded)).await.unwrap();
    assert_eq!(journal.latest().await.unwrap().len(), 2, "the current format and no fingerprint are read");
    journal
        .append(&record("release/b", &format!("{}:bb", current + 1), StepOutcome::Succeeded))
        .await
        .unwrap();

    let reopened = Journal::open_file(&path, "prod").await.unwrap();
    let error = reopened.latest().await.unwrap_err();
    assert!(
        matches!(&error, JournalError::NewerFingerprint { step, found, .. } if step == "release/b" && *found == current + 1),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("fingerprint format {}", current + 1))
            && message.contains(&format!("fingerprint format {current} at most"))
            && message.contains("newer"),
        "{message}"
    );
}
