//! A node whose connections hang (a listener that accepts and never answers) cannot make
//! the primary's sample stale: replicas are probed at once, each within half the probe
//! limit, before the primary. Its own binary: its monitor publishes node metrics.

mod common;

use std::time::{Duration, Instant};

use common::proxy_with;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_leaves_the_primary_usable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let p = proxy_with(&format!(
        "[health]\ninterval = \"100ms\"\n\n[[nodes]]\nname = \"hang\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"replica\"\n"
    ))
    .await;
    let client = p.client().await;
    let t = common::table("hang");
    client.batch_execute(&format!("CREATE TABLE {t} (id int)")).await.unwrap();
    // The cluster's primary is the second node; the hanging one never becomes usable.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut checks = 0;
    while Instant::now() < deadline {
        let snap = p.proxy.shared.topology.snapshot();
        assert_eq!(snap.nodes[1].name, "pg0");
        assert!(snap.nodes[1].usable(Instant::now()), "primary unusable: {}", snap.nodes[1].why);
        assert!(!snap.nodes[0].usable(Instant::now()));
        client.batch_execute(&format!("INSERT INTO {t} VALUES ({checks})")).await.unwrap();
        checks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = p.proxy.shared.topology.snapshot().nodes[0].why;
    assert!(matches!(why, "probe_timeout" | "down"), "{why}");
    assert!(checks > 50, "{checks}");
}
