//! Settings of a `type: http` poller.
//!
//! ```yaml
//! - name: quotes
//!   type: http
//!   urls: [https://api.example.com/v1/quotes]   # one or more, polled concurrently
//!   max_concurrent_targets: 16   # URLs fetched at once
//!   method: GET                  # or POST
//!   headers: {Accept: application/json}
//!   query: {symbols: ABC}
//!   body: '{"q": 1}'             # POST only
//!   auth:
//!     bearer: {file: /etc/pattoo/quotes.token}  # or {env: QUOTES_TOKEN}
//!     # basic: {username: pattoo, password: {env: QUOTES_PASSWORD}}
//!   tls:
//!     ca_file: /etc/pattoo/ca.pem
//!     client_cert_file: /etc/pattoo/client.pem
//!     client_key_file: /etc/pattoo/client.key
//!     danger_accept_invalid_certs: false   # logs a warning at every start
//!   timeout_ms: 10000
//!   max_response_bytes: 4194304
//!   max_redirects: 5             # 0: redirects are not followed
//!   retries: 0                   # more attempts after a failure or a 5xx
//!   retry_backoff_ms: 500        # doubled after each retry
//!   measurements: true           # response_time_ms, http_status, body_bytes, up
//!   format: json                 # optional when measurements is true
//!   target: quotes-api           # default: each URL's host
//! ```
//!
//! Secrets are named here, never written here: they are read from their
//! file or variable when the poller is built.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_norway::Value;

use crate::formats::FormatSettings;
use crate::secret::{self, SecretSource};
use crate::yaml::describe;
use crate::yaml::{
    yaml_number_to_python, ByteLimit, Count, Document, DurationMs, Fields, Retries, YamlPath,
};

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub urls: Vec<Url>,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub query: Vec<(String, String)>,
    pub body: Option<String>,
    pub auth: Option<Auth>,
    pub tls: TlsSettings,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// URLs fetched at once; the rest wait for one to finish.
    pub max_concurrent_targets: usize,
    pub max_redirects: usize,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub measurements: bool,
    pub format: Option<FormatSettings>,
    pub target: Option<String>,
    /// The metadata key measurements carry the URL under (`url` unless
    /// `url_metadata` names another); `None` with `url_metadata: false`.
    pub url_metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Bearer(SecretSource),
    Basic {
        username: String,
        password: SecretSource,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Trusted in addition to the system's roots.
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Accepts any certificate: for tests and lab devices only.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 16;
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// More retries than this within one polling interval only hide an outage.
pub const MAX_RETRIES: u32 = 5;

// serde_norway reads enums only from YAML tags (`!bearer`); plain
// mappings with one key are friendlier, so these are checked by hand.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    /// Read by [`secret::parse`], which says what a secret must look like.
    bearer: Option<Value>,
    basic: Option<RawBasic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasic {
    username: String,
    password: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    urls: Vec<String>,
    method: Option<String>,
    headers: Option<Value>,
    query: Option<Value>,
    body: Option<String>,
    auth: Option<RawAuth>,
    #[serde(default)]
    tls: TlsSettings,
    timeout_ms: Option<u64>,
    max_response_bytes: Option<usize>,
    max_concurrent_targets: Option<u64>,
    max_redirects: Option<usize>,
    retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    #[serde(default)]
    measurements: bool,
    format: Option<Value>,
    target: Option<String>,
    url_metadata: Option<Value>,
}

impl HttpSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawHttp = doc.deserialize(path, value)?;
        let mut ok = true;
        if raw.urls.is_empty() {
            doc.error(
                &path.key("urls"),
                "list at least one URL, e.g. [https://example.com/metrics]",
            );
            ok = false;
        }
        let mut urls = Vec::new();
        for (i, text) in raw.urls.iter().enumerate() {
            let at = path.key("urls").index(i);
            match Url::parse(text.trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    urls.push(url)
                }
                Ok(_) => {
                    doc.error(
                        &at,
                        format!("expected an http:// or https:// URL with a host, found {text:?}"),
                    );
                    ok = false;
                }
                Err(err) => {
                    doc.error(&at, format!("not a URL ({err}): {text:?}"));
                    ok = false;
                }
            }
        }
        let method = match raw
            .method
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("GET") => Method::GET,
            Some("POST") => Method::POST,
            Some(other) => {
                doc.error(
                    &path.key("method"),
                    format!("expected GET or POST, found {other:?}"),
                );
                ok = false;
                Method::GET
            }
        };
        if raw.body.is_some() && method != Method::POST {
            doc.error(&path.key("body"), "a body is sent only with `method: POST`");
            ok = false;
        }
        let mut headers = Vec::new();
        for (name, value) in string_pairs(doc, &path.key("headers"), raw.headers.as_ref(), &mut ok)
        {
            let at = path.key("headers").key(&name);
            if name.eq_ignore_ascii_case("authorization") {
                doc.error(&at, "put credentials under `auth:`, which reads them from a file or the environment instead of the configuration");
                ok = false;
                continue;
            }
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(name), Ok(value)) => headers.push((name, value)),
                (Err(_), _) => {
                    doc.error(&at, format!("{name:?} is not a valid header name"));
                    ok = false;
                }
                (_, Err(_)) => {
                    doc.error(&at, "header values must be visible ASCII text");
                    ok = false;
                }
            }
        }
        let query = string_pairs(doc, &path.key("query"), raw.query.as_ref(), &mut ok);
        let auth_path = path.key("auth");
        let errors_before_auth = doc.error_count();
        let auth_given = raw.auth.is_some();
        let auth = match raw.auth {
            None => None,
            Some(RawAuth {
                bearer: Some(token),
                basic: None,
            }) => secret::parse(doc, &auth_path.key("bearer"), &token).map(Auth::Bearer),
            Some(RawAuth {
                bearer: None,
                basic: Some(basic),
            }) => secret::parse(
                doc,
                &auth_path.key("basic").key("password"),
                &basic.password,
            )
            .map(|password| Auth::Basic {
                username: basic.username,
                password,
            }),
            Some(RawAuth {
                bearer: Some(_),
                basic: Some(_),
            }) => {
                doc.error(&auth_path, "give one of `bearer:` or `basic:`, not both");
                None
            }
            Some(RawAuth {
                bearer: None,
                basic: None,
            }) => {
                // `basic:` may have been there and wrong: that was said.
                if doc.error_count() == errors_before_auth {
                    doc.error(&auth_path, "expected one of `bearer:` or `basic:`");
                }
                None
            }
        };
        if auth_given && auth.is_none() {
            ok = false;
        }
        if raw.tls.client_cert_file.is_some() != raw.tls.client_key_file.is_some() {
            doc.error(
                &path.key("tls"),
                "a client certificate needs both client_cert_file and client_key_file",
            );
            ok = false;
        }
        let mut fields = Fields::new(path);
        let timeout = fields.read(doc, "timeout_ms", raw.timeout_ms, DurationMs::or(DEFAULT_TIMEOUT));
        let max_response_bytes = fields.read(
            doc,
            "max_response_bytes",
            raw.max_response_bytes,
            ByteLimit::or(DEFAULT_MAX_RESPONSE_BYTES),
        );
        let max_concurrent_targets = fields.read(
            doc,
            "max_concurrent_targets",
            raw.max_concurrent_targets,
            Count::new(DEFAULT_MAX_CONCURRENT_TARGETS as u64, 65_535),
        ) as usize;
        let retry_backoff = fields.read(
            doc,
            "retry_backoff_ms",
            raw.retry_backoff_ms,
            DurationMs::or(DEFAULT_RETRY_BACKOFF),
        );
        let retries = fields.read(
            doc,
            "retries",
            raw.retries,
            Retries {
                default: 0,
                max: MAX_RETRIES,
                why: "retries must fit in the polling interval",
            },
        );
        ok &= fields.ok();
        let format = match &raw.format {
            None => None,
            Some(value) => match FormatSettings::parse(doc, &path.key("format"), value) {
                Some(format) => Some(format),
                None => {
                    ok = false;
                    None
                }
            },
        };
        if raw.format.is_none() && !raw.measurements {
            doc.error(
                path,
                "say what to read: a `format:` for the response body, `measurements: true` for response time, status, size and up, or both",
            );
            ok = false;
        }
        let url_metadata = match &raw.url_metadata {
            None => Some("url".to_owned()),
            Some(Value::Bool(false)) => None,
            Some(Value::String(key)) => {
                if crate::yaml::check_user_key(doc, &path.key("url_metadata"), key) {
                    Some(key.trim().to_owned())
                } else {
                    ok = false;
                    None
                }
            }
            Some(other) => {
                doc.error(
                    &path.key("url_metadata"),
                    format!(
                        "expected the metadata key to carry the URL under, or false for none, found {}",
                        describe(other)
                    ),
                );
                ok = false;
                None
            }
        };
        ok.then(|| HttpSettings {
            urls,
            method,
            headers,
            query,
            body: raw.body,
            auth,
            tls: raw.tls,
            timeout,
            max_response_bytes,
            max_concurrent_targets,
            max_redirects: raw.max_redirects.unwrap_or(DEFAULT_MAX_REDIRECTS),
            retries,
            retry_backoff,
            measurements: raw.measurements,
            format,
            target: raw.target.filter(|t| !t.trim().is_empty()),
            url_metadata,
        })
    }

    pub fn describe(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(super::display_url).collect();
        let mut reads = Vec::new();
        if let Some(format) = &self.format {
            reads.push(format.name());
        }
        if self.measurements {
            reads.push("measurements");
        }
        format!(
            "{} {}, reads {}",
            self.method,
            urls.join(", "),
            reads.join(" and ")
        )
    }
}

/// A mapping of names to text (numbers written as Python would), in the
/// order written.
fn string_pairs(
    doc: &mut Document,
    path: &YamlPath,
    value: Option<&Value>,
    ok: &mut bool,
) -> Vec<(String, String)> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Value::Mapping(map) = value else {
        if !matches!(value, Value::Null) {
            doc.error(
                path,
                format!(
                    "expected a mapping of names to values, found {}",
                    describe(value)
                ),
            );
            *ok = false;
        }
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            doc.error(path, "names must be text");
            *ok = false;
            continue;
        };
        match value {
            Value::String(text) => pairs.push((key.to_owned(), text.clone())),
            Value::Number(n) => pairs.push((key.to_owned(), yaml_number_to_python(n))),
            Value::Bool(b) => pairs.push((key.to_owned(), b.to_string())),
            other => {
                doc.error(
                    &path.key(key),
                    format!("expected text, found {}", describe(other)),
                );
                *ok = false;
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error found in a poller entry, as `path: message`.
    fn errors(yaml: &str) -> Vec<String> {
        let mut doc = Document::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let root = doc.root.clone();
        let parsed = HttpSettings::parse(&mut doc, &YamlPath::root(), &root);
        let errors: Vec<String> = doc
            .into_errors()
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        assert_eq!(parsed.is_some(), errors.is_empty(), "{errors:?}");
        errors
    }

    #[test]
    fn reads_every_option() {
        let mut doc = Document::parse(
            std::path::Path::new("t.yaml"),
            "urls: [https://example.com/a]\nmethod: post\nbody: '{}'\nheaders: {Accept: text/plain}\nquery: {n: 5}\nauth: {basic: {username: u, password: {env: PATH}}}\ntimeout_ms: 100\nmax_redirects: 0\nmeasurements: true\n",
        )
        .unwrap();
        let root = doc.root.clone();
        let settings = HttpSettings::parse(&mut doc, &YamlPath::root(), &root).unwrap();
        assert_eq!(settings.method, Method::POST);
        assert_eq!(settings.query, [("n".to_owned(), "5".to_owned())]);
        assert_eq!(
            settings.auth,
            Some(Auth::Basic {
                username: "u".into(),
                password: SecretSource::Env("PATH".into())
            })
        );
        assert_eq!(settings.timeout, Duration::from_millis(100));
        assert_eq!(settings.max_redirects, 0);
        assert_eq!(settings.format, None);
    }

    #[test]
    fn reports_every_mistake_at_once() {
        assert_eq!(
            errors(
                "urls: [ftp://example.com/x, 'not a url']\nmethod: PUT\nbody: x\nheaders: {Authorization: Bearer abc}\ntls: {client_cert_file: /c.pem}\nretries: 9\n"
            ),
            // The missing `format:` belongs to the poller as a whole (the
            // document's start); the rest in the order of their lines.
            [
                ": say what to read: a `format:` for the response body, `measurements: true` for response time, status, size and up, or both",
                "urls[0]: expected an http:// or https:// URL with a host, found \"ftp://example.com/x\"",
                "urls[1]: not a URL (relative URL without a base): \"not a url\"",
                "method: expected GET or POST, found \"PUT\"",
                "body: a body is sent only with `method: POST`",
                "headers.Authorization: put credentials under `auth:`, which reads them from a file or the environment instead of the configuration",
                "tls: a client certificate needs both client_cert_file and client_key_file",
                "retries: at most 5: retries must fit in the polling interval",
            ]
        );
    }

    #[test]
    fn secrets_come_from_exactly_one_absolute_file_or_variable() {
        assert_eq!(
            errors("urls: [http://h/]\nmeasurements: true\nauth: {bearer: {file: token.txt}}\n"),
            ["auth.bearer.file: expected an absolute path, found \"token.txt\""]
        );
        assert_eq!(
            errors("urls: [http://h/]\nmeasurements: true\nauth: {bearer: {file: /t, env: T}}\n"),
            ["auth.bearer: expected one of `file:` (a file holding the secret) or `env:` (a variable holding it)"]
        );
        assert_eq!(
            errors("urls: [http://h/]\nmeasurements: true\nauth: {bearer: {env: T}, basic: {username: u, password: {env: P}}}\n"),
            ["auth: give one of `bearer:` or `basic:`, not both"]
        );
        assert_eq!(
            errors("urls: [http://h/]\nmeasurements: true\nauth: {bearer: 5}\n"),
            ["auth.bearer: expected where to read the secret, `{file: /path/to/secret}` or `{env: VARIABLE}`, found a number"]
        );
        assert_eq!(
            errors("urls: [http://h/]\nmeasurements: true\nauth: {token: x}\n"),
            [
                "auth: expected one of `bearer:` or `basic:`",
                "auth.token: unknown field `token`, expected `bearer` or `basic`"
            ]
        );
    }

    #[test]
    fn format_options_are_checked_with_the_poller() {
        assert_eq!(
            errors("urls: [http://h/]\nformat: {type: value, key: pattoo_up}\n"),
            ["format.key: key \"pattoo_up\" contains `pattoo`, which pattoo reserves for its own keys; choose another name"]
        );
    }
}
