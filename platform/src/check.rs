//! `check`: load an environment and verify it (its files, its secrets files' structure),
//! collecting every diagnostic. Needs neither
//! secrets nor a network, so it runs in a pull request's CI without keys.

use crate::catalog::Catalog;
use crate::compile::secret_inputs::load_secret_inputs;
use crate::diagnostic::Diagnostic;
use crate::load::environment::{LoadError, load_environment};
use crate::load::tree::SourceTree;
use crate::model::Environment;
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
pub struct CheckReport {
    pub checked: Option<Checked>,
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads and verifies environment `name`.
pub fn check_environment(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
) -> Result<CheckReport, LoadError> {
    let loaded = load_environment(tree, catalog, name)?;
    let Some(mut environment) = loaded.environment else {
        return Ok(CheckReport { checked: None, sources: loaded.sources, diagnostics: loaded.diagnostics });
    };
    let (dependencies, mut diagnostics) = verify(&mut environment, catalog, tree);
    let mut sources = environment.sources.clone();
    // The secrets files' structure needs no keys: well-formed, right recipients, keys present.
    let (_, secret_problems) = load_secret_inputs(&environment, catalog, tree, None, &mut sources);
    diagnostics.extend(secret_problems);
    environment.sources = sources.clone();
    let checked = diagnostics.is_empty().then(|| Checked { environment, dependencies });
    Ok(CheckReport { checked, sources, diagnostics })
}
