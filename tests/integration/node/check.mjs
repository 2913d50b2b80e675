// Drives shardgate with the Node.js drivers pg and postgres.js for tests/integration/test_node_drivers.py, one scenario per run.
//
// Usage: node check.mjs SCENARIO URL [JSON]
//
// URL is postgres://user:password@host:port/db; JSON (optional) holds the scenario's arguments (keys,
// counts). Each scenario prints what it saw as key=value lines on stdout; the pytest side asserts on
// them. A check that fails inside the program prints "fail=..." and the program ends with
// "result=failed" and exit status 1; an unexpected error prints "error_code=" and "error_message="
// and exits 1; bad usage exits 2. "result=ok" and exit status 0 mean every check passed.
//
// SG_NODE_TRACE=1 logs every protocol message both drivers send and receive to stderr (one line
// per message: socket number, direction, type, and the statement name and text of Parse/Query, the
// fields of ErrorResponse), which is how a failure is reported at the wire level.

import net from 'node:net'
import { isDeepStrictEqual } from 'node:util'

import pg from 'pg'
import postgres from 'postgres'

let failures = 0

function out(key, value) {
  // One line per value, whatever it holds (messages may contain newlines).
  const text = (typeof value === 'string' ? value : JSON.stringify(value) ?? String(value)).replace(/[\r\n]/g, ' ')
  process.stdout.write(`${key}=${text}\n`)
}

function check(ok, what) {
  if (!ok) {
    failures++
    out('fail', what)
  }
  return ok
}

function same(got, want, what) {
  return check(isDeepStrictEqual(got, want), `${what}: got ${show(got)}, want ${show(want)}`)
}

function show(v) {
  return JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x))
}

/** The SQLSTATE the promise was rejected with ('ok' when it resolved; the message when there is no code). */
async function codeOf(promise) {
  try {
    await promise
    return 'ok'
  } catch (e) {
    return e.code ?? `${e.name}: ${e.message}`
  }
}

/** The error the promise was rejected with, or null. */
async function errorOf(promise) {
  try {
    await promise
    return null
  } catch (e) {
    return e
  }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

let url

async function pgClient(extra = {}) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10000, ...extra })
  await client.connect()
  // A server error on an idle client is emitted, not thrown; report it instead of crashing.
  client.on('error', (e) => out('client_error', `${e.code} ${e.message}`))
  return client
}

async function pgClients(n, extra = {}) {
  return Promise.all(Array.from({ length: n }, (_, i) => pgClient(typeof extra === 'function' ? extra(i) : extra)))
}

function pjs(options = {}) {
  return postgres(url, {
    connect_timeout: 10,
    idle_timeout: 5,
    onnotice: () => {},
    ...(process.env.SG_NODE_DEBUG ? { debug: (conn, q, params) => console.error(`pjs#${conn} ${q} ${show(params)}`) } : {}),
    ...options,
  })
}

/** A key=value summary of how often each value was seen: "a*3,b*1" (sorted), for "every client saw one value". */
function tally(values) {
  const counts = new Map()
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1)
  return [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([v, n]) => `${v}*${n}`).join(',')
}

// ---------------------------------------------------------------------------------------------
// 1. pg: parameterised keyed queries and named prepared statements from several clients
// ---------------------------------------------------------------------------------------------

const TEXT_A = 'SELECT name FROM users WHERE id = $1'
const TEXT_B = 'SELECT id, name, pg_backend_pid() AS pid, inet_server_port() AS port FROM users WHERE id = $1 AND name = $2'
const TEXT_MANY = 'SELECT id, name FROM users WHERE id = ANY($1::bigint[]) ORDER BY id DESC'

async function pgPrepared({ clients, executions, users }) {
  const conns = await pgClients(clients)
  let rows = 0
  let wrong = 0
  const byBackend = new Map()
  const run = async (client, c) => {
    for (let i = 0; i < executions; i++) {
      const id = 1 + ((c * 7919 + i * 31) % users)
      const name = `user${id}`
      // Unnamed statement: Parse/Bind/Describe/Execute/Sync each time.
      let r = await client.query(TEXT_A, [id])
      rows++
      if (!check(r.rows.length === 1 && r.rows[0].name === name, `client ${c} unnamed #${i} id ${id}: ${show(r.rows)}`)) wrong++
      // Named statements: the same two names on every client, holding different texts on even and odd
      // clients (pg parses each name once per connection, then sends only Bind/Execute).
      for (const stmt of ['q_a', 'q_b']) {
        const useA = (stmt === 'q_a') === (c % 2 === 0)
        r = await client.query(useA ? { name: stmt, text: TEXT_A, values: [id] }
                                    : { name: stmt, text: TEXT_B, values: [id, name] })
        rows++
        let ok = r.rows.length === 1 && r.rows[0].name === name
        if (ok && !useA) {
          ok = r.rows[0].id === String(id) // int8 comes back as a string
          const backend = `${r.rows[0].port}:${r.rows[0].pid}`
          if (!byBackend.has(backend)) byBackend.set(backend, new Set())
          byBackend.get(backend).add(c)
        }
        if (!check(ok, `client ${c} ${stmt} #${i} id ${id}: ${show(r.rows)}`)) wrong++
      }
      // A named statement whose rows are on both shards, with an array parameter.
      const ids = [id, 1 + (id % users), 1 + ((id + 1) % users)]
      r = await client.query({ name: 'q_many', text: TEXT_MANY, values: [ids] })
      rows++
      const want = [...new Set(ids)].sort((a, b) => b - a).map((k) => ({ id: String(k), name: `user${k}` }))
      if (!same(r.rows, want, `client ${c} q_many #${i}`)) wrong++
    }
  }
  const results = await Promise.allSettled(conns.map((client, c) => run(client, c)))
  const errors = results.filter((r) => r.status === 'rejected')
  for (const e of errors) out('client_error', `${e.reason.code} ${e.reason.message}`)
  // Meaningful on plain Postgres only (through a pool the session may be elsewhere).
  let minPrepared = Infinity
  for (const client of conns) {
    const r = await client.query('SELECT count(*) AS n FROM pg_prepared_statements')
    minPrepared = Math.min(minPrepared, Number(r.rows[0].n))
  }
  await Promise.all(conns.map((client) => client.end()))
  out('rows', rows)
  out('wrong', wrong)
  out('errors', errors.length)
  out('backends', byBackend.size)
  out('shared_backends', [...byBackend.values()].filter((s) => s.size > 1).length)
  out('min_prepared_in_session', minPrepared)
  check(errors.length === 0, 'clients failed')
}

// ---------------------------------------------------------------------------------------------
// 2. pg: BEGIN/COMMIT/ROLLBACK with keyed writes on both shards
// ---------------------------------------------------------------------------------------------

const KV_INSERT = 'INSERT INTO node_kv (k, v) VALUES ($1, $2)'
const KV_COUNT = 'SELECT count(*) AS n FROM node_kv WHERE k = ANY($1::bigint[])'
const KV_GET = 'SELECT v FROM node_kv WHERE k = $1'

async function pgTxn({ clients, users }) {
  const conns = await pgClients(clients.length)
  const run = async (client, c, { rollback, commit, failed }) => {
    const tag = `client ${c}`
    // 1. A multi-shard count as the first statement after BEGIN (simple protocol), writes on both
    //    shards, a multi-shard read of them, ROLLBACK.
    await client.query('BEGIN')
    let r = await client.query('SELECT count(*) AS n FROM users')
    same(r.rows, [{ n: String(users) }], `${tag} rollback: first count`)
    for (const k of rollback) {
      r = await client.query(KV_INSERT, [k, `rb${k}`])
      same([r.command, r.rowCount], ['INSERT', 1], `${tag} rollback: insert ${k}`)
    }
    r = await client.query(KV_COUNT, [rollback])
    same(r.rows, [{ n: String(rollback.length) }], `${tag} rollback: count inside`)
    r = await client.query('ROLLBACK')
    same(r.command, 'ROLLBACK', `${tag} rollback: tag`)
    r = await client.query(KV_COUNT, [rollback])
    same(r.rows, [{ n: '0' }], `${tag} rollback: count after`)

    // 2. The same with an extended-protocol count first, and COMMIT.
    await client.query('BEGIN')
    r = await client.query('SELECT count(*) AS n FROM users WHERE id > $1', [0])
    same(r.rows, [{ n: String(users) }], `${tag} commit: first count`)
    for (const k of commit) await client.query(KV_INSERT, [k, `c${k}`])
    r = await client.query('SELECT k, v FROM node_kv WHERE k = ANY($1::bigint[]) ORDER BY k', [commit])
    same(r.rows, [...commit].sort((a, b) => a - b).map((k) => ({ k: String(k), v: `c${k}` })), `${tag} commit: rows inside`)
    r = await client.query('COMMIT')
    same(r.command, 'COMMIT', `${tag} commit: tag`)
    for (const k of commit) {
      r = await client.query(KV_GET, [k])
      same(r.rows, [{ v: `c${k}` }], `${tag} commit: after ${k}`)
    }

    // 3. An error on one shard aborts the whole transaction: 25P02 next, COMMIT answers ROLLBACK, the
    //    other shard's write is gone.
    await client.query('BEGIN')
    await client.query(KV_INSERT, [failed, `f${failed}`])
    const dup = commit[commit.length - 1]
    same(await codeOf(client.query(KV_INSERT, [dup, 'dup'])), '23505', `${tag} failed: duplicate`)
    same(await codeOf(client.query(KV_GET, [failed])), '25P02', `${tag} failed: next statement`)
    r = await client.query('COMMIT')
    same(r.command, 'ROLLBACK', `${tag} failed: COMMIT answers`)
    r = await client.query(KV_GET, [failed])
    same(r.rows, [], `${tag} failed: after`)
    out('client_done', c)
  }
  const results = await Promise.allSettled(conns.map((client, c) => run(client, c, clients[c])))
  const errors = results.filter((r) => r.status === 'rejected')
  for (const e of errors) out('client_error', `${e.reason.code} ${e.reason.message}`)
  await Promise.all(conns.map((client) => client.end()))
  out('errors', errors.length)
  check(errors.length === 0, 'clients failed')
}

// ---------------------------------------------------------------------------------------------
// 3. pg: types round trip
// ---------------------------------------------------------------------------------------------

const TYPE_COLUMNS = 'id, i8, n, ts, j, b, f, ia, ta, t'

function typeRows(ids) {
  return [
    { id: ids[0], i8: '-9223372036854775808', n: '-0.000000001', ts: new Date('1969-12-31T23:59:59.999Z'),
      j: { a: [1, 2, { b: null }], s: 'héllo ✓ 日本', q: 'quote \' "dq" \\' }, b: Buffer.alloc(0), f: false,
      ia: [], ta: [], t: '' },
    { id: ids[1], i8: '9223372036854775807', n: '12345678901234567890.123456789012',
      ts: new Date('2024-02-29T13:14:15.123Z'), j: [1, 'two', 3.5, true, null],
      b: Buffer.from(Array.from({ length: 256 }, (_, i) => i)), f: true, ia: [1, -2, 2147483647],
      ta: ['a', 'b c', '"q"', 'back\\slash', null, '{}', 'NULL', 'comma,'], t: 'tab\there\nnewline ✓' },
    { id: ids[2], i8: null, n: null, ts: null, j: null, b: null, f: null, ia: null, ta: null, t: null },
    { id: ids[3], i8: '0', n: '0.00', ts: new Date(0), j: 'just a string', b: Buffer.from([0, 0, 255]), f: true,
      ia: [null, 0], ta: [''], t: 'x' },
  ]
}

// What pg gives back for a row as written (int8 as a string, jsonb parsed, bytea a Buffer...).
function expected(row) {
  return { ...row, id: String(row.id) }
}

async function pgTypes({ table, ids }) {
  const rows = typeRows(ids)
  const [writer, reader] = await pgClients(2)
  for (const row of rows) {
    // pg sends a JS array as a Postgres array literal, so JSON that is an array or a string goes as text.
    const j = row.j === null ? null : JSON.stringify(row.j)
    const r = await writer.query(`INSERT INTO ${table} (${TYPE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [row.id, row.i8, row.n, row.ts, j, row.b, row.f, row.ia, row.ta, row.t])
    same(r.rowCount, 1, `insert ${row.id}`)
  }
  let reads = 0
  // Keyed reads (one shard each), unnamed and named.
  for (const row of rows) {
    for (const q of [{ text: `SELECT ${TYPE_COLUMNS} FROM ${table} WHERE id = $1`, values: [row.id] },
                     { name: 'types_by_id', text: `SELECT ${TYPE_COLUMNS} FROM ${table} WHERE id = $1`, values: [row.id] }]) {
      const r = await reader.query(q)
      same(r.rows, [expected(row)], `keyed read ${row.id} (${q.name ?? 'unnamed'})`)
      reads++
    }
  }
  // Every row at once (both shards), in the simple and the extended protocol, and the types pg saw.
  const want = [...rows].sort((a, b) => a.id - b.id).map(expected)
  let r = await reader.query(`SELECT ${TYPE_COLUMNS} FROM ${table} ORDER BY id`)
  same(r.rows, want, 'all rows, simple protocol')
  reads += r.rows.length
  r = await reader.query(`SELECT ${TYPE_COLUMNS} FROM ${table} WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids])
  same(r.rows, want, 'all rows, extended protocol')
  reads += r.rows.length
  out('type_oids', r.fields.map((f) => `${f.name}:${f.dataTypeID}`).join(','))
  // Parameters typed by casts, no table: the values come back as sent.
  r = await reader.query('SELECT $1::int8 AS i8, $2::numeric AS n, $3::timestamptz AS ts, $4::jsonb AS j, $5::bytea AS b,'
    + ' $6::bool AS f, $7::int[] AS ia, $8::text[] AS ta, $9::text AS t',
  [rows[1].i8, rows[1].n, rows[1].ts, JSON.stringify(rows[1].j), rows[1].b, rows[1].f, rows[1].ia, rows[1].ta, null])
  same(r.rows, [{ i8: rows[1].i8, n: rows[1].n, ts: rows[1].ts, j: rows[1].j, b: rows[1].b, f: true, ia: rows[1].ia,
                  ta: rows[1].ta, t: null }], 'parameters echoed')
  reads++
  await Promise.all([writer.end(), reader.end()])
  out('rows', rows.length)
  out('reads', reads)
}

// ---------------------------------------------------------------------------------------------
// 4. postgres.js: concurrent prepared queries over a pool, sql.begin, aggregates, sql.unsafe
// ---------------------------------------------------------------------------------------------

async function pjsPool({ users, writes, commit, rollback, unsafe }) {
  const sql = pjs({ max: 4 })
  // Many queries at once: postgres.js spreads them over its 4 connections, preparing each text once
  // per connection (named statements) and pipelining the rest.
  const reads = Array.from({ length: 200 }, (_, i) => 1 + ((i * 37) % users))
  const [readRows, writeTags] = await Promise.all([
    Promise.all(reads.map((id) => sql`SELECT id, name FROM users WHERE id = ${id}`)),
    Promise.all(writes.map((k) => sql`INSERT INTO node_kv (k, v) VALUES (${k}, ${'w' + k})`)),
  ])
  let wrong = 0
  readRows.forEach((rows, i) => {
    if (!same([...rows], [{ id: String(reads[i]), name: `user${reads[i]}` }], `read ${reads[i]}`)) wrong++
  })
  writeTags.forEach((res, i) => {
    if (!same([res.command, res.count], ['INSERT', 1], `write ${writes[i]}`)) wrong++
  })
  const updated = await Promise.all(writes.map((k) => sql`UPDATE node_kv SET v = v || '!' WHERE k = ${k} RETURNING k, v`))
  updated.forEach((rows, i) => {
    if (!same([...rows], [{ k: String(writes[i]), v: `w${writes[i]}!` }], `update ${writes[i]}`)) wrong++
  })
  out('reads', readRows.length)
  out('writes', writeTags.length)
  out('wrong', wrong)

  // sql.begin: writes on both shards, committed; then the same rolled back by an exception.
  const inside = await sql.begin(async (tx) => {
    for (const k of commit) await tx`INSERT INTO node_kv (k, v) VALUES (${k}, ${'c' + k})`
    const [{ n }] = await tx`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(commit)}::bigint[])`
    return n
  })
  out('commit_inside', inside)
  let [{ n }] = await sql`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(commit)}::bigint[])`
  out('commit_after', n)
  const err = await errorOf(sql.begin(async (tx) => {
    for (const k of rollback) await tx`INSERT INTO node_kv (k, v) VALUES (${k}, ${'r' + k})`
    const [{ n: seen }] = await tx`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(rollback)}::bigint[])`
    out('rollback_inside', seen)
    throw new Error('rolled back on purpose')
  }))
  out('rollback_error', err?.message)
  ;[{ n }] = await sql`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(rollback)}::bigint[])`
  out('rollback_after', n)

  // Aggregates over both shards, merged by shardgate, with Postgres's result types and text.
  const [agg] = await sql`SELECT count(*) AS n, sum(id) AS s, min(name) AS lo, max(id) AS hi, avg(id) AS a FROM users`
  out('aggregate', `${agg.n}|${agg.s}|${agg.lo}|${agg.hi}|${agg.a}`)
  const groups = await sql`SELECT id % 3 AS r, count(*) AS n FROM users WHERE id > ${0} GROUP BY 1 ORDER BY 1`
  out('groups', groups.map((g) => `${g.r}:${g.n}`).join(','))

  // sql.unsafe without parameters: one simple Query holding several statements, on one shard (the first
  // pair of keys is on shard 0, the second on shard 1). postgres.js starts a result at each
  // RowDescription: the statements before the first SELECT share one (the last one's command name).
  const seen = []
  for (const [a, b] of unsafe) {
    const results = await sql.unsafe(
      `INSERT INTO node_kv (k, v) VALUES (${a}, 'u${a}'); INSERT INTO node_kv (k, v) VALUES (${b}, 'u${b}');`
      + ` UPDATE node_kv SET v = v || '+' WHERE k IN (${a}, ${b}); SELECT k, v FROM node_kv WHERE k IN (${a}, ${b}) ORDER BY k`)
    seen.push(results.map((r) => `${r.command}:${r.map((row) => `${row.k}=${row.v}`).join(',')}`).join(' '))
  }
  out('unsafe_results', seen.join(' ; '))
  await sql.end({ timeout: 5 })
}

// ---------------------------------------------------------------------------------------------
// 5. postgres.js: pipelined queries inside one transaction, over both shards
// ---------------------------------------------------------------------------------------------

async function pjsPipeline({ rounds, failed }) {
  // One connection, so every round's statements are already prepared there from the second round on
  // and postgres.js writes the whole Promise.all as one pipeline (Bind/Execute/Sync after each other).
  const sql = pjs({ max: 1 })
  let rolledBack = 0
  for (const [i, { keys, rollback }] of rounds.entries()) {
    const [a, b] = keys
    const work = (tx) => Promise.all([
      tx`INSERT INTO node_kv (k, v) VALUES (${a}, ${'p' + a})`,
      tx`INSERT INTO node_kv (k, v) VALUES (${b}, ${'p' + b})`,
      tx`SELECT v FROM node_kv WHERE k = ${a}`,
      tx`SELECT v FROM node_kv WHERE k = ${b}`,
      tx`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(keys)}::bigint[])`,
      tx`UPDATE node_kv SET v = v || '.' WHERE k = ANY(${sql.array(keys)}::bigint[]) RETURNING k`,
      tx`SELECT count(*) AS n FROM users`,
    ])
    const check_ = ([insA, insB, va, vb, cnt, upd, users]) => {
      same([insA.count, insB.count], [1, 1], `round ${i}: inserts`)
      same([[...va], [...vb]], [[{ v: `p${a}` }], [{ v: `p${b}` }]], `round ${i}: reads`)
      same(cnt[0].n, '2', `round ${i}: count`)
      same(upd.map((r) => r.k).sort(), keys.map(String).sort(), `round ${i}: update`)
      return users[0].n
    }
    if (rollback) {
      const err = await errorOf(sql.begin(async (tx) => {
        check_(await work(tx))
        throw new Error('rolled back on purpose')
      }))
      same(err?.message, 'rolled back on purpose', `round ${i}: rollback`)
      rolledBack++
    } else {
      out('users', await sql.begin(async (tx) => check_(await work(tx))))
    }
    const after = await sql`SELECT k, v FROM node_kv WHERE k = ANY(${sql.array(keys)}::bigint[]) ORDER BY k`
    same(after.map((r) => `${r.k}=${r.v}`), rollback ? [] : [...keys].sort((x, y) => x - y).map((k) => `${k}=p${k}.`),
      `round ${i}: after`)
  }
  out('rounds', rounds.length)
  out('rolled_back', rolledBack)

  // An error in the middle of a pipeline: the statements queued after it get 25P02 (each has its own
  // Sync), sql.begin rolls back, and the write made before it is gone.
  const [a, b] = failed.keys
  const codes = []
  const err = await errorOf(sql.begin(async (tx) => {
    const settled = await Promise.allSettled([
      tx`INSERT INTO node_kv (k, v) VALUES (${a}, ${'p' + a})`,
      tx`INSERT INTO node_kv (k, v) VALUES (${failed.duplicate}, ${'dup'})`,
      tx`SELECT v FROM node_kv WHERE k = ${a}`,
      tx`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(failed.keys)}::bigint[])`,
      tx`INSERT INTO node_kv (k, v) VALUES (${b}, ${'p' + b})`,
    ])
    codes.push(...settled.map((r) => (r.status === 'fulfilled' ? 'ok' : r.reason.code)))
  }))
  out('failed_pipeline', codes.join(','))
  out('failed_error', err?.code)
  const after = await sql`SELECT count(*) AS n FROM node_kv WHERE k = ANY(${sql.array(failed.keys)}::bigint[])`
  out('failed_after', after[0].n)
  out('failed_then', (await sql`SELECT count(*) AS n FROM users`)[0].n)
  await sql.end({ timeout: 5 })
}

// ---------------------------------------------------------------------------------------------
// 6. A multi-shard shape shardgate refuses (0A000), through both drivers; connections keep working
// ---------------------------------------------------------------------------------------------

const WINDOW = 'SELECT id, row_number() OVER (ORDER BY id) AS rn FROM users'

async function unsupported({ ids }) {
  const client = await pgClient()
  const e = await errorOf(client.query(WINDOW))
  out('message_of_0A000', e?.message)
  out('pg_simple', e?.code ?? 'ok')
  out('pg_simple_after', (await client.query('SELECT count(*) AS n FROM users')).rows[0].n)
  out('pg_extended', await codeOf(client.query(`${WINDOW} WHERE id > $1`, [0])))
  out('pg_extended_after', (await client.query('SELECT count(*) AS n FROM users WHERE id > $1', [0])).rows[0].n)
  out('pg_named', await codeOf(client.query({ name: 'win', text: `${WINDOW} WHERE id > $1`, values: [0] })))
  const named = { name: 'cnt', text: 'SELECT count(*) AS n FROM users WHERE id > $1', values: [0] }
  out('pg_named_after', (await client.query(named)).rows[0].n)
  await client.query('BEGIN')
  out('pg_in_txn', await codeOf(client.query(WINDOW)))
  out('pg_in_txn_next', await codeOf(client.query('SELECT 1')))
  out('pg_in_txn_end', (await client.query('COMMIT')).command)
  out('pg_at_end', (await client.query('SELECT count(*) AS n FROM users')).rows[0].n)
  await client.end()

  const sql = pjs({ max: 2 })
  out('pjs_prepared', await codeOf(sql`SELECT id, row_number() OVER (ORDER BY id) AS rn FROM users WHERE id > ${0}`))
  out('pjs_prepared_after', (await sql`SELECT count(*) AS n FROM users WHERE id > ${0}`)[0].n)
  out('pjs_unsafe', await codeOf(sql.unsafe(WINDOW)))
  out('pjs_unsafe_after', (await sql.unsafe('SELECT count(*) AS n FROM users'))[0].n)
  // Several at once on the pool, the refused one among them.
  const many = await Promise.allSettled([
    sql`SELECT count(*) AS n FROM users`,
    sql`SELECT id, rank() OVER (ORDER BY name) FROM users`,
    sql`SELECT name FROM users WHERE id = ${1}`,
  ])
  out('pjs_batch', many.map((r) => (r.status === 'fulfilled' ? `ok:${r.value[0].n ?? r.value[0].name}` : r.reason.code))
    .join(','))
  // Several statements in one simple query must run on one shard (shardgate runs them in one
  // transaction on one connection, as Postgres does): keys on two shards, or a statement that needs
  // every shard, are refused.
  const [id0, id1] = ids
  out('pjs_multi_statement_two_shards', await codeOf(sql.unsafe(
    `SELECT name FROM users WHERE id = ${id0}; SELECT name FROM users WHERE id = ${id1}`)))
  out('pjs_multi_statement_fan_out', await codeOf(sql.unsafe('SELECT 1; SELECT count(*) FROM users')))
  const oneShard = await sql.unsafe(
    `SELECT name FROM users WHERE id = ${id0}; SELECT count(*) AS n FROM users WHERE id = ${id0}`)
  out('pjs_multi_statement_after', oneShard.map((r) => Object.values(r[0])[0]).join(','))
  const txn = await errorOf(sql.begin(async (tx) => {
    await tx`SELECT name FROM users WHERE id = ${1}`
    await tx`SELECT id, row_number() OVER (ORDER BY id) AS rn FROM users`
  }))
  out('pjs_in_txn', txn?.code ?? 'ok')
  out('pjs_at_end', (await sql`SELECT count(*) AS n FROM users`)[0].n)
  await sql.end({ timeout: 5 })
}

// ---------------------------------------------------------------------------------------------
// 7. Session settings of each client over the pool
// ---------------------------------------------------------------------------------------------

const SEEN = "current_setting('statement_timeout') AS st, current_setting('application_name') AS app,"
  + " current_setting('TimeZone') AS tz, '2024-01-01 00:00:00+00'::timestamptz::text AS ts"

async function settings({ rounds, users }) {
  // pg clients: SET in the simple protocol; start-up parameters; nothing; SET in the extended protocol.
  const pg0 = await pgClient()
  for (const s of ["SET statement_timeout = '4321s'", "SET application_name = 'node_pg0'", "SET TimeZone = 'Asia/Kolkata'"]) {
    await pg0.query(s)
  }
  const pg1 = await pgClient({ application_name: 'node_pg1', statement_timeout: 1234000,
                               options: '-c TimeZone=America/St_Johns' })
  const pg2 = await pgClient()
  const pg3 = await pgClient()
  for (const s of ["SET statement_timeout = '777s'", "SET application_name = 'node_pg3'", "SET TIME ZONE 'Pacific/Chatham'"]) {
    await pg3.query({ text: s, queryMode: 'extended' })
  }
  // postgres.js: start-up parameters on every connection of a pool of two; SETs on a pool of one
  // (as a prepared statement, and as a simple query through sql.unsafe).
  const pj0 = pjs({ max: 2,
                    connection: { application_name: 'node_pj0', TimeZone: 'Europe/Berlin', statement_timeout: '2222s' } })
  const pj1 = pjs({ max: 1 })
  await pj1`SET statement_timeout = '3333s'`
  await pj1.unsafe("SET application_name = 'node_pj1'; SET TimeZone = 'Australia/Adelaide'")

  // SET LOCAL ends with its transaction; a SET in a transaction that rolls back is undone (more
  // shapes of the latter in settings_rollback).
  out('pj_rollback', (await errorOf(pj1.begin(async (tx) => {
    await tx`SET statement_timeout = '9s'`
    throw new Error('rolled back on purpose')
  })))?.message)
  await pg0.query('BEGIN')
  await pg0.query("SET LOCAL statement_timeout = '5s'")
  const inside = await pg0.query('SELECT current_setting($1) AS st FROM users WHERE id = $2', ['statement_timeout', 1])
  out('set_local_inside', inside.rows[0].st)
  await pg0.query('COMMIT')
  out('set_local_after', (await pg0.query("SELECT current_setting('statement_timeout') AS st")).rows[0].st)

  const seen = new Map()
  const note = (who, row) => {
    if (!seen.has(who)) seen.set(who, [])
    seen.get(who).push(`${row.st}/${row.app}/${row.tz}/${row.ts}`)
  }
  const pgRound = async (who, client, id) => {
    note(who, (await client.query(`SELECT ${SEEN}`)).rows[0])
    note(who, (await client.query(`SELECT ${SEEN} WHERE $1::int = 1`, [1])).rows[0])
    const named = { name: 'seen_user', text: `SELECT ${SEEN}, name FROM users WHERE id = $1`, values: [id] }
    note(who, (await client.query(named)).rows[0])
    note(who, (await client.query(`SELECT ${SEEN}, name FROM users WHERE id = $1`, [id + 1])).rows[0])
  }
  const pjRound = async (who, sql, id) => {
    const [a, b, c, d] = await Promise.all([
      sql`SELECT ${sql.unsafe(SEEN)}`,
      sql`SELECT ${sql.unsafe(SEEN)}, name FROM users WHERE id = ${id}`,
      sql`SELECT ${sql.unsafe(SEEN)}, name FROM users WHERE id = ${id + 1}`,
      sql.unsafe(`SELECT ${SEEN}`),
    ])
    for (const r of [a, b, c, d]) note(who, r[0])
  }
  for (let i = 0; i < rounds; i++) {
    const id = 1 + ((i * 53) % (users - 1))
    await Promise.all([pgRound('pg0', pg0, id), pgRound('pg1', pg1, id + 2), pgRound('pg2', pg2, id + 4),
                       pgRound('pg3', pg3, id + 6), pjRound('pj0', pj0, id + 8), pjRound('pj1', pj1, id + 10)])
  }
  for (const [who, values] of [...seen.entries()].sort()) out('seen', `${who}:${tally(values)}`)

  // statement_timeout really applies to its own client only.
  const short = await pgClient()
  await short.query("SET statement_timeout = '200ms'")
  const [slow, other] = await Promise.all([codeOf(short.query('SELECT pg_sleep(0.6)')),
                                           codeOf(pg2.query('SELECT pg_sleep(0.6)'))])
  out('timeout_own', slow)
  out('timeout_other', other)
  out('timeout_after', (await short.query('SELECT current_setting($1) AS st', ['statement_timeout'])).rows[0].st)

  await Promise.all([pg0, pg1, pg2, pg3, short].map((c) => c.end()))
  await Promise.all([pj0, pj1].map((s) => s.end({ timeout: 5 })))
}

/**
 * SETs in a transaction that is rolled back, on a fresh connection (whose shard-independent statements
 * run on the default shard, 0): the session must keep its values. `shape` is what runs after the SETs.
 */
async function settingsRollback({ shape, ids }) {
  const [id0, id1] = ids
  const keyed = 'SELECT name FROM users WHERE id = $1'
  const statements = {
    stays_on_shard0: [[keyed, [id0]]],
    moves_to_shard1: [[keyed, [id1]]],
    spans_both_keyed: [[keyed, [id0]], [keyed, [id1]]],
    spans_both_fan_out: [['SELECT count(*) FROM users']],
    pjs_spans_both_fan_out: null,
  }[shape]
  if (statements === undefined) throw new Error(`unknown shape ${shape}`)
  const ask = "SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st"
    + ' FROM users WHERE id = $1'
  let seen, reported
  if (statements) {
    const client = await pgClient({ application_name: 'node_rb' })
    const params = {}
    client.connection.on('parameterStatus', (m) => { params[m.parameterName] = m.parameterValue })
    await client.query('BEGIN')
    await client.query("SET application_name = 'rolled_back'")
    await client.query("SET statement_timeout = '9s'")
    for (const [text, values] of statements) await client.query(text, values)
    out('rollback', (await client.query('ROLLBACK')).command)
    seen = await Promise.all([id0, id1].map(async (id) => (await client.query(ask, [id])).rows[0]))
    reported = params.application_name
    await client.end()
  } else {
    const sql = pjs({ max: 1, connection: { application_name: 'node_rb' } })
    const err = await errorOf(sql.begin(async (tx) => {
      await tx`SET application_name = 'rolled_back'`
      await tx`SET statement_timeout = '9s'`
      await tx`SELECT count(*) FROM users`
      throw new Error('rolled back on purpose')
    }))
    out('rollback', err?.message)
    seen = await Promise.all([id0, id1].map(async (id) => (await sql.unsafe(ask, [id]))[0]))
    reported = sql.parameters.application_name
    await sql.end({ timeout: 5 })
  }
  // What the session holds after the ROLLBACK, on each shard, and what the driver was told.
  out('after', seen.map((r) => `${r.app}/${r.st}`).join(','))
  out('reported', reported)
}

// ---------------------------------------------------------------------------------------------
// Wire trace (SG_NODE_TRACE=1)
// ---------------------------------------------------------------------------------------------

function installTrace() {
  const ids = new WeakMap()
  let next = 0
  // Per socket: what each direction has buffered; the first frontend message (startup) has no type byte.
  const state = (sock) => {
    if (!ids.has(sock)) {
      ids.set(sock, { id: ++next, '>': { buf: Buffer.alloc(0), started: false }, '<': { buf: Buffer.alloc(0), started: true } })
    }
    return ids.get(sock)
  }
  const cstrs = (b) => b.toString('utf8').split('\0')
  const describe = (type, body) => {
    switch (type) {
      case 'Q': return `Q ${show(cstrs(body)[0])}`
      case 'P': { const [name, text] = cstrs(body); return `P name=${show(name)} ${show(text)}` }
      case 'B': { const [portal, stmt] = cstrs(body); return `B portal=${show(portal)} stmt=${show(stmt)}` }
      case 'D': return `D ${String.fromCharCode(body[0])} ${show(cstrs(body.subarray(1))[0])}`
      case 'C': return `C ${show(cstrs(body)[0])}`
      case 'E': case 'N': return `${type} ${cstrs(body).filter((f) => /^[CMS]/.test(f)).map((f) => `${f[0]}=${f.slice(1)}`).join(' ')}`
      case 'Z': return `Z ${String.fromCharCode(body[0])}`
      default: return type
    }
  }
  const feed = (sock, dir, chunk) => {
    const s = state(sock)
    const d = s[dir]
    d.buf = Buffer.concat([d.buf, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)])
    const names = []
    for (;;) {
      if (!d.started) {
        if (d.buf.length < 8) break
        const len = d.buf.readInt32BE(0)
        if (d.buf.length < len) break
        names.push(`startup(${d.buf.readInt32BE(4)})`)
        d.buf = d.buf.subarray(len)
        d.started = true
        continue
      }
      if (d.buf.length < 5) break
      const len = d.buf.readInt32BE(1)
      if (d.buf.length < len + 1) break
      const type = String.fromCharCode(d.buf[0])
      if (dir === '>' || 'EZCNI'.includes(type)) names.push(describe(type, d.buf.subarray(5, len + 1)))
      else if (names[names.length - 1]?.startsWith(type) && type !== 'T') names[names.length - 1] += '+'
      else names.push(type)
      d.buf = d.buf.subarray(len + 1)
    }
    if (names.length) console.error(`trace #${s.id} ${dir} ${names.join(' | ')}`)
  }
  const write = net.Socket.prototype.write
  net.Socket.prototype.write = function (chunk, ...rest) {
    if (chunk && typeof chunk !== 'string') feed(this, '>', chunk)
    return write.call(this, chunk, ...rest)
  }
  const emit = net.Socket.prototype.emit
  net.Socket.prototype.emit = function (ev, ...args) {
    if (ev === 'data') feed(this, '<', args[0])
    return emit.call(this, ev, ...args)
  }
}

// ---------------------------------------------------------------------------------------------

const SCENARIOS = {
  pg_prepared: pgPrepared,
  pg_txn: pgTxn,
  pg_types: pgTypes,
  pjs_pool: pjsPool,
  pjs_pipeline: pjsPipeline,
  unsupported,
  settings,
  settings_rollback: settingsRollback,
}

async function main() {
  const [scenario, target, json] = process.argv.slice(2)
  if (!SCENARIOS[scenario] || !target) {
    console.error(`usage: node check.mjs {${Object.keys(SCENARIOS).join('|')}} URL [JSON]`)
    process.exit(2)
  }
  if (process.env.SG_NODE_TRACE) installTrace()
  url = target
  try {
    await SCENARIOS[scenario](json ? JSON.parse(json) : {})
  } catch (e) {
    out('error_code', e.code ?? e.name)
    out('error_message', e.message)
    console.error(e)
    process.exit(1)
  }
  out('result', failures === 0 ? 'ok' : 'failed')
  process.exit(failures === 0 ? 0 : 1)
}

await main()
