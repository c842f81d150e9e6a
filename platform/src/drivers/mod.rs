//! Drivers: the only code that performs IO against clusters, databases and external programs.

pub mod helm;
pub mod kube;
pub mod postgres;
