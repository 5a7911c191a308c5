//! Power loss, not just a killed process: `pattoo-agentd run` keeps its
//! cache on a FUSE file system ([`volatile_fs`]) that forgets, at a power
//! cut, everything not yet synced, the way a disk does. The test cuts the
//! power 200 times while a flapping server makes the agent post, cache and
//! replay (in start-up, at a random moment, or just before a random change
//! to the cache), restarts the agent on what is left each time, and checks
//! after every cut:
//!
//! - every body that was committed (the server stored it, its cache file
//!   was fsynced and then its directory, or the agent logged it as cached)
//!   was delivered or is still in the cache, byte for byte;
//! - every cache file that survived under a final name is a whole, valid
//!   body: a half-written file is never there to be replayed;
//! - nothing was moved to quarantine.
//!
//! At the end the server stays up and every committed body must arrive.
//! Smaller cases cut the power at chosen steps: the cache's directories
//! and quarantine, and what `switch-from-python --apply` records.
//! Needs root and /dev/fuse; says it was skipped where either is missing.
//! `POWER_LOSS_SEED` replays the printed seed's choice of cuts (the
//! timing of the agent and the server still varies).

#[path = "../common/mod.rs"]
mod common;
mod volatile_fs;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::receiver::TestServer;
use pattoo_agentd::delivery::cache::{Cache, CachedFile};
use pattoo_agentd::delivery::config::CacheSettings;
use pattoo_agentd::delivery::Stats;
use pattoo_agentd::model::validate_body;
use volatile_fs::{DurableFile, VolatileFs};

const CUTS: usize = 200;
/// How long a cut set to land at a change waits for that change (the
/// server may be up and nothing cached) before the power is cut anyway.
const TRIP_WAIT: Duration = Duration::from_secs(2);
/// For behaviour only (start-up, exit, unmount, final delivery); a busy
/// machine is slow, never this slow.
const PATIENCE: Duration = Duration::from_secs(60);

/// Writes a line to stderr past the test harness's capture, so that a skip
/// and the figures show in every run.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: mounting a FUSE file system needs it".into());
    }
    if let Err(error) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse: {error}"));
    }
    None
}

/// A mounted [`VolatileFs`]. Dropping it unmounts, even when the test
/// failed with the agent still using it.
struct Mount {
    path: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    fn new(fs: &VolatileFs, path: &Path) -> Mount {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("pattoo-power-loss".into()),
            fuser::MountOption::Subtype("volatile".into()),
        ];
        let session = fuser::spawn_mount(fs.clone(), path, &config)
            .unwrap_or_else(|error| panic!("cannot mount a FUSE file system on {}: {error} (root and /dev/fuse are here, so this should work; is CAP_SYS_ADMIN missing?)", path.display()));
        Mount {
            path: path.to_owned(),
            session: Some(session),
        }
    }

    /// Unmounts; if the file system is busy, detaches it and aborts the
    /// FUSE connection so nothing can hang on it, then waits for the
    /// server thread.
    fn unmount(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let connection = fs::metadata(&self.path).map(|m| m.dev()).ok();
        let path = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
            let error = std::io::Error::last_os_error();
            eprintln!(
                "unmounting {} failed ({error}); detaching it and aborting the connection",
                self.path.display()
            );
            // SAFETY: as above.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            if let Some(dev) = connection {
                let minor = libc::minor(dev);
                let _ = fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
            }
        }
        let (done, joined) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(session.join());
        });
        if joined.recv_timeout(PATIENCE).is_err() {
            eprintln!("the FUSE server thread did not end; left behind");
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The systemd side of `Type=notify`, to know when the agent is ready.
struct NotifySocket {
    path: PathBuf,
    ready: Arc<Mutex<usize>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let ready = Arc::new(Mutex::new(0));
        let count = ready.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|line| line == "READY=1")
                {
                    *count.lock().unwrap() += 1;
                }
            }
        });
        NotifySocket { path, ready }
    }

    fn ready_count(&self) -> usize {
        *self.ready.lock().unwrap()
    }
}

/// One run of the agent; killed when dropped.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(config: &Path, notify: &NotifySocket, stderr: &Path) -> Agent {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr)
            .unwrap();
        let child = common::agentd(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .spawn()
            .unwrap();
        Agent { child }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn write_config(root: &Path, cache: &Path, port: u16) -> PathBuf {
    let config = root.join("config");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_level: debug\n  log_directory: {}\n  cache_directory: {}\n  daemon_directory: {}\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: {port}\n",
            root.join("log").display(),
            cache.display(),
            root.join("daemon").display()
        ),
    )
    .unwrap();
    // A body every 20 ms and short waits, so that each run of a few hundred
    // milliseconds posts, caches and replays.
    fs::write(
        config.join("pattoo_agentd.yaml"),
        r#"pattoo_agentd:
  hostname: test-host
  delivery:
    timeout_ms: 300
    retry_initial_ms: 20
    retry_max_ms: 150
  pollers:
    - name: power
      type: command
      polling_interval: 0.02
      command: ["echo", '{"targets": [{"target": "power-cut", "datapoints": [{"key": "k", "value": 1}]}]}']
      format: datapoints
"#,
    )
    .unwrap();
    config
}

/// Makes the server flap until `flapping` is cleared.
fn flap(
    runtime: &tokio::runtime::Runtime,
    server: Arc<TestServer>,
    flapping: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(common::receiver::flap(server, flapping, 20..200))
}

/// The name the agent gives a committed cache file:
/// `{agent_id}/{timestamp_ms}_{agent_id}.json`.
fn is_cache_file(path: &str) -> bool {
    let Some((dir, name)) = path.split_once('/') else {
        return false;
    };
    dir.len() == 64
        && !name.contains('/')
        && !name.starts_with('.')
        && name.ends_with(&format!("_{dir}.json"))
}

/// `text` without the terminal colour codes the agent puts in its log.
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\u{1b}') {
        plain.push_str(&rest[..start]);
        rest = &rest[start..];
        match rest.find('m') {
            Some(end) => rest = &rest[end + 1..],
            None => rest = "",
        }
    }
    plain.push_str(rest);
    plain
}

/// How the cuts landed.
#[derive(Default)]
struct Cuts {
    start_up: usize,
    running: usize,
    at_change: usize,
    /// Set to land at a change that did not come in time.
    untripped: usize,
}

/// What the test knows of every body so far.
#[derive(Default)]
struct Ledger {
    /// Every body committed to the cache or stored by the server, by content.
    committed: HashSet<Vec<u8>>,
    committed_to_cache: usize,
    /// Bodies the agent logged as cached.
    claimed: usize,
    arrivals: Arrivals,
    /// Every final name the agent made in the cache, with its data then.
    named: HashMap<String, Vec<u8>>,
    /// How much of the agent's log was read.
    log_read: usize,
    /// Half-written files a cut left (under temporary names).
    torn_temporaries: usize,
    survivors_max: usize,
    /// Cache files a cut took away (named, never made durable) and brought
    /// back (deleted, the deletion never made durable): the model at work.
    names_undone: usize,
    deletions_undone: usize,
}

impl Ledger {
    /// Adds what became committed since the last call: what the server
    /// stored, files the file system saw made durable, and bodies the
    /// agent said it cached (its "body cached" line comes only after the
    /// syncs returned).
    fn record(&mut self, fs: &VolatileFs, server: &TestServer, log: &Path, cache: &Path) {
        for DurableFile { path, data } in fs.take_named() {
            if is_cache_file(&path) {
                self.named.insert(path, data);
            }
        }
        for DurableFile { path, data } in fs.take_committed() {
            if is_cache_file(&path) && self.committed.insert(data) {
                self.committed_to_cache += 1;
            }
        }
        let mut text = Vec::new();
        if let Ok(mut file) = fs::File::open(log) {
            use std::io::{Read, Seek, SeekFrom};
            file.seek(SeekFrom::Start(self.log_read as u64)).unwrap();
            file.read_to_end(&mut text).unwrap();
        }
        // A line cut short by the kill is read when it is whole, or never.
        let complete = text
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |end| end + 1);
        let lines = without_colours(&String::from_utf8_lossy(&text[..complete]));
        self.log_read += complete;
        let prefix = format!("{}/", cache.display());
        for line in lines.lines() {
            let Some((_, event)) = line.split_once("body cached") else {
                continue;
            };
            let path = event
                .split_whitespace()
                .find_map(|word| word.strip_prefix("file="))
                .unwrap_or_else(|| panic!("no file= in {line:?}"))
                .trim_matches('"');
            let relative = path
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("the agent cached {path} outside {prefix}"));
            let data = self.named.get(relative).unwrap_or_else(|| {
                panic!("the agent said it cached {relative}, a name it never made")
            });
            self.claimed += 1;
            if self.committed.insert(data.clone()) {
                self.committed_to_cache += 1;
            }
        }
        self.committed
            .extend(self.arrivals.update(server).iter().cloned());
    }

    /// The checks after a cut: `before` is every file there was at the cut,
    /// `after` what survived it.
    fn check_cut(&mut self, cut: usize, before: &[DurableFile], after: &[DurableFile]) {
        let received = &self.arrivals.bodies;
        let quarantined: Vec<&str> = before
            .iter()
            .chain(after)
            .map(|f| f.path.as_str())
            .filter(|p| p.starts_with("quarantine/"))
            .collect();
        assert!(
            quarantined.is_empty(),
            "cut {cut}: the agent quarantined {quarantined:?}"
        );
        let mut cached = HashSet::new();
        for file in after {
            if is_cache_file(&file.path) {
                if let Err(error) = validate_body(&file.data) {
                    panic!(
                        "cut {cut}: {} survived under its final name but is not a whole body ({error}): {:?}",
                        file.path,
                        String::from_utf8_lossy(&file.data)
                    );
                }
                cached.insert(file.data.as_slice());
            } else if file.path.ends_with(".tmp") && validate_body(&file.data).is_err() {
                self.torn_temporaries += 1;
            }
        }
        self.survivors_max = self.survivors_max.max(cached.len());
        let names = |files: &[DurableFile]| -> HashSet<String> {
            files
                .iter()
                .filter(|f| is_cache_file(&f.path))
                .map(|f| f.path.clone())
                .collect()
        };
        let (at_cut, survived) = (names(before), names(after));
        self.names_undone += at_cut.difference(&survived).count();
        self.deletions_undone += survived.difference(&at_cut).count();
        let lost: Vec<String> = self
            .committed
            .iter()
            .filter(|body| !received.contains(*body) && !cached.contains(body.as_slice()))
            .map(|body| String::from_utf8_lossy(body).into_owned())
            .collect();
        assert!(
            lost.is_empty(),
            "cut {cut}: {} committed bodies were neither delivered nor in the cache after the cut; the first: {}",
            lost.len(),
            lost[0]
        );
    }
}

/// What the server stored, read as it grows: each file once.
#[derive(Default)]
struct Arrivals {
    read: HashSet<std::ffi::OsString>,
    bodies: HashSet<Vec<u8>>,
    duplicates: usize,
}

impl Arrivals {
    fn update(&mut self, server: &TestServer) -> &HashSet<Vec<u8>> {
        for entry in fs::read_dir(server.dir()).unwrap().flatten() {
            let name = entry.file_name();
            if !name.as_bytes().ends_with(b".json")
                || name.as_bytes().starts_with(b".")
                || self.read.contains(&name)
            {
                continue;
            }
            let bytes = fs::read(entry.path()).unwrap();
            self.read.insert(name);
            if !self.bodies.insert(bytes) {
                self.duplicates += 1;
            }
        }
        &self.bodies
    }
}

#[test]
fn every_committed_body_survives_power_cuts_at_random_moments() {
    if let Some(why) = unsupported() {
        say(&format!(
            "SKIPPED: the power-loss test needs root and /dev/fuse: {why}"
        ));
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = Arc::new(runtime.block_on(TestServer::start()));
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let config = write_config(root.path(), &cache, server.addr.port());
    let notify = NotifySocket::bind(root.path());
    let stderr = root.path().join("stderr.log");
    let mut rng = std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
    say(&format!("power-loss seed {}", rng.get_seed()));
    let volatile = VolatileFs::new(rng.u64(..));

    let flapping = Arc::new(AtomicBool::new(true));
    let flapper = flap(&runtime, server.clone(), flapping.clone());

    let mut ledger = Ledger::default();
    let started = Instant::now();
    let mut cuts = Cuts::default();
    for cut in 0..CUTS {
        volatile.power_on();
        let mut mount = Mount::new(&volatile, &cache);
        let ready_before = notify.ready_count();
        let mut agent = Agent::start(&config, &notify, &stderr);
        volatile.kill_at_cut(agent.child.id());
        let waited = Instant::now();
        let wait_ready = |agent: &mut Agent| {
            while notify.ready_count() == ready_before {
                assert!(
                    waited.elapsed() < PATIENCE,
                    "cut {cut}: the agent never said READY=1; its stderr: {}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
                assert!(
                    agent.child.try_wait().unwrap().is_none(),
                    "cut {cut}: the agent exited; its stderr: {}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        match rng.u8(0..20) {
            // During start-up: listing, cleaning and measuring the cache.
            0..5 => {
                std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
                cuts.start_up += 1;
            }
            // At a random moment while it polls, posts, caches and replays.
            5..12 => {
                wait_ready(&mut agent);
                std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
                cuts.running += 1;
            }
            // Just before a random change to the cache: between any two
            // steps of writing, naming, syncing or deleting a file.
            _ => {
                volatile.cut_before_change(rng.u64(0..120));
                let tripped = Instant::now();
                while volatile.is_powered() && tripped.elapsed() < TRIP_WAIT {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if volatile.is_powered() {
                    cuts.untripped += 1;
                } else {
                    cuts.at_change += 1;
                }
            }
        }
        volatile.power_cut();
        agent.wait_exit();
        drop(agent);
        mount.unmount();

        ledger.record(&volatile, &server, &stderr, &cache);
        ledger.check_cut(cut, &volatile.files_at_cut(), &volatile.files());
    }
    let cut_phase = started.elapsed();

    // The power stays on and the server up: everything committed arrives.
    flapping.store(false, Ordering::SeqCst);
    runtime.block_on(flapper).unwrap();
    volatile.power_on();
    let mut mount = Mount::new(&volatile, &cache);
    let ready_before = notify.ready_count();
    let mut agent = Agent::start(&config, &notify, &stderr);
    let deadline = Instant::now() + PATIENCE;
    while notify.ready_count() == ready_before {
        assert!(Instant::now() < deadline, "the agent never said READY=1");
        std::thread::sleep(Duration::from_millis(2));
    }
    loop {
        let received = ledger.arrivals.update(&server);
        let missing = ledger
            .committed
            .iter()
            .filter(|body| !received.contains(*body))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} committed bodies never arrived once the server stayed up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.wait_exit();
    assert!(status.success(), "the agent stopped with {status}");
    drop(agent);
    mount.unmount();
    ledger.record(&volatile, &server, &stderr, &cache);
    let remaining = volatile.files();
    ledger.check_cut(CUTS, &remaining, &remaining);
    let unsupported = volatile.unsupported();
    assert!(
        unsupported.is_empty(),
        "the agent made requests the model does not implement: {unsupported:?}"
    );
    let mut by_name: HashMap<bool, usize> = HashMap::new();
    for file in &remaining {
        *by_name.entry(is_cache_file(&file.path)).or_default() += 1;
    }
    say(&format!(
        "{CUTS} power cuts in {cut_phase:.1?} ({} in start-up, {} at a random moment, {} just before a random change to the cache, {} waited for a change in vain); {} bodies committed ({} of them to the cache first; the agent logged {} as cached), {} delivered, {} delivered twice, 0 lost; at most {} cached bodies survived a cut; cuts undid {} names and {} deletions of cache files; {} half-written temporaries left by cuts, none replayed; {} files left in the cache at the end",
        cuts.start_up,
        cuts.running,
        cuts.at_change,
        cuts.untripped,
        ledger.committed.len(),
        ledger.committed_to_cache,
        ledger.claimed,
        ledger.arrivals.bodies.len(),
        ledger.arrivals.duplicates,
        ledger.survivors_max,
        ledger.names_undone,
        ledger.deletions_undone,
        ledger.torn_temporaries,
        by_name.get(&true).copied().unwrap_or(0),
    ));
    assert!(
        ledger.committed_to_cache >= CUTS / 4,
        "too few bodies went through the cache to prove anything: {}",
        ledger.committed_to_cache
    );
}

/// The cache itself, in this process, on a fresh [`VolatileFs`] mounted at
/// `{tempdir}/mnt`: for cuts at chosen steps.
struct CacheOnVolatileFs {
    volatile: VolatileFs,
    mount: Mount,
    _dir: tempfile::TempDir,
}

impl CacheOnVolatileFs {
    fn new() -> Option<Self> {
        if let Some(why) = unsupported() {
            say(&format!(
                "SKIPPED: this power-loss test needs root and /dev/fuse: {why}"
            ));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let volatile = VolatileFs::new(fastrand::u64(..));
        let mount = Mount::new(&volatile, &mnt);
        Some(CacheOnVolatileFs {
            volatile,
            mount,
            _dir: dir,
        })
    }

    fn root(&self) -> &Path {
        &self.mount.path
    }

    fn open(&self, cache: &str) -> Cache {
        let settings = CacheSettings {
            max_age: Duration::from_secs(100 * 365 * 24 * 3600),
            ..CacheSettings::default()
        };
        Cache::open(
            &self.root().join(cache),
            &settings,
            Arc::new(Stats::default()),
        )
    }

    /// Cuts the power and returns what survived, by path.
    fn cut(mut self) -> HashMap<String, Vec<u8>> {
        self.volatile.power_cut();
        self.mount.unmount();
        self.volatile
            .files()
            .into_iter()
            .map(|f| (f.path, f.data))
            .collect()
    }
}

fn cached_path(cache: &str, file: &CachedFile) -> String {
    format!(
        "{cache}/{}/{}",
        file.agent_id,
        file.path.file_name().unwrap().to_str().unwrap()
    )
}

/// Stores a body in `cache` on `volatile`, cuts the power and checks the
/// body is there afterwards.
fn stores_a_body_that_survives_a_cut(volatile: CacheOnVolatileFs) {
    let cache = volatile.open("cache");
    let body = common::receiver::body(1_000, 1);
    let stored = cache.store(&body).unwrap();
    let path = cached_path("cache", &stored);
    drop(cache);
    let survived = volatile.cut();
    assert_eq!(
        survived.get(&path),
        Some(&body.json),
        "a committed body was lost with its directory; survived: {:?}",
        survived.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_body_stored_in_a_cache_directory_made_at_start_up_survives_a_power_cut() {
    let Some(volatile) = CacheOnVolatileFs::new() else {
        return;
    };
    // The first start: the cache directory does not exist yet.
    stores_a_body_that_survives_a_cut(volatile);
}

#[test]
fn a_body_stored_in_a_directory_another_writer_never_synced_survives_a_power_cut() {
    let Some(volatile) = CacheOnVolatileFs::new() else {
        return;
    };
    // A Python agent, or a run killed before it synced, made the agent id
    // directory; its name is not durable yet.
    fs::create_dir(volatile.root().join("cache")).unwrap();
    fs::File::open(volatile.root()).unwrap().sync_all().unwrap();
    fs::create_dir(volatile.root().join("cache").join(common::receiver::AGENT)).unwrap();
    stores_a_body_that_survives_a_cut(volatile);
}

#[test]
fn a_quarantined_file_is_never_lost_to_a_power_cut() {
    let Some(volatile) = CacheOnVolatileFs::new() else {
        return;
    };
    fs::create_dir(volatile.root().join("cache")).unwrap();
    fs::File::open(volatile.root()).unwrap().sync_all().unwrap();
    let cache = volatile.open("cache");
    let good = cache.store(&common::receiver::body(2_000, 2)).unwrap();
    // A damaged file, durable where the cache keeps bodies.
    let name = format!("1000_{}.json", common::receiver::AGENT);
    let damaged = good.path.with_file_name(&name);
    fs::write(&damaged, b"{\"pattoo_agent_id\": ").unwrap();
    fs::File::open(&damaged).unwrap().sync_all().unwrap();
    fs::File::open(damaged.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
    drop(cache);
    let cache = volatile.open("cache");
    let oldest = cache.take_oldest().unwrap();
    assert_eq!(oldest.path, damaged);
    cache.quarantine(&oldest, "not JSON");
    // The next body syncs the directory the damaged file left.
    cache.store(&common::receiver::body(3_000, 3)).unwrap();
    drop(cache);
    let survived = volatile.cut();
    let agent = common::receiver::AGENT;
    let kept: Vec<&String> = survived
        .keys()
        .filter(|path| path.ends_with(&name))
        .collect();
    assert!(
        !kept.is_empty(),
        "the quarantined file is in neither {agent}/ nor quarantine/{agent}/ after the cut; survived: {:?}",
        survived.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_file_system_keeps_only_what_was_synced_across_a_cut() {
    let Some(volatile) = CacheOnVolatileFs::new() else {
        return;
    };
    let root = volatile.root().to_owned();
    let sync = |path: &Path| fs::File::open(path).unwrap().sync_all().unwrap();
    let long: Vec<u8> = (0..10_000).map(|i| b'a' + (i % 26) as u8).collect();
    // Synced, then named durably.
    fs::write(root.join("kept"), b"kept").unwrap();
    sync(&root.join("kept"));
    // Named durably, but its data never synced.
    let mut torn = fs::File::create(root.join("torn")).unwrap();
    for chunk in long.chunks(1000) {
        std::io::Write::write_all(&mut torn, chunk).unwrap();
    }
    drop(torn);
    sync(&root);
    // Synced, but its name never was.
    fs::write(root.join("unnamed"), b"unnamed").unwrap();
    sync(&root.join("unnamed"));
    // Deleted, the deletion never synced.
    fs::remove_file(root.join("kept")).unwrap();
    let committed: Vec<String> = volatile
        .volatile
        .take_committed()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(committed, ["kept"]);

    let survived = volatile.cut();
    assert_eq!(survived.get("kept").map(Vec::as_slice), Some(&b"kept"[..]));
    assert!(!survived.contains_key("unnamed"), "{survived:?}");
    let torn = &survived["torn"];
    assert!(
        long.starts_with(torn),
        "an unsynced file keeps a prefix of what was written, not {} bytes of something else",
        torn.len()
    );
}

#[test]
fn what_switch_from_python_apply_records_survives_a_power_cut() {
    use pattoo_agentd::switch::{self, Plan, STATE_FILE, UNIT_DROP_IN};
    let Some(volatile) = CacheOnVolatileFs::new() else {
        return;
    };
    // The host's root on the volatile file system, with neither the daemon
    // directory nor the drop-in's directory there yet.
    let root = volatile.root().to_owned();
    let plan = Plan {
        text: String::new(),
        stop: vec!["pattoo_agent_snmpd.service".into()],
        pollers: vec!["pattoo_agent_snmpd".into()],
        config_dir: "/srv/pattoo".into(),
        daemon_dir: root.join("var/lib/pattoo/daemon"),
        cache_dir: root.join("var/lib/pattoo/cache"),
    };
    switch::apply(&root, &plan, Path::new("/bin/true")).unwrap();
    let survived = volatile.cut();
    let state = format!("var/lib/pattoo/daemon/{STATE_FILE}");
    assert_eq!(
        survived
            .get(&state)
            .map(|data| String::from_utf8_lossy(data)),
        Some("pattoo_agent_snmpd.service\ndrop-in\n".into()),
        "without the state --undo cannot reverse the switch; survived: {:?}",
        survived.keys().collect::<Vec<_>>()
    );
    let drop_in = survived
        .get(UNIT_DROP_IN)
        .map(|data| String::from_utf8_lossy(data));
    assert!(
        drop_in
            .as_deref()
            .is_some_and(|text| text.contains("Environment=PATTOO_CONFIGDIR=/srv/pattoo\n")),
        "the drop-in did not survive whole: {drop_in:?}"
    );
}

#[test]
fn what_switch_from_python_undo_records_survives_a_power_cut() {
    use pattoo_agentd::switch::{self, Plan, STATE_FILE, UNIT_DROP_IN};
    let Some(volatile) = CacheOnVolatileFs::new() else {
        return;
    };
    let root = volatile.root().to_owned();
    let daemon_dir = root.join("var/lib/pattoo/daemon");
    let plan = Plan {
        text: String::new(),
        stop: vec!["pattoo_agent_snmpd.service".into()],
        pollers: vec!["pattoo_agent_snmpd".into()],
        config_dir: "/srv/pattoo".into(),
        daemon_dir: daemon_dir.clone(),
        cache_dir: root.join("var/lib/pattoo/cache"),
    };
    switch::apply(&root, &plan, Path::new("/bin/true")).unwrap();
    switch::undo(&root, &daemon_dir, Path::new("/bin/true")).unwrap();
    let survived = volatile.cut();
    let state = format!("var/lib/pattoo/daemon/{STATE_FILE}");
    assert!(
        !survived.contains_key(&state)
            && survived
                .get(&format!("{state}.undone"))
                .is_some_and(|data| data == b"pattoo_agent_snmpd.service\ndrop-in\n"),
        "an undone switch must not look applied after a power cut; survived: {:?}",
        survived.keys().collect::<Vec<_>>()
    );
    assert!(
        !survived.contains_key(UNIT_DROP_IN),
        "the drop-in undo removed came back after a power cut"
    );
}
