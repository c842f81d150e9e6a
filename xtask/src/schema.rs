//! `cargo xtask schema`: JSON Schemas for editors, from the same Rust types `check` uses.

use std::path::PathBuf;

use platform::schema::schema_files;
use platform::secrets::{AtomicWriteOptions, write_atomic};

use crate::flags::SchemaCmd;
use crate::repo::Repo;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &SchemaCmd) -> Outcome {
    let mut stale = Vec::new();
    for (relative, content) in schema_files(&components::catalog()) {
        let path: PathBuf = repo.root.join(&relative);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(content.as_str()) {
            continue;
        }
        if cmd.check {
            stale.push(relative);
            continue;
        }
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            ui::error(&format!("cannot create {}: {e}", parent.display()));
            return Outcome::Failed;
        }
        if let Err(e) = write_atomic(&path, content.as_bytes(), &AtomicWriteOptions { mode: Some(0o644) }) {
            ui::error_chain(&e);
            return Outcome::Failed;
        }
        ui::status("Wrote", &relative);
    }
    if !stale.is_empty() {
        ui::error(&format!("out of date: {} (run `cargo xtask schema`)", stale.join(", ")));
        return Outcome::Failed;
    }
    if cmd.check {
        ui::status("Checked", "the schemas are up to date");
    }
    Outcome::Success
}
