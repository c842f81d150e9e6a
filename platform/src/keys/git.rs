//! The git side of a key rotation: refusing to start over uncommitted secrets files,
//! committing exactly the rotated files (an explicit list of paths, never a glob, checked
//! against `git diff --cached --name-only` before the commit), and the commit checks of `keys
//! retire` (a flux tree committed, and contained in the revision Flux applied).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::KeysError;
use crate::secrets::SECRETS_FILE_NAME;

/// The commit message of a rotation.
pub const ROTATION_COMMIT_MESSAGE: &str = "Encryption keys rotation";

fn git(dir: &Path, args: &[&str]) -> Result<String, KeysError> {
    let failed = |detail: String| KeysError::Git { command: args.join(" "), dir: dir.to_owned(), detail };
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| failed(format!("could not run git: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(stderr.trim().lines().next().unwrap_or("no message").to_owned()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Secrets files of the environment folder (`environments/ENV`, relative to `root`) that
/// `git status --porcelain` reports as changed, staged or untracked.
pub fn uncommitted_secrets_files(root: &Path, environment_dir: &Path) -> Result<Vec<String>, KeysError> {
    let mut paths = uncommitted_paths(root, environment_dir)?;
    paths.retain(|path| path.ends_with(SECRETS_FILE_NAME));
    Ok(paths)
}

/// Whether git ignores `path` (relative to `root`): such a file is not committed.
pub fn is_ignored(root: &Path, path: &Path) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["check-ignore", "-q", "--"])
        .arg(path)
        .status()
        .is_ok_and(|status| status.success())
}

/// Stages exactly `paths` (relative to `root`), checks that nothing else is staged, and
/// commits them with [`ROTATION_COMMIT_MESSAGE`].
pub fn commit_paths(root: &Path, paths: &[PathBuf]) -> Result<(), KeysError> {
    let relative: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let mut add = vec!["add", "--"];
    add.extend(relative.iter().map(String::as_str));
    git(root, &add)?;
    // Staged paths are relative to the top of the git repository, which may be above `root`.
    let prefix = git(root, &["rev-parse", "--show-prefix"])?.trim().to_owned();
    let mut expected: Vec<String> = relative.iter().map(|path| format!("{prefix}{path}")).collect();
    let mut staged: Vec<String> =
        git(root, &["diff", "--cached", "--name-only"])?.lines().map(str::to_owned).collect();
    expected.sort();
    staged.sort();
    if expected != staged {
        return Err(KeysError::StagedMismatch { expected, staged });
    }
    git(root, &["commit", "--quiet", "-m", ROTATION_COMMIT_MESSAGE])?;
    Ok(())
}

/// What `rotate-keys --commit` needs before it starts, so that the commit at the end cannot
/// fail on something a rotation then could not undo: nothing else staged, env.toml without
/// uncommitted edits (it is committed with the rotation), and no untracked, unignored key
/// store file (committing it would put a private key into the history).
pub fn check_commit_preconditions(
    root: &Path,
    env_toml: Option<&Path>,
    key_store: Option<&Path>,
) -> Result<(), KeysError> {
    let blocked = |detail: String| KeysError::CommitBlocked { detail };
    let staged = git(root, &["diff", "--cached", "--name-only"])?;
    let staged: Vec<&str> = staged.lines().filter(|l| !l.is_empty()).collect();
    if !staged.is_empty() {
        return Err(blocked(format!(
            "other changes are staged ({}); commit or unstage them first",
            staged.join(", ")
        )));
    }
    if let Some(env_toml) = env_toml {
        let env_toml_text = env_toml.to_string_lossy();
        let dirty = git(root, &["status", "--porcelain", "--", &env_toml_text])?;
        if !dirty.trim().is_empty() {
            return Err(blocked(format!("{} has uncommitted edits; commit them first", env_toml.display())));
        }
    }
    if let Some(store) = key_store {
        let store_text = store.to_string_lossy();
        let untracked = git(root, &["ls-files", "--others", "--exclude-standard", "--", &store_text])?;
        if !untracked.trim().is_empty() {
            return Err(blocked(format!(
                "the key store {} holds a private key and is not tracked: add it to .gitignore (or commit it on purpose, as the example's demo key is)",
                store.display()
            )));
        }
    }
    Ok(())
}

/// Paths under `dir` (relative to `root`) that `git status --porcelain` reports as changed,
/// staged or untracked.
pub fn uncommitted_paths(root: &Path, dir: &Path) -> Result<Vec<String>, KeysError> {
    let dir = dir.to_string_lossy();
    let status = git(root, &["status", "--porcelain", "--untracked-files=all", "--", &dir])?;
    Ok(status
        .lines()
        .filter_map(|line| line.get(3..))
        .map(|path| path.rsplit(" -> ").next().unwrap_or(path).trim_matches('"').to_owned())
        .collect())
}

/// The last commit that changed anything under `dir` (relative to `root`), if any did.
pub fn last_commit_of(root: &Path, dir: &Path) -> Result<Option<String>, KeysError> {
    let dir = dir.to_string_lossy();
    let commit = git(root, &["log", "-1", "--format=%H", "--", &dir])?.trim().to_owned();
    Ok(Some(commit).filter(|c| !c.is_empty()))
}

/// Whether `descendant` contains `ancestor` (`git merge-base --is-ancestor`): `None` when
/// `descendant` is not a commit of this clone.
pub fn contains_commit(root: &Path, descendant: &str, ancestor: &str) -> Result<Option<bool>, KeysError> {
    let known = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["cat-file", "-e", &format!("{descendant}^{{commit}}")])
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| KeysError::Git {
            command: "cat-file -e".to_owned(),
            dir: root.to_owned(),
            detail: format!("could not run git: {e}"),
        })?;
    if !known.success() {
        return Ok(None);
    }
    let args = ["merge-base", "--is-ancestor", ancestor, descendant];
    let status = Command::new("git").arg("-C").arg(root).args(args).status().map_err(|e| KeysError::Git {
        command: args.join(" "),
        dir: root.to_owned(),
        detail: format!("could not run git: {e}"),
    })?;
    match status.code() {
        Some(0) => Ok(Some(true)),
        Some(1) => Ok(Some(false)),
        _ => Err(KeysError::Git {
            command: args.join(" "),
            dir: root.to_owned(),
            detail: format!("exited with {status}"),
        }),
    }
}
