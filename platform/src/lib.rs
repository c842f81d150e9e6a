//! The Opus Deploy engine: the core (re-exported from the `engine` crate: [`model`] (types) ->
//! [`load`] (TOML with spans) -> [`compile`] (verify, render, build the plan) -> [`plan`] (the
//! DAG value)) and what runs a deploy here: [`exec`] (scheduler, journal, progress trait) ->
//! [`drivers`] (helm, kube, postgres, directory, flux), with [`secrets`] (age), [`keys`],
//! [`journal`] and [`deploy`]. This crate never prints and knows nothing of terminals or flags:
//! the `xtask` binary does that.

pub mod access;
/// The component DSL, its own crate so the catalog builds without the engine.
pub use catalog;
/// The engine core (model, load, verify, compile, plan, values, templates, diagnostics), its own
/// crate so it builds without drivers; its modules are re-exported under the same names.
pub use engine::{
    core_version, diagnostic, load, model, node, plan, schema, sensitive, source, template, values, verify,
};
pub mod change_record;
pub mod check;
pub mod compile;
pub mod deploy;
pub mod drivers;
pub mod exec;
pub mod failpoint;
pub mod journal;
pub mod keys;
pub mod parallel;
pub mod plan_file;
pub mod postgres;
pub mod program;
pub mod secrets;
pub mod session;
pub mod status;
