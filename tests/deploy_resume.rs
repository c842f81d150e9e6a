//! `cargo xtask deploy` and `status` end to end on the `example` environment (a directory
//! target): resuming after a SIGKILL, refusing a second deploy while the lock is held, status
//! after a deploy and after a change, and a torn journal.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use platform::access::{identities_for, read_env_file};
use platform::journal::lock_file;
use platform::secrets::show_file;
use util::{Repo, RunOptions};

const JOURNAL: &str = "environments/example/.opus/journal.log";
const LOCK: &str = "environments/example/.opus/deploy.lock";
const BUNDLE: &str = "bundle/example";
/// A step in the middle of the example plan, with steps after it.
const CRASH_STEP: &str = "opus/oob-authorization-server/database";

/// The JSON events of a `deploy --output json` run, by status: step ids.
fn events(stdout: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_status: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in stdout.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
        if event["event"] == "step" {
            by_status
                .entry(event["status"].as_str().unwrap().to_owned())
                .or_default()
                .insert(event["step"].as_str().unwrap().to_owned());
        }
    }
    by_status
}

fn deploy_json(repo: &Repo, options: &RunOptions) -> util::Run {
    repo.xtask_with(&["deploy", "example", "--output", "json"], options)
}

/// Every file of a folder, by relative path.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                walk(base, &entry.path(), out);
            } else {
                out.insert(entry.path().strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two bundles are equal: plain files byte for byte, SOPS files by their decrypted
/// content (each encryption draws fresh IVs).
fn assert_same_bundle(repo: &Repo, left: &Path, right: &Path) {
    let names = files(left);
    assert_eq!(names, files(right), "the bundles hold different files");
    let env_file = read_env_file(repo.root(), "example").unwrap();
    let identities = identities_for(repo.root(), &env_file).unwrap();
    let mut n_encrypted = 0;
    for name in &names {
        let (a, b) = (left.join(name), right.join(name));
        let a_bytes = std::fs::read(&a).unwrap();
        if String::from_utf8_lossy(&a_bytes).contains("ENC[AES256_GCM") {
            n_encrypted += 1;
            let a_clear =
                show_file(&a, &identities).unwrap_or_else(|e| panic!("decrypt {}: {e}", a.display()));
            let b_clear =
                show_file(&b, &identities).unwrap_or_else(|e| panic!("decrypt {}: {e}", b.display()));
            assert!(a_clear.expose() == b_clear.expose(), "{} decrypts differently", name.display());
        } else {
            let (mut a_text, mut b_text) =
                (String::from_utf8(a_bytes).unwrap(), std::fs::read_to_string(&b).unwrap());
            if name == Path::new("index.json") {
                // Each bundle records the lineage of the journal that deployed it.
                (a_text, b_text) = (without_lineage(&a_text), without_lineage(&b_text));
            }
            assert_eq!(
                without_scram_salts(&a_text),
                without_scram_salts(&b_text),
                "{} differs",
                name.display()
            );
        }
    }
    assert!(n_encrypted > 0, "the example bundle has SOPS files");
}

/// A bundle index without its journal lineage and its record of the last change.
fn without_lineage(index: &str) -> String {
    let mut index: serde_json::Value = serde_json::from_str(index).expect("index.json is JSON");
    let lineage = index.as_object_mut().expect("an object").remove("lineage");
    assert!(lineage.is_some_and(|l| l.is_string()), "index.json records the journal's lineage");
    // And who last set out to change it, when (a resumed deploy had less left to do).
    let change = index.as_object_mut().expect("an object").remove("last_change");
    assert!(change.is_some_and(|c| c["at"].is_string()), "index.json records the last change");
    serde_json::to_string_pretty(&index).unwrap()
}

/// The text with every SCRAM verifier replaced by a placeholder: each verifier has a fresh
/// random salt, so two runs never write the same one.
fn without_scram_salts(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("SCRAM-SHA-256$") {
        out.push_str(&rest[..at]);
        out.push_str("<scram verifier>");
        let end = rest[at..].find('\'').map_or(rest.len(), |n| at + n);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn deploy_killed_mid_run_resumes_without_rerunning_completed_steps() {
    let crashed = Repo::shipped();
    let first = deploy_json(
        &crashed,
        &RunOptions::default().env("OPUS_FAILPOINT", format!("kill-after:{CRASH_STEP}")),
    );
    assert_eq!(first.code, None, "the failpoint kills the process\n{}", first.stderr);
    let completed = events(&first.stdout).remove("succeeded").unwrap_or_default();
    assert!(completed.contains(CRASH_STEP), "the step is journaled before the kill: {completed:?}");

    let second = deploy_json(&crashed, &RunOptions::default());
    second.assert_code(0);
    let events_2 = events(&second.stdout);
    assert_eq!(events_2["unchanged"], completed, "completed steps must be skipped as unchanged");
    let started_again: BTreeSet<_> = events_2["started"].intersection(&completed).collect();
    assert!(started_again.is_empty(), "completed steps ran again: {started_again:?}");
    assert!(!events_2["succeeded"].is_empty(), "the rest of the plan ran");

    let clean = Repo::shipped();
    deploy_json(&clean, &RunOptions::default()).assert_code(0);
    assert_same_bundle(&clean, &crashed.root().join(BUNDLE), &clean.root().join(BUNDLE));
}

#[test]
fn second_deploy_fails_at_once_while_the_lock_is_held() {
    let repo = Repo::shipped();
    let lock_path = repo.root().join(LOCK);
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let guard = lock_file(&lock_path, "example").expect("the test takes the lock");

    let run = repo.xtask(&["deploy", "example"]);

    run.assert_code(2);
    let holder = guard.holder();
    run.assert_stderr_contains(&format!(
        "environment `example` is being deployed by {}@{} (pid {})",
        holder.user,
        holder.host,
        std::process::id()
    ));
    assert!(!repo.root().join(BUNDLE).exists(), "a refused deploy wrote the bundle");
    assert!(!repo.root().join(JOURNAL).exists(), "a refused deploy wrote the journal");

    drop(guard);
    repo.xtask(&["deploy", "example"]).assert_code(0);
}

fn status_lines(repo: &Repo) -> (Vec<String>, String) {
    let run = repo.xtask(&["status", "example"]);
    run.assert_code(0);
    let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    (lines, run.stdout.clone())
}

#[test]
fn status_after_deploy_is_up_to_date_and_names_the_changed_step_after_a_change() {
    let repo = Repo::shipped();
    let (before, out) = status_lines(&repo);
    assert!(before[0].starts_with("journal: none yet"), "{out}");

    repo.xtask(&["deploy", "example"]).assert_code(0);
    let (after, out) = status_lines(&repo);
    let steps: Vec<&String> = after.iter().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(steps.len(), 38, "{out}");
    assert!(steps.iter().all(|l| l.contains(" succeeded ") && l.ends_with("up to date")), "{out}");
    assert_eq!(after.last().unwrap(), "0 of 38 steps would change");

    repo.replace(
        "environments/example/opus/oob-consent/component.toml",
        "demo = \"somestring\"",
        "demo = \"another\"",
    );
    let (changed, out) = status_lines(&repo);
    let would_change: Vec<&String> =
        changed.iter().filter(|l| l.starts_with("  ") && l.ends_with("would change")).collect();
    assert_eq!(would_change.len(), 1, "{out}");
    assert!(would_change[0].trim_start().starts_with("opus/oob-consent/release "), "{out}");
    assert_eq!(changed.last().unwrap(), "1 of 38 steps would change");

    let json = repo.xtask(&["status", "example", "--format", "json"]);
    json.assert_code(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let pending: Vec<(&str, &serde_json::Value)> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["would_change"] == true)
        .map(|s| (s["step"].as_str().unwrap(), &s["changed_keys"]))
        .collect();
    assert_eq!(pending, vec![("opus/oob-consent/release", &serde_json::json!(["values.foo.bar.demo"]))]);
}

#[test]
fn torn_journal_stops_deploy_until_repaired() {
    let repo = Repo::shipped();
    repo.xtask(&["deploy", "example"]).assert_code(0);
    let journal = repo.root().join(JOURNAL);
    let text = std::fs::read_to_string(&journal).unwrap();
    // The deploy's last record says who deployed (`@deploy`); a crash right after the last
    // step comes before it: keep the journal up to the last step's record.
    let body = text.strip_suffix('\n').unwrap();
    let (steps, deploy_record) = body.rsplit_once('\n').unwrap();
    assert!(deploy_record.contains("\"step_id\":\"@deploy\""), "{deploy_record}");
    let text = format!("{steps}\n");
    std::fs::write(&journal, &text).unwrap();
    let body = text.strip_suffix('\n').unwrap();
    let last_line_start = body.rfind('\n').unwrap() + 1;
    let last: serde_json::Value =
        serde_json::from_str(body[last_line_start..].split_once(' ').unwrap().1).expect("a record line");
    let torn_step = last["step_id"].as_str().unwrap().to_owned();
    // Half of the last record, no newline: as a power cut during the write leaves it.
    let cut = last_line_start + (body.len() - last_line_start) / 2;
    std::fs::write(&journal, &text[..cut]).unwrap();
    let n_lines = text.lines().count();

    let refused = repo.xtask(&["deploy", "example"]);
    refused.assert_code(2);
    refused.assert_stderr_contains(&format!("ends with a torn record at line {n_lines}"));
    refused.assert_stderr_contains("--repair-journal");
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        text[..cut],
        "a refused deploy changed the journal"
    );

    let repaired = repo
        .xtask_with(&["deploy", "example", "--repair-journal", "--output", "json"], &RunOptions::default());
    repaired.assert_code(0);
    repaired.assert_stderr_contains(&format!("dropped the torn record at line {n_lines}"));
    let events = events(&repaired.stdout);
    assert_eq!(events["succeeded"], BTreeSet::from([torn_step]), "only the torn step runs again");
}

#[test]
fn removing_a_component_removes_its_bundle_files_after_a_complete_deploy() {
    let repo = Repo::shipped();
    deploy_json(&repo, &RunOptions::default()).assert_code(0);
    let release_dir = repo.root().join(BUNDLE).join("releases/opus/oob-status");
    assert!(release_dir.join("values.yaml").is_file(), "the first deploy writes the release");

    std::fs::remove_dir_all(repo.root().join("environments/example/opus/oob-status"))
        .expect("remove the component");
    let run = deploy_json(&repo, &RunOptions::default());
    run.assert_code(0).assert_stderr_contains("releases/opus/oob-status/values.yaml");
    assert!(!release_dir.exists(), "the removed component's files and folder are gone");
    assert!(
        repo.root().join(BUNDLE).join("releases/opus/oob-consent/values.yaml").is_file(),
        "other releases stay"
    );
}

#[test]
fn deploy_refuses_unknown_components_and_steps_before_taking_the_lock() {
    let repo = Repo::shipped();
    let only = repo.xtask(&["deploy", "example", "--only", "no-such-component"]);
    only.assert_code(2)
        .assert_stderr_contains("--only:")
        .assert_stderr_contains("see `cargo xtask plan example`");
    let forced = repo.xtask(&["deploy", "example", "--force-step", "opus/no-such/release"]);
    forced
        .assert_code(2)
        .assert_stderr_contains("--force-step: `opus/no-such/release` is not a step of the plan");
    assert!(!repo.root().join(JOURNAL).exists(), "nothing was journaled");
    assert!(!repo.root().join(LOCK).exists(), "the lock was never taken");
}

#[test]
fn a_plan_compiled_without_keys_is_never_selected_for_a_deploy() {
    let repo = Repo::shipped();
    let tree = platform::load::tree::FsTree::new(repo.root());
    let compiled =
        platform::compile::compile_environment(&tree, &components::catalog(), "example", None).unwrap();
    let plan = compiled.plan.expect("example compiles without keys");
    let error = platform::deploy::select(&plan, &[], &[]).expect_err("no decrypted secrets");
    assert!(matches!(error, platform::deploy::DeployError::NotDecrypted { .. }), "{error}");
    assert!(error.could_not_start());
    // With its keys the same environment is selected whole.
    let plan = util::compile_example(&repo);
    let selection = platform::deploy::select(&plan, &[], &[]).unwrap();
    assert!(selection.is_whole());
    assert_eq!(selection.plan().len(), plan.len());
}
