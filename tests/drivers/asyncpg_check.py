#!/usr/bin/env python3
"""asyncpg compatibility check for pgroute.

Runs independent checks against PGHOST:PGPORT (default 127.0.0.1:6432, user app, password
app, database app), prints PASS/FAIL per check with the error text, a closing
"N passed, N failed" line, and exits 1 if any check failed.

    pip install asyncpg
    python3 tests/drivers/asyncpg_check.py
    PGPORT=15432 python3 tests/drivers/asyncpg_check.py   # straight to the primary

asyncpg uses the extended protocol with named prepared statements for everything it runs
with arguments (and caches them per connection), so these checks exercise pgroute's
statement renaming and re-preparing on other nodes. Reads of fresh rows are done inside a
transaction (primary) or after a short sleep, as plain reads may hit a lagging replica.
"""

import asyncio
import datetime
import io
import os
import random
import string
import sys
import traceback

import asyncpg

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "6432"))
USER = os.environ.get("PGUSER", "app")
PASSWORD = os.environ.get("PGPASSWORD", "app")
DBNAME = os.environ.get("PGDATABASE", "app")
CHECK_TIMEOUT = float(os.environ.get("CHECK_TIMEOUT", "30"))
REPLICA_LAG_SLEEP = 0.5
VERBOSE = os.environ.get("VERBOSE", "") not in ("", "0")

SUFFIX = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
TABLE = f"drv_asyncpg_{SUFFIX}"


async def connect(**kw):
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD,
                                 database=DBNAME, timeout=10, **kw)


class Skip(Exception):
    """The check does not apply to this target."""


def info(msg):
    print(f"      {msg}", flush=True)


def eq(got, want, what=""):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


# --------------------------------------------------------------------------- checks


async def check_connect():
    conn = await connect()
    try:
        row = await conn.fetchrow("SELECT 1 AS one, inet_server_port() AS port, current_user AS u")
        eq(row["one"], 1, "SELECT 1")
        eq(row["u"], USER, "current_user")
        info(f"answered by port {row['port']}")
    finally:
        await conn.close()


async def check_create_table():
    conn = await connect()
    try:
        await conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text NOT NULL, n int)")
    finally:
        await conn.close()
    await asyncio.sleep(REPLICA_LAG_SLEEP)


async def check_fetch_params():
    conn = await connect()
    try:
        await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", 1, "one", 10)
        await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", 2, "two", None)
        await asyncio.sleep(REPLICA_LAG_SLEEP)
        ports = set()
        for i in range(6):
            v = await conn.fetchval(f"SELECT name FROM {TABLE} WHERE id = $1", 1)
            eq(v, "one", f"fetchval {i}")
            rows = await conn.fetch(f"SELECT id, name, n FROM {TABLE} WHERE id = ANY($1::int[]) "
                                    "ORDER BY id", [1, 2])
            eq([tuple(r) for r in rows], [(1, "one", 10), (2, "two", None)], f"fetch {i}")
            ports.add(await conn.fetchval("SELECT inet_server_port() + $1", 0))
        info(f"parameterised reads answered by ports {sorted(ports)}")
        # typed parameters of several kinds (binary format both ways)
        r = await conn.fetchrow("SELECT $1::int8 AS a, $2::numeric AS b, $3::timestamptz AS c, "
                                "$4::jsonb AS d, $5::bytea AS e, $6::uuid AS f",
                                2**40, __import__("decimal").Decimal("1.5"),
                                datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
                                '{"k": 1}', b"\x00\x01", __import__("uuid").UUID(int=5))
        eq(r["a"], 2**40, "int8")
        eq(r["e"], b"\x00\x01", "bytea")
    finally:
        await conn.close()


async def check_executemany():
    conn = await connect()
    try:
        rows = [(100 + i, f"many{i}", i) for i in range(100)]
        await conn.executemany(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", rows)
        async with conn.transaction():
            cnt = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id BETWEEN 100 AND 199")
        eq(cnt, 100, "rows after executemany")
        # executemany that fails half-way rolls back entirely
        try:
            await conn.executemany(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)",
                                   [(250, "a", 1), (1, "dup", 1), (251, "b", 1)])
            raise AssertionError("executemany with a duplicate did not raise")
        except asyncpg.UniqueViolationError:
            pass
        async with conn.transaction():
            cnt = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id IN (250, 251)")
        eq(cnt, 0, "rows after failed executemany")
        eq(await conn.fetchval("SELECT 1"), 1, "select after failed executemany")
    finally:
        await conn.close()


async def check_transaction():
    conn = await connect()
    try:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {TABLE} VALUES (300, 'committed', 1)")
            port = await conn.fetchval("SELECT inet_server_port()")
            info(f"transaction ran on port {port}")
        async with conn.transaction():
            eq(await conn.fetchval(f"SELECT name FROM {TABLE} WHERE id = 300"), "committed",
               "committed row")
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {TABLE} VALUES (301, 'rolled back', 1)")
                raise RuntimeError("roll back please")
        except RuntimeError:
            pass
        # nested transaction = savepoint
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {TABLE} VALUES (302, 'outer', 1)")
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {TABLE} VALUES (303, 'inner', 1)")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
        # manual transaction object, read-only and serializable options
        tr = conn.transaction(isolation="serializable")
        await tr.start()
        await conn.execute(f"INSERT INTO {TABLE} VALUES (304, 'manual', 1)")
        await tr.commit()
        async with conn.transaction(readonly=True):
            ids = [r["id"] for r in await conn.fetch(
                f"SELECT id FROM {TABLE} WHERE id BETWEEN 300 AND 309 ORDER BY id")]
        eq(ids, [300, 302, 304], "rows after commit/rollback/savepoint")
    finally:
        await conn.close()


async def check_copy():
    conn = await connect()
    try:
        recs = [(500 + i, f"copy{i}", i) for i in range(200)]
        res = await conn.copy_records_to_table(TABLE, records=recs, columns=["id", "name", "n"])
        eq(res, "COPY 200", "copy_records_to_table status")
        # copy_to_table from a file-like object (text format)
        buf = io.BytesIO(b"700\tfile\t1\n701\tfile\t2\n")
        res = await conn.copy_to_table(TABLE, source=buf, columns=["id", "name", "n"])
        eq(res, "COPY 2", "copy_to_table status")
        # copy_from_query inside a transaction (fresh data)
        out = io.BytesIO()
        async with conn.transaction():
            res = await conn.copy_from_query(
                f"SELECT id, name FROM {TABLE} WHERE id >= $1 AND id < $2 ORDER BY id", 500, 800,
                output=out)
        eq(res, "COPY 202", "copy_from_query status")
        lines = out.getvalue().decode().splitlines()
        eq(lines[0], "500\tcopy0", "first copied line")
        # copy_from_table outside a transaction (may be a replica) after a sleep
        await asyncio.sleep(REPLICA_LAG_SLEEP)
        out2 = io.BytesIO()
        res = await conn.copy_from_table(TABLE, output=out2, columns=["id"])
        n = int(res.split()[1])
        if n < 202:
            raise AssertionError(f"copy_from_table: {res}")
        # COPY error then recovery
        try:
            await conn.copy_records_to_table(TABLE, records=[(1, "dup", 1)],
                                             columns=["id", "name", "n"])
            raise AssertionError("duplicate COPY did not raise")
        except asyncpg.UniqueViolationError:
            pass
        eq(await conn.fetchval("SELECT 2"), 2, "select after failed COPY")
    finally:
        await conn.close()


async def check_prepare():
    conn = await connect()
    try:
        stmt = await conn.prepare(f"SELECT name, inet_server_port() FROM {TABLE} WHERE id = $1")
        ports = set()
        for i in range(20):
            row = await stmt.fetchrow(1)
            eq(row[0], "one", f"prepared fetchrow {i}")
            ports.add(row[1])
        info(f"prepared statement answered by ports {sorted(ports)}")
        eq([a.name for a in stmt.get_attributes()], ["name", "inet_server_port"], "attributes")
        # a prepared write
        upd = await conn.prepare(f"UPDATE {TABLE} SET n = n + 1 WHERE id = $1")
        for i in range(20):
            await upd.fetch(1)
        async with conn.transaction():
            eq(await conn.fetchval(f"SELECT n FROM {TABLE} WHERE id = 1"), 30, "n after updates")
        # the statement cache: the same query text many times with different values
        for i in range(20):
            eq(await conn.fetchval("SELECT $1::int * 3", i), i * 3, f"cached statement {i}")
        # prepared statement used inside and after a transaction
        async with conn.transaction():
            eq((await stmt.fetchrow(2))[0], "two", "prepared in transaction")
        eq((await stmt.fetchrow(2))[0], "two", "prepared after transaction")
    finally:
        await conn.close()


async def check_pool():
    pool = await asyncpg.create_pool(host=HOST, port=PORT, user=USER, password=PASSWORD,
                                     database=DBNAME, min_size=2, max_size=5, timeout=10)
    try:
        async def one(i):
            return await pool.fetchval("SELECT $1::int + 1000, pg_sleep(0.01)", i)

        results = await asyncio.gather(*[one(i) for i in range(50)])
        eq(results, [i + 1000 for i in range(50)], "gathered results")

        async def ports(i):
            return await pool.fetchval("SELECT inet_server_port()")

        seen = sorted(set(await asyncio.gather(*[ports(i) for i in range(20)])))
        info(f"pool reads answered by ports {seen}")

        # acquire / transaction / release, concurrently
        async def tx(i):
            async with pool.acquire() as c:
                async with c.transaction():
                    await c.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", 1000 + i, "pool", i)
                    return await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id = $1", 1000 + i)

        counts = await asyncio.gather(*[tx(i) for i in range(20)])
        eq(counts, [1] * 20, "transactional inserts through the pool")
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def check_cursor():
    conn = await connect()
    try:
        async with conn.transaction():
            total = 0
            async for rec in conn.cursor("SELECT g FROM generate_series(1, $1) g", 1000,
                                         prefetch=100):
                total += rec["g"]
            eq(total, 500500, "sum over cursor")
            cur = await conn.cursor(f"SELECT id FROM {TABLE} ORDER BY id")
            first = await cur.fetch(5)
            eq(len(first), 5, "cursor.fetch(5)")
            await cur.forward(10)
            row = await cur.fetchrow()
            if row is None:
                raise AssertionError("cursor.fetchrow after forward returned None")
    finally:
        await conn.close()


async def check_error_recovery():
    conn = await connect()
    try:
        for q, args, exc in [
            ("SELECT 1/0", (), asyncpg.DivisionByZeroError),
            ("SELECT * FROM no_such_table_xyz", (), asyncpg.UndefinedTableError),
            ("SELECT $1::int", ("nan",), asyncpg.DataError),
            ("SELEC 1", (), asyncpg.PostgresSyntaxError),
            (f"INSERT INTO {TABLE} VALUES (1, 'dup', 1)", (), asyncpg.UniqueViolationError),
        ]:
            try:
                await conn.fetch(q, *args)
                raise AssertionError(f"{q!r} did not raise")
            except exc:
                pass
            eq(await conn.fetchval("SELECT 3"), 3, f"select after {exc.__name__}")
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1/0")
        except asyncpg.DivisionByZeroError:
            pass
        eq(await conn.fetchval("SELECT 4"), 4, "select after error in transaction")
    finally:
        await conn.close()


async def check_custom_setting():
    conn = await connect()
    try:
        await conn.execute("SET myapp.x = '1'")
        got = []
        for i in range(8):
            got.append(await conn.fetchrow("SELECT current_setting('myapp.x') v, inet_server_port() p"))
        for i, r in enumerate(got):
            eq(r["v"], "1", f"read {i} (port {r['p']})")
        info(f"setting read on ports {[r['p'] for r in got]}")
    finally:
        await conn.close()


async def check_prepare_then_write():
    # asyncpg's conn.prepare() sends Parse/Describe/Flush and no Sync: the next statement
    # the application runs on the connection follows on the same server connection. A
    # write after preparing a read must still reach the primary.
    conn = await connect()
    try:
        stmt = await conn.prepare("SELECT inet_server_port()")
        await conn.execute(f"INSERT INTO {TABLE} VALUES (800, 'after prepare', 1)")
        stmt = await conn.prepare("SELECT inet_server_port()")
        await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", 801, "after prepare", 1)
        stmt = await conn.prepare("SELECT inet_server_port()")
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {TABLE} VALUES (802, 'after prepare', 1)")
        await stmt.fetchval()
        async with conn.transaction():
            eq(await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id BETWEEN 800 AND 802"),
               3, "rows written after prepare()")
    finally:
        await conn.close()


async def check_session_state_isolation():
    # A setting one client changes with set_config() must never show up in another
    # client's session. Two ways asyncpg gets there: (1) set_config() run right after a
    # conn.prepare() (Parse/Describe/Flush, no Sync); (2) asyncpg's own type introspection,
    # which runs set_config('jit', 'off', false) inside an open Parse/Describe/Flush
    # sequence when a query uses a type it does not know (here: an int[] parameter).
    async def values(c, q):
        return [await c.fetchval(q) for _ in range(6)]

    leak = f"myapp.leak_{SUFFIX}"
    leak_q = f"SELECT current_setting('{leak}', true)"
    jit_q = "SELECT current_setting('jit')"
    b = await connect()
    try:
        a1 = await connect()
        try:
            stmt = await a1.prepare("SELECT 1")
            await a1.fetchval(f"SELECT set_config('{leak}', 'from A', false)")
            await stmt.fetchval()
            own = await values(a1, leak_q)
        finally:
            await a1.close()
        problems = []
        if own != ["from A"] * 6:
            problems.append(f"client A reads back its own set_config('{leak}') as {own}")
        leaked = await values(b, leak_q)
        if any(v not in (None, "") for v in leaked):
            problems.append(f"client B sees client A's set_config('{leak}'): {leaked}")
        a2 = await connect()
        try:
            await a2.fetch("SELECT 1 WHERE 1 = ANY($1::int[])", [1])
        finally:
            await a2.close()
        jit_default = await b.fetchval("SELECT reset_val FROM pg_settings WHERE name = 'jit'")
        jit_seen = await values(b, jit_q)
        if any(v != jit_default for v in jit_seen):
            problems.append(f"client B (which never set jit; default {jit_default!r}) reads jit as "
                            f"{jit_seen} after client A's type introspection")
        if problems:
            raise AssertionError("; ".join(problems))
    finally:
        await b.close()


async def check_pool_reaches_replicas():
    # Through a read-routing proxy, plain reads from a pooled asyncpg connection should
    # reach the replicas. Skipped when connected straight to a server (one port only).
    plain = await connect()
    try:
        direct = {await plain.fetchval("SELECT inet_server_port()") for _ in range(6)}
    finally:
        await plain.close()
    if len(direct) < 2:
        raise Skip(f"not behind a routing proxy (all reads on {sorted(direct)})")
    pool = await asyncpg.create_pool(host=HOST, port=PORT, user=USER, password=PASSWORD,
                                     database=DBNAME, min_size=1, max_size=1, timeout=10)
    try:
        ports = []
        for _ in range(4):
            async with pool.acquire() as c:  # each release runs asyncpg's reset query
                ports.append([await c.fetchval("SELECT inet_server_port()") for _ in range(3)])
        info(f"pooled reads answered by ports {ports} (one list per acquire)")
        ports = [p for acquired in ports[1:] for p in acquired]  # after the first reset
        if len(set(ports)) < 2:
            raise AssertionError(f"pooled reads after the first release all on "
                                 f"{sorted(set(ports))} (plain connection reads reach "
                                 f"{sorted(direct)})")
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def check_cleanup():
    conn = await connect()
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    finally:
        await conn.close()


CHECKS = [
    ("connect", check_connect),
    ("create table", check_create_table),
    ("fetch/fetchval with parameters", check_fetch_params),
    ("executemany", check_executemany),
    ("transaction()", check_transaction),
    ("copy_records_to_table / copy_from_query", check_copy),
    ("conn.prepare() x20 + statement cache", check_prepare),
    ("pool (min 2, max 5) with 50 gathered fetchval", check_pool),
    ("cursor iteration in a transaction", check_cursor),
    ("error recovery", check_error_recovery),
    ("SET custom setting read back", check_custom_setting),
    ("write after conn.prepare() of a read", check_prepare_then_write),
    ("session state isolation (set_config, type introspection)", check_session_state_isolation),
    ("pool connections reach replicas (after reset query)", check_pool_reaches_replicas),
    ("drop table", check_cleanup),
]


async def main():
    only = set(sys.argv[1:])
    print(f"asyncpg {asyncpg.__version__} -> {HOST}:{PORT}, table {TABLE}", flush=True)
    passed = failed = skipped = 0
    for name, fn in CHECKS:
        if only and fn.__name__.removeprefix("check_") not in only:
            continue
        start = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        err = tb = None
        try:
            await asyncio.wait_for(fn(), CHECK_TIMEOUT)
        except Skip as e:
            skipped += 1
            print(f"SKIP  {name}  ({e})", flush=True)
            continue
        except asyncio.TimeoutError:
            err = f"TIMEOUT after {CHECK_TIMEOUT:.0f}s"
        except BaseException as e:  # noqa: BLE001
            err = f"{type(e).__module__}.{type(e).__name__}: {e}"
            tb = traceback.format_exc()
        if err is None:
            passed += 1
            print(f"PASS  {name}  [{start}Z]", flush=True)
        else:
            failed += 1
            print(f"FAIL  {name}  [{start}Z]\n      {err}", flush=True)
            if VERBOSE and tb:
                print(tb, flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
