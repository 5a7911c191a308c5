//! Load harness: the real agent against simulated Modbus devices and a
//! local receiver, over loopback.
//!
//! ```text
//! cargo bench --bench load -- cycle   --devices 50 --registers 200 --cycles 20
//! cargo bench --bench load -- cycle   --devices 1000 --registers 100 --cycles 6 --interval-s 10
//! cargo bench --bench load -- daemon  --devices 50 --registers 200 --interval-s 5 --seconds 60
//! cargo bench --bench load -- startup --bodies 100000
//! cargo bench --bench load -- replay  --bodies 10000 --devices 50 --registers 200 --interval-s 5
//! cargo bench --bench load -- daemon  --devices 50 --registers 200 --interval-s 5 --seconds 60 --self-s 0
//! cargo bench --bench load -- selfmon --ticks 5000
//! cargo bench --bench load -- snmp    --devices 200 --interfaces 24 --cycles 5 [--max-var-binds 64] [--interval-s 10] [--sim-processes N] [--joined 1] [--per-device 1]
//! cargo bench --bench load -- snmp-daemon --devices 200 --interfaces 24 [--interval-s 30] [--seconds 90] [--only preset|ifmibd]
//! cargo bench --bench load -- python  --devices 50 --registers 200 --cycles 20 [--seconds 60]
//! cargo bench --bench load -- os      --cycles 200
//! cargo bench --bench load -- opcua   --servers 10 --nodes 200 --cycles 10
//! ```
//!
//! The devices and the receiver run in a child process (this binary with
//! `serve`), so the CPU time and memory measured are the agent's alone.
//! Every device listens on its own loopback port; registers are split
//! evenly between input and holding registers.
//!
//! - `cycle` drives the agent in this process: configuration text ->
//!   `collector::collectors` (the Modbus poller) -> `Delivery::submit`
//!   (posting over HTTP), one cycle after another, and prints wall and CPU
//!   per cycle, Modbus requests and new connections per cycle and bytes
//!   posted. With `--interval-s` the cycles are spaced like the scheduler
//!   spaces them and the average CPU share is printed. `--max-body-bytes N`
//!   sets `delivery.max_body_bytes` (polls larger are posted in parts).
//!   `--trim 1` hands freed memory back after each cycle (`malloc_trim`),
//!   inside the timing; `--trim 2` calls what the daemon calls after each
//!   poll (`release_freed_memory`), to compare a rule for it. Each
//!   cycle's line also says its minor page faults and how much the
//!   allocator held free at its end, before any trim. `--mmap-threshold N`
//!   sets glibc's in place of the daemon's 256 KiB.
//! - `daemon` runs the real binary (`pattoo-agentd run`) with that Modbus
//!   poller plus one HTTP and one command poller and samples its RSS and CPU
//!   from /proc after a warm-up; prints the CPU per polling interval in all
//!   and by thread name. `--extra-pollers 0` leaves the HTTP and command
//!   pollers out, so the figure compares with `cycle`'s. Also per cycle:
//!   the process's minor page faults and its threads' context switches.
//!   `--agent PATH` runs another build of the agent (an older one, to
//!   compare).
//! - `startup` fills the cache with small bodies and times `run` until it
//!   sends READY=1 on a notify socket bound here; prints RSS then.
//! - `replay` fills the cache and measures how fast the daemon empties it
//!   into the receiver while its Modbus poller keeps polling, and how late
//!   live bodies arrive.
//! - `daemon --self-s N` sets self-monitoring's interval (0 turns it off;
//!   without the option it runs as shipped, every 60 s), to measure what
//!   it costs the daemon.
//! - `selfmon` times, in CPU time of this thread, what self-monitoring does
//!   at each tick (read the figures, build the body) and what the daemon
//!   does every 5 s for `status` (write the state file), with the three
//!   pollers of `daemon`.
//! - `snmp` starts snmpsim (installed from PyPI into target/tmp when
//!   missing; `--sim-processes` processes, default one per 25 devices,
//!   sharing the devices) serving a farm of devices on 127.0.2.x, each
//!   with its own community and ifTable + ifXTable rows for
//!   `--interfaces` interfaces, and polls them in this process with one
//!   IF-MIB preset poller (`type: snmp`, every device a target with its
//!   own community and port; `--per-device 1`: a poller per device) and
//!   with a `pattoo_agent_snmp_ifmibd.yaml`
//!   drop-in, each poll a task of the runtime as the daemon runs it
//!   (`--joined 1`: joined on the main thread instead): CPU and wall per
//!   cycle (poll and body), values per cycle,
//!   and how much this process's RSS grew. The simulator's CPU is its own
//!   process's, not counted. Where collectd's snmp plugin is installed
//!   (/usr/sbin/collectd and /usr/lib/collectd/snmp.so; Debian's
//!   `collectd-core` and `libyajl2`), collectd then polls the same farm
//!   every `--interval-s` seconds (default 10) for the preset's columns,
//!   with no write plugin, and its whole process's CPU per steady cycle
//!   and PSS are printed in one table beside ours; without it, one line
//!   says the comparison was skipped. Then, where `PATTOO_AGENTS_GIT`
//!   names a git directory of palisadoes/pattoo-agents and the Python
//!   agent's packages install (PattooShared 0.0.84 and easysnmp 0.2.6
//!   from PyPI into target/tmp; easysnmp builds against Debian's
//!   `libsnmp-dev`), the Python `pattoo_agent_snmp_ifmibd` daemon
//!   (`benches/python/snmp_ifmibd.py`) polls the same farm with the same
//!   `pattoo_agent_snmp_ifmibd.yaml` every `--interval-s`, posting to a
//!   local receiver, and its whole CPU per steady poll (with the pool
//!   workers it forks) and PSS join the table; otherwise one line says
//!   why it was left out.
//! - `snmp-daemon` runs the real daemon (`pattoo-agentd run`, or
//!   `--agent PATH`) polling a farm like `snmp`'s, served by one snmpsim
//!   process per 25 devices (`--per-snmpsim`) so that 200 devices answer
//!   within the interval, and posting to a local receiver: once with the
//!   IF-MIB preset (one poller, each target with its own community, 5 s
//!   timeout) and once with the `pattoo_agent_snmp_ifmibd.yaml` drop-in
//!   (`--only preset|ifmibd` runs one). Every `--interval-s` (default 10,
//!   30 above 50 devices), sampled for `--seconds` (default three
//!   intervals) after two intervals of warm-up: the daemon's Pss every
//!   100 ms (`smaps_rollup`), between polls (the last sample before a
//!   poll in which it ran under 2 ms) and at the peak, its CPU and posts
//!   per cycle, and its Pss and Rss by kind of mapping (`smaps`) at a
//!   moment between polls.
//! - `opcua` starts `--servers` asyncua OPC UA servers
//!   (tests/support/opcua_server.py, asyncua installed from PyPI into
//!   target/tmp when missing), each serving `--nodes` Doubles, and polls
//!   them in this process with a `type: opcua` poller (every server, one
//!   Read each over a kept session) and with a `pattoo_agent_opcuad.yaml`
//!   drop-in (a group per server): CPU and wall per cycle (poll and
//!   body), values per cycle. The servers' CPU is their own processes',
//!   not counted. Then the Python agent's cycle
//!   (`benches/python/opcua_cycle.py`: PattooShared 0.0.84 and asyncua
//!   1.1.8, installed from PyPI into target/tmp when missing) polls the
//!   drop-in's file, and the CPU per steady cycle of each and the ratio
//!   are printed; the Python side is left out, saying why, when it
//!   cannot be had.
//! - `python` polls the same devices with the Python agent's cycle
//!   (`benches/python/modbus_cycle.py`: PattooShared 0.0.84 and pymodbus
//!   2.5.3, installed from PyPI into target/tmp when missing), once as the
//!   agent runs it and once in one process reading every register, then
//!   runs `cycle` on those devices (as configured, and without
//!   `--max-body-bytes` once more with the whole poll in one body) and
//!   prints the CPU per steady cycle of each and the ratios. Then, where
//!   `PATTOO_AGENTS_GIT` names a git directory of palisadoes/pattoo-agents,
//!   the Python agent's real daemon (`bin/pattoo_agent_modbustcpd.py
//!   --start`) polls the same number of devices, each on port 502 of its
//!   own loopback address 127.23.x.y (binding port 502 needs root or
//!   CAP_NET_BIND_SERVICE), and posts to the receiver for `--seconds`
//!   (default 60; 0 leaves the daemons out, `--cycles 0` the cycles);
//!   then ours as `daemon --extra-pollers 0` does; the whole CPU per cycle
//!   of each (the Python daemon's pool workers included) and the ratios
//!   per cycle and per value are printed. It fails, printing no figures,
//!   when Python or the packages cannot be had.
//! - `os` polls this host with an os poller as the
//!   `pattoo_agent_os_autonomousd.yaml` drop-in makes it (poll and body, in
//!   this process) and prints the CPU per steady poll and how much this
//!   process's RSS grew; then, where `PATTOO_AGENTS_GIT` names a git
//!   directory of palisadoes/pattoo-agents and PattooShared and psutil
//!   install, the Python collector's cycle on the same host
//!   (`benches/python/os_cycle.py`) and the ratio.
//!
//! Without `--bench` on the command line (`cargo test --benches`) each mode
//! is skipped except a tiny `cycle`, `selfmon` and `python` (which says it
//! was skipped when python3 or PyPI is missing, unless `CI=true`), as a
//! smoke test.
//!
//! The Modbus simulator here is a minimal Modbus TCP responder written for
//! speed rather than tests/common/modbus_sim.rs (a thousand tokio-modbus
//! servers would cost the measurement more than the agent does). snmpsim
//! and the Python packages come from tests/common, as the tests have them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use pattoo_agentd::collector;
use pattoo_agentd::config;
use pattoo_agentd::model::{build, AgentContext, DataPoint, DataType, Metadata, TargetData, Value};

// The tests' launchers, compiled into this binary on their own: these two
// files need nothing else from tests/common.
#[allow(dead_code)]
#[path = "../tests/common/asyncua.rs"]
mod asyncua;
#[allow(dead_code)]
#[path = "../tests/common/python.rs"]
mod python;
#[allow(dead_code)]
#[path = "../tests/common/snmpsim.rs"]
mod snmpsim;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::thread_cpu_time;

/// Pinned Python packages and a probe, Python code that exits with success
/// only where they import at the pinned versions.
struct PythonDeps {
    /// The folder under target/tmp they are installed into.
    name: &'static str,
    packages: &'static [&'static str],
    probe: &'static str,
}

impl PythonDeps {
    /// A `PYTHONPATH` under which the packages import: empty when the
    /// interpreter has them, else target/tmp/`name`, where they are
    /// installed from PyPI first. The error says why they cannot be had.
    fn path(&self) -> Result<String, String> {
        python::try_packages_path(self.name, self.packages, self.probe)
    }
}

const AGENT_ID: &str = "5d1f0c2c1e0f4b7a9c3e2d1b0a99887766554433221100ffeeddccbbaa998877";

fn main() {
    pattoo_agentd::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let mode = args
        .iter()
        .find(|a| !a.starts_with("--") && !is_value(&args, a))
        .cloned()
        .unwrap_or_else(|| "cycle".to_owned());
    let opts = Opts::parse(&args);
    match mode.as_str() {
        "serve" => serve(&opts),
        "cycle" if !benching => {
            cycle(&Opts::smoke());
            selfmon(&Opts::smoke());
            python_smoke();
        }
        "selfmon" if !benching => selfmon(&Opts::smoke()),
        "python" if !benching => python_smoke(),
        _ if !benching => eprintln!("load: {mode} skipped (run with cargo bench)"),
        "cycle" => cycle(&opts),
        "daemon" => {
            daemon(&opts);
        }
        "startup" => startup(&opts),
        "replay" => replay(&opts),
        "selfmon" => selfmon(&opts),
        "snmp" => snmp(&opts),
        "snmp-daemon" => snmp_daemon(&opts),
        "opcua" => opcua(&opts),
        "python" => python(&opts),
        "os" => os(&opts),
        other => panic!(
            "unknown mode {other}; use cycle, daemon, startup, replay, selfmon, snmp, snmp-daemon, os, opcua or python"
        ),
    }
}

/// Whether `arg` is the value of the option before it.
fn is_value(args: &[String], arg: &String) -> bool {
    args.iter()
        .position(|a| std::ptr::eq(a, arg))
        .is_some_and(|i| i > 0 && args[i - 1].starts_with("--") && args[i - 1] != "--bench")
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            if let Some(name) = args[i].strip_prefix("--") {
                if let Some(value) = args.get(i + 1).filter(|v| !v.starts_with("--")) {
                    map.insert(name.to_owned(), value.clone());
                    i += 1;
                }
            }
            i += 1;
        }
        Opts(map)
    }

    fn smoke() -> Opts {
        let mut o = Opts(HashMap::new());
        o.0.insert("devices".into(), "2".into());
        o.0.insert("registers".into(), "20".into());
        o.0.insert("cycles".into(), "2".into());
        o.0.insert("ticks".into(), "20".into());
        o
    }

    fn get(&self, name: &str, default: u64) -> u64 {
        self.0
            .get(name)
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------- the child

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
    posts: AtomicU64,
    bytes: AtomicU64,
    live_posts: AtomicU64,
    max_live_lateness_ms: AtomicU64,
    replayed_posts: AtomicU64,
    metrics_gets: AtomicU64,
}

/// `serve --devices N`: N devices and one receiver; prints
/// `ports RECEIVER DEVICE...` and answers `stats` lines on stdin.
fn serve(opts: &Opts) {
    let devices = opts.get("devices", 0) as usize;
    let at_502 = opts.get("port-502", 0) != 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counters = Arc::new(Counters::default());
    let started_ms = now_ms();
    let (ports_tx, ports_rx) = std::sync::mpsc::channel();
    let shared = counters.clone();
    std::thread::spawn(move || {
        runtime.block_on(async {
            let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut line = format!("ports {}", receiver.local_addr().unwrap().port());
            tokio::spawn(receive(receiver, shared.clone(), started_ms));
            for k in 0..devices {
                let address = if at_502 {
                    format!("{}:502", address_502(k))
                } else {
                    "127.0.0.1:0".to_owned()
                };
                let listener = match TcpListener::bind(&address).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        ports_tx
                            .send(format!("error binding {address}: {error}"))
                            .unwrap();
                        return;
                    }
                };
                line.push_str(&format!(" {}", listener.local_addr().unwrap().port()));
                tokio::spawn(device(listener, shared.clone()));
            }
            ports_tx.send(line).unwrap();
            std::future::pending::<()>().await
        })
    });
    println!("{}", ports_rx.recv().unwrap());
    // One `stats` line in, one line of counters out; ends with the parent.
    for _ in std::io::stdin().lines().map_while(Result::ok) {
        let c = &counters;
        println!(
            "{} {} {} {} {} {} {} {}",
            c.requests.load(Ordering::Relaxed),
            c.connections.load(Ordering::Relaxed),
            c.posts.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
            c.live_posts.load(Ordering::Relaxed),
            c.max_live_lateness_ms.load(Ordering::Relaxed),
            c.replayed_posts.load(Ordering::Relaxed),
            c.metrics_gets.load(Ordering::Relaxed),
        );
    }
}

/// The loopback address of device `k` of `serve --port-502 1`: the Python
/// agent connects to port 502 of each target, so each device needs an
/// address of its own.
fn address_502(k: usize) -> String {
    format!("127.23.{}.{}", k / 200, k % 200 + 1)
}

/// One Modbus TCP device: answers function 1-4 reads of any address.
async fn device(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut header = [0u8; 7];
            let mut pdu = [0u8; 260];
            let mut out = Vec::with_capacity(300);
            let mut tick: u16 = 0;
            loop {
                if socket.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = u16::from_be_bytes([header[4], header[5]]) as usize;
                if !(2..=254).contains(&len)
                    || socket.read_exact(&mut pdu[..len - 1]).await.is_err()
                {
                    return;
                }
                counters.requests.fetch_add(1, Ordering::Relaxed);
                tick = tick.wrapping_add(1);
                let function = pdu[0];
                let start = u16::from_be_bytes([pdu[1], pdu[2]]);
                let count = u16::from_be_bytes([pdu[3], pdu[4]]);
                out.clear();
                out.extend_from_slice(&header[..4]);
                out.extend_from_slice(&[0, 0, header[6], function]);
                match function {
                    1 | 2 => {
                        let n = count.div_ceil(8) as usize;
                        out.push(n as u8);
                        out.extend((0..n).map(|i| (i as u8).wrapping_mul(37) ^ tick as u8));
                    }
                    3 | 4 => {
                        out.push((count * 2) as u8);
                        for a in start..start.saturating_add(count) {
                            out.extend_from_slice(
                                &a.wrapping_mul(7).wrapping_add(tick).to_be_bytes(),
                            );
                        }
                    }
                    _ => {
                        out[7] = function | 0x80;
                        out.push(1);
                    }
                }
                let pdu_len = (out.len() - 6) as u16;
                out[4..6].copy_from_slice(&pdu_len.to_be_bytes());
                if socket.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Answers every POST with 200 and counts it; `GET /metrics` returns a
/// small Prometheus payload for the HTTP poller.
async fn receive(listener: TcpListener, counters: Arc<Counters>, started_ms: u64) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let counters = counters.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let counters = counters.clone();
                async move {
                    if request.method() == hyper::Method::GET {
                        counters.metrics_gets.fetch_add(1, Ordering::Relaxed);
                        let text = "# TYPE temperature gauge\ntemperature{room=\"a\"} 21.5\n\
                                    temperature{room=\"b\"} 19.25\nrequests_total 12345\n";
                        return Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))));
                    }
                    let body = request.into_body().collect().await?.to_bytes();
                    let arrived = now_ms();
                    counters.posts.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes
                        .fetch_add(body.len() as u64, Ordering::Relaxed);
                    let timestamp = body_timestamp(&body);
                    if timestamp >= started_ms {
                        counters.live_posts.fetch_add(1, Ordering::Relaxed);
                        counters
                            .max_live_lateness_ms
                            .fetch_max(arrived.saturating_sub(timestamp), Ordering::Relaxed);
                    } else {
                        counters.replayed_posts.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Response::new(Full::new(Bytes::new())))
                }
            });
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// `pattoo_agent_timestamp`, which every body this agent writes has first.
fn body_timestamp(body: &[u8]) -> u64 {
    let prefix = b"{\"pattoo_agent_timestamp\":";
    body.strip_prefix(prefix.as_slice())
        .map(|rest| {
            rest.iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'))
        })
        .unwrap_or(0)
}

// --------------------------------------------------------------- the parent

struct Sims {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    receiver_port: u16,
    device_ports: Vec<u16>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SimStats {
    requests: u64,
    connections: u64,
    posts: u64,
    bytes: u64,
    live_posts: u64,
    max_live_lateness_ms: u64,
    replayed_posts: u64,
    metrics_gets: u64,
}

impl Sims {
    fn start(devices: usize) -> Sims {
        Sims::try_start(devices, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `devices` devices, each on port 502 of its own loopback address
    /// ([`address_502`]), where the process may bind port 502.
    fn try_start(devices: usize, at_502: bool) -> Result<Sims, String> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["serve", "--devices", &devices.to_string()])
            .args(["--port-502", if at_502 { "1" } else { "0" }])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the simulator process starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(ports) = line.strip_prefix("ports ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the simulator failed: {}", line.trim()));
        };
        let mut ports = ports.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        let receiver_port = ports.next().unwrap();
        Ok(Sims {
            child,
            stdin,
            stdout,
            receiver_port,
            device_ports: ports.collect(),
        })
    }

    fn stats(&mut self) -> SimStats {
        writeln!(self.stdin, "stats").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let n: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        SimStats {
            requests: n[0],
            connections: n[1],
            posts: n[2],
            bytes: n[3],
            live_posts: n[4],
            max_live_lateness_ms: n[5],
            replayed_posts: n[6],
            metrics_gets: n[7],
        }
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `pattoo.yaml` and `pattoo_agentd.yaml` for a Modbus poller over
/// every simulated device, plus the HTTP and command pollers if asked.
fn write_config(
    dir: &Path,
    sims: &Sims,
    registers: usize,
    interval_s: u64,
    extra_pollers: bool,
) -> PathBuf {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    write_pattoo_yaml(&config, dir, sims.receiver_port);
    let mut yaml = format!("pattoo_agentd:\n  polling_interval: {interval_s}\n  pollers:\n");
    if !sims.device_ports.is_empty() {
        yaml.push_str("    - name: devices\n      type: modbus_tcp\n      targets:\n");
        for port in &sims.device_ports {
            yaml.push_str(&format!("        - \"127.0.0.1:{port}\"\n"));
        }
        let input = registers.div_ceil(2);
        let holding = registers - input;
        let list: Vec<String> = (0..input)
            .map(|i| (30001 + i).to_string())
            .chain((0..holding).map(|i| (40001 + i).to_string()))
            .collect();
        yaml.push_str(&format!("      registers: [{}]\n", list.join(", ")));
    }
    if extra_pollers {
        yaml.push_str(&format!(
            "    - name: web\n      type: http\n      urls: [\"http://127.0.0.1:{}/metrics\"]\n      format: prometheus\n\
             \x20   - name: shell\n      type: command\n      command: [/bin/sh, -c, \"echo load 0.25; echo users 3\"]\n      format: keyvalue\n",
            sims.receiver_port
        ));
    }
    std::fs::write(config.join("pattoo_agentd.yaml"), yaml).unwrap();
    config
}

/// The daemon's runtime, as `src/main.rs` builds it.
fn runtime() -> tokio::runtime::Runtime {
    pattoo_agentd::runtime().expect("the async runtime starts")
}

/// Minor page faults of this process so far.
fn minor_faults() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    usage.ru_minflt as u64
}

/// Bytes the allocator holds free (glibc's `mallinfo2().fordblks`), 0
/// where that cannot be asked.
fn allocator_free_bytes() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    unsafe {
        libc::mallinfo2().fordblks
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// User + system CPU time of this process's reaped children (and theirs).
fn children_cpu_time() -> Duration {
    rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// User + system CPU time from getrusage(`who`).
fn rusage_cpu(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(who, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (1/100 s here).
fn proc_cpu_ticks(pid: u32) -> u64 {
    proc_stat_ticks(pid, 11..13)
}

/// [`proc_cpu_ticks`] plus cutime + cstime: the children it has reaped.
fn proc_cpu_ticks_with_reaped(pid: u32) -> u64 {
    proc_stat_ticks(pid, 11..15)
}

/// The sum of `/proc/PID/stat` fields `fields`, counted from the state
/// after the command name (0 for one unreadable).
fn proc_stat_ticks(pid: u32, fields: std::ops::Range<usize>) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = &text[text.rfind(')').map_or(0, |i| i + 2)..];
    after
        .split_whitespace()
        .skip(fields.start)
        .take(fields.len())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn cycle(opts: &Opts) {
    let mut sims = Sims::start(opts.get("devices", 50) as usize);
    cycle_on(&mut sims, opts);
}

/// `cycle` on devices already serving; returns the median CPU time of a
/// steady cycle, in ms.
fn cycle_on(sims: &mut Sims, opts: &Opts) -> f64 {
    let devices = sims.device_ports.len();
    let registers = opts.get("registers", 200) as usize;
    let cycles = opts.get("cycles", 20) as usize;
    let interval_s = opts.get("interval-s", 0);
    let trim = opts.get("trim", 0);
    if let Some(threshold) = opts.0.get("mmap-threshold") {
        let threshold: i32 = threshold.parse().expect("bytes");
        // SAFETY: mallopt only changes allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config_dir = write_config(dir.path(), sims, registers, interval_s.max(1), false);
    if let Some(limit) = opts.0.get("max-body-bytes") {
        let file = config_dir.join("pattoo_agentd.yaml");
        let yaml = std::fs::read_to_string(&file).unwrap();
        let setting = format!("pattoo_agentd:\n  delivery: {{max_body_bytes: {limit}}}\n");
        std::fs::write(&file, yaml.replacen("pattoo_agentd:\n", &setting, 1)).unwrap();
    }
    let settings = config::load(&config_dir).unwrap_or_else(|e| panic!("{e}"));

    let runtime = runtime();
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut requests = Vec::new();
    let mut connections = Vec::new();
    let mut bytes = Vec::new();
    let mut posted = 0;
    let mut faults = Vec::new();
    let mut free = Vec::new();
    let start_cpu = cpu_time();
    let start = Instant::now();
    runtime.block_on(async {
        let mut collectors = collectors(&settings);
        let delivery = pattoo_agentd::daemon::open_delivery(&settings, Default::default()).unwrap();
        for k in 0..cycles {
            if interval_s > 0 {
                let due = start + Duration::from_secs(interval_s * k as u64);
                tokio::time::sleep_until(due.into()).await;
            }
            let before = sims.stats();
            let faults0 = minor_faults();
            let cpu0 = cpu_time();
            let t0 = Instant::now();
            for collector in &mut collectors {
                for body in collector.collect().await.unwrap_or_default() {
                    delivery.submit(body).await;
                }
            }
            free.push(allocator_free_bytes());
            match trim {
                0 => {}
                // SAFETY: malloc_trim only returns free pages to the kernel.
                1 => unsafe {
                    libc::malloc_trim(0);
                },
                _ => {
                    pattoo_agentd::release_freed_memory();
                }
            }
            let wall = t0.elapsed();
            let cpu = cpu_time() - cpu0;
            faults.push(minor_faults() - faults0);
            let after = sims.stats();
            walls.push(wall.as_secs_f64() * 1e3);
            cpus.push(cpu.as_secs_f64() * 1e3);
            requests.push(after.requests - before.requests);
            connections.push(after.connections - before.connections);
            bytes.push(after.bytes - before.bytes);
            posted += after.posts - before.posts;
        }
        let stats = delivery.stats();
        assert_eq!(stats.cached, 0, "every body was posted");
    });
    let total_wall = start.elapsed();
    let total_cpu = cpu_time() - start_cpu;
    let hwm = status_kib("self", "VmHWM");

    println!("cycle: {devices} devices x {registers} registers, {cycles} cycles");
    for k in 0..cycles {
        println!(
            "  cycle {k:>3}: wall {:8.2} ms  cpu {:8.2} ms  requests {:5}  new connections {:4}  posted {:9} B  minor faults {:5}  allocator free {:6} KiB",
            walls[k], cpus[k], requests[k], connections[k], bytes[k], faults[k], free[k] / 1024
        );
    }
    // The first cycle connects; the steady state is what follows.
    let steady = if cycles > 1 { 1 } else { 0 };
    let mut w = walls[steady..].to_vec();
    w.sort_by(f64::total_cmp);
    let mut c = cpus[steady..].to_vec();
    c.sort_by(f64::total_cmp);
    println!(
        "  steady cycles (2..): wall median {:.2} ms  p99 {:.2} ms  min {:.2}  max {:.2}; cpu median {:.2} ms per cycle; minor faults median {}",
        percentile(&w, 50.0),
        percentile(&w, 99.0),
        w[0],
        w[w.len() - 1],
        percentile(&c, 50.0),
        {
            let mut f = faults[steady..].to_vec();
            f.sort();
            f[f.len() / 2]
        }
    );
    println!(
        "  requests per cycle: {:?}; new connections: first cycle {}, later cycles at most {}",
        requests.iter().collect::<std::collections::BTreeSet<_>>(),
        connections[0],
        connections[steady..].iter().max().unwrap()
    );
    println!(
        "  bytes posted per cycle: median {}; bodies posted {posted}; peak RSS of this process (agent + harness) {:.1} MiB",
        {
            let mut b = bytes.clone();
            b.sort();
            b[b.len() / 2]
        },
        hwm as f64 / 1024.0
    );
    if interval_s > 0 {
        println!(
            "  average CPU over {:.1} s at a {interval_s} s interval: {:.2} % of one core",
            total_wall.as_secs_f64(),
            100.0 * total_cpu.as_secs_f64() / total_wall.as_secs_f64()
        );
    }
    percentile(&c, 50.0)
}

/// Starts `pattoo-agentd run` with a notify socket and waits for READY=1.
struct Daemon {
    child: Child,
    pid: String,
    ready_after: Duration,
}

impl Daemon {
    fn start(config_dir: &Path, dir: &Path) -> Daemon {
        Daemon::start_binary(env!("CARGO_BIN_EXE_pattoo-agentd"), config_dir, dir)
    }

    /// [`Daemon::start`] with another build of the agent, to compare two.
    fn start_binary(binary: &str, config_dir: &Path, dir: &Path) -> Daemon {
        let socket_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let t0 = Instant::now();
        let child = Command::new(binary)
            .args(["--config-dir", config_dir.to_str().unwrap(), "run"])
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .spawn()
            .expect("pattoo-agentd starts");
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).expect("READY=1 within 60 s");
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        let ready_after = t0.elapsed();
        let pid = child.id().to_string();
        Daemon {
            child,
            pid,
            ready_after,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid]).status();
        let _ = self.child.wait();
    }
}

/// Runs the real daemon and prints what it cost; returns the CPU per
/// cycle in ms.
fn daemon(opts: &Opts) -> f64 {
    let devices = opts.get("devices", 50) as usize;
    let registers = opts.get("registers", 200) as usize;
    let interval_s = opts.get("interval-s", 5);
    let seconds = opts.get("seconds", 60);
    let warmup = opts.get("warmup-s", 2 * interval_s + 1);
    let extra_pollers = opts.get("extra-pollers", 1) != 0;
    let mut sims = Sims::start(devices);
    let dir = tempfile::tempdir().unwrap();
    let config_dir = write_config(dir.path(), &sims, registers, interval_s, extra_pollers);
    let self_monitoring = opts
        .0
        .get("self-s")
        .map(|s| s.parse::<u64>().expect("seconds"));
    if let Some(seconds) = self_monitoring {
        let file = config_dir.join("pattoo_agentd.yaml");
        let yaml = std::fs::read_to_string(&file).unwrap();
        let setting = match seconds {
            0 => "  self_monitoring: false\n".to_owned(),
            s => format!("  self_monitoring: {{polling_interval: {s}}}\n"),
        };
        std::fs::write(
            &file,
            yaml.replacen("pattoo_agentd:\n", &format!("pattoo_agentd:\n{setting}"), 1),
        )
        .unwrap();
    }
    let binary = opts
        .0
        .get("agent")
        .map_or(env!("CARGO_BIN_EXE_pattoo-agentd"), String::as_str);
    let daemon = Daemon::start_binary(binary, &config_dir, dir.path());
    let pid_num = daemon.child.id();
    std::thread::sleep(Duration::from_secs(warmup));
    let before = sims.stats();
    let ticks0 = proc_cpu_ticks(pid_num);
    let threads0 = thread_cpu_ticks(pid_num);
    let faults0 = proc_stat_field(pid_num, 10);
    let switches0 = thread_switches(pid_num);
    let run_ns0 = threads_cpu_ns(pid_num);
    let t0 = Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(seconds) {
        rss.push(status_kib(&daemon.pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = t0.elapsed();
    let cpu_s = (proc_cpu_ticks(pid_num) - ticks0) as f64 / 100.0;
    let threads1 = thread_cpu_ticks(pid_num);
    let run_ns = threads_cpu_ns(pid_num).saturating_sub(run_ns0);
    let faults = proc_stat_field(pid_num, 10) - faults0;
    let switches1 = thread_switches(pid_num);
    let hwm = status_kib(&daemon.pid, "VmHWM");
    let threads = status_kib(&daemon.pid, "Threads");
    let after = sims.stats();
    daemon.stop();
    rss.sort();
    println!(
        "daemon: {devices} devices x {registers} registers{}, every {interval_s} s; \
         self-monitoring {}; sampled {:.0} s after {warmup} s warm-up",
        if extra_pollers {
            " + 1 HTTP + 1 command poller"
        } else {
            ""
        },
        match self_monitoring {
            None => "as shipped (every 60 s)".to_owned(),
            Some(0) => "off".to_owned(),
            Some(s) => format!("every {s} s"),
        },
        elapsed.as_secs_f64()
    );
    println!(
        "  VmRSS median {:.1} MiB  min {:.1}  max {:.1}; VmHWM {:.1} MiB; threads {threads}",
        rss[rss.len() / 2] as f64 / 1024.0,
        rss[0] as f64 / 1024.0,
        rss[rss.len() - 1] as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  CPU time {cpu_s:.2} s in the window ({:.2} % of one core); {} posts, {} Modbus requests, {} new connections, {} HTTP polls in the window",
        100.0 * cpu_s / elapsed.as_secs_f64(),
        after.posts - before.posts,
        after.requests - before.requests,
        after.connections - before.connections,
        after.metrics_gets - before.metrics_gets
    );
    let cycles = elapsed.as_secs_f64() / interval_s as f64;
    println!(
        "  CPU per {interval_s} s cycle: {:.2} ms (everything the daemon did in the window / {cycles:.1} cycles)",
        1e3 * cpu_s / cycles
    );
    let mut by_name: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (tid, (name, ticks)) in &threads1 {
        let before = threads0.get(tid).map_or(0, |(_, t)| *t);
        *by_name.entry(name.clone()).or_default() += ticks - before.min(*ticks);
    }
    let per_thread: Vec<String> = by_name
        .iter()
        .filter(|(_, ticks)| **ticks > 0)
        .map(|(name, ticks)| format!("{name} {:.2} ms", 10.0 * *ticks as f64 / cycles))
        .collect();
    println!(
        "  per cycle by thread name (threads alive at the end): {}",
        per_thread.join(", ")
    );
    let (mut voluntary, mut involuntary) = (0, 0);
    for (tid, (v, i)) in &switches1 {
        let (v0, i0) = switches0.get(tid).copied().unwrap_or_default();
        voluntary += v - v0.min(*v);
        involuntary += i - i0.min(*i);
    }
    println!(
        "  CPU per cycle from the threads' run time (schedstat, ns; threads alive at the end): {:.2} ms",
        run_ns as f64 / 1e6 / cycles
    );
    println!(
        "  per cycle: {:.0} minor page faults, {:.0} voluntary and {:.0} involuntary context switches (threads alive at the end)",
        faults as f64 / cycles,
        voluntary as f64 / cycles,
        involuntary as f64 / cycles
    );
    1e3 * cpu_s / cycles
}

/// Field `n` (numbered from 1, as in proc(5)) of `/proc/PID/stat`, for
/// the numeric fields after the command name.
fn proc_stat_field(pid: u32, n: usize) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = &text[text.rfind(')').map_or(0, |i| i + 2)..];
    after
        .split_whitespace()
        .nth(n - 3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Voluntary and involuntary context switches of each thread of a
/// process, by thread id.
fn thread_switches(pid: u32) -> HashMap<String, (u64, u64)> {
    let mut threads = HashMap::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        threads.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (
                field("voluntary_ctxt_switches:"),
                field("nonvoluntary_ctxt_switches:"),
            ),
        );
    }
    threads
}

/// utime + stime of each thread of a process, in clock ticks, by thread
/// id, with the thread's name.
fn thread_cpu_ticks(pid: u32) -> HashMap<String, (String, u64)> {
    let mut threads = HashMap::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in entries.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let name = text[open + 1..close].to_owned();
        let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        threads.insert(tid, (name, field(11) + field(12)));
    }
    threads
}

/// What self-monitoring and the state file cost per tick, in CPU time.
fn selfmon(opts: &Opts) {
    use pattoo_agentd::counters::{PollerCounters, ProcessCounters};
    use pattoo_agentd::delivery::StatsSnapshot;
    use pattoo_agentd::telemetry::figures::{Figures, PollerEntry, Sources};
    use pattoo_agentd::telemetry::state::{self, State};

    let ticks = opts.get("ticks", 5_000) as u32;
    let pollers: Vec<PollerEntry> = [
        ("devices", "modbus_tcp"),
        ("web", "http"),
        ("shell", "command"),
    ]
    .into_iter()
    .map(|(name, kind)| {
        let counters = Arc::new(PollerCounters::default());
        counters.record_poll(now_ms(), 25, Some(10_000), 0);
        PollerEntry {
            name: name.into(),
            kind,
            interval: Duration::from_secs(5),
            counters,
        }
    })
    .collect();
    let delivery = StatsSnapshot {
        posted: 1_000,
        cached: 10,
        replayed: 10,
        ..StatsSnapshot::default()
    };
    let process = ProcessCounters::default();
    let started_ms = now_ms();
    let agent = AgentContext {
        agent_id: AGENT_ID,
        agent_program: "pattoo_agentd_self",
        hostname: "gw1.example.org",
        polling_interval_ms: 60_000,
    };
    let figures = |now_ms| {
        Figures::read(&Sources {
            pollers: &pollers,
            delivery: &delivery,
            server_reachable: Some(true),
            process: &process,
            started_ms,
            now_ms,
        })
    };

    let t0 = thread_cpu_time();
    let mut datapoints = 0;
    let mut bytes = 0;
    for _ in 0..ticks {
        let now = now_ms();
        let body = build(&agent, now, &figures(now).targets(now)).body.unwrap();
        datapoints = body.datapoints;
        bytes = body.json.len();
        std::hint::black_box(body);
    }
    let tick = (thread_cpu_time() - t0) / ticks;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(state::FILE_NAME);
    let t0 = thread_cpu_time();
    for _ in 0..ticks {
        let state = State {
            pid: std::process::id(),
            version: "bench".into(),
            written_ms: now_ms(),
            server: "http://127.0.0.1:20201".into(),
            metrics_listen: None,
            last_post: None,
            last_exchange: None,
            unhealthy: None,
            figures: figures(now_ms()),
        };
        state::write_atomically(&path, &state).unwrap();
    }
    let write = (thread_cpu_time() - t0) / ticks;
    let per_minute = tick + write * 12;
    println!(
        "selfmon: {ticks} ticks, 3 pollers; CPU time per self-monitoring tick (figures + body of {datapoints} datapoints, {bytes} bytes) {:.1} us; \
         per state file write {:.1} us; per minute as shipped (1 tick + 12 writes) {:.2} ms",
        tick.as_secs_f64() * 1e6,
        write.as_secs_f64() * 1e6,
        per_minute.as_secs_f64() * 1e3
    );
}

/// Writes `count` small bodies into the cache as the agent names them,
/// timestamps one millisecond apart ending an hour ago.
fn fill_cache(cache_dir: &Path, count: usize, datapoints: usize) -> u64 {
    let agent_dir = cache_dir.join(AGENT_ID);
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = AgentContext {
        agent_id: AGENT_ID,
        agent_program: "pattoo_agent_modbustcpd",
        hostname: "gw1.example.org",
        polling_interval_ms: 10_000,
    };
    let first = now_ms() - 3_600_000 - count as u64;
    let mut bytes = 0;
    for i in 0..count {
        let ts = first + i as u64;
        let target = TargetData {
            target: "meter-1".into(),
            datapoints: (0..datapoints)
                .map(|d| {
                    DataPoint::new(
                        format!("input_register_{}", 30001 + d),
                        Value::Int((i + d) as i64),
                        DataType::Int,
                        ts,
                    )
                    .with_metadata(Metadata::new("unit", "001"))
                })
                .collect(),
        };
        let body = build(&agent, ts, &[target]).body.unwrap();
        bytes += body.json.len() as u64;
        std::fs::write(agent_dir.join(format!("{ts}_{AGENT_ID}.json")), &body.json).unwrap();
    }
    bytes
}

fn startup(opts: &Opts) {
    let bodies = opts.get("bodies", 100_000) as usize;
    let runs = opts.get("runs", 5);
    let sims = Sims::start(0);
    let dir = tempfile::tempdir().unwrap();
    // One command poller, so the daemon has something to schedule; the
    // receiver is up, so replay starts right after READY.
    let config_dir = write_config(dir.path(), &sims, 0, 60, true);
    let bytes = fill_cache(&dir.path().join("cache"), bodies, 1);
    println!(
        "startup: {bodies} cached bodies ({:.1} MiB) in {}",
        bytes as f64 / 1048576.0,
        dir.path().display()
    );
    for run in 0..runs {
        let daemon = Daemon::start(&config_dir, dir.path());
        let rss_ready = status_kib(&daemon.pid, "VmRSS");
        let hwm_ready = status_kib(&daemon.pid, "VmHWM");
        std::thread::sleep(Duration::from_secs(2));
        let hwm_later = status_kib(&daemon.pid, "VmHWM");
        let ready_ms = daemon.ready_after.as_secs_f64() * 1e3;
        daemon.stop();
        println!(
            "  run {run}: READY after {:.0} ms; VmRSS at READY {:.1} MiB, VmHWM at READY {:.1} MiB, VmHWM 2 s later (replaying) {:.1} MiB",
            ready_ms,
            rss_ready as f64 / 1024.0,
            hwm_ready as f64 / 1024.0,
            hwm_later as f64 / 1024.0
        );
        // Put back what replay delivered, so every run starts with `bodies`.
        let present = std::fs::read_dir(dir.path().join("cache").join(AGENT_ID))
            .unwrap()
            .count();
        if present < bodies {
            std::fs::remove_dir_all(dir.path().join("cache").join(AGENT_ID)).unwrap();
            fill_cache(&dir.path().join("cache"), bodies, 1);
        }
    }
}

fn replay(opts: &Opts) {
    let bodies = opts.get("bodies", 10_000) as usize;
    let datapoints = opts.get("body-datapoints", 20) as usize;
    let devices = opts.get("devices", 50) as usize;
    let registers = opts.get("registers", 200) as usize;
    let interval_s = opts.get("interval-s", 5);
    let mut sims = Sims::start(devices);
    let dir = tempfile::tempdir().unwrap();
    let config_dir = write_config(dir.path(), &sims, registers, interval_s, false);
    let bytes = fill_cache(&dir.path().join("cache"), bodies, datapoints);
    let daemon = Daemon::start(&config_dir, dir.path());
    let t0 = Instant::now();
    let ready_ms = now_ms();
    let deadline = Duration::from_secs(120);
    let mut stats = sims.stats();
    while (stats.replayed_posts as usize) < bodies && t0.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        stats = sims.stats();
    }
    let took = t0.elapsed();
    // Let one more live poll land after the replay, then look at lateness.
    std::thread::sleep(Duration::from_secs(interval_s));
    let end = sims.stats();
    let live_window_s = now_ms().saturating_sub(ready_ms) as f64 / 1000.0;
    daemon.stop();
    println!(
        "replay: {bodies} cached bodies of {datapoints} datapoints ({:.1} MiB), live Modbus poller {devices} x {registers} every {interval_s} s",
        bytes as f64 / 1048576.0
    );
    println!(
        "  replayed {} in {:.2} s after READY: {:.0} bodies/s",
        stats.replayed_posts,
        took.as_secs_f64(),
        stats.replayed_posts as f64 / took.as_secs_f64()
    );
    println!(
        "  live bodies: {} in {:.1} s (about {:.0} expected); latest arrival {} ms after its poll started",
        end.live_posts,
        live_window_s,
        live_window_s / interval_s as f64,
        end.max_live_lateness_ms
    );
}

// ---------------------------------------------------------------------------
// SNMP: a farm of snmpsim devices

/// The `.snmprec` lines of a device with `interfaces` interfaces: ifTable
/// and ifXTable, 32- and 64-bit counters, sorted by OID as snmpsim wants.
fn snmprec(interfaces: u32, seed: u64) -> String {
    let mut rows: Vec<(Vec<u32>, String)> = Vec::new();
    let mut add = |oid: &str, index: u32, tag: &str, value: String| {
        let mut arcs: Vec<u32> = oid.split('.').map(|n| n.parse().unwrap()).collect();
        arcs.push(index);
        rows.push((arcs, format!("{tag}|{value}")));
    };
    add("1.3.6.1.2.1.1.5", 0, "4", format!("device-{seed}"));
    for i in 1..=interfaces {
        let n = u64::from(i) * 7919 + seed * 104_729;
        let t = "1.3.6.1.2.1.2.2.1";
        let x = "1.3.6.1.2.1.31.1.1.1";
        add(&format!("{t}.1"), i, "2", i.to_string());
        add(&format!("{t}.2"), i, "4", format!("GigabitEthernet0/{i}"));
        add(&format!("{t}.3"), i, "2", "6".into());
        add(&format!("{t}.4"), i, "2", "1500".into());
        add(&format!("{t}.5"), i, "66", "1000000000".into());
        add(
            &format!("{t}.6"),
            i,
            "4x",
            format!("0011223344{:02x}", i % 256),
        );
        add(&format!("{t}.7"), i, "2", "1".into());
        add(
            &format!("{t}.8"),
            i,
            "2",
            if i % 5 == 0 { "2" } else { "1" }.into(),
        );
        add(&format!("{t}.9"), i, "67", (n % 100_000).to_string());
        for (column, scale) in [
            (10, 1000),
            (11, 10),
            (13, 1),
            (14, 1),
            (16, 900),
            (17, 9),
            (19, 1),
            (20, 1),
        ] {
            add(
                &format!("{t}.{column}"),
                i,
                "65",
                ((n * scale) % 4_294_967_296).to_string(),
            );
        }
        add(&format!("{x}.1"), i, "4", format!("Gi0/{i}"));
        for column in 2u64..=5 {
            add(
                &format!("{x}.{column}"),
                i,
                "65",
                (n % 1_000_000 + column).to_string(),
            );
        }
        for column in 6u64..=13 {
            add(
                &format!("{x}.{column}"),
                i,
                "70",
                (n * 1_000_003 * column).to_string(),
            );
        }
        add(&format!("{x}.15"), i, "66", "1000".into());
        add(
            &format!("{x}.18"),
            i,
            "4",
            format!("port {i} to rack {}", i % 12),
        );
    }
    rows.sort();
    let mut text = String::new();
    for (arcs, rest) in rows {
        let oid: Vec<String> = arcs.iter().map(u32::to_string).collect();
        text.push_str(&format!("{}|{rest}\n", oid.join(".")));
    }
    text
}

/// snmpsim serving a farm of `devices` on 127.0.2.x, device `d` with
/// community `device{d:03}` and `interfaces` interfaces, split over
/// `processes` snmpsim processes (one Python process answers a few
/// hundred GETBULKs a second at most).
struct SnmpFarm {
    _sims: Vec<snmpsim::SnmpSim>,
    /// (address, port, community) per device.
    devices: Vec<(std::net::Ipv4Addr, u16, String)>,
}

fn snmp_farm(devices: usize, interfaces: u32, max_var_binds: usize, processes: usize) -> SnmpFarm {
    assert!(devices <= 250, "at most 250 devices on 127.0.2.x");
    let processes = processes.clamp(1, devices.max(1));
    let data: Vec<tempfile::TempDir> = (0..processes)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut addresses = vec![Vec::new(); processes];
    let mut all = Vec::new();
    for d in 0..devices {
        let p = d % processes;
        std::fs::write(
            data[p].path().join(format!("device{d:03}.snmprec")),
            snmprec(interfaces, d as u64),
        )
        .unwrap();
        let address = std::net::Ipv4Addr::new(127, 0, 2, d as u8 + 1);
        addresses[p].push(address);
        all.push(address);
    }
    // Started together: each loads its devices' files before it listens.
    let sims: Vec<snmpsim::SnmpSim> = std::thread::scope(|scope| {
        let started: Vec<_> = (0..processes)
            .map(|p| {
                let (data, addresses) = (&data[p], &addresses[p]);
                scope.spawn(move || {
                    snmpsim::SnmpSim::launch(
                        data.path(),
                        addresses,
                        Duration::from_secs(300),
                        Some(max_var_binds),
                    )
                })
            })
            .collect();
        started.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let port = |address: &std::net::Ipv4Addr| {
        sims.iter()
            .find_map(|sim| sim.ports.get(address).copied())
            .expect("every device is served")
    };
    SnmpFarm {
        devices: all
            .iter()
            .enumerate()
            .map(|(d, a)| (*a, port(a), format!("device{d:03}")))
            .collect(),
        _sims: sims,
    }
}

fn snmp(opts: &Opts) {
    let devices = opts.get("devices", 200) as usize;
    let interfaces = opts.get("interfaces", 24) as u32;
    let cycles = opts.get("cycles", 5) as usize;
    // snmpsim's own bound on a GETBULK response; a larger one is a device
    // that fits a whole 24-interface table in one response.
    let max_var_binds = opts.get("max-var-binds", 64) as usize;
    // About 25 devices a simulator process, so the farm answers a poll of
    // 200 devices within the interval.
    let processes = opts.get("sim-processes", devices.div_ceil(25) as u64) as usize;
    let farm = snmp_farm(devices, interfaces, max_var_binds, processes);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display();
    let pattoo = format!(
        "pattoo:\n  log_level: warning\n  log_directory: {state}/log\n  cache_directory: {state}/cache\n  \
         daemon_directory: {state}/daemon\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 9\n"
    );

    // One directory per poller kind, each polled on its own.
    let preset = dir.path().join("preset");
    std::fs::create_dir(&preset).unwrap();
    std::fs::write(preset.join("pattoo.yaml"), &pattoo).unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    // One poller for the whole farm, each target with its own community
    // and port, as the issue's comparison configures it; `--per-device 1`:
    // a poller per device instead.
    let per_device = opts.get("per-device", 0) != 0;
    let mut yaml = String::from("pattoo_agentd:\n  pollers:\n");
    if !per_device {
        yaml.push_str("    - name: if_mib\n      type: snmp\n      timeout_ms: 30000\n      preset: if_mib\n      targets:\n");
    }
    for (address, port, community) in &farm.devices {
        let file = secrets.join(community);
        std::fs::write(&file, community).unwrap();
        yaml.push_str(&if per_device {
            format!(
                "    - name: {community}\n      type: snmp\n      targets: [\"{address}:{port}\"]\n      community: {{file: {}}}\n      timeout_ms: 30000\n      preset: if_mib\n",
                file.display()
            )
        } else {
            format!(
                "        - {{address: \"{address}:{port}\", name: {community}, community: {{file: {}}}}}\n",
                file.display()
            )
        });
    }
    std::fs::write(preset.join("pattoo_agentd.yaml"), yaml).unwrap();

    let ifmibd = dir.path().join("ifmibd");
    std::fs::create_dir(&ifmibd).unwrap();
    std::fs::write(ifmibd.join("pattoo.yaml"), &pattoo).unwrap();
    let interval_s = opts.get("interval-s", 10);
    let ifmibd_yaml = ifmibd_yaml(&farm, interval_s);
    std::fs::write(ifmibd.join("pattoo_agent_snmp_ifmibd.yaml"), &ifmibd_yaml).unwrap();

    // Each poll a task of the runtime, as the daemon runs it; `--joined 1`
    // joins them on this thread instead (every answer then wakes this
    // thread from a worker).
    let spawn = opts.get("joined", 0) == 0;
    let runtime = runtime();
    println!("snmp: {devices} snmpsim devices x {interfaces} interfaces (ifTable + ifXTable, v2c, one community each, at most {max_var_binds} varbinds a response, {} simulator processes), {cycles} cycles", farm._sims.len());
    let mut table = Vec::new();
    for (name, short, config_dir) in [
        (
            if per_device {
                "IF-MIB preset (type: snmp, one poller per device)"
            } else {
                "IF-MIB preset (type: snmp, one poller, a community per target)"
            },
            if per_device {
                "pattoo-agentd, IF-MIB preset, a poller per device"
            } else {
                "pattoo-agentd, IF-MIB preset, one poller"
            },
            &preset,
        ),
        (
            "pattoo_agent_snmp_ifmibd.yaml drop-in (one poller)",
            "pattoo-agentd, ifmibd drop-in, one poller",
            &ifmibd,
        ),
    ] {
        let settings = config::load(config_dir).unwrap_or_else(|e| panic!("{e}"));
        let rss_before = status_kib("self", "VmRSS");
        let Cycles {
            cpus,
            walls,
            values,
            mut pss,
        } = our_cycles(&runtime, &settings, cycles, spawn);
        pattoo_agentd::release_freed_memory();
        let rss_after = status_kib("self", "VmRSS");
        println!("  {name}:");
        for k in 0..cycles {
            println!(
                "    cycle {k}: cpu {:8.1} ms  wall {:8.1} ms  values {:6}  cpu per value {:.2} us",
                cpus[k],
                walls[k],
                values[k],
                cpus[k] * 1e3 / values[k].max(1) as f64
            );
        }
        let mut c = cpus[1.min(cycles - 1)..].to_vec();
        c.sort_by(f64::total_cmp);
        println!(
            "    steady cycles (2..): cpu median {:.1} ms, min {:.1}, max {:.1}; RSS of this process {:.1} MiB -> {:.1} MiB ({:+.1} MiB)",
            percentile(&c, 50.0),
            c[0],
            c[c.len() - 1],
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            (rss_after as f64 - rss_before as f64) / 1024.0
        );
        pss.sort_unstable();
        table.push(Row {
            name: short.to_owned(),
            cpu_ms: percentile(&c, 50.0),
            values: values[cycles - 1],
            pss: format!(
                "{:.1} MiB between polls (this process, with the harness)",
                pss.get(pss.len() / 2).copied().unwrap_or(0) as f64 / 1024.0
            ),
        });
    }
    drop(runtime);

    if !Path::new(COLLECTD).exists() || !Path::new(COLLECTD_SNMP).exists() {
        println!(
            "  collectd: comparison skipped: {COLLECTD} or {COLLECTD_SNMP} is missing \
             (on Debian or Ubuntu: apt-get install collectd-core libyajl2)"
        );
    } else {
        match collectd(&farm, interfaces, cycles, interval_s) {
            Ok(row) => table.push(row),
            Err(e) => println!("  collectd: no figures: {e}"),
        }
    }
    match python_ifmibd(&ifmibd_yaml, cycles, interval_s) {
        Ok(row) => table.push(row),
        Err(e) => println!("  Python pattoo_agent_snmp_ifmibd: comparison skipped: {e}"),
    }
    let steady = cycles.saturating_sub(1).max(1);
    println!(
        "side by side, CPU per steady cycle ({steady} steady cycles; ours: the median, poll and body in this process; \
         collectd: its whole process over {steady} intervals of {interval_s} s, per interval; \
         the Python ifmibd: its process and the pool workers it reaped, over {steady} polls, per poll):"
    );
    println!("| poller | CPU per cycle | values | CPU per value | PSS |");
    println!("| --- | --- | --- | --- | --- |");
    for row in &table {
        println!(
            "| {} | {:.1} ms | {} | {:.2} us | {} |",
            row.name,
            row.cpu_ms,
            row.values,
            row.cpu_ms * 1e3 / row.values.max(1) as f64,
            row.pss
        );
    }
}

/// What [`our_cycles`] measured, per cycle.
struct Cycles {
    /// CPU of this process (getrusage), ms.
    cpus: Vec<f64>,
    walls: Vec<f64>,
    values: Vec<usize>,
    /// This process's Pss between polls, KiB (none before the first).
    pss: Vec<u64>,
}

/// Polls with every collector of `settings` at once, `cycles` times in
/// this process: poll and body. `spawned`: each poll a task of the
/// runtime, as the daemon runs a poller, so the answers wake the task on
/// the worker that read them; else all joined on this thread.
fn our_cycles(
    runtime: &tokio::runtime::Runtime,
    settings: &config::Settings,
    cycles: usize,
    spawned: bool,
) -> Cycles {
    let mut out = Cycles {
        cpus: Vec::new(),
        walls: Vec::new(),
        values: Vec::new(),
        pss: Vec::new(),
    };
    runtime.block_on(async {
        let mut collectors = collectors(settings);
        for k in 0..cycles {
            if k > 0 {
                // Between polls, outside the timing.
                out.pss.push(pss_kib(std::process::id()));
            }
            let cpu0 = cpu_time();
            let t0 = Instant::now();
            let bodies = if spawned {
                let tasks: Vec<_> = collectors
                    .drain(..)
                    .map(|mut c| {
                        tokio::spawn(async move {
                            let bodies = c.collect().await;
                            (c, bodies)
                        })
                    })
                    .collect();
                let mut bodies = Vec::with_capacity(tasks.len());
                for task in tasks {
                    let (c, polled) = task.await.expect("a poll does not panic");
                    collectors.push(c);
                    bodies.push(polled);
                }
                bodies
            } else {
                futures_util::future::join_all(collectors.iter_mut().map(|c| c.collect())).await
            };
            out.walls.push(t0.elapsed().as_secs_f64() * 1e3);
            out.cpus
                .push(cpu_time().saturating_sub(cpu0).as_secs_f64() * 1e3);
            out.values.push(
                bodies
                    .iter()
                    .flatten()
                    .flatten()
                    .map(|b| b.datapoints)
                    .sum::<usize>(),
            );
        }
    });
    out
}

/// One line of the `snmp` mode's side-by-side table.
struct Row {
    name: String,
    cpu_ms: f64,
    values: usize,
    pss: String,
}

const COLLECTD: &str = "/usr/sbin/collectd";
const COLLECTD_SNMP: &str = "/usr/lib/collectd/snmp.so";

/// Pss of a process in KiB, from `/proc/PID/smaps_rollup` (0 if unreadable).
fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Pss of a process and all its descendants, in KiB: what a program that
/// forks workers (the Python agents' pools) holds in all. Pss shares each
/// page among the processes that map it, so the sum counts none twice.
fn tree_pss_kib(pid: u32) -> u64 {
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pss_kib(pid) + children.into_iter().map(tree_pss_kib).sum::<u64>()
}

/// CPU time the live threads of a process have run, from each
/// `/proc/PID/task/TID/schedstat` (nanoseconds, finer than /proc/PID/stat's
/// clock ticks; a thread that ended is not counted).
fn threads_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What another program's process cost over a window, from /proc.
struct Watched {
    /// utime + stime + cutime + cstime: the process's clock ticks and
    /// those of the children it reaped in the window.
    ticks: u64,
    /// Its live threads' run time (schedstat), in ns; children not counted.
    threads_ns: u64,
    /// Pss of the process and its descendants, KiB, every sample, sorted.
    pss: Vec<u64>,
}

impl Watched {
    /// Clock ticks a second.
    fn hz() -> f64 {
        // SAFETY: sysconf only reads a configuration value.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
    }

    fn ticks_ms(&self) -> f64 {
        self.ticks as f64 * 1e3 / Watched::hz()
    }

    /// The threads' schedstat where /proc has it, else the ticks: for a
    /// process that forks no workers.
    fn threads_ms(&self) -> f64 {
        if self.threads_ns > 0 {
            self.threads_ns as f64 / 1e6
        } else {
            self.ticks_ms()
        }
    }

    fn pss_mib(&self) -> (f64, f64) {
        let mib = |k: u64| k as f64 / 1024.0;
        (
            mib(self.pss[self.pss.len() / 2]),
            mib(self.pss[self.pss.len() - 1]),
        )
    }
}

/// Watches process `pid` from now until `wait` says the window is over:
/// its CPU at both ends, and the Pss of it and its descendants before each
/// call of `wait(250 ms)`, which waits at most that long and returns true
/// when the window has ended.
fn watch(pid: u32, mut wait: impl FnMut(Duration) -> bool) -> Watched {
    let ticks0 = proc_cpu_ticks_with_reaped(pid);
    let ns0 = threads_cpu_ns(pid);
    let mut pss = Vec::new();
    loop {
        pss.push(tree_pss_kib(pid));
        if wait(Duration::from_millis(250)) {
            break;
        }
    }
    let ticks1 = proc_cpu_ticks_with_reaped(pid);
    let ns1 = threads_cpu_ns(pid);
    pss.sort_unstable();
    Watched {
        ticks: ticks1.saturating_sub(ticks0),
        threads_ns: ns1.saturating_sub(ns0),
        pss,
    }
}

/// Another program's daemon, run in a process group of its own, the
/// whole group killed when dropped (workers it forked included).
struct Foreign(Child);

impl Foreign {
    fn spawn(command: &mut Command, what: &str) -> Result<Foreign, String> {
        use std::os::unix::process::CommandExt;
        command
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .map(Foreign)
            .map_err(|e| format!("{what} did not start: {e}"))
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    /// An error when the process has ended: its status and `log`'s tail.
    fn check(&mut self, what: &str, log: &Path) -> Result<(), String> {
        match self.0.try_wait() {
            Ok(Some(status)) => Err(format!("{what} exited ({status}): {}", log_tail(log))),
            _ => Ok(()),
        }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal, to the group this child leads.
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// The last lines of a log file, on one line.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// How many value identifiers collectd's cache holds (`LISTVAL` on its
/// unix socket), or `None` while the socket does not answer.
fn collectd_identifiers(socket: &Path) -> Option<usize> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.write_all(b"LISTVAL\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().next()?.parse().ok()
}

/// collectd's snmp plugin polling the farm: the preset's columns (its
/// 64-bit counters where the preset prefers them) as one table with
/// `ifName` as the instance, in one collectd type whose data sources are
/// those columns, so collectd walks the table once per device. No write
/// plugin: values only reach collectd's cache, which `unixsock` lists to
/// count them. CPU is collectd's whole process from /proc/PID/stat over
/// `cycles - 1` intervals after its first poll has filled the cache
/// (the table's figure from the threads' schedstat where /proc has it),
/// starting half an interval after that; PSS sampled from
/// /proc/PID/smaps_rollup every 250 ms over the same window.
fn collectd(
    farm: &SnmpFarm,
    interfaces: u32,
    cycles: usize,
    interval_s: u64,
) -> Result<Row, String> {
    use pattoo_agentd::pollers::snmp::ifmib::PRESET_COLUMNS;
    let dir = tempfile::tempdir().unwrap();
    let gauges = ["ifAdminStatus", "ifOperStatus", "ifHighSpeed"];
    let sources: Vec<String> = PRESET_COLUMNS
        .iter()
        .map(|(key, _, _)| {
            let kind = if gauges.contains(key) {
                "GAUGE"
            } else {
                "DERIVE"
            };
            format!("{key}:{kind}:0:U")
        })
        .collect();
    let types = dir.path().join("types.db");
    std::fs::write(&types, format!("pattoo_if_mib {}\n", sources.join(", "))).unwrap();
    let socket = dir.path().join("collectd.sock");
    let mut conf = format!(
        "Hostname \"bench\"\nFQDNLookup false\nBaseDir \"{d}\"\nPIDFile \"{d}/collectd.pid\"\n\
         PluginDir \"/usr/lib/collectd\"\nTypesDB \"{t}\"\nInterval {interval_s}\n\
         LoadPlugin unixsock\n<Plugin unixsock>\n  SocketFile \"{s}\"\n</Plugin>\n\
         LoadPlugin snmp\n<Plugin snmp>\n  <Data \"if_mib\">\n    Type \"pattoo_if_mib\"\n    Table true\n\
         \x20   TypeInstanceOID \".1.3.6.1.2.1.31.1.1.1.1\"\n    Values",
        d = dir.path().display(),
        t = types.display(),
        s = socket.display(),
    );
    for (_, column, _) in PRESET_COLUMNS {
        conf.push_str(&format!(" \"{column}\""));
    }
    conf.push_str("\n  </Data>\n");
    for (address, port, community) in &farm.devices {
        conf.push_str(&format!(
            "  <Host \"{community}\">\n    Address \"{address}:{port}\"\n    Version 2\n    Community \"{community}\"\n\
             \x20   Collect \"if_mib\"\n    Timeout 30\n    Retries 0\n  </Host>\n"
        ));
    }
    conf.push_str("</Plugin>\n");
    let conf_path = dir.path().join("collectd.conf");
    std::fs::write(&conf_path, &conf).unwrap();
    let version = Command::new(COLLECTD)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.strip_prefix("collectd ")
                    .map(|v| v.split(',').next().unwrap_or(v).to_owned())
            })
        })
        .unwrap_or_default();
    let log_path = dir.path().join("collectd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Foreign::spawn(
        Command::new(COLLECTD)
            .arg("-f")
            .arg("-C")
            .arg(&conf_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
        COLLECTD,
    )?;
    let spawned = Instant::now();
    let expected = farm.devices.len() * interfaces as usize;
    println!(
        "  collectd {version} snmp plugin ({expected} rows of {} columns, every {interval_s} s, no write plugin):",
        PRESET_COLUMNS.len()
    );
    // Wait for the first poll to have filled the cache.
    let deadline = Instant::now() + Duration::from_secs(3 * interval_s + 60);
    let first = loop {
        daemon.check("collectd", &log_path)?;
        let seen = collectd_identifiers(&socket).unwrap_or(0);
        if seen >= expected {
            break Instant::now();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "collectd's cache held {seen} of {expected} table rows after {} s: {}",
                3 * interval_s + 60,
                log_tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let steady = cycles.saturating_sub(1).max(1);
    std::thread::sleep(Duration::from_millis(interval_s * 500));
    let start = Instant::now();
    let window = Duration::from_secs(interval_s * steady as u64);
    let watched = watch(daemon.id(), |most| {
        std::thread::sleep(most.min(window.saturating_sub(start.elapsed())));
        start.elapsed() >= window
    });
    daemon.check("collectd", &log_path)?;
    let rows = collectd_identifiers(&socket).unwrap_or(0);
    drop(daemon);
    let ticks_ms = watched.ticks_ms() / steady as f64;
    let cpu_ms = watched.threads_ms() / steady as f64;
    let (median, peak) = watched.pss_mib();
    println!(
        "    first poll done {:.1} s after start; {} ticks ({} a second) over {steady} intervals: cpu {ticks_ms:.1} ms per cycle \
         ({cpu_ms:.1} ms by its threads' schedstat); {rows} rows cached; PSS median {median:.1} MiB, peak {peak:.1} MiB",
        first.duration_since(spawned).as_secs_f64(),
        watched.ticks,
        Watched::hz(),
    );
    Ok(Row {
        name: format!("collectd {version} snmp plugin"),
        cpu_ms,
        values: rows * PRESET_COLUMNS.len(),
        pss: format!("{median:.1} MiB median, {peak:.1} MiB peak (whole process)"),
    })
}

/// `pattoo_agent_snmp_ifmibd.yaml` for the farm, in the layout both
/// agents read (under the agent's name): every device in one polling
/// group, an auth group per device with its community and port.
fn ifmibd_yaml(farm: &SnmpFarm, interval_s: u64) -> String {
    let mut yaml = format!(
        "pattoo_agent_snmp_ifmibd:\n  polling_interval: {interval_s}\n  polling_groups:\n    \
         - group_name: all\n      ip_targets:\n"
    );
    for (address, _, _) in &farm.devices {
        yaml.push_str(&format!("        - {address}\n"));
    }
    yaml.push_str("      oids:\n        - address: .1.3.6.1.2.1.2.2.1.10\n  auth_groups:\n");
    for (address, port, community) in &farm.devices {
        yaml.push_str(&format!(
            "    - group_name: {community}\n      snmp_version: 2\n      snmp_community: {community}\n      \
             snmp_port: {port}\n      ip_targets: [{address}]\n"
        ));
    }
    yaml
}

/// What `bin/pattoo_agent_snmp_ifmibd.py` imports, pinned: the Python
/// agent's libraries, and those PattooShared imports without declaring
/// them. easysnmp builds against Net-SNMP (Debian's `libsnmp-dev`).
const PYTHON_SNMP_AGENT: PythonDeps = PythonDeps {
    name: "python-snmp-agent",
    packages: &[
        "PattooShared==0.0.84",
        "easysnmp==0.2.6",
        "gunicorn==21.2.0",
        "PyYAML==6.0.1",
        "requests==2.31.0",
    ],
    probe: "import importlib.metadata as m, sys\n\
        import pattoo_shared.agent, pattoo_shared.phttp, easysnmp, yaml, requests\n\
        sys.exit(m.version('PattooShared') != '0.0.84' or m.version('easysnmp') != '0.2.6')",
};

/// The commit of palisadoes/pattoo-agents whose agents the harness runs.
const PATTOO_AGENTS_COMMIT: &str = "d73453ceac1747573dfbcad4da724325e86b208d";

/// `paths` of the Python agents' source at [`PATTOO_AGENTS_COMMIT`], from
/// the git directory `PATTOO_AGENTS_GIT` names, written under `dest`.
fn agents_source(dest: &Path, paths: &[&str]) -> Result<(), String> {
    let git = std::env::var("PATTOO_AGENTS_GIT").map_err(|_| {
        "set PATTOO_AGENTS_GIT to a git directory of palisadoes/pattoo-agents".to_owned()
    })?;
    std::fs::create_dir_all(dest).unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg("g=$1 c=$2 d=$3; shift 3; git --git-dir \"$g\" archive \"$c\" \"$@\" | tar -x -C \"$d\"")
        .args(["sh", &git, PATTOO_AGENTS_COMMIT])
        .arg(dest)
        .args(paths)
        .status()
        .map_err(|e| e.to_string())?;
    if archive.success() {
        Ok(())
    } else {
        Err(format!("git archive of {paths:?} from {git} failed"))
    }
}

/// The Python `pattoo_agent_snmp_ifmibd` daemon (its own loop, run in the
/// foreground by `benches/python/snmp_ifmibd.py`) polling the farm every
/// `interval_s` with `yaml`, posting to the harness's receiver. Its first
/// poll warms up; then CPU is its process's from /proc/PID/stat, with the
/// pool workers each poll forks and reaps, from the end of one post to the
/// end of the post `cycles - 1` polls later; Pss of it and its workers
/// every 250 ms over the same window. The error says why it cannot run.
fn python_ifmibd(yaml: &str, cycles: usize, interval_s: u64) -> Result<Row, String> {
    let dir = tempfile::tempdir().unwrap();
    // The script checks that it sits in a directory named pattoo-agents.
    let source = dir.path().join("pattoo-agents");
    agents_source(
        &source,
        &["bin/pattoo_agent_snmp_ifmibd.py", "pattoo_agents"],
    )?;
    let pythonpath = PYTHON_SNMP_AGENT
        .path()
        .map_err(|e| format!("{e}\n  (easysnmp builds against Net-SNMP: on Debian or Ubuntu, apt-get install libsnmp-dev)"))?;
    let mut sims = Sims::start(0);
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let state = dir.path().join("state");
    for sub in ["log", "cache", "daemon"] {
        // PattooShared exits when one is missing.
        std::fs::create_dir_all(state.join(sub)).unwrap();
    }
    write_pattoo_yaml(&config, &state, sims.receiver_port);
    std::fs::write(config.join("pattoo_agent_snmp_ifmibd.yaml"), yaml).unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut agent = Foreign::spawn(
        Command::new(python::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/python/snmp_ifmibd.py"
            ))
            .arg("--agents-src")
            .arg(&source)
            .env("PYTHONPATH", &pythonpath)
            .env("PATTOO_CONFIGDIR", &config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap()),
        "the Python agent",
    )?;
    // `posted K values V success S` after each post.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = agent.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let patience = Duration::from_secs(3 * interval_s + 120);
    let next_post = |agent: &mut Foreign, wait: Duration| -> Result<Option<usize>, String> {
        match lines.recv_timeout(wait) {
            Ok(line) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["posted", _, "values", values, "success", "True"] => {
                        Ok(Some(values.parse().unwrap_or(0)))
                    }
                    _ => Err(format!(
                        "the Python agent's post failed ({line}): {}",
                        log_tail(&log_path)
                    )),
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                agent.check("the Python agent", &log_path)?;
                Ok(None)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                agent.check("the Python agent", &log_path)?;
                Err(format!(
                    "the Python agent closed its output: {}",
                    log_tail(&log_path)
                ))
            }
        }
    };
    let spawned = Instant::now();
    let first_values = next_post(&mut agent, patience)?.ok_or_else(|| {
        format!(
            "no post from the Python agent {} s after start: {}",
            patience.as_secs(),
            log_tail(&log_path)
        )
    })?;
    let first = spawned.elapsed();
    let posts_before = sims.stats();
    let steady = cycles.saturating_sub(1).max(1);
    let mut posted = 0;
    let mut values = first_values;
    let mut failure = None;
    let mut quiet = Duration::ZERO;
    let watched = watch(agent.id(), |most| match next_post(&mut agent, most) {
        Ok(Some(v)) => {
            values = v;
            posted += 1;
            quiet = Duration::ZERO;
            posted == steady
        }
        Ok(None) => {
            quiet += most;
            if quiet > patience {
                failure = Some(format!(
                    "no post from the Python agent for {} s",
                    patience.as_secs()
                ));
            }
            failure.is_some()
        }
        Err(e) => {
            failure = Some(e);
            true
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let seen = sims.stats();
    drop(agent);
    let cpu_ms = watched.ticks_ms() / steady as f64;
    let (median, peak) = watched.pss_mib();
    println!(
        "  Python pattoo_agent_snmp_ifmibd (pattoo-agents {}, PattooShared 0.0.84, easysnmp 0.2.6, a pool of {} workers per poll, every {interval_s} s):",
        &PATTOO_AGENTS_COMMIT[..7],
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "    first post {:.1} s after start ({first_values} values); {} ticks ({} a second) over {steady} polls: \
         cpu {cpu_ms:.1} ms per cycle; {values} values per post, {} posts, {} B posted per poll; PSS median {median:.1} MiB, peak {peak:.1} MiB",
        first.as_secs_f64(),
        watched.ticks,
        Watched::hz(),
        seen.posts - posts_before.posts,
        (seen.bytes - posts_before.bytes) / steady as u64,
    );
    Ok(Row {
        name: "Python pattoo_agent_snmp_ifmibd".to_owned(),
        cpu_ms,
        values,
        pss: format!("{median:.1} MiB median, {peak:.1} MiB peak (process and pool workers)"),
    })
}

fn opcua(opts: &Opts) {
    let count = opts.get("servers", 10) as usize;
    let nodes = opts.get("nodes", 200) as usize;
    let cycles = opts.get("cycles", 10) as usize;
    let bulk = nodes.to_string();
    let servers: Vec<asyncua::OpcuaServer> = (0..count)
        .map(|_| asyncua::start(&["--bulk", &bulk]).expect("asyncua, to serve the OPC UA nodes"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display();
    let pattoo = format!(
        "pattoo:\n  log_level: warning\n  log_directory: {state}/log\n  cache_directory: {state}/cache\n  \
         daemon_directory: {state}/daemon\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 9\n"
    );
    let ns = servers[0].namespace;

    let native = dir.path().join("native");
    std::fs::create_dir(&native).unwrap();
    std::fs::write(native.join("pattoo.yaml"), &pattoo).unwrap();
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let mut yaml = format!(
        "pattoo_agentd:\n  pollers:\n    - name: plant\n      type: opcua\n      servers: {urls:?}\n      timeout_ms: 30000\n      nodes:\n"
    );
    for i in 0..nodes {
        yaml.push_str(&format!(
            "        - {{node: \"ns={ns};s=Bulk.{i}\", key: bulk_{i}}}\n"
        ));
    }
    std::fs::write(native.join("pattoo_agentd.yaml"), yaml).unwrap();

    let opcuad = dir.path().join("opcuad");
    std::fs::create_dir(&opcuad).unwrap();
    std::fs::write(opcuad.join("pattoo.yaml"), &pattoo).unwrap();
    let mut yaml =
        String::from("pattoo_agent_opcuad:\n  polling_interval: 300\n  polling_groups:\n");
    for server in &servers {
        yaml.push_str(&format!(
            "    - group_name: g{}\n      ip_target: 127.0.0.1\n      ip_port: {}\n      username: ''\n      password: ''\n      nodes:\n",
            server.port, server.port
        ));
        for i in 0..nodes {
            yaml.push_str(&format!("        - address: ns={ns};s=Bulk.{i}\n"));
        }
    }
    std::fs::write(opcuad.join("pattoo_agent_opcuad.yaml"), yaml).unwrap();

    for sub in ["log", "cache", "daemon"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let runtime = runtime();
    let mut medians = Vec::new();
    println!("opcua: {count} asyncua servers x {nodes} Double nodes, {cycles} cycles");
    for (name, config_dir) in [
        ("type: opcua (one poller, every server)", &native),
        (
            "pattoo_agent_opcuad.yaml drop-in (a group per server)",
            &opcuad,
        ),
    ] {
        let settings = config::load(config_dir).unwrap_or_else(|e| panic!("{e}"));
        let Cycles {
            cpus,
            walls,
            values,
            pss: _,
        } = our_cycles(&runtime, &settings, cycles, false);
        println!("  {name}:");
        for k in 0..cycles {
            println!(
                "    cycle {k}: cpu {:8.2} ms  wall {:8.2} ms  values {:6}  cpu per value {:.2} us",
                cpus[k],
                walls[k],
                values[k],
                cpus[k] * 1e3 / values[k].max(1) as f64
            );
        }
        // The first cycle makes the sessions.
        let mut c = cpus[1.min(cycles - 1)..].to_vec();
        c.sort_by(f64::total_cmp);
        let steady_values = values[cycles - 1].max(1) as f64;
        medians.push((name, percentile(&c, 50.0)));
        println!(
            "    steady cycles (2..): cpu median {:.2} ms, min {:.2}, max {:.2}; {:.2} us per value",
            percentile(&c, 50.0),
            c[0],
            c[c.len() - 1],
            percentile(&c, 50.0) * 1e3 / steady_values
        );
    }

    let path = match PYTHON_OPCUA_AGENT.path() {
        Ok(path) => path,
        Err(why) => {
            println!("  the Python agent's cycle: skipped, {why}");
            return;
        }
    };
    let output = Command::new(python::python())
        .arg("benches/python/opcua_cycle.py")
        .args(["--cycles", &cycles.to_string()])
        .env("PATTOO_CONFIGDIR", &opcuad)
        .env("PYTHONPATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python agent's cycle failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut python_cpus = Vec::new();
    println!("  the Python agent's cycle (pattoo_agent_opcuad.yaml, a process pool per poll):");
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("    {line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "cpu_ms") {
            python_cpus.push(words[at + 1].parse::<f64>().unwrap());
        }
    }
    let mut c = python_cpus[1.min(python_cpus.len() - 1)..].to_vec();
    c.sort_by(f64::total_cmp);
    let python_median = percentile(&c, 50.0);
    println!("    steady cycles (2..): cpu median {python_median:.2} ms");
    for (name, median) in medians {
        println!(
            "  Python / {name}: {:.1}x the CPU per steady cycle",
            python_median / median
        );
    }
}

/// What `benches/python/opcua_cycle.py` imports, pinned: the Python OPC UA
/// agent's libraries and those PattooShared imports without declaring them.
const PYTHON_OPCUA_AGENT: PythonDeps = PythonDeps {
    name: "python-opcua-agent",
    packages: &[
        "PattooShared==0.0.84",
        "asyncua==1.1.8",
        "PyYAML==6.0.1",
        "requests==2.31.0",
    ],
    probe: "import importlib.metadata as m, sys\n\
        import pattoo_shared.phttp, asyncua, yaml, requests\n\
        sys.exit(m.version('PattooShared') != '0.0.84' or m.version('asyncua') != '1.1.8')",
};

// ---------------------------------------------------------------------------
// Side by side with the Python agent

/// What `benches/python/modbus_cycle.py` imports, pinned: the Python
/// agent's libraries, and the YAML and HTTP libraries PattooShared imports
/// without declaring them.
const PYTHON_AGENT: PythonDeps = PythonDeps {
    name: "python-agent",
    packages: &[
        "PattooShared==0.0.84",
        "pymodbus==2.5.3",
        "PyYAML==6.0.1",
        "requests==2.31.0",
    ],
    probe: "import importlib.metadata as m, sys\n\
        import pattoo_shared.phttp, pymodbus.client.sync, yaml, requests\n\
        sys.exit(m.version('PattooShared') != '0.0.84' or m.version('pymodbus') != '2.5.3')",
};

/// The settings' collectors, as the daemon makes them at start.
fn collectors(settings: &config::Settings) -> Vec<collector::Collector> {
    let env = pattoo_agentd::pollers::PollerEnv {
        hostname: pattoo_agentd::identity::hostname(settings.agent.hostname.as_deref()).name,
    };
    collector::collectors(settings, &env, None).unwrap()
}

/// `config/pattoo.yaml`, read by both agents: state under `state`, posts
/// to the harness's receiver.
fn write_pattoo_yaml(config: &Path, state: &Path, receiver_port: u16) {
    std::fs::write(
        config.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_level: warning\n  log_directory: {0}/log\n  cache_directory: {0}/cache\n  \
             daemon_directory: {0}/daemon\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: {1}\n",
            state.display(),
            receiver_port
        ),
    )
    .unwrap();
}

/// `pattoo.yaml` and `pattoo_agent_modbustcpd.yaml` for the Python agent:
/// the devices and registers `write_config` gives ours.
fn write_python_config(dir: &Path, sims: &Sims, registers: usize) -> PathBuf {
    let targets: Vec<String> = sims
        .device_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    write_python_config_for(dir, &targets, sims.receiver_port, registers, 5)
}

/// [`write_python_config`] for `targets` as the agent's file lists them.
fn write_python_config_for(
    dir: &Path,
    targets: &[String],
    receiver_port: u16,
    registers: usize,
    interval_s: u64,
) -> PathBuf {
    let config = dir.join("python");
    for sub in ["log", "cache", "daemon"] {
        std::fs::create_dir_all(config.join(sub)).unwrap();
    }
    write_pattoo_yaml(&config, &config, receiver_port);
    let input = registers.div_ceil(2);
    // As maps with an address: PattooShared 0.0.84's reading of the
    // file, which the agent's daemon uses, skips plain numbers (the
    // cycle driver takes either).
    let list = |first: usize, n: usize| {
        (first..first + n)
            .map(|r| format!("{{address: {r}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        config.join("pattoo_agent_modbustcpd.yaml"),
        format!(
            "pattoo_agent_modbustcpd:\n  polling_interval: {}\n  polling_groups:\n    - group_name: devices\n      \
             ip_targets: [{}]\n      input_registers: [{}]\n      holding_registers: [{}]\n",
            interval_s,
            targets.join(", "),
            list(30001, input),
            list(40001, registers - input)
        ),
    )
    .unwrap();
    config
}

/// One run of the Python driver: per cycle CPU and wall (ms) and values;
/// per run what the devices and the receiver saw.
struct PythonRun {
    /// The whole process's, start-up included, from its rusage once reaped.
    whole_cpu_ms: f64,
    cpus: Vec<f64>,
    walls: Vec<f64>,
    values: Vec<u64>,
    seen: SimStats,
}

fn run_python(
    sims: &mut Sims,
    config: &Path,
    pythonpath: &str,
    cycles: usize,
    args: &[&str],
) -> PythonRun {
    let before = sims.stats();
    let children_before = children_cpu_time();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/python/modbus_cycle.py"
        ))
        .args(["--cycles", &cycles.to_string()])
        .args(args)
        .env("PYTHONPATH", pythonpath)
        .env("PATTOO_CONFIGDIR", config)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python driver failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let after = sims.stats();
    let mut run = PythonRun {
        whole_cpu_ms: (children_cpu_time() - children_before).as_secs_f64() * 1e3,
        cpus: Vec::new(),
        walls: Vec::new(),
        values: Vec::new(),
        seen: SimStats {
            requests: after.requests - before.requests,
            connections: after.connections - before.connections,
            posts: after.posts - before.posts,
            bytes: after.bytes - before.bytes,
            ..SimStats::default()
        },
    };
    for line in stdout.lines().filter(|l| l.starts_with("cycle ")) {
        // cycle K cpu_ms C wall_ms W values V errors E
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[9], "0", "the Python agent's reads failed: {line}");
        run.cpus.push(f[3].parse().unwrap());
        run.walls.push(f[5].parse().unwrap());
        run.values.push(f[7].parse().unwrap());
    }
    assert_eq!(run.cpus.len(), cycles, "a line per cycle:\n{stdout}");
    assert_eq!(run.seen.posts, cycles as u64, "one body posted per cycle");
    run
}

fn python(opts: &Opts) {
    match PYTHON_AGENT.path() {
        Ok(path) => {
            if opts.get("cycles", 20) > 0 {
                side_by_side(opts, &path);
            }
            if opts.get("seconds", 60) > 0 {
                daemons_side_by_side(opts);
            }
        }
        Err(e) => {
            eprintln!(
                "load python: the Python agent cannot run here, so there are no figures: {e}"
            );
            std::process::exit(1);
        }
    }
}

fn python_smoke() {
    match PYTHON_AGENT.path() {
        Ok(path) => side_by_side(&Opts::smoke(), &path),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("load: python skipped: {e}")
        }
        Err(e) => panic!("CI=true, yet the Python agent cannot run: {e}"),
    }
}

fn side_by_side(opts: &Opts, pythonpath: &str) {
    let devices = opts.get("devices", 50) as usize;
    let registers = opts.get("registers", 200) as usize;
    let cycles = opts.get("cycles", 20) as usize;
    assert!(
        registers.div_ceil(2) <= 125,
        "the Python agent reads each run of registers in one request, and a device answers \
         at most 125: use --registers 250 or fewer"
    );
    let mut sims = Sims::start(devices);
    let dir = tempfile::tempdir().unwrap();
    let config = write_python_config(dir.path(), &sims, registers);
    println!(
        "python: {devices} devices x {registers} registers, {cycles} cycles each, \
         Python agent (PattooShared 0.0.84, pymodbus 2.5.3) first, then ours on the same devices"
    );
    let variants: [(&str, &[&str]); 2] = [
        (
            "Python agent as it runs (a process pool per poll, one register per holding run)",
            &[],
        ),
        (
            "Python agent's cycle in one process, every register read",
            &["--no-pool", "--full-holding"],
        ),
    ];
    let steady = usize::from(cycles > 1);
    let mut python_medians = Vec::new();
    for (name, args) in variants {
        let run = run_python(&mut sims, &config, pythonpath, cycles, args);
        println!("  {name}:");
        for k in 0..cycles {
            println!(
                "    cycle {k:>3}: wall {:8.1} ms  cpu {:8.1} ms  values {}",
                run.walls[k], run.cpus[k], run.values[k]
            );
        }
        let mut c = run.cpus[steady..].to_vec();
        c.sort_by(f64::total_cmp);
        let mut w = run.walls[steady..].to_vec();
        w.sort_by(f64::total_cmp);
        let median = percentile(&c, 50.0);
        println!(
            "    steady cycles (2..): cpu median {median:.1} ms, min {:.1}, max {:.1}; wall median {:.1} ms; \
             per cycle {} values, {} requests, {} new connections, {} B posted",
            c[0],
            c[c.len() - 1],
            percentile(&w, 50.0),
            run.values[steady],
            run.seen.requests / cycles as u64,
            run.seen.connections / cycles as u64,
            run.seen.bytes / cycles as u64
        );
        println!(
            "    whole Python process, interpreter start-up and imports included: {:.0} ms of CPU, {:.1} ms per cycle",
            run.whole_cpu_ms,
            run.whole_cpu_ms / cycles as f64
        );
        python_medians.push((name, median, run.values[steady]));
    }
    // Ours as configured (by default a poll over delivery.max_body_bytes
    // is posted in parts), then with the whole poll in one body.
    let mut ours = vec![("ours", cycle_on(&mut sims, opts))];
    if !opts.0.contains_key("max-body-bytes") {
        let mut one_body = Opts(opts.0.clone());
        one_body
            .0
            .insert("max-body-bytes".into(), u32::MAX.to_string());
        ours.push(("ours, one body per poll", cycle_on(&mut sims, &one_body)));
    }
    let our_values = (devices * registers) as f64;
    println!("side by side, median CPU per steady cycle ({our_values} values for ours):");
    for (our_name, our_ms) in ours {
        println!("  {our_name}: {our_ms:.2} ms");
        for (name, median, values) in &python_medians {
            println!(
                "    against the {name}: {median:.1} ms for {values} values: {:.1}x less CPU per cycle, {:.1}x less per value",
                median / our_ms,
                (median / *values as f64) / (our_ms / our_values)
            );
        }
    }
}

/// The Python agent's own daemon, killed with its process group (its pool
/// workers) when dropped.
struct PythonDaemon(i32);

impl Drop for PythonDaemon {
    fn drop(&mut self) {
        // SAFETY: getpgid and kill only ask about and signal processes.
        // The daemon's first fork called setsid, so the group is the
        // daemon's and its pool workers' alone.
        unsafe {
            let group = libc::getpgid(self.0);
            if group <= 1 {
                return;
            }
            libc::kill(-group, libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(500));
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// What the Python agent's daemon imports beyond the cycle's packages:
/// PattooShared's `agent` module imports gunicorn for its API agents.
const PYTHON_DAEMON: [&str; 5] = [
    "PattooShared==0.0.84",
    "pymodbus==2.5.3",
    "PyYAML==6.0.1",
    "requests==2.31.0",
    "gunicorn",
];

/// utime + stime of a process and of its reaped children, in clock ticks.
fn proc_cpu_ticks_with_children(pid: u32) -> u64 {
    (14..=17).map(|n| proc_stat_field(pid, n)).sum()
}

/// What the Python agent's daemon did in the measured window.
struct PythonDaemonRun {
    cpu_per_cycle_ms: f64,
    cycles: f64,
    values_per_cycle: u64,
    seen: SimStats,
}

/// The Python agent's daemon as it runs in production:
/// `bin/pattoo_agent_modbustcpd.py --start` of pattoo-agents (the commit
/// [`PATTOO_AGENTS_COMMIT`] of the git directory `PATTOO_AGENTS_GIT`) on
/// the pinned PattooShared and pymodbus. It forks into the background,
/// polls every target on port 502 (so each simulated device has a
/// loopback address of its own, which needs the right to bind port 502)
/// in a process pool made anew each poll, and posts each poll in one body
/// to the receiver as it would to a pattoo server. Its CPU is that of the
/// daemon process and of the pool workers it reaped, from /proc, over
/// `--seconds` after the same warm-up as ours.
fn python_daemon(opts: &Opts) -> Result<PythonDaemonRun, String> {
    let pythonpath = python::try_packages_path(
        "python-agent-daemon",
        &PYTHON_DAEMON,
        &format!("import pattoo_shared.agent\n{}", PYTHON_AGENT.probe),
    )?;
    let devices = opts.get("devices", 50) as usize;
    let registers = opts.get("registers", 200) as usize;
    let interval_s = opts.get("interval-s", 5);
    let seconds = opts.get("seconds", 60);
    let warmup = opts.get("warmup-s", 2 * interval_s + 1);
    let mut sims = Sims::try_start(devices, true)
        .map_err(|e| format!("{e} (the Python agent connects to port 502 only; binding it needs root or CAP_NET_BIND_SERVICE)"))?;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("pattoo-agents");
    agents_source(&source, &["bin", "pattoo_agents"])?;
    let targets: Vec<String> = (0..devices).map(address_502).collect();
    let config = write_python_config_for(
        dir.path(),
        &targets,
        sims.receiver_port,
        registers,
        interval_s,
    );
    let launcher = Command::new(python::python())
        .arg(source.join("bin/pattoo_agent_modbustcpd.py"))
        .arg("--start")
        .env("PYTHONPATH", &pythonpath)
        .env("PATTOO_CONFIGDIR", &config)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !launcher.status.success() {
        return Err(format!(
            "pattoo_agent_modbustcpd.py --start failed: {}{}",
            String::from_utf8_lossy(&launcher.stdout),
            String::from_utf8_lossy(&launcher.stderr)
        ));
    }
    // The launcher has forked the daemon, which writes its PID file.
    let t0 = Instant::now();
    let pid = loop {
        let found = walk_files(&config.join("daemon"))
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with("pattoo_agent_modbustcpd.pid"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = found {
            break pid;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err("the Python daemon wrote no PID file within 60 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let daemon = PythonDaemon(pid);
    std::thread::sleep(Duration::from_secs(warmup));
    let before = sims.stats();
    let ticks0 = proc_cpu_ticks_with_children(pid as u32);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let ticks = proc_cpu_ticks_with_children(pid as u32) - ticks0;
    let elapsed = t0.elapsed();
    let after = sims.stats();
    if std::fs::metadata(format!("/proc/{pid}")).is_err() {
        return Err(format!(
            "the Python daemon (PID {pid}) ended; see {}",
            config.join("log").display()
        ));
    }
    drop(daemon);
    let cycles = elapsed.as_secs_f64() / interval_s as f64;
    Ok(PythonDaemonRun {
        cpu_per_cycle_ms: 10.0 * ticks as f64 / cycles,
        cycles,
        // Every input register, and one holding register per run of
        // them: the agent reads holding registers with the start address
        // alone (see benches/python/modbus_cycle.py).
        values_per_cycle: (devices * (registers.div_ceil(2) + usize::from(registers > 1))) as u64,
        seen: SimStats {
            requests: after.requests - before.requests,
            connections: after.connections - before.connections,
            posts: after.posts - before.posts,
            bytes: after.bytes - before.bytes,
            ..SimStats::default()
        },
    })
}

/// Every file under `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The Python agent's daemon, then ours (`daemon --extra-pollers 0`, self-
/// monitoring as shipped), each polling the devices for `--seconds`: CPU
/// per cycle and per value of each.
fn daemons_side_by_side(opts: &Opts) {
    let devices = opts.get("devices", 50) as usize;
    let registers = opts.get("registers", 200) as usize;
    let interval_s = opts.get("interval-s", 5);
    println!(
        "python daemon: {devices} devices x {registers} registers every {interval_s} s, \
         the Python agent's daemon first, then ours"
    );
    let theirs = match python_daemon(opts) {
        Ok(run) => run,
        Err(why) => {
            println!("  the Python agent's daemon: not run: {why}");
            return;
        }
    };
    let cycles = theirs.cycles;
    println!(
        "  the Python agent's daemon (pattoo_agent_modbustcpd.py --start, pool workers included): \
         {:.1} ms of CPU per cycle over {cycles:.1} cycles; per cycle {:.1} posts, {:.0} requests, \
         {:.0} new connections, {:.0} B posted; {} values per cycle",
        theirs.cpu_per_cycle_ms,
        theirs.seen.posts as f64 / cycles,
        theirs.seen.requests as f64 / cycles,
        theirs.seen.connections as f64 / cycles,
        theirs.seen.bytes as f64 / cycles,
        theirs.values_per_cycle
    );
    let mut ours_opts = Opts(opts.0.clone());
    ours_opts.0.insert("extra-pollers".into(), "0".into());
    let ours = daemon(&ours_opts);
    let our_values = (devices * registers) as f64;
    println!(
        "side by side, daemons, CPU per {interval_s} s cycle: theirs {:.1} ms for {} values, ours {ours:.2} ms \
         for {our_values} values: {:.0}x less CPU per cycle, {:.0}x less per value",
        theirs.cpu_per_cycle_ms,
        theirs.values_per_cycle,
        theirs.cpu_per_cycle_ms / ours,
        (theirs.cpu_per_cycle_ms / theirs.values_per_cycle as f64) / (ours / our_values)
    );
}

/// The median of `values` (sorted here).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU per steady poll of this host: ours, then the Python collector's.
fn os(opts: &Opts) {
    use pattoo_agentd::pollers::{os::poller_settings, Poller, PollerEnv};

    let cycles = opts.get("cycles", 200) as usize;
    let warmup = 10.min(cycles / 2);
    let program = "pattoo_agent_os_autonomousd";
    let settings = poller_settings(program, Duration::from_secs(300));
    let env = PollerEnv {
        hostname: "bench.example.org".to_owned(),
    };
    let runtime = runtime();
    let agent_id = "a".repeat(64);
    // As the daemon polls: the collector (poll, then the body, checksums
    // remembered between polls); then the poll alone.
    let (cpus, polls, datapoints, rss_before, rss_after) = runtime.block_on(async {
        let mut collector = collector::Collector::new(&settings, agent_id.clone(), &env)
            .expect("the os poller builds");
        let mut poller = Poller::new(&settings, &env).expect("the os poller builds");
        let (mut cpus, mut polls) = (Vec::new(), Vec::new());
        let mut datapoints = 0;
        let mut rss_before = 0;
        for k in 0..cycles {
            if k == warmup {
                rss_before = status_kib("self", "VmRSS");
            }
            let cpu0 = cpu_time();
            let bodies = collector.collect().await.expect("this host can be read");
            cpus.push(cpu_time().saturating_sub(cpu0).as_secs_f64() * 1e3);
            datapoints = bodies.iter().map(|body| body.datapoints).sum::<usize>();
        }
        let rss_after = status_kib("self", "VmRSS");
        for _ in 0..cycles {
            let cpu0 = cpu_time();
            poller.poll().await.expect("this host can be read");
            polls.push(cpu_time().saturating_sub(cpu0).as_secs_f64() * 1e3);
        }
        (cpus, polls, datapoints, rss_before, rss_after)
    });
    let ours = median(cpus[warmup..].to_vec());
    println!("os: {cycles} polls of this host ({datapoints} datapoints each), in this process");
    println!(
        "  ours: median CPU per steady poll and body {ours:.3} ms (the poll alone {:.3} ms); \
         RSS {rss_before} KiB after {warmup} polls, {rss_after} KiB after {cycles} ({:+} KiB)",
        median(polls[warmup..].to_vec()),
        rss_after as i64 - rss_before as i64
    );
    match python_os_cycle(cycles) {
        Ok(python) => {
            let theirs = median(python[1.min(python.len() - 1)..].to_vec());
            println!(
                "  Python collector (PattooShared 0.0.84, psutil 7.2.2): median CPU per steady cycle \
                 {theirs:.3} ms; {:.0}x ours",
                theirs / ours
            );
        }
        Err(why) => println!("  Python collector: not run: {why}"),
    }
}

/// The Python OS collector's cycle `cycles` times in one process: CPU ms
/// of each.
fn python_os_cycle(cycles: usize) -> Result<Vec<f64>, String> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("agents");
    agents_source(&source, &["pattoo_agents"])?;
    let path = python::try_packages_path(
        "pattoo-os-python",
        &[
            "PattooShared==0.0.84",
            "psutil==7.2.2",
            "PyYAML",
            "requests",
        ],
        "import pattoo_shared, psutil, yaml, requests",
    )?;
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let state = dir.path().join("state");
    for name in ["log", "cache", "daemon"] {
        // PattooShared exits when one is missing.
        std::fs::create_dir_all(state.join(name)).unwrap();
    }
    write_pattoo_yaml(&config, &state, 9);
    std::fs::write(
        config.join("pattoo_agent_os_autonomousd.yaml"),
        "pattoo_agent_os_autonomousd:\n    polling_interval: 300\n",
    )
    .unwrap();
    let output = Command::new(python::python())
        .arg("benches/python/os_cycle.py")
        .arg("--agents-src")
        .arg(&source)
        .args(["--cycles", &cycles.to_string()])
        .env("PYTHONPATH", &path)
        .env("PATTOO_CONFIGDIR", &config)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}{}",
            python::python(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3)?.parse().ok())
        .collect())
}

// ------------------------------------------------- snmp-daemon: its memory

/// Devices one snmpsim process of [`snmp_daemon`] serves: one process
/// takes 30–40 s for a poll of 200 devices, several answer in parallel.
const DEVICES_PER_SNMPSIM: usize = 25;

/// `snmp-daemon`: the real daemon (`pattoo-agentd run`) polling snmpsim
/// devices and posting to this harness's receiver, once with the IF-MIB
/// preset (one poller, every target with its own community) and once with
/// the `pattoo_agent_snmp_ifmibd.yaml` drop-in; prints the daemon's Pss
/// between polls and at the peak, and where its memory is then.
fn snmp_daemon(opts: &Opts) {
    let devices = opts.get("devices", 200) as usize;
    let interfaces = opts.get("interfaces", 24) as u32;
    let interval_s = opts.get("interval-s", if devices > 50 { 30 } else { 10 });
    let seconds = opts.get("seconds", 3 * interval_s);
    let warmup = opts.get("warmup-s", 2 * interval_s + 1);
    let per_sim = opts.get("per-snmpsim", DEVICES_PER_SNMPSIM as u64).max(1) as usize;
    let only = opts.0.get("only").cloned().unwrap_or_default();
    let binary = opts
        .0
        .get("agent")
        .map_or(env!("CARGO_BIN_EXE_pattoo-agentd"), String::as_str)
        .to_owned();
    let (_sims, farm) = snmp_daemon_farm(devices, interfaces, per_sim);
    println!(
        "snmp-daemon: {devices} snmpsim devices x {interfaces} interfaces ({} snmpsim processes), \
         every {interval_s} s; {binary}; sampled {seconds} s after {warmup} s warm-up; load average {}",
        devices.div_ceil(per_sim),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    for (name, preset) in [
        ("IF-MIB preset, one poller, a community per target", true),
        ("pattoo_agent_snmp_ifmibd.yaml drop-in", false),
    ] {
        if (only == "preset" && !preset) || (only == "ifmibd" && preset) {
            continue;
        }
        let mut receiver = Sims::start(0);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        write_pattoo_yaml(&config, dir.path(), receiver.receiver_port);
        if preset {
            let mut yaml = format!(
                "pattoo_agentd:\n  polling_interval: {interval_s}\n  pollers:\n    \
                 - name: farm\n      type: snmp\n      timeout_ms: 5000\n      preset: if_mib\n      targets:\n"
            );
            for (address, port, community) in &farm {
                let file = dir.path().join(community);
                std::fs::write(&file, community).unwrap();
                yaml.push_str(&format!(
                    "        - {{address: \"{address}:{port}\", community: {{file: {}}}}}\n",
                    file.display()
                ));
            }
            std::fs::write(config.join("pattoo_agentd.yaml"), yaml).unwrap();
        } else {
            std::fs::write(
                config.join("pattoo_agent_snmp_ifmibd.yaml"),
                snmp_daemon_ifmibd_yaml(&farm, interval_s),
            )
            .unwrap();
        }
        let t_start = Instant::now();
        let daemon = Daemon::start_binary(&binary, &config, dir.path());
        let pid = daemon.child.id();
        std::thread::sleep(Duration::from_secs(warmup));
        let before = receiver.stats();
        let ticks0 = proc_cpu_ticks(pid);
        // (Pss KiB, whether the daemon ran under 2 ms in the 100 ms before).
        let mut samples: Vec<(u64, bool)> = Vec::new();
        let mut ns = threads_cpu_ns(pid);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(100));
            let now = threads_cpu_ns(pid);
            samples.push((pss_kib(pid), now.saturating_sub(ns) < 2_000_000));
            ns = now;
        }
        let cpu_s = (proc_cpu_ticks(pid) - ticks0) as f64 / Watched::hz();
        let after = receiver.stats();
        // Where the memory is, at a moment between polls.
        let mut breakdown = String::new();
        for _ in 0..10 * interval_s {
            std::thread::sleep(Duration::from_millis(100));
            let now = threads_cpu_ns(pid);
            let idle = now.saturating_sub(ns) < 2_000_000;
            ns = now;
            if idle {
                breakdown = smaps_breakdown(pid, &binary);
                break;
            }
        }
        let hwm = status_kib(&pid.to_string(), "VmHWM");
        let threads = status_kib(&pid.to_string(), "Threads");
        daemon.stop();
        let mib = |k: u64| k as f64 / 1024.0;
        // Between polls: the last idle sample before each poll starts.
        let mut between: Vec<u64> = samples
            .windows(2)
            .filter(|w| w[0].1 && !w[1].1)
            .map(|w| w[0].0)
            .collect();
        between.sort_unstable();
        let peak = samples.iter().map(|s| s.0).max().unwrap_or(0);
        let cycles = seconds as f64 / interval_s as f64;
        println!("  {name}:");
        println!(
            "    Pss between polls (the last idle sample before each poll): {}; peak {:.1} MiB \
             (every 100 ms); VmHWM {:.1} MiB; {threads} threads; {} samples",
            if between.is_empty() {
                "no idle sample before a poll".to_owned()
            } else {
                format!(
                    "median {:.1} MiB (min {:.1}, max {:.1}, {} polls)",
                    mib(between[between.len() / 2]),
                    mib(between[0]),
                    mib(between[between.len() - 1]),
                    between.len()
                )
            },
            mib(peak),
            mib(hwm),
            samples.len()
        );
        println!(
            "    CPU {:.1} ms per cycle; per cycle {:.1} posts, {:.0} bytes posted; ran {:.0} s",
            1e3 * cpu_s / cycles,
            (after.posts - before.posts) as f64 / cycles,
            (after.bytes - before.bytes) as f64 / cycles,
            t_start.elapsed().as_secs_f64()
        );
        print!("{breakdown}");
    }
}

/// snmpsim processes of `per_sim` devices each on 127.0.2.x, device `d`
/// with community `device{d:03}`: the processes and (address, port,
/// community) per device.
fn snmp_daemon_farm(
    devices: usize,
    interfaces: u32,
    per_sim: usize,
) -> (
    Vec<snmpsim::SnmpSim>,
    Vec<(std::net::Ipv4Addr, u16, String)>,
) {
    assert!(devices <= 250, "at most 250 devices on 127.0.2.x");
    let mut sims = Vec::new();
    let mut farm = Vec::new();
    for first in (0..devices).step_by(per_sim) {
        let data = tempfile::tempdir().unwrap();
        let mut addresses = Vec::new();
        for d in first..devices.min(first + per_sim) {
            std::fs::write(
                data.path().join(format!("device{d:03}.snmprec")),
                snmprec(interfaces, d as u64),
            )
            .unwrap();
            addresses.push(std::net::Ipv4Addr::new(127, 0, 2, d as u8 + 1));
        }
        let sim =
            snmpsim::SnmpSim::launch(data.path(), &addresses, Duration::from_secs(300), Some(64));
        for (k, address) in addresses.iter().enumerate() {
            farm.push((
                *address,
                sim.port(*address),
                format!("device{:03}", first + k),
            ));
        }
        sims.push(sim);
    }
    (sims, farm)
}

/// The drop-in for [`snmp_daemon_farm`]'s devices: one polling group,
/// an auth group per device with its community and port.
fn snmp_daemon_ifmibd_yaml(farm: &[(std::net::Ipv4Addr, u16, String)], interval_s: u64) -> String {
    let mut yaml = format!(
        "pattoo_agent_snmp_ifmibd:\n  polling_interval: {interval_s}\n  polling_groups:\n    \
         - group_name: all\n      ip_targets:\n"
    );
    for (address, _, _) in farm {
        yaml.push_str(&format!("        - {address}\n"));
    }
    yaml.push_str("      oids:\n        - address: .1.3.6.1.2.1.2.2.1.10\n  auth_groups:\n");
    for (address, port, community) in farm {
        yaml.push_str(&format!(
            "    - group_name: {community}\n      snmp_version: 2\n      snmp_community: {community}\n      \
             snmp_port: {port}\n      ip_targets: [{address}]\n"
        ));
    }
    yaml
}

/// Pss and Rss of process `pid` by kind of mapping, from
/// `/proc/PID/smaps`: the executable's code, read-only data and data,
/// other files, the main heap, anonymous mappings (glibc's arenas, thread
/// stacks, large allocations) and the main stack; then the five largest
/// anonymous mappings.
fn smaps_breakdown(pid: u32, binary: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::canonicalize(binary).unwrap_or_default();
    let mut kinds: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut anon: Vec<(u64, u64, u64)> = Vec::new();
    let mut kind = String::new();
    let mut size = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].contains('-') && !line.ends_with(" kB") {
            let path = fields.get(5..).map(|p| p.join(" ")).unwrap_or_default();
            let (lo, hi) = fields[0].split_once('-').unwrap();
            size = (u64::from_str_radix(hi, 16).unwrap() - u64::from_str_radix(lo, 16).unwrap())
                / 1024;
            let perms = fields[1];
            kind = if !path.is_empty() && Path::new(&path) == exe {
                format!(
                    "executable {}",
                    if perms.contains('x') {
                        "code"
                    } else if perms.contains('w') {
                        "data"
                    } else {
                        "read-only data"
                    }
                )
            } else if path == "[heap]" {
                "main heap".into()
            } else if path == "[stack]" {
                "main stack".into()
            } else if path.starts_with('[') {
                "kernel ([vdso] ...)".into()
            } else if path.is_empty() {
                "anonymous (arenas, thread stacks, large allocations)".into()
            } else {
                "other files (libc, ...)".into()
            };
            continue;
        }
        let value = || {
            fields
                .get(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match fields.first().copied() {
            Some("Rss:") => kinds.entry(kind.clone()).or_default().1 += value(),
            Some("Pss:") => {
                kinds.entry(kind.clone()).or_default().0 += value();
                if kind.starts_with("anonymous") && value() > 0 {
                    anon.push((value(), size, 0));
                }
            }
            _ => {}
        }
    }
    let mut out = String::from("    between polls, by mapping (Pss / Rss):\n");
    for (kind, (pss, rss)) in &kinds {
        out.push_str(&format!(
            "      {kind}: {:.2} / {:.2} MiB\n",
            *pss as f64 / 1024.0,
            *rss as f64 / 1024.0
        ));
    }
    anon.sort_unstable_by(|a, b| b.cmp(a));
    let largest: Vec<String> = anon
        .iter()
        .take(5)
        .map(|(pss, size, _)| {
            format!(
                "{:.2} MiB of {:.2}",
                *pss as f64 / 1024.0,
                *size as f64 / 1024.0
            )
        })
        .collect();
    out.push_str(&format!(
        "      largest anonymous mappings (Pss of size): {}\n",
        largest.join(", ")
    ));
    out
}
