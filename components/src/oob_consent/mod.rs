//! `oob-consent`: consents of data sharing and payments. Publishes events through Dapr and
//! introspects tokens at the authorization server. `application.encryption.key` (256-bit hex)
//! and `application.salt` (64-bit hex) must never change once in production.

use catalog::{ChartRef, Component, Definition, Kind};

use crate::inputs::ServiceInputs;
use crate::oob_authorization_server::OobAuthorizationServer;
use crate::postgresql::Postgresql;
use crate::pubsub::Pubsub;

pub struct OobConsent;

impl Component for OobConsent {
    const NAME: &'static str = "oob-consent";
    type Inputs = ServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "Consents of data sharing and payments.")
            .chart(ChartRef::vendor("oob-consent", "1.8.0", "charts/opus-service"))
            .depends_on::<Postgresql>()
            .depends_on::<Pubsub>()
            .depends_on::<OobAuthorizationServer>()
            .database("api_consent", "oob_consent_user")
            .secret("db.password")
            .secret("application.encryption.key")
            .secret("application.salt")
            .app("oob-consent")
            .values_template(crate::values_template!("oob_consent"))
    }
}
