"""The admin console (psql dbname=shardgate as an admin user), RELOAD / SIGHUP, PAUSE / RESUME, and
shutdown (SIGTERM lets open transactions finish, SIGINT closes at once, SHUTDOWN is SIGTERM).

Clients of the console speak the simple query protocol; these tests use the raw wire client for exact
SQLSTATEs and column lists, psql and pgbench as an operator would, and psycopg for the transactions
that must survive a reload or a shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgcluster
import pgwire
from console_helpers import command, console, error_of, run, show

pytestmark = pytest.mark.usefixtures("requires_shardgate")

PGBENCH = str(pgcluster.pg_bindir() / "pgbench")
HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(180):
        yield


def app_conn(c, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(c.shardgate.dsn(), connect_timeout=10, autocommit=autocommit)


def pgbench(port: int, *args: str, timeout: float = 90, popen: bool = False):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": "postgres", "PGCONNECT_TIMEOUT": "10",
           "LC_ALL": "C.UTF-8"}
    cmd = [PGBENCH, "-h", HOST, "-p", str(port), "-U", "postgres", *args, "app"]
    if popen:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)


def small_cluster(make_cluster, pool_mode: str = "transaction", **general):
    g = {"workers": 2, "default_pool_size": 4}
    g.update(general)
    return make_cluster(num_shards=1, replicas_per_shard=0, pool_mode=pool_mode, general=g)


# ---- the console ----------------------------------------------------------------------------------


def test_show_commands(cluster):
    with app_conn(cluster) as conn:
        conn.execute("SELECT 1")  # a pool with a connection in it
        with console(cluster) as w:
            cols, rows = show(w, "SHOW VERSION")
            assert cols == ["version"] and rows[0]["version"].startswith("shardgate ")

            cols, rows = show(w, "show help;")
            commands = {r["command"] for r in rows}
            assert {"SHOW POOLS", "RELOAD", "PAUSE [db]", "RESUME [db]", "SHUTDOWN"} <= commands

            cols, rows = show(w, "SHOW CONFIG")
            assert cols == ["key", "value", "default", "changeable"]
            config = {r["key"]: r for r in rows}
            assert config["pool_mode"]["value"] == "session"
            assert config["port"]["value"] == str(cluster.shardgate.port)
            assert config["port"]["changeable"] == "no"
            assert config["log_level"]["changeable"] == "yes"
            assert config["shutdown_timeout"]["default"] == "30000"
            # Every [general] key of the reference config (conf/shardgate.toml) is listed.
            reference = (Path(__file__).resolve().parents[2] / "conf" / "shardgate.toml").read_text()
            general = re.search(r"^\[general\]\n(.*?)^\[", reference, re.S | re.M).group(1)
            keys = set(re.findall(r"^([a-z_]+) *=", general, re.MULTILINE))
            assert keys and keys <= set(config), sorted(keys - set(config))

            cols, rows = show(w, "SHOW DATABASES")
            assert {"name", "pool_size", "pool_mode", "current_connections", "paused", "disabled"} <= set(cols)
            app = [r for r in rows if r["name"] == "app"]
            assert len(app) == 1 and app[0]["shards"] == "2" and app[0]["replicas"] == "2"
            assert app[0]["paused"] == "0" and int(app[0]["current_connections"]) >= 1

            cols, rows = show(w, "SHOW SHARDS")
            assert cols[:8] == ["database", "shard", "index", "role", "host", "port", "dbname", "state"]
            servers = {(r["shard"], r["role"], int(r["port"])) for r in rows}
            expected = set()
            for shard in cluster.shards:
                expected.add((shard.name, "primary", shard.primary.port))
                expected |= {(shard.name, "replica", r.port) for r in shard.replicas}
            assert servers == expected
            default = [r for r in rows if r["shard"] == "shard0" and r["role"] == "primary"][0]
            assert default["state"] == "up"

            cols, rows = show(w, "SHOW POOLS")
            for name in ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
                         "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"):
                assert name in cols
            mine = [r for r in rows if r["database"] == "app" and r["shard"] == "shard0" and r["role"] == "primary"]
            assert mine and sum(int(r["sv_active"]) for r in mine) >= 1  # session pooling: held

            cols, rows = show(w, "SHOW CLIENTS")
            for name in ("type", "user", "database", "state", "addr", "port", "connect_time", "ptr", "link"):
                assert name in cols
            states = {(r["database"], r["state"]) for r in rows}
            assert ("shardgate", "admin") in states
            held = [r for r in rows if r["database"] == "app" and r["link"]]
            assert held  # session pooling: the client is linked to its server

            cols, rows = show(w, "SHOW SERVERS")
            for name in ("type", "user", "database", "state", "addr", "port", "remote_pid", "ptr", "link"):
                assert name in cols
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            server = [r for r in rows if r["remote_pid"] == str(pid)]
            assert len(server) == 1 and server[0]["state"] == "active"
            assert server[0]["link"] in {r["ptr"] for r in held}

            cols, rows = show(w, "SHOW STATS")
            assert cols[:3] == ["database", "total_xact_count", "total_query_count"]
            stats = [r for r in rows if r["database"] == "app"][0]
            queries = int(stats["total_query_count"])
            conn.execute("SELECT 2")
            conn.execute("SELECT 3")
            _, rows = show(w, "SHOW STATS")
            assert int([r for r in rows if r["database"] == "app"][0]["total_query_count"]) >= queries + 2

            cols, rows = show(w, "SHOW LISTS")
            lists = {r["list"]: int(r["items"]) for r in rows}
            assert lists["databases"] == 1 and lists["used_clients"] >= 2

            # Still usable after all that, and Terminate ends it cleanly.
            show(w, "SHOW VERSION")


def test_psql_on_the_console(cluster):
    r = cluster.shardgate.psql("SHOW VERSION", dbname="shardgate")
    assert r.stdout.strip().startswith("shardgate ")
    r = cluster.shardgate.psql("SHOW SHARDS", dbname="shardgate", extra_args=("-F", ","))
    assert len(r.stdout.strip().splitlines()) == 4


def test_non_admin_is_refused(cluster):
    with pytest.raises(pgwire.LoginError) as e:
        console(cluster, user="md5user", password="md5pass")
    assert e.value.error.code == "28000"
    assert "not an admin user" in e.value.error.message


def test_unknown_commands_and_extended_protocol(cluster):
    with console(cluster) as w:
        err = error_of(w, "SHOW NONSENSE")
        assert err.code == "42601" and "NONSENSE" in err.message
        err = error_of(w, "DROP TABLE x")
        assert err.code == "42601" and "unrecognized admin command" in err.message
        err = error_of(w, "SHOW POOLS; SHOW CLIENTS")
        assert err.code == "0A000"
        err = error_of(w, "PAUSE nosuchdb")
        assert err.code == "3D000"
        msgs = run(w, "")
        assert pgwire.types(msgs) == "IZ"
        # The extended protocol gets one error per batch, then ReadyForQuery at Sync.
        w.send(pgwire.parse("", "SHOW POOLS") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        msgs = w.recv_until(b"Z")
        assert pgwire.types(msgs) == "EZ", pgwire.types(msgs)
        assert pgwire.errors(msgs)[0].code == "0A000"
        # The session goes on.
        cols, rows = show(w, "SHOW VERSION")
        assert rows


# ---- PAUSE / RESUME -------------------------------------------------------------------------------


def test_pause_waits_for_transactions_and_holds_new_ones(make_cluster):
    c = small_cluster(make_cluster)
    c.shards[0].primary.psql("CREATE TABLE admin_pause (id int)")
    stop = threading.Event()
    failures: list[BaseException] = []
    done = [0]

    def churn():
        try:
            with app_conn(c) as conn:
                while not stop.is_set():
                    conn.execute("INSERT INTO admin_pause VALUES (1)")
                    done[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failures.append(e)

    workers = [threading.Thread(target=churn) for _ in range(3)]
    for t in workers:
        t.start()
    in_txn = app_conn(c, autocommit=False)
    in_txn.execute("INSERT INTO admin_pause VALUES (2)")  # a transaction is open
    with console(c) as w:
        w.send(pgwire.query("PAUSE app"))
        with pytest.raises(TimeoutError):
            w.recv(timeout=1.0)  # PAUSE waits for the open transaction
        in_txn.commit()
        msgs = w.recv_until(b"Z", timeout=10)
        assert not pgwire.errors(msgs) and pgwire.parse_command_complete(msgs[0]) == "PAUSE"

        _, rows = show(w, "SHOW DATABASES")
        assert [r["paused"] for r in rows if r["name"] == "app"] == ["1"]
        # New transactions wait (no error) while paused.
        before = done[0]
        time.sleep(0.5)
        assert done[0] - before <= 3  # at most the statements already past the gate
        result: list = []
        held = threading.Thread(target=lambda: result.append(in_txn.execute("SELECT 42").fetchone()[0]))
        held.start()
        held.join(1.0)
        assert held.is_alive(), "a new transaction ran while the database was paused"
        _, clients = show(w, "SHOW CLIENTS")
        paused = [r for r in clients if r["state"] == "paused"]
        assert paused
        # How long it has waited, as PgBouncer splits it: seconds, then microseconds.
        assert all(int(r["wait"]) * 1_000_000 + int(r["wait_us"]) >= 500_000 for r in paused), paused

        assert command(w, "RESUME app") == "RESUME"
        held.join(10)
        assert result == [42]
        time.sleep(0.3)
        assert done[0] > before + 3, "clients did not run again after RESUME"
    stop.set()
    for t in workers:
        t.join(10)
    in_txn.close()
    assert not failures, failures


# ---- RELOAD and SIGHUP ----------------------------------------------------------------------------


def test_reload_good_and_bad_files_while_pgbench_runs(make_cluster):
    c = small_cluster(make_cluster, default_pool_size=4)
    primary = c.shards[0].primary
    r = pgbench(primary.port, "-i", "-s", "1", "-q")
    assert r.returncode == 0, r.stderr
    bench = pgbench(c.shardgate.port, "-T", "8", "-c", "6", "-j", "2", popen=True)
    try:
        time.sleep(1.5)
        with console(c) as w:
            # A good file: bigger pools (the old ones drain), debug logging.
            c.general_overrides.update(default_pool_size=6, log_level="debug")
            c.write_config()
            assert command(w, "RELOAD") == "RELOAD"
            _, rows = show(w, "SHOW CONFIG")
            config = {r["key"]: r["value"] for r in rows}
            assert config["default_pool_size"] == "6" and config["log_level"] == "debug"
            time.sleep(1.5)

            # A bad file: refused with the loader's message; the config in force stays.
            good = c.render_config()
            c.write_config(good.replace("default_pool_size = 6", "default_pool_size = \"many\""))
            err = error_of(w, "RELOAD")
            assert err.code == "F0000" and "default_pool_size" in err.message
            _, rows = show(w, "SHOW CONFIG")
            assert {r["key"]: r["value"] for r in rows}["default_pool_size"] == "6"
            time.sleep(1.0)

            # SIGHUP does the same as RELOAD.
            c.general_overrides.update(default_pool_size=3, log_level="info")
            c.write_config()
            mark = len(c.shardgate.log_text())
            c.shardgate.reload()
            c.shardgate.wait_for_log(r"event=reload_done", start=mark)
            _, rows = show(w, "SHOW CONFIG")
            assert {r["key"]: r["value"] for r in rows}["default_pool_size"] == "3"
        out, err_text = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
    report = f"exit {bench.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err_text}"
    assert bench.returncode == 0, report
    assert "number of failed transactions: 0" in out, report
    assert "error" not in err_text.lower(), report
    log = c.shardgate.log_text()
    assert "event=reload_failed" in log and "event=pool_draining" in log
    assert "level=debug" in log  # the level followed the reload
    pgbench(primary.port, "-i", "-I", "d")


def test_reload_keeps_restart_only_keys_and_refuses_a_file_without_users(make_cluster):
    """RELOAD of a file that changes keys which need a restart (workers, port) keeps their running
    values, as PgBouncer does, and SHOW CONFIG says so; a file without users or databases (cut short
    while written) is refused, since it would lock every client and admin out."""
    c = small_cluster(make_cluster)
    good = c.render_config()
    with console(c) as w:
        _, rows = show(w, "SHOW CONFIG")
        before = {r["key"]: r["value"] for r in rows}
        c.general_overrides.update(workers=int(before["workers"]) + 3, port=pgcluster.free_port(),
                                   default_pool_size=7)
        c.write_config()
        assert command(w, "RELOAD") == "RELOAD"
        _, rows = show(w, "SHOW CONFIG")
        after = {r["key"]: r["value"] for r in rows}
        assert after["workers"] == before["workers"] and after["port"] == before["port"], after
        assert after["default_pool_size"] == "7"
        c.shardgate.wait_for_log(r"event=reload_restart_needed key=general\.workers")
        for cut in ("[general]\n", good.split("[[users]]")[0]):
            c.write_config(cut)
            err = error_of(w, "RELOAD")
            assert err.code == "F0000" and "declares no" in err.message, err
        _, rows = show(w, "SHOW CONFIG")
        assert {r["key"]: r["value"] for r in rows}["default_pool_size"] == "7"
    with app_conn(c) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_reload_moving_a_shard_is_followed_after_an_open_transaction_touches_it(make_cluster):
    """RELOAD moves shard1 (its port now points where nothing listens). A transaction open since
    before the RELOAD then touches shard1: the pool made for it must be the new configuration's,
    or the old server would keep serving every later transaction on shard1 (a failover ignored)."""
    c = make_cluster(num_shards=2, replicas_per_shard=0, pool_mode="transaction", general={"workers": 1},
                     database_options={"default_shard": 0},
                     extra_toml='  [[databases.sharded_tables]]\n  name = "users"\n  column = "id"\n'
                                '  type = "bigint"\n  strategy = "hash"\n')
    for i in range(2):
        c.shards[i].primary.psql("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
    c.shards[0].primary.psql("INSERT INTO users VALUES (1, 'on shard0')")  # hash: id 1 -> shard0
    c.shards[1].primary.psql("INSERT INTO users VALUES (3, 'on shard1')")  # id 3 -> shard1
    old_port = c.shards[1].primary.port
    with pgwire.PgWire(HOST, c.shardgate.port) as w:
        w.login()
        assert pgwire.data_rows(w.simple("SELECT name FROM users WHERE id = 3")) == [["on shard1"]]
        assert not pgwire.errors(w.simple("BEGIN"))
        assert not pgwire.errors(w.simple("UPDATE users SET name = 'x' WHERE id = 1"))
        config = Path(c.config_path).read_text()
        assert f"port = {old_port}" in config
        Path(c.config_path).write_text(config.replace(f"port = {old_port}", "port = 1"))
        with console(c) as admin:
            assert command(admin, "RELOAD") == "RELOAD"
        w.simple("UPDATE users SET name = 'x' WHERE id = 3")  # either server may answer this one
        w.simple("ROLLBACK")
    with pgwire.PgWire(HOST, c.shardgate.port) as w:
        w.login()
        for _ in range(3):
            codes = [e.code for e in pgwire.errors(w.simple("SELECT name FROM users WHERE id = 3"))]
            assert codes == ["08006"], f"shard1 is still served by its old server: {codes}"


def test_max_client_conn_refuses_after_the_ssl_answer_and_the_startup_packet(make_cluster):
    """Over max_client_conn, a client is refused with 53300 as Postgres and PgBouncer refuse it:
    after answering its SSLRequest and reading its startup packet, so that libpq (sslmode=prefer,
    the default) shows the reason rather than "error response during SSL exchange"."""
    c = small_cluster(make_cluster, max_client_conn=2)
    with app_conn(c) as first, app_conn(c) as second:
        assert first.execute("SELECT 1").fetchone() == (1,) and second.execute("SELECT 1").fetchone() == (1,)
        with pgwire.PgWire(HOST, c.shardgate.port) as w:
            w.send(pgwire.ssl_request())
            assert w.read_byte() == b"N"
            with pytest.raises(pgwire.LoginError) as refused:
                w.login()
            assert refused.value.error.code == "53300", refused.value.error
            assert "too many clients" in refused.value.error.message
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(c.shardgate.dsn(), sslmode="prefer", connect_timeout=5)
    with app_conn(c) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_console_refuses_an_empty_database_name_and_a_resume_of_one_database_under_a_global_pause(make_cluster):
    """PAUSE/KILL/RESUME "" name no database (Postgres refuses a zero-length quoted name); KILL ""
    disconnected every client. After a PAUSE of everything, RESUME of one database would answer
    RESUME and leave it paused: it is refused, and RESUME resumes all."""
    c = small_cluster(make_cluster)
    with app_conn(c) as conn, console(c) as w:
        for verb in ("PAUSE", "KILL", "RESUME", "RECONNECT"):
            assert error_of(w, f'{verb} ""').code == "42601"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert command(w, "PAUSE") == "PAUSE"
        err = error_of(w, "RESUME app")
        assert err.code == "55000" and "as a whole" in err.message, err
        assert command(w, "RESUME") == "RESUME"
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_sighup_switches_to_json_logs_and_a_bad_file_is_kept_out(make_cluster):
    c = small_cluster(make_cluster)
    with app_conn(c) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        good = c.render_config()
        c.write_config(good.replace("[general]", "[general]\nno_such_key = 1"))
        mark = len(c.shardgate.log_text())
        c.shardgate.reload()
        c.shardgate.wait_for_log(r"event=reload_failed .*no_such_key", start=mark)
        assert conn.execute("SELECT 2").fetchone() == (2,)

        c.general_overrides["log_format"] = "json"
        c.write_config()
        mark = len(c.shardgate.log_text())
        c.shardgate.reload()
        c.shardgate.wait_for_log(r'"event":"reload_done"', start=mark)
        assert conn.execute("SELECT 3").fetchone() == (3,)
        lines = [ln for ln in c.shardgate.log_text()[mark:].splitlines() if ln.startswith("{")]
        events = [json.loads(ln) for ln in lines]
        done = [e for e in events if e.get("event") == "reload_done"]
        assert done and done[0]["level"] == "info" and done[0]["log_format"] == "json"
        assert isinstance(done[0]["databases"], int)


# ---- shutdown -------------------------------------------------------------------------------------


def test_sigterm_lets_an_open_transaction_commit(make_cluster):
    c = small_cluster(make_cluster, shutdown_timeout=20000)
    c.shards[0].primary.psql("CREATE TABLE admin_term (id int)")
    conn = app_conn(c, autocommit=False)
    conn.execute("INSERT INTO admin_term VALUES (7)")
    sg = c.shardgate
    mark = len(sg.log_text())
    os.kill(sg.pid, signal.SIGTERM)
    sg.wait_for_log(r"event=shutdown cause=SIGTERM mode=graceful", start=mark)
    time.sleep(0.3)
    # No new clients...
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(sg.dsn(), connect_timeout=3).close()
    # ...but the open transaction finishes.
    conn.execute("INSERT INTO admin_term VALUES (8)")
    conn.commit()
    assert sg._proc.wait(timeout=15) == 0
    sg.returncode = 0
    conn.close()
    assert c.shards[0].primary.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM admin_term") == "7,8"


def test_sigint_closes_at_once(make_cluster):
    c = small_cluster(make_cluster, shutdown_timeout=60000)
    conn = app_conn(c, autocommit=False)
    conn.execute("SELECT 1")
    sg = c.shardgate
    started = time.monotonic()
    os.kill(sg.pid, signal.SIGINT)
    assert sg._proc.wait(timeout=10) == 0
    sg.returncode = 0
    assert time.monotonic() - started < 5
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 2")
    conn.close()


def test_shutdown_command(make_cluster):
    c = small_cluster(make_cluster)
    with console(c) as w:
        assert command(w, "SHUTDOWN") == "SHUTDOWN"
        assert c.shardgate._proc.wait(timeout=15) == 0
    c.shardgate.returncode = 0
    assert re.search(r"event=shutdown cause=admin_console mode=graceful", c.shardgate.log_text())
