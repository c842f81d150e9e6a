//! Values that must never be shown: a string type whose `Debug` and `Display` redact, and a
//! redactor that scrubs known secret values out of text captured from child processes.

use std::fmt;

use zeroize::Zeroize;

/// The text printed in place of a secret.
pub const REDACTED: &str = "(sensitive)";

/// A secret string. Its `Debug` and `Display` print [`REDACTED`]; the clear text is only
/// reachable through [`SecretString::expose`], which makes every use of it easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> SecretString {
        SecretString(value.into())
    }

    /// The clear text. Call it only where the value leaves through a channel made for
    /// secrets (stdin of a child process, an encrypted file, a bound SQL parameter).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> SecretString {
        SecretString(value)
    }
}

/// Replaces every known secret value in a text with [`REDACTED`], for output captured from
/// child processes (helm, kubectl) before it reaches an error message or a terminal.
#[derive(Default, Clone)]
pub struct Redactor {
    secrets: Vec<SecretString>,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Registers a secret. Empty values are ignored: they would match everywhere.
    pub fn add(&mut self, secret: &SecretString) {
        if !secret.expose().is_empty() && !self.secrets.contains(secret) {
            self.secrets.push(secret.clone());
            // Longest first, so a secret that contains another is replaced whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.expose()) {
                out = out.replace(secret.expose(), REDACTED);
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_never_formats_its_value() {
        let secret = SecretString::new("canary-7f3a");
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(secret.expose(), "canary-7f3a");
    }

    #[test]
    fn redactor_replaces_longest_secret_first() {
        let mut redactor = Redactor::new();
        redactor.add(&SecretString::new("abc"));
        redactor.add(&SecretString::new("abcdef"));
        redactor.add(&SecretString::new(""));
        assert_eq!(redactor.redact("x abcdef y abc"), "x (sensitive) y (sensitive)");
    }
}
