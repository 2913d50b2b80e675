"""Directory sharding: a table (key, shard) on a configured shard's primary says where each key lives;
shardgate reads it in the background (libpq in the thread pool), caches it per worker, records new
keys placed by the hash fallback, and answers SELECT shardgate.move_key(...) itself.

One 2-shard cluster (no replicas, transaction pooling, two workers) for the module:
  * accounts (id bigint): directory shardgate_directory on shard 1, fallback hash
  * sessions (token text): directory session_directory on shard 0, fallback error
Rows are checked on each shard's primary directly. Clients: psycopg in the simple protocol
(ClientCursor) and the extended protocol, asyncpg. Needs shardgate itself.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import psycopg
import pytest

import conftest
import pgcluster
import pgwire

pytestmark = pytest.mark.requires_shardgate

SHARDING_TOML = """\
  [[databases.sharded_tables]]
  name = "accounts"
  column = "id"
  type = "bigint"
  strategy = "directory"
  directory = { table = "shardgate_directory", shard = 1, fallback = "hash" }

  [[databases.sharded_tables]]
  name = "sessions"
  column = "token"
  type = "text"
  strategy = "directory"
  directory = { table = "session_directory", shard = 0, fallback = "error" }
"""

SHARD_DDL = """
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text);
CREATE TABLE sessions (token text PRIMARY KEY, data text);
"""
DIRECTORY_DDL = {
    1: "CREATE TABLE shardgate_directory (key bigint PRIMARY KEY, shard integer NOT NULL);",
    0: "CREATE TABLE session_directory (key text PRIMARY KEY, shard integer NOT NULL);",
}


@pytest.fixture(scope="module")
def dc(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "directory", shardgate_bin, num_shards=2,
                                  replicas_per_shard=0, pool_mode="transaction", general={"workers": 2},
                                  database_options={"default_shard": 0}, extra_toml=SHARDING_TOML) as c:
        for shard in c.shards:
            shard.primary.psql(SHARD_DDL + DIRECTORY_DDL[shard.index])
        yield c


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


_next_key = iter(range(1000, 10**9, 1000))


@pytest.fixture
def base(dc) -> int:
    """A fresh range of 1000 account keys for the test (the workers' caches outlive a test)."""
    return next(_next_key)


def sg(c, **kw) -> psycopg.Connection:
    kw.setdefault("autocommit", True)
    return psycopg.connect(c.shardgate.dsn(), connect_timeout=10, **kw)


def sg_simple(c) -> psycopg.Connection:
    return sg(c, cursor_factory=psycopg.ClientCursor)


def on(c, shard: int, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(c.shards[shard].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def where(c, table: str, column: str, key) -> list[int]:
    return [i for i in range(2) if on(c, i, f"SELECT 1 FROM {table} WHERE {column} = %s", (key,))]


def hash_shard(c, key: int) -> int:
    return conftest.hash_shards(c.shards[0].primary, [key])[key]


def directory(c, key: int) -> list[int]:
    return [s for (s,) in on(c, 1, "SELECT shard FROM shardgate_directory WHERE key = %s", (key,))]


def keys_hashing_to(c, shard: int, start: int, n: int) -> list[int]:
    return [k for k in range(start, start + 200) if hash_shard(c, k) == shard][:n]


def route_of(conn, sql: str) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (ROUTE) " + sql).fetchall())


def test_listed_keys_go_where_the_directory_says(dc, base):
    # Keys the directory sends against their hash, to show it is the directory that decides.
    against = [(k, 1 - hash_shard(dc, k)) for k in range(base, base + 6)]
    on(dc, 1, "INSERT INTO shardgate_directory SELECT unnest(%s::bigint[]), unnest(%s::int[])",
       ([k for k, _ in against], [s for _, s in against]))
    with sg_simple(dc) as conn:
        for k, _ in against[:3]:
            conn.execute("INSERT INTO accounts (id, owner) VALUES (%s, 'simple')", (k,))
    with sg(dc) as conn:
        for k, _ in against[3:]:
            conn.execute("INSERT INTO accounts (id, owner) VALUES (%s, 'extended')", (k,))
        for k, _ in against:
            assert conn.execute("SELECT owner FROM accounts WHERE id = %s", (k,)).fetchall() != [], k
    for k, s in against:
        assert where(dc, "accounts", "id", k) == [s], k


def test_new_keys_are_placed_by_hash_and_recorded(dc, base):
    keys = list(range(base, base + 10))
    with sg_simple(dc) as conn:
        for k in keys[:5]:
            conn.execute("INSERT INTO accounts (id, owner) VALUES (%s, 'new')", (k,))
    with sg(dc) as conn:
        for k in keys[5:]:
            conn.execute("INSERT INTO accounts (id, owner) VALUES (%s, 'new')", (k,))
    for k in keys:
        assert where(dc, "accounts", "id", k) == [hash_shard(dc, k)], k
        assert directory(dc, k) == [hash_shard(dc, k)], k
    # A read of a key the directory does not list goes to its hash shard and records nothing.
    with sg(dc) as conn:
        assert conn.execute("SELECT * FROM accounts WHERE id = %s", (base + 500,)).fetchall() == []
    assert directory(dc, base + 500) == []


def test_concurrent_inserts_of_one_new_key_agree(dc, base):
    """Sessions on both workers insert rows of the same new key: all land on the one recorded shard."""
    k = base + 1

    async def one(n):
        conn = await asyncpg.connect(host=pgcluster.HOST, port=dc.shardgate.port, user="postgres",
                                     password="postgres", database="app", timeout=10)
        try:
            await conn.execute("INSERT INTO accounts (id, owner) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                               k, f"racer{n}")
        finally:
            await conn.close()

    async def run():
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(8))), 60)

    asyncio.run(run())
    assert where(dc, "accounts", "id", k) == directory(dc, k) == [hash_shard(dc, k)]


def test_fallback_error(dc):
    on(dc, 0, "INSERT INTO session_directory VALUES ('known', 1) ON CONFLICT DO NOTHING")
    with sg_simple(dc) as conn:
        conn.execute("INSERT INTO sessions VALUES ('known', 'x') ON CONFLICT DO NOTHING")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("INSERT INTO sessions VALUES ('unknown', 'x')")
        assert e.value.sqlstate == "22023", e.value
        assert "session_directory" in e.value.diag.message_primary
        # A read of an unlisted key finds no rows, wherever it runs.
        assert conn.execute("SELECT * FROM sessions WHERE token = 'unknown'").fetchall() == []
        assert conn.execute("SELECT data FROM sessions WHERE token = 'known'").fetchall() == [("x",)]
    assert where(dc, "sessions", "token", "known") == [1]
    assert where(dc, "sessions", "token", "unknown") == []


def test_move_key(dc, base):
    k = keys_hashing_to(dc, 0, base, 1)[0]
    with sg_simple(dc) as conn:
        conn.execute("INSERT INTO accounts (id, owner) VALUES (%s, 'mover')", (k,))
    assert where(dc, "accounts", "id", k) == [0] and directory(dc, k) == [0]
    # Warm several sessions (both workers) so that every worker caches the old entry.
    conns = [sg_simple(dc) for _ in range(6)]
    try:
        for conn in conns:
            assert "shard0" in route_of(conn, f"SELECT * FROM accounts WHERE id = {k}")
        with sg_simple(dc) as conn:
            assert conn.execute("SELECT shardgate.move_key('accounts', %s, 1)", (str(k),)).fetchall() == [("shard1",)]
        assert directory(dc, k) == [1]
        for conn in conns:
            # Invalidation reaches the other worker through its task queue: allow it a moment.
            for _ in range(50):
                if "shard1" in route_of(conn, f"SELECT * FROM accounts WHERE id = {k}"):
                    break
                time.sleep(0.05)
            assert "shard1" in route_of(conn, f"SELECT * FROM accounts WHERE id = {k}")
            # The row was not moved: shard 1 has none of it yet.
            assert conn.execute("SELECT * FROM accounts WHERE id = %s", (k,)).fetchall() == []
    finally:
        for conn in conns:
            conn.close()
    # Shard names work too, and a key not yet listed gets a row.
    with sg_simple(dc) as conn:
        assert conn.execute("SELECT shardgate.move_key('accounts', %s, 'shard0')", (base + 999,)).fetchall() == [("shard0",)]
    assert directory(dc, base + 999) == [0]


def test_move_key_errors(dc, base):
    with sg_simple(dc) as conn:
        for sql, state in [
            ("SELECT shardgate.move_key('nosuch', '1', 0)", "42P01"),
            ("SELECT shardgate.move_key('accounts', 'abc', 0)", "22P02"),
            ("SELECT shardgate.move_key('accounts', '1', 7)", "22023"),
            ("SELECT shardgate.move_key('accounts', '1', 'shard9')", "22023"),
            ("SELECT shardgate.move_key('accounts', '1')", "22023"),
        ]:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == state, (sql, e.value)
        conn.execute("BEGIN")
        with pytest.raises(psycopg.Error) as e:
            conn.execute(f"SELECT shardgate.move_key('accounts', '{base}', 0)")
        assert e.value.sqlstate == "0A000"
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    # Only admins move keys.
    with psycopg.connect(dc.shardgate.dsn(user="md5user", password="md5pass"), autocommit=True,
                         connect_timeout=10, cursor_factory=psycopg.ClientCursor) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(f"SELECT shardgate.move_key('accounts', '{base}', 0)")
        assert e.value.sqlstate == "42501"
    assert directory(dc, base) == []
