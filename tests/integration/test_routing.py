"""Statement routing: shardgate sends each statement to the shard (and the primary or a replica) that must run it.

One 2-shard cluster (1 replica per shard) per pool mode, shared by the module's tests:
  * session pooling with default_shard = 0, and
  * transaction pooling with default_shard = 1 (so "unsharded tables live on the default shard" is
    checked with a default other than shard 0 too).
The config declares users(id) and orders(user_id) hashed on a bigint, events(id) by range
([0, 1000000) -> shard 0, [1000000, max) -> shard 1), tenants(region) by list (eu/uk -> 0, us -> 1,
others -> 1) and countries as a reference table. The tables are created on every shard directly, and
every placement is checked on the shard primaries directly: a row is on exactly one shard, and for
hash tables on the shard Postgres's own PARTITION BY HASH (MODULUS 2) assigns.

Clients: psycopg 3 (simple protocol through ClientCursor, extended with parameters, named prepared
statements with prepare_threshold=0, binary parameters), asyncpg (named and unnamed prepared
statements), psql and the raw wire client pgwire.py. Every wait has a timeout.

Needs shardgate itself: skipped with SHARDGATE_TARGET=direct.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import asyncpg
import psycopg
import pytest

import conftest  # the shared start/stop helpers: crash and sanitizer checks as for the other clusters
import pgcluster
import pgwire
from txn_helpers import connect as wire_connect
from txn_helpers import after_read_error_transcript, describe_reply, error_codes, ok, wait_until

pytestmark = pytest.mark.requires_shardgate

HOST = "127.0.0.1"
PSQL = str(pgcluster.pg_bindir() / "psql")
INT8_OID = 20
REPLICA_WAIT_S = 30
RANGE_SPLIT = 1_000_000
INT8_MAX = 2**63 - 1
INT8_MIN = -(2**63)

SHARDING_TOML = """\
  [[databases.sharded_tables]]
  name = "users"
  column = "id"
  type = "bigint"
  strategy = "hash"

  [[databases.sharded_tables]]
  name = "orders"
  column = "user_id"
  type = "bigint"
  strategy = "hash"

  [[databases.sharded_tables]]
  name = "events"
  column = "id"
  type = "bigint"
  strategy = "range"
  ranges = [ { from = 0, to = 1000000, shard = 0 }, { from = 1000000, shard = 1 } ]

  [[databases.sharded_tables]]
  name = "tenants"
  column = "region"
  type = "text"
  strategy = "list"
  lists = [ { values = ["eu", "uk"], shard = 0 }, { values = ["us"], shard = 1 } ]
  default_shard = 1
"""

COUNTRIES = [("fr", "France"), ("uk", "United Kingdom"), ("us", "United States")]

# Created on every shard's primary. whereami is an undeclared (unsharded) table whose copy on each
# shard names that shard, so a read through shardgate shows which shard answered. routing_hash_probe
# is the hash-partitioned parent satisfies_hash_partition() needs; routing_hash_check has real
# partitions, so plain Postgres itself says where a key goes.
SHARD_DDL = """
CREATE TABLE users (id bigint PRIMARY KEY, name text, country text);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, amount int);
CREATE TABLE events (id bigint PRIMARY KEY, payload text);
CREATE TABLE tenants (name text PRIMARY KEY, region text NOT NULL);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE notes (id int, body text);
CREATE TABLE whereami (shard text NOT NULL);
INSERT INTO whereami VALUES ('{shard}');
CREATE TABLE routing_hash_probe (id bigint) PARTITION BY HASH (id);
CREATE TABLE routing_hash_check (id bigint) PARTITION BY HASH (id);
CREATE TABLE routing_hash_check_0 PARTITION OF routing_hash_check FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE routing_hash_check_1 PARTITION OF routing_hash_check FOR VALUES WITH (MODULUS 2, REMAINDER 1);
"""

COUNTRIES_SQL = "INSERT INTO countries VALUES " + ", ".join(f"('{c}', '{n}')" for c, n in COUNTRIES)

# What every test starts from (run on each primary): no rows in the routed tables, the reference
# table's copies identical. lock_timeout: a connection of an earlier test that is still being reset
# must not hang the suite.
CLEAN_SQL = ("SET lock_timeout = '10s'; TRUNCATE users, orders, events, tenants, notes, countries; "
             + COUNTRIES_SQL)

# Keys tried when looking for keys of a given hash shard (negative, zero, small, and the extremes).
HASH_CANDIDATES = sorted({*range(-40, 400), INT8_MIN, INT8_MIN + 1, INT8_MAX, INT8_MAX - 1, 2**31, 2**31 - 1,
                          -(2**31), 2**32 + 7, 10**15, -(10**15)})


@dataclass
class Routing:
    """One started cluster and what the tests need to know about it."""

    cluster: pgcluster.Cluster
    pool_mode: str
    default_shard: int
    hash_shard: dict[int, int] = field(default_factory=dict)  # key -> shard, by Postgres's partitioning

    @property
    def port(self) -> int:
        return self.cluster.shardgate.port

    def primary(self, shard: int) -> pgcluster.Server:
        return self.cluster.shards[shard].primary

    def replica(self, shard: int) -> pgcluster.Server:
        return self.cluster.shards[shard].replicas[0]

    def keys_on(self, shard: int, n: int, skip: int = 0) -> list[int]:
        """n small positive hash keys that Postgres puts on `shard` (after skipping the first `skip`)."""
        ks = [k for k in HASH_CANDIDATES if k > 0 and k < 400 and self.hash_shard[k] == shard]
        assert len(ks) >= skip + n, f"not enough candidate keys on shard {shard}"
        return ks[skip : skip + n]


# ---------------------------------------------------------------------------------------------
# The clusters
# ---------------------------------------------------------------------------------------------


def _postgres_hash_shards(server: pgcluster.Server, keys: list[int]) -> dict[int, int]:
    """Which partition of routing_hash_check (MODULUS 2) plain Postgres puts each key in."""
    with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO routing_hash_check SELECT unnest(%s::bigint[])", (keys,))
            rows = conn.execute("SELECT id, tableoid::regclass::text FROM routing_hash_check").fetchall()
    out = {k: int(part.rsplit("_", 1)[1]) for k, part in rows}
    assert sorted(out) == sorted(keys), "routing_hash_check lost keys"
    # The other way of asking Postgres must agree (it is what the placement checks use).
    with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT k, satisfies_hash_partition('routing_hash_probe'::regclass, 2, 1, k)"
                            " FROM unnest(%s::bigint[]) k", (keys,)).fetchall()
    for k, on_1 in rows:
        assert out[k] == (1 if on_1 else 0), f"partitioning and satisfies_hash_partition disagree on {k}"
    return out


@pytest.fixture(scope="module", params=[("session", 0), ("transaction", 1)], ids=["session", "transaction"])
def rc(request, cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    pool_mode, default_shard = request.param
    c = conftest._new_cluster(
        cluster_root / f"routing-{pool_mode}", shardgate_bin, num_shards=2, replicas_per_shard=1,
        pool_mode=pool_mode,
        database_options={"default_shard": default_shard, "read_preference": "primary",
                          "replica_policy": "round_robin", "reference_tables": ["countries"]},
        extra_toml=SHARDING_TOML)
    try:
        for i in range(2):
            c.shards[i].primary.psql(SHARD_DDL.format(shard=f"shard{i}") + COUNTRIES_SQL)
        r = Routing(c, pool_mode, default_shard)
        r.hash_shard = _postgres_hash_shards(c.shards[0].primary, HASH_CANDIDATES)
        assert set(r.hash_shard.values()) == {0, 1}
        yield r
    finally:
        problems = conftest._finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(150):
        yield


@pytest.fixture
def r(rc):
    """The module's cluster, with empty routed tables."""
    for i in range(2):
        rc.primary(i).psql(CLEAN_SQL, timeout=30)
    return rc


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def sg(r: Routing, **kw) -> psycopg.Connection:
    """A psycopg connection to shardgate (autocommit unless told otherwise)."""
    kw.setdefault("autocommit", True)
    return psycopg.connect(r.cluster.shardgate.dsn(), connect_timeout=10, **kw)


def sg_simple(r: Routing, **kw) -> psycopg.Connection:
    """psycopg with client-side binding: every statement goes as one simple-protocol Query."""
    return sg(r, cursor_factory=psycopg.ClientCursor, **kw)


def direct(server: pgcluster.Server) -> psycopg.Connection:
    return psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10)


def placement(r: Routing, table: str, column: str, keys) -> dict:
    """key -> the shards whose primary holds a row with that key (read on the primaries directly)."""
    keys = list(keys)
    out = {k: [] for k in keys}
    for i in range(2):
        with direct(r.primary(i)) as conn:
            for (k,) in conn.execute(f"SELECT {column} FROM {table} WHERE {column} = ANY(%s)", (keys,)):
                out[k].append(i)
    return out


def shard_rows(r: Routing, shard: int, sql: str, params=None) -> list[tuple]:
    with direct(r.primary(shard)) as conn:
        return conn.execute(sql, params).fetchall()


def seed_users(r: Routing, rows: list[tuple]) -> None:
    """Test data: users rows (id, name[, country]) inserted through shardgate in the simple protocol, each
    checked to be on its hash shard (so a test's subject, not its setup, decides whether it passes)."""
    with sg_simple(r) as conn:
        for row in rows:
            cols = ["id", "name", "country"][: len(row)]
            conn.execute(f"INSERT INTO users ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(row))})", row)
    where = placement(r, "users", "id", [row[0] for row in rows])
    assert where == {row[0]: [r.hash_shard[row[0]]] for row in rows}, f"seeding users: {where}"


def expect_error(conn: psycopg.Connection, sql: str, params=None, sqlstate: str = "0A000") -> psycopg.Error:
    """Runs sql, which must fail with sqlstate; the error (its diag has message, detail, hint)."""
    try:
        cur = conn.execute(sql, params)
        got = cur.fetchall() if cur.description else cur.statusmessage
    except psycopg.Error as e:
        assert e.sqlstate == sqlstate, (
            f"{sql!r}: expected SQLSTATE {sqlstate}, got {e.sqlstate}: {e.diag.message_primary} "
            f"(detail {e.diag.message_detail!r}, hint {e.diag.message_hint!r})")
        return e
    raise AssertionError(f"{sql!r}: expected SQLSTATE {sqlstate}, but it succeeded: {got!r}")


def error_text(e: psycopg.Error) -> str:
    d = e.diag
    return " | ".join(x or "" for x in (d.message_primary, d.message_detail, d.message_hint))


def wait_on_replica(r: Routing, shard: int, sql: str, params=None, want=True, timeout: float = REPLICA_WAIT_S):
    """Polls shard's replica until sql returns a row (want=True) or none (want=False): replication is
    asynchronous."""
    deadline = time.monotonic() + timeout
    with direct(r.replica(shard)) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        while True:
            got = conn.execute(sql, params).fetchall()
            if bool(got) == want:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"shard{shard}'s replica: {sql!r} {params!r} still returns {got!r} "
                                     f"after {timeout}s")
            time.sleep(0.05)


def run_psql_script(r: Routing, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """psql -f (each statement sent on its own, in the simple protocol) against shardgate."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": "postgres",
               "PGCONNECT_TIMEOUT": "10", "LC_ALL": "C.UTF-8"}
        return subprocess.run([PSQL, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(r.port),
                               "-U", "postgres", "-d", "app", "-f", path],
                              capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        os.unlink(path)


def run_async(coro, timeout: float = 60):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def apg_connect(r: Routing, **kw) -> asyncpg.Connection:
    return await asyncpg.connect(host=HOST, port=r.port, user="postgres", password="postgres", database="app",
                                 timeout=10, **kw)


def extended_query(w: pgwire.PgWire, sql: str, params: tuple = ()) -> list[pgwire.Message]:
    """Parse/Bind/Describe/Execute/Sync of the unnamed statement, as libpq's PQexecParams sends it."""
    w.send(pgwire.parse("", sql) + pgwire.bind("", "", params) + pgwire.describe("P") + pgwire.execute()
           + pgwire.sync())
    return w.recv_until(b"Z")


def status_of(msgs: list[pgwire.Message]) -> str:
    """The transaction status of the last ReadyForQuery (I, T or E)."""
    assert msgs and msgs[-1].type == b"Z", describe_reply(msgs)
    return msgs[-1].payload.decode()


# ---------------------------------------------------------------------------------------------
# Hash sharding: placement matches Postgres's PARTITION BY HASH
# ---------------------------------------------------------------------------------------------


def test_hash_inserts_land_where_postgres_hash_partitioning_puts_them(r):
    """INSERTs with a column list, one per key, sent by psql (simple protocol): each row is on exactly one
    shard, the one plain Postgres's hash partitioning picks, and satisfies_hash_partition() agrees on
    every row each shard holds."""
    keys = [k for k in HASH_CANDIDATES if k % 7 == 0 or abs(k) > 10**6 or -3 <= k <= 3]
    assert {r.hash_shard[k] for k in keys} == {0, 1}
    script = "".join(f"INSERT INTO users (id, name) VALUES ({k}, 'u{k}');\n" for k in keys)
    p = run_psql_script(r, script)
    assert p.returncode == 0, f"psql failed: {p.stderr}"
    where = placement(r, "users", "id", keys)
    wrong = {k: (shards, r.hash_shard[k]) for k, shards in where.items() if shards != [r.hash_shard[k]]}
    assert not wrong, f"key: (shards holding it, shard Postgres's hash partitioning picks): {wrong}"
    for i in range(2):
        bad = shard_rows(r, i, "SELECT id FROM users WHERE NOT satisfies_hash_partition("
                               "'routing_hash_probe'::regclass, 2, %s, id)", (i,))
        assert not bad, f"shard{i} holds rows Postgres's hash partitioning puts elsewhere: {bad}"
        total = shard_rows(r, i, "SELECT count(*) FROM users")[0][0]
        assert total == sum(1 for k in keys if r.hash_shard[k] == i)


def test_colocated_tables_hash_alike(r):
    """orders (hashed on user_id) land on their user's shard, and a join on the shared key runs there."""
    users = r.keys_on(0, 3) + r.keys_on(1, 3)
    with sg(r) as conn:
        for u in users:
            conn.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (u, f"user{u}"))
            for j in range(2):
                conn.execute("INSERT INTO orders (id, user_id, amount) VALUES (%s, %s, %s)",
                             (u * 10 + j, u, u + j))
        for u in users:
            rows = conn.execute("SELECT u.name, o.amount FROM users u JOIN orders o ON o.user_id = u.id"
                                " WHERE u.id = %s ORDER BY o.amount", (u,)).fetchall()
            assert rows == [(f"user{u}", u), (f"user{u}", u + 1)], f"user {u}"
    where = placement(r, "orders", "user_id", users)
    for u in users:
        assert where[u] == [r.hash_shard[u], r.hash_shard[u]], f"orders of user {u} are on shards {where[u]}"


# ---------------------------------------------------------------------------------------------
# Keyed reads, updates and deletes in every protocol
# ---------------------------------------------------------------------------------------------

# psycopg ways of sending a parameterised statement:
#   simple:   ClientCursor, values inlined into one Query
#   extended: server-side parameters, unnamed statement (prepare_threshold=None: never prepared)
#   prepared: prepare_threshold=0: a named prepared statement from the first execution
#   binary:   parameters in binary format (%b; Python ints go as int2/int4/int8 by size)
PSYCOPG_MODES = {
    "simple": ({"cursor_factory": psycopg.ClientCursor}, "%s"),
    "extended": ({"prepare_threshold": None}, "%s"),
    "prepared": ({"prepare_threshold": 0}, "%s"),
    "binary": ({"prepare_threshold": None}, "%b"),
}


@pytest.mark.parametrize("mode", list(PSYCOPG_MODES))
def test_keyed_crud_psycopg(r, mode):
    kw, ph = PSYCOPG_MODES[mode]
    keys = r.keys_on(0, 3) + r.keys_on(1, 3) + [INT8_MAX, INT8_MIN]
    with sg(r, **kw) as conn:
        for k in keys:
            cur = conn.execute(f"INSERT INTO users (id, name) VALUES ({ph}, {ph})", (k, f"n{k}"))
            assert cur.rowcount == 1
        where = placement(r, "users", "id", keys)
        assert where == {k: [r.hash_shard[k]] for k in keys}
        for k in keys:
            got = conn.execute(f"SELECT id, name FROM users WHERE id = {ph}", (k,)).fetchall()
            assert got == [(k, f"n{k}")], f"read of key {k}"
        for k in keys:
            cur = conn.execute(f"UPDATE users SET name = {ph} WHERE id = {ph}", (f"upd{k}", k))
            assert cur.rowcount == 1, f"update of key {k}"
        for k in keys:
            shard = where[k][0]
            assert shard_rows(r, shard, "SELECT name FROM users WHERE id = %s", (k,)) == [(f"upd{k}",)]
        gone = keys[::2]
        for k in gone:
            cur = conn.execute(f"DELETE FROM users WHERE id = {ph}", (k,))
            assert cur.rowcount == 1, f"delete of key {k}"
        for k in keys:
            got = conn.execute(f"SELECT name FROM users WHERE id = {ph}", (k,)).fetchall()
            assert got == ([] if k in gone else [(f"upd{k}",)]), f"key {k} after the deletes"
    assert placement(r, "users", "id", keys) == {k: ([] if k in gone else where[k]) for k in keys}


def test_keyed_in_list_on_one_shard(r):
    """An IN list whose keys are all on one shard is one shard's statement."""
    for shard in (0, 1):
        ks = r.keys_on(shard, 3)
        with sg(r) as conn:
            for k in ks:
                conn.execute("INSERT INTO users (id, name) VALUES (%s, 'x')", (k,))
            got = conn.execute("SELECT id FROM users WHERE id IN (%s, %s, %s) ORDER BY id", ks).fetchall()
            assert got == [(k,) for k in sorted(ks)]
            got = conn.execute("SELECT id FROM users WHERE id = ANY(%s) ORDER BY id", (ks,)).fetchall()
            assert got == [(k,) for k in sorted(ks)]


@pytest.mark.parametrize("statement_cache_size", [100, 0], ids=["named", "unnamed"])
def test_keyed_crud_asyncpg(r, statement_cache_size):
    """asyncpg: binary parameters and results, named (cache) or unnamed prepared statements, a transaction.
    asyncpg prepares a statement with Parse/Describe/Flush before its first Bind/Execute/Sync, wherever
    the session happens to be; the Bind then needs the key's shard."""
    k0s, k1s = r.keys_on(0, 2), r.keys_on(1, 2)

    async def step(label: str, aw, timeout: float = 10):
        try:
            return await asyncio.wait_for(aw, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"asyncpg: {label}: no answer within {timeout}s") from None

    async def scenario():
        conn = await step("connect", apg_connect(r, statement_cache_size=statement_cache_size))
        try:
            for k in k0s + k1s:
                status = await step(f"INSERT key {k}",
                                    conn.execute("INSERT INTO users (id, name) VALUES ($1, $2)", k, f"a{k}"))
                assert status == "INSERT 0 1"
            for k in k0s + k1s:
                name = await step(f"SELECT name of key {k} (shard{r.hash_shard[k]})",
                                  conn.fetchval("SELECT name FROM users WHERE id = $1", k))
                assert name == f"a{k}"
                row = await step(f"SELECT id, name of key {k}",
                                 conn.fetchrow("SELECT id, name FROM users WHERE id = $1::bigint", k))
                assert tuple(row) == (k, f"a{k}")
            assert await step("UPDATE", conn.execute("UPDATE users SET name = $2 WHERE id = $1", k1s[0], "b")) \
                == "UPDATE 1"
            assert await step("DELETE", conn.execute("DELETE FROM users WHERE id = $1", k0s[0])) == "DELETE 1"
            assert await step("read back", conn.fetchval("SELECT name FROM users WHERE id = $1", k1s[0])) == "b"
            assert await step("count", conn.fetchval("SELECT count(*) FROM users WHERE id = $1", k0s[0])) == 0
            # A transaction on shard 1 (asyncpg sends BEGIN, then the statements as prepared ones).
            async with conn.transaction():
                await step("INSERT in a transaction",
                           conn.execute("INSERT INTO orders (id, user_id, amount) VALUES ($1, $2, 1)", 900, k1s[1]))
                assert await step("count in a transaction",
                                  conn.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", k1s[1])) == 1
            # A transaction that goes on to another shard: each shard gets its own transaction and
            # COMMIT commits both.
            async with conn.transaction():
                await step("INSERT for shard 1", conn.execute(
                    "INSERT INTO orders (id, user_id, amount) VALUES ($1, $2, 1)", 901, k1s[1]))
                await step("INSERT for shard 0", conn.execute(
                    "INSERT INTO orders (id, user_id, amount) VALUES ($1, $2, 1)", 902, k0s[1]))
                got = await step("orders of both users in the transaction", conn.fetch(
                    "SELECT id FROM orders WHERE user_id = ANY($1::bigint[]) ORDER BY id", [k0s[1], k1s[1]]))
                assert [row["id"] for row in got] == [900, 901, 902]
            # One that fails on its second shard rolls back on both (asyncpg sends ROLLBACK).
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await step("INSERT for shard 0", conn.execute(
                        "INSERT INTO orders (id, user_id, amount) VALUES ($1, $2, 1)", 903, k0s[1]))
                    await step("duplicate INSERT for shard 1", conn.execute(
                        "INSERT INTO orders (id, user_id, amount) VALUES ($1, $2, 1)", 901, k1s[1]))
            assert await step("SELECT 1 after the rollback", conn.fetchval("SELECT 1")) == 1
        finally:
            conn.terminate()

    run_async(scenario(), timeout=90)
    assert placement(r, "users", "id", k0s + k1s) == {k0s[0]: [], k0s[1]: [0], k1s[0]: [1], k1s[1]: [1]}
    assert placement(r, "orders", "id", [900, 901, 902, 903]) == {900: [1], 901: [1], 902: [0], 903: []}


def test_keyed_raw_extended_protocol(r):
    """Parse/Bind/Execute by hand: a text parameter of unspecified type and a binary int8 parameter; a
    named statement bound to keys of both shards; a pipelined batch for one shard."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    seed_users(r, [(k, f"w{k}") for k in (k0, k1)])
    with wire_connect(r.port) as w:
        for k in (k0, k1):
            w.send(pgwire.parse("", "SELECT name FROM users WHERE id = $1") + pgwire.bind("", "", (str(k),))
                   + pgwire.execute() + pgwire.sync())
            msgs = w.recv_until(b"Z")
            assert pgwire.data_rows(msgs) == [[f"w{k}"]], describe_reply(msgs)
            w.send(pgwire.parse("", "SELECT name FROM users WHERE id = $1", (INT8_OID,))
                   + pgwire.bind("", "", (struct.pack("!q", k),), param_formats=(1,))
                   + pgwire.execute() + pgwire.sync())
            msgs = w.recv_until(b"Z")
            assert pgwire.data_rows(msgs) == [[f"w{k}"]], describe_reply(msgs)
        w.send(pgwire.parse("byid", "SELECT name, pg_is_in_recovery() FROM users WHERE id = $1", (INT8_OID,))
               + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        for k in (k1, k0, k1):
            w.send(pgwire.bind("", "byid", (str(k),)) + pgwire.execute() + pgwire.sync())
            msgs = w.recv_until(b"Z")
            assert pgwire.data_rows(msgs) == [[f"w{k}", "f"]], describe_reply(msgs)
        # Two statements for shard 1 in one batch (one Sync): one implicit transaction on one shard.
        k1b = r.keys_on(1, 1, skip=1)[0]
        w.send(pgwire.parse("", "INSERT INTO users (id, name) VALUES ($1, 'batch')") + pgwire.bind("", "", (str(k1b),))
               + pgwire.execute()
               + pgwire.parse("", "SELECT count(*) FROM users WHERE id = $1") + pgwire.bind("", "", (str(k1b),))
               + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert pgwire.data_rows(msgs) == [["1"]], describe_reply(msgs)
    assert placement(r, "users", "id", [k1b]) == {k1b: [1]}


# ---------------------------------------------------------------------------------------------
# Multi-row INSERT
# ---------------------------------------------------------------------------------------------


def test_multirow_insert_on_one_shard(r):
    for shard in (0, 1):
        ks = r.keys_on(shard, 3)
        with sg_simple(r) as conn:
            cur = conn.execute("INSERT INTO users (id, name) VALUES (%s, 'a'), (%s, 'b'), (%s, 'c')", ks)
            assert cur.rowcount == 3
        with sg(r) as conn:  # the extended protocol too
            ks2 = r.keys_on(shard, 2, skip=3)
            cur = conn.execute("INSERT INTO users (id, name) VALUES (%s, 'd'), (%s, 'e')", ks2)
            assert cur.rowcount == 2
        assert placement(r, "users", "id", ks + ks2) == {k: [shard] for k in ks + ks2}


@pytest.mark.parametrize("protocol", ["simple", "extended", "binary"])
def test_multirow_insert_across_shards_is_split(r, protocol):
    """Rows for both shards in one INSERT: each row lands on its own shard, the tag counts them all, and
    RETURNING gives every row back."""
    k0s, k1s = r.keys_on(0, 3), r.keys_on(1, 3)
    keys = [k0s[0], k1s[0], k1s[1], k0s[1], INT8_MAX, INT8_MIN, k1s[2], k0s[2]]
    assert {r.hash_shard[k] for k in keys} == {0, 1}
    first, second = keys[:4], keys[4:]
    kw, ph = PSYCOPG_MODES[protocol]
    with sg(r, **kw) as conn:
        values = ", ".join([f"({ph}, {ph})"] * len(first))
        cur = conn.execute(f"INSERT INTO users (id, name) VALUES {values}",
                           [x for k in first for x in (k, f"m{k}")])
        assert cur.statusmessage == f"INSERT 0 {len(first)}", cur.statusmessage
        assert cur.rowcount == len(first)
        values = ", ".join([f"({ph}, {ph})"] * len(second))
        cur = conn.execute(f"INSERT INTO users (id, name) VALUES {values} RETURNING id, name",
                           [x for k in second for x in (k, f"m{k}")])
        assert sorted(cur.fetchall()) == sorted((k, f"m{k}") for k in second)
        assert cur.statusmessage == f"INSERT 0 {len(second)}", cur.statusmessage
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    assert placement(r, "users", "id", keys) == {k: [r.hash_shard[k]] for k in keys}
    for s in (0, 1):
        got = shard_rows(r, s, "SELECT id, name FROM users ORDER BY id")
        assert got == sorted((k, f"m{k}") for k in keys if r.hash_shard[k] == s), f"shard{s}"


# ---------------------------------------------------------------------------------------------
# Read preference: replicas when asked
# ---------------------------------------------------------------------------------------------


def test_read_preference_set_show_reset(r):
    ks = {0: r.keys_on(0, 1)[0], 1: r.keys_on(1, 1)[0]}
    seed_users(r, [(k, "rp") for k in ks.values()])
    for s, k in ks.items():
        wait_on_replica(r, s, "SELECT 1 FROM users WHERE id = %s", (k,))
    with sg_simple(r) as conn:
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("primary",)]
        for s, k in ks.items():
            assert conn.execute("SELECT pg_is_in_recovery() FROM users WHERE id = %s", (k,)).fetchall() == [(False,)]
        conn.execute("SET shardgate.read_preference = replica")
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("replica",)]
        for s, k in ks.items():
            got = conn.execute("SELECT pg_is_in_recovery(), name FROM users WHERE id = %s", (k,)).fetchall()
            assert got == [(True, "rp")], f"key {k} (shard{s}) with read_preference = replica"
        # Statements without a table are reads too.
        assert conn.execute("SELECT pg_is_in_recovery()").fetchall() == [(True,)]
        conn.execute("RESET shardgate.read_preference")
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("primary",)]
        for s, k in ks.items():
            got = conn.execute("SELECT pg_is_in_recovery() FROM users WHERE id = %s", (k,)).fetchall()
            assert got == [(False,)], f"key {k} after RESET"
        conn.execute("SET shardgate.read_preference TO 'prefer_replica'")
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("prefer_replica",)]
        for s, k in ks.items():
            got = conn.execute("SELECT pg_is_in_recovery() FROM users WHERE id = %s", (k,)).fetchall()
            assert got == [(True,)], f"key {k} with prefer_replica (the replicas are up)"
        e = expect_error(conn, "SET shardgate.read_preference = sideways", sqlstate="22023")
        assert "read_preference" in error_text(e)
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("prefer_replica",)]
    # The setting belongs to the session that set it.
    with sg_simple(r) as other:
        assert other.execute("SHOW shardgate.read_preference").fetchall() == [("primary",)]
        assert other.execute("SELECT pg_is_in_recovery() FROM users WHERE id = %s", (ks[1],)).fetchall() == [(False,)]


def test_read_preference_set_local_lasts_for_its_transaction(r):
    k = r.keys_on(1, 1)[0]
    seed_users(r, [(k, "local")])
    wait_on_replica(r, 1, "SELECT 1 FROM users WHERE id = %s", (k,))
    recovery = "SELECT pg_is_in_recovery() FROM users WHERE id = %s"
    with sg_simple(r) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary)))
        # Outside a transaction block: a warning, as Postgres gives, and no effect.
        conn.execute("SET LOCAL shardgate.read_preference = replica")
        assert notices == [("25P01", "SET LOCAL can only be used in transaction blocks")]
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("primary",)]
        for end in ("COMMIT", "ROLLBACK"):
            conn.execute("BEGIN READ ONLY")
            conn.execute("SET LOCAL shardgate.read_preference = replica")
            assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("replica",)]
            assert conn.execute(recovery, (k,)).fetchall() == [(True,)], end
            conn.execute(end)
            assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("primary",)], end
            assert conn.execute(recovery, (k,)).fetchall() == [(False,)], f"after {end}"
        # A session-level SET in the transaction supersedes SET LOCAL and stays.
        conn.execute("BEGIN READ ONLY")
        conn.execute("SET LOCAL shardgate.read_preference = prefer_replica")
        conn.execute("SET shardgate.read_preference = replica")
        conn.execute("COMMIT")
        assert conn.execute("SHOW shardgate.read_preference").fetchall() == [("replica",)]
        # A SET LOCAL over a session value goes back to it.
        conn.execute("BEGIN READ ONLY")
        conn.execute("SET LOCAL shardgate.read_preference = 'primary'")
        assert conn.execute(recovery, (k,)).fetchall() == [(False,)]
        conn.execute("COMMIT")
        assert conn.execute(recovery, (k,)).fetchall() == [(True,)]


def test_replica_reads_in_extended_protocol(r):
    k = r.keys_on(1, 1)[0]
    seed_users(r, [(k, "ext")])
    wait_on_replica(r, 1, "SELECT 1 FROM users WHERE id = %s", (k,))
    with sg(r, prepare_threshold=0) as conn:
        # psycopg sends a statement without parameters in the simple protocol.
        with conn.cursor() as cur:
            cur.execute("SET shardgate.read_preference = replica", prepare=False)
        for _ in range(3):
            got = conn.execute("SELECT pg_is_in_recovery(), name FROM users WHERE id = %s", (k,)).fetchall()
            assert got == [(True, "ext")]


def test_prefer_replica_reads_go_to_the_primary_while_the_replica_is_down(r):
    """read_preference = prefer_replica: a replica when one is up, else the primary. With shard 1's
    replica stopped, keyed reads and reads over every shard are answered by the primaries (a
    read that finds the replica unreachable goes on to the primary), and the replica serves again
    once it is back."""
    k1 = r.keys_on(1, 1)[0]
    seed_users(r, [(k1, "pref")])
    wait_on_replica(r, 1, "SELECT 1 FROM users WHERE id = %s", (k1,))
    replica = r.replica(1)
    replica.stop("fast")
    try:
        with sg_simple(r) as conn:
            conn.execute("SET shardgate.read_preference = prefer_replica")
            for _ in range(3):
                assert conn.execute(f"SELECT pg_is_in_recovery(), name FROM users WHERE id = {k1}").fetchall() == \
                    [(False, "pref")]
                assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
    finally:
        replica.start()
    wait_on_replica(r, 1, "SELECT 1 FROM users WHERE id = %s", (k1,))
    with sg_simple(r) as conn:
        conn.execute("SET shardgate.read_preference = prefer_replica")
        wait_until(lambda: conn.execute(f"SELECT pg_is_in_recovery() FROM users WHERE id = {k1}").fetchone()
                   == (True,), 15, "reads on the replica again")


def test_any_shard_reads_follow_the_read_preference(r):
    """Reads any shard can answer (no table, reference tables only) go to a replica under
    read_preference = replica as well, from the first statement of a session on, as EXPLAIN (ROUTE) says."""
    wait_on_replica(r, r.default_shard, "SELECT 1 FROM countries")
    for sql in ("SELECT pg_is_in_recovery()", "SELECT bool_and(pg_is_in_recovery()) FROM countries"):
        with sg_simple(r) as conn:
            conn.execute("SET shardgate.read_preference = replica")
            route = "\n".join(row[0] for row in conn.execute(f"EXPLAIN (ROUTE) {sql}"))
            assert "replica" in route.splitlines()[0], route
            got = conn.execute(sql).fetchall()
            assert got == [(True,)], f"{sql!r} as a session's first read under read_preference = replica " \
                                     f"ran on a primary (EXPLAIN (ROUTE) says:\n{route})"


def test_writes_go_to_primaries_under_replica_preference(r):
    ks = r.keys_on(0, 1) + r.keys_on(1, 1)
    with sg_simple(r) as conn:
        conn.execute("SET shardgate.read_preference = replica")
        for k in ks:
            got = conn.execute("INSERT INTO users (id, name) VALUES (%s, 'w') RETURNING pg_is_in_recovery()",
                               (k,)).fetchall()
            assert got == [(False,)], f"INSERT of key {k}"
            got = conn.execute("UPDATE users SET name = 'w2' WHERE id = %s RETURNING pg_is_in_recovery()",
                               (k,)).fetchall()
            assert got == [(False,)], f"UPDATE of key {k}"
        with conn.cursor() as cur:  # and in the extended protocol
            for k in ks:
                cur.execute("DELETE FROM users WHERE id = %s", (k,))
                assert cur.rowcount == 1
    assert placement(r, "users", "id", ks) == {ks[0]: [], ks[1]: []}


def test_transaction_reads_after_a_write_use_the_primary(r):
    k = r.keys_on(1, 1)[0]
    with sg_simple(r) as conn:
        conn.execute("SET shardgate.read_preference = replica")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO users (id, name) VALUES (%s, 'tx')", (k,))
        got = conn.execute("SELECT pg_is_in_recovery(), name FROM users WHERE id = %s", (k,)).fetchall()
        assert got == [(False, "tx")], "a read after a write in the same transaction must see it (primary)"
        conn.execute("COMMIT")
    assert placement(r, "users", "id", [k]) == {k: [1]}


def test_begin_read_only_reads_from_replicas(r):
    ks = {0: r.keys_on(0, 1)[0], 1: r.keys_on(1, 1)[0]}
    seed_users(r, [(k, "ro") for k in ks.values()])
    for s, k in ks.items():
        wait_on_replica(r, s, "SELECT 1 FROM users WHERE id = %s", (k,))
    with sg_simple(r) as conn:
        conn.execute("SET shardgate.read_preference = replica")
        for s, k in ks.items():
            conn.execute("BEGIN READ ONLY")
            got = conn.execute("SELECT pg_is_in_recovery(), name FROM users WHERE id = %s", (k,)).fetchall()
            assert got == [(True, "ro")], f"key {k} in a READ ONLY transaction"
            got = conn.execute("SELECT pg_is_in_recovery(), name FROM users WHERE id = %s", (k,)).fetchall()
            assert got == [(True, "ro")]
            conn.execute("COMMIT")


# ---------------------------------------------------------------------------------------------
# Statements without a table; transaction control and settings
# ---------------------------------------------------------------------------------------------


def test_statements_without_tables(r):
    with sg_simple(r) as conn:
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
        assert conn.execute("SELECT now() IS NOT NULL").fetchall() == [(True,)]
        assert conn.execute("SHOW TimeZone").fetchone()[0]
        conn.execute("BEGIN")
        assert conn.execute("SELECT 2").fetchall() == [(2,)]
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute("ROLLBACK")
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert conn.execute("SHOW TimeZone").fetchall() == [("Asia/Tokyo",)]
        conn.execute("SET statement_timeout = '7s'")
        assert conn.execute("SHOW statement_timeout").fetchall() == [("7s",)]
        conn.execute("RESET statement_timeout")
        assert conn.execute("SHOW statement_timeout").fetchall() == [("0",)]
    with sg(r) as conn:  # and in the extended protocol
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchall() == [(42,)]
        assert conn.execute("SELECT now() IS NOT NULL AND %s", (True,)).fetchall() == [(True,)]
    with wire_connect(r.port) as w:
        for sql in ("SELECT 1", "SELECT now()", "SHOW TimeZone", "BEGIN", "SELECT 1", "COMMIT"):
            msgs = w.simple(sql)
            assert not pgwire.errors(msgs), f"{sql}: {describe_reply(msgs)}"
        assert status_of(w.simple("BEGIN")) == "T"
        assert status_of(w.simple("ROLLBACK")) == "I"


@pytest.mark.parametrize("setting,value,default", [
    ("statement_timeout", "7s", "0"),
    ("TimeZone", "Asia/Tokyo", None),
    ("application_name", "routing_test", None),
    ("search_path", "public, pg_catalog", None),
])
def test_settings_follow_the_client_to_every_shard(r, setting, value, default):
    """SET once, then statements on both shards (in either order) see the value, and so does SHOW; RESET
    brings the default back everywhere."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    seed_users(r, [(k0, "set"), (k1, "set")])
    with sg_simple(r) as conn:
        before = conn.execute(f"SHOW {setting}").fetchone()[0]
        if default is not None:
            assert before == default
        conn.execute(f"SET {setting} = '{value}'" if setting != "search_path" else f"SET search_path = {value}")
        seen = []
        for k in (k1, k0, k1, k0):
            seen.append((k, conn.execute(f"SELECT current_setting('{setting}') FROM users WHERE id = %s",
                                         (k,)).fetchone()[0]))
            seen.append(("SHOW", conn.execute(f"SHOW {setting}").fetchone()[0]))
        assert all(v == value for _, v in seen), f"SET {setting} = {value!r}, then (key or SHOW, value): {seen}"
        conn.execute(f"RESET {setting}")
        seen = []
        for k in (k0, k1):
            seen.append((k, conn.execute(f"SELECT current_setting('{setting}') FROM users WHERE id = %s",
                                         (k,)).fetchone()[0]))
        seen.append(("SHOW", conn.execute(f"SHOW {setting}").fetchone()[0]))
        assert all(v == before for _, v in seen), f"RESET {setting} (default {before!r}), then: {seen}"


# ---------------------------------------------------------------------------------------------
# Transactions that span shards: each shard touched gets its own transaction
# ---------------------------------------------------------------------------------------------


def command_tags(msgs: list[pgwire.Message]) -> list[str]:
    return [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"]


def ok_in_transaction(w: pgwire.PgWire, sql: str) -> list[list[str | None]]:
    """A simple query that must succeed and leave the transaction open (ReadyForQuery 'T')."""
    msgs = w.simple(sql)
    assert not pgwire.errors(msgs) and status_of(msgs) == "T", f"{sql}: {describe_reply(msgs)}"
    return pgwire.data_rows(msgs)


def end_transaction(w: pgwire.PgWire, sql: str, tag: str) -> None:
    """COMMIT or ROLLBACK that must succeed with `tag` (Postgres answers COMMIT of a failed
    transaction with ROLLBACK) and leave the session idle."""
    msgs = w.simple(sql)
    assert not pgwire.errors(msgs) and status_of(msgs) == "I", f"{sql}: {describe_reply(msgs)}"
    assert command_tags(msgs) == [tag], f"{sql}: {describe_reply(msgs)} tags {command_tags(msgs)}"


def expect_aborted(w: pgwire.PgWire, sql: str) -> None:
    msgs = w.simple(sql)
    assert error_codes(msgs) == ["25P02"], f"{sql} in the aborted transaction: {describe_reply(msgs)}"
    assert "current transaction is aborted" in pgwire.errors(msgs)[0].message
    assert status_of(msgs) == "E"


def test_transaction_spans_shards_raw(r):
    """A transaction goes on to a second shard: that shard gets its own transaction (BEGIN replayed
    there), what each shard's transaction wrote is invisible from outside until COMMIT, COMMIT commits
    every shard and ROLLBACK rolls every shard back."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    k0b, k1b = r.keys_on(0, 1, skip=1)[0], r.keys_on(1, 1, skip=1)[0]
    seed_users(r, [(k0, "b"), (k1, "b")])
    with wire_connect(r.port) as w:
        # Reads on both shards. now() is the transaction's start on each shard: it stays the same over
        # two statements on shard 1 only if shard 1 runs them in a transaction.
        assert status_of(w.simple("BEGIN")) == "T"
        assert ok_in_transaction(w, f"SELECT id FROM users WHERE id = {k0}") == [[str(k0)]]
        first = ok_in_transaction(w, f"SELECT id, now()::text FROM users WHERE id = {k1}")
        assert [row[0] for row in first] == [str(k1)]
        time.sleep(0.05)
        second = ok_in_transaction(w, f"SELECT id, now()::text FROM users WHERE id = {k1}")
        assert second == first, "the second shard runs the statements outside a transaction"
        end_transaction(w, "COMMIT", "COMMIT")
        # Writes on both shards, rolled back.
        ok(w, "BEGIN")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1b}, 'gone')")
        msgs = w.simple(f"UPDATE users SET name = 'x' WHERE id = {k0}")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert command_tags(msgs) == ["UPDATE 1"], describe_reply(msgs)
        # Each shard's transaction sees its own write; nobody else does yet.
        assert ok_in_transaction(w, f"SELECT name FROM users WHERE id = {k1b}") == [["gone"]]
        assert ok_in_transaction(w, f"SELECT name FROM users WHERE id = {k0}") == [["x"]]
        assert shard_rows(r, 1, "SELECT id FROM users WHERE id = %s", (k1b,)) == []
        assert shard_rows(r, 0, "SELECT name FROM users WHERE id = %s", (k0,)) == [("b",)]
        end_transaction(w, "ROLLBACK", "ROLLBACK")
        assert placement(r, "users", "id", [k1b]) == {k1b: []}
        assert shard_rows(r, 0, "SELECT name FROM users WHERE id = %s", (k0,)) == [("b",)]
        # Writes on both shards, committed.
        ok(w, "BEGIN")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1b}, 'kept')")
        ok_in_transaction(w, f"UPDATE users SET name = 'y' WHERE id = {k0}")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k0b}, 'kept')")
        ok_in_transaction(w, f"UPDATE users SET name = 'y' WHERE id = {k1}")
        assert shard_rows(r, 1, "SELECT id FROM users WHERE id = %s", (k1b,)) == []
        assert shard_rows(r, 0, "SELECT id FROM users WHERE id = %s", (k0b,)) == []
        end_transaction(w, "COMMIT", "COMMIT")
        # The session goes on, one statement at a time again.
        assert ok(w, f"SELECT name FROM users WHERE id = {k1b}") == [["kept"]]
        assert ok(w, f"SELECT name FROM users WHERE id = {k0}") == [["y"]]
    assert placement(r, "users", "id", [k0, k1, k0b, k1b]) == {k0: [0], k1: [1], k0b: [0], k1b: [1]}
    for s, k in ((0, k0), (1, k1)):
        assert shard_rows(r, s, "SELECT name FROM users WHERE id = %s", (k,)) == [("y",)], f"shard{s}"


SLOW_COMMIT_TRIGGER = """
CREATE OR REPLACE FUNCTION routing_slow_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN IF NEW.name = 'slow' THEN PERFORM pg_sleep(1.5); END IF; RETURN NULL; END$$;
CREATE CONSTRAINT TRIGGER routing_slow_commit AFTER INSERT ON users DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION routing_slow_commit();
"""


@pytest.mark.parametrize("slow_shard", [0, 1])
def test_client_leaving_during_a_commit_over_shards_does_not_split_it(r, slow_shard):
    """A client sends COMMIT for a transaction that wrote on both shards and goes away while the
    COMMIT runs (one shard's commit is slowed by a deferred trigger): one Postgres finishes a
    COMMIT it has received, so shardgate commits on every shard too, not on some of them."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    for i in range(2):
        r.primary(i).psql(SLOW_COMMIT_TRIGGER)
    try:
        w = wire_connect(r.port)
        ok(w, "BEGIN")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k0}, '{'slow' if slow_shard == 0 else 'fast'}')")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1}, '{'slow' if slow_shard == 1 else 'fast'}')")
        w.send(pgwire.query("COMMIT"))
        time.sleep(0.3)
        w.sock.close()
        wait_until(lambda: placement(r, "users", "id", [k0, k1]) == {k0: [0], k1: [1]}, 10,
                   "both shards' rows committed")
        time.sleep(0.5)
        assert placement(r, "users", "id", [k0, k1]) == {k0: [0], k1: [1]}
    finally:
        for i in range(2):
            r.primary(i).psql("DROP TRIGGER IF EXISTS routing_slow_commit ON users")


DEFERRED_CHECK_TRIGGER = """
CREATE OR REPLACE FUNCTION routing_deferred_check() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN IF NEW.name = 'bad' THEN RAISE EXCEPTION 'bad name' USING ERRCODE = '23514'; END IF;
  RETURN NULL; END$$;
CREATE CONSTRAINT TRIGGER routing_deferred_check AFTER INSERT ON users DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION routing_deferred_check();
"""


@pytest.mark.parametrize("bad_shard", [0, 1])
def test_deferred_constraint_failing_at_commit_commits_no_shard(r, bad_shard):
    """A deferred constraint fails on one shard only when the transaction commits: as on one
    Postgres, the COMMIT fails and nothing of the transaction stays, on either shard (shardgate
    checks every shard's deferred constraints before the first commits)."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    for i in range(2):
        r.primary(i).psql(DEFERRED_CHECK_TRIGGER)
    try:
        with wire_connect(r.port) as w:
            ok(w, "BEGIN")
            ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k0}, '{'bad' if bad_shard == 0 else 'good'}')")
            ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1}, '{'bad' if bad_shard == 1 else 'good'}')")
            msgs = w.simple("COMMIT")
            assert error_codes(msgs) == ["23514"], describe_reply(msgs)
            assert status_of(msgs) == "I", describe_reply(msgs)
            assert ok(w, "SELECT 1") == [["1"]]
        assert placement(r, "users", "id", [k0, k1]) == {k0: [], k1: []}
    finally:
        for i in range(2):
            r.primary(i).psql("DROP TRIGGER IF EXISTS routing_deferred_check ON users")


@pytest.mark.parametrize("bad_shard", [0, 1])
def test_deferred_constraint_failing_in_an_autocommit_write_over_shards_commits_no_shard(r, bad_shard):
    """The same without BEGIN: a multi-shard UPDATE (simple and extended protocol) and an extended
    batch of one-shard INSERTs for both shards, each one implicit transaction. The deferred
    trigger fails on one shard; the client gets its error and no shard keeps its part."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    bad, good = (k0, k1) if bad_shard == 0 else (k1, k0)
    update = f"UPDATE users SET name = CASE WHEN id = {bad} THEN 'bad' ELSE 'updated' END WHERE id IN ({k0}, {k1})"
    insert = pgwire.parse("", "INSERT INTO users (id, name) VALUES ($1, $2)")
    writes = [
        ("simple UPDATE", True, pgwire.query(update)),
        ("extended UPDATE", True, pgwire.parse("", update) + pgwire.bind("", "") + pgwire.execute() + pgwire.sync()),
        ("batch of INSERTs", False, insert + pgwire.bind("", "", [str(good), "good"]) + pgwire.execute()
         + pgwire.bind("", "", [str(bad), "bad"]) + pgwire.execute() + pgwire.sync()),
    ]
    for i in range(2):
        r.primary(i).psql(DEFERRED_CHECK_TRIGGER.replace("AFTER INSERT", "AFTER INSERT OR UPDATE"))
    try:
        with wire_connect(r.port) as w:
            for what, rows_first, request in writes:
                ok(w, f"DELETE FROM users WHERE id IN ({k0}, {k1})")
                if rows_first:
                    ok(w, f"INSERT INTO users (id, name) VALUES ({k0}, 'before'), ({k1}, 'before')")
                w.send(request)
                msgs = w.recv_until(b"Z", timeout=10)
                assert error_codes(msgs) == ["23514"], f"{what}: {describe_reply(msgs)}"
                assert status_of(msgs) == "I", what
                names = {s: shard_rows(r, s, "SELECT name FROM users WHERE id IN (%s, %s)", (k0, k1))
                         for s in (0, 1)}
                want = [("before",)] if rows_first else []
                assert names == {0: want, 1: want}, f"{what}: {names}"
    finally:
        for i in range(2):
            r.primary(i).psql("DROP TRIGGER IF EXISTS routing_deferred_check ON users")


def test_client_leaving_while_its_batch_commits_over_shards_does_not_split_it(r):
    """An extended batch of one-shard INSERTs for both shards ends with Sync, and the client goes
    away while shardgate commits it (one shard's commit slowed by a deferred trigger): Postgres
    runs a batch whose Sync it has to the end, so both rows are committed."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    for i in range(2):
        r.primary(i).psql(SLOW_COMMIT_TRIGGER)
    try:
        w = wire_connect(r.port)
        insert = pgwire.parse("", "INSERT INTO users (id, name) VALUES ($1, $2)")
        w.send(insert + pgwire.bind("", "", [str(k0), "slow"]) + pgwire.execute()
               + pgwire.bind("", "", [str(k1), "slow"]) + pgwire.execute() + pgwire.sync())
        time.sleep(0.5)
        w.sock.close()
        wait_until(lambda: placement(r, "users", "id", [k0, k1]) == {k0: [0], k1: [1]}, 15,
                   "both shards' rows committed")
    finally:
        for i in range(2):
            r.primary(i).psql("DROP TRIGGER IF EXISTS routing_slow_commit ON users")


def test_statement_for_other_shards_after_rollback_of_a_failed_transaction_in_one_batch(r):
    """BEGIN, a statement that fails on one shard, then one batch [ROLLBACK, multi-shard UPDATE].
    The held server ends the failed transaction and would run the rest of the batch alone: the
    UPDATE is refused (0A000) rather than run on one shard only; a one-shard statement for that
    server still runs."""
    k0 = r.keys_on(0, 1)[0]
    k1 = r.keys_on(1, 1)[0]
    with wire_connect(r.port) as w:
        ok(w, f"INSERT INTO users (id, name) VALUES ({k0}, 'a'), ({k1}, 'b')")
        for follow, code in ((f"UPDATE users SET name = 'all' WHERE id IN ({k0}, {k1})", "0A000"),
                             (f"UPDATE users SET name = 'one' WHERE id = {k0}", None)):
            ok(w, "BEGIN")
            assert error_codes(w.simple(f"INSERT INTO users (id, name) VALUES ({k0}, 'dup')")) == ["23505"]
            w.send(b"".join(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute()
                            for sql in ("ROLLBACK", follow)) + pgwire.sync())
            msgs = w.recv_until(b"Z", timeout=10)
            assert error_codes(msgs) == ([code] if code else []), describe_reply(msgs)
            assert status_of(msgs) == "I"
        names = {s: shard_rows(r, s, "SELECT name FROM users WHERE id IN (%s, %s)", (k0, k1)) for s in (0, 1)}
        assert names == {0: [("one",)], 1: [("b",)]}, names


def test_with_hold_cursor_through_the_extended_protocol_on_another_shard(r):
    """psycopg's server-side cursor with withhold=True (BEGIN, then DECLARE ... WITH HOLD through
    the extended protocol) whose query is on shard 1 while the session first held shard 0's
    connection: the cursor pins the session to the connection its DECLARE runs on, and its rows
    come after the COMMIT, as in Postgres. (Session pooling pins at the Parse and refuses it.)"""
    if r.pool_mode == "session":
        pytest.skip("session pooling pins at Parse")
    k1 = r.keys_on(1, 1)[0]
    with sg(r) as conn:
        conn.execute("INSERT INTO users (id, name) VALUES (%s, 'held')", (k1,))
    with sg(r, autocommit=False) as conn:
        conn.execute("SELECT 1")  # the transaction begins on the default shard
        cur = conn.cursor(name="held_cursor", withhold=True)
        cur.execute("SELECT name FROM users WHERE id = %s", (k1,))
        conn.commit()
        assert cur.fetchall() == [("held",)]
        cur.close()
        conn.commit()


def test_pinned_session_lends_its_connection_to_a_multi_shard_statement(make_cluster):
    """A session pinned by LISTEN to a pool's only connection runs multi-shard statements: its
    shard's part runs on the connection it holds (the pool has no other, and waiting for it would
    never end), which stays the session's, as LISTEN shows."""
    c = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction",
                     general={"workers": 1, "default_pool_size": 1, "query_wait_timeout": 3000},
                     database_options={"default_shard": 0}, extra_toml=SHARDING_TOML)
    for i in range(2):
        c.shards[i].primary.psql("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
    with wire_connect(c.shardgate.port) as w:
        ok(w, "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
        ok(w, "LISTEN sg_lend")
        assert ok(w, "SELECT count(*) FROM users") == [["4"]]
        ok(w, "UPDATE users SET name = 'x'")
        assert ok(w, "SELECT count(*) FROM users WHERE name = 'x'") == [["4"]]
        c.shards[0].primary.psql("NOTIFY sg_lend, 'still here'")  # LISTEN ran on the default shard
        msgs = w.simple("SELECT 1")
        assert [pgwire.parse_notification(m)[1:] for m in msgs if m.type == b"A"] == [("sg_lend", "still here")]
    # The client's cancel request stops the part on the lent connection too.
    with psycopg.connect(c.shardgate.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("LISTEN sg_lend")
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10) FROM users WHERE id IN (1, 3)")
        timer.join()
        assert time.monotonic() - started < 5


def test_batch_error_then_a_message_shardgate_refuses_itself_ends_at_the_sync(r):
    """A batch whose statement fails on the server, followed in the same write by a message that
    shardgate refuses itself (a Bind of an unknown statement, a Parse of a name in use): Postgres
    skips everything after the error up to the Sync, so the client gets one error and
    ReadyForQuery. (shardgate's own statement failing the batch was skipped by the server too,
    and its ReadyForQuery, never sent, was taken for the Sync's: the client hung.)"""
    batches = [
        pgwire.parse("", "SELECT 1/0") + pgwire.bind("", "") + pgwire.execute() + pgwire.bind("", "nosuch") +
        pgwire.execute() + pgwire.sync(),
        pgwire.parse("s1", "SELECT 1") + pgwire.parse("", "SELECT 1/0") + pgwire.bind("", "") + pgwire.execute() +
        pgwire.parse("s1", "SELECT 2") + pgwire.sync(),
    ]
    with wire_connect(r.port) as w:
        for batch in batches:
            w.send(batch)
            msgs = w.recv_until(b"Z", timeout=5)
            assert error_codes(msgs) == ["22012"], describe_reply(msgs)
            assert status_of(msgs) == "I", describe_reply(msgs)
        assert ok(w, "SELECT 1") == [["1"]]


def test_savepoints_in_a_transaction_that_spans_shards(r):
    """Savepoints work on one shard and across shards: a shard that joins the transaction after a
    SAVEPOINT makes it too, so ROLLBACK TO undoes its part; RELEASE and ROLLBACK TO run on every shard;
    ROLLBACK TO recovers from an error on a shard and from shardgate's own 0A000, as in Postgres."""
    k0, k0b = r.keys_on(0, 2)
    k1, k1b, k1c = r.keys_on(1, 3)
    with wire_connect(r.port) as w:
        ok(w, "BEGIN")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k0}, 'sp')")
        ok_in_transaction(w, "SAVEPOINT on_one_shard")
        ok_in_transaction(w, f"UPDATE users SET name = 'undone' WHERE id = {k0}")
        ok_in_transaction(w, "ROLLBACK TO SAVEPOINT on_one_shard")
        end_transaction(w, "COMMIT", "COMMIT")
        assert shard_rows(r, 0, "SELECT name FROM users WHERE id = %s", (k0,)) == [("sp",)]

        # Shard 1 joins after the savepoint (a quoted, mixed-case name): ROLLBACK TO undoes its insert.
        ok(w, "BEGIN")
        ok_in_transaction(w, f"UPDATE users SET name = 'kept' WHERE id = {k0}")
        ok_in_transaction(w, 'SAVEPOINT "Mixed ""Case"""')
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1}, 'undone')")
        assert ok_in_transaction(w, "SELECT count(*) FROM users WHERE name = 'undone'") == [["1"]]
        ok_in_transaction(w, 'ROLLBACK TO SAVEPOINT "Mixed ""Case"""')
        assert ok_in_transaction(w, f"SELECT name FROM users WHERE id IN ({k0}, {k1})") == [["kept"]]
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1b}, 'kept')")
        ok_in_transaction(w, "SAVEPOINT b")
        ok_in_transaction(w, f"UPDATE users SET name = 'kept2' WHERE id IN ({k0}, {k1b})")
        ok_in_transaction(w, "RELEASE SAVEPOINT b")
        msgs = w.simple("ROLLBACK TO SAVEPOINT b")  # released on every shard
        assert error_codes(msgs) == ["3B001"] and status_of(msgs) == "E", describe_reply(msgs)
        ok_in_transaction(w, 'ROLLBACK TO SAVEPOINT "Mixed ""Case"""')  # still there, and recovers
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1c}, 'kept')")
        end_transaction(w, "COMMIT", "COMMIT")
    assert placement(r, "users", "id", [k0, k1, k1b, k1c]) == {k0: [0], k1: [], k1b: [], k1c: [1]}
    assert shard_rows(r, 0, "SELECT name FROM users WHERE id = %s", (k0,)) == [("kept",)]

    with wire_connect(r.port) as w:
        # An error on one shard, then ROLLBACK TO: the transaction goes on over both shards.
        ok(w, "BEGIN")
        ok_in_transaction(w, f"INSERT INTO users (id, name) VALUES ({k1}, 'both')")
        ok_in_transaction(w, f"UPDATE users SET name = 'both' WHERE id = {k0}")
        ok_in_transaction(w, "SAVEPOINT s")
        msgs = w.simple(f"INSERT INTO users (id, name) VALUES ({k1}, 'dup')")
        assert error_codes(msgs) == ["23505"] and status_of(msgs) == "E", describe_reply(msgs)
        expect_aborted(w, f"SELECT name FROM users WHERE id = {k0}")
        ok_in_transaction(w, "ROLLBACK TO SAVEPOINT s")
        # shardgate's own refusal (a window function over sharded rows) aborts; ROLLBACK TO recovers.
        msgs = w.simple("SELECT row_number() OVER () FROM users")
        assert error_codes(msgs) == ["0A000"] and status_of(msgs) == "E", describe_reply(msgs)
        ok_in_transaction(w, "ROLLBACK TO SAVEPOINT s")
        assert ok_in_transaction(w, f"SELECT name FROM users WHERE id IN ({k0}, {k1}) ORDER BY id") == [
            ["both"], ["both"]]
        end_transaction(w, "COMMIT", "COMMIT")
        assert ok(w, "SELECT 1") == [["1"]]
    assert placement(r, "users", "id", [k0, k1]) == {k0: [0], k1: [1]}
    for s, k in ((0, k0), (1, k1)):
        assert shard_rows(r, s, "SELECT name FROM users WHERE id = %s", (k,)) == [("both",)], f"shard{s}"

    # Pipelined: every query sent before the first answer (shardgate routes them ahead of the
    # servers' replies), the savepoint made after the transaction is bound to shard 0.
    pipeline = ["BEGIN", f"UPDATE users SET name = 'piped' WHERE id = {k0}", "SAVEPOINT p",
                f"UPDATE users SET name = 'undone' WHERE id = {k1}", "ROLLBACK TO SAVEPOINT p",
                f"UPDATE users SET name = 'piped' WHERE id = {k1b}", "COMMIT"]
    with wire_connect(r.port) as w:
        w.send(b"".join(pgwire.query(q) for q in pipeline))
        replies = [w.recv_until(b"Z") for _ in pipeline]
        assert [error_codes(m) for m in replies] == [[]] * len(pipeline), [describe_reply(m) for m in replies]
        assert [status_of(m) for m in replies] == ["T"] * (len(pipeline) - 1) + ["I"]
    assert shard_rows(r, 0, "SELECT name FROM users WHERE id = %s", (k0,)) == [("piped",)]
    assert shard_rows(r, 1, "SELECT name FROM users WHERE id = %s", (k1,)) == [("both",)]


def test_settings_in_a_transaction_that_spans_shards(r):
    """SET LOCAL (and SET CONSTRAINTS) made before a shard joins the transaction hold on that shard
    too; once the transaction runs on both shards, SET, SET LOCAL, RESET and SET CONSTRAINTS run on
    each (a reported setting's ParameterStatus reaches the client); ROLLBACK TO undoes them on every
    shard, and on a shard that joins afterwards; the session's settings follow COMMIT and ROLLBACK."""
    k0, = r.keys_on(0, 1)
    k1, = r.keys_on(1, 1)
    seed_users(r, [(k0, "a"), (k1, "b")])
    probe = ("SELECT current_setting('work_mem'), current_setting('statement_timeout'), "
             "current_setting('app.tenant', true), current_setting('application_name') FROM users WHERE id = {}")

    def on_both(w) -> list:
        """The settings as each shard's connection of the transaction has them. (A custom setting
        never set on a connection reads NULL there, and '' once set and undone: which the pool
        hands over decides, as between two connections to one Postgres, so both read as ''.)"""
        rows = [ok_in_transaction(w, probe.format(k))[0] for k in (k0, k1)]
        return [[v if v is not None or i != 2 else "" for i, v in enumerate(row)] for row in rows]

    def statuses(msgs) -> dict:
        return dict(pgwire.parse_parameter_status(m) for m in msgs if m.type == b"S")

    with wire_connect(r.port) as w:
        ok(w, "SET application_name = 'before'")
        # Made while the transaction runs on shard 0 only: shard 1 runs them when it joins.
        ok(w, "BEGIN")
        ok_in_transaction(w, f"UPDATE users SET name = 'x' WHERE id = {k0}")
        ok_in_transaction(w, "SET LOCAL work_mem = '7MB'")
        ok_in_transaction(w, "SET LOCAL app.tenant = 't1'")
        ok_in_transaction(w, "SET statement_timeout = '77s'")
        assert on_both(w) == [["7MB", "77s", "t1", "before"]] * 2

        # Now on both shards: each statement runs on each.
        for sql, tag in (("SET LOCAL work_mem = '9MB'", "SET"), ("SET app.tenant TO 't2'", "SET"),
                         ("RESET statement_timeout", "RESET"), ("SET CONSTRAINTS ALL DEFERRED", "SET CONSTRAINTS")):
            msgs = w.simple(sql)
            assert not pgwire.errors(msgs) and status_of(msgs) == "T", f"{sql}: {describe_reply(msgs)}"
            assert command_tags(msgs) == [tag], f"{sql}: {command_tags(msgs)}"
        assert on_both(w) == [["9MB", "0", "t2", "before"]] * 2
        msgs = w.simple("SET application_name = 'spread'")
        assert status_of(msgs) == "T" and statuses(msgs) == {"application_name": "spread"}, describe_reply(msgs)
        assert on_both(w) == [["9MB", "0", "t2", "spread"]] * 2

        # ROLLBACK TO undoes what was set since the savepoint on both shards.
        ok_in_transaction(w, "SAVEPOINT s")
        ok_in_transaction(w, "SET LOCAL work_mem = '11MB'")
        ok_in_transaction(w, "SET application_name = 'inner'")
        assert on_both(w) == [["11MB", "0", "t2", "inner"]] * 2
        msgs = w.simple("ROLLBACK TO SAVEPOINT s")  # the client learns application_name's value back
        assert status_of(msgs) == "T" and statuses(msgs) == {"application_name": "spread"}, describe_reply(msgs)
        assert on_both(w) == [["9MB", "0", "t2", "spread"]] * 2
        # In the extended protocol (psycopg sends every statement so).
        msgs = extended_query(w, "SET LOCAL work_mem = '10MB'")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T" and command_tags(msgs) == ["SET"], \
            describe_reply(msgs)
        assert on_both(w) == [["10MB", "0", "t2", "spread"]] * 2

        # A setting a shard refuses fails the transaction, as in Postgres.
        msgs = w.simple("SET LOCAL work_mem = 'lots'")
        assert error_codes(msgs) == ["22023"] and status_of(msgs) == "E", describe_reply(msgs)
        ok_in_transaction(w, "ROLLBACK TO SAVEPOINT s")
        # With other statements in one query it would reach one shard only: refused.
        msgs = w.simple("SET LOCAL work_mem = '5MB'; SELECT 1")
        assert error_codes(msgs) == ["0A000"] and status_of(msgs) == "E", describe_reply(msgs)
        msgs = w.simple("ROLLBACK")
        assert status_of(msgs) == "I" and statuses(msgs).get("application_name") == "before", describe_reply(msgs)
        assert ok(w, "SHOW statement_timeout") == [["0"]]
        assert ok(w, "SHOW application_name") == [["before"]]

        # Undone before a shard joins: the joining shard does not get it.
        ok(w, "BEGIN")
        ok_in_transaction(w, f"UPDATE users SET name = 'y' WHERE id = {k0}")
        ok_in_transaction(w, "SAVEPOINT s")
        ok_in_transaction(w, "SET LOCAL work_mem = '11MB'")
        ok_in_transaction(w, "ROLLBACK TO SAVEPOINT s")
        ok_in_transaction(w, "SET LOCAL work_mem = '12MB'")
        assert on_both(w) == [["12MB", "0", "", "before"]] * 2
        # A session-level SET made over both shards is the session's after COMMIT.
        ok_in_transaction(w, "SET statement_timeout = '66s'")
        end_transaction(w, "COMMIT", "COMMIT")
        for k in (k0, k1):
            assert ok(w, f"SELECT current_setting('statement_timeout'), current_setting('work_mem') "
                         f"FROM users WHERE id = {k}") == [["66s", "4MB"]]
    assert placement(r, "users", "id", [k0, k1]) == {k0: [0], k1: [1]}
    assert shard_rows(r, 0, "SELECT name FROM users WHERE id = %s", (k0,)) == [("y",)]


def test_set_then_savepoint_in_one_extended_batch_keeps_their_order(r):
    """A SET and a SAVEPOINT pipelined in one batch (psycopg's pipeline mode): the SET came first,
    so ROLLBACK TO keeps it, on the shard that ran them and on a shard that joins afterwards (which
    runs them again in that order). The SET's change settles only at the batch's end; the savepoint
    used to be recorded before it."""
    k0, = r.keys_on(0, 1)
    k1, = r.keys_on(1, 1)
    seed_users(r, [(k0, "a"), (k1, "b")])
    probe = "SELECT current_setting('work_mem') FROM users WHERE id = {}"
    with wire_connect(r.port) as w:
        ok(w, "BEGIN")
        ok_in_transaction(w, f"UPDATE users SET name = 'x' WHERE id = {k0}")
        batch = b"".join(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute()
                         for sql in ("SET work_mem = '7MB'", "SAVEPOINT s"))
        w.send(batch + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert ok_in_transaction(w, probe.format(k1)) == [["7MB"]]  # shard 1 joins here
        ok_in_transaction(w, "ROLLBACK TO SAVEPOINT s")
        assert [ok_in_transaction(w, probe.format(k))[0] for k in (k0, k1)] == [["7MB"]] * 2
        end_transaction(w, "COMMIT", "COMMIT")
        for k in (k0, k1):
            assert ok(w, probe.format(k)) == [["7MB"]]


def test_several_sets_in_one_extended_batch_all_follow_the_session(r):
    """Two SETs in one extended batch (psycopg's pipeline mode sends them so), then a SET in a later
    batch: the session keeps all three, on whichever shard's connection runs its next statements."""
    k0, = r.keys_on(0, 1)
    k1, = r.keys_on(1, 1)
    seed_users(r, [(k0, "a"), (k1, "b")])

    def statement(sql: str) -> bytes:
        return pgwire.parse("", sql) + pgwire.bind("", "", ()) + pgwire.execute()

    with wire_connect(r.port) as w:
        w.send(statement("SET work_mem = '5MB'") + statement("SET statement_timeout = '6s'") + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and command_tags(msgs) == ["SET", "SET"], describe_reply(msgs)
        w.send(statement("SET lock_timeout = '7s'") + pgwire.sync())
        assert not pgwire.errors(w.recv_until(b"Z"))
        for k in (k0, k1):
            assert ok(w, "SELECT current_setting('work_mem'), current_setting('statement_timeout'), "
                         f"current_setting('lock_timeout') FROM users WHERE id = {k}") == [["5MB", "6s", "7s"]]


@pytest.mark.parametrize("payload", [b"SELECT id FROM users ORDER BY id", b"SELECT 1\0SELECT 2\0", b""],
                         ids=["no-terminator", "nul-inside", "empty"])
def test_query_message_that_is_not_one_string_gets_08P01_as_from_postgres(r, payload):
    """A Query whose payload is not one NUL-terminated string is refused before routing (the text up to
    a NUL is not the whole message), with the ERROR Postgres gives it: the session goes on."""
    def answer(port: int) -> tuple:
        with wire_connect(port) as w:
            w.send(pgwire.message(b"Q", payload))
            msgs = w.recv_until(b"Z")
            return error_codes(msgs), status_of(msgs), ok(w, "SELECT 1")

    assert answer(r.port) == answer(r.primary(0).port) == (["08P01"], "I", [["1"]])


@pytest.mark.parametrize("spanning", [False, True], ids=["error-on-first-shard", "error-on-second-shard"])
def test_aborted_transaction_refuses_statements_for_any_shard_with_25P02(r, spanning):
    """Once an error aborts a transaction, it answers every statement but ROLLBACK/COMMIT with 25P02, as
    Postgres does: for the shard that failed, for the other shard (touched or not yet), for a statement
    over every shard and for one without a table. COMMIT answers ROLLBACK and nothing stays on any shard."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    seed_users(r, [(k0, "a"), (k1, "a")])
    with wire_connect(r.port) as w:
        ok(w, "BEGIN")
        ok_in_transaction(w, f"UPDATE users SET name = 'lost' WHERE id = {k0}")
        failing = k0
        if spanning:
            ok_in_transaction(w, f"UPDATE users SET name = 'lost' WHERE id = {k1}")
            failing = k1
        msgs = w.simple(f"SELECT 1 / (id - id) FROM users WHERE id = {failing}")
        assert error_codes(msgs) == ["22012"] and status_of(msgs) == "E", describe_reply(msgs)
        for sql in (f"SELECT id FROM users WHERE id = {k1}", f"SELECT id FROM users WHERE id = {k0}",
                    f"UPDATE users SET name = 'later' WHERE id = {k1}", "SELECT count(*) FROM users",
                    "UPDATE users SET name = 'everywhere'", "SELECT 1"):
            expect_aborted(w, sql)
        end_transaction(w, "COMMIT", "ROLLBACK")
        assert ok(w, "SELECT count(*) FROM users WHERE name = 'a'") == [["2"]]
    for s, k in ((0, k0), (1, k1)):
        assert shard_rows(r, s, "SELECT name FROM users WHERE id = %s", (k,)) == [("a",)], f"shard{s}"


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_cross_shard_transaction_extended(r, end):
    """In the extended protocol: a transaction writes on both shards and COMMIT commits both, ROLLBACK
    neither. Then an error in a transaction that spans shards aborts it: the next statement gets 25P02,
    and a COMMIT afterwards commits nothing (Postgres rolls an aborted transaction back)."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    k0b = r.keys_on(0, 1, skip=1)[0]
    with wire_connect(r.port) as w:
        assert status_of(w.simple("BEGIN")) == "T"
        msgs = extended_query(w, "INSERT INTO users (id, name) VALUES ($1, 'kept?')", (str(k0),))
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        msgs = extended_query(w, "INSERT INTO users (id, name) VALUES ($1, 'other')", (str(k1),))
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert command_tags(msgs) == ["INSERT 0 1"], describe_reply(msgs)
        msgs = extended_query(w, "SELECT count(*) FROM users WHERE id = $1 OR id = $2", (str(k0), str(k1)))
        assert pgwire.data_rows(msgs) == [["2"]] and status_of(msgs) == "T", describe_reply(msgs)
        end_transaction(w, end.upper(), end.upper())
        assert ok(w, f"SELECT count(*) FROM users WHERE id = {k0}") == [["1" if end == "commit" else "0"]]
        # An error on the second shard of a transaction.
        assert status_of(w.simple("BEGIN")) == "T"
        msgs = extended_query(w, "INSERT INTO users (id, name) VALUES ($1, 'lost')", (str(k0b),))
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        msgs = extended_query(w, "SELECT 1 / $1::int FROM users WHERE id = $2", ("0", str(k1)))
        assert error_codes(msgs) == ["22012"], describe_reply(msgs)
        assert status_of(msgs) == "E", f"the transaction is not aborted after the error: {describe_reply(msgs)}"
        msgs = extended_query(w, "SELECT count(*) FROM users WHERE id = $1", (str(k0b),))
        assert error_codes(msgs) == ["25P02"] and status_of(msgs) == "E", describe_reply(msgs)
        end_transaction(w, "COMMIT", "ROLLBACK")
        assert ok(w, f"SELECT count(*) FROM users WHERE id = {k0b}") == [["0"]]
    kept = end == "commit"
    assert placement(r, "users", "id", [k0, k1, k0b]) == {k0: [0] if kept else [], k1: [1] if kept else [],
                                                          k0b: []}


def test_cross_shard_write_transaction_psycopg(r):
    """psycopg outside autocommit (it sends BEGIN itself): writes for both shards commit together; in a
    transaction that fails on its second shard the next statement gets 25P02, rollback() works and nothing
    of it stays; a multi-shard UPDATE in a transaction commits on both shards."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    k0b = r.keys_on(0, 1, skip=1)[0]
    with sg(r, autocommit=False) as conn:
        conn.execute("INSERT INTO users (id, name) VALUES (%s, 'x')", (k0,))
        conn.execute("INSERT INTO users (id, name) VALUES (%s, 'y')", (k1,))
        got = conn.execute("SELECT id, name FROM users WHERE id = ANY(%s) ORDER BY id", ([k0, k1],)).fetchall()
        assert got == sorted([(k0, "x"), (k1, "y")])
        conn.commit()
        assert placement(r, "users", "id", [k0, k1]) == {k0: [0], k1: [1]}
        # Fails on its second shard.
        conn.execute("UPDATE users SET name = 'lost' WHERE id = %s", (k0,))
        conn.execute("INSERT INTO users (id, name) VALUES (%s, 'lost')", (k0b,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO users (id, name) VALUES (%s, 'dup')", (k1,))
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT name FROM users WHERE id = %s", (k0,)).fetchone() == ("x",)
        conn.rollback()
        # One UPDATE for both shards in a transaction.
        cur = conn.execute("UPDATE users SET name = 'z' WHERE id IN (%s, %s)", (k0, k1))
        assert cur.rowcount == 2
        conn.commit()
    assert placement(r, "users", "id", [k0, k1, k0b]) == {k0: [0], k1: [1], k0b: []}
    for s, k in ((0, k0), (1, k1)):
        assert shard_rows(r, s, "SELECT name FROM users WHERE id = %s", (k,)) == [("z",)], f"shard{s}"


# ---------------------------------------------------------------------------------------------
# Extended batches (one Sync: one transaction) with statements for both shards
# ---------------------------------------------------------------------------------------------


def insert_pipeline(rows: list[tuple[int, str]]) -> bytes:
    """One INSERT per row, Parse/Bind/Execute each, no Sync (the caller ends the batch)."""
    out = b""
    for k, name in rows:
        out += (pgwire.parse("", "INSERT INTO users (id, name) VALUES ($1, $2)") + pgwire.bind("", "", (str(k), name))
                + pgwire.execute())
    return out


def test_executemany_across_shards_psycopg(r):
    """psycopg's executemany pipelines every row with one Sync at the end: one implicit transaction. Rows
    for both shards (alternating) land on their shards; a batch with a failing row (a duplicate key on
    shard 1) leaves nothing on either shard, as Postgres rolls the whole batch back; RETURNING rows come
    back in order; the connection goes on."""
    k0s, k1s = r.keys_on(0, 6), r.keys_on(1, 6)
    keys = [k for pair in zip(k0s[:4], k1s[:4]) for k in pair]
    with sg(r) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO users (id, name) VALUES (%s, %s)", [(k, f"e{k}") for k in keys])
        assert placement(r, "users", "id", keys) == {k: [r.hash_shard[k]] for k in keys}
        fresh = [k0s[4], k1s[4]]
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO users (id, name) VALUES (%s, %s)",
                                [(fresh[0], "lost"), (fresh[1], "lost"), (k1s[0], "dup")])
        assert placement(r, "users", "id", fresh) == {k: [] for k in fresh}
        with conn.cursor() as cur:
            cur.executemany("UPDATE users SET name = %s WHERE id = %s RETURNING id, name",
                            [("u0", k0s[0]), ("u1", k1s[0]), ("u2", k0s[1])], returning=True)
            got = []
            while True:
                got += cur.fetchall()
                if not cur.nextset():
                    break
        assert got == [(k0s[0], "u0"), (k1s[0], "u1"), (k0s[1], "u2")]
        assert conn.execute("SELECT count(*) FROM users WHERE id = ANY(%s)", (keys,)).fetchone() == (len(keys),)
    assert shard_rows(r, 1, "SELECT name FROM users WHERE id = %s", (k1s[0],)) == [("u1",)]


def test_executemany_across_shards_asyncpg(r):
    """asyncpg's executemany binds one prepared statement per row and syncs once (atomic): rows for both
    shards land on theirs, and a failing row rolls back the rows of both shards."""
    k0s, k1s = r.keys_on(0, 5), r.keys_on(1, 5)
    keys = [k for pair in zip(k0s[:3], k1s[:3]) for k in pair]
    fresh = [k1s[3], k0s[3]]

    async def scenario():
        conn = await apg_connect(r)
        try:
            await conn.executemany("INSERT INTO users (id, name) VALUES ($1, $2)", [(k, f"a{k}") for k in keys])
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.executemany("INSERT INTO users (id, name) VALUES ($1, $2)",
                                       [(fresh[0], "lost"), (fresh[1], "lost"), (k0s[0], "dup")])
            return await conn.fetchval("SELECT count(*) FROM users WHERE id = ANY($1::bigint[])", keys + fresh)
        finally:
            await conn.close()

    assert run_async(scenario()) == len(keys)
    assert placement(r, "users", "id", keys + fresh) == {**{k: [r.hash_shard[k]] for k in keys},
                                                         **{k: [] for k in fresh}}


def test_batch_across_shards_raw(r):
    """By hand: a batch with rows for both shards commits at its Sync (ReadyForQuery 'I'); a batch whose
    statement on its second shard fails leaves nothing on the first; after an error on the first shard,
    the batch's statements for the other shard are skipped, as Postgres skips everything up to the Sync;
    inside BEGIN a batch may span shards too, and COMMIT ends it on both."""
    k0s, k1s = r.keys_on(0, 5), r.keys_on(1, 5)
    with wire_connect(r.port) as w:
        w.send(insert_pipeline([(k0s[0], "a"), (k1s[0], "b"), (k0s[1], "c")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "I", describe_reply(msgs)
        assert command_tags(msgs) == ["INSERT 0 1"] * 3, describe_reply(msgs)
        assert placement(r, "users", "id", [k0s[0], k1s[0], k0s[1]]) == {k0s[0]: [0], k1s[0]: [1], k0s[1]: [0]}
        # Fails on its second shard: the first shard's row goes too.
        w.send(insert_pipeline([(k0s[2], "lost"), (k1s[0], "dup")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["23505"] and status_of(msgs) == "I", describe_reply(msgs)
        assert command_tags(msgs) == ["INSERT 0 1"], describe_reply(msgs)
        # Fails on its first shard: the other shard's statement never runs.
        w.send(insert_pipeline([(k0s[0], "dup"), (k1s[1], "skipped"), (k0s[3], "skipped")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["23505"] and status_of(msgs) == "I", describe_reply(msgs)
        assert command_tags(msgs) == [], describe_reply(msgs)
        assert placement(r, "users", "id", [k0s[2], k1s[1], k0s[3]]) == {k0s[2]: [], k1s[1]: [], k0s[3]: []}
        # Inside BEGIN: the batch spreads the transaction; it stays open after the Sync.
        assert status_of(w.simple("BEGIN")) == "T"
        w.send(insert_pipeline([(k1s[2], "t"), (k0s[4], "t")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert placement(r, "users", "id", [k1s[2], k0s[4]]) == {k1s[2]: [], k0s[4]: []}  # not committed
        end_transaction(w, "COMMIT", "COMMIT")
        assert ok(w, "SELECT count(*) FROM users") == [["5"]]
    assert placement(r, "users", "id", [k1s[2], k0s[4]]) == {k1s[2]: [1], k0s[4]: [0]}


def pipelined(sql: str, params: tuple = ()) -> bytes:
    """Parse/Bind/Execute of the unnamed statement, no Sync."""
    return pgwire.parse("", sql) + pgwire.bind("", "", params) + pgwire.execute()


def test_batch_beginning_a_transaction_spans_shards(r):
    """pgjdbc with autocommit off sends BEGIN in one batch with the transaction's first statements.
    The batch then is that transaction: over both shards its Sync answers 'T' and commits nothing, and
    ROLLBACK undoes both shards' rows; a multi-shard statement in such a batch (first, or after a keyed
    one) runs in the transaction and sees its rows. Without BEGIN, a batch with a keyed statement and a
    multi-shard one is one implicit transaction, committed at its Sync, or rolled back as a whole."""
    k0s, k1s = r.keys_on(0, 4), r.keys_on(1, 4)
    begin = pipelined("BEGIN")
    count_keys = "SELECT count(*) FROM users WHERE id IN ({})"
    with wire_connect(r.port) as w:
        # BEGIN, rows for both shards, Sync: the transaction stays open; ROLLBACK undoes both.
        w.send(begin + insert_pipeline([(k0s[0], "rolled back"), (k1s[0], "rolled back")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert command_tags(msgs) == ["BEGIN", "INSERT 0 1", "INSERT 0 1"], describe_reply(msgs)
        assert not [m for m in msgs if m.type == b"N"], describe_reply(msgs)  # no stray warning
        assert placement(r, "users", "id", [k0s[0], k1s[0]]) == {k0s[0]: [], k1s[0]: []}
        end_transaction(w, "ROLLBACK", "ROLLBACK")
        assert placement(r, "users", "id", [k0s[0], k1s[0]]) == {k0s[0]: [], k1s[0]: []}
        # The same, committed.
        w.send(begin + insert_pipeline([(k1s[1], "kept"), (k0s[1], "kept")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        end_transaction(w, "COMMIT", "COMMIT")
        assert placement(r, "users", "id", [k1s[1], k0s[1]]) == {k1s[1]: [1], k0s[1]: [0]}
        # BEGIN and a multi-shard statement first.
        w.send(begin + pipelined(count_keys.format(f"{k0s[1]}, {k1s[1]}")) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert pgwire.data_rows(msgs) == [["2"]], describe_reply(msgs)
        end_transaction(w, "COMMIT", "COMMIT")
        # BEGIN, a keyed row, then a multi-shard statement that sees it; rolled back.
        w.send(begin + insert_pipeline([(k0s[2], "rolled back")])
               + pipelined(count_keys.format(f"{k0s[1]}, {k1s[1]}, {k0s[2]}")) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        assert pgwire.data_rows(msgs) == [["3"]], describe_reply(msgs)
        end_transaction(w, "ROLLBACK", "ROLLBACK")
        # No BEGIN: a keyed row and a multi-shard statement commit together at the Sync ...
        w.send(insert_pipeline([(k1s[2], "kept")]) + pipelined(count_keys.format(f"{k1s[1]}, {k1s[2]}, {k0s[1]}"))
               + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "I", describe_reply(msgs)
        assert pgwire.data_rows(msgs) == [["3"]], describe_reply(msgs)
        # ... or not at all, when the multi-shard statement fails.
        w.send(insert_pipeline([(k0s[3], "rolled back")])
               + pipelined("SELECT 1 / (id - id) FROM users WHERE id IN ({})".format(f"{k0s[1]}, {k1s[1]}"))
               + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["22012"] and status_of(msgs) == "I", describe_reply(msgs)
        assert ok(w, count_keys.format(f"{k0s[0]}, {k1s[0]}, {k0s[2]}, {k0s[3]}")) == [["0"]]
    assert placement(r, "users", "id", [k1s[2], k0s[2], k0s[3]]) == {k1s[2]: [1], k0s[2]: [], k0s[3]: []}


def test_batch_across_shards_in_a_pinned_session_is_refused(r):
    """A session pinned to its connection (a temporary table, on the default shard) cannot spread a
    batch: the statement for the other shard gets 0A000, the rest of the batch is skipped, and what
    ran of it is rolled back, as after any error in a batch. The session goes on, still pinned."""
    d = r.default_shard
    kd, ko = r.keys_on(d, 2), r.keys_on(1 - d, 1)[0]
    with wire_connect(r.port) as w:
        assert not pgwire.errors(w.simple("CREATE TEMP TABLE pinned_here (x int)"))
        w.send(insert_pipeline([(kd[0], "rolled back"), (ko, "refused")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["0A000"] and status_of(msgs) == "I", describe_reply(msgs)
        assert command_tags(msgs) == ["INSERT 0 1"], describe_reply(msgs)
        w.send(insert_pipeline([(ko, "refused"), (kd[1], "skipped")]) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["0A000"] and status_of(msgs) == "I", describe_reply(msgs)
        assert command_tags(msgs) == [], describe_reply(msgs)
        assert ok(w, "SELECT count(*) FROM pinned_here") == [["0"]]
        # A simple query for the other shard: refused once, and the session goes on.
        msgs = w.simple(f"SELECT count(*) FROM users WHERE id = {ko}")
        assert error_codes(msgs) == ["0A000"] and status_of(msgs) == "I", describe_reply(msgs)
        assert "temporary table" in pgwire.errors(msgs)[0].fields.get("D", ""), describe_reply(msgs)
        assert ok(w, "SELECT count(*) FROM pinned_here") == [["0"]]
    assert placement(r, "users", "id", kd + [ko]) == {k: [] for k in kd + [ko]}


def test_session_level_set_config_keeps_the_session_on_its_shard(r):
    """set_config(..., false) changes a setting only where it runs, and shardgate does not see the
    value: the session stays on that shard, where the setting holds, and a statement for another
    shard gets 0A000 naming the cause rather than running without it. The refused query is answered
    and done with: the session's next statements run (they used to get the same refusal again)."""
    d = r.default_shard
    kd, ko = r.keys_on(d, 1)[0], r.keys_on(1 - d, 1)[0]
    with wire_connect(r.port) as w:
        assert ok(w, "SELECT set_config('app.tenant', '42', false)") == [["42"]]
        assert ok(w, f"SELECT current_setting('app.tenant') FROM (SELECT 1) s "
                     f"LEFT JOIN users ON users.id = {kd}") == [["42"]]
        msgs = w.simple(f"SELECT count(*) FROM users WHERE id = {ko}")
        errors = pgwire.errors(msgs)
        assert [e.code for e in errors] == ["0A000"], describe_reply(msgs)
        assert "set_config() of a session setting" in errors[0].fields.get("D", ""), errors[0]
        assert ok(w, "SELECT current_setting('app.tenant')") == [["42"]]


def test_client_leaving_mid_batch_across_shards_commits_nothing(r):
    """A client sends rows for both shards, sees them run (Flush), and leaves without its Sync: neither
    shard keeps its row, and neither is left holding the rows' locks (the same rows go in afterwards,
    within a lock timeout)."""
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    w = wire_connect(r.port)
    try:
        w.send(insert_pipeline([(k0, "gone"), (k1, "gone")]) + pgwire.flush())
        got = []
        while command_tags(got) != ["INSERT 0 1"] * 2:
            got += w.recv_until(b"CE")
            assert not pgwire.errors(got), describe_reply(got)
    finally:
        w.close()
    with sg(r) as conn:
        conn.execute("SET lock_timeout = '5s'")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO users (id, name) VALUES (%s, %s)", [(k0, "again"), (k1, "again")])
    for s, k in ((0, k0), (1, k1)):
        assert shard_rows(r, s, "SELECT name FROM users WHERE id = %s", (k,)) == [("again",)], f"shard{s}"


@pytest.mark.parametrize("prelude", [[], ["SELECT 1"], ["SET LOCAL statement_timeout = '9s'", "SELECT 1"]],
                         ids=["begin", "begin-select1", "begin-setlocal"])
def test_transaction_starts_where_it_is_needed(r, prelude):
    """BEGIN (and statements any shard can run) then a statement for shard 1: the transaction runs on
    shard 1, commits there, and nothing is left open elsewhere."""
    k1 = r.keys_on(1, 1)[0]
    with wire_connect(r.port) as w:
        assert status_of(w.simple("BEGIN")) == "T"
        for sql in prelude:
            ok(w, sql)
        ok(w, f"INSERT INTO users (id, name) VALUES ({k1}, 'late')")
        assert ok(w, f"SELECT name FROM users WHERE id = {k1}") == [["late"]]
        if prelude and prelude[0].startswith("SET LOCAL"):
            got = ok(w, f"SELECT current_setting('statement_timeout') FROM users WHERE id = {k1}")
            assert got == [["9s"]], f"SET LOCAL before the transaction moved to shard 1 was lost: {got}"
        got = ok(w, "SELECT txid_current_if_assigned() IS NOT NULL")
        assert got == [["t"]], "a table-less statement after the INSERT ran outside the shard-1 transaction"
        msgs = w.simple("COMMIT")
        assert not pgwire.errors(msgs) and status_of(msgs) == "I", describe_reply(msgs)
    assert placement(r, "users", "id", [k1]) == {k1: [1]}


# ---------------------------------------------------------------------------------------------
# Range and list strategies
# ---------------------------------------------------------------------------------------------

RANGE_KEYS = {0: 0, 1: 0, 999_999: 0, RANGE_SPLIT: 1, RANGE_SPLIT + 1: 1, 10**12: 1, INT8_MAX: 1}


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_range_routing(r, protocol):
    with (sg_simple(r) if protocol == "simple" else sg(r)) as conn:
        for k in RANGE_KEYS:
            conn.execute("INSERT INTO events (id, payload) VALUES (%s, %s)", (k, f"e{k}"))
        assert placement(r, "events", "id", RANGE_KEYS) == {k: [s] for k, s in RANGE_KEYS.items()}
        for k in RANGE_KEYS:
            assert conn.execute("SELECT payload FROM events WHERE id = %s", (k,)).fetchall() == [(f"e{k}",)]
            assert conn.execute("UPDATE events SET payload = 'u' WHERE id = %s", (k,)).rowcount == 1
        assert conn.execute("DELETE FROM events WHERE id = %s", (999_999,)).rowcount == 1
        assert conn.execute("DELETE FROM events WHERE id = %s", (RANGE_SPLIT,)).rowcount == 1
        # Both sides of the boundary in one transaction (each shard its own), rolled back on both.
        conn.execute("BEGIN")
        assert conn.execute("SELECT payload FROM events WHERE id = %s", (0,)).fetchall() == [("u",)]
        assert conn.execute("SELECT payload FROM events WHERE id = %s", (RANGE_SPLIT + 1,)).fetchall() == [("u",)]
        cur = conn.execute("UPDATE events SET payload = 'v' WHERE id = %s OR id = %s", (1, RANGE_SPLIT + 1))
        assert cur.statusmessage == "UPDATE 2", cur.statusmessage
        conn.execute("ROLLBACK")
    left = {k: [s] for k, s in RANGE_KEYS.items() if k not in (999_999, RANGE_SPLIT)}
    assert placement(r, "events", "id", RANGE_KEYS) == {**{999_999: [], RANGE_SPLIT: []}, **left}
    for s in (0, 1):
        assert shard_rows(r, s, "SELECT DISTINCT payload FROM events") == [("u",)]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_range_key_outside_every_range(r, protocol):
    with (sg_simple(r) if protocol == "simple" else sg(r)) as conn:
        e = expect_error(conn, "INSERT INTO events (id, payload) VALUES (%s, 'x')", (-1,), sqlstate="22023")
        assert "-1" in error_text(e), f"the error does not name the key: {error_text(e)}"
        assert "events" in error_text(e), error_text(e)
        e = expect_error(conn, "INSERT INTO events (id, payload) VALUES (%s, 'x')", (INT8_MIN,), sqlstate="22023")
        assert str(INT8_MIN) in error_text(e), error_text(e)
        # A read for such a key can only find nothing: an empty answer or the same error are both right.
        try:
            rows = conn.execute("SELECT * FROM events WHERE id = %s", (-1,)).fetchall()
            assert rows == []
        except psycopg.Error as err:
            assert err.sqlstate == "22023", error_text(err)
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    assert placement(r, "events", "id", [-1, INT8_MIN]) == {-1: [], INT8_MIN: []}


LIST_ROWS = {"t-eu": ("eu", 0), "t-uk": ("uk", 0), "t-us": ("us", 1), "t-br": ("br", 1), "t-jp": ("jp", 1)}


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_list_routing(r, protocol):
    with (sg_simple(r) if protocol == "simple" else sg(r)) as conn:
        for name, (region, _) in LIST_ROWS.items():
            conn.execute("INSERT INTO tenants (name, region) VALUES (%s, %s)", (name, region))
        for name, (region, _) in LIST_ROWS.items():
            got = conn.execute("SELECT name FROM tenants WHERE region = %s", (region,)).fetchall()
            assert got == [(name,)], f"region {region!r}"
        assert conn.execute("UPDATE tenants SET name = 'renamed' WHERE region = %s", ("uk",)).rowcount == 1
        assert conn.execute("DELETE FROM tenants WHERE region = %s", ("br",)).rowcount == 1
        got = conn.execute("SELECT name FROM tenants WHERE region IN ('eu', 'uk') ORDER BY name").fetchall()
        assert got == [("renamed",), ("t-eu",)]
    placed = placement(r, "tenants", "region", [reg for reg, _ in LIST_ROWS.values()])
    want = {reg: ([] if reg == "br" else [s]) for reg, s in LIST_ROWS.values()}
    assert placed == want, "region: shards holding it"


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_text_key_from_a_client_not_in_utf8(r, protocol):
    """The shards store text in UTF-8; a LATIN1 client sends other bytes for 'é', which Postgres
    converts and shardgate does not: a non-ASCII key is refused rather than routed by its LATIN1
    bytes. ASCII keys are the same bytes in every encoding."""
    with (sg_simple(r) if protocol == "simple" else sg(r)) as conn:
        conn.execute("SET client_encoding = 'LATIN1'")
        conn.execute("INSERT INTO tenants (name, region) VALUES (%s, %s)", ("t-ascii", "uk"))
        for sql, args in (("INSERT INTO tenants (name, region) VALUES (%s, %s)", ("t-e", "r\u00e9")),
                          ("SELECT name FROM tenants WHERE region = %s", ("r\u00e9",))):
            e = expect_error(conn, sql, sqlstate="0A000", params=args)
            assert "UTF8" in error_text(e) and "client_encoding" in error_text(e)
        with pytest.raises(psycopg.Error) as copy_error:
            with conn.cursor().copy("COPY tenants (name, region) FROM STDIN") as copy:
                copy.write("t-c\tr\u00e9\n".encode("latin1"))
        assert copy_error.value.sqlstate == "0A000", error_text(copy_error.value)
        conn.execute("SET client_encoding = 'UTF8'")
        conn.execute("INSERT INTO tenants (name, region) VALUES (%s, %s)", ("t-e", "r\u00e9"))
        got = conn.execute("SELECT name FROM tenants WHERE region = %s", ("r\u00e9",)).fetchall()
        assert got == [("t-e",)]
        conn.execute("DELETE FROM tenants WHERE name IN ('t-e', 't-ascii')")


# ---------------------------------------------------------------------------------------------
# Reference and unsharded tables
# ---------------------------------------------------------------------------------------------


def test_reference_table_reads(r):
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    seed_users(r, [(k0, "a", "fr"), (k1, "b", "us")])
    with sg_simple(r) as conn:
        assert conn.execute("SELECT code, name FROM countries ORDER BY code").fetchall() == COUNTRIES
        assert conn.execute("SELECT name FROM countries WHERE code = 'uk'").fetchall() == [("United Kingdom",)]
    with sg(r) as conn:
        assert conn.execute("SELECT name FROM countries WHERE code = %s", ("us",)).fetchall() == [("United States",)]
        # Joined to a sharded table, the statement runs on that table's shard.
        for k, country in ((k0, "France"), (k1, "United States")):
            got = conn.execute("SELECT c.name FROM users u JOIN countries c ON c.code = u.country"
                               " WHERE u.id = %s", (k,)).fetchall()
            assert got == [(country,)], f"user {k}"


REFERENCE_WRITES = {
    "insert": ("INSERT INTO countries (code, name) VALUES (%s, %s)", ("de", "Germany"), "INSERT 0 1",
               sorted(COUNTRIES + [("de", "Germany")])),
    "update": ("UPDATE countries SET name = %s WHERE code = %s", ("Frankreich", "fr"), "UPDATE 1",
               [("fr", "Frankreich")] + COUNTRIES[1:]),
    "delete": ("DELETE FROM countries WHERE code = %s", ("us",), "DELETE 1", COUNTRIES[:2]),
}


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("write", list(REFERENCE_WRITES))
def test_reference_table_writes_go_to_every_shard(r, write, protocol):
    """A write to a reference table changes every shard's copy; the client sees the tag one Postgres would
    give for its one table (the copies are not counted twice). Rolled back, it changes no copy."""
    sql, params, tag, want = REFERENCE_WRITES[write]
    with (sg_simple(r) if protocol == "simple" else sg(r)) as conn:
        conn.execute("BEGIN")
        conn.execute(sql, params)
        conn.execute("ROLLBACK")
        for s in (0, 1):
            got = shard_rows(r, s, "SELECT code, name FROM countries ORDER BY code")
            assert got == COUNTRIES, f"shard{s} after ROLLBACK"
        cur = conn.execute(sql, params)
        assert cur.statusmessage == tag, f"{sql}: {cur.statusmessage}"
        assert conn.execute("SELECT code, name FROM countries ORDER BY code").fetchall() == want
    for s in (0, 1):
        assert shard_rows(r, s, "SELECT code, name FROM countries ORDER BY code") == want, f"shard{s}"


def test_unsharded_tables_live_on_the_default_shard(r):
    d = r.default_shard
    with sg_simple(r) as conn:
        assert conn.execute("SELECT shard FROM whereami").fetchall() == [(f"shard{d}",)]
        conn.execute("INSERT INTO notes VALUES (1, 'hello'), (2, 'world')")
        assert conn.execute("UPDATE notes SET body = 'there' WHERE id = 2").rowcount == 1
        assert conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall() == [(1, "hello"), (2, "there")]
        # Joins between unsharded tables stay on that shard.
        got = conn.execute("SELECT w.shard, n.body FROM whereami w, notes n WHERE n.id = 1").fetchall()
        assert got == [(f"shard{d}", "hello")]
    with sg(r) as conn:
        assert conn.execute("SELECT body FROM notes WHERE id = %s", (1,)).fetchall() == [("hello",)]
        assert conn.execute("SELECT shard FROM whereami WHERE shard LIKE %s", ("shard%",)).fetchall() == \
            [(f"shard{d}",)]
    for s in (0, 1):
        want = [(1, "hello"), (2, "there")] if s == d else []
        assert shard_rows(r, s, "SELECT id, body FROM notes ORDER BY id") == want, f"shard{s}"


# ---------------------------------------------------------------------------------------------
# EXPLAIN
# ---------------------------------------------------------------------------------------------


def explain_lines(conn, sql: str) -> list[str]:
    rows = conn.execute(sql).fetchall()
    assert rows and all(len(row) == 1 for row in rows), rows
    return [row[0] for row in rows]


def test_explain_route(r):
    k0, k1 = r.keys_on(0, 1)[0], r.keys_on(1, 1)[0]
    cases = [
        (f"SELECT * FROM users WHERE id = {k0}", "shard0", [str(k0)]),
        (f"SELECT * FROM users WHERE id = {k1}", "shard1", [str(k1)]),
        (f"INSERT INTO users (id, name) VALUES ({k1}, 'no')", "shard1", [str(k1)]),
        (f"UPDATE orders SET amount = 1 WHERE user_id = {k0}", "shard0", [str(k0)]),
        ("SELECT * FROM events WHERE id = 999999", "shard0", ["999999"]),
        ("SELECT * FROM events WHERE id = 1000000", "shard1", ["1000000"]),
        ("SELECT * FROM tenants WHERE region = 'uk'", "shard0", ["uk"]),
        ("SELECT * FROM tenants WHERE region = 'zz'", "shard1", ["zz"]),
        ("SELECT * FROM whereami", f"shard{r.default_shard}", []),
    ]
    with sg_simple(r) as conn:
        for sql, shard, values in cases:
            lines = explain_lines(conn, f"EXPLAIN (ROUTE) {sql}")
            text = "\n".join(lines)
            other = "shard1" if shard == "shard0" else "shard0"
            assert shard in text and other not in text, f"EXPLAIN (ROUTE) {sql}:\n{text}"
            for v in values:
                assert v in text, f"EXPLAIN (ROUTE) {sql} does not show the key value {v}:\n{text}"
    # EXPLAIN (ROUTE) runs nothing.
    assert placement(r, "users", "id", [k1]) == {k1: []}


def test_plain_explain_is_postgres_plan_from_the_shard(r):
    ks = {0: r.keys_on(0, 1)[0], 1: r.keys_on(1, 1)[0]}
    seed_users(r, [(k, "ex") for k in ks.values()])
    with sg_simple(r) as conn:
        for s, k in ks.items():
            text = "\n".join(explain_lines(conn, f"EXPLAIN SELECT * FROM users WHERE id = {k}"))
            assert "on users" in text and "cost=" in text, text
            assert f"(id = '{k}'::bigint)" in text or f"(id = {k})" in text, text
            # ANALYZE runs it: one row found only on the shard that holds the key.
            text = "\n".join(explain_lines(
                conn, f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM users WHERE id = {k}"))
            assert "actual rows=1 " in text, f"key {k} (shard{s}):\n{text}"


# ---------------------------------------------------------------------------------------------
# Statements without a key condition run on every shard
# ---------------------------------------------------------------------------------------------


def test_no_key_condition_runs_on_every_shard(r):
    """SELECT, UPDATE and DELETE with no condition on the shard key run on every shard: rows merged,
    aggregates recomputed, command tags summed, and every shard's rows changed."""
    k0s, k1s = r.keys_on(0, 2), r.keys_on(1, 2)
    users = k0s + k1s
    seed_users(r, [(k, f"n{k}") for k in users])
    with sg_simple(r) as conn:
        for u in users:
            conn.execute("INSERT INTO orders (id, user_id, amount) VALUES (%s, %s, %s), (%s, %s, %s)",
                         (u * 10, u, 2, u * 10 + 1, u, u))
        for k, payload in ((5, "x"), (6, "y"), (RANGE_SPLIT + 5, "x"), (RANGE_SPLIT + 6, "y")):
            conn.execute("INSERT INTO events (id, payload) VALUES (%s, %s)", (k, payload))
        for name, region in (("a", "eu"), ("b", "uk"), ("c", "us")):
            conn.execute("INSERT INTO tenants (name, region) VALUES (%s, %s)", (name, region))
    assert placement(r, "events", "id", [5, RANGE_SPLIT + 5]) == {5: [0], RANGE_SPLIT + 5: [1]}
    with sg_simple(r) as conn:
        got = conn.execute("SELECT id, name FROM users").fetchall()
        assert sorted(got) == sorted((k, f"n{k}") for k in users)
        got = conn.execute("SELECT count(*), sum(amount) FROM orders WHERE amount > 3").fetchall()
        assert got == [(sum(1 for u in users if u > 3), sum(u for u in users if u > 3))]
        got = conn.execute("SELECT name FROM tenants WHERE name = 'c'").fetchall()
        assert got == [("c",)]
        cur = conn.execute("UPDATE users SET name = 'all'")
        assert cur.statusmessage == f"UPDATE {len(users)}", cur.statusmessage
        cur = conn.execute("DELETE FROM events WHERE payload = 'x'")
        assert cur.statusmessage == "DELETE 2", cur.statusmessage
        cur = conn.execute("DELETE FROM events WHERE payload = 'nothing'")
        assert cur.statusmessage == "DELETE 0", cur.statusmessage
    with sg(r) as conn:  # the extended protocol too
        got = conn.execute("SELECT id FROM users WHERE name = %s ORDER BY id", ("all",)).fetchall()
        assert got == [(k,) for k in sorted(users)]
        cur = conn.execute("UPDATE users SET name = %s WHERE name = %s", ("again", "all"))
        assert cur.rowcount == len(users)
    for s in (0, 1):
        got = shard_rows(r, s, "SELECT id, name FROM users ORDER BY id")
        assert got == [(k, "again") for k in sorted(users) if r.hash_shard[k] == s], f"shard{s}"
        assert shard_rows(r, s, "SELECT payload FROM events") == [("y",)], f"shard{s}"


def test_multi_shard_result_with_a_row_limit(r):
    """An Execute with a row limit on a multi-shard result (asyncpg's fetchrow and fetchval send 1) gets
    the first rows, then PortalSuspended when there were that many, or CommandComplete when there were
    fewer, as from one Postgres; the next Executes of the portal go on with the rest."""
    k0s, k1s = r.keys_on(0, 3), r.keys_on(1, 2)
    keys = sorted(k0s + k1s)
    seed_users(r, [(k, f"n{k}") for k in keys])
    sql = "SELECT id FROM users ORDER BY id"
    with wire_connect(r.port) as w:
        for limit, rows, end in ((2, keys[:2], "s"), (5, keys, "s"), (6, keys, "C")):
            w.send(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.describe("P") + pgwire.execute("", limit)
                   + pgwire.sync())
            msgs = w.recv_until(b"Z")
            assert not pgwire.errors(msgs), describe_reply(msgs)
            assert pgwire.data_rows(msgs) == [[str(k)] for k in rows], describe_reply(msgs)
            assert pgwire.types(msgs)[-2] == end and status_of(msgs) == "I", describe_reply(msgs)
        w.send(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute("", 1) + pgwire.execute("", 1)
               + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert pgwire.data_rows(msgs) == [[str(keys[0])], [str(keys[1])]], describe_reply(msgs)
        assert pgwire.types(msgs) == "12DsDsZ" and status_of(msgs) == "I", describe_reply(msgs)
        # The portal ended with its (implicit) transaction: the shards say it does not exist.
        w.send(pgwire.execute("", 1) + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["34000"], describe_reply(msgs)
        assert ok(w, "SELECT count(*) FROM users") == [[str(len(keys))]]

    async def scenario():
        conn = await apg_connect(r)
        try:
            count = await conn.fetchval("SELECT count(*) FROM users")
            first = await conn.fetchrow("SELECT id, name FROM users ORDER BY id DESC")
            async with conn.transaction():
                walked = [row["id"] async for row in conn.cursor("SELECT id FROM users ORDER BY id", prefetch=2)]
                cur = await conn.cursor("SELECT id, name FROM users WHERE id <> $1 ORDER BY id DESC", keys[0])
                parts = [await cur.fetch(3), await cur.fetch(3), await cur.fetch(3)]
            return count, tuple(first), walked, [[tuple(row) for row in part] for part in parts]
        finally:
            await conn.close()

    rest = [(k, f"n{k}") for k in reversed(keys[1:])]
    assert run_async(scenario()) == (len(keys), (keys[-1], f"n{keys[-1]}"), keys, [rest[:3], rest[3:], []])


def portal_transcript(port: int, table: str, setup: str = "") -> list[str]:
    """Row-limited Executes of a portal, then more of them in later batches, in and out of transactions,
    after its Close, after the transaction failed and after it ended: what the client sees of each batch
    (message types, rows, tags, SQLSTATEs). Run through shardgate on the sharded table and on one Postgres
    holding the same rows; the transcripts must be equal."""
    sql = f"SELECT id, name FROM {table} ORDER BY id"

    def step(w: pgwire.PgWire, data: bytes, until: bytes = b"Z") -> str:
        w.send(data)
        msgs = w.recv_until(until)
        parts = []
        for m in msgs:
            if m.type == b"D":
                parts.append("D" + ",".join(v.decode() if v is not None else "NULL"
                                            for v in pgwire.parse_data_row(m)))
            elif m.type == b"C":
                parts.append("C:" + pgwire.parse_command_complete(m))
            elif m.type == b"E":
                parts.append("E:" + pgwire.parse_error(m).code)
            elif m.type == b"T":
                parts.append("T" + ",".join(c["name"] for c in pgwire.parse_row_description(m)))
            elif m.type in (b"S", b"N"):
                continue
            else:
                parts.append(m.type.decode())
        return " ".join(parts)

    with wire_connect(port) as w:
        if setup:
            ok(w, setup)
        out = [
            # An implicit transaction: the unnamed portal goes on within its batch.
            step(w, pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.describe("P") + pgwire.execute("", 2)
                 + pgwire.execute("", 2) + pgwire.execute("", 2) + pgwire.execute("", 2) + pgwire.sync()),
            step(w, pgwire.query("BEGIN")),
            # A named portal in a transaction outlives its batch (asyncpg's cursors, JDBC's fetch size).
            step(w, pgwire.parse("", sql) + pgwire.bind("c1", "") + pgwire.execute("c1", 3) + pgwire.sync()),
            step(w, pgwire.describe("P", "c1") + pgwire.execute("c1", 1) + pgwire.sync()),
            step(w, pgwire.parse("", sql) + pgwire.bind("c2", "") + pgwire.execute("c2", 1) + pgwire.sync()),
            step(w, pgwire.execute("c1", 0) + pgwire.execute("c1", 0) + pgwire.execute("c2", 2) + pgwire.sync()),
            step(w, pgwire.close("P", "c2") + pgwire.execute("c1", 5) + pgwire.sync()),
            step(w, pgwire.execute("c2", 1) + pgwire.sync()),  # closed: 34000, and the transaction fails
            step(w, pgwire.execute("c1", 1) + pgwire.sync()),  # 25P02
            step(w, pgwire.query("ROLLBACK")),
            step(w, pgwire.query("BEGIN")),
            step(w, pgwire.parse("", sql) + pgwire.bind("c3", "") + pgwire.execute("c3", 2) + pgwire.sync()),
            # Described before any Execute: the columns come at the Sync (or Flush).
            step(w, pgwire.parse("", sql) + pgwire.bind("c4", "") + pgwire.describe("P", "c4") + pgwire.sync()),
            step(w, pgwire.execute("c4", 4) + pgwire.describe("P", "c4") + pgwire.execute("c4", 4) + pgwire.sync()),
            step(w, pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.describe("P") + pgwire.flush(), b"T"),
            step(w, pgwire.execute("", 0) + pgwire.sync()),
            step(w, pgwire.query("COMMIT")),
            step(w, pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.describe("P") + pgwire.sync()),
            step(w, pgwire.execute("c3", 1) + pgwire.sync()),  # ended with its transaction
            step(w, pgwire.query("SELECT 1")),
        ]
    return out


def test_suspended_multi_shard_portal_matches_postgres(r):
    keys = sorted(r.keys_on(0, 3) + r.keys_on(1, 3))
    seed_users(r, [(k, f"n{k}") for k in keys])
    values = ", ".join(f"({k}::bigint, 'n{k}')" for k in keys)
    reference = portal_transcript(r.primary(0).port, "pg_temp.users_all",
                                  setup=f"CREATE TEMP TABLE users_all (id, name) AS VALUES {values}")
    through = portal_transcript(r.port, "users")
    assert through == reference, "\n".join(f"{a!r}\n{b!r}" for a, b in zip(through, reference) if a != b)


def test_suspended_multi_shard_write_returning_matches_postgres(r):
    """A write on every shard with RETURNING, fetched in parts: Postgres runs it whole at the first
    Execute and tags each part with its own count ("UPDATE 2", then "UPDATE 0"); so does shardgate."""
    keys = sorted(r.keys_on(0, 3) + r.keys_on(1, 3))
    seed_users(r, [(k, f"n{k}") for k in keys])
    values = ", ".join(f"({k}::bigint, 'n{k}')" for k in keys)

    def transcript(port: int, table: str, setup: str = "") -> tuple[str, list[str]]:
        with wire_connect(port) as w:
            if setup:
                ok(w, setup)
            w.send(pgwire.parse("", f"UPDATE {table} SET name = 'u' || id RETURNING id")
                   + pgwire.bind("", "") + pgwire.execute("", 2) + pgwire.execute("", 3)
                   + pgwire.execute("", 3) + pgwire.execute("", 1) + pgwire.sync())
            msgs = w.recv_until(b"Z")
            shape = "".join("C:" + pgwire.parse_command_complete(m) + " " if m.type == b"C" else m.type.decode()
                            for m in msgs if m.type not in (b"S", b"N"))
            return shape, sorted(row[0] for row in pgwire.data_rows(msgs))

    # Described with no Execute in its batch: shardgate would have to run it for its columns, so a
    # write is refused (0A000), and nothing changes.
    with wire_connect(r.port) as w:
        w.send(pgwire.parse("", "UPDATE users SET name = 'd' || id RETURNING id") + pgwire.bind("", "")
               + pgwire.describe("P") + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["0A000"], describe_reply(msgs)
    assert sorted(shard_rows(r, 0, "SELECT name FROM users") + shard_rows(r, 1, "SELECT name FROM users")) == \
        sorted((f"n{k}",) for k in keys)
    reference = transcript(r.primary(0).port, "pg_temp.users_all",
                           setup=f"CREATE TEMP TABLE users_all (id, name) AS VALUES {values}")
    through = transcript(r.port, "users")
    # The rows come in shard order through shardgate: the set of them, and the messages, must match.
    assert through == reference, f"{through!r}\n{reference!r}"
    assert reference[0] == "12DDsDDDsDC:UPDATE 1 C:UPDATE 0 Z", reference
    assert shard_rows(r, 0, "SELECT DISTINCT left(name, 1) FROM users") == [("u",)]


def test_suspended_portal_rest_is_bounded_by_max_merge_bytes(cluster_root, shardgate_bin):
    """The rows kept for a suspended multi-shard portal count against general.max_merge_bytes: past it
    the next Execute gets 53200 (nothing wrong is returned), the session goes on, and smaller rests
    are kept as usual."""
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "portal-bound", shardgate_bin, num_shards=2,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  general={"max_merge_bytes": 65536},
                                  database_options={"default_shard": 0}, extra_toml=SHARDING_TOML) as c:
        for i in range(2):
            c.shards[i].primary.psql(SHARD_DDL.format(shard=f"shard{i}") + COUNTRIES_SQL)
            c.shards[i].primary.psql("INSERT INTO users (id, name) SELECT g, repeat('x', 1000) "
                                     f"FROM generate_series({i * 100 + 1}, {i * 100 + 100}) g")
        with wire_connect(c.shardgate.port) as w:
            w.send(pgwire.parse("", "SELECT id, name FROM users ORDER BY id") + pgwire.bind("", "")
                   + pgwire.execute("", 1) + pgwire.execute("", 1) + pgwire.sync())
            msgs = w.recv_until(b"Z")
            assert pgwire.types(msgs) == "12DsEZ", describe_reply(msgs)
            assert pgwire.data_rows(msgs)[0][0] == "1" and error_codes(msgs) == ["53200"], describe_reply(msgs)
            assert "max_merge_bytes" in pgwire.errors(msgs)[0].message, describe_reply(msgs)
            w.send(pgwire.parse("", "SELECT id FROM users ORDER BY id") + pgwire.bind("", "")
                   + pgwire.execute("", 150) + pgwire.execute("", 0) + pgwire.sync())
            msgs = w.recv_until(b"Z")
            assert not pgwire.errors(msgs), describe_reply(msgs)
            assert [int(row[0]) for row in pgwire.data_rows(msgs)] == list(range(1, 201))
            assert pgwire.types(msgs) == "12" + "D" * 150 + "s" + "D" * 50 + "CZ", describe_reply(msgs)
            assert pgwire.parse_command_complete(msgs[-2]) == "SELECT 50"
            assert ok(w, "SELECT count(*) FROM users") == [["200"]]


# ---------------------------------------------------------------------------------------------
# Refusals: 0A000 with a message that says what is wrong and what to do
# ---------------------------------------------------------------------------------------------


def test_update_of_the_shard_key_is_refused(r):
    k = r.keys_on(0, 1)[0]
    seed_users(r, [(k, "k")])
    with sg(r) as conn:
        e = expect_error(conn, "UPDATE users SET id = %s WHERE id = %s", (k + 1000, k))
        assert "users" in e.diag.message_primary and "id" in e.diag.message_primary, error_text(e)
        assert e.diag.message_hint, error_text(e)
    with sg_simple(r) as conn:
        e = expect_error(conn, "UPDATE orders SET user_id = 5, amount = 2 WHERE user_id = %s", (k,))
        assert "orders" in e.diag.message_primary and "user_id" in e.diag.message_primary, error_text(e)
    assert shard_rows(r, 0, "SELECT id FROM users WHERE id = %s", (k,)) == [(k,)]


def test_join_of_tables_not_colocated_is_refused(r):
    k = r.keys_on(1, 1)[0]
    with sg_simple(r) as conn:
        # users (hash) and events (range) joined on their keys: not co-located.
        e = expect_error(conn, "SELECT * FROM users u JOIN events e ON e.id = u.id WHERE u.id = %s", (k,))
        text = error_text(e)
        assert "events" in e.diag.message_primary or "users" in e.diag.message_primary, text
        assert "co-located" in text or "colocated" in text, text
        assert e.diag.message_hint, text
        # users and orders joined on something other than orders' key.
        e = expect_error(conn, "SELECT * FROM users u JOIN orders o ON o.id = u.id WHERE u.id = %s", (k,))
        assert "orders" in e.diag.message_primary, error_text(e)
        assert e.diag.message_hint, error_text(e)


def test_insert_without_column_list_is_routed(r):
    """The key's position comes from the catalog (more in test_column_order.py)."""
    k = r.keys_on(0, 1)[0]
    with sg_simple(r) as conn:
        conn.execute("INSERT INTO users VALUES (%s, 'nocols')", (k,))
    with sg(r) as conn:
        conn.execute("INSERT INTO events VALUES (%s, 'nocols')", (RANGE_SPLIT + 5,))
    assert placement(r, "users", "id", [k]) == {k: [0]}
    assert placement(r, "events", "id", [RANGE_SPLIT + 5]) == {RANGE_SPLIT + 5: [1]}


def test_messages_after_a_read_error_are_skipped_until_sync(r):
    """A batch fails; the client reads the error (it sent a Flush) and, before its Sync, sends a named
    Parse, a Close of a statement it has, and a Bind of that statement. Postgres skips all three and
    answers only the Sync. A routed session answers Parse and Close itself: it must skip them too, so
    that the new name is not prepared and the closed one is still there. Checked against a shard's
    Postgres directly."""
    direct = after_read_error_transcript(r.primary(0).port)
    assert direct == ["1E 22012", "Z I", "26000", "[['7']]"], direct
    assert after_read_error_transcript(r.port) == direct
