//! The JSON Schemas of the client files for editors (`schema`), from the same Rust types
//! `check` uses, one per component template with its typed inputs, and the `.taplo.toml` that
//! maps the files to them.

use crate::catalog::Catalog;
use crate::model::{ClientFile, ComponentFile, EnvFile, NamespaceFile};

/// Every file `schema` writes: (path relative to the repository root, content).
pub fn schema_files(catalog: &Catalog) -> Vec<(String, String)> {
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
