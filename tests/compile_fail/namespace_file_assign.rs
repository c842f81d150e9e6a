// Assigning `values_template` on a loaded namespace.toml does not compile.
use platform::model::NamespaceFile;

fn main() {
    let mut file = NamespaceFile::default();
    file.values_template = String::from("replicaCount: 1");
}
