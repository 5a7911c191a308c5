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
