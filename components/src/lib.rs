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

use catalog::Catalog;

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
        catalog::ValuesTemplate {
            path: concat!("components/src/", $module, "/values.yaml.j2"),
            // include_str! resolves against the file that invokes the macro: the module itself.
            text: include_str!("values.yaml.j2"),
        }
    };
}

/// Declares a template of objects that lives beside the module, as `<module>/<file>`.
#[macro_export]
macro_rules! objects_template {
    ($module:literal, $file:literal) => {
        catalog::ValuesTemplate {
            path: concat!("components/src/", $module, "/", $file),
            text: include_str!($file),
        }
    };
}

#[cfg(test)]
mod tests {
    use catalog::Kind;
    use engine::model::names::{is_dns_label, is_pg_identifier};

    use super::catalog;

    #[test]
    fn every_template_is_well_formed() {
        let catalog = catalog();
        let names: Vec<&str> = catalog.names().collect();
        assert!(names.len() >= 15, "the catalog ships the platform's components: {names:?}");
        for template in catalog.templates() {
            let definition = &template.definition;
            let name = definition.name();
            assert!(is_dns_label(name), "{name} is not a DNS-1123 label");
            assert_eq!(
                definition.kind() == Kind::HelmRelease,
                definition.chart_ref().is_some(),
                "{name}: a Helm release needs a chart, nothing else has one"
            );
            if matches!(definition.kind(), Kind::HelmRelease | Kind::Manifests) {
                assert!(definition.template().is_some(), "{name} has no values template");
            }
            for dependency in definition.dependencies() {
                assert!(
                    catalog.get(dependency.name).is_some(),
                    "{name} depends on unknown {}",
                    dependency.name
                );
                assert_ne!(dependency.name, name, "{name} depends on itself");
            }
            if let Some(database) = definition.database_spec() {
                assert!(is_pg_identifier(database.name), "{name}: database {}", database.name);
                assert!(is_pg_identifier(database.user), "{name}: user {}", database.user);
                assert!(
                    definition.secret_keys().contains(&"db.password"),
                    "{name} owns a database but no db.password"
                );
            }
            let defaults = template.normalize_inputs(serde_json::json!({})).expect("defaults deserialize");
            assert!(defaults.is_object(), "{name}: inputs are a table");
        }
    }

    #[test]
    fn values_templates_live_beside_their_module() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        for template in catalog().templates() {
            if let Some(values) = template.definition.template() {
                let on_disk =
                    std::fs::read_to_string(root.join(values.path)).expect("the template file exists");
                assert_eq!(on_disk, values.text, "{} is the file it names", values.path);
            }
        }
    }
}
