//! `pattoo-agentd switch-from-python`: what taking over from the Python
//! agents on this host involves, found from their systemd units (as the
//! pattoo-agents installer writes them, `Environment="PATTOO_CONFIGDIR=..."`
//! and `User=`), their configuration files, agent id files and cache.
//!
//! Paths are shown as the host sees them; `root` stands for `/` so tests
//! can use a directory laid out like a host.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{self, Settings};
use crate::delivery::cache::Cache;
use crate::identity::agent_id_path;

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
/// why it gave none.
pub fn count_datapoints(exe: &Path, config_dir: &Path, poller: &str) -> Result<usize, String> {
    let output = Command::new(exe)
        .arg("--config-dir")
        .arg(config_dir)
        .args(["once", "--print", "--poller", poller])
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
    /// The configuration directory as the host sees it.
    pub config_dir: PathBuf,
    /// The daemon directory under the root.
    pub daemon_dir: PathBuf,
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
    for (unit, file) in &reads {
        let polled = match count_datapoints(exe, &host_config_dir, &unit.program) {
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
    for (unit, _) in &reads {
        let path = agent_id_path(&daemon_dir, &unit.program);
        let state = if path.is_file() {
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
    writeln!(out, "  systemctl enable --now pattoo-agentd.service")?;
    Ok(Plan {
        text: out,
        stop: reads.iter().map(|(unit, _)| unit.name.clone()).collect(),
        config_dir,
        daemon_dir,
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
/// enables and starts pattoo-agentd; records what it did for [`undo`].
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
    std::fs::create_dir_all(&plan.daemon_dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", plan.daemon_dir.display()))?;
    let state_path = plan.daemon_dir.join(STATE_FILE);
    crate::durable::replace_atomically(&state_path, state.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", state_path.display()))?;
    for unit in &plan.stop {
        systemctl(systemctl_path, &["stop", unit], &mut out)?;
        systemctl(systemctl_path, &["disable", unit], &mut out)?;
    }
    if wrote_drop_in {
        let path = root.join(UNIT_DROP_IN);
        std::fs::create_dir_all(path.parent().expect("a parent"))
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
        let text = format!(
            "# Written by pattoo-agentd switch-from-python; --undo removes it.\n\
             [Service]\nEnvironment=PATTOO_CONFIGDIR={}\n",
            plan.config_dir.display()
        );
        crate::durable::replace_atomically(&path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        writeln!(out, "wrote /{UNIT_DROP_IN}")?;
        systemctl(systemctl_path, &["daemon-reload"], &mut out)?;
    }
    systemctl(
        systemctl_path,
        &["enable", "--now", "pattoo-agentd.service"],
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
        match std::fs::remove_file(&path) {
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
    std::fs::rename(&state_path, &undone)
        .map_err(|e| anyhow::anyhow!("renaming {}: {e}", state_path.display()))?;
    writeln!(out, "the Python agents run again")?;
    Ok(out)
}
