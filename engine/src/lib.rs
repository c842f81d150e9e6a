//! The Opus Deploy engine core: what `check` and `plan` need, and nothing that runs a deploy.
//!
//! The modules follow the pipeline: [`model`] (types) -> [`load`] (TOML with spans) ->
//! [`verify`] and [`check`] (every rule, every diagnostic) -> [`compile`] (render, build the
//! plan) -> [`plan`] (the DAG value, its fingerprints and renderings), with [`values`],
//! [`template`], [`sensitive`], [`diagnostic`], [`source`] and [`node`] beside them. Secrets
//! files are parsed and checked here ([`secrets`]) and decrypted through the
//! [`secrets::SecretsSource`] trait, which the `platform` crate implements with age; drivers,
//! the journal, keys and every network client live in `platform`. This crate never prints.

/// The component DSL, its own crate so the catalog builds without the engine.
pub use catalog;
pub mod check;
pub mod compile;
pub mod core_version;
pub mod diagnostic;
pub mod load;
pub mod model;
pub mod node;
pub mod plan;
pub mod schema;
pub mod secrets;
pub mod sensitive;
pub mod source;
pub mod template;
pub mod values;
pub mod verify;
