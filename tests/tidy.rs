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
    for crate_dir in ["platform/src", "xtask/src", "components/src"] {
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
    for member in ["platform", "xtask", "components"] {
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
