//! Modbus tables and addresses: the Modicon register numbers users copy from
//! device manuals, and the zero-based addresses that go on the wire.
//!
//! | table | five-digit form | six-digit form | zero-based address |
//! | --- | --- | --- | --- |
//! | coils | 00001..09999 | 000001..065536 | 0..65535 |
//! | discrete inputs | 10001..19999 | 100001..165536 | 0..65535 |
//! | input registers | 30001..39999 | 300001..365536 | 0..65535 |
//! | holding registers | 40001..49999 | 400001..465536 | 0..65535 |
//!
//! A Modicon number is one-based: 30001 is input register address 0. Written
//! as a YAML number, a coil number loses its leading zeros (`17` is coil
//! 00017) and coils above 09999 would read as discrete inputs: give those as
//! a zero-based address with an explicit table instead.

use std::fmt;

/// One of the four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Coil,
        Table::DiscreteInput,
        Table::InputRegister,
        Table::HoldingRegister,
    ];

    /// The name used in configuration and in default keys (`coil_1`).
    pub const fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::InputRegister => "input_register",
            Table::HoldingRegister => "holding_register",
        }
    }

    /// Accepts the singular or plural configuration name, and the short
    /// names device manuals and other tools use: `discrete`, `input`,
    /// `holding`.
    pub fn from_name(text: &str) -> Option<Table> {
        let text = text.trim().to_ascii_lowercase();
        let singular = text.strip_suffix('s').unwrap_or(&text);
        match singular {
            "discrete" => Some(Table::DiscreteInput),
            "input" => Some(Table::InputRegister),
            "holding" => Some(Table::HoldingRegister),
            _ => Table::ALL.into_iter().find(|t| t.name() == singular),
        }
    }

    /// The names `table:` accepts, for error messages.
    pub const NAMES: &'static str =
        "coil, discrete_input (or discrete), input_register (or input), holding_register (or holding)";

    /// Whether the table holds single bits (coils, discrete inputs) rather
    /// than 16-bit registers.
    pub const fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// The first Modicon number of the five-digit form, the prefix digit
    /// times 10000 plus one.
    const fn five_digit_base(self) -> u32 {
        match self {
            Table::Coil => 1,
            Table::DiscreteInput => 10_001,
            Table::InputRegister => 30_001,
            Table::HoldingRegister => 40_001,
        }
    }

    const fn six_digit_base(self) -> u32 {
        match self {
            Table::Coil => 1,
            Table::DiscreteInput => 100_001,
            Table::InputRegister => 300_001,
            Table::HoldingRegister => 400_001,
        }
    }

    /// The Modicon number of a zero-based address: the five-digit form
    /// where it exists, the six-digit form above it.
    pub fn modicon(self, address: u16) -> u32 {
        let address = u32::from(address);
        if self == Table::Coil || address < 9_999 {
            self.five_digit_base() + address
        } else {
            self.six_digit_base() + address
        }
    }

    /// What a read of this table is called in logs.
    pub const fn plural(self) -> &'static str {
        match self {
            Table::Coil => "coils",
            Table::DiscreteInput => "discrete inputs",
            Table::InputRegister => "input registers",
            Table::HoldingRegister => "holding registers",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A table and a zero-based address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub table: Table,
    pub offset: u16,
}

/// Parses a Modicon register number (see the module doc for the forms).
pub fn parse_modicon(number: u64) -> Result<Address, String> {
    let table_and_base = match number {
        1..=9_999 => Some((Table::Coil, 1)),
        10_001..=19_999 => Some((Table::DiscreteInput, 10_001)),
        30_001..=39_999 => Some((Table::InputRegister, 30_001)),
        40_001..=49_999 => Some((Table::HoldingRegister, 40_001)),
        100_001..=165_536 => Some((Table::DiscreteInput, 100_001)),
        300_001..=365_536 => Some((Table::InputRegister, 300_001)),
        400_001..=465_536 => Some((Table::HoldingRegister, 400_001)),
        _ => None,
    };
    match table_and_base {
        Some((table, base)) => Ok(Address {
            table,
            offset: u16::try_from(number - base).expect("ranges above fit 16 bits"),
        }),
        None => Err(format!(
            "{number} is not a Modicon register number: expected coils 1..9999, discrete inputs \
             10001..19999 or 100001..165536, input registers 30001..39999 or 300001..365536, \
             holding registers 40001..49999 or 400001..465536 (numbers start at 1), \
             or give `table` and a zero-based address"
        )),
    }
}

/// Parses a Modicon number written as text, where leading zeros matter:
/// `"000017"` and `"00017"` are coil 17.
pub fn parse_modicon_text(text: &str) -> Result<Address, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a register number: expected digits such as 30001 or 400001"
        ));
    }
    let number: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is too large for a register number"))?;
    if text.starts_with('0') && number <= 65_536 && number > 0 {
        // A leading zero can only mean the coil table.
        return Ok(Address {
            table: Table::Coil,
            offset: u16::try_from(number - 1).expect("checked above"),
        });
    }
    parse_modicon(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(table: Table, offset: u16) -> Result<Address, String> {
        Ok(Address { table, offset })
    }

    #[test]
    fn five_digit_numbers_map_to_their_tables() {
        assert_eq!(parse_modicon(1), at(Table::Coil, 0));
        assert_eq!(parse_modicon(9_999), at(Table::Coil, 9_998));
        assert_eq!(parse_modicon(10_001), at(Table::DiscreteInput, 0));
        assert_eq!(parse_modicon(30_386), at(Table::InputRegister, 385));
        assert_eq!(parse_modicon(40_001), at(Table::HoldingRegister, 0));
        assert_eq!(parse_modicon(49_999), at(Table::HoldingRegister, 9_998));
    }

    #[test]
    fn six_digit_numbers_reach_the_whole_table() {
        assert_eq!(parse_modicon(300_001), at(Table::InputRegister, 0));
        assert_eq!(parse_modicon(365_536), at(Table::InputRegister, 65_535));
        assert_eq!(parse_modicon(400_001), at(Table::HoldingRegister, 0));
        assert_eq!(parse_modicon(465_536), at(Table::HoldingRegister, 65_535));
        assert_eq!(parse_modicon(165_536), at(Table::DiscreteInput, 65_535));
    }

    #[test]
    fn numbers_outside_every_table_are_rejected() {
        for bad in [
            0, 10_000, 20_001, 29_999, 30_000, 40_000, 50_000, 365_537, 465_537, 500_001,
        ] {
            assert!(parse_modicon(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn text_with_leading_zeros_is_a_coil() {
        assert_eq!(parse_modicon_text("00017"), at(Table::Coil, 16));
        assert_eq!(parse_modicon_text("010001"), at(Table::Coil, 10_000));
        assert_eq!(parse_modicon_text("10001"), at(Table::DiscreteInput, 0));
        assert!(parse_modicon_text("3x0001").is_err());
    }

    #[test]
    fn modicon_numbers_round_trip() {
        assert_eq!(Table::InputRegister.modicon(385), 30_386);
        assert_eq!(Table::HoldingRegister.modicon(9_999), 410_000);
        assert_eq!(Table::Coil.modicon(0), 1);
        assert_eq!(Table::DiscreteInput.modicon(0), 10_001);
    }

    #[test]
    fn table_names_accept_plurals() {
        assert_eq!(Table::from_name("coils"), Some(Table::Coil));
        assert_eq!(
            Table::from_name("Holding_Registers"),
            Some(Table::HoldingRegister)
        );
        assert_eq!(Table::from_name("registers"), None);
    }

    #[test]
    fn table_names_accept_the_short_forms() {
        assert_eq!(Table::from_name("coil"), Some(Table::Coil));
        assert_eq!(Table::from_name("discrete"), Some(Table::DiscreteInput));
        assert_eq!(
            Table::from_name("discrete_inputs"),
            Some(Table::DiscreteInput)
        );
        assert_eq!(Table::from_name("input"), Some(Table::InputRegister));
        assert_eq!(Table::from_name("holding"), Some(Table::HoldingRegister));
        assert_eq!(Table::from_name("Holdings"), Some(Table::HoldingRegister));
        assert_eq!(Table::from_name("register"), None);
    }
}
