"""Shared by the tests that drive shardgate with another language's driver (test_jdbc.py, test_node_drivers.py):
the module's cluster with users spread by Postgres's hash partitioning, running one external program per scenario
and reading the key=value lines it prints, and reading the shards directly."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
import subprocess

import psycopg
import pytest

import conftest
import pgcluster

DIRECT = conftest.DIRECT


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_unless_ci(what: str, reason: str) -> None:
    """A missing toolchain skips the module, except under CI, where nothing may be skipped silently."""
    if in_ci():
        pytest.fail(f"CI must not skip the {what} tests: {reason}", pytrace=False)
    pytest.skip(reason)


def hash_sharded_toml(*tables: tuple[str, str]) -> str:
    """[[databases.sharded_tables]] entries: each (table, bigint key column) hashed over the shards."""
    return "".join(f'\n  [[databases.sharded_tables]]\n  name = "{t}"\n  column = "{k}"\n  type = "bigint"\n'
                   f'  strategy = "hash"\n' for t, k in tables)


def direct(server: pgcluster.Server) -> psycopg.Connection:
    return psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10)


def on_shards(c: pgcluster.Cluster, sql: str, params=None) -> list[list[tuple]]:
    """The rows of `sql` on each shard's primary, read directly."""
    out = []
    for shard in c.shards:
        with direct(shard.primary) as conn:
            out.append(conn.execute(sql, params).fetchall())
    return out


def key_shard(c: pgcluster.Cluster, keys) -> dict[int, int]:
    """Where shardgate must put each bigint key (direct mode: shard 0, the only server the tests reach)."""
    keys = list(keys)
    return {k: 0 for k in keys} if DIRECT else conftest.hash_shards(c.shards[0].primary, keys)


@contextlib.contextmanager
def users_cluster(root: Path, shardgate_bin: str, *, pool_size: int, sharding_toml: str, shard_ddl: str,
                  users: int):
    """2 shards, no replicas, transaction pooling with `pool_size` server connections per shard and one worker;
    `shard_ddl` run on every shard, then users 1..`users` inserted where Postgres's hash partitioning puts them."""
    with conftest.running_cluster(root, shardgate_bin, num_shards=2, replicas_per_shard=0,
                                  pool_mode="transaction", general={"default_pool_size": pool_size, "workers": 1},
                                  database_options={"default_shard": 0}, extra_toml=sharding_toml) as c:
        for shard in c.shards:
            shard.primary.psql(shard_ddl)
        placed = key_shard(c, range(1, users + 1))
        for i, shard in enumerate(c.shards):
            keys = [k for k, s in placed.items() if s == i]
            with direct(shard.primary) as conn:
                conn.execute("INSERT INTO users (id, name) SELECT k, 'user' || k FROM unnest(%s::bigint[]) k", (keys,))
        yield c


@dataclass(repr=False)
class ProgramRun:
    """One run of a scenario program: exit status, its key=value lines (last value per key, and all of them)."""

    program: str
    returncode: int
    lines: list[tuple[str, str]]
    stdout: str
    stderr: str

    def __getitem__(self, key: str) -> str:
        values = self.all(key)
        assert values, f"{self.program} printed no {key}=\n{self}"
        return values[-1]

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.lines if k == key]

    def __repr__(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr[-4000:]}"


def run_program(program: str, scenario: str, cmd: list[str], timeout: float, **popen) -> ProgramRun:
    """Runs one scenario; it must exit 0 with result=ok (every check inside the program passed)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **popen)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{program} {scenario} did not finish in {timeout}s; stdout so far:\n{e.stdout}", pytrace=False)
    lines = [tuple(ln.split("=", 1)) for ln in r.stdout.splitlines() if "=" in ln]
    run = ProgramRun(program, r.returncode, lines, r.stdout, r.stderr)
    assert run.returncode == 0 and run.all("result") == ["ok"], f"{program} {scenario} failed: {run}"
    return run
