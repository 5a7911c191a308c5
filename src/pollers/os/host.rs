//! Parsers of the `/proc` files the os poller reads: text in, values out,
//! no I/O, each reading a file the way psutil reads it (SPEC-os-compat.md
//! §3), since which lines count and how they are split decides which
//! datapoints exist.

use std::collections::HashMap;

/// The fields of `/proc/stat`'s `cpu` line psutil names, in its order; a
/// kernel gives the first seven always and the rest by column count.
pub const CPU_FIELDS: [&str; 10] = [
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

/// What one poll takes from `/proc/stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// The `cpu` line's columns in clock ticks, as many as [`CPU_FIELDS`]
    /// names (7 to 10).
    pub cpu_ticks: Vec<u64>,
    pub ctx_switches: Option<u64>,
    pub interrupts: Option<u64>,
    pub soft_interrupts: Option<u64>,
}

/// `/proc/stat`: the first line's columns (psutil's `cpu_times`) and the
/// `ctxt`, `intr` and `softirq` totals (`cpu_stats`).
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut columns = first.split_whitespace();
    if columns.next() != Some("cpu") {
        return Err(format!("the first line is not the `cpu` line: {first:?}"));
    }
    let cpu_ticks = columns
        .take(CPU_FIELDS.len())
        .map(|column| {
            column
                .parse::<u64>()
                .map_err(|_| format!("`cpu` column {column:?} is not a whole number"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if cpu_ticks.len() < 7 {
        return Err(format!(
            "the `cpu` line has {} columns; at least 7 expected",
            cpu_ticks.len()
        ));
    }
    let mut stat = Stat {
        cpu_ticks,
        ctx_switches: None,
        interrupts: None,
        soft_interrupts: None,
    };
    let first_number = |line: &str| line.split_whitespace().nth(1)?.parse::<u64>().ok();
    for line in lines {
        // psutil matches prefixes: `intr` before `softirq` is fine since
        // no other line starts with either.
        if line.starts_with("ctxt") {
            stat.ctx_switches = first_number(line);
        } else if line.starts_with("intr") {
            stat.interrupts = first_number(line);
        } else if line.starts_with("softirq") {
            stat.soft_interrupts = first_number(line);
        }
    }
    Ok(stat)
}

/// `/proc/meminfo` (or any `Name: value [kB]` file) as psutil reads it:
/// every value × 1024, whatever its unit.
pub fn parse_meminfo(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?.strip_suffix(':')?;
            let value = fields.next()?.parse::<u64>().ok()?;
            Some((name, value.saturating_mul(1024)))
        })
        .collect()
}

/// Python's `round(x, 1)`.
pub fn round1(x: f64) -> f64 {
    format!("{x:.1}").parse().unwrap_or(x)
}

/// psutil's `usage_percent(used, total, round_=1)`.
pub fn usage_percent(used: i128, total: i128) -> f64 {
    if total == 0 {
        return 0.0;
    }
    round1((used as f64 / total as f64) * 100.0)
}

/// `psutil.virtual_memory()` (psutil 7): the fields `total available
/// percent used free active inactive buffers cached shared slab`, in that
/// order. Fields the kernel does not give are 0, as in psutil.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualMemory {
    pub total: u64,
    pub available: u64,
    pub percent: f64,
    pub used: i128,
    pub free: u64,
    pub active: u64,
    pub inactive: u64,
    pub buffers: u64,
    pub cached: u64,
    pub shared: u64,
    pub slab: u64,
}

pub fn virtual_memory(mems: &HashMap<&str, u64>) -> Result<VirtualMemory, String> {
    let get = |name: &str| mems.get(name).copied();
    let (Some(total), Some(free)) = (get("MemTotal"), get("MemFree")) else {
        return Err("MemTotal or MemFree is missing".to_owned());
    };
    let buffers = get("Buffers").unwrap_or(0);
    let cached = get("Cached").map_or(0, |cached| cached + get("SReclaimable").unwrap_or(0));
    let shared = get("Shmem").or_else(|| get("MemShared")).unwrap_or(0);
    let active = get("Active").unwrap_or(0);
    let inactive = get("Inactive")
        .or_else(|| Some(get("Inact_dirty")? + get("Inact_clean")? + get("Inact_laundry")?))
        .unwrap_or(0);
    let slab = get("Slab").unwrap_or(0);
    // Kernels before 3.14 have no MemAvailable; psutil then estimates it
    // from /proc/zoneinfo, which free(1) gave up on too: free + cached is
    // what it falls back to, and a value, unlike an identity, may differ.
    let mut available = match get("MemAvailable") {
        Some(0) | None => free + cached,
        Some(available) => available,
    };
    if available > total {
        available = free;
    }
    let used = i128::from(total) - i128::from(available);
    Ok(VirtualMemory {
        total,
        available,
        percent: usage_percent(used, i128::from(total)),
        used,
        free,
        active,
        inactive,
        buffers,
        cached,
        shared,
        slab,
    })
}

/// `psutil.swap_memory()`: `total used free percent sin sout`.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapMemory {
    pub total: u64,
    pub used: i128,
    pub free: u64,
    pub percent: f64,
    pub sin: u64,
    pub sout: u64,
}

/// `vmstat` is `/proc/vmstat`'s text, `None` when it could not be read
/// (then `sin` and `sout` are 0, as in psutil).
pub fn swap_memory(mems: &HashMap<&str, u64>, vmstat: Option<&str>) -> Result<SwapMemory, String> {
    let (Some(&total), Some(&free)) = (mems.get("SwapTotal"), mems.get("SwapFree")) else {
        return Err("SwapTotal or SwapFree is missing".to_owned());
    };
    let used = i128::from(total) - i128::from(free);
    let (mut sin, mut sout) = (None, None);
    for line in vmstat.unwrap_or_default().lines() {
        // psutil counts pages of 4 KiB whatever the page size.
        let pages = || line.split(' ').nth(1)?.trim().parse::<u64>().ok();
        if line.starts_with("pswpin") {
            sin = pages().map(|p| p.saturating_mul(4096));
        } else if line.starts_with("pswpout") {
            sout = pages().map(|p| p.saturating_mul(4096));
        }
    }
    Ok(SwapMemory {
        total,
        used,
        free,
        percent: usage_percent(used, i128::from(total)),
        sin: sin.unwrap_or(0),
        sout: sout.unwrap_or(0),
    })
}

/// `/proc/filesystems`: the file system types psutil counts as physical
/// (those without `nodev`, plus zfs).
pub fn physical_filesystems(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            match line.strip_prefix("nodev") {
                None if !line.is_empty() => Some(line.to_owned()),
                Some(rest) if rest.trim() == "zfs" => Some("zfs".to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub opts: String,
}

/// A mount table (`/etc/mtab`, `/proc/self/mounts`) as glibc's `getmntent`
/// reads it: blank lines and `#` comments skipped, fields split on spaces
/// and tabs, `\040`-style octal escapes decoded, a missing options field
/// read as `rw`.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split([' ', '\t']).filter(|field| !field.is_empty());
            let device = unescape(fields.next()?);
            let mountpoint = unescape(fields.next()?);
            let fstype = unescape(fields.next()?);
            let opts = fields.next().map_or_else(|| "rw".to_owned(), unescape);
            Some(Mount {
                device,
                mountpoint,
                fstype,
                opts,
            })
        })
        .collect()
}

/// glibc's `decode_name`: `\040` space, `\011` tab, `\012` newline,
/// `\134` and `\\` backslash; anything else stays as written.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (decoded, used) = if rest.starts_with("\\040") {
            (' ', 4)
        } else if rest.starts_with("\\011") {
            ('\t', 4)
        } else if rest.starts_with("\\012") {
            ('\n', 4)
        } else if rest.starts_with("\\134") {
            ('\\', 4)
        } else if rest.starts_with("\\\\") {
            ('\\', 2)
        } else {
            ('\\', 1)
        };
        out.push(decoded);
        rest = &rest[used..];
    }
    out.push_str(rest);
    out
}

/// psutil's `disk_io_counters(perdisk=True)` fields, in its order.
pub const DISK_FIELDS: [&str; 9] = [
    "read_count",
    "write_count",
    "read_bytes",
    "write_bytes",
    "read_time",
    "write_time",
    "read_merged_count",
    "write_merged_count",
    "busy_time",
];

/// Bytes per sector in `/proc/diskstats`, whatever the device's own.
const SECTOR_BYTES: u64 = 512;

/// `/proc/diskstats`: per device name, [`DISK_FIELDS`], in file order (a
/// name listed twice keeps its first place and its last counters, as a
/// Python dict does). Lines psutil cannot read either are returned as
/// errors; the others are still read.
pub fn parse_diskstats(text: &str) -> (Vec<(String, [u64; 9])>, Vec<String>) {
    let mut disks: Vec<(String, [u64; 9])> = Vec::new();
    let mut errors = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.len() {
            // A partition on kernels before 2.6.25: no merges, no times.
            7 => (|| {
                let n = |i: usize| fields[i].parse::<u64>().ok();
                Some((
                    fields[2].to_owned(),
                    [
                        n(3)?,
                        n(5)?,
                        n(4)? * SECTOR_BYTES,
                        n(6)? * SECTOR_BYTES,
                        0,
                        0,
                        0,
                        0,
                        0,
                    ],
                ))
            })(),
            14 | 18.. => procfs_core::DiskStat::from_line(line).ok().map(|disk| {
                (
                    disk.name,
                    [
                        disk.reads,
                        disk.writes,
                        disk.sectors_read.saturating_mul(SECTOR_BYTES),
                        disk.sectors_written.saturating_mul(SECTOR_BYTES),
                        disk.time_reading,
                        disk.time_writing,
                        disk.merged,
                        disk.writes_merged,
                        disk.time_in_progress,
                    ],
                )
            }),
            _ => None,
        };
        match parsed {
            Some((name, counters)) => match disks.iter_mut().find(|(seen, _)| *seen == name) {
                Some(entry) => entry.1 = counters,
                None => disks.push((name, counters)),
            },
            None => errors.push(format!("cannot read the line {line:?}")),
        }
    }
    (disks, errors)
}

/// psutil's `net_io_counters(pernic=True)` fields, in its order.
pub const NIC_FIELDS: [&str; 8] = [
    "bytes_sent",
    "bytes_recv",
    "packets_sent",
    "packets_recv",
    "errin",
    "errout",
    "dropin",
    "dropout",
];

/// `/proc/net/dev` from its third line: per interface, [`NIC_FIELDS`], in
/// file order; the name is what precedes the last `:`. Unreadable lines
/// are returned as errors; the others are still read.
pub fn parse_net_dev(text: &str) -> (Vec<(String, [u64; 8])>, Vec<String>) {
    let mut nics: Vec<(String, [u64; 8])> = Vec::new();
    let mut errors = Vec::new();
    for line in text.lines().skip(2).filter(|line| !line.trim().is_empty()) {
        let parsed = line.rfind(':').filter(|&at| at > 0).and_then(|at| {
            let numbers = line[at + 1..]
                .split_whitespace()
                .map(|n| n.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            if numbers.len() != 16 {
                return None;
            }
            let n = |i: usize| numbers[i];
            Some((
                line[..at].trim().to_owned(),
                [n(8), n(0), n(9), n(1), n(2), n(10), n(3), n(11)],
            ))
        });
        match parsed {
            Some((name, counters)) => match nics.iter_mut().find(|(seen, _)| *seen == name) {
                Some(entry) => entry.1 = counters,
                None => nics.push((name, counters)),
            },
            None => errors.push(format!("cannot read the line {line:?}")),
        }
    }
    (nics, errors)
}

/// `/proc/loadavg`'s three averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The mean of `/proc/cpuinfo`'s `cpu MHz` lines, psutil's fallback for
/// the current frequency where `/sys` has no cpufreq.
pub fn cpuinfo_mhz(text: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("cpu mhz"))
        .filter_map(|line| line.split(':').nth(1)?.trim().parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The name `/proc/partitions` gives the device `major:minor`.
pub fn partition_name(text: &str, major: u64, minor: u64) -> Option<String> {
    text.lines().skip(2).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            return None;
        }
        let matches = fields[0].parse::<u64>().ok() == Some(major)
            && fields[1].parse::<u64>().ok() == Some(minor);
        (matches && !fields[3].is_empty()).then(|| fields[3].to_owned())
    })
}

/// A shell-style pattern: `*` any run of characters, `?` one character,
/// `[abc]`, `[a-z]` and `[!a-z]` one of a set; anything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    glob_at(&pattern, &name)
}

fn glob_at(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|skip| glob_at(&pattern[1..], &name[skip..])),
        Some('?') => !name.is_empty() && glob_at(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some(close) = pattern.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                return name.first() == Some(&'[') && glob_at(&pattern[1..], &name[1..]);
            };
            let Some(&c) = name.first() else {
                return false;
            };
            let (negated, set) = match pattern[1] {
                '!' | '^' => (true, &pattern[2..close]),
                _ => (false, &pattern[1..close]),
            };
            let mut found = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    found |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    found |= set[i] == c;
                    i += 1;
                }
            }
            found != negated && glob_at(&pattern[close + 1..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && glob_at(&pattern[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_gives_the_cpu_columns_the_kernel_has_and_the_three_totals() {
        let stat = parse_stat(
            "cpu  10 20 30 40 50 60 70 80 90 100\ncpu0 1 2 3 4 5 6 7 8 9 10\n\
             intr 12345 0 1 2\nctxt 999\nbtime 1\nsoftirq 777 1 2\n",
        )
        .unwrap();
        assert_eq!(stat.cpu_ticks, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(
            (stat.ctx_switches, stat.interrupts, stat.soft_interrupts),
            (Some(999), Some(12345), Some(777))
        );
        let old = parse_stat("cpu 1 2 3 4 5 6 7 8\n").unwrap();
        assert_eq!(old.cpu_ticks.len(), 8, "steal only, before guest");
        assert!(parse_stat("cpu 1 2 3\n").is_err());
        assert!(parse_stat("").is_err());
    }

    #[test]
    fn memory_follows_psutil_7() {
        let mems = parse_meminfo(
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nBuffers: 10 kB\n\
             Cached: 200 kB\nSReclaimable: 20 kB\nShmem: 5 kB\nActive: 300 kB\nInactive: 250 kB\n\
             Slab: 40 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nHugePages_Total: 0\n",
        );
        let memory = virtual_memory(&mems).unwrap();
        assert_eq!(memory.total, 1_024_000);
        assert_eq!(memory.available, 614_400);
        assert_eq!(memory.used, 1_024_000 - 614_400);
        assert_eq!(memory.cached, 220 * 1024);
        assert_eq!(memory.percent, 40.0);
        let swap = swap_memory(&mems, Some("pswpin 3\npswpout 5\n")).unwrap();
        assert_eq!((swap.total, swap.percent), (0, 0.0), "no swap: all 0");
        assert_eq!((swap.sin, swap.sout), (3 * 4096, 5 * 4096));
        assert!(virtual_memory(&parse_meminfo("MemFree: 1 kB\n")).is_err());
    }

    #[test]
    fn percentages_round_to_one_decimal_as_python_does() {
        assert_eq!(usage_percent(1, 3), 33.3);
        assert_eq!(usage_percent(2, 3), 66.7);
        assert_eq!(usage_percent(5, 0), 0.0);
        assert_eq!(round1(2.25), 2.2, "a tie goes to the even digit");
    }

    #[test]
    fn physical_file_systems_are_those_without_nodev_and_zfs() {
        assert_eq!(
            physical_filesystems("nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tvfat\nnodev\tzfs\n"),
            ["ext4", "vfat", "zfs"]
        );
    }

    #[test]
    fn mount_tables_are_decoded_as_getmntent_does() {
        let mounts = parse_mounts(
            "# comment\n\n/dev/vda / ext4 rw,relatime 0 0\n\
             /dev/sdb1 /media/My\\040Disk vfat ro 0 0\nnone /x tmpfs\n",
        );
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].opts, "rw,relatime");
        assert_eq!(mounts[1].mountpoint, "/media/My Disk");
        assert_eq!(mounts[2].opts, "rw", "a missing options field");
    }

    #[test]
    fn diskstats_reads_disks_and_old_partitions_and_reports_strange_lines() {
        let (disks, errors) = parse_diskstats(
            " 253 0 vda 100 2 300 4 500 6 700 8 0 10 11 0 0 0 0 0 0\n\
             8 1 sda1 5 6 7 8\n\
             7 0 loop0 1 2 3\n\
             1 0 ram0 1 0 2 3 4 0 5 6 0 7 8\n",
        );
        assert_eq!(
            disks,
            [
                ("vda".to_owned(), [100, 500, 300 * 512, 700 * 512, 4, 8, 2, 6, 10]),
                ("sda1".to_owned(), [5, 7, 6 * 512, 8 * 512, 0, 0, 0, 0, 0]),
                ("ram0".to_owned(), [1, 4, 2 * 512, 5 * 512, 3, 6, 0, 0, 7]),
            ]
        );
        assert_eq!(errors, ["cannot read the line \"7 0 loop0 1 2 3\""]);
    }

    #[test]
    fn net_dev_names_are_before_the_last_colon_and_counters_in_psutil_order() {
        let (nics, errors) = parse_net_dev(
            "Inter-|   Receive\n face |bytes\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n\
             eth0:100 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n  broken: 1 2\n",
        );
        assert_eq!(
            nics,
            [
                ("lo".to_owned(), [9, 1, 10, 2, 3, 11, 4, 12]),
                ("eth0".to_owned(), [9, 100, 10, 2, 3, 11, 4, 12]),
            ]
        );
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn small_files() {
        assert_eq!(
            parse_loadavg("0.15 0.10 0.05 1/123 4567\n"),
            Some([0.15, 0.10, 0.05])
        );
        assert_eq!(cpuinfo_mhz("cpu MHz\t\t: 2000.0\ncpu MHz : 3000.0\n"), Some(2500.0));
        assert_eq!(cpuinfo_mhz("processor : 0\n"), None);
        assert_eq!(
            partition_name("major minor  #blocks  name\n\n 253 0 100 vda\n 8 1 5 sda1\n", 8, 1),
            Some("sda1".to_owned())
        );
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("loop*", "loop12"));
        assert!(glob_match("*docker*", "/var/lib/docker/overlay"));
        assert!(glob_match("eth?", "eth0"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("sd[a-c]", "sdb"));
        assert!(!glob_match("sd[!a-c]", "sdb"));
        assert!(glob_match("/", "/"));
        assert!(!glob_match("/", "/home"));
    }
}
