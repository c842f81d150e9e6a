//! `cargo xtask`: the command-line interface of Opus Deploy. It parses flags, calls into
//! `platform`, renders diagnostics and progress, and sets the exit code. Nothing else in the
//! workspace prints.

mod check;
mod compile_env;
mod core_cmd;
mod deploy;
mod flags;
mod graph;
mod journal_view;
mod keys_cmd;
mod kube_target;
mod plan;
mod plan_file;
mod progress;
mod repo;
mod rotate_cmd;
mod runtime;
mod schema;
mod secrets_cmd;
mod status;
mod target;
mod ui;
mod updatekeys_cmd;

use std::process::ExitCode;

use clap::Parser;

/// Loading and compiling allocate and free many small trees per component; mimalloc does that
/// in about half the time of the system allocator (`scripts/bench.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How a command ended, as the exit code documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0: success.
    Success,
    /// 1: the command ran and the work failed.
    Failed,
    /// 2: the command could not start.
    CouldNotStart,
    /// 130: interrupted by Ctrl-C.
    Interrupted,
    /// 2 for `plan --detailed-exitcode`: the plan has changes (every error is then 1).
    Changes,
}

fn main() -> ExitCode {
    // `plan --detailed-exitcode` keeps 2 for "changes": every error exits 1 (as Terraform's).
    let detailed = std::env::args_os().any(|arg| arg == "--detailed-exitcode");
    let could_not_start = if detailed { 1 } else { 2 };
    let flags = match flags::Flags::try_parse() {
        Ok(flags) => flags,
        Err(e) => {
            // clap prints help and version to stdout with code 0, usage errors with code 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { could_not_start } else { 0 });
        }
    };
    let outcome = match repo::Repo::find(flags.root.as_deref()) {
        Ok(repo) => {
            // Environments pinned to another core run that core's xtask; the rest runs here.
            let routed = core_cmd::route(&repo, flags.command);
            let here = match routed.here {
                None => Outcome::Success,
                Some(flags::Command::Check(cmd)) => check::run(&repo, &cmd),
                Some(flags::Command::Core(cmd)) => core_cmd::run(&repo, &cmd),
                Some(flags::Command::Secrets(cmd)) => secrets_cmd::run(&repo, cmd),
                Some(flags::Command::Plan(cmd)) => plan::run(&repo, &cmd),
                Some(flags::Command::Deploy(cmd)) => deploy::run(&repo, &cmd),
                Some(flags::Command::Status(cmd)) => status::run(&repo, &cmd),
                Some(flags::Command::Graph(cmd)) => graph::run(&repo, &cmd),
                Some(flags::Command::Schema(cmd)) => schema::run(&repo, &cmd),
                Some(flags::Command::Keys(cmd)) => keys_cmd::run(&repo, &cmd),
                Some(flags::Command::RotateKeys(cmd)) => rotate_cmd::run(&repo, &cmd),
            };
            core_cmd::worst(routed.elsewhere, here)
        }
        Err(e) => {
            ui::error(&e);
            Outcome::CouldNotStart
        }
    };
    ExitCode::from(match outcome {
        Outcome::Success => 0,
        Outcome::Failed => 1,
        Outcome::CouldNotStart => could_not_start,
        Outcome::Interrupted => 130,
        Outcome::Changes => 2,
    })
}
