"""The admin console as the integration tests talk to it: a raw wire client logged in to the
"shardgate" database, commands in the simple query protocol, and their answers as rows or tags."""

from __future__ import annotations

import pgwire

HOST = "127.0.0.1"


def console(c, user: str = "postgres", password: str | None = "postgres") -> pgwire.PgWire:
    w = pgwire.PgWire(HOST, c.shardgate.port)
    w.login(user=user, password=password, database="shardgate")
    return w


def run(w: pgwire.PgWire, sql: str, timeout: float = 20) -> list[pgwire.Message]:
    w.send(pgwire.query(sql))
    return w.recv_until(b"Z", timeout=timeout)


def show(w: pgwire.PgWire, sql: str) -> tuple[list[str], list[dict]]:
    """Runs a console command that answers with rows: (column names, rows as dicts)."""
    msgs = run(w, sql)
    assert not pgwire.errors(msgs), f"{sql}: {pgwire.errors(msgs)}"
    desc = [m for m in msgs if m.type == b"T"]
    assert desc, f"{sql}: no RowDescription in {pgwire.types(msgs)}"
    cols = [col["name"] for col in pgwire.parse_row_description(desc[0])]
    rows = [dict(zip(cols, r)) for r in pgwire.data_rows(msgs)]
    tags = [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"]
    assert tags == ["SHOW"], tags
    return cols, rows


def command(w: pgwire.PgWire, sql: str, timeout: float = 20) -> str:
    """Runs a console command that answers with a tag only; returns the tag (asserts no error)."""
    msgs = run(w, sql, timeout)
    assert not pgwire.errors(msgs), f"{sql}: {pgwire.errors(msgs)}"
    return [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"][0]


def error_of(w: pgwire.PgWire, sql: str) -> pgwire.ServerError:
    msgs = run(w, sql)
    errs = pgwire.errors(msgs)
    assert len(errs) == 1, pgwire.types(msgs)
    assert msgs[-1].type == b"Z"
    return errs[0]
