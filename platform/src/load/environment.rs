//! Reads one environment's files (client.toml, env.toml, namespace.toml, component.toml),
//! checks each against its schema, resolves templates in the catalog, checks inputs against
//! each template's schema, and merges the levels. Every problem becomes a diagnostic; the
//! environment is returned only when there are none.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::catalog::Catalog;
use crate::diagnostic::Diagnostic;
use crate::load::node::{Node, Value, parse_toml};
use crate::load::schema_check::{RESERVED_KEYS, check_schema, check_schema_at, suggest};
use crate::load::tree::SourceTree;
use crate::model::{
    ClientFile, ComponentFile, ComponentInstance, EnvFile, Environment, Namespace, NamespaceFile, names,
};
use crate::source::{SourceMap, Span};

/// The folder of the client hierarchy, relative to the repository root.
pub const ENVIRONMENTS_DIR: &str = "environments";

/// The result of loading: the environment when nothing was wrong, and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    pub environment: Option<Environment>,
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

/// Why an environment could not be loaded at all (as opposed to loaded with diagnostics).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("unknown environment `{name}`{}", .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownEnvironment { name: String, suggestion: Option<String>, known: Vec<String> },
    #[error("cannot read the client files in {tree}")]
    Io {
        tree: String,
        #[source]
        source: std::io::Error,
    },
}

/// Names of the environments in the tree: directories of `environments/` with an `env.toml`.
pub fn list_environments(tree: &dyn SourceTree) -> Result<Vec<String>, LoadError> {
    let io = |source| LoadError::Io { tree: tree.describe(), source };
    let mut names = Vec::new();
    for dir in tree.dirs(ENVIRONMENTS_DIR).map_err(io)? {
        if tree.exists(&format!("{ENVIRONMENTS_DIR}/{dir}/env.toml")).map_err(io)? {
            names.push(dir);
        }
    }
    Ok(names)
}

/// Loads environment `name` and checks it against the catalog's types.
pub fn load_environment(tree: &dyn SourceTree, catalog: &Catalog, name: &str) -> Result<Loaded, LoadError> {
    let known = list_environments(tree)?;
    if !known.iter().any(|k| k == name) {
        let suggestion = suggest(name, known.iter().map(String::as_str)).map(str::to_owned);
        return Err(LoadError::UnknownEnvironment { name: name.to_owned(), suggestion, known });
    }
    let mut loader = Loader { tree, catalog, sources: SourceMap::new(), diagnostics: Vec::new() };
    let environment = loader.load(name).map_err(|source| LoadError::Io { tree: tree.describe(), source })?;
    let environment = if loader.diagnostics.is_empty() { environment } else { None };
    Ok(Loaded { environment, sources: loader.sources, diagnostics: loader.diagnostics })
}

struct Loader<'a> {
    tree: &'a dyn SourceTree,
    catalog: &'a Catalog,
    sources: SourceMap,
    diagnostics: Vec<Diagnostic>,
}

/// Where a `values_template` was found, for the targeted message.
enum Owner<'a> {
    Everyone,
    Template(Option<&'a str>),
}

impl Loader<'_> {
    fn load(&mut self, name: &str) -> std::io::Result<Option<Environment>> {
        let dir = format!("{ENVIRONMENTS_DIR}/{name}");
        let client =
            self.load_file::<ClientFile>(&format!("{ENVIRONMENTS_DIR}/client.toml"), true, Owner::Everyone)?;
        let env = self.load_file::<EnvFile>(&format!("{dir}/env.toml"), true, Owner::Everyone)?;

        let mut namespaces = Vec::new();
        for ns_name in self.tree.dirs(&dir)? {
            if ns_name.starts_with('.') {
                continue;
            }
            let ns_path = format!("{dir}/{ns_name}/namespace.toml");
            if !self.tree.exists(&ns_path)? {
                continue; // not a namespace: bundles, notes and the like may live here
            }
            let Some((ns_file, ns_node)) =
                self.load_file::<NamespaceFile>(&ns_path, false, Owner::Everyone)?
            else {
                continue;
            };
            if !names::is_dns_label(&ns_name) {
                self.diagnostics.push(name_error("namespace", &ns_name, &ns_path, start_span(&ns_node)));
            }
            let mut components = Vec::new();
            for comp_name in self.tree.dirs(&format!("{dir}/{ns_name}"))? {
                let comp_dir = format!("{dir}/{ns_name}/{comp_name}");
                let comp_path = format!("{comp_dir}/component.toml");
                if comp_name.starts_with('.') || !self.tree.exists(&comp_path)? {
                    continue;
                }
                if let Some(instance) =
                    self.load_component(&ns_name, &comp_name, &comp_dir, &client, &env, &ns_node)?
                {
                    components.push(instance);
                }
            }
            namespaces.push(Namespace {
                name: ns_name,
                path: ns_path,
                file: ns_file,
                node: ns_node,
                components,
            });
        }

        let (Some((client, client_node)), Some((env, env_node))) = (client, env) else { return Ok(None) };
        Ok(Some(Environment { name: name.to_owned(), dir, client, client_node, env, env_node, namespaces }))
    }

    /// Reads, parses, schema-checks and deserializes one file. `None` when it has problems.
    fn load_file<T: DeserializeOwned + schemars::JsonSchema>(
        &mut self,
        path: &str,
        required: bool,
        owner: Owner<'_>,
    ) -> std::io::Result<Option<(T, Node)>> {
        let Some(text) = self.tree.read(path)? else {
            if required {
                self.diagnostics.push(Diagnostic::error(format!("missing file {path}")).help(
                    "every environment needs environments/client.toml and environments/<env>/env.toml",
                ));
            }
            return Ok(None);
        };
        let file = self.sources.add(path, text.clone());
        let node = match parse_toml(file, &text) {
            Ok(node) => node,
            Err(errors) => {
                self.diagnostics.extend(errors);
                return Ok(None);
            }
        };
        // `values_template` gets its own targeted error; the rest of the file is still checked.
        self.report_values_template(&node, &owner);
        let node = without_reserved_keys(node);
        let schema = serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON");
        let problems = check_schema(&node, &schema);
        if !problems.is_empty() {
            self.diagnostics.extend(problems);
            return Ok(None);
        }
        match serde_json::from_value::<T>(node.to_json()) {
            Ok(value) => Ok(Some((value, node))),
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::error(format!("cannot read {path}: {e}"))
                        .at(start_span(&node), "in this file"),
                );
                Ok(None)
            }
        }
    }

    /// `values_template` anywhere in a client file gets a targeted error.
    fn report_values_template(&mut self, node: &Node, owner: &Owner<'_>) {
        let Value::Table(table) = &node.value else { return };
        for (key, entry) in table {
            if key == "values_template" {
                let label = match owner {
                    Owner::Everyone => "set by each component's template in the core catalog".to_owned(),
                    Owner::Template(Some(module)) => format!("set by {module}"),
                    Owner::Template(None) => "set by the component's template in the core catalog".to_owned(),
                };
                self.diagnostics.push(
                    Diagnostic::error(
                        "`values_template` is owned by the component template and cannot be set here",
                    )
                    .at(entry.key_span, label)
                    .help("put client overrides in `values_custom`"),
                );
            } else {
                self.report_values_template(&entry.node, owner);
            }
        }
    }

    fn load_component(
        &mut self,
        ns_name: &str,
        comp_name: &str,
        comp_dir: &str,
        client: &Option<(ClientFile, Node)>,
        env: &Option<(EnvFile, Node)>,
        ns_node: &Node,
    ) -> std::io::Result<Option<ComponentInstance>> {
        let path = format!("{comp_dir}/component.toml");
        // Peek at the template name first so a `values_template` error can name its owner.
        let peek_template = template_name(self.tree.read(&path)?.as_deref(), comp_name);
        let module = self.catalog.get(&peek_template).map(|t| t.definition.module_path());
        let Some((file, node)) = self.load_file::<ComponentFile>(&path, true, Owner::Template(module))?
        else {
            return Ok(None);
        };
        if !names::is_dns_label(comp_name) {
            self.diagnostics.push(name_error("component", comp_name, &path, start_span(&node)));
        }
        let template_name = file.template.clone().unwrap_or_else(|| comp_name.to_owned());
        let Some(template) = self.catalog.get(&template_name) else {
            let span = match node.entry_at(&["template"]) {
                Some(entry) => entry.node.span,
                None => start_span(&node),
            };
            let mut d = Diagnostic::error(format!("unknown component template `{template_name}`")).at(
                span,
                if file.template.is_some() {
                    "no such template in the core catalog"
                } else {
                    "the directory name is the template name"
                },
            );
            d = match suggest(&template_name, self.catalog.names()) {
                Some(best) => d.help(format!("did you mean `{best}`?")),
                None => d.help(format!(
                    "set `template` to one of the catalog's templates: {}",
                    self.catalog.names().collect::<Vec<_>>().join(", ")
                )),
            };
            self.diagnostics.push(d);
            return Ok(None);
        };

        // Inputs: checked against the template's own schema.
        let inputs_node = node
            .entry_at(&["inputs"])
            .map(|e| e.node.clone())
            .unwrap_or_else(|| Node::empty_table(start_span(&node)));
        let problems = check_schema_at(&inputs_node, &template.inputs_schema(), &["inputs"]);
        if !problems.is_empty() {
            self.diagnostics.extend(problems);
            return Ok(None);
        }
        let inputs = match template.normalize_inputs(inputs_node.to_json()) {
            Ok(inputs) => inputs,
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::error(format!("invalid inputs for `{template_name}`: {e}"))
                        .at(inputs_node.span, "here"),
                );
                return Ok(None);
            }
        };

        // Merge values_custom and labels down the hierarchy.
        let layers: Vec<&Node> =
            [client.as_ref().map(|c| &c.1), env.as_ref().map(|e| &e.1), Some(ns_node), Some(&node)]
                .into_iter()
                .flatten()
                .collect();
        let mut values_custom = Node::empty_table(start_span(&node));
        let mut labels = BTreeMap::new();
        for layer in layers {
            if let Some(entry) = layer.entry_at(&["values_custom"]) {
                values_custom.merge(&entry.node);
            }
            if let Some(entry) = layer.entry_at(&["labels"])
                && let Some(table) = entry.node.as_table()
            {
                for (key, value) in table {
                    if let Some(text) = value.node.as_str() {
                        labels.insert(key.clone(), text.to_owned());
                    }
                }
            }
        }
        let secrets_path = format!("{comp_dir}/secrets.enc.yaml");
        let secrets_path = self.tree.exists(&secrets_path)?.then_some(secrets_path);
        Ok(Some(ComponentInstance {
            name: comp_name.to_owned(),
            namespace: ns_name.to_owned(),
            template: template_name,
            path,
            file,
            node,
            inputs,
            values_custom,
            labels,
            secrets_path,
        }))
    }
}

/// The template a `component.toml` instantiates: its `template` key, else the directory
/// name. A cheap read for callers that need only this (the file may even be invalid).
pub fn template_name(component_toml: Option<&str>, directory_name: &str) -> String {
    component_toml
        .and_then(|text| toml::from_str::<toml::Table>(text).ok())
        .and_then(|t| t.get("template").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| directory_name.to_owned())
}

/// The tree without the keys only the core may set, so the rest of a file can be checked.
fn without_reserved_keys(mut node: Node) -> Node {
    if let Value::Table(table) = &mut node.value {
        table.retain(|key, _| !RESERVED_KEYS.contains(&key.as_str()));
        for entry in table.values_mut() {
            let span = entry.node.span;
            let inner = std::mem::replace(&mut entry.node, Node::empty_table(span));
            entry.node = without_reserved_keys(inner);
        }
    }
    node
}

fn name_error(what: &str, name: &str, path: &str, span: Span) -> Diagnostic {
    Diagnostic::error(format!("{what} name `{name}` is not a DNS-1123 label"))
        .at(span, format!("in {}", path.rsplit_once('/').map_or(path, |(dir, _)| dir)))
        .help(format!("rename the directory: {what} names are lowercase letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit"))
}

/// The first character of a file, for problems that belong to the whole file.
pub fn start_span(node: &Node) -> Span {
    Span { file: node.span.file, start: 0, end: node.span.end.min(1) }
}
