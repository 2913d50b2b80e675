"""The wire protocol through shardgate over raw sockets (tests/integration/pgwire.py): first the
message flows drivers rarely exercise exactly (multi-statement queries, pipelined extended protocol,
binary formats, PortalSuspended, errors mid-pipeline, COPY, notices, notifications), then bad input:
malformed, oversized, truncated or garbage bytes, each answered with FATAL 08P01 where the protocol
allows it, the connection closed, and other clients unaffected."""

import socket
import struct
import time
import uuid

import psycopg
import pytest

import pgwire
from pgwire import PgWire

HOST = "127.0.0.1"
DIRECT = pgwire.target_is_direct()


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


def wire(cluster) -> PgWire:
    return PgWire(HOST, cluster.shardgate.port)


def logged_in(cluster) -> PgWire:
    c = wire(cluster)
    c.login()
    return c


def connect(cluster) -> psycopg.Connection:
    return psycopg.connect(cluster.shardgate.dsn(), connect_timeout=10, autocommit=True)


@pytest.fixture
def table(cluster):
    """A fresh table (id int, t text) with a unique name, dropped afterwards."""
    name = "sg_wire_" + uuid.uuid4().hex[:8]
    with connect(cluster) as conn:
        conn.execute(f"CREATE TABLE {name} (id int, t text)")
    yield name
    with connect(cluster) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def ok(msgs: list[pgwire.Message]) -> list[pgwire.Message]:
    errs = pgwire.errors(msgs)
    assert not errs, f"unexpected error: {errs[0]} in {pgwire.types(msgs)}"
    return msgs


# ============================================================================================
# Good input
# ============================================================================================


def test_simple_query_multi_statement(cluster):
    with logged_in(cluster) as c:
        msgs = ok(c.simple("SELECT 1 AS a; SELECT 'two' AS b, 2 AS c; SET application_name = 'sg_multi'"))
        # 'S' is the ParameterStatus for the SET; Postgres reports changed settings just before ReadyForQuery.
        assert pgwire.types(msgs) == "TDCTDCCSZ"
        assert pgwire.data_rows(msgs) == [["1"], ["two", "2"]]
        tags = [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"]
        assert tags == ["SELECT 1", "SELECT 1", "SET"]
        assert [c["name"] for c in pgwire.parse_row_description(msgs[3])] == ["b", "c"]
        assert msgs[-1].payload == b"I"


def test_simple_query_error_mid_string_stops_and_rolls_back(cluster, table):
    with logged_in(cluster) as c:
        msgs = c.simple(f"INSERT INTO {table} VALUES (1, 'a'); SELECT 1/0; INSERT INTO {table} VALUES (2, 'b')")
        assert pgwire.types(msgs) == "CEZ"
        err = pgwire.errors(msgs)[0]
        assert (err.severity, err.code) == ("ERROR", "22012")
        assert msgs[-1].payload == b"I"
        # A multi-statement string is one implicit transaction: the first INSERT is gone too.
        assert c.scalar(f"SELECT count(*) FROM {table}") == "0"


def test_empty_query(cluster):
    with logged_in(cluster) as c:
        assert pgwire.types(c.simple("")) == "IZ"
        assert pgwire.types(c.simple(" ; ")) == "IZ"


def test_extended_protocol_pipeline(cluster):
    with logged_in(cluster) as c:
        c.send(
            pgwire.parse("sg_s1", "SELECT $1::int + $2::int AS sum")
            + pgwire.describe("S", "sg_s1")
            + pgwire.bind("", "sg_s1", ("40", "2"))
            + pgwire.describe("P", "")
            + pgwire.execute("", 0)
            + pgwire.parse("", "SELECT upper($1::text)")
            + pgwire.bind("", "", ("abc",))
            + pgwire.execute("", 0)
            + pgwire.bind("", "sg_s1", ("1", "1"))
            + pgwire.execute("", 0)
            + pgwire.close("S", "sg_s1")
            + pgwire.sync()
        )
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "1tT2TDC12DC2DC3Z"
        assert pgwire.data_rows(msgs) == [["42"], ["ABC"], ["2"]]
        (nparams,) = struct.unpack("!h", msgs[1].payload[:2])
        assert nparams == 2
        assert pgwire.parse_row_description(msgs[2])[0]["name"] == "sum"
        # The statement was closed: using it again is an error (26000), then the session recovers.
        c.send(pgwire.bind("", "sg_s1", ("1", "1")) + pgwire.execute() + pgwire.sync())
        msgs = c.recv_until(b"Z")
        assert [e.code for e in pgwire.errors(msgs)] == ["26000"]
        assert c.scalar("SELECT 'fine'") == "fine"


def test_extended_protocol_binary_formats(cluster):
    with logged_in(cluster) as c:
        c.send(
            pgwire.parse("", "SELECT $1::int4 * 2 AS n, $2::text AS t, $3::int8 AS big", (23, 25, 20))
            + pgwire.bind(
                "",
                "",
                (struct.pack("!i", 21), "héllo", struct.pack("!q", -(2**40))),
                param_formats=(1, 0, 1),
                result_formats=(1, 1, 0),
            )
            + pgwire.describe("P")
            + pgwire.execute()
            + pgwire.sync()
        )
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "12TDCZ"
        cols = pgwire.parse_row_description(msgs[2])
        assert [col["format"] for col in cols] == [1, 1, 0]
        assert [col["type_oid"] for col in cols] == [23, 25, 20]
        row = pgwire.parse_data_row(msgs[3])
        assert row[0] == struct.pack("!i", 42)
        assert row[1] == "héllo".encode()
        assert row[2] == str(-(2**40)).encode()


def test_portal_suspended_with_row_limit(cluster):
    with logged_in(cluster) as c:
        # Flush (not Sync) must push the replies out, so each batch can be checked on its own.
        c.send(pgwire.parse("", "SELECT g FROM generate_series(1, 5) g") + pgwire.bind("", "") + pgwire.execute("", 2) + pgwire.flush())
        msgs = c.recv_until(b"s")
        assert pgwire.types(msgs) == "12DDs"
        assert pgwire.data_rows(msgs) == [["1"], ["2"]]
        c.send(pgwire.execute("", 2) + pgwire.flush())
        msgs = c.recv_until(b"s")
        assert pgwire.types(msgs) == "DDs"
        assert pgwire.data_rows(msgs) == [["3"], ["4"]]
        c.send(pgwire.execute("", 2) + pgwire.sync())
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "DCZ"
        assert pgwire.data_rows(msgs) == [["5"]]
        assert pgwire.parse_command_complete(msgs[1]).startswith("SELECT")


def test_named_portal_survives_sync_inside_transaction(cluster):
    with logged_in(cluster) as c:
        ok(c.simple("BEGIN"))
        c.send(pgwire.parse("sg_ps", "SELECT g FROM generate_series(1, 4) g") + pgwire.bind("sg_portal", "sg_ps") + pgwire.execute("sg_portal", 3) + pgwire.sync())
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "12DDDsZ"
        assert msgs[-1].payload == b"T"
        c.send(pgwire.execute("sg_portal", 0) + pgwire.close("P", "sg_portal") + pgwire.sync())
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "DC3Z"
        assert pgwire.data_rows(msgs) == [["4"]]
        ok(c.simple("COMMIT"))


def test_error_mid_pipeline_skips_to_sync(cluster):
    with logged_in(cluster) as c:
        c.send(
            pgwire.parse("sg_ok", "SELECT 'first'")
            + pgwire.bind("", "sg_ok")
            + pgwire.execute()
            + pgwire.parse("", "SELECT 1/0")
            + pgwire.bind("", "")
            + pgwire.execute()
            + pgwire.parse("", "SELECT 'skipped'")  # skipped: after the error, until Sync
            + pgwire.bind("", "")
            + pgwire.execute()
            + pgwire.sync()
            # Next batch: syntax error at Parse.
            + pgwire.parse("", "SELEKT nope")
            + pgwire.bind("", "")
            + pgwire.execute()
            + pgwire.sync()
            # Next batch: works, and the statement parsed before the first error still exists.
            + pgwire.bind("", "sg_ok")
            + pgwire.execute()
            + pgwire.sync()
        )
        first = c.recv_until(b"Z")
        # 1/0 is folded by the planner, which runs at Bind for the unnamed statement.
        assert pgwire.types(first) == "12DC1EZ"
        assert pgwire.errors(first)[0].code == "22012"
        second = c.recv_until(b"Z")
        assert pgwire.types(second) == "EZ"
        assert pgwire.errors(second)[0].code == "42601"
        third = ok(c.recv_until(b"Z"))
        assert pgwire.types(third) == "2DCZ"
        assert pgwire.data_rows(first + third) == [["first"], ["first"]]
        assert c.scalar("SELECT 'simple after pipeline'") == "simple after pipeline"


def test_describe_of_statement_without_rows_is_nodata(cluster, table):
    with logged_in(cluster) as c:
        c.send(pgwire.parse("", f"INSERT INTO {table} VALUES ($1, $2)") + pgwire.describe("S") + pgwire.bind("", "", ("1", "x")) + pgwire.execute() + pgwire.sync())
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "1tn2CZ"
        assert pgwire.parse_command_complete(msgs[4]) == "INSERT 0 1"


def test_copy_in_and_out(cluster, table):
    with logged_in(cluster) as c:
        c.send(pgwire.query(f"COPY {table} FROM STDIN"))
        g = c.recv()
        assert g.type == b"G", g
        assert pgwire.parse_copy_response(g) == (0, [0, 0])
        c.send(pgwire.copy_data(b"1\tone\n2\ttwo\n") + pgwire.copy_data(b"3\t\\N\n") + pgwire.copy_done())
        msgs = ok(c.recv_until(b"Z"))
        assert pgwire.types(msgs) == "CZ"
        assert pgwire.parse_command_complete(msgs[0]) == "COPY 3"

        msgs = ok(c.simple(f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT"))
        assert pgwire.types(msgs) == "HdddcCZ"
        assert b"".join(m.payload for m in msgs if m.type == b"d") == b"1\tone\n2\ttwo\n3\t\\N\n"


def test_copy_fail_from_client(cluster, table):
    with logged_in(cluster) as c:
        c.send(pgwire.query(f"COPY {table} FROM STDIN"))
        assert c.recv().type == b"G"
        c.send(pgwire.copy_data(b"1\tone\n") + pgwire.copy_fail("client gave up"))
        msgs = c.recv_until(b"Z")
        errs = pgwire.errors(msgs)
        assert len(errs) == 1 and "client gave up" in errs[0].message
        assert c.scalar(f"SELECT count(*) FROM {table}") == "0"


def test_copy_bad_data_error(cluster, table):
    with logged_in(cluster) as c:
        c.send(pgwire.query(f"COPY {table} FROM STDIN"))
        assert c.recv().type == b"G"
        c.send(pgwire.copy_data(b"not-a-number\tx\n") + pgwire.copy_done())
        msgs = c.recv_until(b"Z")
        assert [e.code for e in pgwire.errors(msgs)] == ["22P02"]
        assert c.scalar("SELECT 'after copy error'") == "after copy error"


def test_notice_response(cluster):
    with logged_in(cluster) as c:
        msgs = ok(c.simple("DO $$ BEGIN RAISE NOTICE 'sg notice %', 42; END $$"))
        assert pgwire.types(msgs) == "NCZ"
        notice = pgwire.parse_error(msgs[0])
        assert (notice.severity, notice.code, notice.message) == ("NOTICE", "00000", "sg notice 42")


def test_notification_reaches_idle_listener(cluster):
    channel = "sg_chan_" + uuid.uuid4().hex[:8]
    with logged_in(cluster) as listener, logged_in(cluster) as notifier:
        ok(listener.simple(f"LISTEN {channel}"))
        ok(notifier.simple(f"NOTIFY {channel}, 'hello there'"))
        # The listener sends nothing: the proxy must forward the asynchronous message by itself.
        m = listener.recv(timeout=10)
        assert m.type == b"A", m
        _, chan, payload = pgwire.parse_notification(m)
        assert (chan, payload) == (channel, "hello there")


# ============================================================================================
# Bad input
# ============================================================================================


@pytest.fixture
def bystander(cluster):
    """A well-behaved client connected before the bad input; it must not notice anything."""
    conn = connect(cluster)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    yield conn
    conn.close()


def assert_healthy(cluster, bystander=None) -> None:
    sg = cluster.shardgate
    if not DIRECT and hasattr(sg, "is_running"):
        assert sg.is_running(), "shardgate died"
    if bystander is not None:
        assert bystander.execute("SELECT 'bystander ok'").fetchone() == ("bystander ok",)
    with connect(cluster) as conn:
        assert conn.execute("SELECT 'new client ok', %s::int", (5,)).fetchone() == ("new client ok", 5)


def expect_protocol_violation(c: PgWire, postgres_sends_error: bool = True, code: str = "08P01") -> None:
    """The server must answer FATAL `code` (08P01) and close. Plain Postgres closes silently in some of
    these cases (it only logs them); shardgate must always tell the client why."""
    msgs = c.wait_closed(10)
    errs = pgwire.errors(msgs)
    if postgres_sends_error or not DIRECT:
        assert errs, f"expected a FATAL {code} ErrorResponse before the close, got {pgwire.types(msgs)!r}"
    for e in errs:
        assert e.severity == "FATAL", e
        assert e.code == code, e


@pytest.mark.parametrize("length", [0, 3, -1, -(2**31)])
def test_malformed_message_length_after_login(cluster, bystander, length):
    with logged_in(cluster) as c:
        c.try_send(pgwire.raw_message(b"Q", length, b"SELECT 1\0"))
        expect_protocol_violation(c, postgres_sends_error=False)
    assert_healthy(cluster, bystander)


def test_malformed_password_message(cluster, bystander):
    with wire(cluster) as c:
        c.send(pgwire.startup_message({"user": "md5user", "database": "app"}))
        m = c.recv()
        assert m.type == b"R" and pgwire.parse_auth(m)[0] == pgwire.AUTH_MD5
        c.try_send(pgwire.raw_message(b"p", 2))
        expect_protocol_violation(c, postgres_sends_error=False)
    assert_healthy(cluster, bystander)


@pytest.mark.parametrize("type_", [b"!", b"\x00", b"z"])
def test_unknown_message_type_after_login(cluster, bystander, type_):
    with logged_in(cluster) as c:
        c.try_send(pgwire.message(type_, b"whatever\0"))
        expect_protocol_violation(c)
    assert_healthy(cluster, bystander)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello
        bytes(range(256)),
    ],
    ids=["http", "tls-hello", "binary"],
)
def test_garbage_before_startup(cluster, bystander, garbage):
    with wire(cluster) as c:
        c.try_send(garbage)
        expect_protocol_violation(c, postgres_sends_error=False)
    assert_healthy(cluster, bystander)


@pytest.mark.parametrize("length", [0, 4, 7, 10001, 10005, 1_000_000, 2**31 - 1, -8])
def test_startup_length_out_of_range(cluster, bystander, length):
    if DIRECT and length == 10001:
        pytest.skip("Postgres's limit is 10000 bytes after the length word; shardgate's is 10000 in all")
    with wire(cluster) as c:
        body = struct.pack("!i", pgwire.PROTOCOL_3_0) + b"user\0postgres\0\0"
        c.try_send(struct.pack("!i", length) + body[: max(0, min(len(body), length - 4))])
        expect_protocol_violation(c, postgres_sends_error=False)
    assert_healthy(cluster, bystander)


def test_startup_packet_without_terminator(cluster, bystander):
    with wire(cluster) as c:
        body = struct.pack("!i", pgwire.PROTOCOL_3_0) + b"user\0postgres\0database\0app"  # no final NULs
        c.try_send(struct.pack("!i", len(body) + 4) + body)
        expect_protocol_violation(c)
    assert_healthy(cluster, bystander)


def test_startup_packet_without_user(cluster, bystander):
    with wire(cluster) as c:
        c.send(pgwire.startup_message({"database": "app"}))
        msgs = c.wait_closed(10)
        errs = pgwire.errors(msgs)
        assert errs and errs[0].severity == "FATAL", pgwire.types(msgs)
        assert errs[0].code in ("28000", "08P01"), errs[0]
    assert_healthy(cluster, bystander)


@pytest.mark.parametrize(
    "tail",
    [
        b"Q",  # only the type byte
        b"Q\x00\x00",  # half a length
        b"Q\x00\x00\x00\x64SELECT",  # length 100, 6 bytes of body
    ],
    ids=["type-only", "half-length", "half-body"],
)
def test_half_a_message_then_hang_up(cluster, bystander, tail):
    c = logged_in(cluster)
    c.send(tail)
    time.sleep(0.2)
    c.close()
    assert_healthy(cluster, bystander)


def test_half_a_startup_packet_then_hang_up(cluster, bystander):
    packet = pgwire.startup_message({"user": "postgres", "database": "app"})
    for cut in (2, 6, len(packet) - 3):
        c = wire(cluster)
        c.send(packet[:cut])
        time.sleep(0.1)
        c.close()
    assert_healthy(cluster, bystander)


def test_connect_send_nothing_hang_up(cluster, bystander):
    for i in range(20):
        c = wire(cluster)
        c.abort() if i % 2 else c.close()
    assert_healthy(cluster, bystander)


def test_hang_up_during_authentication(cluster, bystander):
    for user in ("postgres", "md5user", "clearuser"):
        c = wire(cluster)
        c.send(pgwire.startup_message({"user": user, "database": "app"}))
        assert c.recv().type == b"R"
        c.abort()
    assert_healthy(cluster, bystander)


def test_hundred_abrupt_connections(cluster, bystander):
    port = cluster.shardgate.port
    startup = pgwire.startup_message({"user": "postgres", "database": "app"})
    for i in range(100):
        c = PgWire(HOST, port)
        kind = i % 5
        if kind == 1:
            c.try_send(startup[:5])
        elif kind == 2:
            c.try_send(startup)
        elif kind == 3:
            c.login(user="trustuser", password=None)
        elif kind == 4:
            c.login(user="trustuser", password=None)
            c.try_send(pgwire.query("SELECT pg_sleep(5)"))
        c.abort()
    assert_healthy(cluster, bystander)


def test_hundred_concurrent_connections_dropped_at_once(cluster, bystander):
    port = cluster.shardgate.port
    socks = []
    try:
        for _ in range(100):
            socks.append(socket.create_connection((HOST, port), timeout=10))
        for s in socks[::2]:
            s.sendall(pgwire.startup_message({"user": "trustuser", "database": "app"})[:9])
    finally:
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    assert_healthy(cluster, bystander)


# --- configured message size limit ------------------------------------------------------------

MAX_MESSAGE_SIZE = 65536


@pytest.fixture
def small_message_cluster(make_cluster, requires_shardgate):
    return make_cluster(num_shards=1, replicas_per_shard=0, general={"max_message_size": MAX_MESSAGE_SIZE})


def test_message_below_max_message_size_passes(small_message_cluster):
    with logged_in(small_message_cluster) as c:
        assert c.scalar("SELECT length('" + "x" * (MAX_MESSAGE_SIZE - 1000) + "')") == str(MAX_MESSAGE_SIZE - 1000)


@pytest.mark.parametrize("type_", [b"Q", b"P"])
def test_message_above_max_message_size_is_rejected(small_message_cluster, type_):
    cluster = small_message_cluster
    with connect(cluster) as bystander_conn:
        with logged_in(cluster) as c:
            # Only the header and a little of the body: the proxy must refuse on the length alone,
            # without buffering the rest.
            c.try_send(pgwire.raw_message(type_, 4 * MAX_MESSAGE_SIZE, b"SELECT '" + b"x" * 1000))
            expect_protocol_violation(c)
        assert_healthy(cluster, bystander_conn)


def test_message_above_max_message_size_sent_in_full(small_message_cluster):
    cluster = small_message_cluster
    with logged_in(cluster) as c:
        c.try_send(pgwire.query("SELECT '" + "y" * (2 * MAX_MESSAGE_SIZE) + "'"))
        expect_protocol_violation(c)
    assert_healthy(cluster)
