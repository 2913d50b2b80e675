"""Prometheus metrics and the slow-query log, checked with a real Prometheus and real traffic.

One 2-shard cluster (shard 0 with a replica) with shardgate serving /metrics on a free port, and a
real Prometheus (Debian's `prometheus`, started here on loopback with its own temporary storage,
scraping shardgate every second). Traffic goes through the raw wire client (pgwire), so every
message shardgate receives is known: the tests check exact counter deltas, through Prometheus's
HTTP API and through /metrics itself.

Needs shardgate itself: skipped with SHARDGATE_TARGET=direct; skipped without /usr/bin/prometheus.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

import conftest
import pgcluster
import pgwire
from txn_helpers import connect, error_codes, extended, ok

pytestmark = pytest.mark.requires_shardgate

HOST = "127.0.0.1"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SLOW_QUERY_MS = 300

SHARDING_TOML = """\
  [[databases.sharded_tables]]
  name = "accounts"
  column = "id"
  type = "bigint"
  strategy = "hash"
"""

SHARD_DDL = "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL);"

EVERY_METRIC = [
    "shardgate_client_connections",
    "shardgate_server_connections",
    "shardgate_queries_total",
    "shardgate_transactions_total",
    "shardgate_errors_total",
    "shardgate_query_duration_seconds",
    "shardgate_shard_query_duration_seconds",
    "shardgate_pool_wait_seconds",
    "shardgate_bytes_received_total",
    "shardgate_bytes_sent_total",
    "shardgate_analysis_cache_hits_total",
    "shardgate_analysis_cache_misses_total",
    "shardgate_server_up",
    "shardgate_table_rows",
    "shardgate_table_bytes",
    "shardgate_deadlocks_total",
]
HISTOGRAMS = [
    "shardgate_query_duration_seconds",
    "shardgate_shard_query_duration_seconds",
    "shardgate_pool_wait_seconds",
]


# ---------------------------------------------------------------------------------------------
# /metrics and Prometheus helpers
# ---------------------------------------------------------------------------------------------

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """shardgate's /metrics as (name, labels, value) samples."""
    samples = []
    for line in http_get(f"http://{HOST}:{port}/metrics").splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"unparseable /metrics line: {line!r}"
        labels = dict(LABEL_RE.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def total(samples, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items()))


def wait_for(what: str, check, timeout: float = 20.0, interval: float = 0.2):
    """Polls check() until it returns a truthy value; fails with `what` (and the last value) after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class Prometheus:
    """A real Prometheus on loopback scraping one target every second, with throw-away storage."""

    def __init__(self, base_dir: str, target_port: int):
        self.dir = base_dir
        self.port = pgcluster.free_port()
        self.config = os.path.join(base_dir, "prometheus.yml")
        self.logfile = os.path.join(base_dir, "prometheus.log")
        with open(self.config, "w") as f:
            f.write(
                "global:\n"
                "  scrape_interval: 1s\n"
                "  evaluation_interval: 1s\n"
                "scrape_configs:\n"
                "  - job_name: shardgate\n"
                "    static_configs:\n"
                f"      - targets: ['{HOST}:{target_port}']\n"
            )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}",
                 f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                 f"--web.listen-address={HOST}:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; see {self.logfile}")
            try:
                if "Ready" in http_get(f"http://{HOST}:{self.port}/-/ready", timeout=1):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s; see {self.logfile}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"http://{HOST}:{self.port}/api/v1/{path}?{query}"))
        assert body["status"] == "success", body
        return body["data"]

    def instant(self, expr: str) -> float | None:
        """The value of a scalar-like query now (None while there is no sample)."""
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def last_scrape(self) -> float | None:
        """When the shardgate target was last scraped (Unix seconds), or None."""
        for target in self.api("targets")["activeTargets"]:
            if target["labels"].get("job") == "shardgate" and target.get("lastScrape"):
                stamp = target["lastScrape"]
                if stamp.startswith("0001-"):
                    return None
                # RFC 3339 with nanoseconds: keep microseconds for Python.
                m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
                assert m, stamp
                frac = (m.group(2) or ".0")[:7]
                tz = "+00:00" if m.group(3) == "Z" else m.group(3)
                from datetime import datetime
                return datetime.fromisoformat(m.group(1) + frac + tz).timestamp()
        return None


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mc(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    c = conftest._new_cluster(
        cluster_root / "metrics", shardgate_bin, num_shards=2, replicas_per_shard=[1, 0],
        pool_mode="transaction",
        general={"workers": 2, "slow_query_ms": SLOW_QUERY_MS, "slow_query_max_chars": 40,
                 "server_check_interval_ms": 300, "table_stats_interval_ms": 300},
        extra_toml=SHARDING_TOML)
    try:
        for shard in c.shards:
            shard.primary.psql(SHARD_DDL)
        yield c
    finally:
        problems = conftest._finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def prometheus(mc):
    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    base = tempfile.mkdtemp(prefix="prom-", dir=str(mc.base_dir))
    p = Prometheus(base, mc.shardgate.metrics_port)
    try:
        p.start()
        yield p
    finally:
        p.stop()


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_prometheus_sees_the_target_and_exact_query_counts(mc, prometheus):
    wait_for("Prometheus to scrape shardgate successfully", lambda: any(
        t["labels"].get("job") == "shardgate" and t["health"] == "up"
        for t in prometheus.api("targets")["activeTargets"]))
    assert prometheus.instant('up{job="shardgate"}') == 1.0

    # Quiet: nothing runs through shardgate now. Take the count Prometheus has after a fresh scrape.
    w = connect(mc.shardgate.port)
    try:
        mark = time.time()
        wait_for("a scrape after the login", lambda: (prometheus.last_scrape() or 0) > mark + 0.1)
        before = prometheus.instant("sum(shardgate_queries_total)") or 0.0
        before_txn = prometheus.instant("sum(shardgate_transactions_total)") or 0.0

        n_simple, n_extended = 25, 15
        for i in range(n_simple):
            assert ok(w, f"SELECT {i}") == [[str(i)]]
        for i in range(n_extended):
            msgs = extended(w, "SELECT $1::int", (str(i),))
            assert not error_codes(msgs), msgs
        sent = n_simple + n_extended

        def moved():
            now = prometheus.instant("sum(shardgate_queries_total)")
            return now if now is not None and now >= before + sent else None

        after = wait_for(f"shardgate_queries_total to move by {sent} in Prometheus", moved)
        assert after - before == sent, f"queries counted {after - before}, sent {sent}"
        # Autocommit: each statement is its own transaction.
        wait_for("transactions to move", lambda: (prometheus.instant("sum(shardgate_transactions_total)")
                                                  or 0) >= before_txn + sent)
        assert prometheus.instant("sum(shardgate_transactions_total)") - before_txn == sent
        # SELECT n needs no particular shard: route "any", on the shard the session sat on.
        assert prometheus.instant('sum(shardgate_queries_total{route="any",database="app"})') >= sent
    finally:
        w.close()


def test_metrics_text_has_every_metric_and_histogram_series(mc):
    w = connect(mc.shardgate.port)
    try:
        ok(w, "SELECT 1")
    finally:
        w.close()
    def missing(samples):
        # (Error counters appear with the first error: test_errors_are_counted_by_sqlstate_class.)
        return [name for name in EVERY_METRIC if name != "shardgate_errors_total"
                and not any(n == name or n.startswith(name + "_") for n, _, _ in samples)]

    wait_for("every metric family", lambda: not missing(scrape(mc.shardgate.metrics_port)) or None,
             timeout=15)
    samples = scrape(mc.shardgate.metrics_port)
    assert not missing(samples), f"missing: {missing(samples)}"
    text = http_get(f"http://{HOST}:{mc.shardgate.metrics_port}/metrics")
    for name in EVERY_METRIC:
        assert f"# TYPE {name} " in text, f"{name} has no TYPE line"
        assert f"# HELP {name} " in text, f"{name} has no HELP line"
    for name in HISTOGRAMS:
        assert f"# TYPE {name} histogram" in text
        buckets = [(l, v) for n, l, v in samples if n == name + "_bucket"]
        assert buckets, f"{name} has no buckets"
        assert any(l.get("le") == "+Inf" for l, _ in buckets), f"{name} has no +Inf bucket"
        assert any(n == name + "_sum" for n, _, _ in samples)
        assert any(n == name + "_count" for n, _, _ in samples)
    # The +Inf bucket is the count; buckets are cumulative.
    inf = total(samples, "shardgate_query_duration_seconds_bucket", le="+Inf")
    assert inf == total(samples, "shardgate_query_duration_seconds_count") > 0
    by_le = sorted((float(l["le"]), v) for n, l, v in samples
                   if n == "shardgate_query_duration_seconds_bucket")
    assert [v for _, v in by_le] == sorted(v for _, v in by_le)
    # Per shard: both shards have their series; roles and states of pools are labelled.
    shards = {l["shard"] for n, l, _ in samples if n == "shardgate_shard_query_duration_seconds_count"}
    assert shards <= {"shard0", "shard1"} and shards, shards
    states = {l["state"] for n, l, _ in samples if n == "shardgate_server_connections"}
    assert states == {"active", "idle", "connecting"}
    assert {l["state"] for n, l, _ in samples if n == "shardgate_client_connections"} >= {
        "active", "idle", "waiting"}
    assert total(samples, "shardgate_bytes_received_total") > 0
    assert total(samples, "shardgate_bytes_sent_total") > 0
    assert total(samples, "shardgate_analysis_cache_hits_total") + total(
        samples, "shardgate_analysis_cache_misses_total") > 0


def test_errors_are_counted_by_sqlstate_class(mc):
    before = scrape(mc.shardgate.metrics_port)
    w = connect(mc.shardgate.port)
    try:
        # From a shard: undefined table (42P01) and a syntax error (42601).
        assert error_codes(w.simple("SELECT * FROM no_such_table")) == ["42P01"]
        assert error_codes(w.simple("SELEC 1")) == ["42601"]
        # From a shard: division by zero (22012).
        assert error_codes(w.simple("SELECT 1/0")) == ["22012"]
        # From shardgate itself: no shard for a NULL sharding key (23502, as Postgres would say).
        assert error_codes(w.simple("INSERT INTO accounts (id, owner) VALUES (NULL, 'x')")) == ["23502"]
    finally:
        w.close()

    def delta(error_class):
        return (total(scrape(mc.shardgate.metrics_port), "shardgate_errors_total", sqlstate_class=error_class)
                - total(before, "shardgate_errors_total", sqlstate_class=error_class))

    assert delta("42") == 2
    assert delta("22") == 1
    assert delta("23") == 1


def test_table_rows_and_bytes_per_shard(mc):
    w = connect(mc.shardgate.port)
    try:
        for i in range(1, 61):
            ok(w, f"INSERT INTO accounts (id, owner) VALUES ({i}, 'owner{i}')")
    finally:
        w.close()
    expected = {f"shard{i}": int(mc.shards[i].primary.psql("SELECT count(*) FROM accounts")) for i in range(2)}
    assert sum(expected.values()) == 60 and all(expected.values()), expected

    def rows_now():
        s = scrape(mc.shardgate.metrics_port)
        got = {sh: total(s, "shardgate_table_rows", database="app", table="accounts", shard=sh) for sh in expected}
        return (s, got) if got == {k: float(v) for k, v in expected.items()} else None

    samples, _ = wait_for(f"shardgate_table_rows to show {expected}", rows_now)
    for shard in expected:
        assert total(samples, "shardgate_table_bytes", table="accounts", shard=shard) >= 8192


def test_server_up_for_every_server(mc):
    def all_up():
        s = scrape(mc.shardgate.metrics_port)
        up = {(l["shard"], l["role"]): v for n, l, v in s if n == "shardgate_server_up"}
        return up if len(up) == 3 else None

    up = wait_for("shardgate_server_up for the three servers", all_up)
    assert up == {("shard0", "primary"): 1.0, ("shard0", "replica0"): 1.0, ("shard1", "primary"): 1.0}


def test_client_connection_states(mc):
    idle = [connect(mc.shardgate.port) for _ in range(3)]
    busy = connect(mc.shardgate.port)
    try:
        busy.send(pgwire.query("SELECT pg_sleep(2)"))

        def states():
            s = scrape(mc.shardgate.metrics_port)
            got = {l["state"]: v for n, l, v in s if n == "shardgate_client_connections"}
            return got if got.get("idle", 0) >= 3 and got.get("active", 0) >= 1 else None

        wait_for("3 idle clients and 1 active", states, timeout=5)
        busy.recv_until(b"Z", timeout=10)
    finally:
        for w in idle + [busy]:
            w.close()


def test_slow_query_log(mc):
    sg = mc.shardgate
    start = len(sg.log_text())
    w = connect(sg.port)
    try:
        ok(w, "SELECT 1 AS fast")
        ok(w, "SELECT pg_sleep(0.45) AS \"slow\nquery\", 'a long tail of text to be cut off'")
        msgs = extended(w, "SELECT pg_sleep($1::float8 / 1000) AS slow_extended", ("450",))
        assert not error_codes(msgs)
    finally:
        w.close()
    m = sg.wait_for_log(r"event=slow_query [^\n]*pg_sleep\(0", start=start)
    line = sg.log_text()[start:][m.start():].splitlines()[0]
    duration = float(re.search(r"duration_ms=([\d.]+)", line).group(1))
    assert duration >= SLOW_QUERY_MS, line
    assert 'db="app"' in line and 'user="postgres"' in line, line
    assert re.search(r"shard=shard[01] ", line), line
    # One line, cut at slow_query_max_chars (40) with the newline escaped.
    assert 'query="SELECT pg_sleep(0.45) AS \\"slow\\nquery\\", \'..."' in line, line
    m2 = sg.wait_for_log(r"event=slow_query [^\n]*pg_sleep\(\$1", start=start)
    line2 = sg.log_text()[start:][m2.start():].splitlines()[0]
    # Parameters are not logged unless log_parameters = true.
    assert "params=" not in line2 and "450" not in line2.split("query=")[1], line2
    assert not re.search(r"event=slow_query [^\n]*AS fast", sg.log_text()[start:])


def test_unrouted_database_counts_and_logged_parameters(make_cluster):
    # One shard without replicas: statements pass through unparsed (route "passthrough").
    c = make_cluster(num_shards=1, replicas_per_shard=0, pool_mode="session",
                     general={"slow_query_ms": 100, "log_parameters": True})
    sg = c.shardgate
    start = len(sg.log_text())
    before = scrape(sg.metrics_port)
    w = connect(sg.port)
    try:
        ok(w, "BEGIN")
        ok(w, "SELECT 1")
        ok(w, "COMMIT")
        msgs = extended(w, "SELECT pg_sleep($1::float8), $2::text AS tag", ("0.2", "it's"))
        assert not error_codes(msgs)
    finally:
        w.close()
    after = scrape(sg.metrics_port)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("shardgate_queries_total", database="app", route="passthrough", shard="shard0") == 4
    assert delta("shardgate_queries_total") == 4
    # BEGIN; SELECT; COMMIT is one transaction, the extended statement another.
    assert delta("shardgate_transactions_total", database="app", route="passthrough") == 2
    assert delta("shardgate_query_duration_seconds_count") == 4
    assert delta("shardgate_shard_query_duration_seconds_count", shard="shard0") == 4
    m = sg.wait_for_log(r"event=slow_query [^\n]*", start=start)
    line = m.group(0)
    assert 'query="SELECT pg_sleep($1::float8), $2::text AS tag"' in line, line
    assert "params=\"$1='0.2', $2='it's'\"" in line, line


def test_idle_connections_to_the_metrics_port_do_not_block_scrapes(mc):
    """Connections that send nothing (a port scanner, a half-open client) must not hold the
    endpoint's threads: with four of them open, a scrape answers at once, and each is dropped
    after a few seconds."""
    idle = [socket.create_connection((HOST, mc.shardgate.metrics_port), timeout=5) for _ in range(4)]
    try:
        started = time.monotonic()
        assert scrape(mc.shardgate.metrics_port), "the scrape returned no samples"
        assert time.monotonic() - started < 2.0
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b"", "an idle connection is closed after the request timeout"
    finally:
        for s in idle:
            s.close()
