//! What the `directory` and `flux` targets share: a folder of files a deploy writes, with an
//! `index.json` ([`BundleIndex`]) listing the plan's steps, the files each writes and the
//! folder's inventory (what a later deploy may remove), written atomically; and the helpers
//! both use to split values into their plain and secret parts.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use serde_json::Value as Json;

use crate::exec::StepError;
use crate::plan::{Plan, Step, TargetSpec};
use crate::secrets::{AtomicWriteOptions, write_atomic};

/// The name of the index file at the top of the folder.
pub const INDEX_FILE: &str = "index.json";

/// Writes `text` to `relative` under `folder` atomically (mode 0644), creating its folders.
/// A file that already holds `text` is left alone, so an unchanged deploy writes nothing.
pub fn write_file(folder: &Path, relative: &str, text: &str) -> Result<(), StepError> {
    let path = folder.join(relative);
    if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| StepError::new(format!("cannot create {}: {e}", parent.display())))?;
    }
    write_atomic(&path, text.as_bytes(), &AtomicWriteOptions { mode: Some(0o644) })
        .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))
}

/// Writes the folder's `index.json`: the plan's steps in execution order with the files each
/// writes (`files_of`). First removes the temporary files of atomic writes that a killed deploy
/// left behind (`.<name>.<random>.tmp`): the caller holds the deploy lock, so no write is in
/// flight.
pub fn write_index(
    folder: &Path,
    plan: &Plan,
    files_of: impl Fn(&Step) -> Vec<String>,
    inventory: Vec<String>,
    lineage: Option<&str>,
    last_change: Option<&Json>,
) -> Result<(), StepError> {
    remove_interrupted_writes(folder)?;
    let index = BundleIndex {
        environment: &plan.environment,
        target: &plan.target,
        steps: plan
            .steps()
            .map(|step| IndexedStep {
                id: &step.id,
                fingerprint: &step.fingerprint,
                depends_on: &step.depends_on,
                files: files_of(step),
            })
            .collect(),
        lineage,
        inventory,
        last_change,
    };
    write_file(folder, INDEX_FILE, &(serde_json::to_string_pretty(&index).expect("JSON") + "\n"))
}

/// The folder's current `index.json`, parsed; `None` without one. `what` names the folder in
/// errors (`bundle`, `tree`).
pub fn read_index(folder: &Path, what: &str) -> Result<Option<Json>, StepError> {
    let path = folder.join(INDEX_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StepError::new(format!("cannot read {}: {e}", path.display()))),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StepError::new(format!("{} is not the {what}'s index: {e}", path.display())))
}

/// The bundle's `index.json`: the plan's steps in execution order with the files each writes,
/// and the bundle's inventory.
#[derive(Debug, Serialize)]
pub struct BundleIndex<'a> {
    pub environment: &'a str,
    pub target: &'a TargetSpec,
    pub steps: Vec<IndexedStep<'a>>,
    /// The lineage of the journal that deploys this bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<&'a str>,
    /// Every file of the bundle a deploy wrote and has not removed yet, sorted: what a later
    /// deploy may remove when no step writes it any more. Files the inventory does not list
    /// (a `.git` folder, a README) are never touched.
    pub inventory: Vec<String>,
    /// The last deploy that changed the bundle: who, which commit, plan file and ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change: Option<&'a Json>,
}

/// One step of a [`BundleIndex`].
#[derive(Debug, Serialize)]
pub struct IndexedStep<'a> {
    pub id: &'a str,
    pub fingerprint: &'a str,
    pub depends_on: &'a [String],
    /// Relative to the bundle.
    pub files: Vec<String>,
}

pub fn not_decrypted() -> StepError {
    StepError::new("the plan was compiled without keys: its secrets are not decrypted")
}

/// An index's inventory: its `inventory`, or for an index written before inventories the
/// files of its steps.
pub fn inventory_of(index: &Json) -> BTreeSet<String> {
    let strings = |list: Option<&Json>| -> Vec<String> {
        list.and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .map(str::to_owned)
            .collect()
    };
    let listed: Vec<String> = match index.get("inventory") {
        Some(inventory) => strings(Some(inventory)),
        None => index
            .get("steps")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .flat_map(|step| strings(step.get("files")))
            .collect(),
    };
    // Only plain relative paths inside the bundle: an edited index cannot aim elsewhere.
    listed.into_iter().filter(|p| is_plain_relative(p)).collect()
}

/// `releases/opus/x/values.yaml`, not `/etc/passwd`, `../x` or `a/./b`.
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Removes the folders between `path` and `bundle` that removing `path` left empty.
pub fn remove_empty_parents(bundle: &Path, path: &Path) {
    let mut parent = path.parent();
    while let Some(dir) = parent.filter(|dir| *dir != bundle && dir.starts_with(bundle)) {
        // Fails, as it should, while the folder still holds other files.
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        parent = dir.parent();
    }
}

/// The hex SHA-256 of a file's bytes.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

pub fn remove_path(tree: &mut Json, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = tree;
    for part in &parts[..parts.len() - 1] {
        match node.get_mut(*part) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(parts[parts.len() - 1]);
    }
}

/// Keeps only the leaves at `paths` (maps only; a list holding a secret is kept whole).
pub fn retain_paths(tree: &mut Json, paths: &[String], prefix: &str) {
    if let Some(map) = tree.as_object_mut() {
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            let keep_whole = paths.iter().any(|p| p == &full || p.starts_with(&format!("{full}[")));
            let keep_some = paths.iter().any(|p| p.starts_with(&format!("{full}.")));
            if keep_whole {
                continue;
            }
            if keep_some {
                retain_paths(map.get_mut(&key).expect("present"), paths, &full);
            } else {
                map.remove(&key);
            }
        }
    }
}

pub fn to_yaml(value: &Json) -> String {
    serde_yaml_ng::to_string(value).expect("JSON is YAML")
}

/// Removes the temporary files of interrupted atomic writes under `bundle`.
pub fn remove_interrupted_writes(bundle: &Path) -> Result<(), StepError> {
    let mut stack = vec![bundle.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(|e| {
                    StepError::new(format!("cannot remove the interrupted write {}: {e}", path.display()))
                })?;
            }
        }
    }
    Ok(())
}
