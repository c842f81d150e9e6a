//! `postgresql`: the PostgreSQL server the services use. Checks the server (version 14 or
//! newer, reachable with the admin role) and anchors the provisioning of every service's role
//! and database, which the components that own a database declare themselves.

use catalog::{Component, Definition, Kind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct Postgresql;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresqlInputs {
    /// The oldest server major version accepted by the preflight check.
    #[schemars(range(min = 14, max = 18))]
    pub min_server_version: u32,
    /// Maximum connections of each service role (`CONNECTION LIMIT`); -1 for no limit.
    #[schemars(range(min = -1, max = 10000))]
    pub connection_limit: i32,
}

impl Default for PostgresqlInputs {
    fn default() -> PostgresqlInputs {
        PostgresqlInputs { min_server_version: 14, connection_limit: 100 }
    }
}

impl Component for Postgresql {
    const NAME: &'static str = "postgresql";
    type Inputs = PostgresqlInputs;

    fn definition() -> Definition {
        Definition::of::<Self>(
            Kind::DatabaseOnly,
            "PostgreSQL 14+: checks the server and provisions one role and one database per service.",
        )
    }
}
