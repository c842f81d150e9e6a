//! `cargo xtask rotate-keys ENV [--commit]`: takes the deploy lock, runs (or resumes) the
//! rotation, shows its progress on stderr, commits the changed files when asked and reminds
//! the operator to back up the new key.

use platform::access::identities_for;
use platform::keys::{self, KeysError, RotationEvent, RotationOptions, git, local_key_file};
use platform::model::Target;
use platform::secrets::IdentitySources;
use platform::session;

use crate::flags::RotateKeysCmd;
use crate::keys_cmd::open_store;
use crate::repo::Repo;
use crate::ui::OrExit;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &RotateKeysCmd) -> Outcome {
    crate::runtime::block_on(rotate(repo, cmd))
}

async fn rotate(repo: &Repo, cmd: &RotateKeysCmd) -> Outcome {
    rotate_or_exit(repo, cmd).await.unwrap_or_else(|outcome| outcome)
}

async fn rotate_or_exit(repo: &Repo, cmd: &RotateKeysCmd) -> Result<Outcome, Outcome> {
    let environment = &cmd.environment;
    let env_file = repo.env_file(environment).or_exit(Outcome::CouldNotStart)?;
    if env_file.protected && !cmd.yes {
        ui::confirm_protected(environment, "rotate its keys")?;
    }
    let local_key_file = local_key_file(&IdentitySources::from_env()).or_exit(Outcome::CouldNotStart)?;
    // The new key goes into this file; a named `SOPS_AGE_KEY_FILE` that does not exist yet
    // would otherwise make loading the current identities fail.
    if let Err(e) = ensure_key_file(&local_key_file) {
        ui::error(&format!("could not create the local key file {}: {e}", local_key_file.display()));
        return Err(Outcome::CouldNotStart);
    }
    let identities = identities_for(&repo.root, &env_file).or_exit(Outcome::CouldNotStart)?;
    let opened = open_store(repo, environment, &env_file).await?;
    // No deploy may run while files change keys.
    let place = session::journal_place(&repo.root, environment, &env_file, || {
        session::decrypt_admin_password(&repo.root, environment, Some(&identities))
    })
    .or_exit(Outcome::CouldNotStart)?;
    let _lock = session::lock(&place, environment).await.or_exit(Outcome::CouldNotStart)?;
    if cmd.commit {
        let env_toml = std::path::Path::new("environments").join(environment).join("env.toml");
        let key_store = env_file.target.key_store().map(std::path::PathBuf::from);
        // A resumed rotation has already edited env.toml itself.
        let resuming = keys::rotation_journal_path(&repo.root, environment).exists();
        let env_toml = if resuming { None } else { Some(env_toml) };
        git::check_commit_preconditions(&repo.root, env_toml.as_deref(), key_store.as_deref())
            .or_exit(Outcome::CouldNotStart)?;
    }
    let options = RotationOptions {
        root: repo.root.clone(),
        environment: environment.clone(),
        local_key_file: local_key_file.clone(),
        // The crash tests ask for small batches (`OPUS_FAILPOINT=batch-size:<n>`).
        batch_size: platform::failpoint::batch_size(keys::rotation::BATCH_SIZE),
        keep_previous_key: keeps_previous_key(&env_file.target),
    };
    let started = std::time::Instant::now();
    let report = match keys::rotate_keys(opened.store.as_ref(), &identities, &options, &mut show).await {
        Ok(report) => report,
        Err(e) => {
            ui::error_chain(&e);
            return Err(match e {
                KeysError::Undecryptable { .. }
                | KeysError::UncommittedSecrets { .. }
                | KeysError::PreviousKeyKept { .. } => Outcome::CouldNotStart,
                _ => Outcome::Failed,
            });
        }
    };
    ui::status(
        "Rotated",
        &format!(
            "`{environment}`: {} secrets files now encrypted for {} (was {}) in {:.2} s ({:.2} s making the files durable, while the next batch was re-encrypted); the new key is in {} and {}",
            report.files.len(),
            report.new_recipient,
            report.old_recipients.join(", "),
            started.elapsed().as_secs_f64(),
            report.timings.durability.as_secs_f64(),
            opened.store.describe(),
            local_key_file.display()
        ),
    );
    if cmd.commit {
        if let Err(e) = git::commit_paths(&repo.root, &report.changed_paths) {
            ui::error_chain(&e);
            return Err(Outcome::Failed);
        }
        ui::status(
            "Committed",
            &format!("\"{}\" ({} files)", git::ROTATION_COMMIT_MESSAGE, report.changed_paths.len()),
        );
    } else {
        eprintln!(
            "note: commit the changed files: git add -- {}",
            git_add_arguments(&report.changed_paths, environment)
        );
    }
    eprintln!(
        "note: back up the new key now, outside the repository: (umask 077; cargo xtask keys get {environment} > ~/opus-{environment}-age-key.json), then move it somewhere safe"
    );
    if let Target::Flux { path, .. } = &env_file.target {
        eprintln!(
            "note: the tree {path}/ is still encrypted for the old key: `cargo xtask deploy {environment}` re-encrypts it; commit and push it"
        );
        if keeps_previous_key(&env_file.target) {
            eprintln!(
                "note: {} keeps the old key beside the new one, so Flux decrypts both trees; once Flux has applied the new tree, `cargo xtask keys retire {environment}` removes it",
                opened.store.describe()
            );
        }
    }
    Ok(Outcome::Success)
}

/// A flux target whose key store is the cluster's decryption Secret keeps the previous key
/// there: Flux decrypts the committed tree with it until the re-encrypted tree is applied.
fn keeps_previous_key(target: &Target) -> bool {
    matches!(target, Target::Flux { context: Some(_), .. })
}

/// Creates an empty key file (mode 0600, its folder 0700) when there is none.
fn ensure_key_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path).map(drop)
}

fn show(event: &RotationEvent) {
    match event {
        RotationEvent::Resuming { recipient, done, total } => {
            ui::status("Resuming", &format!("the rotation to {recipient} ({done} of {total} files done)"))
        }
        RotationEvent::Generated { recipient } => ui::status("Generated", &format!("new key {recipient}")),
        RotationEvent::KeyStored { store } => {
            ui::status("Stored", &format!("the new key in {store} (the previous one is kept until the end)"))
        }
        RotationEvent::Reencrypted { done, total } => {
            ui::status("Re-encrypted", &format!("{done} of {total} files (verified, durable, journaled)"))
        }
        RotationEvent::RecipientsUpdated { path } => {
            ui::status("Updated", &format!("age_recipients in {}", path.display()))
        }
        RotationEvent::Verified { files } => {
            ui::status("Verified", &format!("{files} files decrypt with the new key only"))
        }
        RotationEvent::Retired { store } => ui::status("Retired", &format!("the previous key from {store}")),
        RotationEvent::PreviousKept { store } => {
            ui::status("Kept", &format!("the previous key in {store}, for Flux (until `keys retire`)"))
        }
    }
}

/// The paths to name in the `git add` hint: each changed path, or, when there are many, the
/// environment's folder for those inside it (a rotation changes every file there anyway).
fn git_add_arguments(paths: &[std::path::PathBuf], environment: &str) -> String {
    let folder = std::path::Path::new("environments").join(environment);
    let (inside, outside): (Vec<_>, Vec<_>) = paths.iter().partition(|path| path.starts_with(&folder));
    let mut shown: Vec<String> = if inside.len() > 8 {
        vec![folder.display().to_string()]
    } else {
        inside.iter().map(|path| path.display().to_string()).collect()
    };
    shown.extend(outside.iter().map(|path| path.display().to_string()));
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn many_changed_files_are_named_by_their_folder() {
        let few = [PathBuf::from("environments/dev/secrets.enc.yaml"), PathBuf::from("keys/dev.agekey")];
        assert_eq!(
            super::git_add_arguments(&few, "dev"),
            "environments/dev/secrets.enc.yaml keys/dev.agekey"
        );
        let many: Vec<PathBuf> =
            (0..20).map(|i| PathBuf::from(format!("environments/dev/c{i}/secrets.enc.yaml"))).collect();
        assert_eq!(super::git_add_arguments(&many, "dev"), "environments/dev");
    }
}
