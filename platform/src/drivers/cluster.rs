//! The `kube` target: wires the drivers into the executor. Preflight checks the cluster
//! (version, StorageClass, CRDs); namespaces, Secrets and objects go through server-side apply;
//! databases through the PostgreSQL driver; releases through the real `helm` binary with values
//! on stdin; the key store keeps the environment's age key in the cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value as Json, json};

use crate::drivers::helm::{self, ChartRef, ChartSource, HelmContext, HelmValues, Release, UpgradeOptions};
use crate::drivers::kube::{
    self, ApplyOptions, ApplyOutcome, ClientOptions, ClusterVersion, CrdWaitOptions, KeyStoreLocation,
    NamespaceSpec, NewKey, ReadinessOptions, SecretSpec, StoredKey,
};
use crate::drivers::postgres::{self, Provisioning};
use crate::exec::{Cleanup, Driver, Found, Observer, PhaseReporter, StepError, StepOutput, StepRecord};
use crate::plan::{Action, ChartSpec, Step};
use crate::postgres::{AdminOptions, Identifier, PostgresError};
use crate::secrets::Identities;
use crate::sensitive::{Redactor, SecretString};

/// Everything the `kube` target needs.
pub struct ClusterDriver {
    pub client: ::kube::Client,
    pub helm: HelmContext,
    /// The environment's database, as its admin (for provisioning).
    pub database: Option<AdminOptions>,
    /// For the key store: the local identities, one of which the environment is encrypted for.
    pub identities: Arc<Identities>,
    /// The repository root, for local charts.
    pub root: PathBuf,
    /// What one deploy learns as it goes (the journal's lineage, the inventory as last read or
    /// written): the deploy holds the lock, so nothing else changes the inventory meanwhile
    /// and it is read once.
    pub run: std::sync::Mutex<RunState>,
    /// Drop the databases and roles of components that left the configuration
    /// (`deploy --prune-databases`) instead of retaining them.
    pub prune_databases: bool,
}

/// See [`ClusterDriver::run`].
#[derive(Debug, Default)]
pub struct RunState {
    /// The journal's lineage, from `prepare`, for the inventory `clean_up` writes.
    pub lineage: Option<String>,
    /// The inventory as the refresh or `prepare` read it, or as `prepare` wrote it (`Some(None)`:
    /// read, and there is none).
    pub inventory: Option<Option<kube::Inventory>>,
    /// Who is about to change the environment (`note_change`), for the inventory `prepare`
    /// writes.
    pub noted_change: Option<crate::change_record::ChangeRecord>,
}

/// How to reach the cluster.
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: String,
}

/// A client for the environment's cluster (reads the kubeconfig; contacts nothing yet).
pub async fn client(options: &ClusterOptions) -> Result<::kube::Client, StepError> {
    kube::connect(&ClientOptions {
        kubeconfig: options.kubeconfig.clone(),
        context: Some(options.context.clone()),
    })
    .await
    .map_err(|e| StepError::new(e.to_string()))
}

fn outcome_json(outcome: ApplyOutcome) -> Json {
    json!(match outcome {
        ApplyOutcome::Created => "created",
        ApplyOutcome::Changed => "changed",
        ApplyOutcome::Unchanged => "unchanged",
    })
}

fn redactor_of(values: &crate::values::Values) -> Redactor {
    let mut redactor = Redactor::new();
    for secret in values.secrets() {
        redactor.add(secret);
    }
    redactor
}

fn not_decrypted() -> StepError {
    StepError::new("the plan was compiled without keys: its secrets are not decrypted")
}

impl ClusterDriver {
    fn chart(&self, spec: &ChartSpec) -> ChartRef {
        let source = match &spec.repository {
            Some(url) => ChartSource::Repository { url: url.clone(), chart: spec.reference.clone() },
            None if spec.reference.starts_with("oci://") => {
                ChartSource::Oci { reference: spec.reference.clone() }
            }
            None => ChartSource::Local { path: self.root.join(&spec.reference) },
        };
        ChartRef { source, version: Some(spec.version.clone()) }
    }

    async fn run_step(&self, step: &Step, phase: PhaseReporter) -> Result<StepOutput, StepError> {
        let apply = ApplyOptions::default();
        match &step.action {
            Action::Preflight { max_kubernetes_version, storage_class, crds, provided, outside_run } => {
                phase("checking the cluster version");
                let maximum = max_kubernetes_version
                    .as_deref()
                    .and_then(|v| {
                        let (major, minor) = v.split_once('.')?;
                        ClusterVersion::parse(major, minor, "")
                    })
                    .unwrap_or(ClusterVersion::SUPPORTED_MAXIMUM);
                let version =
                    boxed(kube::check_cluster_version(&self.client, maximum)).await.map_err(fail)?;
                phase("checking the StorageClass");
                let class = boxed(kube::check_storage_class(&self.client, storage_class.as_deref()))
                    .await
                    .map_err(fail)?;
                phase("checking CustomResourceDefinitions");
                let names: Vec<&str> = crds.iter().map(String::as_str).collect();
                boxed(kube::check_crds_installed(&self.client, &names))
                    .await
                    .map_err(|error| missing_crds_error(error, outside_run))?;
                Ok(json!({
                    "kubernetes": version.to_string(),
                    "storage_class": class.name,
                    "crds_installed_by_the_plan": provided.keys().collect::<Vec<_>>(),
                }))
            }
            Action::DatabasePreflight { host, port, min_server_version, .. } => {
                let admin =
                    self.database.as_ref().ok_or_else(|| StepError::new("no database admin credentials"))?;
                phase("connecting to PostgreSQL");
                let version = boxed(crate::postgres::preflight(admin)).await.map_err(fail)?;
                if version / 10_000 < *min_server_version {
                    return Err(StepError::new(format!(
                        "PostgreSQL at {host}:{port} is version {} but the platform needs {min_server_version} or newer",
                        version / 10_000
                    )));
                }
                Ok(json!({"server_version_num": version}))
            }
            Action::EnsureNamespace { name, labels, annotations } => {
                let spec = NamespaceSpec {
                    name: name.clone(),
                    labels: labels.clone(),
                    annotations: annotations.clone(),
                };
                let outcome = kube::apply_namespace(&self.client, &spec, &apply).await.map_err(fail)?;
                Ok(json!({"namespace": outcome_json(outcome)}))
            }
            Action::ApplySecret { namespace, name, labels, data } => {
                let clear = data.expose_tree().ok_or_else(not_decrypted)?;
                let data = clear
                    .as_object()
                    .map(|map| {
                        map.iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    SecretString::new(
                                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                                    ),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let spec = SecretSpec {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    labels: labels.clone(),
                    secret_type: None,
                    data,
                };
                let outcome = kube::apply_secret(&self.client, &spec, &apply).await.map_err(fail)?;
                Ok(json!({"secret": outcome_json(outcome)}))
            }
            Action::ProvisionDatabase { role, database, password, connection_limit, .. } => {
                let admin =
                    self.database.as_ref().ok_or_else(|| StepError::new("no database admin credentials"))?;
                let clear = password.expose_tree().ok_or_else(not_decrypted)?;
                let provisioning = Provisioning {
                    role: Identifier::new("role", role).map_err(fail)?,
                    database: Identifier::new("database", database).map_err(fail)?,
                    password: SecretString::new(clear.as_str().unwrap_or_default().to_owned()),
                };
                phase("provisioning");
                let admin = admin.clone();
                // sqlx's provisioning future is not provably `Send` for every lifetime (a rustc
                // limit), so it runs on a blocking thread of the same runtime instead.
                let handle = tokio::runtime::Handle::current();
                let limit = *connection_limit;
                let (outcome, limit_changed) = tokio::task::spawn_blocking(move || {
                    handle.block_on(async {
                        let outcome = postgres::provision(&admin, &provisioning).await?;
                        let limit_changed =
                            postgres::set_connection_limit(&admin, &provisioning.role, limit).await?;
                        Ok::<_, PostgresError>((outcome, limit_changed))
                    })
                })
                .await
                .map_err(fail)?
                .map_err(fail)?;
                Ok(json!({"changes": format!("{outcome:?}"), "connection_limit_changed": limit_changed}))
            }
            Action::ApplyObjects { objects, wait_for_crds, .. } => {
                let clear = objects.expose_tree().ok_or_else(not_decrypted)?;
                let items = clear.as_array().cloned().unwrap_or_else(|| vec![clear.clone()]);
                // The objects may carry secrets (values_sensitive_custom): scrub server messages.
                let redactor = redactor_of(objects);
                let wait = CrdWaitOptions::default();
                if !wait_for_crds.is_empty() {
                    phase("waiting for CustomResourceDefinitions");
                    boxed(kube::wait_for_crds_established(&self.client, wait_for_crds, &wait))
                        .await
                        .map_err(fail)?;
                }
                phase("applying");
                let mut outcomes = Vec::new();
                for item in &items {
                    let outcome =
                        boxed(kube::apply_through_webhooks(&self.client, item, &apply, &redactor, &wait))
                            .await
                            .map_err(fail)?;
                    outcomes.push(outcome_json(outcome));
                }
                Ok(json!({"objects": outcomes}))
            }
            Action::HelmRelease { release, namespace, chart, values, timeout_seconds } => {
                let yaml = values.expose_yaml().ok_or_else(not_decrypted)?;
                let context = self.helm.clone();
                let release = Release { name: release.clone(), namespace: namespace.clone() };
                let chart = self.chart(chart);
                let values = HelmValues::from_yaml(yaml);
                let redactor = redactor_of(match &step.action {
                    Action::HelmRelease { values, .. } => values,
                    _ => unreachable!(),
                });
                let options = UpgradeOptions {
                    timeout: Duration::from_secs(u64::from(*timeout_seconds)),
                    create_namespace: false,
                };
                phase("helm upgrade --install");
                let output = tokio::task::spawn_blocking(move || {
                    helm::upgrade_install(&context, &release, &chart, &values, &options, &redactor)
                })
                .await
                .map_err(|e| StepError::new(format!("helm did not finish: {e}")))?;
                match output {
                    // The revision helm reports is what the refresh compares the release with.
                    Ok(stdout) => Ok(json!({
                        "helm": stdout.lines().take(6).collect::<Vec<_>>().join("\n"),
                        "revision": kube::revision_in_helm_output(&stdout),
                    })),
                    Err(error) => Err(helm_error(error)),
                }
            }
            Action::WaitReady { namespace, selector, timeout_seconds } => {
                phase("waiting for Deployments and StatefulSets");
                let options = ReadinessOptions {
                    timeout: Duration::from_secs(u64::from(*timeout_seconds)),
                    ..ReadinessOptions::default()
                };
                boxed(kube::wait_for_workloads(&self.client, namespace, selector, &options))
                    .await
                    .map_err(fail)?;
                // What the refresh compares the release's workloads with.
                phase("recording the workloads");
                let workloads = boxed(kube::Workloads::list(&self.client, namespace)).await.map_err(fail)?;
                Ok(json!({"ready": true, "workloads": workloads.to_record(selector)}))
            }
            Action::StoreKey { namespace, secret_name, recipients } => {
                let location = KeyStoreLocation { namespace: namespace.clone(), name: secret_name.clone() };
                let stored = boxed(kube::read_keys(&self.client, &location)).await.map_err(fail)?;
                if let Some(stored) = &stored {
                    if recipients.contains(&stored.current.recipient) {
                        return Ok(json!({"key_store": "unchanged", "recipient": stored.current.recipient}));
                    }
                    return Err(StepError::new(format!(
                        "the key store {namespace}/{secret_name} holds the key of {}, but env.toml lists {}; finish or start the rotation with `cargo xtask rotate-keys`",
                        stored.current.recipient,
                        recipients.join(", ")
                    )));
                }
                let (recipient, private_key) = recipients
                    .iter()
                    .find_map(|r| self.identities.secret_key_for(r).map(|k| (r.clone(), k)))
                    .ok_or_else(|| {
                        StepError::new(format!(
                            "none of the local age identities is {}",
                            recipients.join(", ")
                        ))
                    })?;
                let new = NewKey {
                    key: StoredKey { private_key, recipient: recipient.clone() },
                    created: time::OffsetDateTime::now_utc(),
                };
                let outcome =
                    boxed(kube::store_current_key(&self.client, &location, &new)).await.map_err(fail)?;
                Ok(json!({"key_store": outcome_json(outcome), "recipient": recipient}))
            }
        }
    }
}

/// Boxes a driver future so its `Send`-ness is checked here, with concrete lifetimes (works
/// around rustc's higher-ranked lifetime limits for futures held across `.await`).
fn boxed<'a, T>(future: impl std::future::Future<Output = T> + Send + 'a) -> BoxFuture<'a, T> {
    Box::pin(future)
}

/// A step's error with its whole chain of causes (the reason a database could not be created,
/// the TLS error behind "the API server could not be reached"). Driver errors never carry
/// secrets; secret-bearing server messages are redacted where they are made.
/// The preflight's error for CRDs the cluster lacks, saying which ones a provider left out of
/// this run would have installed.
fn missing_crds_error(
    error: kube::KubeError,
    outside_run: &std::collections::BTreeMap<String, String>,
) -> StepError {
    let kube::KubeError::MissingCrds { missing } = &error else { return fail(error) };
    let left_out: Vec<String> = missing
        .iter()
        .filter_map(|crd| outside_run.get(crd).map(|provider| format!("{crd} is installed by {provider}")))
        .collect();
    if left_out.is_empty() {
        return fail(error);
    }
    StepError::new(format!(
        "{error}; {}, which this run leaves out (--only): deploy it first, or include it in --only",
        left_out.join(", ")
    ))
}

/// The executor names the step beside its error, so the message does not repeat the step id.
fn fail<E: std::error::Error + 'static>(error: E) -> StepError {
    StepError::from_error(&error)
}

fn helm_error(error: helm::HelmError) -> StepError {
    let output = match &error {
        helm::HelmError::Failed { output, .. } => Some(output.clone()),
        _ => None,
    };
    let error = StepError::from_error(&error);
    match output {
        Some(output) => error.with_output(output),
        None => error,
    }
}

impl ClusterDriver {
    /// The inventory: as this deploy last read or wrote it, else read now.
    async fn inventory(&self, namespace: &str) -> Result<Option<kube::Inventory>, kube::KubeError> {
        if let Some(known) = self.run.lock().expect("not poisoned").inventory.clone() {
            return Ok(known);
        }
        let read = kube::read_inventory(&self.client, namespace).await?;
        self.run.lock().expect("not poisoned").inventory = Some(read.clone());
        Ok(read)
    }

    /// The databases the recorded `steps` provisioned, compared with the server in one query
    /// (a deploy has the admin credentials; `plan` and `status` do not look at databases).
    async fn observe_databases(&self, steps: &[&Step]) -> Result<Vec<(String, String)>, StepError> {
        let provisioned: Vec<(String, postgres::Provisioned)> = steps
            .iter()
            .filter_map(|step| match &step.action {
                Action::ProvisionDatabase { role, database, connection_limit, .. } => Some((
                    step.id.clone(),
                    postgres::Provisioned {
                        role: role.clone(),
                        database: database.clone(),
                        connection_limit: *connection_limit,
                    },
                )),
                _ => None,
            })
            .collect();
        let Some(admin) = self.database.clone().filter(|_| !provisioned.is_empty()) else {
            return Ok(Vec::new());
        };
        let wanted: Vec<postgres::Provisioned> = provisioned.iter().map(|(_, p)| p.clone()).collect();
        // sqlx's futures are not provably `Send` here either (see provisioning).
        let handle = tokio::runtime::Handle::current();
        let drifted = tokio::task::spawn_blocking(move || {
            handle.block_on(postgres::observe_provisioned(&admin, &wanted))
        })
        .await
        .map_err(fail)?
        .map_err(fail)?;
        Ok(drifted.into_iter().map(|(index, reason)| (provisioned[index].0.clone(), reason)).collect())
    }

    async fn drop_database(&self, role: &str, database: &str) -> Result<(), String> {
        let admin = self
            .database
            .clone()
            .ok_or_else(|| "no database admin credentials (the plan has no database step left)".to_owned())?;
        let role = Identifier::new("role", role).map_err(|e| e.to_string())?;
        let database = Identifier::new("database", database).map_err(|e| e.to_string())?;
        // sqlx's futures are not provably `Send` here either (see provisioning).
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(postgres::drop_provisioned(&admin, &role, &database))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| StepError::from_error(&e).rendered())
    }
}

impl Driver for ClusterDriver {
    fn run<'a>(
        &'a self,
        step: &'a Step,
        phase: PhaseReporter,
    ) -> BoxFuture<'a, Result<StepOutput, StepError>> {
        Box::pin(self.run_step(step, phase))
    }

    fn observer(&self) -> Option<&dyn Observer> {
        Some(self)
    }

    /// Adds what the whole plan produces to the environment's inventory (written only when
    /// that changes it), so that a run cut short still knows what it may have created.
    fn prepare<'a>(
        &'a self,
        whole: &'a crate::plan::Plan,
        lineage: &'a str,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            self.run.lock().expect("not poisoned").lineage = Some(lineage.to_owned());
            let Some(namespace) = kube::inventory_namespace(whole) else { return Ok(()) };
            let stored = self.inventory(namespace).await.map_err(fail)?;
            let mut items = stored.as_ref().map(|i| i.items.clone()).unwrap_or_default();
            items.extend(kube::owned_by(whole));
            let noted = self.run.lock().expect("not poisoned").noted_change.clone();
            let mut inventory = kube::Inventory::new(&whole.environment, Some(lineage.to_owned()), items)
                .keeping_last_change(stored.as_ref());
            if noted.is_some() {
                inventory.last_change = noted;
            }
            if stored.as_ref() != Some(&inventory) {
                // The key store's namespace may not exist yet on a first deploy: the inventory
                // is written once the run has created it (clean_up).
                match kube::write_inventory(&self.client, namespace, &inventory).await {
                    Ok(()) => self.run.lock().expect("not poisoned").inventory = Some(Some(inventory)),
                    Err(kube::KubeError::Api { code: 404, .. }) if stored.is_none() => {}
                    Err(error) => return Err(fail(error)),
                }
            }
            Ok(())
        })
    }

    /// Removes what the inventory lists and the plan no longer produces: releases with `helm
    /// uninstall`, objects by DELETE; namespaces, databases and releases that provide CRDs are
    /// retained and let go. Then stores the inventory of what is left.
    fn clean_up<'a>(&'a self, plan: &'a crate::plan::Plan) -> BoxFuture<'a, Vec<Cleanup>> {
        Box::pin(async move {
            let Some(namespace) = kube::inventory_namespace(plan) else { return Vec::new() };
            let stored = match self.inventory(namespace).await {
                Ok(stored) => stored,
                Err(error) => {
                    let path = format!("secret {namespace}/{}", kube::INVENTORY_SECRET);
                    return vec![Cleanup::NotRemoved { path, error: error.to_string() }];
                }
            };
            let produced = kube::owned_by(plan);
            let stale: Vec<kube::Owned> = stored
                .iter()
                .flat_map(|i| i.items.iter())
                .filter(|o| !produced.contains(*o))
                .cloned()
                .collect();
            let mut cleanups = Vec::new();
            let mut kept = kube::owned_by(plan);
            // Releases first (they may own the objects), in reverse of the inventory's order.
            for owned in stale.iter().rev() {
                let item = owned.describe();
                let pruned = self.prune_databases && matches!(owned, kube::Owned::Database { .. });
                if let Some(reason) = owned.retained_because().filter(|_| !pruned) {
                    cleanups.push(Cleanup::Retained { path: item, reason });
                    continue;
                }
                let result = match owned {
                    kube::Owned::Database { database, role } => self.drop_database(role, database).await,
                    kube::Owned::HelmRelease { namespace, name, .. } => {
                        let context = self.helm.clone();
                        let release = Release { name: name.clone(), namespace: namespace.clone() };
                        tokio::task::spawn_blocking(move || {
                            helm::uninstall(&context, &release, Duration::from_secs(300))
                        })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| StepError::from_error(&e).rendered()))
                    }
                    _ => kube::delete_object(&self.client, owned).await.map_err(|e| fail(e).rendered()),
                };
                match result {
                    Ok(()) => cleanups.push(Cleanup::Removed { path: item }),
                    Err(error) => {
                        kept.insert(owned.clone());
                        cleanups.push(Cleanup::NotRemoved { path: item, error });
                    }
                }
            }
            let lineage = self.run.lock().expect("not poisoned").lineage.clone();
            let mut inventory =
                kube::Inventory::new(&plan.environment, lineage, kept).keeping_last_change(stored.as_ref());
            // A first deploy could not write the inventory in `prepare` (its namespace did not
            // exist yet): this write carries who changed the environment.
            if let Some(noted) = self.run.lock().expect("not poisoned").noted_change.clone() {
                inventory.last_change = Some(noted);
            }
            if stored.as_ref() != Some(&inventory) {
                match kube::write_inventory(&self.client, namespace, &inventory).await {
                    Ok(()) => self.run.lock().expect("not poisoned").inventory = Some(Some(inventory)),
                    Err(error) => {
                        let path = format!("secret {namespace}/{}", kube::INVENTORY_SECRET);
                        cleanups.push(Cleanup::NotRemoved { path, error: error.to_string() });
                    }
                }
            }
            cleanups
        })
    }

    /// Keeps who changed the environment in the inventory `prepare` writes (which writes it
    /// only when it changes: a deploy with nothing to do makes no write).
    fn note_change(&self, record: &crate::change_record::ChangeRecord) {
        self.run.lock().expect("not poisoned").noted_change = Some(record.clone());
    }
}

impl Observer for ClusterDriver {
    fn observe<'a>(
        &'a self,
        whole: &'a crate::plan::Plan,
        steps: &'a [&'a Step],
        recorded: &'a std::collections::BTreeMap<String, StepRecord>,
    ) -> BoxFuture<'a, Result<Found, StepError>> {
        Box::pin(async move {
            let inventory = kube::read_environment_inventory(&self.client, whole).await.map_err(fail)?;
            let mut found = kube::observe_cluster(&self.client, whole, steps, recorded, inventory.as_ref())
                .await
                .map_err(fail)?;
            self.run.lock().expect("not poisoned").inventory = Some(inventory);
            for (step, reason) in self.observe_databases(steps).await? {
                found.drifted.entry(step).or_insert(reason);
            }
            Ok(found)
        })
    }
}
