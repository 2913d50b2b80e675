"""The differential suite's servers: one plain Postgres holding all the data, and N shards behind shardgate holding it split.

Both have two databases: "app" (the template's en_US.UTF-8) and "app_c" (LC_COLLATE and LC_CTYPE
C), each with the same tables and rows. Rows are placed on the shards exactly as shardgate routes
them, decided by Postgres itself: for a hash-sharded table the reference loads every row into a
table PARTITION BY HASH (key) with MODULUS N, and partition r's rows are copied to shard r; range
tables are split by the bounds in the config; reference tables go to every shard. The sharding
comes from the config file (configs/shards_<N>.toml), so config and placement cannot disagree.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

import pgcluster

from . import data

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DATABASES = {"app": None, "app_c": "C"}  # name -> LC_COLLATE/LC_CTYPE (None: the template's)
SHARD_COUNTS = (2, 3)
# Rows reach the shards in another order than the reference's (deterministic, unrelated to any
# column's order): an answer that depends on the physical row order shows up as a difference.
SCRAMBLE = "ORDER BY md5(t::text)"


def config_path(num_shards: int) -> Path:
    return CONFIG_DIR / f"shards_{num_shards}.toml"


@dataclass
class Sharding:
    """What the config says about where rows live (for the database "app"; app_c is the same)."""

    hash_keys: dict[str, str] = field(default_factory=dict)  # table -> key column
    ranges: dict[str, tuple[str, list[tuple[int | None, int | None, int]]]] = field(default_factory=dict)
    reference: list[str] = field(default_factory=list)
    default_shard: int = 0

    @classmethod
    def from_config(cls, path: Path) -> "Sharding":
        cfg = tomllib.loads(path.read_text())
        db = next(d for d in cfg["databases"] if d["name"] == "app")
        s = cls(reference=list(db.get("reference_tables", [])), default_shard=db.get("default_shard", 0))
        for t in db.get("sharded_tables", []):
            strategy = t.get("strategy", "hash")
            if strategy == "hash":
                s.hash_keys[t["name"]] = t["column"]
            elif strategy == "range":
                s.ranges[t["name"]] = (t["column"], [(r.get("from"), r.get("to"), r["shard"]) for r in t["ranges"]])
            else:
                raise ValueError(f"{path}: strategy {strategy} is not used by the differential suite")
        return s

    def where_clause(self, table: str, shard: int) -> str | None:
        """For a range table, the rows of shard (as SQL); None for other tables."""
        if table not in self.ranges:
            return None
        column, bounds = self.ranges[table]
        parts = []
        for lo, hi, sh in bounds:
            if sh != shard:
                continue
            conds = []
            if lo is not None:
                conds.append(f"{column} >= {lo}")
            if hi is not None:
                conds.append(f"{column} < {hi}")
            parts.append("(" + (" AND ".join(conds) or "true") + ")")
        return " OR ".join(parts) or "false"


def connect(server: pgcluster.Server, dbname: str) -> psycopg.Connection:
    return psycopg.connect(server.dsn(dbname=dbname), autocommit=True, connect_timeout=10)


def create_databases(server: pgcluster.Server) -> None:
    """app exists (the harness made it); app_c is made with the C collation."""
    for name, locale in DATABASES.items():
        if locale is None:
            continue
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = {pgcluster.sql_literal(name)}",
                             dbname="postgres")
        if exists != "1":
            server.psql(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                        f"LC_COLLATE '{locale}' LC_CTYPE '{locale}'", dbname="postgres")
        server.psql("GRANT ALL ON SCHEMA public TO PUBLIC", dbname=name)


def load_reference(server: pgcluster.Server, dataset: data.Dataset) -> None:
    """The schema and every row, in each database of the reference server."""
    create_databases(server)
    for db in DATABASES:
        with connect(server, db) as conn:
            conn.execute(data.SCHEMA_SQL)
            for table, columns in data.TABLES.items():
                with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
                    cp.write(data.copy_text(dataset.rows[table]))
            conn.execute("ANALYZE")


def _placement_sources(ref: psycopg.Connection, sharding: Sharding, n: int, table: str) -> list[str]:
    """For each shard, a SELECT (on the reference) of the rows that belong there.

    Hash tables are also left on the reference as place_<n>.<table>, partitioned like the shards:
    the determinism check runs every query on them too (see test_differential.py).
    """
    if table in sharding.reference:
        return [f"SELECT * FROM public.{table} t {SCRAMBLE}"] * n
    if table in sharding.hash_keys:
        schema = f"place_{n}"
        ref.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        ref.execute(f"DROP TABLE IF EXISTS {schema}.{table}")
        ref.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table}) PARTITION BY HASH "
                    f"({sharding.hash_keys[table]})")
        for r in range(n):
            ref.execute(f"CREATE TABLE {schema}.{table}_{r} PARTITION OF {schema}.{table} "
                        f"FOR VALUES WITH (MODULUS {n}, REMAINDER {r})")
        ref.execute(f"INSERT INTO {schema}.{table} SELECT * FROM public.{table} t {SCRAMBLE}")
        return [f"SELECT * FROM ONLY {schema}.{table}_{r}" for r in range(n)]
    if table in sharding.ranges:
        schema = f"place_{n}"
        column, bounds = sharding.ranges[table]
        ref.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        ref.execute(f"DROP TABLE IF EXISTS {schema}.{table}")
        ref.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table}) PARTITION BY RANGE ({column})")
        for k, (lo, hi, _) in enumerate(bounds):
            ref.execute(f"CREATE TABLE {schema}.{table}_{k} PARTITION OF {schema}.{table} FOR VALUES FROM "
                        f"({'MINVALUE' if lo is None else lo}) TO ({'MAXVALUE' if hi is None else hi})")
        ref.execute(f"INSERT INTO {schema}.{table} SELECT * FROM public.{table} t {SCRAMBLE}")
        return [f"SELECT * FROM public.{table} t WHERE {sharding.where_clause(table, r)} {SCRAMBLE}" for r in range(n)]
    return [f"SELECT * FROM public.{table} t {SCRAMBLE}" if r == sharding.default_shard else None for r in range(n)]


def place_table(ref: psycopg.Connection, shard_conns: list[psycopg.Connection], sharding: Sharding,
                table: str) -> list[int]:
    """Copies the reference's rows of table to the shards where they belong; returns rows per shard.

    The table must exist (empty) on every shard."""
    n = len(shard_conns)
    per_shard = []
    for sql, conn in zip(_placement_sources(ref, sharding, n, table), shard_conns):
        if sql is None:
            per_shard.append(0)
            continue
        with ref.cursor().copy(f"COPY ({sql}) TO STDOUT") as src, \
                conn.cursor().copy(f"COPY {table} FROM STDIN") as dst:
            for chunk in src:
                dst.write(chunk)
        per_shard.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    total = ref.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    expected = total * n if table in sharding.reference else total
    if sum(per_shard) != expected:
        raise AssertionError(f"{table}: shards hold {per_shard}, expected {expected} rows in all")
    return per_shard


def load_shards(reference: pgcluster.Server, shards: list[pgcluster.Server], sharding: Sharding) -> dict:
    """The schema on every shard and each row where shardgate routes it; returns {db: {table: [rows per shard]}}."""
    counts: dict = {}
    for server in shards:
        create_databases(server)
    for db in DATABASES:
        counts[db] = {}
        with connect(reference, db) as ref:
            shard_conns = [connect(s, db) for s in shards]
            try:
                for c in shard_conns:
                    c.execute(data.SCHEMA_SQL)
                for table in data.TABLES:
                    counts[db][table] = place_table(ref, shard_conns, sharding, table)
                for c in shard_conns:
                    c.execute("ANALYZE")
            finally:
                for c in shard_conns:
                    c.close()
    return counts


def shardgate_config(num_shards: int, cluster: pgcluster.Cluster) -> str:
    """configs/shards_<N>.toml with its ports replaced by the ones the cluster runs on."""
    text = config_path(num_shards).read_text()
    cfg = tomllib.loads(text)
    mapping = {cfg["general"]["port"]: cluster.shardgate_port}
    for i, shard in enumerate(cfg["databases"][0]["shards"]):
        mapping[shard["primary"]["port"]] = cluster.shards[i].primary.port
    return pgcluster.rewrite_ports(text, mapping)


@dataclass
class Reference:
    """The plain Postgres with all the data, and reference answers cached by (db, sql, params, mode)."""

    cluster: pgcluster.Cluster
    dataset: data.Dataset
    cache: dict = field(default_factory=dict)

    @property
    def server(self) -> pgcluster.Server:
        return self.cluster.shards[0].primary

    def dsn(self, db: str = "app") -> str:
        return self.server.dsn(dbname=db)

    def asyncpg_kwargs(self, db: str = "app") -> dict:
        return dict(host=pgcluster.HOST, port=self.server.port, user="postgres", password="postgres", database=db)


@dataclass
class Sharded:
    """N shards behind shardgate, loaded from the reference."""

    num_shards: int
    cluster: pgcluster.Cluster
    reference: Reference
    sharding: Sharding
    counts: dict

    @property
    def shardgate(self) -> pgcluster.Shardgate:
        return self.cluster.shardgate

    def shard(self, i: int) -> pgcluster.Server:
        return self.cluster.shards[i].primary

    @property
    def shard_servers(self) -> list[pgcluster.Server]:
        return [s.primary for s in self.cluster.shards]

    def dsn(self, db: str = "app") -> str:
        return self.shardgate.dsn(dbname=db)

    def asyncpg_kwargs(self, db: str = "app") -> dict:
        return dict(host=pgcluster.HOST, port=self.shardgate.port, user="postgres", password="postgres", database=db)
