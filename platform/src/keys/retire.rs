//! `keys retire`: removing the previous key that a rotation kept in a `flux` target's
//! decryption Secret, once Flux no longer needs it.
//!
//! Flux decrypts the tree that is committed, not the one on the operator's disk, so the old
//! key may go only when all of these hold (each failure is named; `force` skips the last
//! four):
//!
//! - no rotation is unfinished (its journal would still need the old key);
//! - no secrets file of the environment and no encrypted file of the tree still has a stanza
//!   for the previous recipient (the tree is re-encrypted by `deploy`);
//! - the tree has no uncommitted changes;
//! - every Flux `Kustomization` of the tree (`flux-system/entry.yaml` and
//!   `flux-system/kustomizations/*.yaml`) is `Ready` in the cluster, at a `lastAppliedRevision`
//!   that contains the last commit that touched the tree.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;
use serde_json::Value;

use super::update::bundle_secrets_files;
use super::{KeyStore, KeysError, git, rotation_journal_path, secrets_files};
use crate::model::EnvFile;
use crate::secrets::inspect_file;

/// The Flux API group of Kustomizations (the `kustomize.toolkit.fluxcd.io/v1` objects the
/// tree holds).
const KUSTOMIZATION_GROUP: &str = "kustomize.toolkit.fluxcd.io";
const KUSTOMIZATION_VERSION: &str = "v1";

/// What [`retire_kept_key`] is asked to do.
pub struct RetireOptions<'a> {
    pub root: &'a Path,
    pub environment: &'a str,
    pub env: &'a EnvFile,
    /// Skip the file, git and cluster checks.
    pub force: bool,
}

/// What [`retire_kept_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireReport {
    /// The retired key's recipient; `None` when the store kept no previous key.
    pub retired: Option<String>,
    /// The Kustomizations found applied, with their revision (empty with `force`).
    pub applied: Vec<AppliedKustomization>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedKustomization {
    pub namespace: String,
    pub name: String,
    pub revision: String,
}

/// A Kustomization of the tree, by where it lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KustomizationRef {
    pub namespace: String,
    pub name: String,
}

/// What the cluster says of a Kustomization: its `Ready` condition and the revision it last
/// applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KustomizationState {
    /// `(status, reason, message)` of the `Ready` condition.
    pub ready: Option<(String, String, String)>,
    pub last_applied_revision: Option<String>,
}

/// Retires the previous key of `store` when Flux no longer needs it; see the module docs.
/// `client` is the cluster Flux runs in (needed unless `force`).
pub async fn retire_kept_key(
    store: &dyn KeyStore,
    client: Option<&kube::Client>,
    options: &RetireOptions<'_>,
) -> Result<RetireReport, KeysError> {
    let (root, environment) = (options.root, options.environment);
    let journal = rotation_journal_path(root, environment);
    if journal.exists() {
        return Err(KeysError::RotationInProgress { store: store.describe() });
    }
    let Some(previous) = store.read().await?.and_then(|keys| keys.previous) else {
        return Ok(RetireReport { retired: None, applied: Vec::new() });
    };
    let mut applied = Vec::new();
    if !options.force {
        let mut reasons = Vec::new();
        let mut files = secrets_files(root, environment)?;
        files.extend(bundle_secrets_files(root, options.env)?);
        let still_old: Vec<String> = files
            .iter()
            .filter(|relative| {
                // A file that cannot be read as sops cannot be decrypted by Flux with any key;
                // it is named as well.
                inspect_file(&root.join(relative))
                    .map_or(true, |summary| summary.recipients.contains(&previous.recipient))
            })
            .map(|relative| relative.display().to_string())
            .collect();
        if !still_old.is_empty() {
            reasons.push(format!(
                "{} file{} still encrypted for it ({}{}): `cargo xtask deploy {environment}` re-encrypts the tree",
                still_old.len(),
                if still_old.len() == 1 { " is" } else { "s are" },
                still_old.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if still_old.len() > 5 { ", ..." } else { "" },
            ));
        }
        let tree = PathBuf::from(options.env.target.bundle_path().unwrap_or_default());
        let uncommitted = git::uncommitted_paths(root, &tree)?;
        if !uncommitted.is_empty() {
            reasons.push(format!(
                "the tree {}/ has uncommitted changes ({}): commit and push them",
                tree.display(),
                uncommitted.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        match git::last_commit_of(root, &tree)? {
            None => {
                reasons.push(format!("the tree {}/ was never committed: commit and push it", tree.display()))
            }
            Some(commit) => {
                let client = client.ok_or_else(|| KeysError::Flux {
                    object: "the cluster".to_owned(),
                    detail: "no cluster to ask (set `context` in the [target] table)".to_owned(),
                })?;
                for kustomization in tree_kustomizations(&root.join(&tree))? {
                    let state = kustomization_state(client, &kustomization).await?;
                    match judge(&state, &commit, |revision| git::contains_commit(root, revision, &commit))? {
                        Ok(revision) => applied.push(AppliedKustomization {
                            namespace: kustomization.namespace,
                            name: kustomization.name,
                            revision,
                        }),
                        Err(problem) => reasons.push(format!(
                            "Kustomization {}/{} {problem}",
                            kustomization.namespace, kustomization.name
                        )),
                    }
                }
            }
        }
        if !reasons.is_empty() {
            return Err(KeysError::RetireBlocked {
                environment: environment.to_owned(),
                previous: previous.recipient,
                reasons,
            });
        }
    }
    store.retire_previous().await?;
    Ok(RetireReport { retired: Some(previous.recipient), applied })
}

/// The Flux Kustomizations of a tree: every `kustomize.toolkit.fluxcd.io` `Kustomization` in
/// `flux-system/entry.yaml` and `flux-system/kustomizations/*.yaml`, sorted.
pub fn tree_kustomizations(tree: &Path) -> Result<Vec<KustomizationRef>, KeysError> {
    let entry_folder = tree.join("flux-system");
    let mut files = vec![entry_folder.join("entry.yaml")];
    let folder = entry_folder.join("kustomizations");
    match std::fs::read_dir(&folder) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(|source| KeysError::Walk { path: folder.clone(), source })?.path();
                if path.extension().is_some_and(|ext| ext == "yaml") {
                    files.push(path);
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeysError::Walk { path: folder, source }),
    }
    let mut found = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| KeysError::ReadEnv { path: path.clone(), source })?;
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).map_err(|e| KeysError::EnvToml {
                path: path.clone(),
                reason: format!("not valid YAML: {e}"),
            })?;
            let api_version = value["apiVersion"].as_str().unwrap_or_default();
            if value["kind"] != "Kustomization"
                || !api_version.starts_with(&format!("{KUSTOMIZATION_GROUP}/"))
            {
                continue;
            }
            let (Some(name), Some(namespace)) =
                (value["metadata"]["name"].as_str(), value["metadata"]["namespace"].as_str())
            else {
                return Err(KeysError::EnvToml {
                    path: path.clone(),
                    reason: "a Kustomization without metadata.name and metadata.namespace".to_owned(),
                });
            };
            found.push(KustomizationRef { namespace: namespace.to_owned(), name: name.to_owned() });
        }
    }
    if found.is_empty() {
        return Err(KeysError::EnvToml {
            path: entry_folder.join("entry.yaml"),
            reason: "no Flux Kustomization found: deploy the environment to write the tree".to_owned(),
        });
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Reads a Kustomization's status from the cluster; a missing one has no state.
async fn kustomization_state(
    client: &kube::Client,
    kustomization: &KustomizationRef,
) -> Result<KustomizationState, KeysError> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(KUSTOMIZATION_GROUP, KUSTOMIZATION_VERSION, "Kustomization"),
        "kustomizations",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &kustomization.namespace, &resource);
    let object = api.get_opt(&kustomization.name).await.map_err(|e| KeysError::Flux {
        object: format!("Kustomization {}/{}", kustomization.namespace, kustomization.name),
        detail: e.to_string(),
    })?;
    Ok(object.map(|object| state_of(&object.data)).unwrap_or_default())
}

/// The state in a Kustomization's `status` (the object's fields besides its metadata).
pub fn state_of(data: &Value) -> KustomizationState {
    let status = &data["status"];
    let ready = status["conditions"].as_array().and_then(|conditions| {
        conditions.iter().find(|c| c["type"] == "Ready").map(|c| {
            let text = |key: &str| c[key].as_str().unwrap_or_default().to_owned();
            (text("status"), text("reason"), text("message"))
        })
    });
    KustomizationState {
        ready,
        last_applied_revision: status["lastAppliedRevision"].as_str().map(str::to_owned),
    }
}

/// The commit of a Flux source revision: `main@sha1:<hex>` (Flux 2.1 and later), `main/<hex>`
/// (earlier), or `sha1:<hex>`.
pub fn revision_commit(revision: &str) -> Option<&str> {
    let hex = if let Some((_, digest)) = revision.rsplit_once('@') {
        digest.strip_prefix("sha1:").or_else(|| digest.strip_prefix("sha256:"))?
    } else if let Some(digest) = revision.strip_prefix("sha1:") {
        digest
    } else {
        revision.rsplit('/').next()?
    };
    (matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Whether a Kustomization has applied a revision containing `commit`: `Ok(Ok(revision))`, or
/// `Ok(Err(problem))` saying what is missing. `contains(revision)` asks git.
pub fn judge(
    state: &KustomizationState,
    commit: &str,
    contains: impl Fn(&str) -> Result<Option<bool>, KeysError>,
) -> Result<Result<String, String>, KeysError> {
    let short = &commit[..commit.len().min(12)];
    let Some(revision) = &state.last_applied_revision else {
        return Ok(Err(match &state.ready {
            None => "is not in the cluster, or has not reconciled yet".to_owned(),
            Some(_) => "has applied no revision yet".to_owned(),
        }));
    };
    match &state.ready {
        Some((status, _, _)) if status == "True" => {}
        Some((status, reason, message)) => {
            return Ok(Err(format!("is not Ready ({status}, {reason}: {message})")));
        }
        None => return Ok(Err("has no Ready condition yet".to_owned())),
    }
    let Some(applied) = revision_commit(revision) else {
        return Ok(Err(format!("applied revision `{revision}`, which names no git commit")));
    };
    Ok(match contains(applied)? {
        Some(true) => Ok(revision.clone()),
        Some(false) => Err(format!(
            "applied {revision}, which does not contain {short} (the last commit of the tree) yet: push it, and wait for Flux (`flux get kustomizations`)"
        )),
        None => {
            Err(format!("applied {revision}, a commit this clone does not have: `git fetch`, then retry"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn revisions_of_every_flux_format_name_their_commit() {
        assert_eq!(revision_commit(&format!("main@sha1:{A}")), Some(A));
        assert_eq!(revision_commit(&format!("refs/heads/main@sha1:{A}")), Some(A));
        assert_eq!(revision_commit(&format!("main/{A}")), Some(A));
        assert_eq!(revision_commit(&format!("sha1:{A}")), Some(A));
        assert_eq!(revision_commit("latest@sha256:abc"), None);
        assert_eq!(revision_commit("main"), None);
        assert_eq!(revision_commit(&format!("main@sha1:{}", &A[..39])), None);
    }

    fn ready(status: &str, revision: Option<&str>) -> KustomizationState {
        KustomizationState {
            ready: Some((status.to_owned(), "ReconciliationSucceeded".to_owned(), "Applied".to_owned())),
            last_applied_revision: revision.map(str::to_owned),
        }
    }

    #[test]
    fn only_a_ready_kustomization_at_a_revision_containing_the_commit_passes() {
        let revision = format!("main@sha1:{A}");
        let yes = |_: &str| Ok(Some(true));
        let no = |_: &str| Ok(Some(false));
        let unknown = |_: &str| Ok(None);
        assert_eq!(judge(&ready("True", Some(&revision)), A, yes).unwrap(), Ok(revision.clone()));
        let problem = judge(&ready("True", Some(&revision)), A, no).unwrap().unwrap_err();
        assert!(problem.contains("does not contain 0123456789ab"), "{problem}");
        let problem = judge(&ready("True", Some(&revision)), A, unknown).unwrap().unwrap_err();
        assert!(problem.contains("git fetch"), "{problem}");
        let problem = judge(&ready("False", Some(&revision)), A, yes).unwrap().unwrap_err();
        assert!(problem.contains("not Ready (False, ReconciliationSucceeded"), "{problem}");
        let problem = judge(&ready("True", None), A, yes).unwrap().unwrap_err();
        assert!(problem.contains("no revision"), "{problem}");
        let problem = judge(&KustomizationState::default(), A, yes).unwrap().unwrap_err();
        assert!(problem.contains("not in the cluster"), "{problem}");
    }

    #[test]
    fn the_state_is_read_from_the_status_of_the_object() {
        let data = serde_json::json!({"spec": {}, "status": {
            "conditions": [
                {"type": "Reconciling", "status": "False", "reason": "x", "message": ""},
                {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision"},
            ],
            "lastAppliedRevision": format!("main@sha1:{A}"),
        }});
        let state = state_of(&data);
        assert_eq!(state.ready.unwrap().0, "True");
        assert_eq!(state.last_applied_revision.unwrap(), format!("main@sha1:{A}"));
        assert_eq!(state_of(&serde_json::json!({})), KustomizationState::default());
    }
}
