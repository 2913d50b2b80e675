"""The PostgreSQL JDBC driver (pgjdbc) through shardgate in transaction pooling with a small pool: server-side
prepared statements shared by several clients, binary transfer, batches into a sharded table, transactions,
multi-shard reads and a 0A000 refusal, DatabaseMetaData and the start-up parameters JDBC sends.

jdbc/JdbcCheck.java is compiled once per module (javac, /usr/share/java/postgresql.jar from Debian's
libpostgresql-jdbc-java) and run once per scenario; it prints what it saw as key=value lines. Without javac
or the jar the module is skipped, except under CI (CI=true), where that is a failure.

Two scenarios guard against bugs pgjdbc found: a multi-shard statement that was the first of a transaction
(BEGIN in its batch) hung, and a SET in the extended protocol leaked to other clients.

One 2-shard cluster (no replicas, one worker, default_pool_size = 2, so four clients really share server
connections), users hashed on id and jdbc_batch hashed on k, both created on every shard directly. With
SHARDGATE_TARGET=direct the scenarios that do not need shardgate run against plain Postgres (shard 0's
primary holds every row then), which checks the tests' own expectations.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

import pgcluster
import pgwire
from console_helpers import console, show
from driver_programs import (DIRECT, ProgramRun, direct, hash_sharded_toml, key_shard, on_shards, run_program,
                             skip_unless_ci, users_cluster)

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).resolve().parent / "jdbc" / "JdbcCheck.java"
# A zone with a half-hour offset: pgjdbc sends the JVM's zone as the TimeZone start-up parameter.
JVM_TIMEZONE = "Asia/Kolkata"
# Quick JVM start for a short program (one JVM per scenario).
JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", f"-Duser.timezone={JVM_TIMEZONE}"]
JAVA_TIMEOUT_S = 60
POOL_SIZE = 2
USERS = 400

SHARDING_TOML = hash_sharded_toml(("users", "id"), ("jdbc_batch", "k"))

SHARD_DDL = """
CREATE TABLE users (id bigint PRIMARY KEY, name text, country text);
CREATE TABLE jdbc_batch (k bigint PRIMARY KEY, v text NOT NULL);
"""


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


# ---------------------------------------------------------------------------------------------
# The program, the cluster, running a scenario
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory) -> Path:
    """JdbcCheck compiled into a fresh directory (once per module)."""
    missing = [what for what, ok in (("javac", shutil.which("javac")), ("java", shutil.which("java")),
                                     (str(JAR), JAR.is_file())) if not ok]
    if missing:
        reason = (f"{', '.join(missing)} not installed (apt-get install default-jdk-headless "
                  f"libpostgresql-jdbc-java, or run scripts/install-deps.sh)")
        skip_unless_ci("JDBC", reason)
    out = tmp_path_factory.mktemp("jdbc-classes")
    r = subprocess.run(["javac", "-Xlint:all", "-d", str(out), "-cp", str(JAR), str(SOURCE)],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"javac failed:\n{r.stderr}{r.stdout}"
    return out


@pytest.fixture(scope="module")
def jc(cluster_root, shardgate_bin):
    """The module's cluster: 2 shards, transaction pooling, 2 server connections per shard, users 1..USERS."""
    with users_cluster(cluster_root / "jdbc", shardgate_bin, pool_size=POOL_SIZE, sharding_toml=SHARDING_TOML,
                       shard_ddl=SHARD_DDL, users=USERS) as c:
        yield c


def jdbc_url(port: int, **props) -> str:
    query = {"connectTimeout": "10", "socketTimeout": "60", **{k: str(v) for k, v in props.items()}}
    return f"jdbc:postgresql://127.0.0.1:{port}/app?" + "&".join(f"{k}={v}" for k, v in query.items())


def run_jdbc(classes: Path, c: pgcluster.Cluster, scenario: str, *args, props: dict | None = None) -> ProgramRun:
    """Runs `java JdbcCheck <scenario> <url> postgres postgres <args>` against shardgate (or its stand-in);
    it must exit 0 with result=ok (every check inside the program passed)."""
    cmd = ["java", *JVM_FLAGS, "-cp", f"{classes}{os.pathsep}{JAR}", "JdbcCheck", scenario,
           jdbc_url(c.shardgate.port, **(props or {})), "postgres", "postgres", *map(str, args)]
    return run_program("JdbcCheck", scenario, cmd, JAVA_TIMEOUT_S)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def unsharded_table(jc):
    """A fresh unsharded table name (it lives on the default shard, 0); dropped after the test."""
    names = []

    def make(ddl: str) -> str:
        name = "jdbc_" + uuid.uuid4().hex[:8]
        with psycopg.connect(jc.shardgate.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE TABLE {name} ({ddl})")
        names.append(name)
        return name

    yield make
    with psycopg.connect(jc.shardgate.dsn(), autocommit=True, connect_timeout=10) as conn:
        for name in names:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


# ---------------------------------------------------------------------------------------------
# 1. Server-side prepared statements of several clients over a pool of two
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [None, 1], ids=["prepareThreshold-default", "prepareThreshold-1"])
def test_prepared_statements_from_concurrent_clients(jdbc_classes, jc, threshold):
    clients, executions = 4, 50
    props = {} if threshold is None else {"prepareThreshold": threshold}
    run = run_jdbc(jdbc_classes, jc, "prepared", clients, executions, USERS, props=props)
    # Each execution runs two statements (one per text), each checked against what was inserted.
    assert (run["rows"], run["wrong"], run["errors"]) == (str(clients * executions * 2), "0", "0"), run
    if DIRECT:
        # Plain Postgres: each client has its own backend, holding both texts as named statements.
        assert int(run["backends"]) == clients, run
        assert int(run["min_prepared_in_session"]) >= 2, f"pgjdbc did not prepare on the server: {run}"
        return
    # 2 shards x 2 connections; every client reads both shards, so the clients must have shared them.
    assert int(run["backends"]) <= 2 * POOL_SIZE, run
    assert int(run["shared_backends"]) >= 1, f"no server connection served two clients: {run}"
    # The named statements really reached the shards' connections.
    with console(jc) as w:
        _, servers = show(w, "SHOW SERVERS")
    assert sum(int(s["prepared_statements"] or 0) for s in servers) >= 2, servers


# ---------------------------------------------------------------------------------------------
# 2. Binary transfer
# ---------------------------------------------------------------------------------------------


def test_binary_transfer_round_trips_exact_values(jdbc_classes, jc, unsharded_table):
    table = unsharded_table("id int8 PRIMARY KEY, amount numeric, ts timestamptz, label text, flag boolean,"
                            " data bytea, ratio float8")
    # pgjdbc asks for binary results once a statement is server-prepared; enable every type we read.
    props = {"binaryTransfer": "true", "prepareThreshold": 1,
             "binaryTransferEnable": "INT8,NUMERIC,TIMESTAMPTZ,TEXT,BOOL,BYTEA,FLOAT8"}
    run = run_jdbc(jdbc_classes, jc, "binary", table, 6, props=props)
    assert (run["rows"], run["reads"], run["mismatches"]) == ("4", "24", "0"), run
    # Every column (id, amount, ts, label, flag, data, ratio) came in binary format.
    assert run["formats"] == "1,1,1,1,1,1,1", run
    # What the shard stored, read directly: the values arrived intact, not just symmetrically garbled.
    with direct(jc.shards[0].primary) as conn:
        rows = conn.execute(f"SELECT id, amount::text, ts, label, flag, length(data), md5(data), ratio::text"
                            f" FROM {table} ORDER BY id").fetchall()
    utc = datetime.timezone.utc
    assert rows == [
        (-(2**63), "-0.000000001", datetime.datetime(1969, 12, 31, 18, 29, 59, 999999, tzinfo=utc),
         "quote ' backslash \\ tab \t end", False, 0, md5_hex(b""), "1.7976931348623157e+308"),
        (-1, None, None, None, None, None, None, None),
        (0, "0.00", datetime.datetime(2000, 1, 1, 8, 0, tzinfo=utc), "", True, 3, md5_hex(b"\x00\x00\xff"), "5e-324"),
        (2**63 - 1, "12345678901234567890.123456789012", datetime.datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=utc),
         "héllo ✓ 日本", True, 256, md5_hex(bytes(range(256))), "0.30000000000000004"),
    ]


# ---------------------------------------------------------------------------------------------
# 3. Batches into a sharded table
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def batch_table(jc):
    """jdbc_batch (hashed on k), empty on every shard before and after the test."""
    for shard in jc.shards:
        shard.primary.psql("TRUNCATE jdbc_batch")
    yield "jdbc_batch"
    for shard in jc.shards:
        shard.primary.psql("TRUNCATE jdbc_batch")


@pytest.mark.parametrize("mode, props", [
    ("autocommit", {}),
    ("autocommit", {"reWriteBatchedInserts": "true"}),
    ("transaction", {}),
], ids=["addBatch", "reWriteBatchedInserts", "addBatch-in-transaction"])
def test_batch_insert_into_sharded_table(jdbc_classes, jc, batch_table, mode, props):
    first, count = -100, 200  # negative, zero and positive keys
    run = run_jdbc(jdbc_classes, jc, "batch", batch_table, first, count, mode, props=props)
    keys = list(range(first, first + count))
    assert run["batch_results"] == str(count), run
    # One update count per row: 1 each, or SUCCESS_NO_INFO (-2) when pgjdbc rewrote them into multi-row INSERTs.
    assert run["update_counts"] in (f"{{1={count}}}", f"{{-2={count}}}"), run
    assert (run["found"], run["wrong"], run["count"], run["sum"]) == (str(count), "0", str(count), str(sum(keys))), run
    # Every row on exactly one shard: the one Postgres's hash partitioning picks.
    where = key_shard(jc, keys)
    per_shard = [dict(rows) for rows in on_shards(jc, "SELECT k, v FROM jdbc_batch")]
    assert sum(len(rows) for rows in per_shard) == count, [len(rows) for rows in per_shard]
    misplaced = [k for k in keys if k not in per_shard[where[k]] or any(k in rows for i, rows in enumerate(per_shard)
                                                                        if i != where[k])]
    assert not misplaced, f"rows not (only) on their hash shard: {misplaced[:20]}"
    assert all(per_shard[where[k]][k] == f"v{k}" for k in keys)
    if not DIRECT:
        assert all(per_shard), "the keys should have spread over both shards"


def test_batch_with_multi_shard_update_is_one_transaction(jdbc_classes, jc, batch_table):
    # Rows on both shards; with autocommit, the batch [multi-shard UPDATE, INSERT] ends with one Sync.
    keys = list(range(1, 21))
    with psycopg.connect(jc.shardgate.dsn(), autocommit=True, connect_timeout=10) as conn:
        for k in keys:
            conn.execute("INSERT INTO jdbc_batch (k, v) VALUES (%s, %s)", (k, f"v{k}"))
    run = run_jdbc(jdbc_classes, jc, "batch_atomic", batch_table, keys[0], 1000)
    assert run["failing_batch"] == "23505", run
    assert run["changed_after_failure"] == "0", "the failed batch's UPDATE was kept: " + str(run)
    assert (run["counts"], run["changed_after_success"], run["rows"]) == ("[20, 1]", "20", "21"), run
    if not DIRECT:
        assert all(on_shards(jc, "SELECT k FROM jdbc_batch WHERE v LIKE '%!'")), "both shards hold updated rows"


# ---------------------------------------------------------------------------------------------
# 4. Transactions
# ---------------------------------------------------------------------------------------------


def test_transactions_commit_rollback_read_only(jdbc_classes, jc):
    where = key_shard(jc, [*range(1, USERS + 1), *range(100_001, 100_102)])
    # commit_id and other_id on different shards, so the transaction reads across shards; the read-only
    # transaction reads other_id and then writes rollback_id + 1 on the other shard, where shardgate must
    # have begun it READ ONLY too.
    rollback_id = next(k for k in range(100_001, 100_100) if where[k] == 0 and where[k + 1] == 0)
    commit_id = next(k for k in range(100_001, 100_101) if where[k] == 0 and k not in (rollback_id, rollback_id + 1))
    other_id = next(k for k in range(1, USERS + 1) if DIRECT or where[k] == 1)
    new_ids = [rollback_id, rollback_id + 1, commit_id]
    try:
        run = run_jdbc(jdbc_classes, jc, "txn", rollback_id, commit_id, other_id)
        got = {k: run[k] for k in ("rollback_inside", "rollback_other_session", "after_rollback", "commit_inside",
                                   "other_inside", "commit_other_session", "after_commit", "readonly_select",
                                   "readonly_insert", "in_txn_select", "duplicate_insert", "after_error",
                                   "after_error_rollback")}
        assert got == {
            "rollback_inside": "rolled back", "rollback_other_session": "null", "after_rollback": "null",
            "commit_inside": "committed", "other_inside": f"user{other_id}", "commit_other_session": "null",
            "after_commit": "committed", "readonly_select": f"user{other_id}", "readonly_insert": "25006",
            "in_txn_select": "committed", "duplicate_insert": "23505", "after_error": "25P02",
            "after_error_rollback": "committed",
        }, run
        found = on_shards(jc, "SELECT id, name FROM users WHERE id = ANY(%s) ORDER BY id", (new_ids,))
        assert found[where[commit_id]] == [(commit_id, "committed")], found
        assert sum(len(rows) for rows in found) == 1, found
    finally:
        for shard in jc.shards:
            with direct(shard.primary) as conn:
                conn.execute("DELETE FROM users WHERE id = ANY(%s)", (new_ids,))


# ---------------------------------------------------------------------------------------------
# 5. Statements over both shards, and a shape shardgate refuses
# ---------------------------------------------------------------------------------------------


def test_multi_shard_reads_match_the_shards(jdbc_classes, jc):
    run = run_jdbc(jdbc_classes, jc, "multishard", 100)
    per_shard = on_shards(jc, "SELECT id, name FROM users")
    rows = [r for shard_rows in per_shard for r in shard_rows]
    assert run["count"] == str(len(rows)) == str(USERS), run
    assert run["top5"] == ",".join(str(i) for i in sorted((r[0] for r in rows), reverse=True)[:5]), run
    above = [r for r in rows if r[0] > 100]
    # min(name) over 'user101'..'user400': no collation subtleties in these names.
    assert run["above"] == f"{len(above)},{sum(r[0] for r in above)},{min(r[1] for r in above)}", run


# pgjdbc with setAutoCommit(false) sends BEGIN and the transaction's first statement in one extended-protocol
# batch: Parse/Bind/Execute "BEGIN", Parse/Bind/Describe/Execute "SELECT count(*) FROM users", Sync. (It
# hung: shardgate waited for BEGIN's replies, which the server held until a Flush or Sync.)
def test_multi_shard_read_first_in_transaction(jdbc_classes, jc):
    # A short socket timeout: the hang fails the run in seconds, not after the usual minute.
    run = run_jdbc(jdbc_classes, jc, "multishard_txn", props={"socketTimeout": 5})
    assert (run["first_count"], run["then_max"], run["prepared_first_count"]) == (str(USERS), str(USERS),
                                                                                   str(USERS)), run


@pytest.mark.requires_shardgate
def test_unsupported_shape_gets_0A000_and_connection_stays_usable(jdbc_classes, jc):
    run = run_jdbc(jdbc_classes, jc, "unsupported")
    count = str(USERS)
    assert "window functions" in run["message_of_0A000"], run
    assert (run["autocommit_refused"], run["autocommit_after"]) == ("0A000", count), run
    assert (run["prepared_refused"], run["prepared_after"]) == ("0A000", count), run
    # In a transaction block the refusal aborts the transaction, as any error does in Postgres.
    assert (run["in_txn_refused"], run["in_txn_next"]) == ("0A000", "25P02"), run
    assert (run["in_txn_after_rollback"], run["in_txn_after_rollback_count"], run["autocommit_at_end"]) == (
        "user1", count, count), run


# ---------------------------------------------------------------------------------------------
# 6. Start-up, DatabaseMetaData, and the settings each client keeps over the pool
# ---------------------------------------------------------------------------------------------


def test_metadata_and_startup_parameters(jdbc_classes, jc, unsharded_table):
    table = unsharded_table("id int PRIMARY KEY, x float8")
    run = run_jdbc(jdbc_classes, jc, "metadata", table)
    server_version = jc.shards[0].primary.psql("SHOW server_version")
    assert (run["product"], run["product_version"], run["server_version"]) == ("PostgreSQL", server_version,
                                                                               server_version), run
    assert run["major"] == server_version.split(".")[0], run
    assert (run["application_name"], run["client_encoding"]) == ("sg_jdbc", "UTF8"), run
    assert run["timezone"] == run["jvm_timezone"] == JVM_TIMEZONE, run
    assert run["datestyle"].startswith("ISO"), run
    assert (run["tables"], run["columns"], run["primary_key"]) == ("users", "id:int8,name:text,country:text", "id"), run
    assert (run["float_text"], run["float_param_equal"]) == ("0.30000000000000004", "true"), run
    with direct(jc.shards[0].primary) as conn:
        assert conn.execute(f"SELECT x FROM {table}").fetchall() == [(0.1 + 0.2,)]


# pgjdbc sends 'SET extra_float_digits = 3' through the extended protocol right after start-up, and
# Statement.execute("SET ...") does too: such a SET must follow its client (it used to stay on the server
# connection, for the next client to inherit) without pinning every JDBC client to a connection.
def test_session_settings_follow_each_client(jdbc_classes, jc):
    clients, rounds = 3, 6
    run = run_jdbc(jdbc_classes, jc, "settings", clients, rounds)
    # Client 0 (simple protocol) lowered extra_float_digits, client 1 set a statement_timeout; every client
    # must see its own settings on whatever server connection runs its statement.
    zone = JVM_TIMEZONE
    assert run.all("seen") == [
        f"client0:0.3/0/0/sg_jdbc_client0/{zone}*{rounds}",
        f"client1:0.30000000000000004/3/4321s/sg_jdbc/{zone}*{rounds}",
        f"client2:0.30000000000000004/3/0/sg_jdbc/{zone}*{rounds}",
    ], run
