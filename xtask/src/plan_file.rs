//! `plan --out FILE` and `deploy ENV --plan FILE`: the reviewed plan, with a digest of every
//! input it was compiled from, and the check that a deploy of it compiles to the same plan
//! from the same inputs.

use std::collections::BTreeMap;
use std::path::Path;

use platform::core_version::CoreChoice;
use platform::load::tree::{RecordingTree, sha256_digest};
use platform::plan::Plan;
use platform::plan::document::PlanDocument;
use platform::plan_file::{JournalState, PlanFile};

use crate::compile_env::{Keys, compile, compile_with_keys_in};
use crate::repo::Repo;
use crate::{Outcome, ui};

/// Compiles `environment`; when `record`, also returns a digest of everything it read and of
/// the core's sources (for a plan file), else no digests.
pub fn compile_recorded(
    repo: &Repo,
    environment: &str,
    keys: Keys,
    record: bool,
) -> Result<(Plan, platform::compile::Inputs, BTreeMap<String, String>), Outcome> {
    let tree = repo.tree();
    if !record {
        let (plan, inputs) = compile_with_keys_in(repo, &tree, environment, keys)?;
        return Ok((plan, inputs, BTreeMap::new()));
    }
    let recording = RecordingTree::new(&tree, platform::load::environment::is_not_configuration);
    let (plan, inputs) = compile_with_keys_in(repo, &recording, environment, keys)?;
    let mut digests = recording.digests();
    digests.extend(core_digests(repo, environment));
    Ok((plan, inputs, digests))
}

/// The core's sources, for an environment on this checkout's core (`core = "example"`): every
/// file under `catalog/`, `components/` and `charts/`. A pinned core is named by env.toml,
/// which is an input already.
fn core_digests(repo: &Repo, environment: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !matches!(repo.environment_core(environment), Ok(CoreChoice::Example)) {
        return out;
    }
    let mut stack: Vec<String> = ["catalog", "components", "charts"].map(str::to_owned).to_vec();
    while let Some(relative) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(repo.root.join(&relative)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{relative}/{name}");
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && name != "target" => stack.push(path),
                Ok(kind) if kind.is_file() => {
                    if let Ok(bytes) = std::fs::read(entry.path()) {
                        out.insert(format!("core:{path}"), sha256_digest(&bytes));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The document a plan file holds for `plan`.
pub fn document(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(PlanDocument::new(plan)).expect("a plan document serializes")
}

/// Writes the plan file atomically.
pub fn write(path: &Path, file: &PlanFile) -> Result<(), Outcome> {
    let text = serde_json::to_string_pretty(file).expect("a plan file serializes") + "\n";
    let options = platform::secrets::AtomicWriteOptions { mode: Some(0o644) };
    platform::secrets::write_atomic(path, text.as_bytes(), &options).map_err(|e| {
        ui::error(&format!("cannot write the plan to {}: {e}", path.display()));
        Outcome::CouldNotStart
    })
}

/// Reads a plan file given to `deploy --plan`, with the digest of its bytes (which the
/// deploy's record names).
pub fn read(path: &Path) -> Result<(PlanFile, String), Outcome> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ui::error(&format!("cannot read the plan {}: {e}", path.display()));
        Outcome::CouldNotStart
    })?;
    let file = PlanFile::parse(&text).map_err(|e| {
        ui::error(&format!("{}: {e}", path.display()));
        Outcome::CouldNotStart
    })?;
    Ok((file, sha256_digest(text.as_bytes())))
}

/// Checks that the plan about to be deployed is the reviewed one: the same inputs, the same
/// plan document (compiled without keys again when the reviewed plan was), the journal where
/// it stood. Prints what differs and refuses otherwise.
pub fn verify(
    repo: &Repo,
    path: &Path,
    reviewed: &PlanFile,
    plan: &Plan,
    digests: BTreeMap<String, String>,
    journal: &JournalState,
) -> Result<(), Outcome> {
    let reviewed_without_keys = reviewed.plan.get("secrets").and_then(|s| s.as_str()) == Some("encrypted");
    let now_document = if reviewed_without_keys && plan.secrets_decrypted {
        document(&compile(&repo.tree(), &plan.environment, None)?)
    } else {
        document(plan)
    };
    let now = PlanFile::new(&plan.environment, digests, Some(journal.clone()), now_document);
    let mut differences = reviewed.differences(&now);
    if reviewed.journal.is_none() {
        eprintln!(
            "note: the plan was made without the journal (none there, or it could not be read): whether the environment was deployed since is not checked"
        );
    }
    if let Some(then) = &reviewed.journal
        && then != journal
    {
        differences.push(if then.lineage != journal.lineage {
            format!("the journal is another one (lineage {}, the plan saw {})", journal.lineage, then.lineage)
        } else {
            format!(
                "the journal moved since the plan was made ({} steps recorded then, {} now, or their records changed)",
                then.steps, journal.steps
            )
        });
    }
    if differences.is_empty() {
        return Ok(());
    }
    ui::error(&format!(
        "`{}` is not the plan in {}: refusing to deploy it",
        plan.environment,
        path.display()
    ));
    for difference in differences.iter().take(20) {
        eprintln!("  {difference}");
    }
    if differences.len() > 20 {
        eprintln!("  ... and {} more", differences.len() - 20);
    }
    eprintln!(
        "help: review the plan again (`cargo xtask plan {} --out FILE`) and deploy that one",
        plan.environment
    );
    Err(Outcome::CouldNotStart)
}
