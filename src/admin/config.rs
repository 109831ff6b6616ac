//! `SHOW CONFIG`: the configuration in force (after the last reload), one row per setting,
//! passwords hidden.

use super::rows::{text, Reply, Rows};
use super::Console;

pub fn run(c: &Console) -> Reply {
    let cfg = c.shared.config();
    let mut rows = Rows::new(&["key", "value"]);
    let mut put = |k: &str, v: String| rows.push(vec![text(k), Some(v)]);
    let l = &cfg.listen;
    put("listen.address", l.address.clone());
    put("listen.max_message_size", l.max_message_size.to_string());
    put("listen.max_startup_packet", l.max_startup_packet.to_string());
    put("listen.login_timeout", format!("{:?}", l.login_timeout));
    put("listen.max_client_conn", l.max_client_conn.to_string());
    put("listen.max_logins", l.max_logins.to_string());
    let limit = |v: Option<usize>| v.map_or("unlimited".to_string(), |n| n.to_string());
    put("listen.max_user_client_conn", limit(l.max_user_client_conn));
    put("listen.max_db_client_conn", limit(l.max_db_client_conn));
    put("listen.shutdown_timeout", format!("{:?}", l.shutdown_timeout));
    let p = &cfg.pool;
    put("pool.mode", format!("{:?}", p.mode).to_lowercase());
    put("pool.size", p.size.to_string());
    put("pool.checkout_timeout", format!("{:?}", p.checkout_timeout));
    put("pool.connect_timeout", format!("{:?}", p.connect_timeout));
    let r = &cfg.routing;
    put("routing.cache_size", r.cache_size.to_string());
    put("routing.default_read", format!("{:?}", r.default_read).to_lowercase());
    put("routing.primary_tables", r.primary_tables.join(","));
    put("routing.primary_functions", r.primary_functions.join(","));
    put("routing.write_functions", r.write_functions.join(","));
    put("routing.read_only_functions", r.read_only_functions.join(","));
    put("routing.function_cache_ttl", format!("{:?}", r.function_cache_ttl));
    put("routing.rules", r.rules.len().to_string());
    put("routing.balance", format!("{:?}", r.balance));
    put("routing.causal_scope", r.causal_scope.label().into());
    put("routing.causal_wait", r.causal_wait.map_or("off".into(), |w| format!("{w:?}")));
    put("routing.node_local_to_primary", r.node_local_to_primary.to_string());
    put("routing.key_map_size", r.key_map_size.to_string());
    put("routing.key_ttl", format!("{:?}", r.key_ttl));
    let h = &cfg.health;
    put("health.interval", format!("{:?}", h.interval));
    put("health.max_sample_age", format!("{:?}", h.max_sample_age()));
    put("health.max_replica_lag", format!("{:?}", h.max_replica_lag));
    put("health.max_replica_lag_bytes", h.max_replica_lag_bytes.to_string());
    put("health.alert_lag", format!("{:?}", h.alert_lag));
    put("health.failure_threshold", h.failure_threshold.to_string());
    put("health.recovery_threshold", h.recovery_threshold.to_string());
    put("health.when_no_replica", format!("{:?}", h.when_no_replica).to_lowercase());
    put("health.primary_wait", format!("{:?}", h.primary_wait));
    put("admin.metrics_address", cfg.admin.metrics_address.clone().unwrap_or_default());
    let admins: Vec<&str> = cfg.admin.users.iter().map(|u| u.get_ref().as_str()).collect();
    put("admin.users", admins.join(","));
    for n in &cfg.nodes {
        let role = format!("{:?}", n.role).to_lowercase();
        put(&format!("nodes.{}", n.name.get_ref()), format!("{}:{} role={role} weight={}", n.host, n.port, n.weight));
    }
    for u in &cfg.users {
        put(&format!("users.{}", u.name.get_ref()), format!("auth={:?}", u.auth).to_lowercase());
    }
    Reply::Rows(rows)
}
