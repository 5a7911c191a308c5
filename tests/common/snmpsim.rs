//! snmpsim, the standard SNMP simulator, serving `.snmprec` files on
//! loopback: the file name is the v2c community; `self.snmprec` answers
//! SNMPv3 (user `pattoo-v3`, SHA/AES, `authpass123`/`privpass123`).
//!
//! Uses the snmpsim the Python interpreter already has; where it has none,
//! the pinned versions are installed from PyPI into Cargo's scratch
//! directory for tests, so `cargo test` works on a fresh machine.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::python::python;

const PACKAGES: [&str; 3] = ["snmpsim==1.2.2", "pysmi==1.6.3", "cryptography"];

pub const V3_USER: &str = "pattoo-v3";
pub const V3_AUTH: &str = "authpass123";
pub const V3_PRIV: &str = "privpass123";

/// A `PYTHONPATH` under which snmpsim imports.
fn snmpsim_path() -> String {
    super::python::packages_path(
        "snmpsim",
        &PACKAGES,
        "import snmpsim.commands.responder, pysmi, cryptography",
    )
}

/// A running snmpsim, killed when dropped.
pub struct SnmpSim {
    child: Child,
    /// The port the OS gave each endpoint address.
    pub ports: HashMap<Ipv4Addr, u16>,
    _dir: tempfile::TempDir,
}

impl Drop for SnmpSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SnmpSim {
    /// Serves the `.snmprec` files of `data` on port 0 of each of
    /// `addresses`, and waits until every socket is bound.
    pub fn start(data: &Path, addresses: &[Ipv4Addr]) -> SnmpSim {
        SnmpSim::start_within(data, addresses, Duration::from_secs(60))
    }

    /// [`SnmpSim::start`], waiting at most `patience` for the sockets (a
    /// farm of hundreds of devices takes a while to load).
    pub fn start_within(data: &Path, addresses: &[Ipv4Addr], patience: Duration) -> SnmpSim {
        SnmpSim::launch(data, addresses, patience, None)
    }

    /// [`SnmpSim::start`], answering a GETBULK with up to `max` varbinds
    /// (snmpsim's default is 64, a device with a small message size).
    pub fn start_with_max_var_binds(data: &Path, addresses: &[Ipv4Addr], max: usize) -> SnmpSim {
        SnmpSim::launch(data, addresses, Duration::from_secs(60), Some(max))
    }

    /// [`SnmpSim::start_within`], with a GETBULK response's varbinds
    /// bounded by `max_var_binds` where given (else snmpsim's 64).
    pub fn launch(
        data: &Path,
        addresses: &[Ipv4Addr],
        patience: Duration,
        max_var_binds: Option<usize>,
    ) -> SnmpSim {
        let pythonpath = snmpsim_path();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        for entry in std::fs::read_dir(data).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "snmprec") {
                std::fs::copy(&path, data_dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let mut command = Command::new(python());
        command
            .arg("tests/support/snmpsim_responder.py")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!(
                "--cache-dir={}",
                dir.path().join("cache").display()
            ))
            .arg(format!("--v3-user={V3_USER}"))
            .arg(format!("--v3-auth-key={V3_AUTH}"))
            .arg("--v3-auth-proto=SHA")
            .arg(format!("--v3-priv-key={V3_PRIV}"))
            .arg("--v3-priv-proto=AES")
            .arg(format!(
                "--logging-method=file:{}",
                dir.path().join("log").display()
            ));
        for address in addresses {
            command.arg(format!("--agent-udpv4-endpoint={address}:0"));
        }
        if let Some(max) = max_var_binds {
            command.arg(format!("--max-var-binds={max}"));
        }
        let child = command
            .env("PYTHONPATH", pythonpath)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts");
        let mut sim = SnmpSim {
            child,
            ports: HashMap::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + patience;
        loop {
            sim.ports = bound_ports(sim.child.id());
            if addresses.iter().all(|a| sim.ports.contains_key(a)) {
                return sim;
            }
            if let Some(status) = sim.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(sim._dir.path().join("log")).unwrap_or_default();
                panic!("snmpsim exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "snmpsim did not listen within {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self, address: Ipv4Addr) -> u16 {
        self.ports[&address]
    }
}

/// The IPv4 UDP sockets process `pid` has bound: address -> port, found
/// through the socket inodes of its file descriptors in /proc/net/udp.
pub fn bound_ports(pid: u32) -> HashMap<Ipv4Addr, u16> {
    let mut inodes = Vec::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.display().to_string();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                {
                    inodes.push(inode.to_owned());
                }
            }
        }
    }
    let mut ports = HashMap::new();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || !inodes.iter().any(|i| i == fields[9]) {
            continue;
        }
        let Some((ip, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16))
        else {
            continue;
        };
        // /proc prints the address's network-order bytes as a native
        // integer.
        let ip = Ipv4Addr::from(ip.to_ne_bytes());
        if port != 0 {
            ports.insert(ip, port);
        }
    }
    ports
}
