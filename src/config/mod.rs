//! Configuration: the files in the configuration directory, validated as a
//! whole into typed [`Settings`].
//!
//! | file | what it holds |
//! | --- | --- |
//! | `pattoo.yaml` | shared pattoo settings: logging and the cache and daemon directories; may hold `pattoo_agent_api` |
//! | `pattoo_agent.yaml` | optional; `pattoo_agent_api` as the Python agents read it (wins over `pattoo.yaml`) |
//! | `pattoo_agentd.yaml` | optional; this agent's settings and pollers |
//! | a Python agent's file (`pattoo_agent_modbustcpd.yaml`, ...) | optional; run as a poller of the kind that takes it over ([`crate::pollers::drop_ins`]) |
//!
//! Loading reports every problem in every file at once (see [`crate::yaml`]).

mod agentd;
mod pattoo;

use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use crate::pollers::{DropIn, PollerSettings};
pub use crate::spoke::config::SpokeSettings;
pub use crate::yaml::{
    check_user_key, expand_home, parse_interval, parse_metadata, yaml_number_to_python,
    ConfigError, ConfigErrors, Document, YamlPath, DEFAULT_POLLING_INTERVAL, MAX_MS,
    MAX_READ_BYTES,
};
pub use agentd::{AgentSettings, SelfMonitoring, DEFAULT_SELF_AGENT_PROGRAM};
pub use pattoo::{ApiSettings, PattooSettings, DEFAULT_API_PORT};

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
    /// Spoke servers: each answers its hub with a fresh poll of its
    /// poller (`spokes:` and the Python spokes' files).
    pub spokes: Vec<SpokeSettings>,
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
/// `tests/it/config_fuzz.rs` makes sure no file gets that far.
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
    let (agent, mut pollers, mut spokes) = if agentd_file.exists() {
        match Document::read(&agentd_file) {
            Err(error) => {
                errors.push(error);
                (None, Vec::new(), Vec::new())
            }
            Ok(mut doc) => {
                let parsed = agentd::parse(&mut doc);
                errors.extend(doc.into_errors());
                match parsed {
                    Some((agent, pollers, spokes)) => (Some(agent), pollers, spokes),
                    None => (None, Vec::new(), Vec::new()),
                }
            }
        }
    } else {
        (Some(AgentSettings::default()), Vec::new(), Vec::new())
    };

    for drop_in in crate::pollers::drop_ins() {
        load_drop_in(config_dir, drop_in, &mut pollers, &mut errors);
    }
    for drop_in in crate::spoke::config::drop_ins() {
        load_spoke_drop_in(config_dir, drop_in, &mut spokes, &mut errors);
    }

    match (pattoo, api, agent) {
        (Some(pattoo), Some(api), Some(agent)) if errors.is_empty() => Ok(Settings {
            config_dir: config_dir.to_owned(),
            pattoo,
            api,
            api_source,
            agent,
            pollers,
            spokes,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Adds the poller a Python agent's file describes, if the file exists in
/// `config_dir`.
fn load_drop_in(
    config_dir: &Path,
    drop_in: &DropIn,
    pollers: &mut Vec<PollerSettings>,
    errors: &mut Vec<ConfigError>,
) {
    let file = config_dir.join(drop_in.file_name);
    if !file.exists() {
        return;
    }
    let mut doc = match Document::read(&file) {
        Ok(doc) => doc,
        Err(error) => {
            errors.push(error);
            return;
        }
    };
    if let Some(poller) = (drop_in.load)(&mut doc) {
        if pollers.iter().any(|p| p.name == poller.name) {
            doc.error(
                &YamlPath::root(),
                format!(
                    "pattoo_agentd.yaml already has a poller named `{}`; rename it, or drop one of the two",
                    poller.name
                ),
            );
        } else if !doc.has_errors() {
            pollers.push(poller);
        }
    }
    errors.extend(doc.into_errors());
}

/// Adds the spoke a Python spoke's file describes, if the file exists in
/// `config_dir`.
fn load_spoke_drop_in(
    config_dir: &Path,
    drop_in: &crate::spoke::config::SpokeDropIn,
    spokes: &mut Vec<SpokeSettings>,
    errors: &mut Vec<ConfigError>,
) {
    let file = config_dir.join(drop_in.file_name);
    if !file.exists() {
        return;
    }
    let mut doc = match Document::read(&file) {
        Ok(doc) => doc,
        Err(error) => {
            errors.push(error);
            return;
        }
    };
    if let Some(spoke) = drop_in.load(&mut doc) {
        if let Some(other) = spokes
            .iter()
            .find(|s| s.listen.port() != 0 && s.listen == spoke.listen)
        {
            doc.error(
                &YamlPath::root(),
                format!(
                    "the spoke of {} already listens on {}; give one of them another port",
                    other.poller.name, spoke.listen
                ),
            );
        } else if !doc.has_errors() {
            spokes.push(spoke);
        }
    }
    errors.extend(doc.into_errors());
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
