//! `check`: load an environment and verify it (its files, its secrets files' structure),
//! collecting every diagnostic. Needs neither
//! secrets nor a network, so it runs in a pull request's CI without keys.

use crate::catalog::Catalog;
use crate::diagnostic::Diagnostic;
use crate::load::environment::{LoadError, load_environment};
use crate::load::secret_inputs::{SecretInputs, load_secret_inputs};
use crate::load::tree::SourceTree;
use crate::model::{EnvFile, Environment};
use crate::secrets::SecretsSource;
use crate::source::SourceMap;
use crate::verify::{Dependencies, verify};

/// An environment that passed every check, with its resolved dependencies.
#[derive(Debug, Clone)]
pub struct Checked {
    pub environment: Environment,
    pub dependencies: Dependencies,
}

/// What `check` found.
#[derive(Debug)]
pub struct CheckReport<K> {
    pub checked: Option<Checked>,
    /// The environment's secrets files, read once (and decrypted when identities were given).
    pub secrets: Option<SecretInputs>,
    /// The keys the secrets were decrypted with.
    pub identities: Option<K>,
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads and verifies environment `name`, without keys.
pub fn check_environment<K: SecretsSource + Clone>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
) -> Result<CheckReport<K>, LoadError> {
    check_environment_with(tree, catalog, name, None)
}

/// Loads and verifies environment `name`; its secrets files are decrypted with `identities`
/// when given (their structure is checked either way).
pub fn check_environment_with<K: SecretsSource + Clone>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    identities: Option<&K>,
) -> Result<CheckReport<K>, LoadError> {
    check_finding_keys(tree, catalog, name, |_| Ok::<_, std::convert::Infallible>(identities.cloned()))
        .map_err(|failure| match failure {
            Failure::Load(e) => e,
            Failure::Keys(never) => match never {},
        })
}

/// Why an environment could not be checked or compiled at all (its problems aside): the
/// environment cannot be loaded, or its keys cannot be found.
#[derive(Debug)]
pub enum Failure<E> {
    Load(LoadError),
    Keys(E),
}

/// Loads and verifies environment `name`, asking `keys` for the identities once its env.toml
/// is loaded (the key store it names, the recipients it lists), so env.toml is read once;
/// `keys` is not asked when env.toml cannot be loaded.
pub fn check_finding_keys<K: SecretsSource + Clone, E>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    keys: impl FnOnce(&EnvFile) -> Result<Option<K>, E>,
) -> Result<CheckReport<K>, Failure<E>> {
    let loaded = load_environment(tree, catalog, name).map_err(Failure::Load)?;
    let mut sources = loaded.sources;
    let mut diagnostics = loaded.diagnostics;
    // With problems in some files, the checks that need only the others still run, on what
    // could be loaded, so one run reports every independent problem; it never passes.
    let Some(environment) = loaded.environment.or(loaded.partial) else {
        return Ok(CheckReport { checked: None, secrets: None, identities: None, sources, diagnostics });
    };
    let identities = keys(&environment.env).map_err(Failure::Keys)?;
    let source = identities.as_ref().map(|keys| keys as &dyn SecretsSource);
    let (dependencies, problems) = verify(&environment, catalog, tree, &mut sources);
    diagnostics.extend(problems);
    // The secrets files' structure needs no keys: well-formed, right recipients, keys present.
    let (secrets, secret_problems) = load_secret_inputs(&environment, catalog, tree, source, &mut sources);
    diagnostics.extend(secret_problems);
    if !diagnostics.is_empty() {
        return Ok(CheckReport { checked: None, secrets: None, identities: None, sources, diagnostics });
    }
    Ok(CheckReport {
        checked: Some(Checked { environment, dependencies }),
        secrets: Some(secrets),
        identities,
        sources,
        diagnostics,
    })
}
