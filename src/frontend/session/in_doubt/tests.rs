use super::*;

const L: u64 = 0x3000_0000;

fn asked(replayed: Option<u64>) -> Asked {
    Asked { xid: Some(1234), insert: L, replayed, timeline: Some(1) }
}

fn found(timeline: u32, replayed: Option<u64>, status: Status) -> Found {
    Found { timeline: Some(timeline), replayed, status }
}

#[test]
fn the_same_primary_without_a_recovery_is_believed() {
    let a = asked(None);
    assert_eq!(judge(&a, &found(1, None, Status::Committed)), Some(Verdict::Committed));
    assert!(matches!(judge(&a, &found(1, None, Status::Aborted)), Some(Verdict::NotCommitted(_))));
    assert!(matches!(judge(&a, &found(1, None, Status::Future)), Some(Verdict::NotCommitted(_))));
    assert!(matches!(judge(&a, &found(1, None, Status::Forgotten)), Some(Verdict::Unknown(_))));
    assert_eq!(judge(&a, &found(1, None, Status::InProgress)), None, "still in progress: ask again");
    // Started from a recovery before the ask, and none since: the same end both times.
    let a = asked(Some(0x100));
    assert_eq!(judge(&a, &found(1, Some(0x100), Status::Committed)), Some(Verdict::Committed));
}

#[test]
fn a_crash_restart_is_believed_only_past_the_transactions_records() {
    // Crash recovery replayed past the ask's insert position: the id is this transaction's.
    let a = asked(None);
    assert_eq!(judge(&a, &found(1, Some(L + 10), Status::Committed)), Some(Verdict::Committed));
    assert_eq!(judge(&a, &found(1, Some(L), Status::Committed)), Some(Verdict::Committed));
    // The recovered history ends before them: the commit record (after them) is lost,
    // whatever a later transaction with the same id did.
    assert!(matches!(judge(&a, &found(1, Some(L - 1), Status::Committed)), Some(Verdict::NotCommitted(_))));
    // An earlier recovery's end does not count as a new one's.
    let a = asked(Some(0x100));
    assert!(matches!(judge(&a, &found(1, Some(0x200), Status::Committed)), Some(Verdict::NotCommitted(_))));
}

#[test]
fn a_promoted_standby_is_believed_only_if_it_replayed_past_the_transactions_records() {
    let a = asked(None);
    assert_eq!(judge(&a, &found(2, Some(L + 1), Status::Committed)), Some(Verdict::Committed));
    assert!(matches!(judge(&a, &found(2, Some(L + 1), Status::Aborted)), Some(Verdict::NotCommitted(_))));
    assert!(matches!(judge(&a, &found(2, Some(L - 1), Status::Committed)), Some(Verdict::NotCommitted(_))));
    assert!(matches!(judge(&a, &found(2, Some(L - 1), Status::Future)), Some(Verdict::NotCommitted(_))));
    // Where its history forked is unknown (restarted since its promotion): no guess.
    assert!(matches!(judge(&a, &found(2, None, Status::Committed)), Some(Verdict::Unknown(_))));
    // An older timeline, or none known: no guess.
    let a = Asked { timeline: Some(3), ..asked(None) };
    assert!(matches!(judge(&a, &found(2, Some(L + 1), Status::Committed)), Some(Verdict::Unknown(_))));
    let a = Asked { timeline: None, ..asked(None) };
    assert!(matches!(judge(&a, &found(1, None, Status::Committed)), Some(Verdict::Unknown(_))));
}

#[test]
fn a_transaction_without_an_id_wrote_nothing() {
    let a = Asked { xid: None, ..asked(None) };
    assert_eq!(judge(&a, &found(2, None, Status::Forgotten)), Some(Verdict::Committed));
}

fn row(cols: &[Option<&str>]) -> Vec<u8> {
    let mut b = (cols.len() as i16).to_be_bytes().to_vec();
    for c in cols {
        match c {
            Some(c) => {
                b.extend_from_slice(&(c.len() as i32).to_be_bytes());
                b.extend_from_slice(c.as_bytes());
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b
}

#[test]
fn the_ask_row_is_read() {
    let a = parse_asked(&row(&[Some("1234"), Some("0/30000000"), None]), Some(1));
    assert_eq!(a, Some(asked(None)));
    let a = parse_asked(&row(&[None, Some("0/30000000"), Some("0/100")]), Some(1));
    assert_eq!(a, Some(Asked { xid: None, insert: L, replayed: Some(0x100), timeline: Some(1) }));
    assert_eq!(parse_asked(&row(&[Some("x"), Some("0/30000000"), None]), Some(1)), None);
    assert_eq!(parse_asked(&row(&[Some("1"), None, None]), Some(1)), None);
    assert_eq!(parse_asked(&row(&[Some("1"), Some("0/1")]), Some(1)), None);
    assert_eq!(parse_asked(b"\x00\x03\xff", Some(1)), None);
    assert_eq!(parse_status(Some("committed")), Status::Committed);
    assert_eq!(parse_status(Some("aborted")), Status::Aborted);
    assert_eq!(parse_status(Some("in progress")), Status::InProgress);
    assert_eq!(parse_status(None), Status::Forgotten);
}

fn replies(tags: &[u8], replied: usize) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut out = BytesMut::new();
    commit_replies(tags, replied, &mut out)?;
    let mut frames = Vec::new();
    while let Ok(Some(f)) = protocol::split_frame(&mut out, 1 << 20) {
        frames.push((f.tag(), f.body().to_vec()));
    }
    Some(frames)
}

#[test]
fn a_commits_replies_are_what_a_server_sends() {
    let cc = (b'C', b"COMMIT\0".to_vec());
    let z = (b'Z', b"I".to_vec());
    assert_eq!(replies(&[tag::QUERY], 0), Some(vec![cc.clone(), z.clone()]));
    assert_eq!(replies(&[tag::QUERY], 1), Some(vec![z.clone()]), "CommandComplete came before the loss");
    let extended = [tag::PARSE, tag::BIND, DESCRIBE_PORTAL, tag::EXECUTE, tag::SYNC];
    assert_eq!(
        replies(&extended, 0),
        Some(vec![(b'1', vec![]), (b'2', vec![]), (b'n', vec![]), cc.clone(), z.clone()])
    );
    assert_eq!(replies(&extended, 4), Some(vec![z.clone()]));
    let described = [DESCRIBE_STATEMENT, tag::SYNC];
    assert_eq!(replies(&described, 0), Some(vec![(b't', vec![0, 0]), (b'n', vec![]), z.clone()]));
    assert_eq!(replies(&[tag::BIND, tag::COPY_DATA, tag::SYNC], 0), None);
}
