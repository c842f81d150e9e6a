//! Finding the repository: the folder with `environments/`.

use std::path::{Path, PathBuf};

use platform::load::tree::FsTree;

/// The repository an invocation works on.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
}

impl Repo {
    /// `--root`/`OPUS_ROOT` when given; else the nearest ancestor of the current directory
    /// with an `environments/` folder (and a `Cargo.toml`). Never the workspace this binary
    /// was built from: a command run elsewhere must not silently check that repository.
    pub fn find(explicit: Option<&Path>) -> Result<Repo, String> {
        if let Some(root) = explicit {
            if root.join("environments").is_dir() {
                return Ok(Repo { root: root.to_owned() });
            }
            return Err(format!("{} has no environments/ folder", root.display()));
        }
        let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
        for dir in cwd.ancestors() {
            if dir.join("environments").is_dir() && dir.join("Cargo.toml").is_file() {
                return Ok(Repo { root: dir.to_owned() });
            }
        }
        Err(format!(
            "cannot find the repository: neither {} nor any folder above it has an environments/ folder\n\
             help: run inside the repository, or name it with --root DIR (or OPUS_ROOT)",
            cwd.display()
        ))
    }

    pub fn tree(&self) -> FsTree {
        FsTree::new(&self.root)
    }
}
