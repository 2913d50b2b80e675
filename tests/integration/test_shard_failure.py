"""A shard that dies under shardgate: clients in the middle of a query and idle clients get a proper
error (SQLSTATE 57P01 or class 08), shardgate keeps running, and once the shard is back a new client
works again (the pool reconnects). Both a fast shutdown (Postgres sends 57P01) and a crash (SIGKILL)."""

import os
import signal
import threading
import time
import uuid

import psycopg
import pytest

import conftest
import pgwire
from pgwire import PgWire
from test_multi_shard import SHARD_DDL, SHARDING_TOML  # the same sharded users table

HOST = "127.0.0.1"
DIRECT = pgwire.target_is_direct()


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(150):
        yield


def connect(cluster) -> psycopg.Connection:
    return psycopg.connect(cluster.shardgate.dsn(), connect_timeout=5, autocommit=True)


def wait_active(server, mark: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while server.psql(f"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{mark}%'"
                      " AND pid <> pg_backend_pid()") == "0":
        assert time.monotonic() < deadline, f"{mark} never became active on {server.name}"
        time.sleep(0.05)


def assert_shard_error(sqlstate: str | None, how: str, what: str) -> None:
    if DIRECT and how == "kill":
        # A crashed Postgres sends nothing; libpq only sees the socket close. shardgate must do better.
        return
    assert sqlstate is not None, f"{what}: the client got no SQLSTATE (connection just dropped?)"
    assert sqlstate == "57P01" or sqlstate.startswith("08"), f"{what}: unexpected SQLSTATE {sqlstate}"


def assert_psycopg_shard_error(e: psycopg.Error, how: str, what: str) -> None:
    # psycopg 3.1 drops the SQLSTATE of a FATAL error that is followed by the close of the connection
    # ("consuming input failed: ..."), so without one only the error class can be checked here; the
    # raw clients check the SQLSTATE itself.
    if e.sqlstate is None:
        assert isinstance(e, psycopg.OperationalError), f"{what}: {type(e).__name__}: {e}"
    else:
        assert_shard_error(e.sqlstate, how, what)


def raw_shard_error(c: PgWire, how: str, what: str) -> None:
    """Reads the raw client's reply (up to ReadyForQuery or the close): it must hold the shard error."""
    try:
        msgs = c.recv_until(b"Z", timeout=15)
    except pgwire.ConnectionClosed as e:
        msgs = e.received
    if DIRECT and how == "kill":
        return
    errs = pgwire.errors(msgs)
    assert errs, f"{what}: no ErrorResponse, got {pgwire.types(msgs)!r}"
    assert_shard_error(errs[0].code, how, what)
    assert "D" not in pgwire.types(msgs), f"{what}: a row from a dead shard?"


def wait_until_new_client_works(cluster, timeout: float = 30) -> float:
    """Seconds until a brand-new client can run a query through shardgate."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            with connect(cluster) as c:
                assert c.execute("SELECT 'back'").fetchone() == ("back",)
                return time.monotonic() - t0
        except psycopg.OperationalError as e:
            last = e
            time.sleep(0.2)
    pytest.fail(f"no client could work through shardgate {timeout}s after the shard came back: {last}")


@pytest.mark.parametrize("how", ["stop-fast", "kill"])
def test_shard_dies_under_busy_and_idle_clients(make_cluster, how):
    cluster = make_cluster(num_shards=1, replicas_per_shard=0)
    primary = cluster.shards[0].primary
    mark = "sg_fail_" + uuid.uuid4().hex[:8]

    idle = connect(cluster)
    assert idle.execute("SELECT 1").fetchone() == (1,)
    raw = PgWire(HOST, cluster.shardgate.port, timeout=20)
    raw.login()
    raw_idle = PgWire(HOST, cluster.shardgate.port, timeout=20)
    raw_idle.login()
    busy = connect(cluster)
    busy_result: dict = {}

    def run_busy():
        try:
            busy.execute(f"SELECT pg_sleep(30) /* {mark} psycopg */")
            busy_result["ok"] = True
        except psycopg.Error as e:
            busy_result["error"] = e

    t = threading.Thread(target=run_busy, daemon=True)
    t.start()
    raw.send(pgwire.query(f"SELECT pg_sleep(30) /* {mark} raw */"))
    wait_active(primary, f"{mark} psycopg")
    wait_active(primary, f"{mark} raw")

    t0 = time.monotonic()
    if how == "kill":
        primary.kill()
    else:
        primary.stop("fast")
    assert not primary.is_running()

    try:
        # The busy psycopg client: an error, promptly (not after pg_sleep's 30 s).
        t.join(20)
        assert not t.is_alive(), "the busy client is still waiting 20s after its shard died"
        assert "error" in busy_result, f"the query on a dead shard did not fail: {busy_result}"
        assert_psycopg_shard_error(busy_result["error"], how, "busy psycopg client")
        assert time.monotonic() - t0 < 20

        # The busy raw client: an ErrorResponse with the right SQLSTATE (then ReadyForQuery or a close).
        raw_shard_error(raw, how, "busy raw client")

        # The idle clients: their next query fails with a proper error too.
        with pytest.raises(psycopg.Error) as ei:
            idle.execute("SELECT 'idle client'")
        assert_psycopg_shard_error(ei.value, how, "idle psycopg client")
        raw_idle.try_send(pgwire.query("SELECT 'idle raw client'"))
        raw_shard_error(raw_idle, how, "idle raw client")

        # A new client while the shard is down: an error, not a hang.
        t1 = time.monotonic()
        with pytest.raises(psycopg.Error):
            with connect(cluster) as c:
                c.execute("SELECT 'during outage'")
        assert time.monotonic() - t1 < 15
        if not DIRECT:
            assert cluster.shardgate.is_running(), "shardgate died with its shard"
    finally:
        for c in (idle, busy):
            c.close()
        raw.close()
        raw_idle.close()
        primary.start()

    elapsed = wait_until_new_client_works(cluster)
    assert elapsed < 30
    # And it keeps working: several clients, real work.
    for i in range(5):
        with connect(cluster) as c:
            assert c.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
    if not DIRECT:
        assert cluster.shardgate.is_running()


def test_shard_restart_between_queries_of_new_clients(make_cluster):
    # Connections idling in the pool die with the shard; the next clients must not be handed a
    # dead connection after the shard is back (or at worst get one clean error, then work).
    cluster = make_cluster(num_shards=1, replicas_per_shard=0)
    primary = cluster.shards[0].primary
    for _ in range(3):
        with connect(cluster) as c:
            c.execute("SELECT 1")
    primary.stop("fast")
    primary.start()
    failures = 0
    for i in range(5):
        try:
            with connect(cluster) as c:
                assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        except psycopg.OperationalError as e:
            failures += 1
            assert_shard_error(e.sqlstate, "stop-fast", "client after restart")
    assert failures <= 1, f"{failures} of 5 clients failed after the shard was back"


def test_hung_shard_does_not_stall_the_workers_other_clients(make_cluster):
    """A worker's first merge reads the shards' collation over new libpq connections. While a shard
    hangs (its postmaster stopped: a new connection gets no answer), that read waits in the thread
    pool, and the worker's other clients go on. (It used to run on the loop thread: every client of the
    worker waited for it, up to the read's 5 s connect timeout, and the merge then failed.)"""
    if DIRECT:
        pytest.skip("shardgate's own worker loop is the subject")
    cluster = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction", general={"workers": 1},
                           database_options={"default_shard": 0}, extra_toml=SHARDING_TOML)
    for shard in cluster.shards:
        shard.primary.psql(SHARD_DDL)
    placed = conftest.hash_shards(cluster.shards[0].primary, range(1, 20))
    k0 = next(k for k, s in placed.items() if s == 0)
    k1 = next(k for k, s in placed.items() if s == 1)
    held = connect(cluster)
    for k in (k0, k1):  # both shards' pools now hold a connection
        held.execute("INSERT INTO users (id, name) VALUES (%s, 'x')", (k,))
    merge_client = connect(cluster)  # logged in before the shard hangs
    postmaster = cluster.shards[1].primary.postmaster_pid()
    merged: dict = {}

    def run_merge():
        try:
            merged["rows"] = merge_client.execute("SELECT id FROM users ORDER BY id").fetchall()
        except psycopg.Error as e:
            merged["error"] = e

    os.kill(postmaster, signal.SIGSTOP)
    try:
        t = threading.Thread(target=run_merge, daemon=True)
        t.start()
        time.sleep(0.5)  # the merge waits for the collation
        assert held.execute("SELECT name FROM users WHERE id = %s", (k0,)).fetchone() == ("x",)
        assert t.is_alive(), f"the merge did not wait for the stopped shard's collation: {merged}"
    finally:
        os.kill(postmaster, signal.SIGCONT)
    t.join(30)
    assert merged == {"rows": sorted([(k0,), (k1,)])}
    held.close()
    merge_client.close()


def test_statement_for_an_unreachable_shard_aborts_its_transaction(make_cluster):
    """A transaction that wrote on one shard, then needs another that cannot be reached: the
    statement fails and, as after any error, the transaction is aborted (25P02, COMMIT answers
    ROLLBACK), so the first shard's write does not commit. An extended batch (executemany) with
    rows for both shards fails as one: nothing of it commits, and the session is idle again."""
    if DIRECT:
        pytest.skip("shardgate's shards are the subject")
    cluster = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction",
                           database_options={"default_shard": 0}, extra_toml=SHARDING_TOML)
    for shard in cluster.shards:
        shard.primary.psql(SHARD_DDL)
    with connect(cluster) as c:
        c.cursor().executemany("INSERT INTO users VALUES (%s, 'seed', 0)", [(k,) for k in range(1, 21)])
    on = {}
    for i, shard in enumerate(cluster.shards):
        with psycopg.connect(shard.primary.dsn(), autocommit=True) as d:
            on[i] = [k for (k,) in d.execute("SELECT id FROM users ORDER BY id")]
    assert on[0] and on[1], on
    k0, k1 = on[0][0], on[1][0]
    cluster.shards[1].primary.stop("fast")
    try:
        with connect(cluster) as c:
            c.execute("BEGIN")
            c.execute("UPDATE users SET score = 100 WHERE id = %s", (k0,))
            with pytest.raises(psycopg.OperationalError) as failure:
                c.execute("UPDATE users SET score = 100 WHERE id = %s", (k1,))
            assert_psycopg_shard_error(failure.value, "stop-fast", "statement for the stopped shard")
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                c.execute("UPDATE users SET score = 200 WHERE id = %s", (on[0][1],))
            assert c.execute("COMMIT").statusmessage == "ROLLBACK"
            with pytest.raises(psycopg.OperationalError):
                c.cursor().executemany("INSERT INTO users VALUES (%s, 'batch', 0)", [(101,), (k1 + 1000,), (102,)])
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with psycopg.connect(cluster.shards[0].primary.dsn(), autocommit=True) as d:
            assert d.execute("SELECT count(*) FROM users WHERE score <> 0 OR name = 'batch'").fetchone() == (0,)
    finally:
        cluster.shards[1].primary.start()
