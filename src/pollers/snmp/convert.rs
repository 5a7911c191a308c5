//! From an SNMP varbind's value to a pattoo value and data type: the native
//! poller's rules, and the Python agents' (easysnmp's) rules the drop-ins
//! keep. Pure: unit tested below.

use async_snmp::Value as Snmp;

use super::oid::dotted;
use crate::model::{DataType, Value};

/// What a varbind holds, before any multiplier.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Every integer SNMP type fits an i128, so does ×8 of a Counter64.
    Integer(i128, DataType),
    Float(f64),
    Text(String),
}

/// Why a varbind gives no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoValue {
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
    Null,
    Unknown,
}

impl std::fmt::Display for NoValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoValue::NoSuchObject => "noSuchObject: the device has no such object",
            NoValue::NoSuchInstance => "noSuchInstance: the object has no such instance",
            NoValue::EndOfMibView => "endOfMibView: nothing follows in the device's MIB",
            NoValue::Null => "the device sent NULL",
            NoValue::Unknown => "a value of a type SNMP does not define",
        })
    }
}

/// How octet strings become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Octets {
    /// UTF-8 where valid, else the bytes in hex (`00:11:22:33:44:aa`).
    Utf8OrHex,
    /// Each byte to the code point of the same value, as easysnmp does:
    /// part of the Python agents' checksums.
    Latin1,
}

/// The value of one varbind. Integer32, Gauge32, Unsigned32 and TimeTicks
/// are `int`; Counter32 `counter`; Counter64 `counter64`; strings, IP
/// addresses and OIDs `string`.
pub fn reading(value: &Snmp, octets: Octets) -> Result<Reading, NoValue> {
    Ok(match value {
        Snmp::Integer(v) => Reading::Integer(i128::from(*v), DataType::Int),
        Snmp::Counter32(v) => Reading::Integer(i128::from(*v), DataType::Counter),
        Snmp::Counter64(v) => Reading::Integer(i128::from(*v), DataType::Counter64),
        Snmp::Gauge32(v) | Snmp::UInteger32(v) | Snmp::TimeTicks(v) => {
            Reading::Integer(i128::from(*v), DataType::Int)
        }
        Snmp::Opaque(bytes) => match opaque_float(bytes) {
            Some(v) => Reading::Float(v),
            None => Reading::Text(text(bytes, octets)),
        },
        Snmp::OctetString(bytes) | Snmp::Nsap(bytes) => Reading::Text(text(bytes, octets)),
        Snmp::IpAddress([a, b, c, d]) => Reading::Text(format!("{a}.{b}.{c}.{d}")),
        Snmp::ObjectIdentifier(oid) => Reading::Text(dotted(oid)),
        Snmp::NoSuchObject => return Err(NoValue::NoSuchObject),
        Snmp::NoSuchInstance => return Err(NoValue::NoSuchInstance),
        Snmp::EndOfMibView => return Err(NoValue::EndOfMibView),
        Snmp::Null => return Err(NoValue::Null),
        _ => return Err(NoValue::Unknown),
    })
}

/// Net-SNMP's float and double inside an Opaque (RFC draft
/// `draft-perkins-opaque-01`): `9f 78 04 <float>` and `9f 79 08 <double>`.
/// The Python agents crashed on these; they are read as floats.
fn opaque_float(bytes: &[u8]) -> Option<f64> {
    match bytes {
        [0x9f, 0x78, 4, rest @ ..] if rest.len() == 4 => {
            Some(f64::from(f32::from_be_bytes(rest.try_into().ok()?)))
        }
        [0x9f, 0x79, 8, rest @ ..] if rest.len() == 8 => {
            Some(f64::from_be_bytes(rest.try_into().ok()?))
        }
        _ => None,
    }
}

pub fn text(bytes: &[u8], octets: Octets) -> String {
    match octets {
        Octets::Latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
        Octets::Utf8OrHex => match std::str::from_utf8(bytes) {
            Ok(text) if !text.contains(|c: char| c.is_control() && !c.is_whitespace()) => {
                text.to_owned()
            }
            _ => {
                let mut out = String::with_capacity(bytes.len() * 3);
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        out.push(':');
                    }
                    out.push_str(&format!("{b:02x}"));
                }
                out
            }
        },
    }
}

/// The native poller's value: `raw × multiplier + offset` as a float when
/// either is given (like Modbus), else the integer as read.
pub fn native(reading: Reading, multiplier: Option<f64>, offset: Option<f64>) -> (Value, DataType) {
    match reading {
        Reading::Text(text) => (Value::Text(text), DataType::String),
        Reading::Float(v) => (
            Value::Float(v * multiplier.unwrap_or(1.0) + offset.unwrap_or(0.0)),
            DataType::Float,
        ),
        Reading::Integer(v, data_type) if multiplier.is_some() || offset.is_some() => {
            let scaled = v as f64 * multiplier.unwrap_or(1.0) + offset.unwrap_or(0.0);
            // A fractional factor makes a counter's rate meaningless to
            // pattoo only if it stops being monotonic, which scaling does
            // not do; the counter types stay.
            (Value::Float(scaled), data_type)
        }
        Reading::Integer(v, data_type) => (integer(v), data_type),
    }
}

/// The Python snmpd agent's value: `float(value) * multiplier` for every
/// number, so always a float (`72.0`), the text as it is otherwise.
pub fn python_snmpd(reading: Reading, multiplier: f64) -> (Value, DataType) {
    match reading {
        Reading::Integer(v, data_type) => (Value::Float(v as f64 * multiplier), data_type),
        Reading::Float(v) => (Value::Float(v * multiplier), DataType::Float),
        Reading::Text(text) => (Value::Text(text), DataType::String),
    }
}

/// An exact integer in the narrowest [`Value`] that holds it.
pub fn integer(v: i128) -> Value {
    if let Ok(v) = i64::try_from(v) {
        Value::Int(v)
    } else if let Ok(v) = u64::try_from(v) {
        Value::UInt(v)
    } else {
        Value::from(v.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn snmp_types_map_to_pattoo_data_types() {
        let cases = [
            (Snmp::Counter32(5), DataType::Counter),
            (Snmp::Counter64(u64::MAX), DataType::Counter64),
            (Snmp::Integer(-5), DataType::Int),
            (Snmp::Gauge32(7), DataType::Int),
            (Snmp::TimeTicks(100), DataType::Int),
        ];
        for (value, data_type) in cases {
            match reading(&value, Octets::Utf8OrHex).unwrap() {
                Reading::Integer(_, got) => assert_eq!(got, data_type, "{value:?}"),
                other => panic!("{value:?} read as {other:?}"),
            }
        }
    }

    #[test]
    fn octets_are_utf8_where_valid_else_hex_natively_and_latin1_for_python() {
        let mac = Bytes::from_static(&[0x00, 0x11, 0x22, 0x33, 0x44, 0xaa]);
        assert_eq!(text(&mac, Octets::Utf8OrHex), "00:11:22:33:44:aa");
        assert_eq!(text(&mac, Octets::Latin1), "\u{0}\u{11}\"3D\u{aa}");
        let zurich = "Zürich".as_bytes();
        assert_eq!(text(zurich, Octets::Utf8OrHex), "Zürich");
        assert_eq!(text(zurich, Octets::Latin1), "ZÃ¼rich");
    }

    #[test]
    fn python_snmpd_values_are_always_floats() {
        let (value, data_type) = python_snmpd(Reading::Integer(72, DataType::Int), 1.0);
        assert_eq!((value, data_type), (Value::Float(72.0), DataType::Int));
        let (value, _) = python_snmpd(
            Reading::Integer(i128::from(u64::MAX), DataType::Counter64),
            8.0,
        );
        assert_eq!(value, Value::Float(1.4757395258967641e20));
    }

    #[test]
    fn opaque_floats_are_read_as_floats() {
        let wrapped = Bytes::from_static(&[0x9f, 0x78, 4, 0x3f, 0xc0, 0, 0]);
        assert_eq!(
            reading(&Snmp::Opaque(wrapped), Octets::Latin1),
            Ok(Reading::Float(1.5))
        );
    }

    #[test]
    fn integers_past_u64_stay_exact() {
        assert_eq!(
            integer(i128::from(u64::MAX) * 8),
            Value::from(147_573_952_589_676_412_920_u128)
        );
        assert_eq!(integer(-3), Value::Int(-3));
    }
}
