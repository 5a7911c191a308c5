//! Checks a post body the way the pattoo server and its ingester would
//! (`converter.cache_to_keypairs` and `_make_pattoo_db_record`): exactly the
//! four top-level keys, every reserved key in every datapoint, a known data
//! type. Replay uses it to tell a damaged cache file from a good one; the
//! test receiver uses it to answer as the server does.

use serde_json::Value;

const TOP_LEVEL_KEYS: [&str; 4] = [
    "pattoo_agent_id",
    "pattoo_datapoints",
    "pattoo_agent_polling_interval",
    "pattoo_agent_timestamp",
];

/// Keys every datapoint must carry (`RESERVED_KEYS` less `pattoo_metadata`).
const REQUIRED_DATAPOINT_KEYS: [&str; 10] = [
    "pattoo_checksum",
    "pattoo_data_type",
    "pattoo_key",
    "pattoo_value",
    "pattoo_timestamp",
    "pattoo_agent_id",
    "pattoo_agent_polled_target",
    "pattoo_agent_program",
    "pattoo_agent_hostname",
    "pattoo_agent_polling_interval",
];

const DATA_TYPES: [i64; 5] = [101, 99, 64, 32, 2];

/// What an accepted body says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub agent_id: String,
    pub timestamp: String,
    pub datapoints: usize,
}

/// Checks a body as the pattoo server and ingester would. The error is one
/// line saying what is wrong.
pub fn validate_body(bytes: &[u8]) -> Result<Accepted, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(top) = &value else {
        return Err("body is not a JSON object".into());
    };
    if top.len() != TOP_LEVEL_KEYS.len() || !TOP_LEVEL_KEYS.iter().all(|k| top.contains_key(*k)) {
        let keys: Vec<&str> = top.keys().map(String::as_str).collect();
        return Err(format!(
            "body must have exactly the keys {}; it has {}",
            TOP_LEVEL_KEYS.join(", "),
            keys.join(", ")
        ));
    }
    let Some(Value::Object(datapoints)) = top.get("pattoo_datapoints") else {
        return Err("pattoo_datapoints is not an object".into());
    };
    let pairs = match datapoints.get("key_value_pairs") {
        Some(Value::Object(pairs)) if datapoints.len() == 2 => pairs,
        _ => return Err(
            "pattoo_datapoints must have exactly key_value_pairs (an object) and datapoint_pairs"
                .into(),
        ),
    };
    let Some(Value::Array(rows)) = datapoints.get("datapoint_pairs") else {
        return Err("pattoo_datapoints.datapoint_pairs is not a list".into());
    };
    for (n, row) in rows.iter().enumerate() {
        let Value::Array(ids) = row else {
            return Err(format!("datapoint {n} is not a list of pair ids"));
        };
        let mut item: Vec<(&str, &Value)> = Vec::with_capacity(ids.len());
        for id in ids {
            // The ingester looks pairs up by `str(pair_id)`.
            let id_text = match id {
                Value::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
                Value::String(text) => text.clone(),
                other => return Err(format!("datapoint {n}: pair id {other} is not an integer")),
            };
            let pair = match pairs.get(&id_text) {
                Some(Value::Array(pair)) if pair.len() == 2 => pair,
                _ => {
                    return Err(format!(
                        "datapoint {n}: pair {id_text} is missing or not a [key, value] pair"
                    ))
                }
            };
            let Value::String(key) = &pair[0] else {
                return Err(format!(
                    "datapoint {n}: pair {id_text} has a key that is not text"
                ));
            };
            match item.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = &pair[1],
                None => item.push((key, &pair[1])),
            }
        }
        for required in REQUIRED_DATAPOINT_KEYS {
            if !item.iter().any(|(k, _)| *k == required) {
                return Err(format!("datapoint {n} has no {required}"));
            }
        }
        let data_type = item
            .iter()
            .find(|(k, _)| *k == "pattoo_data_type")
            .map(|(_, v)| *v)
            .expect("checked above");
        let known = match data_type {
            Value::Null => true,
            Value::Number(number) => number
                .as_f64()
                .is_some_and(|code| DATA_TYPES.iter().any(|known| *known as f64 == code)),
            _ => false,
        };
        if !known {
            return Err(format!(
                "datapoint {n} has unknown pattoo_data_type {data_type}"
            ));
        }
    }
    let text = |key: &str| match top.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(Accepted {
        agent_id: text("pattoo_agent_id"),
        timestamp: text("pattoo_agent_timestamp"),
        datapoints: rows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(datapoint: &str) -> String {
        format!(
            r#"{{"pattoo_agent_id": "abc", "pattoo_agent_polling_interval": 10000, "pattoo_agent_timestamp": 1, "pattoo_datapoints": {{"key_value_pairs": {datapoint}, "datapoint_pairs": [[0,1,2,3,4,5,6,7,8,9]]}}}}"#
        )
    }

    const GOOD: &str = r#"{"0": ["pattoo_agent_polling_interval", "10000"], "1": ["pattoo_agent_hostname", "h"], "2": ["pattoo_agent_id", "abc"], "3": ["pattoo_agent_polled_target", "t"], "4": ["pattoo_agent_program", "p"], "5": ["pattoo_key", "k"], "6": ["pattoo_data_type", 99], "7": ["pattoo_value", 1], "8": ["pattoo_timestamp", 1], "9": ["pattoo_checksum", "c"]}"#;

    #[test]
    fn accepts_a_body_the_pattoo_server_would_ingest() {
        let accepted = validate_body(body(GOOD).as_bytes()).unwrap();
        assert_eq!(accepted.agent_id, "abc");
        assert_eq!(accepted.datapoints, 1);
    }

    #[test]
    fn refuses_bodies_the_ingester_would_reject_with_a_reason() {
        let unknown_type =
            GOOD.replace(r#"["pattoo_data_type", 99]"#, r#"["pattoo_data_type", 7]"#);
        let no_checksum = GOOD.replace("pattoo_checksum", "checksum");
        for (bytes, expected) in [
            ("{\"pattoo_agent_id\": ".to_owned(), "not JSON"),
            ("[]".to_owned(), "not a JSON object"),
            (r#"{"pattoo_agent_id": "a"}"#.to_owned(), "exactly the keys"),
            (body(&unknown_type), "unknown pattoo_data_type 7"),
            (body(&no_checksum), "has no pattoo_checksum"),
            (body(r#"{"0": ["a"]}"#), "pair 0 is missing"),
        ] {
            let error = validate_body(bytes.as_bytes()).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains('\n'));
        }
    }
}
