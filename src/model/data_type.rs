use std::fmt;
use std::str::FromStr;

/// The pattoo data types, with the numeric codes the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DataType {
    Int,
    Float,
    Counter64,
    Counter,
    String,
}

impl DataType {
    pub const ALL: [DataType; 5] = [
        DataType::Int,
        DataType::Float,
        DataType::Counter64,
        DataType::Counter,
        DataType::String,
    ];

    pub const fn code(self) -> u8 {
        match self {
            DataType::Int => 99,
            DataType::Float => 101,
            DataType::Counter64 => 64,
            DataType::Counter => 32,
            DataType::String => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DataType::Int => "int",
            DataType::Float => "float",
            DataType::Counter64 => "counter64",
            DataType::Counter => "counter",
            DataType::String => "string",
        }
    }

    pub fn from_code(code: i64) -> Option<DataType> {
        DataType::ALL
            .into_iter()
            .find(|t| i64::from(t.code()) == code)
    }

    pub const fn is_numeric(self) -> bool {
        !matches!(self, DataType::String)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A data type name or code that pattoo does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data type `{0}`: expected int (99), float (101), counter (32), counter64 (64) or string (2)")]
pub struct UnknownDataType(pub String);

impl FromStr for DataType {
    type Err = UnknownDataType;

    /// Accepts a name (`float`) or a code (`101`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(code) = text.parse::<i64>() {
            return DataType::from_code(code).ok_or_else(|| UnknownDataType(text.to_owned()));
        }
        DataType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownDataType(text.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DataType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a data type: int, float, counter, counter64, string or its code")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DataType, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DataType, E> {
                DataType::from_code(v).ok_or_else(|| E::custom(UnknownDataType(v.to_string())))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DataType, E> {
                i64::try_from(v)
                    .ok()
                    .and_then(DataType::from_code)
                    .ok_or_else(|| E::custom(UnknownDataType(v.to_string())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_codes() {
        assert_eq!("float".parse(), Ok(DataType::Float));
        assert_eq!("Counter64".parse(), Ok(DataType::Counter64));
        assert_eq!("32".parse(), Ok(DataType::Counter));
        assert_eq!("2".parse(), Ok(DataType::String));
        assert!("98".parse::<DataType>().is_err());
        assert!("double".parse::<DataType>().is_err());
    }

    #[test]
    fn codes_match_pattoo_constants() {
        let codes: Vec<u8> = DataType::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes, [99, 101, 64, 32, 2]);
    }
}
