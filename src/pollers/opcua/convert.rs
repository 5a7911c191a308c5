//! What a value read from a node becomes: pure functions from an OPC UA
//! Variant to a datapoint's value, for `type: opcua` and for the Python
//! agent's rules (SPEC-opcua-compat.md §2-3).

use ::opcua::types::Variant;

use crate::model::python::parse_float;
use crate::model::{DataType, Value};

/// A value the way the Python agent held it after `read_value()`: the
/// Variant's Python object, reduced to what its rules tell apart.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// Every integer type; Python's ints are unbounded, so products too.
    Int(i128),
    /// Double, and Float widened from single precision exactly.
    Float(f64),
    Str(String),
    /// Anything else (Boolean, DateTime, arrays, ...): never posted. The
    /// OPC UA type's name, for the log.
    Other(&'static str),
}

/// A multiplier as the Python agent kept it from the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PyMultiplier {
    Int(i64),
    Float(f64),
    /// `multiplier: true` or `false`: truthy or not, never numeric.
    Bool(bool),
}

impl Default for PyMultiplier {
    fn default() -> Self {
        PyMultiplier::Int(1)
    }
}

/// The OPC UA built-in type's name, for logs.
pub fn type_name(variant: &Variant) -> &'static str {
    match variant {
        Variant::Empty => "Null",
        Variant::Boolean(_) => "Boolean",
        Variant::SByte(_) => "SByte",
        Variant::Byte(_) => "Byte",
        Variant::Int16(_) => "Int16",
        Variant::UInt16(_) => "UInt16",
        Variant::Int32(_) => "Int32",
        Variant::UInt32(_) => "UInt32",
        Variant::Int64(_) => "Int64",
        Variant::UInt64(_) => "UInt64",
        Variant::Float(_) => "Float",
        Variant::Double(_) => "Double",
        Variant::String(_) => "String",
        Variant::DateTime(_) => "DateTime",
        Variant::Guid(_) => "Guid",
        Variant::StatusCode(_) => "StatusCode",
        Variant::ByteString(_) => "ByteString",
        Variant::XmlElement(_) => "XmlElement",
        Variant::QualifiedName(_) => "QualifiedName",
        Variant::LocalizedText(_) => "LocalizedText",
        Variant::NodeId(_) => "NodeId",
        Variant::ExpandedNodeId(_) => "ExpandedNodeId",
        Variant::Array(_) => "Array",
        _ => "another type",
    }
}

fn integer(variant: &Variant) -> Option<i128> {
    Some(match *variant {
        Variant::SByte(v) => v.into(),
        Variant::Byte(v) => v.into(),
        Variant::Int16(v) => v.into(),
        Variant::UInt16(v) => v.into(),
        Variant::Int32(v) => v.into(),
        Variant::UInt32(v) => v.into(),
        Variant::Int64(v) => v.into(),
        Variant::UInt64(v) => v.into(),
        _ => return None,
    })
}

/// The Python object asyncua makes of a Variant.
pub fn python_value(variant: &Variant) -> PyValue {
    if let Some(v) = integer(variant) {
        return PyValue::Int(v);
    }
    match variant {
        Variant::Float(v) => PyValue::Float(f64::from(*v)),
        Variant::Double(v) => PyValue::Float(*v),
        Variant::String(text) => PyValue::Str(text.as_ref().to_owned()),
        other => PyValue::Other(type_name(other)),
    }
}

/// An integer as the model holds it; `None` beyond what JSON carries here.
fn int_value(v: i128) -> Option<Value> {
    if let Ok(v) = i64::try_from(v) {
        Some(Value::Int(v))
    } else if let Ok(v) = u64::try_from(v) {
        Some(Value::UInt(v))
    } else {
        u128::try_from(v).ok().map(Value::from)
    }
}

/// Longest string a numeric string times an integer may make: Python
/// repeats the text, and nothing longer is a number anyone meant.
const MAX_REPEATED_LEN: usize = 64;

/// The Python agent's multiplier and datapoint rules: the value posted
/// with data type 99, or why nothing is posted. A numeric string is
/// posted as text; the body's data type 99 makes it `int(float(s))`, as
/// the Python library did.
pub fn python_datapoint(value: PyValue, multiplier: PyMultiplier) -> Result<Value, String> {
    let truthy = match multiplier {
        PyMultiplier::Int(m) => m != 0,
        PyMultiplier::Float(m) => m != 0.0,
        PyMultiplier::Bool(b) => b,
    };
    if !truthy {
        // `else: value = 0`, whatever was read.
        return Ok(Value::Int(0));
    }
    let numeric = match &value {
        PyValue::Int(_) | PyValue::Float(_) => true,
        PyValue::Str(text) => parse_float(text).is_some(),
        PyValue::Other(_) => false,
    };
    let value = match (value, multiplier) {
        (value, PyMultiplier::Bool(_)) => value,
        (value, _) if !numeric => value,
        (PyValue::Int(v), PyMultiplier::Int(m)) => PyValue::Int(
            v.checked_mul(i128::from(m))
                .ok_or_else(|| format!("{v} × {m} is out of range"))?,
        ),
        (PyValue::Int(v), PyMultiplier::Float(m)) => PyValue::Float(v as f64 * m),
        (PyValue::Float(v), PyMultiplier::Int(m)) => PyValue::Float(v * m as f64),
        (PyValue::Float(v), PyMultiplier::Float(m)) => PyValue::Float(v * m),
        (PyValue::Str(text), PyMultiplier::Int(m)) => {
            // Python's str * int repeats the text: "42" * 2 == "4242".
            let times = usize::try_from(m).unwrap_or(0);
            if text.len().saturating_mul(times) > MAX_REPEATED_LEN {
                return Err(format!(
                    "the text {text:?} repeated {m} times (the Python agent's string × integer) is too long to be a number"
                ));
            }
            PyValue::Str(text.repeat(times))
        }
        (PyValue::Str(text), PyMultiplier::Float(m)) => {
            return Err(format!(
                "the text {text:?} cannot be multiplied by {m} (the Python agent died on this)"
            ))
        }
        (PyValue::Other(_), _) => unreachable!("not numeric"),
    };
    match value {
        PyValue::Int(v) => int_value(v).ok_or_else(|| format!("{v} is out of range")),
        PyValue::Float(v) => Ok(Value::Float(v)),
        PyValue::Str(text) => match parse_float(&text) {
            Some(parsed) if parsed.is_finite() => Ok(Value::Text(text)),
            Some(_) => Err(format!(
                "the text {text:?} is not a finite number (the Python agent died on this)"
            )),
            None => Err(format!("the text {text:?} is not a number")),
        },
        PyValue::Other(name) => Err(format!("a {name} value is not a number")),
    }
}

/// Scaling of a `type: opcua` node: raw × multiplier + offset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scale {
    pub multiplier: Option<f64>,
    pub offset: Option<f64>,
}

/// A `type: opcua` value: integers stay integers (`int`), Float and
/// Double are floats (`float`, a Float widened exactly), Boolean is 0 or
/// 1 (`int`), String and LocalizedText are text (`string`). Scaling
/// makes a float. `data_type` overrides the type posted. Anything else is
/// not posted: the reason says why.
pub fn native_value(
    variant: &Variant,
    scale: Scale,
    data_type: Option<DataType>,
) -> Result<(Value, DataType), String> {
    let (value, natural) = if let Some(v) = integer(variant) {
        (
            int_value(v).ok_or_else(|| format!("{v} is out of range"))?,
            DataType::Int,
        )
    } else {
        match variant {
            Variant::Boolean(b) => (Value::Int(i64::from(*b)), DataType::Int),
            Variant::Float(v) => (Value::Float(f64::from(*v)), DataType::Float),
            Variant::Double(v) => (Value::Float(*v), DataType::Float),
            Variant::String(text) => {
                if text.is_null() {
                    return Err("a null String".to_owned());
                }
                (Value::Text(text.as_ref().to_owned()), DataType::String)
            }
            Variant::LocalizedText(text) => (
                Value::Text(text.text.as_ref().to_owned()),
                DataType::String,
            ),
            other => {
                return Err(format!(
                    "a {} value is not posted (numbers, Boolean, String and LocalizedText are)",
                    type_name(other)
                ))
            }
        }
    };
    if scale.multiplier.is_none() && scale.offset.is_none() {
        return Ok((value, data_type.unwrap_or(natural)));
    }
    let raw = match &value {
        Value::Int(v) => *v as f64,
        Value::UInt(v) => *v as f64,
        Value::UInt128(v) => v.get() as f64,
        Value::Float(v) => *v,
        Value::Text(text) => parse_float(text)
            .ok_or_else(|| format!("the text {text:?} cannot be scaled: it is not a number"))?,
    };
    let scaled = raw * scale.multiplier.unwrap_or(1.0) + scale.offset.unwrap_or(0.0);
    let data_type = match data_type {
        Some(DataType::String) | None => DataType::Float,
        Some(other) => other,
    };
    Ok((Value::Float(scaled), data_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(value: PyValue, m: PyMultiplier) -> Result<Value, String> {
        python_datapoint(value, m)
    }

    #[test]
    fn python_rules_keep_ints_repeat_numeric_strings_and_zero_what_a_zero_multiplier_touches() {
        use PyMultiplier as M;
        assert_eq!(py(PyValue::Int(7), M::Int(2)), Ok(Value::Int(14)));
        assert_eq!(py(PyValue::Int(7), M::Float(0.5)), Ok(Value::Float(3.5)));
        assert_eq!(py(PyValue::Float(21.5), M::Int(1)), Ok(Value::Float(21.5)));
        assert_eq!(
            py(PyValue::Str("42".into()), M::Int(2)),
            Ok(Value::Text("4242".into()))
        );
        assert_eq!(py(PyValue::Float(21.5), M::Int(0)), Ok(Value::Int(0)));
        assert_eq!(py(PyValue::Other("Boolean"), M::Bool(false)), Ok(Value::Int(0)));
        assert_eq!(py(PyValue::Int(7), M::Bool(true)), Ok(Value::Int(7)));
        assert_eq!(
            py(PyValue::Int((1 << 53) + 1), M::Int(1)),
            Ok(Value::Int((1 << 53) + 1))
        );
        assert_eq!(
            py(PyValue::Int(u64::MAX.into()), M::Int(2)),
            Ok(Value::from(u128::from(u64::MAX) * 2))
        );
    }

    #[test]
    fn python_rules_drop_what_python_dropped_or_died_on() {
        use PyMultiplier as M;
        for (value, m) in [
            (PyValue::Other("Boolean"), M::Int(1)),
            (PyValue::Str("hello".into()), M::Int(1)),
            (PyValue::Str("hello".into()), M::Int(2)),
            (PyValue::Str("42".into()), M::Float(1.5)),
            (PyValue::Str("nan".into()), M::Int(1)),
            (PyValue::Str("42".into()), M::Int(1_000_000)),
            (PyValue::Str("42".into()), M::Int(-1)),
        ] {
            assert!(py(value.clone(), m).is_err(), "{value:?} × {m:?}");
        }
    }

    #[test]
    fn native_values_keep_integers_and_widen_floats_exactly() {
        let none = Scale::default();
        assert_eq!(
            native_value(&Variant::UInt64((1 << 53) + 1), none, None),
            Ok((Value::Int((1 << 53) + 1), DataType::Int))
        );
        assert_eq!(
            native_value(&Variant::Float(21.3), none, None),
            Ok((Value::Float(21.299999237060547), DataType::Float))
        );
        assert_eq!(
            native_value(&Variant::Boolean(true), none, None),
            Ok((Value::Int(1), DataType::Int))
        );
        assert_eq!(
            native_value(&Variant::String("hello".into()), none, None),
            Ok((Value::Text("hello".into()), DataType::String))
        );
        let scale = Scale {
            multiplier: Some(0.1),
            offset: Some(-2.0),
        };
        assert_eq!(
            native_value(&Variant::Int32(100), scale, None),
            Ok((Value::Float(8.0), DataType::Float))
        );
        assert!(native_value(&Variant::Empty, none, None).is_err());
    }
}
