//! `cargo xtask core fetch|list`, and running each environment with the core it pins.
//!
//! How a pinned core runs: before a command that names environments is dispatched, [`route`]
//! reads each environment's `core` (only that key of env.toml). Environments on `example` run
//! in this process. For the others, the core is resolved in the cache (fetched only the first
//! time), its xtask is built once into the cache's shared target folder, and that binary is
//! re-executed with `--root <this repository>`, the same arguments (for `check`, narrowed to the
//! environments on that core) and `OPUS_CORE_ACTIVE=<commit>`, inheriting stdin, stdout and
//! stderr; its exit code becomes ours. A process started with `OPUS_CORE_ACTIVE` never
//! re-executes, so a core cannot loop into itself. The pinned core thus uses its own catalog
//! *and* its own engine, exactly as the release was tested.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use platform::core_version::{
    ACTIVE_CORE_ENV, CoreChoice, CoreError, CoreRequest, FetchPolicy, ResolveOptions, ResolvedCore,
    build_core_xtask, built_binary, cache_dir, list_cached_cores, read_core_repository, read_pins,
    resolve_core,
};
use platform::load::environment::list_environments;

use crate::flags::{CheckCmd, Command, CoreCmd, CoreCommand, CoreFetchCmd, Subject};
use crate::repo::Repo;
use crate::{Outcome, ui};

/// What is left to run in this process after the pinned cores ran their share.
pub struct Routed {
    /// The command for this process (`None`: everything ran elsewhere).
    pub here: Option<Command>,
    /// The combined outcome of the pinned cores' runs.
    pub elsewhere: Outcome,
}

impl Routed {
    fn here(command: Command) -> Routed {
        Routed { here: Some(command), elsewhere: Outcome::Success }
    }
}

/// Runs the environments a command names with their pinned cores, and returns what is left.
pub fn route(repo: &Repo, command: Command) -> Routed {
    if std::env::var_os(ACTIVE_CORE_ENV).is_some() {
        return Routed::here(command);
    }
    match (command.subject(), command) {
        (_, Command::Check(cmd)) => route_check(repo, cmd),
        (Subject::Environment(environment), command) => route_one(repo, &environment, command),
        // Secrets commands name a file; its environment decides the core (the catalog says
        // which keys `secrets new` creates).
        (Subject::SecretsFile(path), command) => match platform::access::environment_of(&repo.root, &path) {
            Ok((environment, _)) => route_one(repo, &environment, command),
            Err(_) => Routed::here(command),
        },
        (Subject::Environments(_) | Subject::Repository, command) => Routed::here(command),
    }
}

/// A command on one environment: all of it runs with that environment's core. An invalid
/// `core` never runs anything: commands that load the environment report it with its place
/// (the loader and verify run before any step), the others are refused here.
fn route_one(repo: &Repo, environment: &str, command: Command) -> Routed {
    match repo.environment_core(environment) {
        Ok(CoreChoice::Version(version)) => {
            let environments = [environment.to_owned()];
            let args = forwarded_args(std::env::args_os().skip(1));
            Routed { here: None, elsewhere: run_with_core(repo, &environments, &version, args) }
        }
        Err(e @ CoreError::InvalidVersion { .. }) if !command.verifies_environment() => {
            ui::error_chain(&e);
            Routed { here: None, elsewhere: Outcome::CouldNotStart }
        }
        Ok(CoreChoice::Example) | Err(_) => Routed::here(command),
    }
}

/// The version an environment pins, or `None` for `example` and for files the cheap read
/// cannot make sense of: the loader in this process then reports them properly.
fn pinned_version(repo: &Repo, environment: &str) -> Option<String> {
    match repo.environment_core(environment) {
        Ok(CoreChoice::Version(version)) => Some(version),
        Ok(CoreChoice::Example) | Err(_) => None,
    }
}

/// `check` with several environments: each group of environments on one core runs with it.
fn route_check(repo: &Repo, cmd: CheckCmd) -> Routed {
    let names = if cmd.environments.is_empty() {
        match list_environments(&repo.tree()) {
            Ok(names) => names,
            Err(_) => return Routed::here(Command::Check(cmd)),
        }
    } else {
        cmd.environments.clone()
    };
    let mut groups: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for name in names {
        groups.entry(pinned_version(repo, &name)).or_default().push(name);
    }
    let here_names = groups.remove(&None).unwrap_or_default();
    if groups.is_empty() {
        return Routed::here(Command::Check(cmd));
    }
    if here_names.is_empty() && groups.len() == 1 && !cmd.environments.is_empty() {
        // Every named environment is on one core: the arguments go through unchanged.
        let first = cmd.environments[0].clone();
        return route_one(repo, &first, Command::Check(cmd));
    }
    let mut elsewhere = Outcome::Success;
    for (version, environments) in &groups {
        let version = version.as_deref().expect("the `example` group was removed");
        let args = CheckCmd::args_for(environments);
        elsewhere = worst(elsewhere, run_with_core(repo, environments, version, args));
    }
    // The rest of the flags stay as given; only the environment list narrows.
    let mut cmd = cmd;
    cmd.environments = here_names;
    let here = (!cmd.environments.is_empty()).then_some(Command::Check(cmd));
    Routed { here, elsewhere }
}

/// The arguments of this invocation without `--root` (the child gets it explicitly).
fn forwarded_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut forwarded = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "--" {
            forwarded.push(arg);
            forwarded.extend(args.by_ref());
            break;
        }
        if arg == "--root" {
            args.next();
        } else if !arg.to_string_lossy().starts_with("--root=") {
            forwarded.push(arg);
        }
    }
    forwarded
}

fn quoted_list(environments: &[String]) -> String {
    environments.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
}

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}

/// Resolves and builds core `version` for `environments`, then runs its xtask with `args`.
fn run_with_core(repo: &Repo, environments: &[String], version: &str, args: Vec<OsString>) -> Outcome {
    let label = quoted_list(environments);
    let prepared = (|| {
        let cache = cache_dir()?;
        let repository = read_core_repository(&repo.root)?;
        let request = CoreRequest { environment: &environments[0], repository: &repository, version };
        let core = resolve_core(&cache, request, ResolveOptions::default())?;
        if core.fetched {
            ui::status(
                "Fetched",
                &format!("core {version} (commit {}) from {repository}", short(&core.commit)),
            );
        }
        let binary = match built_binary(&cache, &core.commit) {
            Some(binary) => binary,
            None => {
                ui::status(
                    "Building",
                    &format!(
                        "core {version} (commit {}): once per core, later runs reuse it",
                        short(&core.commit)
                    ),
                );
                build_core_xtask(&cache, &environments[0], &core)?
            }
        };
        Ok::<(ResolvedCore, PathBuf), platform::core_version::CoreError>((core, binary))
    })();
    let (core, binary) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    };
    ui::status("Running", &format!("{label} with core {version} (commit {})", short(&core.commit)));
    // The child owns the terminal's signals: Ctrl-C reaches it (same process group) and it
    // decides what to do (an editor's temp file is removed, a deploy finishes its running
    // steps). We wait for it whatever happens, then pass its exit on.
    let _ignore = IgnoreTerminationSignals::install();
    let mut command = std::process::Command::new(&binary);
    command.arg("--root").arg(&repo.root).args(&args).env(ACTIVE_CORE_ENV, &core.commit);
    // Ignored signals stay ignored across exec: give the child the default handling back.
    // SAFETY: only async-signal-safe calls (sigaction through signal) between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let status = command.status();
    drop(_ignore);
    let outcome = match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(0), _) => Outcome::Success,
                (Some(2), _) => Outcome::CouldNotStart,
                (Some(130), _) | (None, Some(libc::SIGINT)) => Outcome::Interrupted,
                _ => Outcome::Failed,
            }
        }
        Err(e) => {
            ui::error(&format!("cannot run core {version} at {}: {e}", binary.display()));
            return Outcome::CouldNotStart;
        }
    };
    if outcome == Outcome::Failed {
        // The one hint a core too old for the environment's files can give: which core ran.
        eprintln!(
            "note: {label} ran with core {version} (commit {}); if its files need a newer core, raise `core` in env.toml",
            short(&core.commit)
        );
    }
    outcome
}

/// Ignores SIGINT, SIGTERM and SIGHUP in this process while alive.
struct IgnoreTerminationSignals {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl IgnoreTerminationSignals {
    fn install() -> IgnoreTerminationSignals {
        let mut previous = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
            let old = unsafe { libc::signal(signal, libc::SIG_IGN) };
            previous.push((signal, old));
        }
        IgnoreTerminationSignals { previous }
    }
}

impl Drop for IgnoreTerminationSignals {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores the disposition saved in `install`.
            unsafe { libc::signal(*signal, *old) };
        }
    }
}

/// The worse of two outcomes (interrupted > could not start > failed > success).
pub fn worst(a: Outcome, b: Outcome) -> Outcome {
    use Outcome::*;
    match (a, b) {
        (Interrupted, _) | (_, Interrupted) => Interrupted,
        (CouldNotStart, _) | (_, CouldNotStart) => CouldNotStart,
        (Failed, _) | (_, Failed) => Failed,
        (Changes, _) | (_, Changes) => Changes,
        _ => Success,
    }
}

/// `cargo xtask core fetch|list`.
pub fn run(repo: &Repo, cmd: &CoreCmd) -> Outcome {
    let cache = match cache_dir() {
        Ok(cache) => cache,
        Err(e) => {
            ui::error(&e);
            return Outcome::CouldNotStart;
        }
    };
    match &cmd.command {
        CoreCommand::Fetch(fetch) => run_fetch(repo, &cache, fetch),
        CoreCommand::List(_) => run_list(repo, &cache),
    }
}

/// Every environment of the repository with the version it pins (`None`: `example`).
fn environment_versions(repo: &Repo) -> Result<Vec<(String, Option<String>)>, Outcome> {
    let names = list_environments(&repo.tree()).map_err(|e| {
        ui::error_chain(&e);
        Outcome::CouldNotStart
    })?;
    Ok(names
        .into_iter()
        .map(|name| {
            let version = pinned_version(repo, &name);
            (name, version)
        })
        .collect())
}

fn run_fetch(repo: &Repo, cache: &Path, cmd: &CoreFetchCmd) -> Outcome {
    let names: Vec<String> = if cmd.environments.is_empty() {
        match environment_versions(repo) {
            Ok(all) => {
                all.into_iter().filter(|(_, version)| version.is_some()).map(|(name, _)| name).collect()
            }
            Err(outcome) => return outcome,
        }
    } else {
        cmd.environments.clone()
    };
    if names.is_empty() {
        ui::status("Nothing", "to fetch: every environment uses this checkout (core = \"example\")");
        return Outcome::Success;
    }
    let repository = match read_core_repository(&repo.root) {
        Ok(repository) => repository,
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    };
    let options = ResolveOptions { fetch: FetchPolicy::Always, accept_moved_tag: cmd.accept_moved_tag };
    let mut outcome = Outcome::Success;
    for name in &names {
        let version = match repo.environment_core(name) {
            Ok(CoreChoice::Version(version)) => version,
            Ok(CoreChoice::Example) => {
                ui::status("Skipped", &format!("`{name}`: it uses this checkout (core = \"example\")"));
                continue;
            }
            Err(e) => {
                ui::error_chain(&e);
                outcome = worst(outcome, Outcome::CouldNotStart);
                continue;
            }
        };
        let request = CoreRequest { environment: name, repository: &repository, version: &version };
        match resolve_core(cache, request, options) {
            Ok(core) => {
                ui::status("Fetched", &format!("core {version} for `{name}` at {}", core.checkout.display()));
                println!("{name}\t{version}\t{}", core.commit);
            }
            Err(e) => {
                ui::error_chain(&e);
                outcome = worst(outcome, Outcome::Failed);
            }
        }
    }
    outcome
}

fn run_list(repo: &Repo, cache: &Path) -> Outcome {
    let listed = list_cached_cores(cache).and_then(|cores| Ok((cores, read_pins(cache)?)));
    let (cores, pins) = match listed {
        Ok(listed) => listed,
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    };
    let versions = match environment_versions(repo) {
        Ok(versions) => versions,
        Err(outcome) => return outcome,
    };
    // Which commit each environment runs, through the pins of this repository's core source.
    let repository = read_core_repository(&repo.root).ok();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, version) in &versions {
        let Some(version) = version else { continue };
        let commit = repository.as_deref().and_then(|r| pins.commit_for(r, &format!("v{version}")));
        match commit {
            Some(commit) => users.entry(commit).or_default().push(name),
            None => eprintln!("note: `{name}` pins core {version}, not fetched yet"),
        }
    }
    if cores.is_empty() {
        eprintln!("no cores cached in {}", cache.display());
        return Outcome::Success;
    }
    println!("{:<12}  {:<20}  {:>9}  {:<5}  ENVIRONMENTS", "COMMIT", "TAGS", "SIZE", "BUILT");
    for core in &cores {
        let tags = core.pins.iter().map(|pin| pin.tag.as_str()).collect::<Vec<_>>().join(",");
        let environments = users.get(core.commit.as_str()).map(|names| names.join(", ")).unwrap_or_default();
        println!(
            "{:<12}  {:<20}  {:>9}  {:<5}  {}",
            short(&core.commit),
            if tags.is_empty() { "-" } else { &tags },
            human_size(core.size_bytes),
            if core.built { "yes" } else { "no" },
            if environments.is_empty() { "-" } else { &environments },
        );
    }
    Outcome::Success
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{size:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn an_interruption_outranks_every_other_outcome() {
        use Outcome::*;
        for other in [Success, Failed, CouldNotStart, Interrupted] {
            assert_eq!(worst(other, Interrupted), Interrupted);
            assert_eq!(worst(Interrupted, other), Interrupted);
        }
        assert_eq!(worst(Failed, CouldNotStart), CouldNotStart);
        assert_eq!(worst(Success, Failed), Failed);
        assert_eq!(worst(Success, Success), Success);
    }

    #[test]
    fn root_flag_is_not_forwarded() {
        let args = os(&["--root", "/repo", "check", "--root=/x", "prod", "--", "--root"]);
        assert_eq!(forwarded_args(args.into_iter()), os(&["check", "prod", "--", "--root"]));
    }

    #[test]
    fn a_check_group_gets_arguments_that_parse_back_to_that_group() {
        use clap::Parser;
        let group = ["new".to_owned(), "staging".to_owned()];
        let argv = std::iter::once("cargo-xtask".into()).chain(CheckCmd::args_for(&group));
        let flags = crate::flags::Flags::try_parse_from(argv).expect("valid arguments");
        let Command::Check(cmd) = flags.command else { panic!("not check: {:?}", flags.command) };
        assert_eq!(cmd.environments, group);
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }
}
