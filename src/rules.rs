//! Where a read goes: hints, the DBA's ordered rules, money-critical tables and functions,
//! and the default. A pure function of the statement's class and text, the session's
//! identity and the configuration; it only ever chooses for reads (writes are decided
//! before it is asked, and nothing here can send one to a replica).
//!
//! Order: a `/* pgroute: route=... */` hint, then `[[routing.rules]]` in order (first
//! match wins), then `primary_tables`, then `primary_functions`, then `default_read`.

use std::sync::Arc;

use regex::Regex;

use crate::classify::{Class, Hint, QName};
use crate::config::{group_mask, CausalScope, Fallback, Routing, Target};

mod gate;
pub use gate::{Admitted, Gate};

/// The session facts rules can match on.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub application_name: &'a str,
    pub user: &'a str,
    pub database: &'a str,
}

/// Where a read goes and why (the label is shared, so routing allocates nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRoute {
    pub target: Target,
    pub reason: Arc<str>,
    /// Only replicas at most this far behind may take the read (a rule's or a hint's).
    pub max_lag: Option<std::time::Duration>,
    /// A node group and a concurrency cap (a rule's; a hint's group). Shared: a client
    /// task holds a `ReadRoute` across awaits, so it stays small.
    pub limits: Option<Arc<Limits>>,
    /// The acknowledged commits the read must see, when a hint or rule chose (else
    /// `[routing] causal_scope`).
    pub scope: Option<CausalScope>,
}

impl ReadRoute {
    /// Only the replicas of this node group (none: the default group).
    pub fn group(&self) -> Option<&Group> {
        self.limits.as_ref().and_then(|l| l.group.as_ref())
    }

    /// The cap the read runs under, if its rule has one.
    pub fn gate(&self) -> Option<&Arc<Gate>> {
        self.limits.as_ref().and_then(|l| l.gate.as_ref())
    }

    /// The rule lets its session use `[pool] reserve`.
    pub fn reserve(&self) -> bool {
        self.limits.as_ref().is_some_and(|l| l.reserve)
    }

    /// The rule's `statement_timeout` in milliseconds, if any.
    pub fn statement_timeout(&self) -> Option<std::num::NonZeroU32> {
        self.limits.as_ref().and_then(|l| l.statement_timeout)
    }
}

/// What a rule adds to where its reads go, beyond the target.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub group: Option<Group>,
    /// `max_concurrent`: the rule's places (kept across reloads that do not change them).
    pub gate: Option<Arc<Gate>>,
    /// `statement_timeout`, in milliseconds (validated: 1 to `i32::MAX`).
    pub statement_timeout: Option<std::num::NonZeroU32>,
    /// `reserve = true`: the session's connections may come from `[pool] reserve`.
    pub reserve: bool,
}

/// A node group a read is sent to, and what happens when none of its replicas can take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: Arc<str>,
    /// The group's bit among the nodes' group sets (0: no node is in it).
    pub mask: u64,
    pub fallback: Fallback,
}

/// The default group's bit: every replica that names no groups is in it.
pub const DEFAULT_MASK: u64 = 1;

struct Rule {
    label: Arc<str>,
    application_name: Option<String>,
    user: Option<String>,
    database: Option<String>,
    pattern: Option<Regex>,
    tables: Vec<QName>,
    functions: Vec<QName>,
    route: Target,
    max_lag: Option<std::time::Duration>,
    limits: Option<Arc<Limits>>,
    scope: Option<CausalScope>,
}

impl Rule {
    /// Could the rule match some statement of a session in `ctx`?
    fn may_match(&self, ctx: &Context) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.application_name, ctx.application_name) && eq(&self.user, ctx.user) && eq(&self.database, ctx.database)
    }

    fn matches(&self, class: &Class, sql: &str, ctx: &Context) -> bool {
        self.may_match(ctx)
            && self.pattern.as_ref().is_none_or(|p| p.is_match(sql))
            && (self.tables.is_empty() || any_match(&class.relations, &self.tables).is_some())
            && (self.functions.is_empty() || any_match(&class.functions, &self.functions).is_some())
    }
}

/// A configured rule's group and cap; its gate is `previous`'s when the cap is the same.
fn limits(rule: &crate::config::Rule, groups: &[String], previous: Option<&Rules>) -> Option<Arc<Limits>> {
    let group = rule.group.as_ref().map(|g| Group {
        name: Arc::from(g.get_ref().as_str()),
        mask: group_mask(groups, [g.get_ref().as_str()]),
        fallback: rule.fallback.unwrap_or_default(),
    });
    let gate = rule.max_concurrent.map(|max| {
        let name = rule.name.get_ref();
        let kept = previous
            .and_then(|p| p.rules.iter().find(|r| &r.label[RULE_PREFIX.len()..] == name.as_str()))
            .and_then(|r| r.limits.as_ref()?.gate.clone())
            .filter(|g| g.same(max, rule.queue_timeout()));
        kept.unwrap_or_else(|| Arc::new(Gate::new(name, max, rule.queue_timeout())))
    });
    let statement_timeout =
        rule.statement_timeout.and_then(|t| u32::try_from(t.as_millis()).ok()).and_then(std::num::NonZeroU32::new);
    let reserve = rule.reserve;
    (group.is_some() || gate.is_some() || statement_timeout.is_some() || reserve)
        .then(|| Arc::new(Limits { group, gate, statement_timeout, reserve }))
}

/// Rules' reasons are `rule:NAME`.
const RULE_PREFIX: &str = "rule:";

/// Does the statement read a view or call a function whose answer depends on the node?
fn is_node_local(class: &Class) -> bool {
    let system = |q: &QName| q.schema.as_deref().is_none_or(|s| s == "pg_catalog");
    class.relations.iter().any(|r| system(r) && NODE_LOCAL_VIEWS.contains(&r.name.as_str()))
        || class.functions.iter().any(|f| system(f) && NODE_LOCAL_FUNCTIONS.contains(&f.name.as_str()))
}

/// The first configured name (with its index) that one of `refs` denotes.
fn any_match(refs: &[QName], configured: &[QName]) -> Option<usize> {
    configured.iter().position(|c| refs.iter().any(|r| r.matches(c)))
}

/// System views whose rows depend on the node that answers (its sessions, locks,
/// replication state, settings).
pub const NODE_LOCAL_VIEWS: &[&str] = &[
    "pg_stat_activity",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_stat_replication",
    "pg_stat_wal_receiver",
    "pg_replication_slots",
    "pg_stat_subscription",
    "pg_cursors",
    "pg_prepared_statements",
    "pg_settings",
    "pg_stat_ssl",
    "pg_stat_gssapi",
    "pg_backend_memory_contexts",
    "pg_stat_progress_vacuum",
    "pg_stat_progress_analyze",
    "pg_stat_progress_create_index",
    "pg_stat_progress_cluster",
    "pg_stat_progress_basebackup",
    "pg_stat_progress_copy",
];

/// Functions whose answer depends on the node: whether it is in recovery, and its WAL
/// positions. (`inet_server_port()` and `pg_backend_pid()` are left alone: they name the
/// server that answered, which is what a client asking them wants to know.)
pub const NODE_LOCAL_FUNCTIONS: &[&str] = &[
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
];

pub struct Rules {
    default_read: Target,
    /// `node_local_to_primary`: the label for such reads, when on.
    node_local: Option<Arc<str>>,
    default_label: Arc<str>,
    hint_label: Arc<str>,
    read_only_block_label: Arc<str>,
    primary_tables: Vec<QName>,
    primary_table_labels: Vec<Arc<str>>,
    primary_functions: Vec<QName>,
    primary_function_labels: Vec<Arc<str>>,
    /// Functions whose volatility need not be looked up: declared read-only (matched
    /// exactly) or as writes (the classifier makes their reads writes).
    read_only_functions: Vec<QName>,
    write_functions: Vec<QName>,
    rules: Vec<Rule>,
    /// Some rule matches statement text (`pattern`).
    reads_text: bool,
    /// The node groups by bit (`Config::groups`), for hints that name one.
    groups: Vec<String>,
}

impl Rules {
    /// Compiles the `[routing]` section against the node groups (`Config::groups`).
    /// Patterns and group names were validated with the configuration. A rule that keeps
    /// its name and cap keeps its gate from `previous` (a reload), with the places taken.
    pub fn from_config(r: &Routing, groups: &[String], previous: Option<&Rules>) -> Rules {
        let names = |v: &[String]| v.iter().map(|n| QName::parse(n)).collect::<Vec<_>>();
        let labels = |prefix: &str, v: &[String]| v.iter().map(|n| Arc::from(format!("{prefix}:{n}"))).collect();
        Rules {
            default_read: r.default_read,
            default_label: Arc::from("default_read"),
            node_local: r.node_local_to_primary.then(|| Arc::from("node_local")),
            hint_label: Arc::from("hint"),
            read_only_block_label: Arc::from("read_only_block"),
            primary_tables: names(&r.primary_tables),
            primary_table_labels: labels("primary_tables", &r.primary_tables),
            primary_functions: names(&r.primary_functions),
            primary_function_labels: labels("primary_functions", &r.primary_functions),
            read_only_functions: names(&r.read_only_functions),
            write_functions: names(&r.write_functions),
            rules: r
                .rules
                .iter()
                .map(|rule| Rule {
                    label: Arc::from(format!("{RULE_PREFIX}{}", rule.name.get_ref())),
                    application_name: rule.application_name.clone(),
                    user: rule.user.clone(),
                    database: rule.database.clone(),
                    pattern: rule.pattern.as_ref().and_then(|p| crate::config::compile_pattern(p.get_ref()).ok()),
                    tables: names(&rule.tables),
                    functions: names(&rule.functions),
                    route: rule.route,
                    max_lag: rule.max_lag,
                    limits: limits(rule, groups, previous),
                    scope: rule.causal_scope,
                })
                .collect(),
            reads_text: r.rules.iter().any(|rule| rule.pattern.is_some()),
            groups: groups.to_vec(),
        }
    }

    /// Where a read goes: the statement's hint (route, and `max_lag` over any rule's),
    /// then the rules. The session and `pgroute explain` both place reads through here.
    /// A hint's `group=` (with `route=replica` or no route) sends the read to that group,
    /// with the hint's `fallback=` (default `error`); a group no node is in has no replica.
    /// Whether `route_read` looks at the statement's text (a rule has a `pattern`);
    /// otherwise any text, even none, places a read the same.
    pub fn reads_text(&self) -> bool {
        self.reads_text
    }

    pub fn route_read(&self, class: &Class, sql: &str, hint: &Hint, ctx: &Context) -> ReadRoute {
        let grouped = hint.group().filter(|_| hint.route != Some(Target::Primary));
        let route = if grouped.is_some() { Some(Target::Replica) } else { hint.route };
        let mut read = self.route_unhinted(class, sql, route, ctx);
        if let Some((name, fallback)) = grouped {
            let group = Group {
                name: Arc::from(name),
                mask: group_mask(&self.groups, [name]),
                fallback: fallback.unwrap_or_default(),
            };
            read.limits = Some(Arc::new(Limits { group: Some(group), ..Limits::default() }));
        }
        if let Some(lag) = hint.max_lag() {
            read.max_lag = Some(lag);
        }
        if hint.scope.is_some() {
            read.scope = hint.scope;
        }
        read
    }

    fn route_unhinted(&self, class: &Class, sql: &str, hint: Option<Target>, ctx: &Context) -> ReadRoute {
        let to = |target: Target, reason: &Arc<str>| ReadRoute {
            target,
            reason: reason.clone(),
            max_lag: None,
            limits: None,
            scope: None,
        };
        if let Some(target) = hint {
            return to(target, &self.hint_label);
        }
        if let Some(rule) = self.rules.iter().find(|r| r.matches(class, sql, ctx)) {
            let (max_lag, limits, scope) = (rule.max_lag, rule.limits.clone(), rule.scope);
            return ReadRoute { max_lag, limits, scope, ..to(rule.route, &rule.label) };
        }
        if class.begins == Some(true) {
            // A read-only block runs where it begins, whatever its statements read later:
            // where a money table, a money function or a primary rule could claim one of
            // them, the block begins on the primary; a rule's max_lag bounds its replica.
            let primary = !self.primary_tables.is_empty()
                || !self.primary_functions.is_empty()
                || self.rules.iter().any(|r| r.may_match(ctx) && r.route == Target::Primary);
            if primary {
                return to(Target::Primary, &self.read_only_block_label);
            }
            let max_lag = self.rules.iter().filter(|r| r.may_match(ctx)).filter_map(|r| r.max_lag).min();
            return ReadRoute { max_lag, ..to(self.default_read, &self.default_label) };
        }
        if let Some(label) = self.node_local.as_ref().filter(|_| is_node_local(class)) {
            return to(Target::Primary, label);
        }
        if let Some(i) = any_match(&class.relations, &self.primary_tables) {
            return to(Target::Primary, &self.primary_table_labels[i]);
        }
        if let Some(i) = any_match(&class.functions, &self.primary_functions) {
            return to(Target::Primary, &self.primary_function_labels[i]);
        }
        to(self.default_read, &self.default_label)
    }

    /// Functions in `class` whose volatility must be looked up before the read may go to a
    /// replica: every call (built-in ones too: the server's catalog says which are
    /// volatile) except those declared by the DBA as read-only, named exactly as declared
    /// (`public.f` is not `audit.f`, and an unqualified name only an unqualified call), or
    /// as writes. Our own write and pin lists never reach here: such a class is a write.
    pub fn unknown_functions<'a>(&self, class: &'a Class) -> impl Iterator<Item = &'a QName> + use<'a, '_> {
        class.functions.iter().filter(move |f| {
            !self.read_only_functions.iter().any(|d| *f == d) && !self.write_functions.iter().any(|d| f.matches(d))
        })
    }
}

#[cfg(test)]
mod tests;
