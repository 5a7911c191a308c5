//! `pattoo-agentd switch-from-python`: what taking over from the Python
//! agents on this host involves, found from their systemd units (as the
//! pattoo-agents installer writes them, `Environment="PATTOO_CONFIGDIR=..."`
//! and `User=`), their configuration files, agent id files and cache.
//!
//! Paths are shown as the host sees them; `root` stands for `/` so tests
//! can use a directory laid out like a host.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{self, Settings};
use crate::daemon::lock;
use crate::delivery::cache::Cache;
use crate::identity::agent_id_path;
use crate::telemetry::figures::Group;
use crate::telemetry::state::{self, State};
use crate::time::now_ms;

/// Where the Python agents' installer puts their units (its
/// `install_systemd.py` copies them next to the targets of
/// `multi-user.target.wants`; an administrator may have put them in /etc).
const UNIT_DIRS: [&str; 2] = ["etc/systemd/system", "lib/systemd/system"];

/// The configuration directory pattoo-agentd's packaged unit gives it.
pub const PACKAGED_CONFIG_DIR: &str = "/etc/pattoo";

/// One Python agent's systemd unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonUnit {
    /// `pattoo_agent_snmpd.service`
    pub name: String,
    /// `pattoo_agent_snmpd`: the Python agent's program name.
    pub program: String,
    /// The unit file as the host sees it.
    pub path: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub user: Option<String>,
}

/// The Python agents' units under `root`, by name; a unit in
/// `/etc/systemd/system` hides one of the same name in `/lib`.
pub fn python_units(root: &Path) -> Vec<PythonUnit> {
    let mut units: Vec<PythonUnit> = Vec::new();
    for dir in UNIT_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("pattoo_agent_") && name.ends_with(".service"))
            .collect();
        names.sort();
        for name in names {
            if units.iter().any(|unit| unit.name == name) {
                continue;
            }
            let text = std::fs::read_to_string(root.join(dir).join(&name)).unwrap_or_default();
            let (config_dir, user) = unit_settings(&text);
            units.push(PythonUnit {
                program: name.trim_end_matches(".service").to_owned(),
                path: Path::new("/").join(dir).join(&name),
                name,
                config_dir,
                user,
            });
        }
    }
    units.sort_by(|a, b| a.name.cmp(&b.name));
    units
}

/// `PATTOO_CONFIGDIR` and `User=` from a unit's text; the last wins, as
/// in systemd.
fn unit_settings(text: &str) -> (Option<PathBuf>, Option<String>) {
    let mut config_dir = None;
    let mut user = None;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Environment=") {
            for word in value.split_whitespace() {
                let word = word.trim_matches('"');
                if let Some(dir) = word.strip_prefix("PATTOO_CONFIGDIR=") {
                    config_dir = Some(PathBuf::from(dir));
                }
            }
        } else if let Some(value) = line.strip_prefix("User=") {
            user = Some(value.trim().to_owned());
        }
    }
    (config_dir, user)
}

/// A host path under `root`. A path already inside `root` (a test's
/// configuration naming its own temporary directories) is kept.
fn under(root: &Path, path: &Path) -> PathBuf {
    if path.starts_with(root) {
        return path.to_owned();
    }
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The file pattoo-agentd reads in place of a Python agent's, if any.
fn drop_in_file(program: &str) -> Option<&'static str> {
    crate::pollers::drop_ins()
        .find(|drop_in| drop_in.agent_program == program)
        .map(|drop_in| drop_in.file_name)
        .or_else(|| {
            crate::spoke::drop_ins()
                .find(|drop_in| drop_in.agent_program == program)
                .map(|drop_in| drop_in.file_name)
        })
}

/// What one `once --print` poll of a poller gave: its datapoint count, or
/// why it gave none. Run by root, the poll runs as the owner of
/// `daemon_dir` (the service's user) when that is not root, so an agent id
/// file it makes is one the service can read.
pub fn count_datapoints(
    exe: &Path,
    config_dir: &Path,
    poller: &str,
    daemon_dir: &Path,
) -> Result<usize, String> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(exe);
    command
        .arg("--config-dir")
        .arg(config_dir)
        .args(["once", "--print", "--poller", poller]);
    if nix::unistd::geteuid().is_root() {
        if let Some(owner) = std::fs::metadata(daemon_dir)
            .ok()
            .filter(|dir| dir.uid() != 0)
        {
            command.uid(owner.uid()).gid(owner.gid());
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        return Err(last.unwrap_or("failed, saying nothing").trim().to_owned());
    }
    let mut count = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let body: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("once --print wrote a line that is not JSON: {e}"))?;
        count += body["pattoo_datapoints"]["datapoint_pairs"]
            .as_array()
            .map_or(0, Vec::len);
    }
    Ok(count)
}

/// What switching involves, found by [`plan`].
#[derive(Debug)]
pub struct Plan {
    /// The plan as printed.
    pub text: String,
    /// The Python units pattoo-agentd takes over.
    pub stop: Vec<String>,
    /// The pollers that stand for them, one per drop-in.
    pub pollers: Vec<String>,
    /// The configuration directory as the host sees it.
    pub config_dir: PathBuf,
    /// The daemon directory under the root.
    pub daemon_dir: PathBuf,
    /// The cache directory under the root.
    pub cache_dir: PathBuf,
}

/// The plan: what pattoo-agentd would read, keep and replay, and the
/// commands that switch. `config_dir` is `--config-dir` if given; `exe` is
/// the pattoo-agentd that polls once per drop-in.
pub fn plan(root: &Path, config_dir: Option<&Path>, exe: &Path) -> anyhow::Result<Plan> {
    let units = python_units(root);
    if units.is_empty() {
        anyhow::bail!(
            "no Python agent units (pattoo_agent_*.service) in /{} or /{}: nothing to switch from",
            UNIT_DIRS[0],
            UNIT_DIRS[1]
        );
    }
    let config_dir = match config_dir {
        Some(dir) => dir.to_owned(),
        None => {
            let mut dirs: Vec<&PathBuf> =
                units.iter().filter_map(|u| u.config_dir.as_ref()).collect();
            dirs.sort();
            dirs.dedup();
            match dirs.as_slice() {
                [] => PathBuf::from(PACKAGED_CONFIG_DIR),
                [one] => (*one).clone(),
                _ => anyhow::bail!(
                    "the Python agents' units name different configuration directories ({}); \
                     choose one with --config-dir",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let host_config_dir = under(root, &config_dir);
    let settings: Settings = config::load(&host_config_dir).map_err(|errors| {
        anyhow::anyhow!(
            "reading the configuration in {}:\n{errors}\nfix it (`pattoo-agentd --config-dir {} check`) before switching",
            config_dir.display(),
            host_config_dir.display()
        )
    })?;
    let daemon_dir = under(root, &settings.pattoo.daemon_directory);

    let mut out = String::new();
    writeln!(out, "Python agents on this host:")?;
    for unit in &units {
        writeln!(
            out,
            "  {}  ({}; user {}; PATTOO_CONFIGDIR {})",
            unit.name,
            unit.path.display(),
            unit.user.as_deref().unwrap_or("root"),
            unit.config_dir
                .as_ref()
                .map_or("unset".into(), |d| d.display().to_string())
        )?;
    }
    writeln!(out, "Configuration directory: {}", config_dir.display())?;

    let mut reads = Vec::new();
    let mut cannot = Vec::new();
    for unit in &units {
        match drop_in_file(&unit.program) {
            None => cannot.push(format!(
                "{}: pattoo-agentd reads no file in its place; it keeps running unless you stop it",
                unit.program
            )),
            Some(file) if !host_config_dir.join(file).is_file() => cannot.push(format!(
                "{}: {} is not in {}",
                unit.program,
                file,
                config_dir.display()
            )),
            Some(file) => reads.push((unit, file)),
        }
    }
    writeln!(out, "Drop-ins pattoo-agentd will read:")?;
    if reads.is_empty() {
        writeln!(out, "  none")?;
    }
    // Looked at before polling: a poll makes the file.
    let had_id: Vec<bool> = reads
        .iter()
        .map(|(unit, _)| agent_id_path(&daemon_dir, &unit.program).is_file())
        .collect();
    for (unit, file) in &reads {
        let polled = match count_datapoints(exe, &host_config_dir, &unit.program, &daemon_dir) {
            Ok(count) => format!("{count} datapoint(s) in one poll"),
            Err(why) => format!("one poll failed: {why}"),
        };
        writeln!(out, "  {file}: poller {}, {polled}", unit.program)?;
    }
    if !cannot.is_empty() {
        writeln!(out, "Not taken over:")?;
        for why in &cannot {
            writeln!(out, "  {why}")?;
        }
    }
    writeln!(
        out,
        "Agent ids (kept, so the server keeps the same charts):"
    )?;
    for ((unit, _), had_id) in reads.iter().zip(had_id) {
        let state = if had_id {
            "kept"
        } else {
            "none yet; made at the first poll"
        };
        writeln!(
            out,
            "  {}: {state}",
            agent_id_path(&settings.pattoo.daemon_directory, &unit.program).display()
        )?;
    }
    let cache = Cache::inspect(
        &under(root, &settings.pattoo.cache_directory),
        &settings.agent.cache,
        Default::default(),
    );
    cache.measure_only();
    let (files, bytes) = cache.totals();
    writeln!(
        out,
        "Cache: {files} cached body(ies), {bytes} bytes, in {}, replayed once the server answers",
        settings.pattoo.cache_directory.display()
    )?;
    writeln!(
        out,
        "Commands that switch (--apply runs them; nothing is deleted):"
    )?;
    for (unit, _) in &reads {
        writeln!(out, "  systemctl stop {}", unit.name)?;
        writeln!(out, "  systemctl disable {}", unit.name)?;
    }
    if config_dir != Path::new(PACKAGED_CONFIG_DIR) {
        writeln!(
            out,
            "  write /etc/systemd/system/pattoo-agentd.service.d/switch-from-python.conf: Environment=PATTOO_CONFIGDIR={}",
            config_dir.display()
        )?;
        writeln!(out, "  systemctl daemon-reload")?;
    }
    writeln!(out, "  systemctl enable pattoo-agentd.service")?;
    writeln!(out, "  systemctl restart pattoo-agentd.service")?;
    Ok(Plan {
        text: out,
        stop: reads.iter().map(|(unit, _)| unit.name.clone()).collect(),
        pollers: reads.iter().map(|(unit, _)| unit.program.clone()).collect(),
        config_dir,
        daemon_dir,
        cache_dir: under(root, &settings.pattoo.cache_directory),
    })
}

/// The drop-in `--apply` writes for pattoo-agentd.service, under the root.
pub const UNIT_DROP_IN: &str = "etc/systemd/system/pattoo-agentd.service.d/switch-from-python.conf";

/// What `--apply` did, in the daemon directory, so `--undo` reverses
/// exactly that: one line per Python unit stopped, `drop-in` if it wrote one.
pub const STATE_FILE: &str = "switch-from-python.state";

/// Runs `systemctl ARGS`, failing with what it said.
fn systemctl(systemctl: &Path, args: &[&str], out: &mut String) -> anyhow::Result<()> {
    writeln!(out, "systemctl {}", args.join(" "))?;
    let output = Command::new(systemctl)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", systemctl.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Stops and disables the Python units of `plan`, points pattoo-agentd at
/// their configuration directory when it is not the packaged one, and
/// enables and (re)starts pattoo-agentd; records what it did for [`undo`].
pub fn apply(root: &Path, plan: &Plan, systemctl_path: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut state = String::new();
    for unit in &plan.stop {
        state.push_str(&format!("{unit}\n"));
    }
    let wrote_drop_in = plan.config_dir != Path::new(PACKAGED_CONFIG_DIR);
    if wrote_drop_in {
        state.push_str("drop-in\n");
    }
    // Recorded first: an apply that fails half way can still be undone.
    // Synced, as the cache is: a power cut must not lose what --undo needs.
    crate::durable::create_dir_all_durably(&plan.daemon_dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", plan.daemon_dir.display()))?;
    let state_path = plan.daemon_dir.join(STATE_FILE);
    crate::durable::replace_durably(&state_path, state.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", state_path.display()))?;
    for unit in &plan.stop {
        systemctl(systemctl_path, &["stop", unit], &mut out)?;
        systemctl(systemctl_path, &["disable", unit], &mut out)?;
    }
    if wrote_drop_in {
        let path = root.join(UNIT_DROP_IN);
        crate::durable::create_dir_all_durably(path.parent().expect("a parent"))
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
        let text = format!(
            "# Written by pattoo-agentd switch-from-python; --undo removes it.\n\
             [Service]\nEnvironment=PATTOO_CONFIGDIR={}\n",
            plan.config_dir.display()
        );
        crate::durable::replace_durably(&path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        writeln!(out, "wrote /{UNIT_DROP_IN}")?;
        systemctl(systemctl_path, &["daemon-reload"], &mut out)?;
    }
    systemctl(
        systemctl_path,
        &["enable", "pattoo-agentd.service"],
        &mut out,
    )?;
    // Restart, not `enable --now`: the package starts pattoo-agentd on
    // /etc/pattoo when it is installed, and a running service would keep
    // that configuration directory instead of the drop-in's.
    systemctl(
        systemctl_path,
        &["restart", "pattoo-agentd.service"],
        &mut out,
    )?;
    writeln!(
        out,
        "switched; `pattoo-agentd status` shows each poller's first poll, `switch-from-python --undo` goes back"
    )?;
    Ok(out)
}

/// Reverses [`apply`]: stops and disables pattoo-agentd, removes the one
/// drop-in it wrote, and enables and starts the Python units it stopped.
pub fn undo(root: &Path, daemon_dir: &Path, systemctl_path: &Path) -> anyhow::Result<String> {
    let state_path = daemon_dir.join(STATE_FILE);
    let state = std::fs::read_to_string(&state_path).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}; without it there is no switch to undo",
            state_path.display()
        )
    })?;
    let mut out = String::new();
    systemctl(
        systemctl_path,
        &["disable", "--now", "pattoo-agentd.service"],
        &mut out,
    )?;
    let units: Vec<&str> = state
        .lines()
        .filter(|l| *l != "drop-in" && !l.is_empty())
        .collect();
    if state.lines().any(|l| l == "drop-in") {
        let path = root.join(UNIT_DROP_IN);
        match std::fs::remove_file(&path)
            .and_then(|()| crate::durable::sync_dir(path.parent().expect("a parent")))
        {
            Ok(()) => writeln!(out, "removed /{UNIT_DROP_IN}")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("removing {}: {e}", path.display()),
        }
        systemctl(systemctl_path, &["daemon-reload"], &mut out)?;
    }
    for unit in units {
        systemctl(systemctl_path, &["enable", "--now", unit], &mut out)?;
    }
    // Kept beside, not deleted: what was switched and undone stays on record.
    let undone = daemon_dir.join(format!("{STATE_FILE}.undone"));
    // Synced: after a power cut the switch must not look applied again.
    crate::durable::rename_durably(&state_path, &undone)
        .map_err(|e| anyhow::anyhow!("renaming {}: {e}", state_path.display()))?;
    writeln!(out, "the Python agents run again")?;
    Ok(out)
}

/// How long `--apply` waits by default for each drop-in's first poll to
/// post, counted from when that poll is due.
pub const DEFAULT_WAIT: &str = "2m";

/// How often the first-post check reads the state file (the agent rewrites
/// it every [`state::EVERY_MS`]).
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What has come of a drop-in's polls so far, as the running agent's
/// figures tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FirstPost {
    /// The running agent has no such poller.
    NotRun,
    /// Not polled yet; the first poll is due then (wall milliseconds).
    NotPolled { due_ms: Option<u64> },
    /// Every poll so far failed.
    PollFailed { polls: u64 },
    /// A body was cached rather than taken by the server.
    Cached,
    /// A body was cached, then taken by the server when replayed.
    Replayed,
    /// A body was made and is still on its way to the server.
    InFlight,
    /// The server took a body.
    Posted,
}

impl FirstPost {
    fn of(group: Option<&Group>) -> FirstPost {
        let Some(group) = group else {
            return FirstPost::NotRun;
        };
        let count = |key| group.get(key).map_or(0, |n| n.as_f64() as u64);
        if count("poller_bodies_delivered") > 0 {
            FirstPost::Posted
        } else if count("poller_polls") == 0 {
            FirstPost::NotPolled {
                due_ms: group
                    .get("poller_next_tick_timestamp_seconds")
                    .map(|at| (at.as_f64() * 1000.0) as u64),
            }
        } else if count("poller_bodies_cached") > 0 {
            FirstPost::Cached
        } else if count("poller_polls_failed") == count("poller_polls") {
            FirstPost::PollFailed {
                polls: count("poller_polls"),
            }
        } else {
            FirstPost::InFlight
        }
    }

    /// Whether a body of the drop-in's reached the server.
    fn reached_server(&self) -> bool {
        matches!(self, FirstPost::Posted | FirstPost::Replayed)
    }
}

/// Whether the bodies `poller` cached (`cached` of them) have all been
/// replayed since. The agent counts replays as a whole, not per poller,
/// but the cache keeps each agent id's bodies in a folder of its own, and
/// a drop-in posts under its own agent id. A valid body leaves the cache
/// only when the server took it or a bound (`max_bytes`, `max_age`)
/// dropped it, and a bound drops the oldest first: a body cached since
/// the agent started goes only after every older one (the Python agents'
/// too), logged at ERROR. So a folder with no body left, once the agent
/// has replayed at least as many bodies as the poller cached, means the
/// server has them.
fn cached_bodies_replayed(
    state: &State,
    cached: u64,
    cache_dir: &Path,
    daemon_dir: &Path,
    poller: &str,
) -> bool {
    let replayed = state
        .figures
        .groups
        .iter()
        .find(|group| group.poller.is_none())
        .and_then(|agent| agent.get("delivery_bodies_replayed"))
        .map_or(0, |n| n.as_f64() as u64);
    if replayed < cached.max(1) {
        return false;
    }
    let Ok(id) = std::fs::read_to_string(agent_id_path(daemon_dir, poller)) else {
        return false;
    };
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    match std::fs::read_dir(cache_dir.join(id)) {
        Ok(entries) => !entries.filter_map(Result::ok).any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name.ends_with(".json")
        }),
        // Removed with its last body, or never made; unreadable says nothing.
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The state the running agent of `daemon_dir` last wrote, or why there is
/// none to read.
fn running_state(daemon_dir: &Path) -> Result<State, String> {
    let pid = lock::running_agent(daemon_dir)
        .map_err(|no_agent| format!("pattoo-agentd is not running ({no_agent})"))?;
    match state::read(daemon_dir)? {
        Some(state) if state.pid == pid => Ok(state),
        _ => Err(format!(
            "pattoo-agentd runs as pid {pid} but has written no state file in {} yet",
            daemon_dir.display()
        )),
    }
}

/// What [`check_first_posts`] found.
#[derive(Debug)]
pub struct FirstPosts {
    /// One line per drop-in.
    pub text: String,
    pub all_posted: bool,
}

/// Waits until the running agent of the plan's daemon directory has posted
/// a body of each of its pollers (at once, or from the cache after a
/// failed post), or until `wait` has passed since each one's first poll
/// was due (since now while that is not known), reading the state file the
/// agent rewrites every few seconds; then says per poller OK or what
/// failed. Undoes nothing.
pub async fn check_first_posts(plan: &Plan, wait: Duration) -> anyhow::Result<FirstPosts> {
    let (daemon_dir, pollers) = (plan.daemon_dir.as_path(), plan.pollers.as_slice());
    let started_ms = now_ms();
    let wait_ms = wait.as_millis() as u64;
    let mut first_due: HashMap<&str, u64> = HashMap::new();
    loop {
        let seen = running_state(daemon_dir);
        let outcomes: Vec<FirstPost> = pollers
            .iter()
            .map(|poller| {
                let state = seen.as_ref().ok()?;
                let group = state.figures.groups.iter().find(|group| {
                    group
                        .poller
                        .as_ref()
                        .is_some_and(|(name, _)| name == poller)
                });
                let outcome = FirstPost::of(group);
                let cached = group
                    .and_then(|group| group.get("poller_bodies_cached"))
                    .map_or(0, |n| n.as_f64() as u64);
                if outcome == FirstPost::Cached
                    && cached_bodies_replayed(state, cached, &plan.cache_dir, daemon_dir, poller)
                {
                    return Some(FirstPost::Replayed);
                }
                Some(outcome)
            })
            .map(|outcome| outcome.unwrap_or(FirstPost::NotPolled { due_ms: None }))
            .collect();
        for (poller, outcome) in pollers.iter().zip(&outcomes) {
            if let FirstPost::NotPolled {
                due_ms: Some(due_ms),
            } = outcome
            {
                first_due.entry(poller).or_insert(*due_ms);
            }
        }
        let deadline_ms = pollers
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| !outcome.reached_server())
            .map(|(poller, _)| {
                first_due
                    .get(poller.as_str())
                    .map_or(started_ms, |due| (*due).max(started_ms))
                    + wait_ms
            })
            .max();
        let now = now_ms();
        // The figures are as old as the state file: judged once it was
        // written after the deadline, or once it is not rewritten at all.
        let seen_at = seen.as_ref().map_or(now, |state| {
            if now > state.written_ms + 3 * state::EVERY_MS {
                now
            } else {
                state.written_ms
            }
        });
        if deadline_ms.is_none_or(|deadline_ms| seen_at >= deadline_ms) {
            return report(pollers, &outcomes, &seen, now);
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

fn report(
    pollers: &[String],
    outcomes: &[FirstPost],
    seen: &Result<State, String>,
    now_ms: u64,
) -> anyhow::Result<FirstPosts> {
    let mut text = String::new();
    let state = match seen {
        Ok(state) => state,
        Err(why) => {
            for poller in pollers {
                writeln!(text, "  {poller}: FAILED: {why}")?;
            }
            return Ok(FirstPosts {
                text,
                all_posted: false,
            });
        }
    };
    let server = &state.server;
    let last_post = state
        .last_post
        .as_ref()
        .filter(|last| !last.delivered)
        .map_or(String::new(), |last| {
            format!(" (last post: {})", last.detail)
        });
    for (poller, outcome) in pollers.iter().zip(outcomes) {
        match outcome {
            FirstPost::Posted => writeln!(text, "  {poller}: OK: posted to {server}")?,
            FirstPost::Replayed => writeln!(
                text,
                "  {poller}: OK: posted to {server} after a retry (the first post failed; the cached body was replayed)"
            )?,
            FirstPost::NotRun => writeln!(
                text,
                "  {poller}: FAILED: the running pattoo-agentd has no poller of that name (its configuration directory is not the one switched to? see `systemctl status pattoo-agentd`)"
            )?,
            FirstPost::NotPolled { due_ms } => {
                let due = match due_ms {
                    Some(due) if *due > now_ms => {
                        let left = Duration::from_secs((due - now_ms).div_ceil(1000));
                        format!(" (first poll due in {})", humantime::format_duration(left))
                    }
                    Some(_) => " (first poll due now)".to_owned(),
                    None => String::new(),
                };
                writeln!(text, "  {poller}: FAILED: not polled yet{due}")?
            }
            FirstPost::PollFailed { polls } => writeln!(
                text,
                "  {poller}: FAILED: poll failed ({polls} of {polls}); the reason is in pattoo-agentd's log (journalctl -u pattoo-agentd)"
            )?,
            FirstPost::Cached => writeln!(
                text,
                "  {poller}: FAILED: post to {server} failed{last_post}; the body is cached and replayed once the server takes it"
            )?,
            FirstPost::InFlight => writeln!(
                text,
                "  {poller}: FAILED: polled, but the post to {server} has not been answered yet"
            )?,
        }
    }
    Ok(FirstPosts {
        text,
        all_posted: outcomes.iter().all(FirstPost::reached_server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::figures::{Figure, Kind, Number};

    fn poller(figures: &[(&str, u64)]) -> Group {
        Group {
            target: "meter".into(),
            poller: Some(("meter".into(), "modbus_tcp".into())),
            figures: figures
                .iter()
                .map(|(key, value)| Figure {
                    key: (*key).into(),
                    kind: Kind::Counter,
                    value: Number::Int(*value),
                    posted: false,
                })
                .collect(),
        }
    }

    #[test]
    fn a_drop_in_posted_once_the_server_took_one_of_its_bodies_whatever_failed_before() {
        let group = poller(&[
            ("poller_polls", 3),
            ("poller_polls_failed", 1),
            ("poller_bodies_cached", 1),
            ("poller_bodies_delivered", 1),
        ]);
        assert_eq!(FirstPost::of(Some(&group)), FirstPost::Posted);
    }

    /// A state whose agent replayed `replayed` bodies, a daemon directory
    /// with `meter`'s agent id and a cache directory.
    fn replay_case(replayed: u64) -> (State, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let ids = dir.path().join("daemon/agent_id");
        std::fs::create_dir_all(&ids).unwrap();
        std::fs::write(ids.join("meter.agent_id"), &id).unwrap();
        std::fs::create_dir_all(dir.path().join("cache").join(&id)).unwrap();
        let mut agent = poller(&[("delivery_bodies_replayed", replayed)]);
        agent.poller = None;
        let state = State {
            pid: 1,
            version: String::new(),
            written_ms: 0,
            server: String::new(),
            metrics_listen: None,
            last_post: None,
            last_exchange: None,
            unhealthy: None,
            figures: crate::telemetry::figures::Figures {
                groups: vec![agent],
            },
        };
        (state, dir)
    }

    #[test]
    fn a_cached_body_counts_as_replayed_once_no_body_of_its_agent_id_is_left_and_enough_were_replayed(
    ) {
        let replayed = |state: &State, dir: &tempfile::TempDir, cached| {
            let (cache, daemon) = (dir.path().join("cache"), dir.path().join("daemon"));
            cached_bodies_replayed(state, cached, &cache, &daemon, "meter")
        };
        let (state, dir) = replay_case(2);
        assert!(replayed(&state, &dir, 2));
        assert!(
            !replayed(&state, &dir, 3),
            "fewer replays than cached bodies"
        );
        let (state, _) = replay_case(0);
        assert!(!replayed(&state, &dir, 1), "nothing replayed");
        let (state, dir) = replay_case(2);
        let left = dir.path().join("cache").join("ab".repeat(32));
        // A body being written is not one left; a body under its name is.
        std::fs::write(left.join(".1_x.json.7.0.tmp"), "").unwrap();
        assert!(replayed(&state, &dir, 1));
        std::fs::write(left.join(format!("1_{}.json", "ab".repeat(32))), "{}").unwrap();
        assert!(!replayed(&state, &dir, 1), "a body is still cached");
    }

    #[test]
    fn a_drop_in_that_has_not_posted_says_why() {
        assert_eq!(FirstPost::of(None), FirstPost::NotRun);
        assert_eq!(
            FirstPost::of(Some(&poller(&[
                ("poller_polls", 0),
                ("poller_next_tick_timestamp_seconds", 1_700_000_000)
            ]))),
            FirstPost::NotPolled {
                due_ms: Some(1_700_000_000_000)
            }
        );
        assert_eq!(
            FirstPost::of(Some(&poller(&[
                ("poller_polls", 2),
                ("poller_polls_failed", 2)
            ]))),
            FirstPost::PollFailed { polls: 2 }
        );
        assert_eq!(
            FirstPost::of(Some(&poller(&[
                ("poller_polls", 2),
                ("poller_polls_failed", 1),
                ("poller_bodies_cached", 1)
            ]))),
            FirstPost::Cached
        );
        assert_eq!(
            FirstPost::of(Some(&poller(&[("poller_polls", 1)]))),
            FirstPost::InFlight
        );
    }
}
