//! Settings of a `type: command` poller.

use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::config::{Document, YamlPath};
use crate::formats::FormatSettings;

#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// Program and arguments, run without a shell.
    pub argv: Vec<String>,
    pub format: FormatSettings,
    pub timeout: Duration,
    /// The polled target of datapoints that do not name one; default: the
    /// agent's host name.
    pub target: Option<String>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    command: Vec<String>,
    format: Value,
    timeout_ms: Option<u64>,
    target: Option<String>,
}

impl CommandSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawCommand = doc.deserialize(path, value)?;
        let mut ok = true;
        if raw
            .command
            .first()
            .is_none_or(|program| program.trim().is_empty())
        {
            doc.error(
                &path.key("command"),
                "must name a program and its arguments, e.g. [\"/usr/local/bin/read-meter\", \"--json\"]",
            );
            ok = false;
        }
        let timeout = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(0) => {
                doc.error(&path.key("timeout_ms"), "must be more than 0");
                ok = false;
                DEFAULT_TIMEOUT
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let format = FormatSettings::parse(doc, &path.key("format"), &raw.format);
        (ok && format.is_some()).then(|| CommandSettings {
            argv: raw.command,
            format: format.expect("checked above"),
            timeout,
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
