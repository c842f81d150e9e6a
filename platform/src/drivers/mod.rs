//! Drivers: the only code that performs IO against clusters, databases and external programs.
//! `helm` runs the real `helm` binary through duct (values on stdin), `kube` talks to the API
//! server with kube-rs (server-side apply under the `opus-deploy` field manager), `postgres`
//! provisions roles and databases through sqlx (passwords as SCRAM verifiers computed here).
//! `directory` and `flux` write trees: a bundle of our own format, and one Flux reconciles.

pub mod cluster;
pub mod directory;
pub mod flux;
pub mod folder;
pub mod helm;
pub mod kube;
pub mod postgres;
