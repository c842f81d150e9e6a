//! The core catalog of the Opus Open Finance Platform: one module per component template, each
//! with its typed inputs, its definition (kind, chart, dependencies, database) and its values
//! template (a minijinja file beside the module).

pub mod api_gateway_routes;
pub mod cert_manager;
pub mod dapr;
pub mod inputs;
pub mod log_collector;
pub mod oob_authorization_server;
pub mod oob_consent;
pub mod oob_financial_data;
pub mod oob_open_data;
pub mod oob_payment;
pub mod oob_status;
pub mod oof_event_service;
pub mod oof_pcm_service;
pub mod postgresql;
pub mod pubsub;
pub mod secret_keys;

use platform::catalog::Catalog;

/// Every component template of this core.
pub fn catalog() -> Catalog {
    Catalog::new()
        .with::<postgresql::Postgresql>()
        .with::<secret_keys::SecretKeys>()
        .with::<cert_manager::CertManager>()
        .with::<dapr::Dapr>()
        .with::<pubsub::Pubsub>()
        .with::<log_collector::LogCollector>()
        .with::<oob_authorization_server::OobAuthorizationServer>()
        .with::<oob_consent::OobConsent>()
        .with::<oob_payment::OobPayment>()
        .with::<oob_financial_data::OobFinancialData>()
        .with::<oob_open_data::OobOpenData>()
        .with::<oob_status::OobStatus>()
        .with::<oof_event_service::OofEventService>()
        .with::<oof_pcm_service::OofPcmService>()
        .with::<api_gateway_routes::ApiGatewayRoutes>()
}

/// Declares a values template that lives beside the module, as `<module>/values.yaml.j2`.
#[macro_export]
macro_rules! values_template {
    ($module:literal) => {
        platform::catalog::ValuesTemplate {
            path: concat!("components/src/", $module, "/values.yaml.j2"),
            // include_str! resolves against the file that invokes the macro: the module itself.
            text: include_str!("values.yaml.j2"),
        }
    };
}
