//! Reading the Python OS agents' files as they are, so their users switch
//! without losing a chart (SPEC-os-compat.md §2 and §8).
//!
//! ```yaml
//! # pattoo_agent_os_autonomousd.yaml: keys under the program's name
//! pattoo_agent_os_autonomousd:
//!     polling_interval: 300
//!
//! # pattoo_agent_linux_autonomousd.yaml: keys at the top level
//! polling_interval: 300
//! ```
//!
//! Each file becomes one os poller named after its program, posting under
//! that program's agent id file, with the Python collector's datapoints.
//! The interval follows each family's rules: for `pattoo_agent_os_*` a
//! missing, null, 0 or empty value means 300 seconds, for
//! `pattoo_agent_linux_*` only a missing one does; otherwise the whole
//! seconds of its absolute value. Where Python died at start (an interval
//! such as `"2.9"`, a null one in the linux layout) this reads what was
//! meant and warns; where it would poll in a busy loop or never post (an
//! interval of 0 seconds), `check` says so.
//!
//! The linux family's autonomous agent posts encrypted in Python; this
//! posts as every other poller does (identities do not depend on it).

use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::OsSettings;
use crate::pollers::{DropIn, PollerKind, PollerSettings};
use crate::yaml::{describe, Document, YamlPath};

pub const OS_AUTONOMOUSD: &str = "pattoo_agent_os_autonomousd";
pub const OS_SPOKED: &str = "pattoo_agent_os_spoked";
pub const LINUX_AUTONOMOUSD: &str = "pattoo_agent_linux_autonomousd";
pub const LINUX_SPOKED: &str = "pattoo_agent_linux_spoked";

pub const OS_AUTONOMOUSD_DROP_IN: DropIn = DropIn {
    file_name: "pattoo_agent_os_autonomousd.yaml",
    agent_program: OS_AUTONOMOUSD,
    load: load_os_autonomousd,
};

pub const LINUX_AUTONOMOUSD_DROP_IN: DropIn = DropIn {
    file_name: "pattoo_agent_linux_autonomousd.yaml",
    agent_program: LINUX_AUTONOMOUSD,
    load: load_linux_autonomousd,
};

/// How a family of Python agents lays out its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// pattoo-agents (`pattoo_agent_os_*`): keys under a top-level key
    /// named after the program; falsy intervals mean 300 seconds.
    Os,
    /// pattoo-agent-linux (`pattoo_agent_linux_*`): keys at the top level
    /// (or, if the file has one, under the program's key); only a missing
    /// interval means 300 seconds.
    Linux,
}

/// The Python interval's default.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

fn load_os_autonomousd(doc: &mut Document) -> Option<PollerSettings> {
    load(doc, OS_AUTONOMOUSD, Layout::Os)
}

fn load_linux_autonomousd(doc: &mut Document) -> Option<PollerSettings> {
    load(doc, LINUX_AUTONOMOUSD, Layout::Linux)
}

fn load(doc: &mut Document, program: &str, layout: Layout) -> Option<PollerSettings> {
    let (path, section) = python_section(doc, program, layout)?;
    for key in section.keys() {
        let name = key.as_str().unwrap_or_default();
        if name != "polling_interval" && !(layout == Layout::Linux && name == program) {
            warn(
                doc,
                &path.key(name),
                "not a setting of the Python agent's autonomous daemon; ignored",
            );
        }
    }
    let interval = python_interval(doc, &path, &section, layout)?;
    Some(PollerSettings {
        name: program.to_owned(),
        agent_program: program.to_owned(),
        polling_interval: interval,
        metadata: Vec::new(),
        kind: PollerKind::Os(OsSettings::default()),
    })
}

/// Logs a problem the Python agent had too, with where it is written.
pub(crate) fn warn(doc: &Document, path: &YamlPath, message: &str) {
    let at = match doc.position(path) {
        Some((line, column)) => format!("{}:{line}:{column}", doc.file.display()),
        None => doc.file.display().to_string(),
    };
    tracing::warn!(file = %doc.file.display(), "{at}: {path}: {message}");
}

/// The keys of `program`'s settings in a Python OS agent's file laid out
/// as `layout` says, and where they are. A file that is not a mapping, or
/// whose program key holds something else than a mapping, is an error (the
/// Python agent died on both).
pub fn python_section(
    doc: &mut Document,
    program: &str,
    layout: Layout,
) -> Option<(YamlPath, Mapping)> {
    let root = doc.root.clone();
    let Value::Mapping(top) = &root else {
        doc.error(
            &YamlPath::root(),
            format!(
                "expected a mapping of keys to values, found {} (the Python agent refuses this file too)",
                describe(&root)
            ),
        );
        return None;
    };
    let path = YamlPath::root().key(program);
    match (top.get(program), layout) {
        (Some(Value::Mapping(section)), _) => Some((path, section.clone())),
        (None | Some(Value::Null), Layout::Os) => Some((path, Mapping::new())),
        (None, Layout::Linux) => Some((YamlPath::root(), top.clone())),
        (Some(other), _) => {
            doc.error(
                &path,
                format!(
                    "expected a mapping of the agent's settings, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// `polling_interval` of a Python OS agent's `section` (at `path`) by the
/// rules of `layout`: whole seconds of the absolute value, from 1 to 86400.
pub fn python_interval(
    doc: &mut Document,
    path: &YamlPath,
    section: &Mapping,
    layout: Layout,
) -> Option<Duration> {
    let at = path.key("polling_interval");
    let value = section.get("polling_interval");
    let seconds: f64 = match (value, layout) {
        (None, _) => return Some(DEFAULT_INTERVAL),
        (Some(Value::Null), Layout::Os) => return Some(DEFAULT_INTERVAL),
        (Some(Value::Null), Layout::Linux) => {
            warn(
                doc,
                &at,
                "empty: the Python agent dies on this; read as the default, 300 seconds",
            );
            return Some(DEFAULT_INTERVAL);
        }
        (Some(Value::Bool(flag)), _) => {
            if *flag {
                1.0
            } else if layout == Layout::Os {
                return Some(DEFAULT_INTERVAL);
            } else {
                0.0
            }
        }
        (Some(Value::Number(n)), _) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if n == 0.0 && layout == Layout::Os {
                return Some(DEFAULT_INTERVAL);
            }
            n
        }
        (Some(Value::String(text)), _) => {
            let text = text.trim();
            if text.is_empty() && layout == Layout::Os {
                return Some(DEFAULT_INTERVAL);
            }
            match (text.parse::<i64>(), text.parse::<f64>()) {
                (Ok(n), _) => n as f64,
                (Err(_), Ok(n)) if n.is_finite() => {
                    warn(
                        doc,
                        &at,
                        &format!("{text:?} is not a whole number: the Python agent dies on this; read as {} seconds", n.trunc().abs()),
                    );
                    n
                }
                _ => f64::NAN,
            }
        }
        (Some(other), _) => {
            doc.error(
                &at,
                format!(
                    "expected a number of seconds, e.g. 300, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    let seconds = seconds.trunc().abs();
    if seconds == 0.0 {
        doc.error(
            &at,
            "0 seconds: the Python agent never posts with it; give the interval in seconds, e.g. 300",
        );
        return None;
    }
    if !(1.0..=86_400.0).contains(&seconds) {
        doc.error(
            &at,
            "expected a whole number of seconds from 1 to 86400, e.g. 300",
        );
        return None;
    }
    Some(Duration::from_secs(seconds as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(yaml: &str, program: &str, layout: Layout) -> Result<PollerSettings, Vec<String>> {
        let mut doc = Document::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let loaded = load(&mut doc, program, layout);
        let errors: Vec<String> = doc
            .into_errors()
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        match loaded {
            Some(settings) if errors.is_empty() => Ok(settings),
            _ => Err(errors),
        }
    }

    fn os_interval(yaml: &str) -> Result<u64, Vec<String>> {
        load_text(yaml, OS_AUTONOMOUSD, Layout::Os).map(|s| s.polling_interval.as_secs())
    }

    fn linux_interval(yaml: &str) -> Result<u64, Vec<String>> {
        load_text(yaml, LINUX_AUTONOMOUSD, Layout::Linux).map(|s| s.polling_interval.as_secs())
    }

    #[test]
    fn the_os_file_polls_as_its_program_every_interval_by_the_python_rules() {
        let settings = load_text(
            "pattoo_agent_os_autonomousd:\n    polling_interval: 60\n",
            OS_AUTONOMOUSD,
            Layout::Os,
        )
        .unwrap();
        assert_eq!(settings.name, OS_AUTONOMOUSD);
        assert_eq!(settings.agent_program, OS_AUTONOMOUSD);
        assert_eq!(settings.polling_interval, Duration::from_secs(60));
        assert_eq!(settings.kind, PollerKind::Os(OsSettings::default()));
        let under = |value: &str| os_interval(&format!("pattoo_agent_os_autonomousd:\n    polling_interval: {value}\n"));
        for (written, seconds) in [
            ("", 300),
            ("0", 300),
            ("\"\"", 300),
            ("2.9", 2),
            ("-60", 60),
            ("\"300\"", 300),
            ("\"2.9\"", 2),
        ] {
            assert_eq!(under(written), Ok(seconds), "{written:?}");
        }
        assert_eq!(os_interval("other: 1\n"), Ok(300), "no section: all defaults");
        assert_eq!(os_interval("pattoo_agent_os_autonomousd:\n"), Ok(300));
        assert_eq!(
            under("0.5").unwrap_err(),
            ["pattoo_agent_os_autonomousd.polling_interval: 0 seconds: the Python agent never posts with it; give the interval in seconds, e.g. 300"]
        );
        assert!(under("[1]").is_err());
        assert!(under("\"soon\"").is_err());
    }

    #[test]
    fn files_the_python_agent_refuses_are_errors() {
        assert_eq!(
            os_interval("").unwrap_err(),
            [": expected a mapping of keys to values, found nothing (the Python agent refuses this file too)"]
        );
        assert_eq!(
            os_interval("pattoo_agent_os_autonomousd: [1]\n").unwrap_err(),
            ["pattoo_agent_os_autonomousd: expected a mapping of the agent's settings, found a list"]
        );
    }

    #[test]
    fn the_linux_file_is_flat_and_only_a_missing_interval_is_300() {
        assert_eq!(linux_interval("polling_interval: 30\n"), Ok(30));
        assert_eq!(linux_interval("{}\n"), Ok(300));
        assert_eq!(linux_interval("polling_interval:\n"), Ok(300));
        assert_eq!(
            linux_interval("pattoo_agent_linux_autonomousd:\n  polling_interval: 45\n"),
            Ok(45)
        );
        assert!(linux_interval("polling_interval: 0\n").is_err());
        let settings = load_text("{}\n", LINUX_AUTONOMOUSD, Layout::Linux).unwrap();
        assert_eq!(settings.agent_program, LINUX_AUTONOMOUSD);
    }
}
