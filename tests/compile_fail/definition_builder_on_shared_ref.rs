// The builder method takes the definition by value, and the catalog only hands out shared
// references, so a client cannot call it on a definition the catalog holds.
use platform::catalog::ValuesTemplate;

fn main() {
    let catalog = components::catalog();
    let template = catalog.get("oob-consent").expect("oob-consent is in the catalog");
    let definition = &template.definition;
    let _changed = definition
        .values_template(ValuesTemplate { path: "client/values.yaml.j2", text: "replicaCount: 1" });
}
