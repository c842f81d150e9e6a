//! `oob-payment`: payments (Pix initiation): uses consents and the authorization server.

use catalog::{ChartRef, Component, Definition, Kind};

use crate::inputs::ServiceInputs;
use crate::oob_authorization_server::OobAuthorizationServer;
use crate::oob_consent::OobConsent;
use crate::pubsub::Pubsub;

pub struct OobPayment;

impl Component for OobPayment {
    const NAME: &'static str = "oob-payment";
    type Inputs = ServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::HelmRelease,
            "Payments (Pix initiation): uses consents and the authorization server.",
        )
        .chart(ChartRef::vendor("oob-payment", "1.8.0", "charts/opus-service"))
        .depends_on::<OobConsent>()
        .depends_on::<OobAuthorizationServer>()
        .depends_on::<Pubsub>()
        .app("oob-payment")
        .values_template(crate::values_template!("oob_payment"))
    }
}
