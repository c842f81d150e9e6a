//! `api-gateway-routes`: the API gateway (Kong) routes that expose the services by feature:
//! `core`, `open-data`, `financial-data`, `payments`.

use catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::oob_authorization_server::OobAuthorizationServer;
use crate::oob_consent::OobConsent;

pub struct ApiGatewayRoutes;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayInputs {
    /// The features to expose.
    pub features: Vec<Feature>,
    /// The public host name of the APIs.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// The ingress class of the gateway.
    pub ingress_class: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    Core,
    OpenData,
    FinancialData,
    Payments,
}

impl Default for GatewayInputs {
    fn default() -> GatewayInputs {
        GatewayInputs {
            features: vec![Feature::Core],
            host: "api.example.com".to_owned(),
            ingress_class: "kong".to_owned(),
        }
    }
}

impl Component for ApiGatewayRoutes {
    const NAME: &'static str = "api-gateway-routes";
    type Inputs = GatewayInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "Kong routes exposing the services by feature.")
            .chart(ChartRef::local("charts/opus-gateway-routes", "opus-gateway-routes", "0.1.0"))
            .depends_on::<OobAuthorizationServer>()
            .depends_on::<OobConsent>()
            .without_readiness_wait()
            .values_template(crate::values_template!("api_gateway_routes"))
    }
}
