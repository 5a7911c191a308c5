//! Shared helpers for the integration tests, one module per kind of peer
//! the agent talks to. Every server binds 127.0.0.1 port 0 and accepts
//! connections as soon as it is returned, so no test waits for start-up.

#![allow(dead_code)] // each test binary uses a different part

pub mod http_server;
pub mod modbus;
pub mod modbus_sim;
pub mod receiver;
