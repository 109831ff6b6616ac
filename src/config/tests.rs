use super::*;

const MINIMAL: &str = r#"
[[nodes]]
name = "pg0"
host = "127.0.0.1"
port = 5432
role = "primary"

[[users]]
name = "app"
password = "secret"
"#;

fn err(text: &str) -> String {
    Config::parse(text, "proxy.toml").unwrap_err().0
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::parse(MINIMAL, "proxy.toml").unwrap();
    assert_eq!(c.listen.address, "127.0.0.1:6432");
    assert_eq!(c.pool.mode, PoolMode::Transaction);
    assert_eq!(c.pool.size, 20);
    assert_eq!(c.pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(c.listen.max_message_size, 64 * 1024 * 1024);
    assert_eq!(c.listen.max_startup_packet, 10_000);
    assert_eq!(c.nodes[0].weight, 1);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    assert_eq!(c.user("app").and_then(|u| u.password()).as_deref(), Some("secret"));
    assert_eq!(c.routing.causal_scope, CausalScope::Instance, "reads see every acknowledged commit by default");
    assert_eq!(c.routing.causal_wait, Some(Duration::from_millis(5)));
}

#[test]
fn causal_scopes_and_the_keys_they_replaced() {
    let routing = |lines: &str| format!("[routing]\n{lines}\n{MINIMAL}");
    for (text, scope) in
        [("none", CausalScope::None), ("session", CausalScope::Session), ("cluster", CausalScope::Cluster)]
    {
        let c = Config::parse(&routing(&format!("causal_scope = \"{text}\"")), "proxy.toml").unwrap();
        assert_eq!(c.routing.causal_scope, scope);
    }
    let e = err(&routing("causal_scope = \"everything\""));
    assert!(e.starts_with("proxy.toml:2:"), "{e}");
    for (key, says) in [
        ("read_your_writes = \"lsn\"", "causal_scope replaced it"),
        ("sticky_window = \"2s\"", "window mode it served is gone"),
        ("key_scope = \"cluster\"", "causal_scope = \"cluster\""),
    ] {
        let e = err(&routing(key));
        assert!(e.starts_with("proxy.toml:2:1: ") && e.contains("is no longer a key") && e.contains(says), "{e}");
    }
    let rule = "[[routing.rules]]\nname = \"office\"\nroute = \"replica\"\ncausal_scope = \"none\"\n";
    let c = Config::parse(&format!("{rule}{MINIMAL}"), "proxy.toml").unwrap();
    assert_eq!(c.routing.rules[0].causal_scope, Some(CausalScope::None));
    let e = err(&format!("{}{MINIMAL}", rule.replace("\"replica\"", "\"primary\"")));
    assert!(e.contains("causal_scope needs route = \"replica\""), "{e}");
}

#[test]
fn unknown_key_is_rejected_with_line_and_column() {
    let text = format!("{MINIMAL}\n[pool]\nsize = 3\nmod = \"session\"\n");
    let e = err(&text);
    assert!(e.starts_with("proxy.toml:14:1: "), "{e}");
    assert!(e.contains("unknown field `mod`"), "{e}");
}

#[test]
fn wrong_type_and_bad_duration_point_at_the_value() {
    let e = err(&format!("[pool]\nsize = \"big\"\n{MINIMAL}"));
    assert!(e.starts_with("proxy.toml:2:8: "), "{e}");
    let e = err(&format!("[pool]\ncheckout_timeout = \"5 parsecs\"\n{MINIMAL}"));
    assert!(e.starts_with("proxy.toml:2:20: ") && e.contains("unknown duration unit"), "{e}");
}

#[test]
fn duplicate_nodes_and_missing_or_double_primary_are_rejected() {
    let dup = format!("{MINIMAL}\n[[nodes]]\nname = \"pg0\"\nhost = \"h\"\nport = 1\nrole = \"replica\"\n");
    let e = err(&dup);
    assert!(
        e.starts_with("proxy.toml:13:8: ") && e.contains("duplicate node name \"pg0\" (first defined on line 3)"),
        "{e}"
    );
    let no_primary = MINIMAL.replace("\"primary\"", "\"replica\"");
    assert!(err(&no_primary).contains("no node has role = \"primary\""));
    let two = format!("{MINIMAL}\n[[nodes]]\nname = \"pg1\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n");
    assert!(err(&two).contains("more than one node"));
}

#[test]
fn users_need_a_password_source_unless_trusted() {
    let text = MINIMAL.replace("password = \"secret\"", "");
    assert!(err(&text).contains("needs password, password_env or scram_verifier"));
    let trust = MINIMAL.replace("password = \"secret\"", "auth = \"trust\"");
    assert!(Config::parse(&trust, "p").is_ok());
    let env = MINIMAL.replace("password = \"secret\"", "password_env = \"PGROUTE_TEST_PW_UNSET_VAR\"");
    let c = Config::parse(&env, "p").unwrap();
    assert_eq!(c.users[0].password(), None);
}

#[test]
fn a_scram_verifier_must_parse_stand_alone_and_come_with_scram_auth() {
    const V: &str = "SCRAM-SHA-256$4096:/C5VphuGa4iUgVk9I4N13w==$+qoOL082EbpUPYWWQHCk+tLm52eAkIjmyy4HMlefK7E=:5LeuQb2wCnFgLsAMd7IZjWqHYmhrKh4Z4clmKN64Oyw=";
    let with = |line: &str| MINIMAL.replace("password = \"secret\"", line);
    let c = Config::parse(&with(&format!("scram_verifier = \"{V}\"")), "p").unwrap();
    assert!(c.users[0].verifier().is_some());
    assert!(!format!("{:?}", c.users[0]).contains("C5Vph"), "Debug hides the verifier");
    assert!(
        err(&with("scram_verifier = \"md58ccdb6800942e2a0b8dbba795909e1ea\"")).contains("not a SCRAM-SHA-256 verifier")
    );
    assert!(err(&with(&format!("scram_verifier = \"{V}\"\npassword = \"x\""))).contains("give one of"));
    assert!(err(&with(&format!("scram_verifier = \"{V}\"\nauth = \"md5\""))).contains("needs auth = \"scram-sha-256\""));
}

#[test]
fn the_repository_example_config_is_valid() {
    let c = Config::parse(include_str!("../../proxy.toml"), "proxy.toml").unwrap();
    assert_eq!(c.listen.address, "127.0.0.1:6432");
    assert_eq!(c.nodes.iter().filter(|n| n.role == Role::Primary).count(), 1);
}

#[test]
fn debug_output_never_shows_a_password() {
    let c = Config::parse(MINIMAL, "proxy.toml").unwrap();
    let printed = format!("{c:?}");
    assert!(!printed.contains("secret"), "{printed}");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn auto_roles_replace_a_static_primary() {
    let auto = MINIMAL.replace("\"primary\"", "\"auto\"");
    assert!(Config::parse(&auto, "p").is_ok());
    let mixed = format!("{MINIMAL}\n[[nodes]]\nname = \"pg1\"\nhost = \"h\"\nport = 1\nrole = \"auto\"\n");
    assert!(err(&mixed).contains("cannot be mixed"));
}

#[test]
fn a_pattern_too_large_to_compile_quickly_is_refused() {
    assert!(compile_pattern("^SELECT .* FROM balances").is_ok());
    let e = compile_pattern("(a{1000}){1000}").unwrap_err();
    assert!(e.contains("size limit"), "{e}");
    assert!(compile_pattern(&"a".repeat(2000)).unwrap_err().contains("longer than"));
}

#[test]
fn a_patroni_source_needs_urls_and_auto_nodes() {
    let auto = MINIMAL.replace("role = \"primary\"", "role = \"auto\"");
    let c = Config::parse(
        &format!("[topology]\nsource = \"patroni\"\npatroni_urls = [\"http://127.0.0.1:8008\"]\n{auto}"),
        "proxy.toml",
    )
    .unwrap();
    assert_eq!(c.topology.source, Source::Patroni);
    assert_eq!(Config::parse(MINIMAL, "proxy.toml").unwrap().topology.source, Source::Static);
    let e = err(&format!("[topology]\nsource = \"patroni\"\n{auto}"));
    assert!(e.contains("needs patroni_urls"), "{e}");
    let e = err(&format!("[topology]\nsource = \"patroni\"\npatroni_urls = [\"https://x:1\"]\n{auto}"));
    assert!(e.contains("is not http://host:port"), "{e}");
    let e = err(&format!("[topology]\nsource = \"patroni\"\npatroni_urls = [\"http://x:1\"]\n{MINIMAL}"));
    assert!(e.contains("every node has role = \"auto\""), "{e}");
    let e = err(&format!("[topology]\nsource = \"consul\"\n{auto}"));
    assert!(e.contains("proxy.toml:2:"), "{e}");
    let e = err(&format!("[topology]\nleader = \"x\"\n{auto}"));
    assert!(e.contains("unknown field") && e.contains("proxy.toml:2:"), "{e}");
    // With Patroni, the nodes may all come from its member list.
    let users = "[[users]]\nname = \"app\"\npassword = \"secret\"\n";
    let patroni = "[topology]\nsource = \"patroni\"\npatroni_urls = [\"http://127.0.0.1:8008\"]\n";
    let c = Config::parse(&format!("{patroni}{users}"), "proxy.toml").unwrap();
    assert!(c.nodes.is_empty());
    assert_eq!(c.topology.member_node("m1", "h", 5).role, Role::Auto);
    assert!(err(users).contains("no [[nodes]] configured"));
    let e = err(&format!("{patroni}member_tls = \"verify-full\"\n{users}"));
    assert!(e.contains("member_tls_ca_file"), "{e}");
}

#[test]
fn groups_are_named_by_nodes_and_rules_name_only_those() {
    let nodes = "[[nodes]]\nname = \"p\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n\
                 [[nodes]]\nname = \"a\"\nhost = \"h\"\nport = 2\nrole = \"replica\"\ngroups = [\"analytics\", \"default\"]\n\
                 [[users]]\nname = \"app\"\npassword = \"x\"\n";
    let rule = |extra: &str| format!("[[routing.rules]]\nname = \"r\"\nroute = \"replica\"\n{extra}{nodes}");
    let c = Config::parse(&rule("group = \"analytics\"\nfallback = \"primary\"\n"), "proxy.toml").unwrap();
    assert_eq!(c.groups(), ["default", "analytics"]);
    assert_eq!(group_mask(&c.groups(), c.nodes[1].group_names()), 0b11);
    assert_eq!(group_mask(&c.groups(), c.nodes[0].group_names()), 0b01, "no groups: the default one");
    assert_eq!(c.routing.rules[0].fallback, Some(Fallback::Primary));
    // An unknown group is pointed at: line 4 is the rule's group.
    let e = err(&rule("group = \"analytcs\"\n"));
    assert!(e.contains("proxy.toml:4:") && e.contains("unknown group \"analytcs\""), "{e}");
    let e = err(&rule("fallback = \"default\"\n"));
    assert!(e.contains("fallback needs a group"), "{e}");
    let e = err(&format!("[[routing.rules]]\nname = \"r\"\nroute = \"primary\"\ngroup = \"analytics\"\n{nodes}"));
    assert!(e.contains("group needs route = \"replica\""), "{e}");
    let e = err(&rule("group = \"analytics\"\nfallback = \"elsewhere\"\n"));
    assert!(e.contains("proxy.toml:5:"), "{e}");
    let e = err(&nodes.replace("\"analytics\", ", "\"bad name\", "));
    assert!(e.contains("group name \"bad name\""), "{e}");
    // Concurrency caps.
    let c = Config::parse(&rule("max_concurrent = 2\nqueue_timeout = \"250ms\"\n"), "proxy.toml").unwrap();
    assert_eq!(
        (c.routing.rules[0].max_concurrent, c.routing.rules[0].queue_timeout()),
        (Some(2), Duration::from_millis(250))
    );
    let c = Config::parse(&rule("max_concurrent = 2\n"), "proxy.toml").unwrap();
    assert_eq!(c.routing.rules[0].queue_timeout(), Duration::from_secs(5), "the documented default");
    assert!(err(&rule("max_concurrent = 0\n")).contains("max_concurrent must be above zero"));
    assert!(err(&rule("queue_timeout = \"1s\"\n")).contains("queue_timeout needs max_concurrent"));
    let e = err(&rule("max_concurrent = -1\n"));
    assert!(e.contains("proxy.toml:4:"), "{e}");
    let c = Config::parse(&rule("statement_timeout = \"30s\"\n"), "proxy.toml").unwrap();
    assert_eq!(c.routing.rules[0].statement_timeout, Some(Duration::from_secs(30)));
    assert!(err(&rule("statement_timeout = \"0s\"\n")).contains("statement_timeout must be between"));
    // A node's connections on loan, and the reserve.
    let pool = |p: &str| format!("[pool]\n{p}{}", rule("reserve = true\n"));
    let c = Config::parse(&pool("node_limit = 10\nreserve = 2\n"), "proxy.toml").unwrap();
    assert_eq!((c.pool.node_limit, c.pool.reserve, c.routing.rules[0].reserve), (Some(10), 2, true));
    assert!(err(&pool("node_limit = 2\nreserve = 2\n")).contains("reserve must be below node_limit"));
    assert!(err(&pool("reserve = 2\n")).contains("reserve needs node_limit"));
    assert!(err(&pool("node_limit = 0\n")).contains("node_limit must be above zero"));
}
