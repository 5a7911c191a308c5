//! The `delivery:` and `cache:` sections of `pattoo_agentd.yaml`, and where
//! the server is (`pattoo_agent_api:`). The configuration loader reads them
//! through here; delivery imports nothing from it.
//!
//! ```yaml
//! pattoo_agentd:
//!   delivery:
//!     timeout_ms: 5000          # per request, connection included
//!     scheme: https             # http (default) or https
//!     ca_file: /etc/pattoo/ca.pem
//!     client_certificate: /etc/pattoo/agent.pem   # with client_key
//!     client_key: /etc/pattoo/agent.key
//!     retry_initial_ms: 1000    # first wait after the server failed
//!     retry_max_ms: 30000       # longest wait between attempts
//!     replay_per_second: 1000   # cached bodies sent per second at most
//!     max_body_bytes: 524288    # larger polls are split into several posts
//!     encryption: openpgp       # none (default): plain /receive
//!   cache:
//!     max_bytes: 536870912
//!     max_age: 7d
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::yaml::{expand_home, Document, YamlPath};

/// Where the pattoo agent API listens: the `pattoo_agent_api:` section of
/// `pattoo.yaml` or `pattoo_agent.yaml`, read with those files by
/// [`crate::config`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// A host name, an IPv4 literal or an IPv6 literal (without brackets).
    pub ip_address: String,
    pub ip_bind_port: u16,
}

/// How the pattoo server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Whether bodies go through pattoo's encrypted exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Plain `POST /receive/{agent_id}`.
    #[default]
    None,
    /// `/key`, `/validation`, `/encrypted` with OpenPGP, as
    /// pattoo-agent-linux's autonomous agent posts.
    OpenPgp,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::None => "none",
            Encryption::OpenPgp => "openpgp",
        }
    }
}

/// How bodies are posted to the pattoo server.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Per request, connection included.
    pub timeout: Duration,
    pub scheme: Scheme,
    /// Trust anchors for an HTTPS server, PEM; adds to the built-in ones.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key, PEM, for servers that ask.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate. Only ever set by name; warned about
    /// at every start.
    pub tls_insecure_skip_verify: bool,
    /// The first wait after the server failed; doubled (with jitter) after
    /// each further failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Cached bodies sent per second at most, so a long outage does not end
    /// in a flood.
    pub replay_per_second: u32,
    /// A poll whose body would be larger is split by target (and a target
    /// by its datapoints) into several posts, so a proxy's size limit in
    /// front of the server (nginx: 1 MB by default) does not refuse it.
    pub max_body_bytes: usize,
    pub encryption: Encryption,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_REPLAY_PER_SECOND: u32 = 1000;
/// Half of nginx's default `client_max_body_size`, leaving room for the
/// proxies people put in front of pattoo.
pub const DEFAULT_MAX_BODY_BYTES: usize = 512 * 1024;
/// The smallest limit: a body of one datapoint with a little metadata.
pub const MIN_MAX_BODY_BYTES: u64 = 4096;

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: DEFAULT_TIMEOUT,
            scheme: Scheme::Http,
            ca_file: None,
            client_certificate: None,
            tls_insecure_skip_verify: false,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            replay_per_second: DEFAULT_REPLAY_PER_SECOND,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            encryption: Encryption::None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    timeout_ms: Option<u64>,
    scheme: Option<String>,
    ca_file: Option<String>,
    client_certificate: Option<String>,
    client_key: Option<String>,
    tls_insecure_skip_verify: Option<bool>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    replay_per_second: Option<u32>,
    max_body_bytes: Option<u64>,
    encryption: Option<String>,
}

fn positive_ms(
    doc: &mut Document,
    path: &YamlPath,
    key: &str,
    ms: Option<u64>,
) -> Option<Duration> {
    match ms {
        Some(0) => {
            doc.error(&path.key(key), "must be more than 0");
            None
        }
        Some(ms) if ms > crate::yaml::MAX_MS => {
            doc.error(
                &path.key(key),
                format!(
                    "{ms} is out of range: expected 1 to {} (a day)",
                    crate::yaml::MAX_MS
                ),
            );
            None
        }
        other => other.map(Duration::from_millis),
    }
}

impl DeliverySettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawDelivery = doc.deserialize(path, value)?;
        let mut settings = DeliverySettings::default();
        let errors_before = doc.error_count();
        if let Some(timeout) = positive_ms(doc, path, "timeout_ms", raw.timeout_ms) {
            settings.timeout = timeout;
        }
        if let Some(initial) = positive_ms(doc, path, "retry_initial_ms", raw.retry_initial_ms) {
            settings.retry_initial = initial;
        }
        if let Some(max) = positive_ms(doc, path, "retry_max_ms", raw.retry_max_ms) {
            settings.retry_max = max;
        }
        if settings.retry_max < settings.retry_initial {
            doc.error(
                &path.key("retry_max_ms"),
                "must be at least retry_initial_ms",
            );
        }
        match raw.replay_per_second {
            Some(0) => doc.error(
                &path.key("replay_per_second"),
                "must be more than 0, or cached bodies would never be sent",
            ),
            Some(rate) => settings.replay_per_second = rate,
            None => {}
        }
        match raw.max_body_bytes {
            None => {}
            Some(bytes) if (MIN_MAX_BODY_BYTES..=u32::MAX as u64).contains(&bytes) => {
                settings.max_body_bytes = bytes as usize;
            }
            Some(bytes) => doc.error(
                &path.key("max_body_bytes"),
                format!(
                    "{bytes} is out of range: expected {MIN_MAX_BODY_BYTES} to {} bytes",
                    u32::MAX
                ),
            ),
        }
        match raw.scheme.as_deref().map(str::trim) {
            None | Some("http") => {}
            Some("https") => settings.scheme = Scheme::Https,
            Some(other) => doc.error(
                &path.key("scheme"),
                format!("unknown scheme `{other}`: expected http or https"),
            ),
        }
        match raw.encryption.as_deref().map(str::trim) {
            None | Some("none") => {}
            Some("openpgp") if cfg!(feature = "openpgp") => {
                settings.encryption = Encryption::OpenPgp
            }
            Some("openpgp") => doc.error(
                &path.key("encryption"),
                "this build has no OpenPGP; rebuild with --features openpgp",
            ),
            Some(other) => doc.error(
                &path.key("encryption"),
                format!("unknown encryption `{other}`: expected none or openpgp"),
            ),
        }
        settings.ca_file = raw.ca_file.as_deref().map(expand_home);
        match (raw.client_certificate, raw.client_key) {
            (Some(certificate), Some(key)) => {
                settings.client_certificate = Some((expand_home(&certificate), expand_home(&key)))
            }
            (None, None) => {}
            (Some(_), None) => doc.error(
                &path.key("client_certificate"),
                "needs client_key too: the file holding the certificate's private key",
            ),
            (None, Some(_)) => doc.error(
                &path.key("client_key"),
                "needs client_certificate too: the file holding the certificate chain",
            ),
        }
        settings.tls_insecure_skip_verify = raw.tls_insecure_skip_verify.unwrap_or(false);
        if settings.scheme == Scheme::Http
            && (settings.ca_file.is_some()
                || settings.client_certificate.is_some()
                || settings.tls_insecure_skip_verify)
        {
            doc.error(
                &path.key("scheme"),
                "TLS settings are given but scheme is http; set `scheme: https`",
            );
        }
        (doc.error_count() == errors_before).then_some(settings)
    }
}

/// Bounds on the on-disk cache of undelivered bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Total size of all cached files; past it the oldest are dropped.
    pub max_bytes: u64,
    /// Cached bodies older than this (by the timestamp in the file name)
    /// are dropped.
    pub max_age: Duration,
}

pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// The largest cache: 1 PiB, far past any disk, and far from overflowing
/// the byte counts it is added to.
pub const MAX_MAX_BYTES: u64 = 1 << 50;
/// The longest `max_age` (and `cache purge --older-than`): 100 years. A
/// longer one is a typo, and in milliseconds it may not fit 64 bits.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_bytes: Option<u64>,
    max_age: Option<String>,
}

impl CacheSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawCache = doc.deserialize(path, value)?;
        let mut settings = CacheSettings::default();
        let errors_before = doc.error_count();
        match raw.max_bytes {
            Some(0) => doc.error(
                &path.key("max_bytes"),
                "must be more than 0, or nothing could be cached",
            ),
            Some(bytes) if bytes > MAX_MAX_BYTES => doc.error(
                &path.key("max_bytes"),
                format!("{bytes} is out of range: expected 1 to {MAX_MAX_BYTES}"),
            ),
            Some(bytes) => settings.max_bytes = bytes,
            None => {}
        }
        if let Some(text) = raw.max_age {
            match parse_age(&text) {
                Ok(age) if !age.is_zero() => settings.max_age = age,
                Ok(_) => doc.error(&path.key("max_age"), "must be more than 0"),
                Err(error) => doc.error(
                    &path.key("max_age"),
                    format!("expected a duration such as 12h or 7d: {error}"),
                ),
            }
        }
        (doc.error_count() == errors_before).then_some(settings)
    }
}

/// A duration such as `7d` or `12h 30m`, at most [`MAX_MAX_AGE`].
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text.trim()).map_err(|error| error.to_string())?;
    if age > MAX_MAX_AGE {
        return Err(format!("{} is longer than 100 years (36500d)", text.trim()));
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse_delivery(text: &str) -> Result<DeliverySettings, Vec<String>> {
        let mut doc = Document::parse(Path::new("t.yaml"), text).unwrap();
        let root = doc.root.clone();
        let parsed = DeliverySettings::parse(&mut doc, &YamlPath::root(), &root);
        let errors: Vec<String> = doc.into_errors().iter().map(|e| e.to_string()).collect();
        parsed.filter(|_| errors.is_empty()).ok_or(errors)
    }

    fn parse_cache(text: &str) -> Result<CacheSettings, Vec<String>> {
        let mut doc = Document::parse(Path::new("t.yaml"), text).unwrap();
        let root = doc.root.clone();
        let parsed = CacheSettings::parse(&mut doc, &YamlPath::root(), &root);
        let errors: Vec<String> = doc.into_errors().iter().map(|e| e.to_string()).collect();
        parsed.filter(|_| errors.is_empty()).ok_or(errors)
    }

    #[test]
    fn delivery_settings_read_tls_and_retry_keys() {
        let settings = parse_delivery(
            "timeout_ms: 2500\nscheme: https\nca_file: /etc/ca.pem\nclient_certificate: /c.pem\nclient_key: /k.pem\nretry_max_ms: 5000\nreplay_per_second: 50\n",
        )
        .unwrap();
        assert_eq!(settings.timeout, Duration::from_millis(2500));
        assert_eq!(settings.scheme, Scheme::Https);
        assert_eq!(settings.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            settings.client_certificate,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        assert_eq!(settings.retry_max, Duration::from_secs(5));
        assert_eq!(settings.replay_per_second, 50);
        assert!(!settings.tls_insecure_skip_verify);
        assert_eq!(settings.encryption, Encryption::None);
        let encrypted = parse_delivery("encryption: openpgp\n");
        if cfg!(feature = "openpgp") {
            assert_eq!(encrypted.unwrap().encryption, Encryption::OpenPgp);
        } else {
            assert!(encrypted.unwrap_err()[0].contains("--features openpgp"));
        }
        let errors = parse_delivery("encryption: gpg\n").unwrap_err().join("\n");
        assert!(errors.contains("expected none or openpgp"), "{errors}");
    }

    #[test]
    fn delivery_settings_report_every_mistake_at_once() {
        let errors =
            parse_delivery("timeout_ms: 0\nscheme: ftp\nclient_key: /k.pem\n").unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("timeout_ms: must be more than 0"), "{all}");
        assert!(all.contains("unknown scheme `ftp`"), "{all}");
        assert!(all.contains("needs client_certificate too"), "{all}");
        let typo = parse_delivery("retry: 3\n").unwrap_err().join("\n");
        assert!(typo.contains("unknown field `retry`"), "{typo}");
    }

    #[test]
    fn cache_settings_read_human_durations_and_refuse_nonsense() {
        let settings = parse_cache("max_bytes: 1048576\nmax_age: 2d 12h\n").unwrap();
        assert_eq!(settings.max_bytes, 1_048_576);
        assert_eq!(settings.max_age, Duration::from_secs(60 * 3600));
        assert_eq!(parse_cache("{}").unwrap(), CacheSettings::default());
        let errors = parse_cache("max_bytes: 0\nmax_age: soon\n").unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
