"""psycopg 3 through shardgate: prepared statements, binary results, transactions, COPY, executemany,
pipelines, server-side cursors, cancellation, LISTEN/NOTIFY, notices — and session pooling, where a
server connection must be reset (DISCARD ALL) before the next client gets it."""

import datetime
import decimal
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg.types.json import Jsonb

import pgwire


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(90):
        yield


def connect(cluster, autocommit=False, **kw) -> psycopg.Connection:
    return psycopg.connect(cluster.shardgate.dsn(), connect_timeout=10, autocommit=autocommit, **kw)


@pytest.fixture
def conn(cluster):
    with connect(cluster) as c:
        yield c


@pytest.fixture
def table(cluster):
    """A fresh table (id int primary key, name text, amount numeric) with a unique name.

    Tests list it before `conn`, so `conn` (maybe in an open transaction) closes before the DROP."""
    name = "sg_pg3_" + uuid.uuid4().hex[:8]
    with connect(cluster, autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, name text, amount numeric)")
    yield name
    with connect(cluster, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


# --------------------------------------------------------------------------------------------
# Statements and results
# --------------------------------------------------------------------------------------------


def test_simple_and_parameterized_queries(conn):
    assert conn.execute("SELECT 1, 'a'").fetchone() == (1, "a")
    assert conn.execute("SELECT %s::int + %s::int, %s::text", (40, 2, "x")).fetchone() == (42, "x")
    cur = conn.execute("SELECT 1 AS one; SELECT 2 AS two")
    assert cur.fetchall() == [(1,)]
    assert cur.nextset()
    assert cur.fetchall() == [(2,)]
    assert [d.name for d in cur.description] == ["two"]


def test_prepared_statements_prepare_true(conn):
    for i in range(10):
        row = conn.execute("SELECT %s::int * 2, %s::text || '!'", (i, f"v{i}"), prepare=True).fetchone()
        assert row == (i * 2, f"v{i}!")
    # The statement really was prepared on the server (session pooling keeps it on this connection).
    n = conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%* 2, $2::text%'").fetchone()[0]
    assert n >= 1


def test_prepare_threshold_zero(cluster):
    with connect(cluster, prepare_threshold=0) as c:
        for i in range(5):
            assert c.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
            assert c.execute("SELECT %s::text, %s::float8", (f"s{i}", i / 2)).fetchone() == (f"s{i}", i / 2)
        names = [r[0] for r in c.execute("SELECT name FROM pg_prepared_statements").fetchall()]
        assert len(names) >= 2, names


def test_binary_results(conn):
    cur = conn.cursor(binary=True)
    cur.execute(
        "SELECT 42::int4, -7::int8, 3.25::float8, 'héllo'::text, 12345.678901234567890::numeric,"
        " '2024-02-29 13:14:15.123456+00'::timestamptz, '2024-02-29'::date, '\\x00ff10'::bytea,"
        " ARRAY[1, 2, NULL, 4]::int4[], '{\"a\": [1, 2]}'::jsonb, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid,"
        " true, NULL::text"
    )
    assert cur.pgresult.fformat(0) == 1, "the result must be in binary format"
    row = cur.fetchone()
    assert row == (
        42,
        -7,
        3.25,
        "héllo",
        decimal.Decimal("12345.678901234567890"),
        datetime.datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=datetime.timezone.utc),
        datetime.date(2024, 2, 29),
        b"\x00\xff\x10",
        [1, 2, None, 4],
        {"a": [1, 2]},
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        True,
        None,
    )


def test_binary_parameters(table, conn):
    cur = conn.cursor(binary=True)
    cur.execute(f"INSERT INTO {table} VALUES (%b, %b, %b)", (1, "bin", decimal.Decimal("9.99")))
    cur.execute(f"SELECT id, name, amount FROM {table} WHERE id = %b", (1,))
    assert cur.fetchone() == (1, "bin", decimal.Decimal("9.99"))
    cur.execute("SELECT %b::jsonb", (Jsonb({"k": "v"}),))
    assert cur.fetchone() == ({"k": "v"},)


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------


def test_commit_and_rollback(table, conn):
    conn.execute(f"INSERT INTO {table} VALUES (1, 'kept', 1)")
    conn.commit()
    conn.execute(f"INSERT INTO {table} VALUES (2, 'dropped', 2)")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    conn.rollback()
    assert conn.execute(f"SELECT array_agg(id ORDER BY id) FROM {table}").fetchone() == ([1],)
    conn.rollback()


def test_transaction_blocks_and_savepoints(cluster, table):
    with connect(cluster, autocommit=True) as c:
        with c.transaction():
            c.execute(f"INSERT INTO {table} VALUES (1, 'outer', 1)")
            with pytest.raises(pgerrors.UniqueViolation):
                with c.transaction():  # a savepoint
                    c.execute(f"INSERT INTO {table} VALUES (2, 'inner', 2)")
                    c.execute(f"INSERT INTO {table} VALUES (1, 'duplicate', 3)")
            c.execute(f"INSERT INTO {table} VALUES (3, 'after savepoint', 3)")
        with pytest.raises(RuntimeError):
            with c.transaction():
                c.execute(f"INSERT INTO {table} VALUES (4, 'rolled back', 4)")
                raise RuntimeError("abort the block")
        assert c.execute(f"SELECT array_agg(id ORDER BY id) FROM {table}").fetchone() == ([1, 3],)


def test_error_aborts_transaction_until_rollback(table, conn):
    conn.execute(f"INSERT INTO {table} VALUES (1, 'a', 1)")
    with pytest.raises(pgerrors.DivisionByZero) as ei:
        conn.execute("SELECT 1/0")
    assert ei.value.sqlstate == "22012"
    with pytest.raises(pgerrors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.rollback()
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_isolation_between_sessions(cluster, table):
    with connect(cluster) as a, connect(cluster, autocommit=True) as b:
        a.execute(f"INSERT INTO {table} VALUES (1, 'uncommitted', 1)")
        assert b.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        a.commit()
        assert b.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


# --------------------------------------------------------------------------------------------
# COPY, executemany, pipelines, cursors
# --------------------------------------------------------------------------------------------


def test_copy_in_and_out(table, conn):
    rows = [(i, f"name {i}\t\\ \"q\"", decimal.Decimal(i) / 8) for i in range(1, 1001)]
    rows.append((1001, None, None))
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (id, name, amount) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        assert cur.rowcount == 1001
        got = []
        with cur.copy(f"COPY (SELECT id, name, amount FROM {table} ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "text", "numeric"])
            got = list(copy.rows())
        assert got == rows
    conn.commit()


def test_copy_binary_format(table, conn):
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (id, name, amount) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "numeric"])
            for i in range(100):
                copy.write_row((i, f"b{i}", decimal.Decimal("1.5") * i))
        with cur.copy(f"COPY (SELECT id, name, amount FROM {table} ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "numeric"])
            got = list(copy.rows())
        assert got == [(i, f"b{i}", decimal.Decimal("1.5") * i) for i in range(100)]
    conn.rollback()


def test_copy_error_leaves_connection_usable(table, conn):
    with pytest.raises(pgerrors.InvalidTextRepresentation):
        with conn.cursor().copy(f"COPY {table} (id, name) FROM STDIN") as copy:
            copy.write(b"1\tok\nnot-a-number\tbad\n")
    conn.rollback()
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_executemany(table, conn):
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (id, name, amount) VALUES (%s, %s, %s)", [(i, f"m{i}", i) for i in range(200)])
        cur.execute(f"SELECT count(*), sum(amount) FROM {table}")
        assert cur.fetchone() == (200, sum(range(200)))
        cur.executemany(f"UPDATE {table} SET name = %s WHERE id = %s RETURNING id", [("x", 1), ("y", 2)], returning=True)
        ids = [cur.fetchone()[0]]
        while cur.nextset():
            ids.append(cur.fetchone()[0])
        assert ids == [1, 2]
    conn.commit()


def test_pipeline(table, conn):
    with conn.pipeline():
        c1 = conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s) RETURNING id", (1, "p1", 1))
        c2 = conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s) RETURNING id", (2, "p2", 2))
        c3 = conn.execute(f"SELECT count(*) FROM {table}")
        c4 = conn.execute("SELECT %s::text", ("pipelined",))
    assert c1.fetchone() == (1,)
    assert c2.fetchone() == (2,)
    assert c3.fetchone() == (2,)
    assert c4.fetchone() == ("pipelined",)
    conn.commit()


def test_pipeline_error_then_recovery(cluster, table):
    with connect(cluster, autocommit=True) as c:
        with pytest.raises(pgerrors.UniqueViolation):
            with c.pipeline():
                c.execute(f"INSERT INTO {table} VALUES (1, 'a', 1)")
                c.execute(f"INSERT INTO {table} VALUES (1, 'dup', 1)")
                c.execute(f"INSERT INTO {table} VALUES (2, 'skipped', 1)")
        # Everything up to the pipeline's Sync is one implicit transaction: nothing was committed.
        assert c.execute(f"SELECT array_agg(id) FROM {table}").fetchone() == (None,)
        with c.pipeline():
            r = c.execute("SELECT 'recovered'")
        assert r.fetchone() == ("recovered",)


def test_server_side_cursor(conn):
    with conn.cursor(name="sg_cursor") as cur:
        cur.itersize = 37
        cur.execute("SELECT g, g * g FROM generate_series(1, 1000) g ORDER BY g")
        total, count = 0, 0
        for a, b in cur:
            assert b == a * a
            total += a
            count += 1
        assert (count, total) == (1000, 500500)
    with conn.cursor(name="sg_cursor_scroll", scrollable=True) as cur:
        cur.execute("SELECT g FROM generate_series(1, 100) g")
        assert cur.fetchmany(3) == [(1,), (2,), (3,)]
        cur.scroll(50, mode="absolute")
        assert cur.fetchone() == (51,)
    conn.commit()


def test_server_side_cursor_with_hold(cluster):
    with connect(cluster, autocommit=True) as c:
        with c.cursor(name="sg_hold", withhold=True) as cur:
            cur.execute("SELECT g FROM generate_series(1, 10) g")
            assert cur.fetchmany(4) == [(1,), (2,), (3,), (4,)]
            assert cur.fetchall() == [(i,) for i in range(5, 11)]


# --------------------------------------------------------------------------------------------
# Cancellation, notifications, notices
# --------------------------------------------------------------------------------------------


def test_cancel_pg_sleep(cluster):
    with connect(cluster, autocommit=True) as c:
        timer = threading.Timer(1.0, c.cancel)
        timer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(pgerrors.QueryCanceled) as ei:
                c.execute("SELECT pg_sleep(30)")
        finally:
            timer.cancel()
        assert ei.value.sqlstate == "57014"
        assert time.monotonic() - t0 < 10
        assert c.execute("SELECT 'alive'").fetchone() == ("alive",)


def test_listen_notify(cluster):
    channel = "sg_pg3_" + uuid.uuid4().hex[:8]
    with connect(cluster, autocommit=True) as listener, connect(cluster, autocommit=True) as notifier:
        listener.execute(f"LISTEN {channel}")
        notifier.execute(f"NOTIFY {channel}, 'first'")
        notifier.execute("SELECT pg_notify(%s, %s)", (channel, "second"))

        # psycopg 3.1's notifies() has no timeout: a watchdog NOTIFY ends the wait if the real ones
        # never arrive, and the assertion below then fails instead of hanging.
        def watchdog():
            with connect(cluster, autocommit=True) as w:
                w.execute(f"NOTIFY {channel}, 'watchdog'")

        timer = threading.Timer(10.0, watchdog)
        timer.start()
        got = []
        try:
            for n in listener.notifies():
                got.append(n.payload)
                assert n.channel == channel
                if len(got) == 2 or n.payload == "watchdog":
                    break
        finally:
            timer.cancel()
        assert got == ["first", "second"]


def test_notify_handler_receives_while_querying(cluster):
    channel = "sg_pg3h_" + uuid.uuid4().hex[:8]
    with connect(cluster, autocommit=True) as listener, connect(cluster, autocommit=True) as notifier:
        got = []
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute(f"LISTEN {channel}")
        with notifier.transaction():
            notifier.execute(f"NOTIFY {channel}, 'in txn'")
            listener.execute("SELECT 1")
            assert got == [], "a notification must not be delivered before the commit"
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            listener.execute("SELECT 1")
            time.sleep(0.05)
        assert got == [(channel, "in txn")]


def test_notice_handler(conn):
    notices = []
    conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.sqlstate, d.message_primary)))
    conn.execute("DO $$ BEGIN RAISE NOTICE 'sg notice %', 7; RAISE WARNING 'sg warning'; END $$")
    assert notices == [("NOTICE", "00000", "sg notice 7"), ("WARNING", "01000", "sg warning")]


def test_error_fields(conn):
    with pytest.raises(pgerrors.UndefinedTable) as ei:
        conn.execute("SELECT * FROM sg_no_such_table_xyz")
    d = ei.value.diag
    assert d.sqlstate == "42P01"
    assert d.severity_nonlocalized == "ERROR"
    assert d.message_primary == 'relation "sg_no_such_table_xyz" does not exist'
    assert d.statement_position == "15"
    conn.rollback()
    with pytest.raises(pgerrors.RaiseException) as ei:
        conn.execute("DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint'; END $$")
    assert (ei.value.diag.message_detail, ei.value.diag.message_hint) == ("the detail", "the hint")
    conn.rollback()


def test_many_concurrent_connections(cluster):
    conns = [connect(cluster, autocommit=True) for _ in range(8)]
    try:
        pids = set()
        for i, c in enumerate(conns):
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            pids.add(c.info.backend_pid)
        assert len(pids) == 8, "every client needs its own BackendKeyData pid"
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------------------------
# Session pooling: state must not leak from one client to the next
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_conn_cluster(make_cluster, requires_shardgate):
    # One worker: shardgate gives every worker at least one server connection, so with the default
    # worker count a pool of "1" may be two and the next client could dodge the connection under test.
    return make_cluster(num_shards=1, replicas_per_shard=0, general={"default_pool_size": 1, "workers": 1})


def backend_pid(c: psycopg.Connection) -> int:
    return c.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_session_state_is_reset_between_clients(one_conn_cluster):
    cluster = one_conn_cluster
    with connect(cluster, autocommit=True, application_name="client_a") as a:
        pid_a = backend_pid(a)
        a.execute("SET application_name = 'leaked_app'")
        a.execute("SET search_path = leaked_schema")
        a.execute("SET statement_timeout = '1234s'")
        a.execute("PREPARE sg_leaked_stmt AS SELECT 1")
        a.execute("CREATE TEMP TABLE sg_leaked_temp (x int)")
        a.execute("SELECT pg_advisory_lock(4242)")
        a.execute("LISTEN sg_leaked_channel")
        a.execute("DECLARE sg_leaked_cursor CURSOR WITH HOLD FOR SELECT 1")

    with connect(cluster, autocommit=True, application_name="client_b") as b:
        assert backend_pid(b) == pid_a, "with default_pool_size = 1 the server connection must be reused"
        assert b.execute("SHOW application_name").fetchone() == ("client_b",)
        assert b.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert b.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert b.execute("SELECT to_regclass('sg_leaked_temp')").fetchone() == (None,)
        assert b.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        # And the name is free again.
        b.execute("PREPARE sg_leaked_stmt AS SELECT 2")
        assert b.execute("EXECUTE sg_leaked_stmt").fetchone() == (2,)
    # The lock really was released on the server, not just hidden.
    assert cluster.shards[0].primary.psql("SELECT pg_try_advisory_lock(4242)") == "t"


def test_startup_options_of_previous_client_do_not_leak(one_conn_cluster):
    cluster = one_conn_cluster
    with connect(cluster, autocommit=True, options="-c search_path=sg_from_options -c work_mem=1234kB") as a:
        assert a.execute("SHOW search_path").fetchone() == ("sg_from_options",)
        assert a.execute("SHOW work_mem").fetchone() == ("1234kB",)
    with connect(cluster, autocommit=True) as b:
        assert b.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert b.execute("SHOW work_mem").fetchone() == ("4MB",)


def test_client_with_failed_transaction_disconnects(one_conn_cluster):
    cluster = one_conn_cluster
    a = connect(cluster)
    a.execute("SELECT 1")
    with pytest.raises(pgerrors.DivisionByZero):
        a.execute("SELECT 1/0")
    a.close()  # in a failed transaction block
    with connect(cluster, autocommit=True) as b:
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert b.execute("SELECT 'clean'").fetchone() == ("clean",)
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_pool_of_one_serves_clients_in_turn(one_conn_cluster):
    cluster = one_conn_cluster
    for i in range(10):
        with connect(cluster, autocommit=True) as c:
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
