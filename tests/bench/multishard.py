"""Multi-shard read benchmark: fan-out aggregate, merged ORDER BY ... LIMIT and a streamed full merge sort
through shardgate over two hash shards, against one plain Postgres holding the same rows.

Run it through tests/bench/multishard.sh (which makes the work directory and cleans up). Data:
pgbench -i -s BENCH_SCALE on three Postgres 15 servers, abalance set to (aid * 7919) % 20001 - 9000
(pgbench leaves it 0) and the table compacted (VACUUM FULL, ANALYZE); on the two shards each keeps only the
pgbench_accounts rows that Postgres's own satisfies_hash_partition (MODULUS 2) puts there (as routed.py
does), and shardgate has pgbench_accounts hash-sharded on aid. Queries, each timed from the Query message
to ReadyForQuery on an open connection (raw wire protocol, tests/integration/pgwire.py), median of
BENCH_RUNS runs after one warm-up run whose results are checked against the plain Postgres:
  aggregate    SELECT count(*), sum(abalance), avg(abalance) FROM pgbench_accounts
               Postgres with max_parallel_workers_per_gather = 0 (serial), Postgres with its default (2),
               shardgate (the shards keep their default: 2 each), and, for reference, shardgate with
               max_parallel_workers_per_gather = 0 set in its session (so on every shard)
  order_limit  SELECT * FROM pgbench_accounts ORDER BY aid DESC LIMIT 100
               each run is the median of BENCH_LIMIT_REPEAT (50) executions (one takes under a
               millisecond, so scheduling noise from other load on the machine would swamp a mean)
  order_full   SELECT * FROM pgbench_accounts ORDER BY aid, read to the end by a client that streams the
               bytes (recv_into a 1 MiB buffer; no per-row work, so the client is cheap); shardgate's
               VmRSS is sampled every 10 ms meanwhile (peak reported) and VmHWM read after the runs
Settings (environment): BENCH_SCALE (20), BENCH_RUNS (3), BENCH_LIMIT_REPEAT (50), BENCH_SHARDGATE_WORKERS
(1; 0 = one per core).
Progress goes to stderr; stdout gets the report, whose last lines are
  BENCH name=multishard_aggregate postgres_serial_s=.. postgres_parallel_s=.. shardgate_s=.. ratio_serial=..
        ratio_parallel=.. shardgate_serial_shards_s=.. ratio_parallel_shards_vs_serial=..
  BENCH name=multishard_order_limit postgres_s=.. shardgate_s=.. ratio=..
  BENCH name=multishard_order_full rows=.. postgres_s=.. shardgate_s=.. ratio=.. shardgate_peak_rss_mib=..
        shardgate_hwm_mib=.. shardgate_cpu_s=..
Ratios are shardgate's time over Postgres's (lower is better). Floors (reported, not asserted):
aggregate ratio_serial <= 0.65 (shardgate_serial_shards_s / postgres_serial_s: no parallel workers on either
side; ratio_parallel is shardgate_s / postgres_parallel_s, both with the default workers); order_full shardgate_peak_rss_mib < 64. Exit status 1 when an answer through
shardgate differs from the plain Postgres's (listed under "problems").
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys
import threading
import time

import benchlib
from benchlib import BenchError, fmt, loadavg, log, median, ratio, shardgate_workers
from routed import ROUTED_TOML, start_and_load

sys.path.insert(0, str(benchlib.REPO_ROOT / "tests" / "integration"))
import pgwire  # noqa: E402

AGGREGATE_SQL = "SELECT count(*), sum(abalance), avg(abalance) FROM pgbench_accounts"
ORDER_LIMIT_SQL = "SELECT * FROM pgbench_accounts ORDER BY aid DESC LIMIT 100"
ORDER_FULL_SQL = "SELECT * FROM pgbench_accounts ORDER BY aid"
BALANCE_SQL = "UPDATE pgbench_accounts SET abalance = (aid::bigint * 7919) % 20001 - 9000"
SERIAL_SQL = "SET max_parallel_workers_per_gather = 0"
AGGREGATE_FLOOR = 0.65
RSS_FLOOR_MIB = 64
QUERY_TIMEOUT = 900.0
READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery, before its transaction status byte


def connect(port: int) -> pgwire.PgWire:
    conn = pgwire.PgWire(benchlib.HOST, port, timeout=QUERY_TIMEOUT)
    conn.login(benchlib.SUPERUSER, benchlib.SUPERPASS, benchlib.DATABASE)
    return conn


def run_query(conn: pgwire.PgWire, sql: str) -> tuple[float, list[list[str | None]]]:
    """One simple-protocol query: (seconds from sending it to ReadyForQuery, its rows). Fails on an error."""
    start = time.perf_counter()
    msgs = conn.simple(sql)
    elapsed = time.perf_counter() - start
    errs = pgwire.errors(msgs)
    if errs:
        raise BenchError(f"{sql!r} failed: {errs[0]}")
    return elapsed, pgwire.data_rows(msgs)


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `interval` seconds until stop(); peak is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, benchlib.vm_rss_bytes(self.pid))
                self.samples += 1
            except (OSError, BenchError):
                return
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def vm_hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def stream_query(conn: pgwire.PgWire, sql: str, expected_rows: int,
                 digest: "hashlib._Hash | None" = None) -> tuple[float, int]:
    """Sends sql and reads its whole reply as raw bytes, as fast as the socket delivers them: the
    client does no per-row work, so it is not what limits the speed. Returns (seconds, bytes read).

    The reply must be RowDescription, DataRows, CommandComplete "SELECT expected_rows",
    ReadyForQuery: the end is recognised by those last two messages. With digest, every byte after
    the RowDescription (the rows in order, the tag, ReadyForQuery) is hashed, so two servers'
    answers can be compared exactly (RowDescription is left out: it names table OIDs)."""
    sock = conn.sock
    if conn.buf:
        raise BenchError(f"stream_query: {len(conn.buf)} unread bytes on the connection")
    tag = f"SELECT {expected_rows}".encode() + b"\0"
    tail_ok = b"C" + struct.pack("!i", len(tag) + 4) + tag + READY + b"I"
    keep = max(256, len(tail_ok))
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    sock.settimeout(QUERY_TIMEOUT)
    start = time.perf_counter()
    sock.sendall(pgwire.query(sql))
    # The first message must be the RowDescription (an error otherwise).
    head = bytearray()
    while len(head) < 5 or len(head) < 1 + struct.unpack_from("!i", head, 1)[0]:
        n = sock.recv_into(buf)
        if n == 0:
            raise BenchError(f"{sql!r}: connection closed before the RowDescription")
        head += view[:n]
    first_len = 1 + struct.unpack_from("!i", head, 1)[0]
    if head[:1] != b"T":
        conn.buf += head
        msgs = conn.recv_until(b"Z")
        errs = pgwire.errors(msgs)
        raise BenchError(f"{sql!r}: expected a RowDescription, got {pgwire.types(msgs)!r}"
                         + (f": {errs[0]}" if errs else ""))
    rest = bytes(head[first_len:])
    total = len(head)
    if digest is not None:
        digest.update(rest)
    tail = rest[-keep:]
    while not tail.endswith(tail_ok):
        if tail[-6:-1] == READY:
            # A ReadyForQuery-looking end of a read that is not our tag: an error ended the statement
            # (or, very unlikely, row bytes happened to end a read that way: then more bytes follow).
            sock.settimeout(2.0)
        try:
            n = sock.recv_into(buf)
        except socket.timeout:
            raise BenchError(f"{sql!r}: the reply did not end with {tail_ok!r}; its last bytes: {tail!r}") from None
        if n == 0:
            raise BenchError(f"{sql!r}: connection closed mid-result; last bytes: {tail!r}")
        sock.settimeout(QUERY_TIMEOUT)
        total += n
        chunk = view[:n]
        if digest is not None:
            digest.update(chunk)
        tail = (tail + bytes(chunk[-keep:]))[-keep:]
    return time.perf_counter() - start, total


def main() -> int:
    benchlib.exit_on_signals()
    scale = benchlib.env_int("BENCH_SCALE", 20)
    runs = benchlib.env_int("BENCH_RUNS", 3)
    limit_repeat = benchlib.env_int("BENCH_LIMIT_REPEAT", 50)
    sg_workers = benchlib.env_int("BENCH_SHARDGATE_WORKERS", 1, minimum=0)
    expected_rows = 100000 * scale

    wd = benchlib.work_dir()
    users = [{"name": benchlib.SUPERUSER, "password": benchlib.SUPERPASS, "auth_method": "scram-sha-256",
              "admin": True}]
    general = {"pool_mode": "transaction", "workers": sg_workers}
    single = benchlib.make_cluster(wd / "postgres", users=users, general=general)
    sharded = benchlib.make_cluster(wd / "sharded", users=users, general=general, num_shards=2,
                                    database_options={"default_shard": 0}, extra_toml=ROUTED_TOML)
    conns: list[pgwire.PgWire] = []
    try:
        def vary_balances(servers) -> None:
            # pgbench -i leaves every abalance 0: give them varied values (the same on every
            # server), so that the sum and avg checks mean something. The shards are then
            # compacted by keep_own_rows, the single server here.
            for server in servers:
                server.psql(BALANCE_SQL)
            servers[0].psql("VACUUM (FULL, ANALYZE) pgbench_accounts")

        pg = start_and_load(single, sharded, scale, vary_balances)
        sharded.start_shardgate()
        sg = sharded.shardgate
        benchlib.record_pid(sg.pid, "shardgate (sharded)")
        log(f"shardgate pid {sg.pid} on port {sg.port} (pool_mode=transaction, "
            f"workers={sg_workers or 'one per core'})")
        pg_settings = pg.psql("SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
                              "WHERE name IN ('max_parallel_workers_per_gather', 'max_parallel_workers', "
                              "'max_worker_processes', 'jit', 'shared_buffers', 'work_mem')")

        pg_serial, pg_parallel, sg_conn, sg_serial = (connect(p) for p in (pg.port, pg.port, sg.port, sg.port))
        conns += [pg_serial, pg_parallel, sg_conn, sg_serial]
        run_query(pg_serial, SERIAL_SQL)
        # Through shardgate the SET is session state, applied on each shard before each statement.
        run_query(sg_serial, SERIAL_SQL)
        workers_seen = {name: run_query(c, "SHOW max_parallel_workers_per_gather")[1][0][0]
                        for name, c in (("postgres_serial", pg_serial), ("postgres_parallel", pg_parallel),
                                        ("shardgate", sg_conn), ("shardgate_serial_shards", sg_serial))}
        log(f"max_parallel_workers_per_gather per connection: {workers_seen}")
        problems: list[str] = []
        load_before = loadavg()

        # ---- 1. aggregate ---------------------------------------------------------------------------
        agg_targets = {"postgres_serial": pg_serial, "postgres_parallel": pg_parallel, "shardgate": sg_conn,
                       "shardgate_serial_shards": sg_serial}
        agg_times: dict[str, list[float]] = {n: [] for n in agg_targets}
        log("aggregate: warm-up and check")
        answers = {n: run_query(c, AGGREGATE_SQL)[1] for n, c in agg_targets.items()}
        want = answers["postgres_serial"]
        log(f"aggregate: Postgres says {want}")
        if want != [[str(expected_rows), want[0][1], want[0][2]]]:
            problems.append(f"aggregate: Postgres's count is not {expected_rows}: {want}")
        for n, got in answers.items():
            if got != want:
                problems.append(f"aggregate: {n} answered {got}, Postgres {want}")
        names = list(agg_targets)
        for run in range(runs):
            for n in names[run % len(names):] + names[:run % len(names)]:
                t, _ = run_query(agg_targets[n], AGGREGATE_SQL)
                agg_times[n].append(t)
                log(f"  aggregate run {run + 1}/{runs} {n:24} {t:.3f} s")

        # ---- 2. ORDER BY aid DESC LIMIT 100 -------------------------------------------------------
        limit_targets = {"postgres": pg_parallel, "shardgate": sg_conn}
        limit_times: dict[str, list[float]] = {n: [] for n in limit_targets}
        log("order_limit: warm-up and check")
        answers = {n: run_query(c, ORDER_LIMIT_SQL)[1] for n, c in limit_targets.items()}
        want = answers["postgres"]
        top = [int(r[0]) for r in want]
        if top != list(range(expected_rows, expected_rows - 100, -1)):
            problems.append(f"order_limit: Postgres's aids are not {expected_rows} down: {top[:5]}...")
        if answers["shardgate"] != want:
            diff = next((i for i, (a, b) in enumerate(zip(answers["shardgate"], want)) if a != b), None)
            problems.append(f"order_limit: shardgate's {len(answers['shardgate'])} rows differ from Postgres's "
                            f"{len(want)} (first difference at row {diff})")
        names = list(limit_targets)
        for run in range(runs):
            for n in names[run % 2:] + names[:run % 2]:
                each = [run_query(limit_targets[n], ORDER_LIMIT_SQL)[0] for _ in range(limit_repeat)]
                limit_times[n].append(median(each))
                log(f"  order_limit run {run + 1}/{runs} {n:10} median {median(each) * 1000:.3f} ms, "
                    f"mean {sum(each) / limit_repeat * 1000:.3f} ms per query")

        # ---- 3. full ORDER BY aid, streamed -----------------------------------------------------------
        full_targets = {"postgres": pg_parallel, "shardgate": sg_conn}
        full_times: dict[str, list[float]] = {n: [] for n in full_targets}
        client_cpus: dict[str, list[float]] = {n: [] for n in full_targets}  # the reading client's own
        peaks: list[int] = []
        sg_cpu: list[float] = []
        rss_before = benchlib.vm_rss_bytes(sg.pid)
        log(f"order_full: warm-up and check (shardgate VmRSS before: {rss_before / 2**20:.1f} MiB)")
        digests = {}
        for n, c in full_targets.items():
            d = hashlib.sha1()
            t, nbytes = stream_query(c, ORDER_FULL_SQL, expected_rows, d)
            digests[n] = d.hexdigest()
            log(f"  order_full warm-up {n:10} {t:.3f} s, {nbytes / 2**20:.1f} MiB, sha1 {digests[n]}")
        if digests["shardgate"] != digests["postgres"]:
            problems.append("order_full: shardgate's rows differ from Postgres's (sha1 of the DataRows, tag and "
                            f"ReadyForQuery: {digests['shardgate']} vs {digests['postgres']})")
        names = list(full_targets)
        for run in range(runs):
            for n in names[run % 2:] + names[:run % 2]:
                sampler = None
                cpu_before = benchlib.cpu_ticks(sg.pid)
                if n == "shardgate":
                    sampler = RssSampler(sg.pid)
                    sampler.start()
                client_cpu = time.process_time()
                t, _ = stream_query(full_targets[n], ORDER_FULL_SQL, expected_rows)
                client_cpu = time.process_time() - client_cpu
                full_times[n].append(t)
                client_cpus[n].append(client_cpu)
                extra = f", client cpu {client_cpu:.2f} s"
                if sampler is not None:
                    peak = sampler.stop()
                    peaks.append(peak)
                    cpu = (benchlib.cpu_ticks(sg.pid) - cpu_before) / benchlib.CLK_TCK
                    sg_cpu.append(cpu)
                    extra += f", peak VmRSS {peak / 2**20:.1f} MiB ({sampler.samples} samples), cpu {cpu:.2f} s"
                log(f"  order_full run {run + 1}/{runs} {n:10} {t:.3f} s{extra}")
        hwm = vm_hwm_bytes(sg.pid)

        # ---- report -------------------------------------------------------------------------------------
        a = {n: median(v) for n, v in agg_times.items()}
        lim = {n: median(v) for n, v in limit_times.items()}
        full = {n: median(v) for n, v in full_times.items()}
        peak_mib = max(peaks) / 2**20 if peaks else None
        # Like for like: no parallel workers on either side (the shards' parallelism is the
        # sharding), then both with Postgres's default parallel workers; and, for reference, the
        # shards with parallel workers against one serial Postgres (on 2 cores the shards' workers
        # contend with each other).
        r_serial = ratio(a["shardgate_serial_shards"], a["postgres_serial"])
        r_parallel = ratio(a["shardgate"], a["postgres_parallel"])
        r_mixed = ratio(a["shardgate"], a["postgres_serial"])
        out = [f"== shardgate multi-shard read benchmark: pgbench_accounts at scale {scale} ({expected_rows} rows), "
               f"{runs} runs after a warm-up, medians, seconds ==",
               "postgres: one Postgres 15 server with every row; shardgate: two Postgres 15 shards, each with its own "
               "half (hash on aid, MODULUS 2, placed by satisfies_hash_partition)",
               f"Postgres settings (the same on every server): {pg_settings}",
               f"max_parallel_workers_per_gather per connection: {workers_seen}",
               f"shardgate: pool_mode=transaction, workers={shardgate_workers(sg.logfile)} "
               "(BENCH_SHARDGATE_WORKERS), auth scram-sha-256",
               "ratio = shardgate time / Postgres time (lower is better)",
               f"load average before / after the runs: {load_before} / {loadavg()} (other load skews the figures); "
               f"{os.cpu_count()} cores shared by the client, Postgres and shardgate",
               "",
               f"aggregate ({AGGREGATE_SQL}):",
               f"  postgres serial {fmt(a['postgres_serial'], 4)}  postgres parallel {fmt(a['postgres_parallel'], 4)}  "
               f"shardgate {fmt(a['shardgate'], 4)}  shardgate (shards serial) {fmt(a['shardgate_serial_shards'], 4)}",
               f"order_limit ({ORDER_LIMIT_SQL}), median of {limit_repeat} per run:",
               f"  postgres {fmt(lim['postgres'], 6)}  shardgate {fmt(lim['shardgate'], 6)}",
               f"order_full ({ORDER_FULL_SQL}), streamed to the end:",
               f"  postgres {fmt(full['postgres'], 3)}  shardgate {fmt(full['shardgate'], 3)}  "
               f"shardgate VmRSS before {rss_before / 2**20:.1f} MiB, peak while streaming {fmt(peak_mib, 1)} MiB, "
               f"VmHWM {hwm / 2**20:.1f} MiB, cpu per run {fmt(median(sg_cpu), 2)} s; the reading client's cpu per "
               f"run: {fmt(median(client_cpus['postgres']), 2)} s (postgres), "
               f"{fmt(median(client_cpus['shardgate']), 2)} s (shardgate)",
               "",
               "floors (reported, not asserted):",
               f"  aggregate: shardgate <= {AGGREGATE_FLOOR}x Postgres, no parallel workers on either side: {fmt(r_serial, 3)} "
               f"{'MET' if r_serial is not None and r_serial <= AGGREGATE_FLOOR else 'MISSED'}",
               f"  order_full: shardgate peak VmRSS < {RSS_FLOOR_MIB} MiB: {fmt(peak_mib, 1)} "
               f"{'MET' if peak_mib is not None and peak_mib < RSS_FLOOR_MIB else 'MISSED'}"]
        logs = [f"  shardgate log: {ln}" for ln in benchlib.log_anomalies(sg.logfile)]
        out.append("problems:" + ("" if problems or logs else " none"))
        out += [f"  {p}" for p in problems] + logs
        out.append("")
        out.append(f"BENCH name=multishard_aggregate postgres_serial_s={fmt(a['postgres_serial'], 4)} "
                   f"postgres_parallel_s={fmt(a['postgres_parallel'], 4)} shardgate_s={fmt(a['shardgate'], 4)} "
                   f"ratio_serial={fmt(r_serial, 3)} ratio_parallel={fmt(r_parallel, 3)} "
                   f"shardgate_serial_shards_s={fmt(a['shardgate_serial_shards'], 4)} "
                   f"ratio_parallel_shards_vs_serial={fmt(r_mixed, 3)}")
        out.append(f"BENCH name=multishard_order_limit postgres_s={fmt(lim['postgres'], 6)} "
                   f"shardgate_s={fmt(lim['shardgate'], 6)} ratio={fmt(ratio(lim['shardgate'], lim['postgres']), 3)}")
        out.append(f"BENCH name=multishard_order_full rows={expected_rows} postgres_s={fmt(full['postgres'], 3)} "
                   f"shardgate_s={fmt(full['shardgate'], 3)} "
                   f"ratio={fmt(ratio(full['shardgate'], full['postgres']), 3)} "
                   f"shardgate_peak_rss_mib={fmt(peak_mib, 1)} shardgate_hwm_mib={hwm / 2**20:.1f} "
                   f"shardgate_cpu_s={fmt(median(sg_cpu), 2)}")
        print("\n".join(out), flush=True)
        return 1 if problems else 0
    finally:
        for c in conns:
            c.close()
        benchlib.stop_clusters((single, sharded))


if __name__ == "__main__":
    benchlib.run_main("multishard", main)
