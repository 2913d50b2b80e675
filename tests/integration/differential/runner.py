"""Runs differential queries on the reference Postgres and through shardgate, compares the answers and reports.

Three ways of running a query:
  * simple:   psycopg's ClientCursor (the simple query protocol), every value kept as the exact text
              Postgres sent (no parsing into Python types), column names and type OIDs from the
              RowDescription;
  * extended: psycopg with server-side parameters (Parse/Bind/Execute), unnamed statements, with
              text results (exact text) or binary results (exact bytes; arrays as lists of them);
  * binary:   asyncpg (named prepared statements, binary results), values decoded by asyncpg and
              compared by their repr() (NaN, -0.0, Decimal scale and the like stay visible).

Outcomes per query: "equal"; "refused" (shardgate said 0A000: allowed unless the query must
answer); "failed" (different rows, columns or types, another error, a lost connection, a refusal
of a query that must answer, an answer to one that must refuse). No tolerance: float text must be
identical.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import asyncpg
import psycopg
import psycopg.adapt

from .data import AGG_DELIMITER
from .queries import Query, psycopg_sql

FEATURE_NOT_SUPPORTED = "0A000"
QUERY_TIMEOUT_S = 30  # every query here takes well under a second; a stuck one fails after this
STRICT = os.environ.get("SHARDGATE_DIFF_STRICT", "1") == "1"
MAX_DIFF_ROWS = 8


@dataclass
class Outcome:
    """What one server answered."""

    columns: list[tuple[str, int]] = field(default_factory=list)  # (name, type oid)
    rows: list[tuple] = field(default_factory=list)
    sqlstate: str | None = None  # set when the query failed
    error: str = ""
    lost_connection: bool = False

    @property
    def failed(self) -> bool:
        return self.sqlstate is not None or self.lost_connection

    def short(self) -> str:
        if self.lost_connection:
            return f"connection lost: {self.error}"
        if self.sqlstate:
            return f"ERROR {self.sqlstate}: {self.error}"
        return f"{len(self.rows)} rows, columns {self.columns}"


@dataclass
class Verdict:
    query: Query
    status: str  # equal | refused | failed
    detail: str = ""


class _RawText(psycopg.adapt.Loader):
    """Keeps a text-format value exactly as the server sent it."""

    def load(self, data) -> str:
        return bytes(data).decode("utf-8")


class _RawBinary(psycopg.adapt.Loader):
    """Keeps a binary-format value as the exact bytes the server sent (hex)."""

    format = psycopg.pq.Format.BINARY

    def load(self, data) -> str:
        return "bin:" + bytes(data).hex()


def _raw_text_adapters(conn: psycopg.Connection) -> None:
    for info in psycopg.postgres.types:
        conn.adapters.register_loader(info.oid, _RawText)
        if info.array_oid:
            conn.adapters.register_loader(info.array_oid, _RawText)
        # Binary arrays stay decoded by psycopg (so element order can be ignored where it is free),
        # their elements and every other value compared byte for byte.
        conn.adapters.register_loader(info.oid, _RawBinary)


class QueryTimeout(Exception):
    pass


@contextmanager
def _alarm(seconds: int):
    """Interrupts a client that waits longer than seconds (a hung shardgate must not hang the suite)."""
    def on_alarm(signum, frame):
        raise QueryTimeout(f"no answer within {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class SyncClient:
    """One psycopg connection (autocommit) that survives query errors and reconnects after losses."""

    def __init__(self, dsn: str, extended: bool = False):
        self.dsn = dsn
        self.extended = extended
        self.conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            factory = psycopg.Cursor if self.extended else psycopg.ClientCursor
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10, cursor_factory=factory,
                                        prepare_threshold=None)
            _raw_text_adapters(self.conn)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, sql: str, params: list | None = None, binary: bool = False) -> Outcome:
        out = Outcome()
        try:
            with _alarm(QUERY_TIMEOUT_S):
                conn = self._connect()
                with conn.cursor(binary=binary) as cur:
                    if params is None:
                        cur.execute(sql)
                    else:
                        text, ordered = psycopg_sql(sql, params)
                        cur.execute(text, ordered)
                    if cur.description is not None:
                        out.columns = [(d.name, d.type_code) for d in cur.description]
                        rows = cur.fetchall()
                        out.rows = [tuple(_canonical(v) for v in r) if binary else tuple(r) for r in rows]
        except psycopg.Error as e:
            if e.sqlstate and self.conn is not None and not self.conn.closed:
                out.sqlstate = e.sqlstate
                out.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if e.diag.message_detail:
                    out.error += f" (DETAIL: {e.diag.message_detail})"
            else:
                out.lost_connection = True
                out.error = f"{type(e).__name__}: {e}".strip()
                self.close()
        except QueryTimeout as e:
            out.lost_connection = True
            out.error = str(e)
            self.close()
        return out


def _canonical(v):
    """A comparable, printable form of a value decoded by a driver (binary results)."""
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    if v is None or isinstance(v, str):
        return v
    return repr(v)


class AsyncClient:
    """asyncpg: named prepared statements, binary results."""

    def __init__(self, dsn_kwargs: dict):
        self.kw = dsn_kwargs
        self.conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), 10)
            except (asyncio.TimeoutError, OSError, asyncpg.PostgresError):
                self.conn.terminate()
            self.conn = None

    async def run(self, sql: str, params: list | None = None) -> Outcome:
        out = Outcome()
        try:
            if self.conn is None or self.conn.is_closed():
                # statement_cache_size=0: every query prepared afresh (as a named statement).
                self.conn = await asyncio.wait_for(asyncpg.connect(**self.kw, statement_cache_size=0), 15)
                await _exact_datetime_codecs(self.conn)

            async def go():
                stmt = await self.conn.prepare(sql)
                rows = await stmt.fetch(*(params or []))
                return stmt, rows

            stmt, rows = await asyncio.wait_for(go(), QUERY_TIMEOUT_S)
            out.columns = [(a.name, a.type.oid) for a in stmt.get_attributes()]
            out.rows = [tuple(_canonical(v) for v in r) for r in rows]
        except asyncpg.PostgresError as e:
            out.sqlstate = e.sqlstate
            out.error = (str(e).splitlines() or [type(e).__name__])[0]
            if getattr(e, "detail", None):
                out.error += f" (DETAIL: {e.detail})"
            if self.conn is not None and self.conn.is_closed():
                self.conn = None
        except Exception as e:  # noqa: BLE001 - a lost connection, a timeout, a value asyncpg cannot decode
            out.lost_connection = True
            out.error = f"{type(e).__name__}: {e}"
            if self.conn is not None:
                self.conn.terminate()
            self.conn = None
        return out


async def _exact_datetime_codecs(conn: asyncpg.Connection) -> None:
    # Python's date and time types cannot hold 24:00:00, BC dates or infinity, and timedelta loses an
    # interval's months: keep these binary values as asyncpg's raw tuples (still binary on the wire).
    for typename in ("date", "time", "timetz", "timestamp", "timestamptz", "interval"):
        await conn.set_type_codec(typename, schema="pg_catalog", encoder=lambda v: v, decoder=lambda v: v,
                                  format="tuple")


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------

_ARRAY_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([^,{}]+)')


def _array_elements(text: str) -> list[str]:
    """Elements of a one-dimensional array literal ('{a,"b c",NULL}'), quoted ones unescaped."""
    inner = text[1:-1] if text.startswith("{") and text.endswith("}") else text
    out = []
    for m in _ARRAY_TOKEN.finditer(inner):
        if m.group(1) is not None:
            out.append('"' + re.sub(r"\\(.)", r"\1", m.group(1)))
        else:
            out.append(m.group(2))
    return out


def _normalize(q: Query, row: tuple) -> tuple:
    if not (q.unordered_lists or q.unordered_arrays):
        return row
    row = list(row)
    for i in q.unordered_lists:
        if isinstance(row[i], str):
            row[i] = "<sorted>" + AGG_DELIMITER.join(sorted(row[i].split(AGG_DELIMITER)))
    for i in q.unordered_arrays:
        if isinstance(row[i], str):
            row[i] = "<sorted>" + repr(sorted(_array_elements(row[i])))
        elif isinstance(row[i], list):
            row[i] = "<sorted>" + repr(sorted(row[i], key=repr))
    return tuple(row)


def _sort_key(row: tuple):
    return tuple((0, "") if v is None else (1, repr(v)) for v in row)


def _row_diff(ref: list[tuple], got: list[tuple], ordered: bool) -> str:
    lines = []
    if ordered:
        for i, (a, b) in enumerate(zip(ref, got)):
            if a != b:
                lines.append(f"  first difference at row {i}:\n    reference: {a!r}\n    shardgate: {b!r}")
                break
        if len(ref) != len(got):
            lines.append(f"  reference has {len(ref)} rows, shardgate {len(got)}")
        if not lines:
            lines.append("  same rows, different order")
    else:
        missing = Counter(ref) - Counter(got)
        extra = Counter(got) - Counter(ref)
        lines.append(f"  reference {len(ref)} rows, shardgate {len(got)}; "
                     f"{sum(missing.values())} missing from shardgate, {sum(extra.values())} extra")
        for r in list(missing.elements())[:MAX_DIFF_ROWS]:
            lines.append(f"    - {r!r}")
        for r in list(extra.elements())[:MAX_DIFF_ROWS]:
            lines.append(f"    + {r!r}")
    return "\n".join(lines)


def judge(q: Query, ref: Outcome, got: Outcome, strict: bool = STRICT) -> Verdict:
    must_answer = q.must == "single-shard" or (strict and q.must == "must-answer")
    if ref.lost_connection or (ref.sqlstate and not q.expect_error):
        return Verdict(q, "failed", f"the reference itself failed ({ref.short()}): the query is wrong")
    if q.expect_error and not ref.sqlstate:
        return Verdict(q, "failed", f"the reference answered ({ref.short()}) but the query is marked @error")
    if got.lost_connection:
        return Verdict(q, "failed", f"shardgate: {got.short()}")
    if got.sqlstate == FEATURE_NOT_SUPPORTED:
        if q.expect_error and ref.sqlstate == FEATURE_NOT_SUPPORTED:
            return Verdict(q, "equal")
        if must_answer:
            return Verdict(q, "failed", f"refused but must answer: {got.error}")
        return Verdict(q, "refused", got.error)
    if q.must == "must-refuse":
        return Verdict(q, "failed", f"must be refused with 0A000, shardgate gave {got.short()}")
    if q.expect_error:
        if got.sqlstate == ref.sqlstate:
            return Verdict(q, "equal")
        return Verdict(q, "failed", f"reference {ref.short()}; shardgate {got.short()}")
    if got.sqlstate:
        return Verdict(q, "failed", f"shardgate {got.short()}")
    if got.columns != ref.columns:
        return Verdict(q, "failed", f"columns differ:\n  reference: {ref.columns}\n  shardgate: {got.columns}")
    ref_rows = [_normalize(q, r) for r in ref.rows]
    got_rows = [_normalize(q, r) for r in got.rows]
    if q.ordered:
        same = ref_rows == got_rows
    else:
        same = sorted(ref_rows, key=_sort_key) == sorted(got_rows, key=_sort_key)
    if same:
        return Verdict(q, "equal")
    return Verdict(q, "failed", _row_diff(ref_rows, got_rows, q.ordered))


@dataclass
class Report:
    label: str  # e.g. "shards=2" or "shards=2 protocol=binary"
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for v in self.verdicts if v.status == status)

    def summary(self) -> str:
        return (f"DIFFERENTIAL {self.label} total={len(self.verdicts)} equal={self.count('equal')} "
                f"refused={self.count('refused')} failed={self.count('failed')}")

    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "failed"]

    def text(self, with_refusals: bool = True) -> str:
        lines = [self.summary() + f" ({self.seconds:.1f}s)"]
        for v in self.failures():
            lines.append(f"FAILED {v.query.describe()}\n  {v.query.sql}\n{v.detail}")
        if with_refusals:
            reasons = Counter(v.detail.split(" (DETAIL: ")[0] for v in self.verdicts if v.status == "refused")
            for reason, n in reasons.most_common():
                lines.append(f"refused x{n}: {reason}")
        return "\n".join(lines)


def run_sync(queries: list[Query], label: str, ref_dsn, sg_dsn, extended: bool = False,
             binary: bool = False, ref_cache: dict | None = None) -> Report:
    """Every query on both sides; ref_dsn and sg_dsn map a database name to a DSN."""
    report = Report(label)
    started = time.monotonic()
    refs: dict[str, SyncClient] = {}
    sgs: dict[str, SyncClient] = {}
    try:
        for q in queries:
            if q.database not in refs:
                refs[q.database] = SyncClient(ref_dsn(q.database), extended)
                sgs[q.database] = SyncClient(sg_dsn(q.database), extended)
            key = (q.database, q.sql, json_key(q.params), extended, binary)
            ref = ref_cache.get(key) if ref_cache is not None else None
            if ref is None:
                ref = refs[q.database].run(q.sql, q.params, binary)
                if ref_cache is not None:
                    ref_cache[key] = ref
            got = sgs[q.database].run(q.sql, q.params, binary)
            report.verdicts.append(judge(q, ref, got))
    finally:
        for c in [*refs.values(), *sgs.values()]:
            c.close()
    report.seconds = time.monotonic() - started
    return report


def run_async(queries: list[Query], label: str, ref_kw, sg_kw) -> Report:
    """Every query through asyncpg (binary results); ref_kw and sg_kw map a database to connect kwargs."""

    async def main() -> Report:
        report = Report(label)
        started = time.monotonic()
        clients: dict[str, tuple[AsyncClient, AsyncClient]] = {}
        try:
            for q in queries:
                if q.database not in clients:
                    clients[q.database] = (AsyncClient(ref_kw(q.database)), AsyncClient(sg_kw(q.database)))
                ref_c, sg_c = clients[q.database]
                ref = await ref_c.run(q.sql, q.params)
                got = await sg_c.run(q.sql, q.params)
                report.verdicts.append(judge(q, ref, got))
        finally:
            for a, b in clients.values():
                await a.close()
                await b.close()
        report.seconds = time.monotonic() - started
        return report

    return asyncio.run(main())


def json_key(params) -> str | None:
    return None if params is None else repr(params)
