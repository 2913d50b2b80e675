"""Extended-protocol batches with transaction control and statements for several shards, compared with
one plain Postgres.

Each scenario is a list of steps sent on one raw connection (pgwire.py): a batch of statements (each
Parse/Bind/Describe/Execute of the unnamed statement) ended by Sync, or by Flush (all its replies
read, the batch going on in the next step), or a simple Query; or a batch ended by Sync and
pipelined (sent in one write with the step after it, its replies read after that write). It runs
  * through shardgate, on `users` hashed over two shards (keys chosen per shard), and
  * on one plain Postgres (database "ref" on shard 0's primary) holding the same rows,
and what the client sees of each step (message types, rows, tags, SQLSTATEs of errors and notices,
the ReadyForQuery status) must be the same, and so must the rows afterwards (read on the shards'
primaries directly and merged, each on its hash shard). A probe on the same connection and on a new
one (SHOW statement_timeout) ends each scenario, so a setting that leaks or is lost shows too.

shardgate may refuse (0A000) what its README documents as refused: savepoints or BEGIN in a batch
(without BEGIN) that already ran on both shards.
Such a refusal is accepted only for a statement of those kinds at a point where the transaction
has touched both shards; Postgres is then run with that statement replaced by one that fails with 0A000, and
everything else (later steps, rows) must match that run. Refused scenarios are printed.

Both pool modes (session, transaction). SHARDGATE_TARGET=direct runs the "through" side against
shard 0's primary too, which checks the scenarios' mechanics (both sides must then be equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg
import pytest

import conftest
import pgwire
from test_routing import COUNTRIES_SQL, SHARD_DDL, SHARDING_TOML, Routing, _postgres_hash_shards

HOST = "127.0.0.1"
REF_DB = "ref"
READ_TIMEOUT = 5.0  # one step's replies; a hang fails the scenario instead of blocking
QUIET_WAIT = 0.3  # listening for replies that must not come (a Flush after an error)
RAISE_0A000 = "DO $$BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '0A000'; END$$"
DEFERRED_CHECK = """
CREATE FUNCTION batchtx_check() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN IF NEW.name = 'bad' THEN RAISE EXCEPTION 'bad name' USING ERRCODE = '23514'; END IF;
  RETURN NULL; END$$;
CREATE CONSTRAINT TRIGGER batchtx_check AFTER INSERT OR UPDATE ON users DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION batchtx_check();
"""
SEED = {"A0": "seed", "A1": "seed"}  # rows every scenario starts from; B*, C* are free keys


# ---------------------------------------------------------------------------------------------
# Scenario vocabulary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class St:
    """One statement. params may name keys symbolically ("B0": a key on shard 0); kind says what
    the README lets shardgate refuse; shards is which shards it needs (empty: none, or any)."""

    sql: str
    params: tuple = ()
    kind: str = "dml"  # dml | begin | commit | rollback | savepoint | release | rollback_to | set | show
    shards: frozenset = frozenset()
    # "": Parse/Bind/Describe/Execute of the unnamed statement; "parse:NAME": only a Parse of the
    # named statement NAME; "exec:NAME": Bind/Describe/Execute of NAME, parsed before;
    # "bind:NAME": only a Bind of NAME to the unnamed portal (never executed); "binddescribe:NAME":
    # that Bind and a Describe of the portal (in a step ended by Sync); "describe:NAME": only
    # a Describe of the statement NAME (in a step ended by Sync).
    op: str = ""


@dataclass(frozen=True)
class Step:
    stmts: tuple[St, ...]
    end: str = "sync"  # sync | flush | query (one statement as a simple Query) | pipe (Sync, pipelined)


def _sh(k: str) -> frozenset:
    return frozenset({int(k[-1])})


BOTH = frozenset({0, 1})


def ins(k, name="new"):
    return St("INSERT INTO users (id, name) VALUES ($1, $2)", (k, name), shards=_sh(k))


def upd(k, name):
    return St("UPDATE users SET name = $2 WHERE id = $1", (k, name), shards=_sh(k))


def sel(k):
    return St("SELECT id, name FROM users WHERE id = $1", (k,), shards=_sh(k))


def nocol(k):  # Postgres rejects its Parse (42703) on k's shard
    return St("SELECT nosuchcol FROM users WHERE id = $1", (k,), shards=_sh(k))


def timeout_on(k):  # the session's statement_timeout as k's shard has it
    return St("SELECT current_setting('statement_timeout') FROM users WHERE id = $1", (k,), shards=_sh(k))


NOTABLE = St("SELECT id FROM nosuchtable WHERE id = $1", ("1",))  # 42P01 at Parse, on the default shard


def div0(k):  # 22012 on k's shard
    return St("SELECT 1 / (id - id) FROM users WHERE id = $1", (k,), shards=_sh(k))


CNT = St("SELECT count(*) FROM users", shards=BOTH)
ALL = St("SELECT id, name FROM users ORDER BY id", shards=BOTH)
MUPD = St("UPDATE users SET name = name || $1", ("!",), shards=BOTH)
MDIV0 = St("UPDATE users SET name = name || (1 / (id - id))::text", shards=BOTH)  # 22012 on both shards
# A name 'bad' fails a deferred trigger (23514) when the transaction commits: on both shards, on A1's
MBAD = St("UPDATE users SET name = 'bad'", shards=BOTH)
MBAD1 = St("UPDATE users SET name = CASE WHEN id = $1 THEN 'bad' ELSE 'ok' END", ("A1",), shards=BOTH)
BEGIN = St("BEGIN", kind="begin")
COMMIT = St("COMMIT", kind="commit")
ROLLBACK = St("ROLLBACK", kind="rollback")
SAVEPOINT = St("SAVEPOINT s", kind="savepoint")
ROLLBACK_TO = St("ROLLBACK TO SAVEPOINT s", kind="rollback_to")
RELEASE = St("RELEASE SAVEPOINT s", kind="release")
SET7 = St("SET statement_timeout = '7s'", kind="set")
SET_LOCAL8 = St("SET LOCAL statement_timeout = '8s'", kind="set")
SET9 = St("SET statement_timeout = '9s'", kind="set")
SHOW = St("SHOW statement_timeout", kind="show")


def S(*stmts):
    return Step(tuple(stmts), "sync")


def F(*stmts):
    return Step(tuple(stmts), "flush")


def Q(stmt):
    return Step((stmt,), "query")


def P(*stmts):
    return Step(tuple(stmts), "pipe")


def dup(k):  # k must exist: 23505 on its shard
    return ins(k, "dup")


def NPARSE(name, st):  # st as a named statement, parsed only (it needs no shard yet)
    return replace(st, op=f"parse:{name}", shards=frozenset())


def NEXEC(name, st):  # the named statement run with st's parameters
    return replace(st, op=f"exec:{name}")


def NBIND(name, st):  # the named statement bound with st's parameters, not executed
    return replace(st, op=f"bind:{name}")


def NBINDDESCRIBE(name, st):  # bound with st's parameters and the portal described, not executed
    return replace(st, op=f"binddescribe:{name}")


def NDESCRIBE(name):  # a Describe of statement `name` (26000 when there is none)
    return St("", op=f"describe:{name}")


# name -> steps. Keys: A0/A1 exist (seeded), B*/C* do not; the digit is the shard.
SCENARIOS: dict[str, list[Step]] = {
    "begin-2shards|commit": [S(BEGIN, ins("B0"), ins("B1")), S(COMMIT), S(ALL)],
    "begin-2shards|rollback": [S(BEGIN, ins("B0"), ins("B1")), S(ROLLBACK), S(ALL)],
    "begin-ins0-commit-ins1": [S(BEGIN, ins("B0"), COMMIT, ins("B1")), S(ALL)],
    "ins0-begin-ins1|rollback": [S(ins("B0"), BEGIN, ins("B1")), S(ROLLBACK), S(ALL)],
    "begin-ins0-ins1-commit": [S(BEGIN, ins("B0"), ins("B1"), COMMIT), S(CNT)],
    "begin-ins0-dup1-ins0|rollback": [S(BEGIN, ins("B0"), dup("A1"), ins("C0")), S(ROLLBACK), S(ALL)],
    "begin-count-ins1|commit": [S(BEGIN, CNT, ins("B1")), S(COMMIT), S(CNT)],
    "ins0-count-ins1": [S(ins("B0"), CNT, ins("B1")), S(ALL)],
    "begin-ins0-multiupdate|rollback": [S(BEGIN, ins("B0"), MUPD), S(ALL), S(ROLLBACK), S(ALL)],
    "begin-savepoint-ins0-ins1-rollbackto|commit": [
        S(BEGIN, SAVEPOINT, ins("B0"), ins("B1"), ROLLBACK_TO), S(COMMIT), S(ALL)],
    "begin-set-ins0-ins1|show|commit|show": [S(BEGIN, SET7, ins("B0"), ins("B1")), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-set-ins0-ins1-flush|sync|show|commit|show": [
        F(BEGIN, SET7, ins("B0"), ins("B1")), S(), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-dup|ins1-25P02|rollback": [S(BEGIN, dup("A0")), S(ins("B1")), S(ROLLBACK), S(ALL)],
    "begin-2shards|div0|commit-is-rollback": [
        S(BEGIN, ins("B0"), ins("B1")), S(div0("A0")), S(sel("A1")), S(COMMIT), S(ALL)],
    "ins0-commit-dup1": [S(ins("B0"), COMMIT, dup("A1")), S(ALL)],
    "ins0-rollback-ins1": [S(ins("B0"), ROLLBACK, ins("B1")), S(ALL)],
    "ins0-ins1-rollback-ins0": [S(ins("B0"), ins("B1"), ROLLBACK, ins("C0")), S(ALL)],
    "begin-ins1-commit-ins0": [S(BEGIN, ins("B1"), COMMIT, ins("B0")), S(ALL)],
    "ins0-ins1-div0-ins1": [S(ins("B0"), ins("B1"), div0("A0"), ins("C1")), S(ALL)],
    "div0on1-ins0|count": [S(div0("A1"), ins("B0")), S(CNT)],
    "begin-ins0-dup1-flush|ins0-sync|rollback": [
        F(BEGIN, ins("B0"), dup("A1")), S(ins("C0")), S(ROLLBACK), S(ALL)],
    "ins0-ins1-flush|dup0-flush|ins1-sync": [F(ins("B0"), ins("B1")), F(dup("A0")), S(ins("C1")), S(ALL)],
    "set-ins0-ins1|show": [S(SET7, ins("B0"), ins("B1")), S(SHOW)],
    "set-ins0|show": [S(SET7, ins("B0")), S(SHOW)],
    # A batch shardgate fails itself (a Bind of a statement that does not exist) undoes its SET too,
    # also for the connections a multi-shard statement brings in line with the session afterwards.
    "set-bindmissing|count|show": [S(SET7, NEXEC("nosuch", sel("A0"))), S(CNT), S(timeout_on("A0")),
                                   S(timeout_on("A1")), S(SHOW)],
    # A SET bound and never executed changes nothing; executed, it does.
    "bindset|count|show": [S(NPARSE("s1", SET7), NBIND("s1", SET7)), S(CNT), S(timeout_on("A0")),
                           S(timeout_on("A1")), S(SHOW)],
    "parse-exec-set|count|show": [S(NPARSE("s1", SET7), NEXEC("s1", SET7)), S(CNT), S(timeout_on("A0")),
                                  S(timeout_on("A1")), S(SHOW)],
    "set-ins1-bindmissing|count|show": [S(SET7, ins("B1"), NEXEC("nosuch", sel("A0"))), S(CNT), S(SHOW), S(ALL)],
    "set-ins1|show": [S(SET7, ins("B1")), S(SHOW)],
    "ins0-ins1-set|show": [S(ins("B0"), ins("B1"), SET7), S(SHOW), S(ALL)],
    # Settings once the transaction runs on both shards (each shard runs them).
    "begin-ins0-ins1|set|show|commit|show": [
        S(BEGIN, ins("B0"), ins("B1")), S(SET7), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-ins0-ins1|setlocal-show|rollback|show": [
        S(BEGIN, ins("B0"), ins("B1")), S(SET_LOCAL8, SHOW), S(ROLLBACK), S(SHOW)],
    "begin-ins0-ins1|savepoint|set|rollbackto|show|commit|show": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), S(SET7), S(ROLLBACK_TO), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-ins0-ins1-set-ins0|rollback|show": [S(BEGIN, ins("B0"), ins("B1"), SET7, ins("C0")), S(ROLLBACK), S(SHOW)],
    "ins0-ins1-setlocal-show|show": [S(ins("B0"), ins("B1"), SET_LOCAL8, SHOW), S(SHOW)],
    "ins0-ins1-set-dup0|show": [S(ins("B0"), ins("B1"), SET7, dup("A0")), S(SHOW), S(ALL)],
    "multiupdate-setlocal-show|show": [S(MUPD, SET_LOCAL8, SHOW), S(SHOW)],
    "set-ins0-dup1|show": [S(SET7, ins("B0"), dup("A1")), S(SHOW), S(ALL)],
    "begin-setlocal-ins0-ins1-show|show|commit|show": [
        S(BEGIN, SET_LOCAL8, ins("B0"), ins("B1"), SHOW), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-ins0-set|ins1|rollback|show": [S(BEGIN, ins("B0"), SET7), S(ins("B1"), SHOW), S(ROLLBACK), S(SHOW)],
    "begin-ins0-savepoint-upd0-release|ins1|commit": [
        S(BEGIN, ins("B0"), SAVEPOINT, upd("A0", "x"), RELEASE), S(ins("B1")), S(COMMIT), S(ALL)],
    "begin-ins0-savepoint-ins0-rollbackto-ins1|commit": [
        S(BEGIN, ins("B0"), SAVEPOINT, ins("C0"), ROLLBACK_TO, ins("B1")), S(COMMIT), S(ALL)],
    "multiupdate-dup0": [S(MUPD, dup("A0")), S(ALL)],
    "multiupdate-div0on1": [S(MUPD, div0("A1")), S(ALL)],
    "ins0-multiupdate-dup1": [S(ins("B0"), MUPD, dup("A1")), S(ALL)],
    "multiupdate-ins0": [S(MUPD, ins("B0")), S(ALL)],
    "multiupdate-flush|sync": [F(MUPD), S(), S(ALL)],
    "multiupdate-flush|dup0": [F(MUPD), S(dup("A0")), S(ALL)],
    "multiupdate-multidiv0": [S(MUPD, MDIV0), S(ALL)],
    "multiupdate-multiupdate-ins1": [S(MUPD, MUPD, ins("B1")), S(ALL)],
    "multiupdate-set-dup1|show": [S(MUPD, SET7, dup("A1")), S(SHOW), S(ALL)],
    "multiupdate-set|show": [S(MUPD, SET7), S(SHOW), S(ALL)],
    "multiupdate-commit-dup0": [S(MUPD, COMMIT, dup("A0")), S(ALL)],
    "multiupdate-rollback-ins1": [S(MUPD, ROLLBACK, ins("B1")), S(ALL)],
    "multiupdate-begin-ins1|rollback": [S(MUPD, BEGIN, ins("B1")), S(ROLLBACK), S(ALL)],
    "multiupdate-savepoint-ins0": [S(MUPD, SAVEPOINT, ins("B0")), S(ALL)],
    "multiupdate-commit-multiupdate-dup1": [S(MUPD, COMMIT, MUPD, dup("A1")), S(ALL)],
    "ins0-ins1-commit": [S(ins("B0"), ins("B1"), COMMIT), S(ALL)],
    "ins0-ins1-rollback": [S(ins("B0"), ins("B1"), ROLLBACK), S(ALL)],
    "ins0-ins1-commit-ins0-ins1-dup1": [S(ins("B0"), ins("B1"), COMMIT, ins("C0"), ins("C1"), dup("A1")), S(ALL)],
    "ins0-ins1-flush|commit-ins1": [F(ins("B0"), ins("B1")), S(COMMIT, ins("C1")), S(ALL)],
    "ins0-ins1-commit-commit": [S(ins("B0"), ins("B1"), COMMIT, COMMIT), S(ALL)],
    "ins0-ins1-set-rollback|show": [S(ins("B0"), ins("B1"), SET7, ROLLBACK), S(SHOW), S(ALL)],
    "begin-ins0|savepoint|commit": [S(BEGIN, ins("B0")), S(SAVEPOINT), S(COMMIT), S(ALL)],
    "begin-ins1|savepoint|commit": [S(BEGIN, ins("B1")), S(SAVEPOINT), S(COMMIT), S(ALL)],
    "begin-ins1|set|show|commit|show": [S(BEGIN, ins("B1")), S(SET7), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-ins1-all-flush|ins0-commit": [F(BEGIN, ins("B1"), ALL), S(ins("B0"), COMMIT), S(ALL)],
    "ins0-ins1-begin-ins0|rollback": [S(ins("B0"), ins("B1"), BEGIN, ins("C0")), S(ROLLBACK), S(ALL)],
    "ins0-savepoint-ins1": [S(ins("B0"), SAVEPOINT, ins("B1")), S(ALL)],
    "begin-ins0-begin-ins1|commit": [S(BEGIN, ins("B0"), BEGIN, ins("B1")), S(COMMIT), S(ALL)],
    "begin-ins0-ins1-rollback-ins1": [S(BEGIN, ins("B0"), ins("B1"), ROLLBACK, ins("C1")), S(ALL)],
    "begin-ins0-ins1-commit-begin-ins0|rollback": [
        S(BEGIN, ins("B0"), ins("B1"), COMMIT, BEGIN, ins("C0")), S(ROLLBACK), S(ALL)],
    "begin-ins0|multi-div0|commit": [S(BEGIN, ins("B0")), S(MDIV0), S(COMMIT), S(ALL)],
    "flush-each|sync|commit": [F(BEGIN), F(ins("B0")), F(ins("B1")), F(CNT), S(), S(COMMIT), S(ALL)],
    "simple-begin|ins0-ins1|simple-commit": [Q(BEGIN), S(ins("B0"), ins("B1")), Q(COMMIT), S(ALL)],
    "begin-ins1-ins0-upd1-sel0-sel1-commit": [
        S(BEGIN, ins("B1"), ins("B0"), upd("A1", "y"), sel("B0"), sel("A1"), COMMIT), S(ALL)],
    "ins1-ins0-commit-ins1-div0on0": [S(ins("B1"), ins("B0"), COMMIT, ins("C1"), div0("A0")), S(ALL)],
    # Savepoints in transactions over both shards.
    "begin-ins0-savepoint-ins1-rollbackto|commit": [
        S(BEGIN, ins("B0"), SAVEPOINT, ins("B1"), ROLLBACK_TO), S(COMMIT), S(ALL)],
    "begin-ins0|savepoint|ins1|rollbackto|ins1|commit": [
        S(BEGIN, ins("B0")), S(SAVEPOINT), S(ins("B1")), S(ROLLBACK_TO), S(ins("C1")), S(COMMIT), S(ALL)],
    "begin-ins0-ins1|savepoint|upd0-upd1|rollbackto|commit": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), S(upd("A0", "x"), upd("A1", "y")), S(ROLLBACK_TO), S(COMMIT),
        S(ALL)],
    "begin-ins0-ins1|savepoint|dup0|rollbackto|ins1|commit": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), S(dup("A0")), S(ROLLBACK_TO), S(ins("C1")), S(COMMIT), S(ALL)],
    "begin-ins0-ins1|savepoint|dup1|ins0|rollbackto|commit": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), S(dup("A1")), S(ins("C0")), S(ROLLBACK_TO), S(COMMIT),
        S(ALL)],
    "begin-ins0-ins1|savepoint|ins0|release|rollbackto|rollback": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), S(ins("C0")), S(RELEASE), S(ROLLBACK_TO), S(ROLLBACK),
        S(ALL)],
    "begin-ins0-ins1|savepoint-ins0-ins1-rollbackto-ins0|commit": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT, ins("C0"), ins("C1"), ROLLBACK_TO, upd("A0", "z")), S(COMMIT),
        S(ALL)],
    "begin-ins0|savepoint|multiupdate|rollbackto|commit": [
        S(BEGIN, ins("B0")), S(SAVEPOINT), S(MUPD), S(ROLLBACK_TO), S(COMMIT), S(ALL)],
    "begin-ins0|savepoint|multi-div0|rollbackto|ins1|commit": [
        S(BEGIN, ins("B0")), S(SAVEPOINT), S(MDIV0), S(ROLLBACK_TO), S(ins("B1")), S(COMMIT), S(ALL)],
    "begin-savepoint-ins0-ins1-release-ins0|rollback": [
        S(BEGIN, SAVEPOINT, ins("B0"), ins("B1"), RELEASE, ins("C0")), S(ROLLBACK), S(ALL)],
    "begin-ins0-ins1|savepoint|flush-ins0|sync|rollbackto|commit": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), F(ins("C0")), S(), S(ROLLBACK_TO), S(COMMIT), S(ALL)],
    # An error on a shard, then a statement shardgate runs on every shard's connection (SET,
    # SET LOCAL, a savepoint statement): skipped like anything else after the error, even when the
    # error had not come back yet when the statement was read.
    "sel0-div0on1-set|show": [S(sel("A0"), div0("A1"), SET7), S(SHOW)],
    "ins1-div0on0-setlocal": [S(ins("B1"), div0("A0"), SET_LOCAL8), S(ALL)],
    "multiupdate-dup0-set|show": [S(MUPD, dup("A0"), SET7), S(SHOW), S(ALL)],
    "ins1-dup0-setlocal-begin-flush|sync": [F(ins("B1"), dup("A0"), SET_LOCAL8, BEGIN), S(), S(ALL)],
    "begin-flush|show-div0on0-savepoint-flush|sync|rollback": [
        F(BEGIN), F(SHOW, div0("A0"), SAVEPOINT), S(), S(ROLLBACK)],
    "begin-ins0-ins1|div0on0-set|rollback|show": [S(BEGIN, ins("B0"), ins("B1")), S(div0("A0"), SET7), S(ROLLBACK),
                                                  S(SHOW)],
    "begin-ins0-ins1|savepoint|sel1-div0on0-rollbackto|rollback": [
        S(BEGIN, ins("B0"), ins("B1")), S(SAVEPOINT), S(sel("A1"), div0("A0"), ROLLBACK_TO), S(ROLLBACK), S(ALL)],
    # Pipelined: the next batch is sent before the failed batch's ReadyForQuery came back. The
    # failed batch held a statement for both shards (skipped after the error): the error must not
    # skip the next batch's statements too.
    "pipelined:dup0-count|rollback": [P(dup("A0"), CNT), S(ROLLBACK), S(ALL)],
    "pipelined:dup0-count|commit": [P(dup("A0"), CNT), S(COMMIT), S(ALL)],
    "pipelined:dup0-count|ins0": [P(dup("A0"), CNT), S(ins("B0")), S(ALL)],
    "pipelined:dup0-count|ins0-ins1": [P(dup("A0"), CNT), S(ins("B0"), ins("B1")), S(ALL)],
    "pipelined:dup1-multiupdate|show-rollback": [P(dup("A1"), MUPD), S(SHOW, ROLLBACK), S(ALL)],
    # An autocommit statement for both shards whose deferred trigger fails when its implicit
    # transaction commits, at the Sync: the Execute's CommandComplete comes first, then the error.
    "multiupdate-deferred-fails": [S(MBAD), S(ALL)],
    "multiupdate-deferred-fails-on1": [S(MBAD1), S(ALL)],
    # Named statements (drivers' statement caches) parsed after an error in their batch: skipped
    # like the rest, so the client does not have them (26000 if it binds one, and it may parse the
    # name again).
    "dup0-parse|exec": [S(dup("A0"), NPARSE("s1", ins("B0"))), S(NEXEC("s1", ins("B0"))), S(ALL)],
    "div0-parse|parse-exec": [S(div0("A0"), NPARSE("s1", sel("A0"))), S(NPARSE("s1", sel("A1")), NEXEC("s1", sel("A1")))],
    "div0-parse-flush|sync|exec": [F(div0("A1"), NPARSE("s1", sel("A0"))), S(), S(NEXEC("s1", sel("A0")))],
    "begin-dup0-parse|rollback|exec": [
        S(BEGIN, dup("A0"), NPARSE("s1", ins("B1"))), S(ROLLBACK), S(NEXEC("s1", ins("B1"))), S(ALL)],
    "parse-ins0-ins1-dup0|exec": [S(NPARSE("s1", sel("A1")), ins("B0"), dup("A0")), S(NEXEC("s1", sel("A1")))],
    # A Parse Postgres rejects: the error comes in its place (no ParseComplete first), also for a
    # batch pipelined behind a failed transaction's (25P02 at its Parse).
    "nocol0|count": [S(nocol("A0")), S(CNT)],
    "notable|count": [S(NOTABLE), S(CNT)],
    "upd0-nocol1|all": [S(upd("A0", "x"), nocol("A1")), S(ALL)],
    "begin-upd0-nocol1|rollback": [S(BEGIN, upd("A0", "x"), nocol("A1")), S(ROLLBACK), S(ALL)],
    "pipelined:begin-div0|sel0|rollback": [P(BEGIN, div0("A0")), S(sel("A0")), S(ROLLBACK), S(ALL)],
    "pipelined:begin-div0|count|rollback": [P(BEGIN, div0("A0")), S(CNT), S(ROLLBACK), S(ALL)],
    # A batch pipelined behind a failure in a transaction over shards: 25P02 at its Parse.
    "pipelined:begin-count-mdiv0|all|rollback": [S(BEGIN, CNT), P(MDIV0), S(ALL), S(ROLLBACK), S(ALL)],
    "pipelined:begin-all|div0|all|rollback": [S(BEGIN, ALL), P(div0("A0")), S(ALL), S(ROLLBACK), S(ALL)],
    "pipelined:begin-ins0-ins1-div0|sel1|rollback": [
        S(BEGIN, ins("B0"), ins("B1")), P(div0("A0")), S(sel("A1")), S(ROLLBACK), S(ALL)],
    "begin-ins0-ins1-div0|sel1|rollback": [
        S(BEGIN, ins("B0"), ins("B1")), S(div0("A0")), S(sel("A1")), S(ROLLBACK), S(ALL)],
    # The same for a named statement's Parse: checked on the default shard when no shard is held,
    # on the held one when it has the tables; the rest of the batch is skipped, and the name stays
    # free.
    "parse-nocol|count": [S(NPARSE("s1", nocol("A0"))), S(CNT)],
    "parse-notable-ins0|all": [S(NPARSE("s1", NOTABLE), ins("B0")), S(ALL)],
    "ins0-parse-nocol-ins1|all": [S(ins("B0"), NPARSE("s1", nocol("A1")), ins("B1")), S(ALL)],
    "begin-ins1|parse-nocol|rollback": [S(BEGIN, ins("B1")), S(NPARSE("s1", nocol("A0"))), S(ROLLBACK), S(ALL)],
    "pipelined:parse-nocol|exec|parse-exec": [
        P(NPARSE("s1", nocol("A0"))), S(NEXEC("s1", sel("A0"))), S(NPARSE("s1", sel("A1")), NEXEC("s1", sel("A1")))],
    # A portal over both shards bound (not executed) after a statement on one: the batch is then
    # shardgate's transaction over shards, and a BEGIN after it is refused (it used to run on the
    # held server, which only warned, and the INSERT committed at the Sync).
    # A named Parse checked on the default shard, pipelined before a batch that begins a
    # transaction and runs the statement on the other shard (it used to hang).
    "pipelined:parse|begin-exec1|rollback": [
        P(NPARSE("s1", ins("B1"))), S(BEGIN, NEXEC("s1", ins("B1"))), S(ROLLBACK), S(ALL)],
    "pipelined:parse|begin-exec1|commit": [
        P(NPARSE("s1", ins("B1"))), S(BEGIN, NEXEC("s1", ins("B1"))), S(COMMIT), S(ALL)],
    # A named Parse in a failed transaction gets 25P02 also when the connection has the text
    # prepared already; the name stays free.
    "exec-s1|begin-dup0|parse-exec-s2|rollback|parse-exec-s2": [
        S(NPARSE("s1", upd("A0", "x")), NEXEC("s1", upd("A0", "x"))), S(BEGIN, dup("A0")),
        S(NPARSE("s2", upd("A0", "y")), NEXEC("s2", upd("A0", "y"))), S(ROLLBACK),
        S(NPARSE("s2", upd("A0", "z")), NEXEC("s2", upd("A0", "z"))), S(ALL)],
    # A portal over both shards bound and described, not executed: its RowDescription comes before
    # the Sync's ReadyForQuery, also when a statement ran on one shard before it in the batch.
    "parse-binddescribe-count|all": [S(NPARSE("s1", CNT), NBINDDESCRIBE("s1", CNT)), S(ALL)],
    "set-parse-binddescribe-count|show": [S(SET7, NPARSE("s1", CNT), NBINDDESCRIBE("s1", CNT)), S(SHOW)],
    "ins0-parse-binddescribe-count|all": [S(ins("B0"), NPARSE("s1", CNT), NBINDDESCRIBE("s1", CNT)), S(ALL)],
    "sel0-bindcount-begin-ins0|rollback": [
        S(sel("A0"), NPARSE("s1", CNT), NBIND("s1", CNT), BEGIN, ins("B0")), S(ROLLBACK), S(ALL)],
    "sel1-bindmupd-begin-ins0|rollback": [
        S(sel("A1"), NPARSE("s1", MUPD), NBIND("s1", MUPD), BEGIN, ins("B0")), S(ROLLBACK), S(ALL)],
    # A Describe of a statement that does not exist (26000) before the batch's first statement for a
    # shard: the rest of the batch is skipped, with no ParseComplete or BindComplete for it.
    "describe-missing-ins0|all": [S(NDESCRIBE("nosuch"), ins("B0")), S(ALL)],
    "describe-missing-ins1-ins0|all": [S(NDESCRIBE("nosuch"), ins("B1"), ins("C0")), S(ALL)],
    "describe-missing-count|all": [S(NDESCRIBE("nosuch"), CNT), S(ALL)],
    # A named statement first bound in a batch pipelined behind the next one: shardgate's Parse of it
    # there is skipped when that batch fails, and the next batch, sent before the failure was known,
    # must not count on it (it got 26000).
    # A Bind with too few values for a keyed statement: Postgres's 08P01, not a refusal to route it.
    "parse-ins1|bind-no-values|all": [S(NPARSE("s1", ins("B1")), NBIND("s1", replace(ins("B1"), params=()))),
                                      S(ALL)],
    "parse-sel0-exec-no-values|sel0": [S(NPARSE("s1", sel("A0")), NEXEC("s1", replace(sel("A0"), params=())),
                                         sel("A0")), S(sel("A0"))],
    # A COMMIT bound with values it has no parameters for, after a batch spread over both shards:
    # Postgres fails the Bind (08P01), and the batch rolls back; it must not end the transaction.
    "parse-commit|upd0-upd1-commit-with-values|all": [
        S(NPARSE("s2", COMMIT)), S(upd("A0", "y"), upd("A1", "x"), NEXEC("s2", replace(COMMIT, params=("A1", "z")))),
        S(ALL)],
    "parse-show|pipelined:dup0-bindshow|execshow": [
        S(NPARSE("s2", SHOW)), P(dup("A0"), NBIND("s2", SHOW)), S(NEXEC("s2", SHOW))],
    "parse-show|pipelined:bindshow|execshow": [S(NPARSE("s2", SHOW)), P(NBIND("s2", SHOW)), S(NEXEC("s2", SHOW))],
    "parse-sel0|pipelined:dup0-bindsel0|execsel0|execsel0": [
        S(NPARSE("s1", sel("A0"))), P(dup("A0"), NBIND("s1", sel("A0"))), S(NEXEC("s1", sel("A0"))),
        S(NEXEC("s1", sel("A0")))],
    # Settings changed on both sides of a COMMIT or ROLLBACK in one batch (or one simple Query):
    # those before it end with its transaction, those after it with the batch's own.
    "begin-set-rollback-set9|show": [S(BEGIN, SET7, ROLLBACK, SET9), S(SHOW)],
    "begin-set-commit-set9|show": [S(BEGIN, SET7, COMMIT, SET9), S(SHOW)],
    "begin-set-commit-set9-dup0|show": [S(BEGIN, SET7, COMMIT, SET9, dup("A0")), S(SHOW), S(ALL)],
    "begin-set-rollback-set9-dup1|show": [S(BEGIN, SET7, ROLLBACK, SET9, dup("A1")), S(SHOW)],
    "set-commit-set9-dup0|show": [S(SET7, COMMIT, SET9, dup("A0")), S(SHOW)],
    "set-rollback-set9|show": [S(SET7, ROLLBACK, SET9), S(SHOW)],
    "begin-ins0-set|set9-rollback-set|show": [S(BEGIN, ins("B0"), SET7), S(SET9, ROLLBACK, SET7), S(SHOW), S(ALL)],
    "begin-ins0-ins1-set-commit-set9|show": [S(BEGIN, ins("B0"), ins("B1"), SET7, COMMIT, SET9), S(SHOW), S(ALL)],
    "begin-ins0-ins1-set-rollback-set9|show": [S(BEGIN, ins("B0"), ins("B1"), SET7, ROLLBACK, SET9), S(SHOW),
                                               S(ALL)],
    "simple:begin-set-rollback-set9|show": [
        Q(St("BEGIN; SET statement_timeout = '7s'; ROLLBACK; SET statement_timeout = '9s'", kind="set")), S(SHOW)],
    "simple:begin-set-commit-set9-div0|show": [
        Q(St("BEGIN; SET statement_timeout = '7s'; COMMIT; SET statement_timeout = '9s'; SELECT 1/0", kind="set")),
        S(SHOW)],
    "simple:set-rollback-set9|show": [
        Q(St("SET statement_timeout = '7s'; ROLLBACK; SET statement_timeout = '9s'", kind="set")), S(SHOW)],
    "set-rollback|show": [S(SET7, ROLLBACK), S(SHOW)],
    "rollback-set9|show": [S(ROLLBACK, SET9), S(SHOW)],
    "begin|savepoint-set-rollbackto-set9|show|commit|show": [
        S(BEGIN), S(SAVEPOINT, SET7, ROLLBACK_TO, SET9), S(SHOW), S(COMMIT), S(SHOW)],
    "begin-set-savepoint-div0|rollbackto|commit|show": [
        S(BEGIN, SET7, SAVEPOINT, div0("A0")), S(ROLLBACK_TO), S(COMMIT), S(SHOW)],
    "simple:begin-set-savepoint-set9-rollbackto-commit|show": [
        Q(St("BEGIN; SET statement_timeout = '7s'; SAVEPOINT s; SET statement_timeout = '9s'; "
             "ROLLBACK TO SAVEPOINT s; COMMIT", kind="set")), S(SHOW)],
}


# ---------------------------------------------------------------------------------------------
# Running a scenario
# ---------------------------------------------------------------------------------------------


def connect(port: int, database: str) -> pgwire.PgWire:
    w = pgwire.PgWire(HOST, port, timeout=READ_TIMEOUT)
    w.login("postgres", "postgres", database)
    return w


def token(m: pgwire.Message) -> str | None:
    t = m.type
    if t == b"S":  # ParameterStatus: not part of the comparison
        return None
    if t == b"D":
        return "D:" + ",".join("NULL" if v is None else v.decode() for v in pgwire.parse_data_row(m))
    if t == b"C":
        return "C:" + pgwire.parse_command_complete(m)
    if t in (b"E", b"N"):
        return t.decode() + ":" + pgwire.parse_error(m).code
    if t == b"T":
        return "T:" + ",".join(c["name"] for c in pgwire.parse_row_description(m))
    if t == b"Z":
        return "Z:" + m.payload.decode()
    return t.decode()


def units(msgs: list[pgwire.Message]) -> list[str]:
    """A step's replies cut into one unit per statement (up to its CommandComplete, error,
    PortalSuspended or EmptyQueryResponse), then the rest (ReadyForQuery)."""
    out, cur = [], []
    for m in msgs:
        tok = token(m)
        if tok is None:
            continue
        cur.append(tok)
        if m.type in (b"C", b"E", b"s", b"I"):
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


@dataclass
class Run:
    steps: list[list[str]] = field(default_factory=list)
    probe: list[str] = field(default_factory=list)  # SHOW on the same connection, then on a new one


def run_scenario(port: int, database: str, steps: list[Step], keys: dict[str, int],
                 substitute: frozenset = frozenset()) -> Run:
    """What the client sees of each step. substitute: (step, statement) positions sent as a
    statement that fails with 0A000 instead (the reference for a refusal)."""
    run = Run()

    def value(p):
        return str(keys[p]) if isinstance(p, str) and p in keys else p

    with connect(port, database) as w:
        failed = False  # an error since the last ReadyForQuery: the rest of the batch is skipped
        pipelined = b""  # the batches sent with the next step, ended by Sync
        for si, step in enumerate(steps):
            if step.end == "query":
                data = pgwire.query(step.stmts[0].sql)
            else:
                data = b""
                for i, st in enumerate(step.stmts):
                    sql, params = (RAISE_0A000, ()) if (si, i) in substitute else (st.sql, st.params)
                    values = tuple(value(p) for p in params)
                    if st.op.startswith("parse:"):
                        data += pgwire.parse(st.op.removeprefix("parse:"), sql)
                    elif st.op.startswith("bind:"):
                        data += pgwire.bind("", st.op.removeprefix("bind:"), values)
                    elif st.op.startswith("binddescribe:"):
                        data += pgwire.bind("", st.op.removeprefix("binddescribe:"), values) + pgwire.describe("P")
                    elif st.op.startswith("describe:"):
                        data += pgwire.describe("S", st.op.removeprefix("describe:"))
                    elif st.op.startswith("exec:"):
                        data += (pgwire.bind("", st.op.removeprefix("exec:"), values) + pgwire.describe("P")
                                 + pgwire.execute())
                    else:
                        data += pgwire.parse("", sql) + pgwire.bind("", "", values) + pgwire.describe("P") + pgwire.execute()
                data += pgwire.flush() if step.end == "flush" else pgwire.sync()
            if step.end == "pipe":
                pipelined += data
                continue
            msgs: list[pgwire.Message] = []
            seen_before = len(w.received)
            try:
                w.send(pipelined + data)
                for _ in range(si - len(run.steps)):  # the pipelined batches' replies first
                    run.steps.append(units(w.recv_until(b"Z")))
                    seen_before = len(w.received)
                pipelined, failed = b"", False
                if step.end != "flush":
                    msgs = w.recv_until(b"Z")
                    failed = False
                elif failed or not step.stmts:
                    # Nothing may come: listen a little for what should not.
                    try:
                        while True:
                            msgs.append(w.recv(QUIET_WAIT))
                    except TimeoutError:
                        pass
                else:
                    done = 0
                    while done < sum(not st.op.startswith(("parse:", "bind:", "binddescribe:")) for st in step.stmts):
                        m = w.recv()
                        msgs.append(m)
                        if m.type == b"E":
                            failed = True
                            break
                        done += m.type in (b"C", b"s", b"I")
            except TimeoutError:
                run.steps.append(units(w.received[seen_before:]) + ["TIMEOUT"])
                return run
            except pgwire.ConnectionClosed:
                run.steps.append(units(w.received[seen_before:]) + ["CLOSED"])
                return run
            run.steps.append(units(msgs))
        try:
            run.probe.append(" ".join(units(w.simple("SHOW statement_timeout"))))
        except (TimeoutError, pgwire.ConnectionClosed) as e:
            run.probe.append(f"probe failed: {type(e).__name__}")
            return run
    with connect(port, database) as w:
        run.probe.append(" ".join(units(w.simple("SHOW statement_timeout"))))
    return run


# ---------------------------------------------------------------------------------------------
# Which refusals the README documents
# ---------------------------------------------------------------------------------------------


def refusable_positions(steps: list[Step]) -> dict[tuple[int, int], str]:
    """(step, statement) -> why shardgate may refuse it. The README: in one extended batch without
    BEGIN, savepoints after the batch ran on both shards; BEGIN after the batch ran on both shards. A static walk (errors
    ignored): the shards the transaction (and the batch) touched before each statement."""
    out = {}
    block, shards = False, set()
    batch_shards = set()  # this batch's, up to its Sync
    for si, step in enumerate(steps):
        for i, st in enumerate(step.stmts):
            spans = len(shards) >= 2
            if st.kind in ("savepoint", "rollback_to", "release") and spans and not block:
                out[(si, i)] = f"{st.sql} in a batch's implicit transaction over both shards"
            elif step.end != "query" and st.kind == "begin" and not block and len(batch_shards) >= 2:
                out[(si, i)] = "BEGIN in a batch that ran on both shards"
            if st.kind == "begin":
                block = True
            elif st.kind in ("commit", "rollback"):
                block, shards = False, set()
            shards |= st.shards
            batch_shards |= st.shards
        if step.end != "flush":
            batch_shards = set()
            if not block:
                shards = set()
    return out


def statement_of_unit(steps: list[Step], si: int, ui: int) -> int:
    """Which statement of step si the ui-th unit of its replies answers (a Parse or Bind alone
    ends no unit: its reply joins the next one)."""
    stmts = steps[si].stmts if si < len(steps) else ()
    ending = [i for i, st in enumerate(stmts) if not st.op.startswith(("parse:", "bind:"))]
    return ending[ui] if ui < len(ending) else ui + len(stmts) - len(ending)


def first_refusal(through: Run, ref: Run, steps: list[Step]) -> tuple[int, int] | None:
    """The first (step, statement) where shardgate answered 0A000 and the reference did not."""
    for si, (a, b) in enumerate(zip(through.steps, ref.steps)):
        for ui, unit in enumerate(a):
            if unit.endswith("E:0A000") and (ui >= len(b) or b[ui] != unit):
                return si, statement_of_unit(steps, si, ui)
        if a != b:
            return None
    return None


def normalized(run: Run, refused: set, steps: list[Step]) -> Run:
    """The refused statements' replies cut down to the error (shardgate may refuse at Bind, Postgres
    fails the substitute at Execute)."""
    out = []
    for si, step in enumerate(run.steps):
        out.append(["E:0A000" if (si, statement_of_unit(steps, si, ui)) in refused and u.endswith("E:0A000") else u
                    for ui, u in enumerate(step)])
    return Run(out, run.probe)


# ---------------------------------------------------------------------------------------------
# The cluster and the reference database
# ---------------------------------------------------------------------------------------------


@dataclass
class Env:
    routing: Routing
    pool_mode: str
    keys: dict[str, int]

    @property
    def cluster(self):
        return self.routing.cluster

    @property
    def ref_port(self) -> int:
        return self.routing.primary(0).port


def _direct(server, dbname: str = "app") -> psycopg.Connection:
    return psycopg.connect(server.dsn(dbname=dbname), autocommit=True, connect_timeout=10)


@pytest.fixture(scope="module", params=["session", "transaction"])
def env(request, cluster_root, shardgate_bin):
    pool_mode = request.param
    default_shard = 0 if pool_mode == "session" else 1
    c = conftest._new_cluster(
        cluster_root / f"batchtx-{pool_mode}", shardgate_bin, num_shards=2, replicas_per_shard=0,
        pool_mode=pool_mode, database_options={"default_shard": default_shard, "read_preference": "primary",
                                               "reference_tables": ["countries"]},
        extra_toml=SHARDING_TOML)
    try:
        for i in range(2):
            c.shards[i].primary.psql(SHARD_DDL.format(shard=f"shard{i}") + COUNTRIES_SQL)
            c.shards[i].primary.psql(DEFERRED_CHECK)
        p0 = c.shards[0].primary
        p0.psql(f"CREATE DATABASE {REF_DB}")
        p0.psql("CREATE TABLE users (id bigint PRIMARY KEY, name text, country text)", dbname=REF_DB)
        p0.psql(DEFERRED_CHECK, dbname=REF_DB)
        routing = Routing(c, pool_mode, default_shard)
        routing.hash_shard = _postgres_hash_shards(p0, [k for k in range(1, 400)])
        keys = {}
        for s in (0, 1):
            for n, k in zip("ABC", routing.keys_on(s, 3)):
                keys[f"{n}{s}"] = k
        yield Env(routing, pool_mode, keys)
    finally:
        problems = conftest._finish(c)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(60):
        yield


def reset_shards(e: Env) -> None:
    """users holds only the seed rows, each on its hash shard (all on shard 0 in direct mode)."""
    for s in (0, 1):
        with _direct(e.routing.primary(s)) as conn:
            conn.execute("SET lock_timeout = '5s'")
            conn.execute("TRUNCATE users")
            for k, name in SEED.items():
                if (s == 0) if conftest.DIRECT else e.routing.hash_shard[e.keys[k]] == s:
                    conn.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (e.keys[k], name))


def reset_ref(e: Env) -> None:
    with _direct(e.routing.primary(0), REF_DB) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute("TRUNCATE users")
        for k, name in SEED.items():
            conn.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (e.keys[k], name))


def rows_through(e: Env) -> list[tuple]:
    """Every users row on the shards' primaries; each must be on its hash shard."""
    out = []
    for s in (0, 1):
        with _direct(e.routing.primary(s)) as conn:
            for k, name in conn.execute("SELECT id, name FROM users"):
                if not conftest.DIRECT:
                    assert e.routing.hash_shard[k] == s, f"key {k} on shard {s}"
                out.append((k, name))
    return sorted(out)


def rows_ref(e: Env) -> list[tuple]:
    with _direct(e.routing.primary(0), REF_DB) as conn:
        return sorted(conn.execute("SELECT id, name FROM users").fetchall())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_batch_matches_postgres(env: Env, name: str):
    steps = SCENARIOS[name]
    reset_shards(env)
    through = run_scenario(env.cluster.shardgate.port, "app", steps, env.keys)
    got_rows = rows_through(env)
    allowed = refusable_positions(steps)
    refused: set = set()
    problems = []
    for _ in range(5):
        reset_ref(env)
        ref = run_scenario(env.ref_port, REF_DB, steps, env.keys, frozenset(refused))
        pos = first_refusal(through, ref, steps)
        if pos is None or pos in refused:
            break
        if pos not in allowed:
            problems.append(f"shardgate refused step {pos[0]} statement {pos[1]} with 0A000, which the README "
                            "does not document as refused")
            break
        refused.add(pos)
    if refused:
        why = "; ".join(f"step {si} stmt {i}: {allowed[(si, i)]}" for si, i in sorted(refused))
        print(f"REFUSED {env.pool_mode}:{name}: {why}")
    a, b = normalized(through, refused, steps), normalized(ref, refused, steps)
    if (a.steps, a.probe) != (b.steps, b.probe):
        problems.append("transcripts differ (!! marks the steps):\n" + diff(a, b))
    want_rows = rows_ref(env)
    if got_rows != want_rows:
        problems.append(f"rows differ\n  shardgate: {got_rows}\n  postgres:  {want_rows}")
    assert not problems, "\n".join(problems)


def diff(a: Run, b: Run) -> str:
    lines = []
    for si in range(max(len(a.steps), len(b.steps))):
        x = a.steps[si] if si < len(a.steps) else None
        y = b.steps[si] if si < len(b.steps) else None
        mark = "  " if x == y else "!!"
        lines.append(f"{mark} step {si}\n     shardgate: {x}\n     postgres:  {y}")
    lines.append(f"{'  ' if a.probe == b.probe else '!!'} probe shardgate {a.probe} postgres {b.probe}")
    return "\n".join(lines)


def test_statement_the_server_rejects_is_not_kept(env: Env):
    """A named statement whose Parse Postgres rejects (a missing column) does not exist afterwards:
    binding it gets 26000, and the client may parse the name again (42P05 before, as if it
    existed). shardgate checks the Parse on the default shard (no shard is held): its error comes
    in place of the ParseComplete, as from Postgres."""
    bad = "SELECT nosuchcol FROM users WHERE id = $1"
    good = "SELECT name FROM users WHERE id = $1"
    key = str(env.keys["A1"])
    outcomes = {}
    reset_shards(env)
    reset_ref(env)
    for side, port, database in (("shardgate", env.cluster.shardgate.port, "app"), ("postgres", env.ref_port, REF_DB)):
        with connect(port, database) as w:
            steps = [pgwire.parse("s1", bad) + pgwire.describe("S", "s1") + pgwire.sync(),
                     pgwire.bind("", "s1", (key,)) + pgwire.execute() + pgwire.sync(),
                     pgwire.parse("s1", good) + pgwire.bind("", "s1", (key,)) + pgwire.execute() + pgwire.sync()]
            seen = []
            for data in steps:
                w.send(data)
                msgs = w.recv_until(b"Z")
                seen.append(([m.type for m in msgs], [e.code for e in pgwire.errors(msgs)], pgwire.data_rows(msgs),
                             msgs[-1].payload))
            outcomes[side] = seen
    assert outcomes["shardgate"] == outcomes["postgres"], outcomes
