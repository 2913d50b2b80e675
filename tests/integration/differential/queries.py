"""The differential suite's queries: the hand-written files in queries/ and the generated shapes over every column type.

A query file holds SQL statements, each ending with `;` at the end of a line. `-- @directive`
comment lines right before a statement apply to it (other comments are ignored):

    -- @ordered               the ORDER BY fixes the order of every row: compared in order
                              (otherwise rows are compared as multisets)
    -- @must-answer           a simple shape shardgate must answer, not refuse; enforced only with
                              SHARDGATE_DIFF_STRICT=1 (the default; 0 allows refusals of them)
    -- @single-shard          runs on one shard today (shard key given, reference table): must answer
    -- @must-refuse           shardgate cannot answer it correctly: must fail with 0A000
    -- @error                 the reference fails too (e.g. division by zero on some row): shardgate
                              must fail with the same SQLSTATE
    -- @unordered-list N      column N is a string_agg without its own ORDER BY (delimiter '|'):
                              its parts are compared as a sorted list
    -- @unordered-array N     column N is such an array_agg: its elements are compared sorted
    -- @params [json, ...]    parameters ($1, $2, ...) for the extended-protocol runs
    -- @name text             a name for reports (default: file:line)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import data

QUERY_DIR = Path(__file__).resolve().parent / "queries"

MUSTS = ("must-answer", "single-shard", "must-refuse")


@dataclass
class Query:
    sql: str
    name: str
    ordered: bool = False
    must: str | None = None  # one of MUSTS
    expect_error: bool = False
    unordered_lists: list[int] = field(default_factory=list)
    unordered_arrays: list[int] = field(default_factory=list)
    params: list | None = None
    database: str = "app"

    def describe(self) -> str:
        flags = [f for f, on in (("ordered", self.ordered), ("error", self.expect_error)) if on]
        if self.must:
            flags.append(self.must)
        return f"{self.name} [{', '.join(flags) or 'multiset'}]"


class QueryFileError(ValueError):
    pass


def parse_file(path: Path, database: str = "app") -> list[Query]:
    queries: list[Query] = []
    pending: dict = {}
    buf: list[str] = []
    start_line = 0
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not buf and stripped.startswith("-- @"):
            word, _, arg = stripped[4:].partition(" ")
            arg = arg.strip()
            if word == "ordered":
                pending["ordered"] = True
            elif word in MUSTS:
                if "must" in pending:
                    raise QueryFileError(f"{path.name}:{lineno}: two of {MUSTS} on one query")
                pending["must"] = word
            elif word == "error":
                pending["expect_error"] = True
            elif word == "unordered-list":
                pending.setdefault("unordered_lists", []).append(int(arg))
            elif word == "unordered-array":
                pending.setdefault("unordered_arrays", []).append(int(arg))
            elif word == "params":
                pending["params"] = json.loads(arg)
            elif word == "name":
                pending["name"] = arg
            else:
                raise QueryFileError(f"{path.name}:{lineno}: unknown directive {word!r}")
            continue
        if not buf and (not stripped or stripped.startswith("--")):
            continue
        if not buf:
            start_line = lineno
        buf.append(line)
        if stripped.endswith(";"):
            sql = "\n".join(buf).strip()[:-1].strip()
            pending.setdefault("name", f"{path.name}:{start_line}")
            queries.append(Query(sql=sql, database=database, **pending))
            pending, buf = {}, []
    if buf or pending:
        raise QueryFileError(f"{path.name}: statement or directives without a final ';'")
    return queries


def file_queries(pattern: str = "*.sql", database: str = "app") -> list[Query]:
    out: list[Query] = []
    for path in sorted(QUERY_DIR.glob(pattern)):
        out += parse_file(path, database)
    return out


# ---------------------------------------------------------------------------------------------
# Generated shapes over typed: every column type through ORDER BY, LIMIT/OFFSET, DISTINCT, GROUP BY
# and the aggregates that apply to it.
# ---------------------------------------------------------------------------------------------

# Types without min/max in Postgres 15.
NO_MIN_MAX = {"bool", "uuid", "bytea"}
# Types with sum and avg.
SUMMABLE = {"int2", "int4", "int8", "float4", "float8", "numeric", "interval"}
# Types whose stddev/variance Postgres computes exactly (numeric arithmetic): the float versions
# round at every step (Youngs-Cramer), so their last digit depends on the order of the rows even
# on one server; they are left out.
EXACT_VARIANCE = {"int2", "int4", "int8", "numeric"}


def generated_queries() -> list[Query]:
    out: list[Query] = []

    def add(sql: str, name: str, **kw) -> None:
        out.append(Query(sql=sql, name=f"gen:{name}", **kw))

    for col, typ in data.TYPED_COLUMNS.items():
        # Sorts: each direction and NULL placement, the key id breaking ties (a total order).
        for direction in ("ASC", "DESC", "ASC NULLS FIRST", "DESC NULLS LAST"):
            add(f"SELECT id, {col} FROM typed ORDER BY {col} {direction}, id", f"sort-{col}-{direction}",
                ordered=True, must="must-answer" if typ in ("int4", "int8") and direction == "ASC" else None)
        add(f"SELECT id, {col} FROM typed ORDER BY {col} DESC NULLS LAST, id DESC LIMIT 25 OFFSET 7",
            f"limit-offset-{col}", ordered=True)
        add(f"SELECT {col} AS v, id FROM typed WHERE {col} IS NOT NULL ORDER BY v, 2 LIMIT 40",
            f"alias-position-{col}", ordered=True)
        add(f"SELECT DISTINCT {col} FROM typed ORDER BY {col} NULLS FIRST", f"distinct-{col}", ordered=True)
        add(f"SELECT count({col}), count(DISTINCT {col}), count(*) FROM typed", f"counts-{col}")
        group = f"SELECT {col}, count(*) AS n FROM typed GROUP BY {col}"
        add(f"{group} ORDER BY n DESC, {col} NULLS FIRST LIMIT 30", f"group-{col}", ordered=True)
        aggs = []
        if typ not in NO_MIN_MAX:
            aggs += [f"min({col})", f"max({col})"]
        if typ in SUMMABLE:
            aggs += [f"sum({col})", f"avg({col})"]
        if typ in EXACT_VARIANCE:
            aggs += [f"stddev({col})", f"variance({col})", f"stddev_pop({col})", f"var_samp({col})"]
        if typ == "bool":
            aggs += [f"bool_and({col})", f"bool_or({col})", f"every({col})"]
        if aggs:
            # Without GROUP BY (one row, also over no rows), and per group (grp 12 is all NULL).
            add(f"SELECT {', '.join(aggs)} FROM typed", f"aggs-{col}")
            add(f"SELECT {', '.join(aggs)} FROM typed WHERE false", f"aggs-empty-{col}")
            add(f"SELECT grp, {', '.join(aggs)}, count(*) FROM typed GROUP BY grp ORDER BY grp NULLS FIRST",
                f"aggs-by-grp-{col}", ordered=True)
    return out


def all_queries() -> list[Query]:
    """Every query of the main run (database app)."""
    return file_queries() + generated_queries()


def collation_queries(database: str) -> list[Query]:
    """Text orderings, run in the en_US.UTF-8 database (app) and the C one (app_c)."""
    return file_queries("collation/*.sql", database)


def param_queries() -> list[Query]:
    return [q for q in file_queries("params/*.sql") if q.params is not None]


def check_unique_names(queries: list[Query]) -> None:
    seen = set()
    for q in queries:
        if q.name in seen:
            raise QueryFileError(f"two queries named {q.name}")
        seen.add(q.name)


def psycopg_sql(sql: str, params: list) -> tuple[str, list]:
    """$n placeholders as psycopg's %s (with the parameters in occurrence order); literal % doubled."""
    order: list = []

    def sub(m: re.Match) -> str:
        order.append(params[int(m.group(1)) - 1])
        return "%s"

    text = re.sub(r"\$(\d+)", sub, sql.replace("%", "%%"))
    return text, order
