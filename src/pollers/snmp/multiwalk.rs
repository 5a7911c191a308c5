//! Several subtrees walked together: one GETBULK carries one varbind per
//! column still open, so a table of twenty columns costs about one request
//! per response's worth of rows instead of one walk per column.
//!
//! This module holds only the bookkeeping (no I/O): which columns are open
//! and where each goes on, and how a response splits into columns. A
//! GETBULK response with `n` varbinds asked for lists them row by row:
//! varbind `k` continues column `k % n`. Each column is judged exactly as
//! a walk of that column alone judges it, so the rows of each are the
//! rows its own walk would have read:
//!
//! - an exception value (`endOfMibView`, `noSuchObject`, `noSuchInstance`)
//!   or an OID outside the column's subtree ends the column, complete; the
//!   rest of its varbinds in that response (the device walking on into the
//!   next column) are ignored;
//! - an OID not after the column's last one ends it, out of order;
//! - a varbind in the subtree after `max_rows` rows ends it at the row
//!   limit (the rows before it are kept);
//! - a column given no varbind in a response (the device cut the response
//!   short to fit its message size) stays open and goes on from its last
//!   OID;
//! - an empty response ends every open column, complete, as it ends a
//!   walk.
//!
//! A target remembers each of its multi-column walks from poll to poll
//! ([`Sizing`], kept in [`Sizings`] by the walk's columns): how many rows
//! the longest column had, and how many rows per request the device
//! could fit when it answered tooBig. The next poll's first request asks
//! for that many rows plus one (the one that shows where the table ends),
//! so a table that did not change is read in one request whatever
//! `max_repetitions` says; a table that grew is read on from where that
//! request stopped, as any response cut short is. What is asked never
//! changes which rows a column gets, only how many requests it takes.

use std::hash::{Hash, Hasher};

use async_snmp::{Oid, VarBind, WalkAbortReason};

/// Varbinds a learned request may ask for at most (rows × columns), when
/// the operator did not set `max_repetitions`: a few hundred IF-MIB
/// varbinds are 15-50 KB, within one UDP datagram (65,507 bytes). A
/// device that cannot send that much cuts the response short or answers
/// tooBig; both are handled, and tooBig is remembered.
pub const MAX_LEARNED_VARBINDS: u32 = 500;

/// What a target remembers of one multi-column walk between polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizing {
    /// Rows of the longest column in the last poll, if that poll read
    /// every column to its end; `None` after a timeout, an error or a cut.
    rows: Option<u32>,
    /// Rows per request the device answers: it answered tooBig to more,
    /// or did not answer more.
    fits: Option<u32>,
}

impl Sizing {
    /// Rows the first request of a poll asks for: the table as last read
    /// plus one, at most `ceiling`; `configured` when nothing is known.
    pub fn first(&self, configured: u32, ceiling: u32) -> u32 {
        let wanted = match self.rows {
            Some(rows) => rows.saturating_add(1).min(ceiling),
            None => configured.min(ceiling),
        };
        self.fitting(wanted)
    }

    /// Rows each later request of the poll asks for (the table grew or a
    /// response was cut short): `configured`, or the table as last read
    /// plus one if more, at most `ceiling`.
    pub fn later(&self, configured: u32, ceiling: u32) -> u32 {
        let wanted = match self.rows {
            Some(rows) => rows.saturating_add(1).max(configured),
            None => configured,
        };
        self.fitting(wanted.min(ceiling))
    }

    /// Rows of the longest column in the last poll, if it read them all.
    pub fn rows(&self) -> Option<u32> {
        self.rows
    }

    fn fitting(&self, rows: u32) -> u32 {
        self.fits.map_or(rows, |fits| rows.min(fits)).max(1)
    }

    /// No request asks for more than `rows` rows again: the device
    /// answered tooBig to more, or did not answer more.
    pub fn limit(&mut self, rows: u32) {
        self.fits = Some(self.fits.map_or(rows, |fits| fits.min(rows)).max(1));
    }

    /// What this poll read: `longest` ([`MultiWalk::longest`]), `None`
    /// when the walk did not end cleanly, so the next poll asks for
    /// `configured` rows again.
    pub fn learn(&mut self, longest: Option<usize>) {
        self.rows = longest.map(|rows| u32::try_from(rows).unwrap_or(u32::MAX));
    }
}

/// The most rows a request of `columns` columns may ask for: exactly
/// `max_repetitions` when the operator set it, else as many as keep the
/// request within [`MAX_LEARNED_VARBINDS`], and never fewer than
/// `max_repetitions`.
pub fn ceiling(max_repetitions: u32, set: bool, columns: usize) -> u32 {
    if set {
        return max_repetitions.max(1);
    }
    let columns = u32::try_from(columns.max(1)).unwrap_or(u32::MAX);
    max_repetitions.max(MAX_LEARNED_VARBINDS / columns).max(1)
}

/// A target's [`Sizing`]s, one per multi-column walk (by its columns).
/// A few bytes each: the columns are kept as a fingerprint, not copied.
#[derive(Debug, Default)]
pub struct Sizings(Vec<(u64, Sizing)>);

impl Sizings {
    /// The sizing of the walk of `bases`, new if never walked.
    pub fn of(&mut self, bases: &[Oid]) -> &mut Sizing {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bases.hash(&mut hasher);
        let key = hasher.finish();
        let at = match self.0.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.0.push((key, Sizing::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }
}

/// How a column's walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The device said the subtree ended.
    Complete,
    /// `max_rows` rows read and the subtree went on.
    RowLimit,
    /// The device answered an OID not after the one before.
    Order(WalkAbortReason),
}

struct Column {
    base: Oid,
    rows: Vec<VarBind>,
    end: Option<End>,
}

impl Column {
    /// Where the next request asks from: the base, then the last row.
    fn last(&self) -> &Oid {
        self.rows.last().map_or(&self.base, |row| &row.oid)
    }
}

/// The columns of one multi-column walk in progress.
pub struct MultiWalk {
    columns: Vec<Column>,
    max_rows: usize,
    /// Rows the table had in the last poll, if known.
    expected: Option<usize>,
}

/// One request's columns: their indices, and the OIDs to ask from.
pub struct Request {
    pub columns: Vec<usize>,
    pub oids: Vec<Oid>,
}

impl MultiWalk {
    pub fn new(bases: &[Oid], max_rows: usize) -> Self {
        MultiWalk {
            columns: bases
                .iter()
                .map(|base| Column {
                    base: base.clone(),
                    rows: Vec::new(),
                    end: None,
                })
                .collect(),
            max_rows,
            expected: None,
        }
    }

    /// The table had `rows` rows in the last poll: every column gets room
    /// for them, so reading them grows nothing, and no request asks for
    /// more rows than a column lacks of them plus one (the row that shows
    /// the end), the last request one row; a column that goes on past
    /// them is read on as usual.
    pub fn expect(&mut self, rows: u32) {
        let rows = usize::try_from(rows).unwrap_or(usize::MAX).min(self.max_rows);
        for column in &mut self.columns {
            column.rows.reserve_exact(rows);
        }
        self.expected = Some(rows);
    }

    /// The next request: every open column from its last OID. `None` once
    /// every column has ended.
    pub fn request(&self) -> Option<Request> {
        let columns: Vec<usize> = (0..self.columns.len())
            .filter(|&c| self.columns[c].end.is_none())
            .collect();
        if columns.is_empty() {
            return None;
        }
        let oids = columns
            .iter()
            .map(|&c| self.columns[c].last().clone())
            .collect();
        Some(Request { columns, oids })
    }

    /// The rows a request should ask for: `max_repetitions`, but no more
    /// than the open column furthest from its row limit can still take,
    /// nor than it lacks of the rows the table had last time (see
    /// [`MultiWalk::expect`]), plus the one that tells whether the subtree
    /// goes on.
    pub fn repetitions(&self, request: &Request, max_repetitions: u32) -> u32 {
        let wanted = request
            .columns
            .iter()
            .map(|&c| {
                let read = self.columns[c].rows.len();
                let room = self.max_rows.saturating_sub(read);
                match self.expected {
                    Some(expected) if read <= expected => room.min(expected - read) + 1,
                    _ => room + 1,
                }
            })
            .max()
            .unwrap_or(1);
        max_repetitions
            .min(u32::try_from(wanted).unwrap_or(u32::MAX))
            .max(1)
    }

    /// Splits the response to `request` into its columns.
    pub fn absorb(&mut self, request: &Request, varbinds: Vec<VarBind>) {
        let n = request.columns.len();
        if varbinds.is_empty() {
            for &c in &request.columns {
                self.columns[c].end = Some(End::Complete);
            }
            return;
        }
        for (k, varbind) in varbinds.into_iter().enumerate() {
            let column = &mut self.columns[request.columns[k % n]];
            if column.end.is_some() {
                continue;
            }
            if varbind.value.is_exception() || !varbind.oid.starts_with(&column.base) {
                column.end = Some(End::Complete);
            } else if varbind.oid <= *column.last() {
                column.end = Some(End::Order(WalkAbortReason::NonIncreasing));
            } else if column.rows.len() >= self.max_rows {
                column.end = Some(End::RowLimit);
            } else {
                column.rows.push(varbind);
            }
        }
    }

    /// The open columns' bases and rows so far (for a message about a cut).
    pub fn open(&self) -> impl Iterator<Item = (&Oid, usize)> {
        self.columns
            .iter()
            .filter(|c| c.end.is_none())
            .map(|c| (&c.base, c.rows.len()))
    }

    /// Rows of the longest column, once every column has ended.
    pub fn longest(&self) -> Option<usize> {
        if self.columns.iter().any(|c| c.end.is_none()) {
            return None;
        }
        self.columns.iter().map(|c| c.rows.len()).max()
    }

    /// Each column's rows and how it ended (`None`: still open, cut short).
    pub fn finish(self) -> Vec<(Vec<VarBind>, Option<End>)> {
        self.columns.into_iter().map(|c| (c.rows, c.end)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pollers::snmp::oid_from_text;
    use async_snmp::Value;

    fn oid(text: &str) -> Oid {
        oid_from_text(text).unwrap()
    }

    fn vb(text: &str, n: i32) -> VarBind {
        VarBind::new(oid(text), Value::Integer(n))
    }

    fn oids(rows: &[VarBind]) -> Vec<String> {
        rows.iter().map(|vb| crate::pollers::snmp::dotted(&vb.oid)).collect()
    }

    #[test]
    fn a_response_is_split_row_by_row_into_its_columns() {
        let mut walk = MultiWalk::new(&[oid(".1.3.6.1.2.1.2.2.1.2"), oid(".1.3.6.1.2.1.2.2.1.7")], 100);
        let request = walk.request().unwrap();
        assert_eq!(request.oids, [oid(".1.3.6.1.2.1.2.2.1.2"), oid(".1.3.6.1.2.1.2.2.1.7")]);
        walk.absorb(
            &request,
            vec![
                vb(".1.3.6.1.2.1.2.2.1.2.1", 1),
                vb(".1.3.6.1.2.1.2.2.1.7.1", 2),
                vb(".1.3.6.1.2.1.2.2.1.2.2", 3),
                vb(".1.3.6.1.2.1.2.2.1.7.2", 4),
            ],
        );
        let request = walk.request().unwrap();
        assert_eq!(request.oids, [oid(".1.3.6.1.2.1.2.2.1.2.2"), oid(".1.3.6.1.2.1.2.2.1.7.2")]);
        // Both columns end: the first walks on into the next column, the
        // second meets the end of the MIB view.
        walk.absorb(
            &request,
            vec![
                vb(".1.3.6.1.2.1.2.2.1.3.1", 5),
                VarBind::new(oid(".1.3.6.1.2.1.2.2.1.7.2"), Value::EndOfMibView),
            ],
        );
        assert!(walk.request().is_none());
        let result = walk.finish();
        assert_eq!(oids(&result[0].0), [".1.3.6.1.2.1.2.2.1.2.1", ".1.3.6.1.2.1.2.2.1.2.2"]);
        assert_eq!(oids(&result[1].0), [".1.3.6.1.2.1.2.2.1.7.1", ".1.3.6.1.2.1.2.2.1.7.2"]);
        assert_eq!(result[0].1, Some(End::Complete));
        assert_eq!(result[1].1, Some(End::Complete));
    }

    #[test]
    fn a_shorter_column_ends_and_the_others_go_on_without_it() {
        let bases = [oid(".1.3.1"), oid(".1.3.2"), oid(".1.3.3")];
        let mut walk = MultiWalk::new(&bases, 100);
        let request = walk.request().unwrap();
        walk.absorb(
            &request,
            vec![
                vb(".1.3.1.1", 1),
                vb(".1.3.2.1", 1),
                vb(".1.3.3.1", 1),
                // .1.3.1 has one row: its walk runs into .1.3.2, ignored
                // from here on.
                vb(".1.3.2.1", 9),
                vb(".1.3.2.2", 2),
                vb(".1.3.3.2", 2),
                vb(".1.3.2.2", 9),
                vb(".1.3.2.3", 3),
                vb(".1.3.3.3", 3),
            ],
        );
        let request = walk.request().unwrap();
        assert_eq!(request.columns, [1, 2]);
        assert_eq!(request.oids, [oid(".1.3.2.3"), oid(".1.3.3.3")]);
        walk.absorb(
            &request,
            vec![
                vb(".1.3.3.1", 9),
                vb(".1.3.3.4", 4),
                vb(".1.3.3.2", 9),
                vb(".1.4", 5),
            ],
        );
        let result = walk.finish();
        assert_eq!(oids(&result[0].0), [".1.3.1.1"]);
        assert_eq!(oids(&result[1].0), [".1.3.2.1", ".1.3.2.2", ".1.3.2.3"]);
        assert_eq!(oids(&result[2].0), [".1.3.3.1", ".1.3.3.2", ".1.3.3.3", ".1.3.3.4"]);
        assert!(result.iter().all(|(_, end)| *end == Some(End::Complete)));
    }

    #[test]
    fn a_response_cut_short_leaves_the_columns_it_did_not_reach_open() {
        let mut walk = MultiWalk::new(&[oid(".1.3.1"), oid(".1.3.2")], 100);
        let request = walk.request().unwrap();
        walk.absorb(&request, vec![vb(".1.3.1.1", 1), vb(".1.3.2.1", 1), vb(".1.3.1.2", 2)]);
        let request = walk.request().unwrap();
        assert_eq!(request.oids, [oid(".1.3.1.2"), oid(".1.3.2.1")]);
        walk.absorb(&request, Vec::new());
        assert!(walk.request().is_none());
        let result = walk.finish();
        assert_eq!(oids(&result[0].0), [".1.3.1.1", ".1.3.1.2"]);
        assert_eq!(oids(&result[1].0), [".1.3.2.1"]);
    }

    #[test]
    fn the_row_limit_ends_only_a_column_that_goes_on_past_it() {
        let mut walk = MultiWalk::new(&[oid(".1.3.1"), oid(".1.3.2")], 2);
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 3);
        walk.absorb(
            &request,
            vec![
                vb(".1.3.1.1", 1),
                vb(".1.3.2.1", 1),
                vb(".1.3.1.2", 2),
                vb(".1.3.2.2", 2),
                vb(".1.3.1.3", 3),
                vb(".1.4", 0),
            ],
        );
        let result = walk.finish();
        assert_eq!(oids(&result[0].0), [".1.3.1.1", ".1.3.1.2"]);
        assert_eq!(result[0].1, Some(End::RowLimit));
        // Exactly the limit and then the end: complete, as a walk says.
        assert_eq!(oids(&result[1].0), [".1.3.2.1", ".1.3.2.2"]);
        assert_eq!(result[1].1, Some(End::Complete));
    }

    #[test]
    fn an_oid_out_of_order_ends_its_column_and_keeps_the_rows_before_it() {
        let mut walk = MultiWalk::new(&[oid(".1.3.1"), oid(".1.3.2")], 100);
        let request = walk.request().unwrap();
        walk.absorb(
            &request,
            vec![
                vb(".1.3.1.5", 1),
                vb(".1.3.2.1", 1),
                vb(".1.3.1.4", 2),
                vb(".1.3.2.2", 2),
            ],
        );
        let request = walk.request().unwrap();
        assert_eq!(request.columns, [1]);
        let result = walk.finish();
        assert_eq!(oids(&result[0].0), [".1.3.1.5"]);
        assert_eq!(result[0].1, Some(End::Order(WalkAbortReason::NonIncreasing)));
        assert_eq!(result[1].1, None);
    }

    #[test]
    fn the_base_oid_itself_is_out_of_order_as_in_a_walk() {
        let mut walk = MultiWalk::new(&[oid(".1.3.1")], 100);
        let request = walk.request().unwrap();
        walk.absorb(&request, vec![vb(".1.3.1", 1)]);
        let result = walk.finish();
        assert!(result[0].0.is_empty());
        assert_eq!(result[0].1, Some(End::Order(WalkAbortReason::NonIncreasing)));
    }

    #[test]
    fn a_table_as_long_as_last_time_is_asked_for_no_row_past_its_end() {
        let mut walk = MultiWalk::new(&[oid(".1.3.1"), oid(".1.3.2")], 100);
        walk.expect(3);
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 4);
        // The device sends fewer than asked (its message size): the next
        // request asks for what the columns lack, and the end.
        walk.absorb(
            &request,
            vec![vb(".1.3.1.1", 1), vb(".1.3.2.1", 1), vb(".1.3.1.2", 2)],
        );
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 3);
        walk.absorb(
            &request,
            vec![
                vb(".1.3.1.3", 3),
                vb(".1.3.2.2", 2),
                vb(".1.3.1.4", 4),
                vb(".1.3.2.3", 3),
            ],
        );
        // Both columns have the rows of last time, and the first grew: it
        // is read on as far as the setting allows.
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 25);
        assert_eq!(oids(&walk.finish()[0].0), [".1.3.1.1", ".1.3.1.2", ".1.3.1.3", ".1.3.1.4"]);
        // A column with exactly last time's rows is asked only for the
        // row that shows its end.
        let mut walk = MultiWalk::new(&[oid(".1.3.1")], 100);
        walk.expect(1);
        let request = walk.request().unwrap();
        walk.absorb(&request, vec![vb(".1.3.1.1", 1)]);
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 1);
    }

    #[test]
    fn repetitions_never_exceed_the_setting_nor_fall_below_one() {
        let walk = MultiWalk::new(&[oid(".1.3.1")], 10_000);
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 25);
        assert_eq!(walk.repetitions(&request, 0), 1);
    }

    #[test]
    fn the_next_poll_asks_for_the_table_as_last_read_plus_one_row() {
        let mut sizing = Sizing::default();
        assert_eq!(sizing.first(25, 125), 25);
        let mut walk = MultiWalk::new(&[oid(".1.3.1"), oid(".1.3.2")], 100);
        let request = walk.request().unwrap();
        walk.absorb(&request, vec![vb(".1.3.1.1", 1), vb(".1.3.2.1", 1)]);
        // Still open: nothing is learned from a walk cut short.
        assert_eq!(walk.longest(), None);
        let request = walk.request().unwrap();
        walk.absorb(
            &request,
            vec![vb(".1.3.1.2", 2), vb(".1.3.2.2", 2), vb(".1.3.2.1", 9), vb(".1.3.3", 3)],
        );
        assert_eq!(walk.longest(), Some(2));
        sizing.learn(walk.longest());
        assert_eq!(sizing.first(25, 125), 3);
        assert_eq!(sizing.later(25, 125), 25);
        // A table past the ceiling is asked for up to the ceiling.
        sizing.learn(Some(48));
        assert_eq!(sizing.first(25, 40), 40);
        assert_eq!(sizing.first(25, 125), 49);
        assert_eq!(sizing.later(25, 125), 49);
        // A poll that failed or was cut: back to the setting.
        sizing.learn(None);
        assert_eq!(sizing.first(25, 125), 25);
    }

    #[test]
    fn a_size_the_device_found_too_big_is_not_asked_again() {
        let mut sizing = Sizing::default();
        sizing.learn(Some(48));
        sizing.limit(12);
        assert_eq!(sizing.first(25, 125), 12);
        assert_eq!(sizing.later(25, 125), 12);
        sizing.limit(20);
        assert_eq!(sizing.first(25, 125), 12);
        sizing.limit(0);
        assert_eq!(sizing.first(25, 125), 1);
    }

    #[test]
    fn the_ceiling_is_the_setting_when_set_else_a_few_hundred_varbinds() {
        assert_eq!(ceiling(10, true, 1), 10);
        assert_eq!(ceiling(25, false, 1), MAX_LEARNED_VARBINDS);
        assert_eq!(ceiling(25, false, 4), MAX_LEARNED_VARBINDS / 4);
        // Many columns: never below the setting.
        assert_eq!(ceiling(25, false, 100), 25);
        assert_eq!(ceiling(0, true, 3), 1);
    }

    #[test]
    fn each_walk_of_a_target_keeps_its_own_sizing() {
        let mut sizings = Sizings::default();
        let table = [oid(".1.3.1"), oid(".1.3.2")];
        let fallbacks = [oid(".1.3.9")];
        sizings.of(&table).learn(Some(48));
        assert_eq!(sizings.of(&fallbacks).first(25, 500), 25);
        assert_eq!(sizings.of(&table).first(25, 500), 49);
    }
}
