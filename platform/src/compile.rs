//! Compiling with age identities: the engine core's [`engine::compile`], its result holding
//! the [`Identities`] the secrets were decrypted with.

pub use engine::compile::{compile, context};

use crate::catalog::Catalog;
use crate::check::Failure;
use crate::load::environment::LoadError;
use crate::load::tree::SourceTree;
use crate::model::EnvFile;
use crate::secrets::Identities;

/// The outcome of compiling an environment (see [`engine::compile::Compiled`]).
pub type Compiled = engine::compile::Compiled<Identities>;

/// The loaded inputs of a compiled environment (see [`engine::compile::Inputs`]).
pub type Inputs = engine::compile::Inputs<Identities>;

/// Checks, reads secrets (decrypting them with `identities` when given) and compiles.
pub fn compile_environment(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    identities: Option<&Identities>,
) -> Result<Compiled, LoadError> {
    engine::compile::compile_environment(tree, catalog, name, identities)
}

/// Checks and compiles, asking `keys` for the identities once env.toml is loaded: every input
/// file is read once.
pub fn compile_finding_keys<E>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    keys: impl FnOnce(&EnvFile) -> Result<Option<Identities>, E>,
) -> Result<Compiled, Failure<E>> {
    engine::compile::compile_finding_keys(tree, catalog, name, keys)
}
