//! Translations: the human name and unit pattoo shows for a key, and the
//! CSV files `pattoo_cli.py import key_translation` and `import
//! agent_translation` read.
//!
//! pattoo looks a translation up by `{agent_program}_{key}`, with the
//! datapoint key as posted and a metadata key with its words joined by `_`
//! (the server rewrites metadata keys so before storing them). The importer
//! reads the CSV with pandas: headings exactly `language,key,translation,
//! units`; an empty cell becomes the text `nan`, so no cell is ever left
//! empty here.

use std::fmt;

use super::normalise_key;

/// A language pattoo knows by its code (`pt_language.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
}

impl Language {
    /// Every language names are written in; the first is the default.
    pub const ALL: &'static [Language] = &[Language::English];

    /// The code pattoo's `pattoo.yaml` `language` and the importer use.
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
        }
    }

    /// The language of a code, ignoring case.
    pub fn from_code(code: &str) -> Option<Language> {
        Language::ALL
            .iter()
            .copied()
            .find(|language| language.code().eq_ignore_ascii_case(code.trim()))
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Whether a key is a datapoint's or a metadata item's: pattoo forms their
/// translation keys differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Datapoint,
    Metadata,
}

/// A key's name and unit in one language, as a kind or the configuration
/// gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The key as the poller writes it (normalised when the row is made).
    pub key: String,
    pub role: Role,
    pub name: String,
    pub units: String,
}

impl Translation {
    pub fn datapoint(
        key: impl Into<String>,
        name: impl Into<String>,
        units: impl Into<String>,
    ) -> Self {
        Translation {
            key: key.into(),
            role: Role::Datapoint,
            name: name.into(),
            units: units.into(),
        }
    }

    pub fn metadata(
        key: impl Into<String>,
        name: impl Into<String>,
        units: impl Into<String>,
    ) -> Self {
        Translation {
            key: key.into(),
            role: Role::Metadata,
            name: name.into(),
            units: units.into(),
        }
    }

    /// The key pattoo looks this translation up by, for `agent_program`.
    pub fn pair_key(&self, agent_program: &str) -> String {
        let key = match self.role {
            Role::Datapoint => normalise_key(&self.key),
            Role::Metadata => metadata_key(&self.key),
        };
        format!("{agent_program}_{key}")
    }
}

/// The unit of a metadata value: text naming what was read.
pub const LABEL_UNITS: &str = "Label";

/// A metadata key as the pattoo server stores it
/// (`pattoo_shared/converter.py:_keypairs`): its runs of word characters and
/// apostrophes joined with `_`, lowercased, cut at 512 characters.
pub fn metadata_key(key: &str) -> String {
    let words: Vec<&str> = key
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\''))
        .filter(|word| !word.is_empty())
        .collect();
    words.join("_").to_lowercase().chars().take(512).collect()
}

/// A readable default name for a key nobody named: its words, the first
/// capitalised (`input_register_30013` → `Input register 30013`).
pub fn readable(key: &str) -> String {
    let words: Vec<&str> = key
        .split(|c: char| c == '_' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    let text = words.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => key.to_owned(),
    }
}

/// One row of a key translation CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub language: Language,
    pub key: String,
    pub translation: String,
    pub units: String,
}

/// The headings `import key_translation` requires, in this order.
pub const KEY_HEADINGS: &str = "language,key,translation,units";
/// The headings `import agent_translation` requires, in this order.
pub const AGENT_HEADINGS: &str = "language,key,translation";

/// `rows` as the CSV `import key_translation` reads.
pub fn key_csv(rows: &[Row]) -> String {
    let mut text = format!("{KEY_HEADINGS}\n");
    for row in rows {
        let cells = [row.language.code(), &row.key, &row.translation, &row.units];
        text.push_str(&csv_line(&cells));
    }
    text
}

/// Agent program names as the CSV `import agent_translation` reads.
pub fn agent_csv(rows: &[(Language, String, String)]) -> String {
    let mut text = format!("{AGENT_HEADINGS}\n");
    for (language, program, name) in rows {
        text.push_str(&csv_line(&[language.code(), program, name]));
    }
    text
}

fn csv_line(cells: &[&str]) -> String {
    let cells: Vec<String> = cells.iter().map(|cell| csv_cell(cell)).collect();
    format!("{}\n", cells.join(","))
}

/// A cell, quoted where pandas would otherwise split it (`,`, `"`, line
/// ends); texts pandas reads as missing are changed first ([`safe_text`]).
fn csv_cell(cell: &str) -> String {
    let cell = safe_text(cell);
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

/// pandas reads these cells as missing even when quoted, and the importer
/// then stores `nan`; such a text gets a trailing full stop, and an empty
/// one a dash.
const PANDAS_MISSING: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

fn safe_text(cell: &str) -> String {
    let trimmed = cell.trim();
    if trimmed.is_empty() {
        "-".to_owned()
    } else if PANDAS_MISSING.contains(&trimmed) {
        format!("{trimmed}.")
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_have_their_words_joined_as_the_server_stores_them() {
        assert_eq!(metadata_key("opcua server"), "opcua_server");
        assert_eq!(metadata_key("  Poller-Type "), "poller_type");
        assert_eq!(metadata_key("it's  a.key"), "it's_a_key");
        assert_eq!(metadata_key(&"k".repeat(600)).len(), 512);
    }

    #[test]
    fn datapoint_keys_are_prefixed_as_posted_and_metadata_keys_as_stored() {
        let datapoint = Translation::datapoint(" Memory_Total", "Memory", "Bytes");
        assert_eq!(
            datapoint.pair_key("pattoo_agent_os_autonomousd"),
            "pattoo_agent_os_autonomousd_memory_total"
        );
        let meta = Translation::metadata("opcua server", "Server", LABEL_UNITS);
        assert_eq!(
            meta.pair_key("pattoo_agent_opcuad"),
            "pattoo_agent_opcuad_opcua_server"
        );
    }

    #[test]
    fn cells_pandas_would_split_trim_or_read_as_missing_are_written_safely() {
        let rows = [Row {
            language: Language::English,
            key: "k".into(),
            translation: "Temperature, inlet \"A\"".into(),
            units: "NA".into(),
        }];
        assert_eq!(
            key_csv(&rows),
            "language,key,translation,units\nen,k,\"Temperature, inlet \"\"A\"\"\",NA.\n"
        );
        assert_eq!(safe_text(" "), "-");
    }

    #[test]
    fn unnamed_keys_read_as_words() {
        assert_eq!(readable("input_register_30013"), "Input register 30013");
        assert_eq!(readable(".1.3.6.1"), ".1.3.6.1");
        assert_eq!(Language::from_code("EN"), Some(Language::English));
        assert_eq!(Language::from_code("fr"), None);
    }
}
