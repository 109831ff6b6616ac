//! The console's commands, parsed from one simple Query: a pure function, table-tested.
//! Keywords are case-insensitive; a trailing semicolon is allowed.

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Explain(String),
    Reload,
    /// `PAUSE` (every database) or `PAUSE db`.
    Pause(Option<String>),
    Resume(Option<String>),
    Drain(String),
    Undrain(String),
    Unfence(String),
    Kill(i32),
    Shutdown,
    /// An empty query (psql sends none, but `;` alone is one).
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Nodes,
    Pools,
    Servers,
    Clients,
    Stats,
    Routes,
    Rules,
    Config,
    Version,
    Help,
}

pub const HELP: &str = "SHOW NODES | POOLS | SERVERS | CLIENTS | STATS | ROUTES | RULES | CONFIG | VERSION | HELP; \
EXPLAIN <sql>; RELOAD; PAUSE [db]; RESUME [db]; DRAIN <node>; UNDRAIN <node>; UNFENCE <node>; KILL <client pid>; SHUTDOWN";

/// A name argument: an identifier, or double-quoted as in SQL.
fn name(arg: &str) -> Option<String> {
    let arg = arg.trim();
    if let Some(inner) = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
        return (!inner.is_empty()).then(|| inner.replace("\"\"", "\""));
    }
    let ok = !arg.is_empty() && arg.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    ok.then(|| arg.to_string())
}

pub fn parse(text: &str) -> Result<Command, String> {
    let text = text.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        return Ok(Command::Empty);
    }
    let (word, rest) = match text.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (text, ""),
    };
    let word = word.to_ascii_uppercase();
    let needs_name = |what: &str| name(rest).ok_or_else(|| format!("{word} needs a {what} name"));
    let optional_db = || if rest.is_empty() { Ok(None) } else { needs_name("database").map(Some) };
    let none = |c: Command| if rest.is_empty() { Ok(c) } else { Err(format!("{word} takes no argument")) };
    match word.as_str() {
        "SHOW" => {
            let show = match rest.to_ascii_uppercase().as_str() {
                "NODES" => Show::Nodes,
                "POOLS" => Show::Pools,
                "SERVERS" => Show::Servers,
                "CLIENTS" => Show::Clients,
                "STATS" => Show::Stats,
                "ROUTES" => Show::Routes,
                "RULES" => Show::Rules,
                "CONFIG" => Show::Config,
                "VERSION" => Show::Version,
                "HELP" => Show::Help,
                _ => return Err(format!("unknown SHOW {rest:?}; try SHOW HELP")),
            };
            Ok(Command::Show(show))
        }
        "EXPLAIN" if rest.is_empty() => Err("EXPLAIN needs a statement".into()),
        "EXPLAIN" => Ok(Command::Explain(rest.to_string())),
        "RELOAD" => none(Command::Reload),
        "PAUSE" => optional_db().map(Command::Pause),
        "RESUME" => optional_db().map(Command::Resume),
        "DRAIN" => needs_name("node").map(Command::Drain),
        "UNDRAIN" => needs_name("node").map(Command::Undrain),
        "UNFENCE" => needs_name("node").map(Command::Unfence),
        "KILL" => rest.parse().map(Command::Kill).map_err(|_| "KILL needs a client pid (see SHOW CLIENTS)".into()),
        "SHUTDOWN" => none(Command::Shutdown),
        _ => Err(format!("unknown command {word:?}; try SHOW HELP")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<Command, &str>)] = &[
            ("SHOW NODES", Ok(Command::Show(Show::Nodes))),
            ("show pools;", Ok(Command::Show(Show::Pools))),
            ("  Show   servers  ; ", Ok(Command::Show(Show::Servers))),
            ("SHOW CLIENTS", Ok(Command::Show(Show::Clients))),
            ("SHOW STATS", Ok(Command::Show(Show::Stats))),
            ("SHOW ROUTES", Ok(Command::Show(Show::Routes))),
            ("SHOW RULES", Ok(Command::Show(Show::Rules))),
            ("SHOW CONFIG", Ok(Command::Show(Show::Config))),
            ("SHOW VERSION", Ok(Command::Show(Show::Version))),
            ("SHOW HELP", Ok(Command::Show(Show::Help))),
            ("SHOW LISTS", Err("unknown SHOW \"LISTS\"; try SHOW HELP")),
            ("EXPLAIN SELECT 1; ", Ok(Command::Explain("SELECT 1".into()))),
            ("explain select ';'", Ok(Command::Explain("select ';'".into()))),
            ("EXPLAIN", Err("EXPLAIN needs a statement")),
            ("RELOAD", Ok(Command::Reload)),
            ("RELOAD now", Err("RELOAD takes no argument")),
            ("PAUSE", Ok(Command::Pause(None))),
            ("PAUSE app", Ok(Command::Pause(Some("app".into())))),
            ("RESUME \"My Db\"", Ok(Command::Resume(Some("My Db".into())))),
            ("RESUME a b", Err("RESUME needs a database name")),
            ("DRAIN pg1", Ok(Command::Drain("pg1".into()))),
            ("DRAIN", Err("DRAIN needs a node name")),
            ("UNDRAIN pg1", Ok(Command::Undrain("pg1".into()))),
            ("UNFENCE pg0", Ok(Command::Unfence("pg0".into()))),
            ("KILL 42", Ok(Command::Kill(42))),
            ("KILL x", Err("KILL needs a client pid (see SHOW CLIENTS)")),
            ("SHUTDOWN", Ok(Command::Shutdown)),
            (";", Ok(Command::Empty)),
            ("", Ok(Command::Empty)),
            ("SELECT 1", Err("unknown command \"SELECT\"; try SHOW HELP")),
        ];
        for (text, want) in cases {
            let got = parse(text);
            let want = want.clone().map_err(String::from);
            assert_eq!(got, want, "{text:?}");
        }
    }
}
