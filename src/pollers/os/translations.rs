//! Names and units of the os poller's keys, built from the tables in
//! [`super`] that make them. pattoo's own rows for the Python OS agents
//! have errors this does not repeat: `cpu_stats_interrupts` is interrupts
//! (not context switches), `disk_partition_disk_usage_used` is bytes,
//! `network_io_bytes_sent` is outbound and `_recv` inbound, and
//! `cpu_times_*` are seconds (charted per second), not percent.

use super::{HOST_METADATA, KEY_GROUPS, PART_METADATA, SYSTEM_KEYS};
use crate::model::translation::{readable, Language, Translation, LABEL_UNITS};

/// A field's words, capitalised: `ctx_switches` → `Ctx Switches`.
fn title(field: &str) -> String {
    field
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// The English name and unit of `{prefix}_{field}`.
fn english(prefix: &str, field: &str) -> (String, &'static str) {
    let percent = field == "percent";
    match prefix {
        "cpu_times_percent" => (format!("CPU Time {} (Percent)", title(field)), "Percent"),
        "cpu_times" => (format!("CPU Time {}", title(field)), "Seconds / Second"),
        "cpu_stats" => match field {
            "ctx_switches" => ("CPU Context Switches".into(), "Switches / Second"),
            "interrupts" => ("CPU Interrupts".into(), "Interrupts / Second"),
            "soft_interrupts" => ("CPU Soft Interrupts".into(), "Interrupts / Second"),
            "syscalls" => ("CPU System Calls".into(), "Calls / Second"),
            _ => (format!("CPU {}", title(field)), "Count / Second"),
        },
        "memory" if percent => ("Memory Used (Percent)".into(), "Percent"),
        "memory" => (format!("Memory {}", title(field)), "Bytes"),
        "swap_memory" => match field {
            "percent" => ("Swap Used (Percent)".into(), "Percent"),
            "sin" => ("Swap In".into(), "Bytes / Second"),
            "sout" => ("Swap Out".into(), "Bytes / Second"),
            _ => (format!("Swap {}", title(field)), "Bytes"),
        },
        "disk_partition_disk_usage" if percent => ("Partition Used (Percent)".into(), "Percent"),
        "disk_partition_disk_usage" => (format!("Partition {}", title(field)), "Bytes"),
        "disk_io" => match field {
            "read_count" => ("Disk Reads".into(), "Reads / Second"),
            "write_count" => ("Disk Writes".into(), "Writes / Second"),
            "read_bytes" => ("Disk Read Traffic".into(), "Bytes / Second"),
            "write_bytes" => ("Disk Write Traffic".into(), "Bytes / Second"),
            "read_time" => ("Disk Read Time".into(), "Milliseconds / Second"),
            "write_time" => ("Disk Write Time".into(), "Milliseconds / Second"),
            "read_merged_count" => ("Disk Merged Reads".into(), "Reads / Second"),
            "write_merged_count" => ("Disk Merged Writes".into(), "Writes / Second"),
            "busy_time" => ("Disk Busy Time".into(), "Milliseconds / Second"),
            _ => (format!("Disk {}", title(field)), "Count / Second"),
        },
        "network_io" => match field {
            "bytes_sent" => ("Network Traffic (Outbound)".into(), "Bytes / Second"),
            "bytes_recv" => ("Network Traffic (Inbound)".into(), "Bytes / Second"),
            "packets_sent" => ("Network Packets (Outbound)".into(), "Packets / Second"),
            "packets_recv" => ("Network Packets (Inbound)".into(), "Packets / Second"),
            "errin" => ("Network Errors (Inbound)".into(), "Errors / Second"),
            "errout" => ("Network Errors (Outbound)".into(), "Errors / Second"),
            "dropin" => ("Network Dropped Packets (Inbound)".into(), "Packets / Second"),
            "dropout" => ("Network Dropped Packets (Outbound)".into(), "Packets / Second"),
            _ => (format!("Network {}", title(field)), "Count / Second"),
        },
        _ => (readable(&format!("{prefix}_{field}")), "Value"),
    }
}

/// Every key and metadata key an os poller posts.
pub fn translations(language: Language) -> Vec<Translation> {
    let Language::English = language;
    let mut names = Vec::new();
    for (prefix, fields) in KEY_GROUPS {
        for field in fields {
            let (name, units) = english(prefix, field);
            names.push(Translation::datapoint(format!("{prefix}_{field}"), name, units));
        }
    }
    for key in SYSTEM_KEYS {
        let (name, units) = match key {
            "process_count" => ("Processes".to_owned(), "Processes"),
            "cpu_frequency" => ("CPU Frequency".to_owned(), "Megahertz"),
            load => (
                format!("Load Average ({} Minutes)", load[13..15].trim_start_matches('0')),
                "Processes",
            ),
        };
        names.push(Translation::datapoint(key, name, units));
    }
    for key in HOST_METADATA.into_iter().chain(PART_METADATA) {
        let name = match key {
            "release" => "Operating System Release".to_owned(),
            "version" => "Operating System Version".to_owned(),
            "processor" => "Processor".to_owned(),
            "type" => "Operating System".to_owned(),
            "cpus" => "CPUs".to_owned(),
            "hostname" => "Host Name".to_owned(),
            "disk_partition" => "Disk".to_owned(),
            "network_io_interface" => "Network Interface".to_owned(),
            other => format!("Partition {}", title(&other["disk_partition_".len()..])),
        };
        names.push(Translation::metadata(key, name, LABEL_UNITS));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_in_pattoos_own_os_rows_are_not_repeated() {
        let names = translations(Language::English);
        let find = |key: &str| names.iter().find(|n| n.key == key).unwrap();
        assert_eq!(find("cpu_stats_interrupts").name, "CPU Interrupts");
        assert_eq!(find("disk_partition_disk_usage_used").units, "Bytes");
        assert_eq!(find("network_io_bytes_sent").name, "Network Traffic (Outbound)");
        assert_eq!(find("network_io_bytes_recv").name, "Network Traffic (Inbound)");
        assert_eq!(find("cpu_times_user").units, "Seconds / Second");
        assert_eq!(find("load_average_05min").name, "Load Average (5 Minutes)");
        for name in &names {
            assert!(!name.name.is_empty() && !name.units.is_empty(), "{name:?}");
        }
    }
}
