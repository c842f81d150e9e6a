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
    for crate_dir in ["platform/src", "xtask/src", "components/src", "catalog/src"] {
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
    for member in ["platform", "xtask", "components", "catalog"] {
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

/// The modules of `platform` each file uses (`crate::<module>` outside comments and test
/// modules), by the using file's top-level module and, within a module, by submodule.
fn platform_module_edges() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = root().join("platform/src");
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
fn platform_modules_have_no_dependency_cycles() {
    let edges = platform_module_edges();
    assert!(edges.get("compile").is_some_and(|used| used.contains("plan")), "the scan finds uses: {edges:?}");
    let top: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        edges.iter().filter(|(k, _)| !k.contains("::")).map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(find_cycle(&top), None, "a cycle between platform's modules");
    let within: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        edges.iter().filter(|(k, _)| k.contains("::")).map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(find_cycle(&within), None, "a cycle between the submodules of one module");
}

#[test]
fn the_engine_core_never_uses_execution_drivers_or_state() {
    // What a future core crate holds (ARCHITECTURE.md), and what it must never see.
    let core = [
        "source",
        "diagnostic",
        "node",
        "model",
        "catalog",
        "load",
        "verify",
        "check",
        "compile",
        "plan",
        "values",
        "template",
        "sensitive",
        "core_version",
        "schema",
    ];
    let io = [
        "exec",
        "drivers",
        "journal",
        "session",
        "deploy",
        "keys",
        "status",
        "access",
        "program",
        "failpoint",
    ];
    let edges = platform_module_edges();
    let offenders: Vec<String> = core
        .iter()
        .flat_map(|module| {
            let used = edges.get(*module).cloned().unwrap_or_default();
            used.into_iter().filter(|u| io.contains(&u.as_str())).map(move |u| format!("{module} -> {u}"))
        })
        .collect();
    assert_eq!(offenders, Vec::<String>::new(), "the engine core uses execution, drivers or state");
}
