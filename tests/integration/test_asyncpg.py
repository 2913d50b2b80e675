"""asyncpg through shardgate: prepared statements, binary results (asyncpg always uses them),
transactions, COPY to a table and from a query, executemany, cursors, cancellation by timeout and
LISTEN/NOTIFY. Each test is a coroutine run with a hard timeout."""

import asyncio
import datetime
import decimal
import functools
import io
import time
import uuid

import asyncpg
import pytest

import pgwire

TEST_TIMEOUT = 60


def run_async(fn):
    """Runs an `async def test_...(cluster, ...)` under asyncio.run with a timeout."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        async def bounded():
            return await asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT)

        with pgwire.deadline(TEST_TIMEOUT + 30):
            return asyncio.run(bounded())

    return wrapper


async def connect(cluster, **kw) -> asyncpg.Connection:
    sg = cluster.shardgate
    return await asyncpg.connect(
        host="127.0.0.1", port=sg.port, user="postgres", password="postgres", database="app", timeout=10, **kw
    )


class Table:
    """A fresh table (id int primary key, name text, amount numeric) with a unique name."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn
        self.name = "sg_apg_" + uuid.uuid4().hex[:8]

    async def __aenter__(self) -> str:
        await self.conn.execute(f"CREATE TABLE {self.name} (id int PRIMARY KEY, name text, amount numeric)")
        return self.name

    async def __aexit__(self, *exc) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {self.name}")


@run_async
async def test_connect_and_simple_queries(cluster):
    conn = await connect(cluster)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchrow("SELECT $1::int + 1 AS n, $2::text AS t", 41, "x") == (42, "x")
        # execute() without arguments uses the simple protocol: several statements at once.
        await conn.execute("SELECT 1; SELECT 2; SET application_name = 'sg_asyncpg'")
        assert await conn.fetchval("SHOW application_name") == "sg_asyncpg"
        assert conn.get_server_version().major >= 10
    finally:
        await conn.close()


@run_async
async def test_server_settings_at_startup(cluster):
    conn = await connect(cluster, server_settings={"application_name": "sg_apg_app", "search_path": "sg_apg_schema"})
    try:
        assert await conn.fetchval("SHOW search_path") == "sg_apg_schema"
        assert await conn.fetchval("SELECT current_setting('application_name')") == "sg_apg_app"
    finally:
        await conn.close()


@run_async
async def test_prepared_statements(cluster):
    conn = await connect(cluster)
    try:
        stmt = await conn.prepare("SELECT $1::int * 2 AS doubled, $2::text AS label")
        assert [a.name for a in stmt.get_attributes()] == ["doubled", "label"]
        assert [t.name for t in stmt.get_parameters()] == ["int4", "text"]
        for i in range(20):
            assert await stmt.fetchrow(i, f"l{i}") == (i * 2, f"l{i}")
        assert await stmt.fetchval(21, "x") == 42
        # asyncpg caches statements per query text; a second identical query reuses it.
        for _ in range(3):
            assert await conn.fetchval("SELECT $1::text || '!'", "hey") == "hey!"
        stmt2 = await conn.prepare("SELECT g FROM generate_series(1, $1) g")
        assert [r[0] for r in await stmt2.fetch(5)] == [1, 2, 3, 4, 5]
    finally:
        await conn.close()


@run_async
async def test_binary_types(cluster):
    conn = await connect(cluster)
    try:
        row = await conn.fetchrow(
            "SELECT 42::int4 AS i, -7::int8 AS b, 3.25::float8 AS f, 'héllo'::text AS t,"
            " 12345.678901234567890::numeric AS n, '2024-02-29 13:14:15.123456+00'::timestamptz AS ts,"
            " '2024-02-29'::date AS d, '\\x00ff10'::bytea AS by, ARRAY[1, 2, NULL, 4]::int4[] AS arr,"
            " '{\"a\": [1, 2]}'::jsonb AS j, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,"
            " true AS bo, NULL::text AS nul, '1 day 02:00:00'::interval AS iv"
        )
        assert dict(row) == {
            "i": 42,
            "b": -7,
            "f": 3.25,
            "t": "héllo",
            "n": decimal.Decimal("12345.678901234567890"),
            "ts": datetime.datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=datetime.timezone.utc),
            "d": datetime.date(2024, 2, 29),
            "by": b"\x00\xff\x10",
            "arr": [1, 2, None, 4],
            "j": '{"a": [1, 2]}',
            "u": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "bo": True,
            "nul": None,
            "iv": datetime.timedelta(days=1, hours=2),
        }
        # Binary parameters round-trip too.
        vals = (decimal.Decimal("-0.000001"), b"\x00\x01", [1.5, None], datetime.date(1999, 12, 31))
        assert tuple(await conn.fetchrow("SELECT $1::numeric, $2::bytea, $3::float8[], $4::date", *vals)) == vals
    finally:
        await conn.close()


@run_async
async def test_transactions_and_rollbacks(cluster):
    conn = await connect(cluster)
    try:
        async with Table(conn) as t:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} VALUES (1, 'kept', 1)")
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} VALUES (2, 'rolled back', 2)")
                    raise RuntimeError("roll back")
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} VALUES (3, 'outer', 3)")
                with pytest.raises(asyncpg.UniqueViolationError):
                    async with conn.transaction():  # savepoint
                        await conn.execute(f"INSERT INTO {t} VALUES (4, 'inner', 4)")
                        await conn.execute(f"INSERT INTO {t} VALUES (1, 'duplicate', 1)")
                await conn.execute(f"INSERT INTO {t} VALUES (5, 'after savepoint', 5)")
            assert [r["id"] for r in await conn.fetch(f"SELECT id FROM {t} ORDER BY id")] == [1, 3, 5]
            assert not conn.is_in_transaction()
            # A raw transaction with an error: the block is aborted until ROLLBACK.
            tr = conn.transaction()
            await tr.start()
            with pytest.raises(asyncpg.DivisionByZeroError):
                await conn.execute("SELECT 1/0")
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await conn.execute("SELECT 1")
            await tr.rollback()
            assert await conn.fetchval("SELECT 'usable'") == "usable"
    finally:
        await conn.close()


@run_async
async def test_copy_to_table_and_from_query(cluster):
    conn = await connect(cluster)
    try:
        async with Table(conn) as t:
            records = [(i, f"rec {i}", decimal.Decimal(i) / 4) for i in range(1, 501)]
            res = await conn.copy_records_to_table(t, records=records, columns=["id", "name", "amount"])
            assert res == "COPY 500"
            csv = "".join(f"{i},csv {i},{i}\n" for i in range(501, 601)).encode()
            res = await conn.copy_to_table(t, source=io.BytesIO(csv), columns=["id", "name", "amount"], format="csv")
            assert res == "COPY 100"
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 600

            out = io.BytesIO()
            res = await conn.copy_from_query(f"SELECT id, name FROM {t} WHERE id <= $1 ORDER BY id", 3, output=out, format="csv")
            assert res == "COPY 3"
            assert out.getvalue() == b"1,rec 1\n2,rec 2\n3,rec 3\n"
            out = io.BytesIO()
            res = await conn.copy_from_table(t, output=out, columns=["id"], format="text")
            assert res == "COPY 600"
            assert sorted(int(x) for x in out.getvalue().split()) == list(range(1, 601))
    finally:
        await conn.close()


@run_async
async def test_executemany(cluster):
    conn = await connect(cluster)
    try:
        async with Table(conn) as t:
            await conn.executemany(f"INSERT INTO {t} VALUES ($1, $2, $3)", [(i, f"m{i}", i) for i in range(300)])
            assert await conn.fetchrow(f"SELECT count(*), sum(amount) FROM {t}") == (300, sum(range(300)))
            # A failing row rolls the whole executemany back.
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.executemany(f"INSERT INTO {t} VALUES ($1, $2, $3)", [(1000, "a", 1), (0, "dup", 1)])
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 300
    finally:
        await conn.close()


@run_async
async def test_cursors_in_transaction(cluster):
    conn = await connect(cluster)
    try:
        async with conn.transaction():
            total = 0
            async for rec in conn.cursor("SELECT g FROM generate_series(1, 1000) g", prefetch=37):
                total += rec["g"]
            assert total == 500500
            cur = await conn.cursor("SELECT g FROM generate_series(1, $1) g ORDER BY g", 100)
            assert [r[0] for r in await cur.fetch(5)] == [1, 2, 3, 4, 5]
            assert await cur.forward(10) == 10
            assert (await cur.fetchrow())[0] == 16
            assert [r[0] for r in await cur.fetch(3)] == [17, 18, 19]
        with pytest.raises(asyncpg.NoActiveSQLTransactionError):
            await conn.cursor("SELECT 1")
    finally:
        await conn.close()


@run_async
async def test_cancel_by_timeout_keeps_connection_usable(cluster):
    conn = await connect(cluster)
    try:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(30)"), timeout=1)
        # asyncpg sends a CancelRequest and waits for the server: the query must really be cancelled,
        # or this would wait the full 30 seconds.
        assert await asyncio.wait_for(conn.fetchval("SELECT 'usable'"), timeout=10) == "usable"
        assert time.monotonic() - t0 < 10
        # The built-in timeout= path as well. asyncpg raises TimeoutError, or (when the server's
        # 57014 reaches it before its own timeout handling ends, as happens on a loaded machine)
        # QueryCanceledError: either way the query was cancelled.
        with pytest.raises((asyncio.TimeoutError, asyncpg.QueryCanceledError)):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=1)
        assert await asyncio.wait_for(conn.fetchval("SELECT 2"), timeout=10) == 2
        assert time.monotonic() - t0 < 20
    finally:
        await conn.close()


@run_async
async def test_listen_notify(cluster):
    channel = "sg_apg_" + uuid.uuid4().hex[:8]
    listener = await connect(cluster)
    notifier = await connect(cluster)
    try:
        got: asyncio.Queue = asyncio.Queue()

        def on_notify(conn, pid, chan, payload):
            got.put_nowait((chan, payload))

        await listener.add_listener(channel, on_notify)
        await notifier.execute(f"NOTIFY {channel}, 'one'")
        await notifier.execute("SELECT pg_notify($1, $2)", channel, "two")
        # The listener is idle: the notifications must be pushed to it.
        assert await asyncio.wait_for(got.get(), 10) == (channel, "one")
        assert await asyncio.wait_for(got.get(), 10) == (channel, "two")
        await listener.remove_listener(channel, on_notify)  # UNLISTEN
        await notifier.execute(f"NOTIFY {channel}, 'three'")
        assert await listener.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        await asyncio.sleep(0.2)
        assert got.empty()
    finally:
        await listener.close()
        await notifier.close()


@run_async
async def test_concurrent_connections(cluster):
    conns = await asyncio.gather(*[connect(cluster) for _ in range(8)])
    try:
        results = await asyncio.gather(*[c.fetchval("SELECT $1::int FROM pg_sleep(0.2)", i) for i, c in enumerate(conns)])
        assert results == list(range(8))
    finally:
        await asyncio.gather(*[c.close() for c in conns])


@run_async
async def test_pool(cluster):
    sg = cluster.shardgate
    pool = await asyncpg.create_pool(
        host="127.0.0.1", port=sg.port, user="postgres", password="postgres", database="app", min_size=2, max_size=4, timeout=10
    )
    try:
        vals = await asyncio.gather(*[pool.fetchval("SELECT $1::int * 3", i) for i in range(40)])
        assert vals == [i * 3 for i in range(40)]
    finally:
        await asyncio.wait_for(pool.close(), 10)


@run_async
async def test_errors_carry_sqlstate_and_fields(cluster):
    conn = await connect(cluster)
    try:
        with pytest.raises(asyncpg.UndefinedTableError) as ei:
            await conn.fetch("SELECT * FROM sg_no_such_table_apg")
        assert ei.value.sqlstate == "42P01"
        with pytest.raises(asyncpg.RaiseError) as ei:
            await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'd', HINT = 'h'; END $$")
        assert (ei.value.detail, ei.value.hint) == ("d", "h")
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await conn.prepare("SELEKT 1")
        assert await conn.fetchval("SELECT 'still fine'") == "still fine"
    finally:
        await conn.close()


ORDERS_SHARDED_TOML = """
  [[databases.sharded_tables]]
  name = "orders"
  column = "user_id"
  type = "bigint"
  strategy = "hash"
"""
ORDERS_DDL = "CREATE TABLE orders (id bigint, user_id bigint NOT NULL, amount int, note text, PRIMARY KEY (user_id, id))"


async def _statement_cache_across_alter(dsn: str) -> list:
    """asyncpg's statement cache across an ALTER TABLE ... ADD COLUMN: what each step gave."""
    out: list = []
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        select = "SELECT * FROM orders WHERE user_id = $1 ORDER BY id LIMIT 2"
        insert = "INSERT INTO orders VALUES ($1, $2, 0, 'new') RETURNING *"
        out.append([tuple(r) for r in await conn.fetch(select, 3)])
        out.append([tuple(r) for r in await conn.fetch(insert, 100, 3)])
        await conn.execute("ALTER TABLE orders ADD COLUMN extra int DEFAULT 7")
        # Another client's transaction on that shard holds a server connection (under transaction
        # pooling the one that has the statements, if it is free): the statements run on another.
        other = await asyncpg.connect(dsn, timeout=10)
        busy = other.transaction()
        await busy.start()
        await other.fetchval("SELECT count(*) FROM orders WHERE user_id = 3")
        for step in range(2):
            for query, args in ((select, (3,)), (insert, (101 + step, 3))):
                try:
                    out.append([tuple(r) for r in await conn.fetch(query, *args)])
                except Exception as e:  # noqa: BLE001 - the error is the result compared
                    out.append(f"{type(e).__name__}: {e}")
        # Each INSERT ran once: a statement refused for its changed result did not run first.
        out.append(await conn.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", 3))
        await busy.rollback()
        await other.close()
    finally:
        await conn.close()
    return out


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_statement_cache_across_alter_table_matches_postgres(make_cluster, pool_mode):
    """asyncpg caches a prepared `SELECT *` (described with 4 columns), then the table gets a
    column. shardgate prepares the statement again on a server connection that lacks it (another
    client's transaction holds the one that has it); that Parse sees 5 columns. Postgres answers such a statement with 0A000 "cached plan must not
    change result type", which asyncpg catches, re-preparing the statement: the rows then have the
    new column. Through shardgate (sharded, session and transaction pooling) the same must happen,
    not rows of 5 columns for a statement described with 4 (asyncpg's ProtocolError on every
    call), nor an INSERT run before it is refused."""
    c = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode=pool_mode, extra_toml=ORDERS_SHARDED_TOML,
                     database_options={"default_shard": 0})
    primary = c.shards[0].primary
    for shard in c.shards:
        shard.primary.psql(ORDERS_DDL)
    primary.psql("CREATE DATABASE plain", dbname="postgres")
    primary.psql(ORDERS_DDL, dbname="plain")
    rows = ",".join(f"({i}, {i % 5 + 1}, {i}, 'n{i}')" for i in range(1, 21))
    sg_dsn = f"postgresql://postgres:postgres@127.0.0.1:{c.shardgate.port}/app"
    plain_dsn = f"postgresql://postgres:postgres@127.0.0.1:{primary.port}/plain"

    async def scenario(dsn):
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("INSERT INTO orders VALUES " + rows)
        finally:
            await conn.close()
        return await _statement_cache_across_alter(dsn)

    with pgwire.deadline(TEST_TIMEOUT + 30):
        expected = asyncio.run(asyncio.wait_for(scenario(plain_dsn), TEST_TIMEOUT))
        actual = asyncio.run(asyncio.wait_for(scenario(sg_dsn), TEST_TIMEOUT))
    assert expected == [
        [(2, 3, 2, "n2"), (7, 3, 7, "n7")],
        [(100, 3, 0, "new")],
        [(2, 3, 2, "n2", 7), (7, 3, 7, "n7", 7)],
        [(101, 3, 0, "new", 7)],
        [(2, 3, 2, "n2", 7), (7, 3, 7, "n7", 7)],
        [(102, 3, 0, "new", 7)],
        7,
    ], expected
    assert actual == expected
