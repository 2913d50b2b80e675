"""The admin console's connection controls, as PgBouncer has them: RECONNECT [db], KILL [db], KILL_CLIENT id,
DISABLE db / ENABLE db.

One cluster for the module: one shard, transaction pooling, two workers, and two databases in shardgate's
config: "app" and "other" (the shard's "postgres" database), so a command on one database can be seen to
leave the other alone. Backend pids (pg_backend_pid() through shardgate, pg_stat_activity on the shard)
show which server connections were closed and which were kept. Every test leaves the databases resumed
and enabled."""

from __future__ import annotations

import time

import psycopg
import pytest

import conftest
import pgwire
from console_helpers import command, console, error_of, run, show

HOST = "127.0.0.1"

OTHER_DB = """
[[databases]]
name = "other"
  [[databases.shards]]
  name = "shard0"
  primary = {{ host = "127.0.0.1", port = {port}, database = "postgres", user = "postgres", password = "{password}" }}
"""


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(120):
        yield


@pytest.fixture(scope="module")
def c(cluster_root, shardgate_bin):
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    with conftest.running_cluster(cluster_root / "admin-commands", shardgate_bin, num_shards=1,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  general={"workers": 2, "default_pool_size": 8}) as cluster:
        primary = cluster.shards[0].primary
        cluster.write_config(cluster.render_config()
                             + OTHER_DB.format(port=primary.port, password=cluster.superuser_password))
        with console(cluster) as w:
            assert command(w, "RELOAD") == "RELOAD"
            _, rows = show(w, "SHOW DATABASES")
            assert {r["name"] for r in rows} == {"app", "other"}
        primary.psql("CREATE TABLE IF NOT EXISTS killed_writes (id int)")
        yield cluster


@pytest.fixture(autouse=True)
def _resumed_and_enabled(c):
    """Whatever a test did, the next one starts with both databases resumed and enabled."""
    yield
    with console(c) as w:
        command(w, "RESUME")
        for db in ("app", "other"):
            command(w, f"ENABLE {db}")


# ---- helpers --------------------------------------------------------------------------------------


def app(cluster, dbname: str = "app", autocommit: bool = True, **kw) -> psycopg.Connection:
    return psycopg.connect(cluster.shardgate.dsn(dbname=dbname, **kw), connect_timeout=10, autocommit=autocommit)


def wire_client(cluster, dbname: str = "app", application_name: str = "") -> pgwire.PgWire:
    w = pgwire.PgWire(HOST, cluster.shardgate.port)
    w.login(user="postgres", password="postgres", database=dbname,
            params={"application_name": application_name} if application_name else None)
    return w


def wire_value(w: pgwire.PgWire, sql: str) -> str:
    msgs = run(w, sql)
    assert not pgwire.errors(msgs), pgwire.errors(msgs)
    return pgwire.data_rows(msgs)[0][0]


def backend_pid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def on_shard(cluster, pid: int) -> bool:
    """Whether the shard still has a backend with this pid."""
    with psycopg.connect(cluster.shards[0].primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1


def wait_gone(cluster, pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while on_shard(cluster, pid):
        assert time.monotonic() < deadline, f"backend {pid} still on the shard after {timeout}s"
        time.sleep(0.05)


def server_rows(w: pgwire.PgWire, pid: int) -> list[dict]:
    _, rows = show(w, "SHOW SERVERS")
    return [r for r in rows if r["remote_pid"] == str(pid)]


def start_login(cluster, dbname: str) -> pgwire.PgWire:
    """A client that sent its startup packet; finish_login() completes (or fails) its login."""
    w = pgwire.PgWire(HOST, cluster.shardgate.port)
    w.send(pgwire.startup_message({"user": "postgres", "database": dbname}))
    return w


def expect_killed(w: pgwire.PgWire, detail: str) -> None:
    """The client got a FATAL 57P01 (unasked: it was idle) and then the connection closed."""
    msgs = w.wait_closed(timeout=10)
    errs = pgwire.errors(msgs)
    assert len(errs) == 1, pgwire.types(msgs)
    err = errs[0]
    assert (err.severity, err.code) == ("FATAL", "57P01"), err
    assert err.message == "terminating connection due to administrator command"
    assert err.fields.get("D") == detail


# ---- RECONNECT ------------------------------------------------------------------------------------


def test_reconnect_replaces_connections_as_they_are_released(c):
    with app(c) as idle_client, app(c, autocommit=False) as in_txn, console(c) as w:
        held = backend_pid(in_txn)  # its transaction stays open: the connection is held
        first = backend_pid(idle_client)
        assert backend_pid(idle_client) == first  # an idle connection is reused as long as nothing says otherwise
        assert held != first

        assert command(w, "RECONNECT app") == "RECONNECT"
        assert [r["close_needed"] for r in server_rows(w, held)] == ["1"]

        # The idle connection was closed at once; the next transaction gets a new one.
        second = backend_pid(idle_client)
        assert second not in (first, held)
        wait_gone(c, first)
        assert [r["close_needed"] for r in server_rows(w, second)] == ["0"]

        # The open transaction keeps its connection until it ends, and is not disturbed.
        assert backend_pid(in_txn) == held
        assert on_shard(c, held)
        in_txn.commit()
        wait_gone(c, held)
        assert backend_pid(in_txn) not in (held, first)
        in_txn.commit()


def test_reconnect_without_a_database_covers_every_database(c):
    with app(c) as on_app, app(c, dbname="other") as on_other, console(c) as w:
        before = (backend_pid(on_app), backend_pid(on_other))
        assert command(w, "RECONNECT") == "RECONNECT"
        after = (backend_pid(on_app), backend_pid(on_other))
        assert set(after).isdisjoint(before), (before, after)
        for pid in before:
            wait_gone(c, pid)


def test_reconnect_of_one_database_leaves_the_other(c):
    with app(c) as on_app, app(c, dbname="other") as on_other, console(c) as w:
        app_pid, other_pid = backend_pid(on_app), backend_pid(on_other)
        assert command(w, "RECONNECT other") == "RECONNECT"
        assert backend_pid(on_app) == app_pid
        assert backend_pid(on_other) != other_pid


# ---- KILL -----------------------------------------------------------------------------------------


def test_kill_drops_the_databases_clients_and_holds_new_ones_until_resume(c):
    idle_victim = wire_client(c)
    txn_victim = wire_client(c)
    run(txn_victim, "BEGIN")
    run(txn_victim, "INSERT INTO killed_writes VALUES (1)")
    txn_pid = int(wire_value(txn_victim, "SELECT pg_backend_pid()"))
    with app(c, dbname="other") as bystander, console(c) as w:
        assert bystander.execute("SELECT 1").fetchone() == (1,)
        assert command(w, "KILL app") == "KILL"

        expect_killed(idle_victim, "the shardgate admin console ran KILL app")
        expect_killed(txn_victim, "the shardgate admin console ran KILL app")
        wait_gone(c, txn_pid)  # its server connection was closed: the transaction rolled back
        assert c.shards[0].primary.psql("SELECT count(*) FROM killed_writes").strip() == "0"
        _, servers = show(w, "SHOW SERVERS")
        assert not [s for s in servers if s["database"] == "app"], servers

        # Another database's client and the console itself are untouched.
        assert bystander.execute("SELECT 2").fetchone() == (2,)
        _, rows = show(w, "SHOW DATABASES")
        assert {r["name"]: r["paused"] for r in rows} == {"app": "1", "other": "0"}

        # A new client of the killed database waits (no error, no server connection) until RESUME.
        waiting = start_login(c, "app")
        with pytest.raises(TimeoutError):
            waiting.finish_login("postgres", "postgres", timeout=0.8)
        with app(c, dbname="other") as newcomer:  # other databases take new clients as usual
            assert newcomer.execute("SELECT 3").fetchone() == (3,)
        _, servers = show(w, "SHOW SERVERS")
        assert not [s for s in servers if s["database"] == "app"], servers

        assert command(w, "RESUME app") == "RESUME"
        waiting.finish_login("postgres", "postgres", timeout=10)
        assert wire_value(waiting, "SELECT 40 + 2") == "42"
        waiting.close()
    for victim in (idle_victim, txn_victim):
        victim.close()


def test_kill_without_a_database_spares_only_the_consoles(c):
    on_app, on_other = wire_client(c), wire_client(c, dbname="other")
    with console(c) as w, console(c) as other_console:
        assert command(w, "KILL") == "KILL"
        expect_killed(on_app, "the shardgate admin console ran KILL")
        expect_killed(on_other, "the shardgate admin console ran KILL")
        _, rows = show(other_console, "SHOW DATABASES")
        assert {r["paused"] for r in rows} == {"1"}
        assert command(w, "RESUME") == "RESUME"
        with app(c) as again:
            assert again.execute("SELECT 1").fetchone() == (1,)


# ---- KILL_CLIENT ----------------------------------------------------------------------------------


def test_kill_client_ends_one_client(c):
    victim = wire_client(c, application_name="kill-me")
    spared = wire_client(c, application_name="spare-me")
    with console(c) as w:
        _, rows = show(w, "SHOW CLIENTS")
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), f"client ids are not unique across workers: {rows}"
        victim_id = [r["id"] for r in rows if r["application_name"] == "kill-me"][0]
        # The consoles of earlier tests may take a moment to leave; then the one left is this one.
        deadline = time.monotonic() + 10
        while len(own_id := [r["id"] for r in rows if r["state"] == "admin"]) != 1:
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
            _, rows = show(w, "SHOW CLIENTS")

        assert command(w, f"KILL_CLIENT {victim_id}") == "KILL_CLIENT"
        expect_killed(victim, f"the shardgate admin console ran KILL_CLIENT {victim_id}")
        assert wire_value(spared, "SELECT 7") == "7"

        err = error_of(w, f"KILL_CLIENT {victim_id}")
        assert err.code == "42704" and "does not exist" in err.message
        err = error_of(w, "KILL_CLIENT twelve")
        assert err.code == "42601"
        err = error_of(w, f"KILL_CLIENT {own_id[0]}")
        assert err.code == "22023"
    spared.close()
    victim.close()


# ---- DISABLE / ENABLE -----------------------------------------------------------------------------


def test_disable_refuses_new_clients_and_enable_lets_them_in(c):
    with app(c) as connected, console(c) as w:
        assert command(w, "DISABLE app") == "DISABLE"
        _, rows = show(w, "SHOW DATABASES")
        assert {r["name"]: r["disabled"] for r in rows} == {"app": "1", "other": "0"}

        with pytest.raises(pgwire.LoginError) as refused:
            wire_client(c)
        err = refused.value.error
        assert (err.severity, err.code) == ("FATAL", "55000"), err
        assert err.message == 'database "app" is not currently accepting connections'
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            app(c)

        # Connected clients go on, transactions and all; other databases take new clients.
        assert connected.execute("SELECT 1").fetchone() == (1,)
        with connected.transaction():
            assert connected.execute("SELECT 2").fetchone() == (2,)
        with app(c, dbname="other") as newcomer:
            assert newcomer.execute("SELECT 3").fetchone() == (3,)

        assert command(w, "ENABLE app") == "ENABLE"
        _, rows = show(w, "SHOW DATABASES")
        assert {r["name"]: r["disabled"] for r in rows} == {"app": "0", "other": "0"}
        with app(c) as newcomer:
            assert newcomer.execute("SELECT 4").fetchone() == (4,)


def test_disable_wins_over_a_pause(c):
    with console(c) as w:
        command(w, "PAUSE app")
        waiting = start_login(c, "app")
        with pytest.raises(TimeoutError):
            waiting.finish_login("postgres", "postgres", timeout=0.5)
        command(w, "DISABLE app")
        command(w, "RESUME app")  # the held login asks again, and is refused
        with pytest.raises(pgwire.LoginError) as refused:
            waiting.finish_login("postgres", "postgres", timeout=10)
        assert refused.value.error.code == "55000"
        waiting.close()


# ---- the console ----------------------------------------------------------------------------------


def test_paused_clients_wait_at_most_query_wait_timeout(cluster_root, shardgate_bin):
    """PAUSE holds a logged-in client's next statement and a new client's login, but not forever: after
    query_wait_timeout the statement gets ERROR 57P03 (the session goes on, and runs statements again
    after RESUME) and the login FATAL 57P03, as PgBouncer's query_wait_timeout ends paused clients'
    waits too."""
    if conftest.DIRECT:
        pytest.skip(conftest.SKIP_DIRECT_REASON)
    wait_ms = 1500
    with conftest.running_cluster(cluster_root / "pause-timeout", shardgate_bin, num_shards=1,
                                  replicas_per_shard=0, pool_mode="transaction",
                                  general={"workers": 1, "query_wait_timeout": wait_ms}) as cl:
        client = wire_client(cl)
        with console(cl) as w:
            assert command(w, "PAUSE app") == "PAUSE"
            login = start_login(cl, "app")
            started = time.monotonic()
            msgs = run(client, "SELECT 1")
            waited = time.monotonic() - started
            errs = pgwire.errors(msgs)
            assert [(e.severity, e.code) for e in errs] == [("ERROR", "57P03")], pgwire.types(msgs)
            assert "query_wait_timeout" in errs[0].message, errs[0].message
            assert wait_ms / 1000 - 0.2 <= waited < wait_ms / 1000 + 5, waited
            with pytest.raises(pgwire.LoginError) as refused:
                login.finish_login("postgres", "postgres", timeout=10)
            assert (refused.value.error.severity, refused.value.error.code) == ("FATAL", "57P03")
            login.close()
            assert command(w, "RESUME app") == "RESUME"
            assert wire_value(client, "SELECT 40 + 2") == "42"
        client.close()


def test_commands_name_known_databases_and_are_in_the_help(c):
    with console(c) as w:
        for sql in ("RECONNECT nosuchdb", "KILL nosuchdb", "DISABLE nosuchdb", "ENABLE nosuchdb",
                    "DISABLE shardgate"):
            err = error_of(w, sql)
            assert err.code == "3D000" and "does not exist" in err.message, (sql, err)
        for sql in ("DISABLE", "ENABLE", "KILL_CLIENT", "KILL app other"):
            assert error_of(w, sql).code == "42601", sql
        _, rows = show(w, "SHOW HELP")
        assert {"RECONNECT [db]", "KILL [db]", "KILL_CLIENT id", "DISABLE db", "ENABLE db"} <= {
            r["command"] for r in rows}
        # Quoted names keep their case, as PAUSE's do: "App" is not app.
        assert error_of(w, 'DISABLE "App"').code == "3D000"
        assert command(w, 'disable "app"') == "DISABLE"
        assert command(w, "enable APP") == "ENABLE"
