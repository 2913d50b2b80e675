"""Pass-through benchmark: pgbench -S against Postgres directly, PgBouncer and shardgate, side by side.

Run it through tests/bench/passthrough.sh (which makes the work directory and cleans up). Settings come
from the environment:
  BENCH_SECONDS (10)  seconds per pgbench run        BENCH_RUNS (5)      runs per (mode, clients, target)
  BENCH_CLIENTS ("1 8 32")                            BENCH_MODES ("simple extended prepared")
  BENCH_SCALE (10)    pgbench -i scale               BENCH_POOL_SIZE (20) pool size of both proxies
  BENCH_THREADS (2)   pgbench -j (at most the client count)
  BENCH_SERVER_SOCKET ("tcp") how both proxies reach Postgres: "tcp" (loopback) or "unix" (its socket)
Progress goes to stderr; stdout gets the report, whose last lines are one
  BENCH name=<mode>_c<clients> direct=.. pgbouncer=.. shardgate=.. ratio_pgbouncer=.. ratio_direct=..
        pgbouncer_cpu_us=.. shardgate_cpu_us=..
per mode and client count (ratios are shardgate's TPS over the peer's; cpu_us is the proxy's own
utime+stime per transaction, in microseconds).
"""

from __future__ import annotations

import os
import re
import subprocess

import benchlib
from benchlib import (BenchError, Cell, PgBouncer, Target, fmt, loadavg, log, median, paired_ratios, ratio, run_one,
                      shardgate_workers, spread)

MODES = ("simple", "extended", "prepared")
TARGETS = ("direct", "pgbouncer", "shardgate")


def pgbouncer_version() -> str:
    try:
        out = subprocess.run([benchlib.PGBOUNCER_BIN, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    m = re.search(r"PgBouncer (\S+)", out)
    return m.group(1) if m else "?"


def main() -> int:
    benchlib.exit_on_signals()
    seconds = benchlib.env_int("BENCH_SECONDS", 10)
    runs = benchlib.env_int("BENCH_RUNS", 5)
    clients = [int(c) for c in benchlib.env_list("BENCH_CLIENTS", ["1", "8", "32"])]
    modes = benchlib.env_list("BENCH_MODES", list(MODES))
    scale = benchlib.env_int("BENCH_SCALE", 10)
    pool = benchlib.env_int("BENCH_POOL_SIZE", 20)
    threads = benchlib.env_int("BENCH_THREADS", 2)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise BenchError(f"BENCH_MODES: unknown mode(s) {bad}; use {' '.join(MODES)}")
    server_socket = os.environ.get("BENCH_SERVER_SOCKET", "tcp")
    if server_socket not in ("tcp", "unix"):
        raise BenchError(f"BENCH_SERVER_SOCKET: {server_socket!r}; use tcp or unix")
    unix = server_socket == "unix"
    # Session pooling gives each client a server for its whole session, so the session-mode PgBouncer
    # needs one per client or the clients past the pool size would wait forever.
    session_pool = max(pool, max(clients))

    # One worker thread by default, like PgBouncer: on this 2-core machine Postgres and pgbench need
    # the other core, and a second worker costs more in context switches than it gains.
    # BENCH_SHARDGATE_WORKERS=0 runs one worker per core (shardgate's own default).
    sg_workers = benchlib.env_int("BENCH_SHARDGATE_WORKERS", 1, minimum=0)
    wd = benchlib.work_dir()
    cluster = benchlib.make_cluster(
        wd / "cluster",
        users=[{"name": benchlib.SUPERUSER, "password": benchlib.SUPERPASS, "auth_method": "scram-sha-256",
                "admin": True}],
        general={"pool_mode": "transaction", "default_pool_size": pool, "workers": sg_workers},
        unix_sockets=unix)
    bouncers: dict[str, PgBouncer] = {}
    try:
        log(f"starting Postgres in {wd / 'cluster'}")
        cluster.start()
        pg = cluster.shards[0].primary
        max_conn = pg.psql("SHOW max_connections", dbname="postgres")
        benchlib.pgbench_init(pg.port, scale)

        def start_shardgate() -> None:
            cluster.start_shardgate()
            benchlib.record_pid(cluster.shardgate.pid, "shardgate")
            log(f"shardgate pid {cluster.shardgate.pid} on port {cluster.shardgate.port} "
                f"(pool_mode=transaction, default_pool_size={pool}, workers={sg_workers or 'one per core'})")

        start_shardgate()
        users = {benchlib.SUPERUSER: benchlib.SUPERPASS}
        pg_host = pg.socket_dir if unix else benchlib.HOST
        if not pg_host:
            raise BenchError(f"BENCH_SERVER_SOCKET=unix: {pg.datadir} is too long for a socket path")
        bouncers["transaction"] = PgBouncer(wd, "pgbouncer-transaction", pg.port, pool_mode="transaction",
                                            pool_size=pool, auth_type="scram-sha-256", users=users,
                                            pg_host=pg_host)
        if "prepared" in modes:
            bouncers["session"] = PgBouncer(wd, "pgbouncer-session", pg.port, pool_mode="session",
                                            pool_size=session_pool, auth_type="scram-sha-256", users=users,
                                            pg_host=pg_host)
        for b in bouncers.values():
            b.start()

        def bouncer_for(mode: str) -> PgBouncer:
            # PgBouncer 1.18 cannot keep prepared statements in transaction mode.
            return bouncers["session"] if mode == "prepared" else bouncers["transaction"]

        def targets_for(mode: str) -> dict[str, Target]:
            b = bouncer_for(mode)
            return {
                "direct": Target("direct", lambda: pg.port, lambda: None, pg.is_running),
                "pgbouncer": Target("pgbouncer", lambda: b.port, lambda: b.pid, b.is_running, b.start),
                "shardgate": Target("shardgate", lambda: cluster.shardgate.port, lambda: cluster.shardgate.pid,
                                    lambda: cluster.shardgate.is_running(), start_shardgate),
            }

        # Warm-up: every proxy opens its server connections and every cache fills before we measure.
        log("warm-up: 2 s of pgbench -S per target and mode")
        for mode in modes:
            for t in targets_for(mode).values():
                if t.name == "direct" and mode != modes[0]:
                    continue
                r = benchlib.pgbench(t.port(), "-n", "-S", "-M", mode, "-c", str(min(8, max(clients))), "-j",
                                     str(min(threads, max(clients))), "-T", "2", timeout=120)
                if not r.ok:
                    log(f"warm-up against {t.name} ({mode}) failed: exit {r.returncode}\n{r.stderr[-2000:]}")

        load_before = loadavg()
        cells: dict[tuple[str, int, str], Cell] = {(m, c, t): Cell() for m in modes for c in clients for t in TARGETS}
        total = runs * len(modes) * len(clients) * len(TARGETS)
        done = 0
        for run in range(runs):
            # The targets take turns, in an order that rotates each run, so that drift (other load,
            # table caching, CPU frequency) falls on all of them alike.
            order = TARGETS[run % 3:] + TARGETS[:run % 3]
            for mode in modes:
                targets = targets_for(mode)
                for c in clients:
                    for name in order:
                        done += 1
                        log(f"run {run + 1}/{runs} [{done}/{total}]")
                        run_one(targets[name], mode, c, seconds, threads, cells[(mode, c, name)], round_number=run)

        # ---- report -------------------------------------------------------------------------------
        workers = shardgate_workers(cluster.shardgate.logfile)
        out = []
        out.append(f"== shardgate pass-through benchmark: pgbench -S, -j {threads}, {runs} runs x {seconds} s "
                   f"per point, medians ==")
        out.append(f"Postgres 15: one server (port {pg.port}, max_connections={max_conn}), pgbench -i -s {scale}, "
                   f"loopback TCP, {os.cpu_count()} cores shared by pgbench, Postgres and the proxy")
        out.append(f"proxies to Postgres: {'its Unix socket' if unix else 'loopback TCP'} (BENCH_SERVER_SOCKET)")
        out.append(f"PgBouncer {pgbouncer_version()}: pool_mode=transaction, default_pool_size={pool}, "
                   f"auth_type=scram-sha-256 (auth_file)")
        if "prepared" in modes:
            out.append(f"note: -M prepared runs against a second PgBouncer in SESSION mode "
                       f"(default_pool_size={session_pool}): PgBouncer {pgbouncer_version()} cannot keep prepared "
                       f"statements in transaction mode, and session mode needs one server per client")
        out.append(f"shardgate: pool_mode=transaction, default_pool_size={pool}, workers={workers} "
                   f"(BENCH_SHARDGATE_WORKERS; 0 = one per core), auth scram-sha-256")
        out.append("cpu_us = the proxy's own utime+stime (/proc/<pid>/stat) over the run / transactions")
        out.append(f"load average before / after the runs: {load_before} / {loadavg()} (other load skews the figures)")
        out.append("")
        head = (f"{'mode':9}{'clients':>8}{'direct':>11}{'pgbouncer':>11}{'shardgate':>11}{'sg/pgb':>8}"
                f"{'sg/direct':>10}{'pgb_cpu_us':>11}{'sg_cpu_us':>10}")
        out.append(head)
        bench_lines, floors, anomalies = [], [], []
        for mode in modes:
            for c in clients:
                d = median(cells[(mode, c, "direct")].tps)
                p = median(cells[(mode, c, "pgbouncer")].tps)
                s = median(cells[(mode, c, "shardgate")].tps)
                pc = median(cells[(mode, c, "pgbouncer")].cpu_us)
                sc = median(cells[(mode, c, "shardgate")].cpu_us)
                rp, rd = ratio(s, p), ratio(s, d)
                sg_cell, pgb_cell = cells[(mode, c, "shardgate")], cells[(mode, c, "pgbouncer")]
                tps_rounds = paired_ratios(sg_cell, pgb_cell)
                cpu_rounds = paired_ratios(sg_cell, pgb_cell, "cpu_us")
                out.append(f"{mode:9}{c:>8}{fmt(d, 1):>11}{fmt(p, 1):>11}{fmt(s, 1):>11}{fmt(rp, 3):>8}"
                           f"{fmt(rd, 3):>10}{fmt(pc, 2):>11}{fmt(sc, 2):>10}")
                bench_lines.append(f"BENCH name={mode}_c{c} direct={fmt(d, 1)} pgbouncer={fmt(p, 1)} "
                                   f"shardgate={fmt(s, 1)} ratio_pgbouncer={fmt(rp, 3)} ratio_direct={fmt(rd, 3)} "
                                   f"pgbouncer_cpu_us={fmt(pc, 2)} shardgate_cpu_us={fmt(sc, 2)} "
                                   f"ratio_pgbouncer_by_round={fmt(median(tps_rounds), 3)} "
                                   f"cpu_ratio_by_round={fmt(median(cpu_rounds), 3)}")
                if mode in ("simple", "extended") and c in (8, 32):
                    tps_ok = rp is not None and rp >= 1.0
                    cpu_ok = sc is not None and pc is not None and sc <= pc
                    floors.append(f"  {mode}_c{c}: TPS shardgate/pgbouncer {fmt(rp, 3)} (floor 1.0) "
                                  f"{'MET' if tps_ok else 'MISSED'}; CPU/tx {fmt(sc, 2)} us vs pgbouncer "
                                  f"{fmt(pc, 2)} us {'MET' if cpu_ok else 'MISSED'}")
                    floors.append(f"    round by round, shardgate/pgbouncer: TPS {spread(tps_rounds)}, "
                                  f"CPU/tx {spread(cpu_rounds)}")
                for t in TARGETS:
                    for f in cells[(mode, c, t)].failures:
                        anomalies.append(f"  {t} {mode}_c{c}: {f}")
        out.append("")
        out.append("floors (reported, not asserted): shardgate TPS >= 1.0x PgBouncer and CPU/tx <= PgBouncer's, "
                   "simple and extended at c=8 and c=32")
        out += floors or ["  (no floor applies to the modes and client counts run)"]
        sg_log = benchlib.log_anomalies(cluster.shardgate.logfile)
        pgb_log = [ln for b in bouncers.values() for ln in benchlib.log_anomalies(b.logfile)]
        out.append("anomalies:" + ("" if anomalies or sg_log or pgb_log else " none"))
        out += anomalies
        out += [f"  shardgate log: {ln}" for ln in sg_log]
        out += [f"  pgbouncer log: {ln}" for ln in pgb_log]
        out.append("")
        out += bench_lines
        print("\n".join(out), flush=True)
        return 0
    finally:
        log("stopping PgBouncer, shardgate and Postgres")
        for b in bouncers.values():
            try:
                b.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                log(f"stopping {b.name} failed: {e}")
        cluster.stop()


if __name__ == "__main__":
    benchlib.run_main("passthrough", main)
