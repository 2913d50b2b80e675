"""Helpers for test_transaction_pooling.py: raw-protocol shortcuts, background "churn" clients that
keep a small pool busy while checking their own answers, pgbench and process-memory readers; and
the two-shard `orders` cluster of the deadlock tests.

Everything here reads with timeouts (pgwire), so a hung shardgate fails a test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import threading
import time
import urllib.request

import conftest
import pgcluster
import pgwire

HOST = "127.0.0.1"
PGBENCH = str(pgcluster.pg_bindir() / "pgbench")


# ---------------------------------------------------------------------------------------------
# Raw protocol shortcuts (pgwire.PgWire underneath)
# ---------------------------------------------------------------------------------------------


def connect(port: int, params: dict[str, str] | None = None, timeout: float = 10.0) -> pgwire.PgWire:
    """A logged-in raw client as postgres/postgres on database app."""
    w = pgwire.PgWire(HOST, port, timeout=timeout)
    w.login("postgres", "postgres", "app", params=params)
    return w


def raw_rows(msgs: list[pgwire.Message]) -> list[list[bytes | None]]:
    """DataRows as raw bytes (no decoding: a client_encoding other than UTF8 is being tested)."""
    return [pgwire.parse_data_row(m) for m in msgs if m.type == b"D"]


def error_codes(msgs: list[pgwire.Message]) -> list[str]:
    return [e.code for e in pgwire.errors(msgs)]


def describe_reply(msgs: list[pgwire.Message]) -> str:
    """Short text for assertion messages: message types and any errors."""
    errs = "; ".join(str(e) for e in pgwire.errors(msgs))
    return f"{pgwire.types(msgs)!r}" + (f" errors: {errs}" if errs else "")


def ok(w: pgwire.PgWire, sql: str, timeout: float | None = None) -> list[list[str | None]]:
    """Runs a simple query that must succeed; its rows decoded."""
    msgs = w.simple(sql, timeout)
    assert not pgwire.errors(msgs), f"{sql!r} failed: {describe_reply(msgs)}"
    return pgwire.data_rows(msgs)


def extended(w: pgwire.PgWire, sql: str, params: tuple = (), timeout: float | None = None) -> list[pgwire.Message]:
    """Unnamed Parse/Bind/Execute/Sync (what drivers do for a parameterised query)."""
    w.send(pgwire.parse("", sql) + pgwire.bind("", "", params) + pgwire.execute() + pgwire.sync())
    return w.recv_until(b"Z", timeout)


def prepare(w: pgwire.PgWire, name: str, sql: str, param_oids: tuple[int, ...] = ()) -> list[pgwire.Message]:
    """Parse of a named statement, then Sync."""
    w.send(pgwire.parse(name, sql, param_oids) + pgwire.sync())
    return w.recv_until(b"Z")


def exec_prepared(w: pgwire.PgWire, name: str, params: tuple = ()) -> list[pgwire.Message]:
    """Bind (unnamed portal) of a named statement, Execute, Sync."""
    w.send(pgwire.bind("", name, params) + pgwire.execute() + pgwire.sync())
    return w.recv_until(b"Z")


def after_read_error_transcript(port: int) -> list[str]:
    """A batch fails; the client reads the error (it sent a Flush) and, before its Sync, sends a
    named Parse, a Close of a statement it has and a Bind of that one. What it sees, step by step:
    Postgres skips all three and answers only the Sync, so "kept" survives and "late" never exists.
    Run against a proxy and against Postgres directly; the transcripts must be equal."""
    with connect(port) as w:
        seen = []
        assert not pgwire.errors(prepare(w, "kept", "SELECT 7"))
        w.send(pgwire.parse("", "SELECT 1/0") + pgwire.bind("", "") + pgwire.execute() + pgwire.flush())
        msgs = w.recv_until(b"E")
        seen.append(pgwire.types(msgs) + " " + ",".join(error_codes(msgs)))
        w.send(pgwire.parse("late", "SELECT 8") + pgwire.close("S", "kept") + pgwire.bind("", "kept")
               + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert msgs[-1].type == b"Z", describe_reply(msgs)
        seen.append(pgwire.types(msgs) + " " + msgs[-1].payload.decode())
        seen.append(",".join(error_codes(exec_prepared(w, "late"))))
        msgs = exec_prepared(w, "kept")
        seen.append(str(pgwire.data_rows(msgs)) + ",".join(error_codes(msgs)))
        return seen


def describe_statement(w: pgwire.PgWire, name: str) -> list[pgwire.Message]:
    w.send(pgwire.describe("S", name) + pgwire.sync())
    return w.recv_until(b"Z")


def parameter_oids(msgs: list[pgwire.Message]) -> list[int]:
    """The type oids of the ParameterDescription ('t') in a reply."""
    for m in msgs:
        if m.type == b"t":
            (n,) = struct.unpack("!h", m.payload[:2])
            return list(struct.unpack(f"!{n}I", m.payload[2 : 2 + 4 * n]))
    raise AssertionError(f"no ParameterDescription in {describe_reply(msgs)}")


def row_columns(msgs: list[pgwire.Message]) -> list[tuple[str, int]]:
    """(name, type oid) of each column of the RowDescription ('T') in a reply."""
    for m in msgs:
        if m.type == b"T":
            return [(c["name"], c["type_oid"]) for c in pgwire.parse_row_description(m)]
    raise AssertionError(f"no RowDescription in {describe_reply(msgs)}")


# ---------------------------------------------------------------------------------------------
# Churn: clients that keep the pool busy and check that every answer is their own
# ---------------------------------------------------------------------------------------------

# What a session's settings look like from inside: every setting the transaction-pooling tests
# change, plus values whose text depends on them. The last column is the backend pid (not compared).
PROBE_SQL = (
    "SELECT '2024-03-05 12:00:00+00'::timestamptz::text, '2024-03-05'::date::text,"
    " '1 day 02:03:04'::interval::text, (1/3::float8)::text,"
    " current_setting('TimeZone'), current_setting('DateStyle'), current_setting('IntervalStyle'),"
    " current_setting('application_name'), current_setting('search_path'),"
    " current_setting('extra_float_digits'), current_setting('statement_timeout'),"
    " current_setting('lock_timeout'), current_setting('standard_conforming_strings'),"
    " current_setting('client_encoding'), pg_sleep(0.002)::text, pg_backend_pid()"
)
PROBE_COLUMNS = ["timestamptz text", "date text", "interval text", "float8 text", "TimeZone", "DateStyle",
                 "IntervalStyle", "application_name", "search_path", "extra_float_digits", "statement_timeout",
                 "lock_timeout", "standard_conforming_strings", "client_encoding", "pg_sleep"]

# (label, startup parameters, SET statements run after login). Each sees the world differently,
# so an answer computed under another session's settings shows up as a mismatch. They change only
# settings Postgres reports (ParameterStatus), which never pin a client to its connection.
CHURN_PROFILES = [
    ("default", {}, []),
    ("tokyo", {"options": "-c TimeZone=Asia/Tokyo -c DateStyle=SQL,DMY"}, []),
    ("newyork", {}, ["SET TimeZone = 'America/New_York'", "SET DateStyle = 'German'",
                     "SET IntervalStyle = 'sql_standard'"]),
    ("adelaide", {"TimeZone": "Australia/Adelaide", "application_name": "churn_adelaide"},
     ["SET DateStyle = 'Postgres, MDY'", "SET IntervalStyle = 'postgres_verbose'"]),
]


def reference_row(server_port: int, params: dict[str, str], sets: list[str], sql: str = PROBE_SQL) -> list:
    """What plain Postgres answers sql with, for a session with these startup parameters and SETs
    (the pid column dropped)."""
    with connect(server_port, params) as w:
        for s in sets:
            ok(w, s)
        msgs = w.simple(sql)
        assert not pgwire.errors(msgs), f"reference {sql!r} failed: {describe_reply(msgs)}"
        return raw_rows(msgs)[0][:-1]


class Churner(threading.Thread):
    """A client that runs `sql` (whose last column is pg_backend_pid()) over and over, in autocommit,
    until stop(); every answer must equal `expected` (the pid aside). Mismatches and failures are
    collected, not raised, so the test can report them all."""

    def __init__(self, port: int, label: str, params: dict[str, str], sets: list[str], expected: list,
                 sql: str = PROBE_SQL, extended_every: int = 3):
        super().__init__(name=f"churn-{label}", daemon=True)
        self.port = port
        self.label = label
        self.params = params
        self.sets = sets
        self.expected = expected
        self.sql = sql
        self.extended_every = extended_every
        self.iterations = 0
        self.pids: set[int] = set()
        self.problems: list[str] = []
        self.logged_in = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            with connect(self.port, self.params) as w:
                for s in self.sets:
                    ok(w, s)
                self.logged_in.set()
                while not self._halt.is_set():
                    # Both protocols: a sync problem could hide in either path.
                    if self.extended_every and self.iterations % self.extended_every == 0:
                        msgs = extended(w, self.sql)
                    else:
                        msgs = w.simple(self.sql)
                    self.iterations += 1
                    if pgwire.errors(msgs):
                        self.problems.append(f"{self.label} #{self.iterations}: {describe_reply(msgs)}")
                        continue
                    row = raw_rows(msgs)[0]
                    self.pids.add(int(row[-1]))
                    if row[:-1] != self.expected:
                        names = PROBE_COLUMNS if self.sql == PROBE_SQL else [str(i) for i in range(len(row))]
                        diff = ", ".join(f"{names[i]}: got {g!r}, expected {e!r}"
                                         for i, (g, e) in enumerate(zip(row[:-1], self.expected)) if g != e)
                        self.problems.append(f"{self.label} #{self.iterations} (backend {int(row[-1])}): {diff}")
                    if len(self.problems) >= 5:
                        break
                w.send(pgwire.terminate())
        except Exception as e:  # noqa: BLE001 - reported by check()
            self.problems.append(f"{self.label}: {type(e).__name__}: {e}")
        finally:
            self.logged_in.set()

    def stop(self) -> None:
        self._halt.set()


class ChurnGroup:
    """The CHURN_PROFILES clients against `port`, their expectations computed on plain Postgres
    (server_port). Use as a context manager; check() after the block asserts all went well."""

    def __init__(self, port: int, server_port: int, profiles=None):
        profiles = CHURN_PROFILES if profiles is None else profiles
        self.churners = []
        seen = []
        for label, params, sets in profiles:
            expected = reference_row(server_port, params, sets)
            assert expected not in seen, f"churn profile {label} looks like another one: {expected}"
            seen.append(expected)
            self.churners.append(Churner(port, label, params, sets, expected))

    def __enter__(self) -> "ChurnGroup":
        for c in self.churners:
            c.start()
        for c in self.churners:
            assert c.logged_in.wait(15), f"churn client {c.label} did not log in"
        # The churn is really going before the test starts (or a client is stuck, which check() reports).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(c.iterations < 2 and c.is_alive() for c in self.churners):
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        for c in self.churners:
            c.stop()
        for c in self.churners:
            c.join(20)

    def iterations(self) -> int:
        return sum(c.iterations for c in self.churners)

    def check(self, min_iterations: int = 3) -> None:
        stuck = [c.label for c in self.churners if c.is_alive()]
        assert not stuck, f"churn clients still running (hung?): {stuck}"
        problems = [p for c in self.churners for p in c.problems]
        assert not problems, "churn clients saw wrong answers or errors:\n" + "\n".join(problems[:30])
        for c in self.churners:
            assert c.iterations >= min_iterations, f"churn client {c.label} ran only {c.iterations} statements"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Polls predicate() until it returns something truthy (returned); AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def pgbench(port: int, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": "postgres", "PGCONNECT_TIMEOUT": "10",
           "LC_ALL": "C.UTF-8", "PGPASSFILE": "/nonexistent/pgpass"}
    cmd = [PGBENCH, "-h", HOST, "-p", str(port), "-U", "postgres", *args, "app"]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)


def check_pgbench(r: subprocess.CompletedProcess, context: str = "") -> int:
    """Asserts a clean pgbench run; returns the number of transactions processed. `context` (a
    log tail, say) is added to the failure report."""
    report = f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr[-4000:]}\n{context}"
    assert r.returncode == 0, report
    assert "number of failed transactions: 0" in r.stdout, report
    m = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    assert m, report
    processed = int(m.group(1))
    assert processed > 0, report
    # pgbench carries on after some client errors and only reports them on stderr.
    assert "error" not in r.stderr.lower(), report
    return processed


# ---------------------------------------------------------------------------------------------
# Two shards with a sharded `orders` table (test_pool_deadlock.py, test_lock_deadlock.py)
# ---------------------------------------------------------------------------------------------

SHARDED_ORDERS = ('[[databases.sharded_tables]]\nname = "orders"\ncolumn = "user_id"\n'
                  'type = "bigint"\nstrategy = "hash"\n')


def orders_cluster(make_cluster, **general):
    """A transaction-pooling cluster of two shards (shardgate's [general] from `general`) with
    orders(user_id bigint, note text) hash-sharded on user_id, one row with note 'x' per key 1..40.
    Returns the cluster and each shard's keys ({0: [...], 1: [...]})."""
    c = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction", general=general,
                     database_options={"default_shard": 0}, extra_toml=SHARDED_ORDERS)
    for s in c.shards:
        s.primary.psql("CREATE TABLE orders (user_id bigint, note text)")
    shard_of = conftest.hash_shards(c.shards[0].primary, range(1, 41))
    keys = {0: [k for k, s in shard_of.items() if s == 0], 1: [k for k, s in shard_of.items() if s == 1]}
    for s, ks in keys.items():
        c.shards[s].primary.psql("INSERT INTO orders VALUES " + ", ".join(f"({k}, 'x')" for k in ks))
    return c, keys


def note_of(c, shard: int, key: int) -> str:
    return c.shards[shard].primary.psql(f"SELECT note FROM orders WHERE user_id = {key}")


def open_transactions(c) -> int:
    """Sessions idle in a transaction on the shards (left open by a test: none should be)."""
    return sum(int(s.primary.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                                  "AND state LIKE 'idle in transaction%'")) for s in c.shards)


def survivor_goes_on(victim: pgwire.PgWire, survivor: pgwire.PgWire) -> None:
    """A deadlock's victim got its error: its transaction failed, and what it held on every shard is
    free at once, as a failed Postgres transaction's locks are. The survivor's statement, which
    waited for it, completes in its open transaction before the victim rolls back; then the victim
    rolls back and the survivor commits."""
    msgs = survivor.recv_until(b"Z", timeout=20)
    assert not pgwire.errors(msgs) and msgs[-1].payload == b"T", describe_reply(msgs)
    assert ok(victim, "ROLLBACK") == []
    ok(survivor, "COMMIT")


def batch_winner(replies: dict[str, list[pgwire.Message]]) -> str:
    """Of two batches caught in a deadlock, each an implicit transaction: the one that committed (the
    other got 40P01 and rolled back as a whole; both ended their transactions)."""
    codes = {who: error_codes(msgs) for who, msgs in replies.items()}
    assert sorted(codes.values()) == [[], ["40P01"]], {w: describe_reply(m) for w, m in replies.items()}
    assert all(m[-1].payload == b"I" for m in replies.values())
    return next(who for who, cs in codes.items() if not cs)


def deadlocks_counted(c, kind: str) -> float:
    """shardgate_deadlocks_total{kind=...} ("pool" or "lock") from shardgate's /metrics."""
    text = urllib.request.urlopen(f"http://{HOST}:{c.shardgate.metrics_port}/metrics", timeout=5).read().decode()
    m = re.search(r'^shardgate_deadlocks_total\{kind="%s"\} (\S+)$' % kind, text, re.M)
    assert m, f"no shardgate_deadlocks_total{{kind={kind!r}}} in /metrics"
    return float(m.group(1))
