//! Helpers shared by the root integration tests, after ripgrep's `tests/util.rs`: a temporary
//! repository holding a copy of the shipped client files (with one fault injected by the test),
//! and a runner for the real `xtask` binary in a scrubbed environment.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one run of the binary may take before the test fails (it checks files only).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository this test was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// A temporary repository root with a copy of `environments/` and of the core catalog's
/// sources (`components/src`, which diagnostics quote when a cycle runs through the catalog).
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A copy of the shipped environments, unchanged.
    pub fn shipped() -> Repo {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let from = repo_root();
        copy_dir(&from.join("environments"), &dir.path().join("environments"));
        copy_dir(&from.join("components/src"), &dir.path().join("components/src"));
        Repo { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The text of a file, by its path relative to the root.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// Writes a file (creating its directories), replacing whatever was there.
    pub fn write(&self, path: &str, text: &str) -> &Repo {
        let full = self.root().join(path);
        std::fs::create_dir_all(full.parent().expect("a file has a parent")).expect("create dirs");
        std::fs::write(&full, text).unwrap_or_else(|e| panic!("write {path}: {e}"));
        self
    }

    /// Replaces the one occurrence of `from` in a file. Panics when `from` is not there exactly
    /// once, so a test whose fault was not injected fails instead of passing for nothing.
    pub fn replace(&self, path: &str, from: &str, to: &str) -> &Repo {
        let text = self.read(path);
        let n = text.matches(from).count();
        assert_eq!(n, 1, "expected exactly one `{from}` in {path}, found {n}:\n{text}");
        self.write(path, &text.replacen(from, to, 1))
    }

    /// `file:line:col` (one-based, columns in characters) of the first occurrence of `needle`
    /// in a file, computed from the text alone, for comparing with a diagnostic's location.
    pub fn location_of(&self, path: &str, needle: &str) -> String {
        location_in(path, &self.read(path), needle)
    }

    /// Runs the binary with `--root` pointing at this repository.
    pub fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_with(args, &RunOptions::default())
    }

    /// Runs the binary with `--root` pointing at this repository, with extra environment
    /// variables and stdin.
    pub fn xtask_with(&self, args: &[&str], options: &RunOptions) -> Run {
        let root = self.root().to_str().expect("a UTF-8 temp path").to_owned();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        xtask_with(&all, options)
    }
}

/// `file:line:col` of the first occurrence of `needle` in `text`.
pub fn location_in(path: &str, text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in {path}:\n{text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    format!("{path}:{line}:{col}")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            // Deploy bundles and journals of local runs are not client files.
            if entry.file_name() == ".opus" || entry.file_name() == "bundle" {
                continue;
            }
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
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
    /// Asserts the exit code, showing both streams when it differs.
    pub fn assert_code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_stderr_is_empty(&self) -> &Run {
        assert!(self.stderr.is_empty(), "unexpected stderr:\n{}", self.stderr);
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "stderr lacks `{needle}`:\n{}", self.stderr);
        self
    }
}

/// Extra settings for one run of the binary.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Environment variables set after the scrubbed defaults (so they may replace `PATH` or
    /// `HOME`).
    pub env: Vec<(String, String)>,
    /// Bytes written to the binary's stdin (none: stdin is closed).
    pub stdin: Option<Vec<u8>>,
}

impl RunOptions {
    pub fn env(mut self, name: &str, value: impl Into<String>) -> RunOptions {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> RunOptions {
        self.stdin = Some(bytes.into());
        self
    }
}

/// Runs the real `xtask` binary with a scrubbed environment: only `PATH`, a fresh `HOME` and
/// `NO_COLOR=1`, in a fresh working directory, with no stdin. Fails the test after
/// [`RUN_TIMEOUT`].
pub fn xtask(args: &[&str]) -> Run {
    xtask_with(args, &RunOptions::default())
}

/// [`xtask`] with extra environment variables and stdin.
pub fn xtask_with(args: &[&str], options: &RunOptions) -> Run {
    let home = tempfile::tempdir().expect("create a temp home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .current_dir(home.path())
        .stdin(if options.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in &options.env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the xtask binary");
    if let Some(bytes) = &options.stdin {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("a piped stdin");
        stdin.write_all(bytes).expect("write the binary's stdin");
        // Dropped here: the binary sees end of file.
    }
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.expect("wait for the xtask binary"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("xtask {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The `example` environment of `repo` compiled with its keys, as `plan` and `deploy` do;
/// fails on any diagnostic.
pub fn compile_example(repo: &Repo) -> platform::plan::Plan {
    let env_file = platform::access::read_env_file(repo.root(), "example").unwrap();
    let identities = platform::access::identities_for(repo.root(), &env_file).unwrap();
    let tree = platform::load::tree::FsTree::new(repo.root());
    let compiled =
        platform::compile::compile_environment(&tree, &components::catalog(), "example", Some(&identities))
            .unwrap();
    assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
    compiled.plan.unwrap()
}
