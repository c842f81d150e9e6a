//! Helpers for the `keys` and `rotate-keys` tests: a git repository holding a copy of the
//! shipped environments, and a runner for the real binary with a scrubbed environment plus the
//! few variables a test sets (`SOPS_AGE_KEY_FILE`, `OPUS_FAILPOINT`), with a fixed `HOME`.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use platform::keys::secrets_files;
use platform::secrets::{Identities, decrypt_file};
use platform::sensitive::SecretString;

pub const DEMO_KEY: &str = "environments/example/demo.agekey";

/// The repository this test was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        if entry.file_name() == ".opus" || entry.file_name() == "bundle" {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
        }
    }
}

pub fn git(root: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(root).args(args).output().expect("run git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A temporary git repository (with a committer identity) holding the shipped environments,
/// plus a home folder for key files.
pub struct KeysRepo {
    dir: tempfile::TempDir,
}

impl KeysRepo {
    pub fn new() -> KeysRepo {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let root = dir.path().join("repo");
        copy_dir(&repo_root().join("environments"), &root.join("environments"));
        std::fs::write(root.join(".gitignore"), "/environments/*/.opus\n/bundle\n")
            .expect("write .gitignore");
        std::fs::create_dir_all(dir.path().join("home")).expect("create home");
        git(&root, &["init", "-q"]);
        git(&root, &["config", "user.name", "Rotation Test"]);
        git(&root, &["config", "user.email", "rotation@test.invalid"]);
        git(&root, &["add", "."]);
        git(&root, &["commit", "-qm", "start"]);
        KeysRepo { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Runs `xtask --root REPO args...` with `HOME` set to [`KeysRepo::home`] and `vars`.
    pub fn xtask(&self, vars: &[(&str, &str)], args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("NO_COLOR", "1")
            .current_dir(self.home())
            .stdin(Stdio::null());
        for (name, value) in vars {
            command.env(name, value);
        }
        let output = command.output().expect("run the xtask binary");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Identities from a key file.
    pub fn identities(&self, path: &Path) -> Identities {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Identities::from_key_text(&path.display().to_string(), &SecretString::new(text)).expect("a key file")
    }

    /// Every secrets file of `example`, decrypted to YAML.
    pub fn decrypted(&self, identities: &Identities) -> BTreeMap<PathBuf, String> {
        secrets_files(&self.root(), "example")
            .expect("list secrets files")
            .into_iter()
            .map(|path| {
                let tree = decrypt_file(&self.root().join(&path), identities)
                    .unwrap_or_else(|e| panic!("decrypt {}: {e}", path.display()));
                (path, tree.to_yaml().expose().to_owned())
            })
            .collect()
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_code(&self, expected: Option<i32>) -> &Run {
        assert_eq!(self.code, expected, "--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    /// No private key in either stream (the canary is the `AGE-SECRET-KEY-` prefix of every
    /// age identity), unless `stdout_may_hold_key`.
    pub fn assert_no_private_key(&self, stdout_may_hold_key: bool) -> &Run {
        assert!(
            !self.stderr.to_uppercase().contains("AGE-SECRET-KEY-"),
            "stderr shows a key:\n{}",
            self.stderr
        );
        if !stdout_may_hold_key {
            assert!(!self.stdout.to_uppercase().contains("AGE-SECRET-KEY-"), "stdout shows a key");
        }
        self
    }
}
