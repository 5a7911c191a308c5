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

use async_snmp::{Oid, VarBind, WalkAbortReason};

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
    /// Where the next request asks from: the base, then the last row.
    last: Oid,
    rows: Vec<VarBind>,
    end: Option<End>,
}

/// The columns of one multi-column walk in progress.
pub struct MultiWalk {
    columns: Vec<Column>,
    max_rows: usize,
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
                    last: base.clone(),
                    rows: Vec::new(),
                    end: None,
                })
                .collect(),
            max_rows,
        }
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
            .map(|&c| self.columns[c].last.clone())
            .collect();
        Some(Request { columns, oids })
    }

    /// The rows a request should ask for: `max_repetitions`, but no more
    /// than the open column furthest from its row limit can still take
    /// (plus the one that tells whether the subtree goes on).
    pub fn repetitions(&self, request: &Request, max_repetitions: u32) -> u32 {
        let wanted = request
            .columns
            .iter()
            .map(|&c| self.max_rows.saturating_sub(self.columns[c].rows.len()) + 1)
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
            } else if varbind.oid <= column.last {
                column.end = Some(End::Order(WalkAbortReason::NonIncreasing));
            } else if column.rows.len() >= self.max_rows {
                column.end = Some(End::RowLimit);
            } else {
                column.last = varbind.oid.clone();
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
    fn repetitions_never_exceed_the_setting_nor_fall_below_one() {
        let walk = MultiWalk::new(&[oid(".1.3.1")], 10_000);
        let request = walk.request().unwrap();
        assert_eq!(walk.repetitions(&request, 25), 25);
        assert_eq!(walk.repetitions(&request, 0), 1);
    }
}
