//! helm driver (in progress)
