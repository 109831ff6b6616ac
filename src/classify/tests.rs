//! Classifier behaviour beyond the route table in `rules/tests.rs`: session effects,
//! settings, the cache.

use super::*;

#[test]
fn begin_and_pins_are_reported() {
    let c = Classifier::new(10);
    assert_eq!(c.classify("BEGIN READ ONLY").begins, Some(true));
    assert_eq!(c.classify("START TRANSACTION").begins, Some(false));
    assert_eq!(c.classify("SELECT 1").begins, None);
    assert_eq!(c.classify("LISTEN x").pins.as_deref(), Some("listen"));
    assert_eq!(c.classify("SELECT pg_advisory_lock(1)").pins.as_deref(), Some("function pg_advisory_lock"));
    assert_eq!(c.classify("SELECT pg_advisory_xact_lock(1)").pins, None);
}

#[test]
fn settings_changes_carry_the_literal_text_and_skip_the_cache() {
    let c = Classifier::new(10);
    let a = c.classify("SET search_path = 'a'");
    let b = c.classify("SET search_path = 'b'");
    assert_eq!(
        a.settings,
        vec![SettingChange::Set { name: "search_path".into(), statement: "SET search_path = 'a'".into() }]
    );
    assert_eq!(
        b.settings,
        vec![SettingChange::Set { name: "search_path".into(), statement: "SET search_path = 'b'".into() }]
    );
    assert_eq!(
        c.classify("SET SESSION statement_timeout TO 5").settings[0],
        SettingChange::Set { name: "statement_timeout".into(), statement: "SET SESSION statement_timeout TO 5".into() }
    );
    assert_eq!(
        c.classify("set myapp.tenant = 7").settings[0],
        SettingChange::Set { name: "myapp.tenant".into(), statement: "set myapp.tenant = 7".into() }
    );
    assert_eq!(c.classify("RESET ALL").settings, vec![SettingChange::ResetAll]);
    assert_eq!(c.classify("DISCARD ALL").settings, vec![SettingChange::ResetAll]);
    assert_eq!(c.classify("reset Work_Mem").settings, vec![SettingChange::Reset { name: "work_mem".into() }]);
    assert!(c.classify("SET LOCAL work_mem = 1").settings.is_empty());
    assert_eq!(c.classify("SELECT 1; SET a.b = 1").settings.len(), 1);
    assert!(c.cache().is_empty(), "session statements must not be cached");
}

#[test]
fn literal_varying_queries_share_one_cache_entry() {
    let c = Classifier::new(10);
    for aid in [1, 42, 99999] {
        c.classify(&format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"));
    }
    assert_eq!(c.cache().len(), 1);
    assert_eq!(c.cache().stats(), (2, 1));
}

#[test]
fn a_parse_failure_never_inherits_an_earlier_route() {
    let c = Classifier::new(10);
    assert_eq!(c.classify("SELECT 1").access, Access::Read);
    assert_eq!(c.classify("SELECT 1 FROM t WHERE (x = 1 INSERT").reason, "parse_error");
    assert_eq!(c.classify("SELECT 1").access, Access::Read);
}

#[test]
fn full_cache_starts_over_instead_of_growing() {
    let c = Classifier::new(3);
    for t in ["a", "b", "c", "d", "e"] {
        c.classify(&format!("SELECT * FROM {t}"));
    }
    assert!(c.cache().len() <= 3);
}

#[test]
fn only_data_writes_make_a_session_causal() {
    let c = Classifier::new(10);
    for sql in ["INSERT INTO t VALUES (1)", "SELECT nextval('s')", "SELECT pg_advisory_unlock_all(); DELETE FROM t"] {
        assert!(c.classify(sql).writes_data, "{sql}");
    }
    for sql in ["BEGIN", "SELECT 1", "LISTEN x", "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"] {
        assert!(!c.classify(sql).writes_data, "{sql}");
    }
}
