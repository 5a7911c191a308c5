//! Delivery: posting bodies to the pattoo agent API, and the on-disk cache
//! that keeps what could not be posted until it can be.

pub mod config;
