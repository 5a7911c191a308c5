//! The BACnet objects the poller reads: the input, output and value objects
//! of the analog, binary and multi-state kinds, named as configuration
//! writes them, and what a read of one of their properties returns.

use std::fmt;

/// An object type whose present value the poller reads (ASHRAE 135,
/// clause 21, BACnetObjectType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    AnalogInput,
    AnalogOutput,
    AnalogValue,
    BinaryInput,
    BinaryOutput,
    BinaryValue,
    MultiStateInput,
    MultiStateOutput,
    MultiStateValue,
}

impl ObjectType {
    pub const ALL: [ObjectType; 9] = [
        ObjectType::AnalogInput,
        ObjectType::AnalogOutput,
        ObjectType::AnalogValue,
        ObjectType::BinaryInput,
        ObjectType::BinaryOutput,
        ObjectType::BinaryValue,
        ObjectType::MultiStateInput,
        ObjectType::MultiStateOutput,
        ObjectType::MultiStateValue,
    ];

    /// The number the protocol carries.
    pub const fn code(self) -> u16 {
        match self {
            ObjectType::AnalogInput => 0,
            ObjectType::AnalogOutput => 1,
            ObjectType::AnalogValue => 2,
            ObjectType::BinaryInput => 3,
            ObjectType::BinaryOutput => 4,
            ObjectType::BinaryValue => 5,
            ObjectType::MultiStateInput => 13,
            ObjectType::MultiStateOutput => 14,
            ObjectType::MultiStateValue => 19,
        }
    }

    /// The standard's name: `analog-value`.
    pub const fn name(self) -> &'static str {
        match self {
            ObjectType::AnalogInput => "analog-input",
            ObjectType::AnalogOutput => "analog-output",
            ObjectType::AnalogValue => "analog-value",
            ObjectType::BinaryInput => "binary-input",
            ObjectType::BinaryOutput => "binary-output",
            ObjectType::BinaryValue => "binary-value",
            ObjectType::MultiStateInput => "multi-state-input",
            ObjectType::MultiStateOutput => "multi-state-output",
            ObjectType::MultiStateValue => "multi-state-value",
        }
    }

    /// As it goes in a key: `analog_value`.
    pub const fn key_name(self) -> &'static str {
        match self {
            ObjectType::AnalogInput => "analog_input",
            ObjectType::AnalogOutput => "analog_output",
            ObjectType::AnalogValue => "analog_value",
            ObjectType::BinaryInput => "binary_input",
            ObjectType::BinaryOutput => "binary_output",
            ObjectType::BinaryValue => "binary_value",
            ObjectType::MultiStateInput => "multi_state_input",
            ObjectType::MultiStateOutput => "multi_state_output",
            ObjectType::MultiStateValue => "multi_state_value",
        }
    }

    /// The usual abbreviation: `av`.
    const fn short(self) -> &'static str {
        match self {
            ObjectType::AnalogInput => "ai",
            ObjectType::AnalogOutput => "ao",
            ObjectType::AnalogValue => "av",
            ObjectType::BinaryInput => "bi",
            ObjectType::BinaryOutput => "bo",
            ObjectType::BinaryValue => "bv",
            ObjectType::MultiStateInput => "msi",
            ObjectType::MultiStateOutput => "mso",
            ObjectType::MultiStateValue => "msv",
        }
    }

    /// Reads `analog-value`, `analog_value`, `analogValue`, `AV` and the
    /// number (`2`): the standard's name, BAC0's, and tools' abbreviations.
    pub fn parse(text: &str) -> Option<ObjectType> {
        let folded: String = text
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if let Ok(code) = folded.parse::<u16>() {
            return ObjectType::ALL.into_iter().find(|t| t.code() == code);
        }
        ObjectType::ALL.into_iter().find(|t| {
            t.short() == folded || t.name().replace('-', "") == folded
        })
    }

    /// Whether its present value is a REAL (a float); binary ones are
    /// enumerated (0 or 1), multi-state ones unsigned state numbers.
    pub const fn is_analog(self) -> bool {
        matches!(
            self,
            ObjectType::AnalogInput | ObjectType::AnalogOutput | ObjectType::AnalogValue
        )
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One object of a device: `analog-value 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub object_type: ObjectType,
    /// 0 to [`MAX_INSTANCE`].
    pub instance: u32,
}

/// The largest object instance number (22 bits; 4194303 itself means
/// "unset").
pub const MAX_INSTANCE: u32 = 4_194_302;

impl ObjectId {
    pub const fn new(object_type: ObjectType, instance: u32) -> Self {
        ObjectId {
            object_type,
            instance,
        }
    }

    /// `analog-value:3` (also `av:3`, `analogValue 3`, `2:3`).
    pub fn parse(text: &str) -> Result<ObjectId, String> {
        let text = text.trim();
        let Some((kind, instance)) = text.rsplit_once([':', ' ', ',']) else {
            return Err(format!(
                "{text:?} is not an object: expected type:instance, e.g. analog-value:3"
            ));
        };
        let object_type = ObjectType::parse(kind).ok_or_else(|| unknown_type(kind))?;
        let instance = parse_instance(instance)?;
        Ok(ObjectId::new(object_type, instance))
    }
}

/// Why `kind` is not an object type the poller reads.
pub fn unknown_type(kind: &str) -> String {
    let names: Vec<&str> = ObjectType::ALL.iter().map(|t| t.name()).collect();
    format!(
        "unknown object type {:?}: expected one of {} (or their abbreviations ai, ao, av, bi, bo, bv, msi, mso, msv)",
        kind.trim(),
        names.join(", ")
    )
}

/// An instance number, 0 to [`MAX_INSTANCE`].
pub fn parse_instance(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n <= MAX_INSTANCE => Ok(n),
        _ => Err(format!(
            "{:?} is not an object instance: expected a whole number from 0 to {MAX_INSTANCE}",
            text.trim()
        )),
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.object_type, self.instance)
    }
}

/// The properties the poller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    PresentValue,
    ObjectName,
}

impl Property {
    pub const fn code(self) -> u32 {
        match self {
            Property::PresentValue => 85,
            Property::ObjectName => 77,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Property::PresentValue => "present-value",
            Property::ObjectName => "object-name",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A property's value as the device sent it (the application tags the
/// poller can post).
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// REAL: single precision, as analog present values are.
    Real(f32),
    Double(f64),
    Unsigned(u64),
    Signed(i64),
    /// Binary present values (0 inactive, 1 active).
    Enumerated(u32),
    Boolean(bool),
    Text(String),
    /// Anything else, described for the log.
    Other(String),
}

impl PropertyValue {
    /// The value to post, or `None` for one that cannot be (described by
    /// its `Debug` form in the log).
    pub fn to_value(&self) -> Option<crate::model::Value> {
        use crate::model::Value;
        Some(match *self {
            // Widened exactly, as Python's float() of the REAL: 21.3 on the
            // device is 21.299999237060547.
            PropertyValue::Real(v) => Value::Float(f64::from(v)),
            PropertyValue::Double(v) => Value::Float(v),
            PropertyValue::Unsigned(v) => Value::UInt(v),
            PropertyValue::Signed(v) => Value::Int(v),
            PropertyValue::Enumerated(v) => Value::UInt(u64::from(v)),
            PropertyValue::Boolean(v) => Value::UInt(u64::from(v)),
            PropertyValue::Text(ref text) => Value::Text(text.clone()),
            PropertyValue::Other(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_types_are_read_in_every_usual_spelling() {
        for text in ["analog-value", "analog_value", "analogValue", "AV", "2"] {
            assert_eq!(ObjectType::parse(text), Some(ObjectType::AnalogValue), "{text}");
        }
        assert_eq!(ObjectType::parse("msi"), Some(ObjectType::MultiStateInput));
        assert_eq!(
            ObjectType::parse("multiStateOutput"),
            Some(ObjectType::MultiStateOutput)
        );
        assert_eq!(ObjectType::parse("device"), None);
        assert_eq!(ObjectType::parse("8"), None);
    }

    #[test]
    fn objects_are_type_and_instance() {
        assert_eq!(
            ObjectId::parse("binary-input:7"),
            Ok(ObjectId::new(ObjectType::BinaryInput, 7))
        );
        assert_eq!(
            ObjectId::parse("av 3"),
            Ok(ObjectId::new(ObjectType::AnalogValue, 3))
        );
        assert!(ObjectId::parse("av:4194303").unwrap_err().contains("0 to 4194302"));
        assert!(ObjectId::parse("schedule:1").unwrap_err().contains("unknown object type"));
        assert!(ObjectId::parse("17").unwrap_err().contains("type:instance"));
    }

    #[test]
    fn a_real_is_widened_to_the_double_python_posts() {
        let value = PropertyValue::Real(21.3).to_value().unwrap();
        assert_eq!(value.to_python_string(), "21.299999237060547");
        assert_eq!(PropertyValue::Other("date".into()).to_value(), None);
    }
}
