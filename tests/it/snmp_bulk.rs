//! Tables and walks read together: over SNMPv2c a table's columns, and
//! walks configured one after another, share GETBULKs, and each column
//! still gets exactly the rows its own walk gets. The oracle is a poller
//! per column with that column's `walk` alone (a walk of one subtree),
//! against snmpsim; a loopback relay counts the requests.
#![cfg(feature = "snmp")]

use crate::common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::poller::meta;
use common::snmpsim::SnmpSim;
use common::Readings;
use pattoo_agentd::model::{DataPoint, TargetData};
use pattoo_agentd::pollers::Poller;

/// The table's columns: `.1.3.6.1.4.1.99999.1.1.<n>`.
const TABLE: &str = "1.3.6.1.4.1.99999.1.1";

/// A device whose table column `n` (from 1) has `rows[n - 1]` rows
/// (indices 1..), integers, then one scalar after the table so every
/// column's walk runs on into something.
fn table_snmprec(rows: &[u32]) -> String {
    let mut lines = Vec::new();
    for (c, &count) in rows.iter().enumerate() {
        let column = c + 1;
        for i in 1..=count {
            lines.push(format!(
                "{TABLE}.{column}.{i}|2|{}",
                column as u32 * 1000 + i
            ));
        }
    }
    lines.push("1.3.6.1.4.1.99999.2.0|4|after the table".into());
    lines.join("\n") + "\n"
}

/// A device with `interfaces` interfaces in ifTable and ifXTable, 64-bit
/// counters included, every interface up.
fn if_mib_snmprec(interfaces: u32) -> String {
    let mut rows: Vec<(Vec<u32>, String)> = Vec::new();
    let mut add = |oid: &str, index: u32, tag: &str, value: String| {
        let mut arcs: Vec<u32> = oid.split('.').map(|n| n.parse().unwrap()).collect();
        arcs.push(index);
        rows.push((arcs, format!("{tag}|{value}")));
    };
    add("1.3.6.1.2.1.1.5", 0, "4", "switch".into());
    let t = "1.3.6.1.2.1.2.2.1";
    let x = "1.3.6.1.2.1.31.1.1.1";
    for i in 1..=interfaces {
        let n = u64::from(i) * 7919;
        add(&format!("{t}.1"), i, "2", i.to_string());
        add(&format!("{t}.2"), i, "4", format!("GigabitEthernet0/{i}"));
        add(&format!("{t}.7"), i, "2", "1".into());
        add(&format!("{t}.8"), i, "2", "1".into());
        for column in [10, 11, 13, 14, 16, 17, 19, 20] {
            add(&format!("{t}.{column}"), i, "65", (n * column).to_string());
        }
        add(&format!("{x}.1"), i, "4", format!("Gi0/{i}"));
        for column in 2..=5 {
            add(&format!("{x}.{column}"), i, "65", (n + column).to_string());
        }
        for column in 6..=13 {
            add(
                &format!("{x}.{column}"),
                i,
                "70",
                (n << 33 | column).to_string(),
            );
        }
        add(&format!("{x}.15"), i, "66", "1000".into());
        add(&format!("{x}.18"), i, "4", format!("port {i}"));
    }
    rows.sort();
    rows.iter()
        .map(|(arcs, value)| {
            let oid: Vec<String> = arcs.iter().map(u32::to_string).collect();
            format!("{}|{value}\n", oid.join("."))
        })
        .collect()
}

/// snmpsim serving `snmprec` to the community `public` on 127.0.0.1,
/// answering a GETBULK with at most `max_var_binds` varbinds.
fn simulator(snmprec: &str, max_var_binds: usize) -> (SnmpSim, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("public.snmprec"), snmprec).unwrap();
    let sim = SnmpSim::start_with_max_var_binds(data.path(), &[Ipv4Addr::LOCALHOST], max_var_binds);
    (sim, data)
}

/// snmpsim's own limit: a response cut short is read on where it stopped.
const SNMPSIM_MAX_VAR_BINDS: usize = 64;

/// A UDP relay on loopback in front of `upstream`, counting the requests
/// it passes on.
async fn counting_relay(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let (address, requests, _) = relay(upstream).await;
    (address, requests)
}

/// A UDP relay on loopback in front of `upstream`: the requests it passes
/// on, counted, and each distinct one (a retry resends the same bytes).
async fn relay(
    upstream: SocketAddr,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<HashSet<Vec<u8>>>>) {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(upstream).await.unwrap();
    let address = front.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let distinct: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, requests, distinct, client) = (
            front.clone(),
            back.clone(),
            requests.clone(),
            distinct.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buffer).await {
                *client.lock().unwrap() = Some(from);
                requests.fetch_add(1, Ordering::SeqCst);
                distinct.lock().unwrap().insert(buffer[..n].to_vec());
                let _ = back.send(&buffer[..n]).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(n) = back.recv(&mut buffer).await {
            let to = *client.lock().unwrap();

            if let Some(to) = to {
                let _ = front.send_to(&buffer[..n], to).await;
            }
        }
    });
    (address, requests, distinct)
}

/// The only poller of a `pattoo_agentd.yaml` polling `address` over v2c
/// with community `public` and `settings` (indented by six spaces).
fn poller(address: &str, settings: &str) -> (Poller, tempfile::TempDir) {
    let (secret, community) = common::poller::secret_file("public");
    let poller = common::poller::from_entries(&format!(
        "    - name: bulk\n      type: snmp\n      targets: [\"{address}\"]\n      community: {{file: {community}}}\n      timeout_ms: 2000\n      retries: 2\n{settings}"
    ));
    (poller, secret)
}

/// (row index, value) of the table column `key`, in the order posted.
fn table_rows(targets: &[TargetData], key: &str) -> Vec<(String, String)> {
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .filter(|d| d.key == key)
        .map(|d| {
            (
                meta(d, "index").unwrap().to_owned(),
                format!("{:?}", d.value),
            )
        })
        .collect()
}

/// (row index, value) of the walk `key` of `column`, in the order posted.
fn walk_rows(targets: &[TargetData], key: &str, column: &str) -> Vec<(String, String)> {
    let prefix = format!(".{column}.");
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .filter(|d| d.key == key)
        .map(|d| {
            let oid = meta(d, "oid").unwrap();
            let index = oid.strip_prefix(&prefix).unwrap().to_owned();
            (index, format!("{:?}", d.value))
        })
        .collect()
}

/// Settings reading columns `1..=columns` of the table both as a table
/// (keys `c<n>`, column 1 also as the label `name`) and as walks (keys
/// `w<n>`).
fn table_and_walks(columns: usize) -> String {
    let mut text = String::from("      tables:\n        - name: t\n          columns:\n");
    for c in 1..=columns {
        text += &format!("            - {{key: c{c}, oid: .{TABLE}.{c}}}\n");
    }
    text += &format!("          labels:\n            - {{key: name, oid: .{TABLE}.1}}\n");
    text += "      walk:\n";
    for c in 1..=columns {
        text += &format!("        - {{key: w{c}, oid: .{TABLE}.{c}}}\n");
    }
    text
}

/// Each of columns `1..=columns` walked by a poller of its own, that walk
/// alone (key `w<n>`), with `settings` besides.
async fn walked_alone(address: &str, columns: usize, settings: &str) -> Vec<TargetData> {
    let mut targets = Vec::new();
    for c in 1..=columns {
        let walk = format!("      walk:\n        - {{key: w{c}, oid: .{TABLE}.{c}}}\n{settings}");
        let (mut poller, _secret) = poller(address, &walk);
        targets.extend(poller.readings().await.unwrap());
    }
    targets
}

/// Every table column, and every walk read with the others, has exactly
/// the rows and values of that column's walk `alone`.
fn assert_columns_match_walks(
    targets: &[TargetData],
    alone: &[TargetData],
    rows: &[u32],
    limit: usize,
) {
    for (c, &count) in rows.iter().enumerate() {
        let c = c + 1;
        let column = format!("{TABLE}.{c}");
        let oracle = walk_rows(alone, &format!("w{c}"), &column);
        let table = table_rows(targets, &format!("c{c}"));
        let walk = walk_rows(targets, &format!("w{c}"), &column);
        assert_eq!(table, oracle, "table column {c}");
        assert_eq!(walk, oracle, "walk {c}, read with the others");
        assert_eq!(oracle.len(), (count as usize).min(limit), "column {c}");
    }
}

#[tokio::test]
async fn a_tables_columns_of_different_lengths_each_get_the_rows_of_their_own_walk() {
    let rows = [5, 12, 1, 0, 8];
    let (sim, _data) = simulator(&table_snmprec(&rows), SNMPSIM_MAX_VAR_BINDS);
    let address = format!("127.0.0.1:{}", sim.port(Ipv4Addr::LOCALHOST));
    let (mut poller, _secret) = poller(&address, &table_and_walks(rows.len()));
    let targets = poller.readings().await.unwrap();
    let alone = walked_alone(&address, rows.len(), "").await;
    assert_columns_match_walks(&targets, &alone, &rows, usize::MAX);
    // The label of a row the label column lacks is left out, not invented.
    let c2: Vec<&DataPoint> = targets[0]
        .datapoints
        .iter()
        .filter(|d| d.key == "c2")
        .collect();
    assert_eq!(meta(c2[0], "name"), Some("1001"));
    assert_eq!(meta(c2[11], "name"), None);
}

#[tokio::test]
async fn a_table_larger_than_one_response_is_read_whole() {
    let rows = [60, 60, 59, 61];
    let (sim, _data) = simulator(&table_snmprec(&rows), SNMPSIM_MAX_VAR_BINDS);
    let (address, requests) = counting_relay(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        sim.port(Ipv4Addr::LOCALHOST),
    )))
    .await;
    let settings = table_and_walks(rows.len()) + "      max_repetitions: 7\n";
    let (mut poller, _secret) = poller(&address.to_string(), &settings);
    let targets = poller.readings().await.unwrap();
    // The table and the walks read together take 9 requests of 7 rows
    // each at least: neither fitted one response.
    assert!(requests.load(Ordering::SeqCst) >= 9 + 9, "{requests:?}");
    let alone = walked_alone(
        &address.to_string(),
        rows.len(),
        "      max_repetitions: 7\n",
    )
    .await;
    assert_columns_match_walks(&targets, &alone, &rows, usize::MAX);
}

#[tokio::test]
async fn max_rows_per_walk_cuts_only_the_column_that_goes_on_past_it() {
    let rows = [3, 12, 5];
    let (sim, _data) = simulator(&table_snmprec(&rows), SNMPSIM_MAX_VAR_BINDS);
    let address = format!("127.0.0.1:{}", sim.port(Ipv4Addr::LOCALHOST));
    let settings =
        table_and_walks(rows.len()) + "      max_rows_per_walk: 5\n      max_repetitions: 4\n";
    let (mut poller, _secret) = poller(&address, &settings);
    let (logs, guard) = common::logs::capture();
    let targets = poller.readings().await.unwrap();
    drop(guard);
    let alone = walked_alone(
        &address,
        rows.len(),
        "      max_rows_per_walk: 5\n      max_repetitions: 4\n",
    )
    .await;
    assert_columns_match_walks(&targets, &alone, &rows, 5);
    let text = logs.text();
    let cut = format!(
        "walk .{TABLE}.2: the subtree has more than 5 rows (max_rows_per_walk); the first 5 are kept, the rest (after .{TABLE}.2.5) are not read"
    );
    // Once for the table's column, once for the walk of it.
    assert_eq!(text.matches(&cut).count(), 2, "{text}");
    // A column of exactly the limit is complete.
    assert!(!text.contains(&format!("walk .{TABLE}.3:")), "{text}");
    assert_eq!(
        text.matches("bound=\"max_rows_per_walk\"").count(),
        2,
        "{text}"
    );
}

#[tokio::test]
async fn a_24_interface_device_is_read_in_a_handful_of_requests_by_the_preset_and_the_drop_in() {
    // A device that fits 24 rows of 19 columns in one response.
    let (sim, _data) = simulator(&if_mib_snmprec(24), 1000);
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, sim.port(Ipv4Addr::LOCALHOST)));

    let (address, requests) = counting_relay(upstream).await;
    let (mut preset, _secret) = poller(&address.to_string(), "      preset: if_mib\n");
    let targets = preset.readings().await.unwrap();
    // 15 counters of 24 interfaces, every one from its 64-bit column
    // where it has one.
    assert_eq!(targets[0].datapoints.len(), 15 * 24);
    let octets: Vec<&DataPoint> = targets[0]
        .datapoints
        .iter()
        .filter(|d| d.key == "ifInOctets")
        .collect();
    assert_eq!(meta(octets[23], "ifName"), Some("Gi0/24"));
    assert_eq!(meta(octets[23], "ifAlias"), Some("port 24"));
    let preset_requests = requests.load(Ordering::SeqCst);
    // One request, and room for a retry or two on a busy machine; the 18
    // columns and labels walked one by one were 18 requests at least.
    assert!(preset_requests <= 5, "{preset_requests} requests");

    let (address, requests) = counting_relay(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    common::modbus::write_pattoo_yaml(dir.path());
    std::fs::write(
        dir.path().join("pattoo_agent_snmp_ifmibd.yaml"),
        format!(
            "polling_interval: 60\npolling_groups:\n  - group_name: all\n    ip_targets: [127.0.0.1]\n    oids:\n      - address: .1.3.6.1.2.1.2.2.1.10\nauth_groups:\n  - group_name: v2c\n    snmp_version: 2\n    snmp_community: public\n    snmp_port: {}\n    ip_targets: [127.0.0.1]\n",
            address.port()
        ),
    )
    .unwrap();
    let mut drop_in = common::poller::first_in(dir.path());
    let targets = drop_in.readings().await.unwrap();
    // 14 posted walks of 24 interfaces.
    assert_eq!(targets[0].datapoints.len(), 14 * 24);
    let drop_in_requests = requests.load(Ordering::SeqCst);
    // Its 19 walks one by one were 19 requests at least.
    assert!(drop_in_requests <= 5, "{drop_in_requests} requests");
}

#[tokio::test]
async fn walks_configured_one_after_another_share_their_requests() {
    let rows = [3, 3, 3, 3, 3];
    let (sim, _data) = simulator(&table_snmprec(&rows), SNMPSIM_MAX_VAR_BINDS);
    let (address, requests) = counting_relay(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        sim.port(Ipv4Addr::LOCALHOST),
    )))
    .await;
    let mut walks = String::from("      walk:\n");
    for c in 1..=rows.len() {
        walks += &format!("        - {{key: w{c}, oid: .{TABLE}.{c}}}\n");
    }
    let (mut poller, _secret) = poller(&address.to_string(), &walks);
    let targets = poller.readings().await.unwrap();
    let shared = requests.load(Ordering::SeqCst);
    // Five walks alone are five requests at least; together one, and room
    // for a retry or two on a busy machine.
    assert!(shared <= 3, "{shared} requests");
    let alone = walked_alone(&address.to_string(), rows.len(), "").await;
    for c in 1..=rows.len() {
        let column = format!("{TABLE}.{c}");
        let oracle = walk_rows(&alone, &format!("w{c}"), &column);
        assert_eq!(walk_rows(&targets, &format!("w{c}"), &column), oracle);
        assert_eq!(oracle.len(), 3);
    }
}

#[tokio::test]
async fn a_48_row_table_is_read_in_fewer_requests_from_the_second_poll_with_the_same_values() {
    let rows = [48, 48, 48, 48];
    // A device that fits the whole table in one response.
    let (sim, _data) = simulator(&table_snmprec(&rows), 1000);
    let (address, _, distinct) = relay(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        sim.port(Ipv4Addr::LOCALHOST),
    )))
    .await;
    let (mut poller, _secret) = poller(&address.to_string(), &table_and_walks(rows.len()));
    let mut polls = Vec::new();
    for _ in 0..3 {
        let before = distinct.lock().unwrap().len();
        let targets = poller.readings().await.unwrap();
        polls.push((targets, distinct.lock().unwrap().len() - before));
    }
    let alone = walked_alone(&address.to_string(), rows.len(), "").await;
    for (targets, _) in &polls {
        assert_columns_match_walks(targets, &alone, &rows, usize::MAX);
    }
    let requests: Vec<usize> = polls.iter().map(|(_, n)| *n).collect();
    // The first poll asks for 25 rows at a time: two requests for the
    // table, two for the walks read together. From then on each asks for
    // 49 rows at once: one each.
    assert_eq!(requests, [4, 2, 2], "requests per poll");
}
