"""Checks docker/ without a Docker engine: the compose file is valid for docker-compose and has the
demo's topology (2 shards x primary + replica, shardgate, Prometheus, Grafana), shardgate's config
points at the shard services and loads, and the image, init scripts and dashboards agree with it.

Run: /usr/bin/python3 -m pytest -v tests/integration/test_docker_compose.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (python3-yaml, a docker-compose dependency) is not installed")

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
SHARDGATE_TOML = DOCKER / "shardgate.toml"
DEMO_TOML = REPO / "conf" / "demo.toml"

SHARDS = ["shard0", "shard1"]
POSTGRES_SERVICES = [f"{s}-{role}" for s in SHARDS for role in ("primary", "replica")]
SERVICES = set(POSTGRES_SERVICES) | {"shardgate", "prometheus", "grafana"}
# Host ports the compose file publishes by default; tests must not see a caller's overrides.
PORT_VARS = ["SHARDGATE_PORT", "SHARDGATE_METRICS_PORT", "SHARD0_PRIMARY_PORT", "SHARD0_REPLICA_PORT",
             "SHARD1_PRIMARY_PORT", "SHARD1_REPLICA_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT",
             "REPLICATION_PASSWORD", "GRAFANA_ADMIN_PASSWORD"]

# The metrics shardgate exports (proxy/ metrics endpoint); histograms also export _bucket/_sum/_count.
COUNTERS_AND_GAUGES = {
    "shardgate_client_connections", "shardgate_server_connections", "shardgate_queries_total",
    "shardgate_transactions_total", "shardgate_errors_total", "shardgate_bytes_received_total",
    "shardgate_bytes_sent_total", "shardgate_analysis_cache_hits_total", "shardgate_analysis_cache_misses_total",
    "shardgate_server_up", "shardgate_table_rows", "shardgate_table_bytes",
}
HISTOGRAMS = {"shardgate_query_duration_seconds", "shardgate_shard_query_duration_seconds",
              "shardgate_pool_wait_seconds"}
KNOWN_METRICS = COUNTERS_AND_GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it (`config`: anchors merged, defaults applied)."""
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in PORT_VARS}
    proc = subprocess.run([*cmd, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def sg_config() -> dict:
    return tomllib.loads(SHARDGATE_TOML.read_text())


@pytest.fixture(scope="module")
def demo_config() -> dict:
    return tomllib.loads(DEMO_TOML.read_text())


def service_names_in(value) -> set[str]:
    """depends_on is a list (short syntax) or a mapping (long syntax, docker-compose config's output)."""
    return set(value or [])


def published_ports(service: dict) -> dict[int, int]:
    """container port -> host port, from either the long or the short port syntax."""
    out = {}
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out[int(p["target"])] = int(p["published"])
        else:
            host, _, target = str(p).rpartition(":")
            out[int(target)] = int(host.rsplit(":", 1)[-1])
    return out


def mounts(service: dict) -> dict[str, str]:
    """container path -> host path (bind mounts) or volume name."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v["source"]
        else:
            parts = str(v).split(":")
            out[parts[1]] = parts[0]
    return out


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


# --- compose topology ------------------------------------------------------------------------------

def test_compose_services_are_exactly_the_topology(compose):
    assert set(compose["services"]) == SERVICES


def test_shards_run_postgres_15_bookworm_with_matching_settings(compose):
    commands = []
    for name in POSTGRES_SERVICES:
        svc = compose["services"][name]
        assert svc["image"] == "postgres:15-bookworm", name
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"
        commands.append(svc["command"])
        env = environment(svc)
        assert env["POSTGRES_USER"] == "postgres" and env["POSTGRES_PASSWORD"] == "postgres", name
        assert env["POSTGRES_DB"] == "app", name
    # A hot standby refuses to start with lower max_connections/max_prepared_transactions than its primary.
    assert all(c == commands[0] for c in commands), "primaries and replicas must run with the same settings"
    flat = " ".join(commands[0])
    assert "wal_level=replica" in flat and "hot_standby=on" in flat
    assert re.search(r"max_prepared_transactions=[1-9]", flat), "2PC needs max_prepared_transactions > 0"


def test_primaries_run_the_init_scripts(compose):
    for shard in SHARDS:
        svc = compose["services"][f"{shard}-primary"]
        m = mounts(svc)
        assert Path(m["/docker-entrypoint-initdb.d"]).resolve() == (DOCKER / "initdb").resolve()
        assert "entrypoint" not in svc, "primaries use the image's own entrypoint (it runs the init scripts)"
        assert "/var/lib/postgresql/data" in m, "primary data must live in a named volume"
        # Healthy only when reachable over TCP: the image's init phase listens on the socket only.
        test = " ".join(svc["healthcheck"]["test"])
        assert "-h 127.0.0.1" in test and "pg_is_in_recovery" in test


def test_replicas_clone_their_own_primary(compose):
    for shard in SHARDS:
        svc = compose["services"][f"{shard}-replica"]
        env = environment(svc)
        assert env["PRIMARY_HOST"] == f"{shard}-primary"
        assert env["PRIMARY_PORT"] == "5432"
        assert env["REPLICATION_PASSWORD"], "the replica needs the replication password"
        primary_env = environment(compose["services"][f"{shard}-primary"])
        assert env["REPLICATION_USER"] == primary_env["REPLICATION_USER"]
        assert env["REPLICATION_PASSWORD"] == primary_env["REPLICATION_PASSWORD"]
        assert f"{shard}-primary" in service_names_in(svc.get("depends_on"))
        entry = svc["entrypoint"]
        entry = entry if isinstance(entry, list) else entry.split()
        script = entry[-1]
        m = mounts(svc)
        assert Path(m[script]).resolve() == (DOCKER / "replica-entrypoint.sh").resolve()
        assert "/docker-entrypoint-initdb.d" not in m, "a replica is cloned, never initialized"
        assert "t" in svc["healthcheck"]["test"][-1] and "pg_is_in_recovery" in svc["healthcheck"]["test"][-1]


def test_each_postgres_service_has_its_own_volume(compose):
    data = [mounts(compose["services"][n])["/var/lib/postgresql/data"] for n in POSTGRES_SERVICES]
    assert len(set(data)) == len(data)
    assert set(data) <= set(compose.get("volumes", {}))


def test_shardgate_service_builds_the_image_and_mounts_the_config(compose):
    svc = compose["services"]["shardgate"]
    build = svc["build"]
    assert Path(build["context"]).resolve() == REPO.resolve(), "the build context is the repository root"
    assert build["dockerfile"] in ("docker/Dockerfile", str(DOCKER / "Dockerfile"))
    m = mounts(svc)
    assert Path(m["/etc/shardgate/shardgate.toml"]).resolve() == SHARDGATE_TOML.resolve()
    assert published_ports(svc) == {6432: 6432, 9930: 9930}
    assert service_names_in(svc.get("depends_on")) >= set(POSTGRES_SERVICES)


def test_published_ports_match_the_local_demo_and_do_not_collide(compose):
    ports = {name: published_ports(svc) for name, svc in compose["services"].items()}
    assert ports["shard0-primary"] == {5432: 15432}
    assert ports["shard0-replica"] == {5432: 15433}
    assert ports["shard1-primary"] == {5432: 15434}
    assert ports["shard1-replica"] == {5432: 15435}
    assert ports["prometheus"] == {9090: 9090}
    assert ports["grafana"] == {3000: 3000}
    host_ports = [hp for p in ports.values() for hp in p.values()]
    assert len(host_ports) == len(set(host_ports))


def test_port_overrides_reach_the_compose_file(tmp_path):
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in PORT_VARS}
    env.update(SHARDGATE_PORT="7432", SHARD1_REPLICA_PORT="25435")
    proc = subprocess.run([*cmd, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert published_ports(services["shardgate"])[6432] == 7432
    assert published_ports(services["shard1-replica"])[5432] == 25435


# --- shardgate's config ----------------------------------------------------------------------------

def test_shardgate_config_points_at_the_shard_services(compose, sg_config):
    general = sg_config["general"]
    assert general["listen_addr"] == "0.0.0.0", "must listen beyond the container's loopback"
    assert general["port"] == 6432 and general["metrics_port"] == 9930
    (db,) = sg_config["databases"]
    assert [s["name"] for s in db["shards"]] == SHARDS
    for shard in db["shards"]:
        primary = shard["primary"]
        assert primary["host"] == f"{shard['name']}-primary" and primary["host"] in compose["services"]
        assert primary["port"] == 5432
        assert (primary["user"], primary["password"], primary["database"]) == ("postgres", "postgres", "app")
        assert [(r["host"], r["port"]) for r in shard["replicas"]] == [(f"{shard['name']}-replica", 5432)]


def test_shardgate_config_has_the_demo_topology(sg_config, demo_config):
    """Everything but where the servers are (and the listen address) is the demo's."""
    assert sg_config["users"] == demo_config["users"]
    (db,) = sg_config["databases"]
    (demo_db,) = demo_config["databases"]
    assert db["name"] == demo_db["name"] == "app"
    for key in set(db) | set(demo_db):
        if key != "shards":
            assert db.get(key) == demo_db.get(key), f"databases.{key} differs from conf/demo.toml"
    assert len(db["shards"]) == len(demo_db["shards"])
    for mine, demo in zip(db["shards"], demo_db["shards"]):
        assert mine["name"] == demo["name"]
        assert len(mine.get("replicas", [])) == len(demo.get("replicas", []))
    for key in ("port", "metrics_port", "pool_mode"):
        assert sg_config["general"][key] == demo_config["general"][key]


def shardgate_bin() -> Path:
    return Path(os.environ.get("SHARDGATE_BIN") or REPO / "build" / "shardgate")


def test_shardgate_check_config_accepts_the_docker_config():
    binary = shardgate_bin()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not built (make build, or set SHARDGATE_BIN)")
    proc = subprocess.run([str(binary), "--check-config", str(SHARDGATE_TOML)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_shardgate_check_config_would_catch_a_broken_docker_config(tmp_path):
    """The check above is not vacuous: the same file with a shard host key misspelled is refused."""
    binary = shardgate_bin()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not built (make build, or set SHARDGATE_BIN)")
    broken = tmp_path / "shardgate.toml"
    text = SHARDGATE_TOML.read_text()
    assert 'host = "shard1-primary"' in text
    broken.write_text(text.replace('host = "shard1-primary"', 'hostname = "shard1-primary"'))
    proc = subprocess.run([str(binary), "--check-config", str(broken)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


# --- schema -----------------------------------------------------------------------------------------

def init_tables() -> dict[str, str]:
    """table -> column list text, from the CREATE TABLE statements of docker/initdb/*.sql."""
    sql = "\n".join(p.read_text() for p in sorted((DOCKER / "initdb").glob("*.sql")))
    sql = re.sub(r"--[^\n]*", "", sql)
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\((.*?)\);", sql, re.I | re.S)}


def test_init_scripts_create_the_demo_tables_with_their_shard_keys(demo_config):
    tables = init_tables()
    assert set(tables) == {"users", "orders", "events", "countries"}
    (db,) = demo_config["databases"]
    for t in db["sharded_tables"]:
        name = t["name"].split(".")[-1]
        if name.startswith("pgbench_"):
            continue  # pgbench -i creates its own tables
        assert name in tables, f"sharded table {name} is not created by docker/initdb"
        assert re.search(rf"^\s*{t['column']}\s+{t['type']}\b", tables[name], re.M | re.I), \
            f"{name}.{t['column']} {t['type']} is not declared"
    for ref in db.get("reference_tables", []):
        assert ref.split(".")[-1] in tables
    # Uniqueness holds per shard only, so orders' key must start with its sharding column.
    assert re.search(r"PRIMARY\s+KEY\s*\(\s*user_id\s*,\s*id\s*\)", tables["orders"], re.I)


def test_primary_init_creates_the_replication_role_and_hba_line():
    script = (DOCKER / "initdb" / "01-replication.sh").read_text()
    assert re.search(r"CREATE ROLE .*REPLICATION", script)
    assert re.search(r"host\s+replication\s+\$\{?REPLICATION_USER", script)
    # Sourced by the image's entrypoint when not executable: it must not change its shell options.
    assert not re.search(r"^\s*(set\s+-|exit\b)", script, re.M)


# --- image -----------------------------------------------------------------------------------------

def dockerfile_stages() -> list[list[str]]:
    lines, cur = [], ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        cur += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
    stages: list[list[str]] = []
    for ln in lines:
        if ln.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ln)
    return stages


def test_dockerfile_is_a_bookworm_multi_stage_build():
    stages = dockerfile_stages()
    assert len(stages) == 2
    build, runtime = stages
    assert re.match(r"FROM debian:bookworm AS build", build[0], re.I)
    assert re.match(r"FROM debian:bookworm-slim\b", runtime[0], re.I)
    build_text = "\n".join(build)
    assert "install-deps.sh" in build_text
    assert "-DCMAKE_BUILD_TYPE=Release" in build_text and "-DSHARDGATE_BUILD_TESTS=OFF" in build_text
    runtime_text = "\n".join(runtime)
    assert "COPY --from=build" in runtime_text
    assert "-dev" not in runtime_text, "the runtime stage installs no -dev package"
    assert "cmake" not in runtime_text.lower()


def test_dockerfile_runtime_contract():
    runtime = dockerfile_stages()[-1]
    users = [ln.split()[1] for ln in runtime if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must run as a non-root user"
    exposed = {p for ln in runtime if ln.upper().startswith("EXPOSE ") for p in ln.split()[1:]}
    assert exposed == {"6432", "9930"}
    assert any(ln.upper().startswith("HEALTHCHECK ") and "CMD" in ln for ln in runtime)
    cmds = [ln for ln in runtime if ln.upper().startswith("CMD ")]
    assert json.loads(cmds[-1][4:]) == ["shardgate", "--config", "/etc/shardgate/shardgate.toml"]


def test_dockerignore_keeps_build_trees_and_git_out():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert ".git" in patterns
    assert "build*" in patterns or "build" in patterns
    # The build stage needs these: make sure no pattern hides them.
    for needed in ("docker", "scripts", "CMakeLists.txt", "proxy"):
        assert needed not in patterns


def test_runtime_packages_cover_the_binary():
    """docker/runtime-packages.sh maps every library the binary links to an installed Debian package."""
    binary = shardgate_bin()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not built (make build, or set SHARDGATE_BIN)")
    if not shutil.which("dpkg"):
        pytest.skip("not a Debian system (dpkg missing)")
    proc = subprocess.run([str(DOCKER / "runtime-packages.sh"), str(binary)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    packages = proc.stdout.split()
    assert {"libuv1", "libc6"} <= set(packages), packages
    assert not [p for p in packages if p.endswith("-dev")], packages
    for pkg in packages:
        status = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], capture_output=True, text=True)
        assert status.stdout.startswith("ii"), f"{pkg} is not an installed package"


def shell_scripts() -> list[Path]:
    return sorted(p for p in DOCKER.rglob("*.sh"))


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shell_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# --- Prometheus and Grafana ------------------------------------------------------------------------

def test_prometheus_scrapes_shardgate_metrics(compose, sg_config):
    svc = compose["services"]["prometheus"]
    assert Path(mounts(svc)["/etc/prometheus/prometheus.yml"]).resolve() == (DOCKER / "prometheus.yml").resolve()
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "shardgate"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"shardgate:{sg_config['general']['metrics_port']}"]


def test_grafana_datasource_is_the_prometheus_service(compose):
    svc = compose["services"]["grafana"]
    m = mounts(svc)
    assert Path(m["/etc/grafana/provisioning"]).resolve() == (DOCKER / "grafana" / "provisioning").resolve()
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (prom,) = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/shardgate.yml").read_text())["providers"]
    dash_dir = providers[0]["options"]["path"]
    assert Path(m[dash_dir]).resolve() == (DOCKER / "grafana" / "dashboards").resolve()


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            assert t["datasource"]["uid"] == "prometheus", panel["title"]
            exprs.append(t["expr"])
    return exprs


def test_dashboard_uses_only_shardgate_metrics_that_exist():
    dash = json.loads((DOCKER / "grafana/dashboards/shardgate.json").read_text())
    exprs = dashboard_exprs(dash)
    used = {m for e in exprs for m in re.findall(r"\bshardgate_\w+", e)}
    assert used <= KNOWN_METRICS, f"unknown metrics: {sorted(used - KNOWN_METRICS)}"
    # Every metric family shardgate exports is shown somewhere.
    families = {re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in HISTOGRAMS
                else m for m in used}
    assert families == COUNTERS_AND_GAUGES | HISTOGRAMS, sorted((COUNTERS_AND_GAUGES | HISTOGRAMS) - families)
    # Histograms are read through their buckets (quantiles), never as raw series.
    for h in HISTOGRAMS:
        assert re.search(rf"histogram_quantile\([^,]+,.*{h}_bucket", " ".join(exprs)), h
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_covers_the_operational_questions():
    dash = json.loads((DOCKER / "grafana/dashboards/shardgate.json").read_text())
    exprs = " ".join(dashboard_exprs(dash))
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    assert "by (route)" in exprs, "QPS by route kind"
    assert "by (sqlstate_class)" in exprs, "errors by SQLSTATE class"
    assert re.search(r"by \(shard, role\) \(shardgate_server_up", exprs), "shard health"
    assert re.search(r"max by \(table\) \(shardgate_table_rows.*/\s*avg by \(table\)", exprs), "skew"
    for word in ("connections", "latency", "errors", "health", "skew"):
        assert word in titles, word
