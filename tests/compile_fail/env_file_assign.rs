// Assigning `values_template` on a loaded env.toml does not compile.
use platform::model::EnvFile;

fn override_template(file: &mut EnvFile) {
    file.values_template = String::from("replicaCount: 1");
}

fn main() {
    let _ = override_template;
}
