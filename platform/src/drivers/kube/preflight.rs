//! Preflight checks that a cluster can host the platform before anything is changed: its
//! Kubernetes version is not newer than the platform supports, a StorageClass exists for the
//! components that persist data, and the custom resource definitions the plan uses (Dapr,
//! cert-manager) are installed. Each check is one function with its own typed result.

use std::fmt;

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams};

use super::{KubeError, client_error};
use crate::sensitive::Redactor;

/// A Kubernetes minor version such as 1.30.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterVersion {
    pub major: u32,
    pub minor: u32,
}

impl ClusterVersion {
    /// The newest Kubernetes version the platform supports today.
    pub const SUPPORTED_MAXIMUM: ClusterVersion = ClusterVersion { major: 1, minor: 30 };

    /// Reads the version from the `/version` fields. Providers decorate them (`minor: "30+"`
    /// on EKS and GKE), so only the leading digits count; when `major`/`minor` are unusable,
    /// `gitVersion` (`v1.30.2-eks-1552ad0`) is parsed instead.
    pub fn parse(major: &str, minor: &str, git_version: &str) -> Option<ClusterVersion> {
        if let (Some(major), Some(minor)) = (leading_number(major), leading_number(minor)) {
            return Some(ClusterVersion { major, minor });
        }
        let mut parts = git_version.trim().trim_start_matches('v').split('.');
        let major = leading_number(parts.next()?)?;
        let minor = leading_number(parts.next()?)?;
        Some(ClusterVersion { major, minor })
    }
}

impl fmt::Display for ClusterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

fn leading_number(text: &str) -> Option<u32> {
    let text = text.trim();
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text[..end].parse().ok()
}

/// Checks that the cluster's version is at most `maximum` and returns it.
pub async fn check_cluster_version(
    client: &Client,
    maximum: ClusterVersion,
) -> Result<ClusterVersion, KubeError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|error| client_error("read", "the cluster version", error, &Redactor::new()))?;
    let version = ClusterVersion::parse(&info.major, &info.minor, &info.git_version).ok_or_else(|| {
        KubeError::UnparsableVersion {
            version: format!(
                "major {:?}, minor {:?}, gitVersion {:?}",
                info.major, info.minor, info.git_version
            ),
        }
    })?;
    if version > maximum {
        let found = if info.git_version.is_empty() {
            version.to_string()
        } else {
            format!("{version} ({})", info.git_version)
        };
        return Err(KubeError::ClusterTooNew { found, maximum: maximum.to_string() });
    }
    Ok(version)
}

/// The StorageClass persistent volumes will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClassFound {
    pub name: String,
    pub is_default: bool,
}

/// Checks that the StorageClass named `wanted` exists or, when `wanted` is `None`, that one is
/// marked as the cluster's default.
pub async fn check_storage_class(
    client: &Client,
    wanted: Option<&str>,
) -> Result<StorageClassFound, KubeError> {
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|error| client_error("list", "storage classes", error, &Redactor::new()))?;
    let found: Vec<StorageClassFound> = classes
        .items
        .iter()
        .map(|class| StorageClassFound {
            name: class.metadata.name.clone().unwrap_or_default(),
            is_default: is_default_class(class),
        })
        .collect();
    let chosen = match wanted {
        Some(name) => found.iter().find(|class| class.name == name),
        None => found.iter().find(|class| class.is_default),
    };
    chosen.cloned().ok_or_else(|| KubeError::NoStorageClass {
        wanted: wanted.map(str::to_owned),
        available: found.into_iter().map(|class| class.name).collect(),
    })
}

fn is_default_class(class: &StorageClass) -> bool {
    const ANNOTATIONS: [&str; 2] =
        ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"];
    class.metadata.annotations.as_ref().is_some_and(|annotations| {
        ANNOTATIONS.iter().any(|key| annotations.get(*key).map(String::as_str) == Some("true"))
    })
}

/// Checks that every named CustomResourceDefinition (`components.dapr.io`) is installed and
/// lists all the missing ones at once.
pub async fn check_crds_installed(client: &Client, names: &[&str]) -> Result<(), KubeError> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut missing = Vec::new();
    for name in names {
        let found = api.get_metadata_opt(name).await.map_err(|error| {
            client_error("read", format!("customresourcedefinition {name}"), error, &Redactor::new())
        })?;
        if found.is_none() {
            missing.push((*name).to_owned());
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(KubeError::MissingCrds { missing }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::kube::mock::{MockServer, json_response, status_response};
    use serde_json::json;

    fn version_info(major: &str, minor: &str, git_version: &str) -> serde_json::Value {
        json!({
            "major": major, "minor": minor, "gitVersion": git_version,
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2024-08-01T00:00:00Z",
            "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64",
        })
    }

    #[test]
    fn provider_decorated_versions_are_parsed() {
        let v1_30 = Some(ClusterVersion { major: 1, minor: 30 });
        assert_eq!(ClusterVersion::parse("1", "30+", "v1.30.4-gke.1"), v1_30);
        assert_eq!(ClusterVersion::parse("", "", "v1.30.2-eks-1552ad0"), v1_30);
        assert_eq!(ClusterVersion::parse("1", "", "1.30.2"), v1_30);
        assert_eq!(ClusterVersion::parse("", "", "garbage"), None);
    }

    #[tokio::test]
    async fn cluster_newer_than_the_maximum_fails_with_both_versions() {
        let (client, mut server) = MockServer::start();
        let check =
            tokio::spawn(
                async move { check_cluster_version(&client, ClusterVersion::SUPPORTED_MAXIMUM).await },
            );
        server
            .expect("GET", "/version")
            .await
            .respond(json_response(200, version_info("1", "31+", "v1.31.1-eks-a737599")));
        let error = server.finish(check).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the cluster runs Kubernetes 1.31 (v1.31.1-eks-a737599), newer than the supported maximum 1.30"
        );
    }

    #[tokio::test]
    async fn cluster_at_the_maximum_passes() {
        let (client, mut server) = MockServer::start();
        let check =
            tokio::spawn(
                async move { check_cluster_version(&client, ClusterVersion::SUPPORTED_MAXIMUM).await },
            );
        server
            .expect("GET", "/version")
            .await
            .respond(json_response(200, version_info("1", "30", "v1.30.2")));
        assert_eq!(server.finish(check).await.unwrap(), ClusterVersion { major: 1, minor: 30 });
    }

    fn storage_classes(classes: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClassList",
            "metadata": { "resourceVersion": "1" }, "items": classes,
        })
    }

    #[tokio::test]
    async fn default_storage_class_is_found_by_its_annotation() {
        let (client, mut server) = MockServer::start();
        let check = tokio::spawn(async move { check_storage_class(&client, None).await });
        server.expect("GET", "/apis/storage.k8s.io/v1/storageclasses").await.respond(json_response(
            200,
            storage_classes(json!([
                { "metadata": { "name": "slow" }, "provisioner": "x" },
                { "metadata": { "name": "gp3", "annotations": {
                    "storageclass.kubernetes.io/is-default-class": "true" } }, "provisioner": "ebs" },
            ])),
        ));
        assert_eq!(
            server.finish(check).await.unwrap(),
            StorageClassFound { name: "gp3".to_owned(), is_default: true }
        );
    }

    #[tokio::test]
    async fn missing_storage_class_names_the_wanted_and_available_ones() {
        let (client, mut server) = MockServer::start();
        let check = tokio::spawn(async move { check_storage_class(&client, Some("fast-ssd")).await });
        server.expect("GET", "/apis/storage.k8s.io/v1/storageclasses").await.respond(json_response(
            200,
            storage_classes(json!([{ "metadata": { "name": "slow" }, "provisioner": "x" }])),
        ));
        let error = server.finish(check).await.unwrap_err();
        assert_eq!(error.to_string(), "storage class `fast-ssd` does not exist (available: slow)");
    }

    #[tokio::test]
    async fn cluster_without_storage_classes_has_no_default() {
        let (client, mut server) = MockServer::start();
        let check = tokio::spawn(async move { check_storage_class(&client, None).await });
        server
            .expect("GET", "/apis/storage.k8s.io/v1/storageclasses")
            .await
            .respond(json_response(200, storage_classes(json!([]))));
        let error = server.finish(check).await.unwrap_err();
        assert!(
            matches!(&error, KubeError::NoStorageClass { wanted: None, available } if available.is_empty())
        );
        assert_eq!(
            error.to_string(),
            "no storage class is marked as default with storageclass.kubernetes.io/is-default-class=true (the cluster has none)"
        );
    }

    #[tokio::test]
    async fn missing_crds_are_all_listed() {
        let (client, mut server) = MockServer::start();
        let check = tokio::spawn(async move {
            check_crds_installed(
                &client,
                &["components.dapr.io", "certificates.cert-manager.io", "issuers.cert-manager.io"],
            )
            .await
        });
        let base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let found = server.expect("GET", &format!("{base}/components.dapr.io")).await;
        assert!(
            found
                .headers
                .get(http::header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|accept| accept.contains("PartialObjectMetadata")),
            "only metadata is requested"
        );
        found.respond(json_response(
            200,
            json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": { "name": "components.dapr.io", "resourceVersion": "9" } }),
        ));
        for name in ["certificates.cert-manager.io", "issuers.cert-manager.io"] {
            server.expect("GET", &format!("{base}/{name}")).await.respond(status_response(
                404,
                "NotFound",
                "not found",
            ));
        }
        let error = server.finish(check).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the cluster lacks custom resource definitions the plan uses: certificates.cert-manager.io, issuers.cert-manager.io"
        );
    }
}
