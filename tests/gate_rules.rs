//! The pull-request gate refuses what it does not understand (issue #13): an invalid `core`
//! (before any fetch and before this checkout's core runs anything), two components
//! provisioning one database or one role, a protected cluster environment without a shared
//! journal, and secrets files holding keys nobody reads, secrets in clear, or a tampered
//! ciphertext. Each rule asserts its `file:line:col` in code and snapshots the rendered
//! diagnostics (`tests/snapshots/gate_rules__*`, review with `cargo insta review`).

mod util;

use std::path::PathBuf;

use platform::check::{CheckReport, check_environment};
use platform::compile::compile_environment;
use platform::diagnostic::{Diagnostic, render_plain};
use platform::load::tree::FsTree;
use platform::secrets::{Identities, set_value};
use platform::sensitive::SecretString;
use util::{Repo, RunOptions};

const STAGING_ENV: &str = "environments/staging/env.toml";
const PROD_ENV: &str = "environments/prod/env.toml";
const CLIENT: &str = "environments/client.toml";
const EXAMPLE_ENV: &str = "environments/example/env.toml";
const EXAMPLE_KEY: &str = "environments/example/demo.agekey";
const EXAMPLE_CONSENT_SECRETS: &str = "environments/example/opus/oob-consent/secrets.enc.yaml";
const EXAMPLE_AUTH_SECRETS: &str = "environments/example/opus/oob-authorization-server/secrets.enc.yaml";
const EXAMPLE_ENV_SECRETS: &str = "environments/example/secrets.enc.yaml";

/// The diagnostics of one environment, rendered as the CLI prints them without colors.
struct Checked {
    diagnostics: Vec<Diagnostic>,
    sources: platform::source::SourceMap,
    rendered: String,
}

fn checked(report: CheckReport) -> Checked {
    let rendered = render_plain(&report.diagnostics, &report.sources);
    Checked { diagnostics: report.diagnostics, sources: report.sources, rendered }
}

/// `check` without keys (the library call `cargo xtask check` makes on a CI without keys).
fn check(repo: &Repo, env: &str) -> Checked {
    let report = check_environment(&FsTree::new(repo.root()), &components::catalog(), env)
        .unwrap_or_else(|e| panic!("environment `{env}` could not be loaded: {e}"));
    checked(report)
}

/// A compile with the example's demo key, as `check` and `plan` do when it is available.
fn check_with_demo_key(repo: &Repo) -> Checked {
    let compiled = compile_environment(
        &FsTree::new(repo.root()),
        &components::catalog(),
        "example",
        Some(&demo_identities(repo)),
    )
    .expect("example loads");
    let rendered = render_plain(&compiled.diagnostics, &compiled.sources);
    Checked { diagnostics: compiled.diagnostics, sources: compiled.sources, rendered }
}

fn demo_identities(repo: &Repo) -> Identities {
    Identities::from_key_text(EXAMPLE_KEY, &SecretString::new(repo.read(EXAMPLE_KEY))).expect("the demo key")
}

impl Checked {
    fn location(&self, diagnostic: &Diagnostic) -> Option<String> {
        diagnostic.primary.as_ref().map(|label| self.sources.location(label.span))
    }

    fn find(&self, message: &str) -> &Diagnostic {
        self.diagnostics
            .iter()
            .find(|d| d.message == message)
            .unwrap_or_else(|| panic!("no diagnostic `{message}`; got:\n{}", self.rendered))
    }

    fn assert_error(&self, location: &str, message: &str) -> &Diagnostic {
        let diagnostic = self.find(message);
        assert_eq!(self.location(diagnostic).as_deref(), Some(location), "{}", self.rendered);
        diagnostic
    }

    fn assert_count(&self, n: usize) {
        assert_eq!(self.diagnostics.len(), n, "{}", self.rendered);
    }

    fn assert_clean(&self) {
        assert!(self.diagnostics.is_empty(), "{}", self.rendered);
    }
}

/// The rendering with every `ENC[...]` value shortened: a file rewritten by the test gets fresh
/// IVs and ciphertexts on every run.
fn redacted(rendered: &str) -> String {
    let mut out = String::new();
    let mut rest = rendered;
    while let Some(start) = rest.find("ENC[AES256_GCM,") {
        out.push_str(&rest[..start]);
        // A long line is cut by the renderer (`…`): the value ends there, or at its `]`.
        let value = &rest[start..];
        let end = match value.find([']', '\n', '…']) {
            Some(i) if value[i..].starts_with(']') => start + i + 1,
            Some(i) => start + i,
            None => rest.len(),
        };
        out.push_str("ENC[...]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn help(diagnostic: &Diagnostic) -> &str {
    diagnostic.help.as_deref().unwrap_or("")
}

fn snapshot_name(value: &str) -> String {
    let name: String =
        value.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if name.trim_matches('_').is_empty() { "empty".to_owned() } else { name }
}

// --- 1. `core` is validated before any fetch and before this checkout's core runs -----------

/// A `git` on PATH that records every call in a marker file and fails: any attempt to fetch
/// a core shows. With the client's core repository a URL that resolves nowhere.
struct NoNetwork {
    _dir: tempfile::TempDir,
    marker: PathBuf,
    cache: PathBuf,
    options: RunOptions,
}

fn no_network(repo: &Repo) -> NoNetwork {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dir.path().join("git-was-called");
    let git = bin.join("git");
    std::fs::write(&git, format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", marker.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.replace(
        CLIENT,
        "https://git.acme.example/platform/opus-core.git",
        "https://core.invalid/no-such-repository.git",
    );
    let cache = dir.path().join("cores");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let options = RunOptions::default().env("PATH", path).env("OPUS_CORE_CACHE", cache.to_str().unwrap());
    NoNetwork { _dir: dir, marker, cache, options }
}

impl NoNetwork {
    fn assert_untouched(&self, what: &str) {
        assert!(
            !self.marker.exists(),
            "{what}: git was run: {}",
            std::fs::read_to_string(&self.marker).unwrap_or_default()
        );
        assert!(!self.cache.exists(), "{what}: the core cache was created");
    }
}

#[test]
fn invalid_core_values_are_refused_with_their_place_before_any_fetch() {
    for (value, help_text) in [
        ("1.4.0 ", "remove the spaces: `core = \"1.4.0\"`"),
        ("", "write `core = \"example\"` for this checkout"),
        ("example ", "remove the spaces: `core = \"example\"`"),
        ("../x", "write `core = \"example\"` for this checkout"),
        ("latest", "write `core = \"example\"` for this checkout"),
        (
            "v1.4.0",
            "the git tag is `v1.4.0`, and `core` is the version without the `v`: write `core = \"1.4.0\"`",
        ),
        ("1.4", "write `core = \"example\"` for this checkout"),
    ] {
        let repo = Repo::shipped();
        let world = no_network(&repo);
        repo.replace(STAGING_ENV, "core = \"example\"", &format!("core = {value:?}"));
        let at = repo.location_of(STAGING_ENV, &format!("{value:?}\n"));

        let checked = check(&repo, "staging");
        let d = checked.assert_error(&at, &format!("invalid core {value:?}"));
        assert!(help(d).starts_with(help_text), "{value:?}: {}", checked.rendered);
        checked.assert_count(1);
        insta::assert_snapshot!(format!("invalid_core_{}", snapshot_name(value)), checked.rendered);

        // The binary: `check` and `plan` fail (1) with the place, and never reach git.
        for command in [&["check", "staging"][..], &["plan", "staging"][..]] {
            let run = repo.xtask_with(command, &world.options);
            run.assert_code(1).assert_stderr_contains(&format!("[{at}]"));
            assert!(!run.stderr.contains("Checked"), "{value:?} {command:?}:\n{}", run.stderr);
            world.assert_untouched(&format!("{value:?} {command:?}"));
        }
        // A command that does not load the environment is refused before it starts (2).
        let run = repo.xtask_with(
            &[
                "secrets",
                "show",
                &repo.root().join("environments/staging/secrets.enc.yaml").display().to_string(),
            ],
            &world.options,
        );
        run.assert_code(2).assert_stderr_contains(&format!("{at}: `core = {value:?}` is neither `example`"));
        world.assert_untouched(&format!("{value:?} secrets show"));
    }
}

#[test]
fn a_valid_core_version_does_reach_git_so_the_no_network_test_can_fail() {
    let repo = Repo::shipped();
    let world = no_network(&repo);
    repo.replace(STAGING_ENV, "core = \"example\"", "core = \"1.4.0-rc.1\"");
    let run = repo.xtask_with(&["check", "staging"], &world.options);
    run.assert_code(2);
    assert!(world.marker.exists(), "a valid version is fetched:\n{}", run.stderr);
}

// --- 2. One database, one role: one component -------------------------------------------

const STAGING_CONSENT_DIR: &str = "environments/staging/opus/oob-consent";
const STAGING_COPY: &str = "environments/staging/opus/consent-copy/component.toml";

#[test]
fn a_component_copied_under_another_name_is_refused_for_its_database_and_its_role() {
    let repo = Repo::shipped();
    let original = repo.read(&format!("{STAGING_CONSENT_DIR}/component.toml"));
    repo.write(STAGING_COPY, &format!("template = \"oob-consent\"\n{original}"));
    repo.write(
        "environments/staging/opus/consent-copy/secrets.enc.yaml",
        &repo.read(&format!("{STAGING_CONSENT_DIR}/secrets.enc.yaml")),
    );
    let checked = check(&repo, "staging");
    let at = repo.location_of(STAGING_COPY, "\"oob-consent\"");
    let database = checked
        .assert_error(&at, "opus/consent-copy and opus/oob-consent both provision database `api_consent`");
    assert!(help(database).contains("give one of them its own `[database] name"), "{}", checked.rendered);
    let first = &database.related[0];
    assert_eq!(
        checked.location(first).as_deref(),
        Some(format!("{STAGING_CONSENT_DIR}/component.toml:1:1").as_str()),
        "the other component is named with its place:\n{}",
        checked.rendered
    );
    checked
        .assert_error(&at, "opus/consent-copy and opus/oob-consent both provision role `oob_consent_user`");
    checked.assert_count(2);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn a_database_user_override_naming_another_components_role_is_refused() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus/oof-pcm-service/component.toml";
    let text = repo.read(path);
    repo.write(path, &format!("{text}\n[database]\nuser = \"oob_consent_user\"\n"));
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(path, "\"oob_consent_user\""),
        "opus/oob-consent and opus/oof-pcm-service both provision role `oob_consent_user`",
    );
    assert!(help(d).contains("set the role's password"), "{}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

// --- 3. A protected cluster environment shares its journal ---------------------------------

#[test]
fn protected_cluster_environment_without_a_journal_table_is_refused() {
    let repo = Repo::shipped();
    repo.replace(PROD_ENV, "[journal]\nbackend = \"postgres\"\n", "");
    let checked = check(&repo, "prod");
    let d = checked.assert_error(
        &repo.location_of(PROD_ENV, "protected = true"),
        "protected environment `prod` deploys to a cluster without a shared journal",
    );
    assert!(help(d).contains("`backend = \"postgres\"`"), "{}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn protected_cluster_environment_with_an_explicit_file_journal_passes_and_every_deploy_warns() {
    let repo = Repo::shipped();
    repo.replace(PROD_ENV, "backend = \"postgres\"", "backend = \"file\"");
    check(&repo, "prod").assert_clean();

    // The example (its key is committed) made a protected cluster environment on a file
    // journal: the deploy warns before it takes the lock, then fails to reach the cluster.
    repo.replace(EXAMPLE_ENV, "protected = false", "protected = true");
    repo.replace(EXAMPLE_ENV, "environment = \"sandbox\"", "environment = \"production\"");
    repo.replace(
        EXAMPLE_ENV,
        "kind = \"directory\"\npath = \"bundle/example\"\n# DEMO KEY, committed on purpose: see the comment at the top.\nkey_store = \"environments/example/demo.agekey\"\n",
        "kind = \"kube\"\ncontext = \"no-such-context\"\nkubeconfig = \"no-such-kubeconfig\"\n\n[journal]\nbackend = \"file\"\n",
    );
    std::fs::remove_dir_all(repo.root().join("environments/example/opus-system/cert-manager")).unwrap();
    check(&repo, "example").assert_clean();
    let key = repo.root().join(EXAMPLE_KEY).display().to_string();
    let run = repo
        .xtask_with(&["deploy", "example", "--yes"], &RunOptions::default().env("SOPS_AGE_KEY_FILE", key));
    run.assert_stderr_contains(
        "warning: `example` is protected but its journal and deploy lock are files in this working tree",
    );
    assert_ne!(run.code, Some(0), "there is no cluster:\n{}", run.stderr);
}

#[test]
fn shipped_prod_shares_its_journal() {
    let repo = Repo::shipped();
    assert!(repo.read(PROD_ENV).contains("[journal]\nbackend = \"postgres\"\n"));
    check(&repo, "prod").assert_clean();
}

// A flux target keeps its key in one store: the cluster's decryption Secret or a file.
#[test]
fn flux_target_with_a_cluster_context_and_a_key_store_file_is_refused() {
    let env = "environments/flux-example/env.toml";
    let repo = Repo::shipped();
    repo.replace(env, "databases = \"job\"\n", "databases = \"job\"\ncontext = \"acme-flux\"\n");
    let checked = check(&repo, "flux-example");
    let d = checked.assert_error(
        &repo.location_of(env, "context = \"acme-flux\""),
        "the flux target of `flux-example` names two key stores: the cluster's decryption Secret and a key store file",
    );
    assert!(help(d).contains("remove `key_store`"), "{}", checked.rendered);
    assert!(checked.rendered.contains("flux-system/sops-age"), "{}", checked.rendered);
    checked.assert_count(1);

    // Either one alone passes.
    repo.replace(env, "key_store = \"environments/flux-example/demo.agekey\"\n", "");
    check(&repo, "flux-example").assert_clean();
}

// --- 4. Secrets files hold what their owner reads, encrypted, untampered ----------------

/// Writes a key into a copy's secrets file with the library (which, like sops, accepts any
/// key), as a hand edit or an older tool would.
fn set_in_file(repo: &Repo, file: &str, key: &str, value: &str) {
    set_value(&repo.root().join(file), key, SecretString::new(value.to_owned()), &demo_identities(repo))
        .unwrap_or_else(|e| panic!("set {key} in {file}: {e}"));
}

#[test]
fn a_key_the_template_does_not_read_is_refused_with_the_closest_key() {
    let repo = Repo::shipped();
    set_in_file(&repo, EXAMPLE_CONSENT_SECRETS, "db.pasword", "typo");
    let checked = check(&repo, "example");
    let d = checked.assert_error(
        &repo.location_of(EXAMPLE_CONSENT_SECRETS, "pasword"),
        &format!("unknown secret `db.pasword` in {EXAMPLE_CONSENT_SECRETS}"),
    );
    assert!(help(d).starts_with("did you mean `db.password`?"), "{}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(redacted(&checked.rendered));
}

#[test]
fn a_key_the_environment_does_not_read_is_refused() {
    let repo = Repo::shipped();
    set_in_file(&repo, EXAMPLE_ENV_SECRETS, "database.admin_pasword", "typo");
    let checked = check(&repo, "example");
    let d = checked.assert_error(
        &repo.location_of(EXAMPLE_ENV_SECRETS, "admin_pasword"),
        &format!("unknown secret `database.admin_pasword` in {EXAMPLE_ENV_SECRETS}"),
    );
    assert!(help(d).starts_with("did you mean `database.admin_password`?"), "{}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(redacted(&checked.rendered));
}

#[test]
fn values_sensitive_custom_is_free_form() {
    let repo = Repo::shipped();
    set_in_file(&repo, EXAMPLE_AUTH_SECRETS, "values_sensitive_custom.any.thing", "secret");
    check(&repo, "example").assert_clean();
}

#[test]
fn a_sensitive_value_stored_in_clear_with_the_unencrypted_suffix_is_refused() {
    let repo = Repo::shipped();
    set_in_file(&repo, EXAMPLE_CONSENT_SECRETS, "values_sensitive_custom.oidc.token_unencrypted", "in-clear");
    assert!(repo.read(EXAMPLE_CONSENT_SECRETS).contains("token_unencrypted: in-clear"));
    let checked = check(&repo, "example");
    let d = checked.assert_error(
        &repo.location_of(EXAMPLE_CONSENT_SECRETS, "token_unencrypted"),
        &format!("secret `values_sensitive_custom.oidc.token_unencrypted` is stored in clear in {EXAMPLE_CONSENT_SECRETS}"),
    );
    assert!(help(d).contains("rename the key without the `_unencrypted` suffix"), "{}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(redacted(&checked.rendered));
}

#[test]
fn a_template_secret_renamed_with_the_unencrypted_suffix_is_refused() {
    let repo = Repo::shipped();
    set_in_file(&repo, EXAMPLE_AUTH_SECRETS, "db.password_unencrypted", "in-clear");
    let checked = check(&repo, "example");
    let d = checked.assert_error(
        &repo.location_of(EXAMPLE_AUTH_SECRETS, "password_unencrypted"),
        &format!("unknown secret `db.password_unencrypted` in {EXAMPLE_AUTH_SECRETS}"),
    );
    assert!(help(d).contains("`db.password` is a secret"), "{}", checked.rendered);
    insta::assert_snapshot!(redacted(&checked.rendered));
}

fn demo_key_options(repo: &Repo) -> RunOptions {
    RunOptions::default().env("SOPS_AGE_KEY_FILE", repo.root().join(EXAMPLE_KEY).display().to_string())
}

#[test]
fn secrets_set_refuses_to_store_a_secret_in_clear_and_keeps_other_unencrypted_keys() {
    let repo = Repo::shipped();
    let file = repo.root().join(EXAMPLE_CONSENT_SECRETS).display().to_string();
    let before = repo.read(EXAMPLE_CONSENT_SECRETS);
    for key in ["values_sensitive_custom.oidc.token_unencrypted", "db.password_unencrypted"] {
        let run =
            repo.xtask_with(&["secrets", "set", &file, key, "-"], &demo_key_options(&repo).stdin("in-clear"));
        run.assert_code(2).assert_stderr_contains(&format!("invalid key path `{key}`"));
        run.assert_stderr_contains("would store it in clear");
        assert_eq!(repo.read(EXAMPLE_CONSENT_SECRETS), before, "{key}: the file is unchanged");
    }
    // A key nobody reads as a secret still follows sops' rule.
    let run = repo.xtask_with(
        &["secrets", "set", &file, "comment_unencrypted", "-"],
        &demo_key_options(&repo).stdin("rotated in March"),
    );
    run.assert_code(0);
    assert!(repo.read(EXAMPLE_CONSENT_SECRETS).contains("comment_unencrypted: rotated in March"));
}

#[test]
fn secrets_edit_refuses_to_store_a_secret_in_clear() {
    let repo = Repo::shipped();
    let scratch = tempfile::tempdir().unwrap();
    let editor = scratch.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nprintf 'values_sensitive_custom:\\n    token_unencrypted: in-clear\\n' >> \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = repo.read(EXAMPLE_AUTH_SECRETS);
    let file = repo.root().join(EXAMPLE_AUTH_SECRETS).display().to_string();
    let run = repo.xtask_with(
        &["secrets", "edit", &file],
        &demo_key_options(&repo).env("EDITOR", editor.display().to_string()),
    );
    run.assert_code(2)
        .assert_stderr_contains("invalid key path `values_sensitive_custom.token_unencrypted`")
        .assert_stderr_contains("would store it in clear");
    assert_eq!(repo.read(EXAMPLE_AUTH_SECRETS), before, "the file is unchanged");
}

/// Flips one character of the ciphertext of `key` (`    password: ENC[AES256_GCM,data:X`),
/// keeping valid base64 so only the authentication can notice.
fn tamper(repo: &Repo, file: &str, line_start: &str) -> String {
    let text = repo.read(file);
    let at = text.find(line_start).unwrap_or_else(|| panic!("`{line_start}` in {file}")) + line_start.len();
    let old = text.as_bytes()[at] as char;
    let new = if old == 'A' { 'B' } else { 'A' };
    let mut tampered = text.clone();
    tampered.replace_range(at..at + 1, &new.to_string());
    repo.write(file, &tampered);
    format!("{line_start}{new}")
}

/// `file:line:col` of the `ENC[` on the line starting with `line_start`.
fn value_location(repo: &Repo, file: &str, line_start: &str) -> String {
    let line = repo.location_of(file, line_start);
    let (file_line, _) = line.rsplit_once(':').unwrap();
    format!("{file_line}:{}", line_start.find("ENC").unwrap() + 1)
}

#[test]
fn a_tampered_ciphertext_is_refused_by_check_when_the_key_is_available() {
    let repo = Repo::shipped();
    let needle = tamper(&repo, EXAMPLE_CONSENT_SECRETS, "    salt: ENC[AES256_GCM,data:");
    // Without a key nothing can tell.
    check(&repo, "example").assert_clean();
    // With the environment's key (the example's is committed), the value's line is named.
    let checked = check_with_demo_key(&repo);
    let at = value_location(&repo, EXAMPLE_CONSENT_SECRETS, &needle);
    checked.assert_error(
        &at,
        &format!(
            "{EXAMPLE_CONSENT_SECRETS}: the value at `application.salt` failed authentication; the file was tampered with or a value was moved between keys"
        ),
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);

    // The binary's `check` finds the key (the example's key store) and fails.
    let run = repo.xtask(&["check", "example"]);
    run.assert_code(1)
        .assert_stderr_contains(&format!("[{at}]"))
        .assert_stderr_contains("the value at `application.salt` failed");
}

#[test]
fn a_tampered_mac_is_refused_by_check_pointing_at_the_mac() {
    let repo = Repo::shipped();
    tamper(&repo, EXAMPLE_AUTH_SECRETS, "    mac: ENC[AES256_GCM,data:");
    let checked = check_with_demo_key(&repo);
    checked.assert_error(
        &value_location(&repo, EXAMPLE_AUTH_SECRETS, "    mac: ENC"),
        &format!("{EXAMPLE_AUTH_SECRETS}: the stored MAC failed authentication; the file was tampered with"),
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn check_without_a_key_says_the_macs_were_not_verified() {
    let repo = Repo::shipped();
    let run = repo.xtask(&["check", "staging", "example"]);
    run.assert_code(0).assert_stderr_contains(
        "note: the MACs of `staging`'s secrets files were not verified (no age identity of its recipients here)",
    );
    // The example's key is committed: its MACs are verified, so no note for it.
    assert!(!run.stderr.contains("`example`'s secrets files were not verified"), "{}", run.stderr);
    let notes: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("note:")).collect();
    insta::assert_snapshot!(notes.join("\n"));
}

#[test]
fn a_key_of_another_environment_does_not_make_check_fail() {
    let repo = Repo::shipped();
    // CI holds the example's key and checks staging too: staging's files stay unverified.
    let run = repo.xtask_with(&["check", "staging"], &demo_key_options(&repo));
    run.assert_code(0).assert_stderr_contains("`staging`'s secrets files were not verified");
}

#[test]
fn shipped_environments_pass_the_gate() {
    let root = util::repo_root();
    let run = util::xtask(&["--root", root.to_str().unwrap(), "check"]);
    run.assert_code(0);
    for env in ["example", "prod", "staging"] {
        run.assert_stderr_contains(&format!("Checked `{env}`"));
    }
}

#[test]
fn secrets_new_fills_exactly_the_keys_the_owner_of_the_path_reads() {
    let repo = Repo::shipped();
    let abs = |path: &str| repo.root().join(path).display().to_string();
    let show = |path: &str| {
        let run = repo.xtask(&["secrets", "show", &abs(path)]);
        run.assert_code(0);
        run.stdout.clone()
    };
    // A component's file: its template's keys (oob-consent reads the database password).
    let consent_keys: Vec<String> = show(EXAMPLE_CONSENT_SECRETS)
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains(':'))
        .map(|l| l.split(':').next().unwrap().to_owned())
        .filter(|k| k != "values_sensitive_custom")
        .collect();
    assert!(!consent_keys.is_empty());
    std::fs::remove_file(repo.root().join(EXAMPLE_CONSENT_SECRETS)).unwrap();
    repo.xtask(&["secrets", "new", &abs(EXAMPLE_CONSENT_SECRETS)]).assert_code(0);
    let created = show(EXAMPLE_CONSENT_SECRETS);
    for key in &consent_keys {
        assert!(created.contains(&format!("{key}:")), "`{key}` generated:\n{created}");
    }

    // The environment's own file: its keys.
    std::fs::remove_file(repo.root().join(EXAMPLE_ENV_SECRETS)).unwrap();
    repo.xtask(&["secrets", "new", &abs(EXAMPLE_ENV_SECRETS)]).assert_code(0);
    let env = show(EXAMPLE_ENV_SECRETS);
    assert!(env.contains("fingerprint_key:") && env.contains("admin_password:"), "{env}");

    // Any other name at the environment's depth is nobody's file: nothing is generated.
    let other = "environments/example/other.enc.yaml";
    repo.xtask(&["secrets", "new", &abs(other)]).assert_code(0);
    assert_eq!(show(other).trim(), "{}");
}
