//! scripts/ci-plan.sh, the pull-request recipe, on a temporary git repository with a base
//! and a head commit: it plans exactly the environments the change touches, keeps every
//! summary under the size limit, and fails (saying so in the comment) when `check` fails.

mod util;

use std::path::Path;
use std::process::Command;

use util::{Repo, repo_root};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// A repository whose HEAD~1 is the shipped configuration and HEAD is what `change` made.
fn pull_request(change: impl FnOnce(&Repo)) -> Repo {
    let repo = Repo::shipped();
    git(repo.root(), &["init", "-q"]);
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "base"]);
    change(&repo);
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "head"]);
    repo
}

/// Runs the recipe against HEAD~1; its exit code and the comment it wrote.
fn recipe(repo: &Repo, limit: Option<usize>) -> (i32, String) {
    let out = repo.root().join("comment.md");
    let xtask = format!("{} --root {}", env!("CARGO_BIN_EXE_xtask"), repo.root().display());
    let mut command = Command::new(repo_root().join("scripts/ci-plan.sh"));
    command
        .arg("HEAD~1")
        .current_dir(repo.root())
        .env("XTASK", xtask)
        .env("CI_PLAN_OUT", &out)
        .env("NO_COLOR", "1");
    if let Some(limit) = limit {
        command.env("CI_PLAN_LIMIT", limit.to_string());
    }
    let output = command.output().expect("run scripts/ci-plan.sh");
    let comment = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no comment ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().unwrap_or(-1), comment)
}

#[test]
fn a_component_change_plans_its_environment_only() {
    let repo = pull_request(|repo| {
        repo.replace(
            "environments/example/opus/oob-consent/component.toml",
            "demo = \"somestring\"",
            "demo = \"changed\"",
        );
    });
    let (code, comment) = recipe(&repo, None);
    assert_eq!(code, 0, "{comment}");
    assert!(comment.contains("### Changes to `example` since `HEAD~1`"), "{comment}");
    assert!(comment.contains("`values.foo.bar.demo`: `\"somestring\"` → `\"changed\"`"), "{comment}");
    assert!(!comment.contains("Changes to `staging`") && !comment.contains("Changes to `prod`"), "{comment}");
    assert!(comment.contains("without access to any cluster or key"), "{comment}");
}

#[test]
fn a_core_change_plans_every_environment_on_this_core_and_a_small_limit_keeps_the_summaries() {
    let repo = pull_request(|repo| {
        let path = repo.root().join("components/src/NOTE.md");
        std::fs::write(path, "a change to the core\n").unwrap();
    });
    let (code, comment) = recipe(&repo, None);
    assert_eq!(code, 0, "{comment}");
    for env in ["example", "prod", "staging"] {
        assert!(comment.contains(&format!("### Changes to `{env}` since `HEAD~1`")), "{env}: {comment}");
    }

    // A change big enough to need cutting: a new environment (every step is new).
    let repo = pull_request(|repo| {
        util::copy_dir(&repo.root().join("environments/example"), &repo.root().join("environments/sandbox2"));
        repo.replace(
            "environments/sandbox2/env.toml",
            "path = \"bundle/example\"",
            "path = \"bundle/sandbox2\"",
        );
    });
    let (code, full) = recipe(&repo, None);
    assert_eq!(code, 0, "{full}");
    let limit = full.chars().count() / 2;
    let (code, cut) = recipe(&repo, Some(limit));
    assert_eq!(code, 0, "{cut}");
    assert!(cut.chars().count() <= limit, "{} > {limit}", cut.chars().count());
    assert!(
        cut.contains("| namespace | create | update | delete | unchanged |"),
        "the summary is kept: {cut}"
    );
    assert!(cut.contains("The details of the plans are cut"), "{cut}");
}

#[test]
fn a_failing_check_fails_the_recipe_and_says_so() {
    let repo = pull_request(|repo| {
        repo.write("environments/example/opus/oob-consent/component.toml", "[inputs]\nno_such_input = 1\n");
    });
    let (code, comment) = recipe(&repo, None);
    assert_eq!(code, 1, "{comment}");
    assert!(comment.contains("### `check` failed"), "{comment}");
}
