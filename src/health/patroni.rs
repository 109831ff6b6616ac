//! Patroni as the source of who leads (`[topology] source = "patroni"`): the members'
//! REST API (`GET /cluster`) names the leader that holds the lock in Patroni's DCS. The
//! monitor asks each interval; writes go to the leader only while its own probe agrees
//! (out of recovery, on the timeline Patroni reports), never to another member.
//! Members tagged `noloadbalance`, and configured nodes Patroni does not list as running
//! members, take no reads.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::PatroniUrl;

/// An answer larger than this is not a cluster description.
const MAX_ANSWER: usize = 1 << 20;

/// One member as `GET /cluster` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub state: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub timeline: Option<u32>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Tags {
    #[serde(default)]
    pub nofailover: bool,
    #[serde(default)]
    pub noloadbalance: bool,
}

#[derive(Deserialize)]
struct Cluster {
    members: Vec<Member>,
}

pub fn parse_cluster(body: &str) -> Result<Vec<Member>, String> {
    serde_json::from_str::<Cluster>(body).map(|c| c.members).map_err(|e| format!("not a Patroni cluster: {e}"))
}

/// The configured node Patroni's leader is, by address: exactly one member leads and is
/// running, and it is one of `nodes` (host, port). The leader's timeline comes with it.
pub fn leader(members: &[Member], nodes: &[(String, u16)]) -> Result<(usize, Option<u32>), &'static str> {
    let mut leaders = members.iter().filter(|m| m.role == "leader");
    let (Some(l), None) = (leaders.next(), leaders.next()) else {
        return Err("patroni_no_leader");
    };
    if l.state != "running" {
        return Err("patroni_leader_not_running");
    }
    nodes
        .iter()
        .position(|(h, p)| *h == l.host && *p == l.port)
        .map(|i| (i, l.timeline))
        .ok_or("patroni_leader_unknown")
}

/// Why Patroni says a configured node takes no reads, by node: tagged `noloadbalance`,
/// or not a running member of its cluster (unknown to it, stopped, starting, crashed).
pub fn read_exclusions(members: &[Member], nodes: &[(String, u16)]) -> Vec<Option<&'static str>> {
    nodes
        .iter()
        .map(|(h, p)| match members.iter().find(|m| m.host == *h && m.port == *p) {
            None => Some("patroni_not_member"),
            Some(m) if m.tags.noloadbalance => Some("noloadbalance"),
            Some(m) if !matches!(m.state.as_str(), "running" | "streaming") => Some("patroni_not_member"),
            Some(_) => None,
        })
        .collect()
}

/// `GET /cluster` from the first URL that answers with a cluster.
pub async fn fetch(urls: &[String], timeout: Duration) -> Result<Vec<Member>, String> {
    let mut last = String::from("no patroni_urls");
    for url in urls {
        let Some(u) = PatroniUrl::parse(url) else { continue };
        match tokio::time::timeout(timeout, get(&u, "/cluster")).await {
            Ok(Ok(body)) => match parse_cluster(&body) {
                Ok(m) => return Ok(m),
                Err(e) => last = format!("{url}: {e}"),
            },
            Ok(Err(e)) => last = format!("{url}: {e}"),
            Err(_) => last = format!("{url}: no answer in {timeout:?}"),
        }
    }
    Err(last)
}

/// One HTTP/1.0 GET; the body of a 200 answer.
async fn get(u: &PatroniUrl, path: &str) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect((u.host.as_str(), u.port)).await.map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\n\r\n", u.host, u.port);
    s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    (&mut s).take(MAX_ANSWER as u64 + 1).read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    if answer.len() > MAX_ANSWER {
        return Err("answer too large".into());
    }
    let text = String::from_utf8(answer).map_err(|_| "answer is not UTF-8".to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"{"members": [
        {"name": "member0", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8008/patroni",
         "host": "127.0.0.1", "port": 5432, "timeline": 2},
        {"name": "member1", "role": "sync_standby", "state": "streaming", "host": "127.0.0.1", "port": 5433,
         "timeline": 2, "lag": 0, "tags": {"noloadbalance": true}},
        {"name": "member2", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 5434,
         "timeline": 2, "lag": 0, "tags": {"nofailover": true}}
    ], "scope": "pgroute"}"#;

    fn nodes() -> Vec<(String, u16)> {
        [5432, 5433, 5434].iter().map(|p| ("127.0.0.1".to_string(), *p)).collect()
    }

    #[test]
    fn the_leader_is_the_configured_node_at_its_address() {
        let m = parse_cluster(CLUSTER).unwrap();
        assert_eq!(leader(&m, &nodes()), Ok((0, Some(2))));
        assert_eq!(read_exclusions(&m, &nodes()), vec![None, Some("noloadbalance"), None]);
        let mut more = nodes();
        more.push(("127.0.0.1".to_string(), 5499));
        assert_eq!(read_exclusions(&m, &more)[3], Some("patroni_not_member"), "not in Patroni's cluster");
        let mut stopped = m.clone();
        stopped[2].state = "stopped".into();
        assert_eq!(read_exclusions(&stopped, &nodes())[2], Some("patroni_not_member"));
        assert!(m[2].tags.nofailover);
        // Not one of ours: nobody.
        assert_eq!(leader(&m, &nodes()[1..]), Err("patroni_leader_unknown"));
    }

    #[test]
    fn no_leader_two_leaders_or_a_stopped_one_is_none() {
        let mut m = parse_cluster(CLUSTER).unwrap();
        m[0].state = "stopped".into();
        assert_eq!(leader(&m, &nodes()), Err("patroni_leader_not_running"));
        m[0].role = "replica".into();
        assert_eq!(leader(&m, &nodes()), Err("patroni_no_leader"));
        m[0].role = "leader".into();
        m[0].state = "running".into();
        m[1].role = "leader".into();
        assert_eq!(leader(&m, &nodes()), Err("patroni_no_leader"));
    }

    #[test]
    fn urls_and_answers_that_are_not_patronis_are_refused() {
        assert_eq!(
            PatroniUrl::parse("http://127.0.0.1:8008"),
            Some(PatroniUrl { host: "127.0.0.1".into(), port: 8008 })
        );
        assert_eq!(PatroniUrl::parse("http://db1:8008/"), Some(PatroniUrl { host: "db1".into(), port: 8008 }));
        for bad in ["https://x:1", "http://x", "http://:1", "http://x:port", "x:1", "http://a/b:1"] {
            assert_eq!(PatroniUrl::parse(bad), None, "{bad}");
        }
        assert!(parse_cluster("{}").is_err());
        assert!(parse_cluster("<html>").is_err());
        assert!(parse_cluster(r#"{"members": [{"name": "x"}]}"#).is_err());
    }
}
