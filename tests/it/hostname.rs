//! The default host name is Python's `socket.getfqdn()`, checked against
//! Python itself on the host layouts users have.
//!
//! Each layout runs in its own UTS and mount namespace (`unshare -mu`): its
//! own host name, its own `/etc/hosts` and an `nsswitch.conf` with
//! `hosts: files` bind-mounted over the real ones, so DNS plays no part and
//! the machine's files are untouched. Python and the agent's `check` run in
//! the same namespace and must name the same host. This needs root (for
//! `unshare` and `mount`) and python3; without them the test says it was
//! skipped, except under CI (`CI=true`), where it fails instead.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Layout {
    hostname: &'static str,
    /// `None`: an empty `/etc/hosts`.
    hosts: Option<&'static str>,
    /// What Python 3.11 answers, written down so that a change on either
    /// side is noticed even if both change alike; `None` where it depends
    /// on how this machine sorts addresses (`getaddrinfo`, RFC 6724).
    expected: Option<&'static str>,
}

const LAYOUTS: &[Layout] = &[
    // Containers and many cloud images: the name only on a 127.0.0.1 line
    // after `localhost`, so the reverse lookup gives `localhost`.
    Layout {
        hostname: "box0",
        hosts: Some("127.0.0.1 localhost\n127.0.0.1 runsc\n127.0.0.1 box0\n"),
        expected: Some("localhost"),
    },
    Layout {
        hostname: "box2",
        hosts: Some("10.9.9.8 box2 box2.alias.example\n"),
        expected: Some("box2.alias.example"),
    },
    Layout {
        hostname: "box4",
        hosts: Some("127.0.0.1 localhost box4\n"),
        expected: Some("localhost"),
    },
    Layout {
        hostname: "box1",
        hosts: Some("10.9.9.9 box1.plant.example box1\n"),
        expected: Some("box1.plant.example"),
    },
    Layout {
        hostname: "box3",
        hosts: None,
        expected: Some("box3"),
    },
    // Debian's installer.
    Layout {
        hostname: "box5",
        hosts: Some("127.0.0.1 localhost\n127.0.1.1 box5.plant.example box5\n"),
        expected: Some("box5.plant.example"),
    },
    // Only on an IPv6 line: the reverse lookup of ::1 finds the first ::1
    // line.
    Layout {
        hostname: "box6",
        hosts: Some("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n::1 box6\n"),
        expected: Some("localhost"),
    },
    // Aliases without a dot: the primary name.
    Layout {
        hostname: "box7",
        hosts: Some("10.9.9.7 box7 alpha beta\n"),
        expected: Some("box7"),
    },
    // On an IPv4 and an IPv6 line: the address getaddrinfo sorts first is
    // reversed (::1 on a machine with IPv6 loopback), whichever line comes
    // first in the file.
    Layout {
        hostname: "box8",
        hosts: Some(
            "127.0.0.1 localhost\n127.0.1.1 box8.v4.example box8\n::1 box8.v6.example box8\n",
        ),
        expected: None,
    },
    Layout {
        hostname: "box9",
        hosts: Some("::1 box9.v6.example box9\n127.0.1.1 box9.v4.example box9\n"),
        expected: None,
    },
    // A numeric host name is not resolved, only reversed.
    Layout {
        hostname: "10.9.9.6",
        hosts: Some("10.9.9.6 numeric.plant.example\n"),
        expected: Some("numeric.plant.example"),
    },
];

/// Why the namespaces cannot be had here, if they cannot.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".to_owned());
    }
    for file in ["/etc/hosts", "/etc/nsswitch.conf"] {
        if !Path::new(file).is_file() {
            return Some(format!("there is no {file} to mount over"));
        }
    }
    let probe = Command::new("unshare")
        .args([
            "-mu",
            "sh",
            "-c",
            "echo probe > /proc/sys/kernel/hostname && mount --bind /etc/hosts /etc/hosts",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Some(format!(
                "`unshare -mu` with a bind mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(err) => return Some(format!("cannot run `unshare`: {err}")),
    }
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("python3 is not installed".to_owned()),
    }
}

/// Runs `script` in a new UTS and mount namespace with `layout`'s host name
/// and files; returns its stdout.
fn in_namespace(dir: &Path, layout: &Layout, script: &str) -> String {
    let hosts = dir.join("hosts");
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&hosts, layout.hosts.unwrap_or("")).unwrap();
    std::fs::write(&nsswitch, "hosts: files\n").unwrap();
    let setup = format!(
        "set -e; mount --bind '{}' /etc/hosts; mount --bind '{}' /etc/nsswitch.conf; printf %s '{}' > /proc/sys/kernel/hostname; {script}",
        hosts.display(),
        nsswitch.display(),
        layout.hostname
    );
    let out = Command::new("unshare")
        .args(["-mu", "sh", "-c", &setup])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "in the namespace of {}: {}\n{}",
        layout.hostname,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_default_host_name_is_what_python_getfqdn_gives_on_every_layout() {
    if let Some(why) = unavailable() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the host name test, but {why}"
        );
        // Straight to stderr: the test harness would hide a println!.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_default_host_name_is_what_python_getfqdn_gives_on_every_layout: \
             {why}; it needs root, `unshare` and python3"
        );
        return;
    }
    let agent = common::AGENTD;
    let mut mismatches = Vec::new();
    for layout in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        common::write_pattoo_yaml(&config, dir.path(), 20201);
        let out = in_namespace(
            dir.path(),
            layout,
            &format!(
                "python3 -c 'import socket; print(socket.getfqdn())'; '{agent}' --config-dir '{}' check",
                config.display()
            ),
        );
        let mut lines = out.lines();
        let python = lines.next().expect("python printed a name").to_owned();
        let shown = lines
            .find_map(|line| line.strip_prefix("posts as host name "))
            .unwrap_or_else(|| panic!("check shows the host name:\n{out}"));
        let agent_name = shown
            .strip_prefix('"')
            .and_then(|rest| rest.split_once('"'))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| panic!("a quoted host name: {shown}"));
        assert!(
            shown.contains("not configured"),
            "check says where the name came from: {shown}"
        );
        if layout.expected.is_some_and(|expected| python != expected) || agent_name != python {
            mismatches.push(format!(
                "host name {}, /etc/hosts {:?}: python3 {python:?} (expected {:?}), agent {agent_name:?}",
                layout.hostname, layout.hosts, layout.expected
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn check_says_a_configured_host_name_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        "pattoo_agentd:\n  hostname: gw1.plant.example\n",
    )
    .unwrap();
    let out = common::agentd(dir.path()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("posts as host name \"gw1.plant.example\" (configured by `hostname:`)"),
        "{stdout}"
    );
}

/// A DNS server on a loopback address, port 53, that answers every query
/// with "no such name", at once or, once `slow` is set, after
/// [`SLOW_ANSWER`]. Records when each slow query came and was answered.
struct SlowDns {
    address: std::net::Ipv4Addr,
    slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    slow_queries: std::sync::Arc<std::sync::Mutex<Vec<(SystemTime, SystemTime)>>>,
}

const SLOW_ANSWER: Duration = Duration::from_secs(5);

impl SlowDns {
    /// `None` when no loopback address tried has port 53 free.
    fn start() -> Option<SlowDns> {
        let (socket, address) = (0..20u8).find_map(|n| {
            let address = std::net::Ipv4Addr::new(127, 53, 20, 10 + n);
            std::net::UdpSocket::bind((address, 53))
                .ok()
                .map(|socket| (socket, address))
        })?;
        let dns = SlowDns {
            address,
            slow: Default::default(),
            slow_queries: Default::default(),
        };
        let (slow, record) = (dns.slow.clone(), dns.slow_queries.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buffer) {
                let Some(answer) = nxdomain(&buffer[..n]) else {
                    continue;
                };
                if !slow.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = socket.send_to(&answer, peer);
                    continue;
                }
                let came = SystemTime::now();
                let (socket, record) = (socket.try_clone().unwrap(), record.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(SLOW_ANSWER);
                    let _ = socket.send_to(&answer, peer);
                    record.lock().unwrap().push((came, SystemTime::now()));
                });
            }
        });
        Some(dns)
    }
}

/// The "no such name" answer to `query`: its header and question, with
/// the answer bit and NXDOMAIN set and no records.
fn nxdomain(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    loop {
        let length = *query.get(end)? as usize;
        end += 1 + length;
        if length == 0 {
            break;
        }
    }
    let mut answer = query.get(..end + 4)?.to_vec();
    answer[2] |= 0x80; // a response
    answer[3] = 0x80 | 3; // recursion available, NXDOMAIN
    answer[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    Some(answer)
}

/// A reload looks the host name up again; with a resolver that takes
/// seconds, the polls and the systemd watchdog pings go on meanwhile. The
/// agent runs on one CPU (so its runtime has one worker thread) in a mount
/// namespace whose `resolv.conf` names a DNS server on loopback that this
/// test slows down just before the SIGHUP.
#[test]
fn polls_and_watchdog_pings_go_on_while_a_reload_waits_for_a_slow_resolver() {
    let why = unavailable().or_else(|| {
        (!Path::new("/etc/resolv.conf").exists())
            .then(|| "there is no /etc/resolv.conf to mount over".to_owned())
    });
    let dns = match why {
        None => SlowDns::start().ok_or_else(|| "no loopback address has port 53 free".to_owned()),
        Some(why) => Err(why),
    };
    let dns = match dns {
        Ok(dns) => dns,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the slow resolver test, but {why}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED polls_and_watchdog_pings_go_on_while_a_reload_waits_for_a_slow_resolver: {why}"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    // Nothing listens there: bodies go to the cache.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    common::write_pattoo_yaml(&config, dir.path(), port);
    let ticks = dir.path().join("ticks");
    std::fs::write(
        config.join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  pollers:\n    - name: ticker\n      type: command\n      polling_interval: 1\n      command: [/bin/sh, -c, 'date +%s.%N >> {}; echo tick=1']\n      format: keyvalue\n",
            ticks.display()
        ),
    )
    .unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver {}\noptions timeout:30 attempts:1\n",
            dns.address
        ),
    )
    .unwrap();
    let nsswitch = dir.path().join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: dns\n").unwrap();

    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(SystemTime, String)>::new()));
    let sink = messages.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = notify.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let now = SystemTime::now();
            let mut sink = sink.lock().unwrap();
            sink.extend(text.lines().map(|line| (now, line.to_owned())));
        }
    });
    let setup = format!(
        "set -e; mount --bind '{}' /etc/resolv.conf; mount --bind '{}' /etc/nsswitch.conf; \
         WATCHDOG_PID=$$ exec taskset -c 0 '{}' --config-dir '{}' run",
        resolv.display(),
        nsswitch.display(),
        common::AGENTD,
        config.display()
    );
    let mut agent = Command::new("unshare")
        .args(["-m", "sh", "-c", &setup])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(agent.id() as i32);
    let readies = || {
        messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m == "READY=1")
            .count()
    };
    let tick_times = || -> Vec<f64> {
        std::fs::read_to_string(&ticks)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    wait_for(&mut agent, "start-up", || {
        readies() >= 1 && tick_times().len() >= 2
    });

    dns.slow.store(true, std::sync::atomic::Ordering::SeqCst);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(&mut agent, "the reload to finish", || readies() >= 2);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = agent.wait().unwrap();

    let slow_queries = dns.slow_queries.lock().unwrap().clone();
    let asked = slow_queries.iter().map(|(came, _)| *came).min();
    let answered = slow_queries.iter().map(|(_, answered)| *answered).max();
    let (Some(asked), Some(answered)) = (asked, answered) else {
        panic!("the reload never asked the DNS server");
    };
    let seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let (from, to) = (seconds(asked), seconds(answered));
    let polls = tick_times()
        .into_iter()
        .filter(|t| (from..to).contains(t))
        .count();
    let pings = messages
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, m)| m == "WATCHDOG=1" && (from..to).contains(&seconds(*at)))
        .count();
    // One poll a second and a ping every half second over at least
    // SLOW_ANSWER; a held-up runtime manages at most the poll it had begun.
    assert!(
        polls >= 2 && pings >= 2,
        "while the resolver took {:.1} s: {polls} polls started, {pings} watchdog pings",
        to - from
    );
    assert!(status.success(), "the agent stops cleanly: {status}");
}

/// Polls `done` until it holds; fails if `agent` exits first or patience
/// runs out.
fn wait_for(agent: &mut std::process::Child, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        if let Some(status) = agent.try_wait().unwrap() {
            panic!("the agent exited ({status}) while waiting for {what}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
