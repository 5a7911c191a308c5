use std::fmt;

/// A datapoint's value as read, before conversion to its data type.
///
/// Integers and floats are kept apart because the server receives them as
/// JSON numbers exactly as the Python agents send them: a Modbus register
/// scaled by a float multiplier is `732.0`, a counter read as an integer is
/// `7`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    UInt(u64),
    /// Past u64: the Python ifmibd agent's octet counters ×8 (a Counter64
    /// near its top), which Python posts as exact integers.
    UInt128(U128),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as Python's `str()` would write it.
    pub fn to_python_string(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::UInt128(v) => v.get().to_string(),
            Value::Float(v) => super::python::float_to_string(*v),
            Value::Text(v) => v.clone(),
        }
    }
}

/// A `u128` kept as two `u64` halves. Aligned like a `u64`, it lets a
/// [`Value`] fit in 24 bytes beside a `String`; a plain `u128` is 16-byte
/// aligned and made every `Value` 32 bytes and every reading 96, for a
/// variant few readings ever have.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct U128 {
    high: u64,
    low: u64,
}

impl U128 {
    pub fn get(self) -> u128 {
        (u128::from(self.high) << 64) | u128::from(self.low)
    }
}

impl From<u128> for U128 {
    fn from(v: u128) -> Self {
        U128 {
            high: (v >> 64) as u64,
            low: v as u64,
        }
    }
}

impl fmt::Debug for U128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

impl From<u128> for Value {
    fn from(v: u128) -> Self {
        Value::UInt128(v.into())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(v) => write!(f, "{v:?}"),
            other => f.write_str(&other.to_python_string()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::UInt(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&serde_json::Number> for Value {
    fn from(n: &serde_json::Number) -> Self {
        if let Some(v) = n.as_i64() {
            Value::Int(v)
        } else if let Some(v) = n.as_u64() {
            Value::UInt(v)
        } else {
            Value::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_past_u64_keeps_every_digit_through_its_two_halves() {
        for v in [
            u128::from(u64::MAX) + 1,
            u128::from(u64::MAX) * 8,
            u128::MAX,
        ] {
            assert_eq!(Value::from(v).to_python_string(), v.to_string());
            assert_eq!(format!("{:?}", Value::from(v)), format!("UInt128({v})"));
        }
    }
}
