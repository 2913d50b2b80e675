"""pgbench through shardgate: tables initialised directly on shard 0, then the select-only and
tpcb-like scripts in each query mode (simple, extended, prepared) with 4 clients on 2 threads; every
run must finish with no failed transactions, and the tpcb-like runs must leave consistent balances."""

import os
import subprocess

import pytest

import pgcluster
import pgwire
from txn_helpers import check_pgbench

PGBENCH = str(pgcluster.pg_bindir() / "pgbench")
HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


def pgbench(port: int, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": "postgres", "PGCONNECT_TIMEOUT": "10",
           "LC_ALL": "C.UTF-8"}
    cmd = [PGBENCH, "-h", HOST, "-p", str(port), "-U", "postgres", *args, "app"]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def pgbench_tables(cluster):
    """pgbench -i -s 1 directly on shard 0's primary; the tables are dropped afterwards."""
    primary = cluster.shards[0].primary
    r = pgbench(primary.port, "-i", "-s", "1", "-q")
    assert r.returncode == 0, r.stderr
    yield primary
    pgbench(primary.port, "-i", "-I", "d")


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_select_only(cluster, pgbench_tables, mode):
    r = pgbench(cluster.shardgate.port, "-S", "-M", mode, "-T", "3", "-c", "4", "-j", "2")
    check_pgbench(r)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_tpcb_like(cluster, pgbench_tables, mode):
    r = pgbench(cluster.shardgate.port, "-M", mode, "-T", "3", "-c", "4", "-j", "2")
    processed = check_pgbench(r)
    # Checked directly on the shard: every committed transaction moved the same delta through one
    # account, teller and branch and wrote one history row (pgbench truncates history before each run).
    primary = pgbench_tables
    sums = primary.psql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers),"
        " (SELECT sum(bbalance) FROM pgbench_branches)"
    ).split("|")
    assert len(set(sums)) == 1, f"balances disagree (accounts|tellers|branches): {sums}"
    history = int(primary.psql("SELECT count(*) FROM pgbench_history"))
    assert history == processed, f"{processed} transactions reported, {history} history rows on the shard"
