//! What a steady BACnet/IP poll cycle costs: the `pattoo_agent_bacnetipd`
//! drop-in (and a native `type: bacnet` poller) against simulated devices
//! on loopback, and beside it, when it can run, the Python agent's cycle
//! (`benches/python/bacnet_cycle.py`) on the same devices.
//!
//! ```text
//! cargo bench --bench bacnet_load -- --devices 100 --objects 20 --cycles 10
//! ```
//!
//! Each simulated device is a thread with a UDP socket on its own loopback
//! address, 127.0.3.D port 47808 (the Python agent reads only that port),
//! answering ReadProperty and ReadPropertyMultiple of Analog Values
//! 1..=objects (present value a REAL, name `Point N`). The agent polls on a
//! current-thread runtime in this thread, so the CPU time of this thread is
//! the agent's alone (the devices' threads are apart): poll and body
//! (`model::build`), per cycle, after one warm-up cycle. Requests per cycle
//! are counted at the devices. The Python cycle's CPU is its own process's
//! (`time.process_time`, all its threads).
//!
//! Without `--bench` (`cargo test --benches`) it runs a tiny smoke cycle.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pattoo_agentd::config;
use pattoo_agentd::model::{build, AgentContext};
use pattoo_agentd::pollers::{Poller, PollerEnv};

#[allow(dead_code)]
#[path = "../tests/common/python.rs"]
mod python;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::thread_cpu_time;

const AGENT_ID: &str = "5d1f0c2c1e0f4b7a9c3e2d1b0a99887766554433221100ffeeddccbbaa998877";

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let (devices, objects, cycles) = if benching {
        (
            arg(&args, "--devices", 100).clamp(1, 250),
            arg(&args, "--objects", 20).max(1),
            arg(&args, "--cycles", 10).max(1),
        )
    } else {
        (2, 3, 1)
    };
    let requests = Arc::new(AtomicU64::new(0));
    let addresses: Vec<Ipv4Addr> = (1..=devices)
        .map(|d| Ipv4Addr::new(127, 0, 3, d as u8))
        .collect();
    for &ip in &addresses {
        let socket = match UdpSocket::bind((ip, 47808)) {
            Ok(socket) => socket,
            Err(error) => {
                eprintln!("bacnet_load: skipped: cannot bind {ip}:47808: {error}");
                return;
            }
        };
        let requests = requests.clone();
        std::thread::spawn(move || device(socket, &requests));
    }
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path();
    std::fs::write(
        config_dir.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_directory: {0}\n  cache_directory: {0}\n  daemon_directory: {0}\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 20201\n",
            config_dir.display()
        ),
    )
    .unwrap();
    let targets: Vec<String> = addresses.iter().map(|a| format!("'{a}'")).collect();
    let points: Vec<String> = (1..=objects).map(|n| format!("{{address: {n}}}")).collect();
    std::fs::write(
        config_dir.join("pattoo_agent_bacnetipd.yaml"),
        format!(
            "pattoo_agent_bacnetipd:\n  polling_interval: 300\n  agent_ip_address: 127.0.0.1\n  polling_groups:\n    - group_name: bench\n      ip_targets: [{}]\n      points: [{}]\n",
            targets.join(", "),
            points.join(", ")
        ),
    )
    .unwrap();
    let settings = config::load(config_dir).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = PollerEnv {
        hostname: "bench.example.org".to_owned(),
    };
    println!("bacnet_load: {devices} devices x {objects} Analog Values, {cycles} steady cycle(s)");
    let mut drop_in = Poller::new(&settings.pollers[0], &env).unwrap();
    measure(
        "drop-in (ReadPropertyMultiple)",
        &runtime,
        &mut drop_in,
        cycles,
        &requests,
        devices * objects,
    );
    drop(drop_in);
    let mut one_by_one = settings.pollers[0].clone();
    if let pattoo_agentd::pollers::PollerKind::Bacnet(bacnet) = &mut one_by_one.kind {
        bacnet.max_objects_per_request = 1;
    }
    let mut one_by_one = Poller::new(&one_by_one, &env).unwrap();
    measure(
        "drop-in, ReadProperty only",
        &runtime,
        &mut one_by_one,
        cycles,
        &requests,
        devices * objects,
    );
    drop(one_by_one);
    if benching {
        python_cycle(config_dir, cycles, &requests, devices * objects);
    }
}

fn measure(
    what: &str,
    runtime: &tokio::runtime::Runtime,
    poller: &mut Poller,
    cycles: usize,
    requests: &AtomicU64,
    values: usize,
) {
    let agent = AgentContext {
        agent_id: AGENT_ID,
        agent_program: "pattoo_agent_bacnetipd",
        hostname: "bench.example.org",
        polling_interval_ms: 300_000,
    };
    let mut cycle = |count: bool| {
        let cpu = thread_cpu_time();
        let wall = Instant::now();
        let asked = requests.load(Ordering::Relaxed);
        let targets = runtime
            .block_on(poller.poll())
            .expect("a poll")
            .readings()
            .expect("readings, not relayed bodies");
        let outcome = build(&agent, pattoo_agentd::time::now_ms(), &targets);
        let body = outcome.body.expect("a body");
        let posted: usize = targets.iter().map(|t| t.datapoints.len()).sum();
        assert_eq!(posted, values, "every value read");
        if count {
            Some((
                thread_cpu_time() - cpu,
                wall.elapsed(),
                requests.load(Ordering::Relaxed) - asked,
                body.json.len(),
            ))
        } else {
            None
        }
    };
    cycle(false);
    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    let mut asked = 0;
    let mut bytes = 0;
    for _ in 0..cycles {
        let (c, w, r, b) = cycle(true).unwrap();
        cpu += c;
        wall += w;
        asked += r;
        bytes = b;
    }
    let n = cycles as u32;
    println!(
        "  {what}: cpu {:.2} ms/cycle ({:.1} us/value), wall {:.1} ms/cycle, {} requests/cycle, body {} bytes",
        (cpu / n).as_secs_f64() * 1e3,
        (cpu / n).as_secs_f64() * 1e6 / values as f64,
        (wall / n).as_secs_f64() * 1e3,
        asked / cycles as u64,
        bytes
    );
}

/// The Python agent's cycle on the same devices and file, when BAC0 and
/// PattooShared can be had.
fn python_cycle(config_dir: &std::path::Path, cycles: usize, requests: &AtomicU64, values: usize) {
    let path = match python::try_packages_path(
        "bac0-pattoo",
        &[
            "BAC0==22.9.21",
            "bacpypes==0.19.0",
            "pytz",
            "PattooShared==0.0.84",
            "PyYAML",
            "requests",
        ],
        "import BAC0, pytz, pattoo_shared",
    ) {
        Ok(path) => path,
        Err(error) => {
            println!("  python: skipped: {error}");
            return;
        }
    };
    let asked = requests.load(Ordering::Relaxed);
    let output = std::process::Command::new(python::python())
        .arg("benches/python/bacnet_cycle.py")
        .arg(cycles.to_string())
        .env("PYTHONPATH", path)
        .env("PATTOO_CONFIGDIR", config_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        println!(
            "  python: failed: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let asked = requests.load(Ordering::Relaxed) - asked;
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["cycle", _, "cpu_ms", c, "wall_ms", w, "values", v] = fields.as_slice() {
            cpu.push(c.parse::<f64>().unwrap());
            wall.push(w.parse::<f64>().unwrap());
            assert_eq!(v.parse::<usize>().unwrap(), values, "{text}");
        }
    }
    // The first cycle is the warm-up, as for the agent.
    let steady = &cpu[1.min(cpu.len())..];
    let n = steady.len().max(1) as f64;
    let mean = steady.iter().sum::<f64>() / n;
    println!(
        "  python agent's cycle: cpu {mean:.2} ms/cycle ({:.1} us/value), wall {:.1} ms/cycle, {} requests/cycle",
        mean * 1e3 / values as f64,
        wall[1.min(wall.len())..].iter().sum::<f64>() / n,
        asked / cpu.len().max(1) as u64
    );
}

/// A device: answers ReadProperty and ReadPropertyMultiple of present
/// value and object name of any Analog Value.
fn device(socket: UdpSocket, requests: &AtomicU64) {
    let mut buf = [0u8; 1600];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        requests.fetch_add(1, Ordering::Relaxed);
        if let Some(answer) = answer(&buf[..n]) {
            let _ = socket.send_to(&answer, from);
        }
    }
}

fn answer(frame: &[u8]) -> Option<Vec<u8>> {
    // BVLC (4), NPDU without addresses (2), confirmed request.
    let apdu = frame.get(6..)?;
    if frame.get(5)? & 0x28 != 0 || apdu.first()? >> 4 != 0 {
        return None;
    }
    let (invoke, service, mut rest) = (*apdu.get(2)?, *apdu.get(3)?, apdu.get(4..)?);
    let mut out = vec![0x81, 0x0a, 0, 0, 0x01, 0x00, 0x30, invoke, service];
    match service {
        12 => {
            let object = rest.get(..5)?;
            let property = rest.get(5..7)?;
            out.extend_from_slice(object);
            out.extend_from_slice(property);
            out.push(0x3e);
            value(object, property[1], &mut out);
            out.push(0x3f);
        }
        14 => {
            while rest.len() >= 7 {
                let object = &rest[..5];
                out.extend_from_slice(object);
                out.push(0x1e);
                rest = &rest[6..];
                while let [0x09, property, tail @ ..] = rest {
                    out.extend_from_slice(&[0x29, *property, 0x4e]);
                    value(object, *property, &mut out);
                    out.push(0x4f);
                    rest = tail;
                }
                rest = rest.get(1..)?;
                out.push(0x1f);
            }
        }
        _ => return None,
    }
    let length = out.len() as u16;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    Some(out)
}

fn value(object: &[u8], property: u8, out: &mut Vec<u8>) {
    let instance = u32::from_be_bytes([0, object[2], object[3], object[4]]) & 0x3f_ffff;
    if property == 77 {
        let name = format!("Point {instance}");
        out.extend_from_slice(&[0x75, name.len() as u8 + 1, 0x00]);
        out.extend_from_slice(name.as_bytes());
    } else {
        out.push(0x44);
        out.extend_from_slice(&(20.0f32 + instance as f32 * 0.25).to_be_bytes());
    }
}
