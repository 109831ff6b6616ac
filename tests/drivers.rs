//! Real drivers through the proxy: psycopg 3 (including pipeline mode), asyncpg,
//! node-postgres and pgjdbc run their compatibility scripts (`tests/drivers/`) against an
//! in-process pgroute in front of the test cluster. `scripts/test-deps.sh` installs them.
//! pgroute holds no password: only the SCRAM verifier copied from `pg_authid`, and it logs
//! in to the servers with the keys the drivers' own logins reveal (SCRAM pass-through).
//! pgroute runs with read-your-writes in `lsn` mode, its default: the drivers see its
//! `pgroute.commit_lsn` reports after their writes.

mod common;

use std::process::Command;

use common::{cluster, proxy_from_text, verifier_users, TestProxy};

/// The shipped default (the tests' own default is `off`).
const LSN: &str = "[routing]\ncausal_scope = \"session\"\n";

/// A pgroute with the shipped read-your-writes default and only SCRAM verifiers.
async fn proxy() -> TestProxy {
    proxy_from_text(&cluster().config_with_users(LSN, &verifier_users().await)).await
}

fn run(p: &TestProxy, program: &str, args: &[&str], dir: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(program)
        .args(args)
        .current_dir(format!("{root}/{dir}"))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", p.port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (install the drivers: scripts/test-deps.sh)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed through pgroute:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{program} {args:?}:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_including_pipeline_mode() {
    let p = proxy().await;
    tokio::task::spawn_blocking(move || run(&p, "python3", &["tests/drivers/psycopg_check.py"], "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    let p = proxy().await;
    tokio::task::spawn_blocking(move || run(&p, "python3", &["tests/drivers/asyncpg_check.py"], "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let p = proxy().await;
    tokio::task::spawn_blocking(move || run(&p, "node", &["node_pg_check.js"], "tests/drivers/node")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    let p = proxy().await;
    let classes = std::env::temp_dir().join(format!("pgroute-jdbc-{}", std::process::id()));
    let classes = classes.to_string_lossy().into_owned();
    let jar = "/usr/share/java/postgresql.jar";
    tokio::task::spawn_blocking(move || {
        let javac = Command::new("javac")
            .args(["-d", &classes, "-cp", jar, "tests/drivers/JdbcCheck.java"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("javac (install: scripts/test-deps.sh)");
        assert!(javac.status.success(), "javac: {}", String::from_utf8_lossy(&javac.stderr));
        run(&p, "java", &["-cp", &format!("{classes}:{jar}"), "JdbcCheck"], "");
        let _ = std::fs::remove_dir_all(&classes);
    })
    .await
    .unwrap();
}
