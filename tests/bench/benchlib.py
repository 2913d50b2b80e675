"""Shared pieces of the benchmarks in tests/bench/: one Postgres, PgBouncer, pgbench runs, /proc readings,
measured runs and their report cells.

Python 3.11 stdlib plus tests/harness/pgcluster.py. Everything started here is stopped by cleanup()
(also on SIGTERM/SIGINT), and the shell wrappers' EXIT traps stop whatever is left from the pid files
written into the work directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "harness"))

import pgcluster  # noqa: E402

HOST = pgcluster.HOST
PGBOUNCER_BIN = os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer")
PGBENCH_BIN = str(pgcluster.pg_bindir() / "pgbench")
SUPERUSER, SUPERPASS = "postgres", "postgres"
DATABASE = "app"
# Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
CLK_TCK = int(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True, check=True).stdout)

_t0 = time.monotonic()


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout carries only results."""
    print(f"[bench {time.monotonic() - _t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A benchmark could not be set up; the message says why."""


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BenchError(f"{name}={raw!r} is not an integer")
    if value < minimum:
        raise BenchError(f"{name}={value} is below {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    return raw.split() if raw and raw.strip() else list(default)


def work_dir() -> Path:
    """The run's scratch directory: made by the shell wrapper (its EXIT trap removes it)."""
    d = os.environ.get("BENCH_WORKDIR")
    if not d:
        raise BenchError("BENCH_WORKDIR is not set (run the benchmark through its shell wrapper)")
    path = Path(d)
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_pid(pid: int, what: str) -> None:
    """Appends to $BENCH_WORKDIR/pids, which the wrapper's EXIT trap kills if we could not."""
    with open(work_dir() / "pids", "a") as f:
        f.write(f"{pid} {what}\n")


def shardgate_bin() -> str:
    path = os.environ.get("SHARDGATE_BIN") or str(REPO_ROOT / "build" / "shardgate")
    if not os.access(path, os.X_OK):
        raise BenchError(f"shardgate binary {path} not found (run `make build` or set SHARDGATE_BIN)")
    return path


# ---------------------------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------------------------


def stat_fields(pid: int, *numbers: int) -> list[int]:
    """Fields of /proc/<pid>/stat by their 1-based numbers in proc(5) (from 3 on)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode(errors="replace")
    # Field 2 (comm) is in parentheses and may hold spaces; after the last ')' comes field 3.
    rest = data[data.rfind(")") + 2 :].split()
    return [int(rest[n - 3]) for n in numbers]


def cpu_split_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of the whole process (all threads), in clock ticks: fields 14, 15."""
    user, system = stat_fields(pid, 14, 15)
    return user, system


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    return sum(cpu_split_ticks(pid))


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its children (a postmaster and its backends), in clock ticks,
    with the children it has reaped (cutime + cstime): a backend that ends in between still counts."""
    total = 0
    try:
        total += sum(stat_fields(pid, 14, 15, 16, 17))
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (OSError, ValueError, IndexError):
        return total
    for child in children:
        try:
            total += cpu_ticks(child)
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_busy_ticks() -> int:
    """Every core's non-idle time (user, nice, system, irq, softirq, steal) from /proc/stat, in
    clock ticks: with the proxy's and pgbench's own, it tells how the machine's CPU per transaction
    divides between proxy, client and Postgres."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def children_cpu_seconds() -> float:
    """utime + stime of this process's waited-for children (the pgbench runs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def vm_rss_bytes(pid: int) -> int:
    """VmRSS from /proc/<pid>/status, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------
# Postgres (via the harness) and shardgate
# ---------------------------------------------------------------------------------------------


def make_cluster(base_dir: Path, *, users: list[dict], general: dict, num_shards: int = 1,
                 database_options: dict | None = None, extra_toml: str = "",
                 unix_sockets: bool = False) -> pgcluster.Cluster:
    """num_shards Postgres servers (one per shard, no replica) with shardgate configured in front of
    them, not yet started. extra_toml is appended to shardgate's config (e.g. sharded tables);
    unix_sockets: shardgate reaches the servers through their Unix sockets."""
    # info: the "event=listening ... workers=N" line and per-client errors, nothing per query.
    g = {"metrics_port": None, "log_level": "info"}
    g.update(general)
    return pgcluster.Cluster(base_dir, num_shards=num_shards, replicas_per_shard=0, shardgate_bin=shardgate_bin(),
                             general=g, users=users, database=DATABASE, with_shardgate=False,
                             fix_permissions=True, database_options=database_options, extra_toml=extra_toml,
                             unix_sockets=unix_sockets)


def log_anomalies(logfile: str | Path | None, limit: int = 20) -> list[str]:
    """Lines of a proxy's log that report errors, warnings or crashes (for the report)."""
    if not logfile:
        return []
    try:
        text = Path(logfile).read_text(errors="replace")
    except OSError:
        return []
    pat = re.compile(r"level=(warn|warning|error|critical)\b|error|fatal|panic|sanitizer|abort", re.IGNORECASE)
    lines = [ln for ln in text.splitlines() if pat.search(ln) and not ln.startswith("=== pgcluster")]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


# ---------------------------------------------------------------------------------------------
# PgBouncer
# ---------------------------------------------------------------------------------------------


def _quote_userlist(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


class PgBouncer:
    """PgBouncer from Debian with its own config in a directory of ours, run as the postgres user
    (it refuses to run as root) and listening on a free loopback port."""

    def __init__(self, base_dir: Path, name: str, pg_port: int, *, pool_mode: str, pool_size: int,
                 auth_type: str, users: dict[str, str | None], max_client_conn: int = 200,
                 pg_host: str = HOST, extra_settings: dict[str, str] | None = None):
        self.dir = base_dir / name
        self.name = name
        self.pg_host = pg_host  # an address, or the server's Unix-socket directory
        self.pg_port = pg_port
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.auth_type = auth_type
        self.users = users
        self.max_client_conn = max_client_conn
        self.extra_settings = dict(extra_settings or {})  # more [pgbouncer] keys (e.g. client_tls_*)
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self.logfile = self.dir / "pgbouncer.log"

    def _write_files(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        ini = self.dir / "pgbouncer.ini"
        userlist = self.dir / "userlist.txt"
        # Plain passwords: PgBouncer then does SCRAM (or md5) with the client itself and can log in to
        # Postgres with SCRAM as that user.
        userlist.write_text("".join(f"{_quote_userlist(u)} {_quote_userlist(p or '')}\n"
                                    for u, p in self.users.items()))
        ini.write_text(f"""\
;; Written by tests/bench/benchlib.py for one benchmark run.
[databases]
{DATABASE} = host={self.pg_host} port={self.pg_port} dbname={DATABASE}

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = {self.auth_type}
auth_file = {userlist}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {self.max_client_conn}
max_db_connections = 0
server_idle_timeout = 600
ignore_startup_parameters = extra_float_digits
logfile = {self.logfile}
pidfile = {self.dir / "pgbouncer.pid"}
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
""" + "".join(f"{k} = {v}\n" for k, v in self.extra_settings.items()))
        uid, gid, _ = pgcluster._pg_account()
        for p in (self.dir, ini, userlist):
            os.chown(p, uid, gid)
        os.chmod(userlist, 0o600)
        os.chmod(self.dir, 0o755)
        return ini

    def start(self, timeout: float = 20) -> None:
        if not os.access(PGBOUNCER_BIN, os.X_OK):
            raise BenchError(f"{PGBOUNCER_BIN} not found (apt-get install pgbouncer)")
        pgcluster.ensure_traversable(self.dir.parent, fix=True)
        for attempt in range(3):
            self.port = pgcluster.free_port()
            ini = self._write_files()
            pidfile = self.dir / "pgbouncer.pid"
            pidfile.unlink(missing_ok=True)
            cmd = [PGBOUNCER_BIN, str(ini)]
            if pgcluster.is_root():
                # runuser's PAM session (pam_limits) drops the soft fd limit to 1024; raise it back to
                # the hard limit so that PgBouncer can hold as many clients as we ask it to.
                cmd = ["runuser", "-u", "postgres", "--", "/bin/sh", "-c",
                       'ulimit -n "$(ulimit -H -n)" && exec "$0" "$@"', *cmd]
            out = open(self.dir / "stderr.log", "ab")
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
                                          start_new_session=True)
            out.close()
            record_pid(self._proc.pid, f"{self.name} (runuser)")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if pidfile.exists() and self._accepts():
                    try:
                        self.pid = int(pidfile.read_text().split()[0])
                    except (ValueError, IndexError):
                        time.sleep(0.05)
                        continue
                    record_pid(self.pid, self.name)
                    log(f"{self.name}: PgBouncer pid {self.pid} on port {self.port} "
                        f"(pool_mode={self.pool_mode}, default_pool_size={self.pool_size}, auth_type={self.auth_type})")
                    return
                time.sleep(0.05)
            tail = pgcluster._tail(self.logfile) + "\n" + pgcluster._tail(self.dir / "stderr.log")
            self.stop()
            if attempt < 2 and ("Address already in use" in tail or "bind" in tail):
                continue
            raise BenchError(f"{self.name}: PgBouncer did not start on port {self.port}:\n{tail}")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.pid is not None and pgcluster.pid_alive(self.pid)

    def stop(self) -> None:
        """SIGTERM (immediate shutdown), then SIGKILL of PgBouncer and of the runuser around it."""
        if self.pid and pgcluster.pid_alive(self.pid):
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not pgcluster._wait_gone([self.pid], 10):
                pgcluster._kill_tree(self.pid)
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self._proc.wait(10)
            self._proc = None


# ---------------------------------------------------------------------------------------------
# pgbench
# ---------------------------------------------------------------------------------------------


@dataclass
class PgbenchResult:
    tps: float | None
    transactions: int
    failed: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.tps is not None and self.transactions > 0


def _pgbench_env() -> dict:
    env = pgcluster._clean_env({"PGPASSWORD": SUPERPASS, "PGCONNECT_TIMEOUT": 10})
    return env


def pgbench(port: int, *args: str, user: str = SUPERUSER, timeout: float = 600) -> PgbenchResult:
    cmd = [PGBENCH_BIN, "-h", HOST, "-p", str(port), "-U", user, *args, DATABASE]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_pgbench_env(),
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return PgbenchResult(None, 0, 0, -1, e.stdout or "", f"timed out after {timeout}s")
    tps = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", r.stdout, re.M)
    done = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    return PgbenchResult(float(tps.group(1)) if tps else None, int(done.group(1)) if done else 0,
                         int(failed.group(1)) if failed else 0, r.returncode, r.stdout, r.stderr)


def pgbench_init(port: int, scale: int) -> None:
    """pgbench -i -s scale directly on Postgres (tables pgbench_*, vacuumed)."""
    log(f"pgbench -i -s {scale} on Postgres port {port}")
    r = pgbench(port, "-i", "-s", str(scale), "-q")
    if r.returncode != 0:
        raise BenchError(f"pgbench -i failed (exit {r.returncode}):\n{r.stderr}{r.stdout}")


# ---------------------------------------------------------------------------------------------
# Measured runs: targets, cells of runs, formatting
# ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    """Something pgbench connects to; pid() is the proxy process whose CPU time we charge (None: direct)."""

    name: str
    port: Callable[[], int]
    pid: Callable[[], int | None]
    running: Callable[[], bool]
    restart: Callable[[], None] | None = None
    # The postmasters of the servers behind it, whose CPU (with their backends') is charged to
    # server_cpu_us: it shows what a topology costs Postgres itself.
    servers: Callable[[], list[int]] | None = None


@dataclass
class Cell:
    """The runs of one (mode, clients, target)."""

    tps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # The figures of each round ({"tps": .., "cpu_us": ..}) when the caller numbers its rounds: the
    # targets take turns within a round, so figures of one round compare without the drift of the
    # machine's speed from one round to the next.
    by_round: dict[int, dict[str, float]] = field(default_factory=dict)


def paired_ratios(num: Cell, den: Cell, what: str = "tps") -> list[float]:
    """num's figure over den's, round by round, for the rounds both have (what: "tps" or "cpu_us")."""
    out = []
    for r, figures in sorted(num.by_round.items()):
        other = den.by_round.get(r, {}).get(what)
        if what in figures and other:
            out.append(figures[what] / other)
    return out


def spread(values: list[float], digits: int = 3) -> str:
    """"median (min-max, n=N)" of values, or "NA"."""
    if not values:
        return "NA"
    return (f"{fmt(median(values), digits)} ({fmt(min(values), digits)}-{fmt(max(values), digits)}, "
            f"n={len(values)})")


def fmt(value: float | None, digits: int) -> str:
    return "NA" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def shardgate_workers(logfile: str) -> str:
    """workers=N from shardgate's "event=listening" log line (the default is one per core)."""
    try:
        text = open(logfile, errors="replace").read()
    except OSError:
        return "?"
    found = re.findall(r"event=listening .*?workers=(\d+)", text)
    return found[-1] if found else "?"


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def run_one(target: Target, mode: str, clients: int, seconds: int, threads: int, cell: Cell,
            workload: tuple[str, ...] = ("-S",), round_number: int | None = None) -> None:
    """One pgbench run of `workload` (pgbench options: "-S", or "-f script -s scale") into cell;
    round_number (if given) is recorded with its figures, for paired_ratios."""
    if not target.running():
        if target.restart is None:
            raise BenchError(f"{target.name} is not running")
        log(f"{target.name} is not running any more; restarting it")
        cell.failures.append("restarted: it had stopped")
        target.restart()
    pid = target.pid()
    before_user, before_system = cpu_split_ticks(pid) if pid else (0, 0)
    before = before_user + before_system
    machine_before, client_before = machine_busy_ticks(), children_cpu_seconds()
    servers = target.servers() if target.servers else []
    servers_before = sum(tree_cpu_ticks(p) for p in servers)
    # -n: the tables were vacuumed by -i; vacuuming again before every run only adds noise.
    r = pgbench(target.port(), "-n", *workload, "-M", mode, "-c", str(clients), "-j", str(min(threads, clients)),
                "-T", str(seconds), timeout=seconds + 180)
    alive = bool(pid) and target.running()  # asked once: the two figures must agree
    after_user, after_system = cpu_split_ticks(pid) if alive else (0, 0)
    after = after_user + after_system if alive else None
    machine_us = (machine_busy_ticks() - machine_before) / CLK_TCK * 1e6
    server_us = (sum(tree_cpu_ticks(p) for p in servers) - servers_before) / CLK_TCK * 1e6
    client_us = (children_cpu_seconds() - client_before) * 1e6
    problem = ""
    if not r.ok:
        problem = f"exit {r.returncode}, {r.failed} failed transactions"
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower() or "fatal" in ln.lower()]
    if errors:
        problem += ("; " if problem else "") + "; ".join(errors[:3])
    cpu = None
    if pid and after is not None and r.transactions > 0:
        cpu = (after - before) / CLK_TCK * 1e6 / r.transactions
    if r.tps is not None and not problem:
        cell.tps.append(r.tps)
        figures = {"tps": r.tps}
        if cpu is not None:
            cell.cpu_us.append(cpu)
            figures["cpu_us"] = cpu
        if round_number is not None:
            cell.by_round[round_number] = figures
        if servers:
            cell.server_cpu_us.append(server_us / r.transactions)
    if problem:
        cell.failures.append(problem)
        log(f"  {target.name:9} {mode:8} c={clients:<3} FAILED: {problem}")
        if not r.tps:
            log(f"  pgbench stdout:\n{r.stdout}\n  pgbench stderr:\n{r.stderr}")
    else:
        log(f"  {target.name:9} {mode:8} c={clients:<3} tps={r.tps:9.1f}"
            + (f"  cpu/tx={cpu:7.2f} us (user {(after_user - before_user) / CLK_TCK * 1e6 / r.transactions:5.2f})"
               if cpu is not None else "")
            + (f"  machine/tx={machine_us / r.transactions:6.1f} us (pgbench {client_us / r.transactions:5.1f}"
               + (f", Postgres {server_us / r.transactions:5.1f}" if servers else "") + ")"
               if r.transactions else ""))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def stop_clusters(clusters) -> None:
    """Stops every cluster (shardgate and Postgres), going on past one that fails to stop."""
    log("stopping shardgate and Postgres")
    for c in clusters:
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the other clusters
            log(f"stopping {c.base_dir} failed: {e}")


def run_main(name: str, main) -> None:
    """Runs a benchmark's main() and exits with its status; a set-up failure is one line on stderr."""
    try:
        sys.exit(main())
    except (BenchError, pgcluster.HarnessError, pgcluster.PsqlError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)


def exit_on_signals() -> None:
    """SIGTERM/SIGINT/SIGHUP raise SystemExit, so the benchmark's finally blocks stop what it started.
    Installed before the harness looks: it then leaves SIGTERM to us (it only takes an unset one)."""
    def handler(signum, frame):
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)
