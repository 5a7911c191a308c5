//! Values a device encoded so that they cannot be decoded, found in the raw
//! SNMPv1/v2c response before the client decodes it.
//!
//! The client either reads such a value as something the device did not
//! send (an INTEGER of 5 bytes truncated, a zero-length Counter64 as 0) or
//! rejects the whole answer, so every other value in it is lost and the
//! request ends in a timeout. Here each undecodable value is replaced by
//! NULL, which posts nothing, and reported with its OID and what was
//! wrong; the rest of the answer is read as usual. A message that needs no
//! replacing is passed on byte for byte. Pure: unit tested below.
//!
//! SNMPv3 messages are left alone: their integrity check covers every byte
//! (and with privacy the values are encrypted), so the client decodes them
//! and is told to reject what it cannot decode exactly.

use async_snmp::Oid;

/// A value that could not be decoded: where, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    pub oid: Oid,
    pub problem: String,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OBJECT_IDENTIFIER: u8 = 0x06;
const IP_ADDRESS: u8 = 0x40;
const COUNTER32: u8 = 0x41;
const GAUGE32: u8 = 0x42;
const TIME_TICKS: u8 = 0x43;
const COUNTER64: u8 = 0x46;
const UINTEGER32: u8 = 0x47;
const RESPONSE: u8 = 0xa2;

/// The message with each undecodable value replaced by NULL, and what was
/// replaced; `None` when nothing needs replacing, or when the message is
/// not an SNMPv1/v2c response this can read (then the client judges it).
pub fn screen(message: &[u8]) -> Option<(Vec<u8>, Vec<BadValue>)> {
    let message = Element::read(message, Some(SEQUENCE))?;
    let version = Element::read(message.contents, Some(INTEGER))?;
    if !matches!(version.contents, [0] | [1]) {
        return None;
    }
    let community = Element::read(version.rest, Some(OCTET_STRING))?;
    let pdu = Element::read(community.rest, Some(RESPONSE))?;
    let request_id = Element::read(pdu.contents, None)?;
    let error_status = Element::read(request_id.rest, None)?;
    let error_index = Element::read(error_status.rest, None)?;
    let list = Element::read(error_index.rest, Some(SEQUENCE))?;
    if !pdu.rest.is_empty() || !list.rest.is_empty() {
        return None;
    }
    let mut bad = Vec::new();
    // Built only once a value needs replacing: most answers need none, and
    // are then read without a copy.
    let mut varbinds: Option<Vec<u8>> = None;
    let mut rest = list.contents;
    while !rest.is_empty() {
        let start = list.contents.len() - rest.len();
        let varbind = Element::read(rest, Some(SEQUENCE))?;
        rest = varbind.rest;
        let name = Element::read(varbind.contents, Some(OBJECT_IDENTIFIER))?;
        let value = Element::read(name.rest, None)?;
        if !value.rest.is_empty() {
            return None;
        }
        match problem(value.tag, value.contents) {
            None => {
                if let Some(varbinds) = &mut varbinds {
                    varbinds.extend_from_slice(varbind.whole);
                }
            }
            Some(problem) => {
                let oid = Oid::from_ber(name.contents).ok()?;
                bad.push(BadValue { oid, problem });
                let varbinds = varbinds.get_or_insert_with(|| {
                    let mut before = Vec::with_capacity(list.contents.len());
                    before.extend_from_slice(&list.contents[..start]);
                    before
                });
                let replaced = [name.whole, &[NULL, 0]].concat();
                varbinds.extend(encode(SEQUENCE, &replaced));
            }
        }
    }
    let varbinds = varbinds?;
    let pdu = [
        request_id.whole,
        error_status.whole,
        error_index.whole,
        &encode(SEQUENCE, &varbinds),
    ]
    .concat();
    let body = [version.whole, community.whole, &encode(RESPONSE, &pdu)].concat();
    let mut out = encode(SEQUENCE, &body);
    out.extend_from_slice(message.rest);
    Some((out, bad))
}

/// What is wrong with a value of this tag and contents, if anything. Types
/// this does not know are the client's to judge.
fn problem(tag: u8, contents: &[u8]) -> Option<String> {
    let len = contents.len();
    let unsigned = |contents: &[u8]| {
        contents
            .iter()
            .fold(0u128, |v, b| (v << 8) | u128::from(*b))
    };
    match tag {
        INTEGER => {
            if len == 0 {
                return Some("a zero-length INTEGER".to_owned());
            }
            if len > 8 {
                return Some(format!(
                    "an INTEGER of {len} bytes (at most 4 hold an Integer32)"
                ));
            }
            let negative = contents[0] & 0x80 != 0;
            let value = contents
                .iter()
                .fold(if negative { -1i64 } else { 0 }, |v, b| {
                    (v << 8) | i64::from(*b)
                });
            (i32::try_from(value).is_err()).then(|| {
                format!("an INTEGER of {len} bytes holding {value}, outside Integer32's range")
            })
        }
        COUNTER32 | GAUGE32 | TIME_TICKS | UINTEGER32 => {
            let name = match tag {
                COUNTER32 => "Counter32",
                GAUGE32 => "Gauge32",
                TIME_TICKS => "TimeTicks",
                _ => "Unsigned32",
            };
            if len == 0 {
                return Some(format!("a zero-length {name}"));
            }
            if len > 9 || (len == 9 && contents[0] != 0) {
                return Some(format!("a {name} of {len} bytes"));
            }
            let value = unsigned(contents);
            (value > u128::from(u32::MAX))
                .then(|| format!("a {name} of {len} bytes holding {value}, beyond 32 bits"))
        }
        COUNTER64 => {
            if len == 0 {
                return Some("a zero-length Counter64".to_owned());
            }
            (len > 9 || (len == 9 && contents[0] != 0))
                .then(|| format!("a Counter64 of {len} bytes, beyond 64 bits"))
        }
        IP_ADDRESS => (len != 4).then(|| format!("an IpAddress of {len} bytes (4 expected)")),
        NULL => (len != 0).then(|| format!("a NULL with {len} bytes of contents")),
        OBJECT_IDENTIFIER => Oid::from_ber(contents)
            .is_err()
            .then(|| format!("a malformed OBJECT IDENTIFIER of {len} bytes")),
        _ => None,
    }
}

/// One BER element: its tag, its contents, the whole element and what
/// follows it.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Element<'a> {
    /// The element at the start of `data`, if it is one (definite lengths
    /// of up to 4 bytes) and, when `tag` is given, of that tag.
    fn read(data: &'a [u8], tag: Option<u8>) -> Option<Self> {
        let found = *data.first()?;
        if tag.is_some_and(|tag| tag != found) {
            return None;
        }
        let first = *data.get(1)?;
        let (len, header) = match first {
            0..=0x7f => (usize::from(first), 2),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                let bytes = data.get(2..2 + n)?;
                let len = bytes.iter().fold(0usize, |v, b| (v << 8) | usize::from(*b));
                (len, 2 + n)
            }
            _ => return None,
        };
        let end = header.checked_add(len)?;
        let whole = data.get(..end)?;
        Some(Element {
            tag: found,
            contents: &whole[header..],
            whole,
            rest: &data[end..],
        })
    }
}

/// A BER element with the shortest length form.
fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_NAME: &[u8] = &[0x2b, 6, 1, 2, 1, 1, 5, 0];
    const SYS_UPTIME: &[u8] = &[0x2b, 6, 1, 2, 1, 1, 3, 0];

    fn response(varbinds: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let list: Vec<u8> = varbinds
            .iter()
            .flat_map(|(oid, tag, value)| {
                encode(
                    SEQUENCE,
                    &[encode(OBJECT_IDENTIFIER, oid), encode(*tag, value)].concat(),
                )
            })
            .collect();
        let pdu = [
            encode(INTEGER, &[0x12, 0x34]),
            encode(INTEGER, &[0]),
            encode(INTEGER, &[0]),
            encode(SEQUENCE, &list),
        ]
        .concat();
        encode(
            SEQUENCE,
            &[
                encode(INTEGER, &[1]),
                encode(OCTET_STRING, b"public"),
                encode(RESPONSE, &pdu),
            ]
            .concat(),
        )
    }

    #[test]
    fn well_formed_answers_pass_unchanged() {
        let message = response(&[
            (SYS_NAME, OCTET_STRING, b"router"),
            (SYS_UPTIME, TIME_TICKS, &[0x00, 0xff, 0xff, 0xff, 0xff]),
            (
                SYS_UPTIME,
                COUNTER64,
                &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
            (SYS_UPTIME, INTEGER, &[0xff, 0xff, 0xff, 0xfe]),
            (SYS_UPTIME, IP_ADDRESS, &[10, 0, 0, 1]),
        ]);
        assert_eq!(screen(&message), None);
    }

    #[test]
    fn each_undecodable_value_becomes_null_and_the_others_stay() {
        let cases: [(u8, &[u8], &str); 6] = [
            (
                INTEGER,
                &[0x01, 0, 0, 0, 0],
                "INTEGER of 5 bytes holding 4294967296",
            ),
            (COUNTER64, &[], "zero-length Counter64"),
            (
                COUNTER64,
                &[1, 0, 0, 0, 0, 0, 0, 0, 0],
                "Counter64 of 9 bytes",
            ),
            (IP_ADDRESS, &[10, 0, 0, 1, 2], "IpAddress of 5 bytes"),
            (COUNTER32, &[1, 0, 0, 0, 0], "Counter32 of 5 bytes"),
            (INTEGER, &[], "zero-length INTEGER"),
        ];
        for (tag, value, problem) in cases {
            let message = response(&[
                (SYS_NAME, OCTET_STRING, b"router"),
                (SYS_UPTIME, tag, value),
            ]);
            let (screened, bad) = screen(&message).expect("a bad value found");
            assert_eq!(bad.len(), 1);
            assert_eq!(super::super::dotted(&bad[0].oid), ".1.3.6.1.2.1.1.3.0");
            assert!(bad[0].problem.contains(problem), "{:?}", bad[0].problem);
            assert_eq!(
                screened,
                response(&[(SYS_NAME, OCTET_STRING, b"router"), (SYS_UPTIME, NULL, &[])])
            );
        }
    }

    #[test]
    fn long_answers_keep_their_shape_and_v3_and_garbage_are_left_alone() {
        let long = vec![b'x'; 300];
        let message = response(&[
            (SYS_NAME, OCTET_STRING, &long),
            (SYS_UPTIME, COUNTER64, &[]),
        ]);
        let (screened, _) = screen(&message).unwrap();
        assert_eq!(
            screened,
            response(&[(SYS_NAME, OCTET_STRING, &long), (SYS_UPTIME, NULL, &[])])
        );
        let mut v3 = message.clone();
        v3[6] = 3;
        assert_eq!(screen(&v3), None);
        assert_eq!(screen(&message[..message.len() / 2]), None);
        assert_eq!(screen(&[]), None);
    }
}
