"""What several integration tests do with a psycopg client of shardgate."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest


def cancel_a_sleep(conn: psycopg.Connection) -> None:
    """Cancels a long pg_sleep from another thread: it must fail with 57014 soon, and the session
    must go on working."""
    conn.execute("BEGIN")  # holds its server connection, so the cancel has a backend to name
    timer = threading.Timer(1.0, conn.cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 15, "the cancel did not reach the server"
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT 1").fetchone() == (1,)
