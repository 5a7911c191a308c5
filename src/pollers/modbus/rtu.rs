//! Modbus RTU framing of the four read functions over any byte stream: a
//! serial port, or a TCP socket to a transparent serial gateway.
//!
//! tokio-modbus's RTU client is not used for these reads: it owns the
//! stream, so bytes waiting in the port or socket cannot be discarded
//! before a request (it clears only its own buffer, and a repeated or late
//! reply is then read as the next request's answer); a reply it cannot
//! decode within 20 bytes ends its stream for good, so the only way on is
//! to reopen the whole link; and a well-formed reply to something else ends
//! the call, losing the real answer behind it. Knowing the request, a reply
//! has one exact length, which makes the framing here small. The PDU
//! inside a frame is [`pdu`]'s, as over Modbus TCP ([`tcp`](super::tcp)).
//!
//! Invariants:
//! - before a request goes out, whatever is pending on the stream is read
//!   and discarded ([`Port::discard_pending`]);
//! - a reply is taken only if it is a frame with a good CRC, from the unit
//!   asked, for the function asked, with exactly the byte count the
//!   request implies, or an exception for that function from that unit;
//! - any other frame with a good CRC is a stray: described, dropped, and
//!   the wait for the answer goes on until the deadline;
//! - an answer byte for byte the same as the link's previous one may be
//!   that reply sent again, arriving after the request went out: it is
//!   held for a round trip (twice the previous exchange's, at least
//!   [`REPEAT_WINDOW`]), and if another answer comes in that time, the held
//!   one was a repeat and the later one is taken;
//! - bytes that start no frame with a good CRC are noise: skipped one at a
//!   time and counted, never an error of the link;
//! - nothing waits past the deadline it is given.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::pdu::{self, Reply, Request};

/// A serial port or a socket.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// The longest RTU frame (Modbus over Serial Line v1.02, 2.5.1).
const MAX_FRAME: usize = 256;

/// The least time an answer the same as the previous one is held for,
/// to see whether the real answer follows it.
pub const REPEAT_WINDOW: Duration = Duration::from_millis(20);

/// At most this much is discarded in one go, so a line that never stops
/// talking cannot hold a request back for ever.
const MAX_DISCARD: usize = 64 * 1024;

/// Modbus RTU's CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF), in
/// wire order: low byte first.
pub fn crc16(bytes: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for &byte in bytes {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            let low_bit = crc & 1 == 1;
            crc >>= 1;
            if low_bit {
                crc ^= 0xA001;
            }
        }
    }
    crc.to_le_bytes()
}

impl Request {
    /// The request as it goes on the wire: unit, PDU, CRC.
    pub fn frame(&self) -> [u8; 8] {
        let [function, start_hi, start_lo, count_hi, count_lo] = self.pdu();
        let head = [self.unit, function, start_hi, start_lo, count_hi, count_lo];
        let [crc_lo, crc_hi] = crc16(&head);
        [
            head[0], head[1], head[2], head[3], head[4], head[5], crc_lo, crc_hi,
        ]
    }
}

/// What a scan of the bytes received found first.
#[derive(Debug, PartialEq)]
enum Found {
    /// The answer, in `at..end`.
    Answer { reply: Reply, at: usize, end: usize },
    /// A good frame in `at..end` that answers something else.
    Stray { what: String, at: usize, end: usize },
}

/// How long a response frame starting at `bytes[0]` would be, if its
/// function code is one a device answers with.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let function = *bytes.get(1)?;
    match function {
        // unit, function, byte count, data, CRC
        0x01..=0x04 => bytes.get(2).map(|&n| 5 + usize::from(n)),
        // unit, function, address, value or count, CRC
        0x05 | 0x06 | 0x0F | 0x10 => Some(8),
        // unit, function | 0x80, exception code, CRC
        0x81..=0xFF => Some(5),
        _ => None,
    }
}

/// The first frame with a good CRC in `buffer`, whatever comes before it.
/// Stops at the start of an answer still arriving, so that its data,
/// which may by chance hold a frame of its own, is not scanned for one.
fn scan(buffer: &[u8], request: &Request) -> Option<Found> {
    let header = [
        request.unit,
        pdu::function_code(request.table),
        request.byte_count() as u8,
    ];
    for at in 0..buffer.len() {
        let rest = &buffer[at..];
        let Some(len) = frame_len(rest) else {
            if header.starts_with(rest) {
                return None;
            }
            continue;
        };
        let Some(frame) = rest.get(..len) else {
            if rest.starts_with(&header) {
                return None;
            }
            continue;
        };
        if crc16(&frame[..len - 2]) != frame[len - 2..] {
            continue;
        }
        let end = at + len;
        return Some(match classify(frame, request) {
            Ok(reply) => Found::Answer { reply, at, end },
            Err(what) => Found::Stray { what, at, end },
        });
    }
    None
}

/// The frame as the answer to `request`, or why it is not.
fn classify(frame: &[u8], request: &Request) -> Result<Reply, String> {
    pdu::answer(request, frame[0], &frame[1..frame.len() - 2])
}

/// What came back for one request.
#[derive(Debug, Default)]
pub struct Exchange {
    /// The answer; none when the deadline passed first.
    pub reply: Option<Reply>,
    /// Bytes that made no frame with a good CRC.
    pub noise: usize,
    /// Good frames that answered something else, described.
    pub strays: Vec<String>,
    /// Copies of the previous answer that came before this one.
    pub repeats: usize,
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the other end closed the connection",
    )
}

/// An RTU link: the stream and what has been read from it but not used.
pub struct Port {
    stream: Box<dyn ByteStream>,
    buffer: Vec<u8>,
    /// The last answer taken, as it came, and how long it took to come.
    last: Vec<u8>,
    last_took: Duration,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl Port {
    pub fn new(stream: impl ByteStream + 'static) -> Self {
        Port {
            stream: Box::new(stream),
            buffer: Vec::with_capacity(2 * MAX_FRAME),
            last: Vec::new(),
            last_took: Duration::ZERO,
        }
    }

    /// Reads and discards, without waiting, whatever has arrived and not
    /// been used: a late or repeated reply is no answer to the next
    /// request. Returns how many bytes went.
    pub fn discard_pending(&mut self) -> io::Result<usize> {
        let mut discarded = self.buffer.len();
        self.buffer.clear();
        let mut scratch = [0u8; 1024];
        // A no-op waker: nothing is waited for here; the next read
        // registers the task's own waker again.
        let mut cx = Context::from_waker(Waker::noop());
        while discarded < MAX_DISCARD {
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(&mut cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Err(closed()),
                Poll::Ready(Ok(())) => discarded += read.filled().len(),
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => break,
            }
        }
        Ok(discarded)
    }

    /// Sends `request` and reads until its answer or `deadline`, skipping
    /// noise and stray frames.
    pub async fn ask(&mut self, request: &Request, deadline: Instant) -> io::Result<Exchange> {
        self.stream.write_all(&request.frame()).await?;
        self.stream.flush().await?;
        let sent = Instant::now();
        let mut exchange = Exchange::default();
        // An answer the same as the last one, held to see whether the real
        // answer follows it, and until when.
        let mut held: Option<Reply> = None;
        let mut wait_until = deadline;
        loop {
            while let Some(found) = scan(&self.buffer, request) {
                match found {
                    Found::Answer { reply, at, end } => {
                        exchange.noise += at;
                        let same_as_last = self.buffer[at..end] == self.last[..];
                        if !same_as_last {
                            self.last = self.buffer[at..end].to_vec();
                        }
                        self.buffer.drain(..end);
                        if held.is_none() && same_as_last {
                            held = Some(reply);
                            let window = (self.last_took * 2).max(REPEAT_WINDOW);
                            wait_until = deadline.min(sent + window);
                            continue;
                        }
                        exchange.repeats += usize::from(held.is_some());
                        self.last_took = sent.elapsed();
                        exchange.reply = Some(reply);
                        return Ok(exchange);
                    }
                    Found::Stray { what, at, end } => {
                        exchange.noise += at;
                        exchange.strays.push(what);
                        self.buffer.drain(..end);
                    }
                }
            }
            // No frame starts before the last MAX_FRAME bytes.
            if self.buffer.len() > MAX_FRAME {
                let noise = self.buffer.len() - MAX_FRAME;
                exchange.noise += noise;
                self.buffer.drain(..noise);
            }
            let read = self.stream.read_buf(&mut self.buffer);
            match tokio::time::timeout_at(wait_until, read).await {
                Ok(Ok(0)) => return Err(closed()),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) if held.is_some() => {
                    // Nothing followed: it was the answer.
                    self.last_took = sent.elapsed();
                    exchange.reply = held;
                    return Ok(exchange);
                }
                Err(_) => {
                    exchange.noise += self.buffer.len();
                    self.buffer.clear();
                    return Ok(exchange);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pollers::modbus::address::Table;
    use tokio_modbus::ExceptionCode;

    fn with_crc(bytes: &[u8]) -> Vec<u8> {
        let mut frame = bytes.to_vec();
        frame.extend(crc16(bytes));
        frame
    }

    const READ_TWO: Request = Request {
        unit: 1,
        table: Table::InputRegister,
        start: 0,
        count: 2,
    };

    const READ_FOUR: Request = Request {
        count: 4,
        ..READ_TWO
    };

    #[test]
    fn the_crc_is_the_one_the_specification_gives_for_its_example() {
        // Modbus over Serial Line v1.02, 6.2.2: 02 07 -> CRC 41 12 on the wire.
        assert_eq!(crc16(&[0x02, 0x07]), [0x41, 0x12]);
        assert_eq!(
            READ_TWO.frame(),
            [0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]
        );
    }

    #[test]
    fn a_reply_matching_the_request_is_taken_after_noise_and_stray_frames() {
        let mut buffer = vec![0x55, 0xAA, 0x00];
        // Another unit, then a reply with one register too few.
        buffer.extend(with_crc(&[2, 4, 4, 0, 1, 0, 2]));
        buffer.extend(with_crc(&[1, 4, 2, 0, 9]));
        let answer = with_crc(&[1, 4, 4, 0x12, 0x34, 0x56, 0x78]);
        buffer.extend(&answer);
        let mut strays = Vec::new();
        let mut rest = &buffer[..];
        loop {
            match scan(rest, &READ_TWO).expect("a frame") {
                Found::Stray { what, end, .. } => {
                    strays.push(what);
                    rest = &rest[end..];
                }
                Found::Answer { reply, at, end } => {
                    assert_eq!(reply, Reply::Registers(vec![0x1234, 0x5678]));
                    assert_eq!((at, end), (0, answer.len()));
                    break;
                }
            }
        }
        assert_eq!(strays.len(), 2, "{strays:?}");
        assert!(strays[0].contains("from unit 2"), "{}", strays[0]);
        assert!(strays[1].contains("2 data byte(s); asked unit 1, function 4, 4 data byte(s)"));
    }

    #[test]
    fn the_data_of_an_answer_still_arriving_is_not_scanned_for_frames() {
        // Two registers whose value bytes hold an exception frame from
        // unit 1 to function 3, good CRC and all.
        let inner = with_crc(&[1, 0x83, 2]);
        let mut answer = vec![1, 4, 8, 0];
        answer.extend(&inner);
        answer.extend([0, 0]);
        let answer = with_crc(&answer);
        for cut in 1..answer.len() {
            assert_eq!(scan(&answer[..cut], &READ_FOUR), None, "cut at {cut}");
        }
        assert!(matches!(
            scan(&answer, &READ_FOUR),
            Some(Found::Answer { at: 0, .. })
        ));
    }

    #[test]
    fn a_frame_with_a_bad_crc_or_cut_short_is_no_reply() {
        let mut bad = with_crc(&[1, 4, 4, 0, 1, 0, 2]);
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&bad, &READ_TWO), None);
        let good = with_crc(&[1, 4, 4, 0, 1, 0, 2]);
        assert_eq!(scan(&good[..good.len() - 1], &READ_TWO), None);
    }

    #[test]
    fn an_exception_for_the_function_asked_is_the_answer_and_bits_are_cut_to_the_count() {
        let exception = with_crc(&[1, 0x84, 2]);
        assert!(matches!(
            scan(&exception, &READ_TWO),
            Some(Found::Answer {
                reply: Reply::Exception(ExceptionCode::IllegalDataAddress),
                ..
            })
        ));
        let coils = Request {
            unit: 7,
            table: Table::Coil,
            start: 3,
            count: 10,
        };
        let reply = with_crc(&[7, 1, 2, 0b1000_0101, 0b1111_1110]);
        let Some(Found::Answer { reply, .. }) = scan(&reply, &coils) else {
            panic!("no answer");
        };
        let mut bits = vec![true, false, true, false, false, false, false, true];
        bits.extend([false, true]);
        assert_eq!(reply, Reply::Bits(bits));
    }

    async fn ask(port: &mut Port) -> Exchange {
        let deadline = Instant::now() + Duration::from_secs(1);
        port.ask(&READ_TWO, deadline).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_the_same_as_the_last_is_held_for_a_round_trip_and_a_later_answer_wins() {
        use tokio::io::AsyncWriteExt;
        let (agent, mut device) = tokio::io::duplex(1024);
        let mut port = Port::new(agent);
        let reply = |v: u8| with_crc(&[1, 4, 4, 0, v, 0, v]);
        device.write_all(&reply(1)).await.unwrap();
        let first = ask(&mut port).await;
        assert_eq!(first.reply, Some(Reply::Registers(vec![1, 1])));

        // The same bytes and nothing after: the answer, once the window
        // has passed, not at the deadline.
        device.write_all(&reply(1)).await.unwrap();
        let asked = Instant::now();
        let second = ask(&mut port).await;
        assert_eq!(second.reply, Some(Reply::Registers(vec![1, 1])));
        assert_eq!(second.repeats, 0);
        assert_eq!(asked.elapsed(), REPEAT_WINDOW);

        // A copy of the last reply, then the answer: the copy is dropped.
        device.write_all(&reply(1)).await.unwrap();
        device.write_all(&reply(2)).await.unwrap();
        let third = ask(&mut port).await;
        assert_eq!(third.reply, Some(Reply::Registers(vec![2, 2])));
        assert_eq!(third.repeats, 1);
    }
}
