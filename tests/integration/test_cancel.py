"""Cancellation through shardgate: CancelRequest for the client's own query, forged/unknown keys that
must cancel nothing, and clients that go away mid-query or mid-transaction on a one-connection pool."""

import contextlib
import random
import socket
import threading
import time
import uuid

import psycopg
import pytest

import pgcluster
import pgwire
from pgwire import PgWire

HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(90):
        yield


def marker() -> str:
    """A unique comment to find a query in pg_stat_activity."""
    return "sg_cancel_" + uuid.uuid4().hex[:12]


def active_count(cluster, mark: str) -> int:
    """How many backends on any shard primary are running a query containing `mark`."""
    total = 0
    for shard in cluster.shards:
        out = shard.primary.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{mark}%' AND pid <> pg_backend_pid()"
        )
        total += int(out.strip() or 0)
    return total


def wait_active(cluster, mark: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while active_count(cluster, mark) == 0:
        assert time.monotonic() < deadline, f"query {mark} never became active on a shard"
        time.sleep(0.05)


def wait_not_active(cluster, mark: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while active_count(cluster, mark) != 0:
        assert time.monotonic() < deadline, f"query {mark} still running on a shard after {timeout}s"
        time.sleep(0.1)


def send_cancel(port: int, pid: int, key: int) -> None:
    """One CancelRequest on its own connection; the server answers nothing and closes it."""
    with PgWire(HOST, port) as c:
        c.send(pgwire.cancel_request(pid, key))
        assert c.wait_closed(10) == [], "a CancelRequest gets no reply"


def connect(cluster, **kw) -> psycopg.Connection:
    return psycopg.connect(cluster.shardgate.dsn(), connect_timeout=10, autocommit=True, **kw)


# --------------------------------------------------------------------------------------------
# CancelRequest
# --------------------------------------------------------------------------------------------


def test_cancel_request_cancels_own_query(cluster):
    mark = marker()
    with PgWire(HOST, cluster.shardgate.port) as c:
        res = c.login()
        c.send(pgwire.query(f"SELECT pg_sleep(30) /* {mark} */"))
        wait_active(cluster, mark)
        t0 = time.monotonic()
        send_cancel(cluster.shardgate.port, res.pid, res.key)
        msgs = c.recv_until(b"Z", timeout=10)
        assert time.monotonic() - t0 < 5
        errs = pgwire.errors(msgs)
        assert len(errs) == 1, pgwire.types(msgs)
        assert errs[0].code == "57014", errs[0]
        assert errs[0].severity == "ERROR"
        assert "cancel" in errs[0].message
        # The session survives a cancelled query.
        assert c.scalar("SELECT 7 * 6") == "42"
        wait_not_active(cluster, mark)


def cancel_through_host_name(make_cluster, host: str):
    """A one-shard cluster whose server shardgate knows as `host`: a query runs, and a
    CancelRequest passed on to the server cancels it. Returns the cluster."""
    # Started here, on the edited config (a running shardgate would keep its own).
    cluster = make_cluster(num_shards=1, replicas_per_shard=0, with_shardgate=False)
    config = cluster.render_config()
    assert 'host = "127.0.0.1"' in config
    cluster.start_shardgate(config.replace('host = "127.0.0.1"', f'host = "{host}"'))
    mark = marker()
    with PgWire(HOST, cluster.shardgate.port) as c:
        res = c.login()
        c.send(pgwire.query(f"SELECT pg_sleep(30) /* {mark} */"))
        wait_active(cluster, mark)
        send_cancel(cluster.shardgate.port, res.pid, res.key)
        msgs = c.recv_until(b"Z", timeout=10)
        assert [e.code for e in pgwire.errors(msgs)] == ["57014"], pgwire.types(msgs)
        assert c.scalar("SELECT 7 * 6") == "42"
    return cluster


def test_cancel_reaches_a_server_named_by_host_name(make_cluster):
    """Servers configured by host name: the name is resolved off the event loop (libuv's thread
    pool), and the CancelRequest shardgate passes on goes where the connection went."""
    if pgwire.target_is_direct():
        pytest.skip("shardgate's own cancel forwarding is the subject")
    if {a[4][0] for a in socket.getaddrinfo("localhost", 5432, type=socket.SOCK_STREAM)} != {"127.0.0.1"}:
        pytest.skip("localhost must resolve to 127.0.0.1 only (the test servers listen there alone)")
    cancel_through_host_name(make_cluster, "localhost")


@contextlib.contextmanager
def host_name_with_addresses(*addresses: str):
    """A host name of its own in /etc/hosts with `addresses`, in that order. Its lines are taken
    out again afterwards."""
    name = "sg-addresses-" + uuid.uuid4().hex[:8]
    try:
        with open("/etc/hosts", "a") as hosts:
            hosts.write("\n" + "".join(f"{a} {name}\n" for a in addresses))
    except OSError as e:
        pytest.skip(f"/etc/hosts is not writable here ({e})")
    try:
        found = [a[4][0] for a in socket.getaddrinfo(name, 5432, type=socket.SOCK_STREAM)]
        assert found == list(addresses), f"the resolver's order is the premise of this test: {found}"
        yield name
    finally:
        with open("/etc/hosts") as hosts:
            kept = [ln for ln in hosts.readlines() if not ln.rstrip("\n").endswith(" " + name)]
        with open("/etc/hosts", "w") as hosts:  # in place: /etc/hosts may be a bind mount
            hosts.write("".join(kept).rstrip("\n") + "\n")


@pytest.fixture
def two_address_host_name():
    """A host name with two addresses, ::1 first (where the test servers do not listen) and then
    127.0.0.1: what "localhost" is on many machines whose Postgres listens on IPv4 only."""
    with host_name_with_addresses("::1", "127.0.0.1") as name:
        yield name


@contextlib.contextmanager
def black_holes(port: int, *addresses: str):
    """Listeners on `addresses` at `port` whose accept queue is full, so that every later
    connection attempt there gets no answer at all (its SYNs are dropped), as at a firewalled or
    dead host."""
    sockets = []
    try:
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            listener = socket.socket(family)
            sockets.append(listener)
            try:
                listener.bind((address, port))
            except OSError as e:  # no IPv6 loopback on this machine
                pytest.skip(f"cannot listen on {address}: {e}")
            listener.listen(0)
            queued = socket.socket(family)
            sockets.append(queued)
            queued.connect((address, port))  # fills the accept queue
        yield
    finally:
        for s in sockets:
            s.close()


def start_shardgate_on_host_name(cluster, name: str, port: int, connect_timeout_ms: int | None = None) -> None:
    """Starts shardgate with its one server known as `name`:`port` (and connect_timeout, if given)."""
    config = cluster.render_config()
    server = f'host = "127.0.0.1", port = {cluster.shards[0].primary.port}'
    assert server in config and "connect_timeout" not in config
    if connect_timeout_ms is not None:
        config = config.replace("[general]", f"[general]\nconnect_timeout = {connect_timeout_ms}", 1)
    cluster.start_shardgate(config.replace(server, f'host = "{name}", port = {port}'))


def test_a_host_name_whose_first_address_refuses_is_reached_at_the_next(make_cluster, two_address_host_name):
    """The server's host name resolves to ::1 first, where nothing listens: shardgate goes on to
    127.0.0.1, as libpq does, and cancels go to that address too."""
    if pgwire.target_is_direct():
        pytest.skip("shardgate's connections to its servers are the subject")
    cluster = cancel_through_host_name(make_cluster, two_address_host_name)
    # The refused first address is in the log (so the test cannot pass without the fallback).
    cluster.shardgate.wait_for_log(r"event=server_connect_next .*tried=\"\[::1\]:\d+: connection refused\"")


def test_a_host_name_none_of_whose_addresses_answers_names_each_in_the_error(make_cluster, two_address_host_name):
    """Every address of the server's host name refuses: the client's error says what each gave."""
    if pgwire.target_is_direct():
        pytest.skip("shardgate's connections to its servers are the subject")
    cluster = make_cluster(num_shards=1, replicas_per_shard=0, with_shardgate=False)
    closed_port = pgcluster.free_port()
    start_shardgate_on_host_name(cluster, two_address_host_name, closed_port)
    with PgWire(HOST, cluster.shardgate.port) as c:
        with pytest.raises(pgwire.LoginError) as failure:
            c.login()
    error = failure.value.error
    assert error.code == "08006", error
    assert f"at {two_address_host_name}:{closed_port}" in error.message, error
    assert error.fields.get("D") == (f"[::1]:{closed_port}: connection refused, "
                            f"127.0.0.1:{closed_port}: connection refused"), error


def test_a_host_name_whose_first_address_never_answers_is_reached_at_the_next(make_cluster):
    """The first address of the server's host name never answers: connect_timeout applies to each
    address, as in libpq, so shardgate goes on to the next one after it instead of giving up."""
    if pgwire.target_is_direct():
        pytest.skip("shardgate's connections to its servers are the subject")
    cluster = make_cluster(num_shards=1, replicas_per_shard=0, with_shardgate=False)
    port = cluster.shards[0].primary.port
    # ::1 first: the resolver would put a second IPv4 loopback address after 127.0.0.1.
    with black_holes(port, "::1"), host_name_with_addresses("::1", "127.0.0.1") as name:
        start_shardgate_on_host_name(cluster, name, port, 1000)
        started = time.monotonic()
        with PgWire(HOST, cluster.shardgate.port) as c:
            c.login()
            assert c.scalar("SELECT 7 * 6") == "42"
        assert time.monotonic() - started >= 1.0, "the first address must have had its whole timeout"
        cluster.shardgate.wait_for_log(
            rf"event=server_connect_next .*tried=\"\[::1\]:{port}: timed out after 1000 ms\"")


def test_a_host_name_none_of_whose_addresses_answers_in_time_names_each_in_the_error(make_cluster):
    """Neither address answers: each has its own timeout, and the error says so for each."""
    if pgwire.target_is_direct():
        pytest.skip("shardgate's connections to its servers are the subject")
    cluster = make_cluster(num_shards=1, replicas_per_shard=0, with_shardgate=False)
    port = pgcluster.free_port()
    with black_holes(port, "::1", "127.0.0.1"), host_name_with_addresses("::1", "127.0.0.1") as name:
        start_shardgate_on_host_name(cluster, name, port, 700)
        started = time.monotonic()
        with PgWire(HOST, cluster.shardgate.port) as c:
            with pytest.raises(pgwire.LoginError) as failure:
                c.login()
        assert time.monotonic() - started >= 1.4, "each address must have had its whole timeout"
    error = failure.value.error
    assert error.code == "08006", error
    assert "timed out connecting to server app/shard0/primary after 700 ms" in error.message, error
    assert error.fields.get("D") == (f"[::1]:{port}: timed out after 700 ms, "
                                     f"127.0.0.1:{port}: timed out after 700 ms"), error


def test_psycopg_cancel_from_another_thread(cluster):
    mark = marker()
    with connect(cluster) as conn:
        errors = []

        def canceller():
            try:
                wait_active(cluster, mark)
                conn.cancel()
            except Exception as e:  # surfaced in the main thread below
                errors.append(e)

        t = threading.Thread(target=canceller, daemon=True)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"SELECT pg_sleep(30) /* {mark} */")
        assert time.monotonic() - t0 < 10
        t.join(10)
        assert not errors, errors
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cancel_inside_transaction_aborts_only_that_transaction(cluster):
    mark = marker()
    with PgWire(HOST, cluster.shardgate.port) as c:
        res = c.login()
        assert pgwire.errors(c.simple("BEGIN")) == []
        c.send(pgwire.query(f"SELECT pg_sleep(30) /* {mark} */"))
        wait_active(cluster, mark)
        send_cancel(cluster.shardgate.port, res.pid, res.key)
        msgs = c.recv_until(b"Z", timeout=10)
        assert [e.code for e in pgwire.errors(msgs)] == ["57014"]
        assert msgs[-1].payload == b"E", "ReadyForQuery must report a failed transaction block"
        msgs = c.simple("SELECT 1")
        assert [e.code for e in pgwire.errors(msgs)] == ["25P02"]
        assert pgwire.errors(c.simple("ROLLBACK")) == []
        assert c.scalar("SELECT 1") == "1"


def test_forged_or_foreign_cancel_keys_cancel_nothing(cluster):
    mark = marker()
    port = cluster.shardgate.port
    with PgWire(HOST, port) as victim, PgWire(HOST, port) as other:
        v = victim.login()
        o = other.login()
        victim.send(pgwire.query(f"SELECT 'survived' FROM pg_sleep(2) /* {mark} */"))
        wait_active(cluster, mark)
        send_cancel(port, v.pid, v.key ^ 0x5A5A5A5A)  # right pid, wrong key
        send_cancel(port, v.pid ^ 0x3C3C0000, v.key)  # wrong pid, right key
        send_cancel(port, random.randint(1, 2**31 - 1), random.randint(0, 2**31 - 1))  # unknown
        send_cancel(port, o.pid, o.key)  # another (idle) client's valid key
        msgs = victim.recv_until(b"Z", timeout=15)
        assert pgwire.errors(msgs) == [], "a forged or foreign key cancelled the query"
        assert pgwire.data_rows(msgs) == [["survived"]]
        # The idle client whose key was used is unaffected too.
        assert other.scalar("SELECT 'still here'") == "still here"
        assert victim.scalar("SELECT 'again'") == "again"


def test_cancel_for_one_client_leaves_another_running(cluster):
    a_mark, b_mark = marker(), marker()
    port = cluster.shardgate.port
    with PgWire(HOST, port) as a, PgWire(HOST, port) as b:
        ra = a.login()
        b.login()
        a.send(pgwire.query(f"SELECT pg_sleep(30) /* {a_mark} */"))
        b.send(pgwire.query(f"SELECT 'b done' FROM pg_sleep(2) /* {b_mark} */"))
        wait_active(cluster, a_mark)
        wait_active(cluster, b_mark)
        send_cancel(port, ra.pid, ra.key)
        a_msgs = a.recv_until(b"Z", timeout=10)
        assert [e.code for e in pgwire.errors(a_msgs)] == ["57014"]
        b_msgs = b.recv_until(b"Z", timeout=15)
        assert pgwire.errors(b_msgs) == []
        assert pgwire.data_rows(b_msgs) == [["b done"]]


# --------------------------------------------------------------------------------------------
# Clients that go away: the server connection must be cleaned before the pool reuses it
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_conn_cluster(make_cluster, requires_shardgate):
    # One worker: shardgate gives every worker at least one server connection, so with the default
    # worker count a pool of "1" may be two and the next client could dodge the connection under test.
    return make_cluster(num_shards=1, replicas_per_shard=0, general={"default_pool_size": 1, "workers": 1})


def test_disconnect_mid_query_cancels_it_and_frees_the_connection(one_conn_cluster):
    cluster = one_conn_cluster
    mark = marker()
    c = PgWire(HOST, cluster.shardgate.port)
    c.login()
    c.send(pgwire.query(f"SELECT pg_sleep(30) /* {mark} */"))
    wait_active(cluster, mark)
    c.abort()
    t0 = time.monotonic()
    with connect(cluster) as conn:
        assert conn.execute("SELECT 'next client'").fetchone() == ("next client",)
    assert time.monotonic() - t0 < 10, "the next client waited for the abandoned pg_sleep(30)"
    wait_not_active(cluster, mark, timeout=5)


@pytest.mark.parametrize("how", ["reset", "terminate"])
def test_disconnect_in_open_transaction_rolls_back(one_conn_cluster, how):
    cluster = one_conn_cluster
    table = "sg_cancel_txn_" + uuid.uuid4().hex[:8]
    with connect(cluster) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
    c = PgWire(HOST, cluster.shardgate.port)
    c.login()
    for sql in ("BEGIN", f"INSERT INTO {table} VALUES (1)", f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
        assert pgwire.errors(c.simple(sql)) == []
    if how == "terminate":
        c.send(pgwire.terminate())
        c.close()
    else:
        c.abort()
    t0 = time.monotonic()
    with connect(cluster, options="-c lock_timeout=5s") as conn:
        # If the transaction had survived, the lock would block this (and the row would be visible
        # once someone committed on that server connection).
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        assert conn.execute(f"SELECT array_agg(id) FROM {table}").fetchone() == ([2],)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute(f"DROP TABLE {table}")
    assert time.monotonic() - t0 < 10


def test_disconnect_mid_query_many_times(one_conn_cluster):
    # The one server connection must come back every time, not leak away after a few aborts.
    cluster = one_conn_cluster
    for i in range(5):
        mark = marker()
        c = PgWire(HOST, cluster.shardgate.port)
        c.login()
        c.send(pgwire.query(f"SELECT pg_sleep(30) /* {mark} */"))
        wait_active(cluster, mark)
        c.abort()
        with connect(cluster) as conn:
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("pool", ["idle_connection", "busy_pool"])
def test_a_write_sent_together_with_terminate_runs(make_cluster, requires_shardgate, protocol, pool):
    """Postgres runs what a client sent before Terminate, even in the same packet: so must shardgate,
    whether a pooled connection is ready or the statement must wait for one (and bring it in line
    with the client's settings)."""
    cluster = make_cluster(num_shards=1, replicas_per_shard=0, pool_mode="transaction",
                           general={"workers": 1, "default_pool_size": 1})
    table = "sg_terminate_" + uuid.uuid4().hex[:8]
    with connect(cluster) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
    c = PgWire(HOST, cluster.shardgate.port)
    c.login(params={"application_name": "leaves_at_once"})  # a setting the server must be given
    holder = connect(cluster)
    try:
        if pool == "busy_pool":
            holder.execute("BEGIN")
            holder.execute("SELECT 1")  # holds the only server connection
        sql = f"INSERT INTO {table} SELECT 1 FROM pg_sleep(0.5)"
        if protocol == "simple":
            batch = pgwire.query(sql)
        else:
            batch = pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute("") + pgwire.sync()
        c.send(batch + pgwire.terminate())
        c.close()
        if pool == "busy_pool":
            time.sleep(0.3)  # the INSERT waits for the connection meanwhile
            holder.execute("COMMIT")
        deadline = time.monotonic() + 10
        while cluster.shards[0].primary.psql(f"SELECT count(*) FROM {table}") != "1":
            assert time.monotonic() < deadline, "the INSERT sent before Terminate never ran"
            time.sleep(0.1)
    finally:
        holder.close()
