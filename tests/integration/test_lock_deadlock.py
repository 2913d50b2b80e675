"""Deadlocks through row locks on several shards: shardgate finds the cycle that no shard can see and
ends one transaction's wait with 40P01, as Postgres ends a deadlock on one server. And a transaction
over several shards that fails frees its rows on every shard at the error, as a failed Postgres
transaction does, not only when the client rolls back.

A client's transaction over two shards holds a row on one and waits for a row on the other; a second
client's does the opposite. Each shard sees one transaction waiting for another, never a cycle, so
without shardgate both would wait until lock_timeout or statement_timeout (for ever, by default).
"""

from __future__ import annotations

import time

import pytest

import pgwire
from txn_helpers import (batch_winner, connect, deadlocks_counted, describe_reply, error_codes, note_of, ok,
                         open_transactions, orders_cluster, survivor_goes_on)

DEADLOCK_TIMEOUT_MS = 400


def lock_cluster(make_cluster, workers: int):
    """Pools large enough that no client waits for a connection: only row locks wait."""
    return orders_cluster(make_cluster, default_pool_size=4, workers=workers,
                          deadlock_timeout=DEADLOCK_TIMEOUT_MS)


@pytest.mark.requires_shardgate
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("a_waits_with", ["keyed_update", "multi_shard_update"])
def test_row_locks_taken_in_opposite_orders_on_two_shards(make_cluster, workers, a_waits_with):
    """a locks a row on shard 0, b one on shard 1; a then waits for b's row and, after more than
    deadlock_timeout, b for a's. b, whose wait closed the cycle, gets 40P01 after deadlock_timeout
    (its transaction failed, as a Postgres deadlock victim's, and its row on shard 1 is free at
    once): a's update goes through before b rolls back, and a commits. a's wait is a keyed UPDATE
    or one UPDATE over both shards."""
    c, keys = lock_cluster(make_cluster, workers)
    k0, k1 = keys[0][0], keys[1][0]
    port = c.shardgate.port
    with connect(port, timeout=30) as a, connect(port, timeout=30) as b:
        ok(a, "BEGIN")
        ok(a, f"UPDATE orders SET note = 'a' WHERE user_id = {k0}")
        ok(b, "BEGIN")
        ok(b, f"UPDATE orders SET note = 'b' WHERE user_id = {k1}")
        if a_waits_with == "keyed_update":
            a.send(pgwire.query(f"UPDATE orders SET note = 'a' WHERE user_id = {k1}"))
        else:
            a.send(pgwire.query(f"UPDATE orders SET note = 'a' WHERE user_id IN ({k0}, {k1})"))
        # Longer than deadlock_timeout: a's one deadlock check (Postgres checks a wait once) comes
        # before the cycle closes, so b's finds it.
        time.sleep(2.5 * DEADLOCK_TIMEOUT_MS / 1000)
        started = time.monotonic()
        b.send(pgwire.query(f"UPDATE orders SET note = 'b' WHERE user_id = {k0}"))  # a cycle
        msgs = b.recv_until(b"Z", timeout=20)
        waited = time.monotonic() - started
        assert error_codes(msgs) == ["40P01"], describe_reply(msgs)
        assert waited >= DEADLOCK_TIMEOUT_MS / 1000, f"b was cancelled after {waited:.2f}s"
        err = pgwire.errors(msgs)[0]
        assert err.message == "deadlock detected", str(err)
        assert "different shards" in err.fields.get("D", "") and "Retry" in err.fields.get("H", ""), str(err)
        assert msgs[-1].payload == b"E", describe_reply(msgs)
        assert deadlocks_counted(c, "lock") == 1
        # b's row on shard 1 is free from its error on: a goes on before b rolls back.
        survivor_goes_on(b, a)
    assert (note_of(c, 0, k0), note_of(c, 1, k1)) == ("a", "a")
    assert open_transactions(c) == 0


@pytest.mark.requires_shardgate
def test_a_long_lock_wait_across_shards_without_a_cycle_is_left_alone(make_cluster):
    """b's transaction over both shards waits three deadlock_timeouts for a row a holds; a waits for
    nothing. No cycle: b is not cancelled, and goes on once a commits."""
    c, keys = lock_cluster(make_cluster, 1)
    k0, k0b, k1 = keys[0][0], keys[0][1], keys[1][0]
    port = c.shardgate.port
    with connect(port, timeout=30) as a, connect(port, timeout=30) as b:
        ok(a, "BEGIN")
        ok(a, f"UPDATE orders SET note = 'a' WHERE user_id = {k0}")
        ok(a, f"UPDATE orders SET note = 'a' WHERE user_id = {k1}")  # a holds both shards
        ok(b, "BEGIN")
        ok(b, f"UPDATE orders SET note = 'b' WHERE user_id = {k0b}")
        b.send(pgwire.query(f"UPDATE orders SET note = 'b' WHERE user_id = {k1}"))  # waits for a
        time.sleep(3 * DEADLOCK_TIMEOUT_MS / 1000)
        assert deadlocks_counted(c, "lock") == 0
        ok(a, "COMMIT")
        msgs = b.recv_until(b"Z", timeout=20)
        assert not pgwire.errors(msgs) and msgs[-1].payload == b"T", describe_reply(msgs)
        ok(b, "COMMIT")
    assert (note_of(c, 0, k0), note_of(c, 0, k0b), note_of(c, 1, k1)) == ("a", "b", "b")


@pytest.mark.requires_shardgate
def test_batches_locking_rows_in_opposite_orders(make_cluster):
    """The same cycle from two extended-protocol batches without BEGIN, each an implicit transaction
    over both shards: the victim's batch fails as a whole and rolls back, the other's commits."""
    c, keys = lock_cluster(make_cluster, 1)
    k0, k1 = keys[0][0], keys[1][0]
    port = c.shardgate.port

    def update(k, note, sleep=0.0):  # the sleep, after the row is locked, lets the batches cross
        sql = f"UPDATE orders SET note = '{note}' WHERE user_id = {k} RETURNING pg_sleep({sleep})"
        return pgwire.parse("", sql) + pgwire.bind("", "") + pgwire.execute()

    with connect(port, timeout=30) as a, connect(port, timeout=30) as b:
        a.send(update(k0, "a", 0.5) + update(k1, "a") + pgwire.sync())
        b.send(update(k1, "b", 0.5) + update(k0, "b") + pgwire.sync())
        replies = {"a": a.recv_until(b"Z", timeout=20), "b": b.recv_until(b"Z", timeout=20)}
    winner = batch_winner(replies)
    assert (note_of(c, 0, k0), note_of(c, 1, k1)) == (winner, winner)
    assert open_transactions(c) == 0


@pytest.mark.requires_shardgate
@pytest.mark.parametrize("fails_with", ["keyed_simple", "keyed_extended", "multi_shard"])
def test_a_failed_transaction_over_two_shards_frees_its_rows_at_once(make_cluster, fails_with):
    """a's transaction updates a row on shard 0, then a statement of it fails on shard 1 (division by
    zero): a keyed UPDATE (simple or extended protocol) or one UPDATE over both shards. a does not
    roll back yet. On Postgres a failed transaction's locks are gone from its error on: b's update
    of a's row on shard 0 goes through at once (lock_timeout would stop a wait), while a's next
    statements get 25P02 and its COMMIT answers ROLLBACK."""
    c, keys = lock_cluster(make_cluster, 1)
    k0, k0b, k1 = keys[0][0], keys[0][1], keys[1][0]
    port = c.shardgate.port
    failing = {
        "keyed_simple": f"UPDATE orders SET note = 'a' WHERE user_id = {k1} AND 1 / (user_id - {k1}) = 0",
        "keyed_extended": f"UPDATE orders SET note = 'a' WHERE user_id = {k1} AND 1 / (user_id - {k1}) = 0",
        "multi_shard": f"UPDATE orders SET note = 'a' WHERE user_id IN ({k0b}, {k1}) AND 1 / (user_id - {k1}) = 0",
    }[fails_with]
    with connect(port, timeout=30) as a, connect(port, timeout=30) as b:
        ok(a, "BEGIN")
        ok(a, f"UPDATE orders SET note = 'a' WHERE user_id = {k0}")
        ok(a, f"SELECT note FROM orders WHERE user_id = {k1}")  # the transaction spans both shards
        if fails_with == "keyed_extended":
            a.send(pgwire.parse("", failing) + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
            msgs = a.recv_until(b"Z", timeout=20)
        else:
            msgs = a.simple(failing)
        assert error_codes(msgs) == ["22012"] and msgs[-1].payload == b"E", describe_reply(msgs)
        ok(b, "SET lock_timeout = '5s'")
        started = time.monotonic()
        ok(b, f"UPDATE orders SET note = 'b' WHERE user_id = {k0}")
        assert time.monotonic() - started < 3, "b waited for the row of a's failed transaction"
        msgs = a.simple(f"UPDATE orders SET note = 'a' WHERE user_id = {k0b}")
        assert error_codes(msgs) == ["25P02"] and msgs[-1].payload == b"E", describe_reply(msgs)
        msgs = a.simple("COMMIT")
        assert not pgwire.errors(msgs) and msgs[-1].payload == b"I", describe_reply(msgs)
        assert [m.payload for m in msgs if m.type == b"C"] == [b"ROLLBACK\x00"], describe_reply(msgs)
        ok(a, f"UPDATE orders SET note = 'a2' WHERE user_id = {k0b}")  # the session goes on
    assert (note_of(c, 0, k0), note_of(c, 0, k0b), note_of(c, 1, k1)) == ("b", "a2", "x")
    assert open_transactions(c) == 0


@pytest.mark.requires_shardgate
def test_a_failed_transaction_with_a_savepoint_keeps_its_rows_for_rollback_to(make_cluster):
    """With a savepoint open, a failed transaction over two shards can still be recovered (ROLLBACK
    TO): its work before the savepoint stays, on every shard, and commits."""
    c, keys = lock_cluster(make_cluster, 1)
    k0, k0b, k1 = keys[0][0], keys[0][1], keys[1][0]
    with connect(c.shardgate.port, timeout=30) as a:
        ok(a, "BEGIN")
        ok(a, f"UPDATE orders SET note = 'kept' WHERE user_id = {k0}")
        ok(a, f"UPDATE orders SET note = 'kept' WHERE user_id = {k1}")
        ok(a, "SAVEPOINT s")
        ok(a, f"UPDATE orders SET note = 'gone' WHERE user_id = {k0b}")
        msgs = a.simple(f"UPDATE orders SET note = 'a' WHERE user_id = {k1} AND 1 / (user_id - {k1}) = 0")
        assert error_codes(msgs) == ["22012"] and msgs[-1].payload == b"E", describe_reply(msgs)
        ok(a, "ROLLBACK TO SAVEPOINT s")
        ok(a, "COMMIT")
    assert (note_of(c, 0, k0), note_of(c, 0, k0b), note_of(c, 1, k1)) == ("kept", "x", "kept")
    assert open_transactions(c) == 0
