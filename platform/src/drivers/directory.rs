//! The `directory` target: every step writes what it would do into a bundle folder — a GitOps
//! or hand-off bundle. Namespaces and other objects as YAML manifests, each Helm release as its
//! chart reference plus values (secrets in a separate SOPS-encrypted values file, so
//! `helm -f values.yaml -f values.secrets.enc.yaml` after decryption gives the merged values),
//! the database provisioning as SQL (passwords as SCRAM verifiers), and `index.json` listing
//! the steps in order. Every file is written atomically; no secret is ever written in clear.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::drivers::postgres::{provisioning_sql, scram_verifier};
use crate::exec::{Cleanup, Driver, PhaseReporter, StepError, StepOutput};
use crate::plan::{Action, Plan, Step, TargetSpec};
use crate::postgres::Identifier;
use crate::secrets::AtomicWriteOptions;
use crate::secrets::{EncryptionRule, Recipient, SecretTree, encrypt_document, write_atomic};
use crate::values::Values;

/// The bundle's `index.json`: the plan's steps in execution order with the files each writes.
#[derive(Debug, Serialize)]
pub struct BundleIndex<'a> {
    pub environment: &'a str,
    pub target: &'a TargetSpec,
    pub steps: Vec<IndexedStep<'a>>,
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

/// Writes steps into a bundle folder.
pub struct DirectoryDriver {
    bundle: PathBuf,
    recipients: Vec<Recipient>,
}

impl DirectoryDriver {
    /// A driver writing into `bundle` (created when missing), encrypting for `recipients`.
    pub fn new(bundle: PathBuf, recipients: Vec<Recipient>) -> DirectoryDriver {
        DirectoryDriver { bundle, recipients }
    }

    /// Writes `index.json`: the plan's steps in execution order with the files each writes.
    /// First removes the temporary files of atomic writes that a killed deploy left behind
    /// (`.<name>.<random>.tmp`): the caller holds the deploy lock, so no write is in flight.
    fn write_index(&self, plan: &Plan) -> Result<(), StepError> {
        remove_interrupted_writes(&self.bundle)?;
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
        };
        self.write("index.json", &(serde_json::to_string_pretty(&index).expect("JSON") + "\n"))
    }

    fn write(&self, relative: &str, text: &str) -> Result<(), StepError> {
        let path = self.bundle.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StepError::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        write_atomic(&path, text.as_bytes(), &AtomicWriteOptions { mode: Some(0o644) })
            .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))
    }

    /// Encrypts a tree (YAML text with secrets) for the environment's recipients.
    fn write_encrypted(
        &self,
        relative: &str,
        yaml: &crate::sensitive::SecretString,
        rule: EncryptionRule,
    ) -> Result<(), StepError> {
        let path = self.bundle.join(relative);
        let tree = SecretTree::from_yaml(Path::new(relative), yaml.expose())
            .map_err(|e| StepError::new(e.to_string()))?;
        let text = encrypt_document(&path, &tree, &self.recipients, &rule)
            .map_err(|e| StepError::new(e.to_string()))?;
        self.write(relative, &text)
    }

    fn run_step(&self, step: &Step) -> Result<StepOutput, StepError> {
        let files = files_of(step);
        match &step.action {
            Action::Preflight { .. } => {
                std::fs::create_dir_all(&self.bundle).map_err(|e| {
                    StepError::new(format!("cannot create the bundle folder {}: {e}", self.bundle.display()))
                })?;
                self.write(
                    ".opus-bundle",
                    "This folder is written by `cargo xtask deploy`; edits are overwritten.\n",
                )?;
            }
            Action::DatabasePreflight { .. } => {
                return Ok(json!({"note": "the directory target does not connect to PostgreSQL"}));
            }
            Action::EnsureNamespace { name, labels, annotations } => {
                let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels, "annotations": annotations}});
                self.write(&files[0], &to_yaml(&manifest))?;
            }
            Action::ApplySecret { namespace, name, labels, data } => {
                let mut manifest = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace, "labels": labels}, "type": "Opaque"});
                let clear = data.expose_tree().ok_or_else(not_decrypted)?;
                manifest["stringData"] = clear;
                let yaml = crate::sensitive::SecretString::new(to_yaml(&manifest));
                self.write_encrypted(
                    &files[0],
                    &yaml,
                    EncryptionRule::EncryptedRegex("^(data|stringData)$".to_owned()),
                )?;
            }
            Action::ProvisionDatabase { role, database, password, connection_limit, .. } => {
                let clear = password.expose_tree().ok_or_else(not_decrypted)?;
                let password =
                    crate::sensitive::SecretString::new(clear.as_str().unwrap_or_default().to_owned());
                let role = Identifier::new("role", role).map_err(|e| StepError::new(e.to_string()))?;
                let database =
                    Identifier::new("database", database).map_err(|e| StepError::new(e.to_string()))?;
                let mut sql = provisioning_sql(&role, &database, &scram_verifier(&password));
                sql.push_str(&format!("ALTER ROLE {role} CONNECTION LIMIT {connection_limit};\n"));
                self.write(&files[0], &sql)?;
            }
            Action::ApplyObjects { objects, .. } => {
                let documents = objects.expose_tree().ok_or_else(not_decrypted)?;
                let items = documents.as_array().cloned().unwrap_or_else(|| vec![documents.clone()]);
                if objects.sensitive().is_empty() {
                    let text: Vec<String> = items.iter().map(to_yaml).collect();
                    self.write(&files[0], &text.join("---\n"))?;
                } else {
                    let yaml = crate::sensitive::SecretString::new(to_yaml(&json!({"objects": items})));
                    self.write_encrypted(&files[0], &yaml, EncryptionRule::default())?;
                }
            }
            Action::HelmRelease { release, namespace, chart, values, timeout_seconds } => {
                let (plain, secret) = split_values(values)?;
                let mut value_files = vec!["values.yaml"];
                self.write(&files[1], &to_yaml(&plain))?;
                if let Some(secret) = secret {
                    self.write_encrypted(&files[2], &secret, EncryptionRule::default())?;
                    value_files.push("values.secrets.enc.yaml");
                }
                let manifest = json!({
                    "release": release,
                    "namespace": namespace,
                    "chart": chart,
                    "timeoutSeconds": timeout_seconds,
                    "valuesFiles": value_files,
                });
                self.write(&files[0], &to_yaml(&manifest))?;
            }
            Action::WaitReady { .. } => {
                return Ok(json!({"note": "the directory target has no cluster to wait for"}));
            }
            Action::StoreKey { recipients, .. } => {
                self.write(&files[0], &(recipients.join("\n") + "\n"))?;
            }
        }
        Ok(json!({"files": files}))
    }
}

fn not_decrypted() -> StepError {
    StepError::new("the plan was compiled without keys: its secrets are not decrypted")
}

impl Driver for DirectoryDriver {
    fn run<'a>(
        &'a self,
        step: &'a Step,
        phase: PhaseReporter,
    ) -> BoxFuture<'a, Result<StepOutput, StepError>> {
        Box::pin(async move {
            phase("writing files");
            self.run_step(step)
        })
    }

    /// Format 2 adds the recipients to the fingerprints of steps that encrypt: the files the
    /// step wrote must exist and its encrypted files be encrypted for exactly the environment's
    /// recipients, or the step runs (and re-encrypts).
    fn still_applied<'a>(&'a self, step: &'a Step) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.files_hold(step) })
    }

    /// Creates the bundle folder and writes its index.
    fn prepare<'a>(&'a self, whole: &'a Plan) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            std::fs::create_dir_all(&self.bundle)
                .map_err(|e| StepError::new(format!("cannot create {}: {e}", self.bundle.display())))?;
            self.write_index(whole)
        })
    }

    /// Removes the files no step of `plan` writes any more (files of removed components), so
    /// the bundle never deploys a component twice, and the folders that leaves empty.
    fn clean_up<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Vec<Cleanup>> {
        Box::pin(async move {
            let relative =
                |path: &Path| path.strip_prefix(&self.bundle).unwrap_or(path).display().to_string();
            stale_files(&self.bundle, plan)
                .into_iter()
                .map(|stale| match std::fs::remove_file(&stale) {
                    Ok(()) => {
                        // Fails, as it should, while the folder still holds other files.
                        if let Some(parent) = stale.parent().filter(|parent| *parent != self.bundle) {
                            let _ = std::fs::remove_dir(parent);
                        }
                        Cleanup::Removed { path: relative(&stale) }
                    }
                    Err(e) => Cleanup::NotRemoved { path: relative(&stale), error: e.to_string() },
                })
                .collect()
        })
    }
}

impl DirectoryDriver {
    fn files_hold(&self, step: &Step) -> bool {
        let mut wanted: Vec<String> = self.recipients.iter().map(ToString::to_string).collect();
        wanted.sort();
        wanted.dedup();
        files_of(step).iter().all(|relative| {
            let path = self.bundle.join(relative);
            if !relative.ends_with(".enc.yaml") {
                return path.is_file();
            }
            crate::secrets::format::inspect_file(&path).is_ok_and(|summary| {
                let mut found = summary.recipients.clone();
                found.sort();
                found.dedup();
                found == wanted
            })
        })
    }
}

/// The files a step writes, relative to the bundle.
pub fn files_of(step: &Step) -> Vec<String> {
    match &step.action {
        Action::Preflight { .. } => vec![".opus-bundle".to_owned()],
        Action::EnsureNamespace { name, .. } => vec![format!("namespaces/{name}.yaml")],
        Action::ApplySecret { namespace, name, .. } => vec![format!("secrets/{namespace}/{name}.enc.yaml")],
        Action::ProvisionDatabase { database, .. } => vec![format!("database/{database}.sql")],
        Action::ApplyObjects { namespace, objects, .. } => {
            let component = step.component.as_deref().and_then(|c| c.rsplit('/').next()).unwrap_or("objects");
            let ext = if objects.sensitive().is_empty() { "yaml" } else { "enc.yaml" };
            vec![format!("manifests/{namespace}/{component}.{ext}")]
        }
        Action::HelmRelease { release, namespace, values, .. } => {
            let dir = format!("releases/{namespace}/{release}");
            let mut files = vec![format!("{dir}/release.yaml"), format!("{dir}/values.yaml")];
            if !values.sensitive().is_empty() {
                files.push(format!("{dir}/values.secrets.enc.yaml"));
            }
            files
        }
        Action::StoreKey { .. } => vec!["keys/recipients.txt".to_owned()],
        Action::DatabasePreflight { .. } | Action::WaitReady { .. } => Vec::new(),
    }
}

/// The values without their secrets, and the secrets alone (as YAML to encrypt).
fn split_values(values: &Values) -> Result<(Json, Option<crate::sensitive::SecretString>), StepError> {
    let mut plain = values.shown().clone();
    for path in values.sensitive().keys() {
        remove_path(&mut plain, path);
    }
    if values.sensitive().is_empty() {
        return Ok((plain, None));
    }
    let clear = values.expose_tree().ok_or_else(not_decrypted)?;
    let mut secret = clear;
    retain_paths(&mut secret, &values.sensitive().keys().cloned().collect::<Vec<_>>(), "");
    Ok((plain, Some(crate::sensitive::SecretString::new(to_yaml(&secret)))))
}

fn remove_path(tree: &mut Json, path: &str) {
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
fn retain_paths(tree: &mut Json, paths: &[String], prefix: &str) {
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

fn to_yaml(value: &Json) -> String {
    serde_yaml_ng::to_string(value).expect("JSON is YAML")
}

/// Removes the temporary files of interrupted atomic writes under `bundle`.
fn remove_interrupted_writes(bundle: &Path) -> Result<(), StepError> {
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

/// Files in the bundle that no step of `plan` writes (left by removed components).
fn stale_files(bundle: &Path, plan: &Plan) -> Vec<PathBuf> {
    let expected: BTreeSet<String> = plan.steps().flat_map(files_of).collect();
    let mut out = Vec::new();
    let mut stack = vec![bundle.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(bundle) {
                let relative = relative.to_string_lossy().into_owned();
                if relative != "index.json" && !expected.contains(&relative) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}
