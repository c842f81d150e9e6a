//! Plan rendering
