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
