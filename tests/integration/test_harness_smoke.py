"""Tests of the cluster harness itself (tests/harness/pgcluster.py): topology, roles, auth, process control, demo CLI.

They need no shardgate (a fake one stands in where a process is needed), so they pass in both modes:
    SHARDGATE_TARGET=direct /usr/bin/python3 -m pytest -v tests/integration/test_harness_smoke.py
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

import pgcluster

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS = REPO_ROOT / "tests" / "harness"
FAKE_SHARDGATE = str(HARNESS / "fake_shardgate.py")

# user -> (how plain Postgres must ask for the password, the pg_hba method)
EXPECTED_AUTH = {
    "postgres": "sasl:SCRAM-SHA-256",
    "md5user": "md5",
    "clearuser": "cleartext",
    "trustuser": "ok",
    "verifieruser": "sasl:SCRAM-SHA-256",
}


def _family(server: pgcluster.Server) -> list[int]:
    pid = server.postmaster_pid()
    assert pid, f"{server.name} is not running"
    return [pid, *pgcluster._descendants(pid)]


def _wait_until(fn, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _reap_until(done: threading.Event, pids: list[int]) -> None:
    # Only these pids: reaping any other child would steal an exit status from subprocess.
    while not done.is_set():
        for p in pids:
            pgcluster.pid_alive(p)  # reaps p if it is our zombie child
        time.sleep(0.05)


def _demo_pids(demo: Path) -> list[int]:
    state = pgcluster.load_state(demo) or {}
    pids = [s["pid"] for s in state.get("servers", []) if s.get("pid")]
    return pids + ([state["shardgate"]["pid"]] if state.get("shardgate") else [])


def test_free_port_gives_distinct_bindable_ports():
    ports = [pgcluster.free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    for p in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_primaries_are_writable_and_replicas_stream(cluster):
    assert len(cluster.shards) == 2
    for shard in cluster.shards:
        assert shard.primary.role == "primary"
        assert shard.primary.psql("SELECT pg_is_in_recovery()") == "f"
        assert len(shard.replicas) == 1
        replica = shard.replicas[0]
        assert replica.role == "replica"
        assert replica.psql("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)") == "t|streaming"
        senders = shard.primary.psql("SELECT application_name, state FROM pg_stat_replication")
        assert senders == f"{replica.name}|streaming"
        # Each server is a separate instance on its own port.
        assert replica.psql("SHOW port") == str(replica.port)


def test_replica_follows_its_primary_only(cluster):
    s0, s1 = cluster.shards
    s0.primary.psql("DROP TABLE IF EXISTS harness_smoke; CREATE TABLE harness_smoke (v int); "
                    "INSERT INTO harness_smoke VALUES (42)")
    _wait_until(lambda: s0.replicas[0].psql("SELECT to_regclass('harness_smoke') IS NOT NULL") == "t",
                what="the table to reach shard0's replica")
    assert s0.replicas[0].psql("SELECT v FROM harness_smoke") == "42"
    assert s1.primary.psql("SELECT to_regclass('harness_smoke') IS NULL") == "t"
    s0.primary.psql("DROP TABLE harness_smoke")


@pytest.mark.parametrize("user", sorted(EXPECTED_AUTH))
def test_each_user_logs_in_with_its_auth_method(cluster, user):
    password = cluster.passwords[user]
    for server in (cluster.shards[0].primary, cluster.shards[1].replicas[0]):
        # What a client sees first: the same request shardgate must make for this user.
        assert pgcluster.auth_request(server.port, user) == EXPECTED_AUTH[user]
        # The right password works over TCP (where pg_hba's per-user method applies) ...
        assert server.psql("SELECT current_user", user=user, password=password or "") == user
        # ... and a wrong one does not, except for the trust user.
        r = pgcluster.run_psql("127.0.0.1", server.port, "SELECT 1", user=user, password="wrong", check=False)
        if user == "trustuser":
            assert r.returncode == 0
        else:
            assert r.returncode != 0 and "authentication failed" in r.stderr


def test_stored_passwords_match_the_config(cluster):
    p = cluster.shards[0].primary
    stored = dict(line.split("|", 1) for line in
                  p.psql("SELECT rolname, coalesce(rolpassword, '') FROM pg_authid WHERE rolcanlogin").splitlines())
    assert stored["md5user"] == pgcluster.md5_hash("md5user", "md5pass")
    assert stored["trustuser"] == ""
    assert stored["clearuser"].startswith("SCRAM-SHA-256$4096:")
    cfg = tomllib.loads(cluster.render_config())
    cfg_users = {u["name"]: u for u in cfg["users"]}
    # verifieruser's password is a SCRAM verifier in the config, the very one its role has.
    assert cfg_users["verifieruser"]["password"].startswith("SCRAM-SHA-256$4096:")
    assert stored["verifieruser"] == cfg_users["verifieruser"]["password"]
    assert cfg_users["postgres"]["password"] == "postgres" and cfg_users["postgres"]["admin"] is True
    assert "password" not in cfg_users["trustuser"]
    assert {u: cfg_users[u]["auth_method"] for u in cfg_users} == {
        "postgres": "scram-sha-256", "md5user": "md5", "clearuser": "cleartext", "trustuser": "trust",
        "verifieruser": "scram-sha-256"}


def test_scram_verifier_equals_what_postgres_computes(cluster):
    p = cluster.shards[0].primary
    p.psql("DROP ROLE IF EXISTS harness_scram; SET password_encryption = 'scram-sha-256'; "
           "CREATE ROLE harness_scram PASSWORD 'pencil ü'")
    theirs = p.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'harness_scram'")
    p.psql("DROP ROLE harness_scram")
    salt = base64.b64decode(theirs.split("$")[1].split(":")[1])
    assert pgcluster.scram_verifier("pencil ü", salt=salt) == theirs
    assert pgcluster.scram_verifier("pencil ü") != theirs  # a fresh random salt


def test_render_config_matches_the_topology(cluster):
    cfg = tomllib.loads(cluster.render_config())
    assert cfg["general"]["pool_mode"] == "session"
    assert cfg["general"]["port"] == cluster.shardgate_port
    assert cfg["general"]["metrics_port"] == cluster.metrics_port
    (db,) = cfg["databases"]
    assert db["name"] == "app"
    assert [s["name"] for s in db["shards"]] == ["shard0", "shard1"]
    for shard, rendered in zip(cluster.shards, db["shards"]):
        assert rendered["primary"] == {"host": "127.0.0.1", "port": shard.primary.port, "database": "app",
                                       "user": "postgres", "password": "postgres"}
        assert rendered["replicas"] == [{"host": "127.0.0.1", "port": shard.replicas[0].port}]
    assert cluster.render_config() == cluster.render_config()  # the random SCRAM salt is fixed once


def test_env_lines_has_every_variable(cluster, target_mode):
    env = dict(line.split("=", 1) for line in cluster.env_lines().splitlines())
    assert set(env) == {"SHARDGATE_PORT", "SHARDGATE_METRICS_PORT", "SHARD0_PRIMARY_PORT", "SHARD0_REPLICA_PORT",
                        "SHARD1_PRIMARY_PORT", "SHARD1_REPLICA_PORT"}
    assert env["SHARDGATE_PORT"] == str(cluster.shardgate.port)
    for shard in cluster.shards:
        assert env[f"SHARD{shard.index}_PRIMARY_PORT"] == str(shard.primary.port)
        assert env[f"SHARD{shard.index}_REPLICA_PORT"] == str(shard.replicas[0].port)
    # Every server has its own port (in direct mode SHARDGATE_PORT is shard 0's primary on purpose).
    skip = {"SHARDGATE_METRICS_PORT"} | ({"SHARDGATE_PORT"} if target_mode == "direct" else set())
    ports = [int(v) for k, v in env.items() if k not in skip]
    assert len(set(ports)) == len(ports)


def test_direct_mode_stand_in_points_at_shard0(cluster, target_mode):
    if target_mode != "direct":
        pytest.skip("only in SHARDGATE_TARGET=direct")
    sg = cluster.shardgate
    assert sg.port == cluster.shards[0].primary.port
    assert sg.psql("SELECT current_setting('cluster_name')").stdout == "shard0-primary\n"
    assert "port=%d" % sg.port in sg.dsn()
    r = sg.psql("SELECT 1/0", check=False)
    assert r.returncode != 0 and "division by zero" in r.stderr
    with pytest.raises(pgcluster.PsqlError, match="division by zero"):
        sg.psql("SELECT 1/0")


def test_kill_and_restart_a_primary(make_cluster):
    c = make_cluster(num_shards=1, replicas_per_shard=1, with_shardgate=False)
    primary, replica = c.shards[0].primary, c.shards[0].replicas[0]
    family = _family(primary)
    primary.kill()
    assert not primary.is_running()
    assert not any(pgcluster.pid_alive(p) for p in family)
    r = pgcluster.run_psql("127.0.0.1", primary.port, "SELECT 1", password="postgres", check=False, timeout=10)
    assert r.returncode != 0
    assert replica.is_running()  # a replica outlives its primary
    primary.start()
    assert primary.psql("SELECT pg_is_in_recovery()") == "f"
    replica.wait_ready(timeout=30)  # and reconnects to it


def test_stop_leaves_no_process(make_cluster):
    c = make_cluster(num_shards=2, replicas_per_shard=[1, 0], with_shardgate=False)
    assert [len(s.replicas) for s in c.shards] == [1, 0]
    env = dict(line.split("=", 1) for line in c.env_lines().splitlines())
    assert "SHARD1_REPLICA_PORT" not in env and "SHARD0_REPLICA_PORT" in env
    pids = [p for s in c.servers for p in _family(s)]
    c.stop()
    assert not any(pgcluster.pid_alive(p) for p in pids)
    assert not any(s.is_running() for s in c.servers)
    c.stop()  # idempotent


def test_shardgate_process_control_with_a_fake_binary(make_cluster):
    c = make_cluster(num_shards=1, replicas_per_shard=0, shardgate_bin=FAKE_SHARDGATE)
    sg = c.shardgate
    assert isinstance(sg, pgcluster.Shardgate) and sg.is_running()
    assert Path(sg.config_path).read_text() == c.render_config()
    with socket.create_connection(("127.0.0.1", sg.metrics_port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert b"shardgate_up 1" in s.recv(4096)
    r = sg.psql("SELECT 1", check=False)
    assert r.returncode != 0 and "fake shardgate" in r.stderr
    mark = len(sg.log_text())
    sg.reload()
    sg.wait_for_log("reloaded config", start=mark)
    assert sg.stop() == 0
    assert not sg.is_running()
    assert "shutting down" in sg.log_text()
    assert sg.sanitizer_report() == []
    sg.start()  # restarts, appending to the same log
    assert sg.is_running() and sg.log_text().count("listening on") == 2
    sg.kill()
    assert not sg.is_running() and sg.returncode == -9


def test_shardgate_that_exits_at_startup_fails_with_its_log(tmp_path):
    cfg = tmp_path / "sg.toml"
    cfg.write_text("not toml [")
    sg = pgcluster.Shardgate(FAKE_SHARDGATE, cfg, tmp_path / "sg.log", pgcluster.free_port())
    with pytest.raises(pgcluster.HarnessError, match=r"exited with status 2(.|\n)*sg.toml"):
        sg.start()
    missing = pgcluster.Shardgate(tmp_path / "nope", cfg, tmp_path / "sg.log", pgcluster.free_port())
    with pytest.raises(pgcluster.HarnessError, match="does not exist"):
        missing.start()


def test_rewrite_ports_changes_only_the_mapped_values():
    text = (REPO_ROOT / "conf" / "demo.toml").read_text() if (REPO_ROOT / "conf" / "demo.toml").exists() \
        else pgcluster.EXAMPLE_CONFIG
    out = pgcluster.rewrite_ports(text, {9930: 19930, 15433: 25433})
    cfg, new = tomllib.loads(text), tomllib.loads(out)
    assert new["general"]["metrics_port"] == 19930 and new["general"]["port"] == cfg["general"]["port"]
    shards = new["databases"][0]["shards"]
    assert shards[0]["replicas"][0]["port"] == 25433
    assert shards[0]["primary"]["port"] == 15432 and shards[1]["replicas"][0]["port"] == 15435
    assert len(out.splitlines()) == len(text.splitlines())


def test_demo_cli_up_again_and_down(cluster_root):
    demo = cluster_root / "demo-cli"
    # The demo's own ports (6432, ...) may be in use by a real demo: give this one free ports.
    mapping = {p: pgcluster.free_port() for p in (6432, 9930, 15432, 15433, 15434, 15435)}
    config = cluster_root / "demo-cli.toml"
    config.write_text(pgcluster.rewrite_ports(pgcluster.EXAMPLE_CONFIG, mapping))
    cli = [sys.executable, str(HARNESS / "pgcluster.py")]
    up = [*cli, "up", "--dir", str(demo), "--bin", FAKE_SHARDGATE, "--config", str(config)]
    try:
        r = subprocess.run(up, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        assert f"port={mapping[6432]}" in r.stdout
        env = dict(line.split("=", 1) for line in (demo / "cluster.env").read_text().splitlines())
        assert env == {"SHARDGATE_PORT": str(mapping[6432]), "SHARDGATE_METRICS_PORT": str(mapping[9930]),
                       "SHARD0_PRIMARY_PORT": str(mapping[15432]), "SHARD0_REPLICA_PORT": str(mapping[15433]),
                       "SHARD1_PRIMARY_PORT": str(mapping[15434]), "SHARD1_REPLICA_PORT": str(mapping[15435])}
        for name in ("shard0-primary", "shard0-replica", "shard1-primary", "shard1-replica"):
            assert (demo / name / "PG_VERSION").exists()
        state = pgcluster.load_state(demo)
        assert state["owner_pid"] is None  # detached: outlives the CLI
        assert len(_demo_pids(demo)) == 5
        assert all(pgcluster.pid_alive(p) for p in _demo_pids(demo))
        assert subprocess.run([*cli, "status", "--dir", str(demo)], capture_output=True).returncode == 0

        again = subprocess.run(up, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stdout
        assert pgcluster.load_state(demo)["shardgate"]["pid"] == state["shardgate"]["pid"]
    finally:
        # The demo's postmasters were orphaned to us (the harness makes this process a subreaper), so
        # reap them while `down` waits for them to vanish completely.
        done = threading.Event()
        pids = _demo_pids(demo)
        reaper = threading.Thread(target=_reap_until, args=(done, pids), daemon=True)
        reaper.start()
        try:
            down = subprocess.run([*cli, "down", "--dir", str(demo)], capture_output=True, text=True, timeout=120)
        finally:
            done.set()
            reaper.join()
    assert down.returncode == 0, down.stderr
    assert not any(pgcluster.pid_alive(p) for p in pids)
    assert subprocess.run([*cli, "status", "--dir", str(demo)], capture_output=True).returncode != 0
