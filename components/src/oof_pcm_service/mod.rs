//! `oof-pcm-service`: metrics reporting to the ecosystem's PCM (mandatory).

use catalog::{ChartRef, Component, Definition, Kind};

use crate::inputs::ServiceInputs;
use crate::oob_authorization_server::OobAuthorizationServer;
use crate::postgresql::Postgresql;
use crate::pubsub::Pubsub;

pub struct OofPcmService;

impl Component for OofPcmService {
    const NAME: &'static str = "oof-pcm-service";
    type Inputs = ServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "Metrics reporting to the ecosystem's PCM (mandatory).")
            .chart(ChartRef::vendor("oof-pcm-service", "1.8.0", "charts/opus-service"))
            .depends_on::<Postgresql>()
            .depends_on::<Pubsub>()
            .depends_on::<OobAuthorizationServer>()
            .database("oof_pcm_service", "oof_pcm_service_user")
            .secret("db.password")
            .app("oof-pcm-service")
            .values_template(crate::values_template!("oof_pcm_service"))
    }
}
