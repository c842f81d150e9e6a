//! `cert-manager`: Let's Encrypt certificates for staging. Never in production: production
//! certificates come from the ecosystem's ICP-Brasil authorities.

use platform::catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct CertManager;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CertManagerInputs {
    /// E-mail address registered with the ACME issuer.
    pub acme_email: String,
    /// Which Let's Encrypt endpoint issues the certificates.
    pub issuer: AcmeIssuer,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeIssuer {
    LetsencryptStaging,
    LetsencryptProduction,
}

impl Default for CertManagerInputs {
    fn default() -> CertManagerInputs {
        CertManagerInputs {
            acme_email: "platform@example.com".to_owned(),
            issuer: AcmeIssuer::LetsencryptStaging,
        }
    }
}

impl Component for CertManager {
    const NAME: &'static str = "cert-manager";
    type Inputs = CertManagerInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "cert-manager with a Let's Encrypt issuer, for staging only.")
            .chart(ChartRef::repository("https://charts.jetstack.io", "cert-manager", "v1.15.3").with_stand_in("charts/opus-infra"))
            .needs_crd("certificates.cert-manager.io")
            .forbidden_in_protected(
                "production certificates come from the ecosystem's certification authorities (ICP-Brasil), never from cert-manager; remove this component",
            )
            .values_template(crate::values_template!("cert_manager"))
    }
}
