//! Compiling: a checked environment plus its secrets become a [`Plan`]. Values templates are
//! rendered in strict mode, `values_custom` (which may itself use template expressions) and
//! then `values_sensitive_custom` are deep-merged over them, and every step gets its
//! fingerprint. Compiling never touches the network; `plan` and `deploy` share this code.

pub mod context;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

use crate::catalog::{Catalog, ChartSource, Kind};
use crate::check::{Checked, Failure, check_finding_keys};
use crate::diagnostic::Diagnostic;
use crate::load::environment::LoadError;
use crate::load::secret_inputs::{SecretFile, SecretInputs, VALUES_SENSITIVE_CUSTOM};
use crate::load::tree::SourceTree;
use crate::model::{ComponentInstance, Environment, Target};
use crate::node::{Node, Value};
use crate::plan::{Action, ChartSpec, Plan, Step, TargetSpec};
use crate::secrets::SecretsSource;
use crate::source::{SourceMap, Span};
use crate::template::{Renderer, TemplateError, TemplateErrorKind, has_template_syntax};
use crate::values::{SecretTable, Values, deep_merge, finish_tree};

/// The outcome of compiling an environment.
#[derive(Debug)]
pub struct Compiled<K> {
    pub plan: Option<Plan>,
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// What the plan was compiled from, when it was: the commands that go on (journal
    /// placement, drivers) take these values instead of reading the files again.
    pub inputs: Option<Inputs<K>>,
}

/// The loaded inputs of a compiled environment.
#[derive(Debug)]
pub struct Inputs<K> {
    /// The environment as loaded, with its env.toml ([`Environment::env`]).
    pub environment: Environment,
    /// Its secrets files, decrypted when `identities` are given.
    pub secrets: SecretInputs,
    pub identities: Option<K>,
}

/// Checks, reads secrets (decrypting them with `identities` when given) and compiles.
pub fn compile_environment<K: SecretsSource + Clone>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    identities: Option<&K>,
) -> Result<Compiled<K>, LoadError> {
    compile_finding_keys(tree, catalog, name, |_| Ok::<_, std::convert::Infallible>(identities.cloned()))
        .map_err(|failure| match failure {
            Failure::Load(e) => e,
            Failure::Keys(never) => match never {},
        })
}

/// Checks and compiles, asking `keys` for the identities once env.toml is loaded (see
/// [`check_finding_keys`]): every input file is read once.
pub fn compile_finding_keys<K: SecretsSource + Clone, E>(
    tree: &dyn SourceTree,
    catalog: &Catalog,
    name: &str,
    keys: impl FnOnce(&crate::model::EnvFile) -> Result<Option<K>, E>,
) -> Result<Compiled<K>, Failure<E>> {
    let report = check_finding_keys(tree, catalog, name, keys)?;
    let mut sources = report.sources;
    let (Some(checked), Some(secrets)) = (report.checked, report.secrets) else {
        return Ok(Compiled { plan: None, sources, diagnostics: report.diagnostics, inputs: None });
    };
    let mut diagnostics = report.diagnostics;
    match compile(&checked, catalog, &secrets, &mut sources) {
        Ok(plan) => {
            let inputs = Inputs { environment: checked.environment, secrets, identities: report.identities };
            Ok(Compiled { plan: Some(plan), sources, diagnostics, inputs: Some(inputs) })
        }
        Err(problems) => {
            diagnostics.extend(problems);
            Ok(Compiled { plan: None, sources, diagnostics, inputs: None })
        }
    }
}

/// Builds the plan of a checked environment.
pub fn compile(
    checked: &Checked,
    catalog: &Catalog,
    secrets: &SecretInputs,
    sources: &mut SourceMap,
) -> Result<Plan, Vec<Diagnostic>> {
    let env = &checked.environment;
    let target = target_spec(env);
    let mut builder = Builder {
        steps: Vec::new(),
        diagnostics: Vec::new(),
        renderer: Renderer::new(),
        parsed_yaml: HashMap::new(),
    };
    let shared_ctx = context::SharedContext::new(env);

    let preflight_id = format!("environment/{}/preflight", env.name);
    // CRDs: what the enabled components create objects of, and which release installs each.
    let enabled_definitions = || {
        env.components()
            .filter(|c| c.file.enabled)
            .filter_map(|c| catalog.get(&c.template).map(|t| (c.id(), &t.definition)))
    };
    let provided: BTreeMap<String, String> = enabled_definitions()
        .flat_map(|(id, d)| d.crds_provided().iter().map(move |crd| ((*crd).to_owned(), id.clone())))
        .collect();
    let mut crds: Vec<String> = enabled_definitions()
        .flat_map(|(_, d)| d.crds_needed().iter().map(|need| need.name.to_owned()))
        .filter(|crd| !provided.contains_key(crd))
        .collect();
    crds.sort();
    crds.dedup();
    let (max_kubernetes_version, storage_class) = match &env.env.target {
        Target::Kube { max_kubernetes_version, storage_class, .. } => {
            (Some(max_kubernetes_version.clone()), storage_class.clone())
        }
        Target::Directory { .. } | Target::Flux { .. } => (None, None),
    };
    builder.push(
        preflight_id.clone(),
        None,
        Action::Preflight {
            max_kubernetes_version,
            storage_class,
            crds,
            provided,
            outside_run: BTreeMap::new(),
        },
        vec![],
    );

    // Namespaces that deploy something.
    for namespace in &env.namespaces {
        if !namespace.components.iter().any(|c| c.file.enabled) {
            continue;
        }
        let mut labels = env.client.labels.clone();
        labels.extend(env.env.labels.clone());
        labels.extend(namespace.file.labels.clone());
        labels.insert("app.kubernetes.io/managed-by".into(), "opus-deploy".into());
        builder.push(
            namespace_step(&namespace.name),
            None,
            Action::EnsureNamespace {
                name: namespace.name.clone(),
                labels,
                annotations: namespace.file.annotations.clone(),
            },
            vec![preflight_id.clone()],
        );
    }

    // Components, in dependency order so each knows its dependencies' last step.
    let mut exit_steps: BTreeMap<String, String> = BTreeMap::new();
    let components: BTreeMap<String, &ComponentInstance> =
        env.components().filter(|c| c.file.enabled).map(|c| (c.id(), c)).collect();
    // The PostgreSQL component's connection limit applies to every role.
    let connection_limit = components
        .values()
        .find(|c| c.template == "postgresql")
        .and_then(|c| c.inputs.get("connection_limit"))
        .and_then(Json::as_i64)
        .unwrap_or(-1) as i32;
    for id in dependency_order(&components, checked) {
        let component = components[&id];
        let Some(template) = catalog.get(&component.template) else { continue };
        let definition = &template.definition;
        let mut previous: Vec<String> = vec![namespace_step(&component.namespace)];
        for dependency in checked.dependencies.of(&id) {
            if let Some(exit) = exit_steps.get(dependency) {
                previous.push(exit.clone());
            }
        }
        let step_id = |verb: &str| format!("{}/{}", id, verb);
        let mut table = SecretTable::default();
        let component_secrets = secrets.components.get(&id);
        let database = definition.database_spec().map(|spec| {
            let overrides = component.file.database.clone().unwrap_or_default();
            (overrides.name.unwrap_or(spec.name.to_owned()), overrides.user.unwrap_or(spec.user.to_owned()))
        });

        if definition.kind() == Kind::DatabaseOnly {
            let admin_password =
                single_secret(secrets.environment.as_ref(), "database.admin_password", secrets, &mut table);
            let min_server_version =
                component.inputs.get("min_server_version").and_then(Json::as_u64).unwrap_or(14) as u32;
            let action = Action::DatabasePreflight {
                host: env.env.database.host.clone(),
                port: env.env.database.port,
                admin_user: env.env.database.admin_user.clone(),
                min_server_version,
                admin_password,
            };
            previous = vec![builder.push(step_id("preflight"), Some(&id), action, previous)];
        }
        if let Some(file) = component_secrets {
            let mut data = Json::Object(Default::default());
            for path in file.paths_under("") {
                if path == VALUES_SENSITIVE_CUSTOM || path.starts_with(&format!("{VALUES_SENSITIVE_CUSTOM}."))
                {
                    continue;
                }
                if let Some(placeholder) = file.placeholder(path, &secrets.digest_key, &mut table) {
                    data.as_object_mut().expect("object").insert(path.clone(), Json::String(placeholder));
                }
            }
            if data.as_object().is_some_and(|d| !d.is_empty()) {
                let action = Action::ApplySecret {
                    namespace: component.namespace.clone(),
                    name: format!("{}-secrets", component.name),
                    labels: component.labels.clone(),
                    data: Values::from_marked_owned(data, &table),
                };
                previous = vec![builder.push(step_id("secret"), Some(&id), action, previous)];
            }
        }
        if let Some((db_name, db_user)) = &database {
            let password = single_secret(component_secrets, "db.password", secrets, &mut table);
            let action = Action::ProvisionDatabase {
                host: env.env.database.host.clone(),
                port: env.env.database.port,
                role: db_user.clone(),
                database: db_name.clone(),
                connection_limit,
                password,
            };
            previous = vec![builder.push(step_id("database"), Some(&id), action, previous)];
        }

        let secrets_ctx = component_secrets.map_or(Json::Object(Default::default()), |f| {
            f.placeholders("", &secrets.digest_key, &mut table)
        });
        let ctx = shared_ctx.component(
            component,
            database.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            &secrets_ctx,
        );
        let mut wait_for_crds: Vec<String> =
            definition.crds_needed().iter().map(|need| need.name.to_owned()).collect();
        wait_for_crds.sort();
        wait_for_crds.dedup();
        let objects_after_release = definition.objects_template().and_then(|objects| {
            let rendered = builder.render_values(objects.path, objects.text, &ctx, sources)?;
            let mut rendered = rendered;
            finish_tree(&mut rendered, &mut table, &secrets.digest_key);
            Some(Values::from_marked_owned(rendered, &table))
        });
        let rendered = match definition.template() {
            Some(values_template) => {
                builder.render_values(values_template.path, values_template.text, &ctx, sources)
            }
            None => Some(Json::Null),
        };
        let custom = builder.render_custom(&component.values_custom, &ctx, sources);
        let (Some(mut values), Some(custom)) = (rendered, custom) else { continue };
        if values.is_null() {
            values = Json::Object(Default::default());
        }
        if custom.as_object().is_some_and(|c| !c.is_empty()) {
            deep_merge(&mut values, &custom);
        }
        if let Some(file) = component_secrets {
            let sensitive = file.placeholders(VALUES_SENSITIVE_CUSTOM, &secrets.digest_key, &mut table);
            if sensitive.as_object().is_some_and(|s| !s.is_empty()) {
                deep_merge(&mut values, &sensitive);
            }
        }
        finish_tree(&mut values, &mut table, &secrets.digest_key);
        let values = Values::from_marked_owned(values, &table);

        match definition.kind() {
            Kind::HelmRelease => {
                let chart = definition.chart_ref().expect("a Helm release has a chart");
                let timeout_seconds =
                    component.inputs.get("timeout_seconds").and_then(Json::as_u64).unwrap_or(600) as u32;
                let action = Action::HelmRelease {
                    release: component.name.clone(),
                    namespace: component.namespace.clone(),
                    chart: chart_spec(env, chart),
                    values,
                    timeout_seconds,
                };
                previous = vec![builder.push(step_id("release"), Some(&id), action, previous)];
                if definition.waits_for_readiness() {
                    let action = Action::WaitReady {
                        namespace: component.namespace.clone(),
                        selector: format!("app.kubernetes.io/instance={}", component.name),
                        timeout_seconds,
                    };
                    previous = vec![builder.push(step_id("ready"), Some(&id), action, previous)];
                }
                if let Some(objects) = objects_after_release {
                    let action = Action::ApplyObjects {
                        namespace: component.namespace.clone(),
                        objects,
                        wait_for_crds: wait_for_crds.clone(),
                    };
                    previous = vec![builder.push(step_id("apply"), Some(&id), action, previous)];
                }
            }
            Kind::Manifests => {
                let action = Action::ApplyObjects {
                    namespace: component.namespace.clone(),
                    objects: values,
                    wait_for_crds: wait_for_crds.clone(),
                };
                previous = vec![builder.push(step_id("apply"), Some(&id), action, previous)];
            }
            Kind::KeyStore => {
                let secret_name = component
                    .inputs
                    .get("secret_name")
                    .and_then(Json::as_str)
                    .unwrap_or("opus-age-keys")
                    .to_owned();
                let action = Action::StoreKey {
                    namespace: component.namespace.clone(),
                    secret_name,
                    recipients: env.env.secrets.age_recipients.clone(),
                };
                previous = vec![builder.push(step_id("store-key"), Some(&id), action, previous)];
            }
            Kind::DatabaseOnly => {}
        }
        if let Some(last) = previous.first() {
            exit_steps.insert(id.clone(), last.clone());
        }
    }
    if !builder.diagnostics.is_empty() {
        return Err(builder.diagnostics);
    }
    Plan::compiled(env.name.clone(), env.env.protected, target, secrets.is_decrypted(), builder.steps)
        .map_err(|e| vec![Diagnostic::error(format!("internal error: the compiled plan is invalid: {e}"))])
}

fn namespace_step(namespace: &str) -> String {
    format!("{namespace}/namespace/ensure")
}

/// One secret of a file as a `Values` holding just it (empty when the file or key is absent;
/// `check` has already reported required keys that are missing).
fn single_secret(
    file: Option<&SecretFile>,
    path: &str,
    secrets: &SecretInputs,
    table: &mut SecretTable,
) -> Values {
    match file.and_then(|f| f.placeholder(path, &secrets.digest_key, table)) {
        Some(placeholder) => Values::from_marked_owned(Json::String(placeholder), table),
        None => Values::default(),
    }
}

fn target_spec(env: &Environment) -> TargetSpec {
    match &env.env.target {
        Target::Directory { path, .. } => {
            let mut recipients = env.env.secrets.age_recipients.clone();
            recipients.sort();
            recipients.dedup();
            TargetSpec::Directory { path: path.clone(), recipients }
        }
        Target::Kube { context, kubeconfig, .. } => {
            TargetSpec::Kube { context: context.clone(), kubeconfig: kubeconfig.clone() }
        }
        Target::Flux {
            path, namespace, git_repository, databases, decryption_secret, psql_image, ..
        } => {
            let mut recipients = env.env.secrets.age_recipients.clone();
            recipients.sort();
            recipients.dedup();
            TargetSpec::Flux {
                path: path.clone(),
                recipients,
                namespace: namespace.clone(),
                git_repository: git_repository.clone(),
                databases: databases.as_str().to_owned(),
                decryption_secret: decryption_secret.clone(),
                psql_image: psql_image.clone(),
                sslmode: serde_json::to_value(env.env.database.sslmode)
                    .ok()
                    .and_then(|mode| mode.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            }
        }
    }
}

fn chart_spec(env: &Environment, chart: &crate::catalog::ChartRef) -> ChartSpec {
    let version = chart.version.to_owned();
    if let (Some(stand_in), true) = (chart.stand_in, env.client.charts.local) {
        return ChartSpec { reference: stand_in.to_owned(), repository: None, version };
    }
    match &chart.source {
        ChartSource::Vendor { local } if env.client.charts.local => {
            ChartSpec { reference: (*local).to_owned(), repository: None, version }
        }
        ChartSource::Vendor { .. } => {
            let registry = env.client.charts.registry.trim_end_matches('/');
            if registry.starts_with("oci://") {
                ChartSpec { reference: format!("{registry}/{}", chart.name), repository: None, version }
            } else {
                ChartSpec { reference: chart.name.to_owned(), repository: Some(registry.to_owned()), version }
            }
        }
        ChartSource::Repository { url } => {
            ChartSpec { reference: chart.name.to_owned(), repository: Some((*url).to_owned()), version }
        }
        ChartSource::Oci { url } => ChartSpec {
            reference: format!("{}/{}", url.trim_end_matches('/'), chart.name),
            repository: None,
            version,
        },
        ChartSource::Local { path } => ChartSpec { reference: (*path).to_owned(), repository: None, version },
    }
}

/// Component ids with dependencies first (ties by id).
/// The components in dependency order (Kahn's algorithm, ties broken by id), in
/// O((n + e) log n). Components left in a cycle come last, so compile stays total (`check`
/// reports the cycle).
fn dependency_order(components: &BTreeMap<String, &ComponentInstance>, checked: &Checked) -> Vec<String> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in components.keys() {
        let deps: Vec<&str> =
            checked.dependencies.of(id).into_iter().filter(|d| components.contains_key(*d)).collect();
        waiting.insert(id.as_str(), deps.len());
        for dep in deps {
            let dep = components.get_key_value(dep).map(|(k, _)| k.as_str()).expect("a component");
            dependents.entry(dep).or_default().push(id.as_str());
        }
    }
    let mut ready: std::collections::BTreeSet<&str> =
        waiting.iter().filter(|(_, n)| **n == 0).map(|(id, _)| *id).collect();
    let mut done: Vec<String> = Vec::with_capacity(components.len());
    while let Some(id) = ready.pop_first() {
        done.push(id.to_owned());
        for next in dependents.get(id).into_iter().flatten() {
            let count = waiting.get_mut(next).expect("counted");
            *count -= 1;
            if *count == 0 {
                ready.insert(next);
            }
        }
    }
    if done.len() < components.len() {
        let placed: std::collections::BTreeSet<String> = done.iter().cloned().collect();
        done.extend(components.keys().filter(|id| !placed.contains(*id)).cloned());
    }
    done
}

/// Rendered values texts up to this size are kept with their parsed YAML, so a text rendered
/// again (the same template with the same context) is not parsed again.
const MAX_CACHED_RENDER_BYTES: usize = 16 * 1024;

struct Builder {
    steps: Vec<Step>,
    diagnostics: Vec<Diagnostic>,
    /// One minijinja environment for the whole compile: each values template is parsed once.
    renderer: Renderer,
    /// Rendered values text (up to [`MAX_CACHED_RENDER_BYTES`]) → its parsed YAML.
    parsed_yaml: HashMap<String, Json>,
}

impl Builder {
    fn push(
        &mut self,
        id: String,
        component: Option<&str>,
        action: Action,
        mut depends_on: Vec<String>,
    ) -> String {
        depends_on.sort();
        depends_on.dedup();
        // `Plan::compiled` computes the fingerprint.
        self.steps.push(Step {
            id: id.clone(),
            component: component.map(str::to_owned),
            action,
            depends_on,
            fingerprint: String::new(),
        });
        id
    }

    fn template_diagnostic(
        &mut self,
        error: &TemplateError,
        text: &str,
        sources: &mut SourceMap,
        what: &str,
    ) {
        let file = sources.add(error.name.clone(), text.to_owned());
        let range = error.range.clone().unwrap_or_else(|| line_range(text, error.line.unwrap_or(1)));
        self.diagnostics.push(
            Diagnostic::error(format!("cannot render {what}: {}", error.message))
                .at(Span::new(file, range), "here")
                .help(error.kind.help()),
        );
    }

    fn render_values(
        &mut self,
        path: &str,
        text: &str,
        ctx: &minijinja::Value,
        sources: &mut SourceMap,
    ) -> Option<Json> {
        let rendered = match self.renderer.render(path, text, ctx) {
            Ok(rendered) => rendered,
            Err(error) => {
                self.template_diagnostic(&error, text, sources, path);
                return None;
            }
        };
        if let Some(values) = self.parsed_yaml.get(&rendered) {
            return Some(values.clone());
        }
        match serde_yaml_ng::from_str::<Json>(&rendered) {
            Ok(values) => {
                if rendered.len() <= MAX_CACHED_RENDER_BYTES {
                    self.parsed_yaml.insert(rendered, values.clone());
                }
                Some(values)
            }
            Err(error) => {
                let file = sources.add(format!("{path} (rendered)"), rendered.clone());
                let line = error.location().map_or(1, |l| l.line());
                self.diagnostics.push(
                    Diagnostic::error(format!("the rendered values of {path} are not valid YAML"))
                        .at(Span::new(file, line_range(&rendered, line)), "here")
                        .help("this is a bug of the component template in the core catalog"),
                );
                None
            }
        }
    }

    /// `values_custom` to JSON, rendering strings that use template syntax.
    fn render_custom(
        &mut self,
        node: &Node,
        ctx: &minijinja::Value,
        sources: &mut SourceMap,
    ) -> Option<Json> {
        let mut ok = true;
        let value = self.render_node(node, ctx, sources, &mut ok);
        ok.then_some(value)
    }

    fn render_node(
        &mut self,
        node: &Node,
        ctx: &minijinja::Value,
        sources: &mut SourceMap,
        ok: &mut bool,
    ) -> Json {
        match &node.value {
            Value::String(text) if text.contains('\u{1}') => {
                // U+0001 delimits the placeholders secrets stand for while values are built; a
                // value holding one could pass for a secret.
                *ok = false;
                self.diagnostics.push(
                    Diagnostic::error("`values_custom` contains the control character U+0001")
                        .at(node.span, "in this value")
                        .help("remove the control character; secrets come from `secrets.enc.yaml`"),
                );
                Json::Null
            }
            Value::String(text) if has_template_syntax(text) => {
                let name = sources.name(node.span.file).to_owned();
                match self.renderer.render_once(&name, text, ctx) {
                    Ok(rendered) => Json::String(rendered),
                    Err(error) => {
                        *ok = false;
                        // A limit or a misused secret is shown at the expression; other errors
                        // (strict mode) at the value, as they always were.
                        let inner = error
                            .range
                            .clone()
                            .filter(|_| error.kind != TemplateErrorKind::Template)
                            .and_then(|r| inner_span(sources, node.span, text, r));
                        let (span, label) = match inner {
                            Some(span) => (span, "here"),
                            None => (node.span, "in this value"),
                        };
                        self.diagnostics.push(
                            Diagnostic::error(format!("cannot render `values_custom`: {}", error.message))
                                .at(span, label)
                                .help(error.kind.help()),
                        );
                        Json::Null
                    }
                }
            }
            Value::Array(items) => {
                Json::Array(items.iter().map(|i| self.render_node(i, ctx, sources, ok)).collect())
            }
            Value::Table(table) => Json::Object(
                table.iter().map(|(k, e)| (k.clone(), self.render_node(&e.node, ctx, sources, ok))).collect(),
            ),
            _ => node.to_json(),
        }
    }
}

/// The span of a range of a string's value in its TOML file, when the file holds the value
/// verbatim after the opening quote up to the range's end (no escapes); `None` otherwise.
fn inner_span(sources: &SourceMap, span: Span, value: &str, range: std::ops::Range<usize>) -> Option<Span> {
    let quoted = sources.snippet(span);
    let opening = ["\"\"\"\n", "\'\'\'\n", "\"\"\"", "\'\'\'", "\"", "\'"]
        .into_iter()
        .find(|q| quoted.starts_with(q))?;
    let body = quoted.get(opening.len()..)?;
    let end = range.end.min(value.len());
    let start = range.start.min(end);
    (body.get(..end)? == value.get(..end)?)
        .then(|| Span::new(span.file, span.start + opening.len() + start..span.start + opening.len() + end))
}

fn line_range(text: &str, line: usize) -> std::ops::Range<usize> {
    let start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    let len = text[start.min(text.len())..].lines().next().map_or(0, str::len);
    start..(start + len.max(1)).min(text.len().max(start))
}
