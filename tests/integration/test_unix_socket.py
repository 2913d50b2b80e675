"""Unix-domain sockets on both sides of shardgate: shards reached through their sockets (host = the
socket directory, as libpq reads it) with no TCP connection from shardgate to any server, and
clients connecting to shardgate's own socket (general.unix_socket_dir)."""

import os
import shutil
import socket
import tempfile
import time

import psycopg
import pytest

import pgcluster
import pgwire
from client_helpers import cancel_a_sleep

HOST = "127.0.0.1"

SHARDED = """
[[databases.sharded_tables]]
name = "unix_items"
column = "id"
type = "bigint"
strategy = "hash"
"""


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


@pytest.fixture
def unix_cluster(make_cluster, requires_shardgate):
    cluster = make_cluster(num_shards=2, replicas_per_shard=1, pool_mode="transaction",
                           unix_sockets=True, extra_toml=SHARDED)
    for shard in cluster.shards:
        shard.primary.psql("CREATE TABLE unix_items (id bigint PRIMARY KEY, note text)")
    # Replicas replay the CREATE asynchronously; a read routed to one must find the table.
    deadline = time.monotonic() + 30
    for shard in cluster.shards:
        for replica in shard.replicas:
            while replica.psql("SELECT to_regclass('unix_items') IS NOT NULL") != "t":
                assert time.monotonic() < deadline, f"{replica.name} never replayed CREATE TABLE"
                time.sleep(0.1)
    return cluster


def connect(cluster, **kw) -> psycopg.Connection:
    return psycopg.connect(host=HOST, port=cluster.shardgate.port, dbname="app", user="postgres",
                           password="postgres", autocommit=True, **kw)


def connections_by_transport(server) -> tuple[int, int]:
    """(Unix-socket, TCP) client backends on `server` other than the one asking."""
    out = server.psql("SELECT count(*) FILTER (WHERE client_port = -1), count(*) FILTER (WHERE client_port > 0) "
                      "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
    unix, tcp = (int(x) for x in out.split("|"))
    return unix, tcp


def test_routed_rows_land_on_their_shards_over_unix_sockets(unix_cluster):
    with connect(unix_cluster) as conn:
        for i in range(1, 41):
            conn.execute("INSERT INTO unix_items VALUES (%s, %s)", (i, f"n{i}"))
        # Keyed reads in the extended protocol (psycopg's default) and in the simple one.
        for i in (1, 17, 40):
            assert conn.execute("SELECT note FROM unix_items WHERE id = %s", (i,)).fetchone() == (f"n{i}",)
        assert conn.execute("SELECT note FROM unix_items WHERE id = 23").fetchall() == [("n23",)]
        assert conn.execute("UPDATE unix_items SET note = 'x' WHERE id = 5").rowcount == 1
        # Across both shards: shardgate merges.
        assert conn.execute("SELECT count(*) FROM unix_items").fetchone() == (40,)
    counts = [int(s.primary.psql("SELECT count(*) FROM unix_items")) for s in unix_cluster.shards]
    assert sum(counts) == 40 and all(c > 0 for c in counts), counts
    for shard in unix_cluster.shards:
        unix, tcp = connections_by_transport(shard.primary)
        assert unix >= 1, f"{shard.name}: shardgate's pooled connections should be on the Unix socket"
        assert tcp == 0, f"{shard.name}: {tcp} TCP client connection(s); shardgate was told to use the socket"


def test_replica_reads_over_unix_sockets(unix_cluster):
    with connect(unix_cluster) as conn:
        conn.execute("INSERT INTO unix_items VALUES (7, 'seven')")
        conn.execute("SET shardgate.read_preference = 'replica'")
        deadline = time.monotonic() + 20
        while True:  # the replica replays the insert asynchronously
            row = conn.execute("SELECT note, pg_is_in_recovery() FROM unix_items WHERE id = 7").fetchone()
            if row is not None:
                break
            assert time.monotonic() < deadline, "the replica never showed the row"
            time.sleep(0.1)
        assert row == ("seven", True)
    for shard in unix_cluster.shards:
        for replica in shard.replicas:
            assert connections_by_transport(replica)[1] == 0


def test_cancel_reaches_a_unix_socket_server(unix_cluster):
    with connect(unix_cluster) as conn:
        cancel_a_sleep(conn)


def test_admin_console_shows_unix_socket_servers(unix_cluster):
    with connect(unix_cluster) as conn:
        conn.execute("SELECT count(*) FROM unix_items")
    with psycopg.connect(host=HOST, port=unix_cluster.shardgate.port, dbname="shardgate", user="postgres",
                         password="postgres", autocommit=True) as admin:
        cur = admin.execute("SHOW SERVERS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    assert rows, "SHOW SERVERS lists the pooled connections"
    sockets = {s.primary.socket_dir for s in unix_cluster.shards}
    for row in rows:
        assert row.get("addr") in sockets, row


# ---- clients on shardgate's own Unix socket (general.unix_socket_dir) ------------------------------


@pytest.fixture
def socket_dir():
    # Short and in /tmp: the socket path must fit 107 bytes.
    d = tempfile.mkdtemp(prefix="sgsock")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def socket_path(d: str, port: int) -> str:
    return os.path.join(d, f".s.PGSQL.{port}")


def test_clients_connect_through_shardgates_unix_socket(make_cluster, requires_shardgate, socket_dir):
    # A socket file left behind by a process that is gone: shardgate replaces it.
    port = pgcluster.free_port()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path(socket_dir, port))
    stale.close()
    cluster = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction", shardgate_port=port,
                           general={"unix_socket_dir": socket_dir}, extra_toml=SHARDED)
    assert cluster.shardgate.port == port
    for shard in cluster.shards:
        shard.primary.psql("CREATE TABLE unix_items (id bigint PRIMARY KEY, note text)")
    with psycopg.connect(host=socket_dir, port=port, dbname="app", user="postgres", password="postgres",
                         autocommit=True) as conn:
        for i in range(1, 11):
            conn.execute("INSERT INTO unix_items VALUES (%s, %s)", (i, f"n{i}"))
        assert conn.execute("SELECT note FROM unix_items WHERE id = %s", (4,)).fetchone() == ("n4",)
        assert conn.execute("SELECT count(*) FROM unix_items").fetchone() == (10,)
        # The admin console, reached the same way, shows the client as "unix".
        with psycopg.connect(host=socket_dir, port=port, dbname="shardgate", user="postgres",
                             password="postgres", autocommit=True) as admin:
            cur = admin.execute("SHOW CLIENTS")
            names = [d.name for d in cur.description]
            addrs = [dict(zip(names, r))["addr"] for r in cur.fetchall()]
        assert "unix" in addrs, addrs
        # Cancel over the socket: the CancelRequest arrives on a new Unix-socket connection.
        cancel_a_sleep(conn)
    # psql, in the simple protocol, finds the socket the way it finds Postgres's.
    out = pgcluster.run_psql(socket_dir, port, "SELECT note FROM unix_items WHERE id = 7", password="postgres")
    assert out.stdout.strip() == "n7"
    # TCP keeps working beside it.
    with psycopg.connect(host=HOST, port=port, dbname="app", user="postgres", password="postgres") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Stopping shardgate removes its socket file.
    cluster.shardgate.stop()
    assert not os.path.exists(socket_path(socket_dir, port))


def test_a_live_socket_is_not_taken_over(make_cluster, requires_shardgate, socket_dir):
    port = pgcluster.free_port()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(socket_path(socket_dir, port))
    live.listen(1)
    try:
        cluster = make_cluster(num_shards=1, replicas_per_shard=0, with_shardgate=False, shardgate_port=port,
                               general={"unix_socket_dir": socket_dir})
        with pytest.raises(pgcluster.HarnessError):
            cluster.start_shardgate(timeout=10)
        log = (cluster.base_dir / "shardgate.log").read_text()
        assert "another server is listening on it" in log, log[-2000:]
        assert os.path.exists(socket_path(socket_dir, port)), "the live server's socket must stay"
    finally:
        live.close()
