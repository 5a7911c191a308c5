//! The `type: snmp` poller against real agents on loopback: Debian's
//! Net-SNMP `snmpd` serving this host's own MIB (v2c and v3 authPriv with
//! SHA-256/AES), and snmpsim serving the vectors' fixed data.
#![cfg(feature = "snmp")]

use crate::common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::logs::LogBuffer;
use common::netsnmp::{self, NetSnmpd};
use common::poller::{meta, secret_file};
use common::snmpsim::SnmpSim;
use common::Readings;
use pattoo_agentd::model::{DataPoint, DataType, TargetData, Value};
use pattoo_agentd::pollers::Poller;

/// The pollers of a `pattoo_agentd.yaml` whose poller list is `pollers`
/// (entries indented by four spaces), each of them SNMP.
fn pollers(pollers: &str) -> Vec<Poller> {
    let pollers = common::poller::all_from_entries(pollers);
    for poller in &pollers {
        assert!(matches!(poller, Poller::Snmp(_)));
    }
    pollers
}

fn v2c(name: &str, targets: &[String], community_file: &str, reads: &str) -> String {
    format!(
        "    - name: {name}\n      type: snmp\n      targets: {targets:?}\n      community: {{file: {community_file}}}\n      timeout_ms: 300\n      retries: 1\n{reads}"
    )
}

fn find<'a>(targets: &'a [TargetData], key: &str) -> Vec<&'a DataPoint> {
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .filter(|d| d.key == key)
        .collect()
}

/// The datapoint of table row `index` (its `index` metadata).
fn row<'a>(datapoints: &[&'a DataPoint], index: &str) -> &'a DataPoint {
    datapoints
        .iter()
        .copied()
        .find(|d| meta(d, "index") == Some(index))
        .unwrap_or_else(|| panic!("no row {index} in {datapoints:?}"))
}

/// snmpsim serving the vectors' devices on 127.0.0.1, and its address.
fn snmpsim_on_loopback() -> (SnmpSim, String) {
    let sim = SnmpSim::start(Path::new("tests/data/snmp/data"), &[Ipv4Addr::LOCALHOST]);
    let address = format!("127.0.0.1:{}", sim.port(Ipv4Addr::LOCALHOST));
    (sim, address)
}

#[tokio::test]
async fn reads_gets_walks_and_the_if_mib_preset_from_net_snmp_over_v2c_and_v3() {
    let agent = NetSnmpd::start();
    let (_c, community) = secret_file(netsnmp::COMMUNITY);
    let (_a, auth) = secret_file(netsnmp::V3_AUTH);
    let (_p, privacy) = secret_file(netsnmp::V3_PRIV);
    let reads = "      get:\n        - {oid: .1.3.6.1.2.1.1.5.0, key: sysname}\n        - {oid: .1.3.6.1.2.1.1.3.0, key: uptime}\n        - {oid: 1.3.6.1.2.1.1.1.0, key: sysdescr}\n      walk:\n        - {oid: .1.3.6.1.2.1.1, key: system}\n      preset: if_mib\n";
    let v3 = format!(
        "    - name: v3\n      type: snmp\n      targets: [\"{}\"]\n      version: 3\n      user: {}\n      auth: {{protocol: sha256, passphrase: {{file: {auth}}}}}\n      privacy: {{protocol: aes, passphrase: {{file: {privacy}}}}}\n      timeout_ms: 1000\n{reads}",
        agent.address(),
        netsnmp::V3_USER
    );
    let text = v2c("v2c", &[agent.address()], &community, reads) + &v3;
    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();

    for mut poller in pollers(&text) {
        let targets = poller.readings().await.unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].target, agent.address());

        let sysname = find(&targets, "sysname");
        assert_eq!(sysname.len(), 1);
        assert_eq!(sysname[0].value, Value::Text(hostname.clone()));
        assert_eq!(sysname[0].data_type, DataType::String);
        let uptime = find(&targets, "uptime");
        assert!(matches!(uptime[0].value, Value::Int(_)), "{uptime:?}");
        assert_eq!(uptime[0].data_type, DataType::Int);
        let Value::Text(descr) = &find(&targets, "sysdescr")[0].value else {
            panic!("sysDescr is text");
        };
        assert!(descr.contains("Linux"), "{descr}");

        // The walk: every system object, each with its instance OID.
        let system = find(&targets, "system");
        let oids: Vec<&str> = system.iter().filter_map(|d| meta(d, "oid")).collect();
        assert!(oids.contains(&".1.3.6.1.2.1.1.5.0"), "{oids:?}");
        assert!(oids.contains(&".1.3.6.1.2.1.1.1.0"), "{oids:?}");
        assert!(oids.iter().all(|o| o.starts_with(".1.3.6.1.2.1.1.")));

        // The preset: every interface of this host, 64-bit octet counters.
        let octets = find(&targets, "ifInOctets");
        let named: Vec<&str> = octets.iter().filter_map(|d| meta(d, "ifDescr")).collect();
        for interface in &interfaces {
            assert!(
                named.contains(&interface.as_str()),
                "{interface} in {named:?}"
            );
        }
        for datapoint in &octets {
            assert_eq!(datapoint.data_type, DataType::Counter64, "{datapoint:?}");
            assert!(meta(datapoint, "index").is_some());
            assert!(meta(datapoint, "ifName").is_some(), "{datapoint:?}");
        }
        assert_eq!(find(&targets, "ifOperStatus").len(), octets.len());
    }
}

#[tokio::test]
async fn a_wrong_community_is_one_targets_clear_error_and_the_others_are_read() {
    let agent = NetSnmpd::start();
    let (_sim, simulated) = snmpsim_on_loopback();
    // snmpsim's community, which snmpd does not know.
    let (_c, community) = secret_file("device1");
    let text = v2c(
        "mixed",
        &[agent.address(), simulated.clone()],
        &community,
        "      get: [{oid: .1.3.6.1.2.1.1.5.0, key: sysname}]\n",
    );
    let mut poller = pollers(&text).remove(0);
    let logs = LogBuffer::default();
    let _guard = logs.capture();
    let started = Instant::now();
    let targets = poller.readings().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].target, simulated);
    assert_eq!(
        find(&targets, "sysname")[0].value,
        Value::Text("router-a".into())
    );
    let text = logs.text();
    assert!(
        text.contains(&format!(
            "{}: GET .1.3.6.1.2.1.1.5.0: timeout",
            agent.address()
        )),
        "{text}"
    );
    assert!(text.contains("the community is wrong"), "{text}");
    assert!(
        !text.contains("device1"),
        "the community is never logged: {text}"
    );
}

#[tokio::test]
async fn a_wrong_v3_passphrase_is_a_clear_error_and_never_hangs_the_poll() {
    let agent = NetSnmpd::start();
    let (_a, wrong) = secret_file("not-the-passphrase");
    let (_r, right) = secret_file(netsnmp::V3_AUTH);
    let (_p, privacy) = secret_file(netsnmp::V3_PRIV);
    let poller = |name: &str, auth: &str| {
        format!(
            "    - name: {name}\n      type: snmp\n      targets: [\"{}\"]\n      version: 3\n      user: {}\n      auth: {{protocol: sha256, passphrase: {{file: {auth}}}}}\n      privacy: {{protocol: aes, passphrase: {{file: {privacy}}}}}\n      timeout_ms: 500\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n      walk: [{{oid: .1.3.6.1.2.1.1, key: system}}]\n",
            agent.address(),
            netsnmp::V3_USER
        )
    };
    let mut polled = pollers(&(poller("wrong", &wrong) + &poller("right", &right)));
    let logs = LogBuffer::default();
    let _guard = logs.capture();
    let (mut first, mut second) = (polled.remove(0), polled.remove(0));
    let started = Instant::now();
    let (wrong, right) = tokio::join!(first.readings(), second.readings());
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = wrong.expect_err("nothing can be read with a wrong passphrase");
    assert!(error.to_string().contains("poller wrong"), "{error}");
    let right = right.unwrap();
    assert_eq!(find(&right, "sysname").len(), 1);
    let text = logs.text();
    assert!(
        text.contains(&format!("{}: GET .1.3.6.1.2.1.1.5.0:", agent.address())),
        "{text}"
    );
    assert!(
        text.contains("check the SNMPv3 user, protocols and passphrases"),
        "{text}"
    );
    assert!(!text.contains("not-the-passphrase"), "{text}");
    // After the failure nothing more is asked of the target in this poll.
    assert!(!text.contains("walk .1.3.6.1.2.1.1:"), "{text}");
}

#[tokio::test]
async fn the_if_mib_preset_falls_back_to_32_bit_counters_and_keeps_64_bit_values_exact() {
    let (_sim, address) = snmpsim_on_loopback();
    let (_d1, device1) = secret_file("device1");
    let (_d3, device3) = secret_file("device3");
    let text = v2c(
        "with-ifx",
        std::slice::from_ref(&address),
        &device1,
        "      preset: if_mib\n",
    ) + &v2c(
        "without-ifx",
        std::slice::from_ref(&address),
        &device3,
        "      preset: if_mib\n",
    );
    let mut polled = pollers(&text);

    let with = polled[0].readings().await.unwrap();
    let octets = find(&with, "ifInOctets");
    assert_eq!(octets.len(), 3);
    let eth0 = row(&octets, "2");
    assert_eq!(eth0.value, Value::UInt(u64::MAX));
    assert_eq!(eth0.data_type, DataType::Counter64);
    assert_eq!(meta(eth0, "ifName"), Some("Eth0"));
    assert_eq!(meta(eth0, "ifAlias"), Some("Uplink to ISP"));
    let alias = eth0.metadata.iter().find(|m| m.key == "ifAlias").unwrap();
    assert!(!alias.update_checksum, "renaming an alias keeps the series");

    let without = polled[1].readings().await.unwrap();
    let octets = find(&without, "ifInOctets");
    assert_eq!(octets.len(), 2);
    for datapoint in octets {
        assert_eq!(datapoint.data_type, DataType::Counter, "{datapoint:?}");
    }
    let eth0 = row(&find(&without, "ifInOctets"), "2");
    assert_eq!(eth0.value, Value::Int(4_294_967_295));
    // The physical address is binary: hex, not mojibake.
    let mut mac = pollers(&v2c(
        "mac",
        &[address],
        &device1,
        "      walk: [{oid: .1.3.6.1.2.1.2.2.1.6, key: mac}]\n",
    ))
    .remove(0);
    let macs = mac.readings().await.unwrap();
    let values: Vec<&Value> = find(&macs, "mac").iter().map(|d| &d.value).collect();
    assert!(
        values.contains(&&Value::Text("00:11:22:33:44:aa".into())),
        "{values:?}"
    );
}

#[tokio::test]
async fn snmpv3_through_snmpsim_with_sha1_and_aes128() {
    if !common::alone::runs_here(
        module_path!(),
        "snmpv3_through_snmpsim_with_sha1_and_aes128",
        &[("PATTOO_TEST_SNMPSIM_PRIV", common::snmpsim::V3_PRIV)],
    ) {
        return;
    }
    let (_sim, address) = snmpsim_on_loopback();
    let (_a, auth) = secret_file(common::snmpsim::V3_AUTH);
    let text = format!(
        "    - name: v3\n      type: snmp\n      targets: [\"{address}\"]\n      version: 3\n      user: {}\n      auth: {{protocol: sha, passphrase: {{file: {auth}}}}}\n      privacy: {{protocol: aes, passphrase: {{env: PATTOO_TEST_SNMPSIM_PRIV}}}}\n      get: [{{oid: .1.3.6.1.2.1.1.6.0, key: location}}]\n",
        common::snmpsim::V3_USER
    );
    let targets = pollers(&text).remove(0).readings().await.unwrap();
    // UTF-8 octets are text natively (the Python drop-in keeps its mojibake).
    assert_eq!(
        find(&targets, "location")[0].value,
        Value::Text("Zürich DC, Büro 2".into())
    );
}

#[tokio::test]
async fn each_target_may_have_its_own_community_and_all_share_one_poller() {
    let (_sim, address) = snmpsim_on_loopback();
    let (_d1, device1) = secret_file("device1");
    let (_d3, device3) = secret_file("device3");
    let text = format!(
        "    - name: shared\n      type: snmp\n      targets:\n        - {{address: \"{address}\", name: router-a, community: {{file: {device1}}}}}\n        - {{address: \"{address}\", name: old-c, community: {{file: {device3}}}}}\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n"
    );
    let targets = pollers(&text).remove(0).readings().await.unwrap();
    let names: Vec<(&str, &Value)> = targets
        .iter()
        .map(|t| (t.target.as_str(), &t.datapoints[0].value))
        .collect();
    assert_eq!(
        names,
        [
            ("router-a", &Value::Text("router-a".into())),
            ("old-c", &Value::Text("old-c".into()))
        ]
    );
}

#[tokio::test]
async fn one_if_mib_preset_poller_reads_each_target_with_its_own_community_and_port() {
    let second = Ipv4Addr::new(127, 0, 0, 2);
    let sim = SnmpSim::start(
        Path::new("tests/data/snmp/data"),
        &[Ipv4Addr::LOCALHOST, second],
    );
    let (_d1, device1) = secret_file("device1");
    let (_d3, device3) = secret_file("device3");
    let text = format!(
        "    - name: farm\n      type: snmp\n      preset: if_mib\n      targets:\n        - {{address: \"127.0.0.1:{}\", name: router-a, community: {{file: {device1}}}}}\n        - {{address: \"127.0.0.2:{}\", name: old-c, community: {{file: {device3}}}}}\n",
        sim.port(Ipv4Addr::LOCALHOST),
        sim.port(second),
    );
    let mut poller = pollers(&text).remove(0);
    // The second poll asks for each table as the first read it.
    for _ in 0..2 {
        let targets = poller.readings().await.unwrap();
        let names: Vec<&str> = targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["router-a", "old-c"]);

        // device1: ifXTable's 64-bit counters, each row with its own labels.
        let octets = find(&targets[..1], "ifInOctets");
        assert_eq!(octets.len(), 3);
        let eth0 = row(&octets, "2");
        assert_eq!(eth0.value, Value::UInt(u64::MAX));
        assert_eq!(eth0.data_type, DataType::Counter64);
        assert_eq!(meta(eth0, "ifName"), Some("Eth0"));
        assert_eq!(meta(eth0, "ifAlias"), Some("Uplink to ISP"));
        let eth1 = row(&octets, "10");
        assert_eq!(meta(eth1, "ifName"), Some("Eth1"));
        assert_eq!(meta(eth1, "ifDescr"), Some("eth1"));
        // Every column of a row carries that row's labels.
        for datapoint in &targets[0].datapoints {
            let index = meta(datapoint, "index").unwrap();
            let name = meta(datapoint, "ifName");
            let expected = match index {
                "1" => Some("lo"),
                "2" => Some("Eth0"),
                "10" => Some("Eth1"),
                other => panic!("no interface {other}: {datapoint:?}"),
            };
            assert_eq!(name, expected, "{datapoint:?}");
        }

        // device3, asked with its own community: 32-bit counters only.
        let octets = find(&targets[1..], "ifInOctets");
        assert_eq!(octets.len(), 2);
        let eth0 = row(&octets, "2");
        assert_eq!(eth0.value, Value::Int(4_294_967_295));
        assert_eq!(eth0.data_type, DataType::Counter);
        assert_eq!(
            meta(eth0, "ifDescr").map(str::trim),
            Some("Intel Ethernet eth0")
        );
        assert!(meta(eth0, "ifName").is_none(), "{eth0:?}");
    }
}

#[test]
fn check_names_each_targets_own_community_file() {
    let (_d1, device1) = secret_file("device1");
    let (_d3, device3) = secret_file("device3");
    let text = format!(
        "pattoo_agentd:\n  pollers:\n    - name: shared\n      type: snmp\n      targets:\n        - {{address: \"192.0.2.1\", name: router-a, community: {{file: {device1}}}}}\n        - {{address: \"192.0.2.3\", name: old-c, community: {{file: {device3}}}}}\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n"
    );
    let settings = common::modbus::load_agentd(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let shown = settings.pollers[0].kind.describe();
    for expected in [
        format!("192.0.2.1:161 (SNMPv2c with the community from {device1})"),
        format!("192.0.2.3:161 (SNMPv2c with the community from {device3})"),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in {shown:?}");
    }
    assert!(
        !shown.contains("device1\n") && !shown.contains(" over "),
        "{shown}"
    );
}
