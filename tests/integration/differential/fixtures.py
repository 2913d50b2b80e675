"""pytest fixtures of the differential suite, shared by test_differential.py and test_multi_shard_writes.py (imported by conftest.py).

  diff_reference (session)  one plain Postgres 15 server with all the data (databases app, app_c)
  diff_sharded   (session, params 2 and 3 shards)  the same data over N shards (no replicas) behind
                            shardgate with configs/shards_<N>.toml. pytest runs every test of one
                            shard count before starting the next, so at most one of them is up.
Needs shardgate itself: skipped with SHARDGATE_TARGET=direct.
"""

from __future__ import annotations

import pytest

import pgcluster

from . import data, env


@pytest.fixture(scope="session")
def diff_reference(cluster_root):
    import conftest  # the suite's start/stop helpers (crash and sanitizer checks)

    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    c = conftest._new_cluster(cluster_root / "diff-reference", None, num_shards=1, replicas_per_shard=0,
                              with_shardgate=False)
    try:
        ref = env.Reference(c, data.generate())
        env.load_reference(ref.server, ref.dataset)
        yield ref
    finally:
        problems = conftest._finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session", params=env.SHARD_COUNTS, ids=[f"shards{n}" for n in env.SHARD_COUNTS])
def diff_sharded(request, cluster_root, shardgate_bin, diff_reference):
    import conftest

    n = request.param
    c = conftest._new_cluster(cluster_root / f"diff-{n}shards", shardgate_bin, num_shards=n, replicas_per_shard=0,
                              pool_mode="transaction", with_shardgate=False)
    try:
        sharding = env.Sharding.from_config(env.config_path(n))
        counts = env.load_shards(diff_reference.server, [s.primary for s in c.shards], sharding)
        c.start_shardgate(env.shardgate_config(n, c))
        yield env.Sharded(n, c, diff_reference, sharding, counts)
    finally:
        problems = conftest._finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


__all__ = ["diff_reference", "diff_sharded", "pgcluster"]
