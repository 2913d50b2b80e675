"""The differential suite: the same data in one plain Postgres and over 2 and 3 shards behind shardgate, the same queries, the answers compared.

Data, configs, queries and the comparison live in tests/integration/differential/ (see its
modules). Each test runs once per shard count (2, then 3). A query's outcome is "equal", "refused"
(shardgate answered 0A000: allowed and reported, unless the query must answer) or "failed"
(different rows, columns or types, another error, a lost connection): any failure fails the test,
with a diff. A line `DIFFERENTIAL shards=N total=.. equal=.. refused=.. failed=..` is printed per
run and the full reports are written to <cluster root>/differential-*.txt.

Before comparing with shardgate, every query also runs on the reference's own partitioned copy of
the data (test_queries_are_deterministic): an answer that depends on row order or plan would make
the comparison flaky, and Postgres alone shows it there. A query without an answer within 30 s
fails (and its connection is replaced), so a stuck shardgate cannot hang the suite.

SHARDGATE_DIFF_STRICT=1 (the default) makes the queries marked @must-answer (the simple shapes: plain fan-out,
ORDER BY integer, count(*), sum, LIMIT) fail when refused; without it only the @single-shard ones
(which shardgate routes to one shard today) must answer. The @must-refuse shapes must get 0A000
always.

Needs shardgate itself: skipped with SHARDGATE_TARGET=direct.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from differential import data
from differential import queries as dq
from differential import runner

pytestmark = pytest.mark.requires_shardgate

# Every EXTENDED_SAMPLE-th query of the main set also runs through asyncpg (binary results).
EXTENDED_SAMPLE = 4
MIN_QUERIES = 300
MIN_EQUAL_SIMPLE = 360
STRICT_FLOOR = os.environ.get("SHARDGATE_DIFF_STRICT", "1") == "1"


def _report(cluster_root, report: runner.Report, capsys) -> None:
    text = report.text()
    name = "differential-" + report.label.replace(" ", "-").replace("=", "") + ".txt"
    (cluster_root / name).write_text(text + "\n")
    with capsys.disabled():
        print("\n" + report.summary() + f" ({report.seconds:.1f}s; report: {cluster_root / name})")
    failures = report.failures()
    if failures:
        shown = "\n".join(f"FAILED {v.query.describe()}\n  {v.query.sql}\n{v.detail}" for v in failures[:25])
        more = f"\n... and {len(failures) - 25} more (see {cluster_root / name})" if len(failures) > 25 else ""
        pytest.fail(f"{report.summary()}\n{shown}{more}", pytrace=False)


def test_query_files_parse():
    qs = dq.all_queries()
    dq.check_unique_names(qs)
    dq.check_unique_names(dq.param_queries())
    assert len(qs) >= MIN_QUERIES, f"only {len(qs)} queries"
    assert any(q.must == "must-refuse" for q in qs)
    assert any(q.must == "must-answer" for q in qs)


def test_judge_rules():
    """The comparison itself: what counts as equal, refused and failed (no servers needed)."""
    O, Q = runner.Outcome, dq.Query
    cols = [("id", 20), ("v", 25)]
    ref = O(cols, [("1", "a"), ("2", "b"), ("3", None)])
    judge = runner.judge
    assert judge(Q("q", "q"), ref, O(cols, [("3", None), ("1", "a"), ("2", "b")])).status == "equal"
    assert judge(Q("q", "q", ordered=True), ref, O(cols, [("3", None), ("1", "a"), ("2", "b")])).status == "failed"
    assert judge(Q("q", "q"), ref, O(cols, [("1", "a"), ("2", "b")])).status == "failed"
    assert judge(Q("q", "q"), ref, O(cols, [("1", "a"), ("2", "b"), ("3", None), ("3", None)])).status == "failed"
    assert judge(Q("q", "q"), ref, O([("id", 1700), ("v", 25)], ref.rows)).status == "failed"  # type
    assert judge(Q("q", "q"), ref, O([("ID", 20), ("v", 25)], ref.rows)).status == "failed"  # name
    assert judge(Q("q", "q"), O([("f", 701)], [("0.1",)]), O([("f", 701)], [("0.10000000000000001",)])).status == "failed"
    refused = O(sqlstate="0A000", error="needs every shard")
    assert judge(Q("q", "q"), ref, refused, strict=False).status == "refused"
    assert judge(Q("q", "q", must="must-answer"), ref, refused, strict=False).status == "refused"
    assert judge(Q("q", "q", must="must-answer"), ref, refused, strict=True).status == "failed"
    assert judge(Q("q", "q", must="single-shard"), ref, refused, strict=False).status == "failed"
    assert judge(Q("q", "q", must="must-refuse"), ref, ref).status == "failed"
    assert judge(Q("q", "q", must="must-refuse"), ref, refused).status == "refused"
    assert judge(Q("q", "q"), ref, O(sqlstate="XX000", error="boom")).status == "failed"
    assert judge(Q("q", "q"), ref, O(lost_connection=True, error="eof")).status == "failed"
    assert judge(Q("q", "q"), O(sqlstate="42703", error="no column"), ref).status == "failed"  # broken query
    division = O(sqlstate="22012", error="division by zero")
    assert judge(Q("q", "q", expect_error=True), division, O(sqlstate="22012")).status == "equal"
    assert judge(Q("q", "q", expect_error=True), division, O(sqlstate="22003")).status == "failed"
    assert judge(Q("q", "q", expect_error=True), division, ref).status == "failed"
    # Aggregates whose element order is free compare sorted; others exactly.
    agg = O([("a", 1009)], [('{b,"c d",NULL,a}',)])
    assert judge(Q("q", "q", unordered_arrays=[0]), agg, O(agg.columns, [('{NULL,a,"c d",b}',)])).status == "equal"
    assert judge(Q("q", "q"), agg, O(agg.columns, [('{NULL,a,"c d",b}',)])).status == "failed"
    assert judge(Q("q", "q", unordered_arrays=[0]), agg, O(agg.columns, [('{a,"c d",b}',)])).status == "failed"
    lst = O([("s", 25)], [("x|y|z",)])
    assert judge(Q("q", "q", unordered_lists=[0]), lst, O(lst.columns, [("z|x|y",)])).status == "equal"
    assert judge(Q("q", "q", unordered_lists=[0]), lst, O(lst.columns, [("z|x",)])).status == "failed"


def test_placement_matches_postgres(diff_sharded):
    """Each hash-sharded row sits on the shard Postgres's own partitioning names (the loader's contract),
    and the range table's rows lie within their shard's bounds."""
    n = diff_sharded.num_shards
    for table, key in diff_sharded.sharding.hash_keys.items():
        if table not in data.TABLES:
            continue
        for i, server in enumerate(diff_sharded.shard_servers):
            wrong = server.psql(
                f"CREATE TEMP TABLE probe (k bigint) PARTITION BY HASH (k); "
                f"SELECT count(*) FROM {table} WHERE NOT satisfies_hash_partition('probe'::regclass, {n}, {i}, {key})")
            assert wrong == "0", f"{table}: {wrong} rows on shard {i} belong elsewhere"
    for table in diff_sharded.sharding.ranges:
        for i, server in enumerate(diff_sharded.shard_servers):
            where = diff_sharded.sharding.where_clause(table, i)
            wrong = server.psql(f"SELECT count(*) FROM {table} WHERE NOT ({where})")
            assert wrong == "0", f"{table}: {wrong} rows on shard {i} outside {where}"
            assert server.psql(f"SELECT count(*) > 0 FROM {table}") == "t", f"{table}: shard {i} is empty"


def test_queries_are_deterministic(diff_sharded, cluster_root, capsys):
    """The suite's own check: every query gives the same answer on the reference's partitioned copy.

    place_<N> on the reference holds users, orders, typed (PARTITION BY HASH, MODULUS N) and events
    (by range) split as on the shards, filled in another row order. A query whose answer depends on
    the physical order or the plan (a LIMIT without a total ORDER BY, string_agg without ORDER BY
    compared in order, ...) would make the differential comparison flaky; here Postgres alone shows it.
    """
    n = diff_sharded.num_shards
    ref = diff_sharded.reference
    qs = [dataclasses.replace(q, must=None) for q in dq.all_queries() + dq.param_queries()]
    partitioned = lambda db: ref.server.dsn(dbname=db, options=f"-c search_path=place_{n},public")  # noqa: E731
    report = runner.run_sync(qs, f"shards={n} check=reference-partitioned", ref.dsn, partitioned,
                             ref_cache=ref.cache)
    _report(cluster_root, report, capsys)


def test_differential_simple(diff_sharded, cluster_root, capsys):
    """Every query, simple protocol (psycopg ClientCursor), exact text of every value."""
    qs = dq.all_queries()
    report = runner.run_sync(qs, f"shards={diff_sharded.num_shards}", diff_sharded.reference.dsn,
                             diff_sharded.dsn, ref_cache=diff_sharded.reference.cache)
    _report(cluster_root, report, capsys)
    # A floor under what shardgate answers (368 of 414 when it was set): fewer means a shape that
    # used to be answered is now refused.
    if STRICT_FLOOR:
        assert report.count("equal") >= MIN_EQUAL_SIMPLE, report.summary()


def test_must_refuse(diff_sharded):
    """Shapes shardgate cannot answer correctly across shards get 0A000 (strict or not)."""
    qs = [q for q in dq.all_queries() if q.must == "must-refuse"]
    assert qs
    report = runner.run_sync(qs, f"shards={diff_sharded.num_shards} must-refuse", diff_sharded.reference.dsn,
                             diff_sharded.dsn, ref_cache=diff_sharded.reference.cache)
    assert report.count("refused") == len(qs), report.text()


def test_differential_extended_params(diff_sharded, cluster_root, capsys):
    """Parameterised queries: psycopg (Parse/Bind/Execute, text and binary results) and asyncpg."""
    qs = dq.param_queries()
    n = diff_sharded.num_shards
    ref, sg = diff_sharded.reference, diff_sharded
    text = runner.run_sync(qs, f"shards={n} protocol=extended-text", ref.dsn, sg.dsn, extended=True)
    binary = runner.run_sync(qs, f"shards={n} protocol=extended-binary", ref.dsn, sg.dsn, extended=True,
                             binary=True)
    apg = runner.run_async(qs, f"shards={n} protocol=asyncpg", ref.asyncpg_kwargs, sg.asyncpg_kwargs)
    for report in (text, binary, apg):
        _report(cluster_root, report, capsys)


def test_differential_extended_sample(diff_sharded, cluster_root, capsys):
    """A sample of the main queries through asyncpg: named prepared statements, binary results."""
    qs = dq.all_queries()[::EXTENDED_SAMPLE]
    ref, sg = diff_sharded.reference, diff_sharded
    report = runner.run_async(qs, f"shards={diff_sharded.num_shards} protocol=asyncpg-sample",
                              ref.asyncpg_kwargs, sg.asyncpg_kwargs)
    _report(cluster_root, report, capsys)


def test_collations_differ(diff_reference):
    """The collation queries are worth running twice: C and en_US.UTF-8 order the data differently."""
    sql = "SELECT string_agg(c_text, '|' ORDER BY c_text, id) FROM typed"
    answers = {}
    for db, collation in (("app", "en_US.UTF-8"), ("app_c", "C")):
        got = diff_reference.server.psql("SELECT datcollate FROM pg_database WHERE datname = current_database()",
                                         dbname=db)
        assert got.lower().replace("-", "") == collation.lower().replace("-", ""), \
            f"{db} has collation {got}, not {collation} (scripts/install-deps.sh generates en_US.UTF-8)"
        client = runner.SyncClient(diff_reference.dsn(db))
        try:
            answers[db] = client.run(sql)
        finally:
            client.close()
        assert not answers[db].failed, answers[db].short()
    assert answers["app"].rows != answers["app_c"].rows


@pytest.mark.parametrize("database", ["app", "app_c"], ids=["en_US.UTF-8", "C"])
def test_differential_collation(diff_sharded, cluster_root, capsys, database):
    """ORDER BY text (and min/max, DISTINCT, GROUP BY over text) under each database's collation."""
    qs = dq.collation_queries(database)
    assert qs
    report = runner.run_sync(qs, f"shards={diff_sharded.num_shards} db={database}", diff_sharded.reference.dsn,
                             diff_sharded.dsn, ref_cache=diff_sharded.reference.cache)
    _report(cluster_root, report, capsys)
