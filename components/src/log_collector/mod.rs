//! `log-collector`: ships the platform's logs to the bank's log store (any collector works;
//! this one is Fluent Bit).

use catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct LogCollector;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogCollectorInputs {
    /// Where the logs go.
    pub output: LogOutput,
    /// Host of the log store (Elasticsearch or Loki); unused for `stdout`.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogOutput {
    Stdout,
    Elasticsearch,
    Loki,
}

impl Default for LogCollectorInputs {
    fn default() -> LogCollectorInputs {
        LogCollectorInputs { output: LogOutput::Stdout, endpoint: None }
    }
}

impl Component for LogCollector {
    const NAME: &'static str = "log-collector";
    type Inputs = LogCollectorInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::HelmRelease,
            "Fluent Bit, shipping container logs to the bank's log store.",
        )
        .chart(
            ChartRef::repository("https://fluent.github.io/helm-charts", "fluent-bit", "0.47.9")
                .with_stand_in("charts/opus-infra"),
        )
        .without_readiness_wait()
        .values_template(crate::values_template!("log_collector"))
    }
}
