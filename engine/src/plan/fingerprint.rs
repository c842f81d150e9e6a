//! Step fingerprints and their formats.
//!
//! A fingerprint says "this step, with these inputs, on this target". The executor skips a step
//! whose fingerprint equals its last recorded success, so changing how fingerprints are computed
//! would make every step of a deployed environment look changed (a prod upgrade of every
//! release). Formats are therefore versioned: a fingerprint is written `<format>:<hex>`
//! (format 1, the first, was bare hex), and [`legacy_fingerprint`] recomputes what an older
//! format gave for the same step. A step whose recorded success is an older-format fingerprint
//! equal to its legacy fingerprint has, by that format's definition, unchanged inputs: the
//! executor re-records it in the current format without running it (a *format migration*),
//! after the driver confirms that what the step left on the target still holds
//! (`Driver::still_applied` in `platform::exec`).
//!
//! Format 2 added, over format 1: the `directory` target's recipients for steps that encrypt (a
//! rotation re-encrypts the bundle), the CRDs a Preflight finds installed by the plan itself,
//! and the CRDs an ApplyObjects step waits for. Format 3 (current) changes the digests of
//! decrypted secrets: keyed by the secret's file and key path besides its value (formats 1 and
//! 2 keyed the value alone, so equal secrets in two components had equal digests). A format-1
//! or -2 fingerprint is recomputed with the digests those formats gave, which
//! [`crate::values::Values::legacy_digests`] keeps beside the current ones.

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::{Action, TargetSpec};

/// The fingerprint format this build writes.
pub const FINGERPRINT_FORMAT: u32 = 3;

/// Fields format 1 did not know, by object: removed to recompute a format-1 fingerprint.
const ADDED_IN_2_TARGET: &[&str] = &["recipients"];
const ADDED_IN_2_ACTION: &[&str] = &["provided", "outside_run", "wait_for_crds"];

/// The current-format fingerprint of an action on a target.
pub fn fingerprint(target: &TargetSpec, action: &Action) -> String {
    // A flux target has no older formats: its recipients enter every step (its database
    // steps encrypt too).
    let flux = matches!(target, TargetSpec::Flux { .. });
    let mut target = to_json(target);
    if !action.encrypts() && !flux {
        target = without(target, ADDED_IN_2_TARGET);
    }
    let mut hasher = HashWriter(Sha256::new());
    hasher.0.update(b"opus-deploy fingerprint 3\0");
    serde_json::to_writer(&mut hasher, &target).expect("serializable");
    hasher.0.update([0]);
    // Streamed into the hash: no copy of the (possibly large) action's JSON.
    serde_json::to_writer(&mut hasher, action).expect("serializable");
    format!("{FINGERPRINT_FORMAT}:{}", hex::encode(hasher.0.finalize()))
}

/// The action's JSON with each secret digest replaced by the one formats 1 and 2 computed.
fn with_legacy_digests(action: &Action) -> Json {
    let mut json = to_json(action);
    if let Some(legacy) = action.values().map(crate::values::Values::legacy_digests).filter(|l| !l.is_empty())
    {
        replace_strings(&mut json, legacy);
    }
    json
}

fn replace_strings(value: &mut Json, replacements: &std::collections::BTreeMap<String, String>) {
    match value {
        Json::String(text) => {
            if let Some(replacement) = replacements.get(text.as_str()) {
                *text = replacement.clone();
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|item| replace_strings(item, replacements)),
        Json::Object(map) => map.values_mut().for_each(|item| replace_strings(item, replacements)),
        _ => {}
    }
}

/// Feeds what serde_json writes into the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The format a recorded fingerprint was written in.
pub fn fingerprint_format(fingerprint: &str) -> u32 {
    match fingerprint.split_once(':') {
        Some((format, _)) => format.parse().unwrap_or(0),
        None => 1,
    }
}

/// What format `format` gave for this action on this target, when it is an older format this
/// build can still compute.
pub fn legacy_fingerprint(target: &TargetSpec, action: &Action, format: u32) -> Option<String> {
    match format {
        1 => {
            let target = without(to_json(target), ADDED_IN_2_TARGET);
            let action = without(with_legacy_digests(action), ADDED_IN_2_ACTION);
            let mut hasher = Sha256::new();
            hasher.update(serde_json::to_vec(&target).expect("serializable"));
            hasher.update([0]);
            hasher.update(serde_json::to_vec(&action).expect("serializable"));
            Some(hex::encode(hasher.finalize()))
        }
        2 => {
            let mut target = to_json(target);
            if !action.encrypts() {
                target = without(target, ADDED_IN_2_TARGET);
            }
            let mut hasher = Sha256::new();
            hasher.update(b"opus-deploy fingerprint 2\0");
            hasher.update(serde_json::to_vec(&target).expect("serializable"));
            hasher.update([0]);
            hasher.update(serde_json::to_vec(&with_legacy_digests(action)).expect("serializable"));
            Some(format!("2:{}", hex::encode(hasher.finalize())))
        }
        _ => None,
    }
}

/// Whether `recorded`, a success of a step now planned as `action`, is an older-format
/// fingerprint of the same inputs: the step needs a format migration, not a run.
pub fn migrates(target: &TargetSpec, action: &Action, recorded: &str) -> bool {
    let format = fingerprint_format(recorded);
    format < FINGERPRINT_FORMAT && legacy_fingerprint(target, action, format).as_deref() == Some(recorded)
}

fn to_json<T: serde::Serialize>(value: &T) -> Json {
    serde_json::to_value(value).expect("serializable")
}

/// The object without `keys`, its other keys in their order.
fn without(value: Json, keys: &[&str]) -> Json {
    match value {
        Json::Object(map) => {
            Json::Object(map.into_iter().filter(|(k, _)| !keys.contains(&k.as_str())).collect::<Map<_, _>>())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Values;

    fn namespace() -> Action {
        Action::EnsureNamespace {
            name: "opus".into(),
            labels: Default::default(),
            annotations: Default::default(),
        }
    }

    fn directory(recipients: &[&str]) -> TargetSpec {
        TargetSpec::Directory {
            path: "bundle/example".into(),
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn format_one_is_the_fingerprint_the_previous_release_wrote() {
        // Computed by the format-1 code (sha256 of target JSON, a zero byte, action JSON).
        let target = TargetSpec::Directory { path: "bundle/example".into(), recipients: vec![] };
        let mut hasher = Sha256::new();
        hasher.update(br#"{"kind":"directory","path":"bundle/example"}"#);
        hasher.update([0]);
        hasher.update(br#"{"kind":"ensure-namespace","name":"opus","labels":{},"annotations":{}}"#);
        let expected = hex::encode(hasher.finalize());
        assert_eq!(legacy_fingerprint(&target, &namespace(), 1), Some(expected.clone()));
        // Fields format 2 added do not enter the format-1 computation.
        assert_eq!(legacy_fingerprint(&directory(&["age1a"]), &namespace(), 1), Some(expected));
        assert_eq!(fingerprint_format(&legacy_fingerprint(&target, &namespace(), 1).unwrap()), 1);
    }

    #[test]
    fn current_fingerprints_carry_their_format() {
        let fp = fingerprint(&directory(&[]), &namespace());
        assert!(fp.starts_with("3:"), "{fp}");
        assert_eq!(fingerprint_format(&fp), FINGERPRINT_FORMAT);
        assert_eq!(legacy_fingerprint(&directory(&[]), &namespace(), 7), None);
    }

    #[test]
    fn format_two_is_recomputed_with_the_value_only_digests_it_used() {
        use crate::sensitive::SecretString;
        use crate::values::{DigestKey, SecretEntry, SecretTable};
        let key = DigestKey::Keyed(SecretString::new("k"));
        let value = SecretString::new("same");
        // HMAC-SHA256(key "k", "same"), as formats 1 and 2 digested a secret.
        let old = "hmac:e72e5c3ff9147fdf675bc7bdcb175f70".to_owned();
        assert_eq!(key.legacy_digest(&value), old);
        let mut table = SecretTable::default();
        let new = key.digest_at("environments/x/secrets.enc.yaml", "db.password", &value);
        assert_ne!(new, old);
        let placeholder = table.placeholder_with_legacy(
            SecretEntry { digest: new.clone(), value: Some(value) },
            Some(old.clone()),
        );
        let data = Values::from_marked(&serde_json::json!({"db.password": placeholder}), &table);
        let secret = Action::ApplySecret {
            namespace: "opus".into(),
            name: "s".into(),
            labels: Default::default(),
            data,
        };
        // What format 2 wrote: the action as it serialized then, with the old digest.
        let mut hasher = Sha256::new();
        hasher.update(b"opus-deploy fingerprint 2\0");
        hasher.update(br#"{"kind":"directory","path":"bundle/example","recipients":["age1a"]}"#);
        hasher.update([0]);
        hasher.update(
            format!(
                r#"{{"kind":"apply-secret","namespace":"opus","name":"s","labels":{{}},"data":{{"values":{{"db.password":"(sensitive)"}},"sensitive":{{"db.password":"{old}"}}}}}}"#
            )
            .as_bytes(),
        );
        let expected = format!("2:{}", hex::encode(hasher.finalize()));
        assert_eq!(legacy_fingerprint(&directory(&["age1a"]), &secret, 2), Some(expected.clone()));
        assert!(migrates(&directory(&["age1a"]), &secret, &expected));
        assert_ne!(fingerprint(&directory(&["age1a"]), &secret), expected);
    }

    #[test]
    fn recipients_change_only_the_steps_that_encrypt() {
        let secret = Action::ApplySecret {
            namespace: "opus".into(),
            name: "s".into(),
            labels: Default::default(),
            data: Values::default(),
        };
        assert_ne!(
            fingerprint(&directory(&["age1a"]), &secret),
            fingerprint(&directory(&["age1b"]), &secret)
        );
        assert_eq!(
            fingerprint(&directory(&["age1a"]), &namespace()),
            fingerprint(&directory(&["age1b"]), &namespace())
        );
    }
}
