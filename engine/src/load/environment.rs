//! Reads one environment's files (client.toml, env.toml, namespace.toml, component.toml),
//! checks each against its schema, resolves templates in the catalog, checks inputs against
//! each template's schema, and merges the levels. Every problem becomes a diagnostic; the
//! environment is returned only when there are none.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::catalog::Catalog;
use crate::diagnostic::Diagnostic;
use crate::load::schema_check::{RESERVED_KEYS, check_schema_at, check_schema_detailed, suggest};
use crate::load::tree::{DirEntry, EntryKind, Refused, SourceTree, refusal};
use crate::model::{
    ClientFile, ComponentFile, ComponentInstance, EnvFile, Environment, Namespace, NamespaceFile, names,
};
use crate::node::{Node, Value, parse_toml};
use crate::source::{SourceMap, Span};

/// The folder of the client hierarchy, relative to the repository root.
pub const ENVIRONMENTS_DIR: &str = "environments";

/// The result of loading: the environment when nothing was wrong, and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    pub environment: Option<Environment>,
    /// When there were problems: what could be loaded (client.toml and env.toml usable, every
    /// namespace and component that was found, those with problems as far as they could be
    /// read), so the checks that need only the usable files still run. Never compiled.
    pub partial: Option<Environment>,
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
    Ok(survey_environments(tree)?.0)
}

/// The environments of the tree (as [`list_environments`]) and a diagnostic for everything
/// else in `environments/` that is neither `client.toml`, a `*.md` note nor an environment
/// directory (one with an `env.toml`): `check` of every environment reports them.
pub fn survey_environments(tree: &dyn SourceTree) -> Result<(Vec<String>, Vec<Diagnostic>), LoadError> {
    let io = |source| LoadError::Io { tree: tree.describe(), source };
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for entry in tree.entries(ENVIRONMENTS_DIR).map_err(io)? {
        let path = format!("{ENVIRONMENTS_DIR}/{}", entry.name);
        match &entry.kind {
            EntryKind::Dir => {
                if tree.exists(&format!("{path}/env.toml")).map_err(io)? {
                    names.push(entry.name);
                } else {
                    problems.push(
                        Diagnostic::error(format!(
                            "directory {path} is not an environment: it has no env.toml"
                        ))
                        .help(format!(
                            "every directory in {ENVIRONMENTS_DIR}/ is an environment with an env.toml{}",
                            found_files(tree, &path)
                        )),
                    );
                }
            }
            EntryKind::File if entry.name == "client.toml" || is_note(&entry.name) => {}
            EntryKind::File => problems.push(unexpected_file(
                &path,
                "environments/ holds client.toml, *.md notes and one directory per environment",
            )),
            EntryKind::Refused(refused) => problems.push(refusal_diagnostic(refused)),
        }
    }
    Ok((names, problems))
}

/// Loads environment `name` and checks it against the catalog's types.
pub fn load_environment(tree: &dyn SourceTree, catalog: &Catalog, name: &str) -> Result<Loaded, LoadError> {
    let known = list_environments(tree)?;
    if !known.iter().any(|k| k == name) {
        let suggestion = suggest(name, known.iter().map(String::as_str)).map(str::to_owned);
        return Err(LoadError::UnknownEnvironment { name: name.to_owned(), suggestion, known });
    }
    let mut loader = Loader {
        tree,
        catalog,
        sources: SourceMap::new(),
        diagnostics: Vec::new(),
        secrets_checked: false,
        schemas: Default::default(),
    };
    let environment = loader.load(name);
    let (environment, partial) =
        if loader.diagnostics.is_empty() { (environment, None) } else { (None, environment) };
    Ok(Loaded { environment, partial, sources: loader.sources, diagnostics: loader.diagnostics })
}

struct Loader<'a> {
    tree: &'a dyn SourceTree,
    catalog: &'a Catalog,
    sources: SourceMap,
    diagnostics: Vec<Diagnostic>,
    /// Whether the secrets files will be read by the secrets check (client.toml and env.toml
    /// are usable): it reports a refused secrets file, the loader otherwise.
    secrets_checked: bool,
    /// The JSON Schema of each file type, generated once per load (not once per file).
    schemas: std::collections::HashMap<std::any::TypeId, std::rc::Rc<serde_json::Value>>,
}

/// Where a `values_template` was found, for the targeted message.
enum Owner<'a> {
    Everyone,
    Template(Option<&'a str>),
}

/// One client file as far as it could be read.
struct FileLoad<T> {
    /// The typed file: when it parsed and, unknown keys left out, matched its schema.
    typed: Option<T>,
    /// The file's tree (unknown keys left out), or an empty table when it could not be parsed.
    node: Option<Node>,
}

/// The name of a note beside the client files (`README.md` and the like).
fn is_note(name: &str) -> bool {
    name.ends_with(".md")
}

/// The tool's own state in an environment directory (journal, lock, rotation journal): not
/// configuration, and not an input of a plan file.
pub const STATE_DIR: &str = ".opus";

/// Whether a directory entry is something the loader passes over without reading (the
/// tool's state, notes, age key files): not an input of a plan file.
pub fn is_not_configuration(name: &str) -> bool {
    name == STATE_DIR || is_note(name) || name.ends_with(".agekey")
}

impl Loader<'_> {
    fn load(&mut self, name: &str) -> Option<Environment> {
        let dir = format!("{ENVIRONMENTS_DIR}/{name}");
        let client =
            self.load_file::<ClientFile>(&format!("{ENVIRONMENTS_DIR}/client.toml"), true, Owner::Everyone);
        let env_path = format!("{dir}/env.toml");
        let env = self.load_file::<EnvFile>(&env_path, true, Owner::Everyone);
        if !names::is_dns_label(name) {
            let mut d = Diagnostic::error(format!("environment name `{name}` is not a DNS-1123 label"));
            if let Some(node) = &env.node {
                d = d.at(start_span(node), format!("in {dir}"));
            }
            self.diagnostics.push(d.help(
                "rename the directory: environment names are lowercase letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit",
            ));
        }
        self.secrets_checked = client.typed.is_some() && env.typed.is_some();
        // Files env.toml itself places in the environment's directory (a directory target's
        // key file or bundle); unknown when env.toml could not be read.
        let placed: Option<Vec<String>> = env.node.as_ref().filter(|_| env.typed.is_some()).map(|node| {
            [["target", "key_store"], ["target", "path"]]
                .iter()
                .filter_map(|key| node.entry_at(key).and_then(|e| e.node.as_str()))
                .filter_map(|path| path.strip_prefix(&format!("{dir}/")))
                .filter_map(|rest| rest.split('/').next().map(str::to_owned))
                .collect()
        });

        let mut namespaces = Vec::new();
        for entry in self.entries(&dir) {
            let path = format!("{dir}/{}", entry.name);
            match &entry.kind {
                EntryKind::Dir if entry.name == STATE_DIR => {}
                EntryKind::Dir if placed.as_ref().is_some_and(|p| p.contains(&entry.name)) => {}
                EntryKind::Dir => {
                    if let Some(namespace) = self.load_namespace(&dir, &entry.name, &client, &env) {
                        namespaces.push(namespace);
                    }
                }
                EntryKind::File if entry.name == "env.toml" || entry.name == "secrets.enc.yaml" => {}
                // Age key files: the one env.toml names, and copies of an environment keep it.
                EntryKind::File if is_note(&entry.name) || entry.name.ends_with(".agekey") => {}
                EntryKind::File => match &placed {
                    Some(placed) if placed.contains(&entry.name) => {}
                    Some(_) => self.diagnostics.push(unexpected_file(
                        &path,
                        "an environment directory holds env.toml, secrets.enc.yaml, *.md notes, *.agekey key files, the files env.toml names, namespace directories and .opus/ (the tool's state)",
                    )),
                    None => {}
                },
                // env.toml itself was reported when it was read.
                EntryKind::Refused(_) if entry.name == "env.toml" => {}
                EntryKind::Refused(_) if entry.name == "secrets.enc.yaml" && self.secrets_checked => {}
                EntryKind::Refused(refused) => self.diagnostics.push(refusal_diagnostic(refused)),
            }
        }

        let client_node = client.node?;
        let env_node = env.node?;
        Some(Environment {
            name: name.to_owned(),
            dir,
            client: client.typed?,
            client_node,
            env: env.typed?,
            env_node,
            namespaces,
        })
    }

    /// The entries of a directory; a directory that cannot be listed is a diagnostic.
    fn entries(&mut self, dir: &str) -> Vec<DirEntry> {
        match self.tree.entries(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.diagnostics.push(match refusal(&e) {
                    Some(refused) => refusal_diagnostic(refused),
                    None => Diagnostic::error(format!("cannot read directory {dir}: {}", io_reason(&e, dir)))
                        .help("make the directory readable (or remove it)"),
                });
                Vec::new()
            }
        }
    }

    fn load_namespace(
        &mut self,
        dir: &str,
        ns_name: &str,
        client: &FileLoad<ClientFile>,
        env: &FileLoad<EnvFile>,
    ) -> Option<Namespace> {
        let ns_dir = format!("{dir}/{ns_name}");
        let ns_path = format!("{ns_dir}/namespace.toml");
        let entries = self.entries(&ns_dir);
        match entries.iter().find(|e| e.name == "namespace.toml").map(|e| &e.kind) {
            Some(EntryKind::File) => {}
            Some(EntryKind::Refused(refused)) => {
                self.diagnostics.push(refusal_diagnostic(refused));
                return None;
            }
            Some(EntryKind::Dir) => {
                self.diagnostics.push(
                    Diagnostic::error(format!("{ns_path} is a directory, not a file"))
                        .help("a namespace's settings are the file namespace.toml"),
                );
                return None;
            }
            None => {
                let hint = if entries.iter().any(|e| e.name == "component.toml") {
                    format!(
                        "it has a component.toml: components live in a namespace, {dir}/<namespace>/<component>/component.toml"
                    )
                } else {
                    format!(
                        "every directory in an environment is a namespace with a namespace.toml (or .opus/, the tool's state){}",
                        listed(&entries)
                    )
                };
                self.diagnostics.push(
                    Diagnostic::error(format!(
                        "directory {ns_dir} is not a namespace: it has no namespace.toml"
                    ))
                    .help(hint),
                );
                return None;
            }
        }
        let loaded = self.load_file::<NamespaceFile>(&ns_path, true, Owner::Everyone);
        let node = loaded.node.unwrap_or_else(|| self.placeholder(&ns_path));
        if !names::is_dns_label(ns_name) {
            self.diagnostics.push(name_error("namespace", ns_name, &ns_path, start_span(&node)));
        }
        let file = loaded.typed.unwrap_or_else(fallback);
        let mut components = Vec::new();
        for entry in entries {
            let path = format!("{ns_dir}/{}", entry.name);
            match &entry.kind {
                EntryKind::Dir => {
                    if let Some(instance) =
                        self.load_component(ns_name, &entry.name, &path, client, env, &node)
                    {
                        components.push(instance);
                    }
                }
                EntryKind::File if entry.name == "namespace.toml" || is_note(&entry.name) => {}
                EntryKind::File => self.diagnostics.push(unexpected_file(
                    &path,
                    "a namespace directory holds namespace.toml, *.md notes and one directory per component",
                )),
                EntryKind::Refused(refused) => self.diagnostics.push(refusal_diagnostic(refused)),
            }
        }
        Some(Namespace { name: ns_name.to_owned(), path: ns_path, file, node, components })
    }

    /// An empty tree standing for a file that could not be read at all.
    fn placeholder(&mut self, path: &str) -> Node {
        let file = self.sources.add(path, "");
        Node::empty_table(Span::new(file, 0..0))
    }

    /// The file's text; `None` (with a diagnostic when it is refused or unreadable, or
    /// missing and `required`) when there is none to check.
    fn read(&mut self, path: &str, required: bool) -> Option<String> {
        match self.tree.read(path) {
            Ok(Some(text)) => Some(text),
            Ok(None) => {
                if required {
                    self.diagnostics.push(Diagnostic::error(format!("missing file {path}")).help(
                        "every environment needs environments/client.toml and environments/<env>/env.toml",
                    ));
                }
                None
            }
            Err(e) => {
                self.diagnostics.push(match refusal(&e) {
                    Some(refused) => refusal_diagnostic(refused),
                    None => Diagnostic::error(format!("cannot read {path}: {}", io_reason(&e, path)))
                        .help("make the file readable"),
                });
                None
            }
        }
    }

    fn schema_of<T: schemars::JsonSchema + 'static>(&mut self) -> std::rc::Rc<serde_json::Value> {
        self.schemas
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| {
                std::rc::Rc::new(serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON"))
            })
            .clone()
    }

    /// Reads, parses, schema-checks and deserializes one file. Unknown keys are reported and
    /// left out, so the rest of the file still serves the checks that need it; any other
    /// problem leaves the file untyped.
    fn load_file<T: DeserializeOwned + schemars::JsonSchema + 'static>(
        &mut self,
        path: &str,
        required: bool,
        owner: Owner<'_>,
    ) -> FileLoad<T> {
        match self.read(path, required) {
            Some(text) => self.load_text(path, text, owner),
            None => FileLoad { typed: None, node: None },
        }
    }

    fn load_text<T: DeserializeOwned + schemars::JsonSchema + 'static>(
        &mut self,
        path: &str,
        text: String,
        owner: Owner<'_>,
    ) -> FileLoad<T> {
        match self.parse_text(path, text) {
            Ok(node) => self.check_parsed(path, node, owner),
            Err(empty) => FileLoad { typed: None, node: Some(empty) },
        }
    }

    /// Adds a file to the sources and parses it: its tree, or (the errors reported) an empty
    /// table spanning the file.
    fn parse_text(&mut self, path: &str, text: String) -> Result<Node, Node> {
        let len = text.len();
        let file = self.sources.add(path, text);
        let text = self.sources.file(file).text.clone();
        parse_toml(file, &text).map_err(|errors| {
            self.diagnostics.extend(errors);
            Node::empty_table(Span::new(file, 0..len))
        })
    }

    /// Schema-checks and deserializes a parsed file.
    fn check_parsed<T: DeserializeOwned + schemars::JsonSchema + 'static>(
        &mut self,
        path: &str,
        node: Node,
        owner: Owner<'_>,
    ) -> FileLoad<T> {
        // `values_template` gets its own targeted error; the rest of the file is still checked.
        self.report_values_template(&node, &owner);
        let node = without_reserved_keys(node);
        let schema = self.schema_of::<T>();
        let problems = check_schema_detailed(&node, &schema);
        let only_unknown_keys = problems.unknown_keys.len() == problems.diagnostics.len();
        self.diagnostics.extend(problems.diagnostics);
        let mut node = node;
        for key in &problems.unknown_keys {
            node.remove_at(key);
        }
        if !only_unknown_keys {
            return FileLoad { typed: None, node: Some(node) };
        }
        match serde_json::from_value::<T>(node.to_json()) {
            Ok(value) => FileLoad { typed: Some(value), node: Some(node) },
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::error(format!("cannot read {path}: {e}"))
                        .at(start_span(&node), "in this file"),
                );
                FileLoad { typed: None, node: Some(node) }
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

    /// A component directory. Its instance comes back whenever the directory is a component
    /// (it has a component.toml), with problems too: as far as its file could be read, so
    /// references to it resolve in the checks of the others.
    fn load_component(
        &mut self,
        ns_name: &str,
        comp_name: &str,
        comp_dir: &str,
        client: &FileLoad<ClientFile>,
        env: &FileLoad<EnvFile>,
        ns_node: &Node,
    ) -> Option<ComponentInstance> {
        let path = format!("{comp_dir}/component.toml");
        let entries = self.entries(comp_dir);
        if !entries.iter().any(|e| e.name == "component.toml") {
            self.diagnostics.push(
                Diagnostic::error(format!(
                    "directory {comp_dir} is not a component: it has no component.toml"
                ))
                .help(format!(
                    "every directory in a namespace is a component with a component.toml{}",
                    listed(&entries)
                )),
            );
            return None;
        }
        let mut secrets_path = None;
        let mut has_file = false;
        for entry in &entries {
            let entry_path = format!("{comp_dir}/{}", entry.name);
            match &entry.kind {
                EntryKind::File if entry.name == "component.toml" => has_file = true,
                EntryKind::File if entry.name == "secrets.enc.yaml" => secrets_path = Some(entry_path),
                EntryKind::File if is_note(&entry.name) => {}
                EntryKind::File => self.diagnostics.push(unexpected_file(
                    &entry_path,
                    "a component directory holds component.toml, secrets.enc.yaml and *.md notes",
                )),
                EntryKind::Dir => self.diagnostics.push(
                    Diagnostic::error(format!("unexpected directory {entry_path}"))
                        .help(format!("a component directory holds no directories: components are {ENVIRONMENTS_DIR}/<env>/<namespace>/<component>/component.toml, one level below their namespace")),
                ),
                EntryKind::Refused(_) if entry.name == "secrets.enc.yaml" && self.secrets_checked => {
                    secrets_path = Some(entry_path);
                }
                EntryKind::Refused(refused) => self.diagnostics.push(refusal_diagnostic(refused)),
            }
        }
        if !has_file {
            return None; // component.toml is refused or a directory: reported above
        }
        let parsed = self.read(&path, true).map(|text| self.parse_text(&path, text));
        let (loaded, ok) = match parsed {
            Some(Ok(node)) => {
                // The template name first, so a `values_template` error can name its owner.
                let peek_template = match node.entry_at(&["template"]).map(|e| &e.node.value) {
                    Some(Value::String(name)) => name.clone(),
                    _ => comp_name.to_owned(),
                };
                let module = self.catalog.get(&peek_template).map(|t| t.definition.module_path());
                let loaded = self.check_parsed::<ComponentFile>(&path, node, Owner::Template(module));
                let ok = loaded.typed.is_some();
                (loaded, ok)
            }
            Some(Err(empty)) => (FileLoad { typed: None, node: Some(empty) }, false),
            None => (FileLoad { typed: None, node: None }, false),
        };
        let node = loaded.node.unwrap_or_else(|| self.placeholder(&path));
        let file = loaded.typed.unwrap_or_else(|| fallback_component(&node));
        if !names::is_dns_label(comp_name) {
            self.diagnostics.push(name_error("component", comp_name, &path, start_span(&node)));
        }
        let template_name = file.template.clone().unwrap_or_else(|| comp_name.to_owned());
        let inputs_node = node
            .entry_at(&["inputs"])
            .map(|e| e.node.clone())
            .unwrap_or_else(|| Node::empty_table(start_span(&node)));
        let mut inputs = inputs_node.to_json();
        match self.catalog.get(&template_name) {
            None if ok => {
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
            }
            // Inputs are checked against the template's own schema once the file is sound.
            Some(template) if ok => {
                let problems = check_schema_at(&inputs_node, template.inputs_schema(), &["inputs"]);
                if problems.is_empty() {
                    match template.normalize_inputs(inputs_node.to_json()) {
                        Ok(normalized) => inputs = normalized,
                        Err(e) => self.diagnostics.push(
                            Diagnostic::error(format!("invalid inputs for `{template_name}`: {e}"))
                                .at(inputs_node.span, "here"),
                        ),
                    }
                } else {
                    self.diagnostics.extend(problems);
                }
            }
            _ => {}
        }

        // Merge values_custom and labels down the hierarchy.
        let layers: Vec<&Node> = [client.node.as_ref(), env.node.as_ref(), Some(ns_node), Some(&node)]
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
        Some(ComponentInstance {
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
        })
    }
}

/// A file type's value from an empty table: its defaults, standing for a file with problems.
fn fallback<T: DeserializeOwned>() -> T {
    serde_json::from_value(serde_json::json!({})).expect("an empty table is a valid file of this type")
}

/// A component file with problems, as far as it says what matters to the others: whether it
/// is enabled and which template it instantiates.
fn fallback_component(node: &Node) -> ComponentFile {
    let mut file: ComponentFile = fallback();
    if let Some(Value::Boolean(enabled)) = node.entry_at(&["enabled"]).map(|e| &e.node.value) {
        file.enabled = *enabled;
    }
    if let Some(template) = node.entry_at(&["template"]).and_then(|e| e.node.as_str()) {
        file.template = Some(template.to_owned());
    }
    file
}

fn unexpected_file(path: &str, holds: &str) -> Diagnostic {
    Diagnostic::error(format!("unexpected file {path}")).help(format!("{holds}; rename or remove it"))
}

/// A refused path as a diagnostic (it names the path, never the content).
pub fn refusal_diagnostic(refused: &Refused) -> Diagnostic {
    Diagnostic::error(refused.to_string()).help(refused.help())
}

/// An IO error's reason without the path the tree already put in front of it.
fn io_reason(error: &std::io::Error, path: &str) -> String {
    let text = error.to_string();
    for prefix in [format!("cannot read {path}: "), format!("cannot list {path}: ")] {
        if let Some(rest) = text.strip_prefix(&prefix) {
            return rest.to_owned();
        }
    }
    text
}

/// `; found: a, b` listing what a directory holds (at most five names), for help lines.
fn listed(entries: &[DirEntry]) -> String {
    if entries.is_empty() {
        return "; this one is empty".to_owned();
    }
    let mut names: Vec<String> = entries
        .iter()
        .take(5)
        .map(|e| if e.kind == EntryKind::Dir { format!("{}/", e.name) } else { e.name.clone() })
        .collect();
    if entries.len() > 5 {
        names.push("...".to_owned());
    }
    format!("; found {}", names.join(", "))
}

fn found_files(tree: &dyn SourceTree, dir: &str) -> String {
    tree.entries(dir).map(|entries| listed(&entries)).unwrap_or_default()
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
