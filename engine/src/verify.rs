//! Verification of a loaded environment beyond what the schemas say: dependencies between
//! component instances (typed in the catalog, or named in `depends_on`), cycles, and the
//! platform's domain rules (brand id, directory environment, cert-manager in production,
//! database identifiers, application versions, age recipients).

use std::collections::BTreeMap;
use std::panic::Location;

use crate::catalog::Catalog;
use crate::core_version::{core_help, parse_core_choice};
use crate::diagnostic::Diagnostic;
use crate::load::environment::start_span;
use crate::load::schema_check::suggest;
use crate::load::tree::SourceTree;
use crate::model::{ComponentInstance, DirectoryEnvironment, Environment, Target, names};
use crate::source::{SourceMap, Span};

/// Where a dependency edge was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// In a `depends_on` list of a `component.toml`.
    Client(Span),
    /// In the core catalog's Rust code.
    Catalog(&'static Location<'static>),
}

/// `from` must wait for `to`. Ids are `<namespace>/<component>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub declared: Declared,
}

/// The verified dependencies of an environment's enabled components.
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    pub edges: Vec<Edge>,
    /// Each component's direct dependencies, sorted and without duplicates.
    direct: BTreeMap<String, Vec<String>>,
}

impl Dependencies {
    pub fn new(edges: Vec<Edge>) -> Dependencies {
        let mut direct: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for edge in &edges {
            direct.entry(edge.from.clone()).or_default().push(edge.to.clone());
        }
        for deps in direct.values_mut() {
            deps.sort_unstable();
            deps.dedup();
        }
        Dependencies { edges, direct }
    }

    /// Ids a component depends on directly, sorted and without duplicates.
    pub fn of(&self, id: &str) -> Vec<&str> {
        self.direct.get(id).map(|deps| deps.iter().map(String::as_str).collect()).unwrap_or_default()
    }
}

/// Checks an environment; returns its dependencies and every problem found. `tree` is used to
/// quote the catalog's Rust code when a cycle runs through it (added to `sources`).
pub fn verify(
    env: &Environment,
    catalog: &Catalog,
    tree: &dyn SourceTree,
    sources: &mut SourceMap,
) -> (Dependencies, Vec<Diagnostic>) {
    let mut out = Vec::new();
    check_core(env, &mut out);
    check_identity(env, &mut out);
    check_directory(env, &mut out);
    check_journal(env, &mut out);
    check_flux_key_store(env, &mut out);
    check_recipients(env, &mut out);
    for component in env.components() {
        check_component(env, catalog, component, &mut out);
    }
    check_shared_databases(env, catalog, &mut out);
    let deps = resolve_dependencies(env, catalog, &mut out);
    check_cycles(&deps, sources, tree, &mut out);
    (deps, out)
}

/// `core` is `example` or a version; anything else would run this checkout's core (or reach
/// the network for a tag that cannot be meant), so it is refused with its place.
fn check_core(env: &Environment, out: &mut Vec<Diagnostic>) {
    let core = &env.env.core;
    if parse_core_choice(core).is_some() {
        return;
    }
    out.push(
        Diagnostic::error(format!("invalid core {core:?}"))
            .at(
                env.env_node.span_at(&["core"]),
                "neither `example` nor a version `MAJOR.MINOR.PATCH` with an optional `-PRERELEASE`",
            )
            .help(core_help(core)),
    );
}

/// A protected cluster environment needs a journal and a lock every operator shares: with
/// the file journal they live in each operator's working tree, and two operators could deploy
/// production at once. Keeping the file journal must be written explicitly (`deploy` then
/// warns every time).
fn check_journal(env: &Environment, out: &mut Vec<Diagnostic>) {
    if !env.env.protected || !matches!(env.env.target, Target::Kube { .. }) {
        return;
    }
    if env.env_node.entry_at(&["journal"]).is_some() {
        return;
    }
    out.push(
        Diagnostic::error(format!(
            "protected environment `{}` deploys to a cluster without a shared journal",
            env.name
        ))
        .at(env.env_node.key_span_at(&["protected"]), "protected, and env.toml has no `[journal]`")
        .also_at(env.env_node.span_at(&["target", "kind"]), "a cluster target")
        .help(
            "add `[journal]` with `backend = \"postgres\"` (the journal and the deploy lock in the environment's PostgreSQL, shared by every operator); `backend = \"file\"` keeps them in each operator's working tree, so two operators can deploy at once",
        ),
    );
}

/// A `flux` target keeps its age key either in the cluster's decryption Secret (`context`) or
/// in a local key store file (`key_store`), never both: with two stores, a rotation would
/// update one and leave the other holding a retired key.
fn check_flux_key_store(env: &Environment, out: &mut Vec<Diagnostic>) {
    let Target::Flux { context: Some(_), key_store: Some(_), decryption_secret, namespace, .. } =
        &env.env.target
    else {
        return;
    };
    out.push(
        Diagnostic::error(format!(
            "the flux target of `{}` names two key stores: the cluster's decryption Secret and a key store file",
            env.name
        ))
        .at(
            env.env_node.key_span_at(&["target", "context"]),
            format!("the key is kept in the Secret {namespace}/{decryption_secret} of this cluster"),
        )
        .also_at(env.env_node.key_span_at(&["target", "key_store"]), "and in this file")
        .help(
            "remove `key_store` to keep the key in the cluster (`cargo xtask keys restore` puts a backed-up key there), or remove `context` to keep the decryption Secret by hand",
        ),
    );
}

/// Two components provisioning the same database or the same role would fight over it: each
/// step sets the role's password to its own secret.
fn check_shared_databases(env: &Environment, catalog: &Catalog, out: &mut Vec<Diagnostic>) {
    struct Provisioned<'a> {
        component: &'a ComponentInstance,
        name: String,
        user: String,
    }
    let mut provisioned = Vec::new();
    for component in env.components().filter(|c| c.file.enabled) {
        let Some(spec) = catalog.get(&component.template).and_then(|t| t.definition.database_spec()) else {
            continue;
        };
        let overrides = component.file.database.clone().unwrap_or_default();
        provisioned.push(Provisioned {
            component,
            name: overrides.name.unwrap_or(spec.name.to_owned()),
            user: overrides.user.unwrap_or(spec.user.to_owned()),
        });
    }
    // Where a component's value comes from, most explicit first: the override, the
    // `template` key, the directory name.
    let span_of = |component: &ComponentInstance, key: &str| match component.node.entry_at(&["database", key])
    {
        Some(entry) => (entry.node.span, "set here", 2),
        None => match component.node.entry_at(&["template"]) {
            Some(entry) => (entry.node.span, "from this template", 1),
            None => (start_span(&component.node), "from the component template", 0),
        },
    };
    for (what, key) in [("database", "name"), ("role", "user")] {
        for (idx, second) in provisioned.iter().enumerate() {
            let value = |p: &Provisioned| if key == "name" { p.name.clone() } else { p.user.clone() };
            let Some(first) = provisioned[..idx].iter().find(|p| value(p) == value(second)) else { continue };
            // The diagnostic points at the more explicit of the two (the copy, the override).
            let (first, later) = if span_of(first.component, key).2 > span_of(second.component, key).2 {
                (second, first)
            } else {
                (first, second)
            };
            let (span, label, _) = span_of(later.component, key);
            let (first_span, first_label, _) = span_of(first.component, key);
            out.push(
                Diagnostic::error(format!(
                    "{} and {} both provision {what} `{}`",
                    first.component.id().min(later.component.id()),
                    first.component.id().max(later.component.id()),
                    value(later)
                ))
                .at(span, format!("{} {what} `{}`, {label}", later.component.id(), value(later)))
                .related(
                    Diagnostic::error(format!("{} provisions {what} `{}`", first.component.id(), value(later)))
                        .at(first_span, format!("{} {what} `{}`, {first_label}", first.component.id(), value(later))),
                )
                .help(format!(
                    "{}: give one of them its own `[database] {key} = \"...\"` in its component.toml, or remove it",
                    if key == "user" {
                        "both steps set the role's password, each to its own component's `db.password`, so they would fight over it"
                    } else {
                        "both steps make the database owned by their own role, so they would fight over it"
                    }
                )),
            );
        }
    }
}

fn check_identity(env: &Environment, out: &mut Vec<Diagnostic>) {
    let brand = &env.client.client.brand_id;
    if !names::is_brand_id(brand) {
        out.push(
            Diagnostic::error(format!("invalid brand id `{brand}`"))
                .at(env.client_node.span_at(&["client", "brand_id"]), "not lowercase letters and hyphens, at most 36 characters")
                .help("the brand id is baked into the platform's databases: use lowercase letters and hyphens, at most 36 characters"),
        );
    }
    if !names::is_dns_label(&env.client.client.name) {
        out.push(
            Diagnostic::error(format!("invalid client name `{}`", env.client.client.name))
                .at(env.client_node.span_at(&["client", "name"]), "not a DNS-1123 label")
                .help("use lowercase letters, digits and `-`, at most 63 characters"),
        );
    }
}

fn check_directory(env: &Environment, out: &mut Vec<Diagnostic>) {
    let span = env.env_node.span_at(&["directory", "environment"]);
    match (env.env.protected, env.env.directory.environment) {
        (true, DirectoryEnvironment::Sandbox) => out.push(
            Diagnostic::error("a protected environment must use the production directory")
                .at(span, "the sandbox directory")
                .also_at(env.env_node.span_at(&["protected"]), "protected here")
                .help("set `directory.environment = \"production\"` with the organisation id registered in production"),
        ),
        (false, DirectoryEnvironment::Production) => out.push(
            Diagnostic::error("only a protected environment may use the production directory")
                .at(span, "the production directory")
                .help("set `protected = true` for production, or use `directory.environment = \"sandbox\"`"),
        ),
        _ => {}
    }
}

fn check_recipients(env: &Environment, out: &mut Vec<Diagnostic>) {
    for (idx, recipient) in env.env.secrets.age_recipients.iter().enumerate() {
        if crate::secrets::check_age_recipient(recipient).is_err() {
            let span = match env.env_node.entry_at(&["secrets", "age_recipients"]).map(|e| &e.node.value) {
                Some(crate::node::Value::Array(items)) if idx < items.len() => items[idx].span,
                _ => env.env_node.span_at(&["secrets", "age_recipients"]),
            };
            out.push(
                Diagnostic::error(format!("invalid age recipient `{recipient}`"))
                    .at(span, "not an age public key")
                    .help("an age recipient looks like `age1...`; `age-keygen -y KEYFILE` prints the one of a key"),
            );
        }
    }
}

fn check_component(
    env: &Environment,
    catalog: &Catalog,
    component: &ComponentInstance,
    out: &mut Vec<Diagnostic>,
) {
    let Some(template) = catalog.get(&component.template) else { return };
    let definition = &template.definition;
    if !component.file.enabled {
        return;
    }
    if env.env.protected
        && let Some(reason) = definition.protected_reason()
    {
        let span = component
            .node
            .entry_at(&["template"])
            .map_or_else(|| start_span(&component.node), |e| e.node.span);
        out.push(
            Diagnostic::error(format!("`{}` is not allowed in a protected environment", definition.name()))
                .at(span, format!("{} in protected environment `{}`", component.id(), env.name))
                .help(reason),
        );
    }
    if let Some(spec) = definition.database_spec() {
        let overrides = component.file.database.clone().unwrap_or_default();
        for (what, key, value, from_template) in [
            (
                "database name",
                "name",
                overrides.name.clone().unwrap_or(spec.name.to_owned()),
                overrides.name.is_none(),
            ),
            (
                "database user",
                "user",
                overrides.user.clone().unwrap_or(spec.user.to_owned()),
                overrides.user.is_none(),
            ),
        ] {
            if !names::is_pg_identifier(&value) {
                let span = if from_template {
                    start_span(&component.node)
                } else {
                    component.node.span_at(&["database", key])
                };
                out.push(
                    Diagnostic::error(format!("invalid {what} `{value}` for {}", component.id()))
                        .at(
                            span,
                            if from_template {
                                "from the component template"
                            } else {
                                "not a PostgreSQL identifier"
                            },
                        )
                        .help(
                            "use lowercase letters, digits and `_`, starting with a letter, at most 63 bytes",
                        ),
                );
            }
        }
    } else if let Some(entry) = component.node.entry_at(&["database"]) {
        out.push(
            Diagnostic::error(format!("`{}` has no database", definition.name()))
                .at(entry.key_span, "nothing to override")
                .help("remove the `[database]` table"),
        );
    }
    if let Some(app) = definition.app_name()
        && !env.env.versions.contains_key(app)
    {
        let span =
            env.env_node.entry_at(&["versions"]).map_or_else(|| start_span(&env.env_node), |e| e.key_span);
        out.push(
            Diagnostic::error(format!("no version of `{app}` for {}", component.id()))
                .at(span, format!("`{app}` missing here"))
                .help(format!("add `{app} = \"X.Y.Z\"` to `[versions]` in env.toml")),
        );
    }
}

/// Resolves catalog dependencies and `depends_on` names to component instances.
fn resolve_dependencies(env: &Environment, catalog: &Catalog, out: &mut Vec<Diagnostic>) -> Dependencies {
    let enabled: Vec<&ComponentInstance> = env.components().filter(|c| c.file.enabled).collect();
    let mut by_template: BTreeMap<&str, Vec<&ComponentInstance>> = BTreeMap::new();
    for component in &enabled {
        by_template.entry(component.template.as_str()).or_default().push(component);
    }
    let mut providers: BTreeMap<&str, Vec<&ComponentInstance>> = BTreeMap::new();
    for component in &enabled {
        if let Some(template) = catalog.get(&component.template) {
            for crd in template.definition.crds_provided() {
                providers.entry(crd).or_default().push(component);
            }
        }
    }
    // Components by name, and by namespace and name, for `depends_on`.
    let mut by_name: BTreeMap<&str, Vec<&ComponentInstance>> = BTreeMap::new();
    for component in &enabled {
        by_name.entry(component.name.as_str()).or_default().push(component);
    }
    let mut edges = Vec::new();
    for component in &enabled {
        let Some(template) = catalog.get(&component.template) else { continue };
        for dependency in template.definition.dependencies() {
            let Some(candidates) = by_template.get(dependency.name) else {
                out.push(
                    Diagnostic::error(format!(
                        "{} needs `{}`, which environment `{}` does not deploy",
                        component.id(),
                        dependency.name,
                        env.name
                    ))
                    .at(start_span(&component.node), format!("`{}` depends on `{}`", component.template, dependency.name))
                    .help(format!(
                        "add a `{}` component (environments/{}/<namespace>/{}/component.toml); the dependency is declared at {}:{}",
                        dependency.name,
                        env.name,
                        dependency.name,
                        dependency.declared_at.file(),
                        dependency.declared_at.line()
                    )),
                );
                continue;
            };
            // Prefer an instance in the same namespace; otherwise every instance.
            let same_ns: Vec<&&ComponentInstance> =
                candidates.iter().filter(|c| c.namespace == component.namespace).collect();
            let targets: Vec<&ComponentInstance> =
                if same_ns.is_empty() { candidates.clone() } else { same_ns.into_iter().copied().collect() };
            for target in targets {
                edges.push(Edge {
                    from: component.id(),
                    to: target.id(),
                    declared: Declared::Catalog(dependency.declared_at),
                });
            }
        }
        // A component creating objects of a CRD that another component's release installs
        // waits for that release.
        for need in template.definition.crds_needed() {
            for provider in providers.get(need.name).into_iter().flatten() {
                if provider.id() != component.id() {
                    edges.push(Edge {
                        from: component.id(),
                        to: provider.id(),
                        declared: Declared::Catalog(need.declared_at),
                    });
                }
            }
        }
        let spans: Vec<Span> = match component.node.entry_at(&["depends_on"]).map(|e| &e.node.value) {
            Some(crate::node::Value::Array(items)) => items.iter().map(|i| i.span).collect(),
            _ => Vec::new(),
        };
        for (idx, name) in component.file.depends_on.iter().enumerate() {
            let span = spans.get(idx).copied().unwrap_or_else(|| start_span(&component.node));
            let named = |wanted: &str| by_name.get(wanted).map(Vec::as_slice).unwrap_or_default();
            let found: Vec<&ComponentInstance> = match name.split_once('/') {
                Some((ns, comp)) => named(comp).iter().copied().filter(|c| c.namespace == ns).collect(),
                None => {
                    let same: Vec<&ComponentInstance> =
                        named(name).iter().copied().filter(|c| c.namespace == component.namespace).collect();
                    if same.is_empty() { named(name).to_vec() } else { same }
                }
            };
            match found.as_slice() {
                [target] => edges.push(Edge {
                    from: component.id(),
                    to: target.id(),
                    declared: Declared::Client(span),
                }),
                [] => {
                    let ids: Vec<String> = enabled.iter().map(|c| c.id()).collect();
                    let names: Vec<&str> = enabled
                        .iter()
                        .map(|c| c.name.as_str())
                        .chain(ids.iter().map(String::as_str))
                        .collect();
                    let mut d = Diagnostic::error(format!(
                        "{} depends on unknown component `{name}`",
                        component.id()
                    ))
                    .at(span, "no such component in this environment");
                    if let Some(best) = suggest(name, names) {
                        d = d.help(format!("did you mean `{best}`?"));
                    }
                    out.push(d);
                }
                many => out.push(
                    Diagnostic::error(format!("`{name}` is ambiguous in {}", component.id()))
                        .at(span, "more than one namespace has this component")
                        .help(format!(
                            "name it with its namespace: {}",
                            many.iter().map(|c| format!("`{}`", c.id())).collect::<Vec<_>>().join(" or ")
                        )),
                ),
            }
        }
    }
    for component in env.components().filter(|c| !c.file.enabled) {
        for edge in edges.iter().filter(|e| e.to == component.id()) {
            out.push(
                Diagnostic::error(format!("{} depends on {}, which is disabled", edge.from, edge.to))
                    .at(start_span(&component.node), "disabled here (`enabled = false`)"),
            );
        }
    }
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    edges.dedup_by(|a, b| a.from == b.from && a.to == b.to);
    Dependencies::new(edges)
}

/// Reports every dependency cycle, naming the whole cycle and where each edge is declared.
fn check_cycles(
    deps: &Dependencies,
    sources: &mut SourceMap,
    tree: &dyn SourceTree,
    out: &mut Vec<Diagnostic>,
) {
    let mut graph = petgraph::graphmap::DiGraphMap::<&str, ()>::new();
    for edge in &deps.edges {
        graph.add_edge(edge.from.as_str(), edge.to.as_str(), ());
    }
    for scc in petgraph::algo::tarjan_scc(&graph) {
        let is_cycle = scc.len() > 1 || scc.first().is_some_and(|n| graph.contains_edge(n, n));
        if !is_cycle {
            continue;
        }
        // Walk the cycle from its smallest id, following edges inside the component.
        let mut members: Vec<&str> = scc.clone();
        members.sort_unstable();
        let start = members[0];
        let mut path = vec![start];
        let mut current = start;
        loop {
            let next = graph
                .neighbors(current)
                .filter(|n| members.contains(n))
                .filter(|n| *n == start || !path.contains(n))
                .min_by_key(|n| (*n != start, *n))
                .expect("a strongly connected component has a way back");
            if next == start || path.len() > members.len() {
                break;
            }
            path.push(next);
            current = next;
        }
        path.push(start);
        let mut diagnostic = Diagnostic::error(format!("dependency cycle: {}", path.join(" -> ")))
            .help("remove one of these dependencies; components are deployed in dependency order");
        for pair in path.windows(2) {
            let edge =
                deps.edges.iter().find(|e| e.from == pair[0] && e.to == pair[1]).expect("edge of the graph");
            let label = format!("{} depends on {}", edge.from, edge.to);
            let related = match edge.declared {
                Declared::Client(span) => {
                    Diagnostic::error(format!("{label}, declared here")).at(span, "declared here")
                }
                Declared::Catalog(location) => match rust_span(location, sources, tree) {
                    Some(span) => Diagnostic::error(format!("{label}, declared in the core catalog"))
                        .at(span, "declared here"),
                    None => Diagnostic::error(format!(
                        "{label}, declared in the core catalog at {}:{}:{}",
                        location.file(),
                        location.line(),
                        location.column()
                    )),
                },
            };
            diagnostic = diagnostic.related(related);
        }
        if diagnostic.primary.is_none()
            && let Some(first) = diagnostic.related.first().and_then(|r| r.primary.clone())
        {
            diagnostic.primary = Some(first);
        }
        out.push(diagnostic);
    }
}

/// The span of a catalog declaration, when the Rust source is in the tree.
fn rust_span(location: &Location<'_>, sources: &mut SourceMap, tree: &dyn SourceTree) -> Option<Span> {
    let text = tree.read(location.file()).ok()??;
    let line_start: usize = text.split_inclusive('\n').take(location.line() as usize - 1).map(str::len).sum();
    let line = text[line_start..].lines().next().unwrap_or("");
    let col = line.char_indices().nth(location.column() as usize - 1).map_or(0, |(i, _)| i);
    let start = line_start + col;
    let end = line_start + line.len();
    let file = sources.add(location.file(), text.clone());
    Some(Span::new(file, start..end.max(start + 1)))
}
