//! Production authentication against the real cluster: a `proxy.toml` holding no
//! plaintext password (SCRAM verifiers copied from `pg_authid`) serves psql and pgbench
//! with SCRAM, over TLS with channel binding too, and logs in to the servers with the keys
//! the clients' proofs reveal (the servers check them: `app` logs in by SCRAM there). A
//! wrong password gets 28P01. The drivers run the same way in `tests/drivers.rs`.

mod common;

use std::process::{Command, Output, Stdio};

use common::certs::pki;
use common::{cluster, proxy_from_text, refusal, role_verifier, table, verifier_users, TestProxy};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn psql(conninfo: &str, password: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("psql")
}

fn conninfo(p: &TestProxy) -> String {
    format!("host=127.0.0.1 port={} user=app dbname=app", p.port)
}

/// The `[[users]]` of `verifier_users` with `app`'s verifier replaced by `other`.
async fn users_with_app_verifier(other: &str) -> String {
    let users = verifier_users().await;
    let start = users.find("scram_verifier = \"").expect("app's verifier") + "scram_verifier = \"".len();
    let end = start + users[start..].find('"').expect("closing quote");
    format!("{}{other}{}", &users[..start], &users[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verifiers_in_the_file_serve_psql_and_pgbench_and_refuse_a_wrong_password() {
    let users = verifier_users().await;
    let config = cluster().config_with_users("", &users);
    assert!(!config.contains("password ="), "no plaintext password anywhere:\n{config}");
    let p = proxy_from_text(&config).await;

    let t = table("scram_pass");
    let out = psql(
        &conninfo(&p),
        "app",
        &format!("CREATE TABLE {t} (n int); INSERT INTO {t} VALUES (1), (2); SELECT sum(n) FROM {t}"),
    );
    assert!(out.status.success(), "psql through a verifier-only pgroute: {}", text(&out));
    assert_eq!(text(&out).lines().last(), Some("3"));

    let script = std::env::temp_dir().join(format!("pgroute-scram-{}.sql", std::process::id()));
    std::fs::write(&script, format!("INSERT INTO {t} VALUES (1);\nSELECT count(*) FROM {t};\n")).unwrap();
    let out = Command::new("pgbench")
        .args(["-n", "-c", "2", "-t", "25", "-h", "127.0.0.1", "-p", &p.port.to_string(), "-U", "app", "-f"])
        .arg(&script)
        .arg("app")
        .env("PGPASSWORD", "app")
        .output()
        .expect("pgbench");
    let _ = std::fs::remove_file(&script);
    assert!(out.status.success(), "pgbench: {}", text(&out));
    let direct = cluster().direct(0).await;
    let n: i64 = direct.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 2 + 50, "every pgbench insert reached the primary");

    let (code, message) = refusal(&format!("host=127.0.0.1 port={} user=app password=wrong dbname=app", p.port)).await;
    assert_eq!((code.as_str(), message.as_str()), ("28P01", "password authentication failed for user \"app\""));
    let out = psql(&format!("host=127.0.0.1 port={} user=admin dbname=pgroute", p.port), "admin", "SHOW CONFIG");
    assert!(out.status.success(), "the console's verifier: {}", text(&out));
    assert!(text(&out).contains("users.app.auth"), "{}", text(&out));
    assert!(!text(&out).contains("SCRAM-SHA-256$"), "SHOW CONFIG shows a verifier: {}", text(&out));
}

/// The control: a verifier for the same password with another salt (what the file holds
/// after `ALTER ROLE ... PASSWORD` on the servers) lets the client in to pgroute, but the
/// keys its proof reveals do not log in to the servers, and the error says why. (Were it
/// the monitor's user, its probes would fail with this message in the WARN log.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_verifier_the_servers_do_not_hold_are_refused_with_the_reason() {
    let other = role_verifier("pgroute_other_salt", "app", false).await;
    // The monitor logs in as postgres (trusted), so the nodes are usable and the failure
    // is the client's own server login.
    let health = "[health]\nuser = \"postgres\"\n";
    let p = proxy_from_text(&cluster().config_with_users(health, &users_with_app_verifier(&other).await)).await;
    let out = psql(&conninfo(&p), "app", "SELECT 1");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("differs from the user's scram_verifier"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_channel_binding_works_with_a_verifier() {
    let pki = pki("scram-pass");
    let tls = format!(
        "[tls]\nmode = \"require\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let p = proxy_from_text(&cluster().config_with_users(&tls, &verifier_users().await)).await;
    let bound =
        format!("{} sslmode=verify-full sslrootcert={} channel_binding=require", conninfo(&p), pki.ca.display());
    let out = psql(&bound, "app", "SELECT 40 + 2");
    assert!(out.status.success(), "SCRAM-SHA-256-PLUS with a verifier: {}", text(&out));
    assert_eq!(text(&out).trim(), "42");
    let out = psql(&bound, "wrong", "SELECT 1");
    assert!(!out.status.success() && text(&out).contains("password authentication failed"), "{}", text(&out));
}

/// The server-first SCRAM message pgroute sends `user` (its salt and iterations), read
/// off the wire: a client learns nothing more before it proves a password.
async fn server_first(port: u16, user: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sock.write_all(&pgroute::protocol::startup_message(&[("user", user), ("database", "app")])).await.unwrap();
    let read = async |sock: &mut tokio::net::TcpStream| {
        let mut head = [0u8; 5];
        sock.read_exact(&mut head).await.unwrap();
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        sock.read_exact(&mut body).await.unwrap();
        (head[0], body)
    };
    let (tag, _) = read(&mut sock).await;
    assert_eq!(tag, b'R', "AuthenticationSASL");
    let first = b"n,,n=,r=pgroutetestnonce";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    let mut msg = vec![b'p'];
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(&body);
    sock.write_all(&msg).await.unwrap();
    let (tag, body) = read(&mut sock).await;
    assert_eq!(tag, b'R');
    let text = String::from_utf8_lossy(&body[4..]).into_owned();
    // Without the server nonce, which is fresh each time.
    text.split(',').filter(|p| !p.starts_with("r=")).collect::<Vec<_>>().join(",")
}

/// `[auth] query`: a role that is not in the file logs in with its own password (and
/// pgroute logs in to the servers with the keys its proof reveals), a wrong password is
/// refused, and an unknown user is refused the same way: same SQLSTATE and message, a
/// stable salt and the same iterations. A changed password is looked up again after a
/// failed login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_admits_users_not_in_the_file_and_hides_which_users_exist() {
    role_verifier("pgroute_looked_up", "lookup-pw", true).await;
    let primary = cluster().direct(0).await;
    let extra = "[auth]\nuser = \"postgres\"\n[health]\nuser = \"postgres\"\n";
    let p = proxy_from_text(&cluster().config_with_users(extra, &verifier_users().await)).await;
    let login = |user: &str, password: &str| {
        format!("host=127.0.0.1 port={} user={user} password={password} dbname=app", p.port)
    };

    let c = common::connect(&login("pgroute_looked_up", "lookup-pw")).await;
    let who: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "pgroute_looked_up");
    drop(c);

    let wrong = refusal(&login("pgroute_looked_up", "nope")).await;
    let unknown = refusal(&login("pgroute_nobody", "nope")).await;
    assert_eq!(wrong.0, "28P01");
    assert_eq!(unknown.0, wrong.0);
    assert_eq!(unknown.1.replace("pgroute_nobody", "X"), wrong.1.replace("pgroute_looked_up", "X"));
    let (known_first, nobody_first) =
        (server_first(p.port, "pgroute_looked_up").await, server_first(p.port, "pgroute_nobody").await);
    assert_eq!(known_first, server_first(p.port, "pgroute_looked_up").await, "a user's salt is stable");
    assert_eq!(nobody_first, server_first(p.port, "pgroute_nobody").await, "so is an unknown name's");
    let iterations = |s: &str| s.split(',').find(|p| p.starts_with("i=")).map(str::to_string);
    assert_eq!(iterations(&known_first), iterations(&nobody_first));

    // The password changes on the server: the cached verifier fails once, then the
    // lookup runs again.
    primary.batch_execute("ALTER ROLE pgroute_looked_up PASSWORD 'lookup-pw-2'").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(refusal(&login("pgroute_looked_up", "lookup-pw-2")).await.0, "28P01", "the cached verifier");
    common::connect(&login("pgroute_looked_up", "lookup-pw-2")).await;
}

/// A reload that changes `[auth] query` forgets what the old one answered: a user it
/// admitted is refused at once when the new query finds nobody (within the cache's TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_forgets_what_the_old_auth_query_answered() {
    role_verifier("pgroute_reloaded", "reload-pw", true).await;
    let users = verifier_users().await;
    let extra = "[auth]\nuser = \"postgres\"\n[health]\nuser = \"postgres\"\n";
    let (p, path) = common::proxy_from_file_with_users(extra, &users, "auth-reload").await;
    let login = format!("host=127.0.0.1 port={} user=pgroute_reloaded password=reload-pw dbname=app", p.port);
    common::connect(&login).await;
    let nobody =
        "[auth]\nuser = \"postgres\"\nquery = \"SELECT usename, passwd FROM pg_shadow WHERE false AND usename = $1\"\n";
    std::fs::write(&path, cluster().config_with_users(&extra.replace("[auth]\nuser = \"postgres\"\n", nobody), &users))
        .unwrap();
    p.proxy.shared.reload_file().expect("reload");
    assert_eq!(refusal(&login).await.0, "28P01", "the cached answer of the old query was used");
    let _ = std::fs::remove_file(&path);
}
