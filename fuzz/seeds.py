#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/. Run from anywhere: python3 fuzz/seeds.py"""
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
CORPUS = FUZZ / "corpus"


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def frame(tag, body):
    return tag + struct.pack(">i", len(body) + 4) + body


def startup_body(code, rest=b""):
    return struct.pack(">i", code) + rest


def params(*pairs):
    return b"".join(cstr(k) + cstr(v) for k, v in pairs) + b"\0"


PROTOCOL_3, SSL, GSS, CANCEL = 196608, 80877103, 80877104, 80877102

parse = cstr("s1") + cstr("select * from wallets where id = $1") + struct.pack(">hi", 1, 23)
parse_unnamed = cstr("") + cstr("update balances set amount = amount - $1 where id = $2") + struct.pack(">h", 0)
bind = cstr("") + cstr("s1") + struct.pack(">hh", 1, 0) + struct.pack(">hi", 1, 2) + b"42" + struct.pack(">hh", 1, 1)
describe_s = b"S" + cstr("s1")
close_p = b"P" + cstr("portal")
execute = cstr("") + struct.pack(">i", 0)
query = cstr("select 1")

FRAMES = {
    "query": frame(b"Q", query),
    "query_multi": frame(b"Q", cstr("begin; update t set a = 1; commit")),
    "extended_pipeline": frame(b"P", parse) + frame(b"B", bind) + frame(b"D", b"P" + cstr(""))
    + frame(b"E", execute) + frame(b"S", b""),
    "parse_unnamed_sync": frame(b"P", parse_unnamed) + frame(b"S", b""),
    "describe_close_flush": frame(b"D", describe_s) + frame(b"C", close_p) + frame(b"H", b""),
    "terminate": frame(b"X", b""),
    "password": frame(b"p", cstr("secret")),
    "copy_data_done": frame(b"d", b"1\tfoo\n") + frame(b"c", b""),
    "partial_frame": frame(b"Q", cstr("select 2"))[:7],
    "bad_length": b"Q\0\0\0\x02xx",
    "too_long": b"Q\x7f\xff\xff\xff" + b"x" * 8,
    "server_ready": frame(b"Z", b"I"),
}

STARTUP = {
    "connect_user_db": startup_body(PROTOCOL_3, params(("user", "app"), ("database", "app"))),
    "connect_psql": startup_body(
        PROTOCOL_3,
        params(("user", "app"), ("database", "app"), ("application_name", "psql"), ("client_encoding", "UTF8")),
    ),
    "connect_options": startup_body(
        PROTOCOL_3, params(("user", "app"), ("options", "-c search_path=shop -c statement_timeout=5s"))
    ),
    "connect_replication": startup_body(PROTOCOL_3, params(("user", "app"), ("replication", "database"))),
    "connect_empty": startup_body(PROTOCOL_3, b"\0"),
    "ssl_request": startup_body(SSL),
    "gss_request": startup_body(GSS),
    "cancel": startup_body(CANCEL, struct.pack(">ii", 12345, -559038737)),
    "cancel_truncated": startup_body(CANCEL, struct.pack(">i", 1)),
    "protocol_2": startup_body(2 << 16, params(("user", "app"))),
    "protocol_3_2": startup_body(PROTOCOL_3 + 2, params(("user", "app"))),
    "unterminated": startup_body(PROTOCOL_3, b"user\0app"),
}

# body target: byte 0 = number of op bytes (mod 32), then ops (op % 7: u8, i16, i32, bytes(op >> 3),
# cstr_bytes, cstr, rest), then the body.
U8, I16, I32, BYTES, CSTR_BYTES, CSTR, REST = range(7)


def body(ops, payload):
    return bytes([len(ops)]) + bytes(ops) + payload


def nbytes(n):
    """The op byte for bytes(n), n < 32."""
    return next(o for o in range(8 * n, 8 * n + 8) if o % 7 == BYTES)


BODY = {
    "parse": body([CSTR, CSTR, I16, I32, REST], parse),
    "parse_unnamed": body([CSTR, CSTR, I16, REST], parse_unnamed),
    "bind": body([CSTR_BYTES, CSTR, I16, I16, I16, I32, nbytes(2), I16, I16, I16], bind),
    "describe": body([U8, CSTR], describe_s),
    "close": body([U8, CSTR, REST], close_p),
    "execute": body([CSTR, I32], execute),
    "startup": body([I32, CSTR, CSTR, CSTR, CSTR, CSTR], STARTUP["connect_user_db"]),
    "cancel": body([I32, I32, I32, I32], STARTUP["cancel"]),
    "non_utf8": body([CSTR, CSTR_BYTES, U8], b"\xff\xfe\0\xc3\x28\0\x01"),
    "truncated": body([I32, I16, U8, U8], b"\0\x01\x02"),
}

CLASSIFY = {
    "select": "select * from wallets where id = 42",
    "select_for_update": "SELECT balance FROM balances WHERE account_id = $1 FOR UPDATE",
    "multi": "begin; update balances set amount = amount - 10 where id = 1; insert into ledger values (1, -10); commit;",
    "dollar_quote": "do $body$ begin perform credit_account(1, 10); end $body$; select $$it's;$$",
    "tagged_dollar": "select $a$ select 1; $b$ $a$, $1::text",
    "comments": "-- leading comment\nselect /* nested /* inner */ still */ 1; -- trailing",
    "e_string": "select E'it\\'s a \\\\ backslash; not a split', 'plain''quote'",
    "cte_write": "with moved as (delete from queue where id = $1 returning *) select * from moved",
    "set_session": "set search_path = shop, public; set local statement_timeout = '5s'",
    "hint_primary": "/* pgroute: route=primary */ select * from reports",
    "function": "select wallet_balance(7), now(), nextval('seq')",
    "prepare_execute": "prepare q(int) as select $1; execute q(1); deallocate q",
    "copy": "copy (select * from t) to stdout with (format csv)",
    "unicode_ident": "select \"Ünïcödé\" from \"схема\".\"таблица\" where x = U&'\\0041'",
    "unterminated": "select 'unterminated; update t set a = 1",
}

HINT = {
    "route_primary": "/* pgroute: route=primary */ select 1",
    "route_replica_trailing": "select * from t /* pgroute: route=replica */;",
    "keys": "/* pgroute: key=wallet:42,wallet:43 order:7 */ select * from wallets",
    "max_lag": "/* pgroute: route=replica max_lag=200ms */ select 1",
    "bad_max_lag": "/* pgroute: max_lag=soon */ select 1",
    "short_form": "/* pgroute: primary */ select 1",
    "unknown_key": "/* pgroute: colour=blue, route=primary */ select 1",
    "unclosed": "/* pgroute: route=primary select 1",
    "both_ends": "/* pgroute: key=a */ select 1 /* pgroute: route=replica */ ;;",
    "not_a_hint": "select 'pgroute: route=primary'",
}

MINIMAL = """[[nodes]]
name = "pg0"
host = "127.0.0.1"
port = 5432
role = "primary"

[[users]]
name = "app"
password = "secret"
"""

CONFIG = {
    "minimal": MINIMAL,
    "auto_nodes": MINIMAL.replace('role = "primary"', 'role = "auto"')
    + '\n[[nodes]]\nname = "pg1"\nhost = "127.0.0.1"\nport = 5433\nrole = "auto"\n',
    "rules": MINIMAL
    + '\n[[routing.rules]]\nname = "r"\npattern = "(?i)^select .* from ledger"\nroute = "replica"\nmax_lag = "200ms"\n',
    "bad_regex": MINIMAL + '\n[[routing.rules]]\nname = "r"\npattern = "(unclosed"\nroute = "primary"\n',
    "password_env": MINIMAL.replace('password = "secret"', 'password_env = "PGROUTE_APP_PASSWORD"\nauth = "md5"'),
    "bad_duration": MINIMAL + '\n[health]\ninterval = "5 fortnights"\n',
    "unknown_key": MINIMAL + '\n[pool]\nmod = "session"\n',
    "no_nodes": '[listen]\naddress = "0.0.0.0:6432"\n',
    "unicode_error": MINIMAL + '\n[pool]\nsize = "ü"\n',
}


SCRAM = {
    "plain": b"\x00n,,n=,r=abc\x00c=biws,r=abcdef,p=AAAA",
    "plus": b"\x02p=tls-server-end-point,,n=,r=abc\x00c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsZW5kIHBvaW50,r=abcdef,p=AAAA",
    "downgrade": b"\x01y,,n=,r=abc\x00c=eSws,r=abc,p=AAAA",
}

CONSOLE = {
    "show": "SHOW NODES;",
    "explain": "EXPLAIN SELECT * FROM t WHERE x = ';'",
    "pause": 'PAUSE "My Db"',
    "kill": "KILL 2147483648",
}


def write(target, seeds):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def main():
    write("frame", FRAMES)
    write("startup", STARTUP)
    write("body", BODY)
    write("classify", CLASSIFY)
    write("hint", HINT)
    write("scram", SCRAM)
    write("console", CONSOLE)
    config = dict(CONFIG)
    config["proxy_toml"] = (FUZZ.parent / "proxy.toml").read_text()
    write("config", config)


if __name__ == "__main__":
    main()
