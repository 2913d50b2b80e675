"""Routed-statement benchmark: keyed pgbench_accounts reads through shardgate over two hash shards, against
the pass-through figure of the same run (shardgate in front of one server holding the whole table).

Run it through tests/bench/routed.sh (which makes the work directory and cleans up). The script is
    \\set aid random(1, 100000 * :scale)
    SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
Targets, each in turn (the order rotates every run):
  direct       Postgres itself, the server holding the whole table
  passthrough  shardgate in front of that server (one shard: nothing to route)
  routed       shardgate in front of two servers, pgbench_accounts hash-sharded on aid (as in
               conf/demo.toml); each server holds only its own rows, placed by Postgres's own
               satisfies_hash_partition (MODULUS 2). Its pool size per shard is half the
               pass-through's (BENCH_POOL_SIZE split over the shards), so that both may open the
               same number of Postgres connections in all: with one pool per shard the same
               setting would let the routed target run twice the backends on the same 2 cores
  two_servers  no proxy: two more servers, each with every row, each sent half the clients by its
               own pgbench at once (clients >= 2). Its TPS over direct's is what splitting the
               statements over two Postgres servers costs on this machine before any router runs:
               on 2 cores shared with pgbench the two servers may do less than one (reported as
               two_server_ratio; it bounds ratio_passthrough only roughly, since every figure
               here moves by several percent from run to run)
  one_shard    shardgate in front of the two_servers pair, pgbench_accounts range-sharded with every
               key on shard 0: the routed target's work in shardgate (analysis, routing, the shard's
               own pool) with all statements on one server. Its TPS over the pass-through's is what
               routing costs apart from splitting the statements over two servers; its pool size is
               BENCH_POOL_SIZE, as only one shard is used
Settings (environment): BENCH_SECONDS (10), BENCH_RUNS (5), BENCH_CLIENTS ("1 8 32"),
BENCH_ROUTED_MODES ("simple prepared"), BENCH_SCALE (10), BENCH_POOL_SIZE (20), BENCH_THREADS (2),
BENCH_SHARDGATE_WORKERS (1; 0 = one per core).
Progress goes to stderr; stdout gets the report, whose last lines are one
  BENCH name=routed_<mode>_c<clients> direct=.. passthrough=.. routed=.. ratio_passthrough=..
        ratio_direct=.. passthrough_cpu_us=.. routed_cpu_us=.. passthrough_pg_cpu_us=..
        routed_pg_cpu_us=.. two_servers=.. two_server_ratio=.. one_shard=.. one_shard_ratio=..
per mode and client count (ratios are the routed TPS over the peer's; cpu_us is shardgate's own
utime+stime per transaction, in microseconds). Floor (reported, not asserted): ratio_passthrough >= 0.9.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import benchlib
from benchlib import (BenchError, Cell, Target, fmt, loadavg, log, median, paired_ratios, ratio, run_one,
                      shardgate_workers, spread)

MODES = ("simple", "extended", "prepared")
TARGETS = ("direct", "passthrough", "routed", "two_servers", "one_shard")
FLOOR = 0.9
SCRIPT = "\\set aid random(1, 100000 * :scale)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
ROUTED_TOML = """\
# pgbench_accounts split across the two shards by Postgres's PARTITION BY HASH (aid) MODULUS 2.
[[databases.sharded_tables]]
name = "pgbench_accounts"
column = "aid"
type = "integer"
strategy = "hash"
"""
# The one_shard target: the same table range-sharded, every pgbench key on shard 0.
ONE_SHARD_TOML = """\
[[databases.sharded_tables]]
name = "pgbench_accounts"
column = "aid"
type = "integer"
strategy = "range"
ranges = [{ from = 0, to = 2147483647, shard = 0 }]
"""


def postmasters(cluster) -> list[int]:
    """The primaries' postmaster pids of a harness cluster."""
    return [pid for pid in (s.primary.postmaster_pid() for s in cluster.shards) if pid]


def keep_own_rows(server: benchlib.pgcluster.Server, shard: int, shards: int) -> int:
    """Deletes the pgbench_accounts rows that hash to another shard; returns the rows kept.

    Postgres decides: satisfies_hash_partition() against a hash-partitioned probe table with the
    same key type is true exactly for the rows PARTITION BY HASH ... MODULUS shards puts in
    remainder `shard`, which is what shardgate's hash strategy computes."""
    server.psql(
        "CREATE TABLE shardgate_bench_hash_probe (aid integer) PARTITION BY HASH (aid);"
        "DELETE FROM pgbench_accounts WHERE NOT satisfies_hash_partition("
        f"'shardgate_bench_hash_probe'::regclass, {shards}, {shard}, aid);"
        "DROP TABLE shardgate_bench_hash_probe;")
    # Compact the table and its index, as pgbench -i leaves them, so that the shards are not
    # slowed by half-empty pages.
    server.psql("VACUUM (FULL, ANALYZE) pgbench_accounts")
    return int(server.psql("SELECT count(*) FROM pgbench_accounts"))



def run_split(servers: list, mode: str, clients: int, seconds: int, threads: int, cell: Cell,
              workload: tuple[str, ...], round_number: int | None = None) -> None:
    """One run of `workload` against each of `servers` at once, clients and threads shared out
    among them, by one pgbench each; the cell gets the summed TPS and the servers' CPU per
    transaction."""
    if clients < len(servers):
        return  # the split needs a client per server
    for s in servers:
        if not s.is_running():
            raise BenchError(f"two_servers: Postgres on port {s.port} is not running")
    pids = [p for p in (s.postmaster_pid() for s in servers) if p]
    cpu_before = sum(benchlib.tree_cpu_ticks(p) for p in pids)
    share = clients // len(servers)
    jobs = max(1, threads // len(servers))

    def one(server):
        return benchlib.pgbench(server.port, "-n", *workload, "-M", mode, "-c", str(share), "-j", str(jobs),
                                "-T", str(seconds), timeout=seconds + 180)

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        results = list(pool.map(one, servers))
    server_us = (sum(benchlib.tree_cpu_ticks(p) for p in pids) - cpu_before) / benchlib.CLK_TCK * 1e6
    bad = [f"port {s.port}: exit {r.returncode}, {r.failed} failed" for s, r in zip(servers, results) if not r.ok]
    if bad:
        cell.failures.append("; ".join(bad))
        log(f"  two_servers {mode:8} c={clients:<3} FAILED: {'; '.join(bad)}")
        return
    tps = sum(r.tps for r in results)
    transactions = sum(r.transactions for r in results)
    cell.tps.append(tps)
    cell.server_cpu_us.append(server_us / transactions)
    if round_number is not None:
        cell.by_round[round_number] = {"tps": tps}
    log(f"  two_servers {mode:8} c={clients:<3} tps={tps:9.1f}  (" +
        " + ".join(f"{r.tps:.1f}" for r in results) + f")  Postgres/tx={server_us / transactions:6.1f} us")


def start_and_load(single, sharded, scale: int, before_split=None) -> benchlib.pgcluster.Server:
    """Starts one server with every row and two shards, loads pgbench at `scale` into each, runs
    `before_split(servers)` if given, and keeps on each shard only its own pgbench_accounts rows.
    Returns the single server."""
    log(f"starting Postgres: one server in {single.base_dir}, two shards in {sharded.base_dir}")
    single.start()
    sharded.start()
    pg = single.shards[0].primary
    servers = [pg] + [s.primary for s in sharded.shards]
    for server in servers:
        benchlib.pgbench_init(server.port, scale)
    if before_split is not None:
        before_split(servers)
    for shard in sharded.shards:
        kept = keep_own_rows(shard.primary, shard.index, len(sharded.shards))
        log(f"{shard.name}: {kept} pgbench_accounts rows of {100000 * scale} kept")
    return pg

def main() -> int:
    benchlib.exit_on_signals()
    seconds = benchlib.env_int("BENCH_SECONDS", 10)
    runs = benchlib.env_int("BENCH_RUNS", 5)
    clients = [int(c) for c in benchlib.env_list("BENCH_CLIENTS", ["1", "8", "32"])]
    modes = benchlib.env_list("BENCH_ROUTED_MODES", ["simple", "prepared"])
    scale = benchlib.env_int("BENCH_SCALE", 10)
    pool = benchlib.env_int("BENCH_POOL_SIZE", 20)
    threads = benchlib.env_int("BENCH_THREADS", 2)
    sg_workers = benchlib.env_int("BENCH_SHARDGATE_WORKERS", 1, minimum=0)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise BenchError(f"BENCH_ROUTED_MODES: unknown mode(s) {bad}; use {' '.join(MODES)}")

    wd = benchlib.work_dir()
    script = wd / "routed_select.sql"
    script.write_text(SCRIPT)
    os.chmod(script, 0o644)
    # -s: a custom script's :scale is 1 unless given (pgbench only counts pgbench_branches for its
    # built-in scripts).
    workload = ("-f", str(script), "-s", str(scale))
    users = [{"name": benchlib.SUPERUSER, "password": benchlib.SUPERPASS, "auth_method": "scram-sha-256",
              "admin": True}]
    general = {"pool_mode": "transaction", "default_pool_size": pool, "workers": sg_workers}
    shard_pool = max(1, pool // 2)  # the same budget of Postgres connections, split over the shards
    single = benchlib.make_cluster(wd / "passthrough", users=users, general=general)
    sharded = benchlib.make_cluster(wd / "routed", users=users, general={**general, "default_pool_size": shard_pool},
                                    num_shards=2,
                                    database_options={"default_shard": 0}, extra_toml=ROUTED_TOML)
    # two_servers drives its servers directly; one_shard goes through its shardgate.
    full_pair = benchlib.make_cluster(wd / "two_servers", users=users, general=general, num_shards=2,
                                      database_options={"default_shard": 0}, extra_toml=ONE_SHARD_TOML)
    clusters = {"passthrough": single, "routed": sharded, "one_shard": full_pair}
    try:
        pg = start_and_load(single, sharded, scale)
        full_pair.start()
        pair = [s.primary for s in full_pair.shards]
        for server in pair:
            benchlib.pgbench_init(server.port, scale)

        def starter(name: str):
            def start() -> None:
                c = clusters[name]
                c.start_shardgate()
                benchlib.record_pid(c.shardgate.pid, f"shardgate ({name})")
                size = shard_pool if name == "routed" else pool
                log(f"{name}: shardgate pid {c.shardgate.pid} on port {c.shardgate.port} "
                    f"(pool_mode=transaction, default_pool_size={size}, workers={sg_workers or 'one per core'})")
            return start

        for name in clusters:
            starter(name)()

        def proxy_target(name: str) -> Target:
            c = clusters[name]
            return Target(name, lambda: c.shardgate.port, lambda: c.shardgate.pid, lambda: c.shardgate.is_running(),
                          starter(name), lambda: postmasters(c))

        targets = {"direct": Target("direct", lambda: pg.port, lambda: None, pg.is_running,
                                    servers=lambda: postmasters(single)),
                   "passthrough": proxy_target("passthrough"), "routed": proxy_target("routed"),
                   "one_shard": proxy_target("one_shard")}

        # Every row the script can ask for must be found through the router, on the right shard.
        for name in ("routed", "one_shard"):
            probe = clusters[name].shardgate.psql("SELECT count(*) FROM pgbench_accounts WHERE aid = 1").stdout.strip()
            if probe != "1":
                raise BenchError(f"{name}: SELECT ... WHERE aid = 1 through shardgate found {probe!r} rows, not 1")

        log("warm-up: 2 s per target and mode")
        for mode in modes:
            run_split(pair, mode, 2, 2, threads, Cell(), workload)
            for t in targets.values():
                r = benchlib.pgbench(t.port(), "-n", *workload, "-M", mode, "-c", str(min(8, max(clients))),
                                     "-j", str(min(threads, max(clients))), "-T", "2", timeout=120)
                if not r.ok:
                    log(f"warm-up against {t.name} ({mode}) failed: exit {r.returncode}\n{r.stderr[-2000:]}")

        load_before = loadavg()
        cells = {(m, c, t): Cell() for m in modes for c in clients for t in TARGETS}
        total = runs * len(modes) * len(clients) * len(TARGETS)
        done = 0
        for run in range(runs):
            order = TARGETS[run % len(TARGETS):] + TARGETS[:run % len(TARGETS)]
            for mode in modes:
                for c in clients:
                    for name in order:
                        done += 1
                        log(f"run {run + 1}/{runs} [{done}/{total}]")
                        if name == "two_servers":
                            run_split(pair, mode, c, seconds, threads, cells[(mode, c, name)], workload, run)
                        else:
                            run_one(targets[name], mode, c, seconds, threads, cells[(mode, c, name)], workload,
                                    run)

        # ---- report -------------------------------------------------------------------------------
        out = [f"== shardgate routed-statement benchmark: pgbench -f (keyed SELECT on pgbench_accounts), -j {threads}, "
               f"{runs} runs x {seconds} s per point, medians ==",
               f"data: pgbench -i -s {scale}; direct and passthrough: one Postgres 15 server with every row; "
               f"routed: two servers, each with its own half (hash on aid, MODULUS 2); two_servers: two more "
               f"servers with every row, half the clients on each, no proxy; one_shard: shardgate in front of "
               f"those two, every key range-routed to the first",
               f"shardgate: pool_mode=transaction, default_pool_size={pool} (passthrough; routed: {shard_pool} per "
               f"shard, the same {pool} connections in all; one_shard: {pool}), workers="
               f"{shardgate_workers(single.shardgate.logfile)} (BENCH_SHARDGATE_WORKERS), auth scram-sha-256",
               "cpu_us = shardgate's own utime+stime (/proc/<pid>/stat) over the run / transactions; pg_cpu_us the "
               "same for the Postgres servers behind it (postmasters and their backends): two servers cost "
               "Postgres more per statement than one",
               f"load average before / after the runs: {load_before} / {loadavg()} (other load skews the figures)",
               f"{os.cpu_count()} cores shared by pgbench, Postgres and shardgate",
               "",
               f"{'mode':9}{'clients':>8}{'direct':>11}{'passthru':>11}{'routed':>11}{'r/pass':>8}{'r/direct':>10}"
               f"{'pass_cpu':>10}{'rt_cpu':>9}{'pass_pg':>9}{'rt_pg':>8}{'two_srv':>11}{'2srv/dir':>9}"
               f"{'1shard':>11}{'1s/pass':>8}{'1s_cpu':>8}"]
        bench_lines, floors, anomalies = [], [], []
        for mode in modes:
            for c in clients:
                d, p, s, two, one = (median(cells[(mode, c, t)].tps) for t in TARGETS)
                two_ratio, one_ratio = ratio(two, d), ratio(one, p)
                oc = median(cells[(mode, c, "one_shard")].cpu_us)
                pc = median(cells[(mode, c, "passthrough")].cpu_us)
                sc = median(cells[(mode, c, "routed")].cpu_us)
                ppg = median(cells[(mode, c, "passthrough")].server_cpu_us)
                spg = median(cells[(mode, c, "routed")].server_cpu_us)
                rp, rd = ratio(s, p), ratio(s, d)
                routed_cell, pass_cell = cells[(mode, c, "routed")], cells[(mode, c, "passthrough")]
                rounds = paired_ratios(routed_cell, pass_cell)
                out.append(f"{mode:9}{c:>8}{fmt(d, 1):>11}{fmt(p, 1):>11}{fmt(s, 1):>11}{fmt(rp, 3):>8}"
                           f"{fmt(rd, 3):>10}{fmt(pc, 2):>10}{fmt(sc, 2):>9}{fmt(ppg, 1):>9}{fmt(spg, 1):>8}"
                           f"{fmt(two, 1):>11}{fmt(two_ratio, 3):>9}{fmt(one, 1):>11}{fmt(one_ratio, 3):>8}"
                           f"{fmt(oc, 2):>8}")
                bench_lines.append(f"BENCH name=routed_{mode}_c{c} direct={fmt(d, 1)} passthrough={fmt(p, 1)} "
                                   f"routed={fmt(s, 1)} ratio_passthrough={fmt(rp, 3)} ratio_direct={fmt(rd, 3)} "
                                   f"passthrough_cpu_us={fmt(pc, 2)} routed_cpu_us={fmt(sc, 2)} "
                                   f"passthrough_pg_cpu_us={fmt(ppg, 1)} routed_pg_cpu_us={fmt(spg, 1)} "
                                   f"two_servers={fmt(two, 1)} two_server_ratio={fmt(two_ratio, 3)} "
                                   f"one_shard={fmt(one, 1)} one_shard_ratio={fmt(one_ratio, 3)} "
                                   f"ratio_passthrough_by_round={fmt(median(rounds), 3)}")
                met = rp is not None and rp >= FLOOR
                floors.append(f"  routed_{mode}_c{c}: TPS routed/passthrough {fmt(rp, 3)} (floor {FLOOR}) "
                              f"{'MET' if met else 'MISSED'}"
                              + (f"; two servers without a proxy reach {fmt(two_ratio, 3)}x one server"
                                 if two_ratio is not None else "")
                              + f"; routed to one shard {fmt(one_ratio, 3)}x"
                              + f"\n    round by round, routed/passthrough: TPS {spread(rounds)}, "
                              f"CPU/tx {spread(paired_ratios(routed_cell, pass_cell, 'cpu_us'))}")
                for t in TARGETS:
                    anomalies += [f"  {t} {mode}_c{c}: {f}" for f in cells[(mode, c, t)].failures]
        out.append("")
        out.append(f"floor (reported, not asserted): routed TPS >= {FLOOR}x the pass-through TPS")
        out += floors
        logs = [f"  {name} shardgate log: {ln}" for name, c in clusters.items()
                for ln in benchlib.log_anomalies(c.shardgate.logfile)]
        out.append("anomalies:" + ("" if anomalies or logs else " none"))
        out += anomalies + logs
        out.append("")
        out += bench_lines
        print("\n".join(out), flush=True)
        return 0
    finally:
        benchlib.stop_clusters([*clusters.values(), full_pair])


if __name__ == "__main__":
    benchlib.run_main("routed", main)
