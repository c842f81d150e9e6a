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
//! ([`crate::exec::Driver::still_applied`]).
//!
//! Format 2 (current) adds, over format 1: the `directory` target's recipients for steps that
//! encrypt (a rotation re-encrypts the bundle), the CRDs a Preflight finds installed by the plan
//! itself, and the CRDs an ApplyObjects step waits for.

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::{Action, TargetSpec};

/// The fingerprint format this build writes.
pub const FINGERPRINT_FORMAT: u32 = 2;

/// Fields format 1 did not know, by object: removed to recompute a format-1 fingerprint.
const ADDED_IN_2_TARGET: &[&str] = &["recipients"];
const ADDED_IN_2_ACTION: &[&str] = &["provided", "outside_run", "wait_for_crds"];

/// The current-format fingerprint of an action on a target.
pub fn fingerprint(target: &TargetSpec, action: &Action) -> String {
    let mut target = to_json(target);
    if !action.encrypts() {
        target = without(target, ADDED_IN_2_TARGET);
    }
    let mut hasher = HashWriter(Sha256::new());
    hasher.0.update(b"opus-deploy fingerprint 2\0");
    serde_json::to_writer(&mut hasher, &target).expect("serializable");
    hasher.0.update([0]);
    // Streamed into the hash: no copy of the (possibly large) action's JSON.
    serde_json::to_writer(&mut hasher, action).expect("serializable");
    format!("{FINGERPRINT_FORMAT}:{}", hex::encode(hasher.0.finalize()))
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
            let action = without(to_json(action), ADDED_IN_2_ACTION);
            let mut hasher = Sha256::new();
            hasher.update(serde_json::to_vec(&target).expect("serializable"));
            hasher.update([0]);
            hasher.update(serde_json::to_vec(&action).expect("serializable"));
            Some(hex::encode(hasher.finalize()))
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
        assert!(fp.starts_with("2:"), "{fp}");
        assert_eq!(fingerprint_format(&fp), FINGERPRINT_FORMAT);
        assert_eq!(legacy_fingerprint(&directory(&[]), &namespace(), 7), None);
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
