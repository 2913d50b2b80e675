"""pytest fixtures for the integration suite: local Postgres 15 shard clusters with shardgate in front.

Fixtures:
  cluster          (session)  2 shards x 1 replica and shardgate (session pooling), shared by the tests
  make_cluster     (function) factory: make_cluster(**Cluster kwargs) -> a started Cluster, stopped after
                              the test (destructive tests: killing shards, small pools, custom settings)
  shardgate_bin    (session)  $SHARDGATE_BIN, default <repo>/build/shardgate
  target_mode      (session)  "shardgate" or "direct"
  requires_shardgate          skips the test when SHARDGATE_TARGET=direct (also a marker of that name)

SHARDGATE_TARGET=direct starts no shardgate: cluster.shardgate is a stand-in whose port, dsn() and
psql() point at shard 0's primary, so the tests can be validated against plain Postgres.
Cluster directories live under $SHARDGATE_TEST_TMPDIR (default /tmp) in shardgate-it-*/; they are
removed when their tests pass and kept for post-mortems otherwise (SHARDGATE_KEEP_CLUSTERS=1 keeps all).
"""

from __future__ import annotations

import contextlib

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "harness"))

import pgcluster  # noqa: E402

TARGET = os.environ.get("SHARDGATE_TARGET", "shardgate")
DIRECT = TARGET == "direct"
KEEP = os.environ.get("SHARDGATE_KEEP_CLUSTERS") == "1"
ROOT_PREFIX = "shardgate-it-"
SKIP_DIRECT_REASON = "needs shardgate itself (SHARDGATE_TARGET=direct runs against plain Postgres)"
# Exit by these signals means shardgate crashed (SIGTERM/SIGKILL are how tests stop it).
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}

if TARGET not in ("shardgate", "direct"):
    raise pytest.UsageError(f"SHARDGATE_TARGET must be 'shardgate' or 'direct', not {TARGET!r}")


def _tmp_base() -> Path:
    return Path(os.environ.get("SHARDGATE_TEST_TMPDIR") or tempfile.gettempdir())


def _default_bin() -> str:
    return os.environ.get("SHARDGATE_BIN") or str(REPO_ROOT / "build" / "shardgate")


def pytest_configure(config):
    config.addinivalue_line("markers", f"requires_shardgate: {SKIP_DIRECT_REASON}")


def pytest_report_header(config):
    where = "plain Postgres (shard 0's primary)" if DIRECT else _default_bin()
    return [f"shardgate target: {TARGET} -> {where}", f"clusters under: {_tmp_base()}/{ROOT_PREFIX}*"]


def pytest_runtest_setup(item):
    if DIRECT and item.get_closest_marker("requires_shardgate"):
        pytest.skip(SKIP_DIRECT_REASON)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome so make_cluster can keep the directories of failed tests.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _prune_old_roots(base: Path, max_age_s: float = 2 * 86400, keep: int = 5) -> None:
    """Removes the directories failed runs kept: those older than two days, and all but the `keep`
    newest (a kept cluster holds up to a few GB of data and WAL; a day of failing runs once filled
    the disk, and then every test failed)."""
    roots = []
    for d in base.glob(ROOT_PREFIX + "*"):
        try:
            if d.is_dir():
                roots.append((d.stat().st_mtime, d))
        except OSError:
            pass
    roots.sort(reverse=True)
    for rank, (mtime, d) in enumerate(roots):
        if rank >= keep or time.time() - mtime > max_age_s:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def shardgate_bin() -> str:
    return _default_bin()


@pytest.fixture(scope="session")
def target_mode() -> str:
    return TARGET


@pytest.fixture
def requires_shardgate():
    if DIRECT:
        pytest.skip(SKIP_DIRECT_REASON)


@pytest.fixture(scope="session")
def cluster_root(request):
    """One directory per pytest session holding every cluster it starts."""
    base = _tmp_base()
    base.mkdir(parents=True, exist_ok=True)
    # Clusters of an earlier run that was killed (e.g. by a ctest timeout) are still running: stop them.
    for item in pgcluster.reap_stale(str(base / (ROOT_PREFIX + "*"))):
        print(f"pgcluster: stopped leftover {item}", file=sys.stderr)
    _prune_old_roots(base)
    root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=base))
    os.chmod(root, 0o755)  # the postgres OS user must be able to enter it
    yield root
    if request.session.testsfailed == 0 and not KEEP:
        shutil.rmtree(root, ignore_errors=True)


def _new_cluster(base_dir: Path, default_bin: str, **kw) -> pgcluster.Cluster:
    # In direct mode the stand-in replaces shardgate, unless the test brings its own binary.
    direct = DIRECT and "shardgate_bin" not in kw and kw.get("with_shardgate", True)
    kw.setdefault("shardgate_bin", default_bin)
    if direct:
        kw["with_shardgate"] = False
    c = pgcluster.Cluster(base_dir, **kw)
    try:
        c.start()
    except pgcluster.HarnessError as e:
        pytest.fail(f"cluster in {base_dir} did not start:\n{e}", pytrace=False)
    if direct:
        c.shardgate = pgcluster.DirectShardgate(c.shards[0].primary)
    return c


@contextlib.contextmanager
def running_cluster(base_dir: Path, default_bin: str, **kw):
    """A started cluster (see _new_cluster), stopped on leaving; what _finish finds (a crash, a
    sanitizer report, a process left behind) fails the test."""
    c = _new_cluster(base_dir, default_bin, **kw)
    try:
        yield c
    finally:
        problems = _finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _finish(c: pgcluster.Cluster) -> list[str]:
    """Stops the cluster; returns problems to report (shardgate crashed or a sanitizer complained)."""
    problems = []
    try:
        c.stop()
    except pgcluster.HarnessError as e:
        problems.append(f"stopping {c.base_dir}: {e}")
    sg = c.shardgate
    if isinstance(sg, pgcluster.Shardgate):
        rc = sg.returncode
        if rc is not None and rc < 0 and -rc in CRASH_SIGNALS:
            problems.append(f"shardgate died of signal {signal.Signals(-rc).name}; log: {sg.logfile}")
        report = sg.sanitizer_report()
        if report:
            problems.append(f"sanitizer errors in {sg.logfile}:\n" + "\n".join(report[:20]))
    return problems


@pytest.fixture(scope="session")
def cluster(cluster_root, shardgate_bin):
    c = _new_cluster(cluster_root / "session", shardgate_bin, num_shards=2, replicas_per_shard=1,
                     pool_mode="session")
    yield c
    problems = _finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def make_cluster(request, cluster_root, shardgate_bin):
    made: list[pgcluster.Cluster] = []
    # Short directory names: the Unix socket path (datadir + /.s.PGSQL.NNNNN) must stay under 100 bytes.
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:30]

    def factory(**kw) -> pgcluster.Cluster:
        c = _new_cluster(cluster_root / f"{stem}-{len(made)}", shardgate_bin, **kw)
        made.append(c)
        return c

    yield factory
    problems = []
    for c in made:
        problems += _finish(c)
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if not failed and not problems and not KEEP:
        for c in made:
            shutil.rmtree(c.base_dir, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# The differential suite's clusters (tests/integration/differential/fixtures.py): session-scoped, so
# test_differential.py and test_multi_shard_writes.py share them.
def hash_shards(server: pgcluster.Server, keys, modulus: int = 2) -> dict[int, int]:
    """Where Postgres's own PARTITION BY HASH (MODULUS `modulus`) puts each bigint key: {key: remainder},
    the shard shardgate's hash strategy must pick. Asked of `server` through satisfies_hash_partition()."""
    import psycopg  # noqa: PLC0415 - only the tests that check placement need it

    with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TEMP TABLE shardgate_hash_probe (id bigint) PARTITION BY HASH (id)")
        rows = conn.execute(
            "SELECT k, r FROM unnest(%s::bigint[]) k, generate_series(0, %s - 1) r "
            "WHERE satisfies_hash_partition('shardgate_hash_probe'::regclass, %s, r, k)",
            (list(keys), modulus, modulus)).fetchall()
    return dict(rows)


from differential.fixtures import diff_reference, diff_sharded  # noqa: E402,F401
