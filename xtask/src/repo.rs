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
    /// with an `environments/` folder; else the workspace this binary was built from.
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
        let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace");
        if built_in.join("environments").is_dir() {
            return Ok(Repo { root: built_in.to_owned() });
        }
        Err("cannot find the repository: run inside it or pass --root DIR".to_owned())
    }

    pub fn tree(&self) -> FsTree {
        FsTree::new(&self.root)
    }
}
