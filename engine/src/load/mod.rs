//! Loading: reads the client hierarchy (client -> environment -> namespace -> component) from
//! TOML files, keeps every value's span, checks each file against the schema of its Rust type
//! and deep-merges the levels. Loading never touches the network.

pub mod environment;
pub mod schema_check;
pub mod secret_inputs;
pub mod tree;
