"""`pgbench -i -s 10` and the pgbench scripts through shardgate on the demo cluster (conf/demo.toml), end to end.

The cluster is the one `make up` starts from conf/demo.toml (two shards, a streaming replica each, session
pooling, the pgbench tables hashed on aid / bid / tid / aid), on ports chosen at run time. pgbench creates
its tables, COPYs a million accounts, vacuums and adds primary keys, all through shardgate. Then each
shard's primary is asked directly whether it holds exactly the rows Postgres's own hash partitioning
(satisfies_hash_partition, MODULUS 2) gives it, and the tpcb-like and select-only scripts run through
shardgate with several clients and no failed transaction; TPC-B's balance invariants must hold after.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import psycopg
import pytest

import conftest
import pgcluster
import pgwire
from txn_helpers import check_pgbench

pytestmark = pytest.mark.requires_shardgate

DEMO_CONFIG = conftest.REPO_ROOT / "conf" / "demo.toml"
DEMO_SCHEMA = conftest.REPO_ROOT / "docker" / "initdb" / "02-schema.sql"
PGBENCH = str(pgcluster.pg_bindir() / "pgbench")
SCALE = 10
# pgbench -i: 100000 accounts, 1 branch and 10 tellers per unit of scale.
ACCOUNTS, BRANCHES, TELLERS = 100_000 * SCALE, SCALE, 10 * SCALE
# (table, key column, how many rows pgbench -i makes) for the tables demo.toml hash-shards.
PGBENCH_TABLES = (("pgbench_accounts", "aid", ACCOUNTS), ("pgbench_branches", "bid", BRANCHES),
                  ("pgbench_tellers", "tid", TELLERS), ("pgbench_history", "aid", 0))
RUN_ARGS = ("-c", "4", "-j", "2", "-T", "5")


def _demo_sharding() -> dict[str, dict]:
    """demo.toml's [[databases.sharded_tables]] by table name (the test's expectations follow them)."""
    cfg = tomllib.loads(DEMO_CONFIG.read_text())
    return {t["name"]: t for t in cfg["databases"][0].get("sharded_tables", [])}


@contextlib.contextmanager
def demo_cluster(base_dir: Path, shardgate_bin: str):
    """What `pgcluster.py up --config conf/demo.toml` (cmd_up) starts, on free ports and not detached:
    the config's topology and users, the demo schema on every primary, and shardgate on the config
    with only its port numbers rewritten."""
    template_text = DEMO_CONFIG.read_text()
    cfg = tomllib.loads(template_text)
    general, db = cfg.get("general", {}), cfg["databases"][0]
    shards = db["shards"]
    users = {u["name"]: dict(u) for u in pgcluster.DEFAULT_USERS}
    for u in cfg.get("users", []):
        users[u["name"]] = {"name": u["name"], "password": u.get("password"),
                            "auth_method": u.get("auth_method", "scram-sha-256")}
    with conftest.running_cluster(
            base_dir, shardgate_bin, num_shards=len(shards),
            replicas_per_shard=[len(s.get("replicas", [])) for s in shards], users=list(users.values()),
            database=shards[0]["primary"].get("database", db["name"]), with_shardgate=False,
            shard_names=[s.get("name", f"shard{i}") for i, s in enumerate(shards)]) as c:
        schema = DEMO_SCHEMA.read_text().replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")
        for shard in c.shards:
            shard.primary.psql(schema, dbname=db["name"])
        mapping = {int(general.get("port", 6432)): c.shardgate_port}
        if general.get("metrics_port"):
            mapping[int(general["metrics_port"])] = c.metrics_port
        for shard, sh in zip(c.shards, shards):
            mapping[int(sh["primary"].get("port", 5432))] = shard.primary.port
            for replica, rep in zip(shard.replicas, sh.get("replicas", [])):
                mapping[int(rep.get("port", 5432))] = replica.port
        config_text = pgcluster.rewrite_ports(template_text, mapping)
        c.write_config(config_text)
        check = subprocess.run([shardgate_bin, "--check-config", c.config_path], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=30)
        assert check.returncode == 0, f"--check-config {c.config_path}:\n{check.stderr}{check.stdout}"
        c.start_shardgate(config_text)
        yield c


@pytest.fixture(scope="module")
def demo(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with demo_cluster(cluster_root / "pgbench-demo", shardgate_bin) as c:
        yield c


@pytest.fixture(scope="module")
def initialized(demo):
    """pgbench -i -s 10 through shardgate (drop, create, COPY, vacuum, primary keys)."""
    started = time.monotonic()
    r = pgbench(demo, "-i", "-s", str(SCALE), timeout=300)
    report = _report(r, demo)
    assert r.returncode == 0, report
    # pgbench -i names each step it finished on stderr; all of them must have run.
    for step in ("dropping old tables", "creating tables", "generating data", "vacuuming",
                 "creating primary keys", "done in"):
        assert step in r.stderr, report
    print(f"pgbench -i -s {SCALE} through shardgate: {time.monotonic() - started:.1f}s")
    return demo


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(300):
        yield


def pgbench(c: pgcluster.Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": "postgres", "PGCONNECT_TIMEOUT": "10",
           "LC_ALL": "C.UTF-8"}
    cmd = [PGBENCH, "-h", "127.0.0.1", "-p", str(c.shardgate.port), "-U", "postgres", *args, "app"]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)


def _report(r: subprocess.CompletedProcess, c: pgcluster.Cluster) -> str:
    log = "\n".join(c.shardgate.log_text().splitlines()[-30:])
    return (f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr[-4000:]}\n"
            f"--- shardgate log (tail) ---\n{log}")


def check_run(r: subprocess.CompletedProcess, c: pgcluster.Cluster) -> int:
    """Asserts a clean pgbench run; returns the number of transactions processed."""
    processed = check_pgbench(r, _report(r, c))
    # pgbench reads the scale with count(*) over pgbench_branches: a fan-out count through shardgate.
    assert f"scaling factor: {SCALE}\n" in r.stdout, _report(r, c)
    return processed


def on_primaries(c: pgcluster.Cluster, sql: str, params=None) -> list[tuple]:
    """One row per shard: sql run on that shard's primary, directly (not through shardgate)."""
    rows = []
    for shard in c.shards:
        with psycopg.connect(shard.primary.dsn(), autocommit=True) as conn:
            rows.append(conn.execute(sql, params).fetchone())
    return rows


def misplaced(c: pgcluster.Cluster, table: str, key: str) -> list[tuple[int, int, int]]:
    """(shard, rows, rows Postgres's hash partitioning puts elsewhere) for each shard's primary."""
    out = []
    for shard in c.shards:
        with psycopg.connect(shard.primary.dsn(), autocommit=True) as conn:
            # A temporary hash-partitioned parent: satisfies_hash_partition needs one of the key's type.
            conn.execute(f"CREATE TEMP TABLE hash_probe ({key} int) PARTITION BY HASH ({key})")
            total, bad = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE NOT satisfies_hash_partition("
                f"'hash_probe'::regclass, %s, %s, {key})) FROM {table}", (len(c.shards), shard.index)).fetchone()
            out.append((shard.index, total, bad))
    return out


def expected_counts(c: pgcluster.Cluster, keys: int) -> list[int]:
    """How many of the keys 1..keys Postgres's hash partitioning puts on each shard."""
    with psycopg.connect(c.shards[0].primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE hash_probe (k int) PARTITION BY HASH (k)")
        return [conn.execute("SELECT count(*) FROM generate_series(1, %s) k "
                             "WHERE satisfies_hash_partition('hash_probe'::regclass, %s, %s, k)",
                             (keys, len(c.shards), shard.index)).fetchone()[0] for shard in c.shards]


def balances(values) -> dict[str, int]:
    """The four sums TPC-B keeps equal, by table: abalance, bbalance, tbalance and history's delta."""
    return dict(zip(("accounts", "branches", "tellers", "history"), values))


BALANCE_SQL = ("SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts),"
               " (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches),"
               " (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers),"
               " (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")


def summed_on_primaries(c: pgcluster.Cluster) -> dict[str, int]:
    return balances(sum(col) for col in zip(*on_primaries(c, BALANCE_SQL)))


def summed_through_shardgate(c: pgcluster.Cluster) -> dict[str, int]:
    # One statement per table: each is a fan-out aggregate that shardgate merges.
    with psycopg.connect(c.shardgate.dsn(), autocommit=True) as conn:
        return balances(
            conn.execute(f"SELECT sum({col}) FROM {table}").fetchone()[0] or 0
            for table, col in (("pgbench_accounts", "abalance"), ("pgbench_branches", "bbalance"),
                               ("pgbench_tellers", "tbalance"), ("pgbench_history", "delta")))


def test_demo_config_hash_shards_the_pgbench_tables():
    sharding = _demo_sharding()
    for table, key, _ in PGBENCH_TABLES:
        assert table in sharding, f"conf/demo.toml does not shard {table}"
        assert sharding[table]["column"] == key
        assert sharding[table].get("strategy", "hash") == "hash"
        assert sharding[table]["type"] == "integer", "pgbench -i -s 10 creates aid, bid and tid as int4"


def test_each_shard_holds_exactly_the_rows_that_hash_to_it(initialized):
    c = initialized
    for table, key, rows in PGBENCH_TABLES:
        placed = misplaced(c, table, key)
        assert [bad for _, _, bad in placed] == [0] * len(c.shards), f"{table}: rows on the wrong shard {placed}"
        assert [total for _, total, _ in placed] == expected_counts(c, rows), f"{table}: {placed}"
        if rows:
            # Keys 1..rows, none twice: with the counts above, each shard has exactly its keys.
            for lo, hi, distinct, total in on_primaries(
                    c, f"SELECT min({key}), max({key}), count(DISTINCT {key}), count(*) FROM {table}"):
                assert 1 <= lo and hi <= rows and distinct == total, (table, lo, hi, distinct, total)
    # Both shards got a share of every table pgbench filled (hash spreads them).
    for total_accounts, total_branches, total_tellers in on_primaries(
            c, "SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_branches),"
               " (SELECT count(*) FROM pgbench_tellers)"):
        assert total_accounts > 0 and total_branches > 0 and total_tellers > 0


def test_totals_through_shardgate(initialized):
    with psycopg.connect(initialized.shardgate.dsn(), autocommit=True) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table, _, _ in PGBENCH_TABLES]
        assert counts == [ACCOUNTS, BRANCHES, TELLERS, 0]
        assert conn.execute("SELECT max(aid) FROM pgbench_accounts").fetchone()[0] == ACCOUNTS
    assert summed_through_shardgate(initialized) == {"accounts": 0, "branches": 0, "tellers": 0, "history": 0}


def test_primary_keys_and_vacuum_reached_every_shard(initialized):
    for row in on_primaries(initialized, """
            SELECT array_agg(c.relname::text ORDER BY c.relname)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indisprimary
              AND c.relname LIKE 'pgbench\\_%'"""):
        assert row[0] == ["pgbench_accounts_pkey", "pgbench_branches_pkey", "pgbench_tellers_pkey"]
    for (vacuumed,) in on_primaries(initialized, """
            SELECT count(*) FROM pg_stat_user_tables
            WHERE relname IN ('pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history')
              AND last_vacuum IS NOT NULL"""):
        assert vacuumed == 4


def history_rows(c: pgcluster.Cluster) -> int:
    return sum(n for (n,) in on_primaries(c, "SELECT count(*) FROM pgbench_history"))


# The first run is pgbench as a user runs it (vacuum and TRUNCATE pgbench_history first, through
# shardgate); later runs keep the history (-n), so that it keeps matching the balances.
@pytest.mark.parametrize("mode", ["simple", "prepared"])
def test_tpcb_like_through_shardgate_keeps_balances(initialized, mode):
    c = initialized
    history_before = history_rows(c)
    processed = check_run(pgbench(c, "-M", mode, *([] if mode == "simple" else ["-n"]), *RUN_ARGS), c)
    direct = summed_on_primaries(c)
    # TPC-B adds the same delta to one account, teller and branch and logs it in pgbench_history.
    assert direct["accounts"] == direct["branches"] == direct["tellers"] == direct["history"], direct
    assert summed_through_shardgate(c) == direct
    # One history row per committed transaction (one that committed as the clock ran out may be
    # uncounted by pgbench).
    added = history_rows(c) - (0 if mode == "simple" else history_before)
    assert added >= processed, (added, processed)
    placed = misplaced(c, "pgbench_history", "aid")
    assert [bad for _, _, bad in placed] == [0] * len(c.shards), f"history rows on the wrong shard {placed}"


@pytest.mark.parametrize("mode", ["simple", "prepared"])
def test_select_only_through_shardgate(initialized, mode):
    c = initialized
    before = summed_on_primaries(c)
    check_run(pgbench(c, "-S", "-M", mode, *RUN_ARGS), c)
    after = summed_on_primaries(c)
    # Reads change nothing; the run's set-up truncated pgbench_history on every shard (through shardgate).
    assert after == {**before, "history": 0}, (before, after)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sanitized(pid: int) -> bool:
    """Whether the process runs with a sanitizer runtime (its RSS then says little)."""
    with open(f"/proc/{pid}/maps") as f:
        return any("libasan" in line or "libtsan" in line for line in f)


def test_copy_of_millions_of_rows_holds_bounded_memory(initialized):
    """pgbench -i -s 30 sends 3M rows by COPY faster than the shards take them: shardgate stops
    reading the client instead of holding the rows (it used to grow by 50-60 MiB here).
    Runs last: it replaces the module's pgbench tables."""
    c = initialized
    pid = c.shardgate.pid
    baseline = _rss_mib(pid)
    samples: list[float] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append(_rss_mib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = pgbench(c, "-i", "-s", "30", "-I", "dtg", "-q", timeout=300)
    finally:
        done.set()
        sampler.join()
    assert r.returncode == 0, _report(r, c)
    counts = on_primaries(c, "SELECT count(*) FROM pgbench_accounts")
    assert sum(n for (n,) in counts) == 3_000_000, counts
    growth = max(samples, default=baseline) - baseline
    if _sanitized(pid):
        pytest.skip(f"ASan keeps freed memory in quarantine: RSS grew {growth:.1f} MiB, not a measure here")
    assert growth < 32, f"shardgate grew by {growth:.1f} MiB during the COPY (baseline {baseline:.1f} MiB)"
