"""INSERT without a column list into a sharded table: shardgate reads the table's column order from the
catalog (attnum order of the columns not dropped, unqualified names resolved by the session's
search_path) on the default shard's primary, in the background, and routes the row by the key found
at the key column's position.

One 2-shard cluster (no replicas, transaction pooling, two workers) for the module. Rows are checked
on each shard's primary directly, against Postgres's own satisfies_hash_partition (MODULUS 2).
Clients: psycopg in the simple protocol (ClientCursor) and the extended protocol (server-side
parameters), and asyncpg. Needs shardgate itself: skipped with SHARDGATE_TARGET=direct.
"""

from __future__ import annotations

import asyncio

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
  strategy = "hash"

  [[databases.sharded_tables]]
  name = "widgets"
  column = "id"
  type = "bigint"
  strategy = "hash"

  [[databases.sharded_tables]]
  name = "ghost"
  column = "id"
  type = "bigint"
  strategy = "hash"
"""

# The key is not the first column, a dropped column sits before it, and widgets exists twice with
# the key in different places: public.widgets (id, label), other.widgets (label, id).
SHARD_DDL = """
CREATE TABLE accounts (dropped_before int, name text, id bigint PRIMARY KEY, note text);
ALTER TABLE accounts DROP COLUMN dropped_before;
CREATE TABLE widgets (id bigint PRIMARY KEY, label text);
CREATE SCHEMA other;
CREATE TABLE other.widgets (label text, id bigint PRIMARY KEY);
"""
CLEAN_SQL = "TRUNCATE accounts, widgets, other.widgets"


@pytest.fixture(scope="module")
def cc(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "column-order", shardgate_bin, num_shards=2,
                                  replicas_per_shard=0, pool_mode="transaction", general={"workers": 2},
                                  database_options={"default_shard": 0}, extra_toml=SHARDING_TOML) as c:
        for shard in c.shards:
            shard.primary.psql(SHARD_DDL)
        yield c


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


@pytest.fixture
def c(cc):
    for shard in cc.shards:
        shard.primary.psql(CLEAN_SQL, timeout=30)
    return cc


def sg(c, **kw) -> psycopg.Connection:
    kw.setdefault("autocommit", True)
    return psycopg.connect(c.shardgate.dsn(), connect_timeout=10, **kw)


def hash_shard(c, key: int) -> int:
    """The remainder Postgres's PARTITION BY HASH (MODULUS 2) gives key."""
    return conftest.hash_shards(c.shards[0].primary, [key])[key]


def rows_on(c, shard: int, sql: str) -> list[tuple]:
    with psycopg.connect(c.shards[shard].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        return conn.execute(sql).fetchall()


def where(c, table: str, key: int) -> list[int]:
    return [i for i in range(2) if rows_on(c, i, f"SELECT 1 FROM {table} WHERE id = {key}")]


def test_simple_protocol_rows_land_on_their_hash_shard(c):
    keys = list(range(1, 21))
    with sg(c, cursor_factory=psycopg.ClientCursor) as conn:
        for k in keys:
            conn.execute("INSERT INTO accounts VALUES (%s, %s, %s)", (f"name{k}", k, "simple"))
        # Read back through shardgate by key: the same shard.
        for k in keys:
            assert conn.execute("SELECT name FROM accounts WHERE id = %s", (k,)).fetchall() == [(f"name{k}",)]
    for k in keys:
        assert where(c, "accounts", k) == [hash_shard(c, k)], k
    # The row is whole: the values went to the columns they were written for.
    k = keys[0]
    assert rows_on(c, hash_shard(c, k), f"SELECT name, id, note FROM accounts WHERE id = {k}") == [("name1", 1, "simple")]


def test_extended_protocol_and_multi_row(c):
    with sg(c) as conn:
        for k in range(100, 110):
            conn.execute("INSERT INTO accounts VALUES (%s, %s, %s)", (f"x{k}", k, "extended"))
        # Named prepared statement, executed several times with keys of both shards.
        with conn.cursor() as cur:
            for k in range(110, 116):
                cur.execute("INSERT INTO accounts VALUES (%s, %s, 'prepared')", (f"p{k}", k), prepare=True)
    for k in range(100, 116):
        assert where(c, "accounts", k) == [hash_shard(c, k)], k
    # A multi-row INSERT whose rows all hash to one shard is a one-shard statement.
    same = [k for k in range(200, 260) if hash_shard(c, k) == 1][:3]
    with sg(c, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("INSERT INTO accounts VALUES ('m', %s, NULL), ('m', %s, NULL), ('m', %s, NULL)", same)
    assert [where(c, "accounts", k) for k in same] == [[1]] * 3


def test_asyncpg(c):
    async def run():
        conn = await asyncpg.connect(host=pgcluster.HOST, port=c.shardgate.port, user="postgres", password="postgres",
                                     database="app", timeout=10)
        try:
            for k in range(300, 306):
                await conn.execute("INSERT INTO accounts VALUES ($1, $2, $3)", f"a{k}", k, "asyncpg")
            stmt = await conn.prepare("SELECT note FROM accounts WHERE id = $1")
            return [await stmt.fetchval(k) for k in range(300, 306)]
        finally:
            await conn.close()

    assert asyncio.run(run()) == ["asyncpg"] * 6
    for k in range(300, 306):
        assert where(c, "accounts", k) == [hash_shard(c, k)], k


def test_search_path_picks_the_table(c):
    k = 7
    with sg(c, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("INSERT INTO widgets VALUES (%s, 'public')", (k,))  # public.widgets (id, label)
        conn.execute("SET search_path = other, public")
        conn.execute("INSERT INTO widgets VALUES ('other', %s)", (k,))  # other.widgets (label, id)
        conn.execute("RESET search_path")
        conn.execute("INSERT INTO widgets VALUES (%s, 'public again')", (k + 1,))
    assert where(c, "widgets", k) == [hash_shard(c, k)]
    assert where(c, "other.widgets", k) == [hash_shard(c, k)]
    assert where(c, "widgets", k + 1) == [hash_shard(c, k + 1)]
    assert rows_on(c, hash_shard(c, k), f"SELECT label FROM other.widgets WHERE id = {k}") == [("other",)]


def test_qualified_name(c):
    with sg(c) as conn:
        conn.execute("INSERT INTO other.widgets VALUES (%s, %s)", ("q", 42))
    assert where(c, "other.widgets", 42) == [hash_shard(c, 42)]


def test_missing_table_and_missing_key_are_errors(c):
    with sg(c, cursor_factory=psycopg.ClientCursor) as conn:
        # Declared as sharded but created nowhere: Postgres's own words.
        with pytest.raises(psycopg.Error) as e:
            conn.execute("INSERT INTO ghost VALUES (1, 'x')")
        assert e.value.sqlstate == "42P01", e.value
        assert "ghost" in e.value.diag.message_primary
        # Too few values to reach the key column (id is the second column).
        with pytest.raises(psycopg.Error) as e:
            conn.execute("INSERT INTO accounts VALUES ('only a name')")
        assert e.value.sqlstate == "0A000", e.value
        # The session carries on.
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
        conn.execute("INSERT INTO accounts VALUES ('after', 9, NULL)")
    assert where(c, "accounts", 9) == [hash_shard(c, 9)]


def test_many_sessions_at_once(c):
    """Sessions on both workers wait for lookups together (one per table and worker is run)."""
    async def one(k):
        conn = await asyncpg.connect(host=pgcluster.HOST, port=c.shardgate.port, user="postgres", password="postgres",
                                     database="app", timeout=10)
        try:
            await conn.execute(f"INSERT INTO widgets VALUES ({k}, 'many')")
        finally:
            await conn.close()

    async def run():
        await asyncio.wait_for(asyncio.gather(*(one(k) for k in range(500, 520))), 60)

    asyncio.run(run())
    for k in range(500, 520):
        assert where(c, "widgets", k) == [hash_shard(c, k)], k
