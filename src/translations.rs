//! `pattoo-agentd translations`: the key and agent translation CSVs for
//! what the configured pollers post, gathered from each poller kind
//! ([`crate::pollers::Kind::translations`]), the pollers' own metadata and
//! the self-monitoring figures ([`crate::telemetry::figures`]): the same
//! tables that make the keys, so the two cannot drift apart.
//!
//! Rows are keyed as pattoo keys them, by agent program: the same key from
//! two programs is two rows. Where two pollers of one program name a key
//! differently, the first in the configuration wins.

use std::collections::BTreeSet;

use crate::config::Settings;
use crate::model::translation::{readable, Language, Row, Translation, LABEL_UNITS};
use crate::model::DataType;
use crate::pollers::KINDS;
use crate::telemetry::figures;

/// The key translation rows for `settings`, in `language`, limited to the
/// agent program `only` when given.
pub fn key_rows(settings: &Settings, language: Language, only: Option<&str>) -> Vec<Row> {
    let mut named: Vec<(String, Vec<Translation>)> = Vec::new();
    for poller in &settings.pollers {
        let mut names = poller.kind.translations(language);
        names.extend(poller.metadata.iter().map(|item| {
            Translation::metadata(item.key.to_string(), readable(&item.key), LABEL_UNITS)
        }));
        named.push((poller.agent_program.clone(), names));
    }
    let own = &settings.agent.self_monitoring;
    if own.enabled {
        named.push((own.agent_program.clone(), self_monitoring(language)));
    }
    for kind in KINDS {
        for (program, names) in (kind.program_translations)(language) {
            named.push((program.to_owned(), names));
        }
    }

    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (program, names) in named {
        if only.is_some_and(|only| only != program) {
            continue;
        }
        for name in names {
            let key = name.pair_key(&program);
            if seen.insert(key.clone()) {
                rows.push(Row {
                    language,
                    key,
                    translation: name.name,
                    units: name.units,
                });
            }
        }
    }
    rows
}

/// The agent translation rows: each agent program posted under, named by
/// what posts under it.
pub fn agent_rows(
    settings: &Settings,
    language: Language,
    only: Option<&str>,
) -> Vec<(Language, String, String)> {
    let Language::English = language;
    let mut programs: Vec<(String, Vec<&str>)> = Vec::new();
    for poller in &settings.pollers {
        let kind = poller.kind.name();
        match programs
            .iter_mut()
            .find(|(p, _)| *p == poller.agent_program)
        {
            Some((_, kinds)) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => {}
            None => programs.push((poller.agent_program.clone(), vec![kind])),
        }
    }
    for kind in KINDS {
        for (program, _) in (kind.program_translations)(language) {
            if !programs.iter().any(|(p, _)| p == program) {
                programs.push((program.to_owned(), vec![kind.name()]));
            }
        }
    }
    let mut rows: Vec<(Language, String, String)> = programs
        .into_iter()
        .map(|(program, kinds)| {
            let name = format!("pattoo-agentd {}", kinds.join(", "));
            (language, program, name)
        })
        .collect();
    let own = &settings.agent.self_monitoring;
    if own.enabled && !rows.iter().any(|(_, p, _)| *p == own.agent_program) {
        rows.push((
            language,
            own.agent_program.clone(),
            "pattoo-agentd self-monitoring".to_owned(),
        ));
    }
    rows.retain(|(_, program, _)| only.is_none_or(|only| only == program));
    rows
}

/// The self-monitoring figures and their metadata.
fn self_monitoring(language: Language) -> Vec<Translation> {
    let Language::English = language;
    let mut names: Vec<Translation> = figures::posted_keys()
        .into_iter()
        .map(|(key, data_type, _)| match figures::english(&key) {
            Some((name, units)) => Translation::datapoint(key, name, units),
            // A figure added without a name (a unit test stops that).
            None => {
                let units = match data_type {
                    DataType::Counter | DataType::Counter64 => "Count / Second",
                    _ => "Value",
                };
                let name = readable(&key);
                Translation::datapoint(key, name, units)
            }
        })
        .collect();
    names.extend(
        figures::POLLER_METADATA
            .iter()
            .map(|(key, name)| Translation::metadata(*key, *name, LABEL_UNITS)),
    );
    names
}
