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
    let agent = env!("CARGO_BIN_EXE_pattoo-agentd");
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
    let out = Command::new(env!("CARGO_BIN_EXE_pattoo-agentd"))
        .arg("--config-dir")
        .arg(dir.path())
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("posts as host name \"gw1.plant.example\" (configured by `hostname:`)"),
        "{stdout}"
    );
}
