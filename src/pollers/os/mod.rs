//! The os poller: this host's CPU, memory, swap, partitions, disks and
//! network interfaces, read from `/proc`, `/sys` and `statvfs(2)` the way
//! the Python OS agents read them through psutil, so each datapoint has the
//! identity (checksum) the Python agent gave it (SPEC-os-compat.md §3).
//!
//! Invariants:
//! - The datapoints, their keys, data types, value kinds (int or float),
//!   metadata and its order are the Python collector's; only what the
//!   settings add or filter out differs (see [`config`]).
//! - Nothing is spawned per poll: `uname -p` runs once per process, as in
//!   Python, for the `processor` metadata (see [`Facts::of_this_host`]).
//! - `cpu_times_percent_*` covers the time since the previous poll of this
//!   poller; the first poll's baseline is taken when the poller is built.
//! - A part of the host that cannot be read (a file, a mount that does not
//!   answer `statvfs` within [`STATVFS_TIMEOUT`]) is logged with what
//!   failed and left out; the rest of the poll is posted. The poll fails
//!   only when nothing at all could be read.
//! - A mount that hung stays hung for the thread asking it: while one
//!   `statvfs` of a mount point is still running, later polls skip that
//!   mount point instead of piling up threads.

mod compat;
mod config;
pub mod host;
mod kind;
mod translations;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use compat::{
    python_interval, python_section, Layout, LINUX_AUTONOMOUSD, LINUX_AUTONOMOUSD_DROP_IN,
    LINUX_SPOKED, OS_AUTONOMOUSD, OS_AUTONOMOUSD_DROP_IN, OS_SPOKED,
};
pub use config::{Filter, OsSettings, PythonExclusion};
pub use kind::Os;

use crate::model::{DataPoint, DataType, Metadata, TargetData, Text, Value};
use crate::pollers::{PollerEnv, PollerKind, PollerSettings};
use crate::time::now_ms;
use host::{CPU_FIELDS, DISK_FIELDS, NIC_FIELDS};

/// How long one mount point's `statvfs` may take before the poll goes on
/// without it.
pub const STATVFS_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of an os poller posting as `agent_program` every
/// `polling_interval`, with the Python agents' defaults: what a spoke
/// serving this host's figures builds without any configuration file.
pub fn poller_settings(agent_program: &str, polling_interval: Duration) -> PollerSettings {
    PollerSettings {
        name: agent_program.to_owned(),
        agent_program: agent_program.to_owned(),
        polling_interval,
        metadata: Vec::new(),
        kind: PollerKind::Os(OsSettings::default()),
    }
}

/// A whole poll failed: nothing of the host could be read.
#[derive(Debug, thiserror::Error)]
pub enum OsError {
    #[error("poller {poller}: nothing of this host could be read: {}", errors.join("; "))]
    NothingRead { poller: String, errors: Vec<String> },
}

/// What identifies this host in every datapoint and changes only with a
/// reboot: Python reads it once per process (`platform.uname()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `platform.release()`.
    pub release: String,
    /// `platform.version()`.
    pub version: String,
    /// `platform.processor()`: what `uname -p` prints, `""` for `unknown`
    /// or when it cannot run.
    pub processor: String,
    /// `platform.system()`.
    pub system: String,
}

impl Facts {
    /// This host's facts, read once per process: the kernel's from
    /// `/proc/sys/kernel`, the processor from one run of `uname -p`.
    pub fn of_this_host() -> Result<Facts, String> {
        static FACTS: OnceLock<Result<Facts, String>> = OnceLock::new();
        FACTS
            .get_or_init(|| {
                let kernel = |name: &str| {
                    let path = format!("/proc/sys/kernel/{name}");
                    std::fs::read_to_string(&path)
                        .map(|text| text.trim_end_matches('\n').to_owned())
                        .map_err(|error| format!("reading {path}: {error}"))
                };
                Ok(Facts {
                    release: kernel("osrelease")?,
                    version: kernel("version")?,
                    processor: uname_processor(),
                    system: kernel("ostype")?,
                })
            })
            .clone()
    }
}

/// What Python's `platform.processor()` gives on Linux: `uname -p`'s
/// output stripped, `""` for `unknown` (Debian, Ubuntu) or a failed run.
fn uname_processor() -> String {
    let output = std::process::Command::new("uname")
        .arg("-p")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if text == "unknown" {
                String::new()
            } else {
                text
            }
        }
        _ => String::new(),
    }
}

/// Where the host's files are: `/proc`, `/sys`, `/etc/mtab`, `/dev`, `/`
/// on a real host, a fixture's folders in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub mtab: PathBuf,
    pub dev: PathBuf,
    /// The file system whose device `/dev/root` stands for.
    pub root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: "/proc".into(),
            sys: "/sys".into(),
            mtab: "/etc/mtab".into(),
            dev: "/dev".into(),
            root: "/".into(),
        }
    }
}

/// The datapoint keys, made once.
#[derive(Debug)]
struct Keys {
    cpu_percent: Vec<Text>,
    cpu_times: Vec<Text>,
    cpu_stats: Vec<Text>,
    memory: Vec<Text>,
    swap: Vec<Text>,
    partition: Vec<Text>,
    disk: Vec<Text>,
    nic: Vec<Text>,
}

const MEMORY_FIELDS: [&str; 11] = [
    "total",
    "available",
    "percent",
    "used",
    "free",
    "active",
    "inactive",
    "buffers",
    "cached",
    "shared",
    "slab",
];
const SWAP_FIELDS: [&str; 6] = ["total", "used", "free", "percent", "sin", "sout"];
const CPU_STATS_FIELDS: [&str; 4] = ["ctx_switches", "interrupts", "soft_interrupts", "syscalls"];
const USAGE_FIELDS: [&str; 4] = ["total", "used", "free", "percent"];

/// The datapoint keys made of a prefix and fields, `{prefix}_{field}`.
const KEY_GROUPS: [(&str, &[&str]); 8] = [
    ("cpu_times_percent", &CPU_FIELDS),
    ("cpu_times", &CPU_FIELDS),
    ("cpu_stats", &CPU_STATS_FIELDS),
    ("memory", &MEMORY_FIELDS),
    ("swap_memory", &SWAP_FIELDS),
    ("disk_partition_disk_usage", &USAGE_FIELDS),
    ("disk_io", &DISK_FIELDS),
    ("network_io", &NIC_FIELDS),
];
/// The host-wide datapoints besides those: processes, the three load
/// averages, the CPU frequency.
const SYSTEM_KEYS: [&str; 5] = [
    "process_count",
    "load_average_01min",
    "load_average_05min",
    "load_average_15min",
    "cpu_frequency",
];
/// The metadata every datapoint carries, in order.
const HOST_METADATA: [&str; 6] = ["release", "version", "processor", "type", "cpus", "hostname"];
/// The metadata of a partition's, a disk's and an interface's datapoints.
const PART_METADATA: [&str; 6] = [
    "disk_partition_device",
    "disk_partition_mountpoint",
    "disk_partition_fstype",
    "disk_partition_opts",
    "disk_partition",
    "network_io_interface",
];

impl Keys {
    fn new() -> Keys {
        let keys = |prefix: &str, fields: &[&str]| -> Vec<Text> {
            fields
                .iter()
                .map(|field| Text::Shared(Arc::from(format!("{prefix}_{field}"))))
                .collect()
        };
        let [cpu_percent, cpu_times, cpu_stats, memory, swap, partition, disk, nic] =
            KEY_GROUPS.map(|(prefix, fields)| keys(prefix, fields));
        Keys {
            cpu_percent,
            cpu_times,
            cpu_stats,
            memory,
            swap,
            partition,
            disk,
            nic,
        }
    }
}

/// One os poller: its settings, this host's facts, and the CPU times of
/// the previous poll.
#[derive(Debug)]
pub struct OsPoller {
    name: String,
    settings: OsSettings,
    hostname: String,
    paths: HostPaths,
    facts: Facts,
    keys: Keys,
    clock_ticks: f64,
    /// The `cpu` line of the previous poll, for `cpu_times_percent_*`.
    previous_cpu: Option<Vec<u64>>,
    /// The interfaces the previous poll read, to say which went away.
    previous_nics: Vec<String>,
    /// Mount points whose `statvfs` has not returned yet.
    hung: Arc<Mutex<HashSet<String>>>,
    /// `statvfs(2)`; another function in tests.
    statfs: fn(&Path) -> Result<FsSize, String>,
}

/// What psutil's `disk_usage` takes from `statvfs(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FsSize {
    blocks: u64,
    fragment_size: u64,
    blocks_free: u64,
    blocks_available: u64,
}

fn statvfs(path: &Path) -> Result<FsSize, String> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|errno| errno.desc().to_owned())?;
    Ok(FsSize {
        blocks: stat.blocks(),
        fragment_size: stat.fragment_size(),
        blocks_free: stat.blocks_free(),
        blocks_available: stat.blocks_available(),
    })
}

/// The datapoints of one poll and what could not be read.
struct Reading {
    target: TargetData,
    errors: Vec<String>,
}

impl Reading {
    fn point(
        &mut self,
        key: &Text,
        value: Value,
        data_type: DataType,
        now: u64,
        metadata: Vec<Metadata>,
    ) {
        let mut point = DataPoint::new(key.shared(), value, data_type, now);
        point.metadata = metadata;
        self.target.datapoints.push(point);
    }
}

fn shared(metadata: &[Metadata]) -> Vec<Metadata> {
    metadata.iter().map(Metadata::shared).collect()
}

impl OsPoller {
    /// A poller of this host, named `name`, whose datapoints carry
    /// `env.hostname`. Reads the host's facts (once per process) and the
    /// first baseline of the CPU times.
    pub fn new(name: &str, settings: &OsSettings, env: &PollerEnv) -> Result<OsPoller, String> {
        let facts = Facts::of_this_host()?;
        Ok(OsPoller::with_host(
            name,
            settings,
            &env.hostname,
            HostPaths::default(),
            facts,
        ))
    }

    /// A poller of the host whose files are at `paths`, with `facts`.
    pub fn with_host(
        name: &str,
        settings: &OsSettings,
        hostname: &str,
        paths: HostPaths,
        facts: Facts,
    ) -> OsPoller {
        let mut poller = OsPoller {
            name: name.to_owned(),
            settings: settings.clone(),
            hostname: hostname.to_owned(),
            paths,
            facts,
            keys: Keys::new(),
            clock_ticks: clock_ticks(),
            previous_cpu: None,
            previous_nics: Vec::new(),
            hung: Arc::default(),
            statfs: statvfs,
        };
        poller.previous_cpu = poller
            .read("stat")
            .ok()
            .and_then(|text| host::parse_stat(&text).ok())
            .map(|stat| stat.cpu_ticks);
        poller
    }

    fn read(&self, name: &str) -> Result<String, String> {
        let path = self.paths.proc.join(name);
        std::fs::read_to_string(&path).map_err(|error| format!("reading {}: {error}", path.display()))
    }

    /// The metadata every datapoint carries (M in the spec), in order.
    fn host_metadata(&self) -> Vec<Metadata> {
        let mut metadata = vec![
            Metadata::without_checksum(HOST_METADATA[0], self.facts.release.as_str()).shared(),
            Metadata::without_checksum(HOST_METADATA[1], self.facts.version.as_str()).shared(),
            Metadata::new(HOST_METADATA[2], self.facts.processor.as_str()).shared(),
            Metadata::new(HOST_METADATA[3], self.facts.system.as_str()).shared(),
        ];
        if let Some(cpus) = online_cpus() {
            metadata.push(Metadata::new(HOST_METADATA[4], cpus.to_string()).shared());
        }
        metadata.push(Metadata::new(HOST_METADATA[5], self.hostname.as_str()).shared());
        metadata
    }

    /// Reads the host once. Parts that cannot be read are logged and left
    /// out; fails only when nothing could be read.
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, OsError> {
        let (target, errors) = self.read_host().await;
        if target.datapoints.is_empty() {
            return Err(OsError::NothingRead {
                poller: self.name.clone(),
                errors,
            });
        }
        for error in &errors {
            tracing::warn!(poller = %self.name, "Part of this host could not be read and is left out of this poll: {error}.");
        }
        Ok(vec![target])
    }

    /// The host's datapoints, and what could not be read, each naming the
    /// file or mount point.
    async fn read_host(&mut self) -> (TargetData, Vec<String>) {
        let host = self.host_metadata();
        let mut reading = Reading {
            target: TargetData::new(self.hostname.clone()),
            errors: Vec::new(),
        };
        if self.settings.post_extra_system_datapoints {
            self.system_extras(&mut reading, &host);
        }
        self.cpu(&mut reading, &host);
        self.memory(&mut reading, &host);
        self.partitions(&mut reading, &host).await;
        self.disks(&mut reading, &host);
        self.nics(&mut reading, &host);
        (reading.target, reading.errors)
    }

    /// `process_count`, the load averages and `cpu_frequency`, which the
    /// Python agents compute and drop (SPEC-os-compat.md §6, quirk 1).
    fn system_extras(&self, reading: &mut Reading, host: &[Metadata]) {
        let now = now_ms();
        match std::fs::read_dir(&self.paths.proc) {
            Ok(entries) => {
                let count = entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
                    .count();
                reading.point(&Text::Static(SYSTEM_KEYS[0]), Value::UInt(count as u64), DataType::Int, now, shared(host));
            }
            Err(error) => reading
                .errors
                .push(format!("listing {}: {error}", self.paths.proc.display())),
        }
        match self.read("loadavg").map(|text| host::parse_loadavg(&text)) {
            Ok(Some(averages)) => {
                for (key, average) in SYSTEM_KEYS[1..4]
                    .iter()
                    .copied()
                    .zip(averages)
                {
                    reading.point(&Text::Static(key), Value::Float(average), DataType::Int, now, shared(host));
                }
            }
            Ok(None) => reading
                .errors
                .push(format!("{}/loadavg: no three averages", self.paths.proc.display())),
            Err(error) => reading.errors.push(error),
        }
        // Where neither cpufreq nor /proc/cpuinfo has a frequency (common
        // on ARM) Python's poll died here; this leaves the datapoint out.
        if let Some(mhz) = self.cpu_frequency_mhz() {
            reading.point(&Text::Static(SYSTEM_KEYS[4]), Value::Float(mhz), DataType::Float, now, shared(host));
        }
    }

    /// psutil's `cpu_freq().current`: the mean of `/proc/cpuinfo`'s `cpu
    /// MHz`, else of cpufreq's `scaling_cur_freq` in `/sys`.
    fn cpu_frequency_mhz(&self) -> Option<f64> {
        if let Some(mhz) = self.read("cpuinfo").ok().and_then(|text| host::cpuinfo_mhz(&text)) {
            return Some(mhz);
        }
        let dir = self.paths.sys.join("devices/system/cpu/cpufreq");
        let values: Vec<f64> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("policy"))
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("scaling_cur_freq")).ok())
            .filter_map(|text| text.trim().parse::<f64>().ok())
            .map(|khz| khz / 1000.0)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    fn cpu(&mut self, reading: &mut Reading, host: &[Metadata]) {
        let stat = match self.read("stat").and_then(|text| host::parse_stat(&text)) {
            Ok(stat) => stat,
            Err(error) => {
                reading.errors.push(format!("{}/stat: {error}", self.paths.proc.display()));
                return;
            }
        };
        let now = now_ms();
        let seconds: Vec<f64> = stat.cpu_ticks.iter().map(|&t| t as f64 / self.clock_ticks).collect();
        if let Some(previous) = self.previous_cpu.take().filter(|p| p.len() == stat.cpu_ticks.len()) {
            let before: Vec<f64> = previous.iter().map(|&t| t as f64 / self.clock_ticks).collect();
            for (i, percent) in cpu_percentages(&before, &seconds).into_iter().enumerate() {
                reading.point(&self.keys.cpu_percent[i], Value::Float(percent), DataType::Float, now, shared(host));
            }
        }
        for (i, value) in seconds.iter().enumerate() {
            reading.point(&self.keys.cpu_times[i], Value::Float(*value), DataType::Counter64, now, shared(host));
        }
        let stats = [stat.ctx_switches, stat.interrupts, stat.soft_interrupts, Some(0)];
        for (i, value) in stats.into_iter().enumerate() {
            match value {
                Some(value) => reading.point(&self.keys.cpu_stats[i], Value::UInt(value), DataType::Counter64, now, shared(host)),
                None => reading.errors.push(format!(
                    "{}/stat has no `{}` line",
                    self.paths.proc.display(),
                    ["ctxt", "intr", "softirq"][i]
                )),
            }
        }
        self.previous_cpu = Some(stat.cpu_ticks);
    }

    fn memory(&self, reading: &mut Reading, host: &[Metadata]) {
        let text = match self.read("meminfo") {
            Ok(text) => text,
            Err(error) => {
                reading.errors.push(error);
                return;
            }
        };
        let mems = host::parse_meminfo(&text);
        let now = now_ms();
        match host::virtual_memory(&mems) {
            Ok(m) => {
                let values = [
                    Value::UInt(m.total),
                    Value::UInt(m.available),
                    Value::Float(m.percent),
                    int(m.used),
                    Value::UInt(m.free),
                    Value::UInt(m.active),
                    Value::UInt(m.inactive),
                    Value::UInt(m.buffers),
                    Value::UInt(m.cached),
                    Value::UInt(m.shared),
                    Value::UInt(m.slab),
                ];
                for (i, value) in values.into_iter().enumerate() {
                    reading.point(&self.keys.memory[i], value, DataType::Int, now, shared(host));
                }
            }
            Err(error) => reading.errors.push(format!("{}/meminfo: {error}", self.paths.proc.display())),
        }
        let vmstat = self.read("vmstat").ok();
        match host::swap_memory(&mems, vmstat.as_deref()) {
            Ok(s) => {
                let values = [
                    (Value::UInt(s.total), DataType::Int),
                    (int(s.used), DataType::Int),
                    (Value::UInt(s.free), DataType::Int),
                    (Value::Float(s.percent), DataType::Int),
                    (Value::UInt(s.sin), DataType::Counter64),
                    (Value::UInt(s.sout), DataType::Counter64),
                ];
                for (i, (value, data_type)) in values.into_iter().enumerate() {
                    reading.point(&self.keys.swap[i], value, data_type, now, shared(host));
                }
            }
            Err(error) => reading.errors.push(format!("{}/meminfo: {error}", self.paths.proc.display())),
        }
    }

    /// The mounted physical file systems psutil lists, in mount table
    /// order, each with its `statvfs` figures.
    async fn partitions(&self, reading: &mut Reading, host: &[Metadata]) {
        let fstypes = match self.read("filesystems") {
            Ok(text) => host::physical_filesystems(&text),
            Err(error) => {
                reading.errors.push(error);
                return;
            }
        };
        // psutil reads /etc/mtab where there is one (normally a link to
        // /proc/self/mounts), else the kernel's own table.
        let table = if self.paths.mtab.is_file() {
            self.paths.mtab.clone()
        } else {
            self.paths.proc.join("self/mounts")
        };
        let mounts = match std::fs::read_to_string(&table) {
            Ok(text) => host::parse_mounts(&text),
            Err(error) => {
                reading.errors.push(format!("reading {}: {error}", table.display()));
                return;
            }
        };
        for mut mount in mounts {
            if mount.device == "none" {
                mount.device.clear();
            }
            if !self.settings.root_device_as_mounted && (mount.device == "/dev/root" || mount.device == "rootfs") {
                if let Some(device) = self.root_device() {
                    mount.device = device;
                }
            }
            if mount.device.is_empty()
                || !fstypes.contains(&mount.fstype)
                || !self.settings.partitions.keeps(&mount.mountpoint, PythonExclusion::Docker)
            {
                continue;
            }
            let usage = match self.disk_usage(&mount.mountpoint).await {
                Ok(usage) => usage,
                Err(error) => {
                    reading.errors.push(format!(
                        "statvfs of {:?} ({} on {}): {error}",
                        mount.mountpoint, mount.device, mount.fstype
                    ));
                    continue;
                }
            };
            let now = now_ms();
            let mut metadata = vec![
                Metadata::new(PART_METADATA[0], mount.device).shared(),
                Metadata::new(PART_METADATA[1], mount.mountpoint).shared(),
                Metadata::new(PART_METADATA[2], mount.fstype).shared(),
                Metadata::new(PART_METADATA[3], mount.opts).shared(),
            ];
            metadata.extend(shared(host));
            for (i, value) in usage.into_iter().enumerate() {
                reading.point(&self.keys.partition[i], value, DataType::Int, now, shared(&metadata));
            }
        }
    }

    /// psutil's `disk_usage`: total, used, free (for users), percent.
    async fn disk_usage(&self, mountpoint: &str) -> Result<[Value; 4], String> {
        if !self.hung.lock().unwrap_or_else(|e| e.into_inner()).insert(mountpoint.to_owned()) {
            return Err("an earlier poll's statvfs of it has not returned yet; skipped".to_owned());
        }
        // A thread of its own, not the runtime's blocking pool: a call
        // that never returns must not hold up the runtime's shutdown.
        let hung = Arc::clone(&self.hung);
        let path = mountpoint.to_owned();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let statfs = self.statfs;
        let spawned = std::thread::Builder::new()
            .name("os-statvfs".to_owned())
            .spawn(move || {
                let result = statfs(Path::new(&path));
                hung.lock().unwrap_or_else(|e| e.into_inner()).remove(&path);
                let _ = answer.send(result);
            });
        if let Err(error) = spawned {
            self.hung
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(mountpoint);
            return Err(format!("cannot start a thread for it: {error}"));
        }
        let stat = match tokio::time::timeout(STATVFS_TIMEOUT, answered).await {
            Ok(Ok(Ok(stat))) => stat,
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(_)) => return Err("its thread ended without an answer".to_owned()),
            Err(_) => {
                return Err(format!(
                    "no answer within {STATVFS_TIMEOUT:?} (a hung network or FUSE mount?)"
                ))
            }
        };
        let frsize = i128::from(stat.fragment_size);
        let total = i128::from(stat.blocks) * frsize;
        let free_for_root = i128::from(stat.blocks_free) * frsize;
        let free_for_users = i128::from(stat.blocks_available) * frsize;
        let used = total - free_for_root;
        Ok([
            int(total),
            int(used),
            int(free_for_users),
            Value::Float(host::usage_percent(used, used + free_for_users)),
        ])
    }

    /// psutil's `RootFsDeviceFinder` (5.9+): the real device of the root
    /// file system, from its major:minor.
    fn root_device(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&self.paths.root).ok()?.dev();
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        let name = self
            .read("partitions")
            .ok()
            .and_then(|text| host::partition_name(&text, major, minor))
            .or_else(|| {
                let uevent = self.paths.sys.join(format!("dev/block/{major}:{minor}/uevent"));
                std::fs::read_to_string(uevent).ok()?.lines().find_map(|line| {
                    let name = line.trim().rsplit_once("DEVNAME=")?.1;
                    (!name.is_empty()).then(|| name.to_owned())
                })
            })
            .or_else(|| {
                let needle = format!("{major}:{minor}");
                std::fs::read_dir(self.paths.sys.join("class/block"))
                    .ok()?
                    .filter_map(Result::ok)
                    .find(|entry| {
                        std::fs::read_to_string(entry.path().join("dev"))
                            .is_ok_and(|text| text.trim() == needle)
                    })
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
            })?;
        self.paths
            .dev
            .join(&name)
            .exists()
            .then(|| format!("/dev/{name}"))
    }

    fn disks(&self, reading: &mut Reading, host: &[Metadata]) {
        let text = match self.read("diskstats") {
            Ok(text) => text,
            Err(error) => {
                reading.errors.push(error);
                return;
            }
        };
        let (disks, errors) = host::parse_diskstats(&text);
        let file = self.paths.proc.join("diskstats");
        reading
            .errors
            .extend(errors.into_iter().map(|e| format!("{}: {e}", file.display())));
        let now = now_ms();
        for (name, counters) in disks {
            if !self.settings.disks.keeps(&name, PythonExclusion::RamAndLoop) {
                continue;
            }
            let mut metadata = shared(host);
            metadata.push(Metadata::new(PART_METADATA[4], name).shared());
            for (i, value) in counters.into_iter().enumerate() {
                reading.point(&self.keys.disk[i], Value::UInt(value), DataType::Counter64, now, shared(&metadata));
            }
        }
    }

    fn nics(&mut self, reading: &mut Reading, host: &[Metadata]) {
        let text = match self.read("net/dev") {
            Ok(text) => text,
            Err(error) => {
                reading.errors.push(error);
                return;
            }
        };
        let (nics, errors) = host::parse_net_dev(&text);
        let file = self.paths.proc.join("net/dev");
        reading
            .errors
            .extend(errors.into_iter().map(|e| format!("{}: {e}", file.display())));
        let now = now_ms();
        let mut seen = Vec::with_capacity(nics.len());
        for (name, counters) in nics {
            if !self.settings.nics.keeps(&name, PythonExclusion::Nothing) {
                continue;
            }
            let mut metadata = shared(host);
            metadata.push(Metadata::new(PART_METADATA[5], name.as_str()).shared());
            for (i, value) in counters.into_iter().enumerate() {
                reading.point(&self.keys.nic[i], Value::UInt(value), DataType::Counter64, now, shared(&metadata));
            }
            seen.push(name);
        }
        for gone in self.previous_nics.iter().filter(|name| !seen.contains(name)) {
            tracing::info!(poller = %self.name, interface = %gone, "A network interface is no longer listed in /proc/net/dev; its datapoints stop.");
        }
        self.previous_nics = seen;
    }
}

/// An integer as Python has it: negative only where the arithmetic made it
/// so.
fn int(value: i128) -> Value {
    match i64::try_from(value) {
        Ok(value) => Value::Int(value),
        Err(_) => Value::from(value.max(0) as u128),
    }
}

/// psutil's `cpu_times_percent()` between two `cpu_times()` (seconds per
/// field): each field's share of the total time that passed, guest time
/// not counted twice, rounded to one decimal and kept within 0..=100.
pub fn cpu_percentages(before: &[f64], after: &[f64]) -> Vec<f64> {
    let total = |times: &[f64]| {
        let mut sum = times.iter().fold(0.0, |sum, t| sum + t);
        // guest and guest_nice are already in user and nice.
        for guest in times.iter().skip(8) {
            sum -= guest;
        }
        sum
    };
    let all = total(after) - total(before);
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let percent = if all == 0.0 { 0.0 } else { (100.0 * (a - b)) / all };
            host::round1(percent).clamp(0.0, 100.0)
        })
        .collect()
}

/// Online CPUs, as psutil's `cpu_count()`: `sysconf(_SC_NPROCESSORS_ONLN)`,
/// not the CPUs this process may use.
fn online_cpus() -> Option<u64> {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u64::try_from(count).ok().filter(|&n| n > 0)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/stat`'s times.
fn clock_ticks() -> f64 {
    // SAFETY: as above.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests;
