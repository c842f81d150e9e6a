// A catalog definition's values template is a private field: code outside the catalog DSL
// cannot replace it, even on a definition it got from the catalog.
use platform::catalog::ValuesTemplate;

fn main() {
    let catalog = components::catalog();
    let template = catalog.get("oob-consent").expect("oob-consent is in the catalog");
    let mut definition = template.definition.clone();
    definition.values_template =
        Some(ValuesTemplate { path: "client/values.yaml.j2", text: "replicaCount: 1" });
}
