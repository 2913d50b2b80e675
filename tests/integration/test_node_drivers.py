"""The two most used Node.js Postgres drivers, pg (node-postgres 8) and postgres (postgres.js 3), through shardgate in
transaction pooling with a small pool: parameterised queries and named prepared statements of several clients (same
names, different texts), transactions with writes on both shards, a types round trip, postgres.js's pipelined
prepared queries over a pool and inside sql.begin, a 0A000 refusal, and the session settings of each client.

node/check.mjs is one program run once per scenario; it prints what it saw as key=value lines. Its packages are pinned
in node/package-lock.json and installed by scripts/install-node-deps.sh (npm ci, and Debian's nodejs and npm when node
is missing), which this module runs itself when node/node_modules is missing or older than the lock file. When that
fails the module is skipped, except under CI (CI=true), where that is a failure.

One 2-shard cluster (no replicas, one worker, default_pool_size = 2, so the clients really share server connections),
users hashed on id, node_kv hashed on k and node_types hashed on id, all created on every shard directly. With
SHARDGATE_TARGET=direct the scenarios that do not need shardgate run against plain Postgres (shard 0's primary holds
every row then), which checks the tests' own expectations.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import conftest
import pgcluster
import pgwire
from console_helpers import console, show
from driver_programs import (DIRECT, ProgramRun, direct, hash_sharded_toml, key_shard, on_shards, run_program,
                             skip_unless_ci, users_cluster)

NODE_DIR = Path(__file__).resolve().parent / "node"
PROGRAM = NODE_DIR / "check.mjs"
INSTALL = conftest.REPO_ROOT / "scripts" / "install-node-deps.sh"
NODE_TIMEOUT_S = 60
POOL_SIZE = 2
USERS = 400

SHARDING_TOML = hash_sharded_toml(("users", "id"), ("node_kv", "k"), ("node_types", "id"))

SHARD_DDL = """
CREATE TABLE users (id bigint PRIMARY KEY, name text, country text);
CREATE TABLE node_kv (k bigint PRIMARY KEY, v text NOT NULL);
CREATE TABLE node_types (id bigint PRIMARY KEY, i8 int8, n numeric, ts timestamptz, j jsonb, b bytea, f boolean,
                         ia int[], ta text[], t text);
"""


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


# ---------------------------------------------------------------------------------------------
# The packages, the cluster, running a scenario
# ---------------------------------------------------------------------------------------------


def _installed() -> bool:
    stamp = NODE_DIR / "node_modules" / ".package-lock.json"  # written last by npm ci
    return (shutil.which("node") is not None and stamp.is_file()
            and stamp.stat().st_mtime >= (NODE_DIR / "package-lock.json").stat().st_mtime)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the packages of node/package-lock.json installed (by install-node-deps.sh if needed)."""
    if not _installed():
        try:
            r = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=600,
                               stdin=subprocess.DEVNULL)
            problem = None if r.returncode == 0 else f"exit {r.returncode}:\n{r.stdout}{r.stderr}"
        except subprocess.TimeoutExpired as e:
            problem = f"no answer in 600 s:\n{e.stdout}{e.stderr}"
        if problem is None and not _installed():
            problem = f"it succeeded but node or {NODE_DIR}/node_modules is still missing"
        if problem is not None:
            reason = f"scripts/install-node-deps.sh could not install Node.js and the npm packages: {problem}"
            skip_unless_ci("Node.js driver", reason)
    return shutil.which("node")


@pytest.fixture(scope="module")
def nc(cluster_root, shardgate_bin):
    """The module's cluster: 2 shards, transaction pooling, 2 server connections per shard, users 1..USERS."""
    with users_cluster(cluster_root / "node", shardgate_bin, pool_size=POOL_SIZE, sharding_toml=SHARDING_TOML,
                       shard_ddl=SHARD_DDL, users=USERS) as c:
        yield c


def run_node(node: str, c: pgcluster.Cluster, scenario: str, args: dict | None = None) -> ProgramRun:
    """Runs `node check.mjs <scenario> <url> <args as JSON>` against shardgate (or its stand-in); it must exit 0
    with result=ok (every check inside the program passed)."""
    url = f"postgres://postgres:postgres@{pgcluster.HOST}:{c.shardgate.port}/app"
    cmd = [node, str(PROGRAM), scenario, url, json.dumps(args or {})]
    # PG* variables (PGAPPNAME, PGTZ, ...) would change what both drivers send at start-up.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return run_program("check.mjs", scenario, cmd, NODE_TIMEOUT_S, cwd=NODE_DIR, env=env)


def ids_on_each_shard(c: pgcluster.Cluster) -> list[int]:
    """A users id on shard 0 and one on shard 1 (direct mode: two ids)."""
    if DIRECT:
        return [1, 2]
    where = key_shard(c, range(1, USERS + 1))
    return [next(k for k in where if where[k] == s) for s in (0, 1)]


class Keys:
    """Fresh node_kv keys on a chosen shard, from a range of the test's own."""

    def __init__(self, c: pgcluster.Cluster, first: int, count: int = 400):
        self.where = key_shard(c, range(first, first + count))
        self.used: list[int] = []

    def on(self, shard: int) -> int:
        """An unused key that lives on `shard` (direct mode: any unused key)."""
        k = next(k for k, s in self.where.items() if (DIRECT or s == shard) and k not in self.used)
        self.used.append(k)
        return k

    def pair(self) -> list[int]:
        """Two unused keys, on shard 0 and on shard 1."""
        return [self.on(0), self.on(1)]


@pytest.fixture
def kv(nc):
    """node_kv, empty on every shard before and after the test."""
    for shard in nc.shards:
        shard.primary.psql("TRUNCATE node_kv")
    yield
    for shard in nc.shards:
        shard.primary.psql("TRUNCATE node_kv")


def kv_rows(c: pgcluster.Cluster) -> list[dict[int, str]]:
    """node_kv on each shard, read directly: [{k: v}, ...] by shard index."""
    return [dict(rows) for rows in on_shards(c, "SELECT k, v FROM node_kv")]


def assert_placed(c: pgcluster.Cluster, keys: Keys, want: dict[int, str]) -> None:
    """node_kv holds exactly `want`, each row on its key's shard only."""
    per_shard = kv_rows(c)
    got = {k: v for rows in per_shard for k, v in rows.items()}
    assert got == want and sum(map(len, per_shard)) == len(want), per_shard
    misplaced = [k for k in want if k not in per_shard[keys.where[k]]]
    assert not misplaced, f"rows not on their hash shard: {misplaced}; {per_shard}"


# ---------------------------------------------------------------------------------------------
# 1. pg: parameterised and named prepared statements of several clients over a pool of two
# ---------------------------------------------------------------------------------------------


def test_pg_prepared_statements_from_concurrent_clients(node, nc):
    clients, executions = 4, 40
    run = run_node(node, nc, "pg_prepared", {"clients": clients, "executions": executions, "users": USERS})
    # Each execution runs an unnamed statement, the two named ones and the multi-shard named one.
    assert (run["rows"], run["wrong"], run["errors"]) == (str(clients * executions * 4), "0", "0"), run
    if DIRECT:
        # Plain Postgres: each client has its own backend, holding its three named statements.
        assert int(run["backends"]) == clients, run
        assert int(run["min_prepared_in_session"]) == 3, run
        return
    # 2 shards x 2 connections; every client reads both shards, so the clients must have shared them.
    assert int(run["backends"]) <= 2 * POOL_SIZE, run
    assert int(run["shared_backends"]) >= 1, f"no server connection served two clients: {run}"
    with console(nc) as w:
        _, servers = show(w, "SHOW SERVERS")
    assert sum(int(s["prepared_statements"] or 0) for s in servers) >= 2, servers


# ---------------------------------------------------------------------------------------------
# 2. pg: transactions with writes on both shards
# ---------------------------------------------------------------------------------------------


def test_pg_transactions_on_both_shards(node, nc, kv):
    keys = Keys(nc, 10_000)
    clients = [{"rollback": keys.pair(), "commit": keys.pair(), "failed": keys.on(0)} for _ in range(3)]
    run = run_node(node, nc, "pg_txn", {"clients": clients, "users": USERS})
    assert sorted(run.all("client_done")) == ["0", "1", "2"], run
    # Only the committed rows, each on its own shard; the rolled-back ones on neither.
    assert_placed(nc, keys, {k: f"c{k}" for cl in clients for k in cl["commit"]})


# ---------------------------------------------------------------------------------------------
# 3. pg: types
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def types_table(nc):
    for shard in nc.shards:
        shard.primary.psql("TRUNCATE node_types")
    yield "node_types"
    for shard in nc.shards:
        shard.primary.psql("TRUNCATE node_types")


def test_pg_types_round_trip(node, nc, types_table):
    keys = Keys(nc, 20_000)
    ids = [keys.on(0), keys.on(1), keys.on(1), keys.on(0)]
    run = run_node(node, nc, "pg_types", {"table": types_table, "ids": ids})
    assert (run["rows"], run["reads"]) == ("4", str(4 * 2 + 4 + 4 + 1)), run
    assert run["type_oids"] == "id:20,i8:20,n:1700,ts:1184,j:3802,b:17,f:16,ia:1007,ta:1009,t:25", run
    # What the shards stored, read directly: the values arrived intact, not just symmetrically garbled.
    per_shard = on_shards(nc, "SELECT id, i8::text, n::text, ts, j::text, length(b), md5(b), f, ia::text, ta::text, t"
                              " FROM node_types ORDER BY id")
    where = {k: keys.where[k] for k in ids}
    assert [[r[0] for r in rows] for rows in per_shard] == [sorted(k for k in ids if where[k] == s)
                                                             for s in range(len(nc.shards))], per_shard
    stored = {r[0]: r[1:] for rows in per_shard for r in rows}
    utc = datetime.timezone.utc
    assert stored == {
        ids[0]: ("-9223372036854775808", "-0.000000001",
                 datetime.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=utc),
                 '{"a": [1, 2, {"b": null}], "q": "quote \' \\"dq\\" \\\\", "s": "héllo ✓ 日本"}', 0,
                 hashlib.md5(b"").hexdigest(), False, "{}", "{}", ""),
        ids[1]: ("9223372036854775807", "12345678901234567890.123456789012",
                 datetime.datetime(2024, 2, 29, 13, 14, 15, 123000, tzinfo=utc), '[1, "two", 3.5, true, null]', 256,
                 hashlib.md5(bytes(range(256))).hexdigest(), True, "{1,-2,2147483647}",
                 '{a,"b c","\\"q\\"","back\\\\slash",NULL,"{}","NULL","comma,"}', "tab\there\nnewline ✓"),
        ids[2]: (None,) * 10,
        ids[3]: ("0", "0.00", datetime.datetime(1970, 1, 1, tzinfo=utc), '"just a string"', 3,
                 hashlib.md5(b"\x00\x00\xff").hexdigest(), True, "{NULL,0}", '{""}', "x"),
    }


# ---------------------------------------------------------------------------------------------
# 4, 5. postgres.js: a pool of four, sql.begin, pipelines in a transaction
# ---------------------------------------------------------------------------------------------


def test_postgres_js_pool_transactions_aggregates(node, nc, kv):
    keys = Keys(nc, 30_000)
    writes = [k for _ in range(10) for k in keys.pair()]
    commit, rollback = keys.pair(), keys.pair()
    unsafe = [[keys.on(0), keys.on(0)], [keys.on(1), keys.on(1)]]  # a multi-statement query per shard
    run = run_node(node, nc, "pjs_pool", {"users": USERS, "writes": writes, "commit": commit, "rollback": rollback,
                                          "unsafe": unsafe})
    assert (run["reads"], run["writes"], run["wrong"]) == ("200", str(len(writes)), "0"), run
    assert (run["commit_inside"], run["commit_after"]) == ("2", "2"), run
    assert (run["rollback_inside"], run["rollback_error"], run["rollback_after"]) == (
        "2", "rolled back on purpose", "0"), run
    ids = range(1, USERS + 1)
    assert run["aggregate"] == f"{USERS}|{sum(ids)}|user1|{USERS}|{sum(ids) / USERS:.16f}", run
    assert run["groups"] == ",".join(f"{r}:{sum(1 for i in ids if i % 3 == r)}" for r in range(3)), run
    # Each multi-statement query: the INSERTs and UPDATE (one result, no rows), then the SELECT's rows.
    assert run["unsafe_results"] == " ; ".join(f"UPDATE: SELECT:{a}=u{a}+,{b}=u{b}+" for a, b in unsafe), run
    assert_placed(nc, keys, {**{k: f"w{k}!" for k in writes}, **{k: f"c{k}" for k in commit},
                             **{k: f"u{k}+" for pair in unsafe for k in pair}})


def test_postgres_js_pipelined_transaction(node, nc, kv):
    keys = Keys(nc, 40_000)
    rounds = [{"keys": keys.pair(), "rollback": i % 2 == 1} for i in range(6)]
    # The failing round: a write on shard 0, then a duplicate key on shard 1 (a row of the first round).
    failed = {"keys": keys.pair(), "duplicate": rounds[0]["keys"][1]}
    run = run_node(node, nc, "pjs_pipeline", {"rounds": rounds, "failed": failed})
    assert (run["rounds"], run["rolled_back"], run.all("users")) == ("6", "3", [str(USERS)] * 3), run
    assert (run["failed_pipeline"], run["failed_error"], run["failed_after"], run["failed_then"]) == (
        "ok,23505,25P02,25P02,25P02", "23505", "0", str(USERS)), run
    assert_placed(nc, keys, {k: f"p{k}." for r in rounds if not r["rollback"] for k in r["keys"]})


# ---------------------------------------------------------------------------------------------
# 6. A shape shardgate refuses
# ---------------------------------------------------------------------------------------------


@pytest.mark.requires_shardgate
def test_unsupported_shape_gets_0A000_and_connections_stay_usable(node, nc):
    ids = ids_on_each_shard(nc)
    run = run_node(node, nc, "unsupported", {"ids": ids})
    count = str(USERS)
    assert "window functions" in run["message_of_0A000"], run
    for how in ("pg_simple", "pg_extended", "pg_named", "pjs_prepared", "pjs_unsafe"):
        assert (run[how], run[f"{how}_after"]) == ("0A000", count), (how, run)
    # In a transaction block the refusal aborts the transaction, as any error does in Postgres.
    assert (run["pg_in_txn"], run["pg_in_txn_next"], run["pg_in_txn_end"], run["pg_at_end"]) == (
        "0A000", "25P02", "ROLLBACK", count), run
    assert run["pjs_batch"] == f"ok:{count},0A000,ok:user1", run
    assert (run["pjs_in_txn"], run["pjs_at_end"]) == ("0A000", count), run
    # A multi-statement simple query over two shards, or with a statement over every shard.
    assert (run["pjs_multi_statement_two_shards"], run["pjs_multi_statement_fan_out"],
            run["pjs_multi_statement_after"]) == ("0A000", "0A000", f"user{ids[0]},1"), run


# ---------------------------------------------------------------------------------------------
# 7. The settings each client keeps over the pool
# ---------------------------------------------------------------------------------------------


def test_session_settings_follow_each_client(node, nc):
    rounds = 8
    # Postgres itself says how each zone prints the instant the program reads.
    with direct(nc.shards[0].primary) as conn:
        default_zone = conn.execute("SHOW TimeZone").fetchone()[0]

        def ts(zone: str) -> str:
            conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
            return conn.execute("SELECT '2024-01-01 00:00:00+00'::timestamptz::text").fetchone()[0]

        seen = {
            "pg0": ("4321s", "node_pg0", "Asia/Kolkata"),
            "pg1": ("1234s", "node_pg1", "America/St_Johns"),
            "pg2": ("0", "", default_zone),
            "pg3": ("777s", "node_pg3", "Pacific/Chatham"),
            "pj0": ("2222s", "node_pj0", "Europe/Berlin"),
            "pj1": ("3333s", "node_pj1", "Australia/Adelaide"),
        }
        want = [f"{who}:{st}/{app}/{zone}/{ts(zone)}*{rounds * 4}" for who, (st, app, zone) in seen.items()]
    run = run_node(node, nc, "settings", {"rounds": rounds, "users": USERS})
    assert run.all("seen") == want, run
    assert (run["set_local_inside"], run["set_local_after"], run["pj_rollback"]) == (
        "5s", "4321s", "rolled back on purpose"), run
    assert (run["timeout_own"], run["timeout_other"], run["timeout_after"]) == ("57014", "ok", "200ms"), run



# A SET in a transaction that shardgate moved to another shard, or that spans both, must not survive its
# ROLLBACK (it did: the session kept application_name and, spanning both shards, statement_timeout too), and
# the client must get the restored application_name in a ParameterStatus, as Postgres sends it.
@pytest.mark.parametrize("shape", [
    "stays_on_shard0",
    "moves_to_shard1",
    "spans_both_keyed",
    "spans_both_fan_out",
    # postgres.js sends its ROLLBACK as Parse/Describe/Bind/Execute/Sync, which shardgate gets right.
    "pjs_spans_both_fan_out",
])
def test_set_in_rolled_back_transaction_is_undone(node, nc, shape):
    run = run_node(node, nc, "settings_rollback", {"shape": shape, "ids": ids_on_each_shard(nc)})
    rolled_back = "rolled back on purpose" if shape.startswith("pjs") else "ROLLBACK"
    assert (run["rollback"], run["after"], run["reported"]) == (rolled_back, "node_rb/0,node_rb/0", "node_rb"), run


def test_set_in_rolled_back_transaction_is_undone_raw_wire(nc):
    """The same without a driver: simple-protocol statements, and what comes back to the client."""
    id0, id1 = ids_on_each_shard(nc)
    with pgwire.PgWire(pgcluster.HOST, nc.shardgate.port) as w:
        w.login(user="postgres", password="postgres", database="app", params={"application_name": "raw_rb"})
        for sql in ("BEGIN", "SET application_name = 'x'", "SET statement_timeout = '9s'",
                    "SELECT count(*) FROM users"):
            assert not pgwire.errors(w.simple(sql)), sql
        msgs = w.simple("ROLLBACK")
        assert [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"] == ["ROLLBACK"]
        # Postgres reports the restored application_name before its ReadyForQuery.
        reported = [pgwire.parse_parameter_status(m) for m in msgs if m.type == b"S"]
        after = [pgwire.data_rows(w.simple("SELECT current_setting('application_name'), current_setting("
                                           f"'statement_timeout') FROM users WHERE id = {k}")) for k in (id0, id1)]
    assert (reported, after) == ([("application_name", "raw_rb")], [[["raw_rb", "0"]]] * 2)
