// A component.toml's type has no `values_template` field, so a struct literal cannot name one.
use platform::model::ComponentFile;

fn main() {
    let _file = ComponentFile {
        values_template: String::from("replicaCount: 1"),
        ..Default::default()
    };
}
