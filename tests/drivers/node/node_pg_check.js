#!/usr/bin/env node
// node-postgres (pg) compatibility check for pgroute.
//
//   cd tests/drivers/node && npm install && node node_pg_check.js
//   PGPORT=15432 node node_pg_check.js        # straight to the primary
//
// Host/port from PGHOST/PGPORT (default 127.0.0.1:6432), user app, password app, database
// app. Prints PASS/FAIL per check, a closing "N passed, N failed" line, exits 1 on failure.
'use strict';

const pg = require('pg');

const HOST = process.env.PGHOST || '127.0.0.1';
const PORT = parseInt(process.env.PGPORT || '6432', 10);
const USER = process.env.PGUSER || 'app';
const PASSWORD = process.env.PGPASSWORD || 'app';
const DATABASE = process.env.PGDATABASE || 'app';
const CHECK_TIMEOUT_MS = parseInt(process.env.CHECK_TIMEOUT || '30', 10) * 1000;
const REPLICA_LAG_SLEEP_MS = 500;

const SUFFIX = Math.random().toString(36).slice(2, 10);
const TABLE = `drv_node_${SUFFIX}`;

const cfg = { host: HOST, port: PORT, user: USER, password: PASSWORD, database: DATABASE,
  connectionTimeoutMillis: 10000, application_name: 'node_pg_check' };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const info = (msg) => console.log(`      ${msg}`);

function eq(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

async function withClient(fn) {
  const c = new pg.Client(cfg);
  c.on('error', () => {}); // reported through the failing query instead
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

async function expectError(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    if (e.code !== code) throw new Error(`${what}: got error ${e.code} ${e.message}, want ${code}`);
    return e;
  }
  throw new Error(`${what}: no error, want ${code}`);
}

// ------------------------------------------------------------------------------ checks

async function checkSimpleQuery() {
  await withClient(async (c) => {
    const r = await c.query('SELECT 1 AS one, inet_server_port() AS port, current_user AS u');
    eq(r.rows[0].one, 1, 'SELECT 1');
    eq(r.rows[0].u, USER, 'current_user');
    info(`answered by port ${r.rows[0].port}`);
    // several statements in one simple query
    const multi = await c.query('SELECT 1 AS a; SELECT 2 AS b');
    eq(multi.map((x) => x.rows[0]), [{ a: 1 }, { b: 2 }], 'multi-statement simple query');
    await c.query(`CREATE TABLE ${TABLE} (id int PRIMARY KEY, name text NOT NULL, n int)`);
  });
  await sleep(REPLICA_LAG_SLEEP_MS);
}

async function checkParameterized() {
  await withClient(async (c) => {
    const ins = await c.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3) RETURNING id`, [1, 'one', 10]);
    eq(ins.rows, [{ id: 1 }], 'INSERT RETURNING');
    await c.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3)`, [2, 'two', null]);
    await sleep(REPLICA_LAG_SLEEP_MS);
    const ports = new Set();
    for (let i = 0; i < 6; i++) {
      const r = await c.query(`SELECT name, n, inet_server_port() AS port FROM ${TABLE} WHERE id = $1`, [1]);
      eq([r.rows[0].name, r.rows[0].n], ['one', 10], `parameterized read ${i}`);
      ports.add(r.rows[0].port);
    }
    info(`parameterized reads answered by ports ${[...ports].sort()}`);
    const r = await c.query('SELECT $1::int + 1 AS v, $2::text AS t, $3::jsonb AS j', [41, 'x', { k: 1 }]);
    eq(r.rows[0], { v: 42, t: 'x', j: { k: 1 } }, 'typed parameters');
    // rowMode array + a query config object
    const ra = await c.query({ text: 'SELECT $1::int AS a, $2::int AS b', values: [1, 2], rowMode: 'array' });
    eq(ra.rows, [[1, 2]], 'rowMode array');
  });
}

async function checkNamedPrepared() {
  await withClient(async (c) => {
    const ports = new Set();
    for (let i = 0; i < 10; i++) {
      const r = await c.query({ name: 'drv_get_name',
        text: `SELECT name, inet_server_port() AS port FROM ${TABLE} WHERE id = $1`, values: [i % 2 + 1] });
      eq(r.rows[0].name, i % 2 ? 'two' : 'one', `named prepared execution ${i}`);
      ports.add(r.rows[0].port);
    }
    info(`named prepared select answered by ports ${[...ports].sort()}`);
    for (let i = 0; i < 10; i++) {
      const r = await c.query({ name: 'drv_bump', text: `UPDATE ${TABLE} SET n = n + 1 WHERE id = $1`, values: [1] });
      eq(r.rowCount, 1, `named prepared update ${i}`);
    }
    await c.query('BEGIN');
    const r = await c.query({ name: 'drv_get_n', text: `SELECT n FROM ${TABLE} WHERE id = $1`, values: [1] });
    await c.query('COMMIT');
    eq(r.rows[0].n, 20, 'n after 10 prepared updates');
    // the same name used again inside a transaction
    await c.query('BEGIN');
    const r2 = await c.query({ name: 'drv_get_name',
      text: `SELECT name, inet_server_port() AS port FROM ${TABLE} WHERE id = $1`, values: [2] });
    await c.query('COMMIT');
    eq(r2.rows[0].name, 'two', 'named prepared in transaction');
  });
}

async function checkTransaction() {
  await withClient(async (c) => {
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3)`, [300, 'committed', 1]);
    const p = await c.query('SELECT inet_server_port() AS port');
    await c.query('COMMIT');
    info(`transaction ran on port ${p.rows[0].port}`);
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3)`, [301, 'rolled back', 1]);
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3)`, [302, 'outer', 1]);
    await c.query('SAVEPOINT sp');
    await c.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3)`, [303, 'inner', 1]);
    await c.query('ROLLBACK TO SAVEPOINT sp');
    await c.query('COMMIT');
    await c.query('BEGIN');
    const r = await c.query(`SELECT id FROM ${TABLE} WHERE id BETWEEN 300 AND 309 ORDER BY id`);
    await c.query('COMMIT');
    eq(r.rows.map((x) => x.id), [300, 302], 'rows after commit/rollback/savepoint');
  });
}

async function checkErrorRecovery() {
  await withClient(async (c) => {
    await expectError(c.query('SELECT 1/0'), '22012', 'simple 1/0');
    eq((await c.query('SELECT 1 AS v')).rows[0].v, 1, 'after simple error');
    await expectError(c.query('SELECT $1::int', ['nan']), '22P02', 'extended bad parameter');
    eq((await c.query('SELECT $1::int AS v', [2])).rows[0].v, 2, 'after extended error');
    await expectError(c.query('SELEC 1'), '42601', 'syntax error');
    await expectError(c.query(`INSERT INTO ${TABLE} VALUES ($1, 'dup', 1)`, [1]), '23505', 'duplicate key');
    await expectError(c.query({ name: 'drv_div', text: 'SELECT 10 / $1::int AS v', values: [0] }),
      '22012', 'named prepared error');
    eq((await c.query({ name: 'drv_div', text: 'SELECT 10 / $1::int AS v', values: [5] })).rows[0].v, 2,
      'named prepared after its error');
    await c.query('BEGIN');
    await expectError(c.query('SELECT 1/0'), '22012', '1/0 in transaction');
    await expectError(c.query('SELECT 1'), '25P02', 'statement in aborted transaction');
    await c.query('ROLLBACK');
    eq((await c.query('SELECT 3 AS v')).rows[0].v, 3, 'after rollback of failed transaction');
  });
}

async function checkPool() {
  const pool = new pg.Pool({ ...cfg, max: 10 });
  try {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      pool.query('SELECT $1::int + 1000 AS v, inet_server_port() AS port, pg_sleep(0.05)', [i])));
    eq(results.map((r) => r.rows[0].v), Array.from({ length: 10 }, (_, i) => i + 1000), 'pool results');
    info(`pool reads answered by ports ${[...new Set(results.map((r) => r.rows[0].port))].sort()}`);
    // 10 concurrent transactions on checked-out clients
    const counts = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`INSERT INTO ${TABLE} VALUES ($1, 'pool', $1)`, [1000 + i]);
        const r = await c.query(`SELECT count(*)::int AS n FROM ${TABLE} WHERE id = $1`, [1000 + i]);
        await c.query('COMMIT');
        return r.rows[0].n;
      } finally {
        c.release();
      }
    }));
    eq(counts, Array(10).fill(1), 'transactional inserts through the pool');
    // 30 concurrent queries on a pool of 10 (queueing)
    const more = await Promise.all(Array.from({ length: 30 }, (_, i) => pool.query('SELECT $1::int AS v', [i])));
    eq(more.map((r) => r.rows[0].v), Array.from({ length: 30 }, (_, i) => i), 'queued pool queries');
  } finally {
    await pool.end();
  }
}

async function checkCleanup() {
  await withClient((c) => c.query(`DROP TABLE IF EXISTS ${TABLE}`));
}

const CHECKS = [
  ['simple query (+ create table)', checkSimpleQuery],
  ['parameterized query (unnamed statement)', checkParameterized],
  ['named prepared statement x10', checkNamedPrepared],
  ['transaction (commit, rollback, savepoint)', checkTransaction],
  ['error then recovery', checkErrorRecovery],
  ['pg.Pool with 10 concurrent queries', checkPool],
  ['drop table', checkCleanup],
];

function withTimeout(promise, ms) {
  let t;
  return Promise.race([promise, new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`TIMEOUT after ${ms / 1000}s`)), ms);
  })]).finally(() => clearTimeout(t));
}

(async () => {
  console.log(`pg ${require('pg/package.json').version} -> ${HOST}:${PORT}, table ${TABLE}`);
  let passed = 0;
  let failed = 0;
  for (const [name, fn] of CHECKS) {
    const start = new Date().toISOString().slice(11, 23);
    try {
      await withTimeout(fn(), CHECK_TIMEOUT_MS);
      passed++;
      console.log(`PASS  ${name}  [${start}Z]`);
    } catch (e) {
      failed++;
      console.log(`FAIL  ${name}  [${start}Z]\n      ${e.code ? e.code + ' ' : ''}${e.message}`);
      if (process.env.VERBOSE) console.log(e.stack);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
