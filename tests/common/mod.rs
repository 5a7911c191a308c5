//! Shared helpers for the integration tests, one module per kind of peer
//! the agent talks to. Every server binds 127.0.0.1 port 0 and accepts
//! connections as soon as it is returned, so no test waits for start-up.

#![allow(dead_code)] // each test binary uses a different part

pub mod env;
pub mod http_server;
pub mod modbus;
pub mod modbus_sim;
pub mod netsnmp;
pub mod pymodbus;
pub mod python;
pub mod receiver;
pub mod snmpsim;

use std::path::Path;

/// Writes `config_dir/pattoo.yaml` with the log, cache and daemon
/// directories under `state_root` and the server on 127.0.0.1:`port`.
pub fn write_pattoo_yaml(config_dir: &Path, state_root: &Path, port: u16) {
    let dir = |name: &str| state_root.join(name).display().to_string();
    std::fs::write(
        config_dir.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_directory: {}\n  cache_directory: {}\n  daemon_directory: {}\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: {port}\n",
            dir("log"),
            dir("cache"),
            dir("daemon")
        ),
    )
    .unwrap();
}
