//! House-style checks that keep habits alive (after rust-analyzer's `xtask/src/tidy.rs`): every
//! Rust module says what it is for, no trailing whitespace, every dependency version lives in
//! `[workspace.dependencies]`.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for crate_dir in ["platform/src", "engine/src", "xtask/src", "components/src", "catalog/src"] {
        rust_files(&root().join(crate_dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 20, "found only {} source files", files.len());
    files
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|path| !std::fs::read_to_string(path).expect("readable").starts_with("//!"))
        .map(|path| path.strip_prefix(root()).unwrap_or(&path).display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a `//!` paragraph: {missing:?}");
}

#[test]
fn no_trailing_whitespace_in_sources() {
    let mut offenders = Vec::new();
    for path in sources() {
        let text = std::fs::read_to_string(&path).expect("readable");
        for (idx, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                offenders.push(format!(
                    "{}:{}",
                    path.strip_prefix(root()).unwrap_or(&path).display(),
                    idx + 1
                ));
            }
        }
    }
    assert!(offenders.is_empty(), "trailing whitespace at {offenders:?}");
}

#[test]
fn member_crates_take_versions_from_the_workspace() {
    for member in ["platform", "engine", "xtask", "components", "catalog"] {
        let text =
            std::fs::read_to_string(root().join(member).join("Cargo.toml")).expect("readable manifest");
        let manifest: toml::Table = text.parse().expect("valid manifest");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else { continue };
            for (name, spec) in deps {
                let from_workspace =
                    spec.as_table().and_then(|t| t.get("workspace")).and_then(|w| w.as_bool()) == Some(true);
                assert!(from_workspace, "{member}/Cargo.toml [{section}] {name} must use `workspace = true`");
            }
        }
    }
}

/// The modules of a crate (`platform/src`, `engine/src`) each file uses (`crate::<module>`
/// outside comments and test modules), by the using file's top-level module and, within a
/// module, by submodule.
fn module_edges(crate_src: &str) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = root().join(crate_src);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for path in files {
        let relative = path.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for [used, sub] in paths_used(line) {
                if used != parts[0] {
                    edges.entry(parts[0].clone()).or_default().insert(used);
                } else if parts.len() > 1 && !sub.is_empty() && sub != parts[1] {
                    // Within a module: submodule to submodule.
                    edges
                        .entry(format!("{}::{}", parts[0], parts[1]))
                        .or_default()
                        .insert(format!("{used}::{sub}"));
                }
            }
            for sub in line.split("super::").skip(1) {
                let sub: String = sub.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                let is_module = src.join(&parts[0]).join(format!("{sub}.rs")).is_file()
                    || src.join(&parts[0]).join(&sub).join("mod.rs").is_file();
                if parts.len() == 2 && is_module && sub != parts[1] {
                    edges
                        .entry(format!("{}::{}", parts[0], parts[1]))
                        .or_default()
                        .insert(format!("{}::{sub}", parts[0]));
                }
            }
        }
    }
    edges
}

/// The `crate::a::b` paths in a line of code as `[a, b]`; `b` is empty when absent.
fn paths_used(line: &str) -> Vec<[String; 2]> {
    let ident =
        |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect() };
    line.split("crate::")
        .skip(1)
        .map(|rest| {
            let first = ident(rest);
            let after = &rest[first.len()..];
            let second = after.strip_prefix("::").map(ident).unwrap_or_default();
            [first, second]
        })
        .filter(|[first, _]| !first.is_empty())
        .collect()
}

/// A cycle in `edges`, if there is one (depth-first search).
fn find_cycle(
    edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|n| n == node) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = Default::default();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn modules_have_no_dependency_cycles() {
    for crate_src in ["engine/src", "platform/src"] {
        let edges = module_edges(crate_src);
        let top: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            edges.iter().filter(|(k, _)| !k.contains("::")).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(find_cycle(&top), None, "a cycle between the modules of {crate_src}");
        let within: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            edges.iter().filter(|(k, _)| k.contains("::")).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(find_cycle(&within), None, "a cycle between the submodules of one module of {crate_src}");
    }
    // The scan finds uses (a scan that finds nothing would pass the test above).
    let engine = module_edges("engine/src");
    assert!(engine.get("compile").is_some_and(|used| used.contains("plan")), "{engine:?}");
    assert!(engine.get("load").is_some_and(|used| used.contains("secrets")), "{engine:?}");
    let platform = module_edges("platform/src");
    assert!(platform.get("exec").is_some_and(|used| used.contains("plan")), "{platform:?}");
}

/// Every package `package` depends on in Cargo.lock, itself included (normal, dev and build
/// dependencies of dependencies alike: the lock file does not tell them apart, so this errs
/// on the side of finding a crate).
fn locked_closure(package: &str) -> std::collections::BTreeSet<String> {
    let lock: toml::Table = std::fs::read_to_string(root().join("Cargo.lock"))
        .expect("Cargo.lock")
        .parse()
        .expect("valid Cargo.lock");
    let packages = lock["package"].as_array().expect("packages");
    let dependencies = |name: &str| -> Vec<String> {
        packages
            .iter()
            .filter(|p| p["name"].as_str() == Some(name))
            .flat_map(|p| p.get("dependencies").and_then(|d| d.as_array()).cloned().unwrap_or_default())
            .map(|d| d.as_str().expect("a dependency").split(' ').next().unwrap().to_owned())
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(dependencies(&name));
        }
    }
    seen
}

#[test]
fn the_engine_core_builds_without_drivers_or_cryptography() {
    let engine = locked_closure("engine");
    assert!(engine.contains("minijinja") && engine.contains("petgraph"), "the closure is found: {engine:?}");
    let forbidden = ["platform", "kube", "k8s-openapi", "sqlx", "age", "tokio", "aes-gcm", "hyper"];
    let found: Vec<&str> = forbidden.iter().copied().filter(|name| engine.contains(*name)).collect();
    assert_eq!(found, Vec::<&str>::new(), "the engine core depends on drivers or cryptography");
    assert!(locked_closure("platform").contains("age"), "the check can fail: platform links age");
    // The catalog (and so `components` and every catalog edit) builds without the engine: its
    // normal dependencies (Cargo.lock also lists the tests' platform) are the DSL's.
    let manifest: toml::Table =
        std::fs::read_to_string(root().join("components/Cargo.toml")).unwrap().parse().unwrap();
    let normal: Vec<&String> = manifest["dependencies"].as_table().unwrap().keys().collect();
    assert!(!normal.iter().any(|name| *name == "engine" || *name == "platform"), "{normal:?}");
}
