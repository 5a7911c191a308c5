//! Secrets named in the configuration: a password, token, community or
//! passphrase is never written there, only where it is read from,
//! `{file: /absolute/path}` or `{env: VARIABLE}`. (The Python agents'
//! files, read for compatibility, write them inline: [`SecretSource::Inline`].)
//!
//! A leaf below the pollers (it imports only [`crate::yaml`]), so every
//! poller kind reads and checks secrets the same way, with the same
//! messages:
//! - [`parse`] reads the source from the YAML and checks, while the
//!   configuration is validated, that it holds a secret now: `check` and a
//!   reload catch a missing variable or file, rather than the poller
//!   failing to start after the configuration was accepted.
//! - [`SecretSource::read`] reads the text when the poller is built.
//!   Surrounding whitespace (a file's final newline) is not part of it.
//! - A [`Secret`]'s `Debug` prints `[redacted]`; a source's `Display` names
//!   only where it is read from. Neither ever shows the secret.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value;

use crate::yaml::{describe, Document, YamlPath};

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    /// Written in a Python agent's file, which has no other way; taken as
    /// written.
    Inline(Secret),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "from {}", path.display()),
            SecretSource::Env(name) => write!(f, "from ${name}"),
            SecretSource::Inline(_) => f.write_str("(hidden, in the file)"),
        }
    }
}

/// A secret's text, read from its source.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl Secret {
    /// The text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a source holds no secret; each says where to look.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret file {} is empty", path.display())]
    EmptyFile { path: PathBuf },
    #[error("the environment variable {name} is not set; set it where the agent runs (under systemd: Environment= or EnvironmentFile= in a drop-in)")]
    Unset { name: String },
    #[error("the environment variable {name} is not valid UTF-8")]
    NotUnicode { name: String },
    #[error("the environment variable {name} is empty")]
    EmptyEnv { name: String },
}

impl SecretSource {
    /// Reads the secret, without surrounding whitespace.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let text = match self {
            SecretSource::Inline(secret) => return Ok(secret.clone()),
            SecretSource::File(path) => {
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
            SecretSource::Env(name) => std::env::var(name).map_err(|error| match error {
                std::env::VarError::NotPresent => SecretError::Unset { name: name.clone() },
                std::env::VarError::NotUnicode(_) => SecretError::NotUnicode { name: name.clone() },
            })?,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(match self {
                SecretSource::File(path) => SecretError::EmptyFile { path: path.clone() },
                SecretSource::Env(name) => SecretError::EmptyEnv { name: name.clone() },
                SecretSource::Inline(_) => unreachable!("returned above"),
            });
        }
        Ok(Secret(text.to_owned()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    file: Option<PathBuf>,
    env: Option<String>,
}

/// The source of the secret at `path`, checked to hold one now; `None`
/// after recording every problem in `doc`, located at the `file:` or
/// `env:` key where that is the one at fault, and naming the poller.
pub fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<SecretSource> {
    match value {
        Value::Mapping(_) => {}
        Value::String(_) => {
            doc.error(
                path,
                "secrets are not written in the configuration: put it in a file readable only by the agent ({file: /etc/pattoo/secret}) or an environment variable ({env: SECRET_VARIABLE})",
            );
            return None;
        }
        other => {
            doc.error(
                path,
                format!(
                    "expected where to read the secret, `{{file: /path/to/secret}}` or `{{env: VARIABLE}}`, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    }
    let raw: RawSource = doc.deserialize(path, value)?;
    let (source, at) = match (raw.file, raw.env) {
        (Some(file), None) if file.is_absolute() => (SecretSource::File(file), path.key("file")),
        (Some(file), None) => {
            doc.error(
                &path.key("file"),
                format!(
                    "expected an absolute path, found {:?}",
                    file.display().to_string()
                ),
            );
            return None;
        }
        (None, Some(name)) if !name.is_empty() && !name.contains('=') => {
            (SecretSource::Env(name), path.key("env"))
        }
        (None, Some(name)) => {
            doc.error(
                &path.key("env"),
                format!("{name:?} is not an environment variable name"),
            );
            return None;
        }
        _ => {
            doc.error(
                path,
                "expected one of `file:` (a file holding the secret) or `env:` (a variable holding it)",
            );
            return None;
        }
    };
    match source.read() {
        Ok(_) => Some(source),
        Err(error) => {
            let poller = match &doc.poller {
                Some(name) => format!("poller `{name}`: "),
                None => String::new(),
            };
            doc.error(&at, format!("{poller}{error}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_read_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  hunter2\n").unwrap();
        let source = SecretSource::File(file.clone());
        let secret = source.read().unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(source.to_string(), format!("from {}", file.display()));

        std::fs::write(&file, "\n").unwrap();
        let error = source.read().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("the secret file {} is empty", file.display())
        );
        let error = SecretSource::Env("PATTOO_AGENTD_TEST_UNSET_SECRET".into())
            .read()
            .unwrap_err();
        assert!(
            error.to_string().starts_with(
                "the environment variable PATTOO_AGENTD_TEST_UNSET_SECRET is not set; "
            ),
            "{error}"
        );
    }

    fn parsed(yaml: &str) -> (Option<SecretSource>, Vec<String>) {
        let mut doc = Document::parse(std::path::Path::new("test.yaml"), yaml).unwrap();
        doc.poller = Some("p".into());
        let value = doc.root.clone();
        let source = parse(&mut doc, &YamlPath::root().key("secret"), &value["secret"]);
        let errors = doc.into_errors().iter().map(|e| e.to_string()).collect();
        (source, errors)
    }

    #[test]
    fn a_secret_written_in_the_file_or_a_source_that_holds_none_is_refused_where_it_is() {
        let (source, errors) = parsed("secret: hunter2\n");
        assert_eq!(source, None);
        assert!(errors[0].contains("secrets are not written in the configuration"));
        assert!(!errors[0].contains("hunter2"), "{errors:?}");

        let (_, errors) = parsed("secret: {file: relative/path}\n");
        assert_eq!(
            errors,
            ["test.yaml:1:10: secret.file: expected an absolute path, found \"relative/path\""]
        );

        let (_, errors) = parsed("secret: {env: PATTOO_AGENTD_TEST_UNSET_SECRET}\n");
        assert!(
            errors[0].starts_with("test.yaml:1:10: secret.env: poller `p`: the environment variable PATTOO_AGENTD_TEST_UNSET_SECRET is not set"),
            "{errors:?}"
        );

        let (_, errors) = parsed("secret: {file: /a, env: B}\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("expected one of `file:`"), "{errors:?}");
    }

    #[test]
    fn a_source_that_holds_a_secret_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("community");
        std::fs::write(&file, "public\n").unwrap();
        let (source, errors) = parsed(&format!("secret: {{file: {}}}\n", file.display()));
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(source, Some(SecretSource::File(file)));
    }
}
