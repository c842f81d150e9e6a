//! `cargo xtask check` as an operator runs it: the real binary, a temporary repository with one
//! fault injected, a scrubbed environment. Asserts exit codes (0 clean, 1 check errors, 2 could
//! not start), the `file:line:col` on stderr, and what the help screens promise.

mod util;

use util::{Repo, repo_root, xtask};

fn real_root() -> String {
    repo_root().to_str().expect("a UTF-8 repository path").to_owned()
}

#[test]
fn no_arguments_lists_the_commands_as_a_usage_error() {
    // clap's `arg_required_else_help` prints the help on stderr and exits 2.
    let run = xtask(&[]);
    run.assert_code(2).assert_stderr_contains("Usage: cargo xtask").assert_stderr_contains("Commands:");
    let commands = run.stderr.split("Commands:").nth(1).expect("a command list");
    assert!(
        commands.lines().any(|line| line.trim_start().starts_with("check ")),
        "`check` is listed:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
}

#[test]
fn check_help_shows_each_example_on_its_own_line() {
    let run = xtask(&["check", "--help"]);
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().map(str::trim).collect();
    assert!(lines.contains(&"Examples:"), "{}", run.stdout);
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("cargo xtask check") && line.ends_with("# every environment")),
        "{}",
        run.stdout
    );
    assert!(lines.contains(&"cargo xtask check prod staging"), "{}", run.stdout);
}

#[test]
fn check_help_mentions_an_example() {
    let run = xtask(&["check", "--help"]);
    run.assert_code(0).assert_stderr_is_empty();
    assert!(run.stdout.contains("Examples:"), "{}", run.stdout);
    assert!(run.stdout.contains("cargo xtask check prod staging"), "{}", run.stdout);
}

#[test]
fn help_documents_the_exit_codes() {
    let run = xtask(&["--help"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("Exit codes: 0 success; 1 the command ran and the work failed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 the command could not start"), "{}", run.stdout);
}

#[test]
fn shipped_environments_pass() {
    let root = real_root();
    let run = xtask(&["--root", &root, "check"]);
    run.assert_code(0);
    for env in ["example", "prod", "staging"] {
        run.assert_stderr_contains(&format!("Checked `{env}`"));
    }
    assert!(run.stdout.is_empty(), "check prints nothing on stdout: {}", run.stdout);
}

#[test]
fn check_named_environments_checks_only_those() {
    let root = real_root();
    let run = xtask(&["--root", &root, "check", "example", "prod"]);
    run.assert_code(0).assert_stderr_contains("Checked `example`").assert_stderr_contains("Checked `prod`");
    assert!(!run.stderr.contains("`staging`"), "staging was not asked for:\n{}", run.stderr);
}

#[test]
fn values_template_in_a_staging_component_fails_with_its_location() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus/oob-consent/component.toml";
    repo.write(path, "# oob-consent in staging.\n\nvalues_template = \"replicaCount: 5\"\n");
    let run = repo.xtask(&["check", "staging"]);
    run.assert_code(1)
        .assert_stderr_contains("`values_template` is owned by the component template and cannot be set here")
        .assert_stderr_contains(&format!("[{path}:3:1]"))
        .assert_stderr_contains("set by components/src/oob_consent/mod.rs")
        .assert_stderr_contains("error: could not check `staging` due to 1 previous error\n");
    assert!(!run.stderr.contains('\x1b'), "NO_COLOR is honored:\n{}", run.stderr);
}

#[test]
fn typo_in_a_key_fails_with_its_location_and_a_suggestion() {
    let repo = Repo::shipped();
    let path = "environments/staging/env.toml";
    repo.replace(path, "protected = false", "protectd = false");
    let location = repo.location_of(path, "protectd");
    let run = repo.xtask(&["check", "staging"]);
    run.assert_code(1)
        .assert_stderr_contains("unknown key `protectd` in the top level")
        .assert_stderr_contains(&format!("[{location}]"))
        .assert_stderr_contains("did you mean `protected`?");
}

#[test]
fn dependency_cycle_fails_naming_the_cycle_and_each_edge() {
    let repo = Repo::shipped();
    let status = "environments/staging/opus/oob-status/component.toml";
    let pcm = "environments/staging/opus/oof-pcm-service/component.toml";
    repo.write(status, "depends_on = [\"oof-pcm-service\"]\n");
    repo.write(pcm, "depends_on = [\"oob-status\"]\n");
    let run = repo.xtask(&["check", "staging"]);
    run.assert_code(1)
        .assert_stderr_contains(
            "dependency cycle: opus/oob-status -> opus/oof-pcm-service -> opus/oob-status",
        )
        .assert_stderr_contains(&format!("[{status}:1:15]"))
        .assert_stderr_contains(&format!("[{pcm}:1:15]"));
}

#[test]
fn errors_in_one_environment_do_not_hide_the_others() {
    let repo = Repo::shipped();
    repo.replace("environments/staging/env.toml", "protected = false", "protectd = false");
    let run = repo.xtask(&["check"]);
    run.assert_code(1)
        .assert_stderr_contains("Checked `example`")
        .assert_stderr_contains("Checked `prod`")
        .assert_stderr_contains("could not check `staging`");
}

#[test]
fn unknown_environment_is_a_usage_error_with_a_suggestion() {
    let repo = Repo::shipped();
    let run = repo.xtask(&["check", "prdo"]);
    run.assert_code(2).assert_stderr_contains("error: unknown environment `prdo` (did you mean `prod`?)");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let repo = Repo::shipped();
    let run = repo.xtask(&["check", "--bogus"]);
    run.assert_code(2).assert_stderr_contains("--bogus");
}

#[test]
fn root_without_environments_is_a_usage_error() {
    let empty = tempfile::tempdir().expect("create a temp dir");
    let run = xtask(&["--root", empty.path().to_str().expect("UTF-8"), "check"]);
    run.assert_code(2).assert_stderr_contains("has no environments/ folder");
}
