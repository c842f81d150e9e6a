//! postgres driver (in progress)
