//! SOPS-compatible secrets files encrypted with age (in progress)
