#!/usr/bin/python3
"""Starts local Postgres 15 shard clusters (primary + streaming replicas) and shardgate, for tests and the demo.

Library (imported by tests/integration/conftest.py) and CLI (the `make up` / `make down` demo):

    /usr/bin/python3 tests/harness/pgcluster.py up --dir build/demo --bin build/shardgate --config conf/demo.toml
    /usr/bin/python3 tests/harness/pgcluster.py down --dir build/demo
    /usr/bin/python3 tests/harness/pgcluster.py status --dir build/demo

Python 3.11 stdlib only. Everything a Cluster starts is stopped by Cluster.stop(), at interpreter exit
and on SIGTERM, so a test run never leaves postgres or shardgate processes behind.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import concurrent.futures
import grp
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = "pgcluster-state.json"
# Unix socket paths are limited to 107 bytes; longer data directories get no socket (TCP only).
MAX_SOCKET_PATH = 100

# Written into every server's postgresql.conf (via the template). Speed over durability: test
# clusters are thrown away. max_prepared_transactions: the 2PC coordinator needs it on every shard.
TEMPLATE_SETTINGS = """
# --- added by tests/harness/pgcluster.py ---
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
max_prepared_transactions = 200
shared_buffers = 64MB
password_encryption = 'scram-sha-256'
lc_messages = 'C'
log_line_prefix = '%m [%p] %q%u@%d '
log_checkpoints = off
# A replica retries its primary this often (default 5s): tests restart primaries and wait for it.
wal_retrieve_retry_interval = '200ms'
# Per-server settings (port, socket directory, name, test overrides) live in server.conf.
include_if_exists = 'server.conf'
"""

# The example topology used by the demo when no config file is given.
EXAMPLE_CONFIG = """\
[general]
listen_addr = "127.0.0.1"
port = 6432
metrics_port = 9930
pool_mode = "session"
[[users]]
name = "postgres"
password = "postgres"
auth_method = "scram-sha-256"   # trust | cleartext | md5 | scram-sha-256
admin = true
[[databases]]
name = "app"
  [[databases.shards]]
  name = "shard0"
  primary = { host = "127.0.0.1", port = 15432, database = "app", user = "postgres", password = "postgres" }
  replicas = [ { host = "127.0.0.1", port = 15433 } ]
  [[databases.shards]]
  name = "shard1"
  primary = { host = "127.0.0.1", port = 15434, database = "app", user = "postgres", password = "postgres" }
  replicas = [ { host = "127.0.0.1", port = 15435 } ]
"""

# Harness-only keys of a user dict; every other key is written to the shardgate config as is.
#   password:        the plain password (None for trust users); the role on every shard gets it too
#   config_password: how the password appears in the shardgate config: "plain" (default),
#                    "scram-verifier" or "md5-hash"
USER_HARNESS_KEYS = ("password", "config_password")

DEFAULT_USERS = [
    {"name": "postgres", "password": "postgres", "auth_method": "scram-sha-256", "admin": True},
    {"name": "md5user", "password": "md5pass", "auth_method": "md5"},
    {"name": "clearuser", "password": "clearpass", "auth_method": "cleartext"},
    {"name": "trustuser", "password": None, "auth_method": "trust"},
    {
        "name": "verifieruser",
        "password": "verifierpass",
        "auth_method": "scram-sha-256",
        "config_password": "scram-verifier",
    },
]

# shardgate auth_method -> pg_hba.conf method, so plain Postgres asks each user the same way.
HBA_METHODS = {"trust": "trust", "cleartext": "password", "md5": "md5", "scram-sha-256": "scram-sha-256"}


class HarnessError(RuntimeError):
    """A cluster could not be started or stopped; the message says why (with log tails)."""


class PsqlError(subprocess.CalledProcessError):
    """psql failed; unlike CalledProcessError, str() includes what psql printed on stderr."""

    def __str__(self) -> str:
        return f"psql exited with {self.returncode}: {(self.stderr or '').strip()}"


# ---------------------------------------------------------------------------------------------
# Small helpers: ports, processes, permissions, quoting
# ---------------------------------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback TCP port (bind 127.0.0.1:0), never the same one twice in this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        with _port_lock:
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise HarnessError("could not find a free port")


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields start after the last ')'.
    return data[data.rfind(")") + 2 :].split()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (tells a pid apart from a reused one)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if pid runs (zombies count as gone) and, when given, started at start_time."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        _reap_if_child(pid)
        return False
    if start_time is not None and int(fields[19]) != start_time:
        return False
    return True


def _reap_if_child(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def become_subreaper() -> None:
    """Orphans we create (postmasters, once pg_ctl exits) become our children, so we reap them at once.

    Otherwise a killed postmaster stays a zombie until init gets round to it, and while it does its
    pid still looks alive to a restarting postmaster, which then refuses to start (postmaster.pid).
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _proc_stat(int(entry))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _wait_gone(pids: list[int], timeout: float, vanish: bool = False) -> bool:
    """Until no pid runs; with vanish, until they are reaped too (not even a zombie is left)."""
    def gone():
        alive = any(pid_alive(p) for p in pids)
        return not alive and (not vanish or not any(os.path.exists(f"/proc/{p}") for p in pids))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(0.05)
    return gone()


def _kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL a process and everything below it, and wait until they are gone."""
    pids = [pid] + _descendants(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if not _wait_gone(pids, timeout):
        alive = [p for p in pids if pid_alive(p)]
        raise HarnessError(f"processes {alive} survived SIGKILL")
    # A zombie's pid still "exists": give whoever reaps it (us as subreaper, or init) a moment.
    _wait_gone(pids, 5, vanish=True)


def _tail(path: str | Path | None, lines: int = 40) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def is_root() -> bool:
    return os.geteuid() == 0


def _pg_account() -> tuple[int, int, set[int]]:
    """uid, gid and groups of the account Postgres runs as (postgres when we are root, else us)."""
    if not is_root():
        return os.getuid(), os.getgid(), set(os.getgroups()) | {os.getgid()}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise HarnessError("running as root but there is no 'postgres' OS user (install postgresql-15)")
    groups = {g.gr_gid for g in grp.getgrall() if "postgres" in g.gr_mem} | {pw.pw_gid}
    return pw.pw_uid, pw.pw_gid, groups


def _as_pg(cmd: list[str]) -> list[str]:
    # initdb, pg_ctl and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if is_root() else cmd


def _chown_pg(path: str | Path) -> None:
    if is_root():
        uid, gid, _ = _pg_account()
        os.chown(path, uid, gid)


def untraversable_parents(path: str | Path) -> list[str]:
    """Directories above path (and path itself, if it exists) the Postgres account cannot enter."""
    if not is_root():
        return []
    uid, _, gids = _pg_account()
    bad = []
    p = Path(os.path.abspath(path))
    for d in [*reversed(p.parents), p]:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            break
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            bad.append(str(d))
    return bad


def ensure_traversable(path: str | Path, fix: bool = False) -> None:
    """Postgres (as the postgres user) must reach its data directories; fix = chmod o+x the parents."""
    bad = untraversable_parents(path)
    if not bad:
        return
    if not fix:
        raise HarnessError(
            f"the postgres OS user cannot enter {', '.join(bad)} (needed to reach {path}); "
            f"run `chmod o+x {' '.join(bad)}` or put the cluster under a directory such as /tmp"
        )
    for d in bad:
        os.chmod(d, os.stat(d).st_mode | stat.S_IXOTH)
        print(f"pgcluster: chmod o+x {d} (so the postgres user can reach {path})", file=sys.stderr)


def _conninfo_value(v) -> str:
    s = str(v)
    if s and re.fullmatch(r"[A-Za-z0-9_./:@+-]+", s):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(**params) -> str:
    """A libpq conninfo string ("host=... port=..."); None values are left out."""
    return " ".join(f"{k}={_conninfo_value(v)}" for k, v in params.items() if v is not None)


def sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def sql_ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores in pg_authid.rolpassword (RFC 5802/7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def md5_hash(user: str, password: str) -> str:
    """The md5 password hash Postgres stores: "md5" + md5(password || user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def auth_request(port: int, user: str, database: str = "app", host: str = HOST, timeout: float = 10.0) -> str:
    """Sends a startup packet and reports how the server asks this user to authenticate.

    Returns "ok" (trust), "cleartext", "md5", "sasl:<mechanisms,...>", "error:<SQLSTATE> <message>"
    or "other:<code>". The connection is closed right after, without answering.
    """
    body = struct.pack("!i", 3 << 16) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))
    ) + b"\0"
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        header = _recv_exact(s, 5)
        kind, length = header[:1], struct.unpack("!i", header[1:])[0]
        payload = _recv_exact(s, length - 4)
    if kind == b"E":
        fields = {f[:1]: f[1:].decode(errors="replace") for f in payload.split(b"\0") if f}
        return f"error:{fields.get(b'C', '')} {fields.get(b'M', '')}"
    if kind != b"R":
        return f"other:{kind!r}"
    code = struct.unpack("!i", payload[:4])[0]
    if code == 10:
        mechs = [m.decode() for m in payload[4:].split(b"\0") if m]
        return "sasl:" + ",".join(mechs)
    return {0: "ok", 3: "cleartext", 5: "md5"}.get(code, f"other:{code}")


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise HarnessError("connection closed by the server")
        buf += chunk
    return buf


# ---------------------------------------------------------------------------------------------
# Postgres binaries and the initdb template
# ---------------------------------------------------------------------------------------------


def make_certificate(directory: str | Path, name: str, san: str = "IP:127.0.0.1,DNS:localhost",
                     for_postgres: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate (CN=name, subjectAltName=san) and its key, as PEM files
    name.crt and name.key in directory; for_postgres: owned by the Postgres account (PgBouncer and
    Postgres run as it and want their key private)."""
    cert, key = Path(directory) / f"{name}.crt", Path(directory) / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    if for_postgres:
        for path in (cert, key):
            _chown_pg(path)
    return cert, key


def unverified_tls_context():
    """A TLS client context that takes any certificate (the test certificates are self-signed)."""
    import ssl  # noqa: PLC0415 - only the TLS tests and benchmarks need it

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def pg_bindir() -> Path:
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    debian = Path("/usr/lib/postgresql/15/bin")
    if (debian / "postgres").exists():
        return debian
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        raise HarnessError("Postgres 15 binaries not found (set PG_BINDIR or run scripts/install-deps.sh)")


def _pg(tool: str) -> str:
    return str(pg_bindir() / tool)


def _clean_env(extra: dict | None = None) -> dict:
    """Our environment without PG* variables (a stray PGHOST or PGPASSWORD must not leak into tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    # A ~/.pgpass must not make a wrong password work; a missing file is silently skipped.
    env["PGPASSFILE"] = "/nonexistent/pgpass"
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def _run(cmd: list[str], *, as_pg: bool = False, env: dict | None = None, check: bool = True,
         timeout: float = 120, what: str = "", log: str | Path | None = None) -> subprocess.CompletedProcess:
    full = _as_pg(cmd) if as_pg else cmd
    try:
        # cwd "/": the postgres user may not be allowed into our working directory.
        r = subprocess.run(full, capture_output=True, text=True, env=_clean_env(env), cwd="/",
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{what or cmd[0]} timed out after {timeout}s: {' '.join(cmd)}\n{_tail(log)}")
    if check and r.returncode != 0:
        msg = f"{what or os.path.basename(cmd[0])} failed (exit {r.returncode}): {' '.join(cmd)}\n"
        msg += (r.stderr or "") + (r.stdout or "")
        if log:
            msg += f"\n--- tail of {log} ---\n{_tail(log)}"
        raise HarnessError(msg)
    return r


def _pg_version() -> str:
    out = _run([_pg("postgres"), "--version"]).stdout
    m = re.search(r"(\d+(?:\.\d+)*)", out)
    return m.group(1) if m else "unknown"


def _available_locale(wanted: str) -> str:
    norm = lambda s: s.lower().replace("-", "")  # noqa: E731
    try:
        have = {norm(x) for x in subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()}
    except OSError:
        have = set()
    if norm(wanted) in have:
        return wanted
    print(f"pgcluster: locale {wanted} missing (run scripts/install-deps.sh); using C.UTF-8", file=sys.stderr)
    return "C.UTF-8"


_template_lock = threading.Lock()


def default_template_root() -> Path:
    for env in ("SHARDGATE_PG_TEMPLATE_DIR", "SHARDGATE_BUILD_DIR"):
        if os.environ.get(env):
            return Path(os.environ[env])
    if (REPO_ROOT / "build").is_dir():
        return REPO_ROOT / "build"
    return Path(tempfile.gettempdir())


def ensure_template(template_root: Path, staging_parent: Path) -> Path:
    """initdb once per (Postgres version, locale, settings, OS user); every new primary is a copy.

    initdb runs in staging_parent (which the postgres user can reach); the result is copied into
    template_root and renamed into place atomically, so concurrent test runs never see half a template.
    """
    locale = _available_locale(os.environ.get("SHARDGATE_PG_LOCALE", "en_US.UTF-8"))
    owner = "postgres" if is_root() else pwd.getpwuid(os.getuid()).pw_name
    digest = hashlib.sha1((TEMPLATE_SETTINGS + locale).encode()).hexdigest()[:8]
    final = Path(template_root) / f"pg-template-{_pg_version()}-{owner}-{digest}"
    try:
        Path(template_root).mkdir(parents=True, exist_ok=True)
        writable = os.access(template_root, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        # e.g. not root and the build directory belongs to root: cache the template in /tmp instead.
        template_root = Path(tempfile.gettempdir())
        final = template_root / final.name
    with _template_lock:
        if (final / "PG_VERSION").exists():
            return final
        staging = Path(tempfile.mkdtemp(prefix=".pg-template-", dir=staging_parent))
        try:
            os.chmod(staging, 0o755)
            datadir = staging / "data"
            datadir.mkdir(mode=0o700)
            pwfile = staging / "pwfile"
            pwfile.write_text("postgres\n")
            for p in (datadir, pwfile):
                _chown_pg(p)
            _run([_pg("initdb"), "-D", str(datadir), "-U", "postgres", f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", f"--locale={locale}",
                  "--no-sync", "--no-instructions"], as_pg=True, what="initdb")
            with open(datadir / "postgresql.conf", "a") as f:
                f.write(TEMPLATE_SETTINGS)
            tmp = final.with_name(final.name + f".tmp-{os.getpid()}-{threading.get_ident()}")
            _run(["cp", "-a", str(datadir), str(tmp)], what="copying the template")
            try:
                os.rename(tmp, final)
            except OSError:
                # Another run finished first; use theirs.
                shutil.rmtree(tmp, ignore_errors=True)
            # Templates made with older settings are dead weight (about 40 MB each).
            for old in Path(template_root).glob(f"pg-template-*-{owner}-*"):
                if old.name != final.name and ".tmp-" not in old.name:
                    shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not (final / "PG_VERSION").exists():
            raise HarnessError(f"template {final} was not created")
        return final


# ---------------------------------------------------------------------------------------------
# psql
# ---------------------------------------------------------------------------------------------


def run_psql(host: str, port: int, sql: str | None, dbname: str = "app", user: str = "postgres",
             password: str | None = None, check: bool = True, extra_args=(), timeout: float = 60,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """psql -X -A -t -q -w -v ON_ERROR_STOP=1 [...extra_args] [-c sql]; raises PsqlError if check."""
    cmd = [_pg("psql"), "-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1",
           "-h", host, "-p", str(port), "-U", user, "-d", dbname, *extra_args]
    if sql is not None:
        cmd += ["-c", sql]
    full_env = _clean_env({"PGPASSWORD": password, "PGCONNECT_TIMEOUT": 10, **(env or {})})
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise PsqlError(-1, cmd, e.stdout, f"timed out after {timeout}s")
    if check and r.returncode != 0:
        raise PsqlError(r.returncode, cmd, r.stdout, r.stderr)
    return r


# ---------------------------------------------------------------------------------------------
# One Postgres server
# ---------------------------------------------------------------------------------------------


class Server:
    """One Postgres 15 server on 127.0.0.1: a shard's primary or one of its streaming replicas."""

    def __init__(self, name: str, role: str, port: int, datadir: str | Path, logfile: str | Path,
                 passwords: dict[str, str | None] | None = None, settings: dict | None = None,
                 port_chosen: bool = True):
        self.name = name
        self.role = role  # 'primary' | 'replica'
        self.port = port
        self.datadir = str(datadir)
        self.logfile = str(logfile)
        self.primary: Server | None = None  # set for replicas
        self.settings = dict(settings or {})
        self._passwords = passwords or {"postgres": "postgres"}
        # True when the port came from free_port(): on a bind race we may pick another one.
        self._port_chosen = port_chosen
        self._started_pid: tuple[int, int | None] | None = None  # (pid, start time) of our postmaster

    def __repr__(self) -> str:
        return f"Server({self.name!r}, {self.role}, port={self.port})"

    @property
    def socket_dir(self) -> str | None:
        if len(self.datadir) + len("/.s.PGSQL.65535") > MAX_SOCKET_PATH:
            return None
        return self.datadir

    def dsn(self, dbname: str = "app", user: str = "postgres", password: str | None = "postgres", **kw) -> str:
        return conninfo(host=HOST, port=self.port, dbname=dbname, user=user, password=password, **kw)

    # -- configuration files ------------------------------------------------------------------

    def write_server_conf(self) -> None:
        lines = [
            "# Written by tests/harness/pgcluster.py: this server's own settings.",
            f"port = {self.port}",
            f"unix_socket_directories = {sql_literal(self.socket_dir or '')}",
            f"cluster_name = {sql_literal(self.name)}",
        ]
        for k, v in self.settings.items():
            if isinstance(v, bool):
                v = "on" if v else "off"
            lines.append(f"{k} = {v if isinstance(v, (int, float)) else sql_literal(str(v))}")
        path = Path(self.datadir) / "server.conf"
        path.write_text("\n".join(lines) + "\n")
        _chown_pg(path)
        if self.role == "replica" and self.primary is not None:
            self._write_primary_conninfo()

    def _write_primary_conninfo(self) -> None:
        # pg_basebackup -R wrote primary_conninfo into postgresql.auto.conf; keep it pointing at the
        # primary's current port (it changes when the demo restarts on other ports).
        auto = Path(self.datadir) / "postgresql.auto.conf"
        old = auto.read_text().splitlines() if auto.exists() else []
        info = conninfo(host=HOST, port=self.primary.port, user="postgres",
                        password=self._passwords.get("postgres") or "postgres", application_name=self.name)
        kept = [ln for ln in old if not ln.startswith(("primary_conninfo", "primary_slot_name"))]
        kept += [f"primary_conninfo = {sql_literal(info)}", f"primary_slot_name = {sql_literal(self.slot_name)}"]
        auto.write_text("\n".join(kept) + "\n")
        _chown_pg(auto)

    @property
    def slot_name(self) -> str:
        return re.sub(r"[^a-z0-9_]", "_", self.name.lower())

    def write_hba(self, users: list[dict]) -> None:
        lines = ["# Written by tests/harness/pgcluster.py: each test user's auth method first, then defaults.",
                 "local   all          all                   trust",
                 "local   replication  all                   trust"]
        for u in users:
            method = HBA_METHODS.get(u.get("auth_method", "scram-sha-256"))
            if method is None:
                raise HarnessError(f"user {u['name']}: unknown auth_method {u.get('auth_method')!r}")
            name = u["name"] if re.fullmatch(r"[a-z_][a-z0-9_]*", u["name"]) else '"' + u["name"] + '"'
            lines.append(f"host    all          {name:<20} {HOST}/32  {method}")
        lines += [f"host    all          all                   {HOST}/32  scram-sha-256",
                  f"host    replication  all                   {HOST}/32  scram-sha-256"]
        path = Path(self.datadir) / "pg_hba.conf"
        path.write_text("\n".join(lines) + "\n")
        _chown_pg(path)

    # -- life cycle -----------------------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        try:
            first = (Path(self.datadir) / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first.strip())
        except (OSError, ValueError, IndexError):
            # No pid file (e.g. the data directory was deleted under a running server): fall back to
            # the postmaster we started ourselves, if it still runs.
            if self._started_pid and pid_alive(*self._started_pid):
                return self._started_pid[0]
            return None
        # A stale pid file's pid may belong to an unrelated process by now: it must be a postgres.
        return pid if pid_alive(pid) and _comm(pid) == "postgres" else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        for attempt in range(3):
            r = _run([_pg("pg_ctl"), "start", "-D", self.datadir, "-l", self.logfile, "-w", "-t",
                      str(int(timeout)), "-s"], as_pg=True, check=False, timeout=timeout + 30)
            if r.returncode == 0:
                self._started_pid = None
                pid = self.postmaster_pid()
                if pid:
                    self._started_pid = (pid, proc_start_time(pid))
                return
            log = _tail(self.logfile)
            if self._port_chosen and attempt < 2 and ("could not bind" in log or "already in use" in log):
                # Someone took our free port between free_port() and the bind: take another.
                self.port = free_port()
                self.write_server_conf()
                continue
            raise HarnessError(f"{self.name}: pg_ctl start failed:\n{r.stderr}{r.stdout}\n"
                               f"--- tail of {self.logfile} ---\n{log}")

    def stop(self, mode: str = "fast", vanish: bool = False) -> None:
        """pg_ctl stop -m mode, then -m immediate, then SIGKILL; returns when no process is left
        (with vanish, also when no zombie is left, so that `pgrep postgres` comes back empty)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        family = [pid] + _descendants(pid)
        modes = [mode] + (["immediate"] if mode != "immediate" else [])
        if not (Path(self.datadir) / "postmaster.pid").exists():
            modes = []  # pg_ctl needs the data directory: go straight to SIGKILL
        for m in modes:
            r = _run([_pg("pg_ctl"), "stop", "-D", self.datadir, "-m", m, "-w", "-t", "30", "-s"],
                     as_pg=True, check=False, timeout=60)
            if r.returncode == 0 and _wait_gone(family, 10):
                break
        else:
            if pid_alive(pid):
                _kill_tree(pid)
            _wait_gone(family, 10)
        if vanish:
            _wait_gone(family, 5, vanish=True)

    def kill(self) -> None:
        """A crash: SIGKILL the postmaster and its children at once (connections drop immediately)."""
        pid = self.postmaster_pid()
        if pid is not None:
            _kill_tree(pid)

    def promote(self, timeout: float = 60) -> None:
        """Turns a replica into a primary (pg_ctl promote -w)."""
        _run([_pg("pg_ctl"), "promote", "-D", self.datadir, "-w", "-t", str(int(timeout)), "-s"],
             as_pg=True, what=f"{self.name}: pg_ctl promote", log=self.logfile, timeout=timeout + 30)
        self.role = "primary"

    # -- queries ------------------------------------------------------------------------------

    def psql(self, sql: str, dbname: str = "app", user: str = "postgres", check: bool = True,
             password: str | None = None, timeout: float = 60) -> str:
        """Runs psql -XAtq -c sql and returns its stdout without the final newline.

        Without a password it goes through the Unix socket (local trust: any role, no password);
        with one, or when there is no socket, over TCP where pg_hba's per-user method applies.
        """
        if password is None and self.socket_dir:
            host = self.socket_dir
        else:
            host = HOST
            if password is None:
                password = self._passwords.get(user)
        r = run_psql(host, self.port, sql, dbname=dbname, user=user, password=password, check=check,
                     timeout=timeout)
        return r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the server accepts queries; a replica also until it is in recovery and streaming."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if self.role == "replica":
                    out = self.psql("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)",
                                    dbname="postgres", timeout=10)
                    if out == "t|streaming":
                        return
                    last = out
                else:
                    self.psql("SELECT 1", dbname="postgres", timeout=10)
                    return
            except PsqlError as e:
                last = str(e)
            time.sleep(0.1)
        raise HarnessError(f"{self.name} not ready after {timeout}s (last: {last})\n"
                           f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}")


class Shard:
    """One shard: a primary and its replicas."""

    def __init__(self, name: str, index: int, primary: Server, replicas: list[Server]):
        self.name = name
        self.index = index
        self.primary = primary
        self.replicas = replicas

    @property
    def servers(self) -> list[Server]:
        return [self.primary, *self.replicas]

    def __repr__(self) -> str:
        return f"Shard({self.name!r}, primary={self.primary.port}, replicas={[r.port for r in self.replicas]})"


# ---------------------------------------------------------------------------------------------
# shardgate
# ---------------------------------------------------------------------------------------------

SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer|runtime error: ")


class Shardgate:
    """The shardgate process: started in its own session, logging to logfile."""

    def __init__(self, binary: str | Path, config_path: str | Path, logfile: str | Path, port: int,
                 metrics_port: int = 0, listen_addr: str = HOST, env: dict | None = None):
        self.binary = str(binary)
        self.config_path = str(config_path)
        self.logfile = str(logfile)
        self.port = port
        self.metrics_port = metrics_port
        self.listen_addr = listen_addr
        self.env = dict(env or {})
        self.pid: int | None = None
        self.start_time: int | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"Shardgate(port={self.port}, pid={self.pid})"

    @property
    def _connect_host(self) -> str:
        return HOST if self.listen_addr in ("0.0.0.0", "::", "", "*", "localhost") else self.listen_addr

    def start(self, timeout: float = 20) -> None:
        """Starts shardgate and waits until it accepts TCP connections (fails with the log tail)."""
        if self.is_running():
            return
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"shardgate binary {self.binary} does not exist or is not executable "
                               f"(run `make build`, set SHARDGATE_BIN, or SHARDGATE_TARGET=direct)")
        with open(self.logfile, "ab") as log:
            log.write(f"=== pgcluster: starting {self.binary} --config {self.config_path} at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            log.flush()
            env = dict(os.environ)
            env.update(self.env)
            self._proc = subprocess.Popen([self.binary, "--config", self.config_path], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True, env=env,
                                          cwd=os.path.dirname(self.config_path) or "/")
        self.pid = self._proc.pid
        self.start_time = proc_start_time(self.pid)
        self.returncode = None
        deadline = time.monotonic() + timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self.returncode = rc
                raise HarnessError(f"shardgate exited with status {rc} during startup; "
                                   f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}")
            try:
                with socket.create_connection((self._connect_host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError(f"shardgate did not accept connections on port {self.port} within "
                                   f"{timeout}s; --- tail of {self.logfile} ---\n{_tail(self.logfile)}")
            time.sleep(0.05)

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid, self.start_time)

    def _wait(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self.returncode = self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return _wait_gone([self.pid], timeout) if self.pid else True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Sends sig, waits up to timeout, then SIGKILLs the process group; returns the exit status
        (negative = killed by that signal; None if it was not our child)."""
        if not self.is_running():
            if self._proc is not None:
                self.returncode = self._proc.poll()
            return self.returncode
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        if not self._wait(timeout):
            self.kill()
        # Anything shardgate forked is in its process group (pgid == pid; a pgid in use is never reused).
        self._reap_group()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL shardgate's whole process group (a crash)."""
        if self.pid and self.is_running():
            self._reap_group()
            self._wait(10)

    def _reap_group(self) -> None:
        if not self.pid:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def reload(self) -> None:
        """SIGHUP: shardgate re-reads its config file."""
        if not self.is_running():
            raise HarnessError("shardgate is not running")
        os.kill(self.pid, signal.SIGHUP)

    def log_text(self) -> str:
        try:
            return Path(self.logfile).read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10, start: int = 0) -> re.Match:
        """Waits until the log (from character offset start) matches the regex pattern."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log_text()[start:])
            if m:
                return m
            if time.monotonic() > deadline:
                raise HarnessError(f"{pattern!r} not in the shardgate log after {timeout}s; "
                                   f"--- tail ---\n{_tail(self.logfile)}")
            time.sleep(0.05)

    def sanitizer_report(self) -> list[str]:
        """Lines where ASan/UBSan/TSan reported an error (empty when clean)."""
        return [ln for ln in self.log_text().splitlines() if SANITIZER_RE.search(ln)]

    def dsn(self, dbname: str = "app", user: str = "postgres", password: str | None = "postgres", **kw) -> str:
        return conninfo(host=self._connect_host, port=self.port, dbname=dbname, user=user, password=password, **kw)

    def psql(self, sql: str | None, dbname: str = "app", user: str = "postgres", password: str | None = "postgres",
             check: bool = True, extra_args=(), timeout: float = 60, env: dict | None = None
             ) -> subprocess.CompletedProcess:
        return run_psql(self._connect_host, self.port, sql, dbname=dbname, user=user, password=password,
                        check=check, extra_args=extra_args, timeout=timeout, env=env)


class DirectShardgate:
    """Stands in for shardgate in direct mode: port, dsn and psql point at one plain Postgres server,
    so the integration tests can be checked against Postgres itself. Process controls do nothing."""

    direct = True

    def __init__(self, server: Server):
        self.server = server
        self.metrics_port = 0
        self.config_path = None
        self.logfile = None
        self.listen_addr = HOST
        self.returncode = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int | None:
        return self.server.postmaster_pid()

    def __repr__(self) -> str:
        return f"DirectShardgate(-> {self.server.name} port {self.port})"

    def start(self, timeout: float = 20) -> None:
        pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        return None

    def kill(self) -> None:
        pass

    def reload(self) -> None:
        pass

    def is_running(self) -> bool:
        return self.server.is_running()

    def log_text(self) -> str:
        return ""

    def sanitizer_report(self) -> list[str]:
        return []

    def dsn(self, dbname: str = "app", user: str = "postgres", password: str | None = "postgres", **kw) -> str:
        return self.server.dsn(dbname=dbname, user=user, password=password, **kw)

    def psql(self, sql: str | None, dbname: str = "app", user: str = "postgres", password: str | None = "postgres",
             check: bool = True, extra_args=(), timeout: float = 60, env: dict | None = None
             ) -> subprocess.CompletedProcess:
        return run_psql(HOST, self.port, sql, dbname=dbname, user=user, password=password, check=check,
                        extra_args=extra_args, timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------------
# TOML rendering
# ---------------------------------------------------------------------------------------------


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise HarnessError(f"cannot write {v!r} as TOML")


def _toml_table(d: dict, indent: str = "") -> list[str]:
    return [f"{indent}{k} = {toml_value(v)}" for k, v in d.items() if v is not None]


# ---------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------

_live_lock = threading.Lock()
_live_clusters: list["Cluster"] = []
_handlers_installed = False


def _stop_all_live() -> None:
    with _live_lock:
        clusters = list(_live_clusters)
    for c in reversed(clusters):
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the others
            print(f"pgcluster: stopping {c.base_dir} failed: {e}", file=sys.stderr)


def _on_sigterm(signum, frame):
    _stop_all_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all_live)
    become_subreaper()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _normalize_users(users: list[dict]) -> list[dict]:
    out = []
    for u in users:
        u = dict(u)
        if "name" not in u:
            raise HarnessError(f"user without a name: {u!r}")
        u.setdefault("auth_method", "scram-sha-256")
        u.setdefault("password", None)
        fmt = u.get("config_password", "plain")
        # The rendered password is fixed once, so render_config() is stable (random SCRAM salt).
        if u["password"] is None:
            u["_config_password"] = None
        elif fmt == "plain":
            u["_config_password"] = u["password"]
        elif fmt == "scram-verifier":
            u["_config_password"] = scram_verifier(u["password"])
        elif fmt == "md5-hash":
            u["_config_password"] = md5_hash(u["name"], u["password"])
        else:
            raise HarnessError(f"user {u['name']}: unknown config_password {fmt!r}")
        out.append(u)
    return out


class Cluster:
    """num_shards shards (primary + replicas each) of one database, and shardgate in front of them."""

    def __init__(self, base_dir, num_shards: int = 2, replicas_per_shard: int | list[int] = 1,
                 shardgate_bin=None, shardgate_port: int = 0, metrics_port: int = 0, general: dict | None = None,
                 pool_mode: str = "session", users: list[dict] | None = None, database: str = "app",
                 with_shardgate: bool = True, *, server_ports: dict[str, int] | None = None,
                 pg_settings: dict | None = None, database_options: dict | None = None, extra_toml: str = "",
                 shard_names: list[str] | None = None, shardgate_env: dict | None = None,
                 template_root=None, fix_permissions: bool = False, reuse_data: bool = False,
                 unix_sockets: bool = False):
        """
        replicas_per_shard: an int, or one count per shard.
        general: extra [general] keys (override the defaults, None removes a key).
        users: list of dicts (see DEFAULT_USERS and USER_HARNESS_KEYS); other keys (admin, pool_size)
               go to the config as is.
        server_ports: fixed ports by server name ("shard0-primary"); others are free ports.
        pg_settings: extra postgresql.conf settings for every server.
        database_options: extra keys of the [[databases]] table (e.g. pool_size).
        extra_toml: appended verbatim to the rendered config.
        reuse_data: keep existing data directories (the demo); otherwise they are created fresh.
        unix_sockets: shardgate reaches the servers through their Unix sockets (host = the socket
               directory) instead of TCP.
        """
        self.base_dir = Path(os.path.abspath(base_dir))
        self.num_shards = num_shards
        if isinstance(replicas_per_shard, int):
            replicas_per_shard = [replicas_per_shard] * num_shards
        if len(replicas_per_shard) != num_shards:
            raise HarnessError("replicas_per_shard needs one count per shard")
        self.replica_counts = list(replicas_per_shard)
        self.shardgate_bin = str(shardgate_bin or os.environ.get("SHARDGATE_BIN") or REPO_ROOT / "build" / "shardgate")
        self.requested_shardgate_port = shardgate_port
        self.requested_metrics_port = metrics_port
        self.shardgate_port = shardgate_port
        self.metrics_port = metrics_port
        self.general_overrides = dict(general or {})
        self.pool_mode = pool_mode
        self.users = _normalize_users(users if users is not None else DEFAULT_USERS)
        self.database = database
        self.with_shardgate = with_shardgate
        self.server_ports = dict(server_ports or {})
        self.pg_settings = dict(pg_settings or {})
        self.database_options = dict(database_options or {})
        self.extra_toml = extra_toml
        self.shard_names = shard_names or [f"shard{i}" for i in range(num_shards)]
        self.shardgate_env = shardgate_env
        self.template_root = Path(template_root) if template_root else default_template_root()
        self.fix_permissions = fix_permissions
        self.unix_sockets = unix_sockets
        self.reuse_data = reuse_data
        self.config_path = str(self.base_dir / "shardgate.toml")
        self.shards: list[Shard] = []
        self.shardgate: Shardgate | DirectShardgate | None = None
        self.detached = False
        self._started = False

    def __repr__(self) -> str:
        return f"Cluster({str(self.base_dir)!r}, shards={self.shards}, shardgate={self.shardgate})"

    def __enter__(self) -> "Cluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- derived views ----------------------------------------------------------------------------

    @property
    def servers(self) -> list[Server]:
        return [s for shard in self.shards for s in shard.servers]

    @property
    def passwords(self) -> dict[str, str | None]:
        return {u["name"]: u["password"] for u in self.users}

    @property
    def superuser_password(self) -> str:
        """What the harness and shardgate log in to the shards with (the template's, unless users changes it)."""
        return self.passwords.get("postgres") or "postgres"

    def user(self, name: str) -> dict:
        for u in self.users:
            if u["name"] == name:
                return u
        raise KeyError(name)

    def general(self) -> dict:
        """The effective [general] table."""
        g = {"listen_addr": HOST, "port": self.shardgate_port, "metrics_port": self.metrics_port,
             "pool_mode": self.pool_mode}
        g.update(self.general_overrides)
        return {k: v for k, v in g.items() if v is not None}

    def render_config(self) -> str:
        """The shardgate TOML for this topology."""
        self._plan()
        out = [f"# shardgate config written by tests/harness/pgcluster.py for {self.base_dir}", "[general]"]
        out += _toml_table(self.general())
        for u in self.users:
            out += ["", "[[users]]", f"name = {toml_value(u['name'])}"]
            if u["_config_password"] is not None:
                out.append(f"password = {toml_value(u['_config_password'])}")
            rest = {k: v for k, v in u.items()
                    if k not in ("name", *USER_HARNESS_KEYS) and not k.startswith("_")}
            out += _toml_table(rest)
        out += ["", "[[databases]]", f"name = {toml_value(self.database)}"]
        out += _toml_table(self.database_options)
        def host(server: Server) -> str:
            if not self.unix_sockets:
                return HOST
            if not server.socket_dir:
                raise RuntimeError(f"{server.name}: its data directory is too long for a Unix socket")
            return server.socket_dir

        for shard in self.shards:
            primary = {"host": host(shard.primary), "port": shard.primary.port, "database": self.database,
                       "user": "postgres", "password": self.superuser_password}
            replicas = [{"host": host(r), "port": r.port} for r in shard.replicas]
            out += ["", "  [[databases.shards]]", f"  name = {toml_value(shard.name)}",
                    f"  primary = {toml_value(primary)}",
                    f"  replicas = {toml_value(replicas)}"]
        if self.extra_toml:
            out += ["", self.extra_toml]
        return "\n".join(out) + "\n"

    def write_config(self, text: str | None = None) -> str:
        """Writes render_config() (or text) to config_path, e.g. before shardgate.reload()."""
        Path(self.config_path).write_text(text if text is not None else self.render_config())
        return self.config_path

    def env_lines(self) -> str:
        """SHARDGATE_PORT=… SHARDGATE_METRICS_PORT=… SHARD<i>_PRIMARY_PORT=… SHARD<i>_REPLICA[<j>]_PORT=…"""
        self._plan()
        sg_port = self.shardgate.port if self.shardgate is not None else self.shardgate_port
        metrics = self.shardgate.metrics_port if self.shardgate is not None else self.metrics_port
        lines = [f"SHARDGATE_PORT={sg_port}", f"SHARDGATE_METRICS_PORT={metrics}"]
        for shard in self.shards:
            lines.append(f"SHARD{shard.index}_PRIMARY_PORT={shard.primary.port}")
            for j, r in enumerate(shard.replicas):
                lines.append(f"SHARD{shard.index}_REPLICA{'' if j == 0 else j}_PORT={r.port}")
        return "\n".join(lines) + "\n"

    # -- start / stop -------------------------------------------------------------------------

    def _plan(self) -> None:
        if self.shards:
            return
        logs = self.base_dir / "logs"
        pw = dict(self.passwords)
        pw["postgres"] = self.superuser_password
        for i in range(self.num_shards):
            def mk(name, role):
                fixed = self.server_ports.get(name)
                return Server(name, role, fixed or free_port(), self.base_dir / name, logs / f"{name}.log",
                              passwords=pw, settings=self.pg_settings, port_chosen=not fixed)
            primary = mk(f"shard{i}-primary", "primary")
            replicas = [mk(f"shard{i}-replica{'' if j == 0 else j}", "replica") for j in range(self.replica_counts[i])]
            for r in replicas:
                r.primary = primary
            self.shards.append(Shard(self.shard_names[i], i, primary, replicas))
        if "port" in self.general_overrides:
            self.shardgate_port = self.general_overrides["port"]
        elif not self.shardgate_port:
            self.shardgate_port = free_port()
        if "metrics_port" in self.general_overrides:
            self.metrics_port = self.general_overrides["metrics_port"] or 0
        elif not self.metrics_port:
            self.metrics_port = free_port()

    def start(self) -> "Cluster":
        """Starts every server (shards in parallel) and shardgate; on failure stops what it started."""
        if self._started:
            return self
        ensure_traversable(self.base_dir.parent, fix=self.fix_permissions)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        (self.base_dir / "logs").mkdir(exist_ok=True)
        _chown_pg(self.base_dir / "logs")
        with _live_lock:
            _live_clusters.append(self)
        _install_handlers()
        self._started = True
        try:
            self._plan()
            template = ensure_template(self.template_root, self.base_dir)
            self.write_state()
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.num_shards)) as pool:
                for f in [pool.submit(self._start_shard, shard, template) for shard in self.shards]:
                    f.result()
            self.write_state()
            if self.with_shardgate:
                self.start_shardgate()
        except BaseException:
            self.stop()
            raise
        return self

    def _fresh_datadir(self, server: Server) -> None:
        d = Path(server.datadir)
        if d.exists():
            if server.is_running():
                raise HarnessError(f"{d} has a running postmaster; stop it first")
            if any(d.iterdir()) and not (d / "PG_VERSION").exists():
                raise HarnessError(f"{d} exists and is not a Postgres data directory; not touching it")
            shutil.rmtree(d)

    def _start_shard(self, shard: Shard, template: Path) -> None:
        p = shard.primary
        marker = ".pgcluster-initialized"
        reuse_primary = self.reuse_data and (Path(p.datadir) / marker).exists()
        Path(p.logfile).touch()
        _chown_pg(p.logfile)
        if not reuse_primary:
            self._fresh_datadir(p)
            _run(["cp", "-a", str(template), p.datadir], what="copying the template")
        p.write_server_conf()
        p.write_hba(self.users)
        p.start()
        p.wait_ready()
        self._create_roles_and_database(p)
        (Path(p.datadir) / marker).touch()
        for r in shard.replicas:
            Path(r.logfile).touch()
            _chown_pg(r.logfile)
            if not (reuse_primary and (Path(r.datadir) / marker).exists()):
                self._fresh_datadir(r)
                Path(r.datadir).mkdir(mode=0o700)
                _chown_pg(r.datadir)
                # Recreating a replica of a kept primary: its old slot would make -C fail.
                p.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                       f"WHERE slot_name = {sql_literal(r.slot_name)}", dbname="postgres")
                _run([_pg("pg_basebackup"), "-D", r.datadir, "-R", "-X", "stream", "-c", "fast", "-C",
                      "-S", r.slot_name, "-h", HOST, "-p", str(p.port), "-U", "postgres", "-w"],
                     as_pg=True, env={"PGPASSWORD": self.superuser_password},
                     what=f"{r.name}: pg_basebackup", timeout=300)
                (Path(r.datadir) / marker).touch()
            r.write_server_conf()
            r.write_hba(self.users)
            r.start()
        for r in shard.replicas:
            r.wait_ready()

    def _create_roles_and_database(self, p: Server) -> None:
        existing = set(p.psql("SELECT rolname FROM pg_roles", dbname="postgres").split())
        stmts = []
        for u in self.users:
            # md5 users get an md5-hashed password so that plain Postgres really does md5 for them;
            # a verifier in the config is given to Postgres as is (it accepts pre-hashed passwords).
            enc = "md5" if u["auth_method"] == "md5" else "scram-sha-256"
            hashed = u.get("config_password") in ("scram-verifier", "md5-hash")
            stored = u["_config_password"] if hashed else u["password"]
            pw = f"PASSWORD {sql_literal(stored)}" if stored is not None else "PASSWORD NULL"
            verb = "ALTER" if u["name"] in existing else "CREATE"
            stmts.append(f"SET password_encryption = {sql_literal(enc)}; {verb} ROLE {sql_ident(u['name'])} LOGIN {pw}")
        self._psql_many(p, "postgres", stmts)
        if p.psql(f"SELECT 1 FROM pg_database WHERE datname = {sql_literal(self.database)}", dbname="postgres") != "1":
            self._psql_many(p, "postgres", [f"CREATE DATABASE {sql_ident(self.database)} OWNER postgres"])
        # Test users may create tables and read what postgres created (PG 15 revoked CREATE on public).
        self._psql_many(p, self.database, [
            "GRANT ALL ON SCHEMA public TO PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES TO PUBLIC",
        ])

    def _psql_many(self, p: Server, dbname: str, stmts: list[str]) -> None:
        if not stmts:
            return
        # One -c per statement: each runs on its own (CREATE DATABASE cannot run in a transaction).
        args = [a for s in stmts for a in ("-c", s)]
        host = p.socket_dir or HOST
        run_psql(host, p.port, None, dbname=dbname, password=self.superuser_password, extra_args=args)

    def start_shardgate(self, config_text: str | None = None, timeout: float = 20) -> Shardgate:
        """Writes the config (render_config() or config_text) and starts shardgate on it."""
        self.write_config(config_text)
        g = self.general()
        if self.shardgate is None or isinstance(self.shardgate, DirectShardgate):
            self.shardgate = Shardgate(self.shardgate_bin, self.config_path, self.base_dir / "shardgate.log",
                                       self.shardgate_port, self.metrics_port, g.get("listen_addr", HOST),
                                       env=self.shardgate_env)
        for attempt in range(2):
            try:
                self.shardgate.start(timeout=timeout)
                break
            except HarnessError:
                # A port we picked may have been taken between free_port() and shardgate's bind.
                if attempt == 0 and not self.requested_shardgate_port and config_text is None \
                        and not port_is_free(self.shardgate_port):
                    self.shardgate_port = self.shardgate.port = free_port()
                    self.write_config()
                    continue
                raise
        self.write_state()
        return self.shardgate

    def stop(self) -> None:
        """Stops shardgate and every server (nothing is removed: logs and data stay for post-mortems)."""
        errors = []
        if isinstance(self.shardgate, Shardgate):
            try:
                self.shardgate.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        servers = [s for shard in self.shards for s in reversed(shard.servers)]
        if servers:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(servers)) as pool:
                for f in [pool.submit(s.stop) for s in servers]:
                    try:
                        f.result()
                    except Exception as e:  # noqa: BLE001
                        errors.append(e)
        with _live_lock:
            if self in _live_clusters:
                _live_clusters.remove(self)
        self._started = False
        if self.base_dir.exists():
            self.write_state()
        if errors:
            raise HarnessError("; ".join(str(e) for e in errors))

    def detach(self) -> None:
        """Leaves the cluster running after this process exits (the demo)."""
        self.detached = True
        with _live_lock:
            if self in _live_clusters:
                _live_clusters.remove(self)
        self.write_state()

    # -- state file (used by `down`, `status` and the reaper) ---------------------------------------

    def write_state(self) -> None:
        sg = None
        if isinstance(self.shardgate, Shardgate):
            sg = {"pid": self.shardgate.pid, "start_time": self.shardgate.start_time, "port": self.shardgate.port,
                  "metrics_port": self.shardgate.metrics_port, "config_path": self.shardgate.config_path,
                  "logfile": self.shardgate.logfile}
        state = {
            "owner_pid": None if self.detached else os.getpid(),
            "owner_start_time": None if self.detached else proc_start_time(os.getpid()),
            "base_dir": str(self.base_dir),
            "database": self.database,
            "servers": [{"name": s.name, "role": s.role, "port": s.port, "datadir": s.datadir, "logfile": s.logfile,
                         "pid": s.postmaster_pid()} for s in self.servers],
            "shardgate": sg,
            "env": dict(ln.split("=", 1) for ln in self.env_lines().splitlines()),
        }
        tmp = self.base_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.base_dir / STATE_FILE)


def load_state(base_dir) -> dict | None:
    try:
        return json.loads((Path(base_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _state_servers(state: dict | None, base_dir: Path) -> list[Server]:
    """Servers named in the state file, plus any data directory under base_dir with a postmaster.pid."""
    servers = {}
    for s in (state or {}).get("servers", []):
        servers[s["datadir"]] = Server(s["name"], s["role"], s["port"], s["datadir"], s["logfile"])
    if base_dir.is_dir():
        for d in base_dir.iterdir():
            if (d / "postmaster.pid").exists() and str(d) not in servers:
                servers[str(d)] = Server(d.name, "unknown", 0, d, base_dir / "logs" / f"{d.name}.log")
    return list(servers.values())


def _state_shardgate(state: dict | None) -> Shardgate | None:
    sg = (state or {}).get("shardgate")
    if not sg or not sg.get("pid"):
        return None
    g = Shardgate("", sg["config_path"], sg["logfile"], sg["port"], sg.get("metrics_port") or 0)
    g.pid, g.start_time = sg["pid"], sg.get("start_time")
    return g


def state_running(base_dir) -> tuple[list[str], list[str]]:
    """(names of running processes, names of stopped ones) for the cluster in base_dir."""
    base_dir = Path(base_dir)
    state = load_state(base_dir)
    up, down = [], []
    sg = _state_shardgate(state)
    if state and state.get("shardgate"):
        (up if sg and sg.is_running() else down).append("shardgate")
    for s in _state_servers(state, base_dir):
        (up if s.is_running() else down).append(s.name)
    return up, down


def stop_from_state(base_dir) -> list[str]:
    """Stops everything the cluster in base_dir started (by its state file and postmaster.pid files)."""
    base_dir = Path(base_dir)
    state = load_state(base_dir)
    stopped = []
    sg = _state_shardgate(state)
    if sg and sg.is_running():
        sg.stop()
        _wait_gone([sg.pid], 5, vanish=True)
        stopped.append("shardgate")
    servers = [s for s in _state_servers(state, base_dir) if s.is_running()]
    if servers:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for f in [pool.submit(s.stop, vanish=True) for s in servers]:
                f.result()
    return stopped + [s.name for s in servers]


def reap_stale(pattern: str) -> list[str]:
    """Stops clusters (under dirs matching the glob) whose owning process died without cleaning up,
    e.g. a test run killed by a timeout. Detached clusters (the demo) have no owner and are left alone."""
    reaped = []
    for state_path in Path("/").glob(pattern.lstrip("/") + "/**/" + STATE_FILE):
        state = load_state(state_path.parent)
        if not state or state.get("owner_pid") is None:
            continue
        if pid_alive(state["owner_pid"], state.get("owner_start_time")):
            continue
        for name in stop_from_state(state_path.parent):
            reaped.append(f"{state_path.parent}:{name}")
    return reaped


# ---------------------------------------------------------------------------------------------
# CLI: the demo
# ---------------------------------------------------------------------------------------------

DEMO_ENV_VARS = ["SHARDGATE_PORT", "SHARDGATE_METRICS_PORT", "SHARD0_PRIMARY_PORT", "SHARD0_REPLICA_PORT",
                 "SHARD1_PRIMARY_PORT", "SHARD1_REPLICA_PORT"]


def rewrite_ports(text: str, mapping: dict[int, int]) -> str:
    """Rewrites `port = N` / `metrics_port = N` values textually (comments and layout stay)."""
    def sub(m):
        old = int(m.group(2))
        return m.group(1) + str(mapping.get(old, old))
    return re.sub(r"(\b(?:metrics_)?port\s*=\s*)(\d+)", sub, text)


def _print_connect(demo_dir: Path, env: dict, database: str) -> None:
    port = env.get("SHARDGATE_PORT")
    print(f"shardgate demo is running (state and logs in {demo_dir}):")
    print(f'  psql "host=127.0.0.1 port={port} dbname={database} user=postgres password=postgres"')
    if env.get("SHARDGATE_METRICS_PORT") not in (None, "0"):
        print(f"  curl http://127.0.0.1:{env['SHARDGATE_METRICS_PORT']}/metrics")
    print(f"  shard ports: {demo_dir / 'cluster.env'}   shardgate log: {demo_dir / 'shardgate.log'}")
    print("  stop it with: make down")


def cmd_up(args) -> int:
    demo_dir = Path(os.path.abspath(args.dir))
    state = load_state(demo_dir)
    if state:
        up, down = state_running(demo_dir)
        if up and not down:
            print("the demo is already running")
            _print_connect(demo_dir, state.get("env", {}), state.get("database", "app"))
            return 0
        if up:
            print(f"the demo is partly running ({', '.join(up)} up, {', '.join(down)} down); restarting it")
            stop_from_state(demo_dir)

    if not args.no_shardgate and not os.access(args.bin, os.X_OK):
        print(f"pgcluster: shardgate binary {args.bin} not found (run `make build`)", file=sys.stderr)
        return 1
    if args.config:
        if not Path(args.config).exists():
            print(f"pgcluster: config {args.config} not found", file=sys.stderr)
            return 2
        template_text = Path(args.config).read_text()
    else:
        template_text = EXAMPLE_CONFIG
    try:
        cfg = tomllib.loads(template_text)
    except tomllib.TOMLDecodeError as e:
        print(f"pgcluster: {args.config or 'example config'}: {e}", file=sys.stderr)
        return 2
    general = cfg.get("general", {})
    dbs = cfg.get("databases", [])
    if not dbs or not dbs[0].get("shards"):
        print("pgcluster: the config has no [[databases]] with [[databases.shards]]", file=sys.stderr)
        return 2
    if len(dbs) > 1:
        print("pgcluster: only the first [[databases]] gets local servers", file=sys.stderr)
    db = dbs[0]
    shards = db["shards"]

    sg_port = int(general.get("port", 6432))
    if not port_is_free(sg_port, HOST):
        print(f"pgcluster: port {sg_port} (shardgate) is busy; stop what listens there "
              f"(`ss -ltnp 'sport = :{sg_port}'`) and run `make up` again", file=sys.stderr)
        return 1
    mapping: dict[int, int] = {}

    def pick(port: int) -> int:
        new = port if port_is_free(port) and port not in mapping.values() else free_port()
        if new != port:
            print(f"pgcluster: port {port} is busy, using {new}")
        mapping[port] = new
        return new

    metrics = int(general.get("metrics_port", 0))
    if metrics:
        metrics = pick(metrics)
    server_ports = {}
    for i, sh in enumerate(shards):
        server_ports[f"shard{i}-primary"] = pick(int(sh["primary"].get("port", 5432)))
        for j, rep in enumerate(sh.get("replicas", [])):
            server_ports[f"shard{i}-replica{'' if j == 0 else j}"] = pick(int(rep.get("port", 5432)))

    # Roles on the shards: the config's users (same passwords and methods) and the login shardgate uses.
    users = {u["name"]: dict(u) for u in DEFAULT_USERS}
    for u in cfg.get("users", []):
        users[u["name"]] = {"name": u["name"], "password": u.get("password"),
                            "auth_method": u.get("auth_method", "scram-sha-256")}
    login = shards[0]["primary"]
    if login.get("user", "postgres") not in users:
        users[login["user"]] = {"name": login["user"], "password": login.get("password"),
                                "auth_method": "scram-sha-256"}

    cluster = Cluster(demo_dir, num_shards=len(shards), replicas_per_shard=[len(s.get("replicas", [])) for s in shards],
                      shardgate_bin=args.bin, shardgate_port=sg_port, metrics_port=metrics,
                      users=list(users.values()), database=shards[0]["primary"].get("database", db["name"]),
                      with_shardgate=False, server_ports=server_ports,
                      shard_names=[s.get("name", f"shard{i}") for i, s in enumerate(shards)],
                      fix_permissions=True, reuse_data=True)
    print(f"starting {len(shards)} shards in {demo_dir} ...")
    try:
        cluster.start()
        # The demo's tables (conf/demo.toml declares how they are sharded) exist on every shard.
        schema = Path(__file__).resolve().parents[2] / "docker" / "initdb" / "02-schema.sql"
        if schema.exists():
            sql = schema.read_text().replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")
            for shard in cluster.shards:
                shard.primary.psql(sql, dbname=db["name"])
        config_text = rewrite_ports(template_text, {o: n for o, n in mapping.items() if o != n})
        if not args.no_shardgate:
            cluster.write_config(config_text)
            check = subprocess.run([args.bin, "--check-config", cluster.config_path], capture_output=True, text=True,
                                   stdin=subprocess.DEVNULL, timeout=30)
            if check.returncode != 0:
                raise HarnessError(f"{args.bin} --check-config {cluster.config_path} failed "
                                   f"(exit {check.returncode}):\n{check.stderr}{check.stdout}")
            cluster.start_shardgate(config_text)
        else:
            cluster.write_config(config_text)
    except (HarnessError, OSError, subprocess.SubprocessError) as e:
        print(f"pgcluster: the demo did not start: {e}", file=sys.stderr)
        cluster.stop()
        return 1
    env = dict(ln.split("=", 1) for ln in cluster.env_lines().splitlines())
    (demo_dir / "cluster.env").write_text("".join(f"{k}={env.get(k, '')}\n" for k in DEMO_ENV_VARS))
    cluster.detach()
    _print_connect(demo_dir, env, db["name"])
    return 0


def cmd_down(args) -> int:
    demo_dir = Path(os.path.abspath(args.dir))
    stopped = stop_from_state(demo_dir)
    up, _ = state_running(demo_dir)
    if up:
        print(f"pgcluster: still running after stop: {', '.join(up)}", file=sys.stderr)
        return 1
    print(f"demo stopped ({', '.join(stopped)})" if stopped else "the demo was not running")
    return 0


def cmd_status(args) -> int:
    demo_dir = Path(os.path.abspath(args.dir))
    up, down = state_running(demo_dir)
    for name in up:
        print(f"{name}: running")
    for name in down:
        print(f"{name}: stopped")
    return 0 if up and not down else 3


def cmd_reap(args) -> int:
    for item in reap_stale(args.pattern):
        print(f"stopped {item}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the demo cluster and shardgate, detached")
    up.add_argument("--dir", default=str(REPO_ROOT / "build" / "demo"))
    up.add_argument("--bin", default=str(REPO_ROOT / "build" / "shardgate"))
    up.add_argument("--config", help="shardgate config to start from (default: the built-in example)")
    up.add_argument("--no-shardgate", action="store_true", help="start only the Postgres servers")
    down = sub.add_parser("down", help="stop the demo")
    down.add_argument("--dir", default=str(REPO_ROOT / "build" / "demo"))
    st = sub.add_parser("status", help="show what runs (exit 0 = everything up)")
    st.add_argument("--dir", default=str(REPO_ROOT / "build" / "demo"))
    reap = sub.add_parser("reap", help="stop test clusters whose test process died")
    reap.add_argument("pattern", help="glob of cluster root directories, e.g. '/tmp/shardgate-it-*'")
    args = ap.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "reap": cmd_reap}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
