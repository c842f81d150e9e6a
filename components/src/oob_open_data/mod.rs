//! `oob-open-data`: open data of products and channels (phase 1).

use catalog::{ChartRef, Component, Definition, Kind};

use crate::dapr::Dapr;
use crate::inputs::ServiceInputs;
use crate::oob_authorization_server::OobAuthorizationServer;
use crate::pubsub::Pubsub;

pub struct OobOpenData;

impl Component for OobOpenData {
    const NAME: &'static str = "oob-open-data";
    type Inputs = ServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "Open data of products and channels (phase 1).")
            .chart(ChartRef::vendor("oob-open-data", "1.8.0", "charts/opus-service"))
            .depends_on::<Dapr>()
            .depends_on::<Pubsub>()
            .depends_on::<OobAuthorizationServer>()
            .app("oob-open-data")
            .values_template(crate::values_template!("oob_open_data"))
    }
}
