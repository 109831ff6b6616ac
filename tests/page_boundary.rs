//! A commit that ends exactly at a WAL page boundary: `pg_current_wal_insert_lsn()` then
//! names the first byte after the next page's header, a position no replica reports until
//! more WAL follows (replay positions are record ends). pgroute maps it back to the
//! boundary, so a read after that commit reaches a replica at once instead of waiting for
//! unrelated WAL (seconds on a quiet server) and falling back to the primary. Own cluster:
//! nothing else may write WAL while the commit is steered onto the boundary.

mod common;

use common::wire::Wire;
use common::{cluster, proxy_with, table};

const PAGE: u64 = 8192;

async fn insert_lsn(direct: &tokio_postgres::Client) -> u64 {
    let v: String = direct.query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::text", &[]).await.unwrap().get(0);
    v.parse().unwrap()
}

/// The LSN of the `pgroute.commit_lsn` a reply carried.
fn reported(msgs: &[common::wire::Msg]) -> u64 {
    let token = common::wire::commit_token(msgs).expect("a commit position");
    let (_, lsn) = token.split_once('/').expect("timeline/lsn");
    u64::from_str_radix(lsn, 16).expect("hex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_ending_at_a_page_boundary_is_read_on_a_replica() {
    let c = cluster();
    let t = table("boundary");
    let direct = c.direct(0).await;
    direct.batch_execute(&format!("CREATE TABLE {t} (id int); GRANT ALL ON {t} TO app")).await.unwrap();
    let p = proxy_with("[routing]\ncausal_scope = \"session\"\ncausal_wait = \"500ms\"\n").await;
    let (mut writer, _) = Wire::connect(p.port, "app", "app", &[("database", "app")]).await;
    let reader = p.client().await;
    let insert = format!("INSERT INTO {t} VALUES (1)");
    // The WAL one such insert and its commit take.
    writer.query(insert.as_bytes()).await;
    let before = insert_lsn(&direct).await;
    writer.query(insert.as_bytes()).await;
    let mut size = insert_lsn(&direct).await - before;

    let mut landed = false;
    for _ in 0..20 {
        // Pad with a logical message (52 bytes + payload, 8-aligned) so that the insert
        // and its commit end exactly at the end of the page.
        let gap = PAGE - insert_lsn(&direct).await % PAGE;
        let pad = if gap >= size + 56 { gap - size - 52 } else { gap + 200 };
        direct.batch_execute(&format!("SELECT pg_logical_emit_message(false, 'p', repeat('x', {pad}))")).await.unwrap();
        if pad > gap {
            continue;
        }
        let replies = writer.query(insert.as_bytes()).await;
        // Off by a few bytes (the records right after the pad may differ in size from
        // the ones measured): correct the estimate and try again.
        match insert_lsn(&direct).await % PAGE {
            24 => {}
            over @ 25..=1024 => {
                size += over - 24;
                continue;
            }
            short if short > PAGE - 1024 => {
                size -= PAGE - short;
                continue;
            }
            _ => continue,
        }
        let position = reported(&replies);
        assert_eq!(position % PAGE, 0, "the position reported is the page boundary, not past the header");
        let token = format!("1/{position:X}");
        let sql = format!("/* pgroute: after={token} */ SELECT inet_server_port(), count(*) FROM {t}");
        let row = reader.query_one(&sql, &[]).await.unwrap();
        let port = row.get::<_, i32>(0) as u16;
        assert_ne!(port, c.primary_port, "the read after the commit waited for a replica and got one");
        landed = true;
        break;
    }
    assert!(landed, "no commit could be steered onto a page boundary");
    writer.terminate().await;
}
