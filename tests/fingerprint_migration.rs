//! A deployed environment whose journal holds fingerprints of an older format (as written by
//! the previous release) is not redeployed because the format changed: `plan` shows a format
//! migration, not N updates; `deploy` re-records each step whose effect still holds without
//! running it, and runs only the steps whose effect the target no longer shows.

mod util;

use platform::access::read_env_file;
use platform::journal::{Journal, StepOutcome, StepRecord};
use platform::plan::diff::Snapshot;
use platform::plan::{Plan, legacy_fingerprint};
use platform::session::{self, JournalPlace};
use util::Repo;

/// Every file under `dir` with its bytes.
fn read_tree(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn compile(repo: &Repo) -> Plan {
    util::compile_example(repo)
}

/// Replaces the example's journal by one holding, for every step, a success recorded under
/// fingerprint format `format` (1 or 2): what an earlier release wrote after deploying the
/// same inputs.
fn write_old_journal(repo: &Repo, plan: &Plan, format: u32) {
    let env_file = read_env_file(repo.root(), "example").unwrap();
    let place = session::journal_place(repo.root(), "example", &env_file, || {
        session::decrypt_admin_password(repo.root(), "example", None)
    })
    .unwrap();
    let JournalPlace::File { journal, .. } = &place else { panic!("example journals to a file") };
    std::fs::remove_file(journal).unwrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let mut opened = Journal::open_file(journal, "example").await.unwrap();
        for step in plan.steps() {
            let old =
                legacy_fingerprint(&plan.target, &step.action, format).expect("the format is computable");
            assert_eq!(platform::plan::fingerprint_format(&old), format, "{old}");
            let mut snapshot = Snapshot::of(step);
            snapshot.fingerprint = old.clone();
            let now = time::OffsetDateTime::now_utc();
            let record = StepRecord {
                step_id: step.id.clone(),
                fingerprint: old,
                outcome: StepOutcome::Succeeded,
                started_at: now,
                finished_at: now,
                outputs: serde_json::Value::Null,
                snapshot: serde_json::to_value(&snapshot).unwrap(),
            };
            opened.append(&record).await.unwrap();
        }
    });
    // The previous release wrote no journal lineage into the bundle's index (and the journal
    // written here has a new one).
    let index_path = repo.root().join("bundle/example/index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index.as_object_mut().unwrap().remove("lineage");
    std::fs::write(&index_path, serde_json::to_string_pretty(&index).unwrap()).unwrap();
}

#[test]
fn fingerprint_format_one_is_migrated_without_running_the_steps() {
    an_older_fingerprint_format_is_migrated_without_running_the_steps(1);
}

#[test]
fn fingerprint_format_two_with_value_only_secret_digests_is_migrated_without_running_the_steps() {
    an_older_fingerprint_format_is_migrated_without_running_the_steps(2);
}

fn an_older_fingerprint_format_is_migrated_without_running_the_steps(format: u32) {
    let repo = Repo::shipped();
    repo.xtask(&["deploy", "example"]).assert_code(0);
    let plan = compile(&repo);
    let steps = plan.len();
    if format == 2 {
        // The secret digests really changed: a step with secrets has other digests in format 2.
        let with_secrets = plan
            .steps()
            .filter(|s| s.action.values().is_some_and(|v| !v.legacy_digests().is_empty()))
            .count();
        assert!(with_secrets >= 5, "steps whose secret digests changed: {with_secrets}");
    }
    write_old_journal(&repo, &plan, format);

    let shown = repo.xtask(&["plan", "example"]);
    shown.assert_code(0);
    assert!(
        shown.stdout.contains(&format!("0 to create, 0 to update, 0 unchanged\n{steps} step(s) were recorded under an older fingerprint format")),
        "{}",
        shown.stdout
    );
    let json = repo.xtask(&["plan", "example", "--format", "json"]);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(document["summary"]["migrate"], serde_json::json!(steps));
    assert!(document["steps"].as_array().unwrap().iter().all(|s| s["change"] == "migrate"));

    // Every file in the bundle stays as it is: nothing runs.
    let bundle = repo.root().join("bundle/example");
    let before = read_tree(&bundle);
    let deploy = repo.xtask(&["deploy", "example"]);
    deploy.assert_code(0);
    assert!(
        deploy.stderr.contains(&format!("0 succeeded, 0 failed, 0 skipped, {steps} unchanged")),
        "{}",
        deploy.stderr
    );
    // The index gains the lineage of the journal that now deploys the bundle; nothing else changes.
    let mut after_tree = read_tree(&bundle);
    let index = after_tree.get_mut(&bundle.join("index.json")).expect("the index");
    let mut document: serde_json::Value = serde_json::from_slice(index).unwrap();
    assert!(document.as_object_mut().unwrap().remove("lineage").is_some_and(|l| l.is_string()));
    *index = serde_json::to_string_pretty(&document).unwrap().into_bytes();
    assert_eq!(after_tree, before, "a migration rewrote bundle files");

    // The journal now holds the current format: the next plan is plainly unchanged.
    let after = repo.xtask(&["plan", "example"]);
    assert!(
        after.stdout.contains(&format!("0 to create, 0 to update, {steps} unchanged\n")),
        "{}",
        after.stdout
    );
    assert!(!after.stdout.contains("older fingerprint format"), "{}", after.stdout);
}

#[test]
fn a_migrated_step_whose_files_are_gone_runs_again() {
    let repo = Repo::shipped();
    repo.xtask(&["deploy", "example"]).assert_code(0);
    let plan = compile(&repo);
    write_old_journal(&repo, &plan, 2);
    let secret = repo.root().join("bundle/example/secrets/opus/oob-consent-secrets.enc.yaml");
    std::fs::remove_file(&secret).unwrap();

    let deploy = repo.xtask(&["deploy", "example"]);
    deploy.assert_code(0);
    let unchanged = plan.len() - 1;
    assert!(
        deploy.stderr.contains(&format!("1 succeeded, 0 failed, 0 skipped, {unchanged} unchanged")),
        "{}",
        deploy.stderr
    );
    assert!(secret.is_file(), "the step that wrote the secret ran again");
}
