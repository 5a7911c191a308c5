//! pattoo-agentd: a pattoo agent that polls Modbus TCP devices, HTTP
//! endpoints and local commands, and delivers what it reads to a pattoo
//! server without losing it.
//!
//! Data flows one way: configuration → pollers → model (normalise) →
//! delivery (post or cache). The scheduler drives the pollers; the daemon
//! owns signals and shutdown.

pub mod model;
