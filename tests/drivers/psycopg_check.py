#!/usr/bin/env python3
"""psycopg 3 compatibility check for pgroute.

Runs a list of independent checks against PGHOST:PGPORT (default 127.0.0.1:6432, user app,
password app, database app), prints PASS/FAIL per check with the error text, a closing
"N passed, N failed" line, and exits 1 if any check failed.

    pip install "psycopg[binary]"
    python3 tests/drivers/psycopg_check.py            # through pgroute
    PGPORT=15432 python3 tests/drivers/psycopg_check.py  # straight to the primary

Each check runs in its own thread with a time limit, so a hang is reported as a failure
instead of stopping the run. Reads of freshly written rows are done inside a transaction
(which pgroute sends to the primary) or after a short sleep, because a plain read may be
served by a replica that has not replayed the write yet.
"""

import datetime
import os
import random
import string
import sys
import threading
import time
import traceback

import psycopg
from psycopg import errors, sql

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "6432"))
USER = os.environ.get("PGUSER", "app")
PASSWORD = os.environ.get("PGPASSWORD", "app")
DBNAME = os.environ.get("PGDATABASE", "app")
CHECK_TIMEOUT = float(os.environ.get("CHECK_TIMEOUT", "30"))
REPLICA_LAG_SLEEP = 0.5
VERBOSE = os.environ.get("VERBOSE", "") not in ("", "0")

SUFFIX = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
TABLE = f"drv_psycopg_{SUFFIX}"
T = sql.Identifier(TABLE)


def connect(**kw):
    return psycopg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DBNAME,
        connect_timeout=10, application_name="psycopg_check", **kw)


def info(msg):
    print(f"      {msg}", flush=True)


def eq(got, want, what=""):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


# --------------------------------------------------------------------------- checks


def check_connect():
    with connect() as conn:
        row = conn.execute("SELECT 1, inet_server_port(), current_user").fetchone()
        eq(row[0], 1, "SELECT 1")
        eq(row[2], USER, "current_user")
        info(f"answered by port {row[1]}")


def check_create_table():
    with connect(autocommit=True) as conn:
        conn.execute(sql.SQL(
            "CREATE TABLE {} (id int PRIMARY KEY, name text NOT NULL, n int)").format(T))
    # The table must become visible everywhere (replicas included) for the later checks.
    time.sleep(REPLICA_LAG_SLEEP)


def check_insert_params():
    with connect() as conn:
        with conn.transaction():
            cur = conn.cursor()
            cur.execute(sql.SQL("INSERT INTO {} (id, name, n) VALUES (%s, %s, %s)").format(T),
                        (1, "one", 10))
            eq(cur.rowcount, 1, "rowcount")
            cur.execute(sql.SQL(
                "INSERT INTO {} (id, name, n) VALUES (%s, %s, %s) RETURNING id, name").format(T),
                (2, "two", None))
            eq(cur.fetchone(), (2, "two"), "RETURNING")
            cur.execute(sql.SQL("SELECT name, n FROM {} WHERE id = %s").format(T), (1,))
            eq(cur.fetchone(), ("one", 10), "read back")
        # binary parameters and results
        cur = conn.cursor(binary=True)
        with conn.transaction():
            cur.execute(sql.SQL("SELECT id, name FROM {} WHERE id = %b").format(T), (2,))
            eq(cur.fetchone(), (2, "two"), "binary read back")


def check_executemany():
    # psycopg >= 3.1 runs executemany in pipeline mode when libpq supports it.
    rows = [(100 + i, f"many{i}", i) for i in range(50)]
    with connect() as conn:
        cur = conn.cursor()
        cur.executemany(sql.SQL("INSERT INTO {} (id, name, n) VALUES (%s, %s, %s)").format(T), rows)
        eq(cur.rowcount, 50, "executemany rowcount")
        conn.commit()
        with conn.transaction():
            cnt = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id BETWEEN 100 AND 149")
                               .format(T)).fetchone()[0]
        eq(cnt, 50, "rows after executemany")
        # executemany with returning=True
        cur.executemany(sql.SQL(
            "INSERT INTO {} (id, name, n) VALUES (%s, %s, %s) RETURNING id").format(T),
            [(200, "r0", 0), (201, "r1", 1)], returning=True)
        got = []
        while True:
            got.append(cur.fetchone()[0])
            if not cur.nextset():
                break
        eq(got, [200, 201], "executemany returning")
        conn.commit()


def check_transaction_commit():
    with connect() as conn:
        with conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} VALUES (300, 'committed', 1)").format(T))
            port = conn.execute("SELECT inet_server_port()").fetchone()[0]
            info(f"transaction ran on port {port}")
        with conn.transaction():
            eq(conn.execute(sql.SQL("SELECT name FROM {} WHERE id = 300").format(T)).fetchone(),
               ("committed",), "committed row")
        # implicit transaction (autocommit off) + conn.commit()
        conn.execute(sql.SQL("INSERT INTO {} VALUES (301, 'implicit', 1)").format(T))
        eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.INTRANS, "tx status")
        conn.commit()
        with conn.transaction():
            eq(conn.execute(sql.SQL("SELECT name FROM {} WHERE id = 301").format(T)).fetchone(),
               ("implicit",), "implicit-commit row")


def check_transaction_rollback():
    with connect() as conn:
        with conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} VALUES (310, 'rolled back', 1)").format(T))
            raise psycopg.Rollback()
        conn.execute(sql.SQL("INSERT INTO {} VALUES (311, 'rolled back too', 1)").format(T))
        conn.rollback()
        # savepoint: nested transaction rolled back, outer committed
        with conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} VALUES (312, 'outer', 1)").format(T))
            with conn.transaction():
                conn.execute(sql.SQL("INSERT INTO {} VALUES (313, 'inner', 1)").format(T))
                raise psycopg.Rollback()
        with conn.transaction():
            ids = [r[0] for r in conn.execute(
                sql.SQL("SELECT id FROM {} WHERE id BETWEEN 310 AND 319 ORDER BY id").format(T))]
        eq(ids, [312], "rows after rollbacks")


def check_auto_prepare():
    # psycopg prepares a query server-side (named statement) after prepare_threshold (5)
    # executions of the same query on the connection.
    with connect(autocommit=True) as conn:
        q = sql.SQL("SELECT name, inet_server_port() FROM {} WHERE id = %s").format(T)
        ports = set()
        for i in range(10):
            name, port = conn.execute(q, (1,)).fetchone()
            eq(name, "one", f"execution {i}")
            ports.add(port)
        info(f"auto-prepared select answered by ports {sorted(ports)}")
        # writes through a prepared statement, 10 times
        u = sql.SQL("UPDATE {} SET n = n + 1 WHERE id = %s").format(T)
        for i in range(10):
            cur = conn.execute(u, (1,))
            eq(cur.rowcount, 1, f"update {i}")
        with conn.transaction():
            eq(conn.execute(sql.SQL("SELECT n FROM {} WHERE id = 1").format(T)).fetchone()[0],
               20, "n after 10 prepared updates")


def check_prepare_true():
    with connect(autocommit=True) as conn:
        q = "SELECT %s::int + 1, inet_server_port()"
        ports = set()
        for i in range(10):
            v, port = conn.execute(q, (i,), prepare=True).fetchone()
            eq(v, i + 1, f"prepare=True execution {i}")
            ports.add(port)
        info(f"prepare=True select answered by ports {sorted(ports)}")
        # a prepared statement in a transaction, then outside again
        with conn.transaction():
            eq(conn.execute(q, (41,), prepare=True).fetchone()[0], 42, "in transaction")
        eq(conn.execute(q, (1,), prepare=True).fetchone()[0], 2, "after transaction")


def check_pipeline():
    with connect() as conn:
        cur1, cur2, cur3 = conn.cursor(), conn.cursor(), conn.cursor()
        with conn.pipeline():
            cur1.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T), (400, "p0", 0))
            cur1.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T), (401, "p1", 1))
            cur2.execute(sql.SQL("SELECT count(*) FROM {} WHERE id >= 400 AND id < 410").format(T))
            cur3.execute(sql.SQL(
                "INSERT INTO {} VALUES (%s, %s, %s) RETURNING name").format(T), (402, "p2", 2))
            cur1.execute("SELECT 1")
        eq(cur2.fetchone()[0], 2, "count inside pipeline (same transaction)")
        eq(cur3.fetchone()[0], "p2", "RETURNING inside pipeline")
        conn.commit()
        with conn.transaction():
            eq(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id >= 400 AND id < 410")
                            .format(T)).fetchone()[0], 3, "count after pipeline commit")


def check_pipeline_autocommit():
    # In autocommit mode each pipelined statement is its own implicit transaction and a
    # pipeline sync happens between statements (psycopg sends Sync per statement group).
    with connect(autocommit=True) as conn:
        curs = [conn.cursor() for _ in range(6)]
        with conn.pipeline() as p:
            curs[0].execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T), (410, "a0", 0))
            curs[1].execute("SELECT %s::int * 2", (21,))
            curs[2].execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T), (411, "a1", 1))
            p.sync()
            curs[3].execute("SELECT %s::text", ("x",))
            curs[4].execute("SELECT inet_server_port()")
            curs[5].execute(sql.SQL(
                "INSERT INTO {} VALUES (%s, %s, %s) RETURNING id").format(T), (412, "a2", 2))
        eq(curs[1].fetchone()[0], 42, "select 1")
        eq(curs[3].fetchone()[0], "x", "select 2")
        eq(curs[5].fetchone()[0], 412, "returning")
        info(f"pipelined select answered by port {curs[4].fetchone()[0]}")
        with conn.transaction():
            eq(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id >= 410 AND id < 420")
                            .format(T)).fetchone()[0], 3, "count after autocommit pipeline")


def check_pipeline_error():
    with connect() as conn:
        cur = conn.cursor()
        raised = None
        try:
            with conn.pipeline():
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T),
                            (420, "before error", 0))
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T),
                            (1, "duplicate", 0))  # unique violation
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(T),
                            (421, "after error", 0))
        except errors.UniqueViolation as e:
            raised = e
        if raised is None:
            raise AssertionError("pipeline with a duplicate key did not raise UniqueViolation")
        eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.INERROR, "tx status")
        conn.rollback()
        # the connection keeps working, in and out of pipeline mode
        eq(conn.execute("SELECT 7").fetchone()[0], 7, "select after pipeline error")
        conn.rollback()
        with conn.pipeline():
            c2 = conn.execute("SELECT 8")
        eq(c2.fetchone()[0], 8, "pipeline after pipeline error")
        conn.rollback()
        with conn.transaction():
            eq(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id IN (420, 421)")
                            .format(T)).fetchone()[0], 0, "aborted pipeline rows")

    # autocommit: an error in one sync group does not abort the next group
    with connect(autocommit=True) as conn:
        c_ok, c_bad, c_after = conn.cursor(), conn.cursor(), conn.cursor()
        try:
            with conn.pipeline() as p:
                c_ok.execute("SELECT 1")
                p.sync()
                c_bad.execute("SELECT 1/0")
                p.sync()
                c_after.execute("SELECT 3")
        except errors.DivisionByZero:
            pass
        else:
            raise AssertionError("pipeline 1/0 did not raise DivisionByZero")
        eq(c_ok.fetchone()[0], 1, "result before the error group")
        eq(conn.execute("SELECT 4").fetchone()[0], 4, "select after autocommit pipeline error")


def check_copy_in_out():
    with connect() as conn:
        cur = conn.cursor()
        with cur.copy(sql.SQL("COPY {} (id, name, n) FROM STDIN").format(T)) as copy:
            for i in range(500, 600):
                copy.write_row((i, f"copy{i}", i))
        eq(cur.rowcount, 100, "COPY FROM rowcount")
        conn.commit()
        # text-block write (raw data)
        with cur.copy(sql.SQL("COPY {} (id, name, n) FROM STDIN").format(T)) as copy:
            copy.write("600\tblock\t1\n601\tblock\t2\n")
        conn.commit()
        # COPY OUT inside a transaction (fresh data: primary)
        with conn.transaction():
            with cur.copy(sql.SQL(
                    "COPY (SELECT id, name FROM {} WHERE id >= 500 AND id < 700 ORDER BY id) "
                    "TO STDOUT").format(T)) as copy:
                rows = list(copy.rows())
        eq(len(rows), 102, "COPY TO rows")
        eq(rows[0], ("500", "copy500"), "first COPY TO row")
        # COPY OUT outside a transaction (may go to a replica), after waiting for replication
        conn.autocommit = True
        time.sleep(REPLICA_LAG_SLEEP)
        data = b""
        with cur.copy(sql.SQL("COPY {} (id) TO STDOUT").format(T)) as copy:
            for chunk in copy:
                data += bytes(chunk)
        n = len([line for line in data.split(b"\n") if line])
        if n < 102:
            raise AssertionError(f"COPY table TO STDOUT: only {n} rows")
        # binary COPY round trip
        with cur.copy(sql.SQL("COPY {} (id, name, n) FROM STDIN (FORMAT BINARY)").format(T)) as copy:
            copy.set_types(["int4", "text", "int4"])
            copy.write_row((650, "binary", 1))
        # COPY error: a bad row, then the connection keeps working
        try:
            with cur.copy(sql.SQL("COPY {} (id, name, n) FROM STDIN").format(T)) as copy:
                copy.write("660\tok\t1\n1\tdup\t1\n")
        except errors.UniqueViolation:
            pass
        else:
            raise AssertionError("COPY with a duplicate key did not raise")
        eq(conn.execute("SELECT 5").fetchone()[0], 5, "select after failed COPY")


def check_custom_setting():
    with connect(autocommit=True) as conn:
        conn.execute("SET myapp.x = '1'")
        ports = []
        for i in range(8):
            v, port = conn.execute("SELECT current_setting('myapp.x'), inet_server_port()").fetchone()
            ports.append(port)
            eq(v, "1", f"current_setting read {i} (port {port})")
        info(f"current_setting('myapp.x') read on ports {ports}")
        # extended protocol (parameters) read of the same setting
        for i in range(4):
            v = conn.execute("SELECT current_setting(%s)", ("myapp.x",)).fetchone()[0]
            eq(v, "1", f"current_setting via parameters {i}")
        # change it and make sure the new value wins everywhere
        conn.execute("SET myapp.x = '2'")
        for i in range(6):
            eq(conn.execute("SELECT current_setting('myapp.x')").fetchone()[0], "2",
               f"after second SET, read {i}")
        conn.execute("RESET myapp.x")
        for i in range(4):
            eq(conn.execute("SELECT current_setting('myapp.x', true)").fetchone()[0], "",
               f"after RESET, read {i}")
    # SET in a non-autocommit connection (inside the implicit transaction), then commit
    with connect() as conn:
        conn.execute("SET myapp.y = 'abc'")
        conn.commit()
        conn.autocommit = True
        for i in range(6):
            eq(conn.execute("SELECT current_setting('myapp.y')").fetchone()[0], "abc",
               f"SET committed in a transaction, read {i}")
    # SET rolled back must not survive
    with connect() as conn:
        conn.execute("SET myapp.z = 'gone'")
        conn.rollback()
        conn.autocommit = True
        for i in range(4):
            eq(conn.execute("SELECT current_setting('myapp.z', true)").fetchone()[0] or "", "",
               f"SET rolled back, read {i}")


def check_autocommit_reads():
    with connect(autocommit=True) as conn:
        ports = []
        for i in range(10):
            v, port = conn.execute("SELECT %s::int, inet_server_port()", (i,)).fetchone()
            eq(v, i, f"read {i}")
            ports.append(port)
        info(f"autocommit reads answered by ports {ports}")
        time.sleep(REPLICA_LAG_SLEEP)
        for i in range(4):
            eq(conn.execute(sql.SQL("SELECT name FROM {} WHERE id = 2").format(T)).fetchone(),
               ("two",), f"table read {i}")


def check_server_side_cursor():
    with connect() as conn:
        with conn.transaction():
            with conn.cursor(name="drv_cur") as cur:
                cur.itersize = 100
                cur.execute("SELECT g, g * 2 FROM generate_series(1, 1000) g")
                first = cur.fetchmany(10)
                eq(first[0], (1, 2), "first row")
                cur.scroll(0)
                total = len(first) + sum(1 for _ in cur)
                eq(total, 1000, "rows through named cursor")
        # named cursor over table data in an implicit transaction (autocommit off)
        with conn.cursor(name="drv_cur2") as cur:
            cur.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(T))
            ids = [r[0] for r in cur]
            if len(ids) < 3:
                raise AssertionError(f"named cursor over table: only {len(ids)} rows")
        conn.commit()
        # two named cursors open at once in one transaction
        with conn.transaction():
            a = conn.cursor(name="drv_a")
            b = conn.cursor(name="drv_b")
            a.execute("SELECT generate_series(1, 5)")
            b.execute("SELECT generate_series(10, 15)")
            eq(a.fetchone()[0], 1, "cursor a")
            eq(b.fetchone()[0], 10, "cursor b")
            eq(a.fetchone()[0], 2, "cursor a again")
            a.close()
            b.close()


def check_listen_notify():
    chan = f"drv_chan_{SUFFIX}"
    with connect(autocommit=True) as listener, connect(autocommit=True) as notifier:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(chan)))
        info(f"listener is on port {listener.execute('SELECT inet_server_port()').fetchone()[0]}")
        notifier.execute(sql.SQL("NOTIFY {}, 'hello'").format(sql.Identifier(chan)))
        notifier.execute("SELECT pg_notify(%s, %s)", (chan, "world"))
        got = []
        for n in listener.notifies(timeout=5, stop_after=2):
            got.append((n.channel, n.payload))
        eq(got, [(chan, "hello"), (chan, "world")], "notifications")
        # notification delivered while the listener runs a query
        notifier.execute("SELECT pg_notify(%s, %s)", (chan, "during"))
        time.sleep(0.2)
        listener.execute("SELECT 1")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
        eq(got, [(chan, "during")], "notification after a query")


def check_error_recovery():
    with connect() as conn:
        try:
            conn.execute("SELECT 1/0")
            raise AssertionError("1/0 did not raise")
        except errors.DivisionByZero:
            pass
        try:
            conn.execute("SELECT 1")
            raise AssertionError("statement in an aborted transaction did not raise")
        except errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        eq(conn.execute("SELECT 2").fetchone()[0], 2, "after rollback")
        conn.rollback()
    with connect(autocommit=True) as conn:
        for q, params, exc in [
            ("SELECT 1/0", None, errors.DivisionByZero),
            ("SELECT * FROM no_such_table_xyz", None, errors.UndefinedTable),
            ("SELECT %s::int", ("notanumber",), errors.InvalidTextRepresentation),
            ("SELEC 1", None, errors.SyntaxError),
            (sql.SQL("INSERT INTO {} VALUES (1, 'dup', 1)").format(T), None, errors.UniqueViolation),
        ]:
            try:
                conn.execute(q, params)
                raise AssertionError(f"{q!r} did not raise")
            except exc:
                pass
            eq(conn.execute("SELECT 3").fetchone()[0], 3, f"select after {exc.__name__}")
        # an error on an auto-prepared statement, then the same statement working again
        q = "SELECT 10 / %s"
        for i in range(1, 8):
            conn.execute(q, (i,))
        try:
            conn.execute(q, (0,))
            raise AssertionError("10/0 did not raise")
        except errors.DivisionByZero:
            pass
        eq(conn.execute(q, (5,)).fetchone()[0], 2, "prepared statement after its error")


def check_cancel():
    with connect(autocommit=True) as conn:
        def cancel_later():
            time.sleep(1.0)
            conn.cancel_safe(timeout=5)
        t = threading.Thread(target=cancel_later, daemon=True)
        t.start()
        t0 = time.monotonic()
        try:
            conn.execute("SELECT pg_sleep(10)")
            raise AssertionError("pg_sleep(10) was not cancelled")
        except errors.QueryCanceled:
            pass
        took = time.monotonic() - t0
        if took > 5:
            raise AssertionError(f"cancel took {took:.1f}s")
        t.join()
        eq(conn.execute("SELECT 1").fetchone()[0], 1, "select after cancel")


def check_cleanup():
    with connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(T))


CHECKS = [
    ("connect", check_connect),
    ("create table", check_create_table),
    ("insert with parameters", check_insert_params),
    ("executemany", check_executemany),
    ("transaction commit", check_transaction_commit),
    ("transaction rollback / savepoint", check_transaction_rollback),
    ("auto-prepared statements (threshold 5)", check_auto_prepare),
    ("prepare=True", check_prepare_true),
    ("pipeline mode (transaction)", check_pipeline),
    ("pipeline mode (autocommit, several syncs)", check_pipeline_autocommit),
    ("pipeline mode with an error", check_pipeline_error),
    ("COPY in / out", check_copy_in_out),
    ("SET custom setting read back", check_custom_setting),
    ("autocommit reads", check_autocommit_reads),
    ("server-side (named) cursor", check_server_side_cursor),
    ("LISTEN/NOTIFY", check_listen_notify),
    ("error recovery", check_error_recovery),
    ("query cancel", check_cancel),
    ("drop table", check_cleanup),
]


def run_with_timeout(fn, timeout):
    result = {}

    def target():
        try:
            fn()
            result["ok"] = True
        except BaseException as e:  # noqa: BLE001 - report everything
            result["exc"] = e
            result["tb"] = traceback.format_exc()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"TIMEOUT after {timeout:.0f}s (check still running)", None
    if "exc" in result:
        e = result["exc"]
        return f"{type(e).__module__}.{type(e).__name__}: {e}", result["tb"]
    return None, None


def main():
    only = set(sys.argv[1:])
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}) "
          f"-> {HOST}:{PORT}, table {TABLE}", flush=True)
    passed = failed = 0
    for name, fn in CHECKS:
        if only and fn.__name__.removeprefix("check_") not in only:
            continue
        start = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        err, tb = run_with_timeout(fn, CHECK_TIMEOUT)
        if err is None:
            passed += 1
            print(f"PASS  {name}  [{start}Z]", flush=True)
        else:
            failed += 1
            print(f"FAIL  {name}  [{start}Z]\n      {err}", flush=True)
            if VERBOSE and tb:
                print(tb, flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    # os._exit: a timed-out check may leave a thread blocked on a socket
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
