//! pymodbus servers (`tests/support/pymodbus_server.py`) and socat pty
//! pairs for the interoperability tests, and the register map they serve.
//!
//! Uses the pymodbus (and pyserial) the Python interpreter already has;
//! where it has none, installs the pinned versions from PyPI into Cargo's
//! scratch directory for tests, so `cargo test` works on a fresh machine.
//! Serial tests need `socat` (`.ci/run` installs it).

// 3.14159 is the float device manuals use as their example, not π.
#![allow(clippy::approx_constant)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pattoo_agentd::model::Value;

use super::modbus::layout;
use super::python::python;

const PYMODBUS: [&str; 2] = ["pymodbus==3.8.6", "pyserial==3.5"];

/// A `PYTHONPATH` under which pymodbus and pyserial import: empty when the
/// interpreter has them already, else a directory the pinned versions are
/// installed into.
pub fn pymodbus_path() -> String {
    super::python::packages_path("pymodbus", &PYMODBUS, "import pymodbus, serial")
}

/// A child process killed when dropped.
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pymodbus server process, killed when dropped.
pub struct PyModbus {
    _child: Killed,
    /// `127.0.0.1:PORT`, or the serial device it serves.
    pub address: String,
}

/// How the pymodbus server frames its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framer {
    /// Modbus TCP.
    Socket,
    /// RTU frames with CRC (on TCP or a serial device).
    Rtu,
}

/// Starts pymodbus on a free loopback port with `framer`.
pub fn start_tcp(data: &serde_json::Value, framer: Framer) -> PyModbus {
    // The OS picks a free loopback port; pymodbus binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    start(&port.to_string(), data, framer, format!("127.0.0.1:{port}"))
}

/// Starts pymodbus on a serial device (one end of a pty pair).
pub fn start_serial(device: &Path, data: &serde_json::Value) -> PyModbus {
    let device = device.display().to_string();
    start(&device, data, Framer::Rtu, device.clone())
}

fn start(where_: &str, data: &serde_json::Value, framer: Framer, address: String) -> PyModbus {
    let pythonpath = pymodbus_path();
    let mut child = Command::new(python())
        .arg("tests/support/pymodbus_server.py")
        .arg(where_)
        .arg(data.to_string())
        .args(match framer {
            Framer::Socket => ["--framer", "socket"],
            Framer::Rtu => ["--framer", "rtu"],
        })
        .env("PYTHONPATH", pythonpath)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().expect("piped");
    let child = Killed(child);
    // It prints "ready" once it listens; a thread reads it so a server that
    // hangs cannot hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.trim() == "ready" => PyModbus {
            _child: child,
            address,
        },
        Ok(line) => panic!(
            "the pymodbus server on {where_} did not start (said {line:?}); see its stderr above"
        ),
        Err(_) => panic!("the pymodbus server on {where_} was not ready within 30 s"),
    }
}

/// A socat pty pair: what one end sends, the other receives, as on a
/// serial line. Killed when dropped.
pub struct PtyPair {
    _socat: Killed,
    _dir: tempfile::TempDir,
    /// The end the agent opens.
    pub agent: PathBuf,
    /// The end the device (pymodbus) opens.
    pub device: PathBuf,
}

pub fn pty_pair() -> PtyPair {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    let device = dir.path().join("device");
    let socat = Command::new("socat")
        .arg(format!("PTY,raw,echo=0,link={}", agent.display()))
        .arg(format!("PTY,raw,echo=0,link={}", device.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("socat does not run ({e}): apt-get install socat (.ci/run does)")
        });
    let mut socat = Killed(socat);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(agent.exists() && device.exists()) {
        if let Some(status) = socat.0.try_wait().unwrap() {
            panic!("socat exited with {status} before making the pty pair");
        }
        assert!(
            Instant::now() < deadline,
            "socat made no pty pair within 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    PtyPair {
        _socat: socat,
        _dir: dir,
        agent,
        device,
    }
}

/// The registers every interoperability test reads (poller YAML, indented
/// for a poller entry).
pub const REGISTERS: &str = "      max_gap: 20
      registers:
        - {address: 30001, type: float32, order: CDAB, key: pi}
        - {address: 30003, type: int32, key: signed}
        - {address: 30005, key: plain}
        - {address: 30006, type: string, length: 4, key: name}
        - {address: 30020, key: beyond_the_device}
        - {address: 40001, type: int64, order: DCBA, key: big}
        - {address: 40005, type: float64, order: BADC, key: precise}
        - {table: holding, address: 0, key: short_table_name}
        - \"00001\"
        - \"00002\"
        - \"00003\"
        - 10002
";

/// The tables behind [`REGISTERS`]: (input registers, holding registers,
/// coils, discrete inputs).
pub fn register_map() -> (Vec<u16>, Vec<u16>, Vec<bool>, Vec<bool>) {
    let mut input = layout(&3.14159_f32.to_be_bytes(), "CDAB");
    input.extend(layout(&(-123_456_789_i32).to_be_bytes(), "ABCD"));
    input.push(54321);
    input.extend(layout(b"pymodbus", "ABCD"));
    let mut holding = layout(&(-9_000_000_000_i64).to_be_bytes(), "DCBA");
    holding.extend(layout(&1.0e-3_f64.to_be_bytes(), "BADC"));
    (input, holding, vec![true, false, true], vec![false, true])
}

/// [`register_map`] as `pymodbus_server.py` takes it.
pub fn register_map_json() -> serde_json::Value {
    let (input, holding, coils, discretes) = register_map();
    serde_json::json!({"ir": input, "hr": holding, "co": coils, "di": discretes})
}

/// What reading [`REGISTERS`] from [`register_map`] gives, by key.
pub fn expected_values() -> BTreeMap<String, Value> {
    let first_holding = layout(&(-9_000_000_000_i64).to_be_bytes(), "DCBA")[0];
    [
        ("pi", Value::Float(f64::from(3.14159_f32))),
        ("signed", Value::Int(-123_456_789)),
        ("plain", Value::Int(54321)),
        ("name", Value::Text("pymodbus".into())),
        ("big", Value::Int(-9_000_000_000)),
        ("precise", Value::Float(1.0e-3)),
        ("short_table_name", Value::Int(first_holding.into())),
        ("coil_1", Value::Int(1)),
        ("coil_2", Value::Int(0)),
        ("coil_3", Value::Int(1)),
        ("discrete_input_10002", Value::Int(1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
