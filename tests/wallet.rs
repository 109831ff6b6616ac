//! The wallet integrity test: deposits, a provider webhook delivered twice to two
//! connections (handled check-then-insert without a unique constraint, as a naive
//! application would), and withdrawals paid out after a status check on another
//! connection, against a cluster whose only replica in rotation is 2s behind. With
//! `session` scope and key tags: no anomaly; with the default `instance` scope and no
//! tags: no anomaly. With a naive read/write split (`none`), or `session` scope without
//! tags: anomalies (the controls that show these tests can fail).

mod common;

use std::time::Duration;

use common::{cluster, proxy_with, simple_value, table};

#[derive(Debug, Default, PartialEq)]
struct Anomalies {
    stale_balances: u32,
    double_credits: u32,
    double_payouts: u32,
}

async fn teller(
    conns: [tokio_postgres::Client; 3],
    mode: String,
    tagged: bool,
    schema: String,
    account: i64,
    rounds: i64,
) -> Anomalies {
    let [a, b, c] = conns;
    // Untagged: the key comments are taken out, as an application that never heard of
    // them would send its SQL.
    let sql = |text: String| if tagged { text } else { untagged(&text) };
    let mut found = Anomalies::default();
    for i in 0..rounds {
        // 1. Deposit, then read the balance on the same connection.
        let before: i64 = simple_value(
            &a,
            &sql(format!("/* pgroute: route=primary */ SELECT balance FROM {schema}.accounts WHERE id = {account}")),
        )
        .await
        .parse()
        .unwrap();
        a.batch_execute(&sql(format!(
            "BEGIN; UPDATE {schema}.accounts SET balance = balance + 10 WHERE id = {account};
             INSERT INTO {schema}.ledger (account_id, kind, amount, provider_tx) VALUES ({account}, 'deposit', 10, 'dep-{mode}-{account}-{i}');
             COMMIT"
        )))
        .await
        .unwrap();
        let after: i64 = simple_value(&a, &sql(format!("SELECT balance FROM {schema}.accounts WHERE id = {account}")))
            .await
            .parse()
            .unwrap();
        if after != before + 10 {
            found.stale_balances += 1;
        }
        // 2. A provider webhook delivered twice, to two connections: check, then credit.
        let ptx = format!("ptx-{mode}-{account}-{i}");
        for conn in [&a, &b] {
            let seen = simple_value(
                conn,
                &sql(format!(
                    "SELECT count(*) FROM {schema}.ledger WHERE provider_tx = '{ptx}' /* pgroute: key=ptx:{ptx} */"
                )),
            )
            .await;
            if seen == "0" {
                conn.batch_execute(&sql(format!(
                    "BEGIN; UPDATE {schema}.accounts SET balance = balance + 5 WHERE id = {account};
                     INSERT INTO {schema}.ledger (account_id, kind, amount, provider_tx) VALUES ({account}, 'webhook', 5, '{ptx}');
                     COMMIT /* pgroute: key=ptx:{ptx} */"
                )))
                .await
                .unwrap();
            }
        }
        // 3. A withdrawal created on one connection, paid out after a status check on
        // others: a second payout attempt must see it paid.
        let wd = account * 1000 + i;
        a.batch_execute(&sql(format!(
            "INSERT INTO {schema}.withdrawals (id, account_id, amount, status) VALUES ({wd}, {account}, 1, 'pending') /* pgroute: key=wd:{wd} */"
        )))
        .await
        .unwrap();
        for conn in [&b, &c] {
            let status = simple_value(conn, &sql(format!("SELECT coalesce((SELECT status FROM {schema}.withdrawals WHERE id = {wd}), 'missing') /* pgroute: key=wd:{wd} */"))).await;
            if status == "pending" {
                conn.batch_execute(&sql(format!(
                    "BEGIN; UPDATE {schema}.withdrawals SET status = 'paid', payouts = payouts + 1 WHERE id = {wd};
                     UPDATE {schema}.accounts SET balance = balance - 1 WHERE id = {account};
                     INSERT INTO {schema}.ledger (account_id, kind, amount, provider_tx) VALUES ({account}, 'withdrawal', -1, 'wd-{mode}-{wd}');
                     COMMIT /* pgroute: key=wd:{wd} */"
                )))
                .await
                .unwrap();
            }
        }
    }
    found
}

/// The SQL without its `/* pgroute: key=... */` comments.
fn untagged(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find("/* pgroute: key=") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("*/").map_or(rest.len(), |e| start + e + 2);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Three tellers, one per account, each with three connections, run concurrently.
async fn workload(mode: &str, tagged: bool, schema: &str, rounds: i64) -> Anomalies {
    let p = proxy_with(&format!("[routing]\ncausal_scope = \"{mode}\"\n[health]\nmax_replica_lag = \"30s\"\n")).await;
    let mut tellers = Vec::new();
    for account in 1..=3 {
        let conns = [p.client().await, p.client().await, p.client().await];
        tellers.push(tokio::spawn(teller(conns, mode.to_string(), tagged, schema.to_string(), account, rounds)));
    }
    let mut found = Anomalies::default();
    for t in tellers {
        let f = t.await.unwrap();
        found.stale_balances += f.stale_balances;
    }
    // 4. The books, read on the primary.
    let primary = cluster().direct(0).await;
    let q = |sql: String| {
        let primary = &primary;
        async move { primary.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    found.double_credits =
        q(format!("SELECT count(*) FROM (SELECT provider_tx FROM {schema}.ledger GROUP BY 1 HAVING count(*) > 1) d"))
            .await as u32;
    found.double_payouts = q(format!("SELECT count(*) FROM {schema}.withdrawals WHERE payouts > 1")).await as u32;
    let ledger = q(format!("SELECT coalesce(sum(amount), 0)::bigint FROM {schema}.ledger")).await;
    let balances = q(format!("SELECT coalesce(sum(balance), 0)::bigint FROM {schema}.accounts")).await;
    assert_eq!(ledger, balances, "{mode}: the ledger and the balances agree");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_money_anomalies_by_default_or_with_key_tags_and_some_without() {
    let c = cluster();
    let delayed = c.delay_replica(1, "2s").await;
    // The delayed replica is the only one in rotation: every replica read could be stale.
    common::node_ctl("node-stop", 2);
    let mut results = Vec::new();
    // (scope, tagged): the default scope untagged, session scope with tags, and the two
    // controls.
    let runs = [("instance", false), ("session", true), ("none", true), ("session", false)];
    for (mode, tagged) in runs {
        let schema = table(&format!("wallet_{mode}_{}", if tagged { "tagged" } else { "untagged" }));
        c.direct(0)
            .await
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; GRANT ALL ON SCHEMA {schema} TO app;
                 CREATE TABLE {schema}.accounts (id int primary key, balance bigint not null);
                 CREATE TABLE {schema}.ledger (id serial, account_id int, kind text, amount bigint, provider_tx text);
                 CREATE TABLE {schema}.withdrawals (id int primary key, account_id int, amount bigint, status text, payouts int not null default 0);
                 INSERT INTO {schema}.accounts VALUES (1, 0), (2, 0), (3, 0);
                 GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO app; GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO app;"
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let found = workload(mode, tagged, &schema, 8).await;
        eprintln!("wallet workload, causal_scope = {mode}, tagged = {tagged}: {found:?}");
        results.push(found);
    }
    assert_eq!(results[0], Anomalies::default(), "the default scope, untagged: no anomaly");
    assert_eq!(results[1], Anomalies::default(), "session scope with key tags: no anomaly");
    for (control, found) in [("the naive split", &results[2]), ("session scope untagged", &results[3])] {
        assert!(
            found.stale_balances + found.double_credits + found.double_payouts > 0,
            "{control} must show anomalies (else this test could not fail): {found:?}"
        );
    }
    delayed.batch_execute("ALTER SYSTEM RESET recovery_min_apply_delay").await.unwrap();
    delayed.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    common::node_ctl("node-start", 2);
}
