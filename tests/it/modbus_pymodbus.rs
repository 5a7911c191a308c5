//! Interoperability: the poller reads a Modbus server that is neither ours
//! nor tokio-modbus (pymodbus, started from `tests/support`) and gets the
//! same values as from the in-process simulator.
//!
//! Uses the pymodbus the Python interpreter already has; where it has none,
//! the test installs the pinned version from PyPI into Cargo's scratch
//! directory for tests, so `cargo test` works on a fresh machine.
#![cfg(feature = "modbus")]

use crate::common;

use common::modbus::{poller, values_by_key};
use common::modbus_sim::{Sim, Unit};
use common::pymodbus::{self, expected_values, register_map, register_map_json, Framer, REGISTERS};

#[tokio::test]
async fn pymodbus_serves_the_same_values_as_the_simulator() {
    let (input, holding, coils, discretes) = register_map();
    let pymodbus = pymodbus::start_tcp(&register_map_json(), Framer::Socket);
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
        let mut poller = poller(&format!(
            "    - name: interop\n      type: modbus_tcp\n      targets: [\"{address}\"]\n{REGISTERS}"
        ));
        // Twice: the second poll runs on the split the first one learned.
        let first = values_by_key(&poller.poll().await.unwrap());
        let second = values_by_key(&poller.poll().await.unwrap());
        assert_eq!(first, second, "{address}");
        results.push(first);
    }
    assert_eq!(results[0], expected_values(), "pymodbus");
    assert_eq!(results[1], expected_values(), "simulator");
}
