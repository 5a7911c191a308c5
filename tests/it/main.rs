//! The integration tests, one binary with a module per area; the peers
//! they talk to (servers, simulators, the Python packages) are in
//! tests/common. tests/power_loss, which needs root and FUSE, is apart.

#[path = "../common/mod.rs"]
mod common;

mod bacnet_compat;
mod bacnet_misbehaving;
mod bacnet_poller;
mod command_poller;
mod completions;
mod config_examples;
mod config_fuzz;
mod config_golden;
mod daemon;
mod delivery_cli;
mod delivery_crash;
mod delivery_disk_full;
#[cfg(feature = "openpgp")]
mod delivery_encrypted;
mod delivery_https;
mod delivery_scan;
mod delivery_server;
mod hostname;
mod http_poller;
mod hub;
mod logging;
mod modbus_compat;
mod modbus_config;
mod modbus_poller;
mod modbus_pymodbus;
mod modbus_rtu;
mod modbus_tcp;
mod opcua_compat;
mod opcua_poller;
mod os_agent;
mod python_keys;
mod receiver_limits;
mod snmp_bulk;
mod snmp_compat;
mod snmp_misbehaving;
mod snmp_poller;
mod spoke;
mod switch;
mod translations;
mod translations_import;
mod wire_vectors;
