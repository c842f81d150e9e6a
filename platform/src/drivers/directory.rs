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
use crate::exec::{Cleanup, Driver, Found, Observer, PhaseReporter, StepError, StepOutput, StepRecord};
use crate::plan::observed::Removal;
use crate::plan::{Action, Plan, Step, TargetSpec};
use crate::postgres::Identifier;
use crate::secrets::AtomicWriteOptions;
use crate::secrets::{EncryptionRule, Recipient, SecretTree, encrypt_document, write_atomic};
use crate::values::Values;

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

/// Writes steps into a bundle folder.
pub struct DirectoryDriver {
    bundle: PathBuf,
    recipients: Vec<Recipient>,
    /// The journal's lineage, from `prepare`, for the index `clean_up` writes.
    lineage: std::sync::Mutex<Option<String>>,
    /// The index's record of the last deploy that changed the bundle, kept when the index is
    /// rewritten.
    last_change: std::sync::Mutex<Option<Json>>,
    /// What `note_change` was given for this deploy.
    noted_change: std::sync::Mutex<Option<Json>>,
}

impl DirectoryDriver {
    /// A driver writing into `bundle` (created when missing), encrypting for `recipients`.
    pub fn new(bundle: PathBuf, recipients: Vec<Recipient>) -> DirectoryDriver {
        DirectoryDriver {
            bundle,
            recipients,
            lineage: std::sync::Mutex::new(None),
            last_change: std::sync::Mutex::new(None),
            noted_change: std::sync::Mutex::new(None),
        }
    }

    /// Writes `index.json`: the plan's steps in execution order with the files each writes.
    /// First removes the temporary files of atomic writes that a killed deploy left behind
    /// (`.<name>.<random>.tmp`): the caller holds the deploy lock, so no write is in flight.
    fn write_index(
        &self,
        plan: &Plan,
        inventory: Vec<String>,
        lineage: Option<&str>,
    ) -> Result<(), StepError> {
        remove_interrupted_writes(&self.bundle)?;
        let last_change = self.last_change.lock().expect("not poisoned").clone();
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
            last_change: last_change.as_ref(),
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
        // What the refresh compares the bundle with: each file's digest as written.
        let mut digests = serde_json::Map::new();
        for relative in &files {
            let path = self.bundle.join(relative);
            let digest = file_digest(&path)
                .map_err(|e| StepError::new(format!("cannot read back {}: {e}", path.display())))?;
            digests.insert(relative.clone(), Json::String(digest));
        }
        Ok(json!({"files": files, "sha256": digests}))
    }
}

pub(crate) fn not_decrypted() -> StepError {
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

    /// Creates the bundle folder and writes its index. The inventory keeps what the previous
    /// index listed, so files of removed components stay known until a complete run removes
    /// them, also when this run is cut short.
    fn prepare<'a>(&'a self, whole: &'a Plan, lineage: &'a str) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            std::fs::create_dir_all(&self.bundle)
                .map_err(|e| StepError::new(format!("cannot create {}: {e}", self.bundle.display())))?;
            let index = self.read_index()?;
            let noted = self.noted_change.lock().expect("not poisoned").take();
            *self.last_change.lock().expect("not poisoned") =
                noted.or_else(|| index.as_ref().and_then(|index| index.get("last_change")).cloned());
            let mut inventory: BTreeSet<String> = index.as_ref().map(inventory_of).unwrap_or_default();
            inventory.extend(whole.steps().flat_map(files_of));
            self.write_index(whole, inventory.into_iter().collect(), Some(lineage))?;
            *self.lineage.lock().expect("not poisoned") = Some(lineage.to_owned());
            Ok(())
        })
    }

    fn observer(&self) -> Option<&dyn Observer> {
        Some(self)
    }

    /// Removes the files the inventory lists and no step of `plan` writes any more (files of
    /// removed components), so the bundle never deploys a component twice, and the folders
    /// that leaves empty; then writes the index with the inventory of what is left.
    fn clean_up<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Vec<Cleanup>> {
        Box::pin(async move {
            let stale = match self.stale_files(plan) {
                Ok(stale) => stale,
                Err(error) => {
                    return vec![Cleanup::NotRemoved { path: "index.json".to_owned(), error: error.message }];
                }
            };
            let mut cleanups: Vec<Cleanup> = stale
                .into_iter()
                .map(|relative| {
                    let path = self.bundle.join(&relative);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            remove_empty_parents(&self.bundle, &path);
                            Cleanup::Removed { path: relative }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Cleanup::Removed { path: relative }
                        }
                        Err(e) => Cleanup::NotRemoved { path: relative, error: e.to_string() },
                    }
                })
                .collect();
            // The inventory keeps what could not be removed, for the next run.
            let mut inventory: BTreeSet<String> = plan.steps().flat_map(files_of).collect();
            inventory.extend(cleanups.iter().filter_map(|c| match c {
                Cleanup::NotRemoved { path, .. } => Some(path.clone()),
                Cleanup::Removed { .. } | Cleanup::Retained { .. } => None,
            }));
            let lineage = self.lineage.lock().expect("not poisoned").clone();
            if let Err(error) = self.write_index(plan, inventory.into_iter().collect(), lineage.as_deref()) {
                cleanups.push(Cleanup::NotRemoved { path: "index.json".to_owned(), error: error.message });
            }
            cleanups
        })
    }

    /// Keeps who changed the bundle in the index `prepare` writes.
    fn note_change(&self, record: &crate::change_record::ChangeRecord) {
        *self.noted_change.lock().expect("not poisoned") =
            Some(serde_json::to_value(record).expect("a change record serializes"));
    }
}

impl Observer for DirectoryDriver {
    /// Each file a recorded step wrote must exist with the digest the journal recorded (records
    /// older than digests: the file must exist); files the inventory lists and no step writes
    /// are to remove.
    fn observe<'a>(
        &'a self,
        whole: &'a Plan,
        steps: &'a [&'a Step],
        recorded: &'a std::collections::BTreeMap<String, StepRecord>,
    ) -> BoxFuture<'a, Result<Found, StepError>> {
        Box::pin(async move {
            let mut found = Found::default();
            for step in steps {
                let digests = recorded.get(&step.id).and_then(|r| r.outputs.get("sha256"));
                for relative in files_of(step) {
                    let path = self.bundle.join(&relative);
                    let reason = match file_digest(&path) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Some(format!("file {relative} deleted"))
                        }
                        Err(e) => Some(format!("file {relative} cannot be read ({e})")),
                        Ok(digest) => match digests.and_then(|d| d.get(&relative)).and_then(Json::as_str) {
                            Some(recorded) if recorded != digest => Some(format!("file {relative} changed")),
                            _ => None,
                        },
                    };
                    if let Some(reason) = reason {
                        found.drifted.insert(step.id.clone(), reason);
                        break;
                    }
                }
            }
            // One read of the index: its lineage and its inventory.
            let index = self.read_index()?;
            found.lineage =
                index.as_ref().and_then(|i| i.get("lineage")).and_then(Json::as_str).map(str::to_owned);
            let inventory = index.as_ref().map(inventory_of).unwrap_or_default();
            found.removed = stale_in(&inventory, whole)
                .into_iter()
                .map(|relative| Removal { item: format!("file {relative}"), retained: None, database: false })
                .collect();
            Ok(found)
        })
    }
}

impl DirectoryDriver {
    /// The bundle's current `index.json`, parsed; `None` without one.
    fn read_index(&self) -> Result<Option<Json>, StepError> {
        let path = self.bundle.join("index.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StepError::new(format!("cannot read {}: {e}", path.display()))),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StepError::new(format!("{} is not the bundle's index: {e}", path.display())))
    }

    /// The inventory of the bundle's current index.
    fn inventory(&self) -> Result<BTreeSet<String>, StepError> {
        Ok(self.read_index()?.as_ref().map(inventory_of).unwrap_or_default())
    }

    /// What the inventory lists and no step of `plan` writes, sorted.
    fn stale_files(&self, plan: &Plan) -> Result<Vec<String>, StepError> {
        Ok(stale_in(&self.inventory()?, plan))
    }
}

/// An index's inventory: its `inventory`, or for an index written before inventories the
/// files of its steps.
fn inventory_of(index: &Json) -> BTreeSet<String> {
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

/// Of `inventory`, what no step of `plan` writes, sorted.
fn stale_in(inventory: &BTreeSet<String>, plan: &Plan) -> Vec<String> {
    let expected: BTreeSet<String> = plan.steps().flat_map(files_of).collect();
    inventory.iter().filter(|file| !expected.contains(*file)).cloned().collect()
}

/// `releases/opus/x/values.yaml`, not `/etc/passwd`, `../x` or `a/./b`.
pub(crate) fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Removes the folders between `path` and `bundle` that removing `path` left empty.
pub(crate) fn remove_empty_parents(bundle: &Path, path: &Path) {
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
pub(crate) fn file_digest(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
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

pub(crate) fn remove_path(tree: &mut Json, path: &str) {
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
pub(crate) fn retain_paths(tree: &mut Json, paths: &[String], prefix: &str) {
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

pub(crate) fn to_yaml(value: &Json) -> String {
    serde_yaml_ng::to_string(value).expect("JSON is YAML")
}

/// Removes the temporary files of interrupted atomic writes under `bundle`.
pub(crate) fn remove_interrupted_writes(bundle: &Path) -> Result<(), StepError> {
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
