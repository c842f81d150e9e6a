//! Secrets files against sops: reading files written by sops 3.x, the exact structure of the
//! files we write, tamper detection, wrong and missing identities.

use std::path::{Path, PathBuf};

use platform::secrets::{
    self, EncryptionRule, Identities, SecretTree, SecretsError, ValueKind, create_file, decrypt_document,
    decrypt_file, encrypt_document, generate_identity, inspect_document, inspect_file, parse_recipients,
    reencrypt_file, set_value, show_file,
};
use platform::sensitive::SecretString;

const CANARY: &str = "canary-5e1f-do-not-print";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sops").join(name)
}

fn fixture_identities() -> Identities {
    let text = std::fs::read_to_string(fixture("age.txt")).unwrap();
    Identities::from_key_text("age.txt", &SecretString::new(text)).unwrap()
}

struct Keypair {
    identities: Identities,
    recipient: String,
}

fn keypair() -> Keypair {
    let generated = generate_identity();
    Keypair {
        identities: Identities::from_key_text("test", &generated.key_file_entry()).unwrap(),
        recipient: generated.recipient.to_string(),
    }
}

fn sample_tree() -> SecretTree {
    SecretTree::from_yaml(
        Path::new("sample"),
        &format!(
            "db:\n  password: {CANARY}\n  port: 5432\n  ratio: 0.25\n  enabled: true\n\
             hosts:\n  - a.example\n  - b.example\nnote_unencrypted: visible\nempty: ''\nnothing: null\n"
        ),
    )
    .unwrap()
}

fn write_sample(dir: &Path, keys: &Keypair) -> PathBuf {
    let path = dir.join("secrets.enc.yaml");
    let recipients = parse_recipients(&[&keys.recipient]).unwrap();
    create_file(&path, &recipients, &sample_tree()).unwrap();
    path
}

#[test]
fn sops_fixture_decrypts_to_the_documented_value_and_its_mac_verifies() {
    let tree = decrypt_file(&fixture("secret.age.yaml"), &fixture_identities()).unwrap();
    let secret = tree.get("stringData.secret").unwrap();
    assert_eq!(secret.kind, ValueKind::Str);
    assert_eq!(secret.text().expose(), "my-sops-age-secret");
    // Unencrypted values (outside encrypted_regex) are read as they are.
    assert_eq!(tree.get("metadata.name").unwrap().text().expose(), "sops-age");
    assert_eq!(tree.get("kind").unwrap().text().expose(), "Secret");
}

#[test]
fn sops_fixture_is_well_formed_without_keys() {
    let summary = inspect_file(&fixture("secret.age.yaml")).unwrap();
    assert_eq!(summary.recipients, ["age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29"]);
    assert_eq!(summary.key_paths, ["apiVersion", "kind", "metadata.name", "stringData.secret"]);
    assert_eq!(summary.plaintext_key_paths, ["apiVersion", "kind", "metadata.name"]);
    assert_eq!(summary.rule, EncryptionRule::EncryptedRegex("^(data|stringData)$".to_owned()));
    assert_eq!(summary.version, "3.7.0");
}

#[test]
fn changing_an_unencrypted_value_of_a_sops_file_breaks_its_mac() {
    let text = std::fs::read_to_string(fixture("secret.age.yaml")).unwrap();
    let tampered = text.replace("name: sops-age", "name: sops-agf");
    assert_ne!(text, tampered);
    let error = decrypt_document(Path::new("t.yaml"), &tampered, &fixture_identities()).unwrap_err();
    assert!(matches!(error, SecretsError::MacMismatch { .. }), "{error}");
    assert!(error.to_string().contains("t.yaml"));
}

#[test]
fn round_trip_keeps_values_types_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let tree = decrypt_file(&path, &keys.identities).unwrap();
    assert_eq!(tree, sample_tree());
    assert_eq!(tree.get("db.port").unwrap().kind, ValueKind::Int);
    assert_eq!(tree.get("db.ratio").unwrap().kind, ValueKind::Float);
    assert_eq!(tree.get("db.enabled").unwrap().kind, ValueKind::Bool);
    let shown = show_file(&path, &keys.identities).unwrap();
    assert!(shown.expose().starts_with(&format!("db:\n    password: {CANARY}\n")));
}

#[test]
fn our_output_has_the_sops_structure() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(CANARY));
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let top: Vec<&str> = value.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(top, ["db", "hosts", "note_unencrypted", "empty", "nothing", "sops"]);
    let sops = value["sops"].as_mapping().unwrap();
    let fields: Vec<&str> = sops.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "kms",
            "gcp_kms",
            "azure_kv",
            "hc_vault",
            "age",
            "lastmodified",
            "mac",
            "pgp",
            "unencrypted_suffix",
            "version"
        ]
    );
    for empty in ["kms", "gcp_kms", "azure_kv", "hc_vault", "pgp"] {
        assert_eq!(value["sops"][empty], serde_yaml_ng::Value::Sequence(vec![]));
    }
    assert_eq!(value["sops"]["age"][0]["recipient"].as_str(), Some(keys.recipient.as_str()));
    let enc = value["sops"]["age"][0]["enc"].as_str().unwrap();
    assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
    assert!(enc.ends_with("-----END AGE ENCRYPTED FILE-----\n"));
    assert!(text.contains("        - recipient: age1"));
    assert!(text.contains("          enc: |\n"));
    assert_eq!(value["sops"]["unencrypted_suffix"].as_str(), Some("_unencrypted"));
    let lastmodified = value["sops"]["lastmodified"].as_str().unwrap();
    assert_eq!(lastmodified.len(), "2021-04-06T09:07:05Z".len());
    assert!(lastmodified.ends_with('Z'));
    assert!(text.contains(&format!("lastmodified: \"{lastmodified}\"")));
    let enc_value = |v: &serde_yaml_ng::Value, kind: &str| {
        let s = v.as_str().unwrap();
        assert!(s.starts_with("ENC[AES256_GCM,data:") && s.ends_with(&format!(",type:{kind}]")), "{s}");
    };
    enc_value(&value["sops"]["mac"], "str");
    enc_value(&value["db"]["password"], "str");
    enc_value(&value["db"]["port"], "int");
    enc_value(&value["db"]["ratio"], "float");
    enc_value(&value["db"]["enabled"], "bool");
    enc_value(&value["hosts"][1], "str");
    assert_eq!(value["note_unencrypted"].as_str(), Some("visible"));
    assert_eq!(value["empty"].as_str(), Some(""));
    assert!(value["nothing"].is_null());
}

/// Replaces the first occurrence of `from` in the value at `line_marker`'s line.
fn tamper(text: &str, line_marker: &str, edit: impl Fn(&str) -> String) -> String {
    text.lines()
        .map(|line| if line.contains(line_marker) { edit(line) } else { line.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn flip_data_byte(line: &str) -> String {
    // Change one base64 character of the data field: one changed byte of ciphertext.
    let start = line.find("data:").unwrap() + "data:".len();
    let mut bytes = line.as_bytes().to_vec();
    bytes[start] = if bytes[start] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_changed_byte_in_a_value_fails_authentication_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = tamper(&text, "password:", flip_data_byte);
    let error = decrypt_document(&path, &tampered, &keys.identities).unwrap_err();
    assert!(
        matches!(&error, SecretsError::ValueAuthentication { key_path, .. } if key_path == "db.password"),
        "{error}"
    );
    assert!(error.to_string().contains(&path.display().to_string()));
}

#[test]
fn a_changed_byte_in_the_mac_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = tamper(&text, "    mac: ENC[", flip_data_byte);
    let error = decrypt_document(&path, &tampered, &keys.identities).unwrap_err();
    assert!(matches!(error, SecretsError::MacAuthentication { .. }), "{error}");
    assert!(error.to_string().contains("secrets.enc.yaml"));
}

#[test]
fn values_swapped_between_keys_fail_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let text = std::fs::read_to_string(&path).unwrap();
    let value_of = |marker: &str| {
        let line = text.lines().find(|l| l.contains(marker)).unwrap();
        line[line.find("ENC[").unwrap()..].to_owned()
    };
    let (password, port) = (value_of("password:"), value_of("port:"));
    let swapped =
        text.replace(&password, "@PASSWORD@").replace(&port, &password).replace("@PASSWORD@", &port);
    let error = decrypt_document(&path, &swapped, &keys.identities).unwrap_err();
    assert!(matches!(error, SecretsError::ValueAuthentication { .. }), "{error}");
}

#[test]
fn a_removed_or_cleared_value_breaks_the_mac() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let text = std::fs::read_to_string(&path).unwrap();
    let cleared = tamper(&text, "password:", |_| "    password: ''".to_owned());
    let error = decrypt_document(&path, &cleared, &keys.identities).unwrap_err();
    assert!(matches!(error, SecretsError::MacMismatch { .. }), "{error}");
    let visible = tamper(&text, "note_unencrypted", |_| "note_unencrypted: changed".to_owned());
    let error = decrypt_document(&path, &visible, &keys.identities).unwrap_err();
    assert!(matches!(error, SecretsError::MacMismatch { .. }), "{error}");
}

#[test]
fn a_wrong_identity_names_the_file_and_its_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let other = keypair();
    let error = decrypt_file(&path, &other.identities).unwrap_err();
    assert!(matches!(error, SecretsError::WrongIdentity { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&keys.recipient), "{message}");
}

#[test]
fn a_missing_identity_names_the_file_recipients_and_places_looked() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let sources = secrets::IdentitySources {
        default_key_file: Some(dir.path().join("no/keys.txt")),
        ..Default::default()
    };
    let none = secrets::load_identities(&sources).unwrap();
    let error = decrypt_file(&path, &none).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, SecretsError::NoIdentity { .. }), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&keys.recipient), "{message}");
    assert!(message.contains("no/keys.txt"), "{message}");
}

#[test]
fn set_changes_one_value_and_keeps_the_data_key_and_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let before = inspect_file(&path).unwrap();
    set_value(&path, "db.password", SecretString::new("new-value"), &keys.identities).unwrap();
    set_value(&path, "oidc.client_secret", SecretString::new("s2"), &keys.identities).unwrap();
    let tree = decrypt_file(&path, &keys.identities).unwrap();
    assert_eq!(tree.get("db.password").unwrap().text().expose(), "new-value");
    assert_eq!(tree.get("oidc.client_secret").unwrap().text().expose(), "s2");
    assert_eq!(tree.get("db.port").unwrap().text().expose(), "5432");
    assert_eq!(inspect_file(&path).unwrap().recipients, before.recipients);
    let error = set_value(&path, "sops.x", SecretString::new("v"), &keys.identities).unwrap_err();
    assert!(matches!(error, SecretsError::InvalidKeyPath { .. }), "{error}");
    let error = set_value(&path, "hosts", SecretString::new("v"), &keys.identities).unwrap_err();
    assert!(matches!(error, SecretsError::InvalidKeyPath { .. }), "{error}");
}

#[test]
fn reencrypt_for_new_recipients_uses_a_fresh_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = keypair();
    let path = write_sample(dir.path(), &old);
    let new = keypair();
    let recipients = parse_recipients(&[&new.recipient]).unwrap();
    reencrypt_file(&path, &old.identities, &recipients).unwrap();
    assert_eq!(inspect_file(&path).unwrap().recipients, std::slice::from_ref(&new.recipient));
    assert_eq!(decrypt_file(&path, &new.identities).unwrap(), sample_tree());
    // The old key can no longer read it: the data key changed, not just its wrapping.
    let error = decrypt_file(&path, &old.identities).unwrap_err();
    assert!(matches!(error, SecretsError::WrongIdentity { .. }), "{error}");
}

#[test]
fn new_refuses_to_overwrite_and_requires_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let recipients = parse_recipients(&[&keys.recipient]).unwrap();
    let error = create_file(&path, &recipients, &SecretTree::empty()).unwrap_err();
    assert!(matches!(error, SecretsError::AlreadyExists { .. }), "{error}");
    let error = create_file(&dir.path().join("b.yaml"), &[], &SecretTree::empty()).unwrap_err();
    assert!(matches!(error, SecretsError::NoRecipients { .. }), "{error}");
    let empty = dir.path().join("empty.enc.yaml");
    create_file(&empty, &recipients, &SecretTree::empty()).unwrap();
    assert_eq!(decrypt_file(&empty, &keys.identities).unwrap(), SecretTree::empty());
}

#[test]
fn a_file_for_several_recipients_opens_with_any_of_them() {
    let (a, b) = (keypair(), keypair());
    let recipients = parse_recipients(&[&a.recipient, &b.recipient]).unwrap();
    let text = encrypt_document(Path::new("x.yaml"), &sample_tree(), &recipients, &EncryptionRule::default())
        .unwrap();
    for keys in [&a, &b] {
        let tree = decrypt_document(Path::new("x.yaml"), &text, &keys.identities).unwrap();
        assert_eq!(tree, sample_tree());
    }
    let summary = inspect_document(Path::new("x.yaml"), &text).unwrap();
    assert_eq!(summary.recipients, [a.recipient.clone(), b.recipient.clone()]);
}

#[test]
fn the_canary_never_appears_in_debug_output_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair();
    let path = write_sample(dir.path(), &keys);
    let tree = decrypt_file(&path, &keys.identities).unwrap();
    let mut outputs = vec![
        format!("{tree:?}"),
        format!("{:?}", tree.get("db.password").unwrap()),
        format!("{:?}", keys.identities),
        format!("{:?}", show_file(&path, &keys.identities).unwrap()),
    ];
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = tamper(&text, "password:", flip_data_byte);
    let error = decrypt_document(&path, &tampered, &keys.identities).unwrap_err();
    outputs.push(error.to_string());
    outputs.push(format!("{error:?}"));
    let bad = format!("a: [\n  {CANARY}\n");
    let error = SecretTree::from_yaml(Path::new("bad.yaml"), &bad).unwrap_err();
    outputs.push(error.to_string());
    outputs.push(format!("{error:?}"));
    for output in outputs {
        assert!(!output.contains(CANARY), "{output}");
    }
}

#[test]
fn set_refuses_a_key_the_files_rule_would_leave_in_clear() {
    // The sops fixture encrypts only `data`/`stringData` (encrypted_regex).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.age.yaml");
    std::fs::copy(fixture("secret.age.yaml"), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let canary = "canary-clear-5e71";

    let error = set_value(&path, "metadata.password", SecretString::new(canary), &fixture_identities())
        .expect_err("a value outside data/stringData would be stored in clear");
    assert!(matches!(error, SecretsError::InvalidKeyPath { .. }), "{error:?}");
    assert!(!error.to_string().contains(canary));
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file is untouched");

    set_value(&path, "stringData.password", SecretString::new(canary), &fixture_identities()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(canary), "the value is encrypted");
    let tree = decrypt_file(&path, &fixture_identities()).unwrap();
    assert_eq!(tree.get("stringData.password").unwrap().text().expose(), canary);
}
