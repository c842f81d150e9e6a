//! The refresh on the `example` environment (a directory target): bundle files deleted or
//! edited by hand are found by `plan` and `status` as drifted and repaired by `deploy`; a
//! component that left the configuration has its files removed (only what the bundle's
//! inventory lists: a `.git` folder or a README in the bundle stays); `--no-refresh` trusts the
//! journal and says so; `--force` reruns every step.

mod util;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use util::{Repo, RunOptions};

const BUNDLE: &str = "bundle/example";

/// The last status of each step of a `deploy --output json` run.
fn statuses(stdout: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
        if event["event"] == "step" {
            out.insert(
                event["step"].as_str().unwrap().to_owned(),
                event["status"].as_str().unwrap().to_owned(),
            );
        }
    }
    out
}

fn deploy(repo: &Repo, extra: &[&str]) -> util::Run {
    let mut args = vec!["deploy", "example", "--output", "json"];
    args.extend_from_slice(extra);
    let run = repo.xtask_with(&args, &RunOptions::default());
    run.assert_code(0);
    run
}

fn ran(run: &util::Run) -> BTreeSet<String> {
    statuses(&run.stdout).into_iter().filter(|(_, s)| s == "succeeded").map(|(id, _)| id).collect()
}

/// `plan --format json`: the drifted steps with their reasons, and the removals.
fn plan_drift(repo: &Repo, extra: &[&str]) -> (BTreeMap<String, String>, Vec<Value>, Value) {
    let mut args = vec!["plan", "example", "--format", "json"];
    args.extend_from_slice(extra);
    let run = repo.xtask(&args);
    run.assert_code(0);
    let plan: Value = serde_json::from_str(&run.stdout).expect("plan JSON");
    let drifted = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["change"] == "drifted")
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s["drift"].as_str().unwrap().to_owned()))
        .collect();
    let removed = plan["removed"].as_array().cloned().unwrap_or_default();
    (drifted, removed, plan["refresh"].clone())
}

#[test]
fn deleted_and_edited_bundle_files_are_drift_that_deploy_repairs() {
    let repo = Repo::shipped();
    deploy(&repo, &[]);
    let bundle = repo.root().join(BUNDLE);
    let deleted = "releases/opus/oob-status/values.yaml";
    let edited = "namespaces/opus.yaml";
    let original = std::fs::read_to_string(bundle.join(edited)).unwrap();
    std::fs::remove_file(bundle.join(deleted)).unwrap();
    std::fs::write(bundle.join(edited), format!("{original}# edited by hand\n")).unwrap();

    let (drifted, removed, refresh) = plan_drift(&repo, &[]);
    assert_eq!(
        drifted,
        BTreeMap::from([
            ("opus/namespace/ensure".to_owned(), format!("file {edited} changed")),
            ("opus/oob-status/release".to_owned(), format!("file {deleted} deleted")),
        ]),
        "refresh: {refresh}"
    );
    assert!(removed.is_empty(), "{removed:?}");
    assert_eq!(refresh["state"], "observed");

    // The text plan and status name them too.
    let text = repo.xtask(&["plan", "example"]);
    text.assert_code(0);
    assert!(text.stdout.contains(&format!("drifted: file {deleted} deleted")), "{}", text.stdout);
    assert!(text.stdout.contains("2 drifted"), "{}", text.stdout);
    let status = repo.xtask(&["status", "example"]);
    status.assert_code(0);
    assert!(status.stdout.contains(&format!("drifted: file {edited} changed")), "{}", status.stdout);
    assert!(status.stdout.contains("2 of "), "{}", status.stdout);

    // --no-refresh trusts the journal, says so, and repairs nothing.
    let (drifted, _, refresh) = plan_drift(&repo, &["--no-refresh"]);
    assert!(drifted.is_empty(), "{drifted:?}");
    assert_eq!(refresh["state"], "skipped");
    let blind = deploy(&repo, &["--no-refresh"]);
    assert!(ran(&blind).is_empty(), "{}", blind.stdout);
    assert!(blind.stderr.contains("--no-refresh"), "{}", blind.stderr);
    assert!(!bundle.join(deleted).exists());

    // deploy runs exactly the drifted steps (and the readiness wait that follows the release)
    // and restores both files.
    let repair = deploy(&repo, &[]);
    assert_eq!(
        ran(&repair),
        BTreeSet::from([
            "opus/namespace/ensure".to_owned(),
            "opus/oob-status/ready".to_owned(),
            "opus/oob-status/release".to_owned()
        ]),
        "{}",
        repair.stdout
    );
    assert!(
        repair.stderr.contains(&format!("Drifted opus/oob-status/release: file {deleted} deleted")),
        "{}",
        repair.stderr
    );
    assert!(bundle.join(deleted).is_file());
    assert_eq!(std::fs::read_to_string(bundle.join(edited)).unwrap(), original);

    // And the next deploy is unchanged.
    let again = deploy(&repo, &[]);
    assert!(ran(&again).is_empty(), "{}", again.stdout);

    // --force reruns every step.
    let forced = deploy(&repo, &["--force"]);
    assert_eq!(ran(&forced).len(), statuses(&forced.stdout).len(), "{}", forced.stdout);
}

#[test]
fn a_removed_component_loses_only_the_files_the_inventory_lists() {
    let repo = Repo::shipped();
    deploy(&repo, &[]);
    let bundle = repo.root().join(BUNDLE);
    // Things in the bundle the tool did not write.
    std::fs::create_dir_all(bundle.join(".git")).unwrap();
    std::fs::write(bundle.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(bundle.join("README.md"), "hand-off notes\n").unwrap();
    std::fs::write(bundle.join("releases/opus/oob-status/NOTES.txt"), "ours, not the tool's\n").unwrap();

    repo.write("environments/example/opus/oob-status/component.toml", "enabled = false\n");
    let (drifted, removed, _) = plan_drift(&repo, &[]);
    assert!(drifted.is_empty(), "{drifted:?}");
    let items: Vec<&str> = removed.iter().map(|r| r["item"].as_str().unwrap()).collect();
    assert_eq!(
        items,
        ["file releases/opus/oob-status/release.yaml", "file releases/opus/oob-status/values.yaml"],
        "{removed:?}"
    );
    let text = repo.xtask(&["plan", "example"]);
    assert!(
        text.stdout
            .contains("  - file releases/opus/oob-status/values.yaml (left the configuration: deleted)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("2 to delete"), "{}", text.stdout);

    let run = deploy(&repo, &[]);
    assert!(run.stderr.contains("Removing file releases/opus/oob-status/release.yaml"), "{}", run.stderr);
    assert!(!bundle.join("releases/opus/oob-status/release.yaml").exists());
    assert!(!bundle.join("releases/opus/oob-status/values.yaml").exists());
    // What the inventory never listed is still there (and so is the folder holding it).
    assert!(bundle.join(".git/HEAD").is_file());
    assert!(bundle.join("README.md").is_file());
    assert!(bundle.join("releases/opus/oob-status/NOTES.txt").is_file());
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("index.json")).unwrap()).unwrap();
    let inventory: Vec<&str> =
        index["inventory"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!inventory.iter().any(|f| f.contains("oob-status")), "{inventory:?}");
    assert!(!inventory.contains(&"README.md"), "{inventory:?}");

    // Nothing is left to remove.
    let (_, removed, _) = plan_drift(&repo, &[]);
    assert!(removed.is_empty(), "{removed:?}");
}

#[test]
fn a_deploy_cut_short_keeps_the_files_to_remove_in_the_inventory() {
    let repo = Repo::shipped();
    deploy(&repo, &[]);
    repo.write("environments/example/opus/oob-status/component.toml", "enabled = false\n");
    // Only part of the environment: nothing is removed, the plan still lists the removals.
    let partial = deploy(&repo, &["--only", "oob-consent"]);
    assert!(partial.stderr.contains("a deploy of the whole environment removes them"), "{}", partial.stderr);
    let bundle = repo.root().join(BUNDLE);
    assert!(bundle.join("releases/opus/oob-status/values.yaml").is_file());
    let (_, removed, _) = plan_drift(&repo, &[]);
    assert_eq!(removed.len(), 2, "{removed:?}");
    deploy(&repo, &[]);
    assert!(!bundle.join("releases/opus/oob-status/values.yaml").exists());
}

#[test]
fn a_target_deployed_from_another_journal_is_refused_unless_adopted() {
    let repo = Repo::shipped();
    deploy(&repo, &[]);
    // A teammate's checkout: the same bundle, but a journal of its own (a new lineage).
    std::fs::remove_file(repo.root().join("environments/example/.opus/journal.log")).unwrap();
    let refused = repo.xtask_with(&["deploy", "example", "--output", "json"], &RunOptions::default());
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("was last deployed from another journal (lineage "),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--adopt"), "{}", refused.stderr);
    let index = |repo: &Repo| -> Value {
        serde_json::from_str(&std::fs::read_to_string(repo.root().join(BUNDLE).join("index.json")).unwrap())
            .unwrap()
    };
    let before = index(&repo)["lineage"].clone();
    assert!(before.is_string(), "the index records the lineage: {before}");
    let adopted = deploy(&repo, &["--adopt"]);
    assert!(adopted.stderr.contains("is taken over by this journal"), "{}", adopted.stderr);
    assert_ne!(index(&repo)["lineage"], before);
    // From then on, this journal deploys it.
    let again = deploy(&repo, &[]);
    assert!(ran(&again).is_empty(), "{}", again.stdout);
}
