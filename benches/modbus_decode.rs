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
    // Every value type, 1000 values each, in the default byte order.
    let types = [
        ("bool", ValueType::Bool),
        ("int16", ValueType::Int16),
        ("uint16", ValueType::UInt16),
        ("int32", ValueType::Int32),
        ("uint32", ValueType::UInt32),
        ("int64", ValueType::Int64),
        ("uint64", ValueType::UInt64),
        ("float32", ValueType::Float32),
        ("float64", ValueType::Float64),
        ("string of 4 registers", ValueType::String { registers: 4 }),
    ];
    let mut group = c.benchmark_group("decode 1000 values ABCD");
    for (name, value_type) in types {
        let width = usize::from(value_type.width());
        group.bench_function(name, |b| {
            b.iter(|| {
                registers
                    .chunks_exact(width)
                    .take(1000)
                    .map(|words| decode_registers(black_box(words), value_type, Order::ABCD))
                    .for_each(|value| {
                        black_box(value);
                    })
            })
        });
    }
    group.finish();
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
