//! Read planning: merging the registers of one table and unit into the
//! fewest requests, and splitting a request the device refused.
//!
//! Invariants: every item lies entirely inside exactly one block; a block
//! never spans more than the table's per-read limit; blocks are sorted by
//! start address. Splitting keeps all three. Pure; no I/O.

/// A run of registers (or bits) one configured value needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub start: u16,
    pub count: u16,
}

impl Item {
    fn end(self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// One read request: a range and the items it serves (indexes into the
/// item list the plan was made from, sorted by start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: u16,
    pub count: u16,
    pub items: Vec<usize>,
}

impl Block {
    fn covering(items: &[Item], members: Vec<usize>) -> Block {
        let start = members.iter().map(|&i| items[i].start).min().unwrap_or(0);
        let end = members
            .iter()
            .map(|&i| items[i].end())
            .max()
            .unwrap_or(u32::from(start));
        Block {
            start,
            count: u16::try_from(end - u32::from(start)).expect("limited by the plan"),
            items: members,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most registers (or bits) one request may ask for.
    pub max_count: u16,
    /// Largest run of unwanted registers read to save a request.
    pub max_gap: u16,
}

/// Merges `items` into the fewest blocks within `limits`.
///
/// Greedy over items sorted by start: an item joins the current block when
/// the gap before it is at most `max_gap` and the block stays within
/// `max_count`. Items are assumed to fit `max_count` on their own (the
/// configuration checks it); one that does not gets a block of its own.
pub fn plan(items: &[Item], limits: Limits) -> Vec<Block> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].start, items[i].count));
    let mut blocks: Vec<Block> = Vec::new();
    let mut current: Option<(u32, u32, Vec<usize>)> = None;
    for i in order {
        let item = items[i];
        let (start, end) = (u32::from(item.start), item.end());
        current = match current.take() {
            Some((block_start, block_end, mut members))
                if start <= block_end + u32::from(limits.max_gap)
                    && end.max(block_end) - block_start <= u32::from(limits.max_count) =>
            {
                members.push(i);
                Some((block_start, end.max(block_end), members))
            }
            Some((_, _, members)) => {
                blocks.push(Block::covering(items, members));
                Some((start, end, vec![i]))
            }
            None => Some((start, end, vec![i])),
        };
    }
    if let Some((_, _, members)) = current {
        blocks.push(Block::covering(items, members));
    }
    blocks
}

/// Splits a refused block into two halves by item, each covering only its
/// own items (so a bridged gap, which may hold the bad address, is dropped).
/// `None` when the block serves a single item and cannot be split further.
pub fn split(block: &Block, items: &[Item]) -> Option<(Block, Block)> {
    if block.items.len() < 2 {
        return None;
    }
    let middle = block.items.len() / 2;
    let (left, right) = block.items.split_at(middle);
    Some((
        Block::covering(items, left.to_vec()),
        Block::covering(items, right.to_vec()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ranges: &[(u16, u16)]) -> Vec<Item> {
        ranges
            .iter()
            .map(|&(start, count)| Item { start, count })
            .collect()
    }

    fn ranges(blocks: &[Block]) -> Vec<(u16, u16)> {
        blocks.iter().map(|b| (b.start, b.count)).collect()
    }

    const LIMITS: Limits = Limits {
        max_count: 125,
        max_gap: 0,
    };

    #[test]
    fn adjacent_registers_merge_into_one_read() {
        let items = items(&[(2, 2), (0, 2), (4, 1)]);
        let blocks = plan(&items, LIMITS);
        assert_eq!(ranges(&blocks), [(0, 5)]);
        assert_eq!(blocks[0].items, [1, 0, 2]);
    }

    #[test]
    fn gaps_split_reads_unless_bridged() {
        let items = items(&[(0, 1), (3, 1), (10, 2)]);
        assert_eq!(ranges(&plan(&items, LIMITS)), [(0, 1), (3, 1), (10, 2)]);
        let bridged = plan(
            &items,
            Limits {
                max_gap: 2,
                ..LIMITS
            },
        );
        assert_eq!(ranges(&bridged), [(0, 4), (10, 2)]);
    }

    #[test]
    fn reads_never_exceed_the_limit() {
        let items: Vec<Item> = (0..300).map(|start| Item { start, count: 1 }).collect();
        assert_eq!(
            ranges(&plan(&items, LIMITS)),
            [(0, 125), (125, 125), (250, 50)]
        );
        let wide = self::items(&[(0, 100), (100, 4), (104, 40)]);
        assert_eq!(ranges(&plan(&wide, LIMITS)), [(0, 104), (104, 40)]);
    }

    #[test]
    fn overlapping_values_share_a_read() {
        let items = items(&[(0, 2), (0, 1), (1, 4)]);
        assert_eq!(ranges(&plan(&items, LIMITS)), [(0, 5)]);
    }

    #[test]
    fn splitting_halves_by_item_and_drops_the_gap() {
        let items = items(&[(0, 1), (1, 1), (5, 1), (6, 2)]);
        let blocks = plan(
            &items,
            Limits {
                max_gap: 5,
                ..LIMITS
            },
        );
        assert_eq!(ranges(&blocks), [(0, 8)]);
        let (left, right) = split(&blocks[0], &items).unwrap();
        assert_eq!((left.start, left.count, left.items), (0, 2, vec![0, 1]));
        assert_eq!((right.start, right.count, right.items), (5, 3, vec![2, 3]));
        let single = plan(&items[..1], LIMITS);
        assert_eq!(split(&single[0], &items), None);
    }
}
