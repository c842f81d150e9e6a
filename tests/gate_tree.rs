//! The pull-request gate refuses what it does not understand (issue #13): every entry of the
//! client tree is a namespace, a component, a file the tool knows or an error naming its path;
//! nothing is read from outside the repository; no repository is guessed; environment names
//! are validated; one run reports every independent error; files and TOML nesting are
//! bounded. Each test snapshots the rendered diagnostics (`tests/snapshots/gate_tree__*`).

mod util;

use std::os::unix::fs::symlink;
use std::path::Path;

use platform::check::{CheckReport, check_environment};
use platform::diagnostic::render_plain;
use platform::load::environment::survey_environments;
use platform::load::tree::FsTree;
use platform::source::SourceMap;
use util::{Repo, xtask};

const STATUS_DIR: &str = "environments/example/opus/oob-status";
const STATUS: &str = "environments/example/opus/oob-status/component.toml";

struct Checked {
    report: CheckReport,
    rendered: String,
}

fn check(repo: &Repo, env: &str) -> Checked {
    let report = check_environment(&FsTree::new(repo.root()), &components::catalog(), env)
        .unwrap_or_else(|e| panic!("environment `{env}` could not be loaded: {e}"));
    let rendered = render_plain(&report.diagnostics, &report.sources);
    Checked { report, rendered }
}

impl Checked {
    fn messages(&self) -> Vec<&str> {
        self.report.diagnostics.iter().map(|d| d.message.as_str()).collect()
    }

    /// Asserts exactly these messages, in this order, and that the environment did not pass.
    fn assert_messages(&self, expected: &[&str]) -> &Checked {
        assert_eq!(self.messages(), expected, "{}", self.rendered);
        assert!(self.report.checked.is_none(), "an environment with errors must not pass");
        self
    }
}

fn full(repo: &Repo, path: &str) -> std::path::PathBuf {
    repo.root().join(path)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// --- 1. Silent drops ---------------------------------------------------------------------

#[test]
fn renamed_component_toml_is_an_error_naming_the_directory() {
    let repo = Repo::shipped();
    std::fs::rename(full(&repo, STATUS), full(&repo, &format!("{STATUS_DIR}/component.tml"))).unwrap();
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "directory environments/example/opus/oob-status is not a component: it has no component.toml",
    ]);
    insta::assert_snapshot!(checked.rendered);
    // The CLI fails instead of passing with fewer components.
    repo.xtask(&["check", "example"]).assert_code(1).assert_stderr_contains("it has no component.toml");
}

#[test]
fn renamed_namespace_toml_is_an_error_instead_of_a_vanished_namespace() {
    let repo = Repo::shipped();
    let ns = "environments/example/opus-gateway";
    std::fs::rename(
        full(&repo, &format!("{ns}/namespace.toml")),
        full(&repo, &format!("{ns}/namespace.tml")),
    )
    .unwrap();
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "directory environments/example/opus-gateway is not a namespace: it has no namespace.toml",
    ]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn dangling_component_toml_symlink_is_an_error() {
    let repo = Repo::shipped();
    std::fs::remove_file(full(&repo, STATUS)).unwrap();
    symlink("missing.toml", full(&repo, STATUS)).unwrap();
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "environments/example/opus/oob-status/component.toml is a symbolic link that cannot be followed: No such file or directory (os error 2)",
    ]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn symlink_loop_is_an_error() {
    let repo = Repo::shipped();
    let looped = full(&repo, "environments/example/opus/loop");
    symlink("loop", &looped).unwrap();
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "environments/example/opus/loop is a symbolic link that cannot be followed: Too many levels of symbolic links (os error 40)",
    ]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn component_directory_replaced_by_a_file_is_an_error() {
    let repo = Repo::shipped();
    std::fs::remove_dir_all(full(&repo, STATUS_DIR)).unwrap();
    repo.write(STATUS_DIR, "status = 1\n");
    let checked = check(&repo, "example");
    // oob-status gone, its dependents' checks still run (none depends on it).
    checked.assert_messages(&["unexpected file environments/example/opus/oob-status"]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unreadable_directory_is_an_error_when_not_root() {
    if is_root() {
        // Root reads a mode-000 directory; the other tests cover what root cannot get past.
        eprintln!("skipped: running as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::shipped();
    let dir = full(&repo, STATUS_DIR);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let checked = check(&repo, "example");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        checked.messages().iter().any(|m| m.contains("environments/example/opus/oob-status")),
        "{}",
        checked.rendered
    );
    assert!(checked.report.checked.is_none());
}

#[test]
fn nested_component_is_an_error() {
    let repo = Repo::shipped();
    repo.write(&format!("{STATUS_DIR}/sub/component.toml"), "[inputs]\n");
    let checked = check(&repo, "example");
    checked.assert_messages(&["unexpected directory environments/example/opus/oob-status/sub"]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn dot_directories_are_errors() {
    let repo = Repo::shipped();
    repo.write("environments/example/opus/.hidden/component.toml", "[inputs]\n");
    repo.write("environments/example/.cache/namespace.toml", "");
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "namespace name `.cache` is not a DNS-1123 label",
        "component name `.hidden` is not a DNS-1123 label",
        "unknown component template `.hidden`",
    ]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn stray_files_are_errors_at_every_level() {
    let repo = Repo::shipped();
    repo.write(&format!("{STATUS_DIR}/values.yaml"), "replicas: 3\n");
    repo.write("environments/example/opus/secrets.enc.yaml", "");
    repo.write("environments/example/env.toml.orig", "");
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "unexpected file environments/example/env.toml.orig",
        "unexpected file environments/example/opus/oob-status/values.yaml",
        "unexpected file environments/example/opus/secrets.enc.yaml",
    ]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn tool_state_notes_and_the_key_file_are_allowed() {
    let repo = Repo::shipped();
    repo.write("environments/example/.opus/journal.log", "x\n");
    repo.write("environments/example/.opus/rotation.json", "{}\n");
    repo.write("environments/README.md", "# notes\n");
    repo.write("environments/example/README.md", "# notes\n");
    repo.write("environments/example/opus/README.md", "# notes\n");
    repo.write(&format!("{STATUS_DIR}/NOTES.md"), "# notes\n");
    // demo.agekey (env.toml's key_store) and secrets.enc.yaml are in the shipped tree.
    assert!(full(&repo, "environments/example/demo.agekey").is_file());
    let checked = check(&repo, "example");
    assert!(checked.report.diagnostics.is_empty(), "{}", checked.rendered);
    let (names, problems) = survey_environments(&FsTree::new(repo.root())).unwrap();
    assert_eq!(names, ["example", "flux-example", "prod", "staging"]);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_link_inside_the_repository_is_followed() {
    let repo = Repo::shipped();
    let text = repo.read(STATUS);
    repo.write("shared/oob-status.toml", &text);
    std::fs::remove_file(full(&repo, STATUS)).unwrap();
    symlink(full(&repo, "shared/oob-status.toml"), full(&repo, STATUS)).unwrap();
    let checked = check(&repo, "example");
    assert!(checked.report.diagnostics.is_empty(), "{}", checked.rendered);
}

#[test]
fn directory_in_environments_without_env_toml_is_an_error() {
    let repo = Repo::shipped();
    std::fs::rename(full(&repo, "environments/prod/env.toml"), full(&repo, "environments/prod/env.tml"))
        .unwrap();
    repo.write("environments/notes.txt", "");
    let (names, problems) = survey_environments(&FsTree::new(repo.root())).unwrap();
    assert_eq!(names, ["example", "flux-example", "staging"]);
    let rendered = render_plain(&problems, &SourceMap::new());
    insta::assert_snapshot!(rendered);
    let run = repo.xtask(&["check"]);
    run.assert_code(1)
        .assert_stderr_contains("directory environments/prod is not an environment: it has no env.toml")
        .assert_stderr_contains("unexpected file environments/notes.txt")
        .assert_stderr_contains("Checked `example`")
        .assert_stderr_contains("Checked `staging`");
}

// --- 2. Nothing is read from outside the repository ----------------------------------------

const OUTSIDE_CONTENT: &str = "root:$6$TOP-SECRET-HASH:19000:0:99999:7:::";

/// A file outside the repository, standing for /etc/shadow.
fn outside_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow");
    std::fs::write(&path, format!("{OUTSIDE_CONTENT}\n")).unwrap();
    (dir, path)
}

#[test]
fn component_toml_linked_outside_the_repository_is_refused_without_its_content() {
    let repo = Repo::shipped();
    let (_outside, shadow) = outside_file();
    std::fs::remove_file(full(&repo, STATUS)).unwrap();
    symlink(&shadow, full(&repo, STATUS)).unwrap();
    let checked = check(&repo, "example");
    checked.assert_messages(&[
        "environments/example/opus/oob-status/component.toml resolves outside the repository",
    ]);
    insta::assert_snapshot!(checked.rendered);
    let run = repo.xtask(&["check", "example"]);
    run.assert_code(1).assert_stderr_contains("resolves outside the repository");
    assert!(!run.stderr.contains("TOP-SECRET") && !run.stdout.contains("TOP-SECRET"), "{}", run.stderr);
    assert!(!run.stderr.contains(shadow.to_str().unwrap()), "the target is not named:\n{}", run.stderr);
}

#[test]
fn etc_shadow_as_component_toml_is_refused() {
    // The reproduction, verbatim.
    let repo = Repo::shipped();
    std::fs::remove_file(full(&repo, STATUS)).unwrap();
    symlink("/etc/shadow", full(&repo, STATUS)).unwrap();
    let run = repo.xtask(&["check", "example"]);
    run.assert_code(1).assert_stderr_contains(
        "environments/example/opus/oob-status/component.toml resolves outside the repository",
    );
    assert!(!run.stderr.contains("root:"), "{}", run.stderr);
}

#[test]
fn env_toml_secrets_and_directories_linked_outside_are_refused() {
    let repo = Repo::shipped();
    let (outside, shadow) = outside_file();
    // env.toml of staging, a secrets file of prod, a namespace directory of example.
    let staging_env = full(&repo, "environments/staging/env.toml");
    std::fs::remove_file(&staging_env).unwrap();
    symlink(&shadow, &staging_env).unwrap();
    let prod_secrets = full(&repo, "environments/prod/opus/oob-consent/secrets.enc.yaml");
    std::fs::remove_file(&prod_secrets).unwrap();
    symlink(&shadow, &prod_secrets).unwrap();
    std::fs::create_dir(outside.path().join("ns")).unwrap();
    std::fs::write(outside.path().join("ns/namespace.toml"), "").unwrap();
    symlink(outside.path().join("ns"), full(&repo, "environments/example/elsewhere")).unwrap();

    let staging = check(&repo, "staging");
    staging.assert_messages(&["environments/staging/env.toml resolves outside the repository"]);
    let prod = check(&repo, "prod");
    prod.assert_messages(&[
        "environments/prod/opus/oob-consent/secrets.enc.yaml resolves outside the repository",
    ]);
    let example = check(&repo, "example");
    example.assert_messages(&["environments/example/elsewhere resolves outside the repository"]);
    insta::assert_snapshot!(format!("{}{}{}", staging.rendered, prod.rendered, example.rendered));
    let run = repo.xtask(&["check"]);
    run.assert_code(1);
    assert!(!run.stderr.contains("TOP-SECRET"), "{}", run.stderr);
}

// --- 3. No repository is guessed ----------------------------------------------------------

#[test]
fn no_environments_in_the_current_directory_is_refused_naming_root() {
    // The runner starts the binary in an empty directory, without --root.
    let run = xtask(&["check"]);
    run.assert_code(2).assert_stderr_contains("--root");
    let home = run.stderr.lines().next().unwrap_or_default().to_owned();
    assert!(home.starts_with("error: cannot find the repository"), "{}", run.stderr);
    insta::assert_snapshot!(normalize_cwd(&run.stderr));
}

fn normalize_cwd(text: &str) -> String {
    let re = regex_lite_cwd(text);
    re.unwrap_or_else(|| text.to_owned())
}

/// Replaces the temporary directory the binary ran in (between `neither ` and ` nor`).
fn regex_lite_cwd(text: &str) -> Option<String> {
    let start = text.find("neither ")? + "neither ".len();
    let end = start + text[start..].find(" nor ")?;
    Some(format!("{}[CWD]{}", &text[..start], &text[end..]))
}

// --- 4. Environment names -----------------------------------------------------------------

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn environment_directory_names_must_be_dns_labels() {
    let repo = Repo::shipped();
    for name in ["..ex", "Staging_2"] {
        copy_tree(&full(&repo, "environments/staging"), &full(&repo, &format!("environments/{name}")));
    }
    let dots = check(&repo, "..ex");
    dots.assert_messages(&["environment name `..ex` is not a DNS-1123 label"]);
    let upper = check(&repo, "Staging_2");
    upper.assert_messages(&["environment name `Staging_2` is not a DNS-1123 label"]);
    insta::assert_snapshot!(format!("{}{}", dots.rendered, upper.rendered));
    repo.xtask(&["check", "..ex"]).assert_code(1).assert_stderr_contains("is not a DNS-1123 label");
    // A path is never an environment name.
    repo.xtask(&["check", "../environments/staging"])
        .assert_code(2)
        .assert_stderr_contains("unknown environment");
}

// --- 5. Every independent error in one run ------------------------------------------------

#[test]
fn five_faults_in_five_files_are_reported_in_one_run() {
    let repo = Repo::shipped();
    repo.replace("environments/client.toml", "brand_id = \"acme-bank\"", "brand_id = \"Acme-Bank\"");
    repo.replace("environments/staging/env.toml", "protected = false", "protectd = false");
    repo.replace("environments/staging/opus/namespace.toml", "[annotations]", "[anotations]");
    repo.replace("environments/staging/opus/oob-consent/component.toml", "replicas = 2", "replica = 2");
    repo.write("environments/staging/opus/oob-status/component.toml", "depends_on = [\"oob-consnet\"]\n");
    let checked = check(&repo, "staging");
    checked.assert_messages(&[
        "unknown key `protectd` in the top level",
        "unknown key `anotations` in the top level",
        "unknown key `replica` in `inputs`",
        "invalid brand id `Acme-Bank`",
        "opus/oob-status depends on unknown component `oob-consnet`",
    ]);
    insta::assert_snapshot!(checked.rendered);
    let run = repo.xtask(&["check", "staging"]);
    run.assert_code(1).assert_stderr_contains("error: could not check `staging` due to 5 previous errors");
}

#[test]
fn a_file_that_cannot_be_parsed_hides_only_the_checks_that_need_it() {
    let repo = Repo::shipped();
    // env.toml unusable: the checks of client.toml's and the components' own files still run.
    repo.replace("environments/staging/env.toml", "port = 5432", "port = = 5432");
    repo.replace("environments/staging/opus/oob-consent/component.toml", "replicas = 2", "replica = 2");
    repo.replace("environments/staging/opus/namespace.toml", "[annotations]", "[anotations]");
    let checked = check(&repo, "staging");
    let (syntax, others): (Vec<&str>, Vec<&str>) =
        checked.messages().into_iter().partition(|m| m.starts_with("invalid TOML: "));
    assert!(!syntax.is_empty(), "{}", checked.rendered);
    assert_eq!(others, ["unknown key `anotations` in the top level", "unknown key `replica` in `inputs`"]);
}

// --- 6. Input limits ----------------------------------------------------------------------

#[test]
fn configuration_file_over_one_mebibyte_is_refused() {
    let repo = Repo::shipped();
    let mut text = repo.read(STATUS);
    text.push_str(&format!("# {}\n", "x".repeat(1024 * 1024)));
    repo.write(STATUS, &text);
    let checked = check(&repo, "example");
    checked.assert_messages(&[&format!(
        "environments/example/opus/oob-status/component.toml is larger than the limit of 1048576 bytes ({} bytes)",
        text.len()
    )]);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn deeply_nested_toml_is_an_error_not_a_crash() {
    let repo = Repo::shipped();
    // 100k `[`, one per line so the snippet stays short.
    repo.write(STATUS, &format!("x = {}", "[\n".repeat(100_000)));
    let checked = check(&repo, "example");
    checked.assert_messages(&["TOML nested deeper than 64 levels"]);
    insta::assert_snapshot!(checked.rendered);
    // Dotted keys nest too.
    let keys = vec!["k"; 100_000].join(".");
    repo.write(STATUS, &format!("[values_custom]\n{keys} = 1\n"));
    check(&repo, "example").assert_messages(&["TOML nested deeper than 64 levels"]);
    repo.xtask(&["check", "example"]).assert_code(1).assert_stderr_contains("nested deeper than 64 levels");
}

/// A [`SourceTree`](platform::load::tree::SourceTree) that counts the reads of each file.
struct CountingTree {
    inner: FsTree,
    reads: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl platform::load::tree::SourceTree for CountingTree {
    fn read(&self, path: &str) -> std::io::Result<Option<String>> {
        *self.reads.lock().unwrap().entry(path.to_owned()).or_default() += 1;
        self.inner.read(path)
    }
    fn dirs(&self, path: &str) -> std::io::Result<Vec<String>> {
        self.inner.dirs(path)
    }
    fn entries(&self, path: &str) -> std::io::Result<Vec<platform::load::tree::DirEntry>> {
        self.inner.entries(path)
    }
    fn exists(&self, path: &str) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn compiling_with_keys_reads_each_input_once_and_returns_what_it_loaded() {
    let repo = Repo::shipped();
    let tree = CountingTree { inner: FsTree::new(repo.root()), reads: Default::default() };
    let mut asked = 0;
    let compiled = platform::compile::compile_finding_keys(&tree, &components::catalog(), "example", |env| {
        asked += 1;
        platform::access::identities_for(repo.root(), env).map(Some)
    })
    .expect("example loads");
    assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
    assert_eq!(asked, 1, "the keys are looked up once, with the loaded env.toml");
    let reads = tree.reads.into_inner().unwrap();
    let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(twice, Vec::<(&String, &usize)>::new(), "files read more than once");
    for input in [
        "environments/example/env.toml",
        "environments/example/secrets.enc.yaml",
        "environments/example/opus/oob-consent/component.toml",
        "environments/example/opus/oob-consent/secrets.enc.yaml",
    ] {
        assert_eq!(reads.get(input), Some(&1), "{input} is read once: {reads:#?}");
    }

    // What the deploy goes on with: env.toml as loaded, the decrypted admin password.
    let inputs = compiled.inputs.expect("a compiled plan comes with its inputs");
    assert!(inputs.secrets.is_decrypted());
    let identities = inputs.identities.as_ref().expect("the identities the secrets were decrypted with");
    let expected = platform::access::read_env_file(repo.root(), "example").unwrap();
    assert_eq!(inputs.environment.env.database.host, expected.database.host);
    let from_compile = platform::session::admin_password_of(repo.root(), "example", &inputs.secrets).unwrap();
    let decrypted =
        platform::session::decrypt_admin_password(repo.root(), "example", Some(identities)).unwrap();
    assert_eq!(from_compile.expose(), decrypted.expose());
}
