//! Settings of a `type: snmp` poller, validated with every error located
//! (see the module doc of [`super`] for the YAML).

use std::sync::Arc;
use std::time::Duration;

use async_snmp::{AuthProtocol, Oid, PrivProtocol};
use serde::Deserialize;
use serde_norway::Value;

use super::oid::{dotted, oid_from_text};
use crate::model::{DataType, Metadata};
use crate::secret::{self, SecretSource};
use crate::yaml::{
    check_user_key, describe, parse_metadata, parse_naming, Count, Document, DurationMs, Fields,
    Naming, Port, Retries, YamlPath,
};

pub const DEFAULT_PORT: u16 = 161;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRIES: u32 = 1;
/// More retries than this within one polling interval only hide an outage.
pub const MAX_RETRIES: u32 = 5;
/// Net-SNMP's and the Python agents' GETBULK max-repetitions.
pub const DEFAULT_MAX_REPETITIONS: u32 = 25;
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 64;
/// Variables asked for in one GET; the agent's `tooBig` splits it further.
pub const DEFAULT_MAX_OIDS_PER_REQUEST: usize = 32;
/// Rows one walk (or one table column) reads before it is cut: far more
/// than a switch's interfaces, little enough memory (a few MB) that an
/// endless subtree cannot hurt the host.
pub const DEFAULT_MAX_ROWS_PER_WALK: usize = 10_000;
pub const MAX_MAX_ROWS_PER_WALK: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SnmpSettings {
    pub flavour: Flavour,
    pub targets: Vec<TargetSettings>,
    pub timeout: Duration,
    pub retries: u32,
    /// GETBULK rows per request of a first poll (and once a table's size
    /// is not known).
    pub max_repetitions: u32,
    /// Whether the operator set `max_repetitions`: then no request asks
    /// for more rows. Otherwise later polls ask for a table's rows as last
    /// read, up to a few hundred varbinds (see [`super::multiwalk`]).
    pub max_repetitions_set: bool,
    pub max_oids_per_request: usize,
    pub max_concurrent_targets: usize,
    /// Rows a walk reads at most; the rest is cut and logged.
    pub max_rows_per_walk: usize,
    /// How long a poll may take; `None`: the polling interval.
    pub poll_deadline: Option<Duration>,
}

/// What a poll makes of what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `type: snmp`: keys, values and data types as configured.
    Native,
    /// `pattoo_agent_snmpd.yaml`: exactly what the Python agent posts.
    PythonSnmpd,
    /// `pattoo_agent_snmp_ifmibd.yaml`: exactly what the Python agent posts.
    PythonIfMib,
}

/// One device and what to read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    /// `pattoo_agent_polled_target`: the address as written.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The poller's in `type: snmp`; each target's own auth group in the
    /// Python files.
    pub credentials: Credentials,
    /// Shared by every target of a native poller.
    pub reads: Arc<[Read]>,
}

/// How a target is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    V1(SecretSource),
    V2c(SecretSource),
    V3 {
        user: String,
        auth: Option<(AuthProtocol, SecretSource)>,
        privacy: Option<(PrivProtocol, SecretSource)>,
    },
}

impl Credentials {
    pub fn version(&self) -> &'static str {
        match self {
            Credentials::V1(_) => "v1",
            Credentials::V2c(_) => "v2c",
            Credentials::V3 { .. } => "v3",
        }
    }

    /// For `check`: the version and, for v3, the user and protocols; never
    /// a secret.
    pub fn describe(&self) -> String {
        match self {
            Credentials::V1(secret) | Credentials::V2c(secret) => {
                format!("SNMP{} with the community {}", self.version(), secret)
            }
            Credentials::V3 {
                user,
                auth,
                privacy,
            } => {
                let level = match (auth, privacy) {
                    (Some((a, s)), Some((p, t))) => {
                        format!("authPriv ({a}, passphrase {s}; {p}, passphrase {t})")
                    }
                    (Some((a, s)), None) => format!("authNoPriv ({a}, passphrase {s})"),
                    _ => "noAuthNoPriv".to_owned(),
                };
                format!("SNMPv3 user {user:?} {level}")
            }
        }
    }
}

/// One thing read from every target.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// Instance OIDs, fetched with GET in as few requests as fit.
    Get(Vec<Column>),
    /// A subtree: one datapoint per instance, the instance OID as metadata.
    Walk(Column),
    /// Columns of a table: one datapoint per row and value column.
    Table(Table),
    /// The Python snmpd agent's walk of one configured address.
    PythonWalk {
        /// The address as written: the datapoints' key.
        address: String,
        oid: Oid,
        multiplier: f64,
    },
    /// The Python ifmibd agent's nineteen IF-MIB walks.
    PythonIfMib,
}

impl Read {
    /// The subtree this read walks, if it is a walk.
    pub fn subtree(&self) -> Option<&Oid> {
        match self {
            Read::Walk(column) => Some(&column.oid),
            Read::PythonWalk { oid, .. } => Some(oid),
            Read::Get(_) | Read::Table(_) | Read::PythonIfMib => None,
        }
    }
}

/// A value read: where, and how it is posted.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub oid: Oid,
    /// The datapoint key (a template with `{index}` in tables).
    pub key: String,
    /// Read where the device has no `oid` for a row: the 32-bit counter
    /// behind a 64-bit one.
    pub fallback: Option<Oid>,
    pub multiplier: Option<f64>,
    pub offset: Option<f64>,
    pub data_type: Option<DataType>,
    pub metadata: Vec<Metadata>,
    /// Its name and unit for `translations`.
    pub naming: Naming,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Columns of the same row posted as metadata of every value.
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub key: String,
    pub oid: Oid,
    /// False for labels an operator renames without the series changing
    /// (an interface's alias).
    pub update_checksum: bool,
}

impl SnmpSettings {
    /// One line for `check`: targets, version, what is read; no secret.
    /// Targets of one native poller that read different communities each
    /// show their own.
    pub fn describe(&self) -> String {
        let shared = self.flavour == Flavour::Native
            && self
                .targets
                .windows(2)
                .all(|pair| pair[0].credentials == pair[1].credentials);
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                let address = crate::address::host_port(&t.host, t.port);
                if shared {
                    address
                } else {
                    format!("{address} ({})", t.credentials.describe())
                }
            })
            .collect();
        let what = match self.flavour {
            Flavour::PythonIfMib => {
                "the Python ifmibd agent's IF-MIB walks (ifTable and ifXTable)".to_owned()
            }
            Flavour::PythonSnmpd | Flavour::Native => {
                let mut parts = Vec::new();
                let reads = self.targets.first().map(|t| &t.reads[..]).unwrap_or(&[]);
                let gets: usize = reads
                    .iter()
                    .map(|r| match r {
                        Read::Get(columns) => columns.len(),
                        _ => 0,
                    })
                    .sum();
                let walks = reads
                    .iter()
                    .filter(|r| matches!(r, Read::Walk(_) | Read::PythonWalk { .. }))
                    .count();
                if gets > 0 {
                    parts.push(format!("GET of {gets} OID(s)"));
                }
                if walks > 0 {
                    parts.push(format!("{walks} walk(s)"));
                }
                for read in reads {
                    if let Read::Table(table) = read {
                        parts.push(format!(
                            "table {} ({} column(s), {} label(s))",
                            table.name,
                            table.columns.len(),
                            table.labels.len()
                        ));
                    }
                }
                if self.flavour == Flavour::PythonSnmpd {
                    "the Python snmpd agent's walks (per target, as its file lists them)".to_owned()
                } else {
                    parts.join(", ")
                }
            }
        };
        let over = match self.targets.first() {
            Some(target) if shared => format!(" over {}", target.credentials.describe()),
            _ => String::new(),
        };
        format!(
            "reads {what}{over} from {}; timeout {} ms, {} retries",
            targets.join(", "),
            self.timeout.as_millis(),
            self.retries
        )
    }
}

// ---------------------------------------------------------------------------
// `type: snmp` in pattoo_agentd.yaml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnmp {
    targets: Vec<RawTarget>,
    version: Option<Value>,
    /// Read by [`secret::parse`].
    community: Option<Value>,
    user: Option<String>,
    auth: Option<RawProtocol>,
    privacy: Option<RawProtocol>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    max_repetitions: Option<u64>,
    max_oids_per_request: Option<u64>,
    max_concurrent_targets: Option<u64>,
    max_rows_per_walk: Option<u64>,
    poll_deadline_ms: Option<u64>,
    #[serde(default)]
    get: Vec<RawColumn>,
    #[serde(default)]
    walk: Vec<RawColumn>,
    #[serde(default)]
    tables: Vec<RawTable>,
    preset: Option<String>,
}

/// `"10.0.0.1:161"`, or `{address, name, community}` for a device with a
/// community of its own: every device of a poller shares its socket.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawTarget {
    Address(String),
    Detailed(RawTargetDetail),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetDetail {
    address: String,
    name: Option<String>,
    /// Read by [`secret::parse`].
    community: Option<Value>,
}

impl RawTarget {
    fn address(&self) -> &str {
        match self {
            RawTarget::Address(address) => address,
            RawTarget::Detailed(detail) => &detail.address,
        }
    }

    /// The target's own community, if it has one.
    fn community(&self) -> Option<&Value> {
        match self {
            RawTarget::Address(_) => None,
            RawTarget::Detailed(detail) => detail.community.as_ref(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtocol {
    protocol: String,
    passphrase: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    oid: String,
    key: Option<String>,
    fallback: Option<String>,
    multiplier: Option<f64>,
    offset: Option<f64>,
    data_type: Option<DataType>,
    metadata: Option<Value>,
    description: Option<String>,
    units: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    columns: Vec<RawColumn>,
    #[serde(default)]
    labels: Vec<RawLabel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    key: String,
    oid: String,
    #[serde(default = "yes")]
    update_checksum: bool,
}

fn yes() -> bool {
    true
}

impl SnmpSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawSnmp = doc.deserialize(path, value)?;
        let errors_before = doc.error_count();
        let credentials = parse_credentials(doc, path, &raw);
        let mut fields = Fields::new(path);
        let timeout = fields.read(
            doc,
            "timeout_ms",
            raw.timeout_ms,
            DurationMs::or(DEFAULT_TIMEOUT),
        );
        let max_repetitions_set = raw.max_repetitions.is_some();
        let max_repetitions = fields.read(
            doc,
            "max_repetitions",
            raw.max_repetitions,
            Count::new(u64::from(DEFAULT_MAX_REPETITIONS), 1000),
        );
        // Beyond these a request would not fit in any UDP datagram, and a
        // poller would hold more sockets' worth of work than it can use.
        let max_oids_per_request = fields.read(
            doc,
            "max_oids_per_request",
            raw.max_oids_per_request,
            Count::new(DEFAULT_MAX_OIDS_PER_REQUEST as u64, 1000),
        );
        let max_concurrent_targets = fields.read(
            doc,
            "max_concurrent_targets",
            raw.max_concurrent_targets,
            Count::new(DEFAULT_MAX_CONCURRENT_TARGETS as u64, 65_535),
        );
        let max_rows_per_walk = fields.read(
            doc,
            "max_rows_per_walk",
            raw.max_rows_per_walk,
            Count::new(DEFAULT_MAX_ROWS_PER_WALK as u64, MAX_MAX_ROWS_PER_WALK),
        );
        let poll_deadline = fields.read(
            doc,
            "poll_deadline_ms",
            raw.poll_deadline_ms,
            DurationMs::optional(),
        );
        let retries = fields.read(
            doc,
            "retries",
            raw.retries,
            Retries {
                default: DEFAULT_RETRIES,
                max: MAX_RETRIES,
                why: "more only hide an outage within one polling interval",
            },
        );
        let reads = parse_reads(doc, path, &raw);
        let targets = parse_targets(doc, path, &raw.targets, credentials.as_ref(), &reads)?;
        if doc.error_count() > errors_before || !fields.ok() {
            return None;
        }
        Some(SnmpSettings {
            flavour: Flavour::Native,
            targets,
            timeout,
            retries,
            max_repetitions: max_repetitions as u32,
            max_repetitions_set,
            max_oids_per_request: max_oids_per_request as usize,
            max_concurrent_targets: max_concurrent_targets as usize,
            max_rows_per_walk: max_rows_per_walk as usize,
            poll_deadline,
        })
    }
}

/// `version` and what goes with it: a community for v1 and v2c; a user,
/// and maybe authentication and privacy, for v3. The keys of the other
/// versions are errors.
fn parse_credentials(doc: &mut Document, path: &YamlPath, raw: &RawSnmp) -> Option<Credentials> {
    let version = match &raw.version {
        None => "2c".to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(text)) => text.trim().to_ascii_lowercase(),
        Some(other) => describe(other).to_owned(),
    };
    let credentials = match version.as_str() {
        "1" => poller_community(doc, path, raw).map(Credentials::V1),
        "2" | "2c" => poller_community(doc, path, raw).map(Credentials::V2c),
        "3" => parse_usm(doc, path, raw),
        other => {
            doc.error(
                &path.key("version"),
                format!("unknown SNMP version {other:?}: expected 1, 2c or 3"),
            );
            None
        }
    };
    if version != "3" {
        for key in ["user", "auth", "privacy"] {
            let given = match key {
                "user" => raw.user.is_some(),
                "auth" => raw.auth.is_some(),
                _ => raw.privacy.is_some(),
            };
            if given {
                doc.error(
                    &path.key(key),
                    "only SNMPv3 has users: set `version: 3`, or drop this",
                );
            }
        }
    } else if raw.community.is_some() {
        doc.error(
            &path.key("community"),
            "SNMPv3 has no community: drop this, or set `version: 2c`",
        );
    }
    credentials
}

/// The poller's `community`. Where every target has its own the poller
/// needs none: the first target's stands in for it.
fn poller_community(doc: &mut Document, path: &YamlPath, raw: &RawSnmp) -> Option<SecretSource> {
    let first_own = raw
        .targets
        .iter()
        .enumerate()
        .find_map(|(i, t)| t.community().map(|c| (i, c)));
    let all_own = raw.targets.iter().all(|t| t.community().is_some());
    match (&raw.community, first_own) {
        (Some(raw), _) => secret(doc, &path.key("community"), raw),
        (None, Some((i, own))) if all_own => {
            secret(doc, &path.key("targets").index(i).key("community"), own)
        }
        (None, _) => {
            doc.error(
                path,
                "missing `community`: read it from a file ({file: /etc/pattoo/snmp-community}) or the environment ({env: SNMP_COMMUNITY})",
            );
            None
        }
    }
}

/// SNMPv3's user-based security: `user`, `auth` and `privacy`.
fn parse_usm(doc: &mut Document, path: &YamlPath, raw: &RawSnmp) -> Option<Credentials> {
    let user = match &raw.user {
        Some(user) if !user.trim().is_empty() => Some(user.trim().to_owned()),
        _ => {
            doc.error(path, "missing `user`: SNMPv3 needs the USM user name");
            None
        }
    };
    let auth = raw
        .auth
        .as_ref()
        .and_then(|auth| parse_auth(doc, &path.key("auth"), auth));
    let privacy = raw
        .privacy
        .as_ref()
        .and_then(|privacy| parse_privacy(doc, &path.key("privacy"), privacy));
    if raw.privacy.is_some() && raw.auth.is_none() {
        doc.error(
            &path.key("privacy"),
            "privacy needs `auth` too: SNMPv3 has no privacy without authentication",
        );
    }
    user.map(|user| Credentials::V3 {
        user,
        auth,
        privacy,
    })
}

/// `auth`: the authentication protocol and its passphrase.
fn parse_auth(
    doc: &mut Document,
    at: &YamlPath,
    raw: &RawProtocol,
) -> Option<(AuthProtocol, SecretSource)> {
    let protocol = match raw.protocol.to_ascii_uppercase().parse::<AuthProtocol>() {
        Ok(p) => Some(p),
        Err(_) => {
            doc.error(
                &at.key("protocol"),
                format!("unknown authentication protocol {:?}: expected md5, sha (sha1), sha224, sha256, sha384 or sha512", raw.protocol),
            );
            None
        }
    };
    let passphrase = secret(doc, &at.key("passphrase"), &raw.passphrase);
    Some((protocol?, passphrase?))
}

/// `privacy`: the privacy protocol and its passphrase.
fn parse_privacy(
    doc: &mut Document,
    at: &YamlPath,
    raw: &RawProtocol,
) -> Option<(PrivProtocol, SecretSource)> {
    let protocol = match raw.protocol.to_ascii_uppercase().as_str() {
        "AES192" | "AES-192" => Some(PrivProtocol::Aes192Blumenthal),
        "AES256" | "AES-256" => Some(PrivProtocol::Aes256Blumenthal),
        other => match other.parse::<PrivProtocol>() {
            Ok(p) => Some(p),
            Err(_) => {
                doc.error(
                    &at.key("protocol"),
                    format!("unknown privacy protocol {:?}: expected des, aes (aes128), aes192, aes256, aes192-reeder or aes256-reeder", raw.protocol),
                );
                None
            }
        },
    };
    let passphrase = secret(doc, &at.key("passphrase"), &raw.passphrase);
    Some((protocol?, passphrase?))
}

/// What every target reads: `get`, `walk`, `tables` and `preset`, at least
/// one of them.
fn parse_reads(doc: &mut Document, path: &YamlPath, raw: &RawSnmp) -> Arc<[Read]> {
    let mut reads = Vec::new();
    let mut gets = Vec::new();
    for (i, raw) in raw.get.iter().enumerate() {
        gets.extend(column(doc, &path.key("get").index(i), raw, false));
    }
    if !gets.is_empty() {
        reads.push(Read::Get(gets));
    }
    for (i, raw) in raw.walk.iter().enumerate() {
        reads.extend(column(doc, &path.key("walk").index(i), raw, false).map(Read::Walk));
    }
    for (i, raw) in raw.tables.iter().enumerate() {
        reads.push(Read::Table(table(doc, &path.key("tables").index(i), raw)));
    }
    match raw.preset.as_deref().map(str::trim) {
        None => {}
        Some("if_mib" | "IF-MIB" | "if-mib") => reads.push(Read::Table(if_mib_preset())),
        Some(other) => doc.error(
            &path.key("preset"),
            format!("unknown preset {other:?}: expected if_mib"),
        ),
    }
    if reads.is_empty() {
        doc.error(
            path,
            "nothing to read: give `get`, `walk`, `tables` or `preset: if_mib`",
        );
    }
    reads.into()
}

/// One of `tables`: its value columns and its labels.
fn table(doc: &mut Document, at: &YamlPath, raw: &RawTable) -> Table {
    let columns: Vec<Column> = raw
        .columns
        .iter()
        .enumerate()
        .filter_map(|(c, col)| column(doc, &at.key("columns").index(c), col, true))
        .collect();
    let mut labels = Vec::new();
    for (l, label) in raw.labels.iter().enumerate() {
        let at = at.key("labels").index(l);
        let oid = parse_oid(doc, &at.key("oid"), &label.oid);
        if check_user_key(doc, &at.key("key"), &label.key) {
            if let Some(oid) = oid {
                labels.push(Label {
                    key: label.key.clone(),
                    oid,
                    update_checksum: label.update_checksum,
                });
            }
        }
    }
    if raw.columns.is_empty() {
        doc.error(&at.key("columns"), "must list at least one column to post");
    }
    Table {
        name: raw.name.clone(),
        columns,
        labels,
    }
}

/// `targets`, each reached with the poller's credentials or its own
/// community. `None` as soon as a target is reached with credentials that
/// were refused.
fn parse_targets(
    doc: &mut Document,
    path: &YamlPath,
    raw: &[RawTarget],
    credentials: Option<&Credentials>,
    reads: &Arc<[Read]>,
) -> Option<Vec<TargetSettings>> {
    let mut targets = Vec::new();
    if raw.is_empty() {
        doc.error(&path.key("targets"), "must list at least one device");
    }
    for (i, target) in raw.iter().enumerate() {
        let at = path.key("targets").index(i);
        let text = target.address();
        let Some((host, port)) = parse_host_port(text) else {
            doc.error(
                &at,
                format!("{text:?} is not a device address: expected \"host\", \"host:port\" or \"[ipv6]:port\""),
            );
            continue;
        };
        let mut own = credentials.cloned()?;
        let mut name = text.trim().to_owned();
        if let RawTarget::Detailed(detail) = target {
            if let Some(given) = detail.name.as_deref().map(str::trim) {
                if given.is_empty() {
                    doc.error(&at.key("name"), "must not be empty");
                }
                name = given.to_owned();
            }
            if let Some(raw) = &detail.community {
                own = target_community(doc, &at.key("community"), own, raw);
            }
        }
        targets.push(TargetSettings {
            name,
            host,
            port,
            credentials: own,
            reads: reads.clone(),
        });
    }
    Some(targets)
}

/// A target's own `community` in place of the poller's.
fn target_community(
    doc: &mut Document,
    at: &YamlPath,
    poller: Credentials,
    raw: &Value,
) -> Credentials {
    match (poller, secret(doc, at, raw)) {
        (Credentials::V1(_), Some(s)) => Credentials::V1(s),
        (Credentials::V2c(_), Some(s)) => Credentials::V2c(s),
        (v3 @ Credentials::V3 { .. }, Some(_)) => {
            doc.error(at, "SNMPv3 has no community: drop this");
            v3
        }
        (own, None) => own,
    }
}

fn secret(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<SecretSource> {
    secret::parse(doc, path, value)
}

fn column(doc: &mut Document, path: &YamlPath, raw: &RawColumn, in_table: bool) -> Option<Column> {
    let oid = parse_oid(doc, &path.key("oid"), &raw.oid);
    let fallback = match &raw.fallback {
        Some(text) if in_table => parse_oid(doc, &path.key("fallback"), text).map(Some),
        Some(_) => {
            doc.error(&path.key("fallback"), "only table columns have a fallback");
            None
        }
        None => Some(None),
    };
    let key = match &raw.key {
        Some(key) => check_user_key(doc, &path.key("key"), key).then(|| key.clone()),
        None if in_table => {
            doc.error(path, "missing `key`: the datapoint key, e.g. ifHCInOctets");
            None
        }
        // The OID as numbers: without MIB files there is no name.
        None => oid.as_ref().map(dotted),
    };
    let metadata = match &raw.metadata {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(value) => parse_metadata(doc, &path.key("metadata"), value),
    };
    let naming = parse_naming(doc, path, raw.description.as_deref(), raw.units.as_deref());
    for (name, value) in [("multiplier", raw.multiplier), ("offset", raw.offset)] {
        if value.is_some_and(|v| !v.is_finite()) {
            doc.error(&path.key(name), "expected a finite number");
            return None;
        }
    }
    Some(Column {
        oid: oid?,
        key: key?,
        fallback: fallback?,
        multiplier: raw.multiplier,
        offset: raw.offset,
        data_type: raw.data_type,
        metadata: metadata?,
        naming: naming?,
    })
}

/// `preset: if_mib`: the table [`super::ifmib::PRESET_COLUMNS`] and
/// [`super::ifmib::PRESET_LABELS`] describe.
pub fn if_mib_preset() -> Table {
    let oid = |text: &str| oid_from_text(text).expect("a valid built-in OID");
    Table {
        name: "IF-MIB".to_owned(),
        columns: super::ifmib::PRESET_COLUMNS
            .iter()
            .map(|(key, column, fallback)| Column {
                oid: oid(column),
                key: (*key).to_owned(),
                fallback: fallback.map(oid),
                multiplier: None,
                offset: None,
                data_type: None,
                metadata: Vec::new(),
                naming: Naming::default(),
            })
            .collect(),
        labels: super::ifmib::PRESET_LABELS
            .iter()
            .map(|(key, label, update_checksum)| Label {
                key: (*key).to_owned(),
                oid: oid(label),
                update_checksum: *update_checksum,
            })
            .collect(),
    }
}

/// `.1.3.6.1.2.1.1.3.0` or `1.3.6.1.2.1.1.3.0`: numbers only, since no MIB
/// files are read.
pub(crate) fn parse_oid(doc: &mut Document, path: &YamlPath, text: &str) -> Option<Oid> {
    match oid_from_text(text) {
        Some(oid) => Some(oid),
        None => {
            doc.error(
                path,
                format!("{text:?} is not a numeric OID: expected dotted numbers such as .1.3.6.1.2.1.2.2.1.10 (names need MIB files, which are not read)"),
            );
            None
        }
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 literal.
pub(crate) fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once(']')?;
        match port {
            "" => (host, None),
            port => (host, Some(port.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (text, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => Port::from_text(port).ok()?.0,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hosts_ports_and_ipv6_literals() {
        assert_eq!(parse_host_port("10.0.0.1"), Some(("10.0.0.1".into(), 161)));
        assert_eq!(parse_host_port("sw1:1161"), Some(("sw1".into(), 1161)));
        assert_eq!(parse_host_port("::1"), Some(("::1".into(), 161)));
        assert_eq!(parse_host_port("[::1]:1161"), Some(("::1".into(), 1161)));
        assert_eq!(parse_host_port("sw1:0"), None);
    }

    #[test]
    fn the_if_mib_preset_prefers_64_bit_counters() {
        let table = if_mib_preset();
        let octets = &table.columns[0];
        assert_eq!(dotted(&octets.oid), ".1.3.6.1.2.1.31.1.1.1.6");
        assert_eq!(
            octets.fallback.as_ref().map(dotted).as_deref(),
            Some(".1.3.6.1.2.1.2.2.1.10")
        );
        assert_eq!(table.columns.len(), 15);
        assert_eq!(table.labels.len(), 3);
    }

    #[test]
    fn secrets_are_never_shown() {
        let credentials = Credentials::V3 {
            user: "ops".into(),
            auth: Some((
                AuthProtocol::Sha256,
                SecretSource::Inline("authpass123".to_owned().into()),
            )),
            privacy: Some((PrivProtocol::Aes128, SecretSource::Env("PRIV".into()))),
        };
        let shown = format!("{} {:?}", credentials.describe(), credentials);
        assert!(!shown.contains("authpass123"), "{shown}");
        assert!(shown.contains("$PRIV"), "{shown}");
    }
}
