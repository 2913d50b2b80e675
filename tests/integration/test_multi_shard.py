"""Multi-shard execution at run time: fan-out over pooled shard connections, streaming, errors, cancel.

The differential suite (test_differential.py) proves answers equal plain Postgres's; this module checks
what happens around them: every protocol and driver gets the merged answer, a shard's error names the
shard, a transaction block refuses multi-shard statements cleanly, a client that stops reading or
leaves does not make shardgate buffer the result or leak shard connections, and a cancel reaches every
shard. One 2-shard cluster (transaction pooling), users hashed on id.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import asyncpg
import psycopg
import pytest

import conftest
import pgcluster
import pgwire
from txn_helpers import connect as wire_connect

pytestmark = pytest.mark.requires_shardgate

SHARDING_TOML = """\
  [[databases.sharded_tables]]
  name = "users"
  column = "id"
  type = "bigint"
  strategy = "hash"
"""

SHARD_DDL = "CREATE TABLE users (id bigint PRIMARY KEY, name text, score int);"
USERS = 2000


@pytest.fixture(scope="module")
def ms(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "multi-shard", shardgate_bin, num_shards=2,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  database_options={"default_shard": 0}, extra_toml=SHARDING_TOML) as c:
        for i in range(2):
            c.shards[i].primary.psql(SHARD_DDL)
        # Postgres's own hash partitioning decides where each row lives.
        placed = conftest.hash_shards(c.shards[0].primary, range(1, USERS + 1))
        for shard in range(2):
            keys = [k for k, s in placed.items() if s == shard]
            with psycopg.connect(c.shards[shard].primary.dsn(), autocommit=True) as conn:
                conn.execute("INSERT INTO users SELECT k, 'user' || k, k %% 97 FROM unnest(%s::bigint[]) k",
                             (keys,))
        yield c


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


def dsn(c: pgcluster.Cluster) -> str:
    return c.shardgate.dsn()


def shard_users(c: pgcluster.Cluster, shard: int) -> set[int]:
    with psycopg.connect(c.shards[shard].primary.dsn(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM users")}


def test_fan_out_returns_every_shards_rows_simple_protocol(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT id, name FROM users WHERE score = 5")
        rows = cur.fetchall()
        assert cur.statusmessage == f"SELECT {len(rows)}"
    expected = {k for k in range(1, USERS + 1) if k % 97 == 5}
    assert {r[0] for r in rows} == expected
    assert shard_users(ms, 0) & expected and shard_users(ms, 1) & expected, "rows must span both shards"


def test_count_through_psql(ms):
    out = ms.shardgate.psql("SELECT count(*) FROM users", extra_args=["-At"]).stdout
    assert int(out.strip()) == USERS


def test_extended_protocol_with_parameters(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        rows = conn.execute("SELECT id FROM users WHERE score = %s ORDER BY id LIMIT %s", (7, 5)).fetchall()
        assert [r[0] for r in rows] == sorted(k for k in range(1, USERS + 1) if k % 97 == 7)[:5]
        total = conn.execute("SELECT sum(score), count(*) FROM users WHERE id > %s", (100,)).fetchone()
        assert total == (sum(k % 97 for k in range(101, USERS + 1)), USERS - 100)


def test_asyncpg_prepared_statement(ms):
    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=ms.shardgate.port, user="postgres",
                                     password="postgres", database="app")
        try:
            stmt = await conn.prepare("SELECT id, name FROM users WHERE score = $1 ORDER BY id DESC")
            first = await stmt.fetch(11)
            second = await stmt.fetch(12)
            return first, second, [a.name for a in stmt.get_attributes()]
        finally:
            await conn.close()

    first, second, columns = asyncio.run(run())
    assert columns == ["id", "name"]
    assert [r["id"] for r in first] == sorted((k for k in range(1, USERS + 1) if k % 97 == 11), reverse=True)
    assert [r["id"] for r in second] == sorted((k for k in range(1, USERS + 1) if k % 97 == 12), reverse=True)


def test_asyncpg_cursor_forward_over_shards(ms):
    """asyncpg's Cursor.forward(n) sends MOVE FORWARD n on its protocol portal, whose rows
    shardgate keeps for a multi-shard query: it skips them there, and fetch goes on after them."""
    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=ms.shardgate.port, user="postgres",
                                     password="postgres", database="app")
        try:
            async with conn.transaction():
                cur = await conn.cursor("SELECT id FROM users WHERE id <= $1 ORDER BY id", 20)
                first = [r["id"] for r in await cur.fetch(2)]
                moved = await cur.forward(3)
                after = [r["id"] for r in await cur.fetch(2)]
                rest = await cur.forward(100)
            return first, moved, after, rest
        finally:
            await conn.close()

    assert asyncio.run(run()) == ([1, 2], 3, [6, 7], 13)


def test_move_on_a_portal_over_shards_as_postgres_reads_it(ms):
    """MOVE on a multi-shard portal shardgate keeps is read by the parser, as Postgres reads it
    (comments, NEXT, +n, ALL); forms that need the cursor's position get 0A000, not a guess."""
    w = wire_connect(ms.shardgate.port)
    for sql, want in (("MOVE 2 p /* two */", "MOVE 2"), ("MOVE NEXT IN p", "MOVE 1"),
                      ("move forward +3 from \"p\"", "MOVE 3"), ("MOVE 0 p", "0A000")):
        assert not pgwire.errors(w.simple("BEGIN"))
        w.send(pgwire.parse("", "SELECT id FROM users ORDER BY id") + pgwire.bind("p", "")
               + pgwire.execute("p", max_rows=2) + pgwire.sync())
        assert pgwire.data_rows(w.recv_until(b"Z", timeout=20)) == [["1"], ["2"]]
        msgs = w.simple(sql)
        got = [e.code for e in pgwire.errors(msgs)] or [pgwire.parse_command_complete(m) for m in msgs if m.type == b"C"]
        assert got == [want], (sql, msgs)
        if want.startswith("MOVE"):
            moved = int(want.split()[1])
            w.send(pgwire.execute("p", max_rows=1) + pgwire.sync())
            assert pgwire.data_rows(w.recv_until(b"Z", timeout=20)) == [[str(3 + moved)]], sql
        w.simple("ROLLBACK")
    w.close()


def test_error_on_one_shard_names_it(ms):
    # 1/(id - k) fails only on the shard holding k.
    k = min(shard_users(ms, 1))
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero) as info:
            psycopg.ClientCursor(conn).execute(f"SELECT 1 / (id - {k}) FROM users").fetchall()
        assert "shard1" in (info.value.diag.message_detail or "")
        # The session goes on.
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == USERS


def _key_on(ms, shard: int, skip: int = 0) -> int:
    return sorted(shard_users(ms, shard))[skip]


def _scores(ms, keys: list[int]) -> dict[int, int]:
    out = {}
    for shard in range(2):
        with psycopg.connect(ms.shards[shard].primary.dsn(), autocommit=True) as conn:
            out.update(dict(conn.execute("SELECT id, score FROM users WHERE id = ANY(%s)", (keys,)).fetchall()))
    return out


def test_transaction_spanning_shards_commits_on_each(ms):
    k0, k1 = _key_on(ms, 0, 1), _key_on(ms, 1, 1)
    with psycopg.connect(dsn(ms)) as conn:
        conn.execute("UPDATE users SET score = -1 WHERE id = %s", (k0,))
        conn.execute("UPDATE users SET score = -2 WHERE id = %s", (k1,))
        # A multi-shard read inside the transaction sees both uncommitted updates.
        assert conn.execute("SELECT count(*) FROM users WHERE score < 0").fetchone()[0] == 2
        # Nothing is visible outside yet.
        assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}
        conn.commit()
    assert _scores(ms, [k0, k1]) == {k0: -1, k1: -2}
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute(f"UPDATE users SET score = id % 97 WHERE id IN ({k0}, {k1})")
        assert cur.statusmessage == "UPDATE 2"
    assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}


def test_commit_and_chain_over_shards_is_refused_before_anything_commits(ms):
    """Only the held shard would begin the chained transaction: shardgate refuses it, and the
    transaction can only roll back (nothing committed on any shard)."""
    k0, k1 = _key_on(ms, 0, 4), _key_on(ms, 1, 4)
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("UPDATE users SET score = -11 WHERE id = %s", (k0,))
        conn.execute("UPDATE users SET score = -12 WHERE id = %s", (k1,))
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("COMMIT AND CHAIN")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        assert conn.execute("ROLLBACK").statusmessage == "ROLLBACK"
        # On one shard it chains as Postgres does.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("UPDATE users SET score = -13 WHERE id = %s", (k0,))
        conn.execute("COMMIT AND CHAIN")
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        conn.execute("UPDATE users SET score = id %% 97 WHERE id = %s", (k0,))
        conn.execute("COMMIT")
    assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}


def test_float_merges_follow_extra_float_digits_set_in_the_transaction(ms):
    """A merged float sum or avg is refused (0A000) under an extra_float_digits below 1, where the
    shards print rounded values; the setting counts also when the open transaction set it (SET or
    SET LOCAL, not yet committed, even pipelined behind the SET), and no longer after a ROLLBACK."""
    query = "SELECT avg(score::float8 / 7), sum(score::float8 / 7) FROM users"

    def codes(msgs):
        return [e.code for e in pgwire.errors(msgs)]

    w = wire_connect(ms.shardgate.port)
    default = w.simple(query)
    assert codes(default) == [] and pgwire.data_rows(default)
    assert codes(w.simple("SET extra_float_digits = 3")) == []
    assert pgwire.data_rows(w.simple(query)) == pgwire.data_rows(default)  # shortest-exact either way
    w.close()
    for setting in ("SET LOCAL extra_float_digits = 0", "SET extra_float_digits TO 0"):
        # A new session, pipelined: the SET's reply is still owed when the query arrives.
        w = wire_connect(ms.shardgate.port)
        statements = ["BEGIN", setting, query, "ROLLBACK"]
        w.send(b"".join(pgwire.query(sql) for sql in statements))
        replies = [w.recv_until(b"Z", timeout=20) for _ in statements]
        assert codes(replies[2]) == ["0A000"], (setting, pgwire.errors(replies[2]))
        after = w.simple(query)
        assert codes(after) == [] and pgwire.data_rows(after) == pgwire.data_rows(default), setting
        w.close()


def test_set_earlier_in_an_extended_batch_holds_for_a_multi_shard_read(ms):
    """A SET executed earlier in the same extended batch (no Sync between) is in effect for a
    multi-shard read after it on every shard, as Postgres applies it at once; and it lasts after
    the Sync, with or without the client's own BEGIN in the batch."""
    read = "SELECT current_setting('statement_timeout') AS v FROM users GROUP BY 1"
    for begin in ((), ("BEGIN",)):
        w = wire_connect(ms.shardgate.port)
        batch = b"".join(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute("")
                         for sql in (*begin, "SET statement_timeout = '7s'", read))
        if begin:
            batch += pgwire.parse("", "COMMIT") + pgwire.bind("", "") + pgwire.execute("")
        w.send(batch + pgwire.sync())
        msgs = w.recv_until(b"Z", timeout=20)
        assert not pgwire.errors(msgs), (begin, pgwire.errors(msgs))
        assert pgwire.data_rows(msgs) == [["7s"]], begin
        after = w.simple(read)
        assert pgwire.data_rows(after) == [["7s"]], (begin, "after the Sync")
        w.close()


def test_session_formats_that_would_make_a_merge_wrong_are_refused(ms):
    """Three session settings under which a multi-shard answer would silently differ from one
    Postgres's, each refused with 0A000 while what stays right still works:
    standard_conforming_strings off (shardgate reads string literals as with it on: a backslash
    would be read otherwise, so routed and rewritten wrongly), extra_float_digits below 1 (the
    shards print floats rounded: sums and orders of the printed values are off) and a
    client_encoding other than UTF8 (the shards send text in it: shardgate's collations cannot
    order it, and Unicode escapes in a rewritten statement would be read in it)."""
    cases = [
        ("SET standard_conforming_strings = off", [
            (r"SELECT count(*) FROM users WHERE name <> 'x\' AND id = 0 AND \''", "0A000"),
            (r"SELECT id, 'a\\b' AS s FROM users ORDER BY id LIMIT 1", "0A000"),
            ("SELECT count(*) FROM users WHERE name <> 'x'", None),
        ]),
        ("SET extra_float_digits = 0", [
            ("SELECT sum(score::float8 / 7), avg(score::float8 / 7) FROM users", "0A000"),
            ("SELECT id FROM users ORDER BY score::float8 / 7, id LIMIT 3", "0A000"),
            ("SELECT score::float8 / 7 AS f, count(*) FROM users GROUP BY 1", "0A000"),
            ("SELECT max(score::float8 / 7), sum(score) FROM users", None),
        ]),
        ("SET client_encoding = 'LATIN1'", [
            ("SELECT name FROM users ORDER BY name LIMIT 3", "0A000"),
            ("SELECT min(name) FROM users", "0A000"),
            ("SELECT U&'\\00E9' AS s, count(*) FROM users", "0A000"),
            ("SELECT name, count(*) FROM users GROUP BY name ORDER BY count(*) DESC, 1 LIMIT 0", "0A000"),
            ("SELECT count(DISTINCT name) FROM users", None),
            ("SELECT id, name FROM users ORDER BY id LIMIT 2", None),
        ]),
    ]
    for setting, queries in cases:
        w = wire_connect(ms.shardgate.port)
        assert not pgwire.errors(w.simple(setting)), setting
        for sql, code in queries:
            for extended in (False, True):
                if extended:
                    w.send(pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute("") + pgwire.sync())
                    msgs = w.recv_until(b"Z", timeout=20)
                else:
                    msgs = w.simple(sql)
                got = [e.code for e in pgwire.errors(msgs)]
                assert got == ([code] if code else []), (setting, sql, extended, pgwire.errors(msgs))
        w.close()


def test_result_format_count_is_checked_against_the_clients_columns(ms):
    """Bind's result format codes are one per client column; the shard query has hidden ones
    (sort keys, collation probes), which must not count, and a wrong count is 08P01 at Bind."""
    sql = "SELECT id, name, score FROM users ORDER BY name, id LIMIT 3"
    w = wire_connect(ms.shardgate.port)
    for formats, error in (((0, 1, 0), None), ((0, 1), "08P01"), ((0, 1, 0, 1), "08P01")):
        w.send(pgwire.parse("", sql) + pgwire.bind("", "", result_formats=formats) + pgwire.execute("")
               + pgwire.sync())
        msgs = w.recv_until(b"Z", timeout=20)
        codes = [pgwire.parse_error(m).code for m in msgs if m.type == b"E"]
        if error is None:
            assert not codes and len(pgwire.data_rows(msgs)) == 3, (formats, codes)
        else:
            assert codes == [error], (formats, codes)
            assert "result formats but query has 3 columns" in pgwire.parse_error(
                [m for m in msgs if m.type == b"E"][0]).message
        assert msgs[-1].payload == b"I"
    w.close()


def _pipelined(ms, statements: list[str]) -> list[list]:
    """Sends the statements in one write; each one's messages up to its ReadyForQuery."""
    w = wire_connect(ms.shardgate.port)
    w.send(b"".join(pgwire.query(sql) for sql in statements))
    replies = [w.recv_until(b"Z", timeout=20) for _ in statements]
    w.close()
    return replies


def test_statements_pipelined_after_a_failed_transaction_are_routed(ms):
    """After BEGIN; <error>; ROLLBACK in one write, the statements behind them are routed (they
    went unrouted to the failed transaction's shard while its ROLLBACK's reply was owed)."""
    k1 = _key_on(ms, 1, 5)
    replies = _pipelined(ms, ["BEGIN", "SELECT 1/0", f"UPDATE users SET score = 0 WHERE id = {k1}",
                              "ROLLBACK", "SELECT count(*) FROM users", f"SELECT id FROM users WHERE id = {k1}",
                              "SHOW shardgate.read_preference"])
    assert [r[-1].payload for r in replies] == [b"T", b"E", b"E", b"I", b"I", b"I", b"I"]
    assert pgwire.data_rows(replies[4]) == [[str(USERS)]]
    assert pgwire.data_rows(replies[5]) == [[str(k1)]]
    assert pgwire.data_rows(replies[6]) == [["primary"]]


def test_savepoint_pipelined_before_the_transaction_moves_is_kept(ms):
    """BEGIN and SAVEPOINT run wherever; the first keyed statement moves the transaction to its
    shard and replays them there, also when they were pipelined (their replies still owed)."""
    k1 = _key_on(ms, 1, 6)
    before = _scores(ms, [k1])
    replies = _pipelined(ms, ["BEGIN", "SAVEPOINT s1", f"UPDATE users SET score = -21 WHERE id = {k1}",
                              "RELEASE SAVEPOINT s1", f"UPDATE users SET name = name WHERE id = {k1}", "COMMIT"])
    errors = [pgwire.parse_error(m).code for r in replies for m in r if m.type == b"E"]
    assert errors == [] and replies[-1][-1].payload == b"I", errors
    assert _scores(ms, [k1]) == {k1: -21}
    _pipelined(ms, [f"UPDATE users SET score = {before[k1]} WHERE id = {k1}"])


def test_simple_query_write_over_shards_sends_no_nodata(ms):
    """NoData belongs to the extended protocol: a simple Query's reply never has one."""
    replies = _pipelined(ms, ["UPDATE users SET score = score WHERE score < 0"])
    assert [m.type for m in replies[0]] == [b"C", b"Z"], [m.type for m in replies[0]]


def test_multi_shard_portal_outlives_messages_before_its_execute(ms):
    """A Parse, a Describe of a statement or another portal's Bind between a multi-shard portal's
    Bind and its Execute leave the portal alone, as in Postgres (it was dropped: 34000)."""
    sql = "SELECT id FROM users ORDER BY id LIMIT 3"
    w = wire_connect(ms.shardgate.port)
    for between in (pgwire.parse("x", "SELECT 1"), pgwire.parse("", "SELECT 1") + pgwire.describe("S", "s"),
                    pgwire.parse("x", "SELECT 1") + pgwire.bind("q", "x")):
        w.send(pgwire.parse("s", sql) + pgwire.bind("p", "s") + between + pgwire.execute("p")
               + pgwire.close("S", "s") + pgwire.close("S", "x") + pgwire.sync())
        msgs = w.recv_until(b"Z", timeout=20)
        assert not pgwire.errors(msgs), pgwire.errors(msgs)
        assert pgwire.data_rows(msgs) == [["1"], ["2"], ["3"]]
    w.close()


def _shape(msgs: list[pgwire.Message]) -> list[str]:
    """Message types, with a RowDescription's column names and an error's SQLSTATE."""
    out = []
    for m in msgs:
        t = m.type.decode()
        if m.type == b"T":
            t += ":" + ",".join(c["name"] for c in pgwire.parse_row_description(m))
        elif m.type in (b"E", b"N"):
            t += ":" + pgwire.parse_error(m).code
        out.append(t)
    return out


def _same_as_shard_postgres(ms, batches: list[bytes], shape=_shape) -> list[list[str]]:
    """Each batch (sent after the last one's ReadyForQuery) gets replies of the same shape through
    shardgate as from shard 0's Postgres on its own. Returns shardgate's."""
    def run(port: int) -> list[list[str]]:
        with wire_connect(port) as w:
            got = []
            for data in batches:
                w.send(data)
                got.append(shape(w.recv_until(b"Z", timeout=20)))
            return got

    through = run(ms.shardgate.port)
    assert through == run(ms.shards[0].primary.port)
    return through


def test_described_multi_shard_portal_is_answered_before_what_follows(ms):
    """A Describe of a multi-shard portal gets its RowDescription right away, in order, when another
    statement (or the end of the transaction) follows it before Sync; its rows are the later
    Execute's, with no second RowDescription."""
    keyed = (pgwire.parse("", "SELECT id, name FROM users WHERE id = $1")
             + pgwire.bind("", "", (str(_key_on(ms, 0)),)) + pgwire.describe("P") + pgwire.execute())
    described = (pgwire.close("S", "s1") + pgwire.parse("s1", "SELECT count(*) FROM users")
                 + pgwire.bind("p1", "s1") + pgwire.describe("P", "p1"))
    commit = pgwire.parse("", "COMMIT") + pgwire.bind("", "") + pgwire.execute()
    _same_as_shard_postgres(ms, [described + keyed + pgwire.sync()])
    _same_as_shard_postgres(ms, [described + commit + pgwire.sync()])
    _same_as_shard_postgres(ms, [pgwire.query("BEGIN"), described + keyed + pgwire.sync(),
                                 pgwire.execute("p1") + pgwire.describe("P", "p1") + pgwire.sync(),
                                 pgwire.query("ROLLBACK")])
    # The unnamed portal, replaced by the next Bind.
    _same_as_shard_postgres(ms, [pgwire.parse("", "SELECT id FROM users ORDER BY id LIMIT 2")
                                 + pgwire.bind("", "") + pgwire.describe("P") + pgwire.parse("", "SELECT 1 AS one")
                                 + pgwire.bind("", "") + pgwire.execute() + pgwire.sync()])


def test_multi_shard_write_executed_with_a_row_limit_gets_no_nodata(ms):
    """Execute never answers NoData: a multi-shard write that was not described, executed with a
    row limit, gets its error (or tag) alone."""
    for sql in ("UPDATE users SET score = score / 0", "UPDATE users SET score = score WHERE score < 0"):
        _same_as_shard_postgres(ms, [pgwire.close("S", "s1") + pgwire.parse("s1", sql) + pgwire.bind("", "s1")
                                     + pgwire.execute("", max_rows=1) + pgwire.sync()])


def test_multi_shard_portal_bound_twice_gets_42p03(ms):
    """A second Bind of a named multi-shard portal in its batch fails as in Postgres (duplicate
    cursor), whether the portal ran already or not; the rest of the batch is skipped."""
    parse = pgwire.close("S", "s1") + pgwire.parse("s1", "SELECT count(*) FROM users")
    for between in (b"", pgwire.describe("P", "p1"), pgwire.execute("p1", max_rows=1), pgwire.execute("p1")):
        _same_as_shard_postgres(ms, [parse + pgwire.bind("p1", "s1") + between + pgwire.bind("p1", "s1")
                                     + pgwire.execute("p1") + pgwire.sync()])


def test_multi_shard_portal_run_to_its_end_is_answered_as_postgres_answers(ms):
    """A portal over several shards that one Execute ran to its end still exists in its transaction,
    as in Postgres: a later Execute (in its batch or a later one, with or without a row limit) gets
    no rows and "SELECT 0", a Describe its columns, a Close CloseComplete; the portal of a write
    gets 55000 (a portal runs once). Compared message by message, with the tags, against shard 0's
    Postgres."""
    select = "SELECT id FROM users ORDER BY id LIMIT 3"
    write = "UPDATE users SET score = score WHERE score < -1000000"

    def bound(sql: str, portal: str, describe: bool = True) -> bytes:
        return (pgwire.parse("", sql) + pgwire.bind(portal, "")
                + (pgwire.describe("P", portal) if describe else b""))

    def shape(msgs: list[pgwire.Message]) -> list[str]:
        return [m.type.decode() + (":" + m.payload.rstrip(b"\0").decode() if m.type == b"C" else "")
                + (":" + pgwire.parse_error(m).code if m.type == b"E" else "") for m in msgs
                if m.type != b"D"]

    batches = [pgwire.query("BEGIN"),
               bound(select, "p1") + pgwire.execute("p1") + pgwire.execute("p1") + pgwire.describe("P", "p1")
               + pgwire.execute("p1", max_rows=1) + pgwire.sync(),
               pgwire.execute("p1") + pgwire.close("P", "p1") + pgwire.sync(),
               bound(select, "") + pgwire.execute() + pgwire.execute() + pgwire.sync(),
               bound(write, "p3", describe=False) + pgwire.execute("p3") + pgwire.execute("p3") + pgwire.sync(),
               pgwire.query("ROLLBACK")]

    through = _same_as_shard_postgres(ms, batches, shape)
    assert through[1][-3:] == ["T", "C:SELECT 0", "Z"], through[1]
    # Not described before its end: the shards no longer have its columns.
    with wire_connect(ms.shardgate.port) as w:
        w.send(pgwire.query("BEGIN"))
        w.recv_until(b"Z")
        w.send(bound(select, "p2", describe=False) + pgwire.execute("p2") + pgwire.describe("P", "p2")
               + pgwire.sync())
        msgs = w.recv_until(b"Z", timeout=20)
        assert [pgwire.parse_error(m).code for m in msgs if m.type == b"E"] == ["0A000"], shape(msgs)
        w.send(pgwire.query("ROLLBACK"))
        w.recv_until(b"Z")


def test_multi_shard_bind_with_the_wrong_parameter_count_fails_at_bind(ms):
    """A Bind of a statement over several shards with fewer or more values than its parameters
    gets Postgres's 08P01 in place of BindComplete (counted from the highest $n or the types Parse
    declared, whichever is more), not a BindComplete and an error at Execute, or (too many) a
    statement run with values it ignores, the rest of its batch after it."""
    cases = [("SELECT id FROM users WHERE id = $1 OR name = '$2'", (), ()),
             ("UPDATE users SET name = name || $2 WHERE score < $1", (), ("-1",)),
             ("SELECT count(*) FROM users WHERE score > $1", (23, 23), ("0",)),
             ("SELECT count(*) FROM users", (), ("!",)),
             ("SELECT count(*) FROM users WHERE score > $1", (), ("0", "1")),
             ("SELECT count(*) FROM users WHERE score > $1", (23, 23), ("0", "1", "2")),
             ("SELECT id FROM users WHERE score > $1 ORDER BY id LIMIT $2", (), ("1", "2", "3")),
             ("SELECT id FROM users WHERE score > $1 ORDER BY id LIMIT $2", (), ("1", "2"))]
    for sql, oids, values in cases:
        batch = (pgwire.close("S", "s1") + pgwire.parse("s1", sql, oids) + pgwire.bind("", "s1", values)
                 + pgwire.execute() + pgwire.sync())

        def run(port: int) -> tuple[list[str], list[str]]:
            with wire_connect(port) as w:
                w.send(batch)
                msgs = w.recv_until(b"Z", timeout=20)
                return _shape(msgs), [e.message for e in pgwire.errors(msgs)]

        assert run(ms.shardgate.port) == run(ms.shards[0].primary.port), sql


def test_transaction_spanning_shards_rolls_back_everywhere(ms):
    k0, k1 = _key_on(ms, 0, 2), _key_on(ms, 1, 2)
    with psycopg.connect(dsn(ms)) as conn:
        conn.execute("UPDATE users SET score = -5 WHERE id = %s", (k0,))
        cur = psycopg.ClientCursor(conn)
        cur.execute("UPDATE users SET score = -6 WHERE score = %d" % (k1 % 97))  # every shard
        conn.execute("UPDATE users SET score = -7 WHERE id = %s", (k1,))
        conn.rollback()
    assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}


def test_failure_on_one_shard_fails_the_whole_transaction(ms):
    k0, k1 = _key_on(ms, 0, 3), _key_on(ms, 1, 3)
    with psycopg.connect(dsn(ms)) as conn:
        conn.execute("UPDATE users SET score = -9 WHERE id = %s", (k0,))
        with pytest.raises(psycopg.errors.DivisionByZero):
            psycopg.ClientCursor(conn).execute(f"SELECT 1 / (id - {k1}) FROM users").fetchall()
        # As in Postgres: everything but the end of the transaction is refused now.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1 FROM users WHERE id = %s", (k0,))
        conn.rollback()
    assert _scores(ms, [k0]) == {k0: k0 % 97}
    # COMMIT of a failed transaction spanning shards rolls back (the answer is ROLLBACK).
    with psycopg.connect(dsn(ms)) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("UPDATE users SET score = -9 WHERE id = %s", (k0,))
        with pytest.raises(psycopg.errors.DivisionByZero):
            cur.execute(f"SELECT 1 / (id - {k1}) FROM users").fetchall()
        cur.execute("COMMIT")
        assert cur.statusmessage == "ROLLBACK"
    assert _scores(ms, [k0]) == {k0: k0 % 97}


def test_nested_transactions_span_shards(ms):
    """psycopg's nested transaction blocks (SAVEPOINT / RELEASE / ROLLBACK TO) in a transaction over
    both shards, with multi-shard statements inside them: a failed inner block undoes its part on
    every shard, the outer transaction goes on and commits the rest."""
    k0, k1 = _key_on(ms, 0, 4), _key_on(ms, 1, 4)
    with psycopg.connect(dsn(ms)) as conn:
        with conn.transaction():
            conn.execute("UPDATE users SET score = -11 WHERE id = %s", (k0,))
            with conn.transaction():  # shard 1 joins inside the savepoint, which is released
                conn.execute("UPDATE users SET score = -12 WHERE id = %s", (k1,))
            with pytest.raises(psycopg.errors.DivisionByZero):
                with conn.transaction():
                    cur = psycopg.ClientCursor(conn)
                    cur.execute(f"UPDATE users SET score = -13 WHERE id IN ({k0}, {k1})")  # both shards
                    assert cur.statusmessage == "UPDATE 2"
                    cur.execute(f"SELECT 1 / (id - {k1}) FROM users").fetchall()
            with pytest.raises(psycopg.errors.UndefinedTable):
                with conn.transaction():
                    conn.execute("UPDATE users SET score = -14 WHERE id = %s", (k0,))
                    conn.execute("SELECT * FROM no_such_table")
            got = conn.execute("SELECT id, score FROM users WHERE score < 0 ORDER BY id").fetchall()
            assert got == sorted([(k0, -11), (k1, -12)]), got
            assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}  # nothing visible outside yet
    assert _scores(ms, [k0, k1]) == {k0: -11, k1: -12}
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        psycopg.ClientCursor(conn).execute(f"UPDATE users SET score = id % 97 WHERE id IN ({k0}, {k1})")
    assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}


def test_settings_changed_in_a_transaction_hold_on_shards_that_join_it(ms):
    k0 = _key_on(ms, 0, 6)
    with psycopg.connect(dsn(ms)) as conn:
        conn.execute("SELECT name FROM users WHERE id = %s", (k0,))  # the transaction is on shard 0
        conn.execute("SET work_mem = '7MB'")
        # Each shard reports its own value: one distinct value means every shard has the SET.
        assert conn.execute("SELECT DISTINCT current_setting('work_mem') FROM users").fetchall() == [("7MB",)]
        conn.commit()
        assert conn.execute("SELECT DISTINCT current_setting('work_mem') FROM users").fetchall() == [("7MB",)]
        conn.rollback()


def test_set_in_a_transaction_already_on_several_shards_runs_on_each(ms):
    distinct_work_mem = "SELECT DISTINCT current_setting('work_mem') FROM users"  # one row per value seen
    with psycopg.connect(dsn(ms)) as conn:
        conn.execute("SELECT count(*) FROM users")  # runs on both shards: the transaction spans them
        conn.execute("SET work_mem = '9MB'")
        assert conn.execute(distinct_work_mem).fetchall() == [("9MB",)]
        conn.execute("SET LOCAL work_mem = '10MB'")
        assert conn.execute(distinct_work_mem).fetchall() == [("10MB",)]
        # In one query with another statement it would reach one shard only: refused.
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            conn.execute("SET work_mem = '11MB'; SELECT 1", prepare=False)
        assert "several shards" in str(refused.value)
        conn.rollback()
        assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)
        assert conn.execute(distinct_work_mem).fetchall() == [("4MB",)]
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (USERS,)
        conn.execute("SET work_mem = '9MB'")
        conn.commit()
        assert conn.execute(distinct_work_mem).fetchall() == [("9MB",)]


def test_client_leaving_a_transaction_spanning_shards_commits_nothing(ms):
    k0, k1 = _key_on(ms, 0, 5), _key_on(ms, 1, 5)
    w = wire_connect(ms.shardgate.port)
    for sql in ("BEGIN", f"UPDATE users SET score = -3 WHERE id = {k0}",
                f"UPDATE users SET score = -3 WHERE id = {k1}"):
        msgs = w.simple(sql)
        assert all(m.type != b"E" for m in msgs), sql
    w.abort()
    time.sleep(0.5)
    assert _scores(ms, [k0, k1]) == {k0: k0 % 97, k1: k1 % 97}


def test_refusal_pipelined_behind_a_transaction_fails_it(ms):
    """Statements sent in one write: the refusal comes while BEGIN's and the SELECT's replies are
    still owed, and must fail the transaction they opened (not answer 'I' and let it commit, nor
    hang at the COMMIT)."""
    k0 = _key_on(ms, 0)
    before = _scores(ms, [k0])
    for opening in (["BEGIN"], ["BEGIN", f"SELECT 1 FROM users WHERE id = {k0}"]):
        stmts = opening + ["SELECT id, row_number() OVER () FROM users",
                           f"UPDATE users SET score = -7 WHERE id = {k0}", "COMMIT"]
        w = wire_connect(ms.shardgate.port)
        w.send(b"".join(pgwire.query(s) for s in stmts))
        replies = [w.recv_until(b"Z", timeout=20) for _ in stmts]
        statuses = [r[-1].payload for r in replies]
        assert statuses == [b"T"] * len(opening) + [b"E", b"E", b"I"], (stmts, statuses)
        errors = [pgwire.parse_error(m).code for r in replies for m in r if m.type == b"E"]
        assert errors == ["0A000", "25P02"], stmts
        assert pgwire.parse_command_complete(replies[-1][0]) == "ROLLBACK"
        w.close()
    assert _scores(ms, [k0]) == before


def _raw_query(port: int, sql: str) -> pgwire.PgWire:
    """A logged-in wire-protocol client that sends `sql` and reads nothing more."""
    w = wire_connect(port)
    w.send(pgwire.query(sql))
    return w


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_client_that_stops_reading_is_not_buffered(ms):
    # ~100 MB of rows; the client reads none of them for a while.
    pid = ms.shardgate.pid
    before = _rss_kib(pid)
    s = _raw_query(ms.shardgate.port,
                   "SELECT u.id, repeat('x', 1000) FROM users u, generate_series(1, 50) g")
    time.sleep(3)
    grown = _rss_kib(pid) - before
    # It is the fan-out's answer that waits (not an error).
    assert s.recv().type == b"T"
    assert s.recv().type == b"D"
    s.abort()
    assert grown < 40 * 1024, f"shardgate buffered {grown} KiB for a client that reads nothing"
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == USERS


def test_client_leaving_mid_fan_out_leaks_nothing(ms):
    for _ in range(5):
        s = _raw_query(ms.shardgate.port,
                       "SELECT u.id, repeat('x', 1000) FROM users u, generate_series(1, 20) g")
        assert s.recv().type == b"T"
        s.abort()
    # Every pool still serves: as many sessions as the pool size, each running a fan-out.
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        for _ in range(20):
            assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == USERS


def test_cancel_reaches_every_shard(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            psycopg.ClientCursor(conn).execute("SELECT pg_sleep(30) FROM users WHERE id IN (1, 2, 3, 4)")
        timer.join()
        assert time.monotonic() - started < 15
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == USERS


def test_update_and_delete_on_every_shard_sum_their_tags(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("UPDATE users SET name = name WHERE score = 3")
        assert cur.statusmessage == f"UPDATE {sum(1 for k in range(1, USERS + 1) if k % 97 == 3)}"
        cur.execute("DELETE FROM users WHERE score = 1000")
        assert cur.statusmessage == "DELETE 0"


def _placement(ms, keys: list[int]) -> dict[int, int]:
    out = {}
    for shard in range(2):
        with psycopg.connect(ms.shards[shard].primary.dsn(), autocommit=True) as conn:
            for (k,) in conn.execute("SELECT id FROM users WHERE id = ANY(%s)", (keys,)):
                assert k not in out, f"key {k} on two shards"
                out[k] = shard
    return out


def _expected_shard(ms, keys: list[int]) -> dict[int, int]:
    return conftest.hash_shards(ms.shards[0].primary, keys)


def test_copy_from_stdin_splits_rows_by_key(ms):
    text_keys = list(range(100001, 100301))
    csv_keys = list(range(100301, 100401))
    try:
        with psycopg.connect(dsn(ms), autocommit=True) as conn:
            with conn.cursor() as cur:
                with cur.copy("COPY users (id, name, score) FROM STDIN") as copy:
                    for k in text_keys:
                        copy.write(f"{k}\tname\\t{k}\t{k % 97}\n")
                assert cur.statusmessage == f"COPY {len(text_keys)}"
                with cur.copy("COPY users (name, id) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                    copy.write("name,id\n")
                    for k in csv_keys:
                        copy.write(f'"a, ""quoted""\nname",{k}\n')
                assert cur.statusmessage == f"COPY {len(csv_keys)}"
            names = dict(conn.execute("SELECT id, name FROM users WHERE id IN (100001, 100301)").fetchall())
        assert names == {100001: "name\t100001", 100301: 'a, "quoted"\nname'}
        keys = text_keys + csv_keys
        assert _placement(ms, keys) == _expected_shard(ms, keys)
    finally:
        with psycopg.connect(dsn(ms), autocommit=True) as conn:
            conn.execute("DELETE FROM users WHERE id > 100000")


def test_copy_with_a_bad_row_loads_nothing_anywhere(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor() as cur:
                with cur.copy("COPY users (id, name) FROM STDIN") as copy:
                    for k in range(200001, 200200):
                        copy.write(f"{k}\tx\n")
                    copy.write("not-a-key\tx\n")
                    for k in range(200200, 200300):
                        copy.write(f"{k}\tx\n")
        assert conn.execute("SELECT count(*) FROM users WHERE id > 200000").fetchone()[0] == 0
    assert _placement(ms, list(range(200001, 200300))) == {}


def _all_users(ms) -> set[tuple[int, str, int]]:
    rows = set()
    for shard in range(2):
        with psycopg.connect(ms.shards[shard].primary.dsn(), autocommit=True) as conn:
            rows |= set(conn.execute("SELECT id, name, score FROM users").fetchall())
    return rows


def test_dates_merge_only_in_iso_datestyle(ms):
    """The merge reads the shards' text: under another DateStyle it refuses instead of misreading."""
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        conn.execute("SET DateStyle = 'SQL, DMY'")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            conn.execute("SELECT max(date '2020-01-01' + id::int) FROM users").fetchall()
        assert "DateStyle" in (refused.value.diag.message_detail or "") + (refused.value.diag.message_hint or "")
        # Without a merge of dates, any DateStyle is fine.
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (USERS,)
        conn.execute("SET DateStyle = 'ISO, DMY'")
        rows = conn.execute("SELECT (date '2020-01-01' + id::int)::text AS d FROM users "
                            "ORDER BY date '2020-01-01' + id::int DESC LIMIT 2").fetchall()
        assert rows == [("2025-06-23",), ("2025-06-22",)]


def test_copy_to_stdout_gathers_every_shards_rows(ms):
    expected = _all_users(ms)
    with psycopg.connect(dsn(ms), autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy("COPY users (id, name, score) TO STDOUT") as copy:
            text = b"".join(bytes(chunk) for chunk in copy).decode()
        assert cur.rowcount == len(expected)  # from the summed "COPY n" tag
        got = [line.split("\t") for line in text.splitlines()]
        assert sorted((int(i), n, int(s)) for i, n, s in got) == sorted(expected)

        with cur.copy("COPY users TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
            lines = b"".join(bytes(chunk) for chunk in copy).decode().splitlines()
        assert lines[0] == "id,name,score" and "id,name,score" not in lines[1:]
        assert len(lines) == len(expected) + 1

        with cur.copy("COPY users (id, score) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int8", "int4"])
            rows = list(copy.rows())
        assert sorted(rows) == sorted((i, s) for i, _, s in expected)
        # No rows: one file header and one trailer, in one message as Postgres sends them.
        with cur.copy("COPY (SELECT id FROM users WHERE score < 0) TO STDOUT (FORMAT binary)") as copy:
            assert [bytes(c) for c in copy] == [b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"]

        with cur.copy("COPY (SELECT id, score * 2 FROM users WHERE score = 5) TO STDOUT") as copy:
            text = b"".join(bytes(chunk) for chunk in copy).decode()
        assert sorted(tuple(map(int, line.split("\t"))) for line in text.splitlines()) == sorted(
            (i, 10) for i, _, s in expected if s == 5)
        assert cur.rowcount == sum(1 for r in expected if r[2] == 5)


def test_copy_to_stdout_refuses_what_it_cannot_do_across_shards(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        for sql in ("COPY (SELECT id FROM users ORDER BY id) TO STDOUT",
                    "COPY (SELECT count(*) FROM users) TO STDOUT",
                    "COPY users TO '/tmp/shardgate-copy-out-test'"):
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                with conn.cursor().copy(sql) as copy:
                    for _ in copy:
                        pass
        # A COPY of one shard's rows is not a multi-shard statement at all.
        with conn.cursor().copy("COPY (SELECT name FROM users WHERE id = 7) TO STDOUT") as copy:
            assert b"".join(bytes(c) for c in copy) == b"user7\n"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_copy_to_stdout_error_on_one_shard_names_it_and_session_goes_on(ms):
    with psycopg.connect(dsn(ms), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero) as failure:
            with conn.cursor().copy("COPY (SELECT id / (score - 5) FROM users) TO STDOUT") as copy:
                for _ in copy:
                    pass
        assert "shardgate: the error happened on shard" in (failure.value.diag.message_detail or "")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (USERS,)


PGBENCH_TOML = "".join(f"""
  [[databases.sharded_tables]]
  name = "pgbench_{table}"
  column = "{column}"
  type = "integer"
  strategy = "hash"
""" for table, column in (("accounts", "aid"), ("branches", "bid"), ("tellers", "tid"), ("history", "aid")))


def test_pgbench_initializes_and_runs_through_shardgate(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "multi-shard-pgbench", shardgate_bin, num_shards=2,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  database_options={"default_shard": 0}, extra_toml=PGBENCH_TOML) as c:
        pgbench = str(pgcluster.pg_bindir() / "pgbench")
        env = {"PGPASSWORD": "postgres", "PATH": "/usr/bin:/bin"}
        base = ["-h", "127.0.0.1", "-p", str(c.shardgate.port), "-U", "postgres"]
        init = subprocess.run([pgbench, "-i", "-s", "2", *base, "app"], capture_output=True, text=True,
                              env=env, timeout=180)
        assert init.returncode == 0, init.stderr
        counts = []
        for shard in range(2):
            with psycopg.connect(c.shards[shard].primary.dsn(), autocommit=True) as conn:
                counts.append(conn.execute(
                    "SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_branches),"
                    " (SELECT count(*) FROM pgbench_tellers),"
                    " (SELECT count(*) FROM pgbench_accounts"
                    "  WHERE NOT satisfies_hash_partition('pgbench_probe'::regclass, 2, %s, aid))",
                    (shard,)).fetchone() if _probe(conn) else None)
        assert counts[0][:3] != (0, 0, 0) and counts[1][:3] != (0, 0, 0)
        assert [sum(x) for x in zip(*(row[:3] for row in counts))] == [200000, 2, 20]
        assert counts[0][3] == 0 and counts[1][3] == 0, "rows on a shard Postgres would not put them on"
        run = subprocess.run([pgbench, "-T", "5", "-c", "4", "-j", "2", *base, "app"], capture_output=True,
                             text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "number of failed transactions: 0" in run.stdout
        with psycopg.connect(c.shardgate.dsn(), autocommit=True) as conn:
            # TPC-B keeps the sums equal across the tables, whichever shards the rows are on.
            branch, teller, account = (
                conn.execute(f"SELECT sum({col}) FROM pgbench_{table}").fetchone()[0]
                for table, col in (("branches", "bbalance"), ("tellers", "tbalance"), ("accounts", "abalance")))
            assert branch == teller == account


def _probe(conn) -> bool:
    conn.execute("CREATE TABLE IF NOT EXISTS pgbench_probe (aid int) PARTITION BY HASH (aid)")
    return True


def test_prepared_statement_whose_result_changed_gets_postgres_error(ms):
    """A named statement over both shards whose result gains a column (ALTER TABLE since it was
    described) fails as on Postgres, 0A000 "cached plan must not change result type", rather than
    sending rows the client would read with the old description; with the column gone it works
    again. The shards plan the statement afresh at each run, so shardgate compares."""
    query = "SELECT * FROM users WHERE score = $1 ORDER BY id LIMIT 2"
    with wire_connect(ms.shardgate.port) as w, wire_connect(ms.shardgate.port) as ddl:
        w.send(pgwire.parse("s1", query) + pgwire.describe("S", "s1") + pgwire.sync())
        assert not pgwire.errors(w.recv_until(b"Z"))
        run = pgwire.bind("", "s1", ("5",)) + pgwire.execute() + pgwire.sync()
        w.send(run)
        assert len(pgwire.data_rows(w.recv_until(b"Z"))) == 2
        ddl.send(pgwire.query("ALTER TABLE users ADD COLUMN extra int DEFAULT 7"))
        assert not pgwire.errors(ddl.recv_until(b"Z"))
        try:
            for _ in range(2):
                w.send(run)
                msgs = w.recv_until(b"Z")
                assert [e.code for e in pgwire.errors(msgs)] == ["0A000"], _shape(msgs)
                assert "cached plan must not change result type" in pgwire.errors(msgs)[0].message
                assert pgwire.data_rows(msgs) == []
        finally:
            ddl.send(pgwire.query("ALTER TABLE users DROP COLUMN extra"))
            assert not pgwire.errors(ddl.recv_until(b"Z"))
        w.send(run)
        assert len(pgwire.data_rows(w.recv_until(b"Z"))) == 2


def test_named_portal_bound_again_in_its_transaction_gets_42p03_wherever_it_lives(ms):
    """A named portal bound on a shard's server and bound again in the same transaction for a
    statement over both shards (answered by shardgate, or run on the other shard): Postgres fails
    the second Bind with 42P03 and skips the rest of the batch. Each server sees only its own
    portals, so shardgate keeps the names; the INSERT after the error must not run."""
    k0, k1 = _key_on(ms, 0), _key_on(ms, 1)
    fresh = USERS + 500  # no such user yet
    keyed = pgwire.parse("s1", "SELECT id FROM users WHERE id = $1")
    count = pgwire.parse("s2", "SELECT count(*) FROM users")
    insert = (pgwire.parse("", "INSERT INTO users (id, name) VALUES ($1, 'p')") + pgwire.bind("", "", (str(fresh),))
              + pgwire.execute())
    close = pgwire.close("S", "s1") + pgwire.close("S", "s2")
    batches = [
        # Its second Bind over both shards.
        [close + keyed + count + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2")
         + pgwire.bind("p2", "s2") + pgwire.execute("p2") + insert + pgwire.sync()],
        # In a transaction: bound in one batch, bound again in the next for the other shard.
        [pgwire.query("BEGIN"),
         close + keyed + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync(),
         pgwire.bind("p2", "s1", (str(k1),)) + pgwire.execute("p2") + insert + pgwire.sync(),
         pgwire.query("ROLLBACK")],
        # COMMIT (of the batch's implicit transaction) in between ends the portal: no error.
        [close + keyed + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2")
         + pgwire.parse("", "COMMIT") + pgwire.bind("", "") + pgwire.execute()
         + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync()],
        # Closed, then bound again: no error.
        [close + keyed + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.close("P", "p2")
         + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync()],
        # Two implicit transactions in one write, each binding it: the first's Sync ended its
        # portal, though its ReadyForQuery had not come back yet: no error.
        [close + keyed + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync()
         + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync(), b""],
        # Bound again in its transaction, with a statement that does not exist or too few values:
        # Postgres checks those before the portal's name (26000, 08P01).
        [pgwire.query("BEGIN"),
         close + keyed + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync(),
         pgwire.bind("p2", "nosuch") + pgwire.execute("p2") + pgwire.sync(), pgwire.query("ROLLBACK")],
        [pgwire.query("BEGIN"),
         close + keyed + pgwire.bind("p2", "s1", (str(k0),)) + pgwire.execute("p2") + pgwire.sync(),
         pgwire.bind("p2", "s1") + pgwire.execute("p2") + pgwire.sync(), pgwire.query("ROLLBACK")],
    ]
    for batch in batches:
        _same_as_shard_postgres(ms, batch)
    assert fresh not in shard_users(ms, 0) | shard_users(ms, 1)
