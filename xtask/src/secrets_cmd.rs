//! `cargo xtask secrets edit|show|set|new`.

use std::io::{Read, Write};
use std::path::Path;

use platform::access::{environment_of, identities_for};
use platform::load::secret_inputs::{self, KnownSecretKeys};
use platform::secrets::{self, EditOptions, EditOutcome, SecretTree, SecretValue, SecretsError};
use platform::sensitive::SecretString;

use crate::flags::{SecretsAction, SecretsCmd};
use crate::repo::Repo;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: SecretsCmd) -> Outcome {
    let Some(path) = cmd.action.path().map(ToOwned::to_owned) else {
        return crate::updatekeys_cmd::run(repo, &cmd.action);
    };
    let (environment, relative) = match environment_of(&repo.root, &path) {
        Ok(found) => found,
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    };
    let env_file = match repo.env_file(&environment) {
        Ok(env_file) => env_file,
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    };
    let absolute = repo.root.join(&relative);
    // A running edit of the file would overwrite what this command does; a killed one left
    // plaintext behind, removed before anything else.
    match secrets::recover_killed_edit(&absolute, &secrets::default_temp_parent()) {
        Ok(None) => {}
        Ok(Some(killed)) => notice_killed_edit(&killed),
        Err(e) => {
            ui::error_chain(&e);
            return Outcome::CouldNotStart;
        }
    }
    let result = match cmd.action {
        SecretsAction::New { .. } => new_file(&repo.root, &relative, &env_file.secrets.age_recipients),
        other => {
            let identities = match identities_for(&repo.root, &env_file) {
                Ok(identities) => identities,
                Err(e) => {
                    ui::error_chain(&e);
                    return Outcome::CouldNotStart;
                }
            };
            match other {
                SecretsAction::Show { .. } => secrets::show_file(&absolute, &identities).map(|yaml| {
                    let mut stdout = std::io::stdout().lock();
                    // A closed pipe (`| head`) is a normal end.
                    let _ = stdout.write_all(yaml.expose().as_bytes());
                }),
                SecretsAction::Set { key, value, .. } => {
                    let value = match read_value(&key, value) {
                        Ok(value) => value,
                        Err(message) => {
                            ui::error(&message);
                            return Outcome::CouldNotStart;
                        }
                    };
                    let keep =
                        owner_keys(&repo.root, &relative).map(|k| k.keep_encrypted()).unwrap_or_default();
                    secrets::ops::set_value_keeping(&absolute, &key, value, &identities, &keep)
                        .map(|()| ui::status("Updated", &format!("`{key}` in {}", relative.display())))
                }
                SecretsAction::Edit { .. } => {
                    let editor = std::env::var("VISUAL")
                        .or_else(|_| std::env::var("EDITOR"))
                        .unwrap_or_else(|_| "vi".to_owned());
                    let keep =
                        owner_keys(&repo.root, &relative).map(|k| k.keep_encrypted()).unwrap_or_default();
                    let options = EditOptions {
                        editor,
                        temp_parent: None,
                        reopen_on_invalid: Some(&ask_to_reopen),
                        on_killed_edit: Some(&notice_killed_edit),
                    };
                    match secrets::edit_file_keeping(&absolute, &identities, &options, &keep) {
                        Ok(EditOutcome::Unchanged) => {
                            ui::status("Unchanged", &relative.display().to_string());
                            Ok(())
                        }
                        Ok(EditOutcome::Updated) => {
                            ui::status("Encrypted", &relative.display().to_string());
                            Ok(())
                        }
                        Err(SecretsError::EditInterrupted { .. }) => {
                            ui::error(&format!("interrupted; {} is unchanged", relative.display()));
                            return Outcome::Interrupted;
                        }
                        Err(e) => Err(e),
                    }
                }
                SecretsAction::New { .. } | SecretsAction::Updatekeys { .. } => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => Outcome::Success,
        Err(e) => {
            ui::error_chain(&e);
            match e {
                // The command could not start: a file or key it needs is missing or unusable.
                SecretsError::Read { .. }
                | SecretsError::KeyFile { .. }
                | SecretsError::NoIdentity { .. }
                | SecretsError::WrongIdentity { .. }
                | SecretsError::NoRecipients { .. }
                | SecretsError::InvalidRecipient { .. }
                | SecretsError::AlreadyExists { .. }
                | SecretsError::NotSops { .. }
                | SecretsError::InvalidKeyPath { .. }
                | SecretsError::EditRunning { .. }
                | SecretsError::EditLock { .. } => Outcome::CouldNotStart,
                _ => Outcome::Failed,
            }
        }
    }
}

/// The value for `secrets set`: the argument, stdin (`-`, or no argument without a terminal),
/// or asked twice on the terminal without echo. Errors never hold the value.
fn read_value(key: &str, argument: Option<String>) -> Result<SecretString, String> {
    use std::io::IsTerminal;
    let value = match argument.as_deref() {
        Some("-") => read_stdin()?,
        Some(_) => {
            eprintln!(
                "note: a value on the command line is visible in shell history and process lists; leave it out to be asked for it"
            );
            SecretString::new(argument.unwrap_or_default())
        }
        None if std::io::stdin().is_terminal() => {
            let prompt = |text: &str| {
                rpassword::prompt_password(text)
                    .map(SecretString::new)
                    .map_err(|e| format!("cannot read the value from the terminal: {e}"))
            };
            let first = prompt(&format!("New value for `{key}`: "))?;
            if first.expose().is_empty() {
                return Err(empty_value(key));
            }
            let second = prompt("Repeat it: ")?;
            if first.expose() != second.expose() {
                return Err(format!("the two values for `{key}` differ; nothing was changed"));
            }
            first
        }
        None => read_stdin()?,
    };
    if value.expose().is_empty() {
        return Err(empty_value(key));
    }
    Ok(value)
}

fn empty_value(key: &str) -> String {
    format!("the value for `{key}` is empty; nothing was changed")
}

/// All of stdin, without the one final newline `echo` adds.
fn read_stdin() -> Result<SecretString, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
    // Both copies are wiped when dropped.
    let text = SecretString::new(text);
    Ok(SecretString::new(text.expose().strip_suffix('\n').unwrap_or(text.expose()).to_owned()))
}

fn notice_killed_edit(killed: &secrets::KilledEdit) {
    eprintln!("notice: {killed}");
}

/// Whether to run the editor again on edited text that was refused: asked on a terminal (as
/// sops, which reopens it unconditionally there); without one, the edit ends with the error.
fn ask_to_reopen(refusal: &SecretsError) -> bool {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return false;
    }
    ui::error_chain(refusal);
    eprint!("reopen the editor? [Y/n] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    // End of input (Ctrl-D) is a no.
    if !matches!(std::io::stdin().lock().read_line(&mut answer), Ok(n) if n > 0) {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "" | "y" | "yes")
}

/// Creates a secrets file holding every key its owner requires, with random values.
fn new_file(root: &Path, relative: &Path, recipients: &[String]) -> Result<(), SecretsError> {
    let absolute = &root.join(relative);
    let recipients = secrets::parse_recipients(recipients)?;
    let required: Vec<String> = owner_keys(root, relative)
        .map(|k| k.keys.iter().map(|k| (*k).to_owned()).collect())
        .unwrap_or_default();
    let mut tree = SecretTree::empty();
    let mut generated = Vec::new();
    for key in &required {
        tree.set_dotted(absolute, key, SecretValue::string(random_secret(key)))?;
        generated.push(key.clone());
    }
    secrets::create_file(absolute, &recipients, &tree)?;
    ui::status("Created", &relative.display().to_string());
    if !generated.is_empty() {
        eprintln!("             with random values for {}", generated.join(", "));
        eprintln!(
            "             set the ones that must match existing systems with `cargo xtask secrets set`"
        );
    }
    Ok(())
}

/// The keys the owner of a secrets file reads.
fn owner_keys(root: &Path, relative: &Path) -> Option<KnownSecretKeys> {
    secret_inputs::owner_keys(&components::catalog(), root, relative)
}

/// A random value in the shape a key needs: 64-bit hex for salts, 256-bit hex otherwise.
fn random_secret(key: &str) -> SecretString {
    secrets::crypto::random_hex(if key.ends_with("salt") { 8 } else { 32 })
}
