//! The classifier on the hot path: cache hits and misses for pgbench's statements, a
//! 40-line report query and a data-modifying CTE, and a whole routing decision for a read.

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::hash::BuildHasher;

use pgroute::classify::{hint, Classifier, Exact};
use pgroute::config::Config;
use pgroute::router::{decide, SessionView};
use pgroute::rules::{Context, Rules};
use pgroute::topology::Topology;

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const PGBENCH_UPDATE: &str = "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 98765;";
const CTE: &str = "WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT 10) \
                   RETURNING *) SELECT count(*) FROM moved";
const REPORT: &str = "
SELECT
    date_trunc('day', l.created_at) AS day,
    a.currency,
    c.country,
    count(*) AS entries,
    count(DISTINCT l.account_id) AS accounts,
    sum(CASE WHEN l.kind = 'deposit' THEN l.amount ELSE 0 END) AS deposits,
    sum(CASE WHEN l.kind = 'withdrawal' THEN l.amount ELSE 0 END) AS withdrawals,
    sum(CASE WHEN l.kind = 'bet' THEN l.amount ELSE 0 END) AS bets,
    sum(CASE WHEN l.kind = 'win' THEN l.amount ELSE 0 END) AS wins,
    sum(CASE WHEN l.kind = 'bonus' THEN l.amount ELSE 0 END) AS bonuses,
    avg(l.amount) FILTER (WHERE l.kind = 'deposit') AS avg_deposit,
    max(l.amount) AS largest,
    -- comments and 'strings; with UPDATE' must not confuse the lexer
    string_agg(DISTINCT l.provider, ',' ORDER BY l.provider) AS providers
FROM ledger_report l
JOIN accounts a ON a.id = l.account_id
JOIN customers c ON c.id = a.customer_id
LEFT JOIN (
    SELECT account_id, count(*) AS chargebacks
    FROM chargebacks
    WHERE created_at > now() - interval '30 days'
    GROUP BY account_id
) cb ON cb.account_id = a.id
WHERE l.created_at >= '2026-01-01'
  AND l.created_at < '2026-02-01'
  AND a.status IN ('active', 'suspended')
  AND c.country = ANY (ARRAY['DE', 'AT', 'CH'])
  AND coalesce(cb.chargebacks, 0) < 3
  AND NOT EXISTS (SELECT 1 FROM blocked b WHERE b.account_id = a.id)
GROUP BY 1, 2, 3
HAVING sum(l.amount) > 1000
ORDER BY day, currency, country
LIMIT 500
OFFSET 0
";

fn bench(c: &mut Criterion) {
    for (name, sql) in [
        ("pgbench select", PGBENCH_SELECT),
        ("pgbench update", PGBENCH_UPDATE),
        ("40-line report", REPORT),
        ("data-modifying cte", CTE),
    ] {
        let warm = Classifier::new(10_000);
        warm.classify(sql);
        c.bench_function(&format!("classify hit/{name}"), |b| b.iter(|| black_box(warm.classify(black_box(sql)))));
        c.bench_function(&format!("classify miss/{name}"), |b| {
            b.iter(|| {
                let cold = Classifier::new(0);
                black_box(cold.classify(black_box(sql)))
            })
        });
    }

    // The extended protocol's Parse: the same parameterised text every time. The full path
    // (lex, normalise, look up) against the front keyed by the exact bytes (the keyed hash
    // the session computes once per Parse for the server name is included).
    let parsed = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let dialect = pgroute::classify::Dialect::default();
    let full = warm_for(parsed);
    c.bench_function("classify hit/parse text, full path", |b| {
        b.iter(|| black_box(full.classify_in(black_box(parsed), dialect)))
    });
    let front = warm_for(parsed);
    let keys = std::hash::RandomState::new();
    let exact = |bytes: &'static [u8]| Exact { hash: keys.hash_one(bytes), bytes, reading: 0 };
    front.classify_parse(exact(parsed.as_bytes()), parsed, dialect);
    c.bench_function("classify hit/parse text, exact-bytes front", |b| {
        b.iter(|| black_box(front.parse_hit(exact(black_box(parsed.as_bytes())), dialect)))
    });

    // pgbench -S varies its literal: every call is a different text, one cache entry.
    let warm = Classifier::new(10_000);
    let mut aid = 0u64;
    c.bench_function("classify hit/pgbench select, varying literal", |b| {
        b.iter(|| {
            aid = aid.wrapping_add(7919) % 100_000;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
            black_box(warm.classify(black_box(&sql)));
        })
    });

    // A whole decision for a read: classification (hit), read rules, router.
    let config = Config::parse(include_str!("../proxy.toml"), "proxy.toml").expect("proxy.toml");
    let rules = Rules::from_config(&config.routing, &config.groups(), None);
    let topology = Topology::from_config(&config, true);
    let ctx = Context { application_name: "pgbench", user: "app", database: "app" };
    let mut ticket = 0u64;
    c.bench_function("route read (hit, rules, decide)", |b| {
        b.iter(|| {
            let class = warm.classify(black_box(PGBENCH_SELECT));
            let read = rules.route_read(&class, PGBENCH_SELECT, &hint(PGBENCH_SELECT), &ctx);
            ticket += 1;
            let snapshot = topology.snapshot();
            black_box(decide(&class, &read, SessionView::default(), &snapshot, Instant::now(), ticket).ok())
        })
    });
}

/// A classifier that has seen `sql` once.
fn warm_for(sql: &str) -> Classifier {
    let c = Classifier::new(10_000);
    c.classify(sql);
    c
}

/// Counting one routing decision in the metrics (per statement on the hot path).
fn count_route(c: &mut Criterion) {
    c.bench_function("metrics: count a route", |b| {
        b.iter(|| pgroute::metrics::route(black_box("pg1"), black_box("default_read"), None))
    });
}

criterion_group!(benches, bench, count_route);
criterion_main!(benches);
