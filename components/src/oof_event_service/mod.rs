//! `oof-event-service`: the event service. Uses Dapr pub/sub, actors with a state store and a
//! cron binding; delivers webhooks over mTLS.

use catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::inputs::ResourceProfile;
use crate::postgresql::Postgresql;
use crate::pubsub::Pubsub;

pub struct OofEventService;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventServiceInputs {
    #[schemars(range(min = 1, max = 20))]
    pub replicas: u32,
    pub resources: ResourceProfile,
    /// Seconds between webhook delivery retries.
    #[schemars(range(min = 5, max = 3600))]
    pub webhook_retry_seconds: u32,
    /// Name of the Secret with the webhook mTLS client certificate.
    pub webhook_tls_secret: String,
}

impl Default for EventServiceInputs {
    fn default() -> EventServiceInputs {
        EventServiceInputs {
            replicas: 1,
            resources: ResourceProfile::Small,
            webhook_retry_seconds: 60,
            webhook_tls_secret: "oof-webhook-tls".to_owned(),
        }
    }
}

impl Component for OofEventService {
    const NAME: &'static str = "oof-event-service";
    type Inputs = EventServiceInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "Events and webhooks of Open Finance Brasil.")
            .chart(ChartRef::vendor("oof-event-service", "1.8.0", "charts/opus-service"))
            .depends_on::<Postgresql>()
            .depends_on::<Pubsub>()
            .database("oof_event_service", "oof_event_service_user")
            .secret("db.password")
            .app("oof-event-service")
            .values_template(crate::values_template!("oof_event_service"))
    }
}
