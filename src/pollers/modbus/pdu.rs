//! The protocol data unit of the four read functions, the same under every
//! framing: a request's function and fields, and a reply checked against
//! the request it answers. [`rtu`](super::rtu) and [`tcp`](super::tcp) put
//! a unit id and a frame around it.
//!
//! Invariant: a reply is taken only if it comes from the unit asked, for
//! the function asked, with exactly the byte count the request implies, or
//! is an exception for that function from that unit; anything else is
//! described, never decoded.

use tokio_modbus::ExceptionCode;

use super::address::Table;

/// The longest PDU (Modbus Application Protocol v1.1b3, 4.1).
pub const MAX_PDU: usize = 253;

/// The read function of a table.
pub const fn function_code(table: Table) -> u8 {
    match table {
        Table::Coil => 0x01,
        Table::DiscreteInput => 0x02,
        Table::HoldingRegister => 0x03,
        Table::InputRegister => 0x04,
    }
}

/// One read: `count` registers or bits of `table` from `start`, of `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub unit: u8,
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

impl Request {
    /// The request's PDU: function, start and count.
    pub fn pdu(&self) -> [u8; 5] {
        let [start_hi, start_lo] = self.start.to_be_bytes();
        let [count_hi, count_lo] = self.count.to_be_bytes();
        [
            function_code(self.table),
            start_hi,
            start_lo,
            count_hi,
            count_lo,
        ]
    }

    /// The data bytes the answer carries.
    pub fn byte_count(&self) -> usize {
        if self.table.is_bits() {
            usize::from(self.count).div_ceil(8)
        } else {
            usize::from(self.count) * 2
        }
    }

    /// The length of the answer's PDU: function, byte count, data.
    pub fn answer_len(&self) -> usize {
        2 + self.byte_count()
    }
}

/// The device's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
    Exception(ExceptionCode),
}

/// `pdu`, received from `unit`, as the answer to `request`, or what it is
/// instead.
pub fn answer(request: &Request, unit: u8, pdu: &[u8]) -> Result<Reply, String> {
    let asked = function_code(request.table);
    let expected = request.byte_count();
    let what = |got: &str| {
        format!(
            "{got}; asked unit {}, function {asked}, {expected} data byte(s)",
            request.unit
        )
    };
    let Some(&function) = pdu.first() else {
        return Err(what(&format!("an empty reply from unit {unit}")));
    };
    if unit == request.unit && function == asked | 0x80 {
        return match pdu {
            [_, code] => Ok(Reply::Exception(ExceptionCode::new(*code))),
            _ => Err(what(&format!(
                "an exception of {} byte(s) from unit {unit}",
                pdu.len()
            ))),
        };
    }
    if function & 0x80 != 0 {
        return Err(what(&format!(
            "an exception from unit {unit} to function {}",
            function & 0x7F
        )));
    }
    if !(0x01..=0x04).contains(&function) {
        return Err(what(&format!(
            "a reply from unit {unit} to function {function}"
        )));
    }
    let data = match pdu {
        [_, count, data @ ..] if usize::from(*count) == data.len() => data,
        _ => {
            return Err(what(&format!(
                "a reply from unit {unit}, function {function}, whose byte count is not the \
                 {} byte(s) that follow it",
                pdu.len().saturating_sub(2)
            )))
        }
    };
    if unit != request.unit || function != asked || data.len() != expected {
        return Err(what(&format!(
            "a reply from unit {unit}, function {function}, {} data byte(s)",
            data.len()
        )));
    }
    Ok(if request.table.is_bits() {
        Reply::Bits(
            (0..usize::from(request.count))
                .map(|i| data[i / 8] >> (i % 8) & 1 == 1)
                .collect(),
        )
    } else {
        Reply::Registers(
            data.chunks_exact(2)
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ_TWO: Request = Request {
        unit: 1,
        table: Table::HoldingRegister,
        start: 0x6B,
        count: 2,
    };

    #[test]
    fn a_request_is_the_pdu_the_specification_gives_for_its_example() {
        // Modbus Application Protocol v1.1b3, 6.3: read holding registers
        // 108..110 is 03 00 6B 00 03.
        let request = Request {
            count: 3,
            ..READ_TWO
        };
        assert_eq!(request.pdu(), [0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(request.answer_len(), 8);
    }

    #[test]
    fn a_reply_whose_byte_count_disagrees_with_its_length_is_not_decoded() {
        assert_eq!(
            answer(&READ_TWO, 1, &[3, 4, 0, 1, 0, 2]),
            Ok(Reply::Registers(vec![1, 2]))
        );
        for pdu in [&[3, 4, 0, 1, 0][..], &[3, 2, 0, 1, 0, 2], &[3], &[]] {
            let why = answer(&READ_TWO, 1, pdu).unwrap_err();
            assert!(why.ends_with("asked unit 1, function 3, 4 data byte(s)"), "{why}");
        }
        let why = answer(&READ_TWO, 1, &[0x83, 2, 0]).unwrap_err();
        assert!(why.starts_with("an exception of 3 byte(s)"), "{why}");
    }
}
