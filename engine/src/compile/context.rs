//! The context values templates are rendered with: `client`, `env`, `namespace`, `component`,
//! `inputs`, `versions`, `profiles` and `secrets` (placeholders, never clear text).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::{ComponentInstance, Environment, Target};
use crate::template::context_value;

/// CPU and memory by resource profile, as the service charts expect them.
pub fn profiles() -> Value {
    json!({
        "small": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "medium": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "large": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    })
}

/// The environment-wide part of the context.
fn env_context(env: &Environment) -> Value {
    let mut value = json!({
        "name": env.name,
        "protected": env.env.protected,
        "core": env.env.core,
        "target": match &env.env.target { Target::Directory { .. } => "directory", Target::Kube { .. } => "kube", Target::Flux { .. } => "flux" },
        "database": {
            "host": env.env.database.host,
            "port": env.env.database.port,
            "admin_user": env.env.database.admin_user,
            "sslmode": env.env.database.sslmode,
        },
        "directory": {
            "organisation_id": env.env.directory.organisation_id,
            "environment": env.env.directory.environment,
            "host": env.env.directory.environment.host(),
        },
        "messaging": env.env.messaging,
        "labels": env.env.labels,
    });
    // Facts about other components that services need; absent (and so an error in strict
    // mode) when the environment does not deploy the component.
    let object = value.as_object_mut().expect("an object");
    if let Some(auth) = env.components().find(|c| c.template == "oob-authorization-server" && c.file.enabled)
    {
        object.insert(
            "auth_server_url".into(),
            json!(format!("http://{}.{}.svc.cluster.local:8080", auth.name, auth.namespace)),
        );
    }
    if let Some(pubsub) = env.components().find(|c| c.template == "pubsub" && c.file.enabled) {
        let name = pubsub.inputs.get("component_name").cloned().unwrap_or(json!(pubsub.name));
        object.insert("pubsub_name".into(), name);
    }
    value
}

/// The parts of the context every component shares, made template values once per compile:
/// `client`, `env`, `versions`, `profiles`, and the `namespace` of each namespace.
pub struct SharedContext {
    client: minijinja::Value,
    env: minijinja::Value,
    versions: minijinja::Value,
    profiles: minijinja::Value,
    namespaces: BTreeMap<String, minijinja::Value>,
}

impl SharedContext {
    pub fn new(env: &Environment) -> SharedContext {
        let client = json!({
            "name": env.client.client.name,
            "display_name": env.client.client.display_name,
            "brand_id": env.client.client.brand_id,
        });
        let namespaces = env
            .namespaces
            .iter()
            .map(|ns| {
                let value = json!({
                    "name": ns.name,
                    "labels": ns.file.labels,
                    "annotations": ns.file.annotations,
                });
                (ns.name.clone(), context_value(&value))
            })
            .collect();
        SharedContext {
            client: context_value(&client),
            env: context_value(&env_context(env)),
            versions: context_value(&json!(env.env.versions)),
            profiles: context_value(&profiles()),
            namespaces,
        }
    }

    /// The whole context of one component; `secrets` holds placeholders, never clear text.
    pub fn component(
        &self,
        component: &ComponentInstance,
        database: Option<(&str, &str)>,
        secrets: &Value,
    ) -> minijinja::Value {
        let namespace = self.namespaces.get(&component.namespace).cloned().unwrap_or_else(|| {
            context_value(&json!({"name": component.namespace, "labels": null, "annotations": null}))
        });
        let own = json!({
            "name": component.name,
            "id": component.id(),
            "template": component.template,
            "database": database.map(|(name, user)| json!({"name": name, "user": user})),
            "labels": component.labels,
        });
        minijinja::Value::from_pairs([
            ("client", self.client.clone()),
            ("env", self.env.clone()),
            ("namespace", namespace),
            ("component", context_value(&own)),
            ("inputs", context_value(&component.inputs)),
            ("versions", self.versions.clone()),
            ("profiles", self.profiles.clone()),
            ("secrets", context_value(secrets)),
        ])
    }
}
