//! Modbus TCP framing of the four read functions: the MBAP header
//! (transaction id, protocol 0, length, unit) around [`pdu`]'s PDU, on a
//! TCP connection.
//!
//! tokio-modbus's TCP client is not used for these reads: it keeps an
//! 8 KiB read and an 8 KiB write buffer for every connection and gives no
//! way to size them (16 MiB for a thousand devices), while the reply to a
//! read has a length known from the request, at most [`MAX_ADU`] bytes.
//! The RTU transports are framed by the agent too ([`rtu`](super::rtu)).
//! A connection here holds the socket and the next transaction id; the
//! reply is read into a buffer that lives only while its request does.
//!
//! Invariants:
//! - one request at a time; each has the connection's next transaction id
//!   (from 0, wrapping);
//! - nothing past the reply is read: the first read asks for at most the
//!   length of the answer the request implies (an exception is shorter),
//!   the rest for exactly what the header announces;
//! - a reply is taken only if its header has the transaction id sent,
//!   protocol 0, the unit asked and a length of 2 to 254 (unit and PDU), and
//!   its PDU answers the request ([`pdu::answer`]: function and byte
//!   count); an exception for the function asked is an answer;
//! - anything else is a [`Failure::Protocol`]: the stream is out of step
//!   and the caller drops the connection. A wrong header fails at once,
//!   without waiting for the PDU it announces;
//! - the other end closing, before or during a reply, is a [`Failure::Io`];
//! - nothing here waits on a clock: the caller bounds every request.

use std::fmt;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pdu::{self, Reply, Request, MAX_PDU};

/// The MBAP header: transaction id, protocol id, length, unit id.
const HEADER: usize = 7;

/// The longest Modbus TCP ADU: the header and the longest PDU.
pub const MAX_ADU: usize = HEADER + MAX_PDU;

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection failed or was closed.
    Io(io::Error),
    /// What came back is not the answer to the request.
    Protocol(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(error) => error.fmt(f),
            Failure::Protocol(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::Io(error)
    }
}

/// The request as it goes on the wire with `transaction` as its id.
pub fn adu(transaction: u16, request: &Request) -> [u8; 12] {
    let [t_hi, t_lo] = transaction.to_be_bytes();
    let [function, start_hi, start_lo, count_hi, count_lo] = request.pdu();
    // Length: the unit and the five bytes of the PDU.
    [
        t_hi,
        t_lo,
        0,
        0,
        0,
        6,
        request.unit,
        function,
        start_hi,
        start_lo,
        count_hi,
        count_lo,
    ]
}

/// A Modbus TCP connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    next_transaction: u16,
}

impl Client {
    pub fn new(stream: TcpStream) -> Self {
        Client {
            stream,
            next_transaction: 0,
        }
    }

    /// Sends `request` and reads its answer.
    pub async fn ask(&mut self, request: &Request) -> Result<Reply, Failure> {
        let transaction = self.next_transaction;
        self.next_transaction = transaction.wrapping_add(1);
        self.stream.write_all(&adu(transaction, request)).await?;
        let mut buffer = [0u8; MAX_ADU];
        let mut filled = 0;
        let answer_len = (HEADER + request.answer_len()).min(MAX_ADU);
        while filled < HEADER {
            filled += self.read(&mut buffer[filled..answer_len], filled).await?;
        }
        let len = check_header(&buffer[..HEADER], transaction, request)?;
        let end = HEADER - 1 + len;
        if filled > end {
            return Err(Failure::Protocol(format!(
                "{} byte(s) followed a reply of {end} byte(s) that announced no more",
                filled - end
            )));
        }
        while filled < end {
            filled += self.read(&mut buffer[filled..end], filled).await?;
        }
        pdu::answer(request, request.unit, &buffer[HEADER..end]).map_err(Failure::Protocol)
    }

    /// One read into `into`, `so_far` bytes into a reply.
    async fn read(&mut self, into: &mut [u8], so_far: usize) -> io::Result<usize> {
        match self.stream.read(into).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if so_far == 0 {
                    "the device closed the connection".to_owned()
                } else {
                    format!("the device closed the connection {so_far} byte(s) into its reply")
                },
            )),
            n => Ok(n),
        }
    }
}

/// The PDU's length and the unit's byte (the header's length field), if
/// `header` is that of the answer to `request` sent as `transaction`.
fn check_header(header: &[u8], transaction: u16, request: &Request) -> Result<usize, Failure> {
    let got = u16::from_be_bytes([header[0], header[1]]);
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let unit = header[6];
    let why = if got != transaction {
        format!(
            "a reply with transaction id {got} to request {transaction} (a late reply, or a \
             device that does not echo the id)"
        )
    } else if protocol != 0 {
        format!("a reply with protocol id {protocol}, not 0 (Modbus)")
    } else if !(2..=MAX_PDU + 1).contains(&len) {
        format!(
            "a reply whose MBAP length is {len} (unit and PDU: 2 to {})",
            MAX_PDU + 1
        )
    } else if unit != request.unit {
        format!("a reply from unit {unit}; asked unit {}", request.unit)
    } else {
        return Ok(len);
    };
    Err(Failure::Protocol(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pollers::modbus::address::Table;

    const READ_TWO: Request = Request {
        unit: 1,
        table: Table::InputRegister,
        start: 8,
        count: 2,
    };

    #[test]
    fn a_request_goes_out_with_the_mbap_header_before_its_pdu() {
        // Modbus Messaging on TCP/IP v1.0b, 3.1.3: length counts the unit
        // and the PDU.
        assert_eq!(
            adu(0x0102, &READ_TWO),
            [0x01, 0x02, 0, 0, 0, 6, 1, 4, 0, 8, 0, 2]
        );
    }

    #[test]
    fn a_header_with_another_transaction_protocol_length_or_unit_is_refused() {
        let good = [0, 7, 0, 0, 0, 7, 1];
        assert_eq!(check_header(&good, 7, &READ_TWO).unwrap(), 7);
        for (header, says) in [
            ([0, 8, 0, 0, 0, 7, 1], "transaction id 8 to request 7"),
            ([0, 7, 0, 1, 0, 7, 1], "protocol id 1"),
            ([0, 7, 0, 0, 0, 1, 1], "MBAP length is 1"),
            ([0, 7, 0, 0, 1, 0, 1], "MBAP length is 256"),
            ([0, 7, 0, 0, 0, 7, 2], "from unit 2; asked unit 1"),
        ] {
            let error = check_header(&header, 7, &READ_TWO).unwrap_err().to_string();
            assert!(error.contains(says), "{header:?}: {error}");
        }
    }
}
