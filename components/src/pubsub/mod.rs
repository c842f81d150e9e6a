//! `pubsub`: the Dapr pub/sub Component that connects the services to the environment's
//! message broker (Kafka, RabbitMQ or SQS, from `messaging` in env.toml).

use catalog::{Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dapr::Dapr;

pub struct Pubsub;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubInputs {
    /// Name of the Dapr Component; the services publish through it (`daprPubsubId`).
    #[schemars(length(min = 1, max = 63))]
    pub component_name: String,
    /// Kafka consumer group (Kafka only).
    pub consumer_group: String,
}

impl Default for PubsubInputs {
    fn default() -> PubsubInputs {
        PubsubInputs { component_name: "opus-pubsub".to_owned(), consumer_group: "opus".to_owned() }
    }
}

impl Component for Pubsub {
    const NAME: &'static str = "pubsub";
    type Inputs = PubsubInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::Manifests,
            "The Dapr pub/sub Component for the environment's message broker.",
        )
        .depends_on::<Dapr>()
        .needs_crd("components.dapr.io")
        .values_template(crate::values_template!("pubsub"))
    }
}
