//! The classifier on the hot path: a cache hit (pgbench's literal-varying SELECT), a miss
//! that the lexer decides alone, and a miss that needs sqlparser.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgroute::classify::Classifier;

fn bench(c: &mut Criterion) {
    let warm = Classifier::new(10_000);
    warm.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;");
    let mut aid = 0u64;
    c.bench_function("classify/hit pgbench -S", |b| {
        b.iter(|| {
            aid = aid.wrapping_add(7919) % 100_000;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
            black_box(warm.classify(black_box(&sql)));
        })
    });
    let update = "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 98765;";
    c.bench_function("classify/miss lexer only (UPDATE)", |b| {
        b.iter(|| {
            let cold = Classifier::new(0);
            black_box(cold.classify(black_box(update)));
        })
    });
    let cte = "WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT 10) RETURNING *) SELECT count(*) FROM moved";
    c.bench_function("classify/miss sqlparser (data-modifying CTE)", |b| {
        b.iter(|| {
            let cold = Classifier::new(0);
            black_box(cold.classify(black_box(cte)));
        })
    });
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = 42;";
    c.bench_function("classify/miss plain SELECT", |b| {
        b.iter(|| {
            let cold = Classifier::new(0);
            black_box(cold.classify(black_box(select)));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
