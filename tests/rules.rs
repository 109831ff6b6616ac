//! Routing rules end to end: money tables and functions, rules by application, hints,
//! volatile user functions and unparseable statements, on the real cluster.

mod common;

use common::{cluster, connect, proxy_with, server_port, simple_value, table};

const RULES: &str = r#"
[routing]
primary_tables = ["balances_RULES"]
primary_functions = ["wallet_balance_RULES"]
read_only_functions = ["format_amount_RULES"]

[[routing.rules]]
name = "backoffice"
application_name = "backoffice"
route = "primary"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_reads_rules_hints_and_volatile_functions_reach_the_primary() {
    let c = cluster();
    let suffix = table("r");
    let config = RULES.replace("RULES", &suffix);
    let p = proxy_with(&config).await;
    let (balances, wallet, fmt, items, insert_row) = (
        format!("balances_{suffix}"),
        format!("wallet_balance_{suffix}"),
        format!("format_amount_{suffix}"),
        format!("items_{suffix}"),
        format!("insert_row_{suffix}"),
    );
    let setup = c.direct(0).await;
    setup
        .batch_execute(&format!(
            "CREATE TABLE {balances} (id int, amount int); INSERT INTO {balances} VALUES (1, 100);
             CREATE TABLE {items} (id int primary key); INSERT INTO {items} VALUES (1);
             CREATE FUNCTION {wallet}(int) RETURNS int STABLE LANGUAGE sql AS 'SELECT amount FROM {balances} WHERE id = $1';
             CREATE FUNCTION {fmt}(int) RETURNS text VOLATILE LANGUAGE sql AS 'SELECT $1::text || '' EUR''';
             CREATE FUNCTION {insert_row}(int) RETURNS int VOLATILE LANGUAGE plpgsql AS
               'BEGIN INSERT INTO {items} VALUES ($1); RETURN $1; END';
             GRANT ALL ON {balances}, {items} TO app;"
        ))
        .await
        .unwrap();
    c.wait_replicas_caught_up().await;
    let primary = c.primary_port;
    let app = p.client().await;

    // A plain read uses a replica; the same shape touching a money table uses the primary.
    assert!(c.replica_ports.contains(&server_port(&app).await));
    let port = simple_value(&app, &format!("SELECT inet_server_port() FROM {balances} LIMIT 1")).await;
    assert_eq!(port, primary.to_string(), "primary_tables");
    let port = simple_value(&app, &format!("SELECT inet_server_port() + 0 * {wallet}(1)")).await;
    assert_eq!(port, primary.to_string(), "primary_functions");

    // A rule on application_name.
    let backoffice = connect(&format!("{} application_name=backoffice", p.conninfo("app"))).await;
    assert_eq!(server_port(&backoffice).await, primary, "rule:backoffice");

    // Hints.
    let port = simple_value(&app, "/* pgroute: route=primary */ SELECT inet_server_port()").await;
    assert_eq!(port, primary.to_string());
    let port =
        simple_value(&app, &format!("SELECT inet_server_port() FROM {balances} /* pgroute: route=replica */")).await;
    assert!(c.replica_ports.contains(&port.parse().unwrap()), "a hint overrides primary_tables for reads");

    // A volatile user function that writes: a replica refuses it, through pgroute it works.
    let replica = c.direct(1).await;
    let refused = replica.simple_query(&format!("SELECT {insert_row}(2)")).await.unwrap_err();
    assert_eq!(refused.code().map(|s| s.code()), Some("25006"), "{refused}");
    assert_eq!(simple_value(&app, &format!("SELECT {insert_row}(2)")).await, "2");
    // Declared read-only: stays on a replica despite VOLATILE (once the replicas have the
    // write above, which the default causal scope makes every read wait for).
    c.wait_replicas_caught_up().await;
    let port = simple_value(&app, &format!("SELECT inet_server_port() || {fmt}(1)")).await;
    assert!(port.ends_with(" EUR") && !port.starts_with(&primary.to_string()), "{port}");

    // A statement the parser cannot parse runs on the primary (a replica would refuse the lock).
    let port =
        simple_value(&app, &format!("SELECT inet_server_port() FROM {items} WHERE id = 1 FOR NO KEY UPDATE")).await;
    assert_eq!(port, primary.to_string(), "parse_error");
    let port: i32 = app
        .query_one(&format!("SELECT inet_server_port() FROM {items} WHERE id = $1 FOR KEY SHARE"), &[&1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port as u16, primary, "a row lock in the extended protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_rules_and_clears_the_cache() {
    let c = cluster();
    let p = proxy_with("").await;
    let app = p.client().await;
    assert!(c.replica_ports.contains(&server_port(&app).await));
    assert!(!p.proxy.shared.classifier.cache().is_empty());
    let text = c.config("[routing]\ndefault_read = \"primary\"\n");
    let reloaded = pgroute::config::Config::parse(&text, "reload.toml").unwrap();
    p.proxy.shared.reload(reloaded).expect("reload");
    assert!(p.proxy.shared.classifier.cache().is_empty(), "reload clears the classification cache");
    assert_eq!(server_port(&app).await, c.primary_port, "default_read = primary after reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_reads_land_only_on_their_group_and_fall_back_as_configured() {
    let c = cluster();
    let extra = "[routing]\n[[routing.rules]]\nname = \"report\"\napplication_name = \"report\"\n\
                 route = \"replica\"\ngroup = \"analytics\"\n";
    let text = c.config(extra).replacen("name = \"pg1\"\n", "name = \"pg1\"\ngroups = [\"analytics\"]\n", 1);
    let proxy = pgroute::start(pgroute::config::Config::parse(&text, "groups.toml").expect("config")).await.unwrap();
    let p = common::TestProxy { port: proxy.addr.port(), proxy };
    let (analytics, default) = (c.replica_ports[0], c.replica_ports[1]);
    let report = connect(&format!("{} application_name=report", p.conninfo("app"))).await;
    let app = p.client().await;
    for _ in 0..6 {
        assert_eq!(server_port(&report).await, analytics, "the rule's reads reach only its group");
        assert_eq!(server_port(&app).await, default, "plain reads never reach the analytics replica");
    }
    let hinted = |h: &str| format!("SELECT inet_server_port() /* pgroute: {h} */");
    assert_eq!(simple_value(&app, &hinted("group=analytics")).await, analytics.to_string());

    // The analytics replica leaves the rotation: the rule's fallback (error by default)
    // holds; hints choose theirs.
    let console = p.console().await;
    console.simple_query("DRAIN pg1").await.unwrap();
    let e = report.simple_query("SELECT inet_server_port()").await.expect_err("no analytics replica: an error");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(db.message().contains("group \"analytics\""), "{db:?}");
    assert_eq!(simple_value(&app, &hinted("group=analytics fallback=primary")).await, c.primary_port.to_string());
    assert_eq!(simple_value(&app, &hinted("group=analytics fallback=default")).await, default.to_string());
    let e = app.simple_query(&hinted("group=nosuchgroup")).await.expect_err("a group no node is in has no replica");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(db.message().contains("group \"nosuchgroup\""), "{db:?}");
    console.simple_query("UNDRAIN pg1").await.unwrap();
    assert_eq!(server_port(&report).await, analytics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_cap_holds_the_next_waits_in_line_then_is_refused_with_53300() {
    use std::time::{Duration, Instant};
    let extra = "[routing]\n[[routing.rules]]\nname = \"capped\"\napplication_name = \"capped\"\n\
                 route = \"replica\"\nmax_concurrent = 1\nqueue_timeout = \"1500ms\"\n";
    let p = proxy_with(extra).await;
    let capped = format!("{} application_name=capped", p.conninfo("app"));
    let console = p.console().await;
    // SHOW RULES columns: running 16, queued 17, admitted 18, rejected 19, wait_ms 20.
    let gauge = |rows: Vec<Vec<String>>, col: usize| -> u64 {
        rows.iter().find(|r| r[1] == "capped").map(|r| r[col].parse().expect("a number")).expect("the rule")
    };
    let running = || async { gauge(common::rows(&console, "SHOW RULES").await, 16) };
    let wait_until_running = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while running().await != 1 {
            assert!(Instant::now() < deadline, "the first statement never took its place");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // A takes the only place; B waits queue_timeout in line, then gets 53300 naming the
    // rule. A client the rule does not match is not held up by it.
    let a = connect(&capped).await;
    let slow = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(4)").await.map(|_| a) });
    wait_until_running().await;
    let other = p.client().await;
    assert!(cluster().replica_ports.contains(&server_port(&other).await));
    let b = connect(&capped).await;
    let started = Instant::now();
    let e = b.simple_query("SELECT 1").await.expect_err("no place within queue_timeout");
    assert!(started.elapsed() >= Duration::from_millis(1500), "it waited its queue_timeout first");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("rule \"capped\""), "{db:?}");
    assert_eq!(gauge(common::rows(&console, "SHOW RULES").await, 19), 1, "one refused");
    let a = slow.await.unwrap().expect("the first statement ran");
    assert_eq!(running().await, 0, "its place was given back");

    // The next in line gets the place once it is free: B waits, then runs.
    let slow = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(0.8)").await.map(|_| ()) });
    wait_until_running().await;
    let waited = gauge(common::rows(&console, "SHOW RULES").await, 20);
    assert_eq!(simple_value(&b, "SELECT 2").await, "2", "the session goes on, and runs once A is done");
    assert!(gauge(common::rows(&console, "SHOW RULES").await, 20) > waited, "it waited in line");
    slow.await.unwrap().expect("A ran");
    assert_eq!(gauge(common::rows(&console, "SHOW RULES").await, 19), 1, "none refused this time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_statement_timeout_applies_to_its_reads_and_the_clients_own_value_stays() {
    let extra = "[routing]\n[[routing.rules]]\nname = \"timed\"\napplication_name = \"timed\"\n\
                 route = \"replica\"\nstatement_timeout = \"300ms\"\n";
    let p = proxy_with(extra).await;
    let report = connect(&format!("{} application_name=timed", p.conninfo("app"))).await;
    let canceled = |e: tokio_postgres::Error| {
        let db = e.as_db_error().expect("a server error").clone();
        assert_eq!(db.code().code(), "57014", "{db:?}");
        assert!(db.message().contains("statement timeout"), "{db:?}");
    };
    // The rule's read is canceled by the server's statement_timeout.
    canceled(report.simple_query("SELECT pg_sleep(3)").await.expect_err("canceled after 300ms"));
    // The session shows its own value, as a direct connection would (the server
    // connections it used were given the client's value back).
    let direct = simple_value(&cluster().direct(1).await, "SHOW statement_timeout").await;
    for _ in 0..4 {
        assert_eq!(simple_value(&report, "SHOW statement_timeout").await, direct);
    }
    // The client's own SET stays its own: the rule's reads still run under the rule's.
    report.batch_execute("SET statement_timeout = '10s'").await.unwrap();
    canceled(report.simple_query("SELECT pg_sleep(3)").await.expect_err("the rule's timeout"));
    for _ in 0..4 {
        assert_eq!(simple_value(&report, "SHOW statement_timeout").await, "10s");
    }
    // Inside a transaction block the rule's timeout does not apply.
    report.batch_execute("BEGIN; SELECT pg_sleep(0.5); COMMIT").await.expect("no rule timeout in a block");
    // Reads other rules place are not affected.
    let other = p.client().await;
    other.simple_query("SELECT pg_sleep(0.5)").await.expect("no timeout for other reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reserve_is_kept_for_the_rules_that_may_use_it() {
    let extra = "[pool]\nnode_limit = 2\nreserve = 1\ncheckout_timeout = \"500ms\"\n\
                 [routing]\n[[routing.rules]]\nname = \"payments\"\napplication_name = \"payments\"\n\
                 route = \"primary\"\nreserve = true\n";
    let p = proxy_with(extra).await;
    let as_app = |app: &str| format!("{} application_name={app}", p.conninfo("app"));
    let open = "BEGIN; SELECT txid_current()";
    // One backoffice transaction holds the only place others may use on the primary.
    let first = connect(&as_app("backoffice")).await;
    first.batch_execute(open).await.unwrap();
    let second = connect(&as_app("backoffice")).await;
    let e = second.batch_execute(open).await.expect_err("no place left for the backoffice");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("node_limit = 2") && db.message().contains("1 kept"), "{db:?}");
    // The payment path still gets a connection: the reserve.
    let pay = connect(&as_app("payments")).await;
    pay.batch_execute(open).await.expect("the reserve is the payment path's");
    assert_eq!(simple_value(&pay, "SELECT inet_server_port()").await, cluster().primary_port.to_string());
    pay.batch_execute("COMMIT").await.unwrap();
    // Once the backoffice transaction ends, its place is free again.
    first.batch_execute("COMMIT").await.unwrap();
    second.batch_execute(open).await.expect("the freed place");
    second.batch_execute("COMMIT").await.unwrap();
}
