//! The inventory of a cluster target: what an environment's deploys own (releases, applied
//! objects, namespaces, databases), kept in the cluster beside the key store (Secret
//! `opus-inventory`, key `inventory.json`; it holds names only, never a value). A deploy adds
//! what its plan produces before it runs anything, so a run cut short still knows everything it
//! may have created; after a complete run, what the inventory lists and the plan no longer
//! produces is removed (or, for what deleting would destroy, retained and let go).

use std::collections::BTreeSet;

use kube::Client;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::apply::{ApplyOptions, SecretSpec, apply_secret};
use super::{KubeError, client_error};
use crate::plan::{Action, Plan};
use crate::sensitive::{Redactor, SecretString};

/// The Secret holding the inventory, in the key store's namespace.
pub const INVENTORY_SECRET: &str = "opus-inventory";
const INVENTORY_KEY: &str = "inventory.json";
const INVENTORY_FORMAT: u32 = 1;

/// One thing an environment owns on its cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Owned {
    HelmRelease {
        namespace: String,
        name: String,
        /// The release installs CustomResourceDefinitions: uninstalling it would delete every
        /// object of them, ours or not.
        #[serde(default)]
        provides_crds: bool,
    },
    Object {
        api_version: String,
        #[serde(rename = "object_kind")]
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        name: String,
    },
    Namespace {
        name: String,
    },
    Database {
        database: String,
        role: String,
    },
}

impl Owned {
    /// For people: `helm release opus/oob-status`, `Secret opus/oob-status-secrets`.
    pub fn describe(&self) -> String {
        match self {
            Owned::HelmRelease { namespace, name, .. } => format!("helm release {namespace}/{name}"),
            Owned::Object { kind, namespace: Some(namespace), name, .. } => {
                format!("{kind} {namespace}/{name}")
            }
            Owned::Object { kind, namespace: None, name, .. } => format!("{kind} {name}"),
            Owned::Namespace { name } => format!("namespace {name}"),
            Owned::Database { database, role } => format!("database {database} (role {role})"),
        }
    }

    /// Why a deploy keeps this when it leaves the configuration, and how to remove it; `None`
    /// when the deploy removes it.
    pub fn retained_because(&self) -> Option<String> {
        match self {
            Owned::Namespace { name } => Some(format!(
                "deleting a namespace deletes everything in it, ours or not; remove it with `kubectl delete namespace {name}`"
            )),
            Owned::Database { database, role } => Some(format!(
                "databases and roles keep their data; `deploy --prune-databases` drops them (or `DROP DATABASE {database}; DROP ROLE {role};`)"
            )),
            Owned::HelmRelease { namespace, name, provides_crds: true } => Some(format!(
                "it provides CustomResourceDefinitions, and uninstalling it would delete every object of them; remove it with `helm uninstall {name} -n {namespace}`"
            )),
            Owned::HelmRelease { .. } | Owned::Object { .. } => None,
        }
    }
}

/// What the plan's steps produce.
pub fn owned_by(plan: &Plan) -> BTreeSet<Owned> {
    let providers: BTreeSet<&str> = plan
        .steps()
        .filter_map(|step| match &step.action {
            Action::Preflight { provided, .. } => Some(provided.values().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();
    let mut out = BTreeSet::new();
    for step in plan.steps() {
        match &step.action {
            Action::HelmRelease { release, namespace, .. } => {
                let provides_crds = step.component.as_deref().is_some_and(|c| providers.contains(c));
                out.insert(Owned::HelmRelease {
                    namespace: namespace.clone(),
                    name: release.clone(),
                    provides_crds,
                });
            }
            Action::EnsureNamespace { name, .. } => {
                out.insert(Owned::Namespace { name: name.clone() });
            }
            Action::ApplySecret { namespace, name, .. } => {
                out.insert(Owned::Object {
                    api_version: "v1".to_owned(),
                    kind: "Secret".to_owned(),
                    namespace: Some(namespace.clone()),
                    name: name.clone(),
                });
            }
            Action::ApplyObjects { objects, .. } => {
                let shown = objects.shown();
                for item in shown.as_array().cloned().unwrap_or_else(|| vec![shown.clone()]) {
                    let field =
                        |pointer: &str| item.pointer(pointer).and_then(|v| v.as_str()).map(str::to_owned);
                    if let (Some(api_version), Some(kind), Some(name)) =
                        (field("/apiVersion"), field("/kind"), field("/metadata/name"))
                    {
                        out.insert(Owned::Object {
                            api_version,
                            kind,
                            namespace: field("/metadata/namespace"),
                            name,
                        });
                    }
                }
            }
            Action::ProvisionDatabase { database, role, .. } => {
                out.insert(Owned::Database { database: database.clone(), role: role.clone() });
            }
            // The key store outlives every component: rotation owns it.
            Action::StoreKey { .. }
            | Action::Preflight { .. }
            | Action::DatabasePreflight { .. }
            | Action::WaitReady { .. } => {}
        }
    }
    out
}

/// Where the inventory lives: the key store's namespace (none without a key store step).
pub fn inventory_namespace(plan: &Plan) -> Option<&str> {
    plan.steps().find_map(|step| match &step.action {
        Action::StoreKey { namespace, .. } => Some(namespace.as_str()),
        _ => None,
    })
}

/// The inventory as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub format: u32,
    pub environment: String,
    /// The lineage of the journal that deploys the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    pub items: BTreeSet<Owned>,
    /// The last deploy that changed the environment: who, which commit, plan file and ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<crate::change_record::ChangeRecord>,
}

impl Inventory {
    pub fn new(environment: &str, lineage: Option<String>, items: BTreeSet<Owned>) -> Inventory {
        Inventory {
            format: INVENTORY_FORMAT,
            environment: environment.to_owned(),
            lineage,
            items,
            last_change: None,
        }
    }

    /// This inventory, keeping the record of the last change `stored` had.
    pub fn keeping_last_change(mut self, stored: Option<&Inventory>) -> Inventory {
        self.last_change = stored.and_then(|stored| stored.last_change.clone());
        self
    }
}

/// Reads the inventory; `None` before the first deploy that kept one.
pub async fn read_inventory(client: &Client, namespace: &str) -> Result<Option<Inventory>, KubeError> {
    let what = format!("secret {namespace}/{INVENTORY_SECRET}");
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(INVENTORY_SECRET)
        .await
        .map_err(|error| client_error("read the inventory", &what, error, &Redactor::new()))?;
    let Some(secret) = secret else { return Ok(None) };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(INVENTORY_KEY))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let inventory: Inventory = serde_json::from_slice(&bytes).map_err(|e| KubeError::UnexpectedResponse {
        action: "read the inventory",
        object: what.clone(),
        detail: format!("`{INVENTORY_KEY}` is not an inventory: {e}"),
    })?;
    if inventory.format > INVENTORY_FORMAT {
        return Err(KubeError::UnexpectedResponse {
            action: "read the inventory",
            object: what,
            detail: format!(
                "it is of format {}, newer than this version's {INVENTORY_FORMAT}: deploy with the newer version",
                inventory.format
            ),
        });
    }
    Ok(Some(inventory))
}

/// Stores the inventory (server-side apply under our field manager).
pub async fn write_inventory(
    client: &Client,
    namespace: &str,
    inventory: &Inventory,
) -> Result<(), KubeError> {
    let text = serde_json::to_string_pretty(inventory).expect("an inventory serializes") + "\n";
    let spec = SecretSpec {
        namespace: namespace.to_owned(),
        name: INVENTORY_SECRET.to_owned(),
        labels: [("app.kubernetes.io/managed-by".to_owned(), "opus-deploy".to_owned())].into(),
        secret_type: None,
        data: [(INVENTORY_KEY.to_owned(), SecretString::new(text))].into(),
    };
    apply_secret(client, &spec, &ApplyOptions::default()).await.map(|_| ())
}

/// Deletes an object we applied (in the background: what it owns goes with it); one already
/// gone is not an error.
pub async fn delete_object(client: &Client, owned: &Owned) -> Result<(), KubeError> {
    let Owned::Object { api_version, kind, namespace, name } = owned else { return Ok(()) };
    let target = match super::apply::known_kind(api_version, kind) {
        Some(target) => target,
        None => super::apply::discover_kind(client, api_version, kind).await?,
    };
    let api: Api<kube::api::DynamicObject> = match namespace.as_deref().filter(|_| target.namespaced) {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &target.resource),
        None => Api::all_with(client.clone(), &target.resource),
    };
    match api.delete(name, &kube::api::DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(client_error("delete", owned.describe(), error, &Redactor::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inventory_round_trips_in_its_stored_form_and_names_what_it_keeps() {
        let items = BTreeSet::from([
            Owned::HelmRelease { namespace: "opus".into(), name: "oob-status".into(), provides_crds: false },
            Owned::Object {
                api_version: "dapr.io/v1alpha1".into(),
                kind: "Component".into(),
                namespace: Some("opus".into()),
                name: "opus-pubsub".into(),
            },
            Owned::Namespace { name: "opus".into() },
            Owned::Database { database: "status".into(), role: "status_user".into() },
        ]);
        let inventory = Inventory::new("prod", Some("7d3c".into()), items);
        let text = serde_json::to_string(&inventory).unwrap();
        assert!(
            text.contains(r#"{"kind":"object","api_version":"dapr.io/v1alpha1","object_kind":"Component""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Inventory>(&text).unwrap(), inventory);
        let kept: Vec<bool> = inventory.items.iter().map(|i| i.retained_because().is_some()).collect();
        assert_eq!(kept, [false, false, true, true]);
        let crds = Owned::HelmRelease {
            namespace: "cert-manager".into(),
            name: "cert-manager".into(),
            provides_crds: true,
        };
        assert!(crds.retained_because().unwrap().contains("helm uninstall cert-manager -n cert-manager"));
    }
}
