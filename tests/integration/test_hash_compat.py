"""shardgate's hash sharding is Postgres's PARTITION BY HASH, bit for bit.

For every key type (smallint, integer, bigint, text, varchar, uuid), at least 10,000 keys are hashed
by shardgate's own code (the test-only program <build>/tests/shard_probe, built from
planner/tools/shard_probe.cc) and checked against Postgres 15:
  * the partition remainder for MODULUS 2, 3 and 8 against satisfies_hash_partition() on a table
    PARTITION BY HASH (k) of that type, and
  * the full 64-bit hash against <type>hashextended(k, HASH_PARTITION_SEED) (+ hash_combine64).
Keys go to Postgres in bulk with COPY, and each check is one query.

The probe is found in $SHARDGATE_BUILD_DIR/tests (set by ctest), else <repo>/build/tests.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "harness"))

import pgcluster  # noqa: E402

TYPES = ["smallint", "integer", "bigint", "text", "varchar", "uuid"]
MODULI = [2, 3, 8]
MIN_KEYS = 10_000
HASH_PARTITION_SEED = 0x7A5B22367996DCFD
COMBINE = 0x49A0F4DD15E5A8E3  # hash_combine64(0, h) = h + COMBINE (mod 2^64)
# Each type's extended hash function (varchar uses text's: its hash opclass is in text_ops).
HASH_FUNCTION = {
    "smallint": "hashint2extended",
    "integer": "hashint4extended",
    "bigint": "hashint8extended",
    "text": "hashtextextended",
    "varchar": "hashtextextended",
    "uuid": "uuid_hash_extended",
}


def probe_path() -> Path:
    build = os.environ.get("SHARDGATE_BUILD_DIR") or str(REPO_ROOT / "build")
    return Path(build) / "tests" / "shard_probe"


# ----- keys ------------------------------------------------------------------------------------
# Each generator returns (value for Postgres, text for the probe); the probe's text may be another
# spelling of the same value (" +42", "{A0EE...}") to exercise shardgate's input parsing too.


def _int_spellings(rng: random.Random, v: int) -> str:
    r = rng.random()
    if r < 0.05 and v >= 0:
        return f"+{v}"
    if r < 0.10:
        return f" \t{v}  "
    if r < 0.12:
        return ("-" if v < 0 else "") + "00" + str(abs(v))
    return str(v)


def int_keys(bits: int, seed: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if bits == 16:
        values = list(range(lo, hi + 1))  # all 65,536 of them
    else:
        values = {lo, lo + 1, -1, 0, 1, hi - 1, hi}
        for p in range(bits - 1):  # powers of two and their neighbours, both signs
            for d in (-1, 0, 1):
                for s in (1, -1):
                    v = s * (1 << p) + d
                    if lo <= v <= hi:
                        values.add(v)
        values.update(range(-2000, 2001))
        while len(values) < 12_000:
            r = rng.random()
            if r < 0.4:
                values.add(rng.randint(lo, hi))
            elif r < 0.7:
                values.add(rng.randint(-(1 << 20), 1 << 20))
            elif bits == 64:
                # Around the 32-bit boundaries, where hashint8 folds the high half into the low one.
                base = rng.choice([1 << 31, 1 << 32, -(1 << 31), -(1 << 32), 1 << 33, -(1 << 40)])
                values.add(base + rng.randint(-3000, 3000))
            else:
                values.add(rng.randint(lo, hi))
        values = sorted(values)
    return [(v, _int_spellings(rng, v)) for v in values]


ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,;:!?'\"\\/%$#@()[]{}",
    "\t\n\r\x01\x1f\x7f",  # control characters (Postgres text cannot hold NUL)
    "éèüöäßçñøåœ",  # 2-byte UTF-8
    "中文字符日本語한국어",  # 3-byte UTF-8
    "😀🎉🚀𝄞",  # 4-byte UTF-8
]


def text_keys(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    keys: list[str] = ["", " ", "  ", "a", "A", "0", "42", "-1", "\\", "\\x41", "\n", "NULL", "\\N",
                       "eu", "us", "uk", "user@example.com", "ünïcödé", "✓", "😀"]
    keys += [chr(c) for c in range(1, 128)]
    keys += ["x" * n for n in range(0, 40)]  # every lookup3 tail length, and several blocks
    keys += ["é" * n for n in range(1, 20)]
    keys += ["k" * 1000, "長" * 5000, "abc" * 10_000 + "z"]  # long strings
    seen = set(keys)
    while len(keys) < 12_000:
        n = rng.choice([rng.randint(1, 12), rng.randint(1, 40), rng.randint(40, 300)])
        alphabet = "".join(rng.sample(ALPHABETS, rng.randint(1, 3)))
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if s not in seen:
            seen.add(s)
            keys.append(s)
    return [(k, k) for k in keys]


def _uuid_spellings(rng: random.Random, u: uuid.UUID) -> str:
    h = u.hex
    r = rng.random()
    if r < 0.15:
        return str(u).upper()
    if r < 0.25:
        return "{" + str(u) + "}"
    if r < 0.35:
        return h
    if r < 0.45:
        return "-".join(h[i:i + 4] for i in range(0, 32, 4))  # a hyphen after any 4 digits
    if r < 0.50:
        return "{" + h.upper() + "}"
    return str(u)


def uuid_keys(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    values = [uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1), uuid.UUID(int=1),
              uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]
    values += [uuid.UUID(int=1 << i) for i in range(128)]
    while len(values) < 11_000:
        values.append(uuid.UUID(int=rng.getrandbits(128), version=4) if rng.random() < 0.7
                      else uuid.UUID(int=rng.getrandbits(128)))
    return [(str(u), _uuid_spellings(rng, u)) for u in dict.fromkeys(values)]


def keys_for(type_name: str) -> list[tuple[object, str]]:
    seed = TYPES.index(type_name) + 1
    if type_name == "smallint":
        return int_keys(16, seed)
    if type_name == "integer":
        return int_keys(32, seed)
    if type_name == "bigint":
        return int_keys(64, seed)
    if type_name == "uuid":
        return uuid_keys(seed)
    return text_keys(seed)


# ----- shardgate's side: the probe ---------------------------------------------------------------


def escape(text: str) -> str:
    """The probe's line format: backslash doubled, control bytes as \\xHH."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def run_probe(type_name: str, modulus: int, texts: list[str]) -> list[int]:
    probe = probe_path()
    data = "".join(escape(t) + "\n" for t in texts).encode("utf-8")
    r = subprocess.run([str(probe), type_name, str(modulus)], input=data, capture_output=True, timeout=120)
    assert r.returncode == 0, f"shard_probe failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
    lines = r.stdout.decode().splitlines()
    assert len(lines) == len(texts), f"shard_probe printed {len(lines)} lines for {len(texts)} keys"
    errors = [(texts[i], line) for i, line in enumerate(lines) if line.startswith("error")]
    assert not errors, f"shard_probe refused {len(errors)} keys, e.g. {errors[:5]}"
    return [int(line) for line in lines]


# ----- Postgres's side ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe() -> Path:
    p = probe_path()
    if not p.is_file():
        pytest.fail(f"{p} is missing: build it with `cmake --build <build> --target shard_probe` "
                    "(or set SHARDGATE_BUILD_DIR)", pytrace=False)
    return p


@pytest.fixture(scope="module")
def pg(cluster_root):
    """One plain Postgres 15 server (no shardgate, no replica) for the whole module; its directory
    goes with cluster_root (kept when a test failed)."""
    c = pgcluster.Cluster(cluster_root / "hash-compat", num_shards=1, replicas_per_shard=0, with_shardgate=False)
    try:
        c.start()
    except pgcluster.HarnessError as e:
        pytest.fail(f"postgres did not start:\n{e}", pytrace=False)
    try:
        yield c.shards[0].primary
    finally:
        c.stop()


def load_keys(conn: psycopg.Connection, type_name: str, keys: list[tuple[object, str]]) -> str:
    """COPYs the keys into keys_<type> (id, k) and creates t_<type>, hash-partitioned on k."""
    ident = type_name
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS keys_{ident}, t_{ident}")
        cur.execute(f"CREATE TABLE keys_{ident} (id int PRIMARY KEY, k {type_name} NOT NULL)")
        cur.execute(f"CREATE TABLE t_{ident} (k {type_name}) PARTITION BY HASH (k)")
        with cur.copy(f"COPY keys_{ident} (id, k) FROM STDIN") as copy:
            for i, (value, _) in enumerate(keys):
                copy.write_row((i, value))
        cur.execute(f"SELECT count(*) FROM keys_{ident}")
        assert cur.fetchone()[0] == len(keys)
    return ident


def describe_mismatches(keys, got, want, what: str) -> str:
    bad = [i for i in range(len(keys)) if got[i] != want[i]]
    sample = "\n".join(f"  key {keys[i][0]!r:.80} (probe text {keys[i][1]!r:.80}): shardgate {got[i]}, "
                       f"postgres {want[i]}" for i in bad[:10])
    return f"{len(bad)} of {len(keys)} keys differ in {what}:\n{sample}"


@pytest.mark.parametrize("type_name", TYPES)
def test_hash_matches_postgres(pg, probe, type_name):
    keys = keys_for(type_name)
    assert len(keys) >= MIN_KEYS
    texts = [t for _, t in keys]
    with psycopg.connect(pg.dsn(), autocommit=True, connect_timeout=10) as conn:
        ident = load_keys(conn, type_name, keys)

        # The full 64-bit hash: hash_combine64(0, <type>hashextended(k, HASH_PARTITION_SEED)).
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, {HASH_FUNCTION[type_name]}(k, %s) FROM keys_{ident} ORDER BY id",
                        (HASH_PARTITION_SEED,))
            rows = cur.fetchall()
        assert [r[0] for r in rows] == list(range(len(keys)))
        want = [(h + COMBINE) % (1 << 64) for _, h in rows]
        got = run_probe(type_name, 0, texts)
        assert got == want, describe_mismatches(keys, got, want, "the 64-bit partition hash")

        # The partition each key belongs to, as Postgres's partition constraint decides it.
        for modulus in MODULI:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT id, r FROM keys_{ident}, generate_series(0, %s - 1) AS r "
                    f"WHERE satisfies_hash_partition('t_{ident}'::regclass, %s, r, k) ORDER BY id",
                    (modulus, modulus))
                rows = cur.fetchall()
            assert [r[0] for r in rows] == list(range(len(keys))), \
                f"satisfies_hash_partition did not place every key in exactly one of {modulus} partitions"
            want = [r for _, r in rows]
            got = run_probe(type_name, modulus, texts)
            assert got == want, describe_mismatches(keys, got, want, f"MODULUS {modulus}")
            # Every remainder occurs: the keys really exercise all partitions.
            assert set(got) == set(range(modulus))
