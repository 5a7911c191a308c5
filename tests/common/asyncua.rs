//! asyncua's OPC UA server (`tests/support/opcua_server.py`) on loopback,
//! and endpoints that misbehave: a listener that accepts and says
//! nothing, one that answers half a Hello acknowledgement.
//!
//! Uses the asyncua the Python interpreter already has; where it has none,
//! the pinned version is installed from PyPI into Cargo's scratch
//! directory for tests. Where it cannot be had the caller is told why, and
//! skips, except under CI (`CI=true`), where that fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::python::python;

/// The version the Python agent's recorded run used for its client.
const PACKAGES: [&str; 1] = ["asyncua==1.1.8"];

/// A `PYTHONPATH` under which asyncua imports, or why there is none.
pub fn asyncua_path() -> Result<String, String> {
    super::python::try_packages_path("asyncua", &PACKAGES, "import asyncua")
}

/// A running asyncua server, killed when dropped.
pub struct OpcuaServer {
    child: Child,
    pub port: u16,
    /// The index of namespace urn:pattoo:test.
    pub namespace: u16,
}

impl Drop for OpcuaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpcuaServer {
    pub fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}", self.port)
    }
}

/// Starts the test server with `args` (see the script), or says why it
/// cannot: then the test prints it and returns, or fails under CI.
pub fn start(args: &[&str]) -> Option<OpcuaServer> {
    let path = match asyncua_path() {
        Ok(path) => path,
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "asyncua is needed under CI: {why}");
            eprintln!("SKIPPED: asyncua cannot be had: {why}");
            return None;
        }
    };
    let mut child = Command::new(python())
        .arg("tests/support/opcua_server.py")
        .args(args)
        .env("PYTHONPATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().expect("piped");
    // It prints "ready PORT NAMESPACE" once it listens; a thread reads it
    // so a server that hangs cannot hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("the asyncua server was not ready within 60 s");
        }
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["ready", port, namespace] => Some(OpcuaServer {
            child,
            port: port.parse().unwrap(),
            namespace: namespace.parse().unwrap(),
        }),
        _ => {
            let _ = child.kill();
            panic!("the asyncua server did not start (said {line:?})");
        }
    }
}

/// How a misbehaving endpoint treats each connection.
#[derive(Debug, Clone, Copy)]
pub enum Stall {
    /// Accepts, reads, and never says a word.
    Silent,
    /// Answers the Hello with the first 12 bytes of an Acknowledge whose
    /// header promises 28, then nothing.
    HalfAck,
}

/// A loopback listener that misbehaves on every connection; its threads
/// end with the test process. Returns its port.
pub fn stalling_endpoint(stall: Stall) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                if let Stall::HalfAck = stall {
                    let _ = stream.read(&mut buf);
                    // "ACKF", size 28, protocol version 0: and no more.
                    let mut ack = b"ACKF".to_vec();
                    ack.extend_from_slice(&28u32.to_le_bytes());
                    ack.extend_from_slice(&0u32.to_le_bytes());
                    let _ = stream.write_all(&ack);
                }
                // Hold the connection open, reading whatever comes.
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// A loopback port nothing listens on (bound, then closed).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
