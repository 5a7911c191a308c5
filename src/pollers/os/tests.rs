//! The os poller on fixture hosts: `/proc` files written into a temporary
//! folder, the mount points real folders so `statvfs` answers.

use std::path::Path;

use super::*;

const STAT: &str = "cpu  100 0 50 800 10 0 5 0 0 0\ncpu0 100 0 50 800 10 0 5 0 0 0\n\
                    intr 5000 1 2\nctxt 7000\nsoftirq 300 1\n";
const STAT_LATER: &str = "cpu  130 0 60 855 10 0 10 0 0 0\nintr 5100 1\nctxt 7100\nsoftirq 310\n";
const MEMINFO: &str = "MemTotal: 2000 kB\nMemFree: 500 kB\nMemAvailable: 1000 kB\nBuffers: 10 kB\n\
                       Cached: 300 kB\nSReclaimable: 30 kB\nShmem: 4 kB\nActive: 400 kB\n\
                       Inactive: 300 kB\nSlab: 50 kB\nSwapTotal: 1000 kB\nSwapFree: 750 kB\n";
const DISKSTATS: &str = " 253 0 vda 1 2 3 4 5 6 7 8 0 10 11 0 0 0 0 0 0\n\
                         7 0 loop0 1 2 3 4 5 6 7 8 0 10 11\n 1 0 ram0 1 2 3 4 5 6 7 8 0 10 11\n";
const NET_DEV: &str = "Inter-|\n face |\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n\
                       eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n\
                       veth1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";

/// A host whose files are in `dir`, with one ext4 partition mounted on
/// `dir/data` (a real folder) and one on a mount point that does not exist.
fn fixture(dir: &Path) -> HostPaths {
    let proc = dir.join("proc");
    std::fs::create_dir_all(proc.join("self")).unwrap();
    std::fs::create_dir_all(proc.join("net")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    for (name, text) in [
        ("stat", STAT),
        ("meminfo", MEMINFO),
        ("vmstat", "pswpin 1\npswpout 2\n"),
        ("filesystems", "nodev\tproc\n\text4\n"),
        ("diskstats", DISKSTATS),
        ("net/dev", NET_DEV),
        ("loadavg", "0.50 0.25 0.10 1/100 999\n"),
        ("cpuinfo", "processor : 0\ncpu MHz : 2400.000\n"),
    ] {
        std::fs::write(proc.join(name), text).unwrap();
    }
    std::fs::write(
        proc.join("self/mounts"),
        format!(
            "proc /proc proc rw 0 0\n/dev/vda {} ext4 rw,relatime 0 0\n\
             /dev/vdb /no/such/mount/point ext4 rw 0 0\n/dev/vdc /var/lib/docker/x ext4 rw 0 0\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    HostPaths {
        proc,
        sys: dir.join("sys"),
        mtab: dir.join("no-mtab"),
        dev: dir.join("dev"),
        root: dir.join("data"),
    }
}

fn facts() -> Facts {
    Facts {
        release: "6.1.0".to_owned(),
        version: "#1 SMP".to_owned(),
        processor: String::new(),
        system: "Linux".to_owned(),
    }
}

fn poller(paths: HostPaths, settings: &OsSettings) -> OsPoller {
    OsPoller::with_host("host", settings, "host.example.org", paths, facts())
}

fn keys(targets: &[TargetData]) -> Vec<String> {
    targets[0]
        .datapoints
        .iter()
        .map(|p| p.key.to_string())
        .collect()
}

fn find<'a>(targets: &'a [TargetData], key: &str) -> Vec<&'a DataPoint> {
    targets[0]
        .datapoints
        .iter()
        .filter(|p| p.key.as_str() == key)
        .collect()
}

fn meta(point: &DataPoint) -> Vec<(String, String, bool)> {
    point
        .metadata
        .iter()
        .map(|m| (m.key.to_string(), m.value.to_string(), m.update_checksum))
        .collect()
}

#[tokio::test]
async fn a_poll_gives_the_python_collectors_datapoints_in_its_order_with_its_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut poller = poller(fixture(dir.path()), &OsSettings::default());
    std::fs::write(dir.path().join("proc/stat"), STAT_LATER).unwrap();
    let targets = poller.poll().await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].target, "host.example.org");
    let keys = keys(&targets);
    // 41 fixed, 4 for the one partition that answered, 9 for vda (not
    // loop0 nor ram0), 8 for each of the three interfaces.
    assert_eq!(keys.len(), 41 + 4 + 9 + 3 * 8, "{keys:#?}");
    assert_eq!(keys[0], "cpu_times_percent_user");
    assert_eq!(keys[10], "cpu_times_user");
    assert_eq!(keys[20..24], ["cpu_stats_ctx_switches", "cpu_stats_interrupts", "cpu_stats_soft_interrupts", "cpu_stats_syscalls"]);
    assert_eq!(keys[24], "memory_total");
    assert_eq!(keys[35..41], ["swap_memory_total", "swap_memory_used", "swap_memory_free", "swap_memory_percent", "swap_memory_sin", "swap_memory_sout"]);
    assert_eq!(keys[41], "disk_partition_disk_usage_total");
    assert_eq!(keys[45], "disk_io_read_count");
    assert_eq!(keys[54], "network_io_bytes_sent");

    // Percentages since the build: 100 ticks passed, 30 of them user.
    let user = find(&targets, "cpu_times_percent_user")[0];
    assert_eq!((user.value.clone(), user.data_type), (Value::Float(30.0), DataType::Float));
    assert_eq!(find(&targets, "cpu_times_percent_softirq")[0].value, Value::Float(5.0));
    let times = find(&targets, "cpu_times_user")[0];
    assert_eq!((times.value.clone(), times.data_type), (Value::Float(1.3), DataType::Counter64));
    assert_eq!(find(&targets, "cpu_stats_ctx_switches")[0].value, Value::UInt(7100));
    assert_eq!(find(&targets, "cpu_stats_syscalls")[0].value, Value::UInt(0));
    let percent = find(&targets, "memory_percent")[0];
    assert_eq!((percent.value.clone(), percent.data_type), (Value::Float(50.0), DataType::Int));
    assert_eq!(find(&targets, "memory_used")[0].value, Value::Int(1000 * 1024));
    assert_eq!(find(&targets, "swap_memory_percent")[0].value, Value::Float(25.0));
    assert_eq!(find(&targets, "swap_memory_sin")[0].data_type, DataType::Counter64);
    assert!(matches!(find(&targets, "disk_partition_disk_usage_percent")[0].value, Value::Float(_)));
    assert_eq!(find(&targets, "disk_io_read_bytes")[0].value, Value::UInt(3 * 512));

    let host = [
        ("release", "6.1.0", false),
        ("version", "#1 SMP", false),
        ("processor", "", true),
        ("type", "Linux", true),
    ];
    let cpus = online_cpus().unwrap().to_string();
    let mut expected: Vec<(String, String, bool)> = host
        .iter()
        .map(|(k, v, c)| (k.to_string(), v.to_string(), *c))
        .collect();
    expected.push(("cpus".into(), cpus, true));
    expected.push(("hostname".into(), "host.example.org".into(), true));
    assert_eq!(meta(user), expected);
    // Partitions: their own four first; disks and NICs: theirs last.
    let usage = meta(find(&targets, "disk_partition_disk_usage_total")[0]);
    assert_eq!(
        usage[..4].iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        ["disk_partition_device", "disk_partition_mountpoint", "disk_partition_fstype", "disk_partition_opts"]
    );
    assert_eq!(usage[3].1, "rw,relatime");
    assert_eq!(usage[4..], expected[..]);
    let disk = meta(find(&targets, "disk_io_busy_time")[0]);
    assert_eq!(disk.last().unwrap(), &("disk_partition".to_owned(), "vda".to_owned(), true));
    let nic = meta(find(&targets, "network_io_dropout")[1]);
    assert_eq!(nic.last().unwrap(), &("network_io_interface".to_owned(), "eth0".to_owned(), true));
}

#[tokio::test]
async fn an_unstatable_mount_is_left_out_and_the_rest_of_the_poll_is_posted() {
    let dir = tempfile::tempdir().unwrap();
    let mut poller = poller(fixture(dir.path()), &OsSettings::default());
    let (target, errors) = poller.read_host().await;
    let targets = [target];
    let mounts: Vec<String> = find(&targets, "disk_partition_disk_usage_total")
        .iter()
        .map(|p| meta(p)[1].1.clone())
        .collect();
    assert_eq!(mounts, [dir.path().join("data").display().to_string()]);
    assert_eq!(find(&targets, "network_io_bytes_sent").len(), 3);
    assert_eq!(
        errors,
        ["statvfs of \"/no/such/mount/point\" (/dev/vdb on ext4): No such file or directory"]
    );
}

/// Released by the test that hangs `statvfs` with it.
static RELEASE: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
    std::sync::Mutex::new(None);

/// A `statvfs` that, for the fixture's `data` mount point, does not
/// return until the test says so.
fn hanging_statfs(path: &Path) -> Result<FsSize, String> {
    if !path.ends_with("data") {
        return statvfs(path);
    }
    let waiting = RELEASE.lock().unwrap().take();
    if let Some(release) = waiting {
        let _ = release.recv();
    }
    Err("released".to_owned())
}

#[tokio::test(start_paused = true)]
async fn a_hung_mount_costs_one_timeout_then_is_skipped_while_it_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let mut poller = poller(fixture(dir.path()), &OsSettings::default());
    let (release, released) = std::sync::mpsc::channel();
    *RELEASE.lock().unwrap() = Some(released);
    poller.statfs = hanging_statfs;
    let data = dir.path().join("data").display().to_string();

    let (target, errors) = poller.read_host().await;
    assert!(!target.datapoints.is_empty(), "the rest of the poll is posted");
    assert!(
        errors.contains(&format!(
            "statvfs of {data:?} (/dev/vda on ext4): no answer within 5s (a hung network or FUSE mount?)"
        )),
        "{errors:#?}"
    );
    // Still hanging: skipped without waiting again.
    let (_, errors) = poller.read_host().await;
    assert!(
        errors.contains(&format!(
            "statvfs of {data:?} (/dev/vda on ext4): an earlier poll's statvfs of it has not returned yet; skipped"
        )),
        "{errors:#?}"
    );
    // Once it returns, the mount point is asked again.
    release.send(()).unwrap();
    poller.statfs = statvfs;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (target, _) = poller.read_host().await;
        if target.datapoints.iter().any(|p| p.key.as_str() == "disk_partition_disk_usage_total") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the mount point was never asked again");
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn a_nic_that_vanishes_between_polls_just_stops_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut poller = poller(fixture(dir.path()), &OsSettings::default());
    let first = poller.poll().await.unwrap();
    std::fs::write(
        dir.path().join("proc/net/dev"),
        "Inter-|\n face |\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n\
         eth0: 2 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
    )
    .unwrap();
    let second = poller.poll().await.unwrap();
    assert_eq!(keys(&first).len() - keys(&second).len(), 8);
    let nics: Vec<String> = find(&second, "network_io_bytes_recv")
        .iter()
        .map(|p| meta(p).last().unwrap().1.clone())
        .collect();
    assert_eq!(nics, ["lo", "eth0"]);
    assert_eq!(find(&second, "network_io_bytes_recv")[1].value, Value::UInt(2));
}

#[tokio::test]
async fn unreadable_files_are_named_and_only_a_host_with_nothing_readable_fails() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    std::fs::remove_file(paths.proc.join("meminfo")).unwrap();
    let mut poller = poller(paths.clone(), &OsSettings::default());
    let targets = poller.poll().await.unwrap();
    assert!(find(&targets, "memory_total").is_empty());
    assert!(!find(&targets, "cpu_times_user").is_empty());

    let empty = tempfile::tempdir().unwrap();
    let mut poller = poller_with_nothing(empty.path());
    let error = poller.poll().await.unwrap_err().to_string();
    assert!(error.starts_with("poller host: nothing of this host could be read: "), "{error}");
    assert!(error.contains(&format!("reading {}/stat: ", empty.path().display())), "{error}");
}

fn poller_with_nothing(dir: &Path) -> OsPoller {
    poller(
        HostPaths {
            proc: dir.to_owned(),
            sys: dir.to_owned(),
            mtab: dir.join("mtab"),
            dev: dir.to_owned(),
            root: dir.to_owned(),
        },
        &OsSettings::default(),
    )
}

#[tokio::test]
async fn the_extra_switch_adds_the_five_datapoints_python_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let settings = OsSettings {
        post_extra_system_datapoints: true,
        ..OsSettings::default()
    };
    let mut poller = poller(fixture(dir.path()), &settings);
    let targets = poller.poll().await.unwrap();
    let keys = keys(&targets);
    assert_eq!(
        keys[..5],
        ["process_count", "load_average_01min", "load_average_05min", "load_average_15min", "cpu_frequency"]
    );
    let load = find(&targets, "load_average_01min")[0];
    assert_eq!((load.value.clone(), load.data_type), (Value::Float(0.5), DataType::Int));
    let frequency = find(&targets, "cpu_frequency")[0];
    assert_eq!((frequency.value.clone(), frequency.data_type), (Value::Float(2400.0), DataType::Float));
    assert_eq!(find(&targets, "process_count")[0].data_type, DataType::Int);

    // No frequency anywhere (ARM): Python's poll died; here it is left out.
    std::fs::write(dir.path().join("proc/cpuinfo"), "processor : 0\n").unwrap();
    let targets = poller.poll().await.unwrap();
    assert!(find(&targets, "cpu_frequency").is_empty());
    assert!(!find(&targets, "load_average_15min").is_empty());
}

#[tokio::test]
async fn filters_choose_partitions_disks_and_nics_by_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let settings = OsSettings {
        disks: Filter {
            include: Vec::new(),
            exclude: Some(vec!["vd*".to_owned()]),
        },
        nics: Filter {
            include: vec!["eth*".to_owned(), "lo".to_owned()],
            exclude: None,
        },
        partitions: Filter {
            include: vec!["/var/*".to_owned()],
            exclude: Some(Vec::new()),
        },
        ..OsSettings::default()
    };
    let mut poller = poller(fixture(dir.path()), &settings);
    let targets = poller.poll().await.unwrap();
    let names = |key: &str| -> Vec<String> {
        find(&targets, key)
            .iter()
            .map(|p| meta(p).last().unwrap().1.clone())
            .collect()
    };
    assert_eq!(names("disk_io_read_count"), ["loop0", "ram0"]);
    assert_eq!(names("network_io_errin"), ["lo", "eth0"]);
    // Only the docker mount point was included, and it cannot be read.
    assert!(find(&targets, "disk_partition_disk_usage_total").is_empty());
}

#[tokio::test]
async fn dev_root_becomes_the_real_device_unless_asked_to_stay_as_mounted() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    let dev = std::fs::metadata(&paths.root).unwrap().dev();
    std::fs::write(
        paths.proc.join("partitions"),
        format!(
            "major minor  #blocks  name\n\n {} {} 1000 realdisk1\n",
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev)
        ),
    )
    .unwrap();
    std::fs::write(paths.dev.join("realdisk1"), "").unwrap();
    std::fs::write(
        paths.proc.join("self/mounts"),
        format!("/dev/root {} ext4 rw 0 0\n", paths.root.display()),
    )
    .unwrap();
    let device = |targets: &[TargetData]| meta(find(targets, "disk_partition_disk_usage_free")[0])[0].1.clone();
    let mut current = poller(paths.clone(), &OsSettings::default());
    assert_eq!(device(&current.poll().await.unwrap()), "/dev/realdisk1");
    let old = OsSettings {
        root_device_as_mounted: true,
        ..OsSettings::default()
    };
    let mut old = poller(paths, &old);
    assert_eq!(device(&old.poll().await.unwrap()), "/dev/root");
}

#[test]
fn cpu_percentages_are_shares_of_the_time_that_passed_without_guest_twice() {
    let before = [1.0, 0.0, 1.0, 8.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let after = [3.0, 0.0, 2.0, 15.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    // 10 seconds passed (guest's 1 is inside user's 2).
    assert_eq!(
        cpu_percentages(&before, &after),
        [20.0, 0.0, 10.0, 70.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0]
    );
    assert_eq!(cpu_percentages(&before, &before), [0.0; 10], "no time passed");
    let backwards = [0.0, 0.0, 1.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(cpu_percentages(&before, &backwards)[0], 0.0, "never below 0");
}

#[tokio::test]
async fn settings_made_in_code_poll_this_host_as_whatever_program_is_asked() {
    let settings = poller_settings(OS_SPOKED, Duration::from_secs(300));
    assert_eq!(
        (settings.name.as_str(), settings.agent_program.as_str()),
        (OS_SPOKED, OS_SPOKED)
    );
    assert_eq!(settings.kind, PollerKind::Os(OsSettings::default()));
    let env = PollerEnv {
        hostname: "spoke.example.org".to_owned(),
    };
    let mut poller = crate::pollers::Poller::new(&settings, &env).unwrap();
    let targets = poller.poll().await.unwrap().readings().expect("readings");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].target, "spoke.example.org");
    // The fixed datapoints at least (the first poll has its percentages,
    // its baseline taken when the poller was built).
    assert!(targets[0].datapoints.len() >= 41, "{}", targets[0].datapoints.len());
    assert_eq!(targets[0].datapoints[0].key.as_str(), "cpu_times_percent_user");
}
