"""Transaction pooling (pool_mode = "transaction"): a client holds a shard connection only while it has a
transaction or a statement open, yet sees one uninterrupted Postgres session — its settings, its prepared
statements, its session-level features — while other clients churn the same few connections.

Every test runs its own small cluster (one shard, no replica) so pool sizes are exact; `workers = 1`
unless a test says otherwise, so "a pool of N" means N server connections in total. With
SHARDGATE_TARGET=direct the tests that do not depend on pooling itself run against plain Postgres,
which checks the tests' own expectations.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import socket
import struct
import threading
import time
import uuid
import zoneinfo

import asyncpg
import psycopg
import pytest
from psycopg import errors as pgerrors

import conftest
import pgwire
import txn_helpers as th
from txn_helpers import ChurnGroup, connect, describe_reply, error_codes, extended, ok, raw_rows

DIRECT = pgwire.target_is_direct()
INT4, TEXT = 23, 25


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(150):
        yield


def tx_cluster(make_cluster, pool_size: int = 2, **general):
    """One shard, no replica, shardgate in transaction mode with `pool_size` server connections."""
    g = {"default_pool_size": pool_size, "workers": 1}
    g.update(general)
    return make_cluster(num_shards=1, replicas_per_shard=0, pool_mode="transaction", general=g)


def primary_port(c) -> int:
    return c.shards[0].primary.port


def backend_pid(w: pgwire.PgWire) -> int:
    return int(ok(w, "SELECT pg_backend_pid()")[0][0])


def status_of(msgs: list[pgwire.Message]) -> str:
    """The transaction status byte of the last ReadyForQuery."""
    assert msgs and msgs[-1].type == b"Z", describe_reply(msgs)
    return msgs[-1].payload.decode()


def assert_waiting(w: pgwire.PgWire, seconds: float, what: str) -> None:
    """Nothing arrives for `seconds`: the client's statement is queued for a connection."""
    try:
        m = w.recv(timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"{what}: expected the statement to wait for a connection, got {m!r}")


def sg_psycopg(c, autocommit: bool = True, **kw) -> psycopg.Connection:
    return psycopg.connect(c.shardgate.dsn(), connect_timeout=10, autocommit=autocommit, **kw)


def make_whereami_schemas(c) -> None:
    """sgtx_a.txn_whereami = 'a', sgtx_b.txn_whereami = 'b', public.txn_whereami = 'public': which
    table an unqualified name finds shows the search_path in effect."""
    c.shards[0].primary.psql(
        "CREATE SCHEMA sgtx_a; CREATE SCHEMA sgtx_b;"
        " CREATE TABLE sgtx_a.txn_whereami AS SELECT 'a'::text AS v;"
        " CREATE TABLE sgtx_b.txn_whereami AS SELECT 'b'::text AS v;"
        " CREATE TABLE public.txn_whereami AS SELECT 'public'::text AS v;"
        " GRANT USAGE ON SCHEMA sgtx_a, sgtx_b TO PUBLIC")


def run_probes(sg: pgwire.PgWire, twin: pgwire.PgWire, probe: str, n: int, what: str, pids: set | None = None):
    """Runs `probe` (last column pg_backend_pid()) n times through shardgate, alternating simple and
    extended protocol; every answer must equal plain Postgres's answer in the twin session."""
    want_msgs = twin.simple(probe)
    assert not pgwire.errors(want_msgs), f"{what}: plain Postgres failed: {describe_reply(want_msgs)}"
    want = raw_rows(want_msgs)[0][:-1]
    for i in range(n):
        msgs = sg.simple(probe) if i % 2 else extended(sg, probe)
        assert not pgwire.errors(msgs), f"{what}, statement {i}: {describe_reply(msgs)}"
        row = raw_rows(msgs)[0]
        if pids is not None:
            pids.add(int(row[-1]))
        assert row[:-1] == want, f"{what}, statement {i}: got {row[:-1]}, plain Postgres says {want}"
        time.sleep(0.003)
    return want


def mirror(sg: pgwire.PgWire, twin: pgwire.PgWire, sql: str) -> list[str]:
    """Runs sql in both sessions; both must agree on the error codes (none, usually)."""
    a, b = error_codes(sg.simple(sql)), error_codes(twin.simple(sql))
    assert a == b, f"{sql!r}: shardgate errors {a}, plain Postgres errors {b}"
    return a


# =============================================================================================
# Who holds a connection, and for how long
# =============================================================================================


@pytest.mark.requires_shardgate
def test_autocommit_statements_share_one_backend(make_cluster):
    c = tx_cluster(make_cluster, pool_size=1)
    clients = [connect(c.shardgate.port) for _ in range(5)]
    try:
        pids = set()
        for _ in range(4):
            for w in clients:
                pids.add(backend_pid(w))
                msgs = extended(w, "SELECT pg_backend_pid(), $1::int + 1", ("41",))
                assert not pgwire.errors(msgs), describe_reply(msgs)
                row = pgwire.data_rows(msgs)[0]
                pids.add(int(row[0]))
                assert row[1] == "42"
                assert status_of(msgs) == "I"
        assert len(pids) == 1, f"5 clients on a pool of 1 ran on several backends: {pids}"
        # The shard itself sees a single connection from shardgate, not five.
        # (The metrics endpoint's health probe connects now and then too: not a pool connection.)
        n = c.shards[0].primary.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                                     "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                                     "AND application_name <> 'shardgate_probe'")
        assert n == "1", f"{n} server connections for a pool of 1"
    finally:
        for w in clients:
            w.close()


@pytest.mark.requires_shardgate
def test_copy_and_function_call_give_the_connection_back(make_cluster):
    """A simple-protocol COPY FROM STDIN and a fast-path FunctionCall (libpq's large-object calls use it)
    each end with their ReadyForQuery: the connection goes back to the pool then, so another client of
    a pool of one gets it at once (not after query_wait_timeout)."""
    c = tx_cluster(make_cluster, pool_size=1)
    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        assert not pgwire.errors(a.simple("CREATE TABLE IF NOT EXISTS copied_back (x int)"))
        a.send(pgwire.query("COPY copied_back FROM STDIN"))
        assert pgwire.types(a.recv_until(b"G")) == "G"
        a.send(pgwire.copy_data(b"1\n2\n") + pgwire.copy_done())
        msgs = a.recv_until(b"Z")
        assert not pgwire.errors(msgs) and status_of(msgs) == "I", describe_reply(msgs)
        assert ok(b, "SELECT count(*) FROM copied_back", timeout=5) == [["2"]]
        pg_backend_pid_oid = 2026
        a.send(pgwire.message(b"F", struct.pack("!ihhh", pg_backend_pid_oid, 0, 0, 0)))
        msgs = a.recv_until(b"Z")
        assert pgwire.types(msgs) == "VZ" and status_of(msgs) == "I", describe_reply(msgs)
        assert ok(b, "SELECT 1", timeout=5) == [["1"]]


@pytest.mark.requires_shardgate
@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_terminate_in_the_middle_of_copy_from_stdin_fails_the_copy(make_cluster, protocol):
    """A client sends COPY ... FROM STDIN, a row, then Terminate and closes: as Postgres does, the
    COPY fails (nothing of it stays) and the connection is free for the next client, instead of
    waiting in COPY for rows that never come while it holds the pool's only connection and the
    table's lock."""
    c = tx_cluster(make_cluster, pool_size=1)
    c.shards[0].primary.psql("CREATE TABLE txn_copy_term (i int)")
    with connect(c.shardgate.port) as a:
        copy = "COPY txn_copy_term FROM STDIN"
        if protocol == "simple":
            a.send(pgwire.query(copy))
        else:
            a.send(pgwire.parse("", copy) + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        assert b"G" in [m.type for m in a.recv_until(b"G")]
        a.send(pgwire.copy_data(b"1\n") + pgwire.terminate())
    with connect(c.shardgate.port) as b:
        assert ok(b, "SELECT count(*) FROM txn_copy_term", timeout=10) == [["0"]]
        ok(b, "BEGIN; LOCK TABLE txn_copy_term IN ACCESS EXCLUSIVE MODE NOWAIT; COMMIT", timeout=10)


def test_open_transaction_keeps_its_connection(make_cluster):
    c = tx_cluster(make_cluster, pool_size=1)
    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        assert status_of(a.simple("BEGIN")) == "T"
        pid_a = backend_pid(a)
        b.send(pgwire.query("SELECT pg_backend_pid()"))
        assert_waiting(b, 0.8, "another client while the transaction is open")
        # The transaction keeps running on its own backend, in both protocols.
        for i in range(3):
            assert backend_pid(a) == pid_a
            msgs = extended(a, "SELECT pg_backend_pid(), $1::int", (str(i),))
            assert pgwire.data_rows(msgs)[0] == [str(pid_a), str(i)] and status_of(msgs) == "T"
        assert_waiting(b, 0.3, "another client while the transaction is open")
        # A failed transaction ('E') keeps it too: the client must still be able to ROLLBACK there.
        msgs = a.simple("SELECT 1/0")
        assert error_codes(msgs) == ["22012"] and status_of(msgs) == "E", describe_reply(msgs)
        assert error_codes(a.simple("SELECT 1")) == ["25P02"]
        assert_waiting(b, 0.5, "another client while the transaction is failed")
        msgs = a.simple("ROLLBACK")
        t_commit = time.monotonic()
        assert status_of(msgs) == "I"
        got = b.recv_until(b"Z", timeout=5)
        waited = time.monotonic() - t_commit
        assert not pgwire.errors(got), describe_reply(got)
        assert pgwire.data_rows(got) == [[str(pid_a)]], "the waiting client got the freed connection"
        assert waited < 1.0, f"the waiting client took {waited:.2f}s after the ROLLBACK"
        # And the other way round, with COMMIT. (A BEGIN alone holds nothing: the transaction takes the
        # connection with its first statement; see test_deferred_begin.py.)
        assert status_of(b.simple("BEGIN")) == "T"
        assert status_of(b.simple("SELECT 1")) == "T"
        a.send(pgwire.query("SELECT pg_backend_pid()"))
        assert_waiting(a, 0.5, "a client while another has BEGIN open")
        assert status_of(b.simple("COMMIT")) == "I"
        t_commit = time.monotonic()
        got = a.recv_until(b"Z", timeout=5)
        assert pgwire.data_rows(got) == [[str(pid_a)]] and time.monotonic() - t_commit < 1.0


@pytest.mark.requires_shardgate
def test_psycopg_transaction_holds_and_releases(make_cluster):
    """psycopg's implicit BEGIN (autocommit off) holds the connection until commit()."""
    c = tx_cluster(make_cluster, pool_size=1)
    with sg_psycopg(c, autocommit=False) as a, sg_psycopg(c) as b:
        pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        result = {}

        def other():
            t = time.monotonic()
            result["pid"] = b.execute("SELECT pg_backend_pid()").fetchone()[0]
            result["at"] = time.monotonic()
            result["waited"] = result["at"] - t

        t = threading.Thread(target=other, daemon=True)
        t.start()
        time.sleep(0.8)
        assert "pid" not in result, "the other client ran while the transaction was open"
        assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pid_a
        a.commit()
        committed = time.monotonic()
        t.join(5)
        assert result.get("pid") == pid_a
        assert result["at"] - committed < 1.0


def test_client_leaving_mid_transaction_rolls_it_back(make_cluster):
    c = tx_cluster(make_cluster, pool_size=1)
    c.shards[0].primary.psql("CREATE TABLE txn_leave (id int)")
    port = c.shardgate.port
    a = connect(port)
    ok(a, "BEGIN")
    ok(a, "INSERT INTO txn_leave VALUES (1)")
    a.abort()  # TCP reset, no Terminate
    with connect(port) as b:
        assert ok(b, "SELECT count(*) FROM txn_leave", timeout=10) == [["0"]]
        # b is not inside what a left behind.
        assert ok(b, "SELECT txid_current_if_assigned() IS NULL") == [["t"]]
        msgs = b.simple("SELECT 1")
        assert status_of(msgs) == "I"
        # A failed transaction left with a polite Terminate.
        a2 = connect(port)
        ok(a2, "BEGIN")
        ok(a2, "INSERT INTO txn_leave VALUES (2)")
        a2.simple("SELECT 1/0")
        a2.send(pgwire.terminate())
        a2.close()
        ok(b, "INSERT INTO txn_leave VALUES (3)")
        assert ok(b, "SELECT array_agg(id) FROM txn_leave") == [["{3}"]]


def test_client_leaving_with_running_query_frees_the_pool(make_cluster):
    c = tx_cluster(make_cluster, pool_size=1)
    a = connect(c.shardgate.port)
    a.send(pgwire.query("SELECT pg_sleep(60)"))
    time.sleep(0.3)
    a.close()
    with connect(c.shardgate.port) as b:
        t = time.monotonic()
        assert ok(b, "SELECT 42", timeout=10) == [["42"]]
        assert time.monotonic() - t < 5, "the pool stayed busy with the departed client's query"


# =============================================================================================
# Session settings follow the client from connection to connection
# =============================================================================================

def test_new_client_starts_with_its_own_settings(make_cluster):
    """A client logging in on a server connection another client has changed settings on sees its own
    startup settings (and the server defaults for the rest), in ParameterStatus and in query results."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    reported = ["TimeZone", "DateStyle", "IntervalStyle", "application_name", "client_encoding",
                "standard_conforming_strings"]
    first_startup = {"options": "-c TimeZone=Asia/Tokyo -c DateStyle=German", "application_name": "first_app"}
    with connect(port, first_startup) as first:
        for sql in ["SET IntervalStyle = 'iso_8601'", "SET client_encoding = 'LATIN1'",
                    "SET standard_conforming_strings = off"]:
            ok(first, sql)
        ok(first, "SELECT 1")
        cases = [("no settings", {}), ("its own TimeZone", {"options": "-c TimeZone=America/New_York"})]
        for what, params in cases:
            with pgwire.PgWire(th.HOST, port) as w, pgwire.PgWire(th.HOST, primary_port(c)) as twin:
                got = w.login(params=params).params
                want = twin.login(params=params).params
                for name in reported:
                    assert got.get(name) == want.get(name), \
                        f"{what}: ParameterStatus {name} at login is {got.get(name)!r}, " \
                        f"plain Postgres says {want.get(name)!r}"
                expected = th.reference_row(primary_port(c), params, [])
                row = raw_rows(w.simple(th.PROBE_SQL))[0][:-1]
                diff = [f"{n}: got {g!r}, expected {e!r}" for n, g, e in zip(th.PROBE_COLUMNS, row, expected) if g != e]
                assert not diff, f"{what}: " + "; ".join(diff)
    # And after the first client has left.
    with connect(port) as w:
        row = raw_rows(w.simple(th.PROBE_SQL))[0][:-1]
        assert row == th.reference_row(primary_port(c), {}, []), row


def test_startup_packet_settings_are_taken_as_postgres_takes_them(make_cluster):
    """`options` is applied before the packet's own settings, whatever their order; a read-only
    setting fails the login (55P02); session_authorization is ignored, and a RESET ALL does not
    make the client (or the next client of its connection) another role."""
    c = tx_cluster(make_cluster, pool_size=1)
    c.shards[0].primary.psql("CREATE ROLE sgtx_other")
    who = ("SELECT current_user, session_user, current_setting('application_name'),"
           " current_setting('extra_float_digits')")
    cases = [
        ("options after the settings", {"application_name": "plain", "extra_float_digits": "3",
                                        "options": "-c application_name=opt -c extra_float_digits=0"}),
        ("options before the settings", {"options": "-c application_name=opt -c extra_float_digits=0",
                                         "application_name": "plain", "extra_float_digits": "3"}),
        ("session_authorization", {"session_authorization": "sgtx_other", "application_name": "sa"}),
    ]
    for what, params in cases:
        answers = []
        for port in (primary_port(c), c.shardgate.port):
            with pgwire.PgWire(th.HOST, port) as w:
                got = w.login(params=params).params
                rows = ok(w, who)
                ok(w, "RESET ALL")
                rows += ok(w, who)
            with connect(port) as other:
                rows += ok(other, "SELECT current_user, session_user, 'next', 'client'")
            answers.append((got.get("application_name"), got.get("session_authorization"), rows))
        assert answers[1] == answers[0], f"{what}: shardgate {answers[1]}, Postgres {answers[0]}"
    for params in ({"server_version": "1"}, {"options": "-c is_superuser=off"}):
        codes = []
        for port in (primary_port(c), c.shardgate.port):
            with pgwire.PgWire(th.HOST, port) as w, pytest.raises(pgwire.LoginError) as refused:
                w.login(params=params)
            codes.append(refused.value.error.code)
        assert codes == ["55P02", "55P02"], (params, codes)


# (setting, value in the startup packet's options, value for SET, an expression whose value shows it,
#  reported by Postgres in ParameterStatus)
SETTINGS = [
    ("client_encoding", "WIN1252", "'LATIN9'", "chr(233) || chr(8364)", True),
    ("DateStyle", r"SQL,\ DMY", "'German'", "'2024-03-05'::date::text", True),
    ("TimeZone", "Asia/Tokyo", "'America/New_York'", "'2024-03-05 12:00:00+00'::timestamptz::text", True),
    ("IntervalStyle", "postgres_verbose", "'iso_8601'", "'1 day 02:03:04'::interval::text", True),
    ("application_name", "startup_app", "'set_app'",
     "(SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid())", True),
    ("standard_conforming_strings", "off", "on", "length('a\\\\b')", True),
    ("search_path", "sgtx_a,public", "sgtx_b, public", "(SELECT v FROM txn_whereami)", False),
    ("extra_float_digits", "-3", "0", "(1/3::float8)::text", False),
    ("statement_timeout", "4321", "'5s'", "current_setting('statement_timeout')", False),
    ("lock_timeout", "3210", "'7s'", "current_setting('lock_timeout')", False),
]


@pytest.mark.parametrize("name,startup_value,set_value,effect,reported", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_setting_survives_pooling(make_cluster, name, startup_value, set_value, effect, reported):
    """The setting from the startup packet, then SET, then RESET (back to the startup value): every
    statement sees the session's value while churn clients with settings of their own share the pool."""
    c = tx_cluster(make_cluster, pool_size=2)
    make_whereami_schemas(c)
    probe = f"SELECT current_setting('{name}'), {effect}, pg_backend_pid()"
    startup = {"options": f"-c {name}={startup_value}"}
    pids: set[int] = set()
    with connect(primary_port(c)) as plain:
        default = raw_rows(plain.simple(probe))[0][:-1]
    with connect(c.shardgate.port, startup) as sg, connect(primary_port(c), startup) as twin, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        seen = {"startup": run_probes(sg, twin, probe, 16, f"{name} from the startup packet", pids)}
        mirror(sg, twin, f"SET {name} = {set_value}")
        seen["set"] = run_probes(sg, twin, probe, 16, f"{name} after SET", pids)
        mirror(sg, twin, f"RESET {name}")
        seen["reset"] = run_probes(sg, twin, probe, 16, f"{name} after RESET", pids)
        mirror(sg, twin, f"SET {name} = {set_value}")
        mirror(sg, twin, f"SET {name} TO DEFAULT")
        seen["to default"] = run_probes(sg, twin, probe, 8, f"{name} after SET TO DEFAULT", pids)
    churn.check()
    # The test means something only if the values differ. (RESET and SET TO DEFAULT go back to the
    # session's default, which is the startup packet's value.)
    assert seen["startup"] != default, f"the startup value of {name} looks like the server default: {default}"
    assert seen["set"] != seen["startup"], seen
    assert seen["reset"] == seen["startup"] == seen["to default"], seen
    if reported and not DIRECT:
        # Reported settings do not pin: the client must really have moved between connections.
        assert len(pids) >= 2, f"the client stayed on backend {pids}; the test did not exercise pooling"


def test_set_in_the_extended_protocol_follows_its_client(make_cluster):
    """pgjdbc sends SET through the extended protocol (SET extra_float_digits right after start-up,
    Statement.execute("SET ...")): it follows its client like a simple-protocol SET, counted at the batch's
    Sync, also from a named statement bound in a later batch, and not when the batch fails; it does not
    pin the client (two clients share a pool of one), and it never reaches the other client."""
    c = tx_cluster(make_cluster, pool_size=1)
    probe = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"

    def seen(w: pgwire.PgWire) -> list[str | None]:
        msgs = extended(w, probe)
        assert not pgwire.errors(msgs), describe_reply(msgs)
        simple = ok(w, probe)
        assert pgwire.data_rows(msgs) == simple, (describe_reply(msgs), simple)
        return simple[0]

    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        defaults = seen(b)
        msgs = extended(a, "SET statement_timeout = '4321s'")
        assert not pgwire.errors(msgs) and status_of(msgs) == "I", describe_reply(msgs)
        for _ in range(3):
            assert seen(a) == ["4321s", defaults[1]]
            assert seen(b) == defaults
        # A named statement, parsed in one batch and run in later ones.
        msgs = th.prepare(a, "set_lock", "SET lock_timeout = '7s'")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert seen(a) == ["4321s", defaults[1]]
        msgs = th.exec_prepared(a, "set_lock")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert seen(a) == ["4321s", "7s"]
        assert seen(b) == defaults
        # A batch that fails after its SET: the SET is rolled back with it.
        a.send(pgwire.parse("", "SET statement_timeout = '99s'") + pgwire.bind("", "") + pgwire.execute()
               + pgwire.parse("", "SELECT 1 / 0") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert error_codes(msgs) == ["22012"], describe_reply(msgs)
        assert seen(a) == ["4321s", "7s"]
        assert seen(b) == defaults
        if not DIRECT:
            assert backend_pid(a) == backend_pid(b), "a pool of one: both clients must share its connection"


def test_settings_in_transactions(make_cluster):
    """SET LOCAL ends with its transaction; SET in a rolled-back transaction or savepoint is undone;
    SET in a committed transaction stays — for reported and unreported settings alike."""
    c = tx_cluster(make_cluster, pool_size=2)
    make_whereami_schemas(c)
    probe = ("SELECT '2024-03-05 12:00:00+00'::timestamptz::text, current_setting('application_name'),"
             " (SELECT v FROM txn_whereami), current_setting('statement_timeout'), pg_backend_pid()")
    with connect(c.shardgate.port) as sg, connect(primary_port(c)) as twin, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        default = run_probes(sg, twin, probe, 4, "before anything")
        steps = [
            ("SET LOCAL, COMMIT",
             ["BEGIN", "SET LOCAL TimeZone = 'Asia/Tokyo'", "SET LOCAL search_path = sgtx_a, public",
              "SET LOCAL application_name = 'local_app'", "SET LOCAL statement_timeout = '9s'"]),
            ("inside the transaction", []),
            ("after COMMIT", ["COMMIT"]),
            ("SET in a committed transaction",
             ["BEGIN", "SET TimeZone = 'Asia/Tokyo'", "SET search_path = sgtx_a, public",
              "SET application_name = 'committed_app'", "COMMIT"]),
            ("SET in a rolled-back transaction",
             ["BEGIN", "SET TimeZone = 'America/New_York'", "SET search_path = sgtx_b, public",
              "SET application_name = 'rolled_back_app'", "SET statement_timeout = '8s'", "ROLLBACK"]),
            ("SET after a rolled-back savepoint",
             ["BEGIN", "SAVEPOINT s", "SET TimeZone = 'Australia/Adelaide'", "SET search_path = sgtx_b",
              "ROLLBACK TO SAVEPOINT s", "SET application_name = 'after_savepoint'", "COMMIT"]),
            ("SET in a failed transaction",
             ["BEGIN", "SET TimeZone = 'Europe/Berlin'", "SET search_path = sgtx_b, public", "SELECT 1/0",
              "ROLLBACK"]),
            ("SET LOCAL in a rolled-back transaction",
             ["BEGIN", "SET LOCAL TimeZone = 'Europe/Berlin'", "ROLLBACK"]),
            # COMMIT AND CHAIN commits, and begins the next transaction at once: rolling that one
            # back keeps what the first one set.
            ("SET before COMMIT AND CHAIN, then ROLLBACK",
             ["BEGIN", "SET TimeZone = 'Asia/Kolkata'", "SET search_path = sgtx_b, public",
              "SET application_name = 'chained_app'", "COMMIT AND CHAIN", "SET TimeZone = 'UTC'", "ROLLBACK"]),
        ]
        results = {}
        for what, stmts in steps:
            for s in stmts:
                mirror(sg, twin, s)
            n = 4 if what == "inside the transaction" else 12
            results[what] = run_probes(sg, twin, probe, n, what)
    churn.check()
    assert results["inside the transaction"] != default
    assert results["after COMMIT"] == default
    assert results["SET in a committed transaction"] != default
    assert results["SET in a rolled-back transaction"] == results["SET in a committed transaction"]
    assert results["SET before COMMIT AND CHAIN, then ROLLBACK"][:3] == \
        [b"2024-03-05 17:30:00+05:30", b"chained_app", b"b"]


def test_reset_all_and_discard_all_go_back_to_startup_values(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    make_whereami_schemas(c)
    probe = ("SELECT '2024-03-05 12:00:00+00'::timestamptz::text, current_setting('DateStyle'),"
             " current_setting('application_name'), (SELECT v FROM txn_whereami),"
             " current_setting('statement_timeout'), (1/3::float8)::text, pg_backend_pid()")
    startup = {"options": "-c TimeZone=Asia/Tokyo -c search_path=sgtx_a,public -c statement_timeout=4321",
               "application_name": "startup_app"}
    changes = ["SET TimeZone = 'America/New_York'", "SET DateStyle = 'German'", "SET search_path = sgtx_b",
               "SET application_name = 'changed'", "SET statement_timeout = '6s'", "SET extra_float_digits = -2"]
    with connect(c.shardgate.port, startup) as sg, connect(primary_port(c), startup) as twin, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        at_start = run_probes(sg, twin, probe, 6, "startup values")
        for how in ("RESET ALL", "DISCARD ALL"):
            for s in changes:
                mirror(sg, twin, s)
            changed = run_probes(sg, twin, probe, 8, f"before {how}")
            assert changed != at_start
            mirror(sg, twin, how)
            assert run_probes(sg, twin, probe, 12, f"after {how}") == at_start
    churn.check()


def test_resets_through_the_extended_protocol_go_back_to_startup_values(make_cluster):
    """RESET ALL, DISCARD ALL, RESET name and SET name TO DEFAULT sent through the extended protocol
    (psycopg's prepare=True, asyncpg's fetch) go back to the startup packet's values, as Postgres
    does, not to the pooled connection's own defaults."""
    c = tx_cluster(make_cluster, pool_size=2)
    probe = ("SELECT current_setting('application_name'), current_setting('work_mem'),"
             " current_setting('TimeZone'), current_setting('extra_float_digits')")
    changes = ("SET application_name = 'x'; SET work_mem = '1MB'; SET TimeZone = 'America/New_York';"
               " SET extra_float_digits = 0")

    def with_psycopg(port):
        out = []
        with psycopg.connect(host=th.HOST, port=port, user="postgres", password="postgres", dbname="app",
                             autocommit=True, application_name="myapp",
                             options="-c work_mem=8MB -c TimeZone=Asia/Tokyo -c extra_float_digits=3") as conn:
            for statement in ("DISCARD ALL", "RESET ALL", "RESET application_name", "SET work_mem TO DEFAULT"):
                conn.execute(changes)
                conn.execute(statement, prepare=True)
                out.append((statement, *conn.execute(probe).fetchone()))
        return out

    async def with_asyncpg(port):
        conn = await asyncpg.connect(host=th.HOST, port=port, user="postgres", password="postgres", database="app",
                                     server_settings={"application_name": "myapp", "TimeZone": "Asia/Tokyo",
                                                      "extra_float_digits": "3"})
        try:
            await conn.execute(changes)
            await conn.fetch("RESET ALL")
            return [("asyncpg RESET ALL", *(await conn.fetchrow(probe)))]
        finally:
            await conn.close()

    for port in (primary_port(c), c.shardgate.port):
        results = with_psycopg(port) + asyncio.run(with_asyncpg(port))
        if port == primary_port(c):
            want = results
        else:
            assert results == want


def test_every_spelling_of_a_time_zone_reset_goes_back_to_the_startup_value(make_cluster):
    """SET TIME ZONE LOCAL, SET SESSION TIME ZONE DEFAULT and SET TimeZone TO DEFAULT are RESET
    TimeZone: the client's startup value, not the pooled connection's default, on every
    connection it gets afterwards."""
    c = tx_cluster(make_cluster, pool_size=2)
    probe = "SELECT '2024-03-05 12:00:00+00'::timestamptz::text, current_setting('TimeZone'), pg_backend_pid()"
    startup = {"options": "-c TimeZone=Asia/Tokyo"}
    with connect(c.shardgate.port, startup) as sg, connect(primary_port(c), startup) as twin, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        at_start = run_probes(sg, twin, probe, 4, "startup values")
        for reset in ("SET TIME ZONE LOCAL", "SET SESSION TIME ZONE DEFAULT", "SET TimeZone TO DEFAULT",
                      "SET SESSION TimeZone TO DEFAULT"):
            mirror(sg, twin, "SET TIME ZONE 'America/Lima'")
            assert run_probes(sg, twin, probe, 4, f"before {reset}") != at_start
            mirror(sg, twin, reset)
            assert run_probes(sg, twin, probe, 8, f"after {reset}") == at_start
    churn.check()


def test_set_config_function(make_cluster):
    """set_config() of reported settings: Postgres reports the change, so it follows the client."""
    c = tx_cluster(make_cluster, pool_size=2)
    probe = ("SELECT '2024-03-05 12:00:00+00'::timestamptz::text, current_setting('application_name'),"
             " pg_backend_pid()")
    with connect(c.shardgate.port) as sg, connect(primary_port(c)) as twin, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        default = run_probes(sg, twin, probe, 4, "default")
        mirror(sg, twin, "SELECT set_config('TimeZone', 'Asia/Tokyo', false), "
                         "set_config('application_name', 'via_set_config', false)")
        changed = run_probes(sg, twin, probe, 12, "after set_config")
        assert changed != default
        for s in ["BEGIN", "SELECT set_config('TimeZone', 'America/New_York', true)", "COMMIT"]:
            mirror(sg, twin, s)
        assert run_probes(sg, twin, probe, 12, "after a transaction-local set_config") == changed
    churn.check()


def test_statement_and_lock_timeouts_take_effect(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    c.shards[0].primary.psql("CREATE TABLE txn_locked (id int)")
    with connect(c.shardgate.port) as sg, ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        ok(sg, "SET statement_timeout = '150ms'")
        for i in range(4):
            ok(sg, "SELECT 1")
            t = time.monotonic()
            msgs = sg.simple("SELECT pg_sleep(0.8)")
            assert error_codes(msgs) == ["57014"], f"try {i}: {describe_reply(msgs)}"
            assert time.monotonic() - t < 0.7
        ok(sg, "RESET statement_timeout")
        assert ok(sg, "SELECT pg_sleep(0.3)::text || 'slept'") == [["slept"]]
        # lock_timeout: another session holds the table's lock (directly on the shard).
        with connect(primary_port(c)) as holder:
            ok(holder, "BEGIN")
            ok(holder, "LOCK TABLE txn_locked IN ACCESS EXCLUSIVE MODE")
            ok(sg, "SET lock_timeout = '200ms'")
            for i in range(3):
                ok(sg, "SELECT 1")
                t = time.monotonic()
                msgs = sg.simple("SELECT count(*) FROM txn_locked")
                assert error_codes(msgs) == ["55P03"], f"try {i}: {describe_reply(msgs)}"
                assert time.monotonic() - t < 2.0
            ok(holder, "ROLLBACK")
        assert ok(sg, "SELECT count(*) FROM txn_locked") == [["0"]]
    churn.check()


def test_psycopg_follows_its_timezone(make_cluster):
    """psycopg builds tz-aware datetimes from the TimeZone the server reported to it: the ParameterStatus
    it sees must be its own session's, through connection changes."""
    c = tx_cluster(make_cluster, pool_size=2)
    instant = datetime.datetime(2024, 3, 5, 12, 0, tzinfo=datetime.timezone.utc)
    with sg_psycopg(c, options="-c TimeZone=Asia/Tokyo") as conn, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        for zone in ("Asia/Tokyo", "America/New_York", "Europe/Lisbon"):
            if zone != "Asia/Tokyo":
                conn.execute(f"SET TimeZone = '{zone}'")
            for i in range(10):
                got = conn.execute("SELECT %s::timestamptz, current_setting('TimeZone')", (instant,)).fetchone()
                assert got[1] == zone
                offset = instant.astimezone(zoneinfo.ZoneInfo(zone)).utcoffset()
                assert got[0] == instant and got[0].utcoffset() == offset, got
                assert conn.info.parameter_status("TimeZone") == zone
                assert conn.info.timezone == zoneinfo.ZoneInfo(zone)
    churn.check()


# =============================================================================================
# Prepared statements
# =============================================================================================


def test_psycopg_prepared_statements_under_churn(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    problems: list[str] = []
    done: list[int] = []

    def client(k: int, prepare_threshold: int | None, explicit: bool, binary: bool):
        try:
            with sg_psycopg(c, prepare_threshold=prepare_threshold) as conn:
                cur = conn.cursor(binary=binary)
                for i in range(40):
                    kw = {"prepare": True} if explicit else {}
                    # A text of this client's own, and one every client shares.
                    row = cur.execute(f"SELECT %s::int * {k + 2}, %s::text || '-c{k}'", (i, f"v{i}"), **kw).fetchone()
                    if row != (i * (k + 2), f"v{i}-c{k}"):
                        problems.append(f"client {k} #{i}: {row}")
                    row = cur.execute("SELECT %s::int8 + 1, %s::numeric * 2, %s::date", (i, decimal.Decimal("1.25"),
                                      datetime.date(2024, 1, 1 + i % 28)), **kw).fetchone()
                    if row != (i + 1, decimal.Decimal("2.50"), datetime.date(2024, 1, 1 + i % 28)):
                        problems.append(f"client {k} shared #{i}: {row}")
                # On plain Postgres (direct mode) check that the configurations really prepare; through
                # shardgate this statement may run on a connection other than the ones that prepared.
                prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
                if DIRECT and prepared < 1:
                    problems.append(f"client {k}: nothing was prepared; the test did not test prepared statements")
                done.append(k)
        except Exception as e:  # noqa: BLE001
            problems.append(f"client {k}: {type(e).__name__}: {e}")

    # (client, prepare_threshold, prepare=True on each execute, binary results)
    configs = [(0, 0, False, False), (1, 0, False, True), (2, 100, True, False), (3, 1, False, True),
               (4, 100, True, True)]
    with ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        threads = [threading.Thread(target=client, args=cfg, daemon=True) for cfg in configs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    churn.check()
    assert not problems, "\n".join(problems)
    assert sorted(done) == [0, 1, 2, 3, 4]


def test_asyncpg_under_churn(make_cluster):
    """asyncpg prepares every statement (names __asyncpg_stmt_N__, the same in every connection) and
    asks for binary results."""
    c = tx_cluster(make_cluster, pool_size=2)
    c.shards[0].primary.psql("CREATE TABLE txn_apg (k int, i int, v text, PRIMARY KEY (k, i))")

    async def client(k: int):
        conn = await asyncpg.connect(host="127.0.0.1", port=c.shardgate.port, user="postgres",
                                     password="postgres", database="app", timeout=10)
        try:
            stmt = await conn.prepare(f"SELECT $1::int * {k + 3} AS v, $2::text AS t")
            for i in range(25):
                row = await stmt.fetchrow(i, f"s{i}")
                assert (row["v"], row["t"]) == (i * (k + 3), f"s{i}"), (k, i, row)
                got = await conn.fetchrow(
                    f"SELECT $1::bigint + {k}, $2::numeric, $3::timestamptz, $4::bytea, $5::int[], $6::uuid",
                    i, decimal.Decimal("3.14"), datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                    b"\x00\x01" * i, [i, k], uuid.UUID(int=i))
                assert tuple(got) == (i + k, decimal.Decimal("3.14"),
                                      datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                                      b"\x00\x01" * i, [i, k], uuid.UUID(int=i)), (k, i, got)
                assert await conn.fetchval("SELECT count(*) FROM txn_apg WHERE k = $1", k) == i
                await conn.execute("INSERT INTO txn_apg VALUES ($1, $2, $3)", k, i, f"row{i}")
            await conn.executemany("INSERT INTO txn_apg VALUES ($1, $2, $3)", [(k, 100 + j, "many") for j in range(20)])
            async with conn.transaction():
                total = 0
                async for r in conn.cursor("SELECT i FROM txn_apg WHERE k = $1 ORDER BY i", k, prefetch=7):
                    total += r["i"]
                assert total == sum(range(25)) + sum(100 + j for j in range(20))
            return k
        finally:
            await conn.close()

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(6))), timeout=90)

    with ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        assert sorted(asyncio.run(main())) == list(range(6))
    churn.check()


def test_same_statement_name_different_texts(make_cluster):
    """Clients' statement names are their own: two clients on one server connection both use "s1"."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, connect(port) as other:
        ra = th.prepare(a, "s1", "SELECT 'a:' || $1::text", (TEXT,))
        rb = th.prepare(b, "s1", "SELECT $1::int + 100, 'b'::text", (INT4,))
        assert not pgwire.errors(ra) and not pgwire.errors(rb), (describe_reply(ra), describe_reply(rb))
        if not DIRECT:
            assert backend_pid(a) == backend_pid(b), "a pool of 1 must put both on one backend"
        for i in range(15):
            ma = th.exec_prepared(a, "s1", (f"x{i}",))
            mb = th.exec_prepared(b, "s1", (str(i),))
            assert pgwire.data_rows(ma) == [[f"a:x{i}"]], describe_reply(ma)
            assert pgwire.data_rows(mb) == [[str(i + 100), "b"]], describe_reply(mb)
        da, db = th.describe_statement(a, "s1"), th.describe_statement(b, "s1")
        assert th.parameter_oids(da) == [TEXT] and [t for _, t in th.row_columns(da)] == [TEXT]
        assert th.parameter_oids(db) == [INT4] and [t for _, t in th.row_columns(db)] == [INT4, TEXT]
        # A client that never prepared s1 does not see anybody's s1.
        for msgs in (th.exec_prepared(other, "s1", ("1",)), th.describe_statement(other, "s1")):
            assert error_codes(msgs) == ["26000"], describe_reply(msgs)
            assert 's1' in pgwire.errors(msgs)[0].message
        # Nor can it close it for them.
        other.send(pgwire.close("S", "s1") + pgwire.sync())
        assert not pgwire.errors(other.recv_until(b"Z"))
        assert pgwire.data_rows(th.exec_prepared(a, "s1", ("y",))) == [["a:y"]]
        # a redefines its s1; b's stays.
        a.send(pgwire.close("S", "s1") + pgwire.parse("s1", "SELECT 'a2'::text") + pgwire.sync())
        assert not pgwire.errors(a.recv_until(b"Z"))
        assert pgwire.data_rows(th.exec_prepared(a, "s1")) == [["a2"]]
        assert pgwire.data_rows(th.exec_prepared(b, "s1", ("5",))) == [["105", "b"]]
        # The same text under the same name in a third client works too.
        assert not pgwire.errors(th.prepare(other, "s1", "SELECT 'a2'::text"))
        assert pgwire.data_rows(th.exec_prepared(other, "s1")) == [["a2"]]


def test_same_text_prepared_under_other_settings_reads_its_literals_with_them(make_cluster):
    """Postgres reads a statement's literals with the settings of the session that parses it. Two
    clients on one server connection prepare the same text under different TimeZone, DateStyle and
    standard_conforming_strings: each gets its own reading, as against Postgres directly (sharing
    one server-side statement gave the second client the first one's)."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    text = ("SELECT '2020-01-01 00:00'::timestamptz::text, '01/02/2020'::date::text,"
            " 'a\\b'::text, $1::int")
    with connect(port) as a, connect(port) as b, connect(port) as same_as_a:
        ok(a, "SET TimeZone = 'Asia/Tokyo'")
        ok(a, "SET DateStyle = 'ISO, DMY'")
        ok(a, "SET standard_conforming_strings = off")
        ok(a, "SET escape_string_warning = off")
        ok(same_as_a, "SET TimeZone = 'Asia/Tokyo'")
        ok(same_as_a, "SET DateStyle = 'ISO, DMY'")
        ok(same_as_a, "SET standard_conforming_strings = off")
        ok(same_as_a, "SET escape_string_warning = off")
        ok(b, "SET TimeZone = 'UTC'")
        ok(b, "SET DateStyle = 'ISO, MDY'")
        for w in (a, b, same_as_a):
            assert not pgwire.errors(th.prepare(w, "lit", text, (INT4,)))
        if not DIRECT:
            assert backend_pid(a) == backend_pid(b), "a pool of 1 must put both on one backend"
        for _ in range(2):
            # Without standard_conforming_strings, \b in a literal is a backspace.
            for w, want in ((a, ["2020-01-01 00:00:00+09", "2020-02-01", "a\x08", "1"]),
                            (b, ["2020-01-01 00:00:00+00", "2020-01-02", "a\\b", "1"]),
                            (same_as_a, ["2020-01-01 00:00:00+09", "2020-02-01", "a\x08", "1"])):
                msgs = th.exec_prepared(w, "lit", ("1",))
                assert pgwire.data_rows(msgs) == [want], describe_reply(msgs)


def test_statement_prepared_after_ddl_sees_the_new_table(make_cluster):
    """A client that prepares a text after an ALTER TABLE (run through shardgate) gets a statement
    analysed against the new table, as from Postgres: the connection's statement of the same text,
    prepared before, would fail with "cached plan must not change result type"."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    with connect(port) as admin:
        ok(admin, "CREATE TABLE txn_ddl_t (a int); INSERT INTO txn_ddl_t VALUES (1)")
        with connect(port) as before:
            assert not pgwire.errors(th.prepare(before, "s", "SELECT * FROM txn_ddl_t"))
            assert pgwire.data_rows(th.exec_prepared(before, "s")) == [["1"]]
            ok(admin, "ALTER TABLE txn_ddl_t ADD COLUMN b int DEFAULT 2")
            with connect(port) as after:
                msgs = th.prepare(after, "s", "SELECT * FROM txn_ddl_t")
                assert not pgwire.errors(msgs), describe_reply(msgs)
                assert [name for name, _ in th.row_columns(th.describe_statement(after, "s"))] == ["a", "b"]
                msgs = th.exec_prepared(after, "s")
                assert pgwire.data_rows(msgs) == [["1", "2"]], describe_reply(msgs)
            # The statement prepared before the change fails as on Postgres itself.
            assert error_codes(th.exec_prepared(before, "s")) == ["0A000"]


def test_describe_prepared_statement_on_another_connection(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, connect(port) as d:
        assert not pgwire.errors(th.prepare(a, "s1", "SELECT $1::int * 2 AS doubled, pg_backend_pid() AS pid"))
        first = th.exec_prepared(a, "s1", ("21",))
        assert pgwire.data_rows(first)[0][0] == "42"
        pid_x = int(pgwire.data_rows(first)[0][1])
        # Hold both pool connections, then give back the one that is not the statement's first home.
        ok(b, "BEGIN")
        ok(d, "BEGIN")
        pid_b, pid_d = backend_pid(b), backend_pid(d)
        if DIRECT:
            ok(b, "COMMIT")
        else:
            assert pid_x in (pid_b, pid_d) and pid_b != pid_d, (pid_x, pid_b, pid_d)
            ok(b if pid_b != pid_x else d, "COMMIT")
        a.send(pgwire.describe("S", "s1") + pgwire.bind("", "s1", ("5",)) + pgwire.execute() + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert pgwire.types(msgs) == "tT2DCZ", describe_reply(msgs)
        assert th.parameter_oids(msgs) == [INT4]
        assert th.row_columns(msgs) == [("doubled", INT4), ("pid", INT4)]
        row = pgwire.data_rows(msgs)[0]
        assert row[0] == "10"
        if not DIRECT:
            assert int(row[1]) != pid_x, "the statement was expected to run on the other connection"
        # Describe alone, too.
        msgs = th.describe_statement(a, "s1")
        assert pgwire.types(msgs) == "tTZ" and th.row_columns(msgs) == [("doubled", INT4), ("pid", INT4)]
        ok(b, "COMMIT")
        ok(d, "COMMIT")


def test_close_statement_then_parse_again(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, ChurnGroup(port, primary_port(c)) as churn:
        assert not pgwire.errors(th.prepare(a, "s1", "SELECT 1"))
        # b prepares the very same text under another name: closing a's must not remove b's.
        assert not pgwire.errors(th.prepare(b, "b_same", "SELECT 1"))
        assert pgwire.data_rows(th.exec_prepared(a, "s1")) == [["1"]]
        a.send(pgwire.close("S", "s1") + pgwire.sync())
        assert pgwire.types(a.recv_until(b"Z")) == "3Z"
        msgs = th.exec_prepared(a, "s1")
        assert error_codes(msgs) == ["26000"], describe_reply(msgs)
        for _ in range(5):
            assert pgwire.data_rows(th.exec_prepared(b, "b_same")) == [["1"]]
        assert not pgwire.errors(th.prepare(a, "s1", "SELECT 2"))
        assert pgwire.data_rows(th.exec_prepared(a, "s1")) == [["2"]]
        # A second Parse of a live name is an error, and the statement stays.
        msgs = th.prepare(a, "s1", "SELECT 3")
        assert error_codes(msgs) == ["42P05"], describe_reply(msgs)
        assert pgwire.data_rows(th.exec_prepared(a, "s1")) == [["2"]]
        # Close of a statement that does not exist is not an error.
        a.send(pgwire.close("S", "never_prepared") + pgwire.sync())
        assert pgwire.types(a.recv_until(b"Z")) == "3Z"
        # Close and re-Parse in one go (what drivers do when their statement cache evicts).
        for i in range(10):
            a.send(pgwire.close("S", "s1") + pgwire.parse("s1", f"SELECT {i} + $1::int", (INT4,))
                   + pgwire.bind("", "s1", ("100",)) + pgwire.execute() + pgwire.sync())
            msgs = a.recv_until(b"Z")
            assert pgwire.types(msgs) == "312DCZ", describe_reply(msgs)
            assert pgwire.data_rows(msgs) == [[str(100 + i)]]
            assert pgwire.data_rows(th.exec_prepared(b, "b_same")) == [["1"]]
    churn.check()


def test_deallocate_all_and_discard_all(make_cluster):
    """DEALLOCATE ALL / DISCARD ALL remove the client's own statements (26000 afterwards) and nothing
    of the other clients sharing its server connection."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, connect(primary_port(c)) as twin:
        # Only reported settings: an unreported one (search_path, ...) may pin b to the only connection.
        ok(b, "SET TimeZone = 'Asia/Tokyo'")
        ok(b, "SET application_name = 'b_app'")
        assert not pgwire.errors(th.prepare(b, "s1", "SELECT 'b'::text || $1::text"))
        for how in ("DEALLOCATE ALL", "DEALLOCATE PREPARE ALL", "DISCARD ALL"):
            mirror(a, twin, "SET TimeZone = 'America/New_York'")
            for w in (a, twin):
                assert not pgwire.errors(th.prepare(w, "s1", "SELECT 'a'::text || $1::text"))
                assert not pgwire.errors(th.prepare(w, "s2", "SELECT 2"))
            assert pgwire.data_rows(th.exec_prepared(a, "s1", ("!",))) == [["a!"]]
            msgs = a.simple(how)
            assert not pgwire.errors(msgs), f"{how}: {describe_reply(msgs)}"
            twin.simple(how)
            for name in ("s1", "s2"):
                msgs = th.exec_prepared(a, name, ("!",) if name == "s1" else ())
                assert error_codes(msgs) == ["26000"], f"{name} after {how}: {describe_reply(msgs)}"
            # b's statement and settings are untouched, though b shares a's only server connection.
            assert pgwire.data_rows(th.exec_prepared(b, "s1", ("?",))) == [["b?"]], how
            assert ok(b, "SELECT current_setting('TimeZone'), current_setting('application_name')") == \
                [["Asia/Tokyo", "b_app"]], how
            # a's TimeZone: kept by DEALLOCATE, reset by DISCARD ALL, as in Postgres.
            tz = "SELECT current_setting('TimeZone')"
            assert ok(a, tz) == ok(twin, tz), how
            # The names are free again.
            assert not pgwire.errors(th.prepare(a, "s1", "SELECT 'again'::text"))
            assert pgwire.data_rows(th.exec_prepared(a, "s1")) == [["again"]]
            for w in (a, twin):
                w.send(pgwire.close("S", "s1") + pgwire.sync())
                w.recv_until(b"Z")


def test_sql_deallocate_of_protocol_statement(make_cluster):
    """DEALLOCATE name (SQL) drops a statement made with Parse, as in Postgres."""
    c = tx_cluster(make_cluster, pool_size=2)
    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        assert not pgwire.errors(th.prepare(a, "s_sql", "SELECT 7"))
        assert not pgwire.errors(th.prepare(b, "s_sql", "SELECT 8"))
        assert pgwire.data_rows(th.exec_prepared(a, "s_sql")) == [["7"]]
        msgs = a.simple("DEALLOCATE s_sql")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert error_codes(th.exec_prepared(a, "s_sql")) == ["26000"]
        assert pgwire.data_rows(th.exec_prepared(b, "s_sql")) == [["8"]]
        assert not pgwire.errors(th.prepare(a, "s_sql", "SELECT 9"))
        assert pgwire.data_rows(th.exec_prepared(a, "s_sql")) == [["9"]]


def test_psycopg_statement_cache_maintenance(make_cluster):
    """psycopg deallocates by itself: `DEALLOCATE _pg3_N` when its cache (prepared_max) overflows,
    `DEALLOCATE ALL` after a ROLLBACK or a DROP. All of it must keep working."""
    c = tx_cluster(make_cluster, pool_size=2)
    with sg_psycopg(c, autocommit=False, prepare_threshold=0) as conn, \
            ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        conn.prepared_max = 3
        for rnd in range(3):
            for q in range(8):  # more texts than the cache holds: evictions
                row = conn.execute(f"SELECT %s::int + {q}", (rnd,)).fetchone()
                assert row == (rnd + q,), (rnd, q, row)
            conn.rollback()  # psycopg follows with DEALLOCATE ALL
            conn.execute("CREATE TABLE txn_psy_tmp (i int)")
            conn.execute("INSERT INTO txn_psy_tmp VALUES (%s)", (rnd,))
            conn.execute("DROP TABLE txn_psy_tmp")  # DEALLOCATE ALL again
            conn.commit()
        assert conn.execute("SELECT %s::text || 'ok'", ("all ",)).fetchone() == ("all ok",)
        conn.commit()
    churn.check()


def in_thread(fn, timeout: float = 15):
    """fn() in a helper thread: libpq's blocking calls (pgconn.*) cannot be interrupted by the test deadline."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"libpq call did not return within {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_psycopg_low_level_deallocate_and_discard(make_cluster):
    """psycopg's pgconn.prepare / exec_prepared (PQprepare, PQexecPrepared): after the client's DISCARD ALL
    or DEALLOCATE ALL its statements are gone (26000); another client's statement of the same name lives on."""
    c = tx_cluster(make_cluster, pool_size=1)
    with sg_psycopg(c) as a, sg_psycopg(c) as b:
        def prepare(conn, name, sql):
            res = in_thread(lambda: conn.pgconn.prepare(name, sql))
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message

        def run(conn, name, params=None):
            return in_thread(lambda: conn.pgconn.exec_prepared(name, params))

        prepare(b, b"s1", b"SELECT 'b:' || $1::text")
        for how in ("DISCARD ALL", "DEALLOCATE ALL"):
            prepare(a, b"s1", b"SELECT $1::int * 10")
            prepare(a, b"s2", b"SELECT 'two'")
            res = run(a, b"s1", [b"4"])
            assert res.status == psycopg.pq.ExecStatus.TUPLES_OK and res.get_value(0, 0) == b"40", res.error_message
            a.execute(how)
            for name, params in ((b"s1", [b"4"]), (b"s2", None)):
                res = run(a, name, params)
                assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR, f"{name} after {how}: {res.status}"
                assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000", res.error_message
            res = run(b, b"s1", [b"x"])
            assert res.status == psycopg.pq.ExecStatus.TUPLES_OK and res.get_value(0, 0) == b"b:x", res.error_message
            # Describe works, and the name can be used again.
            desc = in_thread(lambda: b.pgconn.describe_prepared(b"s1"))
            assert desc.nparams == 1 and desc.param_type(0) == TEXT and desc.ftype(0) == TEXT
            assert a.execute("SELECT 'session goes on'").fetchone() == ("session goes on",)


def test_wire_pipeline_error_midway(make_cluster):
    """An error in the middle of a pipeline: Postgres skips to the Sync, including a Parse after the
    error, and answers the next Sync group normally."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b:
        a.send(pgwire.parse("ok1", "SELECT 41 + $1::int", (INT4,)) + pgwire.bind("", "ok1", ("1",)) + pgwire.execute()
               + pgwire.parse("", "SELEKT broken") + pgwire.bind("", "") + pgwire.execute()
               + pgwire.parse("skipped", "SELECT 42 /* txn_skipped */") + pgwire.bind("", "skipped") + pgwire.execute()
               + pgwire.sync()
               + pgwire.parse("", "SELECT 'second group'") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        first = a.recv_until(b"Z")
        assert pgwire.types(first) == "12DCEZ", describe_reply(first)
        assert error_codes(first) == ["42601"]
        second = a.recv_until(b"Z")
        assert pgwire.data_rows(second) == [["second group"]], describe_reply(second)
        # ok1 exists, skipped does not.
        assert pgwire.data_rows(th.exec_prepared(a, "ok1", ("2",))) == [["43"]]
        assert error_codes(th.exec_prepared(a, "skipped")) == ["26000"]
        # Another client on the same connection prepares the skipped text: it must really be prepared.
        b.send(pgwire.parse("b1", "SELECT 42 /* txn_skipped */") + pgwire.bind("", "b1") + pgwire.execute()
               + pgwire.sync())
        msgs = b.recv_until(b"Z")
        assert pgwire.data_rows(msgs) == [["42"]], describe_reply(msgs)
        assert not pgwire.errors(th.prepare(a, "skipped", "SELECT 42 /* txn_skipped */"))
        assert pgwire.data_rows(th.exec_prepared(a, "skipped")) == [["42"]]
        # An error inside a transaction's pipeline: the rest is skipped, the transaction is failed.
        a.send(pgwire.query("BEGIN") + pgwire.parse("", "SELECT 1/0") + pgwire.bind("", "") + pgwire.execute()
               + pgwire.parse("after", "SELECT 5") + pgwire.sync())
        begin = a.recv_until(b"Z")
        assert status_of(begin) == "T"
        failed = a.recv_until(b"Z")
        assert error_codes(failed) == ["22012"] and status_of(failed) == "E", describe_reply(failed)
        # The skipped Parse made nothing ("does not exist" comes before "transaction is aborted").
        assert error_codes(th.exec_prepared(a, "after")) == ["26000"]
        assert error_codes(a.simple("SELECT 1")) == ["25P02"]
        assert status_of(a.simple("ROLLBACK")) == "I"
        assert error_codes(th.exec_prepared(a, "after")) == ["26000"]
        assert pgwire.data_rows(th.exec_prepared(b, "b1")) == [["42"]]


def test_statement_whose_parse_failed_does_not_exist_for_a_pipelined_bind(make_cluster):
    """A named Parse that Postgres rejects, then in the same write (pipelined behind its Sync) a Bind
    and a Describe of that name: Postgres answers them with 26000, as the statement was never made.
    shardgate waits for the Parse's answer before it sends them (it would otherwise parse the text
    again for the Bind and pass on that error)."""
    c = tx_cluster(make_cluster, pool_size=1)
    with connect(c.shardgate.port) as a:
        a.send(pgwire.parse("bad", "SELECT nosuchcol FROM pg_class") + pgwire.sync()
               + pgwire.bind("", "bad") + pgwire.execute() + pgwire.sync()
               + pgwire.describe("S", "bad") + pgwire.sync())
        replies = [a.recv_until(b"Z") for _ in range(3)]
        assert [error_codes(r) for r in replies] == [["42703"], ["26000"], ["26000"]], \
            [describe_reply(r) for r in replies]
        assert [pgwire.types(r) for r in replies] == ["EZ", "EZ", "EZ"]
        # The name is free.
        assert not pgwire.errors(th.prepare(a, "bad", "SELECT 7"))
        assert pgwire.data_rows(th.exec_prepared(a, "bad")) == [["7"]]


def test_pipelined_bind_waiting_for_its_parse_inside_an_unsynced_batch_does_not_hang(make_cluster):
    """The same wait, but the Bind comes after a BEGIN of its own batch, which has no Sync yet when
    shardgate waits: the server keeps that batch's replies until a Flush or Sync, so shardgate must
    flush it to see the Parse's answer (it used to wait for ever)."""
    c = tx_cluster(make_cluster, pool_size=1)
    for name, sql, want in (("good", "SELECT 7", None), ("bad", "SELECT nosuchcol FROM pg_class", "26000")):
        with connect(c.shardgate.port) as a:
            a.send(pgwire.parse(name, sql) + pgwire.sync()
                   + pgwire.parse("", "BEGIN") + pgwire.bind("", "") + pgwire.execute()
                   + pgwire.bind("", name) + pgwire.execute() + pgwire.sync())
            first, second = a.recv_until(b"Z"), a.recv_until(b"Z")
            if want is None:
                assert pgwire.types(first) == "1Z", describe_reply(first)
                assert pgwire.types(second) == "12C2DCZ" and status_of(second) == "T", describe_reply(second)
                assert pgwire.data_rows(second) == [["7"]]
            else:
                assert error_codes(first) == ["42703"], describe_reply(first)
                assert error_codes(second) == [want] and status_of(second) == "E", describe_reply(second)
                assert pgwire.types(second) == "12CEZ", describe_reply(second)


def test_parse_in_a_failed_transaction_of_a_statement_the_connection_has_gets_25p02(make_cluster):
    """In a failed transaction Postgres refuses a Parse (25P02) and skips the rest of the batch, and
    the statement is not made. shardgate used to answer it itself with ParseComplete when the
    connection had the same text prepared already (its Bind then failed instead)."""
    c = tx_cluster(make_cluster, pool_size=1)
    sql = "SELECT 1 + $1::int /* parsed again in a failed transaction */"
    with connect(c.shardgate.port) as a:
        assert not pgwire.errors(th.prepare(a, "first", sql, (INT4,)))
        assert not pgwire.errors(th.prepare(a, "end0", "ROLLBACK"))
        assert error_codes(a.simple("BEGIN; SELECT 1/0")) == ["22012"]
        a.send(pgwire.parse("second", sql, (INT4,)) + pgwire.describe("S", "second")
               + pgwire.bind("", "second", ("1",)) + pgwire.execute() + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert pgwire.types(msgs) == "EZ" and error_codes(msgs) == ["25P02"], describe_reply(msgs)
        assert status_of(msgs) == "E"
        # ROLLBACK is parsed in a failed transaction; the connection has its text too (end0), so
        # shardgate answers that Parse itself, as before.
        a.send(pgwire.parse("end", "ROLLBACK") + pgwire.bind("", "end") + pgwire.execute() + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert pgwire.types(msgs) == "12CZ" and status_of(msgs) == "I", describe_reply(msgs)
        # "second" was never made: the name is free, and "first" still works.
        assert error_codes(th.exec_prepared(a, "second", ("1",))) == ["26000"]
        assert not pgwire.errors(th.prepare(a, "second", sql, (INT4,)))
        assert pgwire.data_rows(th.exec_prepared(a, "second", ("41",))) == [["42"]]
        assert pgwire.data_rows(th.exec_prepared(a, "first", ("1",))) == [["2"]]


def test_parse_sent_after_the_error_was_read_is_skipped_too(make_cluster):
    """A pipeline fails, the client reads the error (it sent a Flush) and goes on with a named Parse
    before its Sync: Postgres skips that Parse too. shardgate must not count the statement as prepared
    on the connection, or the next client preparing the same text gets its Bind sent without a Parse."""
    c = tx_cluster(make_cluster, pool_size=1)
    sql = "SELECT 1 + $1::int /* parsed after the error */"
    with connect(c.shardgate.port) as a:
        a.send(pgwire.parse("", "SELECT 1/0") + pgwire.bind("", "") + pgwire.execute() + pgwire.flush())
        msgs = a.recv_until(b"E")
        assert error_codes(msgs) == ["22012"], describe_reply(msgs)
        a.send(pgwire.parse("late", sql, (INT4,)) + pgwire.bind("", "late", ("1",)) + pgwire.execute()
               + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert pgwire.types(msgs) == "Z" and status_of(msgs) == "I", describe_reply(msgs)
        assert error_codes(th.exec_prepared(a, "late", ("1",))) == ["26000"]
    with connect(c.shardgate.port) as b:
        msgs = th.prepare(b, "again", sql, (INT4,))
        assert not pgwire.errors(msgs), describe_reply(msgs)
        msgs = th.exec_prepared(b, "again", ("41",))
        assert pgwire.data_rows(msgs) == [["42"]], describe_reply(msgs)


def test_close_and_parse_sent_after_the_error_was_read_are_skipped(make_cluster):
    """As above, with a Close of a statement the client has, then a Bind of it, before the Sync:
    Postgres skips all of them, so the statement is still there afterwards and the new one is not.
    shardgate answers a Close itself in transaction pooling (the server keeps the statement for
    other clients): it must not answer or forget it here. Checked against Postgres directly."""
    c = tx_cluster(make_cluster, pool_size=1)
    direct = th.after_read_error_transcript(primary_port(c))
    assert direct == ["1E 22012", "Z I", "26000", "[['7']]"], direct
    assert th.after_read_error_transcript(c.shardgate.port) == direct


def test_close_and_parse_pipelined_behind_a_failure_are_skipped(make_cluster):
    """The same, sent in one write before the error is back: shardgate answers the Close of a
    statement the client has, and a Parse of a text the connection already has, itself, and must
    undo what they did when the server skips the batch's rest (Close then Parse of one name leaves
    the old statement). Compared with Postgres directly."""
    c = tx_cluster(make_cluster, pool_size=1)

    def transcript(port: int) -> list:
        out = []
        with connect(port) as a, connect(port) as other:
            assert not pgwire.errors(th.prepare(a, "c1", "SELECT $1::int AS v", (INT4,)))
            assert not pgwire.errors(th.prepare(other, "o", "SELECT 'shared text'"))
            for batch in (
                    pgwire.bind("", "c1", ("not-an-int",)) + pgwire.execute() + pgwire.close("S", "c1"),
                    pgwire.parse("", "SELEC broken") + pgwire.parse("c3", "SELECT 'shared text'"),
                    pgwire.parse("", "SELEC broken") + pgwire.close("S", "c1") +
                    pgwire.parse("c1", "SELECT 'shared text'")):
                a.send(batch + pgwire.sync())
                out.append(error_codes(a.recv_until(b"Z")))
                for name, params in (("c1", ("5",)), ("c3", ())):
                    msgs = th.exec_prepared(a, name, params)
                    out.append(error_codes(msgs) or pgwire.data_rows(msgs))
        return out

    direct = transcript(primary_port(c))
    assert direct == [["22P02"], [["5"]], ["26000"], ["42601"], [["5"]], ["26000"], ["42601"], [["5"]],
                      ["26000"]], direct
    assert transcript(c.shardgate.port) == direct


def test_psycopg_pipeline_error_then_working_session(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    with sg_psycopg(c, prepare_threshold=None) as conn, ChurnGroup(c.shardgate.port, primary_port(c)) as churn:
        for rnd in range(3):
            # psycopg 3.1 loses track of its statement cache when a pipeline fails (even on plain
            # Postgres), so the failing pipelines use unnamed statements and prepared ones come after.
            conn.prepare_threshold = None
            curs = []
            with pytest.raises(pgerrors.DivisionByZero):
                with conn.pipeline():
                    curs.append(conn.execute("SELECT %s::int + 1", (rnd,)))
                    curs.append(conn.execute("SELECT %s::text || 'x'", ("p",)))
                    conn.execute("SELECT 1 / %s::int", (0,))
                    conn.execute("SELECT %s::int + 2", (rnd,))
            assert curs[0].fetchone() == (rnd + 1,)
            assert curs[1].fetchone() == ("px",)
            with conn.pipeline():
                c1 = conn.execute("SELECT %s::int + 1", (rnd,))
                c2 = conn.execute("SELECT %s::int + 2", (rnd,))
            assert (c1.fetchone(), c2.fetchone()) == ((rnd + 1,), (rnd + 2,))
            conn.prepare_threshold = 0
            for i in range(5):
                assert conn.execute(f"SELECT %s::int * 3 + {rnd}", (i,)).fetchone() == (i * 3 + rnd,)
            with conn.pipeline():
                curs = [conn.execute(f"SELECT %s::int * 3 + {rnd}", (i,)) for i in range(5)]
            assert [cur.fetchone() for cur in curs] == [(i * 3 + rnd,) for i in range(5)]
    churn.check()


def test_sql_prepare_execute_deallocate(make_cluster):
    c = tx_cluster(make_cluster, pool_size=3)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, ChurnGroup(port, primary_port(c)) as churn:
        ok(a, "PREPARE p1(int) AS SELECT $1 * 2")
        ok(b, "PREPARE p1(text) AS SELECT 'b:' || $1")
        for i in range(12):
            assert ok(a, f"EXECUTE p1({i})") == [[str(2 * i)]]
            assert ok(b, f"EXECUTE p1('{i}')") == [[f"b:{i}"]]
            msgs = extended(a, f"EXECUTE p1({i})")
            assert pgwire.data_rows(msgs) == [[str(2 * i)]], describe_reply(msgs)
        ok(a, "DEALLOCATE p1")
        assert error_codes(a.simple("EXECUTE p1(1)")) == ["26000"]
        assert ok(b, "EXECUTE p1('still')") == [["b:still"]]
        ok(a, "PREPARE p1 AS SELECT 'again'")
        assert ok(a, "EXECUTE p1") == [["again"]]
        ok(b, "DEALLOCATE ALL")
        assert error_codes(b.simple("EXECUTE p1('x')")) == ["26000"]
        assert ok(a, "EXECUTE p1") == [["again"]]
    churn.check()


def test_execute_inside_explain_and_create_table_as(make_cluster):
    """EXPLAIN [ANALYZE] EXECUTE p and CREATE TABLE ... AS EXECUTE p name the client's statement,
    which the server knows by shardgate's name: they are renamed like a plain EXECUTE."""
    c = tx_cluster(make_cluster, pool_size=2)
    with connect(c.shardgate.port) as a:
        ok(a, "PREPARE txn_px(int) AS SELECT $1 + 1 AS answer")
        plan = ok(a, "EXPLAIN (COSTS OFF) EXECUTE txn_px(41)")
        assert plan and plan[0][0].startswith("Result"), plan
        assert ok(a, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE txn_px(1)")
        ok(a, "CREATE TABLE txn_ctas AS EXECUTE txn_px(41)")
        assert ok(a, "SELECT answer FROM txn_ctas") == [["42"]]
        msgs = extended(a, "EXPLAIN (COSTS OFF) EXECUTE txn_px(2)")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert error_codes(a.simple("EXPLAIN EXECUTE txn_no_such(1)")) == ["26000"]


def test_second_sql_prepare_of_a_name_fails_and_defines_nothing_for_others(make_cluster):
    """A second PREPARE of a name the client has gets 42P05, as in Postgres. Sent as written, it
    would define the client's name on the shared server connection, for another client to EXECUTE."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b:
        ok(a, "PREPARE dup AS SELECT 'first'")
        errors = pgwire.errors(a.simple("PREPARE dup AS SELECT 'second'"))
        assert [e.code for e in errors] == ["42P05"], errors
        assert errors[0].message == 'prepared statement "dup" already exists', errors
        assert ok(a, "EXECUTE dup") == [["first"]]
        assert error_codes(b.simple("EXECUTE dup")) == ["26000"]
        # In a failed transaction Postgres refuses it as it refuses everything else.
        ok(a, "BEGIN")
        assert error_codes(a.simple("SELECT 1/0")) == ["22012"]
        assert error_codes(a.simple("PREPARE dup AS SELECT 'x'")) == ["25P02"]
        ok(a, "ROLLBACK")
        assert ok(a, "EXECUTE dup") == [["first"]]


def test_sql_prepare_and_deallocate_pipelined_behind_begin_or_a_failure(make_cluster):
    """shardgate answers a PREPARE the connection already has, and a DEALLOCATE, itself. Pipelined
    behind BEGIN, or behind a statement that fails, the answer must carry the transaction status
    the replies before it end with: 'T', or 25P02 in a failed transaction (which keeps the
    statement)."""
    c = tx_cluster(make_cluster, pool_size=1)
    with connect(c.shardgate.port) as a:
        ok(a, "PREPARE warm AS SELECT 1")
        ok(a, "DEALLOCATE warm")  # the server connection keeps it, under shardgate's name
        a.send(pgwire.query("BEGIN") + pgwire.query("PREPARE warm AS SELECT 1") + pgwire.query("DEALLOCATE warm"))
        replies = [a.recv_until(b"Z") for _ in range(3)]
        assert [error_codes(r) for r in replies] == [[], [], []]
        assert [status_of(r) for r in replies] == ["T", "T", "T"]
        ok(a, "COMMIT")
        ok(a, "PREPARE keepme AS SELECT 'still here'")
        a.send(pgwire.query("BEGIN") + pgwire.query("SELECT 1/0") + pgwire.query("DEALLOCATE keepme") +
               pgwire.query("ROLLBACK"))
        replies = [a.recv_until(b"Z") for _ in range(4)]
        assert [error_codes(r) for r in replies] == [[], ["22012"], ["25P02"], []]
        assert [status_of(r) for r in replies] == ["T", "E", "E", "I"]
        assert ok(a, "EXECUTE keepme") == [["still here"]]


# =============================================================================================
# pgbench
# =============================================================================================


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(make_cluster, mode):
    """-S with 32 clients through 4 server connections (two workers); tpcb-like with 4 clients, one per
    pgbench thread. pgbench's PQprepare blocks its whole thread: with two clients per thread, one
    waiting for a connection while the other holds one inside a transaction, pgbench deadlocks
    itself. The pool's 4 connections are 2 per worker, and SO_REUSEPORT may put 3 or 4 of the clients
    on one worker (seen once: pgbench hung until the test's 90 s timeout)."""
    # The health probe's own libpq connections (every few seconds) are listed in pg_stat_activity
    # without their application_name while they log in: probe once at start only.
    c = make_cluster(num_shards=1, replicas_per_shard=0, pool_mode="transaction",
                     general={"default_pool_size": 4, "server_check_interval_ms": 600000,
                              "table_stats_interval_ms": 600000})
    primary = c.shards[0].primary
    r = th.pgbench(primary.port, "-i", "-s", "1", "-q")
    assert r.returncode == 0, r.stderr
    # The sampler's own earlier psql sessions can still be listed while they exit (seen on a busy
    # machine): only shardgate's connections, which carry pgbench's application_name, count.
    count_sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND backend_type = 'client backend'"
                 " AND pid <> pg_backend_pid() AND application_name NOT IN ('shardgate_probe', 'psql')")
    most = [0]
    stop = threading.Event()

    def sample():
        # Two reads 50 ms apart, the smaller kept: a backend of a connection the pool just closed
        # can still be listed for a moment while it exits; a pool over its limit shows in both.
        while not stop.is_set():
            try:
                first = int(primary.psql(count_sql, timeout=10))
                time.sleep(0.05)
                most[0] = max(most[0], min(first, int(primary.psql(count_sql, timeout=10))))
            except Exception:  # noqa: BLE001 - a failed sample is just skipped
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        r = th.pgbench(c.shardgate.port, "-S", "-M", mode, "-T", "3", "-c", "32", "-j", "2")
    finally:
        stop.set()
        sampler.join(15)
    th.check_pgbench(r)
    if not DIRECT:
        assert 0 < most[0] <= 4, f"the shard saw up to {most[0]} connections from a pool of 4"
    r = th.pgbench(c.shardgate.port, "-M", mode, "-T", "3", "-c", "4", "-j", "4")
    processed = th.check_pgbench(r)
    sums = primary.psql("SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM "
                        "pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches)").split("|")
    assert len(set(sums)) == 1, f"balances disagree (accounts|tellers|branches): {sums}"
    assert int(primary.psql("SELECT count(*) FROM pgbench_history")) == processed


# =============================================================================================
# Waiting for a connection
# =============================================================================================


@pytest.mark.requires_shardgate
def test_query_wait_timeout(make_cluster):
    c = tx_cluster(make_cluster, pool_size=1, query_wait_timeout=500)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, sg_psycopg(c) as pb, sg_psycopg(c, autocommit=False) as pt:
        ok(b, "SET TimeZone = 'Asia/Tokyo'")
        ok(a, "BEGIN")
        ok(a, "SELECT 1")

        def timed_out(msgs, what):
            assert error_codes(msgs) == ["53300"], f"{what}: {describe_reply(msgs)}"
            err = pgwire.errors(msgs)[0]
            assert err.severity == "ERROR", f"{what}: {err}"
            assert "timeout" in err.message.lower() or "wait" in err.message.lower(), err.message
            assert status_of(msgs) == "I"

        # Simple query.
        t = time.monotonic()
        msgs = b.simple("SELECT 1", timeout=6)
        elapsed = time.monotonic() - t
        timed_out(msgs, "simple query")
        assert 0.4 <= elapsed <= 3.0, f"53300 after {elapsed:.2f}s with query_wait_timeout = 500 ms"
        # Extended protocol.
        msgs = extended(b, "SELECT $1::int", ("1",), timeout=6)
        timed_out(msgs, "extended query")
        # psycopg, autocommit and in a transaction.
        t = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            pb.execute("SELECT 1")
        assert ei.value.sqlstate == "53300" and 0.4 <= time.monotonic() - t <= 3.0
        with pytest.raises(psycopg.OperationalError) as ei:
            pt.execute("SELECT 1")
        assert ei.value.sqlstate == "53300"
        pt.rollback()
        # Two queries sent at once: each gets its own answer, nothing more, nothing less.
        b.send(pgwire.query("SELECT 'q1'") + pgwire.query("SELECT 'q2'"))
        replies = [b.recv_until(b"Z", timeout=6), b.recv_until(b"Z", timeout=6)]
        for r in replies:
            assert error_codes(r) in (["53300"], []), describe_reply(r)
        assert_waiting(b, 0.8, "after both answers")
        ok(a, "COMMIT")
        # Everyone's session goes on, settings included.
        assert ok(b, "SELECT current_setting('TimeZone'), 'fine'") == [["Asia/Tokyo", "fine"]]
        assert pgwire.data_rows(extended(b, "SELECT $1::int", ("5",))) == [["5"]]
        assert pb.execute("SELECT 2").fetchone() == (2,)
        assert pt.execute("SELECT 3").fetchone() == (3,)
        pt.commit()
        assert ok(a, "SELECT 'a too'") == [["a too"]]


@pytest.mark.requires_shardgate
def test_batch_over_shards_timing_out_leaves_no_transaction_behind(make_cluster):
    """An extended batch that ran on one shard and then waited in vain for another shard's only
    connection gets 53300 and ends like any failed implicit transaction: its first part rolls back,
    and the session's next batches run outside a transaction, as they would on Postgres. (The BEGIN
    meant for the shard that never came used to open a transaction on the next connection the
    session got: every later ReadyForQuery said 'T'.)"""
    c = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction",
                     general={"default_pool_size": 1, "workers": 1, "query_wait_timeout": 500},
                     database_options={"default_shard": 0},
                     extra_toml='[[databases.sharded_tables]]\nname = "orders"\ncolumn = "user_id"\n'
                                'type = "bigint"\nstrategy = "hash"\n')
    for s in c.shards:
        s.primary.psql("CREATE TABLE orders (user_id bigint, note text)")
    shard_of = conftest.hash_shards(c.shards[0].primary, range(1, 21))
    k0 = next(k for k, s in shard_of.items() if s == 0)
    k1 = next(k for k, s in shard_of.items() if s == 1)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b:
        for k in (k0, k1):
            ok(a, f"INSERT INTO orders VALUES ({k}, 'x')")
        ok(a, "BEGIN")
        ok(a, f"UPDATE orders SET note = 'a' WHERE user_id = {k1}")  # holds shard1's only connection

        def select(k):
            return (pgwire.parse("", f"SELECT note FROM orders WHERE user_id = {k}") + pgwire.bind("", "")
                    + pgwire.execute())

        for first in (select(k0), pgwire.parse("", f"UPDATE orders SET note = 'b' WHERE user_id = {k0}")
                      + pgwire.bind("", "") + pgwire.execute()):
            b.send(first + select(k1) + pgwire.sync())
            msgs = b.recv_until(b"Z", timeout=6)
            assert error_codes(msgs) == ["53300"], describe_reply(msgs)
            assert status_of(msgs) == "I", describe_reply(msgs)
            for _ in range(2):
                msgs = extended(b, f"SELECT note FROM orders WHERE user_id = {k0}", timeout=6)
                assert pgwire.data_rows(msgs) == [["x"]], describe_reply(msgs)
                assert status_of(msgs) == "I", describe_reply(msgs)
            assert status_of(b.simple("SELECT 1")) == "I"
        ok(a, "COMMIT")
        msgs = extended(b, f"SELECT note FROM orders WHERE user_id = {k1}", timeout=6)
        assert pgwire.data_rows(msgs) == [["a"]] and status_of(msgs) == "I", describe_reply(msgs)
    # Nothing of the failed batches stayed: no row changed on shard0, no transaction left open.
    assert c.shards[0].primary.psql(f"SELECT note FROM orders WHERE user_id = {k0}") == "x"
    for s in c.shards:
        assert s.primary.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                              "AND state LIKE 'idle in transaction%'") == "0"


@pytest.mark.requires_shardgate
def test_login_while_every_connection_is_busy(make_cluster):
    """Once the pool's server has logged in, a client's login is answered without a server
    connection of its own, as PgBouncer answers it: clients connecting while every connection is
    busy are not queued behind it. Their startup settings reach a server with their first
    statement. A startup setting whose reported value only Postgres can tell (a time zone it
    spells its own way) still makes the login wait for a connection."""
    c = tx_cluster(make_cluster, pool_size=1, query_wait_timeout=5000)
    port = c.shardgate.port
    startup = {"application_name": "late app", "client_encoding": "utf-8", "DateStyle": "ISO",
               "extra_float_digits": "2"}
    probe = ("SELECT current_setting('application_name'), current_setting('client_encoding'),"
             " current_setting('DateStyle'), current_setting('extra_float_digits')")
    direct = pgwire.PgWire(th.HOST, primary_port(c), timeout=10)
    want_params = direct.login("postgres", "postgres", "app", params=startup).params
    want_rows = ok(direct, probe)
    direct.close()
    with connect(port) as a:
        ok(a, "BEGIN")
        ok(a, "SELECT 1")  # the pool's only connection is in a's transaction now
        t = time.monotonic()
        b = pgwire.PgWire(th.HOST, port, timeout=10)
        got_params = b.login("postgres", "postgres", "app", params=startup).params
        assert time.monotonic() - t < 2.0, "the login waited for the busy connection"
        for name in ("application_name", "client_encoding", "DateStyle", "TimeZone", "server_version"):
            assert got_params.get(name) == want_params.get(name), name
        b.send(pgwire.query(probe))
        assert_waiting(b, 0.5, "the first statement of the late client")
        ok(a, "COMMIT")
        assert pgwire.data_rows(b.recv_until(b"Z", timeout=10)) == want_rows
        b.close()

        # TimeZone 'utc': Postgres reports it as 'UTC'; that login waits for the connection.
        ok(a, "BEGIN")
        ok(a, "SELECT 1")
        result = {}

        def late_login():
            w = pgwire.PgWire(th.HOST, port, timeout=10)
            result["params"] = w.login("postgres", "postgres", "app", params={"TimeZone": "utc"}).params
            result["rows"] = ok(w, "SELECT current_setting('TimeZone')")
            w.close()

        waiter = threading.Thread(target=late_login)
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive(), "the login did not wait for a connection"
        ok(a, "COMMIT")
        waiter.join(10)
        assert result["params"]["TimeZone"] == "UTC" and result["rows"] == [["UTC"]], result


# =============================================================================================
# Session-level features pin the client to its connection
# =============================================================================================


def _progress(churn: ChurnGroup, since: int, what: str, at_least: int = 10) -> int:
    now = churn.iterations()
    assert now - since >= at_least, f"other clients made {now - since} statements while {what}"
    return now


def test_listen_keeps_receiving_notifications(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    port = c.shardgate.port
    with connect(port) as listener, connect(port) as talker, ChurnGroup(port, primary_port(c)) as churn:
        ok(listener, "LISTEN txn_chan")
        start = churn.iterations()
        for i in range(6):
            ok(listener, f"SELECT {i}")
            ok(talker, f"NOTIFY txn_chan, 'idle-{i}'")
            # Delivered while the listener is idle, as Postgres does (psycopg's notifies() waits so).
            m = listener.recv(timeout=5)
            assert m.type == b"A", m
            assert pgwire.parse_notification(m)[1:] == ("txn_chan", f"idle-{i}")
            time.sleep(0.05)
        # Notifications sent while the listener runs statements arrive with them.
        ok(talker, "NOTIFY txn_chan, 'busy'")
        deadline = time.monotonic() + 5
        got = []
        while not got and time.monotonic() < deadline:
            msgs = listener.simple("SELECT pg_sleep(0.05)")
            got = [pgwire.parse_notification(m)[2] for m in msgs if m.type == b"A"]
        assert got == ["busy"]
        _progress(churn, start, "a client listened")
        ok(listener, "UNLISTEN txn_chan")
        ok(talker, "NOTIFY txn_chan, 'unheard'")
        assert_waiting(listener, 0.5, "after UNLISTEN")
    churn.check()


def test_session_advisory_lock_is_held_across_statements(make_cluster):
    # pg_try_advisory_lock may take a lock, so the asking client is pinned too: a pool of 3 leaves one
    # connection for the churn clients.
    c = tx_cluster(make_cluster, pool_size=3)
    port = c.shardgate.port
    with connect(port) as holder, connect(port) as other, ChurnGroup(port, primary_port(c)) as churn:
        assert ok(holder, "SELECT pg_advisory_lock(4242)::text || 'locked'") == [["locked"]]
        start = churn.iterations()
        for i in range(8):
            ok(holder, f"SELECT {i}")
            assert ok(other, "SELECT pg_try_advisory_lock(4242)") == [["f"]], f"round {i}: the lock was free"
            time.sleep(0.05)
        _progress(churn, start, "a client held an advisory lock")
        assert ok(holder, "SELECT pg_advisory_unlock(4242)") == [["t"]]
        assert ok(other, "SELECT pg_try_advisory_lock(4242)") == [["t"]]
        assert ok(other, "SELECT pg_advisory_unlock(4242)") == [["t"]]
        # pg_try_advisory_lock pins too: a lock taken with it is also held across statements.
        assert ok(other, "SELECT pg_try_advisory_lock(77)") == [["t"]]
        for _ in range(5):
            ok(other, "SELECT 1")
            assert ok(holder, "SELECT pg_try_advisory_lock(77)") == [["f"]]
        assert ok(other, "SELECT pg_advisory_unlock(77)") == [["t"]]
    churn.check()


def test_session_level_set_config_keeps_its_setting_to_its_client(make_cluster):
    """SELECT set_config('app.tenant', ..., false), row-level security's "current tenant": shardgate
    cannot see the value (often a parameter), so the client is pinned. Its setting holds on its next
    statements and never reaches another client through a pooled connection. set_config(..., true)
    ends with its transaction and pins nothing."""
    # Two clients pinned, two connections left for the others.
    c = tx_cluster(make_cluster, pool_size=4)
    port = c.shardgate.port
    unset = "SELECT coalesce(current_setting('app.tenant', true), '')"
    with connect(port) as tenant, connect(port) as by_param, connect(port) as other, \
            ChurnGroup(port, primary_port(c)) as churn:
        assert ok(tenant, "SELECT set_config('app.tenant', '42', false)") == [["42"]]
        assert pgwire.data_rows(extended(by_param, "SELECT set_config('app.tenant', $1, false)", ("7",))) == [["7"]]
        start = churn.iterations()
        for i in range(8):
            assert ok(tenant, "SELECT current_setting('app.tenant')") == [["42"]], f"round {i}"
            assert ok(by_param, "SELECT current_setting('app.tenant')") == [["7"]], f"round {i}"
            assert ok(other, unset) == [[""]], f"round {i}: another client's setting reached this one"
            time.sleep(0.05)
        _progress(churn, start, "two clients set a setting with set_config")
        ok(other, "BEGIN")
        assert ok(other, "SELECT set_config('app.tenant', '9', true)") == [["9"]]
        ok(other, "COMMIT")
        assert ok(other, unset) == [[""]]
    churn.check()
    with connect(port) as later:
        for _ in range(6):
            assert ok(later, unset) == [[""]], "a departed client's setting stayed on its connection"


def test_with_hold_cursor_outlives_its_transaction(make_cluster):
    # Two clients pinned by their cursors, one connection left for the churn clients.
    c = tx_cluster(make_cluster, pool_size=3)
    port = c.shardgate.port
    with connect(port) as w, sg_psycopg(c, autocommit=False) as conn, \
            ChurnGroup(port, primary_port(c)) as churn:
        # Raw SQL: DECLARE in an explicit transaction, FETCH after COMMIT.
        ok(w, "BEGIN")
        ok(w, "DECLARE txn_cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 30) g")
        ok(w, "COMMIT")
        start = churn.iterations()
        fetched = []
        for _ in range(6):
            fetched += [int(r[0]) for r in ok(w, "FETCH 5 FROM txn_cur")]
            ok(w, "SELECT 1")
            time.sleep(0.05)
        assert fetched == list(range(1, 31))
        ok(w, "CLOSE txn_cur")
        # Outside any transaction block.
        ok(w, "DECLARE txn_cur2 CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 4) g")
        assert ok(w, "FETCH ALL FROM txn_cur2") == [["1"], ["2"], ["3"], ["4"]]
        # psycopg's server-side cursor with withhold=True.
        cur = conn.cursor("txn_psy_cur", withhold=True)
        cur.execute("SELECT g FROM generate_series(1, 100) g")
        conn.commit()
        got = []
        while True:
            rows = cur.fetchmany(9)
            if not rows:
                break
            got += [r[0] for r in rows]
            conn.execute("SELECT 1")
            conn.commit()
        assert got == list(range(1, 101))
        cur.close()
        conn.commit()
        _progress(churn, start, "clients kept WITH HOLD cursors")
    churn.check()


def test_temporary_table_lives_across_statements(make_cluster):
    # Two clients pinned by their temporary tables, one connection left for the others.
    c = tx_cluster(make_cluster, pool_size=3)
    port = c.shardgate.port
    with connect(port) as w, sg_psycopg(c, prepare_threshold=0) as conn, connect(port) as other, \
            ChurnGroup(port, primary_port(c)) as churn:
        ok(w, "CREATE TEMP TABLE txn_tmp (i int)")
        # psycopg sends its statements with Parse (extended protocol).
        conn.execute("CREATE TEMPORARY TABLE txn_tmp_psy (i int, t text)")
        start = churn.iterations()
        for i in range(10):
            ok(w, f"INSERT INTO txn_tmp VALUES ({i})")
            conn.execute("INSERT INTO txn_tmp_psy VALUES (%s, %s)", (i, f"t{i}"))
            assert ok(w, "SELECT count(*), sum(i) FROM txn_tmp") == [[str(i + 1), str(sum(range(i + 1)))]]
            assert conn.execute("SELECT count(*), max(t) FROM txn_tmp_psy").fetchone() == (i + 1, f"t{i}")
            # Nobody else sees them.
            assert ok(other, "SELECT to_regclass('pg_temp.txn_tmp') IS NULL,"
                             " to_regclass('pg_temp.txn_tmp_psy') IS NULL") == [["t", "t"]]
            time.sleep(0.03)
        ok(w, "SELECT 1 INTO TEMP txn_tmp_into")
        for _ in range(3):
            ok(w, "SELECT 2")
            assert ok(w, "SELECT count(*) FROM txn_tmp_into") == [["1"]]
        _progress(churn, start, "clients kept temporary tables")
    churn.check()


def test_temporary_views_and_pg_temp_objects_live_across_statements(make_cluster):
    """CREATE OR REPLACE TEMP VIEW and objects made in pg_temp by name pin their client as a
    temporary table does: they stay usable for it, and nobody else sees them."""
    c = tx_cluster(make_cluster, pool_size=3)
    port = c.shardgate.port
    with connect(port) as viewer, connect(port) as qualified, connect(port) as other, \
            ChurnGroup(port, primary_port(c)) as churn:
        ok(viewer, "CREATE OR REPLACE TEMP VIEW txn_tmp_view AS SELECT 42 AS x")
        ok(qualified, "CREATE TABLE pg_temp.txn_tmp_named (i int)")
        start = churn.iterations()
        for i in range(8):
            assert ok(viewer, "SELECT x FROM txn_tmp_view") == [["42"]], f"round {i}"
            ok(qualified, f"INSERT INTO pg_temp.txn_tmp_named VALUES ({i})")
            assert ok(qualified, "SELECT count(*) FROM txn_tmp_named") == [[str(i + 1)]]
            assert ok(other, "SELECT to_regclass('pg_temp.txn_tmp_view') IS NULL,"
                             " to_regclass('pg_temp.txn_tmp_named') IS NULL") == [["t", "t"]]
            time.sleep(0.03)
        _progress(churn, start, "clients kept temporary objects")
    churn.check()


def test_session_state_behind_explain_do_or_quoted_names_pins(make_cluster):
    """Temporary tables made by EXPLAIN ANALYZE CREATE TEMP ... AS or inside a DO block, and
    advisory locks and session settings taken through quoted function names, pin their client as
    the plain statements do: nobody else of the pool sees them (a temporary table would shadow
    the public one of the same name), and their client keeps them."""
    c = tx_cluster(make_cluster, pool_size=2)
    c.shards[0].primary.psql("CREATE TABLE txn_shadow AS SELECT 'public'::text AS v;"
                             " CREATE SCHEMA txn_leaked; GRANT USAGE ON SCHEMA txn_leaked TO PUBLIC")
    port = c.shardgate.port
    shadow = ("SELECT v FROM txn_shadow", [["public"]])
    pinning = [
        ("EXPLAIN ANALYZE CREATE TEMP TABLE txn_shadow AS SELECT 'temp'::text AS v",
         "SELECT v FROM txn_shadow", [["temp"]], shadow),
        ("DO $$BEGIN CREATE TEMP TABLE txn_shadow AS SELECT 'do'::text AS v; END$$",
         "SELECT v FROM txn_shadow", [["do"]], shadow),
        ('SELECT "pg_advisory_lock"(4242)',
         "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()",
         [["1"]], ("SELECT pg_try_advisory_lock(4242)", [["f"]])),
        ("SELECT \"set_config\"('search_path', 'txn_leaked', false)", "SHOW search_path", [["txn_leaked"]],
         ("SHOW search_path", [['"$user", public']])),
    ]
    for statement, probe, kept, (other_probe, other_sees) in pinning:
        with connect(port) as a, connect(port) as b:
            ok(a, statement)
            for _ in range(4):
                assert ok(a, probe) == kept, statement
                assert ok(b, other_probe) == other_sees, statement
    # The lock went with its client: another can take it now.
    with connect(port) as b:
        assert ok(b, "SELECT pg_try_advisory_lock(4242)") == [["t"]]


PIN_STATEMENTS = [
    "LISTEN txn_pin_chan",
    "SELECT pg_advisory_lock({n})",
    "CREATE TEMP TABLE txn_pin_tmp (i int)",
    "DECLARE txn_pin_cur CURSOR WITH HOLD FOR SELECT 1",
    "PREPARE txn_pin_sql AS SELECT 1",
    "SET search_path = public, pg_catalog",
]


@pytest.mark.parametrize("pin", PIN_STATEMENTS, ids=lambda p: "_".join(p.split()[:2]).lower().split("(")[0])
def test_prepared_statements_survive_pinning(make_cluster, pin):
    """Statements prepared while the client was pooled keep working after a session-level statement
    (which may pin the client to one connection), and new ones can be prepared, described, closed and
    re-prepared."""
    # a and the psycopg client may both be pinned: a pool of 3 leaves a connection for b.
    c = tx_cluster(make_cluster, pool_size=3)
    port = c.shardgate.port
    with connect(port) as a, connect(port) as b, sg_psycopg(c, prepare_threshold=0) as conn:
        assert not pgwire.errors(th.prepare(a, "s1", "SELECT 'one:' || $1::text"))
        assert not pgwire.errors(th.prepare(a, "s2", "SELECT 2"))
        assert not pgwire.errors(th.prepare(b, "s1", "SELECT 'b-one'"))  # same name elsewhere
        assert pgwire.data_rows(th.exec_prepared(a, "s1", ("x",))) == [["one:x"]]
        for i in range(3):
            assert conn.execute("SELECT %s::int + 10", (i,)).fetchone() == (i + 10,)
        msgs = a.simple(pin.format(n=31))
        assert not pgwire.errors(msgs), describe_reply(msgs)
        for i in range(3):
            msgs = th.exec_prepared(a, "s1", (f"y{i}",))
            assert pgwire.data_rows(msgs) == [[f"one:y{i}"]], f"after {pin.format(n=31)!r}: {describe_reply(msgs)}"
            assert pgwire.data_rows(th.exec_prepared(a, "s2")) == [["2"]]
            assert pgwire.data_rows(th.exec_prepared(b, "s1")) == [["b-one"]]
        msgs = th.describe_statement(a, "s1")
        assert th.parameter_oids(msgs) == [TEXT], describe_reply(msgs)
        assert not pgwire.errors(th.prepare(a, "s3", "SELECT 3"))
        assert pgwire.data_rows(th.exec_prepared(a, "s3")) == [["3"]]
        a.send(pgwire.close("S", "s1") + pgwire.parse("s1", "SELECT 'one again'") + pgwire.bind("", "s1")
               + pgwire.execute() + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert pgwire.data_rows(msgs) == [["one again"]], describe_reply(msgs)
        # psycopg prepares the session-level statement itself too (prepare_threshold=0).
        conn.execute(pin.format(n=32))
        for i in range(3):
            assert conn.execute("SELECT %s::int + 10", (i,)).fetchone() == (i + 10,)
            assert conn.execute("SELECT %s::text || 'new'", (str(i),)).fetchone() == (f"{i}new",)
            assert pgwire.data_rows(th.exec_prepared(b, "s1")) == [["b-one"]]


def test_pinned_session_state_is_gone_when_client_leaves(make_cluster):
    """What a pinned session leaves on its server connection (locks, temp tables, LISTEN, cursors,
    prepared statements, settings) is not inherited by the next client of that connection."""
    c = tx_cluster(make_cluster, pool_size=1)
    port = c.shardgate.port
    with connect(port) as a:
        pid_a = backend_pid(a)
        for sql in ["SELECT pg_advisory_lock(99)", "CREATE TEMP TABLE txn_gone (i int)", "LISTEN txn_gone_chan",
                    "DECLARE txn_gone_cur CURSOR WITH HOLD FOR SELECT 1", "PREPARE txn_gone_stmt AS SELECT 1",
                    "SET search_path = pg_catalog", "SET statement_timeout = '77s'"]:
            ok(a, sql)
        a.send(pgwire.terminate())
    with connect(port) as b:
        if not DIRECT:
            assert backend_pid(b) == pid_a, "a pool of 1 must hand b the same backend"
        row = ok(b, "SELECT pg_try_advisory_lock(99), to_regclass('pg_temp.txn_gone') IS NULL,"
                    " (SELECT count(*) FROM pg_listening_channels()), (SELECT count(*) FROM pg_cursors),"
                    " (SELECT count(*) FROM pg_prepared_statements WHERE name = 'txn_gone_stmt'),"
                    " current_setting('search_path'), current_setting('statement_timeout')", timeout=10)
        assert row == [["t", "t", "0", "0", "0", '"$user", public', "0"]]


# =============================================================================================
# A client that does not read its results
# =============================================================================================


def test_set_then_savepoint_in_one_batch_survives_rollback_to(make_cluster):
    # The SET came before the SAVEPOINT in the batch, so ROLLBACK TO keeps it and COMMIT makes it
    # the session's: the next transaction, on another connection, has it. (The SET's change settles
    # at the batch's end, and the savepoint used to be marked before it: the SET was lost.)
    c = tx_cluster(make_cluster, pool_size=2)
    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        ok(a, "BEGIN")
        a.send(b"".join(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute()
                        for sql in ("SET work_mem = '7MB'", "SAVEPOINT s")) + pgwire.sync())
        msgs = a.recv_until(b"Z")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        ok(a, "ROLLBACK TO SAVEPOINT s")
        ok(a, "COMMIT")
        ok(b, "BEGIN")
        ok(b, "SELECT 1")  # b holds the connection a used
        assert ok(a, "SHOW work_mem") == [["7MB"]]
        ok(b, "COMMIT")


def test_a_failed_set_does_not_fail_the_next_client_of_its_connection(make_cluster):
    # A SET of a setting Postgres does not have fails (42704), but shardgate cannot tell a pipelined
    # SET's outcome at once and resets the name before the next session uses the connection: RESET
    # of that name failed the same way, and the next client's login got FATAL 42704.
    c = tx_cluster(make_cluster, pool_size=1)
    with connect(c.shardgate.port) as a:
        a.send(pgwire.query("SET no_such_setting = 1") + pgwire.query("SELECT 1"))
        first, second = a.recv_until(b"Z"), a.recv_until(b"Z")
        assert error_codes(first) == ["42704"], describe_reply(first)
        assert pgwire.data_rows(second) == [["1"]], describe_reply(second)
        ok(a, "SET work_mem = '5MB'")
    for _ in range(3):
        with connect(c.shardgate.port) as b:  # the one pooled connection a used
            assert ok(b, "SELECT current_setting('work_mem')") == [["4MB"]]


def work_mem_after_switch(a, b, expected: str) -> None:
    """a's work_mem on another connection than its last one: b takes that one in a transaction."""
    ok(b, "BEGIN")
    ok(b, "SELECT 1")  # b holds the connection a used
    assert ok(a, "SHOW work_mem") == [[expected]]
    ok(b, "COMMIT")


def test_set_and_savepoint_in_one_query_keep_their_order(make_cluster):
    # The same in one simple query of several statements: each SAVEPOINT marks the SETs before it
    # in the string, not those after it (psql -c "SET ...; SAVEPOINT s" lost the SET at ROLLBACK TO).
    c = tx_cluster(make_cluster, pool_size=2)
    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        ok(a, "BEGIN")
        ok(a, "SET work_mem = '7MB'; SAVEPOINT s")
        ok(a, "ROLLBACK TO SAVEPOINT s")
        ok(a, "COMMIT")
        work_mem_after_switch(a, b, "7MB")
        ok(a, "BEGIN")
        ok(a, "SAVEPOINT s; SET work_mem = '8MB'")
        ok(a, "ROLLBACK TO SAVEPOINT s")
        ok(a, "COMMIT")
        work_mem_after_switch(a, b, "7MB")
        ok(a, "BEGIN")
        ok(a, "SET work_mem = '9MB'; SAVEPOINT s1; SET LOCAL lock_timeout = 100;; SAVEPOINT s2; "
              "SET work_mem = '10MB'")
        ok(a, "ROLLBACK TO SAVEPOINT s2")
        assert ok(a, "SHOW work_mem") == [["9MB"]]
        ok(a, "COMMIT")
        work_mem_after_switch(a, b, "9MB")


def test_settings_around_commit_and_rollback_in_one_request_keep_their_order(make_cluster):
    # A batch or query that ends a transaction and changes a setting after it: the change after a
    # ROLLBACK stays (it was rolled back with the transaction), one before a COMMIT stays when the
    # request fails after it (it was lost with the failed rest).
    c = tx_cluster(make_cluster, pool_size=2)
    with connect(c.shardgate.port) as a, connect(c.shardgate.port) as b:
        def batch(*statements: str) -> list[str]:
            a.send(b"".join(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute()
                            for sql in statements) + pgwire.sync())
            return error_codes(a.recv_until(b"Z"))

        assert batch("BEGIN", "SET work_mem = '7MB'", "ROLLBACK", "SET work_mem = '8MB'") == []
        work_mem_after_switch(a, b, "8MB")
        assert batch("BEGIN", "SET work_mem = '9MB'", "COMMIT", "SET work_mem = '10MB'", "SELECT 1/0") == ["22012"]
        work_mem_after_switch(a, b, "9MB")
        assert batch("ROLLBACK", "SET work_mem = '11MB'") == []
        work_mem_after_switch(a, b, "11MB")
        ok(a, "BEGIN; SET work_mem = '12MB'; ROLLBACK; SET work_mem = '13MB'")
        work_mem_after_switch(a, b, "13MB")
        a.send(pgwire.query("BEGIN; SET work_mem = '14MB'; COMMIT; SET work_mem = '15MB'; SELECT 1/0"))
        assert error_codes(a.recv_until(b"Z")) == ["22012"]
        work_mem_after_switch(a, b, "14MB")


def test_input_over_the_buffer_limit_is_read_on_once_the_shard_has_taken_it(make_cluster):
    # shardgate stops reading a client once more than client_buffer_limit (1 MB) waits for the
    # shard, and must read again once the shard has taken it. Here nothing else wakes it: the
    # shard answers nothing before the Sync that shardgate has not read yet. (It stalled for good:
    # psycopg's 4 MB parameter over TLS under CPU load, where the Execute and Sync came in a
    # later read.)
    c = tx_cluster(make_cluster, pool_size=2)
    big = "x" * (32 << 20)  # more than the loopback socket buffers hold, and well over the limit
    with connect(c.shardgate.port, timeout=30) as w:
        w.send(pgwire.parse("", "SELECT length($1::text)") + pgwire.bind("", "", (big,)))
        time.sleep(1)  # shardgate has the Bind, passes it on and pauses the client
        w.send(pgwire.describe("P") + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z", timeout=30)
        assert pgwire.data_rows(msgs) == [[str(len(big))]], pgwire.types(msgs)
        assert ok(w, "SELECT 'next'") == [["next"]]
        # The same for COPY rows: the shard answers nothing until CopyDone.
        ok(w, "CREATE TABLE copied_in_bulk (t text)")
        w.send(pgwire.query("COPY copied_in_bulk FROM STDIN"))
        assert pgwire.types(w.recv_until(b"G")) == "G"
        row = b"y" * 1000 + b"\n"
        w.send(b"".join(pgwire.copy_data(row * 64) for _ in range(500)))  # 32 MB
        time.sleep(1)
        w.send(pgwire.copy_done())
        msgs = w.recv_until(b"Z")
        assert not pgwire.errors(msgs), describe_reply(msgs)
        assert ok(w, "SELECT count(*) FROM copied_in_bulk") == [["32000"]]


def test_slow_reader_does_not_make_shardgate_buffer(make_cluster):
    c = tx_cluster(make_cluster, pool_size=2)
    port = c.shardgate.port
    rows, width = 50_000, 1000  # about 50 MB of DataRows
    sg_pid = None if DIRECT else c.shardgate.pid
    with connect(port, timeout=30) as slow, connect(port) as other:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        baseline = th.proc_status_kb(sg_pid, "VmRSS") if sg_pid else 0
        slow.send(pgwire.query(f"SELECT g, repeat('x', {width}) FROM generate_series(1, {rows}) g"))
        # Stop reading for a while; meanwhile the others are served promptly.
        t_end = time.monotonic() + 4
        served = 0
        while time.monotonic() < t_end:
            t = time.monotonic()
            assert ok(other, f"SELECT {served}", timeout=3) == [[str(served)]]
            msgs = extended(other, "SELECT $1::int * 2", (str(served),), timeout=3)
            assert pgwire.data_rows(msgs) == [[str(served * 2)]]
            assert time.monotonic() - t < 2, "another client waited seconds while one client did not read"
            served += 1
            time.sleep(0.05)
        assert served >= 20
        if sg_pid:
            peak = th.proc_status_kb(sg_pid, "VmHWM")
            growth_mb = (peak - baseline) / 1024
            assert growth_mb < 30, f"shardgate's memory grew by {growth_mb:.1f} MB for a client that reads nothing"
        # Now read it all, checking every row.
        n = 0
        expect_value = b"x" * width
        while True:
            m = slow.recv(timeout=30)
            slow.received.clear()  # pgwire keeps every message for failure reports; not 50 MB of them
            if m.type == b"D":
                n += 1
                g, v = pgwire.parse_data_row(m)
                assert int(g) == n and v == expect_value, f"row {n} is wrong: {g!r}"
            elif m.type == b"C":
                assert pgwire.parse_command_complete(m) == f"SELECT {rows}"
            elif m.type == b"Z":
                break
            elif m.type != b"T":
                raise AssertionError(f"unexpected {m!r}")
        assert n == rows
        assert ok(slow, "SELECT 'still fine'") == [["still fine"]]
        if sg_pid:
            growth_mb = (th.proc_status_kb(sg_pid, "VmHWM") - baseline) / 1024
            assert growth_mb < 30, f"shardgate's memory grew by {growth_mb:.1f} MB while relaying {rows} rows"
