"""Clients that wait for each other's pooled connections: shardgate finds the cycle and ends one wait
with 40P01, as Postgres ends a lock deadlock, instead of leaving every client in it to wait out
query_wait_timeout.

A client in a transaction over two shards holds a connection on one while it waits for one on the
other. Two such clients going to the shards in opposite orders, with every connection of both
shards held by them, can only wait for each other. Postgres would never see this (it has no pool);
the same transactions run on Postgres directly would simply both commit.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

import pgwire
from txn_helpers import (batch_winner, connect, deadlocks_counted, describe_reply, error_codes, note_of, ok,
                         open_transactions, orders_cluster, survivor_goes_on)

# Long enough that a wait ending for query_wait_timeout is told apart from one ended as a deadlock.
QUERY_WAIT_MS = 60000


def deadlock_cluster(make_cluster, pool_size: int = 1, **general):
    return orders_cluster(make_cluster, default_pool_size=pool_size, workers=1,
                          query_wait_timeout=QUERY_WAIT_MS, **general)


@pytest.mark.requires_shardgate
def test_two_transactions_crossing_shards_in_opposite_orders(make_cluster):
    """Pool size 1 per shard: a holds shard 0 and waits for shard 1, b holds shard 1 and waits for
    shard 0. The first to wait (a) gets 40P01 after deadlock_timeout, its transaction failed as
    Postgres fails a deadlock victim's, and its connection to shard 0 goes back to the pool at once:
    b goes on before a rolls back, and commits."""
    c, keys = deadlock_cluster(make_cluster, deadlock_timeout=500)
    k0, k1 = keys[0][0], keys[1][0]
    port = c.shardgate.port
    with connect(port, timeout=30) as a, connect(port, timeout=30) as b:
        # (A BEGIN runs on the shard the session used last: each client's on the shard it then
        # updates, so that a's BEGIN does not take b's shard.)
        ok(a, f"SELECT note FROM orders WHERE user_id = {k0}")
        ok(b, f"SELECT note FROM orders WHERE user_id = {k1}")
        ok(a, "BEGIN")
        ok(a, f"UPDATE orders SET note = 'a' WHERE user_id = {k0}")  # a holds shard 0's only connection
        ok(b, "BEGIN")
        ok(b, f"UPDATE orders SET note = 'b' WHERE user_id = {k1}")  # b holds shard 1's
        started = time.monotonic()
        a.send(pgwire.query(f"UPDATE orders SET note = 'a' WHERE user_id = {k1}"))  # waits for shard 1
        time.sleep(0.2)
        b.send(pgwire.query(f"UPDATE orders SET note = 'b' WHERE user_id = {k0}"))  # waits for shard 0: a cycle
        msgs = a.recv_until(b"Z", timeout=20)
        waited = time.monotonic() - started
        assert error_codes(msgs) == ["40P01"], describe_reply(msgs)
        assert waited < QUERY_WAIT_MS / 1000 / 2, f"the deadlock took {waited:.1f}s to be found"
        err = pgwire.errors(msgs)[0]
        assert "deadlock" in err.message and "shard" in err.fields.get("D", ""), str(err)
        assert msgs[-1].payload == b"E", describe_reply(msgs)  # a's transaction failed, as on Postgres
        assert deadlocks_counted(c, "pool") == 1
        # a's connection to shard 0 is free from its error on: b goes on before a rolls back.
        survivor_goes_on(a, b)
    assert (note_of(c, 0, k0), note_of(c, 1, k1)) == ("b", "b")
    assert open_transactions(c) == 0


@pytest.mark.requires_shardgate
def test_batches_crossing_shards_in_opposite_orders(make_cluster):
    """The same cycle from two extended-protocol batches without BEGIN (each an implicit transaction
    over both shards): the victim's batch fails as a whole and rolls back, so the other's runs."""
    c, keys = deadlock_cluster(make_cluster, deadlock_timeout=500)
    k0, k1 = keys[0][0], keys[1][0]
    port = c.shardgate.port

    def update(k, note):
        return (pgwire.parse("", f"UPDATE orders SET note = '{note}' WHERE user_id = {k}") + pgwire.bind("", "")
                + pgwire.execute())

    def slow_update(k, note):  # holds its shard's connection a moment, so the two batches cross
        return (pgwire.parse("", f"UPDATE orders SET note = '{note}' || pg_sleep(0.5)::text WHERE user_id = {k}")
                + pgwire.bind("", "") + pgwire.execute())

    with connect(port, timeout=30) as a, connect(port, timeout=30) as b:
        a.send(slow_update(k0, "a") + update(k1, "a") + pgwire.sync())
        b.send(slow_update(k1, "b") + update(k0, "b") + pgwire.sync())
        replies = {"a": a.recv_until(b"Z", timeout=20), "b": b.recv_until(b"Z", timeout=20)}
    winner = batch_winner(replies)
    # The victim's first update rolled back with its batch; the winner's two both committed.
    assert (note_of(c, 0, k0), note_of(c, 1, k1)) == (winner, winner)
    assert open_transactions(c) == 0


@pytest.mark.requires_shardgate
@pytest.mark.parametrize("statements", ["keyed", "with_multi_shard"])
def test_many_clients_over_both_shards_never_wait_out_the_timeout(make_cluster, statements):
    """Eight clients, two connections per shard, each running transactions that touch both shards
    in a random order: deadlocks come and go. Every transaction either commits or gets 40P01 (and is
    retried, as applications retry deadlock victims); none waits for query_wait_timeout, and the
    committed increments add up. (Each client updates rows of its own, so that only waits for
    connections make cycles: test_lock_deadlock.py has those through row locks.) with_multi_shard: the second
    statement of some transactions updates both rows at once, a statement for both shards whose
    part on the shard not yet in the transaction waits for a connection there."""
    c, keys = deadlock_cluster(make_cluster, pool_size=2, deadlock_timeout=200)
    port = c.shardgate.port
    for s in c.shards:
        s.primary.psql("ALTER TABLE orders ADD COLUMN n int NOT NULL DEFAULT 0")
    rounds = 15
    results: dict[int, tuple[int, int, list[str]]] = {}
    increments = [0] * 8

    def client(i: int) -> None:
        rng = random.Random(i)
        k0, k1 = keys[0][i], keys[1][i]
        committed, victims, problems = 0, 0, []
        with connect(port, timeout=40) as w:
            while committed < rounds and len(problems) < 3:
                order = [k0, k1] if rng.random() < 0.5 else [k1, k0]
                updates = [f"UPDATE orders SET n = n + 1 WHERE user_id = {k}" for k in order]
                if statements == "with_multi_shard" and rng.random() < 0.5:
                    updates[1] = f"UPDATE orders SET n = n + 1 WHERE user_id IN ({k0}, {k1})"
                replies = [w.simple("BEGIN")]
                for sql in updates:
                    replies.append(w.simple(sql, timeout=40))
                    time.sleep(0.002)
                codes = [code for r in replies for code in error_codes(r)]
                if not codes:
                    ok(w, "COMMIT")
                    committed += 1
                    increments[i] += 3 if "IN (" in updates[1] else 2
                elif codes[0] == "40P01":
                    ok(w, "ROLLBACK")
                    victims += 1
                else:
                    problems.append(describe_reply([m for r in replies for m in r]))
                    w.simple("ROLLBACK")
        results[i] = (committed, victims, problems)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert time.monotonic() - started < QUERY_WAIT_MS / 1000, "clients waited out query_wait_timeout"
    assert all(not p for _, _, p in results.values()), results
    assert sum(r[0] for r in results.values()) == 8 * rounds
    assert sum(r[1] for r in results.values()) > 0, "no deadlock happened: the test tests nothing"
    total = sum(int(s.primary.psql("SELECT sum(n) FROM orders")) for s in c.shards)
    assert total == sum(increments)
    assert open_transactions(c) == 0
