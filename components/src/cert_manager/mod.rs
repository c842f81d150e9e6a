//! `cert-manager`: Let's Encrypt certificates for staging. Never in production: production
//! certificates come from the ecosystem's ICP-Brasil authorities.

use catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct CertManager;

/// The CustomResourceDefinitions the cert-manager chart installs (`crds.enabled`).
pub const CERT_MANAGER_CRDS: [&str; 6] = [
    "certificaterequests.cert-manager.io",
    "certificates.cert-manager.io",
    "challenges.acme.cert-manager.io",
    "clusterissuers.cert-manager.io",
    "issuers.cert-manager.io",
    "orders.acme.cert-manager.io",
];

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CertManagerInputs {
    /// E-mail address registered with the ACME issuer.
    pub acme_email: String,
    /// Which Let's Encrypt endpoint issues the certificates; also the name of the
    /// ClusterIssuer the component creates.
    pub issuer: AcmeIssuer,
    /// Who answers the ACME DNS-01 challenge.
    pub dns01_provider: Dns01Provider,
    /// AWS region of the Route 53 API (`dns01_provider = "route53"`; credentials come from
    /// cert-manager's ServiceAccount, e.g. IRSA).
    #[schemars(length(min = 1))]
    pub route53_region: String,
    /// Secret in cert-manager's namespace whose key `api-token` holds the Cloudflare API token
    /// (`dns01_provider = "cloudflare"`).
    #[schemars(length(min = 1, max = 253))]
    pub cloudflare_token_secret: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dns01Provider {
    Route53,
    Cloudflare,
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
            dns01_provider: Dns01Provider::Route53,
            route53_region: "sa-east-1".to_owned(),
            cloudflare_token_secret: "cloudflare-api-token".to_owned(),
        }
    }
}

impl Component for CertManager {
    const NAME: &'static str = "cert-manager";
    type Inputs = CertManagerInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "cert-manager with a Let's Encrypt issuer, for staging only.")
            .chart(ChartRef::repository("https://charts.jetstack.io", "cert-manager", "v1.15.3").with_stand_in("charts/stand-in-cert-manager"))
            .provides_crds(&CERT_MANAGER_CRDS)
            .needs_crd("clusterissuers.cert-manager.io")
            .forbidden_in_protected(
                "production certificates come from the ecosystem's certification authorities (ICP-Brasil), never from cert-manager; remove this component",
            )
            .values_template(crate::values_template!("cert_manager"))
            .objects_after_release(crate::objects_template!("cert_manager", "issuer.yaml.j2"))
    }
}
