//! Changing who can read a secrets file (sops' `updatekeys`). When recipients are only added,
//! the file keeps its data key: the new recipients get a stanza wrapping that same key and
//! nothing else in the file changes (values, MAC, `lastmodified` and the stanzas of the
//! recipients that stay are byte-identical), so the change reviews as a few added lines.
//! When a recipient is removed, the file gets a fresh data key: the removed key could unwrap
//! the old one, and with it every value written later under it.

use std::path::Path;

use super::SecretsError;
use super::crypto::{decrypt_mac, decrypt_tree, unwrap_data_key, wrap_data_key};
use super::format::{emit_document, parse_document};
use super::identity::{Identities, Recipient};
use super::ops::reencrypt_document;
use super::tree::SecretTree;

/// What [`rewrap_document`] made of a file.
#[derive(Debug)]
pub enum Rewrap {
    /// Already encrypted for exactly these recipients.
    Unchanged,
    /// Recipients were only added: the same data key, wrapped for more recipients.
    Rewrapped { text: String, tree: SecretTree },
    /// A recipient was removed: a fresh data key for the new recipients.
    Rekeyed { text: String, tree: SecretTree },
}

/// The file's text (`text`, read from `path`) encrypted for exactly `recipients`, in their
/// order. The file must decrypt with `identities` and its MAC verify first: a tampered file is
/// never blessed with new stanzas. The decrypted tree comes back for the caller to verify the
/// new text against.
pub fn rewrap_document(
    path: &Path,
    text: &str,
    identities: &Identities,
    recipients: &[Recipient],
) -> Result<Rewrap, SecretsError> {
    if recipients.is_empty() {
        return Err(SecretsError::NoRecipients { path: path.to_owned() });
    }
    let mut document = parse_document(path, text)?;
    let wanted: Vec<String> = recipients.iter().map(ToString::to_string).collect();
    let current: Vec<String> = document.metadata.age.iter().map(|stanza| stanza.recipient.clone()).collect();
    let mut sorted_wanted = wanted.clone();
    sorted_wanted.sort();
    sorted_wanted.dedup();
    let mut sorted_current = current.clone();
    sorted_current.sort();
    if sorted_current == sorted_wanted {
        return Ok(Rewrap::Unchanged);
    }
    if !document.metadata.other_key_groups.is_empty() {
        return Err(SecretsError::Unsupported {
            path: path.to_owned(),
            feature: format!(
                "changing the recipients of a file whose data key is also wrapped for {} (use sops)",
                document.metadata.other_key_groups.join(", ")
            ),
        });
    }
    let metadata = &document.metadata;
    let key = unwrap_data_key(path, &metadata.age, identities)?;
    let stored_mac = decrypt_mac(&key, &metadata.mac, &metadata.last_modified)
        .ok_or_else(|| SecretsError::MacAuthentication { path: path.to_owned() })?;
    let matcher = metadata.rule.matcher(path)?;
    let (tree, computed_mac) =
        decrypt_tree(path, &document.data, &key, &matcher, metadata.mac_only_encrypted)?;
    if !computed_mac.eq_ignore_ascii_case(&stored_mac) {
        return Err(SecretsError::MacMismatch { path: path.to_owned() });
    }
    if current.iter().all(|recipient| wanted.contains(recipient)) {
        let mut stanzas = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let name = recipient.to_string();
            if stanzas.iter().any(|stanza: &super::format::AgeStanza| stanza.recipient == name) {
                continue;
            }
            match document.metadata.age.iter().find(|stanza| stanza.recipient == name) {
                Some(kept) => stanzas.push(kept.clone()),
                None => stanzas.extend(wrap_data_key(&key, std::slice::from_ref(recipient))),
            }
        }
        document.metadata.age = stanzas;
        Ok(Rewrap::Rewrapped { text: emit_document(&document), tree })
    } else {
        let mut unique: Vec<Recipient> = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            if !unique.contains(recipient) {
                unique.push(recipient.clone());
            }
        }
        Ok(Rewrap::Rekeyed { text: reencrypt_document(path, text, identities, &unique)?.0, tree })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{decrypt_document, encrypt_document, generate_identity, inspect_document};

    fn identities(generated: &crate::secrets::GeneratedIdentity) -> Identities {
        Identities::from_key_text("test", &generated.key_file_entry()).unwrap()
    }

    fn file_for(recipients: &[Recipient]) -> String {
        let tree = SecretTree::from_yaml(Path::new("t"), "db:\n    password: canary-rekey-5e1\n").unwrap();
        encrypt_document(Path::new("s.enc.yaml"), &tree, recipients, &Default::default()).unwrap()
    }

    #[test]
    fn adding_a_recipient_keeps_everything_else_byte_identical() {
        let (alice, bob) = (generate_identity(), generate_identity());
        let text = file_for(std::slice::from_ref(&alice.recipient));
        let both = [alice.recipient.clone(), bob.recipient.clone()];
        let Rewrap::Rewrapped { text: new, .. } =
            rewrap_document(Path::new("s"), &text, &identities(&alice), &both).unwrap()
        else {
            panic!("expected a re-wrap")
        };
        // Only lines were added: every old line is still there, in order.
        let mut old_lines = text.lines().peekable();
        for line in new.lines() {
            if old_lines.peek() == Some(&line) {
                old_lines.next();
            }
        }
        assert!(old_lines.next().is_none(), "a line changed:\n{text}\n---\n{new}");
        assert_eq!(
            decrypt_document(Path::new("s"), &new, &identities(&bob)).unwrap(),
            decrypt_document(Path::new("s"), &text, &identities(&alice)).unwrap()
        );
        let summary = inspect_document(Path::new("s"), &new).unwrap();
        assert_eq!(summary.recipients, [alice.recipient.to_string(), bob.recipient.to_string()]);
        assert!(matches!(
            rewrap_document(Path::new("s"), &new, &identities(&bob), &both).unwrap(),
            Rewrap::Unchanged
        ));
    }

    #[test]
    fn removing_a_recipient_changes_the_data_key() {
        let (alice, bob) = (generate_identity(), generate_identity());
        let text = file_for(&[alice.recipient.clone(), bob.recipient.clone()]);
        let Rewrap::Rekeyed { text: new, .. } = rewrap_document(
            Path::new("s"),
            &text,
            &identities(&alice),
            std::slice::from_ref(&alice.recipient),
        )
        .unwrap() else {
            panic!("expected a new data key")
        };
        assert!(decrypt_document(Path::new("s"), &new, &identities(&bob)).is_err());
        decrypt_document(Path::new("s"), &new, &identities(&alice)).unwrap();
        let old_mac = parse_document(Path::new("s"), &text).unwrap().metadata.mac;
        assert_ne!(parse_document(Path::new("s"), &new).unwrap().metadata.mac, old_mac);
    }

    #[test]
    fn a_tampered_file_is_not_rewrapped() {
        let (alice, bob) = (generate_identity(), generate_identity());
        let text = file_for(std::slice::from_ref(&alice.recipient));
        let mut document = parse_document(Path::new("s"), &text).unwrap();
        document.metadata.last_modified = "2020-01-01T00:00:00Z".to_owned();
        let tampered = emit_document(&document);
        let error = rewrap_document(
            Path::new("s"),
            &tampered,
            &identities(&alice),
            &[alice.recipient.clone(), bob.recipient.clone()],
        )
        .unwrap_err();
        assert!(matches!(error, SecretsError::MacAuthentication { .. }), "{error}");
    }
}
