//! The typed model of one environment: client -> environment -> namespace -> component, as
//! loaded from the client hierarchy's TOML files and checked against the core catalog.

pub mod files;
pub mod names;

use std::collections::BTreeMap;

use crate::node::Node;

pub use files::*;

/// One environment, fully loaded: every file's typed content plus its span tree.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    /// `environments/<name>`, relative to the repository root.
    pub dir: String,
    pub client: ClientFile,
    pub client_node: Node,
    pub env: EnvFile,
    pub env_node: Node,
    /// Namespaces sorted by name.
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    /// Path of `namespace.toml`, relative to the repository root.
    pub path: String,
    pub file: NamespaceFile,
    pub node: Node,
    /// Components sorted by name.
    pub components: Vec<ComponentInstance>,
}

/// A component of the catalog as one environment deploys it.
#[derive(Debug, Clone)]
pub struct ComponentInstance {
    pub name: String,
    pub namespace: String,
    /// The catalog template it instantiates.
    pub template: String,
    /// Path of `component.toml`, relative to the repository root.
    pub path: String,
    pub file: ComponentFile,
    pub node: Node,
    /// The inputs with the template's defaults filled in.
    pub inputs: serde_json::Value,
    /// `values_custom` of client, environment, namespace and component, deep-merged in that
    /// order, each value keeping the span of the file it came from.
    pub values_custom: Node,
    /// Labels of client, environment, namespace and component, later levels winning.
    pub labels: BTreeMap<String, String>,
    /// Path of the component's `secrets.enc.yaml`, when it has one.
    pub secrets_path: Option<String>,
}

impl ComponentInstance {
    /// `<namespace>/<component>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl Environment {
    pub fn components(&self) -> impl Iterator<Item = &ComponentInstance> {
        self.namespaces.iter().flat_map(|ns| ns.components.iter())
    }

    /// Path of the environment-wide `secrets.enc.yaml`.
    pub fn secrets_path(&self) -> String {
        format!("{}/secrets.enc.yaml", self.dir)
    }
}
