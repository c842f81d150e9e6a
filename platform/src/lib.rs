//! The Opus Deploy engine.
//!
//! The modules follow the pipeline: [`model`] (types) -> [`load`] (TOML with spans) ->
//! [`compile`] (verify, render, build the plan) -> [`plan`] (the DAG value) -> [`exec`]
//! (scheduler, journal, progress trait) -> [`drivers`] (helm, kube, postgres, directory), with
//! the cross-cutting [`secrets`], [`sensitive`] and [`template`] modules. This crate never
//! prints and knows nothing of terminals or flags: the `xtask` binary does that.

pub mod access;
/// The component DSL, its own crate so the catalog builds without the engine.
pub use catalog;
pub mod change_record;
pub mod check;
pub mod compile;
pub mod core_version;
pub mod deploy;
pub mod diagnostic;
pub mod drivers;
pub mod exec;
pub mod failpoint;
pub mod journal;
pub mod keys;
pub mod load;
pub mod model;
pub mod node;
pub mod parallel;
pub mod plan;
pub mod plan_file;
pub mod postgres;
pub mod program;
pub mod schema;
pub mod secrets;
pub mod sensitive;
pub mod session;
pub mod source;
pub mod status;
pub mod template;
pub mod values;
pub mod verify;
