//! `oob-financial-data`: data sharing of accounts, credit cards, loans and investments (phase 2).

use catalog::{ChartRef, Component, Definition, Kind};

use crate::inputs::ServiceInputs;
use crate::oob_authorization_server::OobAuthorizationServer;
use crate::oob_consent::OobConsent;
use crate::pubsub::Pubsub;

pub struct OobFinancialData;

impl Component for OobFinancialData {
    const NAME: &'static str = "oob-financial-data";
    type Inputs = ServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::HelmRelease,
            "Data sharing of accounts, credit cards, loans and investments (phase 2).",
        )
        .chart(ChartRef::vendor("oob-financial-data", "1.8.0", "charts/opus-service"))
        .depends_on::<OobConsent>()
        .depends_on::<OobAuthorizationServer>()
        .depends_on::<Pubsub>()
        .app("oob-financial-data")
        .values_template(crate::values_template!("oob_financial_data"))
    }
}
