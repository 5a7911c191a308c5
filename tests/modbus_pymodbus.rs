//! Interoperability: the poller reads a Modbus server that is neither ours
//! nor tokio-modbus (pymodbus, started from `tests/support`) and gets the
//! same values as from the in-process simulator.
//!
//! Uses the pymodbus the Python interpreter already has; where it has none,
//! the test installs the pinned version from PyPI into Cargo's scratch
//! directory for tests, so `cargo test` works on a fresh machine.

// 3.14159 is the float device manuals use as their example, not π.
#![allow(clippy::approx_constant)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::modbus::{layout, modbus_poller};
use common::modbus_sim::{Sim, Unit};
use pattoo_agentd::model::Value;
use pattoo_agentd::pollers::modbus::ModbusPoller;

/// A pymodbus server process, killed when dropped.
struct PyModbus {
    child: Child,
    address: String,
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

const PYMODBUS: &str = "pymodbus==3.8.6";

/// A `PYTHONPATH` under which pymodbus imports: empty when the interpreter
/// has it already, else a directory the pinned version is installed into.
fn pymodbus_path() -> String {
    let imports = |path: &str| {
        Command::new(python())
            .args(["-c", "import pymodbus"])
            .env("PYTHONPATH", path)
            .output()
            .expect("python3 runs")
            .status
            .success()
    };
    if imports("") {
        return String::new();
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pymodbus");
    let dir = dir.display().to_string();
    if !imports(&dir) {
        let install = Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                &dir,
                PYMODBUS,
            ])
            .output()
            .expect("python3 runs pip");
        assert!(
            install.status.success(),
            "installing {PYMODBUS} for the interoperability test failed:\n{}",
            String::from_utf8_lossy(&install.stderr)
        );
    }
    assert!(
        imports(&dir),
        "{PYMODBUS} was installed into {dir} but does not import"
    );
    dir
}

async fn start_pymodbus(data: &serde_json::Value) -> PyModbus {
    let pythonpath = pymodbus_path();
    // The OS picks a free loopback port; pymodbus binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .arg("tests/support/pymodbus_server.py")
        .arg(port.to_string())
        .arg(data.to_string())
        .env("PYTHONPATH", pythonpath)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let mut server = PyModbus {
        child,
        address: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(&server.address)
            .await
            .is_ok()
        {
            return server;
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("the pymodbus server exited with {status} before accepting connections");
        }
        assert!(
            Instant::now() < deadline,
            "the pymodbus server did not accept connections within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_all(targets: &[pattoo_agentd::model::TargetData]) -> BTreeMap<String, Value> {
    targets
        .iter()
        .flat_map(|t| t.datapoints.iter())
        .map(|d| (d.key.clone(), d.value.clone()))
        .collect()
}

const REGISTERS: &str = "      max_gap: 20
      registers:
        - {address: 30001, type: float32, order: CDAB, key: pi}
        - {address: 30003, type: int32, key: signed}
        - {address: 30005, key: plain}
        - {address: 30006, type: string, length: 4, key: name}
        - {address: 30020, key: beyond_the_device}
        - {address: 40001, type: int64, order: DCBA, key: big}
        - {address: 40005, type: float64, order: BADC, key: precise}
        - \"00001\"
        - \"00002\"
        - \"00003\"
        - 10002
";

#[tokio::test]
async fn pymodbus_serves_the_same_values_as_the_simulator() {
    let mut input = layout(&3.14159_f32.to_be_bytes(), "CDAB");
    input.extend(layout(&(-123_456_789_i32).to_be_bytes(), "ABCD"));
    input.push(54321);
    input.extend(layout(b"pymodbus", "ABCD"));
    let mut holding = layout(&(-9_000_000_000_i64).to_be_bytes(), "DCBA");
    holding.extend(layout(&1.0e-3_f64.to_be_bytes(), "BADC"));
    let coils = [true, false, true];
    let discretes = [false, true];

    let expected: BTreeMap<String, Value> = [
        ("pi", Value::Float(f64::from(3.14159_f32))),
        ("signed", Value::Int(-123_456_789)),
        ("plain", Value::Int(54321)),
        ("name", Value::Text("pymodbus".into())),
        ("big", Value::Int(-9_000_000_000)),
        ("precise", Value::Float(1.0e-3)),
        ("coil_1", Value::Int(1)),
        ("coil_2", Value::Int(0)),
        ("coil_3", Value::Int(1)),
        ("discrete_input_10002", Value::Int(1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let pymodbus = start_pymodbus(&serde_json::json!({
        "ir": input, "hr": holding, "co": coils, "di": discretes,
    }))
    .await;
    let mut unit = Unit::default().input(0, &input).holding(0, &holding);
    for (i, on) in coils.iter().enumerate() {
        unit = unit.coil(i as u16, *on);
    }
    for (i, on) in discretes.iter().enumerate() {
        unit = unit.discrete(i as u16, *on);
    }
    let sim = Sim::start([(1, unit)]).await;
    // Like pymodbus, the simulator refuses addresses past the data.
    sim.refuse(4, 19);

    let mut results = Vec::new();
    for address in [&pymodbus.address, &sim.address()] {
        let (settings, modbus) = modbus_poller(&format!(
            "    - name: interop\n      type: modbus_tcp\n      targets: [\"{address}\"]\n{REGISTERS}"
        ));
        let mut poller = ModbusPoller::new(&settings.name, &modbus).unwrap();
        // Twice: the second poll runs on the split the first one learned.
        let first = read_all(&poller.poll().await.unwrap());
        let second = read_all(&poller.poll().await.unwrap());
        assert_eq!(first, second, "{address}");
        results.push(first);
    }
    assert_eq!(results[0], expected, "pymodbus");
    assert_eq!(results[1], expected, "simulator");
}
