//! `check` with age identities: the engine core's [`engine::check`], its report holding the
//! [`Identities`] the secrets were decrypted with (the commands that go on reuse them).

pub use engine::check::{Checked, Failure};

use crate::catalog::Catalog;
use crate::load::environment::LoadError;
use crate::load::tree::SourceTree;
use crate::model::EnvFile;
use crate::secrets::Identities;

/// What `check` found (see [`engine::check::CheckReport`]).
pub type CheckReport = engine::check::CheckReport<Identities>;

/// Loads and verifies environment `name`, without keys.
pub fn check_environment(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
) -> Result<CheckReport, LoadError> {
    engine::check::check_environment(tree, catalog, name)
}

/// Loads and verifies environment `name`, decrypting its secrets files with `identities` when
/// given.
pub fn check_environment_with(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    identities: Option<&Identities>,
) -> Result<CheckReport, LoadError> {
    engine::check::check_environment_with(tree, catalog, name, identities)
}

/// Loads and verifies environment `name`, asking `keys` for the identities once its env.toml is
/// loaded (see [`engine::check::check_finding_keys`]).
pub fn check_finding_keys<E>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    keys: impl FnOnce(&EnvFile) -> Result<Option<Identities>, E>,
) -> Result<CheckReport, Failure<E>> {
    engine::check::check_finding_keys(tree, catalog, name, keys)
}
