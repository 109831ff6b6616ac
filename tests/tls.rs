//! TLS on both sides, with a throwaway CA: clients (psql, psycopg 3, asyncpg,
//! node-postgres, pgjdbc) verify pgroute's certificate; `require` refuses clear text;
//! SCRAM-SHA-256-PLUS binds the login to the certificate (the clients' test holds no
//! password: only SCRAM verifiers, passed through to the servers); client certificates (mutual
//! TLS) are accepted or refused; pgroute verifies a PostgreSQL that accepts TLS logins
//! only; certificates are reloaded without dropping sessions. Own cluster.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::certs::{pki, Pki};
use common::{cluster, proxy_from_file, proxy_from_file_with_users, simple_value, verifier_users, TestProxy};

fn tls_section(pki: &Pki, mode: &str, extra: &str) -> String {
    format!(
        "[tls]\nmode = \"{mode}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}",
        pki.server_cert.display(),
        pki.server_key.display()
    )
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("spawn")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// psql with a libpq connection string; `\conninfo` says whether TLS is in use.
fn psql(conninfo: &str, sql: &str) -> Output {
    output(Command::new("psql").args(["-X", "-A", "-t", "-d", conninfo, "-c", sql]).env("PGPASSWORD", "app"))
}

fn conninfo(p: &TestProxy, pki: &Pki, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=app dbname=app sslmode=verify-full sslrootcert={} {extra}",
        p.port,
        pki.ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_verify_pgroute_and_require_refuses_clear_text() {
    let pki = pki("clients");
    let users = verifier_users().await;
    let (p, _) = proxy_from_file_with_users(&tls_section(&pki, "require", ""), &users, "tls-clients").await;
    let out = psql(&conninfo(&p, &pki, "channel_binding=require"), "\\conninfo");
    assert!(out.status.success(), "psql verify-full with channel binding: {}", text(&out));
    assert!(text(&out).contains("SSL connection"), "{}", text(&out));
    let out = psql(&conninfo(&p, &pki, ""), "SELECT 40 + 2");
    assert_eq!(text(&out).trim(), "42");

    let plain = format!("host=127.0.0.1 port={} user=app dbname=app sslmode=disable", p.port);
    let out = psql(&plain, "SELECT 1");
    assert!(!out.status.success() && text(&out).contains("pgroute accepts TLS connections only"), "{}", text(&out));
    let other_ca = pki_other();
    let out = psql(
        &format!(
            "host=127.0.0.1 port={} user=app dbname=app sslmode=verify-full sslrootcert={}",
            p.port,
            other_ca.ca.display()
        ),
        "SELECT 1",
    );
    assert!(!out.status.success(), "a certificate from another CA is refused by the client");

    let (port, ca) = (p.port.to_string(), pki.ca.display().to_string());
    let root = env!("CARGO_MANIFEST_DIR");
    let psycopg = format!(
        "import psycopg\nc = psycopg.connect('host=127.0.0.1 port={port} user=app password=app dbname=app sslmode=verify-full sslrootcert={ca} channel_binding=require')\n\
         assert c.pgconn.ssl_in_use\nprint('tls ok', c.execute('SELECT 1').fetchone()[0])"
    );
    let asyncpg = format!(
        "import asyncio, ssl, asyncpg\nasync def main():\n    ctx = ssl.create_default_context(cafile='{ca}')\n    \
         c = await asyncpg.connect(host='127.0.0.1', port={port}, user='app', password='app', database='app', ssl=ctx)\n    \
         print('tls ok', await c.fetchval('SELECT 1'))\n    await c.close()\nasyncio.run(main())"
    );
    let node = format!(
        "const {{Client}} = require('pg'); const fs = require('fs');\n\
         const c = new Client({{host: '127.0.0.1', port: {port}, user: 'app', password: 'app', database: 'app', ssl: {{ca: fs.readFileSync('{ca}')}}}});\n\
         c.connect().then(() => c.query('SELECT 1 AS x')).then(r => {{ console.log('tls ok', r.rows[0].x); return c.end(); }})\
         .catch(e => {{ console.error(e); process.exit(1); }});"
    );
    let classes = std::env::temp_dir().join(format!("pgroute-tlsjdbc-{}", std::process::id()));
    let jar = "/usr/share/java/postgresql.jar";
    let javac = output(
        Command::new("javac")
            .args(["-d", classes.to_str().unwrap(), "-cp", jar, "tests/drivers/TlsCheck.java"])
            .current_dir(root),
    );
    assert!(javac.status.success(), "javac: {}", text(&javac));
    let url = format!("jdbc:postgresql://127.0.0.1:{port}/app?sslmode=verify-full&sslrootcert={ca}");
    let runs: Vec<(&str, Output)> = vec![
        ("psycopg", output(Command::new("python3").args(["-c", &psycopg]))),
        ("asyncpg", output(Command::new("python3").args(["-c", &asyncpg]))),
        (
            "node-postgres",
            output(Command::new("node").args(["-e", &node]).current_dir(format!("{root}/tests/drivers/node"))),
        ),
        (
            "pgjdbc",
            output(Command::new("java").args(["-cp", &format!("{}:{jar}", classes.display()), "TlsCheck", &url])),
        ),
    ];
    for (driver, out) in runs {
        assert!(out.status.success() && text(&out).contains("tls ok 1"), "{driver} over TLS: {}", text(&out));
    }
    let _ = std::fs::remove_dir_all(&classes);
}

fn pki_other() -> Pki {
    pki("other")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_when_asked_for() {
    let pki = pki("mtls");
    let extra = format!("ca_file = \"{}\"\nclient_cert = \"verify\"\n", pki.ca.display());
    let (p, _) = proxy_from_file(&tls_section(&pki, "require", &extra), "tls-mtls").await;
    let with = format!("sslcert={} sslkey={}", pki.client_cert.display(), pki.client_key.display());
    let out = psql(&conninfo(&p, &pki, &with), "SELECT 1");
    assert!(out.status.success(), "a client certificate from the CA is accepted: {}", text(&out));
    let out = psql(&conninfo(&p, &pki, "sslcert=/nonexistent sslkey=/nonexistent"), "SELECT 1");
    assert!(!out.status.success(), "no client certificate, no connection: {}", text(&out));
    let stranger = pki_other();
    let wrong = format!("sslcert={} sslkey={}", stranger.client_cert.display(), stranger.client_key.display());
    let out = psql(&conninfo(&p, &pki, &wrong), "SELECT 1");
    assert!(!out.status.success(), "a certificate from another CA is refused: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_dropping_sessions() {
    let first = pki("reload1");
    let (p, _) = proxy_from_file(&tls_section(&first, "allow", ""), "tls-reload").await;
    let session = common::connect(&format!("host=127.0.0.1 port={} user=app password=app dbname=app", p.port)).await;
    assert!(psql(&conninfo(&p, &first, ""), "SELECT 1").status.success());
    // The files are renewed in place (another CA here, to tell them apart), then reloaded.
    let second = pki("reload2");
    std::fs::copy(&second.server_cert, &first.server_cert).unwrap();
    std::fs::copy(&second.server_key, &first.server_key).unwrap();
    common::connect(&format!("host=127.0.0.1 port={} user=admin password=admin dbname=pgroute", p.port))
        .await
        .simple_query("RELOAD")
        .await
        .expect("reload");
    assert!(psql(&conninfo(&p, &second, ""), "SELECT 1").status.success(), "new connections get the new certificate");
    assert!(!psql(&conninfo(&p, &first, ""), "SELECT 1").status.success(), "and not the old one");
    assert_eq!(simple_value(&session, "SELECT 7").await, "7", "the session from before the reload goes on");
}

/// Makes the test cluster's primary accept TLS logins only (`hostnossl ... reject`), with
/// the test PKI's certificate.
fn primary_tls_only(pki: &Pki) {
    let c = cluster();
    let data = Path::new(&c.dir).join("node0");
    for (from, to) in [(&pki.server_cert, "server.crt"), (&pki.server_key, "server.key")] {
        let dest = data.join(to);
        std::fs::copy(from, &dest).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        let owner = std::fs::metadata(&data).unwrap();
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(&dest, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("hostnossl all all 127.0.0.1/32 reject\n{rules}")).unwrap();
    let out = output(Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh")).args([
        "psql",
        &c.dir,
        "0",
        "-c",
        "ALTER SYSTEM SET ssl = on",
        "-c",
        "SELECT pg_reload_conf()",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgroute_verifies_a_postgresql_that_accepts_tls_only() {
    let pki = pki("server");
    primary_tls_only(&pki);
    let c = cluster();
    let plain =
        common::try_connect(&format!("host=127.0.0.1 port={} user=app password=app dbname=app", c.primary_port)).await;
    assert!(plain.is_err(), "the primary refuses clear-text logins now");

    let text_config = c.config("").replacen(
        "role = \"primary\"\n",
        &format!("role = \"primary\"\ntls = \"verify-full\"\ntls_ca_file = \"{}\"\n", pki.ca.display()),
        1,
    );
    let config = pgroute::config::Config::parse(&text_config, "tls.toml").unwrap();
    let proxy = pgroute::start(config).await.expect("start");
    let p = TestProxy { port: proxy.addr.port(), proxy };
    let app = p.client().await;
    let row = "BEGIN; SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid(); COMMIT";
    assert_eq!(simple_value(&app, row).await, "true", "pgroute's connection to the primary is TLS");
    app.batch_execute("CREATE TEMP TABLE t (x int)").await.expect("writes work");

    // The wrong CA: the primary is unusable, with the reason; writes are refused.
    let other = pki_other();
    let wrong = c.config("[health]\nprimary_wait = \"300ms\"\n").replacen(
        "role = \"primary\"\n",
        &format!("role = \"primary\"\ntls = \"verify-full\"\ntls_ca_file = \"{}\"\n", other.ca.display()),
        1,
    );
    let proxy = pgroute::start(pgroute::config::Config::parse(&wrong, "tls.toml").unwrap()).await.expect("start");
    let snapshot = proxy.shared.topology.snapshot();
    assert_eq!(snapshot.nodes[0].why, "probe_error", "a server certificate from another CA is not trusted");
    // A replica with tls = "require" that does not speak TLS is unusable too.
    let require = c.config("").replacen("role = \"replica\"\n", "role = \"replica\"\ntls = \"require\"\n", 1);
    let proxy = pgroute::start(pgroute::config::Config::parse(&require, "tls.toml").unwrap()).await.expect("start");
    assert!(!proxy.shared.topology.snapshot().nodes[1].healthy, "tls = require against a server without TLS");
}
