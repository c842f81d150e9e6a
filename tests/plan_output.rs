//! `cargo xtask plan` end to end: snapshots of the text, JSON and Markdown plans of the shipped
//! environments (review with `cargo insta review`), `--base` reporting exactly the changed key,
//! determinism across processes, temp dirs and directory creation orders, and strict templates.

mod util;

use std::path::Path;
use std::process::Command;

use platform::access::{identities_for, read_env_file};
use platform::compile::compile_environment;
use platform::load::tree::FsTree;
use util::{Repo, repo_root};

const FORMATS: [&str; 3] = ["text", "json", "markdown"];

fn plan(repo: &Repo, env: &str, format: &str) -> String {
    let run = repo.xtask(&["plan", env, "--format", format]);
    run.assert_code(0);
    run.stdout.clone()
}

#[test]
fn plans_of_the_shipped_environments_match_their_snapshots() {
    let repo = Repo::shipped();
    for env in ["example", "staging", "prod"] {
        for format in FORMATS {
            let out = plan(&repo, env, format);
            assert!(!out.contains(repo.root().to_str().unwrap()), "plan shows the temp path:\n{out}");
            insta::assert_snapshot!(format!("plan_{env}_{format}"), out);
        }
    }
}

#[test]
fn example_is_planned_with_its_secrets_and_staging_without() {
    let repo = Repo::shipped();
    let example: serde_json::Value = serde_json::from_str(&plan(&repo, "example", "json")).unwrap();
    let staging: serde_json::Value = serde_json::from_str(&plan(&repo, "staging", "json")).unwrap();
    assert_eq!(example["secrets"], "decrypted");
    assert_eq!(staging["secrets"], "encrypted");
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

#[test]
fn plan_base_reports_exactly_the_changed_key_of_the_changed_component() {
    let repo = Repo::shipped();
    let component = "environments/example/opus/oob-consent/component.toml";
    git(repo.root(), &["init", "-q"]);
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "base"]);
    repo.replace(component, "demo = \"somestring\"", "demo = \"changed-on-the-branch\"");
    git(repo.root(), &["commit", "-q", "-a", "-m", "change one key"]);

    let text = repo.xtask(&["plan", "example", "--base", "HEAD~1"]);
    text.assert_code(0);
    assert_eq!(
        text.stdout,
        "changes to `example` since HEAD~1:\n  ~ opus/oob-consent/release\n      values.foo.bar.demo: \"somestring\" -> \"changed-on-the-branch\"\n"
    );

    let json = repo.xtask(&["plan", "example", "--base", "HEAD~1", "--format", "json"]);
    json.assert_code(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan json");
    let diff = &json["diff"];
    for empty in ["added", "removed", "reordered", "dependencies_changed"] {
        assert_eq!(diff[empty], serde_json::json!([]), "{empty}: {diff:#}");
    }
    assert_eq!(
        diff["changed"],
        serde_json::json!({
            "opus/oob-consent/release": [{
                "path": "values.foo.bar.demo",
                "before": "somestring",
                "after": "changed-on-the-branch",
                "sensitive": false,
            }]
        })
    );
}

#[test]
fn plan_is_byte_identical_across_runs_and_temp_dirs() {
    let first = Repo::shipped();
    let second = Repo::shipped();
    for env in ["example", "staging"] {
        for format in FORMATS {
            let reference = plan(&first, env, format);
            // Several processes: each has its own HashMap seeds.
            for _ in 0..3 {
                assert_eq!(plan(&first, env, format), reference, "{env} {format} changed between runs");
            }
            assert_eq!(plan(&second, env, format), reference, "{env} {format} differs in another temp dir");
        }
    }
}

/// Copies a tree creating entries in reverse name order (the shipped copy uses the
/// directory's order), so that directory listing orders differ.
fn copy_reversed(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
    for entry in entries {
        let name = entry.file_name();
        if name == ".opus" || name == "bundle" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_reversed(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn plan_does_not_depend_on_directory_creation_order() {
    let shipped = Repo::shipped();
    let reversed = tempfile::tempdir().unwrap();
    copy_reversed(&repo_root().join("environments"), &reversed.path().join("environments"));
    let root = reversed.path().to_str().unwrap();
    for format in FORMATS {
        let run = util::xtask(&["--root", root, "plan", "example", "--format", format]);
        run.assert_code(0);
        assert_eq!(run.stdout, plan(&shipped, "example", format), "{format}");
    }
}

#[test]
fn compiling_twice_in_process_gives_the_same_plan() {
    let repo = Repo::shipped();
    let env_file = read_env_file(repo.root(), "example").unwrap();
    let identities = identities_for(repo.root(), &env_file).unwrap();
    let compile = || {
        let compiled = compile_environment(
            &FsTree::new(repo.root()),
            &components::catalog(),
            "example",
            Some(&identities),
        )
        .expect("example loads");
        assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
        let plan = compiled.plan.expect("a plan");
        serde_json::to_vec_pretty(&plan.to_json()).unwrap()
    };
    let first = compile();
    assert_eq!(compile(), first);
    assert!(String::from_utf8(first).unwrap().contains("\"secrets\": \"decrypted\""));
}

#[test]
fn undefined_variable_in_values_custom_fails_with_its_location() {
    let repo = Repo::shipped();
    let component = "environments/example/opus/oob-consent/component.toml";
    repo.replace(component, "demo = \"somestring\"", "demo = \"{{ nope }}\"");
    let location = repo.location_of(component, "\"{{ nope }}\"");

    let run = repo.xtask(&["plan", "example"]);

    run.assert_code(1);
    assert!(run.stdout.is_empty(), "a failed plan printed data:\n{}", run.stdout);
    run.assert_stderr_contains("cannot render `values_custom`: undefined value");
    run.assert_stderr_contains(&location);
    run.assert_stderr_contains("could not compile `example` due to 1 previous error");
}

/// A repository whose HEAD~1 is the shipped example with review values, and HEAD changes them
/// with hostile values, adds a component and removes one.
fn hostile_change() -> Repo {
    let repo = Repo::shipped();
    let component = "environments/example/opus/oob-consent/component.toml";
    let base = format!(
        "{}\n[values_custom.review]\ncount = 1\nempty = \"x\"\ntext = \"one line\"\nhtml = \"plain\"\n",
        repo.read(component)
    );
    repo.write(component, &base);
    git(repo.root(), &["init", "-q"]);
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "base"]);
    repo.replace(component, "count = 1", "count = \"1\"");
    repo.replace(component, "empty = \"x\"", "empty = \"\"");
    repo.replace(component, "text = \"one line\"", "text = \"two\\nlines\"");
    repo.replace(component, "html = \"plain\"", "html = \"**bold** <b>x</b> | `tick` [a](http://x)\"");
    repo.write("environments/example/opus/oob-status-b/component.toml", "template = \"oob-status\"\n");
    repo.write("environments/example/opus/oob-financial-data/component.toml", "enabled = false\n");
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "head"]);
    repo
}

#[test]
fn review_markdown_shows_typed_escaped_values_added_and_removed_components() {
    let repo = hostile_change();
    let run = repo.xtask(&["plan", "example", "--base", "HEAD~1", "--format", "markdown"]);
    run.assert_code(0);
    let out = run.stdout;
    // Nothing a value holds is rendered: every value is a code span.
    assert!(out.contains("`values.review.count`: `1` → `\"1\"`"), "{out}");
    assert!(out.contains("`values.review.empty`: `\"x\"` → `\"\"`"), "{out}");
    assert!(out.contains("`values.review.text`: `\"one line\"` → `\"two\\nlines\"`"), "{out}");
    assert!(out.contains("``\"**bold** <b>x</b> | `tick` [a](http://x)\"``"), "{out}");
    // The only `<b>` is the one inside that code span.
    assert_eq!(out.matches("<b>").count(), 1, "{out}");
    // The summary table comes first; removals are not nested bullets.
    let table = out.find("| namespace | create | update | delete | unchanged |").expect("a summary table");
    assert!(table < out.find("####").expect("component sections"), "{out}");
    assert!(out.contains("- **delete** `opus/oob-financial-data/release`"), "{out}");
    assert!(out.contains("  - `values.replicaCount`: `1`\n"), "an added component lists its values: {out}");
    assert!(!out.contains("- - "), "{out}");
    insta::assert_snapshot!("review_markdown_hostile", out);

    // The text form is typed too.
    let text = repo.xtask(&["plan", "example", "--base", "HEAD~1"]);
    assert!(text.stdout.contains("values.review.count: 1 -> \"1\""), "{}", text.stdout);
}

#[test]
fn a_new_environment_is_planned_against_an_empty_base() {
    let repo = Repo::shipped();
    git(repo.root(), &["init", "-q"]);
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "base"]);
    util::copy_dir(&repo.root().join("environments/example"), &repo.root().join("environments/sandbox2"));
    repo.replace("environments/sandbox2/env.toml", "path = \"bundle/example\"", "path = \"bundle/sandbox2\"");
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "a new environment"]);
    let run = repo.xtask(&["plan", "sandbox2", "--base", "HEAD~1", "--format", "markdown"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("`sandbox2` does not exist in `HEAD~1`: every step is new."),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("**update**") && !run.stdout.contains("**delete**"), "{}", run.stdout);
    let json = repo.xtask(&["plan", "sandbox2", "--base", "HEAD~1", "--format", "json"]);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let plan = repo.xtask(&["plan", "sandbox2", "--format", "json", "--no-refresh"]);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(document["diff"]["added"].as_array().unwrap().len(), plan["steps"].as_array().unwrap().len());
}

#[test]
fn detailed_exitcode_is_0_without_changes_2_with_changes_and_1_on_errors() {
    let repo = hostile_change();
    repo.xtask(&["plan", "example", "--base", "HEAD~1", "--detailed-exitcode"]).assert_code(2);
    repo.xtask(&["plan", "example", "--base", "HEAD", "--detailed-exitcode"]).assert_code(0);
    // Against the journal: nothing deployed yet is a change; after a deploy, none.
    repo.xtask(&["plan", "example", "--detailed-exitcode"]).assert_code(2);
    repo.xtask(&["deploy", "example"]).assert_code(0);
    repo.xtask(&["plan", "example", "--detailed-exitcode"]).assert_code(0);
    // Errors that otherwise exit 2 exit 1.
    repo.xtask(&["plan", "nope", "--detailed-exitcode"]).assert_code(1);
    repo.xtask(&["plan", "nope"]).assert_code(2);
    repo.xtask(&["plan", "example", "--base", "no-such-rev", "--detailed-exitcode"]).assert_code(1);
    repo.xtask(&["plan", "--detailed-exitcode", "--no-such-flag"]).assert_code(1);
}
