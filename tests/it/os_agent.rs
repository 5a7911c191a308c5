//! The os poller's drop-ins against the Python OS agent
//! (SPEC-os-compat.md): the checksums, keys, data types and value kinds
//! `once --print` gives on the machine the tests run on, compared with
//! - the recorded run (tests/data/os/os-agent.json) where this host's facts
//!   are the recorded ones;
//! - the spec's rules applied to this host's facts, everywhere;
//! - a live run of the Python collector itself, where PattooShared and
//!   psutil install from PyPI and `PATTOO_AGENTS_GIT` names a git directory
//!   of palisadoes/pattoo-agents (its source is not on PyPI).

#![cfg(feature = "os")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use pattoo_agentd::model::checksum::ChecksumChain;
use serde_json::Value;

use crate::common;

const AGENT_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HOSTNAME: &str = "vectors.example.org";
const OS_PROGRAM: &str = "pattoo_agent_os_autonomousd";
const LINUX_PROGRAM: &str = "pattoo_agent_linux_autonomousd";

/// Per checksum: key, data type, value kind (`int` or `float`).
type Identities = BTreeMap<String, (String, u64, String)>;

/// One datapoint of a body: its checksum, key, data type, value kind and
/// metadata in order.
struct Posted {
    checksum: String,
    key: String,
    data_type: u64,
    kind: String,
    metadata: Vec<(String, String)>,
}

fn kind(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        _ => "other",
    }
    .to_owned()
}

/// The datapoints of the bodies `once --print` printed, one per line.
fn decode(printed: &str) -> Vec<Posted> {
    let mut posted = Vec::new();
    for line in printed.lines().filter(|line| !line.trim().is_empty()) {
        let body: Value = serde_json::from_str(line).unwrap();
        for pairs in common::body::datapoints(&body) {
            let mut point = Posted {
                checksum: String::new(),
                key: String::new(),
                data_type: 0,
                kind: String::new(),
                metadata: Vec::new(),
            };
            for (name, value) in pairs {
                match name.as_str() {
                    "pattoo_checksum" => point.checksum = value.as_str().unwrap().to_owned(),
                    "pattoo_key" => point.key = value.as_str().unwrap().to_owned(),
                    "pattoo_data_type" => point.data_type = value.as_u64().unwrap(),
                    "pattoo_value" => point.kind = kind(&value),
                    "pattoo_timestamp" => {}
                    _ => point
                        .metadata
                        .push((name, value.as_str().unwrap_or_default().to_owned())),
                }
            }
            posted.push(point);
        }
    }
    posted
}

/// Per checksum, the identity of each datapoint of a recording's
/// `autonomousd` run (as made by tests/data/os/dump_os_agent.py).
fn recorded_identities(recording: &Value) -> Identities {
    recording["autonomousd"]["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pattoo_checksum"].as_str().unwrap().to_owned(),
                (
                    p["key"].as_str().unwrap().to_owned(),
                    p["data_type"].as_u64().unwrap(),
                    p["collector_value_kind"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn identities(posted: &[Posted]) -> Identities {
    posted
        .iter()
        .map(|p| {
            (
                p.checksum.clone(),
                (p.key.clone(), p.data_type, p.kind.clone()),
            )
        })
        .collect()
}

/// `once --print` with only `file` (holding `text`) among the pollers, the
/// recorded agent id and host name.
fn once(program: &str, file: &str, text: &str) -> Vec<Posted> {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    common::write_pattoo_yaml(dir.path(), &state, 9);
    common::write_agent_id(&state, program, AGENT_ID);
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!("pattoo_agentd:\n  hostname: {HOSTNAME}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join(file), text).unwrap();
    let stdout = common::run_agentd(dir.path(), &["once", "--print"]);
    let posted = decode(&stdout);
    assert!(!posted.is_empty(), "nothing printed");
    posted
}

fn vector() -> Value {
    serde_json::from_str(&std::fs::read_to_string("tests/data/os/os-agent.json").unwrap()).unwrap()
}

/// The facts that shape identities, as the spec says to read them.
#[derive(Debug, PartialEq)]
struct HostFacts {
    processor: String,
    cpus: String,
    cpu_fields: usize,
    /// device, mount point, file system type, options.
    partitions: Vec<[String; 4]>,
    disks: Vec<String>,
    nics: Vec<String>,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// getmntent's decoding of `\040` and its kin.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn this_host() -> HostFacts {
    let processor = command_output("uname", &["-p"]).unwrap_or_default();
    let processor = if processor == "unknown" {
        String::new()
    } else {
        processor
    };
    let cpus = command_output("getconf", &["_NPROCESSORS_ONLN"]).expect("getconf runs");
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu_fields = (stat.lines().next().unwrap().split_whitespace().count() - 1).min(10);
    let physical: BTreeSet<String> = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .lines()
        .filter_map(|line| match line.split_once('\t') {
            Some(("nodev", "zfs")) => Some("zfs".to_owned()),
            Some(("", fstype)) => Some(fstype.trim().to_owned()),
            _ => None,
        })
        .collect();
    let table = if Path::new("/etc/mtab").is_file() {
        "/etc/mtab"
    } else {
        "/proc/self/mounts"
    };
    let partitions = std::fs::read_to_string(table)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<String> = line.split_whitespace().map(unescape).collect();
            let [device, mountpoint, fstype, opts, ..] = &fields[..] else {
                return None;
            };
            let kept =
                device != "none" && physical.contains(fstype) && !mountpoint.contains("docker");
            kept.then(|| {
                [
                    device.clone(),
                    mountpoint.trim().to_owned(),
                    fstype.clone(),
                    opts.clone(),
                ]
            })
        })
        .collect();
    let mut disks: Vec<String> = Vec::new();
    for line in std::fs::read_to_string("/proc/diskstats").unwrap().lines() {
        let Some(name) = line.split_whitespace().nth(2) else {
            continue;
        };
        let ram = name
            .strip_prefix("ram")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ram && !name.starts_with("loop") && !disks.iter().any(|d| d == name) {
            disks.push(name.to_owned());
        }
    }
    let nics = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|line| Some(line.rsplit_once(':')?.0.trim().to_owned()))
        .collect();
    HostFacts {
        processor,
        cpus,
        cpu_fields,
        partitions,
        disks,
        nics,
    }
}

/// The recorded host's facts, in [`HostFacts`]' form.
fn recorded_host(vector: &Value) -> HostFacts {
    let facts = &vector["host_facts"];
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    HostFacts {
        processor: facts["platform.processor()"].as_str().unwrap().to_owned(),
        cpus: facts["psutil.cpu_count()"].to_string(),
        cpu_fields: facts["cpu_times fields"].as_array().unwrap().len(),
        partitions: facts["disk_partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = strings(p);
                [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()]
            })
            .collect(),
        disks: strings(&facts["disk_io_counters(perdisk=True)"])
            .into_iter()
            .filter(|d| !d.starts_with("loop") && !d.starts_with("ram"))
            .collect(),
        nics: strings(&facts["net_io_counters(pernic=True)"]),
    }
}

fn checksum(key: &str, data_type: u64, metadata: &[(&str, &str)], program: &str) -> String {
    let mut chain = ChecksumChain::start(key, data_type as u8);
    let agent = [
        ("pattoo_agent_hostname", HOSTNAME),
        ("pattoo_agent_id", AGENT_ID),
        ("pattoo_agent_polled_target", HOSTNAME),
        ("pattoo_agent_program", program),
    ];
    for (name, value) in metadata.iter().chain(agent.iter()) {
        chain.update(name, value.trim());
    }
    chain.as_str().to_owned()
}

/// What the spec's rules give `host` for `program`: the recorded
/// datapoints as templates (key, data type, value kind), each partition's,
/// disk's and NIC's set made for this host's, every checksum computed from
/// the key, the data type and the metadata that enters it, in order.
fn by_the_rules(vector: &Value, host: &HostFacts, program: &str) -> Identities {
    let fields = [
        "user",
        "nice",
        "system",
        "idle",
        "iowait",
        "irq",
        "softirq",
        "steal",
        "guest",
        "guest_nice",
    ];
    let missing = &fields[host.cpu_fields..];
    let hostwide = [
        ("processor", host.processor.as_str()),
        ("type", "Linux"),
        ("cpus", host.cpus.as_str()),
        ("hostname", HOSTNAME),
    ];
    let mut templates: Vec<(String, u64, String)> = Vec::new();
    for point in vector["autonomousd"]["datapoints"].as_array().unwrap() {
        let template = (
            point["key"].as_str().unwrap().to_owned(),
            point["data_type"].as_u64().unwrap(),
            point["collector_value_kind"].as_str().unwrap().to_owned(),
        );
        if !templates.iter().any(|t| t.0 == template.0) {
            templates.push(template);
        }
    }
    let mut expected = Identities::new();
    for (key, data_type, kind) in templates {
        let mut add = |metadata: Vec<(&str, &str)>| {
            expected.insert(
                checksum(&key, data_type, &metadata, program),
                (key.clone(), data_type, kind.clone()),
            );
        };
        if key.starts_with("disk_partition_disk_usage_") {
            for [device, mountpoint, fstype, opts] in &host.partitions {
                let mut metadata = vec![
                    ("disk_partition_device", device.as_str()),
                    ("disk_partition_mountpoint", mountpoint.as_str()),
                    ("disk_partition_fstype", fstype.as_str()),
                    ("disk_partition_opts", opts.as_str()),
                ];
                metadata.extend(hostwide);
                add(metadata);
            }
        } else if key.starts_with("disk_io_") {
            for disk in &host.disks {
                let mut metadata = hostwide.to_vec();
                metadata.push(("disk_partition", disk));
                add(metadata);
            }
        } else if key.starts_with("network_io_") {
            for nic in &host.nics {
                let mut metadata = hostwide.to_vec();
                metadata.push(("network_io_interface", nic));
                add(metadata);
            }
        } else if !missing
            .iter()
            .any(|field| key.ends_with(&format!("_{field}")))
        {
            add(hostwide.to_vec());
        }
    }
    expected
}

fn differences(expected: &Identities, got: &Identities) -> String {
    let mut text = String::new();
    for (checksum, identity) in expected {
        match got.get(checksum) {
            None => text.push_str(&format!("missing {identity:?} {checksum}\n")),
            Some(other) if other != identity => {
                text.push_str(&format!("differs: expected {identity:?}, got {other:?}\n"))
            }
            Some(_) => {}
        }
    }
    for (checksum, identity) in got {
        if !expected.contains_key(checksum) {
            text.push_str(&format!("extra {identity:?} {checksum}\n"));
        }
    }
    text
}

/// A `/dev/root` partition's real device comes from the poller (its unit
/// tests check how); the rules take the one it posted.
fn with_posted_root_devices(mut host: HostFacts, posted: &[Posted]) -> HostFacts {
    for partition in &mut host.partitions {
        if partition[0] == "/dev/root" || partition[0] == "rootfs" {
            if let Some(point) = posted.iter().find(|p| {
                p.metadata
                    .iter()
                    .any(|(k, v)| k == "disk_partition_mountpoint" && *v == partition[1])
            }) {
                partition[0] = point.metadata[0].1.clone();
            }
        }
    }
    host
}

#[test]
fn the_spec_rules_reproduce_every_recorded_checksum() {
    let vector = vector();
    for point in vector["autonomousd"]["datapoints"].as_array().unwrap() {
        let metadata: Vec<(&str, &str)> = point["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m[0].as_str().unwrap(), m[1].as_str().unwrap()))
            .filter(|(k, _)| !["release", "version"].contains(k) && !k.starts_with("pattoo_agent"))
            .collect();
        assert_eq!(
            checksum(
                point["key"].as_str().unwrap(),
                point["data_type"].as_u64().unwrap(),
                &metadata,
                OS_PROGRAM
            ),
            point["pattoo_checksum"].as_str().unwrap()
        );
    }
    // And the rules applied to the recorded host give the recording.
    let recorded = recorded_identities(&vector);
    let rules = by_the_rules(&vector, &recorded_host(&vector), OS_PROGRAM);
    assert_eq!(differences(&recorded, &rules), "");
}

#[test]
fn pattoo_agent_os_autonomousd_yaml_posts_the_python_checksums_for_this_host() {
    let vector = vector();
    let posted = once(
        OS_PROGRAM,
        "pattoo_agent_os_autonomousd.yaml",
        "pattoo_agent_os_autonomousd:\n    polling_interval: 300\n",
    );
    assert!(posted.iter().all(|p| p
        .metadata
        .iter()
        .any(|(k, v)| k == "pattoo_agent_program" && v == OS_PROGRAM)));
    let got = identities(&posted);
    let host = with_posted_root_devices(this_host(), &posted);
    let expected = by_the_rules(&vector, &host, OS_PROGRAM);
    assert_eq!(
        differences(&expected, &got),
        "",
        "against the spec's rules for {host:#?}"
    );
    if host == recorded_host(&vector) {
        let recorded = recorded_identities(&vector);
        assert_eq!(differences(&recorded, &got), "", "against the recording");
    } else {
        eprintln!("this host is not the recorded one; compared with the spec's rules only");
    }
}

#[test]
fn pattoo_agent_linux_autonomousd_yaml_posts_the_same_set_under_its_program() {
    let vector = vector();
    let posted = once(
        LINUX_PROGRAM,
        "pattoo_agent_linux_autonomousd.yaml",
        "polling_interval: 300\n",
    );
    let host = with_posted_root_devices(this_host(), &posted);
    let expected = by_the_rules(&vector, &host, LINUX_PROGRAM);
    assert_eq!(differences(&expected, &identities(&posted)), "");
}

/// The Python collector itself on this host, if it can run here.
#[test]
fn the_drop_in_posts_what_the_python_collector_posts_on_this_host() {
    let Ok(git) = std::env::var("PATTOO_AGENTS_GIT") else {
        eprintln!(
            "skipped: set PATTOO_AGENTS_GIT to a git directory of palisadoes/pattoo-agents \
             (commit d73453c) to compare with the Python collector live"
        );
        return;
    };
    let path = match common::python::try_packages_path(
        "pattoo-os-python",
        &[
            "PattooShared==0.0.84",
            "psutil==7.2.2",
            "PyYAML",
            "requests",
        ],
        "import pattoo_shared, psutil, yaml, requests",
    ) {
        Ok(path) => path,
        Err(why) => {
            // PyPI is reachable wherever CI runs: there this must work.
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("python.json");
    let output = Command::new(common::python::python())
        .arg("tests/data/os/dump_os_agent.py")
        .args([
            "--agents-git-dir",
            &git,
            "--agent-id",
            AGENT_ID,
            "--hostname",
            HOSTNAME,
        ])
        .arg("--out")
        .arg(&dump)
        .env("PYTHONPATH", &path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let posted = once(
        OS_PROGRAM,
        "pattoo_agent_os_autonomousd.yaml",
        "pattoo_agent_os_autonomousd:\n    polling_interval: 300\n",
    );
    let python: Value = serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let expected = recorded_identities(&python);
    assert_eq!(differences(&expected, &identities(&posted)), "");
}
