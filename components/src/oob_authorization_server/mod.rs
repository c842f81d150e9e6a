//! `oob-authorization-server`: the FAPI authorization server. Its signing (`sig.key`, PS256)
//! and encryption (`enc.key`, RSA-OAEP) keys live in Secret `oob-as-keys`, its static clients
//! in Secret `oob-as-clients`; a Dapr cron binding syncs the directory's JWKS.

use catalog::{ChartRef, Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dapr::Dapr;
use crate::inputs::ResourceProfile;
use crate::postgresql::Postgresql;
use crate::pubsub::Pubsub;

pub struct OobAuthorizationServer;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationServerInputs {
    #[schemars(range(min = 1, max = 20))]
    pub replicas: u32,
    pub resources: ResourceProfile,
    /// Lifetime in seconds of the tokens issued to third parties (the regulation allows 300 to
    /// 900 seconds).
    #[schemars(range(min = 300, max = 900))]
    pub regulatory_ttl: u32,
    /// Cache token introspection in a Dapr state store.
    pub introspection_cache: bool,
    /// Schedule of the cron binding that syncs the directory's JWKS.
    pub jwks_sync_schedule: String,
    /// Send read queries to the database's read replica.
    pub read_replica: bool,
}

impl Default for AuthorizationServerInputs {
    fn default() -> AuthorizationServerInputs {
        AuthorizationServerInputs {
            replicas: 1,
            resources: ResourceProfile::Medium,
            regulatory_ttl: 900,
            introspection_cache: false,
            jwks_sync_schedule: "@every 1h".to_owned(),
            read_replica: false,
        }
    }
}

impl Component for OobAuthorizationServer {
    const NAME: &'static str = "oob-authorization-server";
    type Inputs = AuthorizationServerInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(Kind::HelmRelease, "The FAPI authorization server of Open Finance Brasil.")
            .chart(ChartRef::vendor("oob-authorization-server", "1.8.0", "charts/opus-service"))
            .depends_on::<Postgresql>()
            .depends_on::<Dapr>()
            .depends_on::<Pubsub>()
            .database("authorization_server", "authorization_server_user")
            .secret("db.password")
            .app("oob-authorization-server")
            .values_template(crate::values_template!("oob_authorization_server"))
    }
}
