//! Where the client files are read from: the working tree, or a git revision (for
//! `plan --base`, which must not touch the working tree).
//!
//! Both trees refuse what a configuration file must not be: a path that resolves (symbolic
//! links followed) outside the repository, anything but a regular file, a file larger than
//! [`MAX_FILE_BYTES`], text that is not UTF-8. A refusal is an [`io::Error`] carrying a
//! [`Refused`], which names the path and never the content.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest file read through a [`SourceTree`] (client files and secrets files): 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A read-only view of the repository's files, by paths relative to its root with `/`.
pub trait SourceTree {
    /// The file's text, or `None` when it does not exist.
    fn read(&self, path: &str) -> io::Result<Option<String>>;
    /// Names of the sub-directories of a directory, sorted.
    fn dirs(&self, path: &str) -> io::Result<Vec<String>>;
    /// Every entry of a directory, sorted by name (none when the directory does not exist).
    fn entries(&self, path: &str) -> io::Result<Vec<DirEntry>>;
    /// Whether a file exists.
    fn exists(&self, path: &str) -> io::Result<bool> {
        Ok(self.read(path)?.is_some())
    }
    /// Describes the tree for messages (a path, or `git rev`).
    fn describe(&self) -> String;
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
}

/// What a directory entry is, symbolic links followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// Something no configuration can be: a broken or looping symbolic link, a path that
    /// resolves outside the repository, a special file, a name that is not UTF-8. The
    /// refusal says why.
    Refused(Refused),
}

/// Why a path of the tree is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{path} resolves outside the repository")]
    Outside { path: String },
    #[error("{path} is a symbolic link that cannot be followed: {reason}")]
    BrokenLink { path: String, reason: String },
    #[error("{path} is a symbolic link, which a git revision does not follow")]
    GitLink { path: String },
    #[error("{path} is not a regular file or directory")]
    Special { path: String },
    #[error("{path} is a directory, not a file")]
    Directory { path: String },
    #[error("{path} is larger than the limit of {limit} bytes ({size} bytes)")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path} is not UTF-8")]
    NotUtf8 { path: String },
    #[error("the name of an entry of {dir} is not UTF-8: {name}")]
    BadName { dir: String, name: String },
}

impl Refused {
    /// What to do about it, for a diagnostic's help line.
    pub fn help(&self) -> String {
        match self {
            Refused::Outside { .. } => "configuration is read only from inside the repository: replace the symbolic link with the file itself".to_owned(),
            Refused::BrokenLink { .. } => "remove the link, or point it at a file of the repository".to_owned(),
            Refused::GitLink { .. } => "commit the file itself instead of a symbolic link".to_owned(),
            Refused::Special { .. } | Refused::Directory { .. } => "configuration files are regular files".to_owned(),
            Refused::TooLarge { limit, .. } => format!("configuration files are at most {limit} bytes (1 MiB)"),
            Refused::NotUtf8 { .. } => "save the file as UTF-8".to_owned(),
            Refused::BadName { .. } => "rename it: names of the client tree are ASCII".to_owned(),
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// The refusal an error of [`SourceTree::read`] carries, if it is one.
pub fn refusal(error: &io::Error) -> Option<&Refused> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<Refused>())
}

/// The working tree on disk.
#[derive(Debug)]
pub struct FsTree {
    pub root: PathBuf,
    /// The root with its links followed, once known.
    real_root: std::sync::OnceLock<PathBuf>,
    /// Regular files found by [`SourceTree::entries`] in a resolved directory, by relative
    /// path: their real path is the directory's plus their name, so reading them needs no
    /// second resolution (opened with `O_NOFOLLOW`, so a file replaced by a link since the
    /// listing is resolved again).
    listed_files: std::sync::Mutex<std::collections::HashMap<String, PathBuf>>,
    /// Directories found the same way, listed without resolving them again while they are
    /// still directories and not links (checked with `lstat` right before).
    listed_dirs: std::sync::Mutex<std::collections::HashMap<String, PathBuf>>,
}

impl FsTree {
    pub fn new(root: impl Into<PathBuf>) -> FsTree {
        FsTree {
            root: root.into(),
            real_root: std::sync::OnceLock::new(),
            listed_files: Default::default(),
            listed_dirs: Default::default(),
        }
    }

    /// Opens a file the listing saw as a regular file, refusing to follow a link that took its
    /// place (`None`: resolve it the slow way).
    fn open_listed(&self, path: &str) -> Option<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.listed_files.lock().expect("not poisoned").remove(path)?;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(real).ok()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The path with every symbolic link followed, refused when it leaves the repository.
    /// `Ok(None)` when it does not exist.
    fn resolve(&self, relative: &str) -> io::Result<Option<PathBuf>> {
        let root = match self.real_root.get() {
            Some(root) => root,
            None => {
                let root = self.root.canonicalize()?;
                self.real_root.get_or_init(|| root)
            }
        };
        let full = self.root.join(relative);
        match full.canonicalize() {
            Ok(real) if real.starts_with(root) => Ok(Some(real)),
            Ok(_) => Err(Refused::Outside { path: relative.to_owned() }.into_io()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A link whose target is missing exists, broken; a missing path does not.
                if std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink()) {
                    Err(Refused::BrokenLink { path: relative.to_owned(), reason: e.to_string() }.into_io())
                } else {
                    Ok(None)
                }
            }
            Err(e) if std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink()) => {
                Err(Refused::BrokenLink { path: relative.to_owned(), reason: e.to_string() }.into_io())
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("cannot read {relative}: {e}"))),
        }
    }

    fn kind(&self, relative: &str) -> io::Result<EntryKind> {
        let refused = |e: &io::Error| refusal(e).cloned();
        let real = match self.resolve(relative) {
            Ok(Some(real)) => real,
            Ok(None) => {
                return Ok(EntryKind::Refused(Refused::BrokenLink {
                    path: relative.to_owned(),
                    reason: "it vanished while being read".to_owned(),
                }));
            }
            Err(e) => return refused(&e).map(EntryKind::Refused).ok_or(e),
        };
        let metadata = std::fs::metadata(&real)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {relative}: {e}")))?;
        Ok(if metadata.is_dir() {
            EntryKind::Dir
        } else if metadata.is_file() {
            EntryKind::File
        } else {
            EntryKind::Refused(Refused::Special { path: relative.to_owned() })
        })
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") }
}

impl SourceTree for FsTree {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        let cannot = |e: io::Error| io::Error::new(e.kind(), format!("cannot read {path}: {e}"));
        let file = match self.open_listed(path) {
            Some(file) => file,
            None => {
                let Some(real) = self.resolve(path)? else { return Ok(None) };
                std::fs::File::open(&real).map_err(cannot)?
            }
        };
        let metadata = file.metadata().map_err(cannot)?;
        if metadata.is_dir() {
            return Err(Refused::Directory { path: path.to_owned() }.into_io());
        }
        if !metadata.is_file() {
            return Err(Refused::Special { path: path.to_owned() }.into_io());
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(Refused::TooLarge {
                path: path.to_owned(),
                size: metadata.len(),
                limit: MAX_FILE_BYTES,
            }
            .into_io());
        }
        // The file may grow between the check and the read: never read more than the limit.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(Refused::TooLarge {
                path: path.to_owned(),
                size: bytes.len() as u64,
                limit: MAX_FILE_BYTES,
            }
            .into_io());
        }
        String::from_utf8(bytes).map(Some).map_err(|_| Refused::NotUtf8 { path: path.to_owned() }.into_io())
    }

    fn dirs(&self, path: &str) -> io::Result<Vec<String>> {
        Ok(self.entries(path)?.into_iter().filter(|e| e.kind == EntryKind::Dir).map(|e| e.name).collect())
    }

    fn entries(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let listed = self.listed_dirs.lock().expect("not poisoned").remove(path);
        let listed = listed.filter(|real| std::fs::symlink_metadata(real).is_ok_and(|m| m.is_dir()));
        let real = match listed {
            Some(real) => real,
            None => match self.resolve(path) {
                Ok(Some(real)) => real,
                Ok(None) => return Ok(out),
                Err(e) => return Err(e),
            },
        };
        let entries = match std::fs::read_dir(&real) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot list {path}: {e}"))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io::Error::new(e.kind(), format!("cannot list {path}: {e}")))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push(DirEntry {
                    kind: EntryKind::Refused(Refused::BadName { dir: path.to_owned(), name: name.clone() }),
                    name,
                });
                continue;
            };
            // An entry that is not a symbolic link lies inside the resolved (and so checked)
            // directory: its type needs no second resolution. Links and special files do.
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    self.listed_dirs
                        .lock()
                        .expect("not poisoned")
                        .insert(join(path, &name), real.join(&name));
                    EntryKind::Dir
                }
                Ok(t) if t.is_file() => {
                    self.listed_files
                        .lock()
                        .expect("not poisoned")
                        .insert(join(path, &name), real.join(&name));
                    EntryKind::File
                }
                _ => self.kind(&join(path, &name))?,
            };
            out.push(DirEntry { name, kind });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A refused path exists: reading it reports the refusal.
    fn exists(&self, path: &str) -> io::Result<bool> {
        if self.listed_files.lock().expect("not poisoned").contains_key(path) {
            return Ok(true);
        }
        match self.resolve(path) {
            Ok(Some(real)) => Ok(real.is_file()),
            Ok(None) => Ok(false),
            Err(e) if refusal(&e).is_some() => Ok(true),
            Err(e) => Err(e),
        }
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

    /// `git ls-tree -l` of a tree-ish: `(mode, size, name)` for each entry.
    fn ls_tree(&self, args: &[&str]) -> io::Result<Vec<(String, Option<u64>, String)>> {
        let mut all = vec!["ls-tree", "-l", "-z"];
        all.extend_from_slice(args);
        let listing = git(&self.repo, &all)?;
        Ok(listing
            .split(|b| *b == 0)
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let line = String::from_utf8_lossy(line);
                let (meta, name) = line.split_once('\t')?;
                let mut fields = meta.split_whitespace();
                let mode = fields.next()?.to_owned();
                let size = fields.nth(2).and_then(|s| s.parse().ok());
                Some((mode, size, name.to_owned()))
            })
            .collect())
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

/// What a git tree entry's mode makes it.
fn git_kind(mode: &str, path: &str) -> EntryKind {
    match mode {
        "040000" => EntryKind::Dir,
        "100644" | "100755" => EntryKind::File,
        "120000" => EntryKind::Refused(Refused::GitLink { path: path.to_owned() }),
        _ => EntryKind::Refused(Refused::Special { path: path.to_owned() }),
    }
}

impl SourceTree for GitTree {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        let listing = self.ls_tree(&[&self.commit, "--", path])?;
        let Some((mode, size, _)) = listing.into_iter().find(|(_, _, name)| name == path) else {
            return Ok(None);
        };
        match git_kind(&mode, path) {
            EntryKind::File => {}
            EntryKind::Dir => return Err(Refused::Directory { path: path.to_owned() }.into_io()),
            EntryKind::Refused(refused) => return Err(refused.into_io()),
        }
        let size = size.unwrap_or(0);
        if size > MAX_FILE_BYTES {
            return Err(Refused::TooLarge { path: path.to_owned(), size, limit: MAX_FILE_BYTES }.into_io());
        }
        let blob = git(&self.repo, &["show", &format!("{}:{path}", self.commit)])?;
        String::from_utf8(blob).map(Some).map_err(|_| Refused::NotUtf8 { path: path.to_owned() }.into_io())
    }

    fn dirs(&self, path: &str) -> io::Result<Vec<String>> {
        Ok(self.entries(path)?.into_iter().filter(|e| e.kind == EntryKind::Dir).map(|e| e.name).collect())
    }

    fn entries(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let spec = format!("{}:{path}", self.commit);
        let listing = match self.ls_tree(&[&spec]) {
            Ok(listing) => listing,
            Err(_) => return Ok(Vec::new()),
        };
        let mut entries: Vec<DirEntry> = listing
            .into_iter()
            .map(|(mode, _, name)| DirEntry { kind: git_kind(&mode, &join(path, &name)), name })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn describe(&self) -> String {
        format!("git {}", &self.commit[..12.min(self.commit.len())])
    }
}

/// A tree that records a digest of everything read through it: each file's text (or that it
/// is absent) and each directory listing. What a plan was compiled from, so a deploy of a
/// reviewed plan can tell that nothing it read has changed (`plan --out`, `deploy --plan`).
pub struct RecordingTree<'a> {
    inner: &'a dyn SourceTree,
    /// Names a listing's digest leaves out (what the loader passes over).
    ignored: fn(&str) -> bool,
    seen: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl<'a> RecordingTree<'a> {
    /// Records what is read through `inner`; directory listings leave out the names `ignored`
    /// accepts (for the loader: `load::environment::is_not_configuration`).
    pub fn new(inner: &'a dyn SourceTree, ignored: fn(&str) -> bool) -> RecordingTree<'a> {
        RecordingTree { inner, ignored, seen: std::sync::Mutex::new(std::collections::BTreeMap::new()) }
    }

    /// What was read: `path` → `sha256:<hex>` of a file, `absent` for a file that does not
    /// exist, and `dir:<path>` → a digest of the listing.
    pub fn digests(&self) -> std::collections::BTreeMap<String, String> {
        self.seen.lock().expect("not poisoned").clone()
    }

    fn note(&self, key: String, value: String) {
        self.seen.lock().expect("not poisoned").insert(key, value);
    }
}

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl SourceTree for RecordingTree<'_> {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        let text = self.inner.read(path)?;
        let digest = text.as_deref().map_or_else(|| "absent".to_owned(), |t| sha256_digest(t.as_bytes()));
        self.note(path.to_owned(), digest);
        Ok(text)
    }
    fn dirs(&self, path: &str) -> io::Result<Vec<String>> {
        let dirs = self.inner.dirs(path)?;
        let listed: Vec<&str> = dirs.iter().map(String::as_str).filter(|d| !(self.ignored)(d)).collect();
        self.note(format!("dirs:{path}"), sha256_digest(listed.join("\n").as_bytes()));
        Ok(dirs)
    }
    fn entries(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let entries = self.inner.entries(path)?;
        // What the loader passes over (its state, notes, key files) is not an input.
        let listing: Vec<String> = entries
            .iter()
            .filter(|e| !(self.ignored)(&e.name))
            .map(|e| format!("{:?} {}", e.kind, e.name))
            .collect();
        self.note(format!("dir:{path}"), sha256_digest(listing.join("\n").as_bytes()));
        Ok(entries)
    }
    fn exists(&self, path: &str) -> io::Result<bool> {
        let exists = self.inner.exists(path)?;
        let mut seen = self.seen.lock().expect("not poisoned");
        // A read of the same file records more than its existence.
        seen.entry(path.to_owned())
            .or_insert_with(|| if exists { "exists".to_owned() } else { "absent".to_owned() });
        Ok(exists)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_listed_file_replaced_by_a_link_out_of_the_repository_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.toml"), "stolen = true\n").unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join("env")).unwrap();
        std::fs::write(repo.path().join("env/a.toml"), "a = 1\n").unwrap();
        std::fs::write(repo.path().join("env/b.toml"), "b = 2\n").unwrap();
        let tree = FsTree::new(repo.path());
        let listed = tree.entries("env").unwrap();
        assert!(listed.iter().all(|e| e.kind == EntryKind::File), "{listed:?}");
        assert_eq!(tree.read("env/a.toml").unwrap().as_deref(), Some("a = 1\n"));

        // Between the listing and the read, b.toml becomes a link out of the repository.
        std::fs::remove_file(repo.path().join("env/b.toml")).unwrap();
        symlink(outside.path().join("secret.toml"), repo.path().join("env/b.toml")).unwrap();
        let error = tree.read("env/b.toml").expect_err("the link is followed only to be refused");
        assert!(matches!(refusal(&error), Some(Refused::Outside { .. })), "{error}");
    }

    #[test]
    fn a_listed_directory_replaced_by_a_link_out_of_the_repository_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("component.toml"), "stolen = true\n").unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("env/ns")).unwrap();
        let tree = FsTree::new(repo.path());
        assert_eq!(tree.entries("env").unwrap(), vec![DirEntry { name: "ns".into(), kind: EntryKind::Dir }]);

        // Between listing env/ and listing env/ns, ns becomes a link out of the repository.
        std::fs::remove_dir(repo.path().join("env/ns")).unwrap();
        symlink(outside.path(), repo.path().join("env/ns")).unwrap();
        let error = tree.entries("env/ns").expect_err("the link is followed only to be refused");
        assert!(matches!(refusal(&error), Some(Refused::Outside { .. })), "{error}");
    }
}
