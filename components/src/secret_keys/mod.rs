//! `secret-keys`: keeps the environment's age key pair in a Secret in the cluster (on the
//! `directory` target, in the bundle's local key store). `keys save`, `keys get` and
//! `rotate-keys` start here.

use catalog::{Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct SecretKeys;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecretKeysInputs {
    /// Name of the Secret that holds the key pair.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

impl Default for SecretKeysInputs {
    fn default() -> SecretKeysInputs {
        SecretKeysInputs { secret_name: "opus-age-keys".to_owned() }
    }
}

impl Component for SecretKeys {
    const NAME: &'static str = "secret-keys";
    type Inputs = SecretKeysInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::KeyStore,
            "The environment's age key pair, kept in a Secret in the cluster.",
        )
    }
}
