//! `dapr`: the Distributed Application Runtime the services use for pub/sub, state, actors and
//! cron bindings.

use catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct Dapr;

/// The CustomResourceDefinitions the dapr chart installs.
pub const DAPR_CRDS: [&str; 5] = [
    "components.dapr.io",
    "configurations.dapr.io",
    "httpendpoints.dapr.io",
    "resiliencies.dapr.io",
    "subscriptions.dapr.io",
];

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DaprInputs {
    /// Run the control plane with three replicas of each service.
    pub high_availability: bool,
    /// Log level of the control plane.
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl Default for DaprInputs {
    fn default() -> DaprInputs {
        DaprInputs { high_availability: false, log_level: LogLevel::Info }
    }
}

impl Component for Dapr {
    const NAME: &'static str = "dapr";
    type Inputs = DaprInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "The Dapr control plane.")
            .chart(
                ChartRef::repository("https://dapr.github.io/helm-charts", "dapr", "1.14.4")
                    .with_stand_in("charts/stand-in-dapr"),
            )
            .provides_crds(&DAPR_CRDS)
            .values_template(crate::values_template!("dapr"))
    }
}
