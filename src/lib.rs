//! pattoo-agentd: a pattoo agent that polls Modbus TCP devices, HTTP
//! endpoints and local commands, and delivers what it reads to a pattoo
//! server without losing it.
//!
//! Data flows one way: configuration → pollers → model (normalise) →
//! delivery (post or cache). The scheduler drives the pollers; the daemon
//! owns signals and shutdown.

pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod formats;
pub mod identity;
pub mod model;
pub mod pollers;
pub mod scheduler;
pub mod time;
