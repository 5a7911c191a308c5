//! The Modbus poller: reads coils, discrete inputs, input registers and
//! holding registers from devices and gateways, over Modbus TCP, RTU frames
//! over TCP, or RTU on a serial line.
//!
//! # Configuration (`type: modbus_tcp` in `pattoo_agentd.yaml`)
//!
//! ```yaml
//! - name: meters
//!   type: modbus_tcp
//!   targets:                      # host, host:port (default port 502) or a mapping
//!     - "10.0.0.5"
//!     - {address: "10.0.0.9:502", unit: 3, name: inverter-3}
//!   transport: tcp                # tcp (default), rtu_over_tcp or rtu
//!   # with rtu: the line, and `targets` lists unit ids ([1, 2] or {unit, name})
//!   # device: /dev/ttyUSB0
//!   # baud_rate: 9600             # parity: none|even|odd, data_bits: 8, stop_bits: 1
//!   retries: 1                    # garbled or wrong-unit replies asked again (RTU: 1, TCP: 0)
//!   unit: 1                       # unit id of targets that do not give one (default 1)
//!   timeout_ms: 3000              # per connect and per request (default 3000)
//!   max_registers_per_read: 125   # lower it for fussy devices (1..125)
//!   max_bits_per_read: 2000       # coils and discrete inputs (1..2000)
//!   max_gap: 0                    # unwanted registers (or bits) read to save a request
//!   max_concurrent_targets: 16    # host:port connections polled at once
//!   byte_order: ABCD              # default for registers: ABCD, CDAB, BADC or DCBA
//!   registers:                    # read from every target
//!     - 30001                     # Modicon number: input register address 0, uint16
//!     - address: 30013
//!       type: float32             # bool, int16, uint16, int32, uint32, int64, uint64,
//!                                 # float32, float64, string (with `length` in registers)
//!       order: CDAB
//!       multiplier: 0.1           # value = raw × multiplier + offset, posted as a float
//!       offset: 0
//!       data_type: float          # int, float, counter, counter64, string
//!       key: voltage_l1           # default: input_register_30013
//!       metadata: {phase: L1}
//!       unit: 2                   # read from unit 2 instead of the target's unit
//!     - {table: coil, address: 0} # zero-based address in an explicit table: coil_1
//! ```
//!
//! Register numbers: see [`address`] for the Modicon forms. With `table`,
//! `address` is the zero-based address that goes on the wire. Default keys
//! follow the Python agent: `input_register_30386`, `holding_register_40001`,
//! `coil_1`, `discrete_input_10001`. Default data types: `float` for floats
//! and for values scaled by a fraction, `string` for strings, `int`
//! otherwise. Every datapoint carries the metadata `unit` with the unit id
//! as three digits (`"001"`), as the Python agent sends it, so a uint16
//! register read here with its default key keeps the Python agent's chart.
//!
//! # How it reads
//!
//! - One TCP connection per host:port, kept between polls and shared by
//!   every target and unit behind it; one request in flight on it
//!   ([`connection`] has the timeout, retry and backoff rules). A serial
//!   port is one link for every poller naming it.
//! - Connections are polled concurrently, at most `max_concurrent_targets`
//!   at once, so a dead device costs its timeout and delays no other.
//! - Values of the same unit and table are merged into the fewest reads
//!   ([`plan`]). A merged read refused with exception 2 (illegal data
//!   address) is split in two and retried until the bad address is
//!   isolated; the split is kept for later polls.
//! - A unit that times out, or whose replies stay garbled through its
//!   retries, is not asked again in the same poll. A link
//!   through which nothing answered in the last poll is silent (a gateway
//!   that accepts and never answers, a dead bus): its first timeout ends
//!   its poll, and its units take turns at being asked first.
//! - Both framings are the agent's own around one PDU encoding ([`pdu`]).
//!   On Modbus TCP a reply whose transaction id, unit, function or length
//!   does not answer the request drops the connection ([`tcp`]).
//!   On RTU, what is left on the line is discarded before each request and
//!   a reply that does not answer it (unit, function, byte count) is
//!   dropped ([`rtu`]); a unit answering noise fails its own reads only.
//! - Whatever was read is returned; nothing is made up for the rest, and
//!   every failure is logged with the unit, device and register range.

pub mod address;
pub mod compat;
/// The metadata key of the Modbus unit (slave) id every datapoint carries.
pub const UNIT_METADATA_KEY: &str = "unit";

mod config;
pub mod connection;
pub mod decode;
mod kind;
pub mod pdu;
pub mod plan;
pub mod rtu;
pub mod tcp;

use std::collections::HashMap;

pub use config::{
    ModbusSettings, Parity, RegisterSettings, SerialSettings, TargetSettings, Transport,
    DEFAULT_PORT, DEFAULT_TIMEOUT, DEFAULT_UNIT,
};
pub use kind::Modbus;
use futures_util::StreamExt;
use tokio_modbus::ExceptionCode;

use self::address::Table;
use self::connection::{Connection, Data, ReadError};
use self::plan::{Block, Item, Limits};
use crate::model::{DataPoint, Metadata, TargetData};
use crate::time::now_ms;

/// A poll read nothing at all.
#[derive(Debug, thiserror::Error)]
#[error("poller {poller}: nothing read: all {failed} read(s) failed (see the warnings above)")]
pub struct ModbusError {
    pub poller: String,
    pub failed: usize,
}

#[derive(Debug)]
pub struct ModbusPoller {
    name: String,
    targets: Vec<TargetSettings>,
    /// Parallel to `targets`.
    placing: Vec<Placing>,
    endpoints: Vec<Endpoint>,
    max_concurrent_targets: usize,
}

/// Everything read through one connection.
#[derive(Debug)]
struct Endpoint {
    connection: Connection,
    groups: Vec<ReadGroup>,
    /// Whether anything answered through the connection in the last poll
    /// (true before the first). When nothing did, the link itself is
    /// taken for silent: a timeout ends its poll.
    answered_last_poll: bool,
    /// While the link is silent, which unit is asked first in turn, so a
    /// unit that answers again is found whichever it is.
    turn: usize,
}

/// The values of one unit and table behind one connection, and the reads
/// that fetch them.
#[derive(Debug)]
struct ReadGroup {
    unit: u8,
    /// `unit` as every reading from it carries it, shared.
    unit_metadata: Metadata,
    table: Table,
    items: Vec<Item>,
    /// Parallel to `items`: which target's which register each one is.
    /// `u32`s, and `items`, `uses` and the blocks' item lists cut to their
    /// length once planned: for 1,000 devices of 100 registers, the plan
    /// took 3.6 MB with `usize` pairs and capacities grown by doubling.
    uses: Vec<(u32, u32)>,
    blocks: Vec<Block>,
}

/// What one connection's poll produced.
#[derive(Debug, Default)]
struct Outcome {
    /// (target index, register index, datapoint)
    datapoints: Vec<(usize, usize, DataPoint)>,
    reads_ok: usize,
    reads_failed: usize,
}

impl ModbusPoller {
    /// Plans every read. Does no network I/O.
    pub fn new(name: &str, settings: &ModbusSettings) -> anyhow::Result<Self> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut index: HashMap<(String, u16), usize> = HashMap::new();
        let mut placing = Vec::with_capacity(settings.targets.len());
        let mut last_of_name: HashMap<&str, usize> = HashMap::new();
        for (t, target) in settings.targets.iter().enumerate() {
            last_of_name.insert(&target.name, t);
        }
        for (t, target) in settings.targets.iter().enumerate() {
            let e = *index.entry(target.endpoint()).or_insert_with(|| {
                endpoints.push(Endpoint {
                    connection: Connection::new(
                        &target.host,
                        target.port,
                        &settings.transport,
                        settings.timeout,
                        settings.retries,
                    ),
                    groups: Vec::new(),
                    answered_last_poll: true,
                    turn: 0,
                });
                endpoints.len() - 1
            });
            placing.push(Placing {
                endpoint: e,
                last_of_name: last_of_name[target.name.as_str()],
            });
            let groups = &mut endpoints[e].groups;
            for (r, register) in target.registers.iter().enumerate() {
                let unit = register.unit.unwrap_or(target.unit);
                let table = register.address.table;
                let g = match groups
                    .iter()
                    .position(|g| g.unit == unit && g.table == table)
                {
                    Some(g) => g,
                    None => {
                        groups.push(ReadGroup {
                            unit,
                            unit_metadata: Metadata::new(UNIT_METADATA_KEY, format!("{unit:03}"))
                                .shared(),
                            table,
                            items: Vec::new(),
                            uses: Vec::new(),
                            blocks: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                groups[g].items.push(Item {
                    start: register.address.offset,
                    count: register.value_type.width(),
                });
                groups[g].uses.push((index32(t), index32(r)));
            }
        }
        for group in endpoints.iter_mut().flat_map(|e| e.groups.iter_mut()) {
            group.items.shrink_to_fit();
            group.uses.shrink_to_fit();
            let max_count = if group.table.is_bits() {
                settings.max_bits_per_read
            } else {
                settings.max_registers_per_read
            };
            group.blocks = plan::plan(
                &group.items,
                Limits {
                    max_count,
                    max_gap: settings.max_gap,
                },
            );
            for block in &mut group.blocks {
                block.items.shrink_to_fit();
            }
        }
        Ok(ModbusPoller {
            name: name.to_owned(),
            targets: settings.targets.clone(),
            placing,
            endpoints,
            max_concurrent_targets: settings.max_concurrent_targets.max(1),
        })
    }

    /// How many read requests one poll makes when every read succeeds.
    pub fn planned_reads(&self) -> usize {
        self.endpoints
            .iter()
            .flat_map(|e| &e.groups)
            .map(|g| g.blocks.len())
            .sum()
    }

    /// Polls every target once.
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, ModbusError> {
        let mut result = Vec::new();
        self.poll_each(&mut |target| result.push(target)).await?;
        Ok(result)
    }

    /// Polls every target once, handing each target's readings to `each`
    /// as soon as every connection it is read through has finished, in
    /// configuration order: a target waits only for those before it, so
    /// the readings held at once are those of the targets finished before
    /// one still being read, not the whole poll. Targets named alike
    /// (units behind one gateway) are handed over as one, where the first
    /// of them that read anything stands. Fails, handing over nothing, when
    /// every read failed.
    pub async fn poll_each(
        &mut self,
        each: &mut (dyn FnMut(TargetData) + Send),
    ) -> Result<(), ModbusError> {
        let name = self.name.as_str();
        let targets = self.targets.as_slice();
        let endpoints = self.endpoints.len();
        // Collected first: a lazy `map` over `iter_mut` inside the stream
        // makes the future's type too general for the compiler to prove it
        // `Send`, which the scheduler's tasks need.
        let polls: Vec<_> = self
            .endpoints
            .iter_mut()
            .enumerate()
            .map(|(e, endpoint)| async move { (e, endpoint.poll(name, targets).await) })
            .collect();
        let mut outcomes = futures_util::stream::iter(polls).buffer_unordered(self.max_concurrent_targets);
        let mut order = Order::new(targets, &self.placing, endpoints);
        let (mut reads_ok, mut reads_failed) = (0, 0);
        while let Some((e, outcome)) = outcomes.next().await {
            reads_ok += outcome.reads_ok;
            reads_failed += outcome.reads_failed;
            order.finished(e, outcome, each);
        }
        if reads_ok == 0 && reads_failed > 0 {
            return Err(ModbusError {
                poller: self.name.clone(),
                failed: reads_failed,
            });
        }
        Ok(())
    }
}

/// `i` as a `u32`: a configuration has fewer than 2^32 targets, and a
/// target fewer than 2^32 registers.
fn index32(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 targets and registers")
}

/// Puts the readings of connections finishing in any order back in
/// configuration order, handing each target over once it and every target
/// before it are read.
struct Order<'a> {
    targets: &'a [TargetSettings],
    placing: &'a [Placing],
    /// Whether each connection's poll has finished.
    finished: Vec<bool>,
    /// Each target's readings, with their register index, once its
    /// connection has finished.
    readings: Vec<Vec<(usize, DataPoint)>>,
    /// The first target whose connection may still be polling.
    next: usize,
    /// Names given a place, in order, with the targets named alike that
    /// wait in it.
    slots: Vec<Slot<'a>>,
    /// The first slot not handed over yet.
    next_slot: usize,
}

struct Slot<'a> {
    name: &'a str,
    /// The last target of that name.
    last: usize,
    /// The targets of that name with readings so far, in order.
    targets: Vec<usize>,
}

/// Where a target's readings come from and go to, worked out once.
#[derive(Debug, Clone, Copy)]
struct Placing {
    /// The connection it is read through.
    endpoint: usize,
    /// The last target of the same name: its readings are handed over
    /// with this one's.
    last_of_name: usize,
}

impl<'a> Order<'a> {
    fn new(targets: &'a [TargetSettings], placing: &'a [Placing], endpoints: usize) -> Self {
        Order {
            targets,
            placing,
            finished: vec![false; endpoints],
            readings: (0..targets.len()).map(|_| Vec::new()).collect(),
            next: 0,
            slots: Vec::new(),
            next_slot: 0,
        }
    }

    /// Takes the readings of connection `e` and hands over every target
    /// now complete.
    fn finished(
        &mut self,
        e: usize,
        outcome: Outcome,
        each: &mut (dyn FnMut(TargetData) + Send),
    ) {
        self.finished[e] = true;
        for (t, r, datapoint) in outcome.datapoints {
            let readings = &mut self.readings[t];
            if readings.capacity() == 0 {
                // As many as the target can have: grown by doubling, a
                // hundred readings took a quarter more than they fill.
                readings.reserve_exact(self.targets[t].registers.len());
            }
            readings.push((r, datapoint));
        }
        // Targets read in full, in order, each given the place of its name
        // when it is the first of that name with readings (as the whole
        // poll's order would have it).
        while self.next < self.targets.len() && self.finished[self.placing[self.next].endpoint] {
            let t = self.next;
            self.next += 1;
            if self.readings[t].is_empty() {
                continue;
            }
            let name = self.targets[t].name.as_str();
            match self.slots[self.next_slot..].iter_mut().find(|s| s.name == name) {
                Some(slot) => slot.targets.push(t),
                // A name handed over already is not met again: a slot is
                // handed over only once its last target is read.
                None => self.slots.push(Slot {
                    name,
                    last: self.placing[t].last_of_name,
                    targets: vec![t],
                }),
            }
        }
        // A slot is handed over once no target of its name is left unread.
        while self.next_slot < self.slots.len() {
            let slot = &self.slots[self.next_slot];
            if slot.last >= self.next {
                break;
            }
            let mut target = TargetData::new(slot.name);
            let count = slot.targets.iter().map(|&t| self.readings[t].len()).sum();
            target.datapoints.reserve_exact(count);
            for &t in &slot.targets {
                let mut readings = std::mem::take(&mut self.readings[t]);
                readings.sort_by_key(|(r, _)| *r);
                target
                    .datapoints
                    .extend(readings.into_iter().map(|(_, datapoint)| datapoint));
            }
            self.next_slot += 1;
            each(target);
        }
    }
}

/// `input registers 30001..30125`, or `coil 17` for a single one.
fn describe_range(table: Table, start: u16, count: u16) -> String {
    let first = table.modicon(start);
    if count <= 1 {
        let plural = table.plural();
        format!("{} {first}", &plural[..plural.len() - 1])
    } else {
        let last = table.modicon(start.saturating_add(count - 1));
        format!("{} {first}..{last}", table.plural())
    }
}

impl Endpoint {
    /// The order groups are read in: as planned, except that while the
    /// link is silent the units take turns at being asked first.
    fn order(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.groups.len()).collect();
        if self.answered_last_poll {
            return order;
        }
        let mut units: Vec<u8> = Vec::new();
        for group in &self.groups {
            if !units.contains(&group.unit) {
                units.push(group.unit);
            }
        }
        if units.len() > 1 {
            let first = self.turn % units.len();
            self.turn = self.turn.wrapping_add(1);
            units.rotate_left(first);
            order.sort_by_key(|&g| units.iter().position(|&u| u == self.groups[g].unit));
        }
        order
    }

    async fn poll(&mut self, poller: &str, targets: &[TargetSettings]) -> Outcome {
        let order = self.order();
        let link_was_silent = !self.answered_last_poll;
        let Endpoint {
            connection,
            groups,
            answered_last_poll,
            ..
        } = self;
        let endpoint = connection.endpoint();
        // Exactly as long as a full read needs: grown by doubling, a
        // thousand devices' readings took a quarter more than they fill.
        let mut outcome = Outcome {
            datapoints: Vec::with_capacity(groups.iter().map(|g| g.items.len()).sum()),
            ..Outcome::default()
        };
        let mut silent_units: Vec<u8> = Vec::new();
        let mut answered = false;
        for (n, &g) in order.iter().enumerate() {
            let group = &mut groups[g];
            if silent_units.contains(&group.unit) {
                outcome.reads_failed += group.blocks.len();
                continue;
            }
            let mut i = 0;
            while i < group.blocks.len() {
                let block = &group.blocks[i];
                let range = describe_range(group.table, block.start, block.count);
                let result = connection
                    .read(group.unit, group.table, block.start, block.count)
                    .await;
                answered |= matches!(
                    result,
                    Ok(_)
                        | Err(ReadError::Exception(_)
                            | ReadError::Garbled { .. }
                            | ReadError::Mismatch(_))
                );
                match result {
                    Ok(data) => {
                        outcome.reads_ok += 1;
                        group.deliver(i, &data, targets, &mut outcome);
                        i += 1;
                    }
                    Err(ReadError::Exception(ExceptionCode::IllegalDataAddress))
                        if block.items.len() > 1 =>
                    {
                        let (left, right) =
                            plan::split(block, &group.items).expect("more than one item");
                        tracing::info!(
                            poller,
                            target = %endpoint,
                            unit = group.unit,
                            registers = %range,
                            "device refused a merged read as an illegal data address; splitting it to find the bad address, and keeping the split"
                        );
                        group.blocks.splice(i..=i, [left, right]);
                    }
                    Err(error) => {
                        outcome.reads_failed += 1;
                        tracing::warn!(
                            poller,
                            target = %endpoint,
                            unit = group.unit,
                            registers = %range,
                            "unit {} on {endpoint}: read {range}: {error}",
                            group.unit
                        );
                        let timed_out = matches!(error, ReadError::Timeout(_));
                        // Nothing answered through the link in the last
                        // poll, nor yet in this one: the gateway (or the
                        // bus) is silent, not this unit. Asking the other
                        // units would cost a timeout each.
                        let link_silent = timed_out && link_was_silent && !answered;
                        if error.ends_connection_for_poll() || link_silent {
                            let skipped = group.blocks.len() - i - 1
                                + order[n + 1..]
                                    .iter()
                                    .map(|&g| groups[g].blocks.len())
                                    .sum::<usize>();
                            outcome.reads_failed += skipped;
                            if skipped > 0 && link_silent {
                                tracing::warn!(
                                    poller,
                                    target = %endpoint,
                                    "nothing has answered through {endpoint} since the last poll: skipping the other {skipped} read(s) in this poll (each poll asks one unit, in turn, until one answers)"
                                );
                            } else if skipped > 0 {
                                tracing::warn!(
                                    poller,
                                    target = %endpoint,
                                    "skipping the other {skipped} read(s) through {endpoint} in this poll"
                                );
                            }
                            *answered_last_poll = answered;
                            return outcome;
                        }
                        if timed_out || matches!(error, ReadError::Garbled { .. }) {
                            // A unit that did not answer once will not answer
                            // the next request either, nor one that answered
                            // only noise through its retries; asking costs
                            // another timeout (or several).
                            silent_units.push(group.unit);
                            outcome.reads_failed += group.blocks.len() - i - 1;
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
        *answered_last_poll = answered;
        outcome
    }
}

impl ReadGroup {
    /// Decodes the values block `b` served.
    fn deliver(&self, b: usize, data: &Data, targets: &[TargetSettings], out: &mut Outcome) {
        let block = &self.blocks[b];
        let read_at = now_ms();
        let unit = &self.unit_metadata;
        for &k in &block.items {
            let item = self.items[k];
            let (t, r) = (self.uses[k].0 as usize, self.uses[k].1 as usize);
            let register = &targets[t].registers[r];
            let from = usize::from(item.start - block.start);
            let to = from + usize::from(item.count);
            let raw = match data {
                Data::Bits(bits) => decode::decode_bit(bits[from]),
                Data::Registers(words) => {
                    decode::decode_registers(&words[from..to], register.value_type, register.order)
                }
            };
            let value = decode::scale(raw, register.multiplier, register.offset);
            // Exactly as long as it needs to be: with 100,000 readings a
            // poll, the default first capacity of four items cost megabytes.
            let mut metadata = Vec::with_capacity(1 + register.metadata.len());
            metadata.push(unit.clone());
            metadata.extend(register.metadata.iter().cloned());
            let datapoint = DataPoint {
                key: register.key.clone(),
                value,
                data_type: register.data_type,
                timestamp_ms: read_at,
                metadata,
            };
            out.datapoints.push((t, r, datapoint));
        }
    }
}
