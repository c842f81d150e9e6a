//! Where the client files are read from: the working tree, or a git revision (for
//! `plan --base`, which must not touch the working tree).

use std::io;
use std::path::{Path, PathBuf};

/// A read-only view of the repository's files, by paths relative to its root with `/`.
pub trait SourceTree {
    /// The file's text, or `None` when it does not exist.
    fn read(&self, path: &str) -> io::Result<Option<String>>;
    /// Names of the sub-directories of a directory, sorted.
    fn dirs(&self, path: &str) -> io::Result<Vec<String>>;
    /// Whether a file exists.
    fn exists(&self, path: &str) -> io::Result<bool> {
        Ok(self.read(path)?.is_some())
    }
    /// Describes the tree for messages (a path, or `git rev`).
    fn describe(&self) -> String;
}

/// The working tree on disk.
#[derive(Debug, Clone)]
pub struct FsTree {
    pub root: PathBuf,
}

impl FsTree {
    pub fn new(root: impl Into<PathBuf>) -> FsTree {
        FsTree { root: root.into() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

impl SourceTree for FsTree {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        match std::fs::read_to_string(self.root.join(path)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("cannot read {path}: {e}"))),
        }
    }

    fn dirs(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(self.root.join(path)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot list {path}: {e}"))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io::Error::new(e.kind(), format!("cannot list {path}: {e}")))?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        Ok(self.root.join(path).is_file())
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// The files of a git revision, read with `git show` and `git ls-tree` without checking out.
#[derive(Debug, Clone)]
pub struct GitTree {
    pub repo: PathBuf,
    /// The full commit id the revision resolved to.
    pub commit: String,
}

impl GitTree {
    /// Resolves `rev` (a branch, tag or commit) in the repository at `repo`.
    pub fn open(repo: &Path, rev: &str) -> io::Result<GitTree> {
        let out = git(repo, &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])?;
        let commit = String::from_utf8_lossy(&out).trim().to_owned();
        if commit.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("unknown git revision `{rev}`")));
        }
        Ok(GitTree { repo: repo.to_owned(), commit })
    }
}

fn git(repo: &Path, args: &[&str]) -> io::Result<Vec<u8>> {
    let output = std::process::Command::new("git").arg("-C").arg(repo).args(args).output()?;
    if output.status.success() {
        Ok(output.stdout)
    } else if args.first() == Some(&"rev-parse") {
        Ok(Vec::new())
    } else {
        Err(io::Error::other(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl SourceTree for GitTree {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        let listing = git(&self.repo, &["ls-tree", "--name-only", &self.commit, "--", path])?;
        if listing.is_empty() {
            return Ok(None);
        }
        let blob = git(&self.repo, &["show", &format!("{}:{path}", self.commit)])?;
        String::from_utf8(blob)
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path} is not UTF-8")))
    }

    fn dirs(&self, path: &str) -> io::Result<Vec<String>> {
        let spec = format!("{}:{path}", self.commit);
        let listing = match git(&self.repo, &["ls-tree", &spec]) {
            Ok(listing) => listing,
            Err(_) => return Ok(Vec::new()),
        };
        let mut names: Vec<String> = String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(|line| {
                let (meta, name) = line.split_once('\t')?;
                meta.split_whitespace().nth(1).filter(|kind| *kind == "tree").map(|_| name.to_owned())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn describe(&self) -> String {
        format!("git {}", &self.commit[..12.min(self.commit.len())])
    }
}
