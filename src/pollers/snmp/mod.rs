//! The SNMP poller: GET, walks and tables from SNMPv1, v2c and v3 devices,
//! and the drop-ins for the Python `pattoo_agent_snmpd` and
//! `pattoo_agent_snmp_ifmibd` agents ([`compat`]).
//!
//! # Configuration (`type: snmp` in `pattoo_agentd.yaml`)
//!
//! ```yaml
//! - name: switches
//!   type: snmp
//!   targets:                      # host, host:port, [ipv6]:port, or a mapping
//!     - "10.0.0.1"
//!     - "[2001:db8::7]:1161"
//!     - {address: sw3.example.org, name: sw3, community: {file: /etc/pattoo/sw3}}
//!   version: 2c                   # 1, 2c (default) or 3
//!   community: {file: /etc/pattoo/snmp-community}   # or {env: SNMP_COMMUNITY}
//!   # version 3 instead:
//!   # user: pattoo
//!   # auth: {protocol: sha256, passphrase: {file: /etc/pattoo/snmp-auth}}
//!   #                             # md5, sha, sha224, sha256, sha384, sha512
//!   # privacy: {protocol: aes, passphrase: {env: SNMP_PRIV}}
//!   #                             # des, aes (128), aes192, aes256, *-reeder
//!   timeout_ms: 2000              # per request (default 2000)
//!   retries: 1                    # per request (default 1, at most 5)
//!   max_repetitions: 25           # GETBULK rows per request, at most (default:
//!                                 # 25 at first, then sized to each table)
//!   max_oids_per_request: 32      # GET batch size; split further on tooBig
//!   max_concurrent_targets: 64    # devices polled at once
//!   max_rows_per_walk: 10000      # rows a walk or table column reads at most
//!   poll_deadline_ms: 60000       # a poll ends by then (default: the interval)
//!   get:                          # instance OIDs, batched into few GETs
//!     - {oid: .1.3.6.1.2.1.1.3.0, key: sysuptime}
//!   walk:                         # subtrees: GETBULK (GETNEXT for v1)
//!     - {oid: .1.3.6.1.4.1.2021.10.1.5, key: load, multiplier: 0.01}
//!   tables:                       # one datapoint per row and column
//!     - name: ifTable
//!       columns:
//!         - {key: ifInOctets, oid: .1.3.6.1.2.1.31.1.1.1.6,
//!            fallback: .1.3.6.1.2.1.2.2.1.10, multiplier: 8}
//!       labels:                   # other columns of the row, as metadata
//!         - {key: ifName, oid: .1.3.6.1.2.1.31.1.1.1.1}
//!         - {key: ifAlias, oid: .1.3.6.1.2.1.31.1.1.1.18, update_checksum: false}
//!   preset: if_mib                # ifTable + ifXTable, 64-bit counters first
//! ```
//!
//! Every item also takes `multiplier`, `offset` (the value is raw times
//! multiplier plus offset, posted as a float), `data_type` and `metadata`. OIDs are
//! numeric: no MIB files are read. A `get` or `walk` without `key` uses the
//! OID. Walked and table values carry the metadata `oid` (walks) or `index`
//! (tables: the row's index, `2` or `10.0.0.1`), so every row is its own
//! series.
//!
//! Values: Counter32 is `counter`, Counter64 `counter64`, Integer32,
//! Gauge32 and TimeTicks `int`, octet strings `string` as UTF-8 where valid
//! and hex otherwise (`00:11:22:33:44:aa`), IP addresses and OIDs as text.
//!
//! # How it reads
//!
//! - A target being polled has a UDP socket of the poller's to itself, for
//!   every request and retry, and the task that waits reads it: no receive
//!   loop on another task; a late answer to a first attempt is still taken
//!   while the retry waits.
//!   A poller opens at most `max_concurrent_targets` sockets per address
//!   family, however many targets it has, and keeps them between polls.
//!   Requests carry random request ids (and message ids, for v3); a
//!   response is matched by its id and must come from the address and port
//!   the request went to, so a late, forged or garbled datagram is dropped,
//!   never taken for another request's answer ([`transport`]; async-snmp
//!   does the BER, the community and version checks and the USM).
//! - A table's labels and columns, the `walk` subtrees and the drop-ins'
//!   walks are read together over SNMPv2c and v3: each GETBULK asks for
//!   every column still open, from its last OID, so a 24-interface
//!   device is one request, not one walk per column ([`multiwalk`]). Each
//!   column gets exactly the rows its own walk would get. SNMPv1 walks one
//!   column after the other.
//! - Rows per request: the first poll asks for `max_repetitions` (default
//!   25). Each target remembers how many rows each of its tables and
//!   shared walks had, and the next poll's first request asks for that
//!   many plus one (the row that shows the end), so an unchanged table of
//!   any length is one request; a device that sends fewer rows than asked
//!   (its message size) is asked next for the rows still missing of last
//!   time's table plus one, never for rows past its end; a table that grew
//!   is read on from there, at least `max_repetitions` rows at a time.
//!   With `max_repetitions`
//!   not set, a request asks for at most 500 varbinds (rows × columns) or
//!   25 rows, whichever is more; an operator who sets `max_repetitions`
//!   sets the most rows any request asks for. A device that answers tooBig
//!   is asked for half as many rows, and that size is kept for that table
//!   from then on; a request for more than `max_repetitions` rows that
//!   times out keeps that table at `max_repetitions` from then on (a
//!   device too slow for it must not time out every other poll); a poll
//!   that times out, errs or is cut forgets the table's size, and the next
//!   asks for `max_repetitions` again. A subtree walked alone (one column,
//!   or SNMPv1) asks for `max_repetitions` rows every time.
//! - Every walk reads at most `max_rows_per_walk` rows and stops at an OID
//!   that does not follow the one before; every poll ends by its deadline.
//!   What was read before a cut is posted, and the cut is logged with the
//!   poller, target, OID and the bound.
//! - A value that cannot be decoded posts nothing and is logged with its
//!   OID and what was wrong ([`screen`]); the rest of its answer posts.
//! - Targets are polled concurrently, at most `max_concurrent_targets` at
//!   once. Each request has the target's timeout and retries; a target that
//!   times out is not asked again in the same poll, so a dead device costs
//!   one timeout × (retries + 1) and delays no other.
//! - Errors are logged with the poller, target and OID: timeouts (a wrong
//!   community looks like one, agents do not answer it), authentication
//!   failures and other v3 reports, error statuses, `noSuchObject`,
//!   `noSuchInstance`. Whatever was read is posted.

/// The metadata key of a walked value's instance OID.
pub const OID_METADATA_KEY: &str = "oid";
/// The metadata key of a table row's index.
pub const INDEX_METADATA_KEY: &str = "index";

pub mod compat;
mod config;
pub mod convert;
pub mod ifmib;
mod kind;
mod multiwalk;
mod oid;
mod screen;
mod translations;
mod transport;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_snmp::{
    Auth, ClientBuilder, DecodeConfig, ErrorKind, ErrorStatus, Oid, OidOrdering, Retry, UsmConfig,
    VarBind, WalkAbortReason, WalkMethod, WalkOptions,
};
use futures_util::StreamExt;
use tokio::time::Instant;

pub use kind::Snmp;

pub use config::{
    Column, Credentials, Flavour, Label, Read, SnmpSettings, Table, TargetSettings,
    DEFAULT_MAX_REPETITIONS, DEFAULT_MAX_ROWS_PER_WALK, DEFAULT_PORT, DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
};
use convert::{NoValue, Octets};
use multiwalk::{MultiWalk, Sizings};
pub use oid::{dotted, oid_from_text};
use transport::{Sockets, TargetTransport};

/// A client on the poller's socket for one target.
type Client = async_snmp::Client<TargetTransport>;

use crate::model::{DataPoint, Metadata, TargetData, Text, TextSet};
use crate::secret::SecretSource;
use crate::time::now_ms;

/// A poll read nothing at all.
#[derive(Debug, thiserror::Error)]
#[error("poller {poller}: nothing read from any of {targets} target(s) (see the warnings above)")]
pub struct SnmpError {
    pub poller: String,
    pub targets: usize,
}

pub struct SnmpPoller {
    name: String,
    settings: SnmpSettings,
    /// How long one poll may take: `poll_deadline_ms`, else the polling
    /// interval.
    deadline: Duration,
    /// Parallel to `settings.targets`.
    states: Vec<TargetState>,
    v4: Option<Arc<Sockets>>,
    v6: Option<Arc<Sockets>>,
    /// The texts its readings are named with (a table's keys, each row's
    /// index and labels, a walked value's OID), kept once and handed over
    /// again poll after poll: the poll memory keeps the same shared texts
    /// in its descriptions, so it knows each reading's description by the
    /// pointer without comparing bytes, and an unchanged row costs no
    /// allocation for its texts. One set for all targets, since devices of
    /// one kind repeat each other's texts (`ifInOctets`, `1`,
    /// `GigabitEthernet0/1`) and the poll memory keeps one description for
    /// all of them. Taken for a moment, never across an await.
    texts: Mutex<TextSet>,
}

impl std::fmt::Debug for SnmpPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpPoller")
            .field("name", &self.name)
            .field("targets", &self.settings.targets.len())
            .finish_non_exhaustive()
    }
}

/// What a target keeps between polls.
struct TargetState {
    /// The credentials with their secrets read, ready for a client.
    auth: Auth,
    /// Built at the first poll that resolves the target; kept, so v3
    /// engine discovery happens once.
    client: Option<(Client, TargetTransport)>,
    /// How many rows each multi-column walk of the target read last time.
    sizings: Sizings,
}

impl SnmpPoller {
    /// Reads the secrets. Does no network I/O: sockets are bound and names
    /// resolved at the first poll.
    pub fn new(
        name: &str,
        settings: &SnmpSettings,
        polling_interval: Duration,
    ) -> anyhow::Result<Self> {
        let mut states = Vec::with_capacity(settings.targets.len());
        for target in &settings.targets {
            let auth = auth(&target.credentials)
                .map_err(|error| anyhow::anyhow!("target {}: {error}", target.name))?;
            states.push(TargetState {
                auth,
                client: None,
                sizings: Sizings::default(),
            });
        }
        Ok(SnmpPoller {
            name: name.to_owned(),
            settings: settings.clone(),
            deadline: settings.poll_deadline.unwrap_or(polling_interval),
            states,
            v4: None,
            v6: None,
            texts: Mutex::default(),
        })
    }

    /// Polls every target once.
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, SnmpError> {
        let mut result = Vec::new();
        self.poll_each(&mut |data| result.push(data)).await?;
        Ok(result)
    }

    /// Polls every target once, handing each target's datapoints to
    /// `each` as soon as it and every target before it are read, in the
    /// order [`SnmpPoller::poll`] returns them, so a poll's readings are
    /// never all held at once. Targets that read nothing are left out.
    pub async fn poll_each(
        &mut self,
        each: &mut (dyn FnMut(TargetData) + Send),
    ) -> Result<(), SnmpError> {
        let name = self.name.as_str();
        let settings = &self.settings;
        let deadline = Deadline {
            at: Instant::now() + self.deadline,
            ms: self.deadline.as_millis(),
        };
        let mut clients = Vec::with_capacity(settings.targets.len());
        // Clients first, in order: building one may bind this poller's
        // socket, which needs `&mut self`.
        for t in 0..settings.targets.len() {
            clients.push(
                client(
                    name,
                    settings,
                    &settings.targets[t],
                    &mut self.states[t],
                    &mut self.v4,
                    &mut self.v6,
                )
                .await,
            );
        }
        let texts = &self.texts;
        lock(texts).forget_unused();
        let mut jobs: Vec<_> = settings
            .targets
            .iter()
            .zip(clients)
            .zip(self.states.iter_mut())
            .collect();
        if settings.flavour != Flavour::Native {
            // The Python agents post targets in sorted order of their
            // names; polled in that order, they are handed over in it.
            jobs.sort_by(|((a, _), _), ((b, _), _)| a.name.cmp(&b.name));
        }
        // Each target's poll is made when a slot frees, not all up front:
        // a waiting poll is a state machine of several kilobytes, and 200
        // of them made at once were the largest single block of a poll.
        // (A loop, not `stream::iter(..).map(..).buffered(..)`: a closure
        // there makes the poll's future fail to prove itself `Send`.)
        let slots = settings.max_concurrent_targets.max(1);
        let mut waiting = jobs.into_iter();
        let mut running = futures_util::stream::FuturesOrdered::new();
        let (mut targets, mut answered) = (0, false);
        loop {
            while running.len() < slots {
                let Some(((target, client), state)) = waiting.next() else {
                    break;
                };
                running.push_back(poll_target(
                    name,
                    settings,
                    target,
                    client,
                    &mut state.sizings,
                    texts,
                    deadline,
                ));
            }
            let Some((data, answer)) = running.next().await else {
                break;
            };
            targets += 1;
            answered |= answer;
            if !data.datapoints.is_empty() {
                each(data);
            }
        }
        if !answered && targets > 0 {
            return Err(SnmpError {
                poller: self.name.clone(),
                targets,
            });
        }
        Ok(())
    }
}

/// The poller's texts. A poll that panicked while holding them left a
/// whole set (each insertion is complete or not made).
fn lock(texts: &Mutex<TextSet>) -> MutexGuard<'_, TextSet> {
    texts.lock().unwrap_or_else(PoisonError::into_inner)
}

fn auth(credentials: &Credentials) -> Result<Auth, String> {
    Ok(match credentials {
        Credentials::V1(community) => Auth::v1(reveal(community)?.into_bytes()),
        Credentials::V2c(community) => Auth::v2c(reveal(community)?.into_bytes()),
        Credentials::V3 {
            user,
            auth,
            privacy,
        } => {
            let config = UsmConfig::new(bytes::Bytes::copy_from_slice(user.as_bytes()));
            let config = match (auth, privacy) {
                (Some((a, a_secret)), Some((p, p_secret))) => {
                    config.auth_priv(*a, reveal(a_secret)?, *p, reveal(p_secret)?)
                }
                (Some((a, a_secret)), None) => config.auth(*a, reveal(a_secret)?),
                _ => Ok(config),
            }
            .map_err(|error| format!("SNMPv3 user {user:?}: {error}"))?;
            Auth::from(config)
        }
    })
}

/// A community's or passphrase's text, read from its source.
fn reveal(secret: &SecretSource) -> Result<String, String> {
    secret
        .read()
        .map(|secret| secret.expose().to_owned())
        .map_err(|error| error.to_string())
}

/// The target's client, built (and the poller's socket bound) on first
/// use. `None`, logged, when the name does not resolve or the socket
/// cannot be bound; the next poll tries again.
async fn client(
    poller: &str,
    settings: &SnmpSettings,
    target: &TargetSettings,
    state: &mut TargetState,
    v4: &mut Option<Arc<Sockets>>,
    v6: &mut Option<Arc<Sockets>>,
) -> Option<(Client, TargetTransport)> {
    if let Some(client) = &state.client {
        return Some(client.clone());
    }
    let address = match resolve(&target.host, target.port).await {
        Ok(address) => address,
        Err(error) => {
            tracing::warn!(poller, target = %target.name, "{}: {error}", target.name);
            return None;
        }
    };
    let slot = if address.is_ipv4() { v4 } else { v6 };
    if slot.is_none() {
        let bind = if address.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        match Sockets::open(bind) {
            Ok(sockets) => *slot = Some(sockets),
            Err(error) => {
                tracing::error!(poller, "cannot open a UDP socket for SNMP: {error}");
                return None;
            }
        }
    }
    let sockets = slot.as_ref().expect("opened above").clone();
    let handle = TargetTransport::new(sockets, address);
    // A value that does not fit its type is an error, never a truncated
    // number or a zero (SNMPv1/v2c values are screened before this).
    let mut decode = DecodeConfig::DEFAULT;
    decode.truncate_numeric_values = false;
    decode.empty_counter64_as_zero = false;
    let built = ClientBuilder::new(state.auth.clone())
        .request_timeout(settings.timeout)
        .retry(Retry::fixed(settings.retries, Duration::ZERO).unwrap_or_else(|_| Retry::none()))
        .max_oids_per_request(settings.max_oids_per_request)
        .decode_config(decode)
        .walk_options(WalkOptions {
            method: WalkMethod::Auto,
            max_repetitions: settings.max_repetitions,
            ordering: OidOrdering::Strict,
            result_limit: Some(settings.max_rows_per_walk),
        })
        .build_with_transport(handle.clone());
    match built {
        Ok(client) => {
            state.client = Some((client.clone(), handle.clone()));
            Some((client, handle))
        }
        Err(error) => {
            tracing::warn!(poller, target = %target.name, "{}: {}", target.name, explain(&error, &target.credentials));
            None
        }
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    // IPv4 first, as Net-SNMP (and so the Python agents) resolve names:
    // `localhost` must reach an agent listening on 127.0.0.1 only.
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))
}

/// An error as an operator reads it: what happened and what to check.
fn explain(error: &async_snmp::Error, credentials: &Credentials) -> String {
    match error.kind() {
        ErrorKind::Timeout if !matches!(credentials, Credentials::V3 { .. }) => format!(
            "{error}: the device is down or unreachable, or the community is wrong (agents do not answer a wrong community)"
        ),
        ErrorKind::Timeout => format!("{error}: the device is down or unreachable"),
        ErrorKind::Auth | ErrorKind::Report => format!(
            "{error}: check the SNMPv3 user, protocols and passphrases (a wrong passphrase shows as wrong digests or a decryption error)"
        ),
        _ => error.to_string(),
    }
}

/// Whether an error means the target will not answer anything else in
/// this poll either.
fn ends_target(error: &async_snmp::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Timeout | ErrorKind::Auth | ErrorKind::Report | ErrorKind::Network
    )
}

/// One target's datapoints, and whether it answered at all.
async fn poll_target(
    poller: &str,
    settings: &SnmpSettings,
    target: &TargetSettings,
    client: Option<(Client, TargetTransport)>,
    sizings: &mut Sizings,
    texts: &Mutex<TextSet>,
    deadline: Deadline,
) -> (TargetData, bool) {
    let mut data = TargetData::new(target.name.clone());
    let Some((client, transport)) = client else {
        return (data, false);
    };
    // The target's requests keep one socket until this poll ends.
    let _polling = transport.polling();
    let mut session = Session {
        poller,
        target,
        client,
        transport,
        timeout: settings.timeout,
        max_repetitions: settings.max_repetitions,
        max_repetitions_set: settings.max_repetitions_set,
        sizings,
        texts,
        max_rows: settings.max_rows_per_walk,
        deadline,
        answered: false,
        silent: false,
        late: false,
        bad: HashSet::new(),
    };
    match settings.flavour {
        Flavour::PythonIfMib => {
            let walks: Vec<Vec<VarBind>> = session
                .walks(&ifmib::python_walk_oids())
                .await
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect();
            let mut texts = lock(session.texts);
            data.datapoints = ifmib::python_datapoints(&walks, now_ms(), &mut texts);
        }
        Flavour::PythonSnmpd | Flavour::Native => {
            let mut reads = target.reads.iter().peekable();
            while let Some(read) = reads.next() {
                if read.subtree().is_none() {
                    session.read(read, &mut data.datapoints).await;
                    continue;
                }
                // Subtrees configured one after the other share GETBULKs,
                // as a table's columns do; their datapoints keep the
                // configured order.
                let mut run = vec![read];
                while let Some(next) = reads.next_if(|r| r.subtree().is_some()) {
                    run.push(next);
                }
                let oids: Vec<Oid> = run.iter().filter_map(|r| r.subtree().cloned()).collect();
                let walked = session.walks(&oids).await;
                for (read, rows) in run.into_iter().zip(walked) {
                    session.walked(read, rows.unwrap_or_default(), &mut data.datapoints);
                }
            }
        }
    }
    (data, session.answered)
}

/// When a poll must end: every target stops asking then and posts what it
/// has read.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    /// For the log.
    ms: u128,
}

/// How a walk ended.
enum WalkEnd {
    /// The device said the subtree ended.
    Complete,
    /// `max_rows_per_walk` rows read and the subtree went on.
    RowLimit,
    /// The poll's deadline came first.
    Deadline,
    /// The device answered an OID not after the one asked for.
    Order(WalkAbortReason),
}

/// One target's poll in progress.
struct Session<'a> {
    poller: &'a str,
    target: &'a TargetSettings,
    client: Client,
    transport: TargetTransport,
    timeout: Duration,
    max_repetitions: u32,
    max_repetitions_set: bool,
    /// The target's, kept between polls.
    sizings: &'a mut Sizings,
    texts: &'a Mutex<TextSet>,
    max_rows: usize,
    deadline: Deadline,
    answered: bool,
    /// Set once the target timed out or refused our credentials: nothing
    /// more is asked of it in this poll.
    silent: bool,
    /// Set once the poll's deadline passed (and logged): nothing more is
    /// asked of the target in this poll.
    late: bool,
    /// OIDs whose value in this poll could not be decoded (each logged).
    bad: HashSet<Oid>,
}

impl Session<'_> {
    /// Whether the target may still be asked something; logs the deadline
    /// once when it has passed.
    fn may_ask(&mut self, what: &dyn Fn() -> String) -> bool {
        if self.silent || self.late {
            return false;
        }
        if Instant::now() >= self.deadline.at {
            self.passed_deadline(&what());
            return false;
        }
        true
    }

    fn passed_deadline(&mut self, what: &str) {
        self.late = true;
        tracing::warn!(
            poller = self.poller,
            target = %self.target.name,
            bound = "poll_deadline_ms",
            "{}: {what}: the poll's deadline of {} ms (poll_deadline_ms, default the polling interval) passed; what was read is posted, the rest of this target is not read in this poll",
            self.target.name,
            self.deadline.ms,
        );
    }

    /// Logs each value the device sent that could not be decoded; these
    /// post nothing.
    fn report_bad_values(&mut self) {
        for bad in self.transport.take_bad_values() {
            tracing::warn!(
                poller = self.poller,
                target = %self.target.name,
                oid = %dotted(&bad.oid),
                "{}: {}: the device sent {}, which cannot be decoded; nothing is posted for this OID",
                self.target.name,
                dotted(&bad.oid),
                bad.problem,
            );
            self.bad.insert(bad.oid);
        }
    }

    async fn failed(&mut self, what: &str, error: &async_snmp::Error) {
        let mut explained = explain(error, &self.target.credentials);
        if error.kind() == ErrorKind::Timeout
            && matches!(self.target.credentials, Credentials::V3 { .. })
            && self.engine_answers().await
        {
            // A device's report of a wrong passphrase is unauthenticated,
            // so the client rightly does not trust it and waits on to the
            // timeout; the engine discovery answering tells the two apart.
            explained = format!(
                "{error}: the device answers SNMPv3 engine discovery but not our authenticated requests: check the SNMPv3 user, protocols and passphrases"
            );
        }
        tracing::warn!(
            poller = self.poller,
            target = %self.target.name,
            "{}: {what}: {explained}",
            self.target.name,
        );
        if ends_target(error) {
            self.silent = true;
        }
    }

    /// Whether the device answers an (unauthenticated) engine discovery
    /// within one timeout.
    async fn engine_answers(&self) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.client.rediscover_engine()).await,
            Ok(Ok(()))
        )
    }

    fn no_value(&self, oid: &Oid, why: NoValue) {
        tracing::info!(
            poller = self.poller,
            target = %self.target.name,
            oid = %dotted(oid),
            "{}: {}: {why}",
            self.target.name,
            dotted(oid)
        );
    }

    /// The varbinds of the subtree at `oid`: all of them, or (logged) those
    /// read before the walk hit `max_rows_per_walk`, the poll's deadline or
    /// an OID out of order. `None` (logged) if the walk failed otherwise,
    /// in which case what it had read is dropped, as the Python agents drop
    /// it.
    async fn walk(&mut self, oid: &Oid) -> Option<Vec<VarBind>> {
        let what = || format!("walk {}", dotted(oid));
        if !self.may_ask(&what) {
            return None;
        }
        let mut stream = match self.client.walk(oid.clone()) {
            Ok(stream) => stream,
            Err(error) => {
                self.failed(&what(), &error).await;
                return None;
            }
        };
        let mut rows: Vec<VarBind> = Vec::new();
        let end = loop {
            match tokio::time::timeout_at(self.deadline.at, stream.next()).await {
                Err(_) => break Ok(WalkEnd::Deadline),
                Ok(None) => break Ok(WalkEnd::Complete),
                Ok(Some(Ok(varbind))) => rows.push(varbind),
                Ok(Some(Err(error))) => match *error {
                    async_snmp::Error::WalkAborted {
                        reason: WalkAbortReason::ResultLimitExceeded { .. },
                        ..
                    } => break Ok(WalkEnd::RowLimit),
                    async_snmp::Error::WalkAborted { reason, .. } => {
                        break Ok(WalkEnd::Order(reason))
                    }
                    _ => break Err(error),
                },
            }
        };
        drop(stream);
        self.report_bad_values();
        let end = match end {
            Ok(end) => end,
            Err(error) => {
                if !ends_target(&error) {
                    self.answered = true;
                }
                self.failed(&what(), &error).await;
                return None;
            }
        };
        if !rows.is_empty() || matches!(end, WalkEnd::Complete | WalkEnd::Order(_)) {
            self.answered = true;
        }
        self.ended(oid, end, &rows);
        Some(rows)
    }

    /// Logs how the walk of `oid` ended, if it was cut.
    fn ended(&mut self, oid: &Oid, end: WalkEnd, rows: &[VarBind]) {
        let what = || format!("walk {}", dotted(oid));
        let last = rows
            .last()
            .map_or_else(|| dotted(oid), |varbind| dotted(&varbind.oid));
        match end {
            WalkEnd::Complete => {}
            WalkEnd::Deadline => {
                self.passed_deadline(&format!("{} (cut after {} rows)", what(), rows.len()))
            }
            WalkEnd::RowLimit => tracing::warn!(
                poller = self.poller,
                target = %self.target.name,
                oid = %dotted(oid),
                bound = "max_rows_per_walk",
                "{}: {}: the subtree has more than {} rows (max_rows_per_walk); the first {} are kept, the rest (after {last}) are not read",
                self.target.name,
                what(),
                self.max_rows,
                rows.len(),
            ),
            WalkEnd::Order(reason) => tracing::warn!(
                poller = self.poller,
                target = %self.target.name,
                oid = %dotted(oid),
                bound = "increasing OIDs",
                "{}: {}: the device answered an OID that does not follow {last} ({reason}), so the walk would never end; stopped, the {} rows before it are posted",
                self.target.name,
                what(),
                rows.len(),
            ),
        }
    }

    /// The varbinds of each subtree of `oids`, as [`Session::walk`] reads
    /// each alone (the same rows, bounds and messages), but for SNMPv2c and
    /// v3 read together: one GETBULK asks for every column still open
    /// ([`multiwalk`]). SNMPv1 has no GETBULK: one walk after the other.
    async fn walks(&mut self, oids: &[Oid]) -> Vec<Option<Vec<VarBind>>> {
        if oids.len() < 2 || matches!(self.target.credentials, Credentials::V1(_)) {
            let mut walks = Vec::with_capacity(oids.len());
            for oid in oids {
                walks.push(self.walk(oid).await);
            }
            return walks;
        }
        if !self.may_ask(&|| format!("walk {}", dotted(&oids[0]))) {
            return vec![None; oids.len()];
        }
        let mut walk = MultiWalk::new(oids, self.max_rows);
        // The first request asks for the table as the last poll read it;
        // the later ones (the table grew, or the device cut a response
        // short) for at least `max_repetitions` rows.
        let ceiling =
            multiwalk::ceiling(self.max_repetitions, self.max_repetitions_set, oids.len());
        let sizing = *self.sizings.of(oids);
        if let Some(rows) = sizing.rows() {
            walk.expect(rows);
        }
        let mut next = sizing.first(self.max_repetitions, ceiling);
        let mut max_repetitions = sizing.later(self.max_repetitions, ceiling);
        let mut limit = None;
        let mut clean = true;
        // Columns whose rows are dropped (the target stopped answering) or
        // read again alone (the device refused the request with an error
        // status, which a walk of the faulty column alone meets too).
        let mut dropped = Vec::new();
        let mut alone = Vec::new();
        while let Some(request) = walk.request() {
            let repetitions = walk.repetitions(&request, next);
            let result = tokio::time::timeout_at(
                self.deadline.at,
                self.client.get_bulk(&request.oids, 0, repetitions),
            )
            .await;
            self.report_bad_values();
            match result {
                Err(_) => {
                    let cut: Vec<String> = walk
                        .open()
                        .map(|(base, rows)| {
                            format!("walk {} (cut after {rows} rows)", dotted(base))
                        })
                        .collect();
                    self.passed_deadline(&cut.join(", "));
                    clean = false;
                    break;
                }
                Ok(Ok(varbinds)) => {
                    self.answered = true;
                    walk.absorb(&request, varbinds);
                    next = max_repetitions;
                }
                Ok(Err(error)) => {
                    if repetitions > 1
                        && matches!(
                            &*error,
                            async_snmp::Error::Snmp {
                                status: ErrorStatus::TooBig,
                                ..
                            }
                        )
                    {
                        // The response would not fit the device's message
                        // size: ask for fewer rows, as a walk does.
                        max_repetitions = (repetitions / 2).max(1);
                        next = max_repetitions;
                        limit = Some(max_repetitions);
                        continue;
                    }
                    if error.kind() == ErrorKind::Timeout && repetitions > self.max_repetitions {
                        // A device may be too slow for a large request:
                        // the next poll asks for no more than the setting,
                        // rather than time out every other poll.
                        limit = Some(self.max_repetitions);
                    }
                    if ends_target(&error) {
                        let what = match request.oids.len() {
                            1 => format!("walk {}", dotted(&oids[request.columns[0]])),
                            n => format!(
                                "walk {} and {} other column(s) read with it",
                                dotted(&oids[request.columns[0]]),
                                n - 1
                            ),
                        };
                        self.failed(&what, &error).await;
                        dropped = request.columns;
                    } else {
                        self.answered = true;
                        alone = request.columns;
                    }
                    clean = false;
                    break;
                }
            }
        }
        let sizing = self.sizings.of(oids);
        sizing.learn(if clean { walk.longest() } else { None });
        if let Some(rows) = limit {
            sizing.limit(rows);
        }
        let mut walks: Vec<Option<Vec<VarBind>>> = Vec::with_capacity(oids.len());
        for (c, (rows, end)) in walk.finish().into_iter().enumerate() {
            if dropped.contains(&c) {
                walks.push(None);
            } else if alone.contains(&c) {
                walks.push(self.walk(&oids[c]).await);
            } else {
                let end = match end {
                    // Cut by the deadline, logged above.
                    None => WalkEnd::Complete,
                    Some(multiwalk::End::Complete) => WalkEnd::Complete,
                    Some(multiwalk::End::RowLimit) => WalkEnd::RowLimit,
                    Some(multiwalk::End::Order(reason)) => WalkEnd::Order(reason),
                };
                self.ended(&oids[c], end, &rows);
                walks.push(Some(rows));
            }
        }
        walks
    }

    /// Reads a `get` or a `table`; subtrees are read by [`Session::walks`]
    /// and made into datapoints by [`Session::walked`].
    async fn read(&mut self, read: &Read, out: &mut Vec<DataPoint>) {
        match read {
            Read::Get(columns) => self.get(columns, out).await,
            Read::Table(table) => self.table(table, out).await,
            Read::PythonIfMib | Read::PythonWalk { .. } | Read::Walk(_) => {}
        }
    }

    /// Adds the datapoints of the walk `read` names, from its `rows`.
    fn walked(&self, read: &Read, rows: Vec<VarBind>, out: &mut Vec<DataPoint>) {
        match read {
            Read::PythonWalk {
                address,
                multiplier,
                ..
            } => {
                for varbind in rows {
                    let Ok(reading) = convert::reading(&varbind.value, Octets::Latin1) else {
                        continue;
                    };
                    let (value, data_type) = convert::python_snmpd(reading, *multiplier);
                    out.push(
                        DataPoint::new(address.clone(), value, data_type, now_ms()).with_metadata(
                            Metadata::new(Text::Static(OID_METADATA_KEY), dotted(&varbind.oid)),
                        ),
                    );
                }
            }
            Read::Walk(column) => {
                for varbind in rows {
                    let instance =
                        Metadata::new(Text::Static(OID_METADATA_KEY), dotted(&varbind.oid));
                    self.push(column, &varbind, vec![instance], out);
                }
            }
            Read::PythonIfMib | Read::Get(_) | Read::Table(_) => {}
        }
    }

    /// Adds the datapoint `column` makes of `varbind`, or logs why none.
    fn push(
        &self,
        column: &Column,
        varbind: &VarBind,
        metadata: Vec<Metadata>,
        out: &mut Vec<DataPoint>,
    ) {
        let key = Text::from(column.key.as_str());
        self.push_keyed(column, key, &column.metadata, varbind, metadata, out);
    }

    /// [`Session::push`] with the column's key and metadata given (shared
    /// by a table's datapoints).
    fn push_keyed(
        &self,
        column: &Column,
        key: Text,
        extra: &[Metadata],
        varbind: &VarBind,
        mut metadata: Vec<Metadata>,
        out: &mut Vec<DataPoint>,
    ) {
        if !self.bad.is_empty() && self.bad.contains(&varbind.oid) {
            return;
        }
        let reading = match convert::reading(&varbind.value, Octets::Utf8OrHex) {
            Ok(reading) => reading,
            Err(why) => return self.no_value(&varbind.oid, why),
        };
        let (value, data_type) = convert::native(reading, column.multiplier, column.offset);
        metadata.extend(extra.iter().cloned());
        let mut datapoint =
            DataPoint::new(key, value, column.data_type.unwrap_or(data_type), now_ms());
        datapoint.metadata = metadata;
        out.push(datapoint);
    }

    async fn get(&mut self, columns: &[Column], out: &mut Vec<DataPoint>) {
        let oids: Vec<Oid> = columns.iter().map(|c| c.oid.clone()).collect();
        let what = match oids.as_slice() {
            [one] => format!("GET {}", dotted(one)),
            many => format!("GET of {} OIDs from {}", many.len(), dotted(&many[0])),
        };
        if !self.may_ask(&|| what.clone()) {
            return;
        }
        // The client splits the list into requests of at most
        // `max_oids_per_request` and halves a request the device answers
        // with tooBig.
        let result = tokio::time::timeout_at(self.deadline.at, self.client.get_many(&oids)).await;
        self.report_bad_values();
        let Ok(result) = result else {
            self.passed_deadline(&what);
            return;
        };
        match result {
            Ok(response) => {
                self.answered = true;
                for (column, varbind) in columns.iter().zip(&response.varbinds) {
                    if varbind.oid != column.oid {
                        tracing::warn!(
                            poller = self.poller,
                            target = %self.target.name,
                            "{}: GET {}: the device answered for {} instead; ignored",
                            self.target.name,
                            dotted(&column.oid),
                            dotted(&varbind.oid)
                        );
                        continue;
                    }
                    self.push(column, varbind, Vec::new(), out);
                }
            }
            Err(error) => {
                if !ends_target(&error) {
                    self.answered = true;
                }
                self.failed(&what, &error).await;
            }
        }
    }

    async fn table(&mut self, table: &Table, out: &mut Vec<DataPoint>) {
        // Row index (the OID's arcs after the column) and varbind, per
        // column, in order of the index; both borrowed from the walks'
        // answers.
        type Rows<'v> = Vec<(&'v [u32], &'v VarBind)>;
        fn rows_of<'v>(varbinds: &'v [VarBind], column: &Oid) -> Rows<'v> {
            let mut rows: Rows = varbinds
                .iter()
                .filter_map(|vb| Some((vb.oid.arcs().get(column.len()..)?, vb)))
                .collect();
            // A walk's OIDs increase, so this sorts nothing; the last of
            // a repeated index wins, as it would in a map.
            if !rows.is_sorted_by(|a, b| a.0 < b.0) {
                rows.reverse();
                rows.sort_by(|a, b| a.0.cmp(b.0));
                rows.dedup_by(|later, first| later.0 == first.0);
            }
            rows
        }
        fn find<'v, T>(rows: &'v [(&[u32], T)], index: &[u32]) -> Option<&'v T> {
            let at = rows.binary_search_by(|(i, _)| (*i).cmp(index)).ok()?;
            Some(&rows[at].1)
        }
        // Labels and columns in one multi-column walk; then, together, the
        // fallbacks of the columns that lack a row the first label has.
        let oids: Vec<Oid> = (table.labels.iter().map(|l| l.oid.clone()))
            .chain(table.columns.iter().map(|c| c.oid.clone()))
            .collect();
        let walked: Vec<Vec<VarBind>> = self
            .walks(&oids)
            .await
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let (label_walks, column_walks) = walked.split_at(table.labels.len());
        let labels: Vec<(&Label, Rows)> = table
            .labels
            .iter()
            .zip(label_walks)
            .map(|(label, rows)| (label, rows_of(rows, &label.oid)))
            .collect();
        let mut columns: Vec<(&Column, Rows)> = table
            .columns
            .iter()
            .zip(column_walks)
            .map(|(column, rows)| (column, rows_of(rows, &column.oid)))
            .collect();
        let lacking: Vec<usize> = (0..columns.len())
            .filter(|&c| {
                let (column, rows) = &columns[c];
                column.fallback.is_some()
                    && (rows.is_empty()
                        || labels
                            .first()
                            .is_some_and(|(_, l)| l.iter().any(|(index, _)| find(rows, index).is_none())))
            })
            .collect();
        let fallbacks: Vec<Oid> = lacking
            .iter()
            .filter_map(|&c| columns[c].0.fallback.clone())
            .collect();
        let older: Vec<Vec<VarBind>> = self
            .walks(&fallbacks)
            .await
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        for ((c, fallback), older) in lacking.into_iter().zip(&fallbacks).zip(&older) {
            let rows = &mut columns[c].1;
            let known = rows.len();
            for (index, vb) in rows_of(older, fallback) {
                if find(&rows[..known], index).is_none() {
                    rows.push((index, vb));
                }
            }
            rows.sort_by(|a, b| a.0.cmp(b.0));
        }
        // A row's metadata (its index and labels) is made once and shared
        // by the row's datapoints, as are the keys: a datapoint then costs
        // one allocation (its list of metadata), not one per text.
        // The texts are the poller's, the same as last poll's where they
        // are the same (see `SnmpPoller::texts`).
        let mut texts = lock(self.texts);
        let label_keys: Vec<Text> = table
            .labels
            .iter()
            .map(|label| Text::from(texts.text(&label.key)))
            .collect();
        // Each row's metadata by its index, in order of the index.
        let mut row_metadata: Vec<(&[u32], Vec<Metadata>)> = Vec::new();
        let mut index = String::new();
        let mut row_of = |arcs: &[u32], texts: &mut TextSet| {
            let mut row = Vec::with_capacity(1 + labels.len());
            index_text(arcs, &mut index);
            row.push(Metadata::new(
                Text::Static(INDEX_METADATA_KEY),
                Text::from(texts.text(&index)),
            ));
            for ((label, label_rows), key) in labels.iter().zip(&label_keys) {
                let Some(text) = find(label_rows, arcs).and_then(|vb| label_text(&vb.value)) else {
                    continue;
                };
                row.push(Metadata {
                    key: key.clone(),
                    value: Text::from(texts.text(&text)),
                    update_checksum: label.update_checksum,
                });
            }
            row
        };
        for (column, rows) in &columns {
            let key = Text::from(texts.text(&column.key));
            let extra: Vec<Metadata> = column.metadata.iter().map(Metadata::shared).collect();
            for &(arcs, varbind) in rows {
                let at = match row_metadata.binary_search_by(|(i, _)| (*i).cmp(arcs)) {
                    Ok(at) => at,
                    Err(at) => {
                        row_metadata.insert(at, (arcs, row_of(arcs, &mut texts)));
                        at
                    }
                };
                let row = &row_metadata[at].1;
                let mut metadata = Vec::with_capacity(row.len() + extra.len());
                metadata.extend(row.iter().cloned());
                self.push_keyed(column, key.clone(), &extra, varbind, metadata, out);
            }
        }
    }
}

/// A table row's index as its metadata shows it (`2`, `10.0.0.1`), in
/// `text`.
fn index_text(index: &[u32], text: &mut String) {
    text.clear();
    for (i, arc) in index.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(itoa::Buffer::new().format(*arc));
    }
}

/// A label's value as metadata: its text, or `None` when it cannot be
/// decoded or is blank.
fn label_text(value: &async_snmp::Value) -> Option<String> {
    let text = match convert::reading(value, Octets::Utf8OrHex).ok()? {
        convert::Reading::Text(text) => text,
        convert::Reading::Integer(v, _) => v.to_string(),
        convert::Reading::Float(v) => crate::model::python::float_to_string(v),
    };
    (!text.trim().is_empty()).then_some(text)
}
