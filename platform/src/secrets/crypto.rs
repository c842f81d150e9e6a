//! The cryptography of a sops file: AES-256-GCM with sops' 32-byte nonces over each value
//! (the key path, joined with `:` and ending in `:`, as additional data), random data keys,
//! wrapping a data key for age recipients, and the MAC (SHA-512 over the plaintext values in
//! document order, its uppercase hex encrypted with the data key and `lastmodified` as
//! additional data).

use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use rand::RngCore;
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::SecretsError;
use super::format::{AgeStanza, EncryptedValue, NONCE_LEN, RuleMatcher};
use super::identity::{Identities, Recipient};
use super::tree::{SecretTree, SecretValue, ValueKind, number_value};
use crate::sensitive::SecretString;

pub const DATA_KEY_LEN: usize = 32;

type SopsAesGcm = aes_gcm::AesGcm<Aes256, U32>;

/// `sops.MACOnlyEncryptedInitialization`: SHA-256 of "sops", fed first to the MAC when the
/// file sets `mac_only_encrypted`.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b,
    0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// A 256-bit data key, wiped from memory when dropped.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl DataKey {
    pub fn generate() -> DataKey {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        DataKey(key)
    }

    fn cipher(&self) -> SopsAesGcm {
        SopsAesGcm::new(GenericArray::from_slice(self.0.as_ref()))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(")?;
        f.write_str(crate::sensitive::REDACTED)?;
        f.write_str(")")
    }
}

/// Encrypts one value. `additional_data` is the key path in sops' form (`a:b:`).
pub fn encrypt_value(
    key: &DataKey,
    kind: ValueKind,
    plaintext: &[u8],
    additional_data: &str,
) -> EncryptedValue {
    let mut iv = vec![0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let mut buffer = plaintext.to_vec();
    let tag = key
        .cipher()
        .encrypt_in_place_detached(GenericArray::from_slice(&iv), additional_data.as_bytes(), &mut buffer)
        // AES-GCM only fails on inputs of more than 64 GiB.
        .expect("AES-GCM encryption of a value cannot fail");
    EncryptedValue { data: buffer, iv, tag: tag.to_vec(), kind }
}

/// Decrypts one value; `None` when authentication fails (wrong key, tampered data, or the
/// value was moved from another key path).
pub fn decrypt_value(
    key: &DataKey,
    value: &EncryptedValue,
    additional_data: &str,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(value.data.clone());
    key.cipher()
        .decrypt_in_place_detached(
            GenericArray::from_slice(&value.iv),
            additional_data.as_bytes(),
            &mut buffer,
            GenericArray::from_slice(&value.tag),
        )
        .ok()?;
    Some(buffer)
}

/// The additional data sops binds a value to: its key path joined with `:`, plus `:`.
pub fn key_path_additional_data(key_path: &[String]) -> String {
    let mut out = key_path.join(":");
    out.push(':');
    out
}

/// The running MAC of a document.
pub(crate) struct Mac {
    hasher: Sha512,
    only_encrypted: bool,
}

impl Mac {
    pub(crate) fn new(only_encrypted: bool) -> Mac {
        let mut hasher = Sha512::new();
        if only_encrypted {
            hasher.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        Mac { hasher, only_encrypted }
    }

    pub(crate) fn add(&mut self, value: &SecretValue, encrypted: bool) {
        if encrypted || !self.only_encrypted {
            self.hasher.update(value.mac_bytes());
        }
    }

    /// Uppercase hex of the SHA-512 digest, as sops' `fmt.Sprintf("%X", ...)`.
    pub(crate) fn finish(self) -> String {
        hex::encode_upper(self.hasher.finalize())
    }
}

/// Encrypts a plaintext tree: returns the encrypted data mapping and the MAC (hex).
///
/// `previous` is the encrypted data of the file being rewritten under the same `key`, if any:
/// a value whose key path, type and plaintext are those of a value there keeps that value's
/// `ENC[...]` text (its IV included), as sops does, so a one-value change is a one-line diff.
/// Only a value that decrypts under the same key path is reused (the path is its additional
/// data); list items are matched by position in the same list.
pub(crate) fn encrypt_tree(
    path: &Path,
    tree: &SecretTree,
    key: &DataKey,
    matcher: &RuleMatcher,
    mac_only_encrypted: bool,
    previous: Option<&Mapping>,
) -> Result<(Mapping, String), SecretsError> {
    let SecretTree::Map(_) = tree else {
        return Err(SecretsError::NotAMapping { path: path.to_owned() });
    };
    let mut mac = Mac::new(mac_only_encrypted);
    let previous = previous.map(|mapping| Value::Mapping(mapping.clone()));
    let mut walk = EncryptWalk { key, matcher, mac: &mut mac, key_path: Vec::new() };
    let value = walk.node(tree, previous.as_ref());
    let Value::Mapping(mapping) = value else { unreachable!("a map encrypts to a mapping") };
    Ok((mapping, mac.finish()))
}

struct EncryptWalk<'a> {
    key: &'a DataKey,
    matcher: &'a RuleMatcher,
    mac: &'a mut Mac,
    key_path: Vec<String>,
}

impl EncryptWalk<'_> {
    /// Encrypts `node`; `previous` is what the rewritten file held at the same place.
    fn node(&mut self, node: &SecretTree, previous: Option<&Value>) -> Value {
        match node {
            SecretTree::Map(entries) => {
                let previous = previous.and_then(Value::as_mapping);
                Value::Mapping(
                    entries
                        .iter()
                        .map(|(name, child)| {
                            self.key_path.push(name.clone());
                            let value = self.node(child, previous.and_then(|map| map.get(name.as_str())));
                            self.key_path.pop();
                            (Value::String(name.clone()), value)
                        })
                        .collect(),
                )
            }
            SecretTree::List(items) => {
                let previous = previous.and_then(Value::as_sequence);
                Value::Sequence(
                    items
                        .iter()
                        .enumerate()
                        .map(|(index, item)| self.node(item, previous.and_then(|list| list.get(index))))
                        .collect(),
                )
            }
            SecretTree::Null => Value::Null,
            SecretTree::Value(value) => {
                let encrypted = self.matcher.should_encrypt(&self.key_path);
                self.mac.add(value, encrypted);
                if !encrypted {
                    value.to_yaml()
                } else if value.kind == ValueKind::Str && value.text().expose().is_empty() {
                    // sops leaves empty strings as they are (`aes.Cipher.Encrypt`).
                    Value::String(String::new())
                } else {
                    // sops encrypts booleans as True/False, the Python version's spelling.
                    let plaintext = value.mac_bytes();
                    let aad = key_path_additional_data(&self.key_path);
                    if let Some(Value::String(text)) = previous
                        && let Ok(old) = EncryptedValue::parse(text)
                        && old.kind == value.kind
                        && decrypt_value(self.key, &old, &aad).is_some_and(|old| old.as_slice() == plaintext)
                    {
                        return Value::String(text.clone());
                    }
                    Value::String(encrypt_value(self.key, value.kind, plaintext, &aad).to_sops_string())
                }
            }
        }
    }
}

/// Decrypts the data of a document and verifies nothing but the values themselves; the caller
/// compares the returned MAC with the stored one before using the tree.
pub(crate) fn decrypt_tree(
    path: &Path,
    data: &Mapping,
    key: &DataKey,
    matcher: &RuleMatcher,
    mac_only_encrypted: bool,
) -> Result<(SecretTree, String), SecretsError> {
    let mut mac = Mac::new(mac_only_encrypted);
    // Values are decrypted in document order so the MAC sees them in that order.
    let tree = decrypt_node(path, &Value::Mapping(data.clone()), &mut Vec::new(), key, matcher, &mut mac)?;
    Ok((tree, mac.finish()))
}

fn decrypt_node(
    path: &Path,
    node: &Value,
    key_path: &mut Vec<String>,
    key: &DataKey,
    matcher: &RuleMatcher,
    mac: &mut Mac,
) -> Result<SecretTree, SecretsError> {
    let malformed = |key_path: &[String], reason: &str| SecretsError::MalformedValue {
        path: path.to_owned(),
        key_path: key_path.join("."),
        reason: reason.to_owned(),
    };
    Ok(match node {
        Value::Mapping(mapping) => {
            let mut entries = Vec::with_capacity(mapping.len());
            for (name, child) in mapping {
                let Value::String(name) = name else {
                    return Err(malformed(key_path, "a key is not a string"));
                };
                key_path.push(name.clone());
                let child = decrypt_node(path, child, key_path, key, matcher, mac)?;
                key_path.pop();
                entries.push((name.clone(), child));
            }
            SecretTree::Map(entries)
        }
        Value::Sequence(items) => SecretTree::List(
            items
                .iter()
                .map(|item| decrypt_node(path, item, key_path, key, matcher, mac))
                .collect::<Result<_, _>>()?,
        ),
        Value::Null => SecretTree::Null,
        Value::Tagged(_) => return Err(malformed(key_path, "YAML tags are not supported")),
        leaf => {
            let encrypted = matcher.should_encrypt(key_path);
            let value = if !encrypted {
                match leaf {
                    Value::Bool(b) => SecretValue::bool(*b),
                    Value::Number(number) => number_value(path, number)?,
                    Value::String(text) => SecretValue::string(SecretString::new(text.clone())),
                    _ => unreachable!("collections are handled above"),
                }
            } else {
                let Value::String(text) = leaf else {
                    return Err(malformed(key_path, "the value should be encrypted but is stored in clear"));
                };
                if text.is_empty() {
                    SecretValue::string(SecretString::new(""))
                } else {
                    let encrypted_value =
                        EncryptedValue::parse(text).map_err(|reason| malformed(key_path, &reason))?;
                    let aad = key_path_additional_data(key_path);
                    let plaintext = decrypt_value(key, &encrypted_value, &aad).ok_or_else(|| {
                        SecretsError::ValueAuthentication {
                            path: path.to_owned(),
                            key_path: key_path.join("."),
                        }
                    })?;
                    let text = String::from_utf8(plaintext.to_vec())
                        .map_err(|_| malformed(key_path, "the value is not UTF-8"))?;
                    SecretValue::from_decrypted(encrypted_value.kind, text)
                        .map_err(|reason| malformed(key_path, &reason))?
                }
            };
            mac.add(&value, encrypted);
            SecretTree::Value(value)
        }
    })
}

/// Encrypts the MAC (hex) with the data key, `lastmodified` as additional data.
pub(crate) fn encrypt_mac(key: &DataKey, mac_hex: &str, last_modified: &str) -> String {
    encrypt_value(key, ValueKind::Str, mac_hex.as_bytes(), last_modified).to_sops_string()
}

/// Decrypts the stored MAC; `None` when it fails authentication.
pub(crate) fn decrypt_mac(key: &DataKey, stored: &str, last_modified: &str) -> Option<String> {
    let value = EncryptedValue::parse(stored).ok()?;
    let plaintext = decrypt_value(key, &value, last_modified)?;
    String::from_utf8(plaintext.to_vec()).ok()
}

/// Wraps the data key for each recipient as an armored age file (one stanza per recipient,
/// as sops does).
pub(crate) fn wrap_data_key(key: &DataKey, recipients: &[Recipient]) -> Vec<AgeStanza> {
    recipients
        .iter()
        .map(|recipient| {
            let encryptor = age::Encryptor::with_recipients(std::iter::once(
                recipient.age_recipient() as &dyn age::Recipient
            ))
            .expect("one recipient is always enough for age");
            let armored = age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)
                .expect("writing to memory cannot fail");
            let mut writer = encryptor.wrap_output(armored).expect("writing to memory cannot fail");
            writer.write_all(key.0.as_ref()).expect("writing to memory cannot fail");
            let armored = writer.finish().expect("writing to memory cannot fail");
            let bytes = armored.finish().expect("writing to memory cannot fail");
            AgeStanza {
                recipient: recipient.to_string(),
                enc: String::from_utf8(bytes).expect("armored age output is ASCII"),
            }
        })
        .collect()
}

/// Unwraps the data key with the first identity that matches a stanza.
pub(crate) fn unwrap_data_key(
    path: &Path,
    stanzas: &[AgeStanza],
    identities: &Identities,
) -> Result<DataKey, SecretsError> {
    let recipients = || stanzas.iter().map(|s| s.recipient.clone()).collect();
    if identities.is_empty() {
        return Err(SecretsError::NoIdentity {
            path: path.to_owned(),
            recipients: recipients(),
            locations: identities.locations().to_vec(),
        });
    }
    // First each stanza whose recipient we hold a key for, with that key alone (one X25519
    // exchange per file, however many keys the key file holds); then every stanza with every
    // key (a recipient string might be spelled differently from the key that decrypts it).
    let held = identities.recipients();
    let by_recipient = stanzas.iter().filter_map(|stanza| {
        identities.identity_for(&stanza.recipient).map(|identity| (stanza, vec![identity]))
    });
    let all: Vec<&dyn age::Identity> = identities.age_identities().collect();
    let every = stanzas.iter().map(|stanza| (stanza, all.clone()));
    for (stanza, candidates) in by_recipient.chain(every) {
        let Some(bytes) = unwrap_stanza(stanza, &candidates) else {
            continue;
        };
        if bytes.len() != DATA_KEY_LEN {
            return Err(SecretsError::MalformedDataKey {
                path: path.to_owned(),
                recipient: stanza.recipient.clone(),
            });
        }
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key.copy_from_slice(&bytes);
        return Ok(DataKey(key));
    }
    Err(SecretsError::WrongIdentity { path: path.to_owned(), recipients: recipients(), available: held })
}

/// The payload of one stanza's age file, if one of `candidates` opens it.
fn unwrap_stanza(stanza: &AgeStanza, candidates: &[&dyn age::Identity]) -> Option<Zeroizing<Vec<u8>>> {
    // Take the armor off first and parse the binary header from a slice: age's parser for a
    // plain `Read` re-parses the header from its start after every byte it asks for.
    let mut binary = Vec::with_capacity(stanza.enc.len());
    age::armor::ArmoredReader::new(stanza.enc.as_bytes()).read_to_end(&mut binary).ok()?;
    let decryptor = age::Decryptor::new_buffered(binary.as_slice()).ok()?;
    let mut stream = decryptor.decrypt(candidates.iter().copied()).ok()?;
    let mut bytes = Zeroizing::new(Vec::new());
    stream.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// `n` random bytes from the operating system, as lowercase hex: for generated passwords,
/// keys and salts.
pub fn random_hex(n: usize) -> crate::sensitive::SecretString {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = hex::encode(&bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    crate::sensitive::SecretString::new(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_only_decrypts_under_its_own_key_path() {
        let key = DataKey::generate();
        let encrypted = encrypt_value(&key, ValueKind::Str, b"canary-33d1", "db:password:");
        let plain = decrypt_value(&key, &encrypted, "db:password:").unwrap();
        assert_eq!(plain.as_slice(), b"canary-33d1");
        assert!(decrypt_value(&key, &encrypted, "db:user:").is_none());
        assert!(decrypt_value(&DataKey::generate(), &encrypted, "db:password:").is_none());
    }

    #[test]
    fn the_data_key_unwraps_with_the_matching_key_among_many_and_despite_a_wrong_label() {
        use crate::secrets::identity::generate_identity;
        let (a, b, c) = (generate_identity(), generate_identity(), generate_identity());
        let key = DataKey::generate();
        let stanzas = wrap_data_key(&key, std::slice::from_ref(&b.recipient));
        let path = Path::new("environments/x/secrets.enc.yaml");
        let mut identities = Identities::new();
        for generated in [&a, &b, &c] {
            identities.add_key_text("a key file", &generated.secret_key).unwrap();
        }
        assert_eq!(*unwrap_data_key(path, &stanzas, &identities).unwrap().0, *key.0);

        // A stanza labelled for a key we hold but made for another one we also hold.
        let mislabelled = vec![AgeStanza { recipient: a.recipient.to_string(), enc: stanzas[0].enc.clone() }];
        assert_eq!(*unwrap_data_key(path, &mislabelled, &identities).unwrap().0, *key.0);

        let without_b = Identities::from_key_text("a key file", &a.secret_key).unwrap();
        let error = unwrap_data_key(path, &stanzas, &without_b).unwrap_err();
        assert!(matches!(error, SecretsError::WrongIdentity { .. }), "{error:?}");
    }

    #[test]
    fn data_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", DataKey::generate()), "DataKey((sensitive))");
    }
}
