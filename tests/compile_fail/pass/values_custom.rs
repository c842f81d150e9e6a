// The supported way for client-side code to change a component's Helm values: `values_custom`.
use platform::model::ComponentFile;

fn main() {
    let mut file = ComponentFile::default();
    file.values_custom.insert("replicaCount".to_owned(), serde_json::json!(2));
    assert_eq!(file.values_custom["replicaCount"], 2);
    let catalog = components::catalog();
    let template = catalog.get("oob-consent").expect("oob-consent is in the catalog");
    assert!(template.definition.template().is_some(), "the catalog still owns the values template");
}
