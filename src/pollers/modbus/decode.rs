//! Turning raw registers into values: every value type under every byte
//! and word order. Pure; no I/O.
//!
//! Orders are named by where the bytes of a 32-bit value `A B C D` (most
//! significant first) land in two registers:
//!
//! | order | register 1 | register 2 | meaning |
//! | --- | --- | --- | --- |
//! | `ABCD` | A B | C D | big-endian (the Modbus convention) |
//! | `CDAB` | C D | A B | words swapped |
//! | `BADC` | B A | D C | bytes swapped in each word |
//! | `DCBA` | D C | B A | little-endian |
//!
//! 64-bit values extend the same rule to four registers. A 16-bit value
//! only feels the byte swap; a string is read register by register, with
//! the byte swap applied inside each one.

use std::fmt;
use std::str::FromStr;

use crate::model::Value;

/// How the bytes of a multi-byte value are laid out in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Order {
    /// The least significant register comes first.
    pub word_swap: bool,
    /// The less significant byte comes first within each register.
    pub byte_swap: bool,
}

impl Order {
    pub const ABCD: Order = Order {
        word_swap: false,
        byte_swap: false,
    };
    pub const CDAB: Order = Order {
        word_swap: true,
        byte_swap: false,
    };
    pub const BADC: Order = Order {
        word_swap: false,
        byte_swap: true,
    };
    pub const DCBA: Order = Order {
        word_swap: true,
        byte_swap: true,
    };
}

impl FromStr for Order {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_uppercase().as_str() {
            "ABCD" | "BIG" => Ok(Order::ABCD),
            "CDAB" => Ok(Order::CDAB),
            "BADC" => Ok(Order::BADC),
            "DCBA" | "LITTLE" => Ok(Order::DCBA),
            _ => Err(format!(
                "unknown byte order {text:?}: expected ABCD (big-endian), CDAB (words swapped), \
                 BADC (bytes swapped) or DCBA (little-endian)"
            )),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.word_swap, self.byte_swap) {
            (false, false) => "ABCD",
            (true, false) => "CDAB",
            (false, true) => "BADC",
            (true, true) => "DCBA",
        })
    }
}

/// What a register (or run of registers) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Bool,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float32,
    Float64,
    /// Text of this many registers, two bytes each.
    String {
        registers: u16,
    },
}

impl ValueType {
    /// Names accepted in configuration (`string` takes its length apart).
    pub const NAMES: &'static str =
        "bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string";

    pub fn from_name(text: &str, string_registers: Option<u16>) -> Option<ValueType> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "bool" => ValueType::Bool,
            "int16" => ValueType::Int16,
            "uint16" => ValueType::UInt16,
            "int32" => ValueType::Int32,
            "uint32" => ValueType::UInt32,
            "int64" => ValueType::Int64,
            "uint64" => ValueType::UInt64,
            "float32" => ValueType::Float32,
            "float64" => ValueType::Float64,
            "string" => ValueType::String {
                registers: string_registers.unwrap_or(0),
            },
            _ => return None,
        })
    }

    /// Registers (or bits, for `Bool`) one value occupies.
    pub const fn width(self) -> u16 {
        match self {
            ValueType::Bool | ValueType::Int16 | ValueType::UInt16 => 1,
            ValueType::Int32 | ValueType::UInt32 | ValueType::Float32 => 2,
            ValueType::Int64 | ValueType::UInt64 | ValueType::Float64 => 4,
            ValueType::String { registers } => registers,
        }
    }

    pub const fn is_float(self) -> bool {
        matches!(self, ValueType::Float32 | ValueType::Float64)
    }
}

/// The bytes of `registers`, most significant first, after undoing `order`.
fn ordered_bytes(registers: &[u16], order: Order) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(registers.len() * 2);
    let mut push = |word: u16| {
        let [high, low] = word.to_be_bytes();
        if order.byte_swap {
            bytes.extend([low, high]);
        } else {
            bytes.extend([high, low]);
        }
    };
    if order.word_swap {
        registers.iter().rev().copied().for_each(&mut push);
    } else {
        registers.iter().copied().for_each(&mut push);
    }
    bytes
}

fn array<const N: usize>(registers: &[u16], order: Order) -> [u8; N] {
    ordered_bytes(registers, order)
        .try_into()
        .expect("caller passes width() registers")
}

/// Decodes one value from exactly `value_type.width()` registers.
///
/// Integers come back as `Int` or `UInt`, floats as `Float`, strings as
/// `Text` cut at the first NUL with trailing spaces removed (devices pad
/// fixed-length strings with either).
pub fn decode_registers(registers: &[u16], value_type: ValueType, order: Order) -> Value {
    debug_assert_eq!(registers.len(), usize::from(value_type.width()));
    match value_type {
        ValueType::Bool => Value::Int(i64::from(registers[0] != 0)),
        ValueType::Int16 => Value::Int(i64::from(i16::from_be_bytes(array(registers, order)))),
        ValueType::UInt16 => Value::Int(i64::from(u16::from_be_bytes(array(registers, order)))),
        ValueType::Int32 => Value::Int(i64::from(i32::from_be_bytes(array(registers, order)))),
        ValueType::UInt32 => Value::Int(i64::from(u32::from_be_bytes(array(registers, order)))),
        ValueType::Int64 => Value::Int(i64::from_be_bytes(array(registers, order))),
        ValueType::UInt64 => Value::UInt(u64::from_be_bytes(array(registers, order))),
        ValueType::Float32 => Value::Float(f64::from(f32::from_be_bytes(array(registers, order)))),
        ValueType::Float64 => Value::Float(f64::from_be_bytes(array(registers, order))),
        ValueType::String { .. } => {
            // Strings run register by register; only the byte swap applies.
            let bytes = ordered_bytes(
                registers,
                Order {
                    word_swap: false,
                    ..order
                },
            );
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let text = String::from_utf8_lossy(&bytes[..end]);
            Value::Text(text.trim_end_matches(' ').to_owned())
        }
    }
}

/// A bit read from a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Int(i64::from(bit))
}

/// Applies `value × multiplier + offset` when either is set; the result is
/// then a float, as the Python agent sends scaled readings (`732.0`).
pub fn scale(value: Value, multiplier: Option<f64>, offset: Option<f64>) -> Value {
    if multiplier.is_none() && offset.is_none() {
        return value;
    }
    let raw = match value {
        Value::Int(v) => v as f64,
        Value::UInt(v) => v as f64,
        Value::UInt128(v) => v.get() as f64,
        Value::Float(v) => v,
        text @ Value::Text(_) => return text,
    };
    let mut scaled = raw * multiplier.unwrap_or(1.0);
    if let Some(offset) = offset {
        scaled += offset;
    }
    Value::Float(scaled)
}

#[cfg(test)]
// 3.14159 is the float every device manual uses as its example, not π.
#[allow(clippy::approx_constant)]
mod tests {
    use super::*;

    /// Splits big-endian bytes into registers, then lays them out in
    /// `order` the way a device would: the inverse of decoding, written
    /// independently of it.
    fn layout(be_bytes: &[u8], order: Order) -> Vec<u16> {
        let mut words: Vec<[u8; 2]> = be_bytes.chunks(2).map(|c| [c[0], c[1]]).collect();
        if order.word_swap {
            words.reverse();
        }
        words
            .into_iter()
            .map(|[hi, lo]| {
                if order.byte_swap {
                    u16::from_be_bytes([lo, hi])
                } else {
                    u16::from_be_bytes([hi, lo])
                }
            })
            .collect()
    }

    const ORDERS: [Order; 4] = [Order::ABCD, Order::CDAB, Order::BADC, Order::DCBA];

    #[test]
    fn float32_reads_the_same_under_every_order() {
        let expected = 3.14159_f32;
        for order in ORDERS {
            let registers = layout(&expected.to_be_bytes(), order);
            assert_eq!(
                decode_registers(&registers, ValueType::Float32, order),
                Value::Float(f64::from(expected)),
                "{order}"
            );
        }
    }

    #[test]
    fn float32_layouts_match_the_named_byte_positions() {
        // 3.14159 as big-endian bytes: 40 49 0F D0.
        let bytes = 3.14159_f32.to_be_bytes();
        assert_eq!(bytes, [0x40, 0x49, 0x0F, 0xD0]);
        assert_eq!(layout(&bytes, Order::ABCD), [0x4049, 0x0FD0]);
        assert_eq!(layout(&bytes, Order::CDAB), [0x0FD0, 0x4049]);
        assert_eq!(layout(&bytes, Order::BADC), [0x4940, 0xD00F]);
        assert_eq!(layout(&bytes, Order::DCBA), [0xD00F, 0x4940]);
        assert_eq!(
            decode_registers(&[0xD00F, 0x4940], ValueType::Float32, Order::DCBA),
            Value::Float(f64::from(3.14159_f32))
        );
    }

    #[test]
    fn integers_of_every_width_and_sign_decode_under_every_order() {
        for order in ORDERS {
            let cases: [(Vec<u8>, ValueType, Value); 8] = [
                (
                    (-12345_i16).to_be_bytes().to_vec(),
                    ValueType::Int16,
                    Value::Int(-12345),
                ),
                (
                    54321_u16.to_be_bytes().to_vec(),
                    ValueType::UInt16,
                    Value::Int(54321),
                ),
                (
                    (-123_456_789_i32).to_be_bytes().to_vec(),
                    ValueType::Int32,
                    Value::Int(-123_456_789),
                ),
                (
                    4_000_000_000_u32.to_be_bytes().to_vec(),
                    ValueType::UInt32,
                    Value::Int(4_000_000_000),
                ),
                (
                    (-1_234_567_890_123_i64).to_be_bytes().to_vec(),
                    ValueType::Int64,
                    Value::Int(-1_234_567_890_123),
                ),
                (
                    u64::MAX.to_be_bytes().to_vec(),
                    ValueType::UInt64,
                    Value::UInt(u64::MAX),
                ),
                (
                    (-2.5e300_f64).to_be_bytes().to_vec(),
                    ValueType::Float64,
                    Value::Float(-2.5e300),
                ),
                (
                    0x0102_0304_0506_0708_u64.to_be_bytes().to_vec(),
                    ValueType::UInt64,
                    Value::UInt(0x0102_0304_0506_0708),
                ),
            ];
            for (bytes, value_type, expected) in cases {
                let registers = layout(&bytes, order);
                assert_eq!(
                    decode_registers(&registers, value_type, order),
                    expected,
                    "{value_type:?} {order}"
                );
            }
        }
    }

    #[test]
    fn strings_stop_at_nul_and_drop_padding() {
        let registers = [u16::from_be_bytes(*b"SM"), u16::from_be_bytes(*b"A "), 0];
        let string = ValueType::String { registers: 3 };
        assert_eq!(
            decode_registers(&registers, string, Order::ABCD),
            Value::Text("SMA".into())
        );
        let swapped = [u16::from_be_bytes(*b"MS"), u16::from_be_bytes(*b"\0A")];
        assert_eq!(
            decode_registers(&swapped, ValueType::String { registers: 2 }, Order::DCBA),
            Value::Text("SMA".into())
        );
    }

    #[test]
    fn scaling_turns_values_into_floats() {
        assert_eq!(scale(Value::Int(732), Some(1.0), None), Value::Float(732.0));
        assert_eq!(
            scale(Value::Int(2305), Some(0.1), Some(-100.0)),
            Value::Float(2305.0 * 0.1 - 100.0)
        );
        assert_eq!(scale(Value::Int(7), None, None), Value::Int(7));
    }

    #[test]
    fn orders_parse_from_their_names() {
        assert_eq!("cdab".parse(), Ok(Order::CDAB));
        assert_eq!("DCBA".parse(), Ok(Order::DCBA));
        assert!("ACBD".parse::<Order>().is_err());
    }
}
