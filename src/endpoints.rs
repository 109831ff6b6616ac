//! Health endpoints for orchestrators, on `[admin] health_address`: `GET /live` answers 200
//! while pgroute serves; `GET /ready` answers 200 when a primary is usable (with
//! `?replica=1`, also a replica), else 503 with a JSON reason; during a smart shutdown both
//! say so (503), so a balancer stops sending new clients. The answer is a pure function of
//! the path, the topology snapshot and the shutdown flag (table-tested below).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::config::Role;
use crate::shared::Shared;
use crate::topology::Snapshot;

/// The largest request read; anything after it is ignored.
const MAX_REQUEST: usize = 2048;
/// A client that has not sent its request line by then gets no answer.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The status and JSON body for a request line's path.
pub fn answer(path: &str, snapshot: &Snapshot, now: Instant, shutting_down: bool) -> (u16, String) {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let usable = |role: Role| {
        snapshot.nodes.iter().filter(|n| n.role == role && n.usable(now)).map(|n| n.name.as_str()).collect::<Vec<_>>()
    };
    let nodes: serde_json::Map<String, serde_json::Value> =
        snapshot.nodes.iter().filter(|n| !n.removed).map(|n| (n.name.clone(), json!(n.why))).collect();
    let (status, body) = match route {
        "/live" if shutting_down => (503, json!({"status": "shutting_down"})),
        "/live" => (200, json!({"status": "live"})),
        "/ready" => {
            let want_replica = query.split('&').any(|p| p == "replica=1" || p == "replica=true");
            let primary = snapshot.primary(now).and_then(|i| snapshot.nodes.get(i)).map(|n| n.name.as_str());
            let replicas = usable(Role::Replica);
            let not_ready = |reason: &str| (503, json!({"status": "not_ready", "reason": reason, "nodes": nodes}));
            if shutting_down {
                not_ready("shutting down")
            } else if snapshot.split_brain {
                not_ready("split brain: more than one node claims to be primary")
            } else if primary.is_none() {
                not_ready("no usable primary")
            } else if want_replica && replicas.is_empty() {
                not_ready("no usable replica")
            } else {
                (200, json!({"status": "ready", "primary": primary, "replicas": replicas}))
            }
        }
        _ => (404, json!({"status": "not_found", "paths": ["/live", "/ready", "/ready?replica=1"]})),
    };
    (status, body.to_string())
}

/// Serves the endpoints until the process ends; one short task per request.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut len = 0;
            let read = tokio::time::timeout(READ_TIMEOUT, async {
                while len < buf.len() && !buf[..len].contains(&b'\n') {
                    match sock.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
            });
            if read.await.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&buf[..len]);
            let mut words = line.split_whitespace();
            let (status, body) = match (words.next(), words.next()) {
                (Some("GET" | "HEAD"), Some(path)) => {
                    let shutting_down = *shared.shutdown.borrow();
                    answer(path, &shared.topology.snapshot(), Instant::now(), shutting_down)
                }
                _ => (405, json!({"status": "method_not_allowed"}).to_string()),
            };
            crate::metrics::http_reply(&mut sock, status, "application/json", &body).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::topology::Topology;

    fn snapshot(healthy: &[bool]) -> Snapshot {
        let text = "[[nodes]]\nname = \"pg0\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n\
                    [[nodes]]\nname = \"pg1\"\nhost = \"h\"\nport = 2\nrole = \"replica\"\n\
                    [[users]]\nname = \"u\"\npassword = \"p\"\n";
        let topology = Topology::from_config(&Config::parse(text, "t").unwrap(), true);
        let mut s = (*topology.snapshot()).clone();
        for (n, h) in s.nodes.iter_mut().zip(healthy) {
            n.healthy = *h;
            n.why = if *h { "ok" } else { "down" };
        }
        s
    }

    #[test]
    fn ready_needs_a_usable_primary_and_on_request_a_replica() {
        let now = Instant::now();
        let status = |path: &str, healthy: &[bool], down: bool| answer(path, &snapshot(healthy), now, down).0;
        let table: &[(&str, &[bool], bool, u16)] = &[
            ("/live", &[false, false], false, 200),
            ("/live", &[true, true], true, 503),
            ("/ready", &[true, true], false, 200),
            ("/ready", &[true, false], false, 200),
            ("/ready", &[false, true], false, 503),
            ("/ready?replica=1", &[true, true], false, 200),
            ("/ready?replica=1", &[true, false], false, 503),
            ("/ready?replica=0", &[true, false], false, 200),
            ("/ready", &[true, true], true, 503),
            ("/metrics", &[true, true], false, 404),
            ("/", &[true, true], false, 404),
        ];
        for (path, healthy, down, want) in table {
            assert_eq!(status(path, healthy, *down), *want, "{path} {healthy:?} shutting_down={down}");
        }
        let (_, body) = answer("/ready", &snapshot(&[false, true]), now, false);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reason"], "no usable primary");
        assert_eq!(v["nodes"]["pg0"], "down");
    }
}
