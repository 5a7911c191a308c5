//! Decoding and planning cost: what one poll spends on the CPU for a large
//! device (a thousand values), apart from waiting for the network.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pattoo_agentd::pollers::modbus::decode::{decode_registers, scale, Order, ValueType};
use pattoo_agentd::pollers::modbus::plan::{plan, Item, Limits};

fn decode(c: &mut Criterion) {
    let registers: Vec<u16> = (0..4000u16).map(|i| i.wrapping_mul(40_503)).collect();
    c.bench_function("decode 1000 float32 CDAB, scaled", |b| {
        b.iter(|| {
            registers
                .chunks_exact(2)
                .take(1000)
                .map(|pair| {
                    scale(
                        decode_registers(black_box(pair), ValueType::Float32, Order::CDAB),
                        Some(0.1),
                        None,
                    )
                })
                .for_each(|value| {
                    black_box(value);
                })
        })
    });
    c.bench_function("decode 1000 uint64 DCBA", |b| {
        b.iter(|| {
            registers
                .chunks_exact(4)
                .map(|quad| decode_registers(black_box(quad), ValueType::UInt64, Order::DCBA))
                .for_each(|value| {
                    black_box(value);
                })
        })
    });
}

fn planning(c: &mut Criterion) {
    // Every third register of the table's first 3000, two registers wide.
    let items: Vec<Item> = (0..1000u16)
        .map(|i| Item {
            start: i * 3,
            count: 2,
        })
        .collect();
    let limits = Limits {
        max_count: 125,
        max_gap: 1,
    };
    c.bench_function("plan 1000 values", |b| {
        b.iter(|| plan(black_box(&items), limits).len())
    });
}

criterion_group!(benches, decode, planning);
criterion_main!(benches);
