//! Every rule of `cargo xtask check`, one test each: a copy of the shipped environments with
//! one fault injected, checked against the real core catalog. Each test asserts the
//! `file:line:col` and the message in code (so a failure says what changed) and snapshots the
//! rendered diagnostics (`tests/snapshots/`, review with `cargo insta review`).

mod util;

use platform::check::{CheckReport, check_environment};
use platform::diagnostic::{Diagnostic, render_plain};
use platform::load::environment::LoadError;
use platform::load::tree::FsTree;
use util::Repo;

/// The diagnostics of one environment of a repository, rendered as the CLI prints them
/// without colors.
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
    fn location(&self, diagnostic: &Diagnostic) -> Option<String> {
        diagnostic.primary.as_ref().map(|label| self.report.sources.location(label.span))
    }

    /// The diagnostic with this message; fails showing everything that was reported.
    fn find(&self, message: &str) -> &Diagnostic {
        self.report
            .diagnostics
            .iter()
            .find(|d| d.message == message)
            .unwrap_or_else(|| panic!("no diagnostic `{message}`; got:\n{}", self.rendered))
    }

    /// Asserts a diagnostic with this message at this `file:line:col`.
    fn assert_error(&self, location: &str, message: &str) -> &Diagnostic {
        let diagnostic = self.find(message);
        assert_eq!(self.location(diagnostic).as_deref(), Some(location), "{}", self.rendered);
        diagnostic
    }

    /// Asserts that the check reported exactly `n` problems.
    fn assert_count(&self, n: usize) {
        assert_eq!(self.report.diagnostics.len(), n, "{}", self.rendered);
        assert!(self.report.checked.is_none(), "an environment with errors must not pass");
    }
}

fn help(diagnostic: &Diagnostic) -> &str {
    diagnostic.help.as_deref().unwrap_or("")
}

fn primary_text(diagnostic: &Diagnostic) -> &str {
    diagnostic.primary.as_ref().map_or("", |label| label.text.as_str())
}

const STAGING_ENV: &str = "environments/staging/env.toml";
const PROD_ENV: &str = "environments/prod/env.toml";
const CLIENT: &str = "environments/client.toml";
const STAGING_CONSENT: &str = "environments/staging/opus/oob-consent/component.toml";
const STAGING_OPUS_NS: &str = "environments/staging/opus/namespace.toml";

#[test]
fn shipped_environments_pass_every_rule() {
    let repo = Repo::shipped();
    for env in ["example", "staging", "prod"] {
        let checked = check(&repo, env);
        assert!(checked.report.diagnostics.is_empty(), "`{env}`:\n{}", checked.rendered);
        assert!(checked.report.checked.is_some(), "`{env}` passed but returned no environment");
    }
}

// --- Files against their schemas ---------------------------------------------------------

#[test]
fn toml_syntax_error_points_at_the_parser_position() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "port = 5432", "port = = 5432");
    let checked = check(&repo, "staging");
    let d = &checked.report.diagnostics[0];
    assert!(d.message.starts_with("invalid TOML: "), "{}", checked.rendered);
    let at = repo.location_of(STAGING_ENV, "= 5432");
    assert_eq!(checked.location(d).as_deref(), Some(at.as_str()), "{}", checked.rendered);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn wrong_type_names_the_key_and_both_types() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "port = 5432", "port = \"5432\"");
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_ENV, "\"5432\""),
        "wrong type for `database.port`: expected an integer, found a string",
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unknown_key_in_env_toml_suggests_the_closest_key() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "protected = false", "protectd = false");
    let checked = check(&repo, "staging");
    let d = checked
        .assert_error(&repo.location_of(STAGING_ENV, "protectd"), "unknown key `protectd` in the top level");
    assert_eq!(help(d), "did you mean `protected`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unknown_key_in_client_toml_suggests_the_closest_key() {
    let repo = Repo::shipped();
    repo.replace(CLIENT, "registry = ", "registy = ");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(&repo.location_of(CLIENT, "registy"), "unknown key `registy` in `charts`");
    assert_eq!(help(d), "did you mean `registry`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unknown_key_in_namespace_toml_suggests_the_closest_key() {
    let repo = Repo::shipped();
    repo.replace(STAGING_OPUS_NS, "[annotations]", "[anotations]");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(STAGING_OPUS_NS, "anotations"),
        "unknown key `anotations` in the top level",
    );
    assert_eq!(help(d), "did you mean `annotations`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unknown_key_in_component_toml_suggests_the_closest_key() {
    let repo = Repo::shipped();
    repo.replace(STAGING_CONSENT, "[inputs]", "[input]");
    let checked = check(&repo, "staging");
    let d = checked
        .assert_error(&repo.location_of(STAGING_CONSENT, "input]"), "unknown key `input` in the top level");
    assert_eq!(help(d), "did you mean `inputs`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unknown_input_suggests_the_closest_input_of_the_template() {
    let repo = Repo::shipped();
    repo.replace(STAGING_CONSENT, "replicas = 2", "replica = 2");
    let checked = check(&repo, "staging");
    let d = checked
        .assert_error(&repo.location_of(STAGING_CONSENT, "replica ="), "unknown key `replica` in `inputs`");
    assert_eq!(help(d), "did you mean `replicas`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn missing_required_key_points_at_its_table() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "admin_user = \"opus_admin\"\n", "");
    let checked = check(&repo, "staging");
    let d = checked
        .assert_error(&repo.location_of(STAGING_ENV, "[database]"), "missing key `admin_user` in `database`");
    assert!(help(d).starts_with("`admin_user`: "), "the help explains the key: {}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

// --- `values_template` belongs to the core ------------------------------------------------

const VALUES_TEMPLATE_MESSAGE: &str =
    "`values_template` is owned by the component template and cannot be set here";

#[test]
fn values_template_in_component_toml_names_the_template_module_and_the_rest_is_still_checked() {
    let repo = Repo::shipped();
    // Top-level keys go before any table header.
    repo.write(
        STAGING_CONSENT,
        "# oob-consent in staging.\nvalues_template = \"\"\"\nreplicaCount: 5\n\"\"\"\nenabld = true\n\n\
         [inputs]\nreplicas = 2\n",
    );
    let checked = check(&repo, "staging");
    let d =
        checked.assert_error(&repo.location_of(STAGING_CONSENT, "values_template"), VALUES_TEMPLATE_MESSAGE);
    assert_eq!(primary_text(d), "set by components/src/oob_consent/mod.rs");
    assert_eq!(help(d), "put client overrides in `values_custom`");
    let rest = checked
        .assert_error(&repo.location_of(STAGING_CONSENT, "enabld"), "unknown key `enabld` in the top level");
    assert_eq!(help(rest), "did you mean `enabled`?");
    checked.assert_count(2);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn values_template_in_component_toml_with_explicit_template_names_that_template() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus/payments-bis/component.toml";
    repo.write(path, "template = \"oob-payment\"\nvalues_template = \"replicaCount: 5\"\n");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(&repo.location_of(path, "values_template"), VALUES_TEMPLATE_MESSAGE);
    assert_eq!(primary_text(d), "set by components/src/oob_payment/mod.rs");
    checked.assert_count(1);
}

#[test]
fn values_template_in_env_toml_is_refused_and_the_rest_is_still_checked() {
    let repo = Repo::shipped();
    repo.replace(
        STAGING_ENV,
        "protected = false\n",
        "protectd = false\nvalues_template = \"replicaCount: 5\"\n",
    );
    let checked = check(&repo, "staging");
    let d = checked.assert_error(&repo.location_of(STAGING_ENV, "values_template"), VALUES_TEMPLATE_MESSAGE);
    assert_eq!(help(d), "put client overrides in `values_custom`");
    checked
        .assert_error(&repo.location_of(STAGING_ENV, "protectd"), "unknown key `protectd` in the top level");
    checked.assert_count(2);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn values_template_in_namespace_toml_is_refused_and_the_rest_is_still_checked() {
    let repo = Repo::shipped();
    repo.replace(
        STAGING_OPUS_NS,
        "[labels]",
        "values_template = \"replicaCount: 5\"\n\n[lables]\n\"a\" = \"b\"\n\n[labels]",
    );
    let checked = check(&repo, "staging");
    let d =
        checked.assert_error(&repo.location_of(STAGING_OPUS_NS, "values_template"), VALUES_TEMPLATE_MESSAGE);
    assert_eq!(help(d), "put client overrides in `values_custom`");
    checked
        .assert_error(&repo.location_of(STAGING_OPUS_NS, "lables"), "unknown key `lables` in the top level");
    checked.assert_count(2);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn values_template_in_client_toml_is_refused_and_the_rest_is_still_checked() {
    let repo = Repo::shipped();
    repo.replace(CLIENT, "[client]", "values_template = \"replicaCount: 5\"\n\n[client]");
    repo.replace(CLIENT, "registry = ", "registy = ");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(&repo.location_of(CLIENT, "values_template"), VALUES_TEMPLATE_MESSAGE);
    assert_eq!(help(d), "put client overrides in `values_custom`");
    checked.assert_error(&repo.location_of(CLIENT, "registy"), "unknown key `registy` in `charts`");
    checked.assert_count(2);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn values_template_nested_in_inputs_is_refused_and_the_inputs_are_still_checked() {
    let repo = Repo::shipped();
    repo.replace(
        STAGING_CONSENT,
        "replicas = 2\n",
        "replicas = 2\nvalues_template = \"replicaCount: 5\"\nresources = \"huge\"\n",
    );
    let checked = check(&repo, "staging");
    let d =
        checked.assert_error(&repo.location_of(STAGING_CONSENT, "values_template"), VALUES_TEMPLATE_MESSAGE);
    assert_eq!(primary_text(d), "set by components/src/oob_consent/mod.rs");
    checked.assert_error(
        &repo.location_of(STAGING_CONSENT, "\"huge\""),
        "invalid value `huge` for `inputs.resources`: expected one of `small`, `medium`, `large`",
    );
    checked.assert_count(2);
    insta::assert_snapshot!(checked.rendered);
}

// --- Templates and dependencies -----------------------------------------------------------

#[test]
fn unknown_template_from_the_directory_name_suggests_the_closest_template() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus/oob-consnet/component.toml";
    repo.write(path, "# a typo in the directory name\n");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(&format!("{path}:1:1"), "unknown component template `oob-consnet`");
    assert_eq!(help(d), "did you mean `oob-consent`?");
    assert_eq!(primary_text(d), "the directory name is the template name");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unknown_template_named_by_template_key_suggests_the_closest_template() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus/payments-bis/component.toml";
    repo.write(path, "template = \"oob-paymnet\"\n");
    let checked = check(&repo, "staging");
    let d = checked
        .assert_error(&repo.location_of(path, "\"oob-paymnet\""), "unknown component template `oob-paymnet`");
    assert_eq!(help(d), "did you mean `oob-payment`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

const STAGING_STATUS: &str = "environments/staging/opus/oob-status/component.toml";
const STAGING_PCM: &str = "environments/staging/opus/oof-pcm-service/component.toml";
const STAGING_OPEN_DATA: &str = "environments/staging/opus/oob-open-data/component.toml";

#[test]
fn unknown_depends_on_suggests_the_closest_component() {
    let repo = Repo::shipped();
    repo.write(STAGING_STATUS, "depends_on = [\"oob-consnet\"]\n");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(STAGING_STATUS, "\"oob-consnet\""),
        "opus/oob-status depends on unknown component `oob-consnet`",
    );
    assert_eq!(help(d), "did you mean `oob-consent`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn ambiguous_depends_on_asks_for_the_namespace() {
    let repo = Repo::shipped();
    // A second `pubsub`, in another namespace than the first and than the dependent.
    repo.write("environments/staging/opus-gateway/pubsub/component.toml", "# a second pubsub\n");
    let path = "environments/staging/opus-system/log-collector/component.toml";
    repo.replace(path, "[inputs]", "depends_on = [\"pubsub\"]\n\n[inputs]");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(path, "\"pubsub\""),
        "`pubsub` is ambiguous in opus-system/log-collector",
    );
    assert_eq!(help(d), "name it with its namespace: `opus/pubsub` or `opus-gateway/pubsub`");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

/// The `file:line:col` of each edge the cycle diagnostic explains, in order.
fn cycle_edges(checked: &Checked, d: &Diagnostic) -> Vec<(String, Option<String>)> {
    d.related.iter().map(|r| (r.message.clone(), checked.location(r))).collect()
}

#[test]
fn cycle_of_two_components_names_both_edges() {
    let repo = Repo::shipped();
    repo.write(STAGING_STATUS, "depends_on = [\"oof-pcm-service\"]\n");
    repo.write(STAGING_PCM, "depends_on = [\"oob-status\"]\n");
    let checked = check(&repo, "staging");
    let d = checked.find("dependency cycle: opus/oob-status -> opus/oof-pcm-service -> opus/oob-status");
    assert_eq!(
        cycle_edges(&checked, d),
        [
            (
                "opus/oob-status depends on opus/oof-pcm-service, declared here".to_owned(),
                Some(repo.location_of(STAGING_STATUS, "\"oof-pcm-service\""))
            ),
            (
                "opus/oof-pcm-service depends on opus/oob-status, declared here".to_owned(),
                Some(repo.location_of(STAGING_PCM, "\"oob-status\""))
            ),
        ]
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn cycle_of_three_components_names_every_edge() {
    let repo = Repo::shipped();
    repo.write(STAGING_STATUS, "depends_on = [\"oof-pcm-service\"]\n");
    repo.write(STAGING_PCM, "depends_on = [\"oob-open-data\"]\n");
    repo.write(STAGING_OPEN_DATA, "depends_on = [\"opus/oob-status\"]\n");
    let checked = check(&repo, "staging");
    let d = checked.find(
        "dependency cycle: opus/oob-open-data -> opus/oob-status -> opus/oof-pcm-service -> opus/oob-open-data",
    );
    assert_eq!(
        cycle_edges(&checked, d),
        [
            (
                "opus/oob-open-data depends on opus/oob-status, declared here".to_owned(),
                Some(repo.location_of(STAGING_OPEN_DATA, "\"opus/oob-status\""))
            ),
            (
                "opus/oob-status depends on opus/oof-pcm-service, declared here".to_owned(),
                Some(repo.location_of(STAGING_STATUS, "\"oof-pcm-service\""))
            ),
            (
                "opus/oof-pcm-service depends on opus/oob-open-data, declared here".to_owned(),
                Some(repo.location_of(STAGING_PCM, "\"oob-open-data\""))
            ),
        ]
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn cycle_through_a_catalog_dependency_quotes_the_rust_declaration() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus-system/postgresql/component.toml";
    repo.write(path, "depends_on = [\"oob-consent\"]\n");
    let checked = check(&repo, "staging");
    let d = checked
        .find("dependency cycle: opus-system/postgresql -> opus/oob-consent -> opus-system/postgresql");
    let catalog_file = "components/src/oob_consent/mod.rs";
    assert_eq!(
        cycle_edges(&checked, d),
        [
            (
                "opus-system/postgresql depends on opus/oob-consent, declared here".to_owned(),
                Some(repo.location_of(path, "\"oob-consent\""))
            ),
            (
                "opus/oob-consent depends on opus-system/postgresql, declared in the core catalog".to_owned(),
                Some(repo.location_of(catalog_file, "depends_on::<Postgresql>()"))
            ),
        ]
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

// --- Inputs against the template's types --------------------------------------------------

#[test]
fn input_out_of_range_states_the_bound() {
    let repo = Repo::shipped();
    repo.replace(STAGING_CONSENT, "replicas = 2", "replicas = 50");
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_CONSENT, "50"),
        "value 50 for `inputs.replicas` is out of range: must be at most 20",
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn input_not_in_its_enum_suggests_the_closest_value() {
    let repo = Repo::shipped();
    repo.replace(STAGING_CONSENT, "replicas = 2", "replicas = 2\nresources = \"medum\"");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(STAGING_CONSENT, "\"medum\""),
        "invalid value `medum` for `inputs.resources`: expected one of `small`, `medium`, `large`",
    );
    assert_eq!(help(d), "did you mean `medium`?");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn input_of_the_wrong_type_names_the_expected_type() {
    let repo = Repo::shipped();
    repo.replace(STAGING_CONSENT, "replicas = 2", "replicas = \"two\"");
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_CONSENT, "\"two\""),
        "wrong type for `inputs.replicas`: expected an integer, found a string",
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

// --- The platform's domain rules ----------------------------------------------------------

#[test]
fn brand_id_with_uppercase_letters_is_refused() {
    let repo = Repo::shipped();
    repo.replace(CLIENT, "brand_id = \"acme-bank\"", "brand_id = \"Acme-Bank\"");
    let checked = check(&repo, "staging");
    checked.assert_error(&repo.location_of(CLIENT, "\"Acme-Bank\""), "invalid brand id `Acme-Bank`");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn brand_id_with_digits_or_over_36_characters_is_refused() {
    let long = "a".repeat(37);
    for bad in ["acme-bank2", long.as_str()] {
        let repo = Repo::shipped();
        repo.replace(CLIENT, "brand_id = \"acme-bank\"", &format!("brand_id = \"{bad}\""));
        let checked = check(&repo, "staging");
        checked.assert_error(
            &repo.location_of(CLIENT, &format!("\"{bad}\"")),
            &format!("invalid brand id `{bad}`"),
        );
        checked.assert_count(1);
    }
    // 36 characters is the limit, not past it.
    let repo = Repo::shipped();
    repo.replace(CLIENT, "brand_id = \"acme-bank\"", &format!("brand_id = \"{}\"", "a".repeat(36)));
    assert!(check(&repo, "staging").report.diagnostics.is_empty());
}

#[test]
fn organisation_id_that_is_not_a_uuid_is_refused() {
    let repo = Repo::shipped();
    repo.replace(
        STAGING_ENV,
        "organisation_id = \"5f4a8f2c-7a4e-4c43-9e55-0b4d1c3f7a21\"",
        "organisation_id = \"acme-sandbox\"",
    );
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_ENV, "\"acme-sandbox\""),
        "invalid value for `directory.organisation_id`: must be a UUID",
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn cert_manager_in_a_protected_environment_is_refused() {
    let repo = Repo::shipped();
    let path = "environments/prod/opus-system/cert-manager/component.toml";
    repo.write(path, "[inputs]\nacme_email = \"platform@acme.example\"\n");
    let checked = check(&repo, "prod");
    let d = checked
        .assert_error(&format!("{path}:1:1"), "`cert-manager` is not allowed in a protected environment");
    assert_eq!(primary_text(d), "opus-system/cert-manager in protected environment `prod`");
    assert!(!help(d).is_empty(), "the reason is given: {}", checked.rendered);
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn namespace_directory_that_is_not_a_dns_label_is_refused() {
    let repo = Repo::shipped();
    let path = "environments/staging/Opus_Extra/namespace.toml";
    repo.write(path, "[labels]\n\"acme.example/tier\" = \"extra\"\n");
    let checked = check(&repo, "staging");
    checked.assert_error(&format!("{path}:1:1"), "namespace name `Opus_Extra` is not a DNS-1123 label");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn component_directory_that_is_not_a_dns_label_is_refused() {
    let repo = Repo::shipped();
    let path = "environments/staging/opus/Status_Copy/component.toml";
    repo.write(path, "template = \"oob-status\"\n");
    let checked = check(&repo, "staging");
    checked.assert_error(&format!("{path}:1:1"), "component name `Status_Copy` is not a DNS-1123 label");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn database_name_override_that_is_not_a_postgres_identifier_is_refused() {
    let repo = Repo::shipped();
    repo.replace(STAGING_CONSENT, "[inputs]", "[database]\nname = \"api-consent\"\n\n[inputs]");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(STAGING_CONSENT, "\"api-consent\""),
        "invalid database name `api-consent` for opus/oob-consent",
    );
    assert_eq!(primary_text(d), "not a PostgreSQL identifier");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn database_user_override_longer_than_63_bytes_is_refused() {
    let repo = Repo::shipped();
    let user = "u".repeat(64);
    repo.replace(STAGING_CONSENT, "[inputs]", &format!("[database]\nuser = \"{user}\"\n\n[inputs]"));
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_CONSENT, &format!("\"{user}\"")),
        &format!("invalid database user `{user}` for opus/oob-consent"),
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
    // 63 bytes is the limit, not past it.
    let repo = Repo::shipped();
    repo.replace(
        STAGING_CONSENT,
        "[inputs]",
        &format!("[database]\nuser = \"{}\"\n\n[inputs]", "u".repeat(63)),
    );
    assert!(check(&repo, "staging").report.diagnostics.is_empty());
}

#[test]
fn protected_environment_on_the_sandbox_directory_is_refused() {
    let repo = Repo::shipped();
    repo.replace(PROD_ENV, "environment = \"production\"", "environment = \"sandbox\"");
    let checked = check(&repo, "prod");
    let d = checked.assert_error(
        &repo.location_of(PROD_ENV, "\"sandbox\""),
        "a protected environment must use the production directory",
    );
    let also: Vec<String> = d.secondary.iter().map(|l| checked.report.sources.location(l.span)).collect();
    assert_eq!(also, [repo.location_of(PROD_ENV, "true")], "points at `protected = true` too");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn unprotected_environment_on_the_production_directory_is_refused() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "environment = \"sandbox\"", "environment = \"production\"");
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_ENV, "\"production\""),
        "only a protected environment may use the production directory",
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn missing_versions_entry_names_the_application_and_the_component() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "oob-consent = \"3.10.0\"\n", "");
    let checked = check(&repo, "staging");
    let d = checked.assert_error(
        &repo.location_of(STAGING_ENV, "versions]"),
        "no version of `oob-consent` for opus/oob-consent",
    );
    assert_eq!(help(d), "add `oob-consent = \"X.Y.Z\"` to `[versions]` in env.toml");
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

#[test]
fn invalid_age_recipient_points_at_the_list_item() {
    let repo = Repo::shipped();
    repo.replace(STAGING_ENV, "age_recipients = [\"", "age_recipients = [\"age1notarecipient\", \"");
    let checked = check(&repo, "staging");
    checked.assert_error(
        &repo.location_of(STAGING_ENV, "\"age1notarecipient\""),
        "invalid age recipient `age1notarecipient`",
    );
    checked.assert_count(1);
    insta::assert_snapshot!(checked.rendered);
}

// --- Environments -------------------------------------------------------------------------

#[test]
fn unknown_environment_suggests_the_closest_name() {
    let repo = Repo::shipped();
    let err = check_environment(&FsTree::new(repo.root()), &components::catalog(), "prdo")
        .expect_err("`prdo` is not an environment");
    match &err {
        LoadError::UnknownEnvironment { name, suggestion, known } => {
            assert_eq!(name, "prdo");
            assert_eq!(suggestion.as_deref(), Some("prod"));
            assert_eq!(known, &["example", "flux-example", "prod", "staging"]);
        }
        other => panic!("expected UnknownEnvironment, got {other:?}"),
    }
    insta::assert_snapshot!(err.to_string());
}
