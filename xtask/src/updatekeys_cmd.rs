//! `cargo xtask secrets updatekeys ENV`: takes the deploy lock, re-wraps every secrets file for
//! the recipients env.toml lists, and names the files it could not update.

use platform::access::identities_for;
use platform::keys::{self, UpdateEvent, UpdateKind, UpdateOptions};
use platform::session;

use crate::flags::SecretsAction;
use crate::repo::Repo;
use crate::ui::OrExit;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, action: &SecretsAction) -> Outcome {
    let SecretsAction::Updatekeys { environment, yes } = action else {
        unreachable!("only updatekeys has no secrets file")
    };
    crate::runtime::block_on(update(repo, environment, *yes)).unwrap_or_else(|outcome| outcome)
}

async fn update(repo: &Repo, environment: &str, yes: bool) -> Result<Outcome, Outcome> {
    let env_file = repo.env_file(environment).or_exit(Outcome::CouldNotStart)?;
    if env_file.protected && !yes {
        ui::confirm_protected(environment, "change who can read its secrets")?;
    }
    if keys::rotation_journal_path(&repo.root, environment).exists() {
        ui::error(&format!(
            "a rotation of `{environment}` is in progress: run `cargo xtask rotate-keys {environment}` to finish it first"
        ));
        return Err(Outcome::CouldNotStart);
    }
    let identities = identities_for(&repo.root, &env_file).or_exit(Outcome::CouldNotStart)?;
    // No deploy may read the files while they change.
    let place = session::journal_place(&repo.root, environment, &env_file, || {
        session::decrypt_admin_password(&repo.root, environment, Some(&identities))
    })
    .or_exit(Outcome::CouldNotStart)?;
    let _lock = session::lock(&place, environment).await.or_exit(Outcome::CouldNotStart)?;
    let options = UpdateOptions {
        root: repo.root.clone(),
        environment: environment.to_owned(),
        batch_size: platform::failpoint::batch_size(keys::update::BATCH_SIZE),
    };
    let report = keys::update_keys(&identities, &options, &mut show).map_err(|e| {
        ui::error_chain(&e);
        Outcome::Failed
    })?;
    if report.leftovers_removed > 0 {
        eprintln!(
            "note: removed {} temporary file(s) an interrupted run left beside the secrets files",
            report.leftovers_removed
        );
    }
    for (path, kind) in &report.updated {
        let how = match kind {
            UpdateKind::Rewrapped => "same data key, recipients added",
            UpdateKind::Rekeyed => "fresh data key, a recipient removed",
        };
        ui::status("Updated", &format!("{} ({how})", path.display()));
    }
    ui::status(
        "Recipients",
        &format!(
            "`{environment}`: {} updated, {} already up to date, encrypted for {}",
            report.updated.len(),
            report.unchanged.len(),
            report.recipients.join(", ")
        ),
    );
    if !report.updated.is_empty() {
        if report.verified_with.is_empty() {
            eprintln!(
                "warning: none of the listed recipients' keys is at hand: the files were checked to list them, but not decrypted with them"
            );
        } else {
            eprintln!(
                "note: every updated file was decrypted with {} before it was written",
                report.verified_with.join(", ")
            );
        }
        if !report.not_verified_with.is_empty() {
            eprintln!(
                "note: not verified with {} (their private keys are not here): ask their holders to run `cargo xtask check {environment}` with them",
                report.not_verified_with.join(", ")
            );
        }
        if report.updated.iter().any(|(_, kind)| *kind == UpdateKind::Rekeyed) {
            eprintln!(
                "note: a removed recipient can still read these values in git history: change the secrets themselves (`cargo xtask secrets set`) if that key is compromised"
            );
        }
        eprintln!(
            "note: commit the changed files; the next deploy rewrites the bundle's encrypted files for these recipients anyway"
        );
    }
    if report.failed.is_empty() {
        return Ok(Outcome::Success);
    }
    for (path, reason) in &report.failed {
        ui::error(&format!("could not update {}: {reason}", path.display()));
    }
    Err(Outcome::Failed)
}

fn show(event: &UpdateEvent) {
    match event {
        UpdateEvent::Planned { files, pending } => ui::status(
            "Checked",
            &format!("{files} encrypted files; {pending} to update, verified in memory"),
        ),
        UpdateEvent::Written { done, pending } => {
            ui::status("Written", &format!("{done} of {pending} files (durable)"))
        }
    }
}
