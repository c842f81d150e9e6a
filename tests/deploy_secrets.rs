//! A canary secret never leaks: set in the example's oob-consent `values_sensitive_custom`, it
//! must not appear in any output of plan (every format, `--base`), graph, status or deploy
//! (plain and JSON), nor in the journal, the bundle, the binary's temp dir, or the arguments
//! of any child process. Files are searched as raw bytes, so a secret is only acceptable
//! inside `ENC[...]`, where it is not readable.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use platform::access::{identities_for, read_env_file};
use platform::secrets::show_file;
use util::{Repo, RunOptions};

const CANARY: &str = "canary-oidc-secret-5b7e19d2c4";
const SECRETS: &str = "environments/example/opus/oob-consent/secrets.enc.yaml";
const KEY: &str = "values_sensitive_custom.oidc.clientSecret";

fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A folder of wrappers for the programs the binary may start: each logs its arguments to
/// `args.log`, then runs the real program when there is one.
fn wrappers(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("args.log");
    let path = std::env::var("PATH").unwrap_or_default();
    for program in ["git", "helm", "kubectl", "psql", "age", "sops", "sh", "bash"] {
        let real = std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file());
        let run = match real {
            Some(real) => format!("exec {} \"$@\"", real.display()),
            None => "exit 127".to_owned(),
        };
        let script =
            format!("#!/bin/sh\nprintf '%s %s\\n' \"{program}\" \"$*\" >> '{}'\n{run}\n", log.display());
        let file = bin.join(program);
        std::fs::write(&file, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Every file under `dir` containing the canary.
fn files_with_canary(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn canary_secret_appears_in_no_output_file_or_process_argument() {
    let repo = Repo::shipped();
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let bin = wrappers(scratch.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let options = RunOptions::default().env("PATH", path).env("TMPDIR", tmp.to_str().unwrap());

    git(repo.root(), &["init", "-q"]);
    git(repo.root(), &["add", "-A"]);
    git(repo.root(), &["commit", "-q", "-m", "base"]);
    // From stdin, so that the canary is not an argument even here.
    let secrets = repo.root().join(SECRETS);
    let set = repo
        .xtask_with(&["secrets", "set", secrets.to_str().unwrap(), KEY, "-"], &options.clone().stdin(CANARY));
    set.assert_code(0);
    git(repo.root(), &["commit", "-q", "-a", "-m", "rotate the oidc client secret"]);

    let commands: Vec<Vec<&str>> = vec![
        vec!["plan", "example"],
        vec!["plan", "example", "--format", "json"],
        vec!["plan", "example", "--format", "markdown"],
        vec!["plan", "example", "--base", "HEAD~1"],
        vec!["plan", "example", "--base", "HEAD~1", "--format", "json"],
        vec!["plan", "example", "--base", "HEAD~1", "--format", "markdown"],
        vec!["graph", "example"],
        vec!["graph", "example", "--format", "dot"],
        vec!["status", "example"],
        vec!["deploy", "example", "--output", "plain"],
        vec!["deploy", "example", "--output", "json", "--force-step", "opus/oob-consent/release"],
        vec!["plan", "example", "--format", "json"],
        vec!["status", "example", "--format", "json"],
    ];
    let mut runs = vec![(vec!["secrets", "set"], set)];
    for args in commands {
        let run = repo.xtask_with(&args, &options);
        run.assert_code(0);
        runs.push((args, run));
    }

    for (args, run) in &runs {
        assert!(!run.stdout.contains(CANARY), "`{args:?}` printed the canary on stdout:\n{}", run.stdout);
        assert!(!run.stderr.contains(CANARY), "`{args:?}` printed the canary on stderr:\n{}", run.stderr);
    }
    let base_diff = &runs[4].1.stdout;
    assert!(
        base_diff.contains("values.oidc.clientSecret: (sensitive, changed)"),
        "--base shows the sensitive change:\n{base_diff}"
    );

    // The canary reached the deploy: it is in the bundle, encrypted.
    let env_file = read_env_file(repo.root(), "example").unwrap();
    let identities = identities_for(repo.root(), &env_file).unwrap();
    let values = repo.root().join("bundle/example/releases/opus/oob-consent/values.secrets.enc.yaml");
    assert!(show_file(&values, &identities).unwrap().expose().contains(CANARY));

    // Journal, bundle, client files: raw bytes, nowhere in clear.
    assert!(repo.root().join("environments/example/.opus/journal.log").is_file());
    assert_eq!(files_with_canary(repo.root()), Vec::<PathBuf>::new());
    assert_eq!(files_with_canary(&tmp), Vec::<PathBuf>::new());
    let log = std::fs::read_to_string(scratch.path().join("args.log")).unwrap_or_default();
    assert!(log.contains("git "), "the --base runs start git through the wrapper:\n{log}");
    assert!(!log.contains(CANARY), "a child process got the canary as an argument:\n{log}");
}
