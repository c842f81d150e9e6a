//! Issue #16: the `flux` target. `deploy flux-example` writes a tree that a second deploy
//! leaves alone; every Flux object validates against the real CRD schema of its kind
//! (`../shared/fixtures/flux/`, with the Kubernetes extensions and unknown fields refused, as
//! the API server would prune them); every `dependsOn`, `valuesFrom`, `sourceRef`, Secret
//! reference, Kustomization path and kustomize resource resolves inside the tree; every
//! Secret is SOPS-encrypted for the environment's recipients and decrypts to what the plan
//! holds; a removed component's files go away; and, against a throwaway PostgreSQL server,
//! the database Jobs' scripts provision roles that log in with the planned passwords, and
//! `databases = "external"` provisions from the deploy and keeps Jobs out of the tree.

#[path = "../platform/tests/support/pg.rs"]
mod pg;
mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use platform::plan::{Action, Plan};
use serde_json::{Value as Json, json};
use util::{Repo, RunOptions};

const ENV: &str = "flux-example";
const TREE: &str = "bundle/flux-example";

fn deploy(repo: &Repo) -> util::Run {
    let run = repo.xtask(&["deploy", ENV, "--output", "plain"]);
    run.assert_code(0);
    run
}

/// Every file of a folder, relative to it, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Every YAML document of the tree's manifests (encrypted ones too: their names are clear),
/// with the file it is in.
fn documents(tree: &Path) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    for (relative, bytes) in files(tree) {
        if !relative.ends_with(".yaml") {
            continue;
        }
        let text = String::from_utf8(bytes).unwrap();
        // The tree's multi-document files are written with `---` lines between documents.
        for document in text.split("\n---\n") {
            let value: Json = serde_yaml_ng::from_str(document).unwrap_or_else(|e| panic!("{relative}: {e}"));
            if !value.is_null() {
                out.push((relative.clone(), value));
            }
        }
    }
    out
}

fn compile(repo: &Repo) -> Plan {
    let env_file = platform::access::read_env_file(repo.root(), ENV).unwrap();
    let identities = platform::access::identities_for(repo.root(), &env_file).unwrap();
    let tree = platform::load::tree::FsTree::new(repo.root());
    let compiled =
        platform::compile::compile_environment(&tree, &components::catalog(), ENV, Some(&identities))
            .unwrap();
    assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
    compiled.plan.unwrap()
}

#[test]
fn a_second_deploy_changes_nothing_and_plain_files_are_the_same_on_every_machine() {
    let repo = Repo::shipped();
    let plan = repo.xtask(&["plan", ENV]);
    assert!(plan.stdout.contains("\n  + flux-system/entry.yaml\n"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("\n  + apps/opus/releases/oob-consent.values.enc.yaml\n"),
        "{}",
        plan.stdout
    );
    deploy(&repo);
    let first = files(&repo.root().join(TREE));
    assert!(first.contains_key("flux-system/entry.yaml"), "{:?}", first.keys());
    let again = deploy(&repo);
    assert!(again.stderr.contains("0 succeeded, 0 failed, 0 skipped, 38 unchanged"), "{}", again.stderr);
    assert_eq!(files(&repo.root().join(TREE)), first, "a no-op deploy rewrote the tree");
    let plan = repo.xtask(&["plan", ENV]);
    assert!(!plan.stdout.contains("would get"), "{}", plan.stdout);

    // A fresh machine writes the same tree: byte-identical except the encrypted files (new
    // data keys and nonces) and the index (the journal's lineage).
    let other = Repo::shipped();
    deploy(&other);
    let second = files(&other.root().join(TREE));
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    for (relative, bytes) in &first {
        if !relative.ends_with(".enc.yaml") && relative != "index.json" {
            assert_eq!(bytes, &second[relative], "{relative} differs between two machines");
        }
    }
}

/// The fixture CRD of `apiVersion`/`kind`, as its `openAPIV3Schema`.
fn crd_schemas() -> BTreeMap<(String, String), Json> {
    let dir = util::repo_root().join("../shared/fixtures/flux");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: Json = serde_yaml_ng::from_str(&text).unwrap();
        let group = crd["spec"]["group"].as_str().unwrap().to_owned();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
            let schema = kubernetes_to_json_schema(version["schema"]["openAPIV3Schema"].clone());
            out.insert((api_version, kind.clone()), schema);
        }
    }
    out
}

/// A structural schema as JSON Schema: `x-kubernetes-int-or-string` accepts an integer or a
/// string, `x-kubernetes-preserve-unknown-fields` accepts anything, and elsewhere an object
/// with `properties` refuses unknown fields (the API server would silently prune them, so a
/// misspelled field would go unnoticed).
fn kubernetes_to_json_schema(mut schema: Json) -> Json {
    fn walk(node: &mut Json) {
        let Some(map) = node.as_object_mut() else { return };
        if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
            map.remove("type");
            map.insert("anyOf".to_owned(), json!([{"type": "integer"}, {"type": "string"}]));
        }
        let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if map.contains_key("properties") && !preserve && !map.contains_key("additionalProperties") {
            map.insert("additionalProperties".to_owned(), json!(false));
        }
        for value in map.values_mut() {
            match value {
                Json::Array(items) => items.iter_mut().for_each(walk),
                Json::Object(_) => walk(value),
                _ => {}
            }
        }
        // `metadata` is checked by the API server, not by the CRD.
        if let Some(metadata) = map.get_mut("properties").and_then(|p| p.get_mut("metadata")) {
            *metadata = json!({"type": "object"});
        }
    }
    walk(&mut schema);
    schema
}

#[test]
fn every_flux_object_validates_against_the_schema_of_its_crd() {
    let repo = Repo::shipped();
    deploy(&repo);
    let schemas = crd_schemas();
    let validators: BTreeMap<_, _> = schemas
        .iter()
        .map(|(key, schema)| (key.clone(), jsonschema::validator_for(schema).expect("a valid schema")))
        .collect();
    let mut validated: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, object) in documents(&repo.root().join(TREE)) {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if !api_version.contains("fluxcd.io") {
            continue;
        }
        let validator = validators
            .get(&(api_version.clone(), kind.clone()))
            .unwrap_or_else(|| panic!("{file}: no CRD fixture for {api_version} {kind}"));
        for error in validator.iter_errors(&object) {
            problems.push(format!("{file}: {} at {}", error, error.instance_path()));
        }
        *validated.entry(kind).or_default() += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // 12 releases, 7 groups and the entry, 4 chart repositories.
    assert_eq!(validated.get("HelmRelease"), Some(&12), "{validated:?}");
    assert_eq!(validated.get("Kustomization"), Some(&8), "{validated:?}");
    assert_eq!(validated.get("HelmRepository"), Some(&4), "{validated:?}");

    // The schemas are strict enough to catch a mistake.
    let key = ("helm.toolkit.fluxcd.io/v2".to_owned(), "HelmRelease".to_owned());
    let wrong = json!({"apiVersion": key.0, "kind": key.1, "metadata": {"name": "x"},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "x"}}},
                 "timout": "5m"}});
    assert!(!validators[&key].is_valid(&wrong), "a misspelled field passed");
}

#[test]
fn every_reference_resolves_to_an_object_or_file_of_the_tree() {
    let repo = Repo::shipped();
    deploy(&repo);
    let tree = repo.root().join(TREE);
    let documents = documents(&tree);
    // (kind, namespace, name) of every object; the GitRepository of the configuration and
    // the decryption Secret are made once by hand (README), in flux-system.
    let mut objects: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (_, object) in &documents {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        objects.insert((kind, namespace, name));
    }
    objects.insert(("GitRepository".into(), "flux-system".into(), "flux-system".into()));
    objects.insert(("Secret".into(), "flux-system".into(), "sops-age".into()));
    let mut missing = Vec::new();
    let mut check = |file: &str, what: &str, kind: &str, namespace: &str, name: &str| {
        if !objects.contains(&(kind.to_owned(), namespace.to_owned(), name.to_owned())) {
            missing.push(format!("{file}: {what} {kind} {namespace}/{name}"));
        }
    };
    let mut n_references = 0;
    for (file, object) in &documents {
        let own_namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let spec = &object["spec"];
        let ns_or_own = |value: &Json| value["namespace"].as_str().unwrap_or(own_namespace).to_owned();
        match object["kind"].as_str().unwrap_or_default() {
            "HelmRelease" => {
                for dep in spec["dependsOn"].as_array().into_iter().flatten() {
                    check(file, "dependsOn", "HelmRelease", &ns_or_own(dep), dep["name"].as_str().unwrap());
                    n_references += 1;
                }
                for from in spec["valuesFrom"].as_array().into_iter().flatten() {
                    check(
                        file,
                        "valuesFrom",
                        from["kind"].as_str().unwrap(),
                        own_namespace,
                        from["name"].as_str().unwrap(),
                    );
                    n_references += 1;
                }
                let source = &spec["chart"]["spec"]["sourceRef"];
                check(
                    file,
                    "sourceRef",
                    source["kind"].as_str().unwrap(),
                    &ns_or_own(source),
                    source["name"].as_str().unwrap(),
                );
                n_references += 1;
                // A chart from the configuration's own repository is a folder of it.
                if source["kind"] == "GitRepository" {
                    let chart = spec["chart"]["spec"]["chart"].as_str().unwrap();
                    assert!(
                        util::repo_root().join(chart).join("Chart.yaml").is_file(),
                        "{file}: chart {chart}"
                    );
                }
            }
            "Kustomization" if object["apiVersion"].as_str().unwrap().starts_with("kustomize.toolkit") => {
                for dep in spec["dependsOn"].as_array().into_iter().flatten() {
                    check(file, "dependsOn", "Kustomization", &ns_or_own(dep), dep["name"].as_str().unwrap());
                    n_references += 1;
                }
                let source = &spec["sourceRef"];
                check(
                    file,
                    "sourceRef",
                    source["kind"].as_str().unwrap(),
                    &ns_or_own(source),
                    source["name"].as_str().unwrap(),
                );
                if let Some(secret) = spec["decryption"]["secretRef"]["name"].as_str() {
                    check(file, "decryption", "Secret", own_namespace, secret);
                }
                // Its path is a folder of the tree with a kustomization.yaml.
                let path = spec["path"].as_str().unwrap().trim_start_matches("./");
                let folder =
                    path.strip_prefix(&format!("{TREE}/")).unwrap_or_else(|| panic!("{file}: path {path}"));
                assert!(tree.join(folder).join("kustomization.yaml").is_file(), "{file}: path {path}");
                n_references += 1;
            }
            "Job" => {
                let pod = &spec["template"]["spec"];
                for container in pod["containers"].as_array().unwrap() {
                    for from in container["envFrom"].as_array().into_iter().flatten() {
                        check(
                            file,
                            "envFrom",
                            "Secret",
                            own_namespace,
                            from["secretRef"]["name"].as_str().unwrap(),
                        );
                        n_references += 1;
                    }
                }
                for volume in pod["volumes"].as_array().into_iter().flatten() {
                    check(
                        file,
                        "volume",
                        "Secret",
                        own_namespace,
                        volume["secret"]["secretName"].as_str().unwrap(),
                    );
                    n_references += 1;
                }
            }
            _ => {}
        }
    }
    assert!(missing.is_empty(), "unresolved references:\n{}", missing.join("\n"));
    assert!(n_references > 30, "{n_references} references checked");

    // Every kustomize resource exists, and every manifest is listed by exactly one
    // kustomization.yaml (a file nobody lists is never applied).
    let all = files(&tree);
    let mut listed: BTreeMap<String, usize> = BTreeMap::new();
    for (relative, bytes) in &all {
        if !relative.ends_with("kustomization.yaml") {
            continue;
        }
        let folder = Path::new(relative).parent().unwrap();
        let kustomize: Json = serde_yaml_ng::from_slice(bytes).unwrap();
        for resource in kustomize["resources"].as_array().unwrap() {
            let path = folder.join(resource.as_str().unwrap()).to_string_lossy().into_owned();
            assert!(all.contains_key(&path), "{relative} lists {path}, which is not in the tree");
            *listed.entry(path).or_default() += 1;
        }
    }
    for relative in all.keys().filter(|r| r.ends_with(".yaml") && !r.ends_with("kustomization.yaml")) {
        assert_eq!(listed.get(relative), Some(&1), "{relative} is listed {:?} times", listed.get(relative));
    }
}

fn demo_identities(repo: &Repo) -> platform::secrets::Identities {
    let env_file = platform::access::read_env_file(repo.root(), ENV).unwrap();
    platform::access::identities_for(repo.root(), &env_file).unwrap()
}

fn decrypt(repo: &Repo, relative: &str) -> Json {
    let path: PathBuf = repo.root().join(TREE).join(relative);
    let tree = platform::secrets::decrypt_file(&path, &demo_identities(repo))
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
    serde_yaml_ng::from_str(tree.to_yaml().expose()).unwrap()
}

/// `values` deep-merged over `lower` (maps merge, the rest replaces), as helm merges.
fn merged(mut lower: Json, upper: &Json) -> Json {
    platform::values::deep_merge(&mut lower, upper);
    lower
}

#[test]
fn every_secret_is_encrypted_for_the_recipients_and_decrypts_to_what_the_plan_holds() {
    let repo = Repo::shipped();
    deploy(&repo);
    let tree = repo.root().join(TREE);
    let plan = compile(&repo);
    let env_file = platform::access::read_env_file(repo.root(), ENV).unwrap();
    let mut recipients = env_file.secrets.age_recipients.clone();
    recipients.sort();

    // Every Secret manifest is an encrypted file, for exactly the recipients.
    for (file, object) in documents(&tree) {
        if object["kind"] == "Secret" {
            assert!(file.ends_with(".enc.yaml"), "{file}: a Secret in clear");
            let summary = platform::secrets::format::inspect_file(&tree.join(&file)).unwrap();
            let mut found = summary.recipients.clone();
            found.sort();
            assert_eq!(found, recipients, "{file}");
            assert_eq!(object["sops"]["encrypted_regex"], "^(data|stringData)$", "{file}");
        }
    }
    // No secret of the plan shows in clear in any file of the tree.
    let secrets: Vec<String> = plan
        .steps()
        .filter_map(|s| s.action.values())
        .flat_map(|v| v.secrets().map(|s| s.expose().to_owned()).collect::<Vec<_>>())
        .filter(|s| s.len() >= 8)
        .collect();
    assert!(secrets.len() > 5, "{} secrets", secrets.len());
    for (relative, bytes) in files(&tree) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{relative} holds a secret in clear");
        }
    }

    let mut n_checked = 0;
    for step in plan.steps() {
        match &step.action {
            Action::ApplySecret { namespace, name, data, .. } => {
                let secret = decrypt(&repo, &format!("apps/{namespace}/secrets/{name}.enc.yaml"));
                assert_eq!(secret["stringData"], data.expose_tree().unwrap(), "{}", step.id);
                n_checked += 1;
            }
            Action::HelmRelease { release, namespace, values, .. } => {
                // What helm gets: the values Secret's values.yaml, then the inline values.
                let text =
                    std::fs::read_to_string(tree.join(format!("apps/{namespace}/releases/{release}.yaml")))
                        .unwrap();
                let object: Json = serde_yaml_ng::from_str(&text).unwrap();
                let inline = object["spec"]["values"].clone();
                let from_secret = if values.sensitive().is_empty() {
                    json!({})
                } else {
                    let secret =
                        decrypt(&repo, &format!("apps/{namespace}/releases/{release}.values.enc.yaml"));
                    serde_yaml_ng::from_str(secret["stringData"]["values.yaml"].as_str().unwrap()).unwrap()
                };
                let applied = merged(from_secret, &inline);
                assert_eq!(applied, values.expose_tree().unwrap(), "{}", step.id);
                n_checked += 1;
            }
            Action::DatabasePreflight { admin_password, .. } => {
                let secret = decrypt(&repo, "databases/database-admin.enc.yaml");
                assert_eq!(secret["stringData"]["PGPASSWORD"], admin_password.expose_tree().unwrap());
                n_checked += 1;
            }
            Action::ProvisionDatabase { database, password, .. } => {
                let name = database.replace('_', "-");
                let secret = decrypt(&repo, &format!("databases/{name}.enc.yaml"));
                let sql = secret["stringData"]["provision.sql"].as_str().unwrap();
                let verifier = sql.split('\'').find(|part| part.starts_with("SCRAM-SHA-256$")).unwrap();
                let verifier = platform::drivers::postgres::ScramVerifier::parse(verifier).unwrap();
                let password =
                    platform::sensitive::SecretString::new(password.expose_tree().unwrap().as_str().unwrap());
                assert!(verifier.verifies(&password), "{}", step.id);
                n_checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(n_checked, 4 + 12 + 1 + 4);
}

#[test]
fn a_removed_component_takes_its_files_with_it() {
    let repo = Repo::shipped();
    deploy(&repo);
    let tree = repo.root().join(TREE);
    assert!(tree.join("apps/opus/releases/oob-status.yaml").is_file());
    std::fs::remove_dir_all(repo.root().join("environments/flux-example/opus/oob-status")).unwrap();
    let plan = repo.xtask(&["plan", ENV]);
    plan.assert_code(0);
    assert!(plan.stdout.contains("apps/opus/releases/oob-status.yaml"), "{}", plan.stdout);
    let run = deploy(&repo);
    assert!(
        run.stderr.contains("Removed bundle/flux-example/apps/opus/releases/oob-status.yaml"),
        "{}",
        run.stderr
    );
    assert!(!tree.join("apps/opus/releases/oob-status.yaml").exists());
    let kustomize = std::fs::read_to_string(tree.join("apps/opus/kustomization.yaml")).unwrap();
    assert!(!kustomize.contains("oob-status"), "{kustomize}");
    let index = std::fs::read_to_string(tree.join("index.json")).unwrap();
    assert!(!index.contains("oob-status"), "the inventory still lists it");
}

#[test]
fn a_hand_edited_manifest_is_drift_and_the_deploy_restores_it() {
    let repo = Repo::shipped();
    deploy(&repo);
    let file = repo.root().join(TREE).join("apps/opus/releases/oob-status.yaml");
    // An edit by hand is drift: the refresh compares plain files with what the plan renders.
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, original.replace("retries: 3", "retries: 9")).unwrap();
    // `plan` lists the files the deploy writes.
    let plan = repo.xtask(&["plan", ENV]);
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("drifted: file apps/opus/releases/oob-status.yaml differs from the plan"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .ends_with("files bundle/flux-example/ would get:\n  ~ apps/opus/releases/oob-status.yaml\n"),
        "{}",
        plan.stdout
    );
    let run = deploy(&repo);
    assert!(run.stderr.contains("differs from the plan"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
}

/// Runs `psql` of the test server's version with `args`, as a database Job would (the
/// connection from `PG*` variables), and returns its stdout.
fn psql(server: &pg::PgServer, env: &[(&str, &str)], args: &[&str]) -> String {
    let output = std::process::Command::new(server.program("psql"))
        .args(["--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--tuples-only", "--no-align"])
        .args(args)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", server.port().to_string())
        .envs(env.iter().copied())
        .output()
        .expect("run psql");
    assert!(output.status.success(), "psql {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_database_jobs_scripts_provision_roles_that_log_in_with_the_planned_passwords() {
    let Some(server) = pg::PgServer::try_start() else { return };
    let repo = Repo::shipped();
    deploy(&repo);
    let plan = compile(&repo);
    let admin = decrypt(&repo, "databases/database-admin.enc.yaml");
    assert_eq!(admin["stringData"]["PGUSER"], pg::ADMIN_USER);
    let scripts = tempfile::tempdir().unwrap();
    let mut n_databases = 0;
    for step in plan.steps() {
        let Action::ProvisionDatabase { role, database, password, .. } = &step.action else { continue };
        let secret = decrypt(&repo, &format!("databases/{}.enc.yaml", database.replace('_', "-")));
        let script = scripts.path().join(format!("{database}.sql"));
        let text = secret["stringData"]["provision.sql"].as_str().unwrap();
        assert!(text.contains("server_version_num')::int < 140000"), "{database}: no version check");
        std::fs::write(&script, text).unwrap();
        let as_admin = [
            ("PGUSER", pg::ADMIN_USER),
            ("PGPASSWORD", pg::ADMIN_PASSWORD),
            ("PGDATABASE", "postgres"),
            ("PGSSLMODE", admin["stringData"]["PGSSLMODE"].as_str().unwrap()),
        ];
        // Twice: a Job that runs again (a retried pod) changes nothing.
        for _ in 0..2 {
            psql(&server, &as_admin, &["--file", script.to_str().unwrap()]);
        }
        let password = password.expose_tree().unwrap().as_str().unwrap().to_owned();
        let as_role =
            [("PGUSER", role.as_str()), ("PGPASSWORD", password.as_str()), ("PGDATABASE", database.as_str())];
        let owner = psql(
            &server,
            &as_role,
            &[
                "--command",
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
            ],
        );
        assert_eq!(owner.trim(), role, "{database}");
        n_databases += 1;
    }
    assert_eq!(n_databases, 4);
}

#[test]
fn external_databases_are_provisioned_by_the_deploy_and_stay_out_of_the_tree() {
    let Some(server) = pg::PgServer::try_start() else { return };
    let repo = Repo::shipped();
    let env_toml = "environments/flux-example/env.toml";
    repo.replace(env_toml, "databases = \"job\"", "databases = \"external\"");
    repo.replace(env_toml, "host = \"postgres.example.internal\"", "host = \"127.0.0.1\"");
    repo.replace(env_toml, "port = 5432", &format!("port = {}", server.port()));
    let secrets = repo.root().join("environments/flux-example/secrets.enc.yaml");
    let set = repo.xtask_with(
        &["secrets", "set", secrets.to_str().unwrap(), "database.admin_password", "-"],
        &RunOptions::default().stdin(pg::ADMIN_PASSWORD),
    );
    set.assert_code(0);
    deploy(&repo);
    let tree = repo.root().join(TREE);
    assert!(!tree.join("databases").exists(), "the tree holds database Jobs");
    for (file, bytes) in files(&tree) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("flux-example-databases"), "{file} mentions the databases Kustomization");
    }
    let as_admin =
        [("PGUSER", pg::ADMIN_USER), ("PGPASSWORD", pg::ADMIN_PASSWORD), ("PGDATABASE", "postgres")];
    let roles = psql(
        &server,
        &as_admin,
        &["--command", "SELECT rolname FROM pg_roles WHERE rolname LIKE '%_user' ORDER BY 1"],
    );
    assert_eq!(
        roles.lines().collect::<Vec<_>>(),
        ["authorization_server_user", "oob_consent_user", "oof_event_service_user", "oof_pcm_service_user"]
    );
    // A second deploy changes nothing, in the tree or in the database.
    let again = deploy(&repo);
    assert!(again.stderr.contains("0 succeeded, 0 failed, 0 skipped, 38 unchanged"), "{}", again.stderr);
}
