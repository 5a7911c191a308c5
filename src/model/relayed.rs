//! A post body another agent made (a spoke's answer to a hub), to be
//! posted whole under the relaying agent's id.
//!
//! The Python hub (`pattoo_shared`'s `PassiveAgent.relay`) reads the answer
//! with `json.loads` and posts it with `requests.post(json=...)`: the same
//! JSON value, re-serialised by Python. [`RelayedBody::from_answer`] does
//! the same ([`super::python_json`]), so the server receives what a Python
//! hub would have posted, byte for byte: the spoke's agent id, host names,
//! programs and checksums stay as they are, nothing is renormalised or
//! split. Unlike the Python hub, an answer the pattoo server would not
//! ingest (not JSON, not an object, not a post body) is refused here
//! rather than posted and cached.

use super::python_json::{self, Json, JsonError};
use super::validate_body;

/// A relayed body, as the relaying agent posts it.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayedBody {
    /// `json.dumps(json.loads(answer))`.
    pub json: Vec<u8>,
    /// How many datapoints it carries.
    pub datapoints: usize,
}

/// Why an answer cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotABody {
    #[error("the answer is not JSON: {0}")]
    NotJson(#[from] JsonError),
    #[error("the answer is JSON but not a pattoo post body: {0}")]
    NotAPostBody(String),
}

impl RelayedBody {
    /// The body a Python hub would post for `answer`, if the pattoo server
    /// would take it.
    pub fn from_answer(answer: &[u8]) -> Result<RelayedBody, NotABody> {
        let value = python_json::loads(answer)?;
        if !matches!(value, Json::Object(_)) {
            return Err(NotABody::NotAPostBody("not a JSON object".to_owned()));
        }
        if value.has_lone_surrogate() {
            return Err(NotABody::NotAPostBody(
                "it holds text with a lone UTF-16 surrogate (such as \\ud800), which the pattoo server cannot store".to_owned(),
            ));
        }
        let json = python_json::dumps(&value).into_bytes();
        let accepted = validate_body(&json).map_err(NotABody::NotAPostBody)?;
        Ok(RelayedBody {
            json,
            datapoints: accepted.datapoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPOKE: &str = r#"{"pattoo_agent_id":"spoke","pattoo_agent_polling_interval":300000,"pattoo_agent_timestamp":1,"pattoo_datapoints":{"datapoint_pairs":[[0,1,2,3,4,5,6,7,8,9]],"key_value_pairs":{"0":["pattoo_agent_polling_interval","300000"],"1":["pattoo_agent_hostname","h\u00e9"],"2":["pattoo_agent_id","spoke"],"3":["pattoo_agent_polled_target","t"],"4":["pattoo_agent_program","pattoo_agent_os_spoked"],"5":["pattoo_key","k"],"6":["pattoo_data_type",101],"7":["pattoo_value",0.0],"8":["pattoo_timestamp",1],"9":["pattoo_checksum","c"]}}}
"#;

    #[test]
    fn a_spoke_answer_is_relayed_as_python_writes_it_again() {
        let relayed = RelayedBody::from_answer(SPOKE.as_bytes()).unwrap();
        assert_eq!(relayed.datapoints, 1);
        let text = String::from_utf8(relayed.json).unwrap();
        assert!(
            text.starts_with(
                r#"{"pattoo_agent_id": "spoke", "pattoo_agent_polling_interval": 300000, "#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#""1": ["pattoo_agent_hostname", "h\u00e9"]"#),
            "{text}"
        );
        assert!(text.contains(r#"["pattoo_value", 0.0]"#), "{text}");
    }

    #[test]
    fn what_the_server_would_not_take_is_refused_with_the_reason() {
        for (answer, expected) in [
            (
                "<html><body>Internal Server Error</body></html>",
                "not JSON",
            ),
            ("", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            (r#"{"pattoo_agent_id": "x"}"#, "exactly the keys"),
            (r#"{"pattoo_agent_id": "\ud800"}"#, "lone UTF-16 surrogate"),
        ] {
            let error = RelayedBody::from_answer(answer.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{answer:?}: {error}");
        }
    }
}
