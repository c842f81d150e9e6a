//! The DSL the core catalog is written in. A component template is a Rust type implementing
//! [`Component`]: a name, a typed inputs struct (serde + schemars: defaults, ranges, enums,
//! doc comments) and a [`Definition`] built with typed references to the components it
//! depends on. A [`Catalog`] erases the types so the engine can look templates up by name.
//!
//! Architecture invariant: the values template is part of the [`Definition`] and can only be
//! set by the code that builds it, in the core catalog. Nothing on the client side (the TOML
//! files and the types they load into) can express it.

use std::collections::BTreeMap;
use std::panic::Location;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A component template of the core catalog.
pub trait Component: 'static {
    /// The template's name, as client files refer to it (a DNS-1123 label).
    const NAME: &'static str;
    /// The typed inputs a client may set in `component.toml`'s `[inputs]`.
    type Inputs: DeserializeOwned + Serialize + JsonSchema + Default;
    /// What the component is and how it is deployed.
    fn definition() -> Definition;
}

/// How a component is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A Helm release of a chart with rendered values.
    HelmRelease,
    /// Kubernetes objects applied with server-side apply.
    Manifests,
    /// Only a database and its role, provisioned in PostgreSQL.
    DatabaseOnly,
    /// The environment's age key pair, stored in a Secret in the cluster.
    KeyStore,
}

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum ChartSource {
    /// The platform vendor's registry named in `client.toml` (`charts.registry`); with
    /// `charts.local = true` the local chart named by `local` is used instead.
    Vendor { local: &'static str },
    /// A classic chart repository.
    Repository { url: &'static str },
    /// An OCI registry (`oci://...`).
    Oci { url: &'static str },
    /// A chart in this repository, relative to its root.
    Local { path: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChartRef {
    pub name: &'static str,
    pub version: &'static str,
    #[serde(flatten)]
    pub source: ChartSource,
    /// A chart under `charts/` that stands in for a third-party chart when `client.toml` sets
    /// `[charts] local = true` (tests, clusters without access to the chart repositories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stand_in: Option<&'static str>,
}

impl ChartRef {
    /// A chart of the platform vendor, with a local stand-in chart under `charts/`.
    pub fn vendor(name: &'static str, version: &'static str, local: &'static str) -> ChartRef {
        ChartRef { name, version, source: ChartSource::Vendor { local }, stand_in: None }
    }

    pub fn repository(url: &'static str, name: &'static str, version: &'static str) -> ChartRef {
        ChartRef { name, version, source: ChartSource::Repository { url }, stand_in: None }
    }

    pub fn oci(url: &'static str, name: &'static str, version: &'static str) -> ChartRef {
        ChartRef { name, version, source: ChartSource::Oci { url }, stand_in: None }
    }

    /// Uses the local chart at `path` (relative to the repository root) instead of this one
    /// when `[charts] local = true`, as vendor charts do.
    pub fn with_stand_in(mut self, path: &'static str) -> ChartRef {
        self.stand_in = Some(path);
        self
    }

    pub fn local(path: &'static str, name: &'static str, version: &'static str) -> ChartRef {
        ChartRef { name, version, source: ChartSource::Local { path }, stand_in: None }
    }
}

/// A dependency on another component template, and the line of Rust that declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: &'static str,
    pub declared_at: &'static Location<'static>,
}

/// A CustomResourceDefinition a component creates objects of, and the line of Rust that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdNeed {
    /// `<plural>.<group>`, as the CustomResourceDefinition is named (`components.dapr.io`).
    pub name: &'static str,
    pub declared_at: &'static Location<'static>,
}

/// The database a component owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseSpec {
    pub name: &'static str,
    pub user: &'static str,
}

/// A minijinja template shipped beside the component's module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuesTemplate {
    /// Path relative to the repository root, for diagnostics.
    pub path: &'static str,
    pub text: &'static str,
}

/// What a component template is. Built with the methods below; its fields are private so a
/// definition is only ever changed by the code that creates it.
#[derive(Debug, Clone)]
pub struct Definition {
    name: &'static str,
    kind: Kind,
    description: &'static str,
    chart: Option<ChartRef>,
    dependencies: Vec<Dependency>,
    database: Option<DatabaseSpec>,
    values_template: Option<ValuesTemplate>,
    objects_template: Option<ValuesTemplate>,
    app: Option<&'static str>,
    secret_keys: Vec<&'static str>,
    crds_needed: Vec<CrdNeed>,
    crds_provided: Vec<&'static str>,
    forbidden_in_protected: Option<&'static str>,
    wait_for_readiness: bool,
    module_path: &'static str,
}

impl Definition {
    /// Starts the definition of component `C`.
    #[track_caller]
    pub fn of<C: Component>(kind: Kind, description: &'static str) -> Definition {
        Definition {
            name: C::NAME,
            kind,
            description,
            chart: None,
            dependencies: Vec::new(),
            database: None,
            values_template: None,
            objects_template: None,
            app: None,
            secret_keys: Vec::new(),
            crds_needed: Vec::new(),
            crds_provided: Vec::new(),
            forbidden_in_protected: None,
            wait_for_readiness: kind == Kind::HelmRelease,
            module_path: Location::caller().file(),
        }
    }

    pub fn chart(mut self, chart: ChartRef) -> Definition {
        self.chart = Some(chart);
        self
    }

    /// Declares that this component needs component `D` deployed first. The reference is a
    /// type, so a dependency on a component that does not exist does not compile.
    #[track_caller]
    pub fn depends_on<D: Component>(mut self) -> Definition {
        self.dependencies.push(Dependency { name: D::NAME, declared_at: Location::caller() });
        self
    }

    pub fn database(mut self, name: &'static str, user: &'static str) -> Definition {
        self.database = Some(DatabaseSpec { name, user });
        self
    }

    pub fn values_template(mut self, template: ValuesTemplate) -> Definition {
        self.values_template = Some(template);
        self
    }

    /// The key in the environment's `[versions]` that holds this component's image tag.
    pub fn app(mut self, app: &'static str) -> Definition {
        self.app = Some(app);
        self
    }

    /// A key (dotted path) the component's `secrets.enc.yaml` must contain.
    pub fn secret(mut self, key: &'static str) -> Definition {
        self.secret_keys.push(key);
        self
    }

    /// Objects a Helm release component applies once its release is ready (cert-manager's
    /// ClusterIssuer): a template beside the module rendering a list of manifests. Like the
    /// values template it belongs to the catalog; no client file can set or replace it.
    pub fn objects_after_release(mut self, template: ValuesTemplate) -> Definition {
        self.objects_template = Some(template);
        self
    }

    /// A CustomResourceDefinition this component creates objects of. When a component of the
    /// same environment provides it, this component waits for that release and for the
    /// definition to be `Established`; otherwise the preflight requires it in the cluster.
    #[track_caller]
    pub fn needs_crd(mut self, crd: &'static str) -> Definition {
        self.crds_needed.push(CrdNeed { name: crd, declared_at: Location::caller() });
        self
    }

    /// CustomResourceDefinitions this component's release installs (and owns).
    pub fn provides_crds(mut self, crds: &[&'static str]) -> Definition {
        self.crds_provided.extend_from_slice(crds);
        self
    }

    /// Forbids the component in protected environments, with the reason.
    pub fn forbidden_in_protected(mut self, reason: &'static str) -> Definition {
        self.forbidden_in_protected = Some(reason);
        self
    }

    pub fn without_readiness_wait(mut self) -> Definition {
        self.wait_for_readiness = false;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn description(&self) -> &'static str {
        self.description
    }
    pub fn chart_ref(&self) -> Option<&ChartRef> {
        self.chart.as_ref()
    }
    pub fn dependencies(&self) -> &[Dependency] {
        &self.dependencies
    }
    pub fn database_spec(&self) -> Option<&DatabaseSpec> {
        self.database.as_ref()
    }
    pub fn template(&self) -> Option<&ValuesTemplate> {
        self.values_template.as_ref()
    }
    pub fn app_name(&self) -> Option<&'static str> {
        self.app
    }
    pub fn secret_keys(&self) -> &[&'static str] {
        &self.secret_keys
    }
    pub fn crds_needed(&self) -> &[CrdNeed] {
        &self.crds_needed
    }
    pub fn crds_provided(&self) -> &[&'static str] {
        &self.crds_provided
    }
    pub fn objects_template(&self) -> Option<&ValuesTemplate> {
        self.objects_template.as_ref()
    }
    pub fn protected_reason(&self) -> Option<&'static str> {
        self.forbidden_in_protected
    }
    pub fn waits_for_readiness(&self) -> bool {
        self.wait_for_readiness
    }
    /// The Rust file that defines the component, for messages.
    pub fn module_path(&self) -> &'static str {
        self.module_path
    }
}

/// A component template with its inputs type erased.
pub struct Template {
    pub definition: Definition,
    inputs_schema: fn() -> serde_json::Value,
    /// The inputs schema, generated once (every component file is checked against it).
    inputs_schema_cache: std::sync::OnceLock<serde_json::Value>,
    normalize_inputs: fn(serde_json::Value) -> Result<serde_json::Value, String>,
}

impl Template {
    /// The JSON Schema of the template's inputs.
    pub fn inputs_schema(&self) -> &serde_json::Value {
        self.inputs_schema_cache.get_or_init(self.inputs_schema)
    }

    /// Deserializes inputs into the typed struct and back, filling in defaults.
    pub fn normalize_inputs(&self, inputs: serde_json::Value) -> Result<serde_json::Value, String> {
        (self.normalize_inputs)(inputs)
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("definition", &self.definition).finish_non_exhaustive()
    }
}

fn inputs_schema_of<C: Component>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(C::Inputs)).expect("a schema is JSON")
}

fn normalize_inputs_of<C: Component>(inputs: serde_json::Value) -> Result<serde_json::Value, String> {
    let typed: C::Inputs = serde_json::from_value(inputs).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// All component templates of a core, by name.
#[derive(Debug, Default)]
pub struct Catalog {
    templates: BTreeMap<&'static str, Template>,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Adds template `C`. Panics on a duplicate name: that is a bug in the core, caught by the
    /// catalog's own tests.
    pub fn with<C: Component>(mut self) -> Catalog {
        let definition = C::definition();
        assert_eq!(definition.name, C::NAME, "definition of {} names itself differently", C::NAME);
        let template = Template {
            definition,
            inputs_schema: inputs_schema_of::<C>,
            inputs_schema_cache: std::sync::OnceLock::new(),
            normalize_inputs: normalize_inputs_of::<C>,
        };
        assert!(self.templates.insert(C::NAME, template).is_none(), "component {} declared twice", C::NAME);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.templates.keys().copied()
    }

    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }
}
