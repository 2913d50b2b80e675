"""The differential suite's data: a deterministic generator (fixed seed) for users, orders, events, countries and typed.

Every value is produced as Postgres input text, so the rows are the same on every run and every
server. The values are chosen so that a correct merge can match one Postgres exactly, text for text:

* No two values of a column compare equal while printing differently (0 and -0, 1.5 and 1.50,
  '1 day' and '24 hours'), because GROUP BY, DISTINCT, min and max would then print whichever one
  the scan met first, which even plain Postgres does not fix.
* Finite floats are dyadic fractions of modest size, so sums are exact in any order (float addition
  is not associative: a sum of 0.1s depends on the order of the rows, on one server as on many).
* NULLs in every column, duplicates, negative numbers, extremes, mixed-case, accented and
  punctuated strings, NaN, Infinity, -0, numerics of many scales, an all-NULL group (typed.grp 12).
"""

from __future__ import annotations

import datetime
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal

SEED = 20261126

N_USERS = 4000
N_ORDERS = 16000
N_EVENTS = 8000
N_TYPED = 2500
EVENT_ID_LIMIT = 3_000_000  # events.id lies in [0, EVENT_ID_LIMIT): every range layout covers it

INT2_MIN, INT2_MAX = -(2**15), 2**15 - 1
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1

# The delimiter the string_agg queries use; no generated text contains it, so a string_agg whose
# element order is free can be compared as a sorted list of its parts.
AGG_DELIMITER = "|"

SCHEMA_SQL = """
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL, region text, population bigint);
CREATE TABLE users (
  id bigint PRIMARY KEY, name text, country text, age int, score numeric(10, 2), active boolean,
  created date, nick text);
CREATE TABLE orders (
  id bigint NOT NULL, user_id bigint NOT NULL, amount numeric(12, 2), qty int, status text,
  created_at timestamptz, discount float8, PRIMARY KEY (user_id, id));
CREATE TABLE events (
  id bigint PRIMARY KEY, user_id bigint, kind text, value float8, at timestamp, tag text);
CREATE TABLE typed (
  id bigint PRIMARY KEY, grp int,
  c_int2 int2, c_int4 int4, c_int8 int8, c_float4 float4, c_float8 float8, c_numeric numeric,
  c_bool boolean, c_date date, c_time time, c_timestamp timestamp, c_timestamptz timestamptz,
  c_interval interval, c_uuid uuid, c_bytea bytea, c_text text,
  c_text_c text COLLATE "C", c_text_en text COLLATE "en_US");
"""

# Column order of each table (as in SCHEMA_SQL), for COPY.
TABLES = {
    "countries": ["code", "name", "region", "population"],
    "users": ["id", "name", "country", "age", "score", "active", "created", "nick"],
    "orders": ["id", "user_id", "amount", "qty", "status", "created_at", "discount"],
    "events": ["id", "user_id", "kind", "value", "at", "tag"],
    "typed": ["id", "grp", "c_int2", "c_int4", "c_int8", "c_float4", "c_float8", "c_numeric", "c_bool",
              "c_date", "c_time", "c_timestamp", "c_timestamptz", "c_interval", "c_uuid", "c_bytea", "c_text",
              "c_text_c", "c_text_en"],
}

# typed's value columns and their SQL types (the generated queries walk over these).
TYPED_COLUMNS = {
    "c_int2": "int2", "c_int4": "int4", "c_int8": "int8", "c_float4": "float4", "c_float8": "float8",
    "c_numeric": "numeric", "c_bool": "bool", "c_date": "date", "c_time": "time",
    "c_timestamp": "timestamp", "c_timestamptz": "timestamptz", "c_interval": "interval",
    "c_uuid": "uuid", "c_bytea": "bytea", "c_text": "text",
}
NULL_ONLY_GROUP = 12  # typed rows of this grp have NULL in every c_* column

# Words for names and texts: case, accents, ligatures, other scripts, punctuation, spaces, the empty
# string and the word NULL. Under en_US.UTF-8 these sort very differently from C.
WORDS = [
    "alice", "Alice", "ALICE", "bob", "Bob", "émile", "Émile", "Emile", "zoë", "Zoe", "zoe", "ångström",
    "Ångström", "o'brien", "O'Brien", "de la Cruz", "van Dijk", "Łukasz", "lukas", "Ærø", "aero",
    "ñandú", "Nuñez", "nunez", "-dash", "_under", "a b", "a-b", "ab", "a_b", "1abc", "10abc", "2abc",
    "Ä", "a", "z", "Z", "ß", "ss", "café", "cafe", "Café", "CAFE", "cafés", "中文", "日本語", "Ελλάδα",
    "Москва", "emoji 😀", "", " space", "quote\"d", "back\\slash", "comma,here", "semi;colon",
    "{brace}", "NULL", "null", "tab\there", "new\nline", "Ǆemal", "ǅemal", "ﬁne", "fine", "İstanbul",
    "istanbul", "straße", "STRASSE", "Å", "å", "Ø", "ø", "æ", "Œuvre", "oeuvre", "x", "X", "~tilde",
    "!bang", "#hash", "$dollar", "%pct", "&amp", "(paren)", "*star", "+plus", ".dot", "/slash", ":colon",
    "<lt>", "=eq", "?q", "@at", "[br]", "^caret", "`tick`", "\u00a0nbsp",
]

COUNTRIES = [
    ("at", "Österreich", "Europe", 9_100_000), ("be", "Belgique", "Europe", 11_700_000),
    ("br", "Brasil", "Americas", 216_000_000), ("ca", "Canada", "Americas", 40_000_000),
    ("ch", "Schweiz", "Europe", 8_800_000), ("ci", "Côte d’Ivoire", "Africa", 28_000_000),
    ("cn", "中国", "Asia", 1_410_000_000), ("de", "Deutschland", "Europe", 84_000_000),
    ("dk", "Danmark", "Europe", 5_900_000), ("es", "España", "Europe", 48_000_000),
    ("fi", "Suomi", "Europe", 5_600_000), ("fr", "France", "Europe", 68_000_000),
    ("gr", "Ελλάδα", "Europe", 10_400_000), ("is", "Ísland", "Europe", 390_000),
    ("it", "Italia", "Europe", 59_000_000), ("jp", "日本", "Asia", 124_000_000),
    ("mx", "México", "Americas", 128_000_000), ("nl", "Nederland", "Europe", 17_900_000),
    ("no", "Norge", "Europe", 5_500_000), ("pl", "Polska", "Europe", 36_700_000),
    ("pt", "Portugal", "Europe", 10_400_000), ("ru", "Россия", "Europe", 144_000_000),
    ("se", "Sverige", "Europe", 10_500_000), ("tr", "Türkiye", "Asia", 85_000_000),
    ("us", "United States", "Americas", 335_000_000), ("za", "South Africa", "Africa", None),
]
# Country codes users may have: real ones, one missing from countries, and upper case (no match).
USER_COUNTRIES = [c for c, _, _, _ in COUNTRIES] + ["xx", "FR", "De"]
STATUSES = ["new", "paid", "shipped", "cancelled", "Refunded"]
KINDS = ["click", "view", "Purchase", "login", "logout", "error"]


@dataclass
class Dataset:
    """Rows per table, each row a list of Postgres input texts (None is NULL)."""

    rows: dict[str, list[list[str | None]]]

    def count(self, table: str) -> int:
        return len(self.rows[table])


def copy_text(rows: list[list[str | None]]) -> str:
    """The rows in COPY's text format (tab-separated, \\N for NULL, backslash escapes)."""
    out = []
    for row in rows:
        fields = []
        for v in row:
            if v is None:
                fields.append("\\N")
            else:
                fields.append(v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                              .replace("\r", "\\r"))
        out.append("\t".join(fields) + "\n")
    return "".join(out)


class _Unique:
    """Hands out values whose comparison key was not seen before (see the module docstring)."""

    def __init__(self):
        self.seen: set = set()

    def take(self, key) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _maybe_null(rng: random.Random, p: float, value):
    return None if rng.random() < p else value


def _dyadic(rng: random.Random, max_abs: float, denominators=(1, 2, 4, 8, 16, 1024)) -> str:
    den = rng.choice(denominators)
    k = rng.randint(-int(max_abs * den), int(max_abs * den))
    return repr(k / den)


def _text(rng: random.Random) -> str:
    w = rng.choice(WORDS)
    r = rng.random()
    if r < 0.35:
        return w
    if r < 0.7:
        return f"{w}{rng.randint(0, 99)}"
    return f"{w} {rng.choice(WORDS)}"


def _timestamp(rng: random.Random, start_year: int = 1990, end_year: int = 2035) -> datetime.datetime:
    start = datetime.datetime(start_year, 1, 1)
    span = (datetime.datetime(end_year, 1, 1) - start).total_seconds()
    ts = start + datetime.timedelta(seconds=rng.uniform(0, span))
    if rng.random() < 0.5:
        ts = ts.replace(microsecond=0)
    return ts


def _numeric(rng: random.Random, seen: _Unique) -> str:
    while True:
        r = rng.random()
        if r < 0.02:
            text = "NaN"
            key = "NaN"
        else:
            int_digits = rng.choice([1, 1, 2, 3, 5, 8, 12, 20, 28])
            scale = rng.choice([0, 0, 1, 2, 2, 3, 4, 6, 10, 15])
            ip = str(rng.randint(0, 10**int_digits - 1))
            fp = "".join(str(rng.randint(0, 9)) for _ in range(scale))
            sign = "-" if rng.random() < 0.3 else ""
            text = sign + ip + ("." + fp if scale else "")
            key = Decimal(text)
            if key == 0:
                text, key = "0", Decimal(0)
        if seen.take(key):
            return text


def _interval(rng: random.Random, seen: _Unique) -> str:
    # Months < 12, days < 30 and time < 24h, all of one sign: Postgres's comparison (months as 30
    # days, days as 24 hours) then never equates two different texts.
    while True:
        years = rng.randint(0, 30) if rng.random() < 0.3 else 0
        months = rng.randint(0, 11) if rng.random() < 0.5 else 0
        days = rng.randint(0, 29) if rng.random() < 0.6 else 0
        micros = rng.randint(0, 86_400 * 10**6 - 1) if rng.random() < 0.7 else 0
        if rng.random() < 0.5:
            micros -= micros % 10**6
        sign = -1 if rng.random() < 0.25 else 1
        key = sign * (((years * 12 + months) * 30 + days) * 86_400 * 10**6 + micros)
        if not seen.take(key):
            continue
        secs, us = divmod(micros, 10**6)
        h, rem = divmod(secs, 3600)
        m, s = divmod(rem, 60)
        s_text = f"{s}.{us:06d}" if us else f"{s}"
        neg = "-" if sign < 0 else ""
        # Each unit signed: '-1 years -2 mons -3 days -04:05:06' is how Postgres reads a negative one.
        return f"{neg}{years} years {neg}{months} mons {neg}{days} days {neg}{h}:{m}:{s_text}"


def generate(seed: int = SEED) -> Dataset:
    rng = random.Random(seed)
    rows: dict[str, list[list[str | None]]] = {}

    rows["countries"] = [[c, n, r, None if p is None else str(p)] for c, n, r, p in COUNTRIES]

    # users: ids from a wide range, negatives and the bigint extremes included.
    ids = rng.sample(range(-2000, 400_000), N_USERS - 4) + [INT8_MAX, INT8_MIN, INT8_MAX - 1, 0]
    ids = sorted(set(ids))
    rng.shuffle(ids)
    users = []
    names = _Unique()
    for uid in ids:
        name = _text(rng)
        while not names.take(name):
            name = f"{name}{rng.randint(0, 9)}"
        users.append([
            str(uid),
            _maybe_null(rng, 0.03, name),
            _maybe_null(rng, 0.08, rng.choice(USER_COUNTRIES)),
            _maybe_null(rng, 0.1, str(rng.randint(-1, 110))),
            _maybe_null(rng, 0.1, f"{rng.randint(-99999, 99999) / 100:.2f}"),
            _maybe_null(rng, 0.1, rng.choice(["t", "f"])),
            _maybe_null(rng, 0.05, (datetime.date(1995, 1, 1) + datetime.timedelta(days=rng.randint(0, 11000))).isoformat()),
            _maybe_null(rng, 0.5, rng.choice(WORDS)),  # many duplicates
        ])
    rows["users"] = users

    # orders: most belong to a user; a few to ids no user has (still hashed by user_id).
    user_ids = [int(u[0]) for u in users]
    orders = []
    order_ids = rng.sample(range(1, 10_000_000), N_ORDERS)
    for oid in order_ids:
        uid = rng.choice(user_ids) if rng.random() < 0.97 else rng.randint(-10**12, 10**12)
        created = _timestamp(rng, 2015, 2026)
        offset = rng.choice(["+00", "+02", "-05", "+05:30", "-09:30"])
        orders.append([
            str(oid), str(uid),
            _maybe_null(rng, 0.05, f"{rng.randint(-50000, 5_000_000) / 100:.2f}"),
            _maybe_null(rng, 0.05, str(rng.randint(0, 50))),
            _maybe_null(rng, 0.04, rng.choice(STATUSES)),
            _maybe_null(rng, 0.03, created.isoformat(sep=" ") + offset),
            _maybe_null(rng, 0.2, _dyadic(rng, 100, (1, 2, 4, 8))),
        ])
    rows["orders"] = orders

    # events: ids spread over [0, EVENT_ID_LIMIT), so every range shard holds some.
    events = []
    for eid in rng.sample(range(0, EVENT_ID_LIMIT), N_EVENTS - 2) + [0, EVENT_ID_LIMIT - 1]:
        events.append([
            str(eid),
            _maybe_null(rng, 0.1, str(rng.choice(user_ids))),
            _maybe_null(rng, 0.05, rng.choice(KINDS)),
            _maybe_null(rng, 0.1, _dyadic(rng, 5000)),
            _maybe_null(rng, 0.05, _timestamp(rng, 2020, 2026).isoformat(sep=" ")),
            _maybe_null(rng, 0.3, _text(rng)),
        ])
    rows["events"] = events

    rows["typed"] = _typed_rows(rng)
    return Dataset(rows)


def _typed_rows(rng: random.Random) -> list[list[str | None]]:
    uniq = {c: _Unique() for c in ("c_numeric", "c_interval")}
    out = []
    ids = rng.sample(range(-5000, 1_000_000), N_TYPED)

    def float_value(bits: int) -> str:
        while True:
            r = rng.random()
            if r < 0.02:
                v = "NaN"
            elif r < 0.035:
                v = "Infinity"
            elif r < 0.05:
                v = "-Infinity"
            elif r < 0.07:
                # 0 lives in c_float4 only and -0 in c_float8 only: see the module docstring.
                v = "0" if bits == 4 else "-0"
            else:
                v = _dyadic(rng, 1000 if bits == 4 else 50_000, (1, 2, 4) if bits == 4 else (1, 2, 4, 1024))
                if float(v) == 0:
                    continue
            return v

    for i, tid in enumerate(ids):
        grp = None if rng.random() < 0.04 else rng.randint(0, 12)
        if grp == NULL_ONLY_GROUP:
            out.append([str(tid), str(grp)] + [None] * len(TYPED_COLUMNS))
            continue
        p = 0.08
        ts = _timestamp(rng, 1960, 2060)
        special = rng.random()
        row = [
            str(tid),
            None if grp is None else str(grp),
            _maybe_null(rng, p, str(rng.choice([INT2_MIN, INT2_MAX, 0, -1, 1, rng.randint(INT2_MIN, INT2_MAX),
                                                rng.randint(-100, 100)]))),
            _maybe_null(rng, p, str(rng.choice([INT4_MIN, INT4_MAX, rng.randint(INT4_MIN, INT4_MAX),
                                                rng.randint(-1000, 1000)]))),
            _maybe_null(rng, p, str(rng.choice([INT8_MIN, INT8_MAX, rng.randint(INT8_MIN, INT8_MAX),
                                                rng.randint(-10**6, 10**6)]))),
            _maybe_null(rng, p, float_value(4)),
            _maybe_null(rng, p, float_value(8)),
            _maybe_null(rng, p, _numeric(rng, uniq["c_numeric"])),
            _maybe_null(rng, p, rng.choice(["t", "f"])),
            _maybe_null(rng, p, "infinity" if special < 0.01 else "-infinity" if special < 0.02 else
                        "0044-03-15 BC" if special < 0.025 else
                        (datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randint(0, 73000))).isoformat()),
            _maybe_null(rng, p, "24:00:00" if special < 0.01 else
                        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
                        + (f".{rng.randint(0, 999999):06d}" if rng.random() < 0.3 else "")),
            _maybe_null(rng, p, "infinity" if special > 0.99 else "-infinity" if special > 0.98 else
                        ts.isoformat(sep=" ")),
            _maybe_null(rng, p, "-infinity" if special > 0.99 else
                        ts.isoformat(sep=" ") + rng.choice(["+00", "+01", "-08", "+09:30", "+14"])),
            _maybe_null(rng, p, _interval(rng, uniq["c_interval"])),
            _maybe_null(rng, p, str(uuid.UUID(int=rng.getrandbits(128)))
                        if rng.random() < 0.9 else "00000000-0000-0000-0000-00000000000" + str(rng.randint(0, 9))),
            _maybe_null(rng, p, "\\x" + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 6))).hex()),
            _maybe_null(rng, p, _text(rng)),
        ]
        out.append(row)
    # One row NULL in everything but the key (and no group).
    out[-1] = [out[-1][0]] + [None] * (len(TYPED_COLUMNS) + 1)
    # c_text again under the collations "C" and "en_US" (not the database's: the merge must learn
    # them from the shards).
    for row in out:
        row.extend([row[-1], row[-1]])
    return out
