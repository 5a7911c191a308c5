//! A BACnet/IP device on loopback: BAC0 (with bacpypes), the library the
//! Python agent reads devices with, serving `tests/support/bacnet_sim.py`'s
//! objects. BAC0 and its dependencies come from the Python interpreter, or
//! else from PyPI into Cargo's scratch directory for tests. BAC0 takes no
//! port 0 (it binds 47808 instead), so each simulator is given a port the
//! OS has just handed out on its own loopback address.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::python::python;

const PACKAGES: [&str; 3] = ["BAC0==22.9.21", "bacpypes==0.19.0", "pytz"];

/// A running simulator, killed when dropped.
pub struct BacnetSim {
    child: Child,
    pub address: SocketAddr,
}

impl Drop for BacnetSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulator's `PYTHONPATH`, or `None` (having said why) where BAC0
/// cannot be had; under `CI=true` that fails the test instead.
fn bac0_path() -> Option<String> {
    match super::python::try_packages_path("bac0", &PACKAGES, "import BAC0, bacpypes, pytz") {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: the BAC0 simulator cannot be had: {why}");
            None
        }
        Err(why) => panic!("CI=true, yet the BAC0 simulator cannot be had: {why}"),
    }
}

/// A UDP port free on `ip` a moment ago.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl BacnetSim {
    /// Device 1234 on `ip`, on a port free there, ready to answer; `None`
    /// when BAC0 cannot be had (see [`bac0_path`]).
    pub fn start(ip: Ipv4Addr) -> Option<BacnetSim> {
        let pythonpath = bac0_path()?;
        // A port handed out and released can be taken by another test
        // before BAC0 binds it: try again with another.
        for _ in 0..3 {
            let port = free_port(ip);
            let mut child = Command::new(python())
                .arg("tests/support/bacnet_sim.py")
                .arg(ip.to_string())
                .arg(port.to_string())
                .env("PYTHONPATH", &pythonpath)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 starts");
            let stdout = child.stdout.take().unwrap();
            let (ready, wait) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.trim() == "ready" {
                        let _ = ready.send(());
                    }
                }
            });
            let mut sim = BacnetSim {
                child,
                address: SocketAddr::from((ip, port)),
            };
            match wait.recv_timeout(Duration::from_secs(60)) {
                Ok(()) => return Some(sim),
                Err(_) => {
                    let status = sim.child.try_wait().unwrap();
                    eprintln!("the BAC0 simulator on {ip}:{port} did not start ({status:?}); trying another port");
                }
            }
        }
        panic!("the BAC0 simulator did not start on {ip}");
    }
}
