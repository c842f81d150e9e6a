//! Input types shared by several templates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inputs of a platform service (the `oob-*` and `oof-*` charts).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceInputs {
    /// Number of pods.
    #[schemars(range(min = 1, max = 20))]
    pub replicas: u32,
    /// CPU and memory requests and limits.
    pub resources: ResourceProfile,
    /// Send read queries to the database's read replica (`db.read-only`).
    pub read_replica: bool,
    /// Seconds to wait for the release to become ready.
    #[schemars(range(min = 30, max = 3600))]
    pub timeout_seconds: u32,
}

impl Default for ServiceInputs {
    fn default() -> ServiceInputs {
        ServiceInputs {
            replicas: 1,
            resources: ResourceProfile::Small,
            read_replica: false,
            timeout_seconds: 600,
        }
    }
}

/// Resource requests and limits by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceProfile {
    /// 250m CPU, 512Mi memory.
    Small,
    /// 500m CPU, 1Gi memory.
    Medium,
    /// 1 CPU, 2Gi memory.
    Large,
}
