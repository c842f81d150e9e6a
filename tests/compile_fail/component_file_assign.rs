// Assigning `values_template` on a loaded component.toml does not compile.
use platform::model::ComponentFile;

fn main() {
    let mut file = ComponentFile::default();
    file.values_template = String::from("replicaCount: 1");
}
