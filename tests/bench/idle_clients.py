"""Idle clients benchmark: memory per idle authenticated client, and service to others while they idle.

Run it through tests/bench/idle_clients (which raises the fd limit, makes the work directory and cleans
up). Opens IDLE_CLIENTS (10000) connections to shardgate with asyncio raw sockets, each doing the
startup and trust authentication up to ReadyForQuery, then measures shardgate's VmRSS growth per client
and runs pgbench -S -T 5 -c 4 through it while they stay open. The same for PgBouncer (IDLE_PGBOUNCER=0
skips it). The last line of stdout is
  BENCH name=idle_clients clients=<n> shardgate_rss_per_client_bytes=<n> pgbench_tps_while_idle=<tps>
Environment: IDLE_CLIENTS (10000), IDLE_CONCURRENCY (200 logins in flight), IDLE_PGBENCH_SECONDS (5),
BENCH_SCALE (1), IDLE_PGBOUNCER (1), IDLE_TLS (0; 1: every idle client uses TLS, with a self-signed
certificate made for the run, against both proxies, and the BENCH line is named idle_clients_tls),
SHARDGATE_BIN.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import struct
import time
from dataclasses import dataclass, field

import benchlib
from benchlib import BenchError, PgBouncer, log

IDLE_USER = "bench_idle"  # auth_method "trust": logging in costs no hashing
FLOOR_BYTES = 16 * 1024
GOAL_BYTES = 4 * 1024


def startup_message(user: str, database: str) -> bytes:
    params = {"user": user, "database": database, "application_name": "idle_clients"}
    body = struct.pack("!i", 3 << 16) + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                                  for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


class LoginError(Exception):
    pass


async def login(host: str, port: int, user: str, database: str, timeout: float,
                tls: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects (with TLS: SSLRequest, then the handshake) and reads up to ReadyForQuery; any
    password request or ErrorResponse is a failure."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=8192), timeout)
    try:
        if tls is not None:
            writer.write(struct.pack("!ii", 8, 80877103))  # SSLRequest
            answer = await asyncio.wait_for(reader.readexactly(1), timeout)
            if answer != b"S":
                raise LoginError(f"SSLRequest answered {answer!r}, not S")
            await asyncio.wait_for(writer.start_tls(tls, server_hostname=host), timeout)
        writer.write(startup_message(user, database))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            header = await asyncio.wait_for(reader.readexactly(5), max(left, 0.001))
            kind, length = header[:1], struct.unpack("!i", header[1:])[0]
            if length < 4 or length > 1 << 20:
                raise LoginError(f"bad message length {length} for {kind!r}")
            payload = await asyncio.wait_for(reader.readexactly(length - 4), max(deadline - time.monotonic(), 0.001))
            if kind == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code != 0:
                    raise LoginError(f"server asked for authentication (code {code}); expected trust")
            elif kind == b"E":
                fields = {f[:1]: f[1:].decode(errors="replace") for f in payload.split(b"\0") if f}
                raise LoginError(f"ErrorResponse {fields.get(b'C', '')}: {fields.get(b'M', '')}")
            elif kind == b"Z":
                return reader, writer
            # ParameterStatus, BackendKeyData, NoticeResponse: nothing to do.
    except BaseException:
        writer.close()
        raise


@dataclass
class IdleResult:
    target: str
    clients: int
    opened: int = 0
    rss_before: int = 0
    rss_after: int = 0
    still_open: int = 0
    tps: float | None = None
    pgbench_ok: bool = False
    login_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def per_client(self) -> int | None:
        return (self.rss_after - self.rss_before) // self.opened if self.opened else None


async def hold_idle_clients(target: str, port: int, pid: int, n: int, concurrency: int,
                            pgbench_seconds: int, tls: ssl.SSLContext | None) -> IdleResult:
    res = IdleResult(target, n)
    # One login first, so that the pool of the idle user exists before the "before" reading.
    r, w = await login(benchlib.HOST, port, IDLE_USER, benchlib.DATABASE, 30, tls)
    w.write(b"X\0\0\0\4")
    w.close()
    await asyncio.sleep(0.5)
    res.rss_before = benchlib.vm_rss_bytes(pid)

    sem = asyncio.Semaphore(concurrency)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one() -> None:
        async with sem:
            try:
                conns.append(await login(benchlib.HOST, port, IDLE_USER, benchlib.DATABASE, 120, tls))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, LoginError, ssl.SSLError) as e:
                key = f"{type(e).__name__}: {e}"[:200]
                res.errors[key] = res.errors.get(key, 0) + 1

    log(f"{target}: opening {n} idle client connections ({concurrency} logins in flight)")
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(n)]
    for i, t in enumerate(asyncio.as_completed(tasks), 1):
        await t
        if i % 2000 == 0:
            log(f"{target}: {i}/{n} logins done ({len(conns)} ready)")
    res.login_seconds = time.monotonic() - t0
    res.opened = len(conns)
    log(f"{target}: {res.opened} clients authenticated (ReadyForQuery) in {res.login_seconds:.1f} s"
        + (f"; failures: {res.errors}" if res.errors else ""))
    await asyncio.sleep(2)  # let the proxy settle (freed login buffers, allocator)
    res.rss_after = benchlib.vm_rss_bytes(pid)
    log(f"{target}: VmRSS {res.rss_before // 1024} KiB -> {res.rss_after // 1024} KiB")

    log(f"{target}: pgbench -S -T {pgbench_seconds} -c 4 -j 2 while they are open")
    pb = await asyncio.to_thread(benchlib.pgbench, port, "-n", "-S", "-T", str(pgbench_seconds), "-c", "4", "-j", "2",
                                 timeout=pgbench_seconds + 120)
    res.tps = pb.tps
    res.pgbench_ok = pb.ok
    if not pb.ok:
        log(f"{target}: pgbench failed (exit {pb.returncode}, {pb.failed} failed)\n{pb.stdout}\n{pb.stderr}")
    await asyncio.sleep(0.2)
    # A connection the proxy closed (or sent anything to) while idle has EOF or data waiting.
    res.still_open = sum(1 for rd, _ in conns if not rd.at_eof() and not rd._buffer)  # noqa: SLF001
    log(f"{target}: {res.still_open}/{res.opened} idle clients still open and silent")

    for _, wr in conns:
        try:
            wr.write(b"X\0\0\0\4")
            wr.close()
        except (OSError, RuntimeError):
            pass
    await asyncio.gather(*(wr.wait_closed() for _, wr in conns), return_exceptions=True)
    return res


def measure(target: str, port: int, pid: int, n: int, concurrency: int, pgbench_seconds: int,
            tls: ssl.SSLContext | None = None) -> IdleResult:
    # A short warm-up through the proxy: its pools and caches exist before the "before" reading.
    benchlib.pgbench(port, "-n", "-S", "-T", "2", "-c", "4", "-j", "2", timeout=120)
    return asyncio.run(hold_idle_clients(target, port, pid, n, concurrency, pgbench_seconds, tls))


def fmt_tps(tps: float | None) -> str:
    return "NA" if tps is None else f"{tps:.1f}"


def describe(res: IdleResult, floors: bool) -> list[str]:
    pc = res.per_client
    lines = [f"{res.target}: {res.opened}/{res.clients} idle clients authenticated in {res.login_seconds:.1f} s; "
             f"VmRSS {res.rss_before / 1048576:.1f} MiB -> {res.rss_after / 1048576:.1f} MiB = "
             f"{pc if pc is not None else 'NA'} bytes per idle client; "
             f"pgbench -S -c 4 while idle: {fmt_tps(res.tps)} tps"
             f"{'' if res.pgbench_ok else ' (FAILED)'}; {res.still_open} idle clients still open afterwards"]
    if floors and pc is not None:
        verdict = "GOAL MET" if pc <= GOAL_BYTES else ("floor met, goal missed" if pc <= FLOOR_BYTES else "FLOOR MISSED")
        lines.append(f"  floor {FLOOR_BYTES} bytes, goal {GOAL_BYTES} bytes per idle client: {verdict}")
    for err, count in res.errors.items():
        lines.append(f"  login failure x{count}: {err}")
    return lines


def main() -> int:
    benchlib.exit_on_signals()
    n = benchlib.env_int("IDLE_CLIENTS", 10000)
    concurrency = benchlib.env_int("IDLE_CONCURRENCY", 200)
    pgbench_seconds = benchlib.env_int("IDLE_PGBENCH_SECONDS", 5)
    scale = benchlib.env_int("BENCH_SCALE", 1)
    with_pgbouncer = benchlib.env_int("IDLE_PGBOUNCER", 1, minimum=0) != 0
    use_tls = benchlib.env_int("IDLE_TLS", 0, minimum=0) != 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        raise BenchError(f"the open-files limit is {soft} (hard {hard}); {n} clients need {n + 200}: "
                         f"run through tests/bench/idle_clients (it raises the limit) or lower IDLE_CLIENTS")
    max_conn = n + 1000

    wd = benchlib.work_dir()
    tls = benchlib.pgcluster.unverified_tls_context() if use_tls else None
    sg_tls, pgb_tls = {}, {}
    if use_tls:
        cert, key = (str(f) for f in benchlib.pgcluster.make_certificate(wd, "127.0.0.1", san="IP:127.0.0.1",
                                                                          for_postgres=True))
        sg_tls = {"client_tls_sslmode": "prefer", "client_tls_cert_file": cert, "client_tls_key_file": key}
        pgb_tls = {"client_tls_sslmode": "allow", "client_tls_cert_file": cert, "client_tls_key_file": key}
    cluster = benchlib.make_cluster(
        wd / "cluster",
        users=[{"name": benchlib.SUPERUSER, "password": benchlib.SUPERPASS, "auth_method": "scram-sha-256",
                "admin": True},
               {"name": IDLE_USER, "password": None, "auth_method": "trust"}],
        general={"pool_mode": "transaction", "default_pool_size": 20, "max_client_conn": max_conn} | sg_tls)
    bouncer: PgBouncer | None = None
    try:
        log(f"starting Postgres in {wd / 'cluster'}")
        cluster.start()
        pg = cluster.shards[0].primary
        benchlib.pgbench_init(pg.port, scale)
        cluster.start_shardgate()
        sg = cluster.shardgate
        benchlib.record_pid(sg.pid, "shardgate")
        log(f"shardgate pid {sg.pid} on port {sg.port} (pool_mode=transaction, max_client_conn={max_conn})")
        sg_res = measure("shardgate", sg.port, sg.pid, n, concurrency, pgbench_seconds, tls)
        sg_alive = sg.is_running()

        pgb_res = None
        if with_pgbouncer:
            # Trust for everyone (PgBouncer's auth_type is global); it logs in to Postgres with the
            # auth_file passwords.
            bouncer = PgBouncer(wd, "pgbouncer-idle", pg.port, pool_mode="transaction", pool_size=20,
                                auth_type="trust", max_client_conn=max_conn,
                                users={benchlib.SUPERUSER: benchlib.SUPERPASS, IDLE_USER: None},
                                extra_settings=pgb_tls)
            bouncer.start()
            pgb_res = measure("pgbouncer", bouncer.port, bouncer.pid, n, concurrency, pgbench_seconds, tls)

        out = [f"== idle clients: {n} authenticated idle connections (trust user, asyncio raw sockets"
               f"{', TLS 1.3 with a self-signed certificate' if use_tls else ''}), "
               f"transaction pooling, pool size 20 ==",
               "RSS per idle client = (VmRSS with the clients open - VmRSS before) / clients, from /proc/<pid>/status"]
        out += describe(sg_res, floors=not use_tls)  # the floors are for plain idle clients
        if not sg_alive:
            out.append("  shardgate was NOT running after the test")
        if pgb_res is not None:
            out += describe(pgb_res, floors=False)
            out.append("  (PgBouncer documents about 2 kB per idle client)")
        anomalies = benchlib.log_anomalies(sg.logfile)
        out.append("shardgate log anomalies:" + (" none" if not anomalies else ""))
        out += [f"  {ln}" for ln in anomalies]
        if pgb_res is not None:
            out.append(f"BENCH name=idle_clients{'_tls' if use_tls else ''}_pgbouncer clients={n} "
                       f"pgbouncer_rss_per_client_bytes="
                       f"{pgb_res.per_client if pgb_res.per_client is not None else 'NA'} "
                       f"pgbench_tps_while_idle={fmt_tps(pgb_res.tps)}")
        out.append(f"BENCH name=idle_clients{'_tls' if use_tls else ''} clients={n} shardgate_rss_per_client_bytes="
                   f"{sg_res.per_client if sg_res.per_client is not None else 'NA'} "
                   f"pgbench_tps_while_idle={fmt_tps(sg_res.tps if sg_res.pgbench_ok else 0.0)}")
        print("\n".join(out), flush=True)
        ok = sg_res.opened == n and sg_res.pgbench_ok and sg_res.still_open == n and sg_alive
        if not ok:
            log("shardgate did not hold every idle client or did not keep serving pgbench (see above)")
        return 0
    finally:
        log("stopping PgBouncer, shardgate and Postgres")
        if bouncer is not None:
            bouncer.stop()
        cluster.stop()


if __name__ == "__main__":
    benchlib.run_main("idle_clients", main)
