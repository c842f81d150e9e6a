//! Which age identities and recipients a command uses for an environment: sops' usual places
//! (`SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, `~/.config/sops/age/keys.txt`) plus, for a `directory`
//! target, the environment's local key store named in env.toml.

use std::path::{Component, Path, PathBuf};

use crate::load::environment::ENVIRONMENTS_DIR;
use crate::model::EnvFile;
use crate::secrets::{Identities, IdentitySources, SecretsError, load_identities};
use crate::sensitive::SecretString;

/// Why an environment's keys or settings could not be found.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{path} is not inside environments/<env>/")]
    NotInEnvironment { path: PathBuf },
    #[error("cannot read {path}")]
    ReadEnv {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid (run `cargo xtask check` for details): {message}")]
    InvalidEnv { path: PathBuf, message: String },
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// The identities for an environment.
pub fn identities_for(root: &Path, env: &EnvFile) -> Result<Identities, AccessError> {
    let mut identities = load_identities(&IdentitySources::from_env())?;
    if let Some(key_store) = env.target.key_store() {
        let path = root.join(key_store);
        if let Ok(text) = std::fs::read_to_string(&path) {
            identities.add_key_text(&path.display().to_string(), &SecretString::new(text))?;
        }
    }
    Ok(identities)
}

/// Reads an environment's env.toml (only that file: cheap, and enough for keys).
pub fn read_env_file(root: &Path, environment: &str) -> Result<EnvFile, AccessError> {
    read_env_file_with(root, environment, |path| std::fs::read_to_string(path))
}

/// [`read_env_file`] with the file read by `read` (the CLI reads through its source tree, which
/// keeps the text for the loader, so env.toml is read once per command).
pub fn read_env_file_with(
    root: &Path,
    environment: &str,
    read: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<EnvFile, AccessError> {
    let path = root.join(ENVIRONMENTS_DIR).join(environment).join("env.toml");
    let text = read(&path).map_err(|source| AccessError::ReadEnv { path: path.clone(), source })?;
    toml::from_str(&text).map_err(|e| AccessError::InvalidEnv { path, message: e.message().to_owned() })
}

/// The environment a file under `environments/<env>/` belongs to, and the path relative to
/// the repository root. `path` may be absolute or relative to the current directory.
pub fn environment_of(root: &Path, path: &Path) -> Result<(String, PathBuf), AccessError> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    // The file (and even its folder, for `secrets new`) may not exist yet.
    let parent = match absolute.parent() {
        Some(parent) => parent.canonicalize().unwrap_or_else(|_| parent.to_owned()),
        None => absolute.clone(),
    };
    let absolute = match absolute.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    };
    let relative =
        absolute.strip_prefix(&root).map_err(|_| AccessError::NotInEnvironment { path: path.to_owned() })?;
    let mut parts = relative.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(first)), Some(Component::Normal(env))) if first == ENVIRONMENTS_DIR => {
            Ok((env.to_string_lossy().into_owned(), relative.to_owned()))
        }
        _ => Err(AccessError::NotInEnvironment { path: path.to_owned() }),
    }
}
