//! Configuration: the files in the configuration directory, validated as a
//! whole into typed [`Settings`].
//!
//! | file | what it holds |
//! | --- | --- |
//! | `pattoo.yaml` | shared pattoo settings: logging and the cache and daemon directories; may hold `pattoo_agent_api` |
//! | `pattoo_agent.yaml` | optional; `pattoo_agent_api` as the Python agents read it (wins over `pattoo.yaml`) |
//! | `pattoo_agentd.yaml` | optional; this agent's settings and pollers |
//! | `pattoo_agent_modbustcpd.yaml` | optional; a Python Modbus agent's configuration, run as a poller |
//!
//! Loading reports every problem in every file at once (see [`yaml`]).

mod agentd;
mod pattoo;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use agentd::{
    parse_interval, parse_metadata, yaml_number_to_python, AgentSettings, SelfMonitoring,
    DEFAULT_POLLING_INTERVAL, DEFAULT_SELF_AGENT_PROGRAM,
};
pub use pattoo::{ApiSettings, PattooSettings, DEFAULT_API_PORT};
pub use yaml::{ConfigError, ConfigErrors, Document, YamlPath};

use crate::model::Metadata;
use crate::pollers::PollerKind;

/// Where the configuration lives unless `--config-dir` or
/// `$PATTOO_CONFIGDIR` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/pattoo";
pub const CONFIG_DIR_ENV: &str = "PATTOO_CONFIGDIR";

/// Everything the agent was configured to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub pattoo: PattooSettings,
    pub api: ApiSettings,
    /// Which file `api` came from, for `check` to say.
    pub api_source: PathBuf,
    pub agent: AgentSettings,
    pub pollers: Vec<PollerSettings>,
}

/// One poller, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PollerSettings {
    pub name: String,
    /// Names the agent id this poller posts under.
    pub agent_program: String,
    pub polling_interval: Duration,
    /// Attached to every datapoint after the datapoint's own metadata, so a
    /// key a poller reads itself wins over a poller-wide default.
    pub metadata: Vec<Metadata>,
    pub kind: PollerKind,
}

/// Levels as pattoo names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl FromStr for LogLevel {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warning" | "warn" => Ok(LogLevel::Warning),
            "error" => Ok(LogLevel::Error),
            "critical" => Ok(LogLevel::Critical),
            _ => Err(()),
        }
    }
}

/// The configuration directory from the command line, the environment, or
/// the default, in that order.
pub fn config_dir(from_command_line: Option<&Path>) -> PathBuf {
    if let Some(dir) = from_command_line {
        return dir.to_owned();
    }
    match std::env::var_os(CONFIG_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_CONFIG_DIR),
    }
}

/// What a configuration error says when reading the files hit a bug
/// instead of a mistake in them.
pub const INTERNAL_ERROR: &str = "pattoo-agentd failed while reading the configuration";

/// Reads and validates every configuration file in `config_dir`.
///
/// Does no network I/O and creates nothing: see
/// [`crate::identity::prepare_directories`] for that.
///
/// Never panics: a panic inside the readers (a bug, never the file's
/// fault) is turned into one configuration error, so `check` exits 78 and a
/// reload keeps the running configuration instead of killing the daemon.
/// `tests/config_fuzz.rs` makes sure no file gets that far.
pub fn load(config_dir: &Path) -> Result<Settings, ConfigErrors> {
    std::panic::catch_unwind(|| load_files(config_dir)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ConfigErrors(vec![ConfigError {
            file: config_dir.to_owned(),
            position: None,
            path: String::new(),
            message: format!(
                "{INTERNAL_ERROR} ({what}); this is a bug: please report it with the files; the running configuration (if any) is kept"
            ),
        }]))
    })
}

fn load_files(config_dir: &Path) -> Result<Settings, ConfigErrors> {
    let mut errors = Vec::new();
    let pattoo_file = config_dir.join("pattoo.yaml");
    // Where a missing `pattoo_agent_api` is reported: the top of
    // pattoo.yaml, so the message has a line to jump to like every other.
    let mut pattoo_top = None;
    let mut api_refused = false;
    let (pattoo, mut api, mut api_source) = match Document::read(&pattoo_file) {
        Err(error) => {
            errors.push(error);
            (None, None, pattoo_file.clone())
        }
        Ok(mut doc) => {
            pattoo_top = doc.position(&YamlPath::root());
            let pattoo = pattoo::parse_pattoo(&mut doc);
            let api = pattoo::parse_api(&mut doc);
            // A section that is there but wrong has its own error already.
            api_refused |= api.is_none();
            errors.extend(doc.into_errors());
            (pattoo, api.flatten(), pattoo_file.clone())
        }
    };

    let agent_file = config_dir.join("pattoo_agent.yaml");
    if agent_file.exists() {
        match Document::read(&agent_file) {
            Err(error) => errors.push(error),
            Ok(mut doc) => {
                match pattoo::parse_api(&mut doc) {
                    Some(Some(from_agent_file)) => {
                        api = Some(from_agent_file);
                        api_source = agent_file.clone();
                    }
                    Some(None) => {}
                    None => api_refused = true,
                }
                errors.extend(doc.into_errors());
            }
        }
    }
    if api.is_none() && pattoo.is_some() && !api_refused {
        errors.push(ConfigError {
            file: pattoo_file.clone(),
            position: pattoo_top,
            path: "pattoo_agent_api".into(),
            message: format!(
                "missing section: say where the pattoo server listens (ip_address, ip_bind_port) here or in {}",
                agent_file.display()
            ),
        });
    }

    let agentd_file = config_dir.join("pattoo_agentd.yaml");
    let (agent, mut pollers) = if agentd_file.exists() {
        match Document::read(&agentd_file) {
            Err(error) => {
                errors.push(error);
                (None, Vec::new())
            }
            Ok(mut doc) => {
                let parsed = agentd::parse(&mut doc);
                errors.extend(doc.into_errors());
                match parsed {
                    Some((agent, pollers)) => (Some(agent), pollers),
                    None => (None, Vec::new()),
                }
            }
        }
    } else {
        (Some(AgentSettings::default()), Vec::new())
    };

    crate::pollers::modbus::compat::load(config_dir, &mut pollers, &mut errors);

    match (pattoo, api, agent) {
        (Some(pattoo), Some(api), Some(agent)) if errors.is_empty() => Ok(Settings {
            config_dir: config_dir.to_owned(),
            pattoo,
            api,
            api_source,
            agent,
            pollers,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            polling_interval: DEFAULT_POLLING_INTERVAL,
            hostname: None,
            delivery: Default::default(),
            cache: Default::default(),
            self_monitoring: Default::default(),
            metrics_listen: None,
        }
    }
}

/// Rejects a user-chosen key (datapoint or metadata) that the pattoo server
/// reserves or that normalises to nothing. Returns whether it is fine.
pub fn check_user_key(doc: &mut Document, path: &YamlPath, key: &str) -> bool {
    let normalised = crate::model::normalise_key(key);
    if normalised.is_empty() {
        doc.error(path, "keys must not be empty");
        false
    } else if normalised.contains("pattoo") {
        doc.error(
            path,
            format!("key {key:?} contains `pattoo`, which pattoo reserves for its own keys; choose another name"),
        );
        false
    } else {
        true
    }
}

/// The longest any `*_ms` setting may be: a day. Longer is a unit mistake,
/// and a deadline that far off overflows the clocks it is added to.
pub const MAX_MS: u64 = 86_400_000;

/// The largest any `*_bytes` read limit may be: 1 GiB, all of which may be
/// held in memory.
pub const MAX_READ_BYTES: u64 = 1 << 30;

/// A count from 1 to `max` (`timeout_ms`, a size), or `default` when
/// absent. Anything else is recorded as an error at `path.key` and clears
/// `ok`.
pub fn positive_or(
    doc: &mut Document,
    path: &YamlPath,
    key: &str,
    value: Option<u64>,
    default: u64,
    max: u64,
    ok: &mut bool,
) -> u64 {
    match value {
        None => default,
        Some(0) => {
            doc.error(&path.key(key), "must be more than 0");
            *ok = false;
            default
        }
        Some(n) if n > max => {
            doc.error(
                &path.key(key),
                format!("{n} is out of range: expected 1 to {max}"),
            );
            *ok = false;
            default
        }
        Some(n) => n,
    }
}

/// Expands a leading `~` to the home directory, as pattoo does for paths.
pub fn expand_home(path: &str) -> PathBuf {
    let path = path.trim();
    if path == "~" || path.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(path.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(path)
}
