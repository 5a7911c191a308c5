//! Pollers: each kind reads one sort of source and returns datapoints
//! ([`Polled::Readings`]), or bodies other agents made for it to relay
//! ([`Polled::Relayed`], the hub).
//!
//! A poller does exactly one poll per call and never sleeps or loops; the
//! scheduler owns intervals, timeouts and shutdown.
//!
//! A poller kind is a folder below this one whose `kind.rs` implements
//! [`Kind`], registered by one line in the `kinds!` table at the end of
//! this file. The table makes the closed enums [`PollerKind`], [`Poller`]
//! and [`PollError`] (static dispatch, no boxes) and [`KINDS`], the list
//! that `check`, `once`, self-monitoring, the man page, the README's table
//! of kinds and the configuration loader read; nothing outside a kind's
//! folder and that table names a kind. Each line carries the kind's Cargo
//! feature: a build without it has no such poller and `check` says which
//! feature to build with.

use std::future::Future;
use std::time::Duration;

use serde_norway::Value;

use crate::model::translation::{Language, Translation};
use crate::model::{Metadata, RelayedBody, TargetData};
use crate::yaml::{Document, YamlPath};

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

/// A Python agent's configuration file that a poller kind takes over: left
/// unchanged in the configuration directory, it becomes one poller that
/// posts what the Python agent posted.
#[derive(Debug, Clone, Copy)]
pub struct DropIn {
    /// The file's name in the configuration directory.
    pub file_name: &'static str,
    /// The Python agent's program name: the poller's name and agent program,
    /// so its agent id file is reused.
    pub agent_program: &'static str,
    /// Validates the file's document into the poller; errors go to `doc`.
    pub load: fn(&mut Document) -> Option<PollerSettings>,
}

/// Every Python agent file a poller kind takes over, in the order of the
/// table of kinds and then of each kind's [`Kind::DROP_INS`]: the order
/// their pollers are added. The configuration loader walks this and names
/// no poller kind itself.
pub fn drop_ins() -> impl Iterator<Item = &'static DropIn> {
    KINDS.iter().flat_map(|kind| kind.drop_ins)
}

/// A commented example configuration a kind ships, as a whole
/// `pattoo_agentd.yaml`; `check` accepts each (a test makes sure).
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// Its name under `config/examples/`, where it is also shipped.
    pub file_name: &'static str,
    /// The file itself, kept beside the kind's code.
    pub text: &'static str,
}

/// What one poll gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// Readings, for the model to normalise into bodies under the poller's
    /// identity (agent id, host name, program, interval).
    Readings(Vec<TargetData>),
    /// Bodies other agents made (a hub's spokes' answers): each is posted
    /// whole, as it is, under the poller's agent id.
    Relayed(Vec<RelayedBody>),
}

impl From<Vec<TargetData>> for Polled {
    fn from(targets: Vec<TargetData>) -> Self {
        Polled::Readings(targets)
    }
}

impl Polled {
    /// The readings, if the poll gave readings.
    pub fn readings(self) -> Option<Vec<TargetData>> {
        match self {
            Polled::Readings(targets) => Some(targets),
            Polled::Relayed(_) => None,
        }
    }
}

/// What pollers need to know about the agent they run in.
#[derive(Debug, Clone)]
pub struct PollerEnv {
    /// The target of datapoints read from this host (commands) and the
    /// `pattoo_agent_hostname` of every datapoint.
    pub hostname: String,
}

/// What makes a poller kind: its names, its defaults, the Python files it
/// takes over, its example and manual text, and how to read its settings,
/// describe them, build a poller from them and poll it.
///
/// Implemented by a unit type in the kind's folder (`kind.rs`) and
/// registered by one line in the `kinds!` table below.
pub trait Kind {
    /// The `type:` values, as written in configuration; the first is the
    /// kind's name, and also its Cargo feature and folder.
    const NAMES: &'static [&'static str];
    /// What it polls, in a few words (the README's table of kinds).
    const SUMMARY: &'static str;
    /// The agent program (and so agent id) a poller posts under unless it
    /// names its own.
    const DEFAULT_AGENT_PROGRAM: &'static str;
    /// The Python agents' files this kind takes over (see [`DropIn`]).
    const DROP_INS: &'static [DropIn] = &[];
    /// Commented example configurations.
    const EXAMPLES: &'static [Example];
    /// The kind's section of the manual page, in roff, starting with its
    /// `.SH` line.
    const MANUAL: &'static str;
    /// Log targets of the kind's protocol library that log, without the
    /// poller, target and address, failures the poller logs with them;
    /// they are heard only at the `debug` level.
    const QUIET_LIBRARIES: &'static [&'static str] = &[];

    /// Validated settings, one per configured poller.
    type Settings: std::fmt::Debug + Clone + PartialEq;
    /// A poller ready to poll: its settings plus whatever it keeps between
    /// polls (connections, clients).
    type Poller: std::fmt::Debug + Send;
    /// Why a whole poll failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Validates the kind-specific keys of a poller entry (`value` holds the
    /// entry without the keys every poller shares); errors go to `doc`,
    /// located under `path`.
    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self::Settings>;

    /// One line saying what the poller reads, for `check`.
    fn describe(settings: &Self::Settings) -> String;

    /// What `check` calls the poller's type: by default the kind's name.
    fn shown_type(_settings: &Self::Settings) -> String {
        Self::NAMES[0].to_owned()
    }

    /// The `poller_type` of the agent's own figures (self-monitoring, the
    /// metrics page, the state file): by default the kind's name. A kind
    /// whose label has been another keeps that one, since a new label
    /// starts new series.
    fn label(_settings: &Self::Settings) -> &'static str {
        Self::NAMES[0]
    }

    /// The names and units, in `language`, of the keys a poller of this
    /// kind posts that it knows before polling: its fixed keys and
    /// metadata keys, and configured keys with the `description` and
    /// `units` written beside them (or a readable default). By default
    /// none: a kind whose keys come only from what it reads (a hub) leaves
    /// them unnamed. The poller's own `metadata` is named by the caller.
    fn translations(_settings: &Self::Settings, _language: Language) -> Vec<Translation> {
        Vec::new()
    }

    /// Agent programs that post this kind's keys whatever the
    /// configuration holds (the Python agents' programs, whose series a
    /// server may already have, and those of spokes serving this kind),
    /// each with the names of those keys; by default none.
    fn program_translations(_language: Language) -> ProgramTranslations {
        Vec::new()
    }

    /// Checks what no poller can check alone: pollers of this kind that
    /// share something must agree on it. `pollers` pairs each valid poller
    /// of the kind with where it is written and its name; errors go to
    /// `doc`.
    fn check_together(_doc: &mut Document, _pollers: &[(&YamlPath, &str, &Self::Settings)]) {}

    /// Builds a poller. Does no network I/O; fails only on local problems
    /// (an unreadable CA file, say).
    /// `poller` is the whole entry (name, interval, ...), `settings` its
    /// kind's part.
    fn build(
        poller: &PollerSettings,
        settings: &Self::Settings,
        env: &PollerEnv,
    ) -> anyhow::Result<Self::Poller>;

    /// Polls once: readings, or bodies to relay. Partial results are
    /// `Ok`: a poller reading several targets logs the ones that failed and
    /// returns the rest.
    fn poll(poller: &mut Self::Poller) -> impl Future<Output = Result<Polled, Self::Error>> + Send;

    /// Polls once as [`Kind::poll`] does, handing each target's readings
    /// to `each` as soon as they are complete, in the order `poll` would
    /// return them, so a large poll is never held whole; what it returns
    /// comes after them (readings not handed over yet, or bodies to
    /// relay). By default it calls `poll` and hands over what it returns.
    fn poll_each(
        poller: &mut Self::Poller,
        each: &mut (dyn FnMut(TargetData) + Send),
    ) -> impl Future<Output = Result<Polled, Self::Error>> + Send {
        async move {
            match Self::poll(poller).await? {
                Polled::Readings(targets) => {
                    targets.into_iter().for_each(each);
                    Ok(Polled::Readings(Vec::new()))
                }
                relayed => Ok(relayed),
            }
        }
    }
}

/// Names of keys posted under agent programs a kind always posts under;
/// see [`Kind::program_translations`].
pub type ProgramTranslations = Vec<(&'static str, Vec<Translation>)>;

/// A registered kind as the commands, the manual and the README see it:
/// [`Kind`]'s constants, for the kinds this build has.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    /// See [`Kind::NAMES`].
    pub names: &'static [&'static str],
    /// The Cargo feature that builds it.
    pub feature: &'static str,
    /// Its folder, from the repository's root: `src/pollers/<kind>/`.
    pub folder: &'static str,
    pub summary: &'static str,
    pub default_agent_program: &'static str,
    pub drop_ins: &'static [DropIn],
    pub examples: &'static [Example],
    pub manual: &'static str,
    /// See [`Kind::QUIET_LIBRARIES`].
    pub quiet_libraries: &'static [&'static str],
    /// See [`Kind::program_translations`].
    pub program_translations: fn(Language) -> ProgramTranslations,
}

impl KindInfo {
    /// The kind's name, its first `type:` value.
    pub fn name(&self) -> &'static str {
        self.names[0]
    }
}

/// The table of kinds: one line per kind, `#[cfg(feature = "name")]
/// folder::Type,`, in the order `check` lists them. Makes the modules, the
/// enums that dispatch to each kind, [`KINDS`] and [`LEFT_OUT`].
macro_rules! kinds {
    ($( #[cfg(feature = $feature:literal)] $module:ident :: $kind:ident, )*) => {
        $(
            #[cfg(feature = $feature)]
            pub mod $module;
        )*

        /// Every kind this build has, in the table's order.
        pub const KINDS: &[KindInfo] = &[$(
            #[cfg(feature = $feature)]
            KindInfo {
                names: <$module::$kind as Kind>::NAMES,
                feature: $feature,
                folder: concat!("src/pollers/", stringify!($module), "/"),
                summary: <$module::$kind as Kind>::SUMMARY,
                default_agent_program: <$module::$kind as Kind>::DEFAULT_AGENT_PROGRAM,
                drop_ins: <$module::$kind as Kind>::DROP_INS,
                examples: <$module::$kind as Kind>::EXAMPLES,
                manual: <$module::$kind as Kind>::MANUAL,
                quiet_libraries: <$module::$kind as Kind>::QUIET_LIBRARIES,
                program_translations: <$module::$kind as Kind>::program_translations,
            },
        )*];

        /// The features of the kinds this build leaves out; a poller of one
        /// is refused with the feature to build with.
        pub const LEFT_OUT: &[&str] = &[$(
            #[cfg(not(feature = $feature))]
            $feature,
        )*];

        /// A poller kind's validated settings.
        // One value per configured poller, built once: the size of the
        // largest kind costs nothing worth a box.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum PollerKind {$(
            #[cfg(feature = $feature)]
            $kind(<$module::$kind as Kind>::Settings),
        )*}

        /// A poll failed as a whole; nothing was read.
        #[derive(Debug, thiserror::Error)]
        pub enum PollError {$(
            #[cfg(feature = $feature)]
            #[error(transparent)]
            $kind(<$module::$kind as Kind>::Error),
        )*}

        /// A poller ready to poll: its settings plus whatever state it
        /// keeps between polls (connections, clients).
        #[allow(clippy::large_enum_variant)] // as for PollerKind
        #[derive(Debug)]
        pub enum Poller {$(
            #[cfg(feature = $feature)]
            $kind(<$module::$kind as Kind>::Poller),
        )*}

        impl PollerKind {
            /// Validates the kind-specific keys of a poller entry of
            /// `type: type_name` (`value` holds the entry without the keys
            /// every poller shares).
            pub fn parse(
                type_name: &str,
                doc: &mut Document,
                path: &YamlPath,
                value: &Value,
            ) -> Option<PollerKind> {
                $(
                    #[cfg(feature = $feature)]
                    if <$module::$kind as Kind>::NAMES.contains(&type_name) {
                        return <$module::$kind as Kind>::parse(doc, path, value)
                            .map(PollerKind::$kind);
                    }
                )*
                doc.error(&path.key("type"), unknown_type(type_name));
                None
            }

            /// The kind's name, its first `type:` value.
            pub fn name(&self) -> &'static str {
                match *self {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(_) => <$module::$kind as Kind>::NAMES[0],
                )*}
            }

            /// The `poller_type` of the agent's own figures; see
            /// [`Kind::label`].
            pub fn type_name(&self) -> &'static str {
                match *self {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(ref settings) => <$module::$kind as Kind>::label(settings),
                )*}
            }

            /// What `check` calls the poller's type; see [`Kind::shown_type`].
            pub fn shown_type(&self) -> String {
                match *self {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(ref settings) => <$module::$kind as Kind>::shown_type(settings),
                )*}
            }

            /// The agent program (and so agent id) a poller posts under
            /// unless it names its own.
            pub fn default_agent_program(&self) -> &'static str {
                match *self {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(_) => <$module::$kind as Kind>::DEFAULT_AGENT_PROGRAM,
                )*}
            }

            /// See [`Kind::translations`].
            pub fn translations(&self, language: Language) -> Vec<Translation> {
                let _ = language;
                match *self {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(ref settings) => <$module::$kind as Kind>::translations(settings, language),
                )*}
            }

            /// One line saying what the poller reads, for `check`.
            pub fn describe(&self) -> String {
                match *self {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(ref settings) => <$module::$kind as Kind>::describe(settings),
                )*}
            }
        }

        /// Checks what no poller can check alone: pollers that share
        /// something must agree on it (see [`Kind::check_together`]).
        /// `pollers` pairs each valid poller with where it is written;
        /// errors go to `doc`.
        pub fn check_together(doc: &mut Document, pollers: &[(YamlPath, &PollerSettings)]) {
            $(
                #[cfg(feature = $feature)]
                {
                    let mine: Vec<(&YamlPath, &str, &<$module::$kind as Kind>::Settings)> = pollers
                        .iter()
                        .filter_map(|(path, poller)| match poller.kind {
                            PollerKind::$kind(ref settings) => {
                                Some((path, poller.name.as_str(), settings))
                            }
                            #[allow(unreachable_patterns)]
                            _ => None,
                        })
                        .collect();
                    <$module::$kind as Kind>::check_together(doc, &mine);
                }
            )*
            let _ = (doc, pollers);
        }

        impl Poller {
            /// Builds a poller. Does no network I/O; fails only on local
            /// problems (an unreadable CA file, say).
            pub fn new(settings: &PollerSettings, env: &PollerEnv) -> anyhow::Result<Poller> {
                let _ = env;
                match settings.kind {$(
                    #[cfg(feature = $feature)]
                    PollerKind::$kind(ref kind) => {
                        <$module::$kind as Kind>::build(settings, kind, env).map(Poller::$kind)
                    }
                )*}
            }

            /// Polls once: readings, or bodies to relay. Partial results
            /// are `Ok`: a poller reading several targets logs the ones
            /// that failed and returns the rest.
            pub async fn poll(&mut self) -> Result<Polled, PollError> {
                match *self {$(
                    #[cfg(feature = $feature)]
                    Poller::$kind(ref mut poller) => {
                        <$module::$kind as Kind>::poll(poller).await.map_err(PollError::$kind)
                    }
                )*}
            }

            /// Polls once as [`Poller::poll`] does, handing each target's
            /// readings to `each` as soon as they are complete (see
            /// [`Kind::poll_each`]).
            pub async fn poll_each(
                &mut self,
                each: &mut (dyn FnMut(TargetData) + Send),
            ) -> Result<Polled, PollError> {
                match *self {$(
                    #[cfg(feature = $feature)]
                    Poller::$kind(ref mut poller) => {
                        <$module::$kind as Kind>::poll_each(poller, each)
                            .await
                            .map_err(PollError::$kind)
                    }
                )*}
            }
        }
    };
}

/// Every `type:` value this build accepts, in the table's order.
pub fn type_names() -> Vec<&'static str> {
    KINDS
        .iter()
        .flat_map(|kind| kind.names.iter().copied())
        .collect()
}

/// Why `type: type_name` is refused by this build.
fn unknown_type(type_name: &str) -> String {
    refusal(type_name, &type_names(), LEFT_OUT)
}

/// Why `type: type_name` is refused by a build that has the kinds named
/// `names` and leaves out those of the features `left_out`: a kind it
/// leaves out, or no kind at all.
fn refusal(type_name: &str, names: &[&str], left_out: &[&str]) -> String {
    if left_out.contains(&type_name) {
        return format!(
            "this build has no {type_name} poller; rebuild with --features {type_name}"
        );
    }
    let mut text = format!(
        "unknown poller type `{type_name}`: expected one of {}",
        names.join(", ")
    );
    if !left_out.is_empty() {
        text.push_str(&format!(
            " (this build leaves out {}; rebuild with their --features to have them)",
            left_out.join(", ")
        ));
    }
    text
}

kinds! {
    #[cfg(feature = "modbus")] modbus::Modbus,
    #[cfg(feature = "http")] http::Http,
    #[cfg(feature = "command")] command::Command,
    #[cfg(feature = "snmp")] snmp::Snmp,
    #[cfg(feature = "os")] os::Os,
    #[cfg(feature = "hub")] hub::Hub,
    #[cfg(feature = "bacnet")] bacnet::Bacnet,
    #[cfg(feature = "opcua")] opcua::Opcua,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_the_build_leaves_out_is_refused_with_the_feature_to_build_with() {
        assert_eq!(
            refusal("snmp", &["modbus", "modbus_tcp"], &["http", "snmp"]),
            "this build has no snmp poller; rebuild with --features snmp"
        );
    }

    #[test]
    fn an_unknown_type_is_refused_with_the_types_the_build_has_and_leaves_out() {
        assert_eq!(
            refusal("modbsu", &["modbus", "modbus_tcp"], &["http", "snmp"]),
            "unknown poller type `modbsu`: expected one of modbus, modbus_tcp \
             (this build leaves out http, snmp; rebuild with their --features to have them)"
        );
        assert_eq!(
            refusal("modbsu", &["modbus", "http"], &[]),
            "unknown poller type `modbsu`: expected one of modbus, http"
        );
    }

    #[test]
    fn every_type_name_picks_one_kind_and_each_kind_is_in_one_table_line() {
        let names = type_names();
        for name in &names {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name}");
        }
        for kind in KINDS {
            assert_eq!(kind.name(), kind.feature, "a kind's name is its feature");
            assert!(!LEFT_OUT.contains(&kind.feature));
        }
    }

    /// What `check` says for a poller of every kind this build leaves out.
    #[test]
    fn a_poller_of_a_left_out_kind_is_a_located_configuration_error() {
        for feature in LEFT_OUT {
            let yaml = format!("type: {feature}\n");
            let mut doc =
                Document::parse(std::path::Path::new("pattoo_agentd.yaml"), &yaml).unwrap();
            let root = doc.root.clone();
            assert!(PollerKind::parse(feature, &mut doc, &YamlPath::root(), &root).is_none());
            let errors: Vec<String> = doc.into_errors().iter().map(ToString::to_string).collect();
            assert_eq!(
                errors,
                [format!(
                    "pattoo_agentd.yaml:1:1: type: this build has no {feature} poller; \
                     rebuild with --features {feature}"
                )]
            );
        }
    }
}
