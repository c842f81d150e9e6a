//! Core versions: each environment pins the core (catalog and engine) it is deployed with.
//!
//! `env.toml` says `core = "example"` (this checkout) or `core = "1.4.0"`, which means tag
//! `v1.4.0` of the repository named by `[core] repository` in `client.toml`. This module fetches
//! such a core into a cache outside the working tree and pins it, so that a tag that moves later
//! is refused instead of silently upgrading a bank's production:
//!
//! ```text
//! <cache>/repos/<hash of the repository URL>.git   bare mirror, `git fetch` of every tag
//! <cache>/checkouts/<commit>/                       the core's files at that commit (git archive)
//! <cache>/checkouts/<commit>.manifest               sha256 of every file, to refuse a dirty checkout
//! <cache>/pins.json                                 {repository, tag} -> commit, when first fetched
//! <cache>/target/                                   one cargo target dir shared by every core
//! <cache>/bin/<commit>/xtask                        the built xtask of each core
//! ```
//!
//! The cache is `$OPUS_CORE_CACHE`, else `$XDG_CACHE_HOME/opus-deploy/cores`, else
//! `~/.cache/opus-deploy/cores`. Once a tag is pinned and its checkout exists, nothing here
//! touches the network. Every change to the cache happens under an exclusive lock on
//! `<cache>/lock`, so two invocations never race on a fetch, a pin or a build.
//!
//! How the pinned core's code runs is the CLI's business (`xtask` re-executes the binary
//! returned by [`build_core_xtask`]); this module only fetches, pins, checks and builds.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `core` value that means "the checkout this binary was built from".
pub const EXAMPLE_CORE: &str = "example";
/// Set by a parent xtask on the pinned core it runs: the commit of that core. A process that
/// sees it is already the right core and never re-executes.
pub const ACTIVE_CORE_ENV: &str = "OPUS_CORE_ACTIVE";
/// Overrides the cache folder.
pub const CACHE_ENV: &str = "OPUS_CORE_CACHE";

/// The core an environment is deployed with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CoreChoice {
    /// This checkout.
    Example,
    /// A released core: tag `v<version>` of the client's core repository.
    Version(String),
}

/// Why a core could not be read, fetched, pinned or built.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("cannot find a cache folder for cores: set {CACHE_ENV}, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error(
        "{}:{line}:{column}: `core = {version:?}` is neither `example` nor a version `MAJOR.MINOR.PATCH` with an optional `-PRERELEASE`, such as `1.4.0` (fetched at tag `v1.4.0`); {}",
        .path.display(),
        core_help(.version)
    )]
    InvalidVersion { path: PathBuf, line: usize, column: usize, version: String },
    #[error(
        "environments/client.toml: the core repository URL embeds a password or token: remove it and let a git credential helper provide it"
    )]
    PasswordInUrl,
    #[error("cannot reach the core repository {repository} (for `{environment}`): {git_error}")]
    UnreachableRepository { environment: String, repository: String, git_error: String },
    #[error(
        "the core repository {repository} has no tag `{tag}` (pinned by `{environment}`){}",
        nearest_tags(.nearest)
    )]
    UnknownTag { environment: String, repository: String, tag: String, nearest: Vec<String> },
    #[error(
        "tag `{tag}` of the core repository {repository} moved: it pointed at {pinned} when first fetched and now points at {fetched}; a moved tag is never followed silently: review the change, then accept it with `cargo xtask core fetch {environment} --accept-moved-tag`"
    )]
    MovedTag { environment: String, repository: String, tag: String, pinned: String, fetched: String },
    #[error(
        "commit {commit} (tag `{tag}`, pinned for `{environment}`) is not in the core repository {repository} any more"
    )]
    MissingCommit { environment: String, repository: String, tag: String, commit: String },
    #[error(
        "the cached core checkout {} is missing or incomplete: run `cargo xtask core fetch {environment}` to restore it",
        .checkout.display()
    )]
    MissingCheckout { environment: String, checkout: PathBuf },
    #[error(
        "the cached core checkout {} was changed by hand ({file}): delete that folder and run `cargo xtask core fetch {environment}` to restore it",
        .checkout.display()
    )]
    DirtyCheckout { environment: String, checkout: PathBuf, file: String },
    #[error("`git {command}` failed in {}: {stderr}", .dir.display())]
    Git { command: String, dir: PathBuf, stderr: String },
    #[error("cannot run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the xtask of core {version} (commit {commit}) in {}:\n{stderr}", .checkout.display())]
    Build { version: String, commit: String, checkout: PathBuf, stderr: String },
}

fn nearest_tags(nearest: &[String]) -> String {
    if nearest.is_empty() {
        " (it has no tags at all)".to_owned()
    } else {
        format!(" (nearest tags: {})", nearest.join(", "))
    }
}

/// The cache folder, from the process environment (see the module documentation).
pub fn cache_dir() -> Result<PathBuf, CoreError> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// The cache folder, from an environment lookup (for tests).
pub fn cache_dir_from(lookup: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, CoreError> {
    let set = |name: &str| lookup(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(CACHE_ENV) {
        return Ok(dir);
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        return Ok(dir.join("opus-deploy").join("cores"));
    }
    if let Some(home) = set("HOME") {
        return Ok(home.join(".cache").join("opus-deploy").join("cores"));
    }
    Err(CoreError::NoCacheDir)
}

/// Reads only the `core` key of `environments/<environment>/env.toml` under `root`: cheap
/// enough to run before every command, without the loader or the catalog. An invalid value is
/// an error here, before anything is fetched or run: the caller never treats it as `example`.
pub fn read_environment_core(root: &Path, environment: &str) -> Result<CoreChoice, CoreError> {
    read_environment_core_with(root, environment, |path| fs::read_to_string(path))
}

/// [`read_environment_core`] with the file read by `read` (the CLI reads through its source
/// tree, which keeps the text for the loader, so env.toml is read once per command).
pub fn read_environment_core_with(
    root: &Path,
    environment: &str,
    read: impl FnOnce(&Path) -> io::Result<String>,
) -> Result<CoreChoice, CoreError> {
    let path = root.join("environments").join(environment).join("env.toml");
    if environment.is_empty() || environment.contains(['/', '\\']) || environment.starts_with('.') {
        return Err(CoreError::Parse { path, message: "not an environment name".to_owned() });
    }
    #[derive(Deserialize)]
    struct CoreOnly {
        core: Option<toml::Spanned<toml::Value>>,
    }
    let text = read(&path).map_err(|source| CoreError::Read { path: path.clone(), source })?;
    let parsed: CoreOnly = toml::from_str(&text)
        .map_err(|e| CoreError::Parse { path: path.clone(), message: e.message().to_owned() })?;
    let Some(core) = parsed.core else {
        return Err(CoreError::Parse { path, message: "`core` is not set".to_owned() });
    };
    let start = core.span().start.min(text.len());
    match core.into_inner() {
        toml::Value::String(core) => parse_core_choice(&core).ok_or_else(|| {
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
            CoreError::InvalidVersion { path: path.clone(), line, column, version: core.clone() }
        }),
        _ => Err(CoreError::Parse { path, message: "`core` must be a string".to_owned() }),
    }
}

/// `example`, or a core version (see [`is_core_version`]).
pub fn parse_core_choice(core: &str) -> Option<CoreChoice> {
    if core == EXAMPLE_CORE {
        return Some(CoreChoice::Example);
    }
    is_core_version(core).then(|| CoreChoice::Version(core.to_owned()))
}

/// `MAJOR.MINOR.PATCH` with an optional `-PRERELEASE` (dot-separated identifiers of ASCII
/// letters, digits and `-`), numbers without leading zeros, as in semver: `1.4.0`,
/// `2.0.0-rc.1`. The git tag is `v` + the version. Nothing else (no spaces, no `v`, no
/// `latest`, no path) is a version, so nothing else reaches git.
pub fn is_core_version(text: &str) -> bool {
    let (numbers, prerelease) = match text.split_once('-') {
        Some((numbers, prerelease)) => (numbers, Some(prerelease)),
        None => (text, None),
    };
    let number =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
    let identifier = |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let parts: Vec<&str> = numbers.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|n| number(n))
        && prerelease.is_none_or(|p| p.split('.').all(identifier))
}

/// How to fix an invalid `core` value, for messages: the tag's `v` and stray spaces get a
/// targeted hint.
pub fn core_help(core: &str) -> String {
    if let Some(version) = core.trim().strip_prefix('v').filter(|v| is_core_version(v)) {
        return format!(
            "the git tag is `v{version}`, and `core` is the version without the `v`: write `core = \"{version}\"`"
        );
    }
    let trimmed = core.trim();
    if trimmed != core && (trimmed == EXAMPLE_CORE || is_core_version(trimmed)) {
        return format!("remove the spaces: `core = \"{trimmed}\"`");
    }
    "write `core = \"example\"` for this checkout, or the version of a released core such as `core = \"1.4.0\"` (fetched from the core repository at tag `v1.4.0`)".to_owned()
}

/// Reads `[core] repository` of `environments/client.toml` under `root`. A relative local path
/// is resolved against `root`, so git sees the same repository from any folder.
pub fn read_core_repository(root: &Path) -> Result<String, CoreError> {
    let path = root.join("environments").join("client.toml");
    #[derive(Deserialize)]
    struct ClientCoreOnly {
        core: Option<CoreOnly>,
    }
    #[derive(Deserialize)]
    struct CoreOnly {
        repository: Option<String>,
    }
    let text = fs::read_to_string(&path).map_err(|source| CoreError::Read { path: path.clone(), source })?;
    let parsed: ClientCoreOnly = toml::from_str(&text)
        .map_err(|e| CoreError::Parse { path: path.clone(), message: e.message().to_owned() })?;
    let Some(repository) = parsed.core.and_then(|core| core.repository) else {
        return Err(CoreError::Parse { path, message: "`[core] repository` is not set".to_owned() });
    };
    if repository.is_empty() || repository.starts_with('-') {
        return Err(CoreError::Parse { path, message: format!("`{repository}` is not a repository URL") });
    }
    if url_has_password(&repository) {
        return Err(CoreError::PasswordInUrl);
    }
    if is_local_path(&repository) && Path::new(&repository).is_relative() {
        return Ok(root.join(&repository).display().to_string());
    }
    Ok(repository)
}

/// `scheme://user:password@host/...`, or `https://TOKEN@host/...` (a token as the user name,
/// as hosting services hand them out): a secret that would end up in process arguments, the
/// pin file and messages. An ssh user name (`ssh://git@host`) is not a secret.
fn url_has_password(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':') || !scheme.eq_ignore_ascii_case("ssh"),
        None => false,
    }
}

/// Neither `scheme://...` nor scp-like `host:path` (a colon before the first slash).
fn is_local_path(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon > slash,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// One pinned tag: the commit `tag` of `repository` pointed at when it was first fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub repository: String,
    pub tag: String,
    pub commit: String,
}

/// The contents of `<cache>/pins.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub pins: Vec<Pin>,
}

impl Pins {
    /// The pinned commit of `tag` in `repository`.
    pub fn commit_for(&self, repository: &str, tag: &str) -> Option<&str> {
        self.pins
            .iter()
            .find(|pin| pin.repository == repository && pin.tag == tag)
            .map(|pin| pin.commit.as_str())
    }

    fn set(&mut self, repository: &str, tag: &str, commit: &str) {
        self.pins.retain(|pin| !(pin.repository == repository && pin.tag == tag));
        self.pins.push(Pin {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            commit: commit.to_owned(),
        });
        self.pins.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    }
}

fn pins_path(cache: &Path) -> PathBuf {
    cache.join("pins.json")
}

/// Where the bare mirror of `repository` lives.
pub fn mirror_path(cache: &Path, repository: &str) -> PathBuf {
    let hash = hex::encode(Sha256::digest(repository.as_bytes()));
    cache.join("repos").join(format!("{}.git", &hash[..16]))
}

/// Where the files of core `commit` live.
pub fn checkout_path(cache: &Path, commit: &str) -> PathBuf {
    cache.join("checkouts").join(commit)
}

fn manifest_path(cache: &Path, commit: &str) -> PathBuf {
    cache.join("checkouts").join(format!("{commit}.manifest"))
}

/// The cargo target folder shared by every core, so their dependencies compile once.
pub fn target_dir(cache: &Path) -> PathBuf {
    cache.join("target")
}

/// Where the built xtask of core `commit` is kept. Every core builds into the one shared
/// target folder, where `debug/xtask` belongs to whichever core was built last, so each
/// core's binary is copied out to a folder of its own.
pub fn binary_path(cache: &Path, commit: &str) -> PathBuf {
    cache.join("bin").join(commit).join("xtask")
}

/// Reads `<cache>/pins.json` (empty when it does not exist yet).
pub fn read_pins(cache: &Path) -> Result<Pins, CoreError> {
    let path = pins_path(cache);
    match fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| CoreError::Parse { path, message: e.to_string() })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Pins::default()),
        Err(source) => Err(CoreError::Read { path, source }),
    }
}

/// Temp file, fsync, rename, fsync of the folder: a crash leaves the old or the new pins.
fn write_pins(cache: &Path, pins: &Pins) -> Result<(), CoreError> {
    let path = pins_path(cache);
    let write = |source| CoreError::Write { path: path.clone(), source };
    let mut text = serde_json::to_string_pretty(pins).expect("pins serialize");
    text.push('\n');
    let mut temp = tempfile::NamedTempFile::new_in(cache).map_err(write)?;
    temp.write_all(text.as_bytes()).map_err(write)?;
    temp.as_file().sync_all().map_err(write)?;
    temp.persist(&path).map_err(|e| write(e.error))?;
    fs::File::open(cache).and_then(|dir| dir.sync_all()).map_err(write)?;
    Ok(())
}

/// An exclusive lock on the cache, released on drop.
struct CacheLock {
    _file: fs::File,
}

fn lock_cache(cache: &Path) -> Result<CacheLock, CoreError> {
    let path = cache.join("lock");
    let write = |source| CoreError::Write { path: path.clone(), source };
    fs::create_dir_all(cache).map_err(write)?;
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(write)?;
    // `flock`: the lock lives as long as the file.
    file.lock().map_err(write)?;
    Ok(CacheLock { _file: file })
}

/// Which core to resolve, and for which environment (named in messages).
#[derive(Debug, Clone, Copy)]
pub struct CoreRequest<'a> {
    pub environment: &'a str,
    pub repository: &'a str,
    pub version: &'a str,
}

/// When [`resolve_core`] talks to the core repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FetchPolicy {
    /// Only when the tag is not pinned yet or its files are not in the cache (offline otherwise).
    #[default]
    WhenMissing,
    /// Always (`core fetch`): also verifies that a pinned tag has not moved.
    Always,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveOptions {
    pub fetch: FetchPolicy,
    /// Re-pin a tag that moved to its new commit instead of refusing it.
    pub accept_moved_tag: bool,
}

/// A core ready to build: pinned, with its files in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCore {
    pub repository: String,
    pub version: String,
    pub tag: String,
    pub commit: String,
    pub checkout: PathBuf,
    /// Whether the core repository was contacted.
    pub fetched: bool,
}

/// Pins `v<version>` of the core repository and makes sure its files are in the cache,
/// fetching only when [`FetchPolicy`] says so or when something is missing.
pub fn resolve_core(
    cache: &Path,
    request: CoreRequest<'_>,
    options: ResolveOptions,
) -> Result<ResolvedCore, CoreError> {
    let CoreRequest { environment, repository, version } = request;
    let tag = format!("v{version}");
    let _lock = lock_cache(cache)?;
    let mirror = mirror_path(cache, repository);
    let mut pins = read_pins(cache)?;
    let pinned = pins.commit_for(repository, &tag).map(str::to_owned);
    let have_files =
        |commit: &str| checkout_path(cache, commit).is_dir() || mirror_has_commit(&mirror, commit);
    let must_fetch = match &pinned {
        None => true,
        Some(commit) => options.fetch == FetchPolicy::Always || !have_files(commit),
    };
    let commit = if must_fetch {
        fetch_tags(&mirror, environment, repository)?;
        let fetched = tag_commit(&mirror, environment, repository, &tag)?;
        match pinned {
            Some(pinned) if pinned != fetched && !options.accept_moved_tag => {
                return Err(CoreError::MovedTag {
                    environment: environment.to_owned(),
                    repository: repository.to_owned(),
                    tag,
                    pinned,
                    fetched,
                });
            }
            Some(pinned) if pinned == fetched => pinned,
            _ => {
                pins.set(repository, &tag, &fetched);
                write_pins(cache, &pins)?;
                fetched
            }
        }
    } else {
        pinned.expect("a tag that needs no fetch is pinned")
    };
    let checkout = checkout_path(cache, &commit);
    if !checkout.is_dir() {
        if !mirror_has_commit(&mirror, &commit) {
            return Err(CoreError::MissingCommit {
                environment: environment.to_owned(),
                repository: repository.to_owned(),
                tag,
                commit,
            });
        }
        extract_checkout(cache, &mirror, &commit)?;
    }
    Ok(ResolvedCore {
        repository: repository.to_owned(),
        version: version.to_owned(),
        tag,
        commit,
        checkout,
        fetched: must_fetch,
    })
}

/// Runs git with a clean environment: no terminal prompt (a missing credential is an error,
/// not a hang) and messages in English for the errors we forward.
fn git(dir: &Path, args: &[&str]) -> Result<std::process::Output, CoreError> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CoreError::Spawn { program: "git".to_owned(), source })
}

fn git_ok(dir: &Path, args: &[&str]) -> Result<Vec<u8>, CoreError> {
    let output = git(dir, args)?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(CoreError::Git {
            command: args.join(" "),
            dir: dir.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn mirror_has_commit(mirror: &Path, commit: &str) -> bool {
    mirror.join("HEAD").is_file()
        && git(mirror, &["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .is_ok_and(|out| out.status.success())
}

/// Fetches every tag of `repository` into the bare mirror, creating it on first use. Tags
/// are force-updated in the mirror: the pins, not the mirror, remember what a tag was.
fn fetch_tags(mirror: &Path, environment: &str, repository: &str) -> Result<(), CoreError> {
    if !mirror.join("HEAD").is_file() {
        fs::create_dir_all(mirror).map_err(|source| CoreError::Write { path: mirror.to_owned(), source })?;
        git_ok(mirror, &["init", "--bare", "--quiet"])?;
    }
    let output =
        git(mirror, &["fetch", "--quiet", "--no-tags", "--", repository, "+refs/tags/*:refs/tags/*"])?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_line = stderr.lines().find(|line| !line.trim().is_empty()).unwrap_or("git fetch failed");
        return Err(CoreError::UnreachableRepository {
            environment: environment.to_owned(),
            repository: repository.to_owned(),
            git_error: first_line.trim().to_owned(),
        });
    }
    Ok(())
}

fn tag_commit(mirror: &Path, environment: &str, repository: &str, tag: &str) -> Result<String, CoreError> {
    let output = git(mirror, &["rev-parse", "--verify", "--quiet", &format!("refs/tags/{tag}^{{commit}}")])?;
    let commit = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && !commit.is_empty() {
        return Ok(commit);
    }
    let listing = git_ok(mirror, &["tag", "--list"])?;
    let listing = String::from_utf8_lossy(&listing);
    let mut scored: Vec<(f64, &str)> =
        listing.lines().map(|other| (strsim::normalized_levenshtein(tag, other), other)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    Err(CoreError::UnknownTag {
        environment: environment.to_owned(),
        repository: repository.to_owned(),
        tag: tag.to_owned(),
        nearest: scored.into_iter().take(3).map(|(_, name)| name.to_owned()).collect(),
    })
}

/// Writes the files of `commit` to a temp folder with `git archive | tar`, records their
/// hashes, then renames the folder into place: a checkout is complete or absent.
fn extract_checkout(cache: &Path, mirror: &Path, commit: &str) -> Result<(), CoreError> {
    let checkouts = cache.join("checkouts");
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| CoreError::Write { path, source }
    };
    fs::create_dir_all(&checkouts).map_err(write(&checkouts))?;
    let temp =
        tempfile::Builder::new().prefix(".extract-").tempdir_in(&checkouts).map_err(write(&checkouts))?;
    let output = duct::cmd(
        "git",
        ["-C".as_ref(), mirror.as_os_str(), "archive".as_ref(), "--format=tar".as_ref(), commit.as_ref()],
    )
    .pipe(duct::cmd("tar", ["-x".as_ref(), "-C".as_ref(), temp.path().as_os_str()]))
    .env("LC_ALL", "C")
    .stderr_capture()
    .unchecked()
    .run()
    .map_err(|source| CoreError::Spawn { program: "git archive | tar".to_owned(), source })?;
    if !output.status.success() {
        return Err(CoreError::Git {
            command: format!("archive {commit}"),
            dir: mirror.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let manifest = file_manifest(temp.path())
        .map_err(|source| CoreError::Read { path: temp.path().to_owned(), source })?;
    let manifest_file = manifest_path(cache, commit);
    fs::write(&manifest_file, serde_json::to_string_pretty(&manifest).expect("manifest serializes"))
        .map_err(write(&manifest_file))?;
    let checkout = checkout_path(cache, commit);
    let temp = temp.keep();
    fs::rename(&temp, &checkout).map_err(write(&checkout))?;
    Ok(())
}

/// sha256 of every file under `dir`, by path relative to it with `/`.
fn file_manifest(dir: &Path) -> io::Result<BTreeMap<String, String>> {
    let mut manifest = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else {
                let bytes = if kind.is_symlink() {
                    fs::read_link(&path)?.into_os_string().into_encoded_bytes()
                } else {
                    fs::read(&path)?
                };
                let relative =
                    path.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
                manifest.insert(relative, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    Ok(manifest)
}

/// Refuses a checkout that is missing or differs from the files extracted from git.
pub fn verify_checkout(cache: &Path, environment: &str, commit: &str) -> Result<(), CoreError> {
    let checkout = checkout_path(cache, commit);
    let missing =
        || CoreError::MissingCheckout { environment: environment.to_owned(), checkout: checkout.clone() };
    let recorded: BTreeMap<String, String> = match fs::read_to_string(manifest_path(cache, commit)) {
        Ok(text) => serde_json::from_str(&text).map_err(|_| missing())?,
        Err(_) => return Err(missing()),
    };
    if !checkout.is_dir() {
        return Err(missing());
    }
    let actual =
        file_manifest(&checkout).map_err(|source| CoreError::Read { path: checkout.clone(), source })?;
    let changed = recorded
        .iter()
        .find(|(path, hash)| actual.get(*path) != Some(*hash))
        .map(|(path, _)| path)
        .or_else(|| actual.keys().find(|path| !recorded.contains_key(*path)));
    match changed {
        Some(file) => Err(CoreError::DirtyCheckout {
            environment: environment.to_owned(),
            checkout: checkout.clone(),
            file: file.clone(),
        }),
        None => Ok(()),
    }
}

/// The built xtask of `commit`, when it has been built.
pub fn built_binary(cache: &Path, commit: &str) -> Option<PathBuf> {
    Some(binary_path(cache, commit)).filter(|path| path.is_file())
}

/// Builds the xtask of a resolved core into the shared target folder and returns its binary.
/// A core built before costs nothing: its binary is kept under `<cache>/bin/<commit>`.
/// `--locked` keeps cargo from rewriting the checkout's `Cargo.lock`, so the checkout stays
/// identical to the tag.
pub fn build_core_xtask(cache: &Path, environment: &str, core: &ResolvedCore) -> Result<PathBuf, CoreError> {
    let _lock = lock_cache(cache)?;
    if let Some(binary) = built_binary(cache, &core.commit) {
        return Ok(binary);
    }
    verify_checkout(cache, environment, &core.commit)?;
    stamp_now(&core.checkout).map_err(|source| CoreError::Write { path: core.checkout.clone(), source })?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir(cache);
    let output = Command::new(&cargo)
        .args(["build", "--quiet", "--locked", "--package", "xtask", "--manifest-path"])
        .arg(core.checkout.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&core.checkout)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|source| CoreError::Spawn { program: cargo.to_string_lossy().into_owned(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        return Err(CoreError::Build {
            version: core.version.clone(),
            commit: core.commit.clone(),
            checkout: core.checkout.clone(),
            stderr: lines[lines.len().saturating_sub(30)..].join("\n"),
        });
    }
    let built = target.join("debug").join("xtask");
    let binary = binary_path(cache, &core.commit);
    let folder = binary.parent().expect("binary has a folder");
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| CoreError::Write { path, source }
    };
    fs::create_dir_all(folder).map_err(write(folder))?;
    let temp = folder.join("xtask.partial");
    fs::copy(&built, &temp).map_err(write(&temp))?;
    fs::rename(&temp, &binary).map_err(write(&binary))?;
    Ok(binary)
}

/// Sets the modification time of every file under `dir` to now. Cargo hashes a workspace's
/// own crates by their path *relative to the workspace*, so in the shared target folder every
/// core's `platform`, `components` and `xtask` have the same artifacts, told apart only by
/// source mtimes; `git archive` gives files the commit's date, which can be older than the
/// last core's build. Stamping the sources makes cargo recompile this core's crates (and only
/// them: dependencies stay shared).
fn stamp_now(dir: &Path) -> io::Result<()> {
    let now = std::time::SystemTime::now();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                fs::File::open(entry.path())?.set_modified(now)?;
            }
        }
    }
    Ok(())
}

/// One core in the cache, for `core list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCore {
    pub commit: String,
    /// The pins naming this commit (a commit can carry several tags, from several repositories).
    pub pins: Vec<Pin>,
    /// Bytes on disk: the checkout and the built binary.
    pub size_bytes: u64,
    pub built: bool,
}

/// Every core checkout in the cache, sorted by commit.
pub fn list_cached_cores(cache: &Path) -> Result<Vec<CachedCore>, CoreError> {
    let checkouts = cache.join("checkouts");
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| CoreError::Read { path, source }
    };
    let entries = match fs::read_dir(&checkouts) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CoreError::Read { path: checkouts, source }),
    };
    let pins = read_pins(cache)?;
    let mut cores = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read(&checkouts))?;
        let commit = entry.file_name().to_string_lossy().into_owned();
        if commit.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let binary = built_binary(cache, &commit);
        let binary_size = binary.as_ref().and_then(|b| b.metadata().ok()).map_or(0, |m| m.len());
        let size_bytes = folder_size(&entry.path()).map_err(read(&entry.path()))? + binary_size;
        let pins = pins.pins.iter().filter(|pin| pin.commit == commit).cloned().collect();
        cores.push(CachedCore { commit, pins, size_bytes, built: binary.is_some() });
    }
    cores.sort_by(|a, b| a.commit.cmp(&b.commit));
    Ok(cores)
}

fn folder_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway core repository with tags `v1.0.0`, `v1.1.0` (and a spare commit).
    struct Fixture {
        _dir: tempfile::TempDir,
        repository: PathBuf,
        cache: PathBuf,
    }

    fn run_git(dir: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn commit_file(repository: &Path, text: &str) -> String {
        fs::write(repository.join("core.txt"), text).unwrap();
        run_git(repository, &["add", "core.txt"]);
        run_git(repository, &["commit", "--quiet", "-m", text]);
        run_git(repository, &["rev-parse", "HEAD"])
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repository = dir.path().join("core");
        fs::create_dir(&repository).unwrap();
        run_git(&repository, &["init", "--quiet"]);
        commit_file(&repository, "one");
        run_git(&repository, &["tag", "v1.0.0"]);
        commit_file(&repository, "one point one");
        run_git(&repository, &["tag", "v1.1.0"]);
        let cache = dir.path().join("cache");
        Fixture { _dir: dir, repository, cache }
    }

    fn request<'a>(repository: &'a str, version: &'a str) -> CoreRequest<'a> {
        CoreRequest { environment: "staging", repository, version }
    }

    fn resolve(fixture: &Fixture, version: &str, options: ResolveOptions) -> Result<ResolvedCore, CoreError> {
        let repository = fixture.repository.display().to_string();
        resolve_core(&fixture.cache, request(&repository, version), options)
    }

    #[test]
    fn cache_dir_prefers_opus_core_cache_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| OsString::from(value))
            }
        };
        let all = env(&[(CACHE_ENV, "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(all).unwrap(), PathBuf::from("/c"));
        let xdg = env(&[(CACHE_ENV, ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(xdg).unwrap(), PathBuf::from("/x/opus-deploy/cores"));
        let home = env(&[("HOME", "/h")]);
        assert_eq!(cache_dir_from(home).unwrap(), PathBuf::from("/h/.cache/opus-deploy/cores"));
        assert!(matches!(cache_dir_from(env(&[])), Err(CoreError::NoCacheDir)));
    }

    #[test]
    fn core_choice_is_example_or_a_tag_safe_version() {
        assert_eq!(parse_core_choice("example"), Some(CoreChoice::Example));
        assert_eq!(parse_core_choice("1.4.0"), Some(CoreChoice::Version("1.4.0".to_owned())));
        assert_eq!(parse_core_choice("2.0.0-rc.1"), Some(CoreChoice::Version("2.0.0-rc.1".to_owned())));
        assert_eq!(
            parse_core_choice("10.0.1-beta-2.x"),
            Some(CoreChoice::Version("10.0.1-beta-2.x".to_owned()))
        );
        for invalid in [
            "",
            "1.4 .0",
            "../1",
            "-1",
            "1/2",
            "a..b",
            "1.4.0 ",
            " 1.4.0",
            "example ",
            "../x",
            "latest",
            "v1.4.0",
            "1.4",
            "1.4.0.1",
            "01.4.0",
            "1.4.0-",
            "1.4.0-rc..1",
            "1.4.0+build",
            "1.4.0-rc_1",
        ] {
            assert_eq!(parse_core_choice(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn environment_core_is_read_without_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("environments/staging");
        fs::create_dir_all(&env_dir).unwrap();
        fs::write(env_dir.join("env.toml"), "core = \"1.4.0\"\n[target]\nanything = 1\n").unwrap();
        assert_eq!(
            read_environment_core(dir.path(), "staging").unwrap(),
            CoreChoice::Version("1.4.0".to_owned())
        );
        fs::write(env_dir.join("env.toml"), "core = \"1.4 beta\"\n").unwrap();
        let err = read_environment_core(dir.path(), "staging").unwrap_err();
        assert!(matches!(&err, CoreError::InvalidVersion { version, .. } if version == "1.4 beta"), "{err}");
        assert!(err.to_string().contains("env.toml:1:8: `core = \"1.4 beta\"`"), "{err}");
        fs::write(env_dir.join("env.toml"), "# pinned\ncore = \"v1.4.0\"\n").unwrap();
        let err = read_environment_core(dir.path(), "staging").unwrap_err();
        assert!(err.to_string().contains("env.toml:2:8:"), "{err}");
        assert!(err.to_string().contains("the git tag is `v1.4.0`"), "{err}");
        assert!(matches!(read_environment_core(dir.path(), "../staging"), Err(CoreError::Parse { .. })));
    }

    #[test]
    fn relative_core_repository_resolves_against_the_root_and_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("environments")).unwrap();
        let client = dir.path().join("environments/client.toml");
        fs::write(&client, "[core]\nrepository = \"../core.git\"\n").unwrap();
        assert_eq!(
            read_core_repository(dir.path()).unwrap(),
            dir.path().join("../core.git").display().to_string()
        );
        fs::write(&client, "[core]\nrepository = \"git@git.example:opus/core.git\"\n").unwrap();
        assert_eq!(read_core_repository(dir.path()).unwrap(), "git@git.example:opus/core.git");
        let canary = "canary-password-4b1d";
        fs::write(&client, format!("[core]\nrepository = \"https://ci:{canary}@git.example/core.git\"\n"))
            .unwrap();
        let err = read_core_repository(dir.path()).unwrap_err();
        assert!(matches!(err, CoreError::PasswordInUrl));
        assert!(!err.to_string().contains(canary));
        // A token as the user name, as hosting services hand them out, is a secret too.
        fs::write(&client, format!("[core]\nrepository = \"https://{canary}@git.example/core.git\"\n"))
            .unwrap();
        assert!(matches!(read_core_repository(dir.path()), Err(CoreError::PasswordInUrl)));
        // An ssh user name is not.
        fs::write(&client, "[core]\nrepository = \"ssh://git@git.example/opus/core.git\"\n").unwrap();
        assert_eq!(read_core_repository(dir.path()).unwrap(), "ssh://git@git.example/opus/core.git");
    }

    #[test]
    fn first_resolve_pins_the_tag_and_extracts_its_files() {
        let fixture = fixture();
        let core = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        assert!(core.fetched);
        assert_eq!(core.tag, "v1.0.0");
        assert_eq!(fs::read_to_string(core.checkout.join("core.txt")).unwrap(), "one");
        let pins = read_pins(&fixture.cache).unwrap();
        assert_eq!(
            pins.commit_for(&fixture.repository.display().to_string(), "v1.0.0"),
            Some(core.commit.as_str())
        );
        verify_checkout(&fixture.cache, "staging", &core.commit).unwrap();
    }

    #[test]
    fn pinned_core_resolves_offline_without_the_repository() {
        let fixture = fixture();
        let first = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        let gone = fixture.repository.with_file_name("gone");
        fs::rename(&fixture.repository, &gone).unwrap();
        let second = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        assert!(!second.fetched);
        assert_eq!(second.commit, first.commit);
        // A deleted checkout is rebuilt from the mirror, still without the network.
        fs::remove_dir_all(&first.checkout).unwrap();
        let third = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        assert!(!third.fetched);
        assert!(third.checkout.join("core.txt").is_file());
    }

    #[test]
    fn moved_tag_is_refused_naming_both_commits_unless_accepted() {
        let fixture = fixture();
        let first = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        let moved_to = commit_file(&fixture.repository, "sneaky");
        run_git(&fixture.repository, &["tag", "--force", "v1.0.0"]);

        // Without a fetch nothing notices; `core fetch` (FetchPolicy::Always) does.
        assert_eq!(resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap().commit, first.commit);
        let always = ResolveOptions { fetch: FetchPolicy::Always, accept_moved_tag: false };
        let err = resolve(&fixture, "1.0.0", always).unwrap_err();
        match &err {
            CoreError::MovedTag { pinned, fetched, .. } => {
                assert_eq!(pinned, &first.commit);
                assert_eq!(fetched, &moved_to);
            }
            other => panic!("expected a moved tag, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&first.commit) && message.contains(&moved_to), "{message}");
        assert!(message.contains("cargo xtask core fetch staging --accept-moved-tag"), "{message}");

        let accept = ResolveOptions { fetch: FetchPolicy::Always, accept_moved_tag: true };
        assert_eq!(resolve(&fixture, "1.0.0", accept).unwrap().commit, moved_to);
        assert_eq!(resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap().commit, moved_to);
    }

    #[test]
    fn unknown_tag_lists_the_nearest_tags() {
        let fixture = fixture();
        let err = resolve(&fixture, "1.0.1", ResolveOptions::default()).unwrap_err();
        match &err {
            CoreError::UnknownTag { tag, nearest, .. } => {
                assert_eq!(tag, "v1.0.1");
                assert_eq!(nearest, &["v1.0.0", "v1.1.0"]);
            }
            other => panic!("expected an unknown tag, got {other:?}"),
        }
        assert!(err.to_string().contains("nearest tags: v1.0.0, v1.1.0"), "{err}");
    }

    #[test]
    fn unreachable_repository_reports_the_first_line_of_git_error() {
        let fixture = fixture();
        let missing = fixture.repository.with_file_name("no-such-core.git").display().to_string();
        let err =
            resolve_core(&fixture.cache, request(&missing, "1.0.0"), ResolveOptions::default()).unwrap_err();
        match &err {
            CoreError::UnreachableRepository { repository, git_error, .. } => {
                assert_eq!(repository, &missing);
                assert!(git_error.contains("no-such-core.git"), "{git_error}");
                assert!(!git_error.contains('\n'));
            }
            other => panic!("expected an unreachable repository, got {other:?}"),
        }
    }

    #[test]
    fn dirty_or_missing_checkout_is_refused_naming_the_file() {
        let fixture = fixture();
        let core = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        fs::write(core.checkout.join("core.txt"), "patched by hand").unwrap();
        let err = verify_checkout(&fixture.cache, "staging", &core.commit).unwrap_err();
        assert!(matches!(&err, CoreError::DirtyCheckout { file, .. } if file == "core.txt"), "{err}");
        fs::remove_dir_all(&core.checkout).unwrap();
        let err = verify_checkout(&fixture.cache, "staging", &core.commit).unwrap_err();
        assert!(matches!(err, CoreError::MissingCheckout { .. }), "{err}");
    }

    #[test]
    fn cached_cores_list_their_tags_and_size() {
        let fixture = fixture();
        assert_eq!(list_cached_cores(&fixture.cache).unwrap(), Vec::new());
        let old = resolve(&fixture, "1.0.0", ResolveOptions::default()).unwrap();
        let new = resolve(&fixture, "1.1.0", ResolveOptions::default()).unwrap();
        let cores = list_cached_cores(&fixture.cache).unwrap();
        assert_eq!(cores.len(), 2);
        for (core, resolved) in [(&old, "v1.0.0"), (&new, "v1.1.0")] {
            let listed = cores.iter().find(|c| c.commit == core.commit).expect("listed");
            assert_eq!(listed.pins.iter().map(|p| p.tag.as_str()).collect::<Vec<_>>(), [resolved]);
            assert!(listed.size_bytes > 0);
            assert!(!listed.built);
        }
    }
}
