//! Settings of a `type: command` poller.
//!
//! ```yaml
//! - name: meter
//!   type: command
//!   command: [/usr/local/bin/read-meter, --json]   # run without a shell
//!   format: datapoints
//!   timeout_ms: 10000          # then SIGTERM to the process group...
//!   kill_grace_ms: 2000        # ...and SIGKILL this long after
//!   max_output_bytes: 1048576  # stdout beyond this fails the poll
//!   working_directory: /var/lib/meter
//!   environment: {METER_PORT: /dev/ttyUSB0}
//!   pass_environment: [LANG]   # names taken from the agent's environment
//!   inherit_environment: false # true passes the whole environment
//!   target: meter-1            # default: this host's name
//! ```
//!
//! `shell: true` runs `command`, then a single string, with `/bin/sh -c`;
//! it is off unless asked for, so arguments are never re-split or expanded
//! by accident.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::formats::FormatSettings;
use crate::yaml::{ByteLimit, Document, DurationMs, Fields, YamlPath};

#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// Program and arguments, run without a shell (`shell: true` gives
    /// `["/bin/sh", "-c", script]`).
    pub argv: Vec<String>,
    pub format: FormatSettings,
    pub timeout: Duration,
    /// How long after SIGTERM the process group gets SIGKILL.
    pub kill_grace: Duration,
    /// Most of stdout that is read; more fails the poll.
    pub max_output_bytes: usize,
    pub working_directory: Option<PathBuf>,
    /// Set for the command, after the inherited or passed variables.
    pub environment: BTreeMap<String, String>,
    /// Variables copied from the agent's environment.
    pub pass_environment: Vec<String>,
    /// Whether the command sees the agent's whole environment.
    pub inherit_environment: bool,
    /// The polled target of datapoints that do not name one; default: the
    /// agent's host name.
    pub target: Option<String>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;
/// The PATH a command gets unless its environment says otherwise: system
/// directories only, never the current directory.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProgram {
    Argv(Vec<String>),
    Script(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    command: RawProgram,
    #[serde(default)]
    shell: bool,
    format: Value,
    timeout_ms: Option<u64>,
    kill_grace_ms: Option<u64>,
    max_output_bytes: Option<usize>,
    working_directory: Option<PathBuf>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    pass_environment: Vec<String>,
    #[serde(default)]
    inherit_environment: bool,
    target: Option<String>,
}

impl CommandSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawCommand = doc.deserialize(path, value)?;
        let mut ok = true;
        let argv = match (raw.command, raw.shell) {
            (RawProgram::Argv(argv), false) => {
                if argv.first().is_none_or(|program| program.trim().is_empty()) {
                    doc.error(
                        &path.key("command"),
                        "must name a program and its arguments, e.g. [\"/usr/local/bin/read-meter\", \"--json\"]",
                    );
                    ok = false;
                }
                argv
            }
            (RawProgram::Script(script), true) if !script.trim().is_empty() => {
                vec!["/bin/sh".to_owned(), "-c".to_owned(), script]
            }
            (RawProgram::Script(_), false) => {
                doc.error(
                    &path.key("command"),
                    "expected a list of program and arguments, e.g. [\"/usr/local/bin/read-meter\", \"--json\"]; a command line as one string needs `shell: true`",
                );
                ok = false;
                Vec::new()
            }
            (_, true) => {
                doc.error(
                    &path.key("command"),
                    "with `shell: true`, expected the shell command line as one string",
                );
                ok = false;
                Vec::new()
            }
        };
        let mut fields = Fields::new(path);
        let timeout = fields.read(doc, "timeout_ms", raw.timeout_ms, DurationMs::or(DEFAULT_TIMEOUT));
        let kill_grace = fields.read(
            doc,
            "kill_grace_ms",
            raw.kill_grace_ms,
            DurationMs::or(DEFAULT_KILL_GRACE),
        );
        let max_output_bytes = fields.read(
            doc,
            "max_output_bytes",
            raw.max_output_bytes,
            ByteLimit::or(DEFAULT_MAX_OUTPUT_BYTES),
        );
        ok &= fields.ok();
        if let Some(dir) = &raw.working_directory {
            if !dir.is_absolute() {
                doc.error(
                    &path.key("working_directory"),
                    format!(
                        "expected an absolute path, found {:?}",
                        dir.display().to_string()
                    ),
                );
                ok = false;
            }
        }
        for (name, at) in raw
            .environment
            .keys()
            .map(|name| (name, path.key("environment").key(name)))
            .chain(
                raw.pass_environment
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (name, path.key("pass_environment").index(i))),
            )
        {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                doc.error(&at, format!("{name:?} is not an environment variable name"));
                ok = false;
            }
        }
        let format = FormatSettings::parse(doc, &path.key("format"), &raw.format);
        (ok && format.is_some()).then(|| CommandSettings {
            argv,
            format: format.expect("checked above"),
            timeout,
            kill_grace,
            max_output_bytes,
            working_directory: raw.working_directory,
            environment: raw.environment,
            pass_environment: raw.pass_environment,
            inherit_environment: raw.inherit_environment,
            target: raw.target.filter(|t| !t.trim().is_empty()),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "runs {:?}, reads {}",
            self.argv.join(" "),
            self.format.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<CommandSettings>, Vec<String>) {
        let mut doc = Document::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let root = doc.root.clone();
        let parsed = CommandSettings::parse(&mut doc, &YamlPath::root(), &root);
        let errors = doc
            .into_errors()
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        (parsed, errors)
    }

    #[test]
    fn a_shell_command_line_must_be_asked_for() {
        let (parsed, errors) = parse("command: who | wc -l\nformat: keyvalue\n");
        assert!(parsed.is_none());
        assert_eq!(
            errors,
            ["command: expected a list of program and arguments, e.g. [\"/usr/local/bin/read-meter\", \"--json\"]; a command line as one string needs `shell: true`"]
        );
        let (parsed, errors) = parse("command: who | wc -l\nshell: true\nformat: keyvalue\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parsed.unwrap().argv, ["/bin/sh", "-c", "who | wc -l"]);
        let (_, errors) = parse("command: [who]\nshell: true\nformat: keyvalue\n");
        assert_eq!(
            errors,
            ["command: with `shell: true`, expected the shell command line as one string"]
        );
    }

    #[test]
    fn reports_every_mistake_at_once() {
        // In the order of the lines they are on.
        let (parsed, errors) = parse(
            "command: []\nformat: nonsense\ntimeout_ms: 0\nworking_directory: relative/dir\nenvironment: {'A=B': x}\n",
        );
        assert!(parsed.is_none());
        assert_eq!(
            errors,
            [
                "command: must name a program and its arguments, e.g. [\"/usr/local/bin/read-meter\", \"--json\"]",
                "format: unknown format `nonsense`: expected one of value, json, keyvalue, prometheus, nagios, datapoints, pattoo",
                "timeout_ms: must be more than 0",
                "working_directory: expected an absolute path, found \"relative/dir\"",
                "environment.A=B: \"A=B\" is not an environment variable name",
            ]
        );
    }

    #[test]
    fn defaults_keep_the_environment_out_and_cap_output_at_1_mib() {
        let (parsed, errors) = parse("command: [/bin/true]\nformat: nagios\n");
        assert!(errors.is_empty(), "{errors:?}");
        let settings = parsed.unwrap();
        assert!(!settings.inherit_environment);
        assert_eq!(settings.max_output_bytes, 1 << 20);
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.kill_grace, DEFAULT_KILL_GRACE);
    }
}
