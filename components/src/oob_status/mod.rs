//! `oob-status`: status and outages of the APIs, as the ecosystem requires.

use catalog::{ChartRef, Component, Definition, Kind};

use crate::dapr::Dapr;
use crate::inputs::ServiceInputs;
use crate::oob_authorization_server::OobAuthorizationServer;
use crate::pubsub::Pubsub;

pub struct OobStatus;

impl Component for OobStatus {
    const NAME: &'static str = "oob-status";
    type Inputs = ServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::HelmRelease,
            "Status and outages of the APIs, as the ecosystem requires.",
        )
        .chart(ChartRef::vendor("oob-status", "1.8.0", "charts/opus-service"))
        .depends_on::<Dapr>()
        .depends_on::<Pubsub>()
        .depends_on::<OobAuthorizationServer>()
        .app("oob-status")
        .values_template(crate::values_template!("oob_status"))
    }
}
