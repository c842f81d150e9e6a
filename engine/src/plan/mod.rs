//! The plan: a verified, deterministic DAG of typed steps. A plan is a value: the same inputs
//! give a byte-identical serialized plan. `plan` prints it, `deploy` executes it, and both come
//! from the same compiler; nothing executes a plan that [`Plan::verify`] rejects.

pub mod diff;
pub mod document;
pub mod fingerprint;
pub mod graph;
pub mod markdown;
pub mod observed;
pub mod render;
pub mod review;

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

pub use fingerprint::{FINGERPRINT_FORMAT, fingerprint, fingerprint_format, legacy_fingerprint};

use crate::values::Values;

/// The version of the plan's JSON schema (see ARCHITECTURE.md, "Plan JSON").
pub const PLAN_FORMAT: u32 = 1;

/// What one step does. Each variant carries everything that can change its effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Checks of the target before anything changes it.
    Preflight {
        /// The newest Kubernetes minor version the platform supports.
        #[serde(skip_serializing_if = "Option::is_none")]
        max_kubernetes_version: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        storage_class: Option<String>,
        /// CustomResourceDefinitions the cluster must already have: the plan creates objects
        /// of them and none of its releases installs them.
        crds: Vec<String>,
        /// CustomResourceDefinitions a release of this plan installs: name -> component.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        provided: BTreeMap<String, String>,
        /// Of `crds`, those a component of the environment provides but this run (`--only`)
        /// leaves out: name -> component.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        outside_run: BTreeMap<String, String>,
    },
    /// PostgreSQL is reachable with the admin role and new enough.
    DatabasePreflight {
        host: String,
        port: u16,
        admin_user: String,
        min_server_version: u32,
        admin_password: Values,
    },
    /// A namespace with its labels and annotations.
    EnsureNamespace { name: String, labels: BTreeMap<String, String>, annotations: BTreeMap<String, String> },
    /// A Kubernetes Secret with a component's secrets (database credentials, keys).
    ApplySecret { namespace: String, name: String, labels: BTreeMap<String, String>, data: Values },
    /// A role and a database owned by it.
    ProvisionDatabase {
        host: String,
        port: u16,
        role: String,
        database: String,
        connection_limit: i32,
        password: Values,
    },
    /// Kubernetes objects, applied with server-side apply.
    ApplyObjects {
        namespace: String,
        objects: Values,
        /// CustomResourceDefinitions that must be `Established` before the objects are applied.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        wait_for_crds: Vec<String>,
    },
    /// `helm upgrade --install` with the merged values on stdin.
    HelmRelease { release: String, namespace: String, chart: ChartSpec, values: Values, timeout_seconds: u32 },
    /// Wait until the release's Deployments and StatefulSets are available.
    WaitReady { namespace: String, selector: String, timeout_seconds: u32 },
    /// Keep the environment's age key pair in the key store.
    StoreKey { namespace: String, secret_name: String, recipients: Vec<String> },
}

impl Action {
    /// Whether the step checks the effect of the steps it depends on (the readiness wait of a
    /// release), so it runs whenever one of them ran, whatever the journal says: a release
    /// upgraded or repaired is waited for again, and its workloads are recorded anew.
    pub fn follows_its_dependencies(&self) -> bool {
        matches!(self, Action::WaitReady { .. })
    }

    /// The short name used in step ids.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Preflight { .. } => "preflight",
            Action::DatabasePreflight { .. } => "preflight",
            Action::EnsureNamespace { .. } => "namespace",
            Action::ApplySecret { .. } => "secret",
            Action::ProvisionDatabase { .. } => "database",
            Action::ApplyObjects { .. } => "apply",
            Action::HelmRelease { .. } => "release",
            Action::WaitReady { .. } => "ready",
            Action::StoreKey { .. } => "store-key",
        }
    }

    /// The values the step carries, for diffs.
    pub fn values(&self) -> Option<&Values> {
        match self {
            Action::ApplySecret { data, .. } => Some(data),
            Action::ApplyObjects { objects, .. } => Some(objects),
            Action::HelmRelease { values, .. } => Some(values),
            Action::ProvisionDatabase { password, .. } => Some(password),
            Action::DatabasePreflight { admin_password, .. } => Some(admin_password),
            _ => None,
        }
    }

    /// The step writes secrets that a `directory` target encrypts for the recipients.
    pub fn encrypts(&self) -> bool {
        match self {
            Action::ApplySecret { .. } => true,
            Action::ApplyObjects { objects: values, .. } | Action::HelmRelease { values, .. } => {
                !values.sensitive().is_empty()
            }
            _ => false,
        }
    }

    /// Every secret this step would send somewhere is decrypted.
    pub fn is_complete(&self) -> bool {
        self.values().is_none_or(Values::is_complete)
    }
}

/// A chart, resolved for this environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChartSpec {
    /// What helm is given: `oci://...`, a repository chart name, or a local path.
    pub reference: String,
    /// `--repo URL` for classic chart repositories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub version: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// `<namespace>/<component>/<step>`; environment-wide steps use `environment/<env>/<step>`
    /// and namespaces `<namespace>/namespace/ensure`.
    pub id: String,
    /// The component (`namespace/component`) the step belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    pub action: Action,
    /// Ids of the steps this one waits for, sorted.
    pub depends_on: Vec<String>,
    /// `<format>:<SHA-256 hex>` over the target and the action (secrets by keyed digest only);
    /// see [`fingerprint`].
    pub fingerprint: String,
}

/// Where the plan deploys to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetSpec {
    Directory {
        path: String,
        /// The age recipients bundle secrets are encrypted for (sorted): part of the
        /// fingerprint of every step that encrypts, so a new key re-encrypts the bundle.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recipients: Vec<String>,
    },
    Kube {
        context: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        kubeconfig: Option<String>,
    },
    /// A tree Flux reconciles. Every field is part of every step's fingerprint (the recipients
    /// too: a database Job's Secret is encrypted as well).
    Flux {
        path: String,
        recipients: Vec<String>,
        namespace: String,
        git_repository: String,
        /// `external` or `job`.
        databases: String,
        decryption_secret: String,
        psql_image: String,
        /// libpq's `sslmode` for the database Jobs (env.toml's `database.sslmode`).
        sslmode: String,
    },
}

/// A compiled environment.
#[derive(Debug, Clone)]
pub struct Plan {
    pub environment: String,
    pub protected: bool,
    pub target: TargetSpec,
    /// Whether the secrets were decrypted (`true`) or known only by their ciphertexts.
    pub secrets_decrypted: bool,
    graph: DiGraph<Step, ()>,
    order: Vec<NodeIndex>,
    /// Step id -> node, so lookups stay O(log n) on large plans.
    index: BTreeMap<String, NodeIndex>,
}

/// Why a plan is not fit to execute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("duplicate step id `{0}`")]
    DuplicateStep(String),
    #[error("step `{step}` depends on unknown step `{dependency}`")]
    UnknownDependency { step: String, dependency: String },
    #[error("the steps form a cycle through `{0}`")]
    Cycle(String),
    #[error("step `{0}` has a fingerprint that does not match its content")]
    FingerprintMismatch(String),
    #[error("`{0}` is not a component of the plan")]
    UnknownComponent(String),
}

impl Plan {
    /// Builds a plan from steps (in any order) and verifies it.
    pub fn new(
        environment: String,
        protected: bool,
        target: TargetSpec,
        secrets_decrypted: bool,
        steps: Vec<Step>,
    ) -> Result<Plan, PlanError> {
        let plan = Plan::build(environment, protected, target, secrets_decrypted, steps)?;
        plan.verify()?;
        Ok(plan)
    }

    /// Builds a plan from freshly compiled steps: each step's fingerprint is computed here
    /// (whatever the field held), so there is nothing to verify but the graph. Executing the
    /// plan still verifies every fingerprint ([`Plan::verify`]).
    pub fn compiled(
        environment: String,
        protected: bool,
        target: TargetSpec,
        secrets_decrypted: bool,
        mut steps: Vec<Step>,
    ) -> Result<Plan, PlanError> {
        for step in &mut steps {
            step.fingerprint = fingerprint(&target, &step.action);
        }
        Plan::build(environment, protected, target, secrets_decrypted, steps)
    }

    /// The graph of `steps`, in deterministic order; acyclic with known dependencies.
    fn build(
        environment: String,
        protected: bool,
        target: TargetSpec,
        secrets_decrypted: bool,
        steps: Vec<Step>,
    ) -> Result<Plan, PlanError> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        let mut steps = steps;
        steps.sort_by(|a, b| a.id.cmp(&b.id));
        for step in steps {
            let id = step.id.clone();
            let node = graph.add_node(step);
            if index.insert(id.clone(), node).is_some() {
                return Err(PlanError::DuplicateStep(id));
            }
        }
        for node in graph.node_indices().collect::<Vec<_>>() {
            for dependency in graph[node].depends_on.clone() {
                let Some(&from) = index.get(&dependency) else {
                    return Err(PlanError::UnknownDependency { step: graph[node].id.clone(), dependency });
                };
                graph.add_edge(from, node, ());
            }
        }
        let order = topological_order(&graph)?;
        Ok(Plan { environment, protected, target, secrets_decrypted, graph, order, index })
    }

    /// Checks that the plan is executable: acyclic, dependencies known, fingerprints true.
    pub fn verify(&self) -> Result<(), PlanError> {
        topological_order(&self.graph)?;
        for step in self.steps() {
            if fingerprint(&self.target, &step.action) != step.fingerprint {
                return Err(PlanError::FingerprintMismatch(step.id.clone()));
            }
        }
        Ok(())
    }

    /// The steps in execution order (ties broken by id, so the order is deterministic).
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.order.iter().map(|node| &self.graph[*node])
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|node| &self.graph[*node])
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The DAG itself, for the scheduler and `graph`.
    pub fn graph(&self) -> &DiGraph<Step, ()> {
        &self.graph
    }

    /// Components (`namespace/component`) in the plan, sorted.
    pub fn components(&self) -> BTreeSet<&str> {
        self.steps().filter_map(|s| s.component.as_deref()).collect()
    }

    /// Only the steps of `components` and everything they depend on.
    pub fn restrict_to(&self, components: &[String]) -> Result<Plan, PlanError> {
        // `component` or `namespace/component`.
        let matches = |wanted: &str, component: &str| {
            component == wanted || component.rsplit_once('/').is_some_and(|(_, name)| name == wanted)
        };
        let known = self.components();
        if let Some(unknown) = components.iter().find(|w| !known.iter().any(|c| matches(w, c))) {
            return Err(PlanError::UnknownComponent(unknown.clone()));
        }
        let mut keep: BTreeSet<String> = self
            .steps()
            .filter(|s| s.component.as_ref().is_some_and(|c| components.iter().any(|w| matches(w, c))))
            .map(|s| s.id.clone())
            .collect();
        let mut frontier: Vec<String> = keep.iter().cloned().collect();
        while let Some(id) = frontier.pop() {
            if let Some(step) = self.step(&id) {
                for dep in &step.depends_on {
                    if keep.insert(dep.clone()) {
                        frontier.push(dep.clone());
                    }
                }
            }
        }
        let kept: Vec<&Step> = self.steps().filter(|s| keep.contains(&s.id)).collect();
        let kept_components: BTreeSet<&str> = kept.iter().filter_map(|s| s.component.as_deref()).collect();
        let needed: BTreeSet<&str> = kept
            .iter()
            .flat_map(|s| match &s.action {
                Action::ApplyObjects { wait_for_crds, .. } => {
                    wait_for_crds.iter().map(String::as_str).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let steps = kept
            .iter()
            .map(|step| match &step.action {
                Action::Preflight { max_kubernetes_version, storage_class, crds, provided, outside_run } => {
                    // A provider this run leaves out installs nothing now: what the run needs of
                    // its CRDs must already be in the cluster, and the preflight says why.
                    let mut crds = crds.clone();
                    let mut outside_run = outside_run.clone();
                    let mut still_provided = BTreeMap::new();
                    for (crd, provider) in provided {
                        if kept_components.contains(provider.as_str()) {
                            still_provided.insert(crd.clone(), provider.clone());
                        } else if needed.contains(crd.as_str()) {
                            crds.push(crd.clone());
                            outside_run.insert(crd.clone(), provider.clone());
                        }
                    }
                    crds.sort();
                    crds.dedup();
                    let action = Action::Preflight {
                        max_kubernetes_version: max_kubernetes_version.clone(),
                        storage_class: storage_class.clone(),
                        crds,
                        provided: still_provided,
                        outside_run,
                    };
                    Step { fingerprint: fingerprint(&self.target, &action), action, ..(*step).clone() }
                }
                _ => (*step).clone(),
            })
            .collect();
        Plan::new(
            self.environment.clone(),
            self.protected,
            self.target.clone(),
            self.secrets_decrypted,
            steps,
        )
    }

    /// Whether every secret is decrypted, so the plan can be executed.
    pub fn is_executable(&self) -> bool {
        self.steps().all(|s| s.action.is_complete())
    }

    /// The plan as its documented JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(document::PlanDocument::new(self)).expect("a plan serializes")
    }
}

fn topological_order(graph: &DiGraph<Step, ()>) -> Result<Vec<NodeIndex>, PlanError> {
    let mut in_degree: BTreeMap<NodeIndex, usize> =
        graph.node_indices().map(|n| (n, graph.neighbors_directed(n, petgraph::Incoming).count())).collect();
    let mut ready: BTreeSet<(String, NodeIndex)> =
        in_degree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| (graph[*n].id.clone(), *n)).collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some((id, node)) = ready.pop_first() {
        let _ = id;
        order.push(node);
        for next in graph.neighbors_directed(node, petgraph::Outgoing) {
            let degree = in_degree.get_mut(&next).expect("every node has a degree");
            *degree -= 1;
            if *degree == 0 {
                ready.insert((graph[next].id.clone(), next));
            }
        }
    }
    if order.len() != graph.node_count() {
        let stuck =
            in_degree.iter().find(|(_, d)| **d > 0).map(|(n, _)| graph[*n].id.clone()).unwrap_or_default();
        return Err(PlanError::Cycle(stuck));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetSpec {
        TargetSpec::Kube { context: "staging".into(), kubeconfig: None }
    }

    fn step(id: &str, component: Option<&str>, action: Action, depends_on: &[&str]) -> Step {
        Step {
            id: id.into(),
            component: component.map(str::to_owned),
            fingerprint: fingerprint(&target(), &action),
            action,
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    /// A preflight whose CRD `components.dapr.io` is installed by `opus-system/dapr`, and a
    /// pub/sub that needs it; `pubsub_waits` says whether pub/sub depends on the release.
    fn plan(pubsub_waits: bool) -> Plan {
        let preflight = Action::Preflight {
            max_kubernetes_version: Some("1.30".into()),
            storage_class: None,
            crds: vec![],
            provided: [("components.dapr.io".to_owned(), "opus-system/dapr".to_owned())].into(),
            outside_run: BTreeMap::new(),
        };
        let release =
            Action::WaitReady { namespace: "opus-system".into(), selector: "a=b".into(), timeout_seconds: 1 };
        let apply = Action::ApplyObjects {
            namespace: "opus".into(),
            objects: Values::default(),
            wait_for_crds: vec!["components.dapr.io".into()],
        };
        let apply_deps: &[&str] = if pubsub_waits {
            &["environment/e/preflight", "opus-system/dapr/ready"]
        } else {
            &["environment/e/preflight"]
        };
        let steps = vec![
            step("environment/e/preflight", None, preflight, &[]),
            step("opus-system/dapr/ready", Some("opus-system/dapr"), release, &["environment/e/preflight"]),
            step("opus/pubsub/apply", Some("opus/pubsub"), apply, apply_deps),
        ];
        Plan::new("e".into(), false, target(), true, steps).unwrap()
    }

    fn preflight_of(plan: &Plan) -> (Vec<String>, BTreeMap<String, String>, BTreeMap<String, String>) {
        match &plan.step("environment/e/preflight").unwrap().action {
            Action::Preflight { crds, provided, outside_run, .. } => {
                (crds.clone(), provided.clone(), outside_run.clone())
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_run_that_keeps_the_provider_still_lets_it_install_the_crd() {
        let restricted = plan(true).restrict_to(&["pubsub".to_owned()]).unwrap();
        let (crds, provided, outside_run) = preflight_of(&restricted);
        assert!(crds.is_empty() && outside_run.is_empty());
        assert_eq!(provided.get("components.dapr.io").map(String::as_str), Some("opus-system/dapr"));
    }

    #[test]
    fn a_provider_left_out_of_the_run_makes_the_preflight_require_its_crd() {
        let restricted = plan(false).restrict_to(&["pubsub".to_owned()]).unwrap();
        assert!(restricted.step("opus-system/dapr/ready").is_none());
        let (crds, provided, outside_run) = preflight_of(&restricted);
        assert_eq!(crds, ["components.dapr.io"]);
        assert!(provided.is_empty());
        assert_eq!(outside_run.get("components.dapr.io").map(String::as_str), Some("opus-system/dapr"));
        restricted.verify().expect("the rewritten preflight has a true fingerprint");
    }
}
