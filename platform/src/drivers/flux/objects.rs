//! The Flux objects of the tree, as JSON: `HelmRelease` (helm.toolkit.fluxcd.io/v2), chart
//! sources (source.toolkit.fluxcd.io/v1 `HelmRepository`, or the configuration's own
//! `GitRepository` for local charts), `Kustomization` (kustomize.toolkit.fluxcd.io/v1), the
//! kustomize `kustomization.yaml` of each folder and the database Jobs. None of them holds a
//! secret: secrets go in the SOPS-encrypted Secrets they reference.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::layout::{FluxSettings, Group, GroupLayout, Layout, bounded_name, dns_name};
use crate::plan::ChartSpec;

/// How often Flux reconciles what it applied (and retries what failed).
pub const INTERVAL: &str = "10m";

/// Where a release's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartSource {
    /// A `HelmRepository` of the tree (`type: oci` for OCI registries).
    HelmRepository { name: String, url: String, oci: bool, chart: String },
    /// A chart folder of the configuration's own repository.
    Git { path: String },
}

/// The source of a chart.
pub fn chart_source(chart: &ChartSpec, settings: &FluxSettings) -> ChartSource {
    match &chart.repository {
        Some(url) => ChartSource::HelmRepository {
            name: source_name(&settings.environment, url),
            url: url.clone(),
            oci: url.starts_with("oci://"),
            chart: chart.reference.clone(),
        },
        None if chart.reference.starts_with("oci://") => {
            let (url, name) = chart.reference.rsplit_once('/').unwrap_or((&chart.reference, ""));
            ChartSource::HelmRepository {
                name: source_name(&settings.environment, url),
                url: url.to_owned(),
                oci: true,
                chart: name.to_owned(),
            }
        }
        None => ChartSource::Git { path: format!("./{}", chart.reference.trim_start_matches("./")) },
    }
}

/// `<env>-<host and path as a DNS label>`, at most 63 characters (a digest keeps long URLs
/// apart).
pub fn source_name(environment: &str, url: &str) -> String {
    let bare = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut name: String = format!("{environment}-{bare}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-').to_owned();
    if name.len() <= 63 {
        return name;
    }
    let digest = hex::encode(&Sha256::digest(url.as_bytes())[..4]);
    format!("{}-{digest}", name[..54].trim_end_matches('-'))
}

/// The `HelmRepository` object of a source.
pub fn helm_repository(name: &str, url: &str, oci: bool, settings: &FluxSettings) -> Json {
    let mut spec = json!({"url": url, "interval": INTERVAL});
    if oci {
        spec["type"] = json!("oci");
    }
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": name, "namespace": settings.namespace},
        "spec": spec,
    })
}

/// What a `HelmRelease` is made of.
pub struct ReleaseObject<'a> {
    pub release: &'a str,
    pub namespace: &'a str,
    pub chart: &'a ChartSpec,
    pub timeout_seconds: u32,
    /// The values without their secrets.
    pub values: &'a Json,
    /// The Secret holding the secret values (`values.yaml`), when there are any.
    pub values_secret: Option<&'a str>,
    pub depends_on: &'a [(String, String)],
}

/// The `HelmRelease`: `--atomic`'s behaviour as remediation (a failed install is
/// uninstalled, a failed upgrade rolled back, also after the last retry).
pub fn helm_release(object: &ReleaseObject<'_>, settings: &FluxSettings) -> Json {
    let chart_spec = match chart_source(object.chart, settings) {
        ChartSource::HelmRepository { name, chart, .. } => json!({
            "chart": chart,
            "version": object.chart.version,
            "sourceRef": {"kind": "HelmRepository", "name": name, "namespace": settings.namespace},
            "interval": INTERVAL,
        }),
        // A chart of the configuration: a new revision of the repository is a new chart
        // (the version in Chart.yaml need not change).
        ChartSource::Git { path } => json!({
            "chart": path,
            "reconcileStrategy": "Revision",
            "sourceRef": {"kind": "GitRepository", "name": settings.git_repository, "namespace": settings.namespace},
            "interval": INTERVAL,
        }),
    };
    let mut spec = json!({
        "interval": INTERVAL,
        "releaseName": object.release,
        "timeout": format!("{}s", object.timeout_seconds),
        "chart": {"spec": chart_spec},
        "install": {"remediation": {"retries": 3, "remediateLastFailure": true}},
        "upgrade": {
            "cleanupOnFail": true,
            "remediation": {"retries": 3, "remediateLastFailure": true, "strategy": "rollback"},
        },
    });
    if !object.depends_on.is_empty() {
        spec["dependsOn"] = object
            .depends_on
            .iter()
            .map(|(name, namespace)| json!({"name": name, "namespace": namespace}))
            .collect();
    }
    if object.values.as_object().is_some_and(|m| !m.is_empty()) {
        spec["values"] = object.values.clone();
    }
    if let Some(secret) = object.values_secret {
        spec["valuesFrom"] = json!([{"kind": "Secret", "name": secret, "valuesKey": VALUES_KEY}]);
    }
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": object.release, "namespace": object.namespace},
        "spec": spec,
    })
}

/// The key of a release's values Secret.
pub const VALUES_KEY: &str = "values.yaml";

/// The name of a release's values Secret.
pub fn values_secret_name(release: &str) -> String {
    format!("{release}-values")
}

/// The Flux `Kustomization` of a group.
pub fn kustomization(group: &Group, layout: &GroupLayout, settings: &FluxSettings) -> Json {
    let mut spec = json!({
        "interval": INTERVAL,
        "retryInterval": "2m",
        "path": format!("./{}/{}", settings.path, group.folder()),
        "prune": true,
        "wait": true,
        "timeout": format!("{}s", layout.timeout_seconds),
        "sourceRef": {"kind": "GitRepository", "name": settings.git_repository},
    });
    if !layout.depends_on.is_empty() {
        spec["dependsOn"] =
            layout.depends_on.iter().map(|dep| json!({"name": dep.name(&settings.environment)})).collect();
    }
    if layout.holds_secrets {
        spec["decryption"] = json!({"provider": "sops", "secretRef": {"name": settings.decryption_secret}});
    }
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": group.name(&settings.environment), "namespace": settings.namespace},
        "spec": spec,
    })
}

/// The root `Kustomization` (applied once by hand): it applies `flux-system/`, which holds
/// the sources and the other Kustomizations, so the tree manages itself from then on.
pub fn entry_kustomization(settings: &FluxSettings) -> Json {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": settings.environment, "namespace": settings.namespace},
        "spec": {
            "interval": INTERVAL,
            "path": format!("./{}/{ENTRY_FOLDER}", settings.path),
            "prune": true,
            "sourceRef": {"kind": "GitRepository", "name": settings.git_repository},
        },
    })
}

/// The entry folder.
pub const ENTRY_FOLDER: &str = "flux-system";

/// A kustomize `kustomization.yaml` listing `resources` (relative to `folder`).
pub fn kustomize_file(folder: &str, files: &[String]) -> Json {
    let prefix = format!("{folder}/");
    let resources: Vec<&str> = files.iter().filter_map(|f| f.strip_prefix(&prefix)).collect();
    json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    })
}

/// The files of `flux-system/`, relative to the tree, with their objects: the entry, the
/// sources the releases use, and one Kustomization per group.
pub fn entry_objects(
    layout: &Layout,
    charts: &[&ChartSpec],
    settings: &FluxSettings,
) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    out.insert(format!("{ENTRY_FOLDER}/entry.yaml"), entry_kustomization(settings));
    for chart in charts {
        if let ChartSource::HelmRepository { name, url, oci, .. } = chart_source(chart, settings) {
            let object = helm_repository(&name, &url, oci, settings);
            out.insert(format!("{ENTRY_FOLDER}/sources/{name}.yaml"), object);
        }
    }
    for (group, group_layout) in &layout.groups {
        let name = group.name(&settings.environment);
        out.insert(
            format!("{ENTRY_FOLDER}/kustomizations/{name}.yaml"),
            kustomization(group, group_layout, settings),
        );
    }
    out
}

/// A database Job's name: the environment, its database and a digest of the Job's inputs
/// (the provisioning step's fingerprint and the image), since a Job's template cannot change.
pub fn job_name(database: &str, fingerprint: &str, settings: &FluxSettings) -> String {
    let digest = Sha256::digest(format!("{fingerprint}\0{}", settings.psql_image).as_bytes());
    let base = bounded_name(&format!("{}-db-{}", settings.environment, dns_name(database)));
    let base = &base[..base.len().min(52)];
    format!("{}-{}", base.trim_end_matches('-'), &hex::encode(digest)[..10])
}

/// The Secret holding a database's provisioning script.
pub fn script_secret_name(database: &str, settings: &FluxSettings) -> String {
    bounded_name(&format!("{}-db-{}", settings.environment, dns_name(database)))
}

/// The key of the script in its Secret.
pub const SCRIPT_KEY: &str = "provision.sql";

/// The Job that runs `psql` with the admin connection (from the admin Secret's `PG*`
/// variables) and the provisioning script (from its own Secret).
pub fn database_job(database: &str, fingerprint: &str, settings: &FluxSettings) -> Json {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(database, fingerprint, settings),
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/managed-by": "opus-deploy", "opus.dev/database": dns_name(database)},
        },
        "spec": {
            "backoffLimit": 6,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "psql",
                        "image": settings.psql_image,
                        "command": ["psql", "--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--file", format!("/provision/{SCRIPT_KEY}")],
                        "envFrom": [{"secretRef": {"name": settings.admin_secret()}}],
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "provision", "mountPath": "/provision", "readOnly": true}],
                    }],
                    "volumes": [{"name": "provision", "secret": {"secretName": script_secret_name(database, settings)}}],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(environment: &str) -> FluxSettings {
        FluxSettings {
            environment: environment.into(),
            path: "clusters/x".into(),
            namespace: "flux-system".into(),
            git_repository: "flux-system".into(),
            jobs: true,
            decryption_secret: "sops-age".into(),
            psql_image: "postgres:16".into(),
            sslmode: "require".into(),
        }
    }

    #[test]
    fn job_names_are_dns_labels_that_change_with_their_inputs() {
        let short = settings("prod");
        let name = job_name("api_consent", "3:aa", &short);
        assert!(name.starts_with("prod-db-api-consent-"), "{name}");
        assert_ne!(name, job_name("api_consent", "3:ab", &short));
        let long = settings(&"e".repeat(60));
        for name in [job_name(&"d".repeat(63), "3:aa", &long), script_secret_name(&"d".repeat(63), &long)] {
            assert!(name.len() <= 63, "{name}");
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
        assert_ne!(
            script_secret_name(&format!("{}a", "d".repeat(62)), &long),
            script_secret_name(&format!("{}b", "d".repeat(62)), &long)
        );
    }

    #[test]
    fn charts_come_from_their_own_sources() {
        let s = settings("prod");
        let chart = |reference: &str, repository: Option<&str>| ChartSpec {
            reference: reference.into(),
            repository: repository.map(str::to_owned),
            version: "1.0.0".into(),
        };
        assert_eq!(
            chart_source(&chart("oci://registry.example/charts/oob-consent", None), &s),
            ChartSource::HelmRepository {
                name: "prod-registry-example-charts".into(),
                url: "oci://registry.example/charts".into(),
                oci: true,
                chart: "oob-consent".into(),
            }
        );
        assert_eq!(
            chart_source(&chart("dapr", Some("https://dapr.github.io/helm-charts")), &s),
            ChartSource::HelmRepository {
                name: "prod-dapr-github-io-helm-charts".into(),
                url: "https://dapr.github.io/helm-charts".into(),
                oci: false,
                chart: "dapr".into(),
            }
        );
        assert_eq!(
            chart_source(&chart("charts/opus-gateway-routes", None), &s),
            ChartSource::Git { path: "./charts/opus-gateway-routes".into() }
        );
    }
}
