//! `cargo xtask schema`: JSON Schemas for editors, from the same Rust types `check` uses.

use std::path::PathBuf;

use platform::model::{ClientFile, ComponentFile, EnvFile, NamespaceFile};
use platform::secrets::{AtomicWriteOptions, write_atomic};

use crate::flags::SchemaCmd;
use crate::repo::Repo;
use crate::{Outcome, ui};

/// Every file `schema` writes: (path relative to the root, content).
fn files() -> Vec<(String, String)> {
    let pretty = |value: serde_json::Value| serde_json::to_string_pretty(&value).expect("JSON") + "\n";
    let mut out = vec![
        (
            "schemas/client.json".to_owned(),
            pretty(serde_json::to_value(schemars::schema_for!(ClientFile)).expect("JSON")),
        ),
        (
            "schemas/env.json".to_owned(),
            pretty(serde_json::to_value(schemars::schema_for!(EnvFile)).expect("JSON")),
        ),
        (
            "schemas/namespace.json".to_owned(),
            pretty(serde_json::to_value(schemars::schema_for!(NamespaceFile)).expect("JSON")),
        ),
        (
            "schemas/component.json".to_owned(),
            pretty(serde_json::to_value(schemars::schema_for!(ComponentFile)).expect("JSON")),
        ),
    ];
    let mut taplo = String::from(
        "# Written by `cargo xtask schema`: maps the client files to their JSON Schemas.\n\
         # Component directories named after their template get the template's typed inputs.\n\n\
         [[rule]]\ninclude = [\"environments/client.toml\"]\n[rule.schema]\npath = \"./schemas/client.json\"\n\n\
         [[rule]]\ninclude = [\"environments/*/env.toml\"]\n[rule.schema]\npath = \"./schemas/env.json\"\n\n\
         [[rule]]\ninclude = [\"environments/*/*/namespace.toml\"]\n[rule.schema]\npath = \"./schemas/namespace.json\"\n",
    );
    let catalog = components::catalog();
    for template in catalog.templates() {
        let name = template.definition.name();
        let mut schema = serde_json::to_value(schemars::schema_for!(ComponentFile)).expect("JSON");
        let mut inputs = template.inputs_schema().clone();
        // Move the inputs' definitions next to the component file's so references resolve.
        if let Some(defs) = inputs.as_object_mut().and_then(|o| o.remove("$defs")) {
            let target =
                schema.as_object_mut().expect("object").entry("$defs").or_insert(serde_json::json!({}));
            if let (Some(target), Some(defs)) = (target.as_object_mut(), defs.as_object()) {
                for (k, v) in defs {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(obj) = inputs.as_object_mut() {
            obj.remove("$schema");
            obj.insert(
                "description".into(),
                serde_json::json!(format!("Inputs of `{name}`: {}", template.definition.description())),
            );
        }
        schema["properties"]["inputs"] = inputs;
        schema["title"] = serde_json::json!(format!("component.toml of `{name}`"));
        out.push((format!("schemas/components/{name}.json"), pretty(schema)));
        taplo.push_str(&format!(
            "\n[[rule]]\ninclude = [\"environments/*/*/{name}/component.toml\"]\n[rule.schema]\npath = \"./schemas/components/{name}.json\"\n"
        ));
    }
    taplo.push_str("\n[[rule]]\ninclude = [\"environments/*/*/*/component.toml\"]\n[rule.schema]\npath = \"./schemas/component.json\"\n");
    out.push((".taplo.toml".to_owned(), taplo));
    out
}

pub fn run(repo: &Repo, cmd: &SchemaCmd) -> Outcome {
    let mut stale = Vec::new();
    for (relative, content) in files() {
        let path: PathBuf = repo.root.join(&relative);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(content.as_str()) {
            continue;
        }
        if cmd.check {
            stale.push(relative);
            continue;
        }
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            ui::error(&format!("cannot create {}: {e}", parent.display()));
            return Outcome::Failed;
        }
        if let Err(e) = write_atomic(&path, content.as_bytes(), &AtomicWriteOptions { mode: Some(0o644) }) {
            ui::error_chain(&e);
            return Outcome::Failed;
        }
        ui::status("Wrote", &relative);
    }
    if !stale.is_empty() {
        ui::error(&format!("out of date: {} (run `cargo xtask schema`)", stale.join(", ")));
        return Outcome::Failed;
    }
    if cmd.check {
        ui::status("Checked", "the schemas are up to date");
    }
    Outcome::Success
}
