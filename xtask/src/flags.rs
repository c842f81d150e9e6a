//! Every command and flag of `cargo xtask`, in one place. The `///` comments are the `--help`
//! text, written for operators.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 the command ran and the work failed (check found errors, a step
failed); 2 the command could not start (bad usage, unknown environment, unreadable file).

Run `cargo xtask <COMMAND> --help` for a command's flags and examples.";

/// Opus Deploy: install and operate the Opus Open Finance Platform.
///
/// Environments live in `environments/` (client.toml, <env>/env.toml, <env>/<namespace>/
/// namespace.toml, <env>/<namespace>/<component>/component.toml); component templates live
/// in the core catalog (`components/`).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, after_help = AFTER_HELP)]
#[command(arg_required_else_help = true, disable_help_subcommand = true)]
pub struct Flags {
    /// The repository root (default: found from the current directory, or the one this
    /// binary was built in).
    #[arg(long, global = true, env = "OPUS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Check(CheckCmd),
    Core(CoreCmd),
}

/// Verify environments: every file against its schema, every component against the catalog,
/// dependencies, cycles and the platform's rules. Needs no secrets and no network: the gate
/// of every pull request.
///
/// Examples:
///   cargo xtask check              # every environment
///   cargo xtask check prod staging
#[derive(Debug, Args)]
pub struct CheckCmd {
    /// Environments to check (default: all of them).
    #[arg(value_name = "ENV")]
    pub environments: Vec<String>,
}

/// The core each environment is deployed with. `core` in env.toml is `example` (this checkout)
/// or a version such as `1.4.0`: tag `v1.4.0` of `[core] repository` in client.toml, fetched
/// once into a cache outside the repository ($OPUS_CORE_CACHE, else
/// $XDG_CACHE_HOME/opus-deploy/cores, else ~/.cache/opus-deploy/cores) and pinned to the commit
/// the tag had then: a tag that moves later is refused, never followed. Every command on such an
/// environment runs that core's own xtask (built once, then reused), so staging can run a newer
/// core than prod from the same repository. Once fetched, nothing needs the network.
///
/// Examples:
///   cargo xtask core fetch prod     # pre-fetch before going offline; verify the tag did not move
///   cargo xtask core list
#[derive(Debug, Args)]
pub struct CoreCmd {
    #[command(subcommand)]
    pub command: CoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum CoreCommand {
    Fetch(CoreFetchCmd),
    List(CoreListCmd),
}

/// Fetch, pin and check out the core of environments and print its commit. Always contacts the
/// core repository, so it also verifies that a pinned tag has not moved.
///
/// Examples:
///   cargo xtask core fetch              # every environment that pins a version
///   cargo xtask core fetch staging
///   cargo xtask core fetch prod --accept-moved-tag
#[derive(Debug, Args)]
pub struct CoreFetchCmd {
    /// Environments whose core to fetch (default: every environment that pins a version).
    #[arg(value_name = "ENV")]
    pub environments: Vec<String>,
    /// Re-pin a tag that moved to the commit it points at now. Review the change first: the
    /// environment will run different code under the same version.
    #[arg(long)]
    pub accept_moved_tag: bool,
}

/// List the cached cores: commit, tags, size on disk, whether built, and the environments of
/// this repository that use each.
///
/// Example:
///   cargo xtask core list
#[derive(Debug, Args)]
pub struct CoreListCmd {}
