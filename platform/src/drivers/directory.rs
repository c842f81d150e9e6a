//! The `directory` target: every step writes what it would do into a bundle folder — a GitOps
//! or hand-off bundle. Namespaces and other objects as YAML manifests, each Helm release as its
//! chart reference plus values (secrets in a separate SOPS-encrypted values file, so
//! `helm -f values.yaml -f values.secrets.enc.yaml` after decryption gives the merged values),
//! the database provisioning as SQL (passwords as SCRAM verifiers), and `index.json` listing
//! the steps in order. Every file is written atomically; no secret is ever written in clear.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde_json::{Value as Json, json};

use crate::drivers::folder::{
    self, file_digest, inventory_of, not_decrypted, remove_empty_parents, remove_path, retain_paths, to_yaml,
};
use crate::drivers::postgres::{provisioning_sql, scram_verifier};
use crate::exec::{Cleanup, Driver, Found, Observer, PhaseReporter, StepError, StepOutput, StepRecord};
use crate::plan::observed::Removal;
use crate::plan::{Action, Plan, Step};
use crate::postgres::Identifier;
use crate::secrets::{EncryptionRule, Recipient, SecretTree, encrypt_document};
use crate::values::Values;

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

    /// Writes `index.json` ([`folder::write_index`]).
    fn write_index(
        &self,
        plan: &Plan,
        inventory: Vec<String>,
        lineage: Option<&str>,
    ) -> Result<(), StepError> {
        let last_change = self.last_change.lock().expect("not poisoned").clone();
        folder::write_index(&self.bundle, plan, files_of, inventory, lineage, last_change.as_ref())
    }

    fn write(&self, relative: &str, text: &str) -> Result<(), StepError> {
        folder::write_file(&self.bundle, relative, text)
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
        folder::read_index(&self.bundle, "bundle")
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

/// Of `inventory`, what no step of `plan` writes, sorted.
fn stale_in(inventory: &BTreeSet<String>, plan: &Plan) -> Vec<String> {
    let expected: BTreeSet<String> = plan.steps().flat_map(files_of).collect();
    inventory.iter().filter(|file| !expected.contains(*file)).cloned().collect()
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
