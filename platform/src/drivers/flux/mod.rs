//! The `flux` target: every step writes what Flux applies into a tree that a `GitRepository`
//! in the cluster points at (see [`layout`] for where things go). Namespaces, objects, Jobs
//! and `HelmRelease`s are plain manifests; every Secret (components' secrets, releases'
//! secret values, the database Jobs' scripts and admin connection) is SOPS-encrypted for the
//! environment's recipients with `encrypted_regex: ^(data|stringData)$`, which Flux's
//! kustomize-controller decrypts with the age key in its decryption Secret. With
//! `databases = "external"` the deploy provisions databases itself, as the `kube` target does.
//!
//! Like the `directory` target: atomic writes, `index.json` with the tree's inventory (files
//! of removed components are removed after a complete run), and a refresh that compares each
//! plain file with what the plan renders and each encrypted file with its recorded digest.
//! The kustomize files and the Flux `Kustomization`s (derived from the whole plan) are
//! rewritten in `prepare` when they differ.

pub mod layout;
pub mod objects;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::drivers::folder::{
    self, file_digest, inventory_of, not_decrypted, remove_empty_parents, remove_path, retain_paths, to_yaml,
};
use crate::drivers::postgres::{self, Provisioning, provisioning_sql, scram_verifier_with_salt};
use crate::exec::{Cleanup, Driver, Found, Observer, PhaseReporter, StepError, StepOutput, StepRecord};
use crate::plan::observed::Removal;
use crate::plan::{Action, Plan, Step};
use crate::postgres::{AdminOptions, Identifier, PostgresError};
use crate::secrets::{EncryptionRule, Recipient, SecretTree, encrypt_document};
use crate::sensitive::SecretString;
use crate::values::Values;

pub use layout::{FluxSettings, Layout};

/// The rule of every encrypted manifest: Kubernetes keeps reading the object's kind and name.
pub const ENCRYPTED_REGEX: &str = "^(data|stringData)$";

/// Writes steps into a Flux tree.
pub struct FluxDriver {
    tree: PathBuf,
    settings: FluxSettings,
    recipients: Vec<Recipient>,
    /// `databases = "external"`: the admin connection the deploy provisions with.
    database: Option<AdminOptions>,
    run: std::sync::Mutex<RunState>,
}

#[derive(Default)]
struct RunState {
    lineage: Option<String>,
    layout: Option<Arc<Layout>>,
    /// The index's record of the last deploy that changed the tree, kept when the index is
    /// rewritten.
    last_change: Option<Json>,
    /// What `note_change` was given for this deploy.
    noted_change: Option<Json>,
}

impl FluxDriver {
    /// A driver writing the tree of a flux plan into `tree`; `None` for another target.
    pub fn new(
        tree: PathBuf,
        plan: &Plan,
        recipients: Vec<Recipient>,
        database: Option<AdminOptions>,
    ) -> Option<FluxDriver> {
        let settings = FluxSettings::of(plan)?;
        Some(FluxDriver { tree, settings, recipients, database, run: Default::default() })
    }

    pub fn settings(&self) -> &FluxSettings {
        &self.settings
    }

    fn layout(&self, plan: &Plan) -> Result<Arc<Layout>, StepError> {
        layout::layout(plan, &self.settings).map(Arc::new).map_err(|e| StepError::new(e.to_string()))
    }

    /// Writes `text` unless the file already holds it (a no-op deploy writes nothing).
    fn write(&self, relative: &str, text: &str) -> Result<(), StepError> {
        folder::write_file(&self.tree, relative, text)
    }

    /// Encrypts a manifest (YAML text with secrets) for the recipients; refuses to write it
    /// should any of `secrets` still show in the encrypted text.
    fn write_encrypted<'s>(
        &self,
        relative: &str,
        yaml: &SecretString,
        rule: EncryptionRule,
        secrets: impl Iterator<Item = &'s SecretString>,
    ) -> Result<(), StepError> {
        let path = self.tree.join(relative);
        let tree = SecretTree::from_yaml(Path::new(relative), yaml.expose())
            .map_err(|e| StepError::new(e.to_string()))?;
        let text = encrypt_document(&path, &tree, &self.recipients, &rule)
            .map_err(|e| StepError::new(e.to_string()))?;
        for secret in secrets {
            // Short values could match ciphertext by chance; long ones never do.
            if secret.expose().len() >= 12 && text.contains(secret.expose()) {
                return Err(StepError::new(format!(
                    "{relative}: a secret value would be left in clear by the encryption rule; nothing was written"
                )));
            }
        }
        self.write(relative, &text)
    }

    fn run_step(&self, step: &Step, layout: &Layout) -> Result<StepOutput, StepError> {
        let files = layout::files_of(step, &self.settings);
        let mut note = None;
        for (relative, text) in plain_files(step, layout, &self.settings)? {
            self.write(&relative, &text)?;
        }
        let secret_rule = || EncryptionRule::EncryptedRegex(ENCRYPTED_REGEX.to_owned());
        match &step.action {
            Action::ApplySecret { namespace, name, labels, data } => {
                let clear = data.expose_tree().ok_or_else(not_decrypted)?;
                let manifest = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace, "labels": labels}, "type": "Opaque", "stringData": clear});
                let yaml = SecretString::new(to_yaml(&manifest));
                self.write_encrypted(&files[0], &yaml, secret_rule(), data.secrets())?;
            }
            Action::HelmRelease { release, namespace, values, .. } => {
                if let (_, Some(secret)) = split_values(values)? {
                    let manifest = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": objects::values_secret_name(release), "namespace": namespace}, "type": "Opaque", "stringData": {objects::VALUES_KEY: secret.expose()}});
                    let yaml = SecretString::new(to_yaml(&manifest));
                    self.write_encrypted(&files[1], &yaml, secret_rule(), values.secrets())?;
                }
            }
            Action::ApplyObjects { namespace, objects: values, .. } if !values.sensitive().is_empty() => {
                let clear = values.expose_tree().ok_or_else(not_decrypted)?;
                let items = clear.as_array().cloned().unwrap_or_else(|| vec![clear.clone()]);
                for (item, relative) in items.iter().zip(&files) {
                    let item = with_namespace(item, namespace);
                    // Everything but what names the object is encrypted.
                    let keys: Vec<&str> = item
                        .as_object()
                        .into_iter()
                        .flat_map(|m| m.keys())
                        .map(String::as_str)
                        .filter(|k| !matches!(*k, "apiVersion" | "kind" | "metadata"))
                        .collect();
                    let rule = EncryptionRule::EncryptedRegex(format!("^({})$", keys.join("|")));
                    let yaml = SecretString::new(to_yaml(&item));
                    self.write_encrypted(relative, &yaml, rule, values.secrets())?;
                }
            }
            Action::ProvisionDatabase { role, database, password, connection_limit, .. }
                if self.settings.jobs =>
            {
                let clear = password.expose_tree().ok_or_else(not_decrypted)?;
                let password = SecretString::new(clear.as_str().unwrap_or_default().to_owned());
                let role = Identifier::new("role", role).map_err(|e| StepError::new(e.to_string()))?;
                let database_id =
                    Identifier::new("database", database).map_err(|e| StepError::new(e.to_string()))?;
                // The salt comes from the step's fingerprint: the same inputs give the same
                // script (the tree is deterministic), new inputs a new salt.
                let salt = Sha256::digest(format!("opus-deploy flux scram salt\0{}", step.fingerprint));
                let verifier = scram_verifier_with_salt(&password, &salt[..16], 4096);
                // The Job checks the server's version first, as the deploy's preflight would.
                let mut sql = layout.min_server_version.map(version_check).unwrap_or_default();
                sql.push_str(&provisioning_sql(&role, &database_id, &verifier));
                sql.push_str(&format!("ALTER ROLE {role} CONNECTION LIMIT {connection_limit};\n"));
                let manifest = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": objects::script_secret_name(database, &self.settings), "namespace": self.settings.namespace}, "type": "Opaque", "stringData": {objects::SCRIPT_KEY: sql}});
                let yaml = SecretString::new(to_yaml(&manifest));
                self.write_encrypted(&files[1], &yaml, secret_rule(), std::iter::once(&password))?;
            }
            Action::DatabasePreflight { host, port, admin_user, admin_password, .. }
                if self.settings.jobs =>
            {
                let clear = admin_password.expose_tree().ok_or_else(not_decrypted)?;
                let manifest = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": self.settings.admin_secret(), "namespace": self.settings.namespace}, "type": "Opaque", "stringData": {
                    "PGHOST": host, "PGPORT": port.to_string(), "PGUSER": admin_user, "PGPASSWORD": clear,
                    "PGDATABASE": "postgres", "PGSSLMODE": self.settings.sslmode,
                }});
                let yaml = SecretString::new(to_yaml(&manifest));
                self.write_encrypted(&files[0], &yaml, secret_rule(), admin_password.secrets())?;
                note = Some("each database Job checks the server version before it provisions");
            }
            Action::WaitReady { .. } => {
                note = Some("Flux waits for the release (its Kustomization's health check)")
            }
            Action::StoreKey { .. } => {
                note = Some("the age key goes into the decryption Secret by hand (README: GitOps with Flux)")
            }
            _ => {}
        }
        // What the refresh compares the encrypted files with: each file's digest as written.
        let mut digests = serde_json::Map::new();
        for relative in &files {
            let path = self.tree.join(relative);
            let digest = file_digest(&path)
                .map_err(|e| StepError::new(format!("cannot read back {}: {e}", path.display())))?;
            digests.insert(relative.clone(), Json::String(digest));
        }
        let mut output = json!({"files": files, "sha256": digests});
        if let Some(note) = note {
            output["note"] = json!(note);
        }
        Ok(output)
    }

    /// `databases = "external"`: the database steps run against PostgreSQL, as on a cluster.
    async fn run_database_step(&self, step: &Step, phase: PhaseReporter) -> Result<StepOutput, StepError> {
        let admin = self.database.clone().ok_or_else(|| StepError::new("no database admin credentials"))?;
        let fail = |e: PostgresError| StepError::new(e.to_string());
        match &step.action {
            Action::DatabasePreflight { host, port, min_server_version, .. } => {
                phase("connecting to PostgreSQL");
                let version = blocking(move || async move { crate::postgres::preflight(&admin).await })
                    .await?
                    .map_err(fail)?;
                if version / 10_000 < *min_server_version {
                    return Err(StepError::new(format!(
                        "PostgreSQL at {host}:{port} is version {} but the platform needs {min_server_version} or newer",
                        version / 10_000
                    )));
                }
                Ok(json!({"server_version_num": version}))
            }
            Action::ProvisionDatabase { role, database, password, connection_limit, .. } => {
                let clear = password.expose_tree().ok_or_else(not_decrypted)?;
                let provisioning = Provisioning {
                    role: Identifier::new("role", role).map_err(fail)?,
                    database: Identifier::new("database", database).map_err(fail)?,
                    password: SecretString::new(clear.as_str().unwrap_or_default().to_owned()),
                };
                let limit = *connection_limit;
                phase("provisioning");
                let (outcome, limit_changed) = blocking(move || async move {
                    let outcome = postgres::provision(&admin, &provisioning).await?;
                    let changed = postgres::set_connection_limit(&admin, &provisioning.role, limit).await?;
                    Ok::<_, PostgresError>((outcome, changed))
                })
                .await?
                .map_err(fail)?;
                Ok(json!({"changes": format!("{outcome:?}"), "connection_limit_changed": limit_changed}))
            }
            _ => Err(StepError::new("not a database step")),
        }
    }

    /// The files derived from the whole plan: each folder's kustomization.yaml and the entry
    /// folder (sources, Kustomizations).
    fn aggregate_files(&self, plan: &Plan, layout: &Layout) -> BTreeMap<String, String> {
        aggregate_files(plan, layout, &self.settings)
    }

    fn write_index(
        &self,
        plan: &Plan,
        inventory: Vec<String>,
        lineage: Option<&str>,
    ) -> Result<(), StepError> {
        let last_change = self.run.lock().expect("not poisoned").last_change.clone();
        let files_of = |step: &Step| layout::files_of(step, &self.settings);
        folder::write_index(&self.tree, plan, files_of, inventory, lineage, last_change.as_ref())
    }

    fn read_index(&self) -> Result<Option<Json>, StepError> {
        folder::read_index(&self.tree, "tree")
    }

    fn inventory(&self) -> Result<BTreeSet<String>, StepError> {
        Ok(self.read_index()?.as_ref().map(inventory_of).unwrap_or_default())
    }

    /// Every file the plan's tree holds.
    fn expected_files(&self, plan: &Plan, layout: &Layout) -> BTreeSet<String> {
        let mut files: BTreeSet<String> =
            plan.steps().flat_map(|s| layout::files_of(s, &self.settings)).collect();
        files.extend(self.aggregate_files(plan, layout).into_keys());
        files
    }
}

/// Runs a database future on a blocking thread of the current runtime (sqlx's futures are
/// not provably `Send` for every lifetime, as in the cluster driver).
async fn blocking<F, Fut, T>(make: F) -> Result<T, StepError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(make()))
        .await
        .map_err(|e| StepError::new(format!("the database step did not finish: {e}")))
}

/// The first statement of a database Job's script: the server is `minimum` or newer.
fn version_check(minimum: u32) -> String {
    format!(
        "-- PostgreSQL {minimum} or newer, as the platform needs.\n\
         DO $$ BEGIN IF current_setting('server_version_num')::int < {} THEN \
         RAISE EXCEPTION 'PostgreSQL % is older than {minimum}, which the platform needs', current_setting('server_version'); \
         END IF; END $$;\n",
        minimum * 10_000
    )
}

/// The plain (unencrypted) files of a step, with their text: what the step writes and what
/// the refresh expects to find.
pub fn plain_files(
    step: &Step,
    layout: &Layout,
    settings: &FluxSettings,
) -> Result<Vec<(String, String)>, StepError> {
    let files = layout::files_of(step, settings);
    let mut out = Vec::new();
    match &step.action {
        Action::Preflight { .. } => out.push((
            files[0].clone(),
            "This folder is written by `cargo xtask deploy` for Flux; edits are overwritten.\n".to_owned(),
        )),
        Action::EnsureNamespace { name, labels, annotations } => {
            let mut annotations = annotations.clone();
            // Namespaces are retained: Flux never deletes one that left the tree.
            annotations.insert("kustomize.toolkit.fluxcd.io/prune".to_owned(), "disabled".to_owned());
            let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels, "annotations": annotations}});
            out.push((files[0].clone(), to_yaml(&manifest)));
        }
        Action::HelmRelease { release, namespace, chart, values, timeout_seconds } => {
            let (plain, secret) = split_shown(values);
            let values_secret = secret.then(|| objects::values_secret_name(release));
            let no_dependencies = Vec::new();
            let depends_on = layout.release_dependencies.get(&step.id).unwrap_or(&no_dependencies);
            let object = objects::ReleaseObject {
                release,
                namespace,
                chart,
                timeout_seconds: *timeout_seconds,
                values: &plain,
                values_secret: values_secret.as_deref(),
                depends_on,
            };
            out.push((files[0].clone(), to_yaml(&objects::helm_release(&object, settings))));
        }
        Action::ApplyObjects { namespace, objects: values, .. } if values.sensitive().is_empty() => {
            let shown = values.shown();
            let items = shown.as_array().cloned().unwrap_or_else(|| vec![shown.clone()]);
            let text: Vec<String> =
                items.iter().map(|item| to_yaml(&with_namespace(item, namespace))).collect();
            out.push((files[0].clone(), text.join("---\n")));
        }
        Action::ProvisionDatabase { database, .. } if settings.jobs => {
            out.push((
                files[0].clone(),
                to_yaml(&objects::database_job(database, &step.fingerprint, settings)),
            ));
        }
        _ => {}
    }
    Ok(out)
}

/// See [`FluxDriver::aggregate_files`].
pub fn aggregate_files(plan: &Plan, layout: &Layout, settings: &FluxSettings) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (group, group_layout) in &layout.groups {
        let folder = group.folder();
        // A group's own files only: after-releases/ is a Kustomization of its own.
        let kustomize = objects::kustomize_file(&folder, &group_layout.files);
        out.insert(format!("{folder}/kustomization.yaml"), to_yaml(&kustomize));
    }
    let mut charts: Vec<&crate::plan::ChartSpec> = plan
        .steps()
        .filter_map(|s| match &s.action {
            Action::HelmRelease { chart, .. } => Some(chart),
            _ => None,
        })
        .collect();
    charts.sort_by(|a, b| (&a.reference, &a.repository).cmp(&(&b.reference, &b.repository)));
    let entry = objects::entry_objects(layout, &charts, settings);
    let entry_files: Vec<String> = entry.keys().cloned().collect();
    for (relative, object) in entry {
        out.insert(relative, to_yaml(&object));
    }
    out.insert(
        format!("{}/kustomization.yaml", objects::ENTRY_FOLDER),
        to_yaml(&objects::kustomize_file(objects::ENTRY_FOLDER, &entry_files)),
    );
    out
}

/// A namespaced object without a namespace gets the step's (kustomize-controller applies
/// objects as they are). Cluster-scoped kinds are told by name (`Cluster*`).
fn with_namespace(item: &Json, namespace: &str) -> Json {
    let mut item = item.clone();
    let kind = item.get("kind").and_then(Json::as_str).unwrap_or_default();
    let cluster_scoped =
        kind.starts_with("Cluster") || matches!(kind, "Namespace" | "CustomResourceDefinition");
    if !cluster_scoped
        && let Some(metadata) = item.get_mut("metadata").and_then(Json::as_object_mut)
        && !metadata.contains_key("namespace")
    {
        metadata.insert("namespace".to_owned(), json!(namespace));
    }
    item
}

/// The shown values without the subtrees that hold secrets (a list holding one goes whole to
/// the values Secret: Flux merges inline values over `valuesFrom`, and lists replace), and
/// whether there are secrets.
fn split_shown(values: &Values) -> (Json, bool) {
    let mut plain = values.shown().clone();
    for path in values.sensitive().keys() {
        let cut = path.split('[').next().unwrap_or_default();
        if cut.is_empty() {
            return (json!({}), true);
        }
        remove_path(&mut plain, cut);
    }
    (plain, !values.sensitive().is_empty())
}

/// The values without their secrets, and the secrets alone (as YAML), for the values Secret.
fn split_values(values: &Values) -> Result<(Json, Option<SecretString>), StepError> {
    let (plain, has_secrets) = split_shown(values);
    if !has_secrets {
        return Ok((plain, None));
    }
    let mut secret = values.expose_tree().ok_or_else(not_decrypted)?;
    let paths: Vec<String> = values.sensitive().keys().cloned().collect();
    if !paths.iter().any(String::is_empty) {
        retain_paths(&mut secret, &paths, "");
    }
    Ok((plain, Some(SecretString::new(to_yaml(&secret)))))
}

impl Driver for FluxDriver {
    fn run<'a>(
        &'a self,
        step: &'a Step,
        phase: PhaseReporter,
    ) -> BoxFuture<'a, Result<StepOutput, StepError>> {
        Box::pin(async move {
            if !self.settings.jobs
                && matches!(step.action, Action::ProvisionDatabase { .. } | Action::DatabasePreflight { .. })
            {
                return self.run_database_step(step, phase).await;
            }
            let layout = self
                .run
                .lock()
                .expect("not poisoned")
                .layout
                .clone()
                .ok_or_else(|| StepError::new("internal error: the flux tree was not prepared"))?;
            phase("writing files");
            self.run_step(step, &layout)
        })
    }

    /// Lays the tree out, writes the kustomize files, the entry folder and the index (the
    /// inventory keeps what the previous index listed).
    fn prepare<'a>(&'a self, whole: &'a Plan, lineage: &'a str) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            std::fs::create_dir_all(&self.tree)
                .map_err(|e| StepError::new(format!("cannot create {}: {e}", self.tree.display())))?;
            let layout = self.layout(whole)?;
            for (relative, text) in self.aggregate_files(whole, &layout) {
                self.write(&relative, &text)?;
            }
            let index = self.read_index()?;
            {
                let mut run = self.run.lock().expect("not poisoned");
                let noted = run.noted_change.take();
                run.last_change =
                    noted.or_else(|| index.as_ref().and_then(|index| index.get("last_change")).cloned());
            }
            let mut inventory = self.inventory()?;
            inventory.extend(self.expected_files(whole, &layout));
            self.write_index(whole, inventory.into_iter().collect(), Some(lineage))?;
            let mut run = self.run.lock().expect("not poisoned");
            run.lineage = Some(lineage.to_owned());
            run.layout = Some(layout);
            Ok(())
        })
    }

    fn observer(&self) -> Option<&dyn Observer> {
        Some(self)
    }

    /// Keeps who changed the tree in the index `prepare` writes.
    fn note_change(&self, record: &crate::change_record::ChangeRecord) {
        self.run.lock().expect("not poisoned").noted_change =
            Some(serde_json::to_value(record).expect("a change record serializes"));
    }

    /// Removes what the inventory lists and the plan's tree no longer holds, and the folders
    /// that leaves empty; then writes the index with what is left.
    fn clean_up<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Vec<Cleanup>> {
        Box::pin(async move {
            let fail = |error: StepError| {
                vec![Cleanup::NotRemoved { path: "index.json".to_owned(), error: error.message }]
            };
            let layout = match self.layout(plan) {
                Ok(layout) => layout,
                Err(error) => return fail(error),
            };
            let expected = self.expected_files(plan, &layout);
            let inventory = match self.inventory() {
                Ok(inventory) => inventory,
                Err(error) => return fail(error),
            };
            let mut cleanups: Vec<Cleanup> = inventory
                .iter()
                .filter(|file| !expected.contains(*file))
                .map(|relative| {
                    let path = self.tree.join(relative);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            remove_empty_parents(&self.tree, &path);
                            Cleanup::Removed { path: relative.clone() }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Cleanup::Removed { path: relative.clone() }
                        }
                        Err(e) => Cleanup::NotRemoved { path: relative.clone(), error: e.to_string() },
                    }
                })
                .collect();
            let mut kept = expected;
            kept.extend(cleanups.iter().filter_map(|c| match c {
                Cleanup::NotRemoved { path, .. } => Some(path.clone()),
                Cleanup::Removed { .. } | Cleanup::Retained { .. } => None,
            }));
            let lineage = self.run.lock().expect("not poisoned").lineage.clone();
            if let Err(error) = self.write_index(plan, kept.into_iter().collect(), lineage.as_deref()) {
                cleanups.push(Cleanup::NotRemoved { path: "index.json".to_owned(), error: error.message });
            }
            cleanups
        })
    }
}

impl Observer for FluxDriver {
    /// Each plain file of a recorded step must hold what the plan renders now (a changed
    /// dependency rewrites a HelmRelease whose inputs did not change); each encrypted file
    /// must exist with the digest the journal recorded. Files the inventory lists and the
    /// tree no longer holds are to remove.
    fn observe<'a>(
        &'a self,
        whole: &'a Plan,
        steps: &'a [&'a Step],
        recorded: &'a BTreeMap<String, StepRecord>,
    ) -> BoxFuture<'a, Result<Found, StepError>> {
        Box::pin(async move {
            let layout = self.layout(whole)?;
            let mut found = Found::default();
            for step in steps {
                if let Some(reason) = self.drift_of(step, &layout, recorded.get(&step.id))? {
                    found.drifted.insert(step.id.clone(), reason);
                }
            }
            let index = self.read_index()?;
            found.lineage =
                index.as_ref().and_then(|i| i.get("lineage")).and_then(Json::as_str).map(str::to_owned);
            let expected = self.expected_files(whole, &layout);
            found.removed = self
                .inventory()?
                .into_iter()
                .filter(|file| !expected.contains(file))
                .map(|relative| Removal { item: format!("file {relative}"), retained: None, database: false })
                .collect();
            Ok(found)
        })
    }
}

impl FluxDriver {
    fn drift_of(
        &self,
        step: &Step,
        layout: &Layout,
        record: Option<&StepRecord>,
    ) -> Result<Option<String>, StepError> {
        let plain: BTreeMap<String, String> =
            plain_files(step, layout, &self.settings)?.into_iter().collect();
        let digests = record.and_then(|r| r.outputs.get("sha256"));
        for relative in layout::files_of(step, &self.settings) {
            let path = self.tree.join(&relative);
            let reason = match (plain.get(&relative), std::fs::read(&path)) {
                (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("file {relative} deleted"))
                }
                (_, Err(e)) => Some(format!("file {relative} cannot be read ({e})")),
                (Some(text), Ok(bytes)) => {
                    (bytes != text.as_bytes()).then(|| format!("file {relative} differs from the plan"))
                }
                (None, Ok(bytes)) => {
                    let digest = hex::encode(Sha256::digest(&bytes));
                    match digests.and_then(|d| d.get(&relative)).and_then(Json::as_str) {
                        Some(recorded) if recorded != digest => Some(format!("file {relative} changed")),
                        _ => None,
                    }
                }
            };
            if reason.is_some() {
                return Ok(reason);
            }
        }
        Ok(None)
    }
}

/// A file a deploy of the tree would write, for `plan`: `created` when it does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub created: bool,
}

/// The files of the tree at `tree` that a deploy would write: those of the steps in `running`
/// (the steps to create, update or repair) and the kustomize files and Flux Kustomizations
/// the whole plan changes. Read-only.
pub fn file_changes(
    tree: &Path,
    plan: &Plan,
    running: &BTreeSet<String>,
) -> Result<Vec<FileChange>, StepError> {
    let settings = FluxSettings::of(plan).ok_or_else(|| StepError::new("not a flux plan"))?;
    let layout = layout::layout(plan, &settings).map_err(|e| StepError::new(e.to_string()))?;
    let mut changes: BTreeMap<String, bool> = BTreeMap::new();
    for step in plan.steps().filter(|s| running.contains(&s.id)) {
        for relative in layout::files_of(step, &settings) {
            let created = !tree.join(&relative).exists();
            changes.insert(relative, created);
        }
    }
    for (relative, text) in aggregate_files(plan, &layout, &settings) {
        match std::fs::read(tree.join(&relative)) {
            Ok(bytes) if bytes == text.as_bytes() => {}
            Ok(_) => {
                changes.insert(relative, false);
            }
            Err(_) => {
                changes.insert(relative, true);
            }
        }
    }
    Ok(changes.into_iter().map(|(path, created)| FileChange { path, created }).collect())
}
