//! Reading the post bodies the agent sends: the pattoo wire format keeps
//! each distinct (key, value) pair once in `key_value_pairs` and lists a
//! datapoint as the ids of its pairs in `datapoint_pairs`.

use serde_json::Value;

/// One datapoint of a body: its (key, value) pairs in the order sent.
pub type Pairs = Vec<(String, Value)>;

/// Every datapoint of `body`, its pairs looked up by id, in the order sent.
pub fn datapoints(body: &Value) -> Vec<Pairs> {
    let pairs = &body["pattoo_datapoints"]["key_value_pairs"];
    body["pattoo_datapoints"]["datapoint_pairs"]
        .as_array()
        .expect("datapoint_pairs is a list")
        .iter()
        .map(|ids| {
            ids.as_array()
                .expect("a datapoint is a list of ids")
                .iter()
                .map(|id| {
                    let pair = &pairs[id.as_u64().expect("ids are integers").to_string()];
                    (
                        pair[0].as_str().expect("pair key").to_owned(),
                        pair[1].clone(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The value of the pair `key` of a datapoint.
pub fn value_of<'a>(pairs: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Each datapoint of `body` in the form the compatibility recordings of the
/// Python agents' posts keep, one line each: `[target, key, data type,
/// value, metadata, checksum]`, the metadata the pairs other than the
/// datapoint's own `pattoo_` keys, in the order sent. A missing key is
/// `null`.
pub fn as_recorded(body: &Value) -> Vec<Value> {
    datapoints(body)
        .into_iter()
        .map(|pairs| {
            let get = |key: &str| value_of(&pairs, key).cloned().unwrap_or(Value::Null);
            let metadata: Vec<Value> = pairs
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "pattoo_key"
                            | "pattoo_value"
                            | "pattoo_data_type"
                            | "pattoo_checksum"
                            | "pattoo_timestamp"
                    )
                })
                .map(|(k, v)| serde_json::json!([k, v]))
                .collect();
            serde_json::json!([
                get("pattoo_agent_polled_target"),
                get("pattoo_key"),
                get("pattoo_data_type"),
                get("pattoo_value"),
                metadata,
                get("pattoo_checksum"),
            ])
        })
        .collect()
}
