//! Where everything goes in a Flux tree: the files each step writes, the Flux `Kustomization`
//! ("group") each file belongs to, the order between groups (from the plan's DAG), and the
//! Helm releases each release depends on. A pure function of the plan and the settings, so
//! the driver, the refresh and the tests compute the same tree.
//!
//! ```text
//! flux-system/          the entry: kustomization.yaml, entry.yaml (the root Kustomization),
//!                       sources/*.yaml (HelmRepositories), kustomizations/*.yaml
//! namespaces/           Namespace objects (pruning disabled: namespaces are retained)
//! databases/            `databases = "job"`: one Job per database and its SOPS Secrets
//! apps/<ns>/            Secrets, HelmReleases (+ their values Secrets), objects
//! apps/<ns>/after-releases/   objects of CRDs a release installs (cert-manager's ClusterIssuer)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{Action, Plan, Step, TargetSpec};

/// The flux target's settings, from its [`TargetSpec::Flux`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluxSettings {
    pub environment: String,
    /// The tree's folder relative to the repository root (the GitRepository's root).
    pub path: String,
    pub namespace: String,
    pub git_repository: String,
    pub jobs: bool,
    pub decryption_secret: String,
    pub psql_image: String,
    pub sslmode: String,
}

impl FluxSettings {
    /// The settings of a flux plan; `None` for another target.
    pub fn of(plan: &Plan) -> Option<FluxSettings> {
        let TargetSpec::Flux {
            path,
            namespace,
            git_repository,
            databases,
            decryption_secret,
            psql_image,
            sslmode,
            ..
        } = &plan.target
        else {
            return None;
        };
        Some(FluxSettings {
            environment: plan.environment.clone(),
            path: path.trim_end_matches('/').to_owned(),
            namespace: namespace.clone(),
            git_repository: git_repository.clone(),
            jobs: databases == "job",
            decryption_secret: decryption_secret.clone(),
            psql_image: psql_image.clone(),
            sslmode: sslmode.clone(),
        })
    }
}

/// A Flux `Kustomization` of the tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Namespaces,
    Databases,
    Namespace(String),
    AfterReleases(String),
}

impl Group {
    /// The folder, relative to the tree.
    pub fn folder(&self) -> String {
        match self {
            Group::Namespaces => "namespaces".to_owned(),
            Group::Databases => "databases".to_owned(),
            Group::Namespace(ns) => format!("apps/{ns}"),
            Group::AfterReleases(ns) => format!("apps/{ns}/after-releases"),
        }
    }

    /// The Kustomization's name: `<env>-<group>`.
    pub fn name(&self, environment: &str) -> String {
        match self {
            Group::Namespaces => format!("{environment}-namespaces"),
            Group::Databases => format!("{environment}-databases"),
            Group::Namespace(ns) => format!("{environment}-{ns}"),
            Group::AfterReleases(ns) => format!("{environment}-{ns}-after-releases"),
        }
    }
}

/// The group of a step, if it writes into one (`None`: environment-wide checks, the key
/// store, and databases the deploy provisions itself).
pub fn group_of(step: &Step, settings: &FluxSettings) -> Option<Group> {
    match &step.action {
        Action::EnsureNamespace { .. } => Some(Group::Namespaces),
        Action::ApplySecret { namespace, .. }
        | Action::HelmRelease { namespace, .. }
        | Action::WaitReady { namespace, .. } => Some(Group::Namespace(namespace.clone())),
        Action::ApplyObjects { namespace, wait_for_crds, .. } if !wait_for_crds.is_empty() => {
            Some(Group::AfterReleases(namespace.clone()))
        }
        Action::ApplyObjects { namespace, .. } => Some(Group::Namespace(namespace.clone())),
        Action::ProvisionDatabase { .. } | Action::DatabasePreflight { .. } if settings.jobs => {
            Some(Group::Databases)
        }
        Action::ProvisionDatabase { .. }
        | Action::DatabasePreflight { .. }
        | Action::Preflight { .. }
        | Action::StoreKey { .. } => None,
    }
}

/// The last segment of a component id (`opus/oob-consent` -> `oob-consent`).
fn component_name(step: &Step) -> &str {
    step.component.as_deref().and_then(|c| c.rsplit('/').next()).unwrap_or("objects")
}

/// The file of the database Jobs' admin connection Secret.
pub const ADMIN_FILE: &str = "database-admin.enc.yaml";

/// A DNS-1123 name of at most 63 characters: a longer one is cut and keeps a digest of the
/// whole, so two long names stay apart.
pub fn bounded_name(name: &str) -> String {
    use sha2::{Digest, Sha256};
    if name.len() <= 63 {
        return name.to_owned();
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..5]);
    format!("{}-{digest}", name[..52].trim_end_matches('-'))
}

impl FluxSettings {
    /// The database Jobs' admin connection Secret (in the Flux namespace, which several
    /// environments of one cluster may share: hence the environment's name).
    pub fn admin_secret(&self) -> String {
        bounded_name(&format!("{}-database-admin", self.environment))
    }
}

/// The DNS-1123 form of a PostgreSQL identifier (`api_consent` -> `api-consent`).
pub fn dns_name(text: &str) -> String {
    text.replace('_', "-")
}

/// The files a step writes, relative to the tree.
pub fn files_of(step: &Step, settings: &FluxSettings) -> Vec<String> {
    let Some(group) = group_of(step, settings) else {
        return match step.action {
            Action::Preflight { .. } => vec![".opus-bundle".to_owned()],
            _ => Vec::new(),
        };
    };
    let folder = group.folder();
    match &step.action {
        Action::EnsureNamespace { name, .. } => vec![format!("{folder}/{name}.yaml")],
        Action::ApplySecret { name, .. } => vec![format!("{folder}/secrets/{name}.enc.yaml")],
        Action::HelmRelease { release, values, .. } => {
            let mut files = vec![format!("{folder}/releases/{release}.yaml")];
            if !values.sensitive().is_empty() {
                files.push(format!("{folder}/releases/{release}.values.enc.yaml"));
            }
            files
        }
        Action::ApplyObjects { objects, .. } => {
            let component = component_name(step);
            if objects.sensitive().is_empty() {
                vec![format!("{folder}/objects/{component}.yaml")]
            } else {
                // One file per object: each is a SOPS document of its own.
                let count = objects.shown().as_array().map_or(1, Vec::len);
                (0..count).map(|i| format!("{folder}/objects/{component}-{i}.enc.yaml")).collect()
            }
        }
        Action::ProvisionDatabase { database, .. } => {
            let name = dns_name(database);
            vec![format!("{folder}/{name}.job.yaml"), format!("{folder}/{name}.enc.yaml")]
        }
        Action::DatabasePreflight { .. } => vec![format!("{folder}/{ADMIN_FILE}")],
        Action::WaitReady { .. } | Action::Preflight { .. } | Action::StoreKey { .. } => Vec::new(),
    }
}

/// One group of the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLayout {
    /// The files of its steps, sorted (what its kustomization.yaml lists).
    pub files: Vec<String>,
    pub depends_on: BTreeSet<Group>,
    /// The health-check timeout: the longest chain of readiness timeouts of its releases.
    pub timeout_seconds: u32,
    pub holds_secrets: bool,
}

/// The whole tree's layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub groups: BTreeMap<Group, GroupLayout>,
    /// Release step id -> the releases (name, namespace) it depends on, sorted.
    pub release_dependencies: BTreeMap<String, Vec<(String, String)>>,
    /// The oldest PostgreSQL major version the plan accepts (its database preflight's), which
    /// each database Job checks first.
    pub min_server_version: Option<u32>,
}

/// Why a plan cannot be laid out as a Flux tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the flux target orders whole namespaces, and these Kustomizations depend on each other: {}; move the components so that namespaces depend one way",
    cycle.join(", ")
)]
pub struct GroupCycle {
    pub cycle: Vec<String>,
}

/// The timeout of a group without releases (namespaces, objects, Jobs).
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;

/// Lays out the plan.
pub fn layout(plan: &Plan, settings: &FluxSettings) -> Result<Layout, GroupCycle> {
    let mut out = Layout::default();
    let steps: BTreeMap<&str, &Step> = plan.steps().map(|s| (s.id.as_str(), s)).collect();
    // Per step: the groups and the releases below it, through steps without a group (or
    // without a release) — the plan is in dependency order, so dependencies come first.
    let mut groups_below: BTreeMap<&str, BTreeSet<Group>> = BTreeMap::new();
    let mut releases_below: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    // A release's own readiness timeout (its WaitReady's, else its helm timeout).
    let mut readiness: BTreeMap<(String, String), u32> = BTreeMap::new();
    for step in plan.steps() {
        if let Action::HelmRelease { release, namespace, timeout_seconds, .. } = &step.action {
            readiness.entry((release.clone(), namespace.clone())).or_insert(*timeout_seconds);
        }
        let mut groups = BTreeSet::new();
        let mut releases = BTreeSet::new();
        for dep in &step.depends_on {
            let Some(dep_step) = steps.get(dep.as_str()) else { continue };
            match group_of(dep_step, settings) {
                Some(group) => {
                    groups.insert(group);
                }
                None => groups.extend(groups_below.get(dep.as_str()).cloned().unwrap_or_default()),
            }
            match &dep_step.action {
                Action::HelmRelease { release, namespace, .. } => {
                    releases.insert((release.clone(), namespace.clone()));
                }
                _ => releases.extend(releases_below.get(dep.as_str()).cloned().unwrap_or_default()),
            }
        }
        if let Action::WaitReady { namespace, timeout_seconds, .. } = &step.action
            && let Some((release, _)) = releases.iter().find(|(_, ns)| ns == namespace)
        {
            readiness.insert((release.clone(), namespace.clone()), *timeout_seconds);
        }
        if let Action::DatabasePreflight { min_server_version, .. } = &step.action {
            out.min_server_version = Some(*min_server_version);
        }
        if let Some(group) = group_of(step, settings) {
            let entry = out.groups.entry(group.clone()).or_default();
            entry.files.extend(files_of(step, settings));
            entry.holds_secrets |= files_of(step, settings).iter().any(|f| f.ends_with(".enc.yaml"));
            // Database Jobs connect to PostgreSQL only: they wait for nothing in the cluster.
            if group != Group::Databases {
                entry.depends_on.extend(groups.iter().filter(|g| **g != group).cloned());
            }
        }
        if matches!(step.action, Action::HelmRelease { .. }) {
            out.release_dependencies.insert(step.id.clone(), releases.iter().cloned().collect());
        }
        groups_below.insert(step.id.as_str(), groups);
        releases_below.insert(step.id.as_str(), releases);
    }
    // Timeouts: the longest chain of readiness timeouts through same-group releases.
    let mut chain: BTreeMap<(String, String), u32> = BTreeMap::new();
    for step in plan.steps() {
        let Action::HelmRelease { release, namespace, .. } = &step.action else { continue };
        let key = (release.clone(), namespace.clone());
        let own = readiness.get(&key).copied().unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let longest_dep = out.release_dependencies[&step.id]
            .iter()
            .filter(|(_, ns)| ns == namespace)
            .filter_map(|dep| chain.get(dep))
            .max()
            .copied()
            .unwrap_or(0);
        let total = own.saturating_add(longest_dep);
        chain.insert(key, total);
        if let Some(group) = group_of(step, settings).and_then(|g| out.groups.get_mut(&g)) {
            group.timeout_seconds = group.timeout_seconds.max(total);
        }
    }
    for group in out.groups.values_mut() {
        group.files.sort();
        group.files.dedup();
        if group.timeout_seconds == 0 {
            group.timeout_seconds = DEFAULT_TIMEOUT_SECONDS;
        }
    }
    check_acyclic(&out, settings)?;
    Ok(out)
}

/// Kahn's algorithm over the groups; what is left is in (or behind) a cycle.
fn check_acyclic(layout: &Layout, settings: &FluxSettings) -> Result<(), GroupCycle> {
    let mut waiting: BTreeMap<&Group, usize> = layout
        .groups
        .iter()
        .map(|(g, l)| (g, l.depends_on.iter().filter(|d| layout.groups.contains_key(*d)).count()))
        .collect();
    let mut ready: Vec<&Group> = waiting.iter().filter(|(_, n)| **n == 0).map(|(g, _)| *g).collect();
    while let Some(done) = ready.pop() {
        waiting.remove(done);
        for (group, group_layout) in &layout.groups {
            if group_layout.depends_on.contains(done)
                && let Some(count) = waiting.get_mut(group)
            {
                *count -= 1;
                if *count == 0 {
                    ready.push(group);
                }
            }
        }
    }
    if waiting.is_empty() {
        return Ok(());
    }
    Err(GroupCycle { cycle: waiting.keys().map(|g| g.name(&settings.environment)).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ChartSpec, fingerprint};
    use crate::values::Values;

    fn target(databases: &str) -> TargetSpec {
        TargetSpec::Flux {
            path: "bundle/t".into(),
            recipients: vec![],
            namespace: "flux-system".into(),
            git_repository: "flux-system".into(),
            databases: databases.into(),
            decryption_secret: "sops-age".into(),
            psql_image: "postgres:16".into(),
            sslmode: "require".into(),
        }
    }

    fn step(id: &str, action: Action, depends_on: &[&str]) -> Step {
        let (namespace, component) = id.split_once('/').unwrap();
        let component = component.split('/').next().unwrap();
        Step {
            id: id.to_owned(),
            component: Some(format!("{namespace}/{component}")),
            fingerprint: fingerprint(&target("external"), &action),
            action,
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn release(name: &str, namespace: &str) -> Action {
        Action::HelmRelease {
            release: name.into(),
            namespace: namespace.into(),
            chart: ChartSpec {
                reference: "oci://r.example/charts/x".into(),
                repository: None,
                version: "1".into(),
            },
            values: Values::default(),
            timeout_seconds: 100,
        }
    }

    fn database() -> Action {
        Action::ProvisionDatabase {
            host: "db".into(),
            port: 5432,
            role: "r".into(),
            database: "d".into(),
            connection_limit: 10,
            password: Values::default(),
        }
    }

    fn plan(databases: &str, mut steps: Vec<Step>) -> (Plan, FluxSettings) {
        for step in &mut steps {
            step.fingerprint = fingerprint(&target(databases), &step.action);
        }
        let plan = Plan::new("t".into(), false, target(databases), true, steps).unwrap();
        let settings = FluxSettings::of(&plan).unwrap();
        (plan, settings)
    }

    #[test]
    fn namespaces_are_ordered_through_steps_that_write_nothing() {
        let steps = || {
            vec![
                step("a/x/release", release("x", "a"), &[]),
                step("b/y/database", database(), &["a/x/release"]),
                step("b/y/release", release("y", "b"), &["b/y/database"]),
                step("b/z/release", release("z", "b"), &["b/y/release"]),
            ]
        };
        let (external, settings) = plan("external", steps());
        let laid = layout(&external, &settings).unwrap();
        let b = &laid.groups[&Group::Namespace("b".into())];
        assert_eq!(b.depends_on, BTreeSet::from([Group::Namespace("a".into())]));
        // The chain y -> z in b: 100 + 100 seconds.
        assert_eq!(b.timeout_seconds, 200);
        assert_eq!(laid.release_dependencies["b/y/release"], vec![("x".to_owned(), "a".to_owned())]);
        assert!(!laid.groups.contains_key(&Group::Databases));

        // As Jobs, the database is a group of its own, which waits for nothing.
        let (jobs, settings) = plan("job", steps());
        let laid = layout(&jobs, &settings).unwrap();
        let b = &laid.groups[&Group::Namespace("b".into())];
        assert_eq!(b.depends_on, BTreeSet::from([Group::Databases]));
        assert!(laid.groups[&Group::Databases].depends_on.is_empty());
        assert_eq!(
            laid.groups[&Group::Databases].files,
            vec!["databases/d.enc.yaml", "databases/d.job.yaml"]
        );
    }

    #[test]
    fn namespaces_that_depend_on_each_other_are_refused_by_name() {
        let (cyclic, settings) = plan(
            "external",
            vec![
                step("a/x/release", release("x", "a"), &[]),
                step("b/y/release", release("y", "b"), &["a/x/release"]),
                step("a/w/release", release("w", "a"), &["b/y/release"]),
            ],
        );
        let error = layout(&cyclic, &settings).unwrap_err();
        assert_eq!(error.cycle, vec!["t-a", "t-b"]);
        assert!(error.to_string().contains("depend on each other: t-a, t-b"), "{error}");
    }
}
