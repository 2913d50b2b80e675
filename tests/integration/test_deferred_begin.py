"""A BEGIN sent on its own under transaction pooling is answered by shardgate and reaches a shard only with
the transaction's first statement, on the shard that statement needs: no shard holds a transaction for
the client before then, and the transaction still behaves as Postgres's would (isolation level, READ
ONLY, errors, savepoints, COMMIT AND CHAIN, an empty transaction, a first statement over several shards).
A pass-through database (one server, nothing to route) defers it too: the client holds no server
connection between BEGIN and its first statement.

Clusters: two shards, no replica, transaction pooling; items(id) is range-sharded ([0, 1000) on shard
0, the rest on shard 1). For the pass-through tests, one server behind a pool of one connection.
Placement and open transactions are read on the shard primaries directly. Clients: the raw wire client (to see tags, notices and ReadyForQuery states),
psycopg 3 and asyncpg (whose transactions begin with BEGIN on its own).

Needs shardgate itself: skipped with SHARDGATE_TARGET=direct.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import asyncpg
import psycopg
import pytest

import conftest
import pgwire
from txn_helpers import connect, describe_reply, error_codes, ok

pytestmark = pytest.mark.requires_shardgate

SHARDING_TOML = """\
  [[databases.sharded_tables]]
  name = "items"
  column = "id"
  type = "bigint"
  strategy = "range"
  ranges = [ { from = 0, to = 1000, shard = 0 }, { from = 1000, shard = 1 } ]
"""
SHARD_DDL = "CREATE TABLE items (id bigint PRIMARY KEY, note text);"
ON_0, ON_1 = 7, 1007  # an items key on each shard


@pytest.fixture(scope="module")
def cluster2(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "deferred-begin", shardgate_bin, num_shards=2,
                                  replicas_per_shard=0, pool_mode="transaction", general={"workers": 1},
                                  database_options={"default_shard": 0}, extra_toml=SHARDING_TOML) as c:
        for shard in c.shards:
            shard.primary.psql(SHARD_DDL)
        yield c


@pytest.fixture
def c(cluster2):
    """The module's cluster with an empty items table."""
    for shard in cluster2.shards:
        shard.primary.psql("SET lock_timeout = '10s'; TRUNCATE items", timeout=30)
    return cluster2


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


def status_of(msgs: list[pgwire.Message]) -> str:
    assert msgs and msgs[-1].type == b"Z", describe_reply(msgs)
    return msgs[-1].payload.decode()


def tags(msgs: list[pgwire.Message]) -> list[str]:
    return [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"]


def run(w: pgwire.PgWire, sql: str, want_status: str, want_tags: list[str] | None = None,
        want_errors: list[str] | None = None) -> list[list[str | None]]:
    """A simple query whose errors, ReadyForQuery state and (if given) tags are as Postgres's."""
    msgs = w.simple(sql)
    assert error_codes(msgs) == (want_errors or []), f"{sql}: {describe_reply(msgs)}"
    assert status_of(msgs) == want_status, f"{sql}: {describe_reply(msgs)}"
    if want_tags is not None:
        assert tags(msgs) == want_tags, f"{sql}: {describe_reply(msgs)}"
    return pgwire.data_rows(msgs)


def local_count(c, metric: str = "shardgate_queries_total") -> float:
    """metric{route="local"} summed over its other labels, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{c.shardgate.metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(metric + "{") and 'route="local"' in line)


async def asyncpg_connect(cluster) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=cluster.shardgate.port, user="postgres",
                                 password="postgres", database="app", timeout=10)


def open_transactions(c) -> list[int]:
    """Per shard, the client backends of database app inside a transaction, read on the primaries."""
    out = []
    for shard in c.shards:
        with psycopg.connect(shard.primary.dsn(), autocommit=True, connect_timeout=10) as conn:
            out.append(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()").fetchone()[0])
    return out


def rows_on(c, shard: int) -> list[int]:
    with psycopg.connect(c.shards[shard].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        return [k for (k,) in conn.execute("SELECT id FROM items ORDER BY id")]


def test_begin_holds_no_shard_until_the_first_statement(c):
    """After BEGIN no shard has a transaction open for the client (before, BEGIN ran on the shard the
    session used last, and moved with a ROLLBACK when the first statement needed the other one); the
    first statement opens it on its own shard only; the transaction began before that statement ran."""
    with connect(c.shardgate.port) as w:
        run(w, f"SELECT count(*) FROM items WHERE id = {ON_0}", "I")  # shard 0 was used last
        local_before = local_count(c)
        run(w, "BEGIN", "T", ["BEGIN"])
        assert open_transactions(c) == [0, 0]
        assert local_count(c) == local_before + 1, "the BEGIN is not counted as answered by shardgate"
        first = run(w, f"SELECT now()::text, count(*) FROM items WHERE id = {ON_1}", "T")
        assert open_transactions(c) == [0, 1]
        time.sleep(0.05)
        second = run(w, f"SELECT now()::text, count(*) FROM items WHERE id = {ON_1}", "T")
        assert second == first, "the first statement ran outside the transaction"
        run(w, "COMMIT", "I", ["COMMIT"])
        assert open_transactions(c) == [0, 0]


@pytest.mark.parametrize("begin,end,tag", [("BEGIN", "COMMIT", "COMMIT"), ("BEGIN", "END", "COMMIT"),
                                           ("START TRANSACTION", "ROLLBACK", "ROLLBACK"),
                                           ("BEGIN", "ABORT", "ROLLBACK")])
def test_empty_transaction_ends_without_a_shard(c, begin, end, tag):
    """Tags as Postgres's: START TRANSACTION's is its own, END's is COMMIT, ABORT's ROLLBACK."""
    with connect(c.shardgate.port) as w:
        transactions_before = local_count(c, "shardgate_transactions_total")
        run(w, begin, "T", [begin])
        run(w, end, "I", [tag])
        assert open_transactions(c) == [0, 0]
        assert local_count(c, "shardgate_transactions_total") == transactions_before + 1
        run(w, "SELECT 1", "I")


def test_writes_commit_and_roll_back_as_one_transaction(c):
    with connect(c.shardgate.port) as w:
        run(w, "BEGIN", "T")
        run(w, f"INSERT INTO items VALUES ({ON_1}, 'gone')", "T", ["INSERT 0 1"])
        run(w, f"INSERT INTO items VALUES ({ON_0}, 'gone')", "T", ["INSERT 0 1"])
        assert rows_on(c, 0) == [] and rows_on(c, 1) == []
        run(w, "ROLLBACK", "I", ["ROLLBACK"])
        assert rows_on(c, 0) == [] and rows_on(c, 1) == []
        run(w, "BEGIN", "T")
        run(w, f"INSERT INTO items VALUES ({ON_0}, 'kept')", "T")
        run(w, f"INSERT INTO items VALUES ({ON_1}, 'kept')", "T")
        run(w, "COMMIT", "I", ["COMMIT"])
    assert rows_on(c, 0) == [ON_0] and rows_on(c, 1) == [ON_1]


def test_begin_options_reach_the_shard(c):
    """Isolation level and READ ONLY given at BEGIN hold on the shard that runs the transaction, also
    when its first statement is one any shard can run; COMMIT AND CHAIN begins the next transaction with
    the same characteristics."""
    with connect(c.shardgate.port) as w:
        run(w, "BEGIN ISOLATION LEVEL REPEATABLE READ", "T", ["BEGIN"])
        assert run(w, "SHOW transaction_isolation", "T") == [["repeatable read"]]
        run(w, "COMMIT", "I")
        run(w, "BEGIN READ ONLY", "T")
        run(w, f"INSERT INTO items VALUES ({ON_1}, 'x')", "E", want_errors=["25006"])
        run(w, "COMMIT", "I", ["ROLLBACK"])
        run(w, "BEGIN ISOLATION LEVEL SERIALIZABLE", "T")
        run(w, "COMMIT AND CHAIN", "T", ["COMMIT"])
        assert run(w, f"SELECT current_setting('transaction_isolation') FROM items WHERE id = {ON_1} "
                      "UNION ALL SELECT current_setting('transaction_isolation')", "T") == [["serializable"]]
        run(w, "ROLLBACK", "I")
    assert rows_on(c, 1) == []


def test_errors_in_a_deferred_transaction(c):
    """The first statement fails on its shard, or is refused by shardgate: the transaction has failed,
    what follows gets 25P02 until ROLLBACK (COMMIT answers ROLLBACK); BEGIN inside the transaction only
    warns, as in Postgres."""
    with connect(c.shardgate.port) as w:
        run(w, "BEGIN", "T")
        run(w, "SELECT 1 / 0", "E", want_errors=["22012"])
        run(w, f"SELECT * FROM items WHERE id = {ON_1}", "E", want_errors=["25P02"])
        run(w, "COMMIT", "I", ["ROLLBACK"])
        run(w, "BEGIN", "T")
        run(w, f"UPDATE items SET id = {ON_1} WHERE id = {ON_0}", "E", want_errors=["0A000"])
        run(w, f"SELECT * FROM items WHERE id = {ON_0}", "E", want_errors=["25P02"])
        run(w, "ROLLBACK", "I", ["ROLLBACK"])
        run(w, "BEGIN", "T")
        msgs = w.simple("BEGIN")
        assert b"N" in [m.type for m in msgs] and status_of(msgs) == "T", describe_reply(msgs)
        run(w, "COMMIT", "I", ["COMMIT"])
        assert open_transactions(c) == [0, 0]


def test_savepoints_and_a_first_statement_over_several_shards(c):
    with connect(c.shardgate.port) as w:
        run(w, "BEGIN", "T")
        run(w, "SAVEPOINT a", "T", ["SAVEPOINT"])
        run(w, f"INSERT INTO items VALUES ({ON_0}, 'undone')", "T")
        run(w, "ROLLBACK TO SAVEPOINT a", "T", ["ROLLBACK"])
        run(w, f"INSERT INTO items VALUES ({ON_1}, 'kept')", "T")
        run(w, "COMMIT", "I", ["COMMIT"])
        assert rows_on(c, 0) == [] and rows_on(c, 1) == [ON_1]
        run(w, "BEGIN", "T")
        assert run(w, "SELECT count(*) FROM items", "T") == [["1"]]  # both shards, in the transaction
        run(w, f"INSERT INTO items VALUES ({ON_0}, 'kept')", "T")
        assert run(w, "SELECT count(*) FROM items", "T") == [["2"]]
        assert rows_on(c, 0) == []
        run(w, "COMMIT", "I", ["COMMIT"])
    assert rows_on(c, 0) == [ON_0]


def test_extended_protocol_statements_after_a_deferred_begin(c):
    with connect(c.shardgate.port) as w:
        run(w, "BEGIN", "T")
        w.send(pgwire.parse("", "INSERT INTO items VALUES ($1, 'p')") + pgwire.bind("", "", (str(ON_1),))
               + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not error_codes(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        w.send(pgwire.parse("", "COMMIT") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not error_codes(msgs) and status_of(msgs) == "I", describe_reply(msgs)
        # An empty transaction ended through the extended protocol.
        run(w, "BEGIN", "T")
        w.send(pgwire.parse("", "ROLLBACK") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not error_codes(msgs) and status_of(msgs) == "I" and tags(msgs) == ["ROLLBACK"], describe_reply(msgs)
    assert rows_on(c, 1) == [ON_1]


def test_driver_transactions(c):
    """psycopg (autocommit off: it sends BEGIN before the first statement) and asyncpg transactions."""
    with psycopg.connect(c.shardgate.dsn(), connect_timeout=10) as conn:
        conn.execute("INSERT INTO items VALUES (%s, 'psycopg')", (ON_0,))
        conn.execute("INSERT INTO items VALUES (%s, 'psycopg')", (ON_1,))
        conn.rollback()
        conn.execute("INSERT INTO items VALUES (%s, 'psycopg')", (ON_1,))
        conn.commit()
        assert conn.execute("SELECT note FROM items WHERE id = %s", (ON_1,)).fetchone() == ("psycopg",)
        conn.commit()

    async def with_asyncpg():
        conn = await asyncpg_connect(c)
        try:
            async with conn.transaction(isolation="repeatable_read"):
                assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
                await conn.execute("INSERT INTO items VALUES ($1, 'asyncpg')", ON_0)
            with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO items VALUES ($1, 'asyncpg')", ON_0 + 1)
                    await conn.fetchval("SELECT 1 / 0")
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(with_asyncpg(), 60))
    assert rows_on(c, 0) == [ON_0] and rows_on(c, 1) == [ON_1]


def test_failed_deferred_transaction_stays_failed_for_messages_not_routed(c):
    """A statement refused by shardgate fails a transaction no shard runs yet: a Describe of a prepared
    statement (which goes to a shard without routing) gets 25P02 as in Postgres, and nothing commits."""
    with connect(c.shardgate.port) as w:
        w.send(pgwire.parse("s1", "SELECT id FROM items WHERE id = $1") + pgwire.sync())
        assert status_of(w.recv_until(b"Z")) == "I"
        run(w, "BEGIN", "T")
        run(w, f"UPDATE items SET id = {ON_1} WHERE id = {ON_0}", "E", want_errors=["0A000"])
        w.send(pgwire.describe("S", "s1") + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["25P02"] and status_of(msgs) == "E", describe_reply(msgs)
        run(w, f"INSERT INTO items VALUES ({ON_0}, 'x')", "E", want_errors=["25P02"])
        run(w, "COMMIT", "I", ["ROLLBACK"])
    assert rows_on(c, 0) == [] and rows_on(c, 1) == []


def test_named_parse_in_a_deferred_transaction_is_checked_on_a_shard(c):
    with connect(c.shardgate.port) as w:
        run(w, "BEGIN", "T")
        w.send(pgwire.parse("s2", "SELECT nosuchcol FROM items") + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert error_codes(msgs) == ["42703"] and status_of(msgs) == "E", describe_reply(msgs)
        run(w, "ROLLBACK", "I", ["ROLLBACK"])


def test_chain_after_a_failed_deferred_transaction_begins_the_next_one(c):
    """ROLLBACK AND CHAIN (and COMMIT AND CHAIN, which rolls back) of a failed transaction: ROLLBACK, and a
    new transaction is open, with the default characteristics (Postgres rolls back the BEGIN's options
    with the failed transaction)."""
    with connect(c.shardgate.port) as w:
        for end in ("ROLLBACK AND CHAIN", "COMMIT AND CHAIN"):
            run(w, "BEGIN ISOLATION LEVEL REPEATABLE READ", "T")
            run(w, f"UPDATE items SET id = {ON_1} WHERE id = {ON_0}", "E", want_errors=["0A000"])
            run(w, end, "T", ["ROLLBACK"])
            assert run(w, "SHOW transaction_isolation", "T") == [["read committed"]]
            run(w, f"INSERT INTO items VALUES ({ON_1}, 'chained')", "T")
            run(w, "ROLLBACK", "I", ["ROLLBACK"])
    assert rows_on(c, 1) == []


def test_begin_ending_in_a_comment_is_replayed_whole(c):
    """The BEGIN and a SET LOCAL any shard can run are replayed on the shard the transaction moves to; a
    BEGIN that ends in a -- comment does not comment out what is replayed after it."""
    with connect(c.shardgate.port) as w:
        run(w, f"SELECT count(*) FROM items WHERE id = {ON_0}", "I")  # shard 0 was used last
        run(w, "BEGIN -- a comment", "T")
        run(w, "SET LOCAL lock_timeout = '3s' -- another", "T")
        run(w, f"SELECT count(*) FROM items WHERE id = {ON_1}", "T")
        assert open_transactions(c) == [0, 1]
        assert run(w, "SHOW lock_timeout", "T") == [["3s"]]
        run(w, "COMMIT", "I")


def test_begin_read_only_for_a_replica_is_not_deferred(make_cluster):
    """A BEGIN READ ONLY whose reads may go to a replica runs there at once: a hot standby refuses
    SERIALIZABLE at BEGIN (and no transaction begins), and the client gets that error at its BEGIN."""
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    rc = make_cluster(num_shards=1, replicas_per_shard=1, pool_mode="transaction", general={"workers": 1})
    with connect(rc.shardgate.port) as w:
        run(w, "SET shardgate.read_preference = replica", "I")
        run(w, "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", "I", want_errors=["0A000"])
        run(w, "BEGIN READ ONLY", "T")
        assert run(w, "SELECT pg_is_in_recovery()", "T") == [["t"]]
        run(w, "COMMIT", "I")


# ---- pass-through: one server, nothing to route ---------------------------------------------------

PASS_WAIT_MS = 1500  # query_wait_timeout of the pass-through cluster


@pytest.fixture(scope="module")
def pass_cluster(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "deferred-begin-pass", shardgate_bin, num_shards=1,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  general={"workers": 1, "default_pool_size": 1,
                                           "query_wait_timeout": PASS_WAIT_MS}) as pc:
        pc.shards[0].primary.psql(SHARD_DDL)
        yield pc


@pytest.fixture
def pc(pass_cluster):
    pass_cluster.shards[0].primary.psql("SET lock_timeout = '10s'; TRUNCATE items", timeout=30)
    return pass_cluster


def backends_of_app(pc) -> list[str]:
    """The states of the client backends of database app on the server (the pool's connections)."""
    with psycopg.connect(pc.shards[0].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        return [state for (state,) in conn.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = 'app' AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()")]


def test_pass_through_begin_holds_no_connection(pc):
    """With a pool of one connection, a client that has sent BEGIN does not keep another client from
    running statements; its own transaction then works as in Postgres (one now(), tags, its writes kept
    or undone as one)."""
    with connect(pc.shardgate.port) as a, connect(pc.shardgate.port) as b:
        run(a, "SELECT 1", "I")  # the pool has its connection
        local_before = local_count(pc)
        run(a, "BEGIN", "T", ["BEGIN"])
        assert local_count(pc) == local_before + 1
        assert "idle in transaction" not in backends_of_app(pc)
        run(b, "INSERT INTO items VALUES (1, 'b')", "I", ["INSERT 0 1"])  # the one connection is free
        first = run(a, "SELECT now()::text, count(*) FROM items", "T")
        assert first[0][1] == "1"
        assert backends_of_app(pc).count("idle in transaction") == 1
        time.sleep(0.05)
        assert run(a, "SELECT now()::text, count(*) FROM items", "T") == first
        run(a, "INSERT INTO items VALUES (2, 'a')", "T", ["INSERT 0 1"])
        run(a, "ROLLBACK", "I", ["ROLLBACK"])
        run(a, "START TRANSACTION ISOLATION LEVEL REPEATABLE READ", "T", ["START TRANSACTION"])
        assert run(a, "SHOW transaction_isolation", "T") == [["repeatable read"]]
        run(a, "INSERT INTO items VALUES (3, 'a')", "T")
        run(a, "COMMIT", "I", ["COMMIT"])
        for begin, end, tag in (("BEGIN", "END", "COMMIT"), ("BEGIN READ ONLY", "ABORT", "ROLLBACK")):
            run(a, begin, "T", [begin.split()[0]])
            run(a, end, "I", [tag])
        run(b, "SELECT 1", "I")
    with psycopg.connect(pc.shards[0].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        assert [k for (k,) in conn.execute("SELECT id FROM items ORDER BY id")] == [1, 3]


def test_pass_through_begin_keeps_postgres_behaviour(pc):
    """What is not a lone, well-formed BEGIN goes to the server as before; BEGIN READ ONLY, errors, a
    second BEGIN and savepoints behave as in Postgres; psycopg and asyncpg transactions work."""
    with connect(pc.shardgate.port) as w:
        run(w, "BEGIN foo", "I", want_errors=["42601"])  # the server's syntax error
        run(w, "BEGIN; INSERT INTO items VALUES (4, 'x')", "T", ["BEGIN", "INSERT 0 1"])
        run(w, "ROLLBACK", "I", ["ROLLBACK"])
        run(w, "begin read only", "T", ["BEGIN"])
        run(w, "INSERT INTO items VALUES (4, 'x')", "E", want_errors=["25006"])
        run(w, "SELECT 1", "E", want_errors=["25P02"])
        run(w, "COMMIT", "I", ["ROLLBACK"])
        run(w, "BEGIN", "T")
        msgs = w.simple("BEGIN")
        assert b"N" in [m.type for m in msgs] and status_of(msgs) == "T", describe_reply(msgs)
        run(w, "SAVEPOINT s", "T", ["SAVEPOINT"])
        run(w, "INSERT INTO items VALUES (5, 'undone')", "T")
        run(w, "ROLLBACK TO SAVEPOINT s", "T")
        run(w, "COMMIT", "I", ["COMMIT"])
        run(w, "BEGIN", "T")
        w.send(pgwire.parse("", "INSERT INTO items VALUES ($1, 'p')") + pgwire.bind("", "", ("6",))
               + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert not error_codes(msgs) and status_of(msgs) == "T", describe_reply(msgs)
        run(w, "COMMIT", "I", ["COMMIT"])
    with psycopg.connect(pc.shardgate.dsn(), connect_timeout=10) as conn:
        conn.execute("INSERT INTO items VALUES (7, 'psycopg')")
        conn.rollback()
        conn.execute("INSERT INTO items VALUES (8, 'psycopg')")
        conn.commit()

    async def with_asyncpg():
        conn = await asyncpg_connect(pc)
        try:
            async with conn.transaction(isolation="serializable"):
                assert await conn.fetchval("SHOW transaction_isolation") == "serializable"
                await conn.execute("INSERT INTO items VALUES ($1, 'asyncpg')", 9)
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(with_asyncpg(), 60))
    with psycopg.connect(pc.shards[0].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        assert [k for (k,) in conn.execute("SELECT id FROM items ORDER BY id")] == [6, 8, 9]


def test_pass_through_first_statement_without_a_connection_fails_the_transaction(pc):
    """The first statement after BEGIN waits for the pool's one connection past query_wait_timeout: it
    fails, and so does the transaction, as after any error (25P02, COMMIT answers ROLLBACK), however many
    statements fail to get a connection; nothing the client sends before its ROLLBACK runs outside the
    transaction, and the ROLLBACK needs no connection."""
    with connect(pc.shardgate.port) as a, connect(pc.shardgate.port) as holder:
        run(holder, "BEGIN", "T")
        run(holder, "SELECT 1", "T")  # holds the pool's only connection
        run(a, "BEGIN", "T")
        for sql in ("INSERT INTO items VALUES (10, 'lost')", "SELECT 1"):
            msgs = a.simple(sql)
            assert error_codes(msgs) == ["53300"] and status_of(msgs) == "E", describe_reply(msgs)
        run(holder, "COMMIT", "I")
        run(a, "INSERT INTO items VALUES (11, 'outside')", "E", want_errors=["25P02"])
        run(a, "COMMIT", "I", ["ROLLBACK"])
        run(a, "INSERT INTO items VALUES (12, 'after')", "I", ["INSERT 0 1"])
        # Failed with no connection, ended with none.
        run(holder, "BEGIN", "T")
        run(holder, "SELECT 1", "T")
        run(a, "BEGIN", "T")
        msgs = a.simple("INSERT INTO items VALUES (13, 'lost')")
        assert error_codes(msgs) == ["53300"] and status_of(msgs) == "E", describe_reply(msgs)
        run(a, "ROLLBACK", "I", ["ROLLBACK"])
        run(holder, "COMMIT", "I")
        run(a, "SELECT 1", "I")
    with psycopg.connect(pc.shards[0].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        assert [k for (k,) in conn.execute("SELECT id FROM items ORDER BY id")] == [12]


def test_pass_through_empty_transaction_ends_without_a_connection(pc):
    """COMMIT, END, ROLLBACK and ABORT right after a deferred BEGIN are answered as Postgres does while
    another client holds the pool's one connection; AND CHAIN begins the next transaction with the same
    options. BEGIN ISOLATION LEVEL SERIALIZABLE and READ WRITE go to the server at once (a hot standby
    refuses them at BEGIN, and the client must see that)."""
    with connect(pc.shardgate.port) as a, connect(pc.shardgate.port) as holder:
        run(holder, "BEGIN", "T")
        run(holder, "SELECT 1", "T")
        for begin, end, tag in (("BEGIN", "COMMIT", "COMMIT"), ("BEGIN", "END", "COMMIT"),
                                ("START TRANSACTION", "ROLLBACK", "ROLLBACK"), ("BEGIN", "ABORT", "ROLLBACK")):
            run(a, begin, "T", [begin])
            run(a, end, "I", [tag])
        run(a, "/* app */ begin -- comments around it", "T", ["BEGIN"])
        run(a, "commit", "I", ["COMMIT"])
        run(a, "BEGIN ISOLATION LEVEL REPEATABLE READ", "T")
        run(a, "COMMIT AND CHAIN", "T", ["COMMIT"])
        run(a, "ROLLBACK AND CHAIN", "T", ["ROLLBACK"])
        run(a, "ROLLBACK", "I", ["ROLLBACK"])
        run(holder, "COMMIT", "I")
        run(a, "BEGIN ISOLATION LEVEL REPEATABLE READ", "T")
        run(a, "COMMIT AND CHAIN", "T", ["COMMIT"])
        assert run(a, "SHOW transaction_isolation", "T") == [["repeatable read"]]
        run(a, "COMMIT", "I")
        for begin in ("BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN READ WRITE"):
            run(a, begin, "T", ["BEGIN"])
            assert backends_of_app(pc).count("idle in transaction") == 1, begin
            run(a, "COMMIT", "I", ["COMMIT"])


def test_pass_through_many_pipelined_empty_transactions(pc):
    """Thousands of BEGIN; COMMIT sent in one write, each answered without a server, in order, then a
    statement: every answer as Postgres's, nothing left over."""
    pairs = 20000
    with connect(pc.shardgate.port, timeout=60) as w:
        w.send((pgwire.query("BEGIN") + pgwire.query("COMMIT")) * pairs + pgwire.query("SELECT 42"))
        states = []
        for _ in range(2 * pairs):
            msgs = w.recv_until(b"Z")
            assert not error_codes(msgs), describe_reply(msgs)
            states.append(status_of(msgs))
        assert states == ["T", "I"] * pairs
        assert pgwire.data_rows(w.recv_until(b"Z")) == [["42"]]


def test_pass_through_deferred_begin_across_a_reload(cluster_root, shardgate_bin):
    """A RELOAD that replaces the database's pool while a client's BEGIN is deferred: its first statement
    runs on a connection of the new pool, in the transaction."""
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "deferred-begin-reload", shardgate_bin, num_shards=1,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  general={"workers": 1, "default_pool_size": 2}) as rc:
        rc.shards[0].primary.psql(SHARD_DDL)
        with connect(rc.shardgate.port) as w:
            run(w, "SELECT 1", "I")
            run(w, "BEGIN", "T")
            rc.general_overrides.update(default_pool_size=3)
            rc.write_config()
            mark = len(rc.shardgate.log_text())
            rc.shardgate.reload()
            rc.shardgate.wait_for_log(r"event=reload_done", start=mark)
            assert "event=pool_draining" in rc.shardgate.log_text()[mark:]
            time.sleep(0.5)  # the sweep (every 100 ms) lets the drained pool go
            run(w, "INSERT INTO items VALUES (1, 'x')", "T", ["INSERT 0 1"])
            run(w, "ROLLBACK", "I", ["ROLLBACK"])
            assert run(w, "SELECT count(*) FROM items", "I") == [["0"]]
