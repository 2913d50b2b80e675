"""TLS between clients and shardgate (general.client_tls_*): psql, psycopg and asyncpg over TLS on a
two-shard cluster, large results and inputs through the records, the certificate shardgate serves
(also after RELOAD), client_tls_sslmode = require and disable, and the malformed cases (plain text
after SSLRequest, a second SSLRequest inside TLS)."""

import asyncio
import hashlib
import os
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest

import pgcluster
import pgwire
from client_helpers import cancel_a_sleep

HOST = "127.0.0.1"

SHARDED = """
[[databases.sharded_tables]]
name = "tls_items"
column = "id"
type = "bigint"
strategy = "hash"
"""


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


def der_of(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


@pytest.fixture(scope="module")
def certs():
    with tempfile.TemporaryDirectory(prefix="sg-tls-") as d:
        first = pgcluster.make_certificate(Path(d), "first")
        second = pgcluster.make_certificate(Path(d), "second")
        yield {"first": first, "second": second}


def tls_general(certs, mode: str = "prefer", which: str = "first") -> dict:
    cert, key = certs[which]
    return {"client_tls_sslmode": mode, "client_tls_cert_file": str(cert), "client_tls_key_file": str(key)}


@pytest.fixture
def tls_cluster(make_cluster, requires_shardgate, certs):
    cluster = make_cluster(num_shards=2, pool_mode="transaction", extra_toml=SHARDED,
                           general=tls_general(certs))
    for shard in cluster.shards:
        shard.primary.psql("CREATE TABLE tls_items (id bigint PRIMARY KEY, note text)")
    return cluster


def connect(cluster, **kw) -> psycopg.Connection:
    return psycopg.connect(host=HOST, port=cluster.shardgate.port, dbname="app", user="postgres",
                           password="postgres", autocommit=True, connect_timeout=10, **kw)


def served_certificate(port: int) -> bytes:
    """The certificate shardgate presents after answering an SSLRequest 'S' (DER)."""
    with socket.create_connection((HOST, port), timeout=10) as raw:
        raw.sendall(pgwire.ssl_request())
        assert raw.recv(1) == b"S"
        with pgcluster.unverified_tls_context().wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.getpeercert(binary_form=True)


def read_until_closed(sock, limit: float = 10) -> bytes:
    out = b""
    deadline = time.monotonic() + limit
    sock.settimeout(limit)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        out += chunk
    return out


def test_psql_reports_a_tls_connection_and_verify_full_accepts_the_certificate(tls_cluster, certs):
    cert, _ = certs["first"]
    env = {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(cert)}
    out = tls_cluster.shardgate.psql("\\conninfo", env=env).stdout
    assert "SSL connection (protocol: TLSv1.3" in out, out
    assert tls_cluster.shardgate.psql("SELECT 40 + 2", env=env).stdout.strip() == "42"


def test_routed_reads_and_writes_over_tls_in_both_protocols(tls_cluster):
    with connect(tls_cluster, sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        # SHOW CLIENTS' tls column names the protocol and cipher; the console's own client is
        # plain here, and its column empty.
        clients = tls_cluster.shardgate.psql("SHOW CLIENTS", dbname="shardgate",
                                             env={"PGSSLMODE": "disable"}).stdout.splitlines()
        assert sorted(row.split("|")[14][:12] for row in clients) == ["", "TLSv1.3/TLS_"], clients
        for i in range(200):
            conn.execute("INSERT INTO tls_items (id, note) VALUES (%s, %s)", (i, f"note {i}"))
        # Extended protocol with a server-side prepared statement, then the simple protocol.
        for i in range(0, 200, 7):
            row = conn.execute("SELECT note FROM tls_items WHERE id = %s", (i,), prepare=True).fetchone()
            assert row == (f"note {i}",)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(id) FROM tls_items")
            assert cur.fetchone() == (200, sum(range(200)))
    on_shards = [int(s.primary.psql("SELECT count(*) FROM tls_items")) for s in tls_cluster.shards]
    assert sum(on_shards) == 200 and min(on_shards) > 0, on_shards


# psycopg (libpq's non-blocking reads) used to hang here now and then under CPU load: shardgate sent
# 16 KiB TLS records, libpq asked OpenSSL for only the room left in its buffer, and the rest of a
# record waited inside the client's OpenSSL where select() could not see it. shardgate's records
# are now no larger than Postgres's own (8 KiB); TlsSessionTest.RecordsAreNoLargerThanPostgresSends
# checks the size, this test the whole path.
def test_large_results_and_inputs_cross_many_records(tls_cluster):
    with connect(tls_cluster, sslmode="require") as conn:
        # About 20 MB out: many TLS records and many reads (psycopg reads as fast as it can, so this
        # does not check back-pressure).
        digest = hashlib.md5()
        rows = 0
        with conn.cursor() as cur:
            cur.execute("SELECT repeat(md5(g::text), 32) FROM generate_series(1, 20000) g")
            for (text,) in cur:
                digest.update(text.encode())
                rows += 1
        expected = conn.execute("SELECT md5(string_agg(repeat(md5(g::text), 32), '' ORDER BY g)) "
                                "FROM generate_series(1, 20000) g").fetchone()[0]
        assert rows == 20000 and digest.hexdigest() == expected
        # About 4 MB in: one statement parameter, and a COPY.
        big = "x" * (4 << 20)
        assert conn.execute("SELECT length(%s::text)", (big,)).fetchone() == (len(big),)
        with conn.cursor() as cur:
            with cur.copy("COPY tls_items (id, note) FROM STDIN") as copy:
                for i in range(1000, 3000):
                    copy.write_row((i, "y" * 2000))
        assert conn.execute("SELECT count(*), sum(length(note)) FROM tls_items WHERE id >= 1000").fetchone() \
            == (2000, 2000 * 2000)


def test_asyncpg_prepares_over_tls(tls_cluster):
    async def run():
        conn = await asyncpg.connect(host=HOST, port=tls_cluster.shardgate.port, user="postgres",
                                     password="postgres", database="app", ssl="require")
        try:
            insert = await conn.prepare("INSERT INTO tls_items (id, note) VALUES ($1, $2)")
            for i in range(50):
                await insert.fetch(i, f"a{i}")
            stmt = await conn.prepare("SELECT note FROM tls_items WHERE id = $1")
            return [await stmt.fetchval(i) for i in range(50)]
        finally:
            await conn.close()

    assert asyncio.run(run()) == [f"a{i}" for i in range(50)]


def test_cancel_reaches_a_query_on_a_tls_connection(tls_cluster):
    with connect(tls_cluster, sslmode="require") as conn:
        cancel_a_sleep(conn)  # libpq sends the cancel in plain text, on a new connection


def test_prefer_still_serves_plain_clients(tls_cluster):
    with connect(tls_cluster, sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_plain_text_after_sslrequest_is_refused(tls_cluster):
    startup = pgwire.startup_message({"user": "postgres", "database": "app"})
    with socket.create_connection((HOST, tls_cluster.shardgate.port), timeout=10) as raw:
        raw.sendall(pgwire.ssl_request() + startup)  # the startup packet would be injectable
        reply = read_until_closed(raw)
    assert reply[:1] == b"E" and b"received unencrypted data after SSL request" in reply, reply
    # Nothing was left behind: the next client gets in.
    with connect(tls_cluster, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_second_sslrequest_inside_tls_is_refused(tls_cluster):
    with socket.create_connection((HOST, tls_cluster.shardgate.port), timeout=10) as raw:
        raw.sendall(pgwire.ssl_request())
        assert raw.recv(1) == b"S"
        with pgcluster.unverified_tls_context().wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(pgwire.ssl_request())
            reply = read_until_closed(tls)
    assert reply[:1] == b"E" and b"already in TLS" in reply, reply


def test_garbage_instead_of_a_handshake_closes_only_that_client(tls_cluster):
    with connect(tls_cluster, sslmode="require") as bystander:
        with socket.create_connection((HOST, tls_cluster.shardgate.port), timeout=10) as raw:
            raw.sendall(pgwire.ssl_request())
            assert raw.recv(1) == b"S"
            raw.sendall(b"\x16\x03\x01\x00\x05hello, this is not TLS" * 3)
            read_until_closed(raw)  # closed (possibly after a TLS alert), not hung
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    assert tls_cluster.shardgate.is_running()
    assert "event=tls_failed" in tls_cluster.shardgate.log_text()


def test_a_stalled_handshake_is_closed_at_the_login_timeout_and_does_not_hold_shutdown(
        make_cluster, requires_shardgate, certs):
    general = tls_general(certs) | {"client_login_timeout": 1000, "shutdown_timeout": 1000}
    cluster = make_cluster(num_shards=1, pool_mode="transaction", general=general)
    with socket.create_connection((HOST, cluster.shardgate.port), timeout=10) as stalled:
        stalled.sendall(pgwire.ssl_request())
        assert stalled.recv(1) == b"S"
        stalled.sendall(b"\x16\x03\x01\x00\x40")  # the start of a ClientHello, and then nothing
        started = time.monotonic()
        assert read_until_closed(stalled, limit=15) == b""
        assert time.monotonic() - started < 10, "the stalled client was not closed by the login timeout"
    # Another stalled client is open when SIGTERM comes: shutdown still ends in its time.
    with socket.create_connection((HOST, cluster.shardgate.port), timeout=10) as stalled:
        stalled.sendall(pgwire.ssl_request())
        assert stalled.recv(1) == b"S"
        started = time.monotonic()
        assert cluster.shardgate.stop(timeout=15) == 0
        assert time.monotonic() - started < 10


def test_reload_swaps_the_certificate_and_a_bad_key_changes_nothing(tls_cluster, certs, tmp_path):
    port = tls_cluster.shardgate.port
    assert served_certificate(port) == der_of(certs["first"][0])

    tls_cluster.general_overrides.update(tls_general(certs, which="second"))
    tls_cluster.write_config()
    tls_cluster.shardgate.reload()
    deadline = time.monotonic() + 10
    while served_certificate(port) != der_of(certs["second"][0]):
        assert time.monotonic() < deadline, "RELOAD did not bring the new certificate"
        time.sleep(0.1)

    # A key that does not belong to the certificate: the reload fails, the second one stays.
    tls_cluster.general_overrides["client_tls_key_file"] = str(certs["first"][1])
    tls_cluster.write_config()
    mark = len(tls_cluster.shardgate.log_text())
    tls_cluster.shardgate.reload()
    tls_cluster.shardgate.wait_for_log(r"event=reload_failed .*first.key.*key values mismatch", start=mark)
    assert served_certificate(port) == der_of(certs["second"][0])
    with connect(tls_cluster, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_require_refuses_plain_tcp_but_not_the_unix_socket(make_cluster, requires_shardgate, certs):
    socket_dir = tempfile.mkdtemp(prefix="sgtls", dir="/tmp")
    os.chmod(socket_dir, 0o755)
    try:
        general = tls_general(certs, mode="require") | {"unix_socket_dir": socket_dir}
        cluster = make_cluster(num_shards=1, pool_mode="transaction", general=general)
        with pytest.raises(psycopg.OperationalError) as refused:
            connect(cluster, sslmode="disable")
        assert "accepts only TLS connections" in str(refused.value)
        with connect(cluster, sslmode="require") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # Postgres offers no TLS on its Unix socket, and neither does shardgate: require is for TCP.
        with psycopg.connect(host=socket_dir, port=cluster.shardgate.port, dbname="app", user="postgres",
                             password="postgres", autocommit=True, connect_timeout=10) as conn:
            assert not conn.pgconn.ssl_in_use
            assert conn.execute("SELECT 2").fetchone() == (2,)
        # A cancel arrives in plain text on a new connection, and is still accepted.
        with connect(cluster, sslmode="require") as conn:
            cancel_a_sleep(conn)
    finally:
        cluster_socket = Path(socket_dir)
        for leftover in cluster_socket.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)
        os.rmdir(socket_dir) if not any(cluster_socket.iterdir()) else None


def test_disable_answers_no_and_clients_that_insist_give_up(make_cluster, requires_shardgate):
    cluster = make_cluster(num_shards=1, pool_mode="transaction")
    with pytest.raises(psycopg.OperationalError) as refused:
        connect(cluster, sslmode="require")
    assert "does not support SSL" in str(refused.value)
    with connect(cluster, sslmode="prefer") as conn:
        assert not conn.pgconn.ssl_in_use


def test_bad_tls_files_stop_start_and_check_config(tmp_path, shardgate_bin, certs):
    cert, _ = certs["first"]
    config = tmp_path / "bad.toml"
    config.write_text(f"""
[general]
port = {pgcluster.free_port()}
client_tls_sslmode = "require"
client_tls_cert_file = "{cert}"
client_tls_key_file = "{tmp_path / 'missing.key'}"

[[users]]
name = "u"
password = "p"

[[databases]]
name = "app"
  [[databases.shards]]
  name = "s0"
  primary = {{ host = "127.0.0.1", port = 5432, database = "app", user = "u", password = "p" }}
""")
    checked = subprocess.run([shardgate_bin, "--check-config", str(config)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 2, checked
    assert "cannot load the TLS private key" in checked.stderr and "missing.key" in checked.stderr
    started = subprocess.run([shardgate_bin, "--config", str(config)], capture_output=True, text=True,
                             timeout=30)
    assert started.returncode != 0
    assert "cannot load the TLS private key" in started.stdout + started.stderr


# ---- TLS to the shards (general.server_tls_*) ----------------------------------------------------

SERVER_TLS_TABLE = """
[[databases.sharded_tables]]
name = "tls_rows"
column = "id"
type = "bigint"
strategy = "hash"
"""


def turn_server_ssl_on(server: pgcluster.Server, cert: Path, key: Path) -> None:
    """ssl = on with this certificate (server.crt / server.key in the data directory)."""
    for source, name in ((cert, "server.crt"), (key, "server.key")):
        target = Path(server.datadir) / name
        target.write_bytes(source.read_bytes())
        os.chmod(target, 0o600)
        pgcluster._chown_pg(target)
    server.psql("ALTER SYSTEM SET ssl = on")
    server.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while server.psql("SHOW ssl") != "on":
        assert time.monotonic() < deadline, "ssl did not turn on"
        time.sleep(0.1)


def tls_of_shard_connection(cluster) -> tuple[str, str]:
    """(ssl, version) of the shard backend serving this statement, seen through shardgate."""
    out = cluster.shardgate.psql("SELECT ssl, coalesce(version, '') FROM pg_stat_ssl "
                                 "WHERE pid = pg_backend_pid()", extra_args=("-At",)).stdout.strip()
    ssl_on, version = out.split("|")
    return ssl_on, version


def reload_until_tls_to_the_shard(cluster, what: str) -> None:
    """RELOADs, then waits until statements reach the shard again, over TLS."""
    cluster.shardgate.reload()
    deadline = time.monotonic() + 10
    while cluster.shardgate.psql("SELECT 1", check=False).returncode != 0:
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    assert tls_of_shard_connection(cluster) == ("t", "TLSv1.3")


@pytest.fixture(scope="module")
def host_mismatch_cert():
    """A self-signed certificate that names another host only."""
    with tempfile.TemporaryDirectory(prefix="sg-tls-") as d:
        yield pgcluster.make_certificate(d, "elsewhere.example", san="DNS:elsewhere.example")


def server_tls_cluster(make_cluster, general: dict, cert: Path, key: Path, ssl_on: bool = True):
    cluster = make_cluster(num_shards=1, pool_mode="transaction", general=general, extra_toml=SERVER_TLS_TABLE)
    primary = cluster.shards[0].primary
    primary.psql("CREATE TABLE tls_rows (id bigint PRIMARY KEY, note text)")
    if ssl_on:
        turn_server_ssl_on(primary, cert, key)
    return cluster


def test_prefer_is_the_default_and_uses_tls_when_the_server_has_it(make_cluster, requires_shardgate, certs):
    cert, key = certs["first"]
    cluster = server_tls_cluster(make_cluster, {}, cert, key)
    ssl_on, version = tls_of_shard_connection(cluster)
    assert (ssl_on, version) == ("t", "TLSv1.3")
    servers = cluster.shardgate.psql("SHOW SERVERS", dbname="shardgate").stdout
    assert "|TLSv1.3/TLS_" in servers, servers


def test_verify_full_checks_the_chain_and_the_host_for_pools_and_catalog_reads(make_cluster, requires_shardgate,
                                                                               certs):
    cert, key = certs["first"]
    general = {"server_tls_sslmode": "verify-full", "server_tls_ca_file": str(cert)}
    cluster = server_tls_cluster(make_cluster, general, cert, key)
    assert tls_of_shard_connection(cluster) == ("t", "TLSv1.3")
    # No column list: the key's position is read from the catalog through libpq, with the same TLS.
    cluster.shardgate.psql("INSERT INTO tls_rows VALUES (7, 'seven')")
    assert cluster.shardgate.psql("SELECT note FROM tls_rows WHERE id = 7").stdout.strip() == "seven"
    lookups = cluster.shards[0].primary.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
        "WHERE application_name = 'shardgate lookups' AND ssl")
    assert lookups == "1"


def test_verify_ca_refuses_another_ca_until_the_renewed_file_is_reloaded(make_cluster, requires_shardgate, certs,
                                                                         tmp_path):
    cert, key = certs["first"]
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(certs["second"][0].read_bytes())
    general = {"server_tls_sslmode": "verify-ca", "server_tls_ca_file": str(ca_file)}
    cluster = server_tls_cluster(make_cluster, general, cert, key)
    failed = cluster.shardgate.psql("SELECT 1", check=False)
    assert failed.returncode != 0
    assert "certificate verify failed" in failed.stderr, failed.stderr
    assert cluster.shardgate.is_running()
    # The right CA written over the same file: RELOAD sees the file changed and makes a new context.
    ca_file.write_bytes(cert.read_bytes())
    os.utime(ca_file, (time.time() + 5, time.time() + 5))  # a new mtime even within one tick
    reload_until_tls_to_the_shard(cluster, "the renewed CA file was not used after RELOAD")


def test_verify_full_refuses_a_certificate_for_another_host(make_cluster, requires_shardgate, host_mismatch_cert):
    cert, key = host_mismatch_cert
    general = {"server_tls_sslmode": "verify-full", "server_tls_ca_file": str(cert)}
    cluster = server_tls_cluster(make_cluster, general, cert, key)
    failed = cluster.shardgate.psql("SELECT 1", check=False)
    assert failed.returncode != 0 and "certificate verify failed" in failed.stderr, failed.stderr
    # verify-ca checks the chain only: the same certificate is accepted.
    cluster.general_overrides["server_tls_sslmode"] = "verify-ca"
    cluster.write_config()
    reload_until_tls_to_the_shard(cluster, "verify-ca did not accept the certificate after RELOAD")


def test_require_fails_against_a_server_without_ssl_and_disable_stays_plain(make_cluster, requires_shardgate,
                                                                            certs):
    cert, key = certs["first"]
    cluster = server_tls_cluster(make_cluster, {"server_tls_sslmode": "require"}, cert, key, ssl_on=False)
    failed = cluster.shardgate.psql("SELECT 1", check=False)
    assert failed.returncode != 0 and "does not support TLS" in failed.stderr, failed.stderr

    plain = server_tls_cluster(make_cluster, {"server_tls_sslmode": "disable"}, cert, key)
    assert tls_of_shard_connection(plain) == ("f", "")
