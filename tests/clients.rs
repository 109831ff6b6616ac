//! Real client programs through the proxy: psql and pgbench, as a user would run them.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{cluster, proxy, TestProxy};

fn run(program: &str, p: &TestProxy, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p", &p.port.to_string(), "-U", "app"])
        .args(args)
        .env("PGPASSWORD", "app")
        .env("PGDATABASE", "app")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_as_on_a_single_server() {
    let p = proxy().await;
    let t = common::table("psql");
    let dir = std::env::temp_dir().join(format!("pgroute-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.tsv");
    let output = dir.join("out.tsv");
    std::fs::write(&input, "3\tc\n4\td\n").unwrap();
    let script = format!(
        "CREATE TABLE {t} (id int primary key, v text);
INSERT INTO {t} VALUES (1, 'a'), (2, 'b');
\\copy {t} from '{input}'
SELECT * FROM no_such_table;
BEGIN;
INSERT INTO {t} VALUES (5, 'e');
SELECT 1/0;
ROLLBACK;
BEGIN;
UPDATE {t} SET v = 'B' WHERE id = 2;
COMMIT;
SELECT 'multi' \\; SELECT 'statement';
\\d pg_catalog.pg_am
-- Reads right after a write may reach a replica that has not replayed it yet (the
-- read-your-writes issue); a read-write transaction keeps these on the primary.
BEGIN;
\\d {t}
SELECT count(*) AS n, string_agg(v, ',' ORDER BY id) AS vs FROM {t} \\gset
\\echo rows=:n values=:vs
\\copy (SELECT id, v FROM {t} ORDER BY id) to '{output}'
COMMIT;
",
        input = input.display(),
        output = output.display()
    );
    let out = run("psql", &p, &["-X", "-v", "ON_ERROR_STOP=0", "-f", "-"], Some(&script));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psql failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("relation \"no_such_table\" does not exist"), "{stderr}");
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert!(stdout.contains("multi") && stdout.contains("statement"), "{stdout}");
    assert!(stdout.contains(&format!("Table \"public.{t}\"")), "\\d output:\n{stdout}");
    assert!(stdout.contains("Table \"pg_catalog.pg_am\""), "\\d on a replica:\n{stdout}");
    assert!(stdout.contains("rows=4 values=a,B,c,d"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "1\ta\n2\tB\n3\tc\n4\td\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_psql_cancels_the_running_query() {
    let p = proxy().await;
    let child = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &p.port.to_string(), "-U", "app", "-d", "app"])
        .args(["-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", "app")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let (_, stderr) = text(&out);
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}");
}

fn pgbench(p: &TestProxy, args: &[&str]) -> String {
    let out = run("pgbench", p, args, None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "pgbench {args:?} failed:\n{stdout}\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error") || l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "pgbench {args:?} printed errors:\n{stderr}");
    stdout
}

/// Statements routed to each replica so far, from pgroute's own Prometheus counters.
/// (pg_stat_database on the replicas would be the server's view, but servers publish it
/// up to ten seconds late.)
fn replica_routes(p: &TestProxy) -> Vec<u64> {
    let text = pgroute::metrics::render(&p.proxy.shared.classifier);
    (1..=cluster().replica_ports.len())
        .map(|i| {
            let label = format!("pgroute_routes_total{{node=\"pg{i}\"");
            text.lines()
                .filter(|l| l.starts_with(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_clean_in_every_protocol_mode() {
    let c = cluster();
    let p = proxy().await;
    pgbench(&p, &["-i", "-s", "1", "-q"]);
    c.wait_replicas_caught_up().await;
    for mode in ["simple", "extended", "prepared"] {
        for select_only in [false, true] {
            let mut args = vec!["-M", mode, "-c", "8", "-j", "2", "-t", "40"];
            if select_only {
                args.push("-S");
                // The write run before it may have left a replica past the lag threshold
                // (out of rotation) on a loaded machine.
                c.wait_replicas_caught_up().await;
            }
            let before = replica_routes(&p);
            let out = pgbench(&p, &args);
            assert!(out.contains("number of failed transactions: 0"), "{args:?}:\n{out}");
            assert!(out.contains("number of transactions actually processed: 320/320"), "{args:?}:\n{out}");
            if select_only {
                let after = replica_routes(&p);
                for (b, a) in before.iter().zip(&after) {
                    // pg_stat_database is flushed lazily; each replica ran a good share.
                    assert!(a - b >= 80, "-S load spread over replicas: before {before:?} after {after:?}");
                }
            }
        }
        let out = pgbench(&p, &["-M", mode, "-C", "-c", "4", "-j", "2", "-t", "10"]);
        assert!(out.contains("number of failed transactions: 0"), "-C {mode}:\n{out}");
    }
}
