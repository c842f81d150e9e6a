//! Finding the repository: the folder with `environments/`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use platform::access::{AccessError, read_env_file_with};
use platform::core_version::{CoreChoice, CoreError, read_environment_core_with};
use platform::load::tree::{DirEntry, FsTree, SourceTree};
use platform::model::EnvFile;

/// The repository an invocation works on.
#[derive(Debug)]
pub struct Repo {
    pub root: PathBuf,
    /// Files read before the command ran (the env.toml the core routing read), kept for the
    /// command's first read of each, so no file is read twice.
    read_ahead: Mutex<BTreeMap<String, String>>,
}

impl Repo {
    /// `--root`/`OPUS_ROOT` when given; else the nearest ancestor of the current directory
    /// with an `environments/` folder (and a `Cargo.toml`). Never the workspace this binary
    /// was built from: a command run elsewhere must not silently check that repository.
    pub fn find(explicit: Option<&Path>) -> Result<Repo, String> {
        if let Some(root) = explicit {
            if root.join("environments").is_dir() {
                return Ok(Repo::at(root));
            }
            return Err(format!("{} has no environments/ folder", root.display()));
        }
        let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
        for dir in cwd.ancestors() {
            if dir.join("environments").is_dir() && dir.join("Cargo.toml").is_file() {
                return Ok(Repo::at(dir));
            }
        }
        Err(format!(
            "cannot find the repository: neither {} nor any folder above it has an environments/ folder\n\
             help: run inside the repository, or name it with --root DIR (or OPUS_ROOT)",
            cwd.display()
        ))
    }

    fn at(root: &Path) -> Repo {
        Repo { root: root.to_owned(), read_ahead: Mutex::default() }
    }

    /// The working tree, as the loader reads it.
    pub fn tree(&self) -> RepoTree<'_> {
        RepoTree { files: FsTree::new(&self.root), read_ahead: &self.read_ahead }
    }

    /// The `core` an environment pins, read through [`Repo::tree`] (so with its refusals:
    /// no symbolic link out of the repository, no oversized file); the text is kept for the
    /// loader's read of the same file.
    pub fn environment_core(&self, environment: &str) -> Result<CoreChoice, CoreError> {
        read_environment_core_with(&self.root, environment, |_| self.read_env_toml(environment))
    }

    /// An environment's env.toml, read the same way, for the commands that need its settings
    /// without compiling it.
    pub fn env_file(&self, environment: &str) -> Result<EnvFile, AccessError> {
        read_env_file_with(&self.root, environment, |_| self.read_env_toml(environment))
    }

    /// env.toml's text: what was read ahead, or read now (and kept for the loader).
    fn read_env_toml(&self, environment: &str) -> io::Result<String> {
        let relative = format!("environments/{environment}/env.toml");
        let mut read_ahead = self.read_ahead.lock().expect("not poisoned");
        if let Some(text) = read_ahead.get(&relative) {
            return Ok(text.clone());
        }
        let text = FsTree::new(&self.root)
            .read(&relative)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        read_ahead.insert(relative, text.clone());
        Ok(text)
    }
}

/// The working tree, serving first what was read ahead (each such file once).
pub struct RepoTree<'a> {
    files: FsTree,
    read_ahead: &'a Mutex<BTreeMap<String, String>>,
}

impl SourceTree for RepoTree<'_> {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        if let Some(text) = self.read_ahead.lock().expect("not poisoned").remove(path) {
            return Ok(Some(text));
        }
        self.files.read(path)
    }
    fn dirs(&self, path: &str) -> io::Result<Vec<String>> {
        self.files.dirs(path)
    }
    fn entries(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        self.files.entries(path)
    }
    fn exists(&self, path: &str) -> io::Result<bool> {
        self.files.exists(path)
    }
    fn describe(&self) -> String {
        self.files.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_toml_the_routing_read_is_the_loaders_first_read_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("environments/staging");
        std::fs::create_dir_all(&env_dir).unwrap();
        std::fs::write(env_dir.join("env.toml"), "core = \"example\"\n").unwrap();
        let repo = Repo::at(dir.path());
        assert_eq!(repo.environment_core("staging").unwrap(), CoreChoice::Example);
        // Gone from disk: the loader's read is served from what the routing read.
        std::fs::remove_file(env_dir.join("env.toml")).unwrap();
        let tree = repo.tree();
        assert_eq!(
            tree.read("environments/staging/env.toml").unwrap().as_deref(),
            Some("core = \"example\"\n")
        );
        assert_eq!(tree.read("environments/staging/env.toml").unwrap(), None, "a second read goes to disk");
    }

    #[test]
    fn env_file_settings_and_the_loader_share_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("environments/staging");
        std::fs::create_dir_all(&env_dir).unwrap();
        std::fs::write(env_dir.join("env.toml"), "core = \"example\"\n").unwrap();
        let repo = Repo::at(dir.path());
        assert_eq!(repo.environment_core("staging").unwrap(), CoreChoice::Example);
        std::fs::remove_file(env_dir.join("env.toml")).unwrap();
        // The settings come from the same text (an incomplete env.toml is reported as such,
        // not as a missing file), and the loader still gets it.
        let error = repo.env_file("staging").unwrap_err();
        assert!(matches!(error, AccessError::InvalidEnv { .. }), "{error}");
        assert!(repo.tree().read("environments/staging/env.toml").unwrap().is_some());
    }
}
