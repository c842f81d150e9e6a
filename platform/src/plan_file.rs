//! The plan file of `plan --out FILE`, which `deploy ENV --plan FILE` executes only when it is
//! still the plan the inputs give: the plan document (format 1 JSON, secrets masked), a digest
//! of every input it was compiled from (each configuration file, each secrets file's
//! ciphertext, each directory listing, the core's sources) and of the journal's latest
//! records. It holds no secret: the document masks them and ciphertexts are only digested.
//!
//! The digests make a mismatch explainable ("changed: environments/prod/opus/x/component.toml");
//! they are not a signature: whoever can write the file can rewrite them. Protect the file as
//! the CI artifact it is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::{StepOutcome, StepRecord};
use crate::load::tree::sha256_digest;

/// The version of the plan file's layout.
pub const PLAN_FILE_FORMAT: u32 = 1;
const KIND: &str = "opus-deploy-plan";

/// A plan as `plan --out` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    pub format: u32,
    pub kind: String,
    pub environment: String,
    /// What was read to compile it: path → digest (see [`crate::load::tree::RecordingTree`]),
    /// and `core:<path>` → digest for the core's sources.
    pub inputs: BTreeMap<String, String>,
    /// The journal when the plan was made; `None` when it was not there or could not be read
    /// (a pull request's CI has no journal and no keys): the deploy then cannot check it.
    pub journal: Option<JournalState>,
    /// The plan document (`plan --format json` without changes).
    pub plan: serde_json::Value,
}

/// Where the journal stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalState {
    pub lineage: String,
    /// Steps with a record.
    pub steps: usize,
    /// A digest of every step's latest record (id, fingerprint, outcome, when it finished).
    pub records: String,
}

impl JournalState {
    pub fn of(lineage: &str, latest: &BTreeMap<String, StepRecord>) -> JournalState {
        let mut text = String::new();
        for record in latest.values() {
            let outcome = match &record.outcome {
                StepOutcome::Succeeded => "succeeded",
                StepOutcome::Failed { .. } => "failed",
                StepOutcome::Interrupted => "interrupted",
            };
            let finished = record.finished_at.unix_timestamp_nanos() / 1_000;
            text.push_str(&format!("{}\t{}\t{outcome}\t{finished}\n", record.step_id, record.fingerprint));
        }
        JournalState {
            lineage: lineage.to_owned(),
            steps: latest.len(),
            records: sha256_digest(text.as_bytes()),
        }
    }
}

impl PlanFile {
    pub fn new(
        environment: &str,
        inputs: BTreeMap<String, String>,
        journal: Option<JournalState>,
        plan: serde_json::Value,
    ) -> PlanFile {
        PlanFile {
            format: PLAN_FILE_FORMAT,
            kind: KIND.to_owned(),
            environment: environment.to_owned(),
            inputs,
            journal,
            plan,
        }
    }

    /// Reads a plan file, refusing what is not one (or of a newer format).
    pub fn parse(text: &str) -> Result<PlanFile, String> {
        let file: PlanFile =
            serde_json::from_str(text).map_err(|e| format!("not a plan file of `plan --out`: {e}"))?;
        if file.kind != KIND {
            return Err(format!("not a plan file of `plan --out` (kind `{}`)", file.kind));
        }
        if file.format > PLAN_FILE_FORMAT {
            return Err(format!(
                "a plan file of format {}, newer than this version's {PLAN_FILE_FORMAT}: deploy it with the version that made it",
                file.format
            ));
        }
        Ok(file)
    }

    /// Why `now` (the same inputs read again) is not this plan: every input that changed,
    /// appeared or went, then a different plan document. Empty when they are the same.
    pub fn differences(&self, now: &PlanFile) -> Vec<String> {
        let mut out = Vec::new();
        if self.environment != now.environment {
            out.push(format!("the plan is of `{}`, not `{}`", self.environment, now.environment));
            return out;
        }
        let describe = |key: &str| match key.split_once(':') {
            Some(("dir" | "dirs", path)) => format!("the listing of {path}/"),
            Some(("core", path)) => format!("{path} (the core)"),
            _ => key.to_owned(),
        };
        for (key, digest) in &self.inputs {
            match now.inputs.get(key) {
                Some(current) if current == digest => {}
                Some(_) => out.push(format!("changed: {}", describe(key))),
                None => out.push(format!("no longer read: {}", describe(key))),
            }
        }
        for key in now.inputs.keys().filter(|key| !self.inputs.contains_key(*key)) {
            out.push(format!("read now, not then: {}", describe(key)));
        }
        if out.is_empty() && self.plan != now.plan {
            out.push(
                "the same inputs give another plan (another version of the tool or of its core made it)"
                    .to_owned(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_input_and_a_different_plan() {
        let inputs =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let made = PlanFile::new(
            "prod",
            inputs(&[("environments/prod/env.toml", "sha256:a"), ("dir:environments/prod", "sha256:b")]),
            None,
            serde_json::json!({"steps": []}),
        );
        assert!(made.differences(&made.clone()).is_empty());
        let now = PlanFile::new(
            "prod",
            inputs(&[
                ("environments/prod/env.toml", "sha256:c"),
                ("environments/prod/x/component.toml", "sha256:d"),
            ]),
            None,
            serde_json::json!({"steps": []}),
        );
        assert_eq!(
            made.differences(&now),
            [
                "no longer read: the listing of environments/prod/",
                "changed: environments/prod/env.toml",
                "read now, not then: environments/prod/x/component.toml",
            ]
        );
        let mut other = made.clone();
        other.plan = serde_json::json!({"steps": [1]});
        assert_eq!(made.differences(&other).len(), 1);
        let text = serde_json::to_string(&made).unwrap();
        assert_eq!(PlanFile::parse(&text).unwrap(), made);
        assert!(PlanFile::parse("{}").unwrap_err().starts_with("not a plan file"));
    }
}
